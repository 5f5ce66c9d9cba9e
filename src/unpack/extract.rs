//! The writer, the last stage: walks the tar entries (or takes the single file) and
//! creates the files under the staging directory, by the safety rules and with the
//! metadata described in the `unpack` module doc.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_tar::{Archive, EntryType};

use super::decode::{Codec, DECODED_CHUNK, Named, decoder_for};
use super::reader::{ChannelReader, Counted};
use super::{Limits, UnpackError};

/// Files up to this size are written with a single `write`.
pub(super) const WRITE_BUFFER: usize = 256 << 10;
/// Cap on the header data (PAX records, GNU long names) describing one entry, which the
/// tar reader holds in memory. Real ones are a few KiB.
pub(super) const MAX_METADATA: u64 = 1 << 20;
const IMPLICIT_DIR_MODE: u32 = 0o755;
const PLAIN_FILE_MODE: u32 = 0o644;

pub(super) struct Job {
    pub(super) dest: PathBuf,
    pub(super) tar: bool,
    pub(super) file_name: String,
    pub(super) limits: Limits,
    pub(super) keep_hashing: Arc<AtomicBool>,
    pub(super) recycle: Option<std::sync::mpsc::Sender<BytesMut>>,
    /// Decompress here (`Threads::Shared`): the channel carries compressed data.
    pub(super) inline: Option<Codec>,
}

pub(super) struct Stats {
    pub(super) written: u64,
    pub(super) entries: u64,
}

impl Job {
    /// Runs on a blocking thread. The async tar reader is driven by a local executor:
    /// its only wake-ups come from the channel, so no runtime is needed here.
    pub(super) fn run(
        mut self,
        rx: mpsc::Receiver<io::Result<Bytes>>,
    ) -> Result<Stats, UnpackError> {
        let mut input = ChannelReader::new(rx).recycling(self.recycle.take());
        let keep_hashing = self.keep_hashing.clone();
        let result = match self.inline.take() {
            Some(codec) => {
                // Buffered so that the decompressor works on large pieces even when the
                // tar reader asks for a 512-byte header or a small file (reads at least
                // as large as the buffer bypass it).
                let mut decoder = tokio::io::BufReader::with_capacity(
                    DECODED_CHUNK,
                    Named {
                        inner: decoder_for(codec, &mut input),
                        codec,
                    },
                );
                futures::executor::block_on(self.extract(&mut decoder))
            }
            None => futures::executor::block_on(self.extract(&mut input)),
        };
        if matches!(&result, Err(e) if !matches!(e, UnpackError::Corrupt { .. })) {
            // Set before `input` (the receiver) is dropped, so the feeder sees it.
            keep_hashing.store(false, Ordering::SeqCst);
        }
        drop(input);
        result
    }

    async fn extract<R: AsyncRead + Unpin>(self, input: &mut R) -> Result<Stats, UnpackError> {
        let decoded_count = Rc::new(Cell::new(0));
        let window = Rc::new(Cell::new(u64::MAX));
        // No extra buffering: the channel's chunks are the read-ahead (and so the count is
        // exactly what the tar reader consumed).
        let mut reader = Counted {
            inner: input,
            count: decoded_count.clone(),
            limit: self.limits.max_unpacked_bytes,
            window: window.clone(),
        };
        let mut writer = Writer {
            dest: self.dest,
            limits: self.limits,
            umask: process_umask(),
            dirs: HashMap::new(),
            entries: 0,
            written: 0,
            decoded: decoded_count,
            window,
            buf: vec![0; WRITE_BUFFER],
        };
        if self.tar {
            writer.untar(&mut reader).await?;
            // Read on to the end of the decompressed stream: this checks the compressed
            // stream's own trailer (CRC, sizes) and consumes the tar padding.
            tokio::io::copy(&mut reader, &mut tokio::io::sink())
                .await
                .map_err(|e| writer.read_error(e, None))?;
        } else {
            writer.entries = 1;
            writer.single(&mut reader, &self.file_name).await?;
        }
        Ok(Stats {
            written: writer.written,
            entries: writer.entries,
        })
    }
}

/// The umask, read from /proc rather than with umask(2), which would briefly change the
/// mask for every thread of the process. When unknown, assume it may strip anything
/// (costs one extra `fchmod` per file).
fn process_umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let value = line.strip_prefix("Umask:")?;
                u32::from_str_radix(value.trim(), 8).ok()
            })
        })
        .unwrap_or(0o777)
}

struct Writer {
    dest: PathBuf,
    limits: Limits,
    umask: u32,
    /// Directories (relative paths) this archive created, with their current mode. Every
    /// parent of a new entry must be in here: that is what keeps writes from going
    /// through a symlink.
    dirs: HashMap<PathBuf, u32>,
    entries: u64,
    written: u64,
    decoded: Rc<Cell<u64>>,
    window: Rc<Cell<u64>>,
    buf: Vec<u8>,
}

fn io_error(path: &Path, source: io::Error) -> UnpackError {
    UnpackError::Io {
        what: format!("writing {}", path.display()),
        source,
    }
}

fn unsafe_entry(entry: &str, why: impl Into<String>) -> UnpackError {
    UnpackError::Unsafe {
        entry: entry.to_owned(),
        why: why.into(),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads `reader` to its end, discarding the data.
async fn drain<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<()> {
    while reader.read(buf).await? != 0 {}
    Ok(())
}

/// An entry path (or hard link target) as a path relative to the revision directory.
pub(crate) fn relative_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut path = PathBuf::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c if c.contains(&0) => return Err("path contains a NUL byte"),
            c => path.push(OsStr::from_bytes(c)),
        }
    }
    Ok(path)
}

/// Checks a symlink target against the rules in the `unpack` module doc. `link` is the
/// link's own relative path.
fn check_symlink_target(link: &Path, target: &[u8]) -> Result<(), String> {
    let shown = lossy(target);
    if target.is_empty() {
        return Err("empty symlink target".to_owned());
    }
    if target.contains(&0) {
        return Err(format!("symlink target {shown:?} contains a NUL byte"));
    }
    if target[0] == b'/' {
        return Err(format!("symlink target {shown:?} is absolute"));
    }
    let depth = link.components().count().saturating_sub(1);
    let mut ups = 0;
    let mut seen_name = false;
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if seen_name => {
                return Err(format!(
                    "symlink target {shown:?} has '..' after a name (only leading '..' are allowed)"
                ));
            }
            b".." => {
                ups += 1;
                if ups > depth {
                    return Err(format!(
                        "symlink target {shown:?} points outside the revision directory"
                    ));
                }
            }
            _ => seen_name = true,
        }
    }
    Ok(())
}

impl Writer {
    /// Classifies an error from the decompressed stream: over the size limit, or corrupt
    /// data (a failed download is recognised by the feeder, which reports it itself).
    fn read_error(&self, e: io::Error, entry: Option<&str>) -> UnpackError {
        if self.decoded.get() > self.window.get() {
            return UnpackError::TooLarge {
                what: "bytes of headers (PAX, GNU long names) for one entry",
                limit: MAX_METADATA,
            };
        }
        if self.decoded.get() > self.limits.max_unpacked_bytes {
            return self.too_large_bytes();
        }
        UnpackError::Corrupt {
            detail: match entry {
                Some(entry) => format!("in entry {entry:?}: {e}"),
                None => e.to_string(),
            },
        }
    }

    fn too_large_bytes(&self) -> UnpackError {
        UnpackError::TooLarge {
            what: "unpacked bytes",
            limit: self.limits.max_unpacked_bytes,
        }
    }

    async fn untar<R: AsyncRead + Unpin>(&mut self, reader: &mut R) -> Result<(), UnpackError> {
        let mut archive = Archive::new(reader);
        let mut entries = archive.entries().map_err(|e| self.read_error(e, None))?;
        loop {
            // Between entries, tokio_tar reads headers and keeps PAX / GNU long-name data
            // in memory, without a bound of its own: cap what it may read there.
            self.window
                .set(self.decoded.get().saturating_add(MAX_METADATA));
            let mut entry = match entries.next().await {
                None => {
                    self.window.set(u64::MAX);
                    break;
                }
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(self.read_error(e, None)),
            };
            self.window.set(u64::MAX);
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(UnpackError::TooLarge {
                    what: "entries",
                    limit: self.limits.max_entries,
                });
            }
            self.entry(&mut entry).await?;
            // Consume what data the entry still has (a skipped header, a directory or link
            // with a payload) here, outside the window, streaming it away.
            let mut buf = std::mem::take(&mut self.buf);
            let drained = drain(&mut entry, &mut buf).await;
            self.buf = buf;
            if let Err(e) = drained {
                let name = entry.path_bytes().map(|p| lossy(&p)).ok();
                return Err(self.read_error(e, name.as_deref()));
            }
        }
        Ok(())
    }

    async fn entry<R: AsyncRead + Unpin>(
        &mut self,
        entry: &mut tokio_tar::Entry<R>,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        // Metadata entries (the stream already applied local PAX / GNU long names);
        // 'V' is a volume label.
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || matches!(kind, EntryType::SolarisXHeader | EntryType::Other(b'V'))
        {
            return Ok(());
        }
        let raw = entry
            .path_bytes()
            .map_err(|e| self.read_error(e, None))?
            .into_owned();
        let name = lossy(&raw);
        let rel = relative_path(&raw).map_err(|why| unsafe_entry(&name, why))?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| self.read_error(e, Some(&name)))?;

        // Old (v7) archives mark directories with a trailing slash only; 'D' is a GNU
        // dump directory.
        let is_dir = matches!(kind, EntryType::Directory | EntryType::Other(b'D'))
            || (matches!(kind, EntryType::Regular | EntryType::Continuous) && raw.ends_with(b"/"));
        if is_dir {
            return self.directory(&rel, &name, mode);
        }
        if rel.as_os_str().is_empty() {
            return Err(unsafe_entry(&name, "empty path"));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &rel, &name, mode).await
            }
            EntryType::Symlink => {
                let target = self.link_target(entry, &name)?;
                self.symlink(&rel, &name, &target)
            }
            EntryType::Link => {
                let target = self.link_target(entry, &name)?;
                self.hard_link(&rel, &name, &target)
            }
            EntryType::Char => Err(unsafe_entry(&name, "character device")),
            EntryType::Block => Err(unsafe_entry(&name, "block device")),
            EntryType::Fifo => Err(unsafe_entry(&name, "FIFO")),
            other => Err(unsafe_entry(
                &name,
                format!("unsupported entry type {:?}", other.as_byte() as char),
            )),
        }
    }

    fn link_target<R: AsyncRead + Unpin>(
        &self,
        entry: &tokio_tar::Entry<R>,
        name: &str,
    ) -> Result<Vec<u8>, UnpackError> {
        match entry.link_name_bytes() {
            Ok(Some(target)) => Ok(target.into_owned()),
            Ok(None) => Err(unsafe_entry(name, "link without a target")),
            Err(e) => Err(self.read_error(e, Some(name))),
        }
    }

    async fn file<R: AsyncRead + Unpin>(
        &mut self,
        entry: &mut tokio_tar::Entry<R>,
        rel: &Path,
        name: &str,
        mode: u32,
    ) -> Result<(), UnpackError> {
        let size = entry.effective_size();
        if self.written.saturating_add(size) > self.limits.max_unpacked_bytes {
            return Err(self.too_large_bytes());
        }
        // Permission bits only: never setuid, setgid or sticky.
        let mode = mode & 0o777;
        let mtime = entry
            .header()
            .mtime()
            .ok()
            .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
        self.ensure_parent(rel, name)?;
        let path = self.dest.join(rel);
        let mut file = self.create(&path, name, |p| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(p)
        })?;
        if mode & self.umask != 0 {
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(|e| io_error(&path, e))?;
        }

        let mut buf = std::mem::take(&mut self.buf);
        let copied = self
            .copy_entry(entry, &mut file, &path, name, &mut buf)
            .await;
        self.buf = buf;
        copied?;

        if let Some(mtime) = mtime {
            file.set_modified(mtime).map_err(|e| io_error(&path, e))?;
        }
        Ok(())
    }

    /// Copies an entry's data, filling the buffer before each write so that a small file
    /// costs one `write`.
    async fn copy_entry<R: AsyncRead + Unpin>(
        &mut self,
        entry: &mut tokio_tar::Entry<R>,
        file: &mut fs::File,
        path: &Path,
        name: &str,
        buf: &mut [u8],
    ) -> Result<(), UnpackError> {
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = entry
                    .read(&mut buf[filled..])
                    .await
                    .map_err(|e| self.read_error(e, Some(name)))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            self.written = self.written.saturating_add(filled as u64);
            if self.written > self.limits.max_unpacked_bytes {
                return Err(self.too_large_bytes());
            }
            file.write_all(&buf[..filled])
                .map_err(|e| io_error(path, e))?;
            if filled < buf.len() {
                return Ok(());
            }
        }
    }

    /// Runs `op` (which must not follow a final symlink); if the path exists as a file or
    /// link from an earlier entry, removes that (without following it) and retries.
    fn create<T>(
        &self,
        path: &Path,
        name: &str,
        mut op: impl FnMut(&Path) -> io::Result<T>,
    ) -> Result<T, UnpackError> {
        match op(path) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
                if meta.is_dir() {
                    return Err(unsafe_entry(
                        name,
                        "conflicts with a directory of the same name",
                    ));
                }
                fs::remove_file(path).map_err(|e| io_error(path, e))?;
                op(path).map_err(|e| io_error(path, e))
            }
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Makes sure every parent directory of `rel` exists as a real directory created by
    /// this archive, creating missing ones once each.
    fn ensure_parent(&mut self, rel: &Path, name: &str) -> Result<(), UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() || self.dirs.contains_key(parent) {
            return Ok(());
        }
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            if !self.dirs.contains_key(&prefix) {
                self.mkdir(&prefix, IMPLICIT_DIR_MODE, name, false)?;
            }
        }
        Ok(())
    }

    /// Creates the directory `rel`. What already exists there was made by an earlier
    /// entry: a symlink or file is replaced when `replace` (an explicit directory entry),
    /// and otherwise refused (it would mean writing through it).
    fn mkdir(
        &mut self,
        rel: &Path,
        mode: u32,
        name: &str,
        replace: bool,
    ) -> Result<(), UnpackError> {
        let path = self.dest.join(rel);
        let mut builder = DirBuilder::new();
        builder.mode(mode);
        match builder.create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
                if meta.is_dir() {
                    // Not one of ours (the staging dir was not empty); use it as it is.
                } else if replace {
                    fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                    builder.create(&path).map_err(|e| io_error(&path, e))?;
                } else if meta.file_type().is_symlink() {
                    return Err(unsafe_entry(
                        name,
                        format!(
                            "{} is a symlink; refusing to write through it",
                            rel.display()
                        ),
                    ));
                } else {
                    return Err(unsafe_entry(
                        name,
                        format!("{} is not a directory", rel.display()),
                    ));
                }
            }
            Err(e) => return Err(io_error(&path, e)),
        }
        if mode & self.umask != 0 {
            fs::set_permissions(&path, Permissions::from_mode(mode))
                .map_err(|e| io_error(&path, e))?;
        }
        self.dirs.insert(rel.to_path_buf(), mode);
        Ok(())
    }

    fn directory(&mut self, rel: &Path, name: &str, mode: u32) -> Result<(), UnpackError> {
        if rel.as_os_str().is_empty() {
            // The revision directory itself: it belongs to ftl, keep its mode.
            return Ok(());
        }
        // Owner rwx always, so ftl can fill, rename and delete it.
        let mode = (mode & 0o777) | 0o700;
        if let Some(current) = self.dirs.get(rel).copied() {
            if current != mode {
                let path = self.dest.join(rel);
                fs::set_permissions(&path, Permissions::from_mode(mode))
                    .map_err(|e| io_error(&path, e))?;
                self.dirs.insert(rel.to_path_buf(), mode);
            }
            return Ok(());
        }
        self.ensure_parent(rel, name)?;
        self.mkdir(rel, mode, name, true)
    }

    fn symlink(&mut self, rel: &Path, name: &str, target: &[u8]) -> Result<(), UnpackError> {
        check_symlink_target(rel, target).map_err(|why| unsafe_entry(name, why))?;
        self.ensure_parent(rel, name)?;
        let path = self.dest.join(rel);
        let target = OsStr::from_bytes(target);
        self.create(&path, name, |p| std::os::unix::fs::symlink(target, p))
    }

    fn hard_link(&mut self, rel: &Path, name: &str, target: &[u8]) -> Result<(), UnpackError> {
        let shown = lossy(target);
        let target_rel = relative_path(target)
            .map_err(|why| unsafe_entry(name, format!("hard link target {shown:?}: {why}")))?;
        let not_extracted = || {
            unsafe_entry(
                name,
                format!("hard link target {shown:?} is not a regular file extracted earlier"),
            )
        };
        if target_rel.as_os_str().is_empty() {
            return Err(not_extracted());
        }
        // The target's parents must be our real directories (no symlink on the way), and
        // the target itself a regular file: `link` does not follow a final symlink, but
        // linking to one is refused anyway.
        let target_parent = target_rel.parent().unwrap_or(Path::new(""));
        if !(target_parent.as_os_str().is_empty() || self.dirs.contains_key(target_parent)) {
            return Err(not_extracted());
        }
        let target_path = self.dest.join(&target_rel);
        match fs::symlink_metadata(&target_path) {
            Ok(meta) if meta.file_type().is_file() => {}
            _ => return Err(not_extracted()),
        }
        if target_rel == rel {
            // A link to itself: the file is already there.
            return Ok(());
        }
        self.ensure_parent(rel, name)?;
        let path = self.dest.join(rel);
        self.create(&path, name, |p| fs::hard_link(&target_path, p))
    }

    /// A single (possibly decompressed) file stored as `file_name`.
    async fn single<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        file_name: &str,
    ) -> Result<(), UnpackError> {
        let path = self.dest.join(file_name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PLAIN_FILE_MODE)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let mut buf = std::mem::take(&mut self.buf);
        let result = async {
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| self.read_error(e, None))?;
                if n == 0 {
                    return Ok(());
                }
                self.written = self.written.saturating_add(n as u64);
                if self.written > self.limits.max_unpacked_bytes {
                    return Err(self.too_large_bytes());
                }
                file.write_all(&buf[..n]).map_err(|e| io_error(&path, e))?;
            }
        }
        .await;
        self.buf = buf;
        result
    }
}
