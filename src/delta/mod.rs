//! Delta deploys: a small change to a large package moves a small part of it.
//!
//! A delta-ready object (`ftl spool --delta`) is a plain `.tar.zst` or
//! `.tgz`/`.tar.gz` whose tar stream is compressed as one zstd frame, or one
//! gzip member, per entry (a large entry in pieces of [`write::PIECE`]), with
//! an index at the end that every decoder skips (`index.rs`): each entry's
//! path, kind, mode, size, SHA-256, header blocks and pieces, and each
//! piece's byte range and SHA-256. GNU tar, ftl 0.2.x and a full download
//! here read it as any archive.
//!
//! A node that holds an earlier revision of the package rebuilds the tar
//! stream (`node.rs`): headers from the index (verified against the digest
//! recorded at spool, or the signed manifest), the data of an unchanged file
//! from the local revision (read only after its SHA-256 matched), everything
//! else from the pieces, fetched with ranged GETs and each checked against its
//! SHA-256. The stream goes through the same unpack as a download, its path
//! rules and limits, into the same staging: the result is the tree a full
//! download gives, with files copied, never hard-linked.

use serde::{Deserialize, Serialize};

pub(crate) mod index;
pub(crate) mod node;
mod tar;
#[cfg(test)]
mod tests;
pub(crate) mod write;

pub(crate) use index::Index;
pub(crate) use node::{Moved, transfer};
pub(crate) use tar::Kind;

/// How the pieces are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    /// The codec of a spooled file's extension, if delta-ready objects exist for it.
    pub(crate) fn for_ext(ext: &str) -> Option<Codec> {
        match crate::unpack::format_for(ext) {
            crate::unpack::Format::TarZst => Some(Codec::Zstd),
            crate::unpack::Format::TarGz => Some(Codec::Gzip),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("--delta needs a .tar.zst, .tzst, .tgz or .tar.gz file, not .{0}")]
    Unsupported(String),
    #[error("cannot read the archive: {0}")]
    Archive(String),
    #[error("writing the delta-ready archive: {0}")]
    Write(#[source] std::io::Error),
    #[error("delta index: {0}")]
    Index(String),
    #[error("delta index: digest mismatch: expected sha256 {expected}, got sha256 {actual}")]
    IndexDigest { expected: String, actual: String },
    #[error("delta index: {0}")]
    Range(String),
    #[error(
        "delta piece {piece}: digest mismatch: expected sha256 {expected}, got sha256 {actual}"
    )]
    PieceDigest {
        piece: usize,
        expected: String,
        actual: String,
    },
    #[error("the delta index and the archive disagree on {path:?}: {why}")]
    Disagree { path: String, why: String },
    #[error("archive exceeds the limit of {limit} {what}")]
    TooLarge { what: &'static str, limit: u64 },
    /// Fetching pieces failed (the network, the store): worth another try.
    #[error("reading the download: {0}")]
    Download(#[source] std::io::Error),
    /// The local revision changed while it was read: another try plans again.
    #[error("{0}")]
    Local(#[source] std::io::Error),
    /// The unpack stopped reading (it failed, and says why).
    #[error("the unpack stopped")]
    Stopped,
}

impl DeltaError {
    /// As the unpack's errors, so that a sync treats a bad delta as it
    /// treats a bad download: a digest mismatch or a corrupt archive is the
    /// revision's fault (recorded, backed off), the network's is tried again.
    pub(crate) fn into_unpack(self) -> crate::unpack::UnpackError {
        use crate::unpack::UnpackError as U;
        match self {
            DeltaError::IndexDigest { expected, actual } => U::DigestMismatch {
                expected: format!("delta index sha256 {expected}"),
                actual: format!("sha256 {actual}"),
            },
            DeltaError::PieceDigest {
                piece,
                expected,
                actual,
            } => U::DigestMismatch {
                expected: format!("delta piece {piece} sha256 {expected}"),
                actual: format!("sha256 {actual}"),
            },
            DeltaError::TooLarge { what, limit } => U::TooLarge { what, limit },
            DeltaError::Download(source) | DeltaError::Local(source) => U::Download { source },
            other => U::Corrupt {
                detail: other.to_string(),
            },
        }
    }
}
