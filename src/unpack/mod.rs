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
//!
//! One file per stage: `verify` (the feeder: hashes the download, then checks its
//! digest), `decode` (decompression), `reader` (the readers between the stages, and the
//! count of decompressed bytes), `extract` (the tar walk and the file writes, by the rules
//! above); the tests are in `tests/`.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

use crate::digest::Expected;

mod decode;
mod extract;
mod reader;
#[cfg(test)]
mod tests;
mod verify;

use decode::{Codec, DECODED_CHUNKS, decode};
use extract::Job;
pub(crate) use extract::relative_path;
use verify::{Hasher, feed, verify};

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
pub(crate) struct Unpacked {
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
    /// The disk (or the file system) refused.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The download itself failed (not the disk): another attempt may succeed.
    #[error("reading the download: {source}")]
    Download {
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
pub(crate) enum Format {
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
pub(crate) fn format_for(ext: &str) -> Format {
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
pub(crate) fn stored_file_name(package: &str, ext: &str) -> String {
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

/// Chunks in flight between the download and the next stage: enough to ride out jitter
/// on either side, small enough that memory stays bounded. The HTTP client hands out
/// what one socket read gave, up to ~400 KiB, so this is at most ~3 MiB.
const CHANNEL_CHUNKS: usize = 8;

/// Where decompression runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Threads {
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
/// digest of the whole body, decompressing where `threads` says. On error the caller
/// deletes `dest`; nothing is ever written outside it.
pub(crate) async fn unpack_with(
    body: impl Stream<Item = io::Result<Bytes>> + Unpin,
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

    let fed = fed.map_err(|source| UnpackError::Download { source })?;
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
