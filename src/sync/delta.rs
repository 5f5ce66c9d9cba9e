//! A delta install (see `crate::delta`): when the revision is delta-ready and
//! the node holds an earlier one of the package, its index is fetched and
//! checked, and the tar stream rebuilt from the earlier revision and the
//! pieces that changed goes through the same unpack into the same staging.
//!
//! The index also gives the SHA-256 of every file a revision installs: the
//! install record of the files' identity (`root::FileRecord`) keeps them, so
//! that the next delta need not read an unchanged file to know it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::bucket::{Bucket, DeltaSource, RemoteRevision};
use crate::delta::{Codec, DeltaError, Index, Moved};
use crate::digest::{Expected, hex, parse_hex32};
use crate::root::Package;
use crate::unpack::{self, Unpacked};

use super::verify::VerifiedRevision;
use super::{Options, StepError};

/// Chunks of the rebuilt stream in flight to the unpack.
const CHUNKS: usize = 8;

/// Installs `rev` into `staging` as a delta, or `None` when it is not one
/// (delta off, no earlier revision here, an object that is not delta-ready,
/// or a signed revision whose manifest does not cover an index): then the
/// caller downloads it whole. With the index, whose files' SHA-256s the
/// install record keeps.
pub(super) async fn install(
    dir: &Package,
    bucket: &Bucket,
    rev: &RemoteRevision,
    opts: &Options,
    threads: unpack::Threads,
    signed: Option<&VerifiedRevision>,
    staging: &Path,
) -> Result<Option<(Unpacked, Moved, Arc<Index>)>, StepError> {
    let Some(codec) = Codec::for_ext(&rev.ext).filter(|_| opts.delta) else {
        return Ok(None);
    };
    let state = dir.state().await.map_err(|source| StepError::NodeAt {
        revision: rev.name.clone(),
        source: source.into(),
    })?;
    let Some(base) = state
        .current
        .iter()
        .chain(state.installed.iter().rev())
        .find(|id| **id != rev.name.id)
        .cloned()
    else {
        return Ok(None);
    };
    // What the install record knows of the base's files, if it is the
    // base's (and parses): those need no reading to be known. Read while
    // the metadata and the index are on their way.
    let (source, known) = tokio::join!(bucket.delta_source(rev), dir.files_of(&base));
    let source = source.map_err(|source| StepError::Bucket {
        package: rev.name.package.clone(),
        source,
    })?;
    let Some(source) = source else {
        return Ok(None);
    };
    let refused = |e: DeltaError| StepError::Unpack {
        revision: rev.name.clone(),
        source: e.into_unpack(),
    };
    let Some(index) = read_index(bucket, rev, &source, signed, codec)
        .await
        .map_err(refused)?
    else {
        return Ok(None);
    };
    let index = Arc::new(index);
    let base_dir = dir.revision_path(&base);
    let (bases, planned) =
        crate::delta::node::plan(index.clone(), base_dir.clone(), known, opts.limits)
            .await
            .map_err(refused)?;
    let shown = opts.progress.start(&rev.name.to_string(), planned);
    let fetch = |from: u64, to: u64| {
        let shown = &shown;
        async move {
            let bytes = bucket
                .read_range(rev, from, to)
                .await
                .map_err(std::io::Error::other)?;
            shown(bytes.len() as u64);
            Ok(bytes)
        }
    };
    let (tx, mut rx) = mpsc::channel(CHUNKS);
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (moved, unpacked) = tokio::join!(
        crate::delta::transfer(index.clone(), base_dir, bases, fetch, tx),
        unpack::unpack_with(
            body,
            rev.name.package.as_str(),
            "tar",
            staging,
            &Expected::Nothing,
            &opts.limits,
            threads,
        )
    );
    let unpack_failed = |source| StepError::Unpack {
        revision: rev.name.clone(),
        source,
    };
    let moved = match (moved, unpacked) {
        // The unpack's refusal says why the stream stopped.
        (Err(DeltaError::Stopped), Err(e)) => return Err(unpack_failed(e)),
        (Err(e), _) => return Err(refused(e)),
        (Ok(_), Err(e)) => return Err(unpack_failed(e)),
        (Ok(m), Ok(stats)) => (m, stats),
    };
    let (mut m, stats) = moved;
    // The metadata (HEAD) and the index.
    m.requests += 2;
    m.fetched += source.length;
    tracing::info!(
        "{}: delta from {}: {} bytes fetched in {} requests, {} bytes reused \
         ({} files known by the install record, {} read to check)",
        rev.name,
        base,
        m.fetched,
        m.requests,
        m.reused,
        m.known,
        m.checked
    );
    Ok(Some((
        Unpacked {
            bytes_in: m.fetched,
            ..stats
        },
        m,
        index,
    )))
}

/// The index of `rev` (at `source`), checked against the digest that counts;
/// `None` for a signed revision whose manifest names no index. With
/// signatures checked, only what the signer approved: an index the manifest
/// does not name is not used (the whole object is, against the manifest's
/// digest).
async fn read_index(
    bucket: &Bucket,
    rev: &RemoteRevision,
    source: &DeltaSource,
    signed: Option<&VerifiedRevision>,
    codec: Codec,
) -> Result<Option<Index>, DeltaError> {
    let expected = match signed {
        Some(s) => match s.manifest.delta_index {
            Some(d) => d,
            None => return Ok(None),
        },
        None => source.sha256,
    };
    let index_end = source
        .offset
        .checked_add(source.length)
        .filter(|end| *end <= source.size)
        .ok_or_else(|| {
            DeltaError::Range(format!(
                "the index (bytes {}+{}) lies outside the object ({} bytes)",
                source.offset, source.length, source.size
            ))
        })?;
    let raw = bucket
        .read_range(rev, source.offset, index_end)
        .await
        .map_err(|e| DeltaError::Download(std::io::Error::other(e)))?;
    let got: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&raw).into();
    if got != expected {
        return Err(DeltaError::IndexDigest {
            expected: hex(&expected),
            actual: hex(&got),
        });
    }
    let index = Index::decode(codec, &raw)?;
    index.check(source.offset)?;
    Ok(Some(index))
}

/// For a whole download of a delta-ready revision (delta on): its index,
/// read beside the download, for the install record of the files' SHA-256s
/// (the next delta then reads no unchanged file to know it). `None` when
/// there is none to have; a failure only costs the record, and says so.
/// With the bytes it moved.
pub(super) async fn index_beside(
    bucket: &Bucket,
    rev: &RemoteRevision,
    source: Option<DeltaSource>,
    opts: &Options,
    signed: Option<&VerifiedRevision>,
) -> Option<(Arc<Index>, u64)> {
    let codec = Codec::for_ext(&rev.ext).filter(|_| opts.delta)?;
    let source = source?;
    match read_index(bucket, rev, &source, signed, codec).await {
        Ok(index) => index.map(|i| (Arc::new(i), source.length)),
        Err(e) => {
            tracing::warn!(
                "{}: {e}: the installed files' SHA-256s are not recorded",
                rev.name
            );
            None
        }
    }
}

/// The SHA-256 and size of every regular file the index installs, by its
/// path as the unpack writes it (a later entry of the same path replaces an
/// earlier one, as in the unpack; one that is no regular file drops it).
pub(super) fn digests(index: &Index) -> HashMap<String, (u64, [u8; 32])> {
    let mut out = HashMap::new();
    for e in &index.entries {
        let Some(path) =
            crate::delta::node::relative(e).and_then(|p| p.to_str().map(str::to_owned))
        else {
            continue;
        };
        match e.sha256.as_deref().and_then(parse_hex32) {
            Some(sha) if e.kind == crate::delta::Kind::File => {
                out.insert(path, (e.size, sha));
            }
            _ => {
                out.remove(&path);
            }
        }
    }
    out
}
