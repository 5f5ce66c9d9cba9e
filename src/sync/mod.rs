//! `ftl sync`: read both sides of every package, plan, carry the plans out.
//!
//! - [`plan`]: what one package needs (pure);
//! - [`execute`]: downloads, the install, jumps and removals;
//! - [`status`]: the same reading and plan, compared instead of carried out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::bucket::{Bucket, BucketError};
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::node::{Node, NodeError};
use crate::root::Owner;
use crate::store::{Fresh, StoreError};
use crate::unpack::{Limits, UnpackError};

mod execute;
pub mod failed;
pub mod plan;
pub mod status;
#[cfg(test)]
mod tests;
pub mod verify;

use execute::execute;
use plan::{Plan, plan};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Several steps failed: each is reported on its own line
    /// ([`SyncError::messages`]).
    #[error("{} of {total} steps failed: {}", .errors.len(), self.messages().join("; "))]
    Failed {
        /// At least two, in the order they happened.
        errors: Vec<StepError>,
        total: usize,
    },
    #[error(transparent)]
    Step(Box<StepError>),
}

impl From<StepError> for SyncError {
    fn from(e: StepError) -> Self {
        Self::Step(Box::new(e))
    }
}

impl SyncError {
    /// The outcome of `total` steps of which `errors` failed. The failures
    /// are not logged as they happen: the command reports each once, at the end.
    fn check(mut errors: Vec<StepError>, total: usize) -> Result<(), SyncError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(SyncError::Step(Box::new(errors.remove(0)))),
            _ => Err(SyncError::Failed { errors, total }),
        }
    }

    /// The exit status is the first failure's.
    pub fn hook_exit_code(&self) -> Option<i32> {
        match self {
            Self::Failed { errors, .. } => errors.first().and_then(StepError::hook_exit_code),
            Self::Step(first) => first.hook_exit_code(),
        }
    }

    /// One line per failed step.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Failed { errors, .. } => errors.iter().map(ToString::to_string).collect(),
            Self::Step(e) => vec![e.to_string()],
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
    /// FTL_ALLOWED_SIGNERS is set and a signature does not hold: the
    /// revision or the bless named is refused, nothing of it is used.
    /// The line's prefix is the revision (the package's name for a bless
    /// that names none); `what` says whether the revision or its bless was.
    #[error("{subject}: {what}: {refusal}")]
    Refused {
        package: PackageName,
        subject: String,
        what: &'static str,
        refusal: Box<crate::signing::Refusal>,
    },
    #[error(
        "{revision}: failed {count} time(s), last at {at} ({reason}); not tried again before \
         {retry_at} unless its object changes (`ftl sync --retry-failed` tries now)"
    )]
    BackingOff {
        revision: RevisionName,
        count: u32,
        at: String,
        retry_at: String,
        reason: String,
    },
}

impl StepError {
    /// The package the step was about, when it names one.
    fn package(&self) -> Option<&PackageName> {
        match self {
            Self::Bucket { package, .. } | Self::Refused { package, .. } => Some(package),
            Self::Unpack { revision, .. }
            | Self::NodeAt { revision, .. }
            | Self::BackingOff { revision, .. } => Some(&revision.package),
            Self::Node(_) => None,
        }
    }

    fn hook_exit_code(&self) -> Option<i32> {
        match self {
            Self::Node(n) | Self::NodeAt { source: n, .. } => n.hook_exit_code(),
            _ => None,
        }
    }
}

impl StepError {
    /// The revision the step failed at, when it names one.
    fn revision(&self) -> Option<RevisionName> {
        match self {
            Self::Unpack { revision, .. }
            | Self::NodeAt { revision, .. }
            | Self::BackingOff { revision, .. } => Some(revision.clone()),
            Self::Refused { subject, .. } => subject.parse().ok(),
            Self::Node(n) => n.refused().cloned(),
            Self::Bucket { .. } => None,
        }
    }
}

/// What each package's report says after a run: its current revision and
/// the run's first failure of it. A package that failed without an error
/// naming it (the root could not be read) is not reported: nothing is known.
async fn report_states(
    node: &Node,
    outcome: &Outcome,
    result: &Result<(), SyncError>,
) -> Vec<crate::fleet::State> {
    let errors: Vec<&StepError> = match result {
        Ok(()) => Vec::new(),
        Err(SyncError::Failed { errors, .. }) => errors.iter().collect(),
        Err(SyncError::Step(e)) => vec![e.as_ref()],
    };
    let mut states = Vec::new();
    for p in &outcome.packages {
        let first = errors
            .iter()
            .find(|e| e.package() == Some(p) || e.revision().is_some_and(|r| r.package == *p));
        if first.is_none() && outcome.failed.contains(p) {
            continue;
        }
        let Ok(dir) = node.package(p) else { continue };
        let Ok(local) = dir.state().await else {
            continue;
        };
        states.push(crate::fleet::State {
            package: p.clone(),
            current: local.current,
            failure: first.map(|e| (e.revision().map(|r| r.id), e.to_string())),
        });
    }
    states
}

impl StepError {
    /// A failure that another download may not meet: the network's or the
    /// server's, not the archive's, the disk's or the hooks'.
    fn is_transient(&self) -> bool {
        match self {
            Self::Bucket { source, .. } => matches!(
                source,
                BucketError::Store(StoreError::Other { .. } | StoreError::Io { .. })
            ),
            // A digest mismatch is a verification failure, not a transient
            // error: not tried again within the run (see `failed`). Nor is an
            // object replaced during the download: the plan is stale, the next
            // sync makes another.
            Self::Unpack {
                source: UnpackError::Download { source },
                ..
            } => !matches!(
                source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<StoreError>()),
                Some(StoreError::Replaced { .. })
            ),
            Self::Unpack { .. } | Self::Refused { .. } => false,
            Self::Node(_) | Self::NodeAt { .. } | Self::BackingOff { .. } => false,
        }
    }

    /// A failure of the revision itself, which the next try would most likely
    /// meet again: recorded, and tried again only after a back-off.
    fn is_revisions_fault(&self) -> bool {
        match self {
            Self::Bucket { source, .. } => matches!(source, BucketError::BadDigest { .. }),
            Self::Unpack { source, .. } => matches!(
                source,
                UnpackError::DigestMismatch { .. }
                    | UnpackError::Unsafe { .. }
                    | UnpackError::Corrupt { .. }
                    | UnpackError::TooLarge { .. }
                    | UnpackError::BadFileName { .. }
            ),
            Self::NodeAt { source, .. } => {
                matches!(source, NodeError::Hook(_) | NodeError::Validation { .. })
            }
            // A revision whose signature is refused: its record changes
            // when the signature object does (`ftl sign`), see `etag`.
            Self::Refused { .. } => true,
            Self::Node(_) | Self::BackingOff { .. } => false,
        }
    }

    /// A signature refused, here or in the node's jump.
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            Self::Refused { .. } => true,
            Self::NodeAt { source, .. } | Self::Node(source) => source.refused().is_some(),
            _ => false,
        }
    }
}

pub struct Options {
    /// Only these packages (none: every package directory).
    pub packages: Vec<PackageName>,
    /// Downloads at once.
    pub jobs: usize,
    /// Print the plans, change nothing (and take no lock).
    pub dry_run: bool,
    /// How long to wait for another ftl holding the root's lock.
    pub lock_timeout: Duration,
    /// How long a recorded "nothing changed" is trusted (see `plan_all`).
    pub full_every: Duration,
    /// Wait a random part of this first.
    pub splay: Duration,
    pub limits: Limits,
    /// Who owns installed revisions (`FTL_OWNER`); `None`: ftl's user.
    pub owner: Option<Owner>,
    /// Shows a dry run's plan of one package (lines of text).
    pub show_plan: fn(&str),
    /// Told of each download, for a display.
    pub progress: Arc<dyn Progress>,
    /// Try revisions that failed before at once, whatever their back-off.
    pub retry_failed: bool,
    /// Where to write the node's metrics after the run (`FTL_METRICS_FILE`).
    pub metrics_file: Option<std::path::PathBuf>,
    /// `FTL_ALLOWED_SIGNERS`: install and follow only what it signed.
    pub trust: Option<verify::Trust>,
    /// `FTL_REPORT`: report each package's state to the bucket after the run.
    pub report: Option<crate::fleet::Reporter>,
}

/// What a run did, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The packages it looked at.
    pub packages: Vec<PackageName>,
    /// Those that did not come through cleanly.
    pub failed: std::collections::BTreeSet<PackageName>,
    /// Bytes of the revisions installed.
    pub downloaded_bytes: u64,
    /// Signatures refused, per package.
    pub refused: std::collections::BTreeMap<PackageName, u64>,
}

impl Outcome {
    /// Counts `e` if it is a refused signature.
    pub(crate) fn count(&mut self, e: &StepError) {
        if e.is_refusal()
            && let Some(p) = e.package().cloned().or_else(|| match e {
                StepError::Node(n) => n.refused().map(|r| r.package.clone()),
                _ => None,
            })
        {
            *self.refused.entry(p).or_default() += 1;
        }
    }
}

/// Told of each download as it starts, so that the command can show it (a bar
/// on a terminal) without the domain knowing how.
pub trait Progress: Send + Sync {
    /// Returns what is called with the size of each chunk read; it is dropped
    /// when the download ends.
    fn start(&self, label: &str, total: u64) -> Box<dyn Fn(u64) + Send + Sync>;
}

/// A package's plan, and what to record once it has been carried out.
#[derive(Debug, Clone)]
pub struct PackagePlan {
    pub plan: Plan,
    /// The change marker read before the full check: recorded on success, so
    /// the next idle sync costs one conditional GET.
    pub marker: Option<String>,
    /// The bucket's revisions, when this run listed them: failure records of
    /// any other revision are dropped (it was purged).
    pub listed: Option<Vec<RevisionId>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Packages read at once by [`plan_all`]: each read is one to four small
/// requests, so that up to this many packages cost the round trips of one.
const READ_AT_ONCE: usize = 64;

/// Read both sides of every package, concurrently (up to [`READ_AT_ONCE`]
/// packages at once, whatever `--jobs` says: that bounds the downloads). With
/// `full_every`, a package whose change marker and local state are as the last
/// complete sync recorded is not listed: one conditional GET decides it is up
/// to date.
async fn plan_all(
    node: &Node,
    bucket: &Bucket,
    packages: &[PackageName],
    full_every: Option<Duration>,
    trust: Option<&verify::Trust>,
) -> Vec<Result<PackagePlan, StepError>> {
    let bucket_err = |package: &PackageName| {
        let package = package.clone();
        move |source| StepError::Bucket { package, source }
    };
    futures::stream::iter(packages.iter().cloned())
        .map(|package| async move {
            let dir = node.package(&package)?;
            let (local, seen) = dir.state_and_seen().await.map_err(NodeError::from)?;
            let mut marker = None;
            if let Some(full_every) = full_every {
                let trusted = seen.filter(|s| {
                    s.local == verify::seen_fingerprint(&local, trust)
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
                            listed: None,
                        });
                    }
                    Fresh::Changed(t) => marker = Some(t.version),
                    Fresh::Missing => {}
                }
            }
            let mut remote = bucket.state(&package).await.map_err(bucket_err(&package))?;
            if let Some(trust) = trust
                && let Some(bless) =
                    verify::check_package_bless(&dir, bucket, trust, &package, &mut remote).await?
            {
                verify::warn_if_stale(trust, &bless);
                if full_every.is_some() {
                    // Not on a dry run: it changes nothing.
                    verify::accept(&dir, &bless).await?;
                }
            }
            let mut plan = plan(&package, &local, &remote);
            if trust.is_some_and(|t| t.require > 1) {
                verify::only_blessed(&mut plan, &remote);
            }
            Ok(PackagePlan {
                plan,
                marker,
                listed: Some(remote.revisions.iter().map(|r| r.name.id.clone()).collect()),
            })
        })
        .buffered(READ_AT_ONCE)
        .collect()
        .await
}

/// `ftl sync`: wait the splay, take the lock (not for a dry run), clear what
/// interrupted runs left, read and plan every package, then carry the plans
/// out (or, for a dry run, print them); then write the metrics file, if any.
pub async fn run(node: &Node, bucket: &Bucket, opts: &Options) -> Result<(), SyncError> {
    // Before anything else (the lock, the bucket): the point is to spread those.
    crate::splay::wait(opts.splay).await;
    let started = (std::time::SystemTime::now(), Instant::now());
    let mut outcome = Outcome::default();
    let result = run_planned(node, bucket, opts, &mut outcome).await;
    if let Some(reporter) = opts.report.as_ref().filter(|_| !opts.dry_run) {
        let states = report_states(node, &outcome, &result).await;
        crate::fleet::report::report(node, bucket, reporter, states).await;
    }
    if let Some(path) = opts.metrics_file.as_ref().filter(|_| !opts.dry_run) {
        let run = crate::metrics::SyncRun {
            started: started
                .0
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            duration: started.1.elapsed().as_secs_f64(),
            success: result.is_ok(),
            downloaded_bytes: outcome.downloaded_bytes,
        };
        let mut packages = Vec::new();
        for p in &outcome.packages {
            let mut m = crate::metrics::PackageMetrics {
                name: p.to_string(),
                in_step: !outcome.failed.contains(p),
                refused: opts
                    .trust
                    .as_ref()
                    .map(|_| outcome.refused.get(p).copied().unwrap_or(0)),
                ..Default::default()
            };
            if let Ok(dir) = node.package(p) {
                let full = |id| RevisionName::new(p.clone(), id).to_string();
                m.current = dir.state().await.ok().and_then(|s| s.current).map(full);
                m.failed = dir
                    .failures()
                    .await
                    .into_iter()
                    .map(|f| (full(f.id), f.retry_at))
                    .collect();
                if let Some(trust) = &opts.trust {
                    m.bless_age = dir
                        .accepted_bless()
                        .await
                        .ok()
                        .flatten()
                        .and_then(|a| a.signed)
                        .map(|t| trust.age(t).0);
                }
            }
            packages.push(m);
        }
        if let Err(e) = crate::metrics::write(path, "sync", Some(run), packages).await {
            tracing::warn!("{e}");
        }
    }
    result
}

async fn run_planned(
    node: &Node,
    bucket: &Bucket,
    opts: &Options,
    outcome: &mut Outcome,
) -> Result<(), SyncError> {
    let started = Instant::now();
    let _lock = if opts.dry_run {
        None
    } else {
        Some(
            node.lock(opts.lock_timeout)
                .await
                .map_err(StepError::Node)?,
        )
    };
    let root = node.root();
    if !opts.dry_run {
        let cleaned = root
            .clean_leftovers()
            .await
            .map_err(|e| StepError::Node(e.into()))?;
        // One undeletable leftover must not stop every later sync.
        for e in &cleaned.stuck {
            tracing::warn!("{e}; left for the next sync (`ftl status` lists it)");
        }
    }
    let packages = node
        .packages(opts.packages.clone())
        .await
        .map_err(StepError::Node)?;
    outcome.packages = packages.clone();
    if packages.is_empty() {
        tracing::warn!(
            "no package directories under {}: create one per package to deploy",
            root.path().display()
        );
        return Ok(());
    }
    let full_every = (!opts.dry_run).then_some(opts.full_every);
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for r in plan_all(node, bucket, &packages, full_every, opts.trust.as_ref()).await {
        match r {
            Ok(p) => {
                for w in &p.plan.warnings {
                    tracing::warn!("{w}");
                }
                plans.push(p);
            }
            Err(e) => {
                outcome.count(&e);
                match e.package() {
                    Some(p) => {
                        outcome.failed.insert(p.clone());
                    }
                    None => outcome.failed.extend(packages.iter().cloned()),
                }
                errors.push(e);
            }
        }
    }
    if opts.dry_run {
        for p in &plans {
            (opts.show_plan)(&p.plan.describe());
        }
    } else {
        execute(node, bucket, &plans, opts, outcome).await?;
    }
    tracing::debug!("sync took {:.1?}", started.elapsed());
    SyncError::check(errors, packages.len())
}
