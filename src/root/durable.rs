//! Durability: what must be on disk before a revision becomes visible.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{RootError, io_err};

/// Makes the entries of `dir` (renames, new links) survive a power loss.
pub(super) fn sync_dir(dir: &Path) -> Result<(), RootError> {
    let f = File::open(dir).map_err(io_err("cannot open directory", dir))?;
    match f.sync_all() {
        // Some file systems cannot fsync a directory; nothing more to do there.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        r => r.map_err(io_err("cannot sync directory", dir)),
    }
}

/// Flushes everything written to the file systems holding `paths`: one
/// `syncfs` per file system (not per path), instead of an fsync per file of
/// large unpacked trees. Used by `sync` to make all the revisions it staged
/// durable at once, before renaming any of them into place.
pub fn sync_file_systems(paths: &[PathBuf]) -> Result<(), RootError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    for path in paths {
        let dev = fs::metadata(path)
            .map_err(io_err("cannot stat", path))?
            .dev();
        if !seen.contains(&dev) {
            seen.push(dev);
            sync_fs(path)?;
        }
    }
    Ok(())
}

/// Writes back to disk, in the background, what is being unpacked under `path`
/// while it is still being unpacked, so that the flush which must precede the
/// renames ([`sync_file_systems`]) finds little left and the disk works while
/// the CPUs decompress. Only a head start: durability still comes from that
/// final flush. Stops (and waits for its last round) when dropped.
pub struct EarlyFlush {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EarlyFlush {
    /// How often a round starts at most.
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn start(path: &Path) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, path) = (stop.clone(), path.to_owned());
        let thread = std::thread::Builder::new()
            .name("ftl-flush".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    if let Err(e) = sync_fs(&path) {
                        tracing::debug!("early flush: {e}");
                        return;
                    }
                    if let Some(rest) = Self::PERIOD.checked_sub(started.elapsed()) {
                        std::thread::park_timeout(rest);
                    }
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EarlyFlush {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Flushes everything written to the file system holding `path`: one call
/// instead of an fsync per file of a large unpacked tree.
fn sync_fs(path: &Path) -> Result<(), RootError> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).map_err(io_err("cannot open", path))?;
    // SAFETY: the descriptor is open for the whole call; syncfs only reads it.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io_err("cannot sync the file system of", path)(
            io::Error::last_os_error(),
        ))
    }
}
