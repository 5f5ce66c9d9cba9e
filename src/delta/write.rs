//! Spool's side: an archive rewritten as a delta-ready one. The tar stream is
//! kept byte for byte; only its compression changes, into one frame (zstd)
//! or member (gzip) per entry, an entry larger than [`PIECE`] in several,
//! then the index (see `index.rs`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::index::{Entry, Index, Piece, VERSION};
use super::tar::{Kind, next_entry, padding};
use super::{Codec, DeltaError};
use crate::digest::hex;

/// Bytes of tar stream per piece, at most: a changed file costs about its own
/// size, and the frames of a large one stay a few MiB each.
pub(crate) const PIECE: usize = 4 << 20;
const ZSTD_LEVEL: i32 = 3;

/// Where the index is in the written object, its digest, and the digests of
/// the whole object (computed as it is written: the upload needs no second
/// read of the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub index_offset: u64,
    pub index_length: u64,
    pub index_sha256: [u8; 32],
    pub md5: [u8; 16],
    pub sha256: [u8; 32],
}

/// Pieces waiting for a compressing thread, and compressed ones waiting for
/// the writer, per thread: enough to keep every thread busy while memory
/// stays a few pieces per thread.
const QUEUED_PER_THREAD: usize = 2;

/// A piece compressed, with what the index records of it.
struct Packed {
    bytes: Vec<u8>,
    size: usize,
    sha256: [u8; 32],
}

fn compress(codec: Codec, zstd: &mut zstd::bulk::Compressor, data: &[u8]) -> io::Result<Packed> {
    let bytes = match codec {
        Codec::Zstd => zstd.compress(data)?,
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2 + 64),
                flate2::Compression::default(),
            );
            e.write_all(data)?;
            e.finish()?
        }
    };
    let sha256 = Sha256::digest(&bytes).into();
    Ok(Packed {
        bytes,
        size: data.len(),
        sha256,
    })
}

/// The output file, written in piece order, hashed as it is written.
struct Out {
    w: BufWriter<File>,
    offset: u64,
    md5: Md5,
    sha: Sha256,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.md5.update(bytes);
        self.sha.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// The writer stage: compressed pieces (numbered by the reader) into the
/// file, in their order whatever order the threads finish them in.
fn write_pieces(
    out: &mut Out,
    done: mpsc::Receiver<(usize, io::Result<Packed>)>,
) -> Result<Vec<Piece>, DeltaError> {
    let mut pieces = Vec::new();
    let mut early: BTreeMap<usize, Packed> = BTreeMap::new();
    for (n, packed) in done {
        early.insert(n, packed.map_err(DeltaError::Write)?);
        while let Some(p) = early.remove(&pieces.len()) {
            pieces.push(Piece {
                offset: out.offset,
                length: p.bytes.len() as u64,
                size: p.size as u64,
                sha256: hex(&p.sha256),
            });
            out.put(&p.bytes).map_err(DeltaError::Write)?;
        }
    }
    if !early.is_empty() {
        return Err(DeltaError::Write(io::Error::other(
            "a compressing thread stopped early",
        )));
    }
    Ok(pieces)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<(), DeltaError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            DeltaError::Archive("it ends inside an entry's data".into())
        } else {
            DeltaError::Archive(e.to_string())
        }
    })
}

/// The reader stage: the tar stream cut into pieces, numbered in order and
/// handed to `jobs`; returns the entries (the index without its pieces).
fn read_entries(
    tar: &mut impl Read,
    jobs: &mpsc::SyncSender<(usize, Vec<u8>)>,
) -> Result<Vec<Entry>, DeltaError> {
    let mut sent = 0usize;
    let mut send = |data: Vec<u8>| -> Result<(), DeltaError> {
        // The threads stop only when the writer did: it says why.
        jobs.send((sent, data))
            .map_err(|_| DeltaError::Write(io::Error::other("the writing thread stopped")))?;
        sent += 1;
        Ok(())
    };
    let mut entries = Vec::new();
    loop {
        let raw = next_entry(tar).map_err(|e| DeltaError::Archive(e.to_string()))?;
        let Some(raw) = raw else { break };
        let first = sent_so_far(&entries);
        let mut count = 0;
        let mut hasher = (raw.kind == Kind::File).then(Sha256::new);
        let mut buf: Vec<u8> = Vec::with_capacity(PIECE);
        buf.extend_from_slice(&raw.header);
        let mut left = raw.size + padding(raw.size);
        let mut data_left = raw.size;
        loop {
            let room = (PIECE.saturating_sub(buf.len()) as u64).min(left) as usize;
            if room > 0 {
                let start = buf.len();
                buf.resize(start + room, 0);
                read_full(tar, &mut buf[start..])?;
                let data = (room as u64).min(data_left) as usize;
                if let Some(h) = &mut hasher {
                    h.update(&buf[start..start + data]);
                }
                data_left -= data as u64;
                left -= room as u64;
            }
            if left == 0 || buf.len() >= PIECE {
                let next = Vec::with_capacity(if left == 0 { 0 } else { PIECE });
                send(std::mem::replace(&mut buf, next))?;
                count += 1;
            }
            if left == 0 {
                break;
            }
        }
        entries.push(Entry {
            path: raw.path,
            kind: raw.kind,
            mode: raw.mode,
            size: raw.size,
            sha256: hasher.map(|h| hex(&h.finalize())),
            header: hex(&raw.header),
            first,
            count,
        });
    }
    // The end-of-archive blocks and whatever follows them, as they are.
    let mut trailer = vec![0u8; super::tar::BLOCK];
    tar.read_to_end(&mut trailer)
        .map_err(|e| DeltaError::Archive(e.to_string()))?;
    for chunk in trailer.chunks(PIECE) {
        send(chunk.to_vec())?;
    }
    Ok(entries)
}

fn sent_so_far(entries: &[Entry]) -> usize {
    entries.last().map_or(0, |e| e.first + e.count)
}

/// Threads compressing pieces: the machine's cores (a spool runs alone on
/// the deploy box), at most 8.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Rewrites the archive `src` (compressed with `codec`) into `dest`.
pub(crate) fn write(src: &Path, codec: Codec, dest: &Path) -> Result<Written, DeltaError> {
    write_with(src, codec, dest, threads())
}

/// [`write`] with `threads` compressing: one thread reads and cuts the tar
/// stream, `threads` compress pieces (each its own frame or member, so they
/// are independent), one writes them in order and hashes the file. The
/// bytes do not depend on `threads`.
pub(crate) fn write_with(
    src: &Path,
    codec: Codec,
    dest: &Path,
    threads: usize,
) -> Result<Written, DeltaError> {
    let threads = threads.max(1);
    let input = File::open(src).map_err(DeltaError::Write)?;
    let input = BufReader::with_capacity(1 << 20, input);
    let mut tar: Box<dyn Read> = match codec {
        Codec::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(DeltaError::Write)?)
        }
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
    };
    let file = File::create_new(dest).map_err(DeltaError::Write)?;
    let mut out = Out {
        w: BufWriter::with_capacity(1 << 20, file),
        offset: 0,
        md5: Md5::new(),
        sha: Sha256::new(),
    };
    let queued = threads * QUEUED_PER_THREAD;
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(queued);
    let (done_tx, done_rx) = mpsc::sync_channel::<(usize, io::Result<Packed>)>(queued);
    // Each compressing thread holds the queue: when all have stopped (the
    // writer failed), the reader's next send fails instead of waiting.
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let panicked = || DeltaError::Write(io::Error::other("a spool thread panicked"));
    let (entries, pieces) = std::thread::scope(|s| {
        let out = &mut out;
        let writer = s.spawn(move || write_pieces(out, done_rx));
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (jobs, done) = (jobs_rx.clone(), done_tx.clone());
                s.spawn(move || {
                    let mut zstd = match zstd::bulk::Compressor::new(ZSTD_LEVEL) {
                        Ok(z) => z,
                        Err(e) => {
                            let _ = done.send((usize::MAX, Err(e)));
                            return;
                        }
                    };
                    loop {
                        // A poisoned lock only means another thread panicked;
                        // its join reports that.
                        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((n, data)) = job else { return };
                        if done.send((n, compress(codec, &mut zstd, &data))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop((done_tx, jobs_rx));
        let read = read_entries(&mut tar, &jobs_tx);
        drop(jobs_tx);
        let mut died = false;
        for w in workers {
            died |= w.join().is_err();
        }
        let written = writer.join().map_err(|_| panicked())?;
        if died {
            return Err(panicked());
        }
        // The reader's error first: the writer's follows from it, if any.
        let entries = read?;
        Ok((entries, written?))
    })?;
    let index = Index {
        version: VERSION,
        codec,
        entries,
        pieces,
    };
    let container = index.encode()?;
    let index_offset = out.offset;
    out.put(&container).map_err(DeltaError::Write)?;
    // No sync_all: the file is a temporary one, read back at once by the
    // upload (from the page cache); after a crash it is garbage either way,
    // and spool writes it again.
    out.w.flush().map_err(DeltaError::Write)?;
    Ok(Written {
        index_offset,
        index_length: container.len() as u64,
        index_sha256: Sha256::digest(&container).into(),
        md5: out.md5.finalize().into(),
        sha256: out.sha.finalize().into(),
    })
}
