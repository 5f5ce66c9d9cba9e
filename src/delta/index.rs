//! The index of a delta-ready object and how it travels inside it.
//!
//! The index is JSON, compressed with zstd, wrapped so that every decoder of
//! the archive skips it: in a `.tar.zst`, one zstd skippable frame; in a
//! `.tgz`/`.tar.gz`, gzip members that decompress to nothing, the index in
//! their header's extra field (at most 65,531 bytes each, so as many members
//! as needed). Its place is the object's metadata (`ftl-delta-index`), its
//! digest `ftl-delta-sha256` (and the signed manifest's `delta-index`).

use serde::{Deserialize, Serialize};

use super::tar::{Kind, padding};
use super::{Codec, DeltaError};

pub(crate) const VERSION: u32 = 1;

/// Magic of the skippable frame (any of 0x184D2A50..=0x184D2A5F is skippable).
const SKIPPABLE: u32 = 0x184D_2A5E;
/// The extra field's subfield id in a gzip member holding index bytes.
const GZIP_SUBFIELD: [u8; 2] = *b"FD";
const GZIP_CHUNK: usize = 65_535 - 4;
/// An index larger than this, decompressed, is refused (about 20 million entries'
/// worth would never fit; a few hundred bytes an entry).
pub(crate) const MAX_INDEX: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Index {
    pub version: u32,
    pub codec: Codec,
    pub entries: Vec<Entry>,
    /// Every piece of the object, in order, the trailer's last.
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    /// Bytes of data after the header in the tar stream.
    pub size: u64,
    /// SHA-256 of the data, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Every header block of the entry (extensions included), hex.
    pub header: String,
    /// Its pieces: the first, and how many.
    pub first: usize,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Piece {
    /// Where its compressed bytes are in the object, and how many.
    pub offset: u64,
    pub length: u64,
    /// Bytes of tar stream it decompresses to.
    pub size: u64,
    /// SHA-256 of its compressed bytes.
    pub sha256: String,
}

impl Entry {
    /// The entry's bytes in the tar stream: header, data, padding.
    pub(crate) fn stream_len(&self) -> u64 {
        self.header.len() as u64 / 2 + self.size + padding(self.size)
    }
}

/// The index's zstd level. For 3,000 entries (4 MB of JSON) level 9 takes
/// 0.07 s and writes 342 KB, level 19 1.7 s for 299 KB: the 14 % more a node
/// fetches once per install cost less than a spool 1.6 s slower.
const INDEX_LEVEL: i32 = 9;

impl Index {
    /// The container: the compressed JSON wrapped as the codec skips it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, DeltaError> {
        let json = serde_json::to_vec(self).map_err(|e| DeltaError::Index(e.to_string()))?;
        let packed = zstd::bulk::compress(&json, INDEX_LEVEL)
            .map_err(|e| DeltaError::Index(e.to_string()))?;
        match self.codec {
            Codec::Zstd => {
                let mut out = Vec::with_capacity(packed.len() + 8);
                out.extend_from_slice(&SKIPPABLE.to_le_bytes());
                let len = u32::try_from(packed.len())
                    .map_err(|_| DeltaError::Index("the index is over 4 GiB".into()))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&packed);
                Ok(out)
            }
            Codec::Gzip => {
                let mut out = Vec::new();
                for chunk in packed.chunks(GZIP_CHUNK) {
                    // ID1 ID2 CM=deflate FLG=FEXTRA MTIME=0 XFL=0 OS=unknown.
                    out.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255]);
                    let sub = chunk.len() as u16;
                    out.extend_from_slice(&(sub + 4).to_le_bytes());
                    out.extend_from_slice(&GZIP_SUBFIELD);
                    out.extend_from_slice(&sub.to_le_bytes());
                    out.extend_from_slice(chunk);
                    // An empty final deflate block, CRC-32 and size of nothing.
                    out.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                }
                Ok(out)
            }
        }
    }

    /// The index from its container (whose digest the caller checked).
    pub(crate) fn decode(codec: Codec, raw: &[u8]) -> Result<Index, DeltaError> {
        let bad = |why: &str| DeltaError::Index(why.to_owned());
        let packed = match codec {
            Codec::Zstd => {
                if raw.len() < 8 || raw[..4] != SKIPPABLE.to_le_bytes() {
                    return Err(bad("it is not a skippable zstd frame"));
                }
                let len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]) as usize;
                if raw.len() != 8 + len {
                    return Err(bad("its frame length does not match its size"));
                }
                raw[8..].to_vec()
            }
            Codec::Gzip => {
                let mut packed = Vec::new();
                let mut rest = raw;
                while !rest.is_empty() {
                    if rest.len() < 16 || rest[..4] != [0x1f, 0x8b, 8, 4] {
                        return Err(bad("it is not a gzip member with an extra field"));
                    }
                    let xlen = u16::from_le_bytes([rest[10], rest[11]]) as usize;
                    let sub = rest.get(12..16).ok_or_else(|| bad("short"))?;
                    let len = u16::from_le_bytes([sub[2], sub[3]]) as usize;
                    if sub[..2] != GZIP_SUBFIELD || xlen != len + 4 {
                        return Err(bad("its gzip extra field is not ftl's"));
                    }
                    let end = 12 + xlen;
                    let tail = rest
                        .get(end..end + 10)
                        .ok_or_else(|| bad("a gzip member is cut short"))?;
                    if tail != [3, 0, 0, 0, 0, 0, 0, 0, 0, 0] {
                        return Err(bad("a gzip member of the index is not empty"));
                    }
                    packed.extend_from_slice(&rest[16..end]);
                    rest = &rest[end + 10..];
                }
                packed
            }
        };
        let json = zstd::bulk::decompress(&packed, MAX_INDEX)
            .map_err(|e| DeltaError::Index(format!("it does not decompress: {e}")))?;
        let index: Index = serde_json::from_slice(&json)
            .map_err(|e| DeltaError::Index(format!("it is not an index: {e}")))?;
        if index.version != VERSION {
            return Err(DeltaError::Index(format!(
                "version {} is not {VERSION}",
                index.version
            )));
        }
        if index.codec != codec {
            return Err(bad("its codec is not the object's"));
        }
        Ok(index)
    }

    /// The index agrees with itself and with the object: pieces in order,
    /// each inside the object before the index; each entry's pieces its own,
    /// in order, of the size its header and data take.
    pub(crate) fn check(&self, index_offset: u64) -> Result<(), DeltaError> {
        let mut end = 0u64;
        for (i, p) in self.pieces.iter().enumerate() {
            let last = p.offset.checked_add(p.length);
            if p.offset < end || last.is_none_or(|l| l > index_offset) || p.length == 0 {
                return Err(DeltaError::Range(format!(
                    "piece {i} (bytes {}+{}) lies outside the archive before the index \
                     ({index_offset} bytes) or overlaps another",
                    p.offset, p.length
                )));
            }
            end = p.offset + p.length;
            if crate::digest::parse_hex32(&p.sha256).is_none() {
                return Err(DeltaError::Index(format!("piece {i} has no SHA-256")));
            }
        }
        let mut next = 0usize;
        for e in &self.entries {
            let bad = |why: &str| DeltaError::Index(format!("entry {:?}: {why}", e.path));
            if e.first != next || e.count == 0 {
                return Err(bad("its pieces are not the next ones"));
            }
            next = e
                .first
                .checked_add(e.count)
                .filter(|n| *n <= self.pieces.len())
                .ok_or_else(|| bad("its pieces are not in the index"))?;
            let sum: u64 = self.pieces[e.first..next].iter().map(|p| p.size).sum();
            if e.header.len() % (2 * super::tar::BLOCK) != 0 || e.header.is_empty() {
                return Err(bad("its header is not whole blocks"));
            }
            if sum != e.stream_len() {
                return Err(bad("its pieces do not hold its header and data"));
            }
            if e.kind == Kind::File
                && e.sha256
                    .as_deref()
                    .and_then(crate::digest::parse_hex32)
                    .is_none()
            {
                return Err(bad("a file without its SHA-256"));
            }
        }
        Ok(())
    }
}
