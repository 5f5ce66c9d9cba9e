//! A delta install (see `crate::delta`): when the revision is delta-ready and
//! the node holds an earlier one of the package, its index is fetched and
//! checked, and the tar stream rebuilt from the earlier revision and the
//! pieces that changed goes through the same unpack into the same staging.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::bucket::{Bucket, RemoteRevision};
use crate::delta::{DeltaError, Index, Moved};
use crate::digest::{Expected, hex};
use crate::root::Package;
use crate::unpack::{self, Unpacked};

use super::verify::VerifiedRevision;
use super::{Options, StepError};

/// Chunks of the rebuilt stream in flight to the unpack.
const CHUNKS: usize = 8;

/// Installs `rev` into `staging` as a delta, or `None` when it is not one
/// (delta off, no earlier revision here, an object that is not delta-ready,
/// or a signed revision whose manifest does not cover an index): then the
/// caller downloads it whole.
pub(super) async fn install(
    dir: &Package,
    bucket: &Bucket,
    rev: &RemoteRevision,
    opts: &Options,
    threads: unpack::Threads,
    signed: Option<&VerifiedRevision>,
    staging: &Path,
) -> Result<Option<(Unpacked, Moved)>, StepError> {
    let Some(codec) = crate::delta::Codec::for_ext(&rev.ext).filter(|_| opts.delta) else {
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
    let source = bucket
        .delta_source(rev)
        .await
        .map_err(|source| StepError::Bucket {
            package: rev.name.package.clone(),
            source,
        })?;
    let Some(source) = source else {
        return Ok(None);
    };
    // With signatures checked, only what the signer approved: an index the
    // manifest does not name is not used (the whole object is, against the
    // manifest's digest).
    let expected = match signed {
        Some(s) => match s.manifest.delta_index {
            Some(d) => d,
            None => return Ok(None),
        },
        None => source.sha256,
    };
    let refused = |e: DeltaError| StepError::Unpack {
        revision: rev.name.clone(),
        source: e.into_unpack(),
    };
    let download = |e: crate::store::StoreError| DeltaError::Download(std::io::Error::other(e));
    let index_end = source
        .offset
        .checked_add(source.length)
        .filter(|end| *end <= source.size)
        .ok_or_else(|| {
            refused(DeltaError::Range(format!(
                "the index (bytes {}+{}) lies outside the object ({} bytes)",
                source.offset, source.length, source.size
            )))
        })?;
    let raw = bucket
        .read_range(rev, source.offset, index_end)
        .await
        .map_err(|e| refused(download(e)))?;
    let got: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&raw).into();
    if got != expected {
        return Err(refused(DeltaError::IndexDigest {
            expected: hex(&expected),
            actual: hex(&got),
        }));
    }
    let index = Index::decode(codec, &raw).map_err(refused)?;
    index.check(source.offset).map_err(refused)?;
    let index = Arc::new(index);
    let base_dir = dir.revision_path(&base);
    let (candidates, planned) =
        crate::delta::node::plan(index.clone(), base_dir.clone(), opts.limits)
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
        crate::delta::transfer(index, base_dir, candidates, fetch, tx),
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
        "{}: delta from {}: {} bytes fetched in {} requests, {} bytes reused",
        rev.name,
        base,
        m.fetched,
        m.requests,
        m.reused
    );
    Ok(Some((
        Unpacked {
            bytes_in: m.fetched,
            ..stats
        },
        m,
    )))
}
