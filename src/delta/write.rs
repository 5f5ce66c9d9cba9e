//! Spool's side: an archive rewritten as a delta-ready one. The tar stream is
//! kept byte for byte; only its compression changes, into one frame (zstd)
//! or member (gzip) per entry, an entry larger than [`PIECE`] in several,
//! then the index (see `index.rs`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::index::{Entry, Index, Piece, VERSION};
use super::tar::{Kind, next_entry, padding};
use super::{Codec, DeltaError};
use crate::digest::hex;

/// Bytes of tar stream per piece, at most: a changed file costs about its own
/// size, and the frames of a large one stay a few MiB each.
pub(crate) const PIECE: usize = 4 << 20;
const ZSTD_LEVEL: i32 = 3;

/// Where the index is in the written object, and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub index_offset: u64,
    pub index_length: u64,
    pub index_sha256: [u8; 32],
}

struct Out<W: Write> {
    w: W,
    codec: Codec,
    offset: u64,
    zstd: zstd::bulk::Compressor<'static>,
    pieces: Vec<Piece>,
}

impl<W: Write> Out<W> {
    /// Writes `data` (tar bytes) as one piece.
    fn piece(&mut self, data: &[u8]) -> Result<(), DeltaError> {
        let packed = match self.codec {
            Codec::Zstd => self.zstd.compress(data).map_err(DeltaError::Write)?,
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 2 + 64),
                    flate2::Compression::default(),
                );
                e.write_all(data).map_err(DeltaError::Write)?;
                e.finish().map_err(DeltaError::Write)?
            }
        };
        self.w.write_all(&packed).map_err(DeltaError::Write)?;
        self.pieces.push(Piece {
            offset: self.offset,
            length: packed.len() as u64,
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(&packed)),
        });
        self.offset += packed.len() as u64;
        Ok(())
    }
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

/// Rewrites the archive `src` (compressed with `codec`) into `dest`.
pub(crate) fn write(src: &Path, codec: Codec, dest: &Path) -> Result<Written, DeltaError> {
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
        codec,
        offset: 0,
        zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(DeltaError::Write)?,
        pieces: Vec::new(),
    };
    let mut entries = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(PIECE);
    loop {
        let raw = next_entry(&mut tar).map_err(|e| DeltaError::Archive(e.to_string()))?;
        let Some(raw) = raw else { break };
        let first = out.pieces.len();
        let mut hasher = (raw.kind == Kind::File).then(Sha256::new);
        buf.clear();
        buf.extend_from_slice(&raw.header);
        let mut left = raw.size + padding(raw.size);
        let mut data_left = raw.size;
        loop {
            let room = (PIECE.saturating_sub(buf.len()) as u64).min(left) as usize;
            if room > 0 {
                let start = buf.len();
                buf.resize(start + room, 0);
                read_full(&mut tar, &mut buf[start..])?;
                let data = (room as u64).min(data_left) as usize;
                if let Some(h) = &mut hasher {
                    h.update(&buf[start..start + data]);
                }
                data_left -= data as u64;
                left -= room as u64;
            }
            if left == 0 || buf.len() >= PIECE {
                out.piece(&buf)?;
                buf.clear();
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
            count: out.pieces.len() - first,
        });
    }
    // The end-of-archive blocks and whatever follows them, as they are.
    let mut trailer = vec![0u8; super::tar::BLOCK];
    let mut rest = Vec::new();
    tar.read_to_end(&mut rest)
        .map_err(|e| DeltaError::Archive(e.to_string()))?;
    trailer.extend_from_slice(&rest);
    for chunk in trailer.chunks(PIECE) {
        out.piece(chunk)?;
    }
    let index = Index {
        version: VERSION,
        codec,
        entries,
        pieces: std::mem::take(&mut out.pieces),
    };
    let container = index.encode()?;
    let index_offset = out.offset;
    out.w.write_all(&container).map_err(DeltaError::Write)?;
    let file = out
        .w
        .into_inner()
        .map_err(|e| DeltaError::Write(e.into_error()))?;
    file.sync_all().map_err(DeltaError::Write)?;
    Ok(Written {
        index_offset,
        index_length: container.len() as u64,
        index_sha256: Sha256::digest(&container).into(),
    })
}
