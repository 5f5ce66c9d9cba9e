//! Carrying out the plans: downloads in parallel (bounded), each verified and
//! unpacked into staging, made durable together, renamed into place; then per
//! package the jump, the previous link and the removals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::bucket::{Bucket, RemoteRevision};
use crate::delta::{Index, Moved};
use crate::hooks::Step;
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::node::{Node, NodeError};
use crate::root::{FileRecord, Installed, Package, RootError, Seen};
use crate::unpack::{self, Unpacked};

use super::failed::Records;
use super::plan::Plan;
use super::verify::{self, VerifiedRevision};
use super::{Options, Outcome, PackagePlan, StepError, SyncError, now_secs};

/// Attempts at downloading one revision. The SDK retries failed requests, but
/// not a body cut mid-stream, and only the digest catches a body a proxy mangled.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; multiplied by 4 for each further one.
const BACKOFF: Duration = Duration::from_millis(250);

/// What one attempt gave: the staging directory, what the unpack did, what
/// a delta install moved, the index (the files' SHA-256s) when there was one.
type Fetched = (PathBuf, Unpacked, Option<Moved>, Option<Arc<Index>>);

/// One attempt: download, verify and unpack into a fresh staging directory,
/// which is deleted again on failure.
async fn fetch(
    dir: &Package,
    bucket: &Bucket,
    rev: &RemoteRevision,
    opts: &Options,
    threads: unpack::Threads,
    signed: Option<&VerifiedRevision>,
) -> Result<Fetched, StepError> {
    let staging = dir
        .new_staging(&rev.name.id)
        .await
        .map_err(|source| StepError::NodeAt {
            revision: rev.name.clone(),
            source: source.into(),
        })?;
    let unpacked = async {
        let delta =
            super::delta::install(dir, bucket, rev, opts, threads, signed, &staging).await?;
        let (stats, moved, unverified, index) = match delta {
            Some((stats, moved, index)) => (stats, Some(moved), false, Some(index)),
            None => {
                let (stats, unverified, index) =
                    whole(bucket, rev, opts, threads, signed, &staging).await?;
                (stats, None, unverified, index)
            }
        };
        mark_unverified(dir, rev, unverified).await;
        // Recorded with the revision: every later jump checks it again.
        let doc = signed.map(|s| s.document.clone());
        dir.set_signature(&rev.name.id, doc)
            .await
            .map_err(|source| StepError::NodeAt {
                revision: rev.name.clone(),
                source: source.into(),
            })?;
        Ok((stats, moved, index))
    }
    .await;
    match unpacked {
        Ok((stats, moved, index)) => Ok((staging, stats, moved, index)),
        Err(e) => {
            discard(dir, &staging, None).await;
            Err(e)
        }
    }
}

/// The whole object downloaded, verified and unpacked into `staging`;
/// whether it had nothing to be verified against; the index of a
/// delta-ready object, read beside it (delta on), for the install record.
async fn whole(
    bucket: &Bucket,
    rev: &RemoteRevision,
    opts: &Options,
    threads: unpack::Threads,
    signed: Option<&VerifiedRevision>,
    staging: &Path,
) -> Result<(Unpacked, bool, Option<Arc<Index>>), StepError> {
    let (object, digest) = bucket.open(rev).await.map_err(|source| StepError::Bucket {
        package: rev.name.package.clone(),
        source,
    })?;
    let source = Bucket::delta_source_of(&object);
    // A signed manifest's digest is the one that counts: the object's
    // metadata is written by whoever wrote the object.
    let digest = match signed {
        Some(s) => crate::digest::Expected::Sha256(s.manifest.sha256),
        None => digest,
    };
    let unverified = digest == crate::digest::Expected::Nothing;
    let shown = opts.progress.start(&rev.name.to_string(), rev.size);
    // The callback goes with the stream: dropping it ends the display.
    let body = object.body.inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            shown(bytes.len() as u64);
        }
    });
    let unpacked = unpack::unpack_with(
        Box::pin(body),
        rev.name.package.as_str(),
        &rev.ext,
        staging,
        &digest,
        &opts.limits,
        threads,
    );
    let beside = super::delta::index_beside(bucket, rev, source, opts, signed);
    let (unpacked, index) = tokio::join!(unpacked, beside);
    let mut stats = unpacked.map_err(|source| StepError::Unpack {
        revision: rev.name.clone(),
        source,
    })?;
    // The index's bytes moved too.
    stats.bytes_in += index.as_ref().map_or(0, |(_, n)| *n);
    Ok((stats, unverified, index.map(|(i, _)| i)))
}

/// Integrity is never skipped silently: a revision with nothing to check it
/// against (no `ftl-sha256` metadata, and an id without 0.2.x's MD5
/// characters) is installed with a warning naming it, and marked for `status`.
async fn mark_unverified(dir: &Package, rev: &RemoteRevision, unverified: bool) {
    if unverified {
        tracing::warn!(
            "{}: {} has no ftl-sha256 metadata and its id carries no MD5 characters: \
             installing it unverified",
            rev.name,
            rev.key
        );
    }
    if let Err(e) = dir.set_unverified(&rev.name.id, unverified).await {
        tracing::warn!("{}: {e}", rev.name);
    }
}

/// A revision downloaded, verified and unpacked into its staging directory,
/// marked unconfirmed, not yet durable nor visible.
struct Staged<'a> {
    rev: &'a RemoteRevision,
    dir: Package,
    staging: PathBuf,
    stats: Unpacked,
    /// What a delta install moved and reused.
    moved: Option<Moved>,
    /// The revision's index, when it was read: its files' SHA-256s.
    index: Option<Arc<Index>>,
    started: Instant,
}

/// Download, verify and unpack one revision into staging (retrying what the
/// network broke), and leave its unconfirmed marker
/// ([`Package::prepare_install`]).
async fn stage<'a>(
    node: &Node,
    bucket: &Bucket,
    rev: &'a RemoteRevision,
    opts: &Options,
    threads: unpack::Threads,
) -> Result<Staged<'a>, StepError> {
    let at = |source| StepError::NodeAt {
        revision: rev.name.clone(),
        source,
    };
    let dir = node.package(&rev.name.package)?;
    let started = Instant::now();
    // Before anything of the object is read.
    let signed = match &opts.trust {
        Some(trust) => {
            let v = verify::check_revision_signature(bucket, trust, rev).await?;
            let who: Vec<String> = v.signers.iter().map(ToString::to_string).collect();
            tracing::debug!("{}: signed by {}", rev.name, who.join(", "));
            Some(v)
        }
        None => None,
    };
    let mut attempt = 1;
    let (staging, stats, moved, index) = loop {
        match fetch(&dir, bucket, rev, opts, threads, signed.as_ref()).await {
            Ok(fetched) => break fetched,
            Err(e) if attempt < ATTEMPTS && e.is_transient() => {
                let pause = BACKOFF * 4u32.pow(attempt - 1);
                tracing::warn!("{e}; trying again in {pause:?} ({attempt}/{ATTEMPTS})");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(owner) = opts.owner
        && let Err(e) = dir.give(&staging, owner).await
    {
        discard(&dir, &staging, None).await;
        return Err(at(e.into()));
    }
    if let Err(e) = dir.prepare_install(&rev.name.id).await {
        // Verified bytes that cannot be put in place (the name is taken, the
        // disk refused the marker): not worth keeping until the next sync.
        // The marker is prepare_install's last step: none was left.
        discard(&dir, &staging, None).await;
        return Err(at(e.into()));
    }
    Ok(Staged {
        rev,
        dir,
        staging,
        stats,
        moved,
        index,
        started,
    })
}

/// Removes a staging directory that will not be installed, and the
/// unconfirmed marker `prepare_install` left for it, if any.
async fn discard(dir: &Package, staging: &Path, marker: Option<&RevisionId>) {
    if let Err(e) = dir.discard_staging(staging, marker).await {
        tracing::warn!("{e}");
    }
}

/// Rename a staged (and flushed) revision into place and run its post-sync
/// hook, removing it again if that fails. It stays unconfirmed until the hook
/// succeeds: a crash in between makes the next sync install it again. With
/// the record of its files' identity, when their SHA-256s are known.
async fn commit(
    node: &Node,
    staged: Staged<'_>,
) -> Result<(Installed, Option<FileRecord>), StepError> {
    let Staged {
        rev,
        dir,
        staging,
        stats,
        moved,
        index,
        started,
    } = staged;
    let at = |source| StepError::NodeAt {
        revision: rev.name.clone(),
        source,
    };
    // The files' identity, taken while the revision is still ftl's alone
    // (hidden, final: unpacked, modes and owner set), just before anyone
    // else can write it.
    let record = match index {
        Some(index) => {
            let digests = Arc::new(super::delta::digests(&index));
            match dir.identify(&staging, &rev.name.id, digests).await {
                Ok(record) => Some(record),
                Err(e) => {
                    // Only a record: the next delta reads the files instead.
                    tracing::warn!("{}: the files' identity is not recorded: {e}", rev.name);
                    None
                }
            }
        }
        None => None,
    };
    if let Err(e) = dir.commit_install(&staging, &rev.name.id).await {
        discard(&dir, &staging, Some(&rev.name.id)).await;
        return Err(at(e.into()));
    }
    tracing::info!(
        "{} downloaded: {} bytes, {} entries, {:.1?}",
        rev.name,
        stats.bytes_in,
        stats.entries,
        started.elapsed()
    );
    if let Err(e) = node.hook(Step::PostSync, &dir, &rev.name).await {
        if let Err(r) = dir.uninstall(&rev.name.id).await {
            tracing::warn!("{}: {r}", rev.name);
        }
        return Err(at(e));
    }
    dir.confirm(&rev.name.id).await.map_err(|e| at(e.into()))?;
    let installed = Installed {
        id: rev.name.id.clone(),
        moved: moved.map_or(stats.bytes_in, |m| m.fetched),
        reused: moved.map_or(0, |m| m.reused),
        delta: moved.is_some(),
    };
    Ok((installed, record))
}

/// Where to decompress: with at least as many unpacks at once as cores, each on
/// one thread (every core is busy anyway, and that costs the least CPU);
/// otherwise on a thread of its own, overlapping with file creation.
fn unpack_threads(concurrent: usize) -> unpack::Threads {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if concurrent >= cores {
        unpack::Threads::Shared
    } else {
        unpack::Threads::Pipelined
    }
}

/// Install revisions: all downloaded and unpacked in parallel (bounded), then
/// made durable together (one `syncfs` per file system, rather than one per
/// revision, each of which would also wait for the others' data), then renamed
/// into place with their post-sync hooks. A revision is visible only once
/// complete on disk ([`Package::prepare_install`]).
async fn install_all(
    node: &Node,
    bucket: &Bucket,
    revisions: Vec<&RemoteRevision>,
    opts: &Options,
) -> Vec<(
    RevisionName,
    Result<(Installed, Option<FileRecord>), StepError>,
)> {
    if revisions.is_empty() {
        return Vec::new();
    }
    let jobs = opts.jobs.max(1);
    let threads = unpack_threads(revisions.len().min(jobs));
    let mut results = Vec::new();
    let mut staged = Vec::new();
    let early = node.root().early_flush();
    let stages: Vec<_> = futures::stream::iter(revisions)
        .map(|r| async move { (r, stage(node, bucket, r, opts, threads).await) })
        .buffer_unordered(jobs)
        .collect()
        .await;
    // Joining the flusher waits for its round in progress.
    let _ = tokio::task::spawn_blocking(move || drop(early)).await;
    for (r, result) in stages {
        match result {
            Ok(s) => staged.push(s),
            Err(e) => results.push((r.name.clone(), Err(e))),
        }
    }
    if staged.is_empty() {
        return results;
    }
    let paths: Vec<PathBuf> = staged.iter().map(|s| s.staging.clone()).collect();
    if let Err(e) = node.root().flush(paths).await {
        // None of them can be made visible: each fails with the same cause.
        let (kind, why) = match &e {
            RootError::Io { source, .. } => (source.kind(), source.to_string()),
            other => (std::io::ErrorKind::Other, other.to_string()),
        };
        for s in staged {
            let name = s.rev.name.clone();
            let source = NodeError::Root(RootError::Io {
                action: "cannot flush the file system of",
                path: s.staging.clone(),
                source: std::io::Error::new(kind, why.clone()),
            });
            discard(&s.dir, &s.staging, Some(&name.id)).await;
            results.push((
                name.clone(),
                Err(StepError::NodeAt {
                    revision: name,
                    source,
                }),
            ));
        }
        return results;
    }
    let committed: Vec<_> = futures::stream::iter(staged)
        .map(|s| async move { (s.rev.name.clone(), commit(node, s).await) })
        .buffer_unordered(jobs)
        .collect()
        .await;
    results.extend(committed);
    results
}

/// Execute the plans: all downloads in parallel (bounded), then per package
/// jump, previous, removals; then record what a package that came through
/// cleanly now looks like, so the next idle sync is one request.
pub async fn execute(
    node: &Node,
    bucket: &Bucket,
    plans: &[PackagePlan],
    opts: &Options,
    outcome: &mut Outcome,
) -> Result<(), SyncError> {
    let mut errors: Vec<StepError> = Vec::new();
    let mut failed: BTreeSet<RevisionName> = BTreeSet::new();
    let now = now_secs();
    // Only the packages listed this run can download or drop a record: an
    // idle sync reads none (one hand-over to a blocking thread apiece).
    let listed = plans.iter().filter(|p| p.listed.is_some());
    let mut records = Records::load(node, listed.filter_map(|p| p.plan.package.as_ref())).await;
    for pp in plans {
        if let (Some(package), Some(listed)) = (&pp.plan.package, &pp.listed) {
            records.keep_only(package, listed);
        }
    }
    let mut downloads: Vec<&RemoteRevision> = Vec::new();
    for r in plans.iter().flat_map(|p| &p.plan.download) {
        match records.holding_back(&r.name, etag(r).as_deref(), now, opts.retry_failed) {
            Some(e) => {
                failed.insert(r.name.clone());
                errors.push(e);
            }
            None => downloads.push(r),
        }
    }
    let mut total = downloads.len() + errors.len();
    let etags: BTreeMap<RevisionName, &RemoteRevision> =
        downloads.iter().map(|r| (r.name.clone(), *r)).collect();
    let results = install_all(node, bucket, downloads, opts).await;
    // Per package, the newest revision installed, for `status` (and its
    // files' identity, for the next delta).
    let mut newest: BTreeMap<PackageName, (Installed, Option<FileRecord>)> = BTreeMap::new();
    for (name, r) in results {
        match r {
            Ok((installed, files)) => {
                records.succeeded(&name);
                outcome.downloaded_bytes += installed.moved;
                outcome.reused_bytes += installed.reused;
                let slot = newest.entry(name.package.clone());
                let slot = slot.or_insert_with(|| (installed.clone(), files.clone()));
                if installed.id > slot.0.id {
                    *slot = (installed, files);
                }
            }
            Err(e) => {
                outcome.count(&e);
                if e.is_revisions_fault() {
                    records.failed(
                        &name,
                        etags.get(&name).and_then(|r| etag(r)).as_deref(),
                        &e,
                        now,
                    );
                }
                failed.insert(name);
                errors.push(e);
            }
        }
    }
    for (package, (installed, files)) in newest {
        let recorded = match node.package(&package) {
            Ok(dir) => async {
                if let Some(files) = files {
                    dir.set_files(files).await?;
                }
                dir.set_installed(installed).await
            }
            .await
            .map_err(NodeError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            // Only a record, for status.
            tracing::debug!("{package}: {e}");
        }
    }
    for pp in plans {
        let Some(package) = &pp.plan.package else {
            continue;
        };
        let (steps, mut errs) =
            finish_package(node, package, &pp.plan, &failed, &mut records, opts).await;
        total += steps;
        for e in &errs {
            outcome.count(e);
        }
        let clean = errs.is_empty()
            && pp.plan.warnings.is_empty()
            && !failed.iter().any(|r| r.package == *package);
        if clean && let Some(marker) = &pp.marker {
            record_seen(node, package, marker, opts).await;
        }
        if pp.listed.is_some()
            && let Some(id) = &pp.plan.wanted_from
        {
            record_wanted(node, package, id).await;
        }
        if !clean {
            outcome.failed.insert(package.clone());
        }
        errors.append(&mut errs);
    }
    records.save(node).await;
    SyncError::check(errors, total)
}

/// The object's ETag as listed, if the store gave one, with its signature's:
/// a failed revision is tried again at once when either changes (signing a
/// refused revision lets it through without waiting for the back-off).
/// (A store that lists no ETags still tells a signature's size.)
fn etag(r: &RemoteRevision) -> Option<String> {
    let both = match &r.signature {
        Some(s) if s.etag.is_empty() => format!("{}+size{}", r.etag, s.size),
        Some(s) => format!("{}+{}", r.etag, s.etag),
        None => r.etag.clone(),
    };
    Some(both).filter(|e| !e.is_empty())
}

/// Jump, previous and removals of one package; returns the steps tried and
/// the errors.
async fn finish_package(
    node: &Node,
    package: &PackageName,
    plan: &Plan,
    failed: &BTreeSet<RevisionName>,
    records: &mut Records,
    opts: &Options,
) -> (usize, Vec<StepError>) {
    let at = |rev: &RevisionName| {
        let revision = rev.clone();
        move |source| StepError::NodeAt { revision, source }
    };
    let mut steps = 0;
    let mut errors = Vec::new();
    if let Some(id) = &plan.jump {
        steps += 1;
        let rev = RevisionName::new(package.clone(), id.clone());
        if failed.contains(&rev) {
            tracing::warn!("{rev} is blessed but did not install: not jumping to it");
            return (steps, errors);
        }
        // A jump whose validate hook failed is not tried on every sync either.
        if let Some(e) = records.holding_back(&rev, None, now_secs(), opts.retry_failed) {
            errors.push(e);
            return (steps, errors);
        }
        match node.jump(&rev, false).await {
            Ok(_) => records.succeeded(&rev),
            Err(e) => {
                let e = at(&rev)(e);
                if e.is_revisions_fault() {
                    records.failed(&rev, None, &e, now_secs());
                }
                errors.push(e);
                return (steps, errors);
            }
        }
    }
    if let Some(id) = &plan.previous {
        let rev = RevisionName::new(package.clone(), id.clone());
        if !failed.contains(&rev) {
            steps += 1;
            let set = match node.package(package) {
                Ok(dir) => dir.set_previous(Some(id)).await.map_err(NodeError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = set {
                errors.push(at(&rev)(e));
            }
        }
    }
    for id in &plan.remove {
        steps += 1;
        let rev = RevisionName::new(package.clone(), id.clone());
        if let Err(e) = node.remove(&rev).await {
            errors.push(at(&rev)(e));
        }
    }
    (steps, errors)
}

/// What the bucket wants here, for `clean` (see [`crate::node::doomed`]).
async fn record_wanted(node: &Node, package: &PackageName, id: &RevisionId) {
    let recorded = match node.package(package) {
        Ok(dir) => dir.set_wanted_from(id).await.map_err(NodeError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        // `clean` then goes by the node's links, which a sync just set.
        tracing::warn!("{package}: cannot record what the bucket wants here: {e}");
    }
}

async fn record_seen(node: &Node, package: &PackageName, marker: &str, opts: &Options) {
    let full_every = opts.full_every;
    let recorded = async {
        let dir = node.package(package)?;
        let local = dir.state().await?;
        dir.set_seen(Seen {
            marker: marker.to_owned(),
            local: verify::seen_fingerprint(&local, opts.trust.as_ref()),
            // Backdated by a random part of half the period: the fleet's full
            // checks then do not all fall in the minute after a deploy (they
            // would stay in step forever).
            at: now_secs().saturating_sub(crate::splay::below(full_every.as_secs() / 2)),
        })
        .await?;
        Ok::<_, NodeError>(())
    }
    .await;
    if let Err(e) = recorded {
        // Only a cache: the next sync checks in full.
        tracing::debug!("{package}: {e}");
    }
}
