//! `ftl sync`: the pure plan (what to download, activate, delete) and its
//! execution with bounded fan-out.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::bucket::{Bucket, BucketError, Pointers, RemoteRevision};
use crate::hooks::Step;
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::node::{Node, NodeError, blocking};
use crate::root::{PackageDir, RootError, Seen};
use crate::store::{Fresh, StoreError};
use crate::unpack::{self, Limits, UnpackError, Unpacked};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{failed} of {total} steps failed; first: {first}")]
    Failed {
        failed: usize,
        total: usize,
        first: Box<StepError>,
    },
    #[error(transparent)]
    Step(Box<StepError>),
}

impl SyncError {
    pub fn hook_exit_code(&self) -> Option<i32> {
        match self {
            Self::Failed { first, .. } | Self::Step(first) => first.hook_exit_code(),
        }
    }
}

/// One failed step, naming its package or revision.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{package}: {source}")]
    Bucket {
        package: PackageName,
        #[source]
        source: BucketError,
    },
    #[error("{revision}: {source}")]
    Unpack {
        revision: RevisionName,
        #[source]
        source: UnpackError,
    },
    #[error("{0}")]
    Node(#[from] NodeError),
    #[error("{revision}: {source}")]
    NodeAt {
        revision: RevisionName,
        #[source]
        source: NodeError,
    },
}

impl StepError {
    fn hook_exit_code(&self) -> Option<i32> {
        match self {
            Self::Node(n) | Self::NodeAt { source: n, .. } => n.hook_exit_code(),
            _ => None,
        }
    }
}

/// What the node has of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    pub installed: Vec<RevisionId>,
    pub current: Option<RevisionId>,
    pub previous: Option<RevisionId>,
}

/// What the bucket has of a package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    pub revisions: Vec<RemoteRevision>,
    pub pointers: Pointers,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub package: Option<PackageName>,
    pub download: Vec<RemoteRevision>,
    /// Make this current (blessed, once it is on the node).
    pub jump: Option<RevisionId>,
    /// Point `previous` here once `jump` stands.
    pub previous: Option<RevisionId>,
    /// Local revisions the bucket no longer has.
    pub remove: Vec<RevisionId>,
    pub warnings: Vec<String>,
}

/// The plan for one package. Pure: a table of cases tests it.
pub fn plan(package: &PackageName, local: &Local, remote: &Remote) -> Plan {
    let mut plan = Plan {
        package: Some(package.clone()),
        ..Plan::default()
    };
    let ours = |r: &Option<RevisionName>| {
        r.as_ref()
            .filter(|r| r.package == *package)
            .map(|r| r.id.clone())
    };
    let blessed = ours(&remote.pointers.blessed);
    let bucket_previous = ours(&remote.pointers.previous);
    if remote.revisions.is_empty() && blessed.is_none() && bucket_previous.is_none() {
        plan.warnings.push(format!(
            "the bucket has nothing for package {package}: leaving it untouched (is FTL_BUCKET right?)"
        ));
        return plan;
    }
    let in_bucket: BTreeSet<&RevisionId> = remote.revisions.iter().map(|r| &r.name.id).collect();
    let installed: BTreeSet<&RevisionId> = local.installed.iter().collect();
    for (what, id) in [("blessed", &blessed), ("previous", &bucket_previous)] {
        if let Some(id) = id
            && !in_bucket.contains(id)
        {
            plan.warnings.push(format!(
                "the {what} revision {package}.{id} is not in the bucket"
            ));
        }
    }
    // Everything not older than the older of blessed and previous; with nothing
    // blessed yet, the newest revision (so its first bless is instant).
    let floor = match (&blessed, &bucket_previous) {
        (Some(b), Some(p)) => Some(b.min(p).clone()),
        (Some(b), None) => Some(b.clone()),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => remote.revisions.last().map(|r| r.name.id.clone()),
    };
    if let Some(floor) = &floor {
        plan.download = remote
            .revisions
            .iter()
            .filter(|r| r.name.id >= *floor && !installed.contains(&r.name.id))
            .cloned()
            .collect();
    }
    let will_have =
        |id: &RevisionId| installed.contains(id) || plan.download.iter().any(|r| r.name.id == *id);
    if let Some(b) = &blessed
        && will_have(b)
    {
        if local.current.as_ref() != Some(b) {
            plan.jump = Some(b.clone());
        }
        // A jump makes the old current the previous one by itself.
        let previous_after = if plan.jump.is_some() {
            &local.current
        } else {
            &local.previous
        };
        if let Some(p) = &bucket_previous
            && p != b
            && will_have(p)
            && previous_after.as_ref() != Some(p)
        {
            plan.previous = Some(p.clone());
        }
    }
    // Never current or previous, before or after this sync.
    let keep: BTreeSet<&RevisionId> = [
        &local.current,
        &local.previous,
        &plan.jump,
        &plan.previous,
        &blessed,
        &bucket_previous,
    ]
    .into_iter()
    .flatten()
    .collect();
    plan.remove = local
        .installed
        .iter()
        .filter(|id| !in_bucket.contains(id) && !keep.contains(id))
        .cloned()
        .collect();
    plan
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.download.is_empty()
            && self.jump.is_none()
            && self.previous.is_none()
            && self.remove.is_empty()
    }

    /// Lines for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let Some(p) = &self.package else { return out };
        for r in &self.download {
            let _ = writeln!(out, "{p}: download {} ({} bytes)", r.name, r.size);
        }
        if let Some(id) = &self.jump {
            let _ = writeln!(out, "{p}: jump to {p}.{id}");
        }
        if let Some(id) = &self.previous {
            let _ = writeln!(out, "{p}: point previous at {p}.{id}");
        }
        for id in &self.remove {
            let _ = writeln!(out, "{p}: remove {p}.{id}");
        }
        if self.is_empty() {
            let _ = writeln!(out, "{p}: up to date");
        }
        out
    }
}

pub struct Options {
    pub jobs: usize,
    pub limits: Limits,
    /// How long a recorded "nothing changed" is trusted (see `plan_all`).
    pub full_every: Duration,
}

/// A package's plan, and what to record once it has been carried out.
#[derive(Debug, Clone)]
pub struct PackagePlan {
    pub plan: Plan,
    /// The change marker read before the full check: recorded on success, so
    /// the next idle sync costs one conditional GET.
    pub marker: Option<String>,
    /// Nothing changed since the last complete sync: the bucket was not listed.
    pub unchanged: bool,
}

impl Local {
    /// What `Seen::local` records: links and revisions, in one line.
    pub fn fingerprint(&self) -> String {
        let show = |o: &Option<RevisionId>| o.as_ref().map(|i| i.to_string()).unwrap_or_default();
        let revs: Vec<&str> = self.installed.iter().map(RevisionId::as_str).collect();
        format!(
            "current={} previous={} revs={}",
            show(&self.current),
            show(&self.previous),
            revs.join(",")
        )
    }

    fn read(dir: &PackageDir) -> Result<Local, RootError> {
        Ok(Local {
            installed: dir.revisions()?,
            current: dir.current()?,
            previous: dir.previous()?,
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Read both sides of every package, concurrently. With `full_every`, a
/// package whose change marker and local state are as the last complete sync
/// recorded is not listed: one conditional GET decides it is up to date.
pub async fn plan_all(
    node: &Node,
    bucket: &Bucket,
    packages: &[PackageName],
    jobs: usize,
    full_every: Option<Duration>,
) -> Vec<Result<PackagePlan, StepError>> {
    let bucket_err = |package: &PackageName| {
        let package = package.clone();
        move |source| StepError::Bucket { package, source }
    };
    futures::stream::iter(packages.iter().cloned())
        .map(|package| async move {
            let dir = node.package(&package)?;
            let d = dir.clone();
            let (local, seen) = blocking(move || Ok((Local::read(&d)?, d.seen()))).await?;
            let mut marker = None;
            if let Some(full_every) = full_every {
                let trusted = seen.filter(|s| {
                    s.local == local.fingerprint()
                        && now_secs().saturating_sub(s.at) < full_every.as_secs()
                });
                match bucket
                    .changed(&package, trusted.as_ref().map(|s| s.marker.as_str()))
                    .await
                    .map_err(bucket_err(&package))?
                {
                    Fresh::Unchanged => {
                        return Ok(PackagePlan {
                            plan: Plan {
                                package: Some(package),
                                ..Plan::default()
                            },
                            marker: None,
                            unchanged: true,
                        });
                    }
                    Fresh::Changed(t) => marker = Some(t.version),
                    Fresh::Missing => {}
                }
            }
            let (revisions, pointers) =
                futures::try_join!(bucket.revisions(&package), bucket.pointers(&package))
                    .map_err(bucket_err(&package))?;
            Ok(PackagePlan {
                plan: plan(
                    &package,
                    &local,
                    &Remote {
                        revisions,
                        pointers,
                    },
                ),
                marker,
                unchanged: false,
            })
        })
        .buffered(jobs.max(8))
        .collect()
        .await
}

/// Attempts at downloading one revision. The SDK retries failed requests, but
/// not a body cut mid-stream, and only the digest catches a body a proxy mangled.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; multiplied by 4 for each further one.
const BACKOFF: Duration = Duration::from_millis(250);

impl StepError {
    /// A failure that another download may not meet: the network's or the
    /// server's, not the archive's, the disk's or the hooks'.
    fn is_transient(&self) -> bool {
        match self {
            Self::Bucket { source, .. } => matches!(
                source,
                BucketError::Store(StoreError::Other { .. } | StoreError::Io { .. })
            ),
            Self::Unpack { source, .. } => matches!(
                source,
                UnpackError::DigestMismatch { .. } | UnpackError::Download { .. }
            ),
            Self::Node(_) | Self::NodeAt { .. } => false,
        }
    }
}

/// One attempt: download, verify and unpack into a fresh staging directory,
/// which is deleted again on failure.
async fn fetch(
    dir: &PackageDir,
    bucket: &Bucket,
    rev: &RemoteRevision,
    limits: &Limits,
    threads: unpack::Threads,
) -> Result<(PathBuf, Unpacked), StepError> {
    let (d, id) = (dir.clone(), rev.name.id.clone());
    let staging = blocking(move || Ok(d.new_staging(&id)?))
        .await
        .map_err(|source| StepError::NodeAt {
            revision: rev.name.clone(),
            source,
        })?;
    let unpacked = async {
        let (object, digest) = bucket.open(rev).await.map_err(|source| StepError::Bucket {
            package: rev.name.package.clone(),
            source,
        })?;
        unpack::unpack_with(
            crate::progress::download(object.body, &rev.name.to_string(), rev.size),
            rev.name.package.as_str(),
            &rev.ext,
            &staging,
            &digest,
            limits,
            threads,
        )
        .await
        .map_err(|source| StepError::Unpack {
            revision: rev.name.clone(),
            source,
        })
    }
    .await;
    match unpacked {
        Ok(stats) => Ok((staging, stats)),
        Err(e) => {
            discard(dir.clone(), staging, None).await;
            Err(e)
        }
    }
}

/// A revision downloaded, verified and unpacked into its staging directory,
/// marked unconfirmed, not yet durable nor visible.
struct Staged<'a> {
    rev: &'a RemoteRevision,
    dir: PackageDir,
    staging: PathBuf,
    stats: Unpacked,
    started: Instant,
}

/// Download, verify and unpack one revision into staging (retrying what the
/// network broke), and leave its unconfirmed marker
/// ([`PackageDir::prepare_install`]).
async fn stage<'a>(
    node: &Node,
    bucket: &Bucket,
    rev: &'a RemoteRevision,
    limits: &Limits,
    threads: unpack::Threads,
) -> Result<Staged<'a>, StepError> {
    let at = |source| StepError::NodeAt {
        revision: rev.name.clone(),
        source,
    };
    let dir = node.package(&rev.name.package)?;
    let started = Instant::now();
    let mut attempt = 1;
    let (staging, stats) = loop {
        match fetch(&dir, bucket, rev, limits, threads).await {
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
    let (d, id) = (dir.clone(), rev.name.id.clone());
    if let Err(e) = blocking(move || Ok(d.prepare_install(&id)?)).await {
        // Verified bytes that cannot be put in place (the name is taken, the
        // disk refused the marker): not worth keeping until the next sync.
        // The marker is prepare_install's last step: none was left.
        discard(dir, staging, None).await;
        return Err(at(e));
    }
    Ok(Staged {
        rev,
        dir,
        staging,
        stats,
        started,
    })
}

/// Removes a staging directory that will not be installed, and the
/// unconfirmed marker `prepare_install` left for it, if any.
async fn discard(dir: PackageDir, staging: PathBuf, marker: Option<RevisionId>) {
    let removed = blocking(move || {
        dir.discard_staging(&staging)?;
        match marker {
            Some(id) => Ok(dir.confirm(&id)?),
            None => Ok(()),
        }
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!("{e}");
    }
}

/// Rename a staged (and flushed) revision into place and run its post-sync
/// hook, removing it again if that fails. It stays unconfirmed until the hook
/// succeeds: a crash in between makes the next sync install it again.
async fn commit(node: &Node, staged: Staged<'_>) -> Result<(), StepError> {
    let Staged {
        rev,
        dir,
        staging,
        stats,
        started,
    } = staged;
    let at = |source| StepError::NodeAt {
        revision: rev.name.clone(),
        source,
    };
    let (d, id, s) = (dir.clone(), rev.name.id.clone(), staging.clone());
    if let Err(e) = blocking(move || Ok(d.commit_install(&s, &id)?)).await {
        discard(dir, staging, Some(rev.name.id.clone())).await;
        return Err(at(e));
    }
    tracing::info!(
        "{} downloaded: {} bytes, {} entries, {:.1?}",
        rev.name,
        stats.bytes_in,
        stats.entries,
        started.elapsed()
    );
    if let Err(e) = node.hook(Step::PostSync, &dir, &rev.name).await {
        let id = rev.name.id.clone();
        let removed = blocking(move || {
            dir.remove_revision(&id)?;
            Ok(dir.confirm(&id)?)
        })
        .await;
        if let Err(r) = removed {
            tracing::warn!("{}: {r}", rev.name);
        }
        return Err(at(e));
    }
    let id = rev.name.id.clone();
    blocking(move || Ok(dir.confirm(&id)?)).await.map_err(at)?;
    Ok(())
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
/// complete on disk ([`PackageDir::prepare_install`]).
async fn install_all(
    node: &Node,
    bucket: &Bucket,
    revisions: Vec<&RemoteRevision>,
    opts: &Options,
) -> Vec<(RevisionName, Result<(), StepError>)> {
    if revisions.is_empty() {
        return Vec::new();
    }
    let jobs = opts.jobs.max(1);
    let threads = unpack_threads(revisions.len().min(jobs));
    let mut results = Vec::new();
    let mut staged = Vec::new();
    let early = crate::root::EarlyFlush::start(node.root().path());
    let stages: Vec<_> = futures::stream::iter(revisions)
        .map(|r| async move { (r, stage(node, bucket, r, &opts.limits, threads).await) })
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
    if let Err(e) = blocking(move || Ok(crate::root::sync_file_systems(&paths)?)).await {
        // None of them can be made visible: each fails with the same cause.
        let (kind, why) = match &e {
            NodeError::Root(RootError::Io { source, .. }) => (source.kind(), source.to_string()),
            other => (std::io::ErrorKind::Other, other.to_string()),
        };
        for s in staged {
            let name = s.rev.name.clone();
            let source = NodeError::Root(RootError::Io {
                action: "cannot flush the file system of",
                path: s.staging.clone(),
                source: std::io::Error::new(kind, why.clone()),
            });
            discard(s.dir, s.staging, Some(name.id.clone())).await;
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
) -> Result<(), SyncError> {
    let mut errors: Vec<StepError> = Vec::new();
    let downloads: Vec<&RemoteRevision> = plans.iter().flat_map(|p| &p.plan.download).collect();
    let mut total = downloads.len();
    let results = install_all(node, bucket, downloads, opts).await;
    let mut failed: BTreeSet<RevisionName> = BTreeSet::new();
    for (name, r) in results {
        if let Err(e) = r {
            tracing::error!("{e}");
            failed.insert(name);
            errors.push(e);
        }
    }
    for pp in plans {
        let Some(package) = &pp.plan.package else {
            continue;
        };
        let (steps, mut errs) = finish_package(node, package, &pp.plan, &failed).await;
        total += steps;
        let clean = errs.is_empty()
            && pp.plan.warnings.is_empty()
            && !failed.iter().any(|r| r.package == *package);
        if clean && let Some(marker) = &pp.marker {
            record_seen(node, package, marker, opts.full_every).await;
        }
        errors.append(&mut errs);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(SyncError::Step(Box::new(errors.remove(0)))),
        n => Err(SyncError::Failed {
            failed: n,
            total,
            first: Box::new(errors.remove(0)),
        }),
    }
}

/// Jump, previous and removals of one package; returns the steps tried and
/// the errors.
async fn finish_package(
    node: &Node,
    package: &PackageName,
    plan: &Plan,
    failed: &BTreeSet<RevisionName>,
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
        if let Err(e) = node.jump(&rev, false).await {
            tracing::error!("{rev}: {e}");
            errors.push(at(&rev)(e));
            return (steps, errors);
        }
    }
    if let Some(id) = &plan.previous {
        let rev = RevisionName::new(package.clone(), id.clone());
        if !failed.contains(&rev) {
            steps += 1;
            let prev = id.clone();
            let set = match node.package(package) {
                Ok(dir) => blocking(move || Ok(dir.set_previous(Some(&prev))?)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = set {
                tracing::error!("{rev}: {e}");
                errors.push(at(&rev)(e));
            }
        }
    }
    for id in &plan.remove {
        steps += 1;
        let rev = RevisionName::new(package.clone(), id.clone());
        if let Err(e) = node.remove(&rev).await {
            tracing::error!("{rev}: {e}");
            errors.push(at(&rev)(e));
        }
    }
    (steps, errors)
}

async fn record_seen(node: &Node, package: &PackageName, marker: &str, full_every: Duration) {
    let Ok(dir) = node.package(package) else {
        return;
    };
    let marker = marker.to_owned();
    let recorded = blocking(move || {
        let local = Local::read(&dir)?;
        dir.set_seen(&Seen {
            marker,
            local: local.fingerprint(),
            // Backdated by a random part of half the period: the fleet's full
            // checks then do not all fall in the minute after a deploy (they
            // would stay in step forever).
            at: now_secs().saturating_sub(crate::splay::below(full_every.as_secs() / 2)),
        })?;
        Ok(())
    })
    .await;
    if let Err(e) = recorded {
        // Only a cache: the next sync checks in full.
        tracing::debug!("{package}: {e}");
    }
}

/// Plans' inputs for unit tests (here and in `commands::status`): package `app`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub fn id(s: &str) -> RevisionId {
        s.parse().unwrap()
    }
    pub fn ids(list: &[&str]) -> Vec<RevisionId> {
        list.iter().map(|s| id(s)).collect()
    }
    pub fn name(s: &str) -> RevisionName {
        RevisionName::new("app".parse().unwrap(), id(s))
    }
    pub fn remote(revs: &[&str], blessed: Option<&str>, previous: Option<&str>) -> Remote {
        Remote {
            revisions: revs
                .iter()
                .map(|r| RemoteRevision {
                    name: name(r),
                    key: format!("app.{r}.tgz"),
                    ext: "tgz".into(),
                    size: 1,
                })
                .collect(),
            pointers: Pointers {
                blessed: blessed.map(name),
                previous: previous.map(name),
            },
        }
    }
    pub fn local(installed: &[&str], current: Option<&str>, previous: Option<&str>) -> Local {
        Local {
            installed: ids(installed),
            current: current.map(id),
            previous: previous.map(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    struct Case {
        what: &'static str,
        local: Local,
        remote: Remote,
        download: &'static [&'static str],
        jump: Option<&'static str>,
        previous: Option<&'static str>,
        remove: &'static [&'static str],
        warns: bool,
    }

    #[test]
    fn plans() {
        let cases = [
            Case {
                what: "fresh node: blessed and previous and newer ones, not the older ones",
                local: local(&[], None, None),
                remote: remote(&["a1", "a2", "a3", "a4"], Some("a3"), Some("a2")),
                download: &["a2", "a3", "a4"],
                jump: Some("a3"),
                previous: Some("a2"),
                remove: &[],
                warns: false,
            },
            Case {
                what: "node behind: downloads the new one and jumps",
                local: local(&["a1", "a2"], Some("a2"), Some("a1")),
                remote: remote(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
                download: &["a3"],
                jump: Some("a3"),
                previous: None,
                remove: &[],
                warns: false,
            },
            Case {
                what: "up to date: nothing",
                local: local(&["a2", "a3"], Some("a3"), Some("a2")),
                remote: remote(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
                download: &[],
                jump: None,
                previous: None,
                remove: &[],
                warns: false,
            },
            Case {
                what: "spooled but not blessed: downloaded ahead, no jump",
                local: local(&["a2", "a3"], Some("a3"), Some("a2")),
                remote: remote(&["a2", "a3", "a4"], Some("a3"), Some("a2")),
                download: &["a4"],
                jump: None,
                previous: None,
                remove: &[],
                warns: false,
            },
            Case {
                what: "node ahead (jumped by hand): back to blessed",
                local: local(&["a2", "a3", "a4"], Some("a4"), Some("a3")),
                remote: remote(&["a2", "a3", "a4"], Some("a3"), Some("a2")),
                download: &[],
                jump: Some("a3"),
                previous: Some("a2"),
                remove: &[],
                warns: false,
            },
            Case {
                what: "jump-back in the bucket: previous is newer than blessed",
                local: local(&["a2", "a3"], Some("a3"), Some("a2")),
                remote: remote(&["a1", "a2", "a3"], Some("a2"), Some("a3")),
                download: &[],
                jump: Some("a2"),
                previous: None,
                remove: &[],
                warns: false,
            },
            Case {
                what: "purged from the bucket: removed locally, never current or previous",
                local: local(&["a0", "a1", "a2", "a3"], Some("a3"), Some("a1")),
                remote: remote(&["a2", "a3"], Some("a3"), Some("a2")),
                download: &[],
                jump: None,
                previous: Some("a2"),
                remove: &["a0"],
                warns: false,
            },
            Case {
                what: "older than previous but still in the bucket: kept",
                local: local(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
                remote: remote(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
                download: &[],
                jump: None,
                previous: None,
                remove: &[],
                warns: false,
            },
            Case {
                what: "the bucket knows nothing: untouched, with a warning",
                local: local(&["a1", "a2"], Some("a2"), Some("a1")),
                remote: remote(&[], None, None),
                download: &[],
                jump: None,
                previous: None,
                remove: &[],
                warns: true,
            },
            Case {
                what: "nothing blessed yet: the newest is fetched ahead",
                local: local(&[], None, None),
                remote: remote(&["a1", "a2"], None, None),
                download: &["a2"],
                jump: None,
                previous: None,
                remove: &[],
                warns: false,
            },
            Case {
                what: "blessed revision missing from the bucket: warn, no jump, no delete of it",
                local: local(&["a1", "a2"], Some("a2"), Some("a1")),
                remote: remote(&["a1"], Some("a2"), Some("a1")),
                download: &[],
                jump: None,
                previous: None,
                remove: &[],
                warns: true,
            },
            Case {
                what: "0.2.x-style node with no previous link",
                local: local(&["a1"], Some("a1"), None),
                remote: remote(&["a1", "a2"], Some("a2"), Some("a1")),
                download: &["a2"],
                jump: Some("a2"),
                previous: None,
                remove: &[],
                warns: false,
            },
        ];
        for c in cases {
            let p = plan(&"app".parse().unwrap(), &c.local, &c.remote);
            let down: Vec<String> = p.download.iter().map(|r| r.name.id.to_string()).collect();
            assert_eq!(down, c.download, "{}: download", c.what);
            assert_eq!(p.jump, c.jump.map(id), "{}: jump", c.what);
            assert_eq!(p.previous, c.previous.map(id), "{}: previous", c.what);
            assert_eq!(p.remove, ids(c.remove), "{}: remove", c.what);
            assert_eq!(
                !p.warnings.is_empty(),
                c.warns,
                "{}: warnings {:?}",
                c.what,
                p.warnings
            );
        }
    }
}
