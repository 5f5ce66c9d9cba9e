//! A downloaded revision object → digest check → decompressor chosen by extension →
//! safe untar into a (staging) directory.
//!
//! Shape of the pipeline, chosen for speed and bounded memory (stages linked by small
//! bounded channels, so download, hashing, decompression and file creation overlap, like
//! `gzip -d | tar -x`, and memory is a few chunks whatever the archive size):
//! - on the caller's runtime, a feeder pulls the body and hashes every compressed byte;
//! - on a blocking thread, a decoder decompresses (skipped for uncompressed formats);
//! - on another blocking thread, a writer walks the tar entries with `tokio_tar` (driven
//!   by a tiny local executor: the only wake-ups come from the channel) and writes files
//!   with plain `std::fs`: one `open(O_CREAT|O_EXCL)`, the writes, one `futimens`, one
//!   `close` per file, each directory created once. No per-file `spawn_blocking`, no
//!   fsync, no chown.
//!
//! Safety rules (the whole revision is refused, naming the entry, on any violation):
//! - entry paths must be relative and free of `..`; `./` prefixes and empty components are
//!   ignored; PAX and GNU long names are checked the same way (`tokio_tar` resolves them);
//! - nothing is ever created below a symlink: every parent of an entry must be a real
//!   directory created by this archive (tracked in memory), and files, links and
//!   directories are created with calls that do not follow a final symlink
//!   (`O_EXCL`, `symlink`, `link`, `mkdir`); an existing file or link at the same path is
//!   removed first (never written through), an existing directory is never replaced;
//! - symlink targets must be relative, may only start with `..` components (no `a/../..`,
//!   whose meaning depends on what `a` later becomes) and must not climb above the
//!   revision directory from the link's own directory;
//! - hard links must name a regular file extracted earlier (inside, no `..`);
//! - device nodes and FIFOs, and entry types we do not know, are refused;
//! - `Limits` cap the decompressed stream, the bytes written and the entry count; the
//!   header data the tar reader keeps in memory for one entry (PAX records, GNU long
//!   names) is capped at 1 MiB, so memory stays bounded even for hostile archives.
//!
//! Metadata: regular files get exactly the archive's permission bits without
//! setuid/setgid/sticky (the umask is compensated with one `fchmod` only when it would
//! strip wanted bits). Directories get their archive bits plus owner `rwx` (so that ftl can
//! always fill, rename and delete them); implicit ones get 0755. File mtimes are preserved
//! (so that e.g. web servers send the same Last-Modified/ETag on every node); directory
//! and symlink times are not. Ownership is ignored.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use async_compression::tokio::bufread::{BzDecoder, GzipDecoder, XzDecoder, ZstdDecoder};
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_tar::{Archive, EntryType};

use crate::names::md5_tag;
use crate::store::ByteStream;

/// What the body's digest must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// SHA-256 of the whole object, as recorded at spool time.
    Sha256([u8; 32]),
    /// The two MD5 symbols at the end of a 0.2.x revision id.
    Md5Tag(String),
    /// No check (the caller decided the object cannot be verified).
    Nothing,
}

/// Caps against decompression bombs and absurd archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Cap on the decompressed stream and, separately, on the bytes written to files.
    pub max_unpacked_bytes: u64,
    /// Cap on the number of tar entries (metadata entries included).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 64 << 30,
            max_entries: 10_000_000,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Bytes of the (compressed) body read.
    pub bytes_in: u64,
    /// Bytes of file content written.
    pub bytes_out: u64,
    /// Tar entries seen (1 for a single file).
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refusing archive entry {entry:?}: {why}")]
    Unsafe { entry: String, why: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("corrupt archive: {detail}")]
    Corrupt { detail: String },
    #[error("archive exceeds the limit of {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("invalid stored file name {name:?}")]
    BadFileName { name: String },
    #[error("the unpack worker failed: {detail}")]
    Worker { detail: String },
}

/// How an object is unpacked, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    TarZst,
    TarXz,
    TarBz2,
    Gz,
    Zst,
    Xz,
    Bz2,
    Plain,
}

impl Format {
    fn is_tar(self) -> bool {
        matches!(
            self,
            Format::Tar | Format::TarGz | Format::TarZst | Format::TarXz | Format::TarBz2
        )
    }
}

/// The format for `ext`, everything after the first `.` of the spooled file name
/// (`tgz`, `tar.gz`, `1.2.tar.zst`, `jar.gz`, `jar`). Case-insensitive.
pub fn format_for(ext: &str) -> Format {
    let ext = ext.to_ascii_lowercase();
    let mut parts = ext.rsplit('.');
    let last = parts.next().unwrap_or("");
    let tar_inside = parts.next() == Some("tar");
    let pick = |tar, single| if tar_inside { tar } else { single };
    match last {
        "tar" => Format::Tar,
        "tgz" | "taz" => Format::TarGz,
        "tzst" => Format::TarZst,
        "txz" => Format::TarXz,
        "tbz2" | "tbz" | "tb2" => Format::TarBz2,
        "gz" => pick(Format::TarGz, Format::Gz),
        "zst" | "zstd" => pick(Format::TarZst, Format::Zst),
        "xz" => pick(Format::TarXz, Format::Xz),
        "bz2" => pick(Format::TarBz2, Format::Bz2),
        _ => Format::Plain,
    }
}

/// The file name a non-tar object is stored under in the revision directory:
/// `<package>.<ext>` without the compression suffix (`app` + `jar.gz` → `app.jar`,
/// `app` + `gz` → `app`, `app` + `jar` → `app.jar`). For tar formats, where no single
/// file is stored, this is simply `<package>.<ext>`.
pub fn stored_file_name(package: &str, ext: &str) -> String {
    let base = match format_for(ext) {
        Format::Gz | Format::Zst | Format::Xz | Format::Bz2 => {
            ext.rsplit_once('.').map_or("", |(stem, _)| stem)
        }
        _ => ext,
    };
    if base.is_empty() {
        package.to_owned()
    } else {
        format!("{package}.{base}")
    }
}

/// What an `UnpackError::Io` says when the download itself failed (not the disk).
pub const READING_DOWNLOAD: &str = "reading the download";

/// Chunks in flight between the download and the next stage: enough to ride out jitter
/// on either side, small enough that memory stays bounded. The HTTP client hands out
/// what one socket read gave, up to ~400 KiB, so this is at most ~3 MiB.
const CHANNEL_CHUNKS: usize = 8;
/// Size and number of decompressed chunks in flight to the writer. Their buffers are
/// recycled (see `ChannelReader::recycle`): no allocation, and so no fresh pages to
/// fault in, per chunk.
const DECODED_CHUNK: usize = 256 << 10;
const DECODED_CHUNKS: usize = 8;
/// Files up to this size are written with a single `write`.
const WRITE_BUFFER: usize = 256 << 10;
/// Cap on the header data (PAX records, GNU long names) describing one entry, which the
/// tar reader holds in memory. Real ones are a few KiB.
const MAX_METADATA: u64 = 1 << 20;
const IMPLICIT_DIR_MODE: u32 = 0o755;
const PLAIN_FILE_MODE: u32 = 0o644;

/// Where decompression runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// On a thread of its own, overlapping with file creation: the fastest way to
    /// unpack one archive while other cores are idle.
    #[default]
    Pipelined,
    /// On the thread that creates the files, straight into the tar reader's buffers:
    /// less CPU in all (no hand-over of decompressed data between threads, one copy
    /// less), the better choice when concurrent unpacks already keep every core busy.
    Shared,
}

/// Streams `body` into `dest` (an existing, empty staging directory), verifying the
/// digest of the whole body. On error the caller deletes `dest`; nothing is ever written
/// outside it.
pub async fn unpack(
    body: ByteStream,
    package: &str,
    ext: &str,
    dest: &Path,
    expected: &Expected,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    unpack_with(
        body,
        package,
        ext,
        dest,
        expected,
        limits,
        Threads::Pipelined,
    )
    .await
}

/// [`unpack`], choosing where decompression runs.
pub async fn unpack_with(
    body: ByteStream,
    package: &str,
    ext: &str,
    dest: &Path,
    expected: &Expected,
    limits: &Limits,
    threads: Threads,
) -> Result<Unpacked, UnpackError> {
    let format = format_for(ext);
    let file_name = stored_file_name(package, ext);
    if !format.is_tar() && !is_plain_file_name(&file_name) {
        return Err(UnpackError::BadFileName { name: file_name });
    }

    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let (rx, recycle, inline) = match (Codec::of(format), threads) {
        (Some(codec), Threads::Pipelined) => {
            let (decoded_tx, decoded_rx) = mpsc::channel(DECODED_CHUNKS);
            let (recycle_tx, recycle_rx) = std::sync::mpsc::channel();
            // Detached: it touches no files and ends as soon as either channel closes.
            drop(tokio::task::spawn_blocking(move || {
                decode(codec, rx, decoded_tx, &recycle_rx)
            }));
            (decoded_rx, Some(recycle_tx), None)
        }
        (Some(codec), Threads::Shared) => (rx, None, Some(codec)),
        (None, _) => (rx, None, None),
    };
    // Whether the feeder should keep hashing after the pipeline stopped reading: yes when
    // the writer succeeded or the data was corrupt (a digest mismatch is then the better
    // diagnosis), no when it refused the archive (no point downloading the rest).
    let keep_hashing = Arc::new(AtomicBool::new(true));
    let job = Job {
        dest: dest.to_path_buf(),
        tar: format.is_tar(),
        file_name,
        limits: *limits,
        keep_hashing: keep_hashing.clone(),
        recycle,
        inline,
    };
    let worker = tokio::task::spawn_blocking(move || job.run(rx));
    let (fed, worked) = tokio::join!(feed(body, tx, Hasher::new(expected), &keep_hashing), worker);

    let fed = fed.map_err(|source| UnpackError::Io {
        what: READING_DOWNLOAD.to_owned(),
        source,
    })?;
    let worked = worked.map_err(|e| UnpackError::Worker {
        detail: e.to_string(),
    })?;
    match worked {
        Ok(stats) => {
            match &fed.digest {
                Some(digest) => verify(expected, digest)?,
                None => {
                    return Err(UnpackError::Corrupt {
                        detail: "the download was not read to its end".to_owned(),
                    });
                }
            }
            Ok(Unpacked {
                bytes_in: fed.bytes_in,
                bytes_out: stats.written,
                entries: stats.entries,
            })
        }
        Err(e @ UnpackError::Corrupt { .. }) => {
            if let Some(digest) = &fed.digest {
                verify(expected, digest)?;
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

// ---------------------------------------------------------------------------------------
// Feeder: body → hash → channel

struct Fed {
    bytes_in: u64,
    /// `None` when the body was not read to its end.
    digest: Option<Computed>,
}

enum Hasher {
    Sha256(Box<Sha256>),
    Md5(Md5),
    Nothing,
}

enum Computed {
    Sha256([u8; 32]),
    Md5([u8; 16]),
    Nothing,
}

impl Hasher {
    fn new(expected: &Expected) -> Self {
        match expected {
            Expected::Sha256(_) => Hasher::Sha256(Box::default()),
            Expected::Md5Tag(_) => Hasher::Md5(Md5::new()),
            Expected::Nothing => Hasher::Nothing,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Nothing => {}
        }
    }

    fn finish(self) -> Computed {
        match self {
            Hasher::Sha256(h) => Computed::Sha256(h.finalize().into()),
            Hasher::Md5(h) => Computed::Md5(h.finalize().into()),
            Hasher::Nothing => Computed::Nothing,
        }
    }
}

async fn feed(
    mut body: ByteStream,
    tx: mpsc::Sender<io::Result<Bytes>>,
    mut hasher: Hasher,
    keep_hashing: &AtomicBool,
) -> io::Result<Fed> {
    let mut bytes_in = 0u64;
    let mut tx = Some(tx);
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => {
                bytes_in += chunk.len() as u64;
                hasher.update(&chunk);
                if let Some(sender) = &tx
                    && sender.send(Ok(chunk)).await.is_err()
                {
                    // The pipeline stopped reading (done or failed).
                    tx = None;
                    if matches!(hasher, Hasher::Nothing) {
                        return Ok(Fed {
                            bytes_in,
                            digest: Some(Computed::Nothing),
                        });
                    }
                    if !keep_hashing.load(Ordering::SeqCst) {
                        return Ok(Fed {
                            bytes_in,
                            digest: None,
                        });
                    }
                }
            }
            Err(e) => {
                if let Some(sender) = &tx {
                    // Let the worker stop at once; the original error is reported by us.
                    let _ = sender
                        .send(Err(io::Error::new(e.kind(), e.to_string())))
                        .await;
                }
                return Err(e);
            }
        }
    }
    Ok(Fed {
        bytes_in,
        digest: Some(hasher.finish()),
    })
}

fn verify(expected: &Expected, actual: &Computed) -> Result<(), UnpackError> {
    match (expected, actual) {
        (Expected::Nothing, _) => Ok(()),
        (Expected::Sha256(want), Computed::Sha256(got)) => {
            if want == got {
                Ok(())
            } else {
                Err(UnpackError::DigestMismatch {
                    expected: format!("sha256 {}", hex(want)),
                    actual: format!("sha256 {}", hex(got)),
                })
            }
        }
        (Expected::Md5Tag(want), Computed::Md5(got)) => {
            let tag = md5_tag(got);
            if *want == tag {
                Ok(())
            } else {
                Err(UnpackError::DigestMismatch {
                    expected: format!("md5 tag {want:?}"),
                    actual: format!("md5 tag {tag:?} (md5 {})", hex(got)),
                })
            }
        }
        // Cannot happen (the hasher is chosen from `expected`); refuse rather than pass.
        (Expected::Sha256(want), _) => Err(UnpackError::DigestMismatch {
            expected: format!("sha256 {}", hex(want)),
            actual: "nothing computed".to_owned(),
        }),
        (Expected::Md5Tag(want), _) => Err(UnpackError::DigestMismatch {
            expected: format!("md5 tag {want:?}"),
            actual: "nothing computed".to_owned(),
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------------------------------
// Readers used by the worker

/// The channel's chunks as one buffered byte stream, without copying them.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
    done: bool,
    /// Where consumed chunks go back to be filled again (decoded chunks only).
    recycle: Option<std::sync::mpsc::Sender<BytesMut>>,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            chunk: Bytes::new(),
            done: false,
            recycle: None,
        }
    }

    fn recycling(mut self, to: Option<std::sync::mpsc::Sender<BytesMut>>) -> Self {
        self.recycle = to;
        self
    }

    /// Hands the (consumed) current chunk's buffer back to its producer.
    fn recycle(&mut self) {
        if let Some(to) = &self.recycle
            && let Ok(mut buf) = std::mem::take(&mut self.chunk).try_into_mut()
        {
            buf.clear();
            // The producer may be gone: then the buffer is simply freed.
            let _ = to.send(buf);
        }
    }
}

impl AsyncBufRead for ChannelReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.chunk.is_empty() && !this.done {
            this.recycle();
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => this.chunk = chunk,
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Err(e));
                }
                None => this.done = true,
            }
        }
        Poll::Ready(Ok(&this.chunk[..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.chunk.advance(amt.min(this.chunk.len()));
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// Counts decompressed bytes and fails the read once they exceed the limit or the
/// current window (the writer then reports `TooLarge`, seeing the count).
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    limit: u64,
    /// Position in the stream beyond which reading is refused for now (see `untar`).
    window: Rc<Cell<u64>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let total = this
            .count
            .get()
            .saturating_add((buf.filled().len() - before) as u64);
        this.count.set(total);
        if total > this.limit || total > this.window.get() {
            return Poll::Ready(Err(io::Error::other("unpacked size limit exceeded")));
        }
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------
// Decoder: compressed chunks → decompressed chunks

#[derive(Debug, Clone, Copy)]
enum Codec {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Xz => "xz",
            Codec::Bzip2 => "bzip2",
        }
    }

    fn of(format: Format) -> Option<Codec> {
        match format {
            Format::Tar | Format::Plain => None,
            Format::TarGz | Format::Gz => Some(Codec::Gzip),
            Format::TarZst | Format::Zst => Some(Codec::Zstd),
            Format::TarXz | Format::Xz => Some(Codec::Xz),
            Format::TarBz2 | Format::Bz2 => Some(Codec::Bzip2),
        }
    }
}

/// The decompressor for `codec` over `input`. Concatenated members/frames are all
/// decoded (as `gzip -d` does).
fn decoder_for(codec: Codec, input: &mut ChannelReader) -> Box<dyn AsyncRead + Unpin + '_> {
    match codec {
        Codec::Gzip => {
            let mut d = GzipDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
        Codec::Zstd => {
            let mut d = ZstdDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
        Codec::Xz => {
            let mut d = XzDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
        Codec::Bzip2 => {
            let mut d = BzDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
    }
}

/// A decompressor whose errors name the codec (as `decode` does in-band).
struct Named<R> {
    inner: R,
    codec: Codec,
}

impl<R: AsyncRead + Unpin> AsyncRead for Named<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let codec = self.codec;
        Pin::new(&mut self.inner)
            .poll_read(cx, buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{} data: {e}", codec.name())))
    }
}

/// Runs on its own blocking thread (`Threads::Pipelined`). Errors are passed on
/// in-band; the writer classifies them.
fn decode(
    codec: Codec,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    recycled: &std::sync::mpsc::Receiver<BytesMut>,
) {
    let mut input = ChannelReader::new(rx);
    let mut decoder = decoder_for(codec, &mut input);
    futures::executor::block_on(async {
        loop {
            // A buffer the writer is done with, or a new one while the pipeline fills up
            // (at most DECODED_CHUNKS + 2 are ever in use). `reserve` moves a recycled
            // buffer's (empty) view back to the start of its allocation.
            let mut chunk = recycled
                .try_recv()
                .unwrap_or_else(|_| BytesMut::with_capacity(DECODED_CHUNK));
            chunk.reserve(DECODED_CHUNK);
            let mut failed = None;
            while chunk.len() < DECODED_CHUNK {
                match decoder.read_buf(&mut chunk).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let at_end = chunk.len() < DECODED_CHUNK;
            // A send fails only when the writer is gone: then stop, which closes our input.
            if !chunk.is_empty() && tx.send(Ok(chunk.freeze())).await.is_err() {
                return;
            }
            if let Some(e) = failed {
                let e = io::Error::new(e.kind(), format!("{} data: {e}", codec.name()));
                let _ = tx.send(Err(e)).await;
                return;
            }
            if at_end {
                return;
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Writer: decompressed chunks → tar walk → files

struct Job {
    dest: PathBuf,
    tar: bool,
    file_name: String,
    limits: Limits,
    keep_hashing: Arc<AtomicBool>,
    recycle: Option<std::sync::mpsc::Sender<BytesMut>>,
    /// Decompress here (`Threads::Shared`): the channel carries compressed data.
    inline: Option<Codec>,
}

struct Stats {
    written: u64,
    entries: u64,
}

impl Job {
    /// Runs on a blocking thread. The async tar reader is driven by a local executor:
    /// its only wake-ups come from the channel, so no runtime is needed here.
    fn run(mut self, rx: mpsc::Receiver<io::Result<Bytes>>) -> Result<Stats, UnpackError> {
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
fn relative_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
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

/// Checks a symlink target against the rules in the module doc. `link` is the link's
/// own relative path.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    use async_compression::tokio::bufread::{BzEncoder, GzipEncoder, XzEncoder, ZstdEncoder};
    use tempfile::TempDir;

    // ---- building archives by hand (the builder refuses hostile paths) ----

    #[derive(Clone)]
    struct E {
        name: Vec<u8>,
        kind: u8,
        data: Vec<u8>,
        link: Vec<u8>,
        mode: u32,
    }

    fn file(name: &str, data: &[u8], mode: u32) -> E {
        E {
            name: name.into(),
            kind: b'0',
            data: data.to_vec(),
            link: vec![],
            mode,
        }
    }
    fn dir(name: &str) -> E {
        E {
            kind: b'5',
            ..file(name, b"", 0o755)
        }
    }
    fn symlink(name: &str, target: &str) -> E {
        E {
            kind: b'2',
            link: target.into(),
            ..file(name, b"", 0o777)
        }
    }
    fn hardlink(name: &str, target: &str) -> E {
        E {
            kind: b'1',
            link: target.into(),
            ..file(name, b"", 0o644)
        }
    }
    fn special(name: &str, kind: u8) -> E {
        E {
            kind,
            ..file(name, b"", 0o644)
        }
    }
    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        // "<len> key=value\n", where len counts itself.
        let rest = format!(" {key}={value}\n");
        let mut len = rest.len() + 1;
        while format!("{len}{rest}").len() != len {
            len += 1;
        }
        format!("{len}{rest}").into_bytes()
    }
    fn pax(kind: u8, key: &str, value: &str) -> E {
        E {
            kind,
            data: pax_record(key, value),
            ..file("PaxHeaders/x", b"", 0o644)
        }
    }
    fn gnu_longname(name: &str) -> E {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        E {
            kind: b'L',
            data,
            ..file("././@LongLink", b"", 0o644)
        }
    }

    const MTIME: u64 = 1_600_000_000;

    fn octal(field: &mut [u8], value: u64) {
        let digits = format!("{value:0width$o}", width = field.len() - 1);
        field[..digits.len()].copy_from_slice(digits.as_bytes());
    }

    fn header(e: &E) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..e.name.len()].copy_from_slice(&e.name);
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], e.data.len() as u64);
        octal(&mut h[136..148], MTIME);
        h[156] = e.kind;
        h[157..157 + e.link.len()].copy_from_slice(&e.link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend_from_slice(&header(e));
            out.extend_from_slice(&e.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    async fn compress(format: Format, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let result = match format {
            Format::Tar | Format::Plain => {
                out = data.to_vec();
                Ok(0)
            }
            Format::TarGz | Format::Gz => GzipEncoder::new(data).read_to_end(&mut out).await,
            Format::TarZst | Format::Zst => ZstdEncoder::new(data).read_to_end(&mut out).await,
            Format::TarXz | Format::Xz => XzEncoder::new(data).read_to_end(&mut out).await,
            Format::TarBz2 | Format::Bz2 => BzEncoder::new(data).read_to_end(&mut out).await,
        };
        result.expect("compress");
        out
    }

    fn sha256(data: &[u8]) -> Expected {
        Expected::Sha256(Sha256::digest(data).into())
    }

    fn body(data: Vec<u8>) -> ByteStream {
        // Odd chunk size, so that chunk and block boundaries never line up.
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    thread_local! {
        /// How `Scene::unpack` decompresses (tests of codecs run both ways).
        static THREADS: Cell<Threads> = const { Cell::new(Threads::Pipelined) };
    }
    const BOTH_WAYS: [Threads; 2] = [Threads::Pipelined, Threads::Shared];

    /// A parent directory holding the staging directory, so that anything written
    /// outside the staging directory shows up in the parent's listing.
    struct Scene {
        parent: TempDir,
        dest: PathBuf,
    }

    impl Scene {
        fn new() -> Self {
            let parent = tempfile::tempdir().expect("tempdir");
            let dest = parent.path().join("stage");
            fs::create_dir(&dest).expect("mkdir stage");
            Self { parent, dest }
        }

        fn outside(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.parent.path())
                .expect("list parent")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n != "stage")
                .collect();
            names.sort();
            names
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dest.join(rel)
        }

        async fn unpack(
            &self,
            data: Vec<u8>,
            ext: &str,
            expected: &Expected,
            limits: &Limits,
        ) -> Result<Unpacked, UnpackError> {
            let threads = THREADS.get();
            unpack_with(
                body(data),
                "app",
                ext,
                &self.dest,
                expected,
                limits,
                threads,
            )
            .await
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    // ---- round trips ----

    fn big_data() -> Vec<u8> {
        // Larger than the write buffer, not trivially compressible.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..(WRITE_BUFFER * 5 / 2))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect()
    }

    fn normal_archive() -> Vec<u8> {
        tar(&[
            pax(b'g', "comment", "global header, to be skipped"),
            dir("top/"),
            file("top/a.txt", b"hello", 0o644),
            file("top/sub/deep/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
            file("top/suid", b"x", 0o4755),
            file("top/sgid-sticky", b"y", 0o3640),
            file("./top/dotted", b"dot", 0o600),
            file("top/empty", b"", 0o644),
            file("top/big", &big_data(), 0o644),
            symlink("top/link", "sub/deep/run.sh"),
            symlink("top/sub/deep/up", "../../a.txt"),
            hardlink("top/hard", "top/a.txt"),
            dir("top/emptydir/"),
        ])
    }

    fn check_normal(s: &Scene, got: &Unpacked) {
        assert_eq!(got.entries, 13);
        assert_eq!(
            got.bytes_out,
            (5 + 18 + 1 + 1 + 3 + big_data().len()) as u64
        );
        assert_eq!(fs::read(s.path("top/a.txt")).expect("a"), b"hello");
        assert_eq!(fs::read(s.path("top/big")).expect("big"), big_data());
        assert_eq!(fs::read(s.path("top/dotted")).expect("dotted"), b"dot");
        assert_eq!(fs::read(s.path("top/empty")).expect("empty"), b"");
        assert_eq!(mode_of(&s.path("top/sub/deep/run.sh")), 0o755);
        assert_eq!(mode_of(&s.path("top/a.txt")), 0o644);
        assert_eq!(mode_of(&s.path("top/suid")), 0o755);
        assert_eq!(mode_of(&s.path("top/sgid-sticky")), 0o640);
        assert_eq!(mode_of(&s.path("top/dotted")), 0o600);
        assert!(s.path("top/emptydir").is_dir());
        assert_eq!(
            fs::read_link(s.path("top/link")).expect("link"),
            Path::new("sub/deep/run.sh")
        );
        assert_eq!(
            fs::read(s.path("top/link")).expect("via link"),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(fs::read(s.path("top/sub/deep/up")).expect("up"), b"hello");
        let a = fs::metadata(s.path("top/a.txt")).expect("a");
        let hard = fs::metadata(s.path("top/hard")).expect("hard");
        assert_eq!((a.dev(), a.ino()), (hard.dev(), hard.ino()));
        assert_eq!(a.mtime(), MTIME as i64);
        assert_eq!(s.outside(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn round_trip_every_tar_format() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let plain = normal_archive();
            for ext in ["tar", "tgz", "tar.zst", "txz", "tar.bz2"] {
                let data = compress(format_for(ext), &plain).await;
                let s = Scene::new();
                let got = s
                    .unpack(data.clone(), ext, &sha256(&data), &Limits::default())
                    .await
                    .unwrap_or_else(|e| panic!("{ext}: {e}"));
                assert_eq!(got.bytes_in, data.len() as u64, "{ext}");
                check_normal(&s, &got);
            }
        }
    }

    #[tokio::test]
    async fn builder_archive_with_long_names() {
        let long = format!("{}/file.txt", "d".repeat(150));
        let mut builder = tokio_tar::Builder::new(Vec::new());
        let mut header = tokio_tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o640);
        builder
            .append_data(&mut header, &long, &b"long"[..])
            .await
            .expect("append");
        let data = builder.into_inner().await.expect("finish");
        let s = Scene::new();
        s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
            .await
            .expect("unpack");
        assert_eq!(fs::read(s.path(&long)).expect("long"), b"long");
        assert_eq!(mode_of(&s.path(&long)), 0o640);
    }

    /// Archives written by GNU tar, in its own and in the PAX format (long names,
    /// links, a `./` prefix on every name). Skipped where there is no `tar`.
    #[tokio::test]
    async fn gnu_tar_archives() {
        let src = tempfile::tempdir().expect("tempdir");
        let long_dir = "l".repeat(120);
        fs::create_dir_all(src.path().join(&long_dir).join("sub")).expect("mkdir");
        let long_file = format!("{long_dir}/sub/{}.txt", "n".repeat(110));
        fs::write(src.path().join(&long_file), b"long").expect("write");
        fs::write(src.path().join("run.sh"), b"#!/bin/sh\n").expect("write");
        fs::set_permissions(src.path().join("run.sh"), Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink(&long_file, src.path().join("link")).expect("symlink");
        fs::hard_link(src.path().join("run.sh"), src.path().join("hard")).expect("link");
        for format in ["gnu", "pax"] {
            let out = tempfile::tempdir().expect("tempdir");
            let archive = out.path().join("a.tgz");
            let status = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-czf")
                .arg(&archive)
                .arg("-C")
                .arg(src.path())
                .arg(".")
                .status();
            match status {
                Ok(status) if status.success() => {}
                _ => {
                    eprintln!("no usable GNU tar here; skipping");
                    return;
                }
            }
            let data = fs::read(&archive).expect("read archive");
            let s = Scene::new();
            s.unpack(data, "tgz", &Expected::Nothing, &Limits::default())
                .await
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(fs::read(s.path(&long_file)).expect("long"), b"long");
            assert_eq!(fs::read(s.path("link")).expect("link"), b"long");
            assert_eq!(mode_of(&s.path("hard")), 0o755);
            let run = fs::metadata(s.path("run.sh")).expect("run");
            let hard = fs::metadata(s.path("hard")).expect("hard");
            assert_eq!(run.ino(), hard.ino(), "{format}");
        }
    }

    #[tokio::test]
    async fn multi_member_gzip() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let plain = normal_archive();
            let (a, b) = plain.split_at(plain.len() / 2 + 123);
            let mut data = compress(Format::Gz, a).await;
            data.extend(compress(Format::Gz, b).await);
            let s = Scene::new();
            let got = s
                .unpack(data.clone(), "tgz", &sha256(&data), &Limits::default())
                .await
                .expect("unpack");
            check_normal(&s, &got);
        }
    }

    #[tokio::test]
    async fn multi_frame_zstd() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let plain = normal_archive();
            let (a, b) = plain.split_at(1000);
            let mut data = compress(Format::Zst, a).await;
            data.extend(compress(Format::Zst, b).await);
            let s = Scene::new();
            let got = s
                .unpack(data, "tar.zst", &Expected::Nothing, &Limits::default())
                .await
                .expect("unpack");
            check_normal(&s, &got);
        }
    }

    #[tokio::test]
    async fn single_compressed_files_are_decompressed() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            for (ext, stored) in [("jar.gz", "app.jar"), ("gz", "app"), ("txt.zst", "app.txt")] {
                let content = b"PK\x03\x04 not really a jar".repeat(100);
                let data = compress(format_for(ext), &content).await;
                let s = Scene::new();
                let got = s
                    .unpack(data.clone(), ext, &sha256(&data), &Limits::default())
                    .await
                    .unwrap_or_else(|e| panic!("{ext}: {e}"));
                assert_eq!(fs::read(s.path(stored)).expect("stored"), content, "{ext}");
                assert_eq!(got.bytes_out, content.len() as u64);
                assert_eq!(got.bytes_in, data.len() as u64);
                assert_eq!(got.entries, 1);
                assert_eq!(fs::read_dir(&s.dest).expect("ls").count(), 1);
            }
        }
    }

    #[tokio::test]
    async fn plain_file_is_stored_as_is() {
        let content = big_data();
        let s = Scene::new();
        let got = s
            .unpack(
                content.clone(),
                "jar",
                &sha256(&content),
                &Limits::default(),
            )
            .await
            .expect("unpack");
        assert_eq!(fs::read(s.path("app.jar")).expect("jar"), content);
        assert_eq!(got.bytes_in, content.len() as u64);
        assert_eq!(got.bytes_out, content.len() as u64);
    }

    #[tokio::test]
    async fn overwriting_never_follows_links() {
        let s = Scene::new();
        let data = tar(&[
            file("x", b"first", 0o644),
            file("x", b"second", 0o755),
            file("other", b"keep me", 0o644),
            symlink("y", "other"),
            file("y", b"replaces the link", 0o644),
            hardlink("h", "other"),
            file("h", b"replaces the hard link", 0o644),
            symlink("x", "other"),
        ]);
        s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
            .await
            .expect("unpack");
        assert_eq!(fs::read_link(s.path("x")).expect("x"), Path::new("other"));
        assert_eq!(fs::read(s.path("other")).expect("other"), b"keep me");
        assert_eq!(fs::read(s.path("y")).expect("y"), b"replaces the link");
        assert!(fs::symlink_metadata(s.path("y")).expect("y").is_file());
        assert_eq!(fs::read(s.path("h")).expect("h"), b"replaces the hard link");
    }

    #[tokio::test]
    async fn harmless_links_are_allowed() {
        let s = Scene::new();
        let data = tar(&[
            symlink("self", "."),
            symlink("d/up", "../x"),
            symlink("d/e/upup", "../../x"),
            symlink("dangling", "not/yet/there"),
            dir("l/"),
            file("l/inside", b"ok", 0o644),
        ]);
        s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
            .await
            .expect("unpack");
        assert_eq!(fs::read_link(s.path("self")).expect("self"), Path::new("."));
        assert_eq!(
            fs::read_link(s.path("d/e/upup")).expect("upup"),
            Path::new("../../x")
        );
    }

    #[tokio::test]
    async fn a_directory_entry_replaces_an_earlier_symlink() {
        let s = Scene::new();
        let data = tar(&[
            dir("sub/"),
            symlink("l", "sub"),
            dir("l/"),
            file("l/x", b"x", 0o644),
        ]);
        s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
            .await
            .expect("unpack");
        assert!(fs::symlink_metadata(s.path("l")).expect("l").is_dir());
        assert!(!s.path("sub/x").exists());
    }

    // ---- digests ----

    #[tokio::test]
    async fn digest_mismatch_is_refused() {
        let data = compress(Format::TarGz, &normal_archive()).await;
        let s = Scene::new();
        let err = s
            .unpack(
                data.clone(),
                "tgz",
                &Expected::Sha256([7; 32]),
                &Limits::default(),
            )
            .await
            .expect_err("must fail");
        assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");

        let md5: [u8; 16] = Md5::digest(&data).into();
        let right = md5_tag(&md5);
        let s = Scene::new();
        s.unpack(
            data.clone(),
            "tgz",
            &Expected::Md5Tag(right.clone()),
            &Limits::default(),
        )
        .await
        .expect("right md5 tag");
        let wrong = if right == "00" { "01" } else { "00" };
        let s = Scene::new();
        let err = s
            .unpack(
                data,
                "tgz",
                &Expected::Md5Tag(wrong.to_owned()),
                &Limits::default(),
            )
            .await
            .expect_err("must fail");
        assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&right), "{err}");
    }

    #[tokio::test]
    async fn the_digest_covers_bytes_after_the_archive() {
        // A plain tar with trailing padding: the digest is over the whole object.
        let mut data = tar(&[file("a", b"a", 0o644)]);
        data.extend(vec![0; 10_000]);
        let s = Scene::new();
        s.unpack(data.clone(), "tar", &sha256(&data), &Limits::default())
            .await
            .expect("full digest");
        let s = Scene::new();
        let err = s
            .unpack(
                data.clone(),
                "tar",
                &sha256(&data[..data.len() - 1]),
                &Limits::default(),
            )
            .await
            .expect_err("prefix digest");
        assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn corrupt_and_truncated_bodies() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let data = compress(Format::TarGz, &normal_archive()).await;
            let truncated = data[..data.len() - 100].to_vec();
            let s = Scene::new();
            let err = s
                .unpack(
                    truncated.clone(),
                    "tgz",
                    &Expected::Nothing,
                    &Limits::default(),
                )
                .await
                .expect_err("truncated");
            assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
            // With a digest, the damage is reported as what it is.
            let s = Scene::new();
            let err = s
                .unpack(truncated, "tgz", &sha256(&data), &Limits::default())
                .await
                .expect_err("truncated");
            assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");

            let s = Scene::new();
            let err = s
                .unpack(
                    b"not gzip at all".repeat(100),
                    "tgz",
                    &Expected::Nothing,
                    &Limits::default(),
                )
                .await
                .expect_err("garbage");
            assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn a_failed_download_is_an_io_error() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let data = compress(Format::TarGz, &normal_archive()).await;
            let half = Bytes::copy_from_slice(&data[..data.len() / 2]);
            let chunks = vec![Ok(half), Err(io::Error::other("connection reset"))];
            let s = Scene::new();
            let err = unpack_with(
                Box::pin(futures::stream::iter(chunks)),
                "app",
                "tgz",
                &s.dest,
                &sha256(&data),
                &Limits::default(),
                threads,
            )
            .await
            .expect_err("must fail");
            assert!(
                matches!(&err, UnpackError::Io { what, .. } if what == "reading the download"),
                "{err}"
            );
            assert!(err.to_string().contains("connection reset"), "{err}");
        }
    }

    #[test]
    fn recycled_chunks_keep_their_allocation() {
        let mut chunk = BytesMut::with_capacity(DECODED_CHUNK);
        chunk.resize(DECODED_CHUNK, 7);
        let start = chunk.as_ptr();
        let mut sent = chunk.freeze();
        sent.advance(DECODED_CHUNK);
        let mut back = sent.try_into_mut().expect("unique");
        back.clear();
        back.reserve(DECODED_CHUNK);
        assert_eq!(back.as_ptr(), start);
        assert!(back.capacity() >= DECODED_CHUNK);
    }

    // ---- hostile archives ----

    #[tokio::test]
    async fn hostile_archives_are_refused() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let long_evil = format!("{}/../../../evil", "x/".repeat(60));
            // (label, archive entries built for a scene, the entry the error must name)
            type Case = (&'static str, Box<dyn Fn(&Scene) -> Vec<E>>, String);
            let cases: Vec<Case> = vec![
                (
                    "dot-dot",
                    Box::new(|_| vec![file("../evil", b"!", 0o644)]),
                    "../evil".into(),
                ),
                (
                    "inner dot-dot",
                    Box::new(|_| vec![file("a/../../evil", b"!", 0o644)]),
                    "a/../../evil".into(),
                ),
                (
                    "dot-dot dir",
                    Box::new(|_| vec![dir("../evildir/")]),
                    "../evildir/".into(),
                ),
                (
                    "absolute",
                    Box::new(|s| {
                        let p = format!("{}/evil", s.parent.path().display());
                        vec![file(&p, b"!", 0o644)]
                    }),
                    "<abs>".into(),
                ),
                (
                    "symlink to /etc",
                    Box::new(|_| vec![symlink("l", "/etc")]),
                    "l".into(),
                ),
                (
                    "symlink to ../..",
                    Box::new(|_| vec![symlink("l", "../..")]),
                    "l".into(),
                ),
                (
                    "symlink to ..",
                    Box::new(|_| vec![symlink("l", "..")]),
                    "l".into(),
                ),
                (
                    "deep symlink climbing out",
                    Box::new(|_| vec![symlink("d/l", "../../evil")]),
                    "d/l".into(),
                ),
                (
                    "symlink with inner dot-dot",
                    Box::new(|_| vec![dir("sub/"), symlink("s", "sub/../..")]),
                    "s".into(),
                ),
                (
                    "write through symlink to a dir",
                    Box::new(|_| vec![dir("sub/"), symlink("l", "sub"), file("l/x", b"!", 0o644)]),
                    "l/x".into(),
                ),
                (
                    "write through symlink to .",
                    Box::new(|_| vec![symlink("l", "."), file("l/x", b"!", 0o644)]),
                    "l/x".into(),
                ),
                (
                    "mkdir through symlink",
                    Box::new(|_| vec![dir("sub/"), symlink("l", "sub"), dir("l/inner/")]),
                    "l/inner/".into(),
                ),
                (
                    "link through symlink",
                    Box::new(|_| vec![dir("sub/"), symlink("l", "sub"), symlink("l/s", "x")]),
                    "l/s".into(),
                ),
                (
                    "hard link to /etc/passwd",
                    Box::new(|_| vec![hardlink("h", "/etc/passwd")]),
                    "h".into(),
                ),
                (
                    "hard link to ../victim",
                    Box::new(|_| vec![hardlink("h", "../victim")]),
                    "h".into(),
                ),
                (
                    "hard link to nothing extracted",
                    Box::new(|_| vec![hardlink("h", "missing")]),
                    "h".into(),
                ),
                (
                    "hard link to a symlink",
                    Box::new(|_| vec![symlink("s", "../victim"), hardlink("h", "s")]),
                    "s".into(),
                ),
                (
                    "hard link to an inner symlink",
                    Box::new(|_| {
                        vec![
                            file("f", b"f", 0o644),
                            symlink("s", "f"),
                            hardlink("h", "s"),
                        ]
                    }),
                    "h".into(),
                ),
                (
                    "hard link via a symlinked dir",
                    Box::new(|_| {
                        vec![
                            dir("sub/"),
                            file("sub/f", b"f", 0o644),
                            symlink("l", "sub"),
                            hardlink("h", "l/f"),
                        ]
                    }),
                    "h".into(),
                ),
                (
                    "char device",
                    Box::new(|_| vec![special("null", b'3')]),
                    "null".into(),
                ),
                (
                    "block device",
                    Box::new(|_| vec![special("sda", b'4')]),
                    "sda".into(),
                ),
                (
                    "fifo",
                    Box::new(|_| vec![special("pipe", b'6')]),
                    "pipe".into(),
                ),
                (
                    "pax path with dot-dot",
                    Box::new(|_| vec![pax(b'x', "path", "../evil"), file("harmless", b"!", 0o644)]),
                    "../evil".into(),
                ),
                (
                    "pax linkpath climbing out",
                    Box::new(|_| vec![pax(b'x', "linkpath", "../../x"), symlink("l", "ok")]),
                    "l".into(),
                ),
                (
                    "gnu longname with dot-dot",
                    Box::new({
                        let long_evil = long_evil.clone();
                        move |_| vec![gnu_longname(&long_evil), file("placeholder", b"!", 0o644)]
                    }),
                    long_evil.clone(),
                ),
            ];
            for (label, build, entry) in cases {
                let s = Scene::new();
                fs::write(s.parent.path().join("victim"), b"victim").expect("victim");
                let entry = if entry == "<abs>" {
                    format!("{}/evil", s.parent.path().display())
                } else {
                    entry
                };
                let data = compress(Format::TarGz, &tar(&build(&s))).await;
                let err = s
                    .unpack(data, "tgz", &Expected::Nothing, &Limits::default())
                    .await
                    .expect_err(label);
                match &err {
                    UnpackError::Unsafe { entry: got, .. } => assert_eq!(got, &entry, "{label}"),
                    other => panic!("{label}: expected Unsafe, got {other}"),
                }
                assert!(err.to_string().contains(&entry), "{label}: {err}");
                assert_eq!(s.outside(), vec!["victim".to_owned()], "{label}");
                assert_eq!(
                    fs::read(s.parent.path().join("victim")).expect("victim"),
                    b"victim",
                    "{label}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_symlinked_dir_is_not_written_through_even_when_inside() {
        let s = Scene::new();
        let data = tar(&[dir("sub/"), symlink("l", "sub"), file("l/x", b"!", 0o644)]);
        let err = s
            .unpack(data, "tar", &Expected::Nothing, &Limits::default())
            .await
            .expect_err("refused");
        assert!(matches!(err, UnpackError::Unsafe { .. }), "{err}");
        assert!(!s.path("sub/x").exists());
    }

    // ---- limits ----

    #[tokio::test]
    async fn entry_count_limit() {
        let entries: Vec<E> = (0..5)
            .map(|i| file(&format!("f{i}"), b"x", 0o644))
            .collect();
        let s = Scene::new();
        let limits = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        let err = s
            .unpack(tar(&entries), "tar", &Expected::Nothing, &limits)
            .await
            .expect_err("too many");
        assert!(
            matches!(
                err,
                UnpackError::TooLarge {
                    what: "entries",
                    limit: 3
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn size_limits_stop_bombs() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            let limits = Limits {
                max_unpacked_bytes: 1 << 20,
                ..Limits::default()
            };
            let zeros = vec![0u8; 4 << 20];
            let cases: Vec<(&str, Vec<u8>, &str)> = vec![
                ("declared size", tar(&[file("big", &zeros, 0o644)]), "tgz"),
                (
                    "trailing zeros after the archive",
                    {
                        let mut t = tar(&[file("small", b"x", 0o644)]);
                        t.extend_from_slice(&zeros);
                        t
                    },
                    "tgz",
                ),
                ("single file", zeros.clone(), "gz"),
            ];
            for (label, plain, ext) in cases {
                let data = compress(format_for(ext), &plain).await;
                assert!(data.len() < 1 << 20, "{label}: the bomb must be small");
                let s = Scene::new();
                let err = s
                    .unpack(data, ext, &Expected::Nothing, &limits)
                    .await
                    .expect_err(label);
                assert!(
                    matches!(
                        err,
                        UnpackError::TooLarge {
                            what: "unpacked bytes",
                            ..
                        }
                    ),
                    "{label}: {err}"
                );
                let on_disk: u64 = fs::read_dir(&s.dest)
                    .expect("ls")
                    .map(|e| e.expect("e").metadata().expect("md").len())
                    .sum();
                assert!(on_disk <= 1 << 20, "{label}: wrote {on_disk}");
            }
        }
    }

    #[tokio::test]
    async fn huge_header_data_is_refused_before_it_fills_memory() {
        for threads in BOTH_WAYS {
            THREADS.set(threads);
            // A GNU long name or PAX record over the cap: tokio_tar would hold all of it.
            let huge = "a".repeat(4 << 20);
            for (label, first) in [
                ("gnu longname", gnu_longname(&huge)),
                ("pax", pax(b'x', "comment", &huge)),
            ] {
                let data = compress(Format::Zst, &tar(&[first, file("f", b"x", 0o644)])).await;
                let s = Scene::new();
                let err = s
                    .unpack(data, "tar.zst", &Expected::Nothing, &Limits::default())
                    .await
                    .expect_err(label);
                assert!(
                    matches!(
                        err,
                        UnpackError::TooLarge {
                            limit: MAX_METADATA,
                            ..
                        }
                    ),
                    "{label}: {err}"
                );
            }
        }
    }

    #[tokio::test]
    async fn payloads_of_non_files_are_skipped() {
        // A global PAX header and a directory carrying data are fine and stream past.
        let big = vec![b'x'; 3 << 20];
        let data = tar(&[
            E {
                data: big.clone(),
                ..pax(b'g', "comment", "x")
            },
            E {
                data: big,
                ..dir("d/")
            },
            file("d/f", b"f", 0o644),
        ]);
        let s = Scene::new();
        s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
            .await
            .expect("unpack");
        assert_eq!(fs::read(s.path("d/f")).expect("f"), b"f");
    }

    // ---- names ----

    #[test]
    fn formats_by_extension() {
        let table = [
            ("tar", Format::Tar),
            ("tgz", Format::TarGz),
            ("tar.gz", Format::TarGz),
            ("TAR.GZ", Format::TarGz),
            ("1.2.tar.gz", Format::TarGz),
            ("tar.zst", Format::TarZst),
            ("tzst", Format::TarZst),
            ("tar.xz", Format::TarXz),
            ("txz", Format::TarXz),
            ("tar.bz2", Format::TarBz2),
            ("tbz2", Format::TarBz2),
            ("gz", Format::Gz),
            ("jar.gz", Format::Gz),
            ("txt.zst", Format::Zst),
            ("xz", Format::Xz),
            ("bz2", Format::Bz2),
            ("jar", Format::Plain),
            ("zip", Format::Plain),
            ("", Format::Plain),
        ];
        for (ext, format) in table {
            assert_eq!(format_for(ext), format, "{ext}");
        }
    }

    #[test]
    fn stored_file_names() {
        assert_eq!(stored_file_name("app", "jar.gz"), "app.jar");
        assert_eq!(stored_file_name("app", "gz"), "app");
        assert_eq!(stored_file_name("app", "jar"), "app.jar");
        assert_eq!(stored_file_name("app", "bin.zst"), "app.bin");
        assert_eq!(stored_file_name("app", ""), "app");
    }

    #[tokio::test]
    async fn a_bad_stored_file_name_is_refused() {
        let s = Scene::new();
        let err = unpack(
            body(b"x".to_vec()),
            "app",
            "x/../../y",
            &s.dest,
            &Expected::Nothing,
            &Limits::default(),
        )
        .await
        .expect_err("bad name");
        assert!(matches!(err, UnpackError::BadFileName { .. }), "{err}");
    }
}
