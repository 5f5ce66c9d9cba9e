//! The root's lock: one ftl at a time changes a node.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Root, RootError, io_err};

const LOCK_FILE: &str = ".lock";
/// How often a waiting command retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(200);
/// Bound on how much of the lock file is read for the "held by" message.
const HOLDER_MAX: usize = 256;

impl Root {
    /// Takes the exclusive lock on `$FTL_ROOT/.lock`.
    ///
    /// It is an `flock`, so the kernel releases it when the process dies: no
    /// stale lock ever blocks. When it is busy, says once (warn) who holds it
    /// and retries until `wait` has elapsed, then fails with
    /// [`RootError::Locked`]. Never blocks the runtime: `try_lock` plus an
    /// async sleep. Locks are per open file, so a second call in the same
    /// process waits for the first guard too.
    pub async fn lock(&self, wait: Duration) -> Result<RootLock, RootError> {
        let path = self.path.join(LOCK_FILE);
        // Never truncated on open and never deleted: deleting a lock file lets
        // two processes lock two different files.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("cannot open the lock file", &path))?;
        let start = Instant::now();
        let mut warned = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &path)(e)),
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(RootError::Locked {
                    holder: read_holder(&file),
                    path,
                    waited,
                });
            }
            if !warned {
                tracing::warn!(
                    "waiting for the lock on {}, held by {}",
                    path.display(),
                    read_holder(&file)
                );
                warned = true;
            }
            tokio::time::sleep(LOCK_POLL.min(wait - waited)).await;
        }
        // Say who holds it, for the message of whoever waits next. Best
        // effort: the lock itself is what matters (e.g. on a full disk).
        let me = holder_description();
        if let Err(e) = file
            .set_len(0)
            .and_then(|()| file.write_all_at(me.as_bytes(), 0))
        {
            tracing::debug!("cannot write into {}: {e}", path.display());
        }
        Ok(RootLock { file })
    }
}

/// The held root lock; dropping it releases it.
#[derive(Debug)]
pub struct RootLock {
    file: File,
}

impl Drop for RootLock {
    fn drop(&mut self) {
        // Clear our name first so nobody is told we still hold it. Errors are
        // moot: closing the file releases the lock anyway.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// This process, as shown to whoever waits for the lock: `pid 1234 (ftl sync)`.
fn holder_description() -> String {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "ftl".to_owned());
    let mut command = program;
    for a in args {
        command.push(' ');
        command.push_str(&a.to_string_lossy());
    }
    format!("pid {} ({})", std::process::id(), one_line(&command))
}

/// Text from a file or argv made safe for a one-line message.
fn one_line(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    clean.trim().to_owned()
}

fn read_holder(file: &File) -> String {
    let mut buf = [0u8; HOLDER_MAX];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    let text = one_line(&String::from_utf8_lossy(&buf[..n]));
    if text.is_empty() {
        // Between taking the lock and writing into it, or an ftl that wrote nothing.
        "another process".to_owned()
    } else {
        text
    }
}
