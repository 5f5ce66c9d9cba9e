//! The node's side: which entries the local revision still has, which pieces
//! to fetch (coalesced into few ranges), and the tar stream rebuilt from both,
//! in order, for the unpack.
//!
//! Two stages: on the caller's task, the fetcher asks for the ranges a few at
//! once, in order; on a blocking thread, the writer walks the entries, reads
//! unchanged files from the local revision and checks and decompresses the
//! fetched pieces, and hands the stream on in chunks. Memory: a few ranges
//! (each at most [`MAX_RUN`] bytes) and a chunk or two.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Future, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::index::{Entry, Index};
use super::tar::{Kind, padding};
use super::{Codec, DeltaError};
use crate::digest::{hex, parse_hex32};
use crate::unpack::Limits;

/// Pieces at most this far apart are fetched in one request (the bytes
/// between cost less than another request's round trip).
pub(crate) const GAP: u64 = 8 << 10;
/// A range is at most this long (unless one piece is longer): what the
/// fetcher holds per range in flight.
pub(crate) const MAX_RUN: u64 = 8 << 20;
/// Ranges in flight at once.
const RANGES_AT_ONCE: usize = 4;
/// Chunks handed to the unpack.
const CHUNK: usize = 256 << 10;

/// What a delta install moved and reused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Bytes fetched from the bucket (the index and the ranges).
    pub fetched: u64,
    /// Requests made (the metadata, the index, the ranges).
    pub requests: u64,
    /// Bytes of file data taken from the local revision.
    pub reused: u64,
}

/// A range of the object to fetch: its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub from: u64,
    pub to: u64,
    pub pieces: Range<usize>,
}

/// Which entries come from the local revision (`base`): a regular file of
/// the same size there whose SHA-256 is the index's. Files are opened
/// without following a final symlink and read only if regular; the index's
/// path must pass the unpack's own path rules.
fn reusable(index: &Index, base: &Path) -> Vec<bool> {
    index
        .entries
        .iter()
        .map(|e| {
            e.kind == Kind::File
                && e.size > 0
                && local_path(base, e).is_some_and(|p| matches_local(&p, e).unwrap_or(false))
        })
        .collect()
}

fn local_path(base: &Path, e: &Entry) -> Option<PathBuf> {
    let rel = crate::unpack::relative_path(e.path.as_bytes()).ok()?;
    (!rel.as_os_str().is_empty()).then(|| base.join(rel))
}

fn open_local(path: &Path, size: u64) -> io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    Ok((m.is_file() && m.len() == size).then_some(f))
}

fn matches_local(path: &Path, e: &Entry) -> io::Result<bool> {
    let Some(mut f) = open_local(path, e.size)? else {
        return Ok(false);
    };
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(Some(hex(&h.finalize())) == e.sha256)
}

/// The entries whose data must be fetched, as coalesced ranges.
pub(crate) fn runs(index: &Index, reuse: &[bool]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (e, reused) in index.entries.iter().zip(reuse) {
        if *reused || e.size == 0 {
            continue;
        }
        for i in e.first..e.first + e.count {
            let p = &index.pieces[i];
            match runs.last_mut() {
                // Pieces between (of entries taken from here) come along.
                Some(r) if p.offset <= r.to + GAP && p.offset + p.length - r.from <= MAX_RUN => {
                    r.to = p.offset + p.length;
                    r.pieces.end = i + 1;
                }
                _ => runs.push(Run {
                    from: p.offset,
                    to: p.offset + p.length,
                    pieces: i..i + 1,
                }),
            }
        }
    }
    runs
}

/// Checks the index against the limits, then finds what the local revision
/// still has (reading it: on a blocking thread).
pub(crate) async fn plan(
    index: Arc<Index>,
    base: PathBuf,
    limits: Limits,
) -> Result<(Vec<bool>, Vec<Run>), DeltaError> {
    let entries = index.entries.len() as u64;
    if limits.max_entries > 0 && entries > limits.max_entries {
        return Err(DeltaError::TooLarge {
            what: "entries",
            limit: limits.max_entries,
        });
    }
    let total: u64 = index.entries.iter().map(|e| e.size).sum();
    if limits.max_unpacked_bytes > 0 && total > limits.max_unpacked_bytes {
        return Err(DeltaError::TooLarge {
            what: "bytes",
            limit: limits.max_unpacked_bytes,
        });
    }
    crate::task::blocking(
        move || {
            let reuse = reusable(&index, &base);
            let runs = runs(&index, &reuse);
            Ok((reuse, runs))
        },
        |e| DeltaError::Local(io::Error::other(e)),
    )
    .await
}

/// Rebuilds the tar stream into `tx`, fetching `runs` with `fetch` (bytes
/// `[from, to)` of the object). Ends when the stream is complete or `tx` is
/// closed (the unpack failed: [`DeltaError::Stopped`]).
pub async fn transfer<F, Fut>(
    index: Arc<Index>,
    base: PathBuf,
    reuse: Vec<bool>,
    runs: Vec<Run>,
    fetch: F,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> Result<Moved, DeltaError>
where
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = io::Result<Bytes>>,
{
    let (runs_tx, runs_rx) = mpsc::channel::<(Run, Bytes)>(2);
    let fetched: u64 = runs.iter().map(|r| r.to - r.from).sum();
    let requests = runs.len() as u64;
    let writer_index = index.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_stream(&writer_index, &base, &reuse, runs_rx, &tx)
    });
    let fetcher = async {
        let mut ranges = futures::stream::iter(runs)
            .map(|r| {
                let got = fetch(r.from, r.to);
                async move { (r, got.await) }
            })
            .buffered(RANGES_AT_ONCE);
        while let Some((run, got)) = ranges.next().await {
            let bytes = got.map_err(DeltaError::Download)?;
            if bytes.len() as u64 != run.to - run.from {
                return Err(DeltaError::Range(format!(
                    "bytes {}-{} of the object came back as {} bytes",
                    run.from,
                    run.to - 1,
                    bytes.len()
                )));
            }
            if runs_tx.send((run, bytes)).await.is_err() {
                // The writer stopped; it says why.
                return Ok(());
            }
        }
        Ok(())
    };
    let (fetched_ok, written) = tokio::join!(fetcher, writer);
    let reused = written.map_err(|e| DeltaError::Local(io::Error::other(e.to_string())))??;
    fetched_ok?;
    Ok(Moved {
        fetched,
        requests,
        reused,
    })
}

struct Writer<'a> {
    tx: &'a mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Writer<'_> {
    fn put(&mut self, mut data: &[u8]) -> Result<(), DeltaError> {
        while !data.is_empty() {
            let n = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeltaError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| DeltaError::Stopped)
    }
}

/// The writer stage; returns the bytes of file data reused.
fn write_stream(
    index: &Index,
    base: &Path,
    reuse: &[bool],
    mut runs: mpsc::Receiver<(Run, Bytes)>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<u64, DeltaError> {
    let mut out = Writer {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let mut current: Option<(Run, Bytes)> = None;
    let mut reused = 0u64;
    for (e, reuse) in index.entries.iter().zip(reuse) {
        let header =
            decode_hex(&e.header).ok_or_else(|| DeltaError::Index("a header is not hex".into()))?;
        if *reuse {
            out.put(&header)?;
            copy_local(base, e, &mut out)?;
            out.put(&vec![0u8; padding(e.size) as usize])?;
            reused += e.size;
        } else if e.size == 0 {
            out.put(&header)?;
        } else {
            // Piece by piece (an entry may be larger than memory): checked
            // as they pass, the whole entry once its last piece has.
            let mut check = EntryCheck::new(e, header);
            for i in e.first..e.first + e.count {
                let raw = piece(index, i, &mut current, &mut runs)?;
                let bytes = unpack_piece(index, i, &raw)?;
                check.update(&bytes)?;
                out.put(&bytes)?;
            }
            check.finish()?;
        }
    }
    // The end of the archive.
    out.put(&[0u8; 2 * super::tar::BLOCK])?;
    out.flush()?;
    Ok(reused)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The compressed bytes of piece `i`, from the range that holds it (the
/// ranges come in order).
fn piece(
    index: &Index,
    i: usize,
    current: &mut Option<(Run, Bytes)>,
    runs: &mut mpsc::Receiver<(Run, Bytes)>,
) -> Result<Bytes, DeltaError> {
    loop {
        if let Some((run, bytes)) = current
            && run.pieces.contains(&i)
        {
            let p = &index.pieces[i];
            let start = (p.offset - run.from) as usize;
            return Ok(bytes.slice(start..start + p.length as usize));
        }
        // The fetcher stopped: it says why.
        *current = Some(runs.blocking_recv().ok_or(DeltaError::Stopped)?);
    }
}

/// Piece `i` checked against its digest and decompressed.
fn unpack_piece(index: &Index, i: usize, raw: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let p = &index.pieces[i];
    let got: [u8; 32] = Sha256::digest(raw).into();
    if Some(got) != parse_hex32(&p.sha256) {
        return Err(DeltaError::PieceDigest {
            piece: i,
            expected: p.sha256.clone(),
            actual: hex(&got),
        });
    }
    let corrupt = |why: String| DeltaError::Disagree {
        path: format!("piece {i}"),
        why,
    };
    let size = usize::try_from(p.size).map_err(|_| corrupt("too large".into()))?;
    let out = match index.codec {
        Codec::Zstd => {
            zstd::bulk::decompress(raw, size).map_err(|e| corrupt(format!("zstd: {e}")))?
        }
        Codec::Gzip => {
            let mut out = Vec::with_capacity(size);
            flate2::read::GzDecoder::new(raw)
                .take(size as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(format!("gzip: {e}")))?;
            out
        }
    };
    if out.len() != size {
        return Err(corrupt(format!(
            "it decompresses to {} bytes, not {size}",
            out.len()
        )));
    }
    Ok(out)
}

/// A fetched entry is what the index says: its header, then data of its
/// size and SHA-256, then padding.
struct EntryCheck<'a> {
    e: &'a Entry,
    header: Vec<u8>,
    /// Bytes of the entry's stream seen so far.
    seen: u64,
    sha: Sha256,
}

impl<'a> EntryCheck<'a> {
    fn new(e: &'a Entry, header: Vec<u8>) -> Self {
        Self {
            e,
            header,
            seen: 0,
            sha: Sha256::new(),
        }
    }

    fn disagree(&self, why: &str) -> DeltaError {
        DeltaError::Disagree {
            path: self.e.path.clone(),
            why: why.to_owned(),
        }
    }

    fn update(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        let (start, end) = (self.seen, self.seen + bytes.len() as u64);
        let head = self.header.len() as u64;
        if end > self.e.stream_len() {
            return Err(self.disagree("its size"));
        }
        // The part of `bytes` that is header, and the part that is data.
        if start < head {
            let n = (head.min(end) - start) as usize;
            if bytes[..n] != self.header[start as usize..start as usize + n] {
                return Err(self.disagree("its header"));
            }
        }
        let data = (head, head + self.e.size);
        let (a, b) = (start.max(data.0), end.min(data.1));
        if a < b {
            self.sha
                .update(&bytes[(a - start) as usize..(b - start) as usize]);
        }
        self.seen = end;
        Ok(())
    }

    fn finish(self) -> Result<(), DeltaError> {
        if self.seen != self.e.stream_len() {
            return Err(self.disagree("its size"));
        }
        if let Some(want) = &self.e.sha256
            && hex(&self.sha.finalize()) != *want
        {
            return Err(DeltaError::Disagree {
                path: self.e.path.clone(),
                why: "its content's SHA-256".into(),
            });
        }
        Ok(())
    }
}

/// A reused file's data, checked again as it is read (it was checked when
/// planned; the application may have written it since).
fn copy_local(base: &Path, e: &Entry, out: &mut Writer) -> Result<(), DeltaError> {
    let changed = || {
        DeltaError::Local(io::Error::other(format!(
            "{}: changed while being read for a delta install",
            e.path
        )))
    };
    let path = local_path(base, e).ok_or_else(changed)?;
    let mut f = open_local(&path, e.size)
        .map_err(DeltaError::Local)?
        .ok_or_else(changed)?;
    let mut h = Sha256::new();
    let mut left = e.size;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = match f.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DeltaError::Local(e)),
        };
        h.update(&buf[..n]);
        out.put(&buf[..n])?;
        left -= n as u64;
    }
    if Some(hex(&h.finalize())) != e.sha256 {
        return Err(changed());
    }
    Ok(())
}
