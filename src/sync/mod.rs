//! `ftl sync`: read both sides of every package, plan, carry the plans out.
//!
//! - [`plan`]: what one package needs (pure);
//! - [`execute`]: downloads, the install, jumps and removals;
//! - [`status`]: the same reading and plan, compared instead of carried out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::bucket::{Bucket, BucketError};
use crate::names::{PackageName, RevisionName};
use crate::node::{Node, NodeError};
use crate::root::Owner;
use crate::store::{Fresh, StoreError};
use crate::unpack::{Limits, UnpackError};

mod execute;
#[cfg(test)]
mod fixtures;
pub mod plan;
pub mod status;
#[cfg(test)]
mod tests;

use execute::execute;
use plan::{Plan, plan};

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

impl From<StepError> for SyncError {
    fn from(e: StepError) -> Self {
        Self::Step(Box::new(e))
    }
}

impl SyncError {
    /// The outcome of `total` steps of which `errors` failed: the error alone
    /// when one did, a count and the first when several did.
    fn check(mut errors: Vec<StepError>, total: usize) -> Result<(), SyncError> {
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

impl StepError {
    /// A failure that another download may not meet: the network's or the
    /// server's, not the archive's, the disk's or the hooks'.
    fn is_transient(&self) -> bool {
        match self {
            Self::Bucket { source, .. } => matches!(
                source,
                BucketError::Store(StoreError::Other { .. } | StoreError::Io { .. })
            ),
            // Not an object replaced during the download: the plan is stale,
            // the next sync makes another.
            Self::Unpack {
                source: UnpackError::Download { source },
                ..
            } => !matches!(
                source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<StoreError>()),
                Some(StoreError::Replaced { .. })
            ),
            Self::Unpack { source, .. } => matches!(source, UnpackError::DigestMismatch { .. }),
            Self::Node(_) | Self::NodeAt { .. } => false,
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
    /// Told of each download, for a display.
    pub progress: Arc<dyn Progress>,
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
) -> Vec<Result<PackagePlan, StepError>> {
    let bucket_err = |package: &PackageName| {
        let package = package.clone();
        move |source| StepError::Bucket { package, source }
    };
    futures::stream::iter(packages.iter().cloned())
        .map(|package| async move {
            let dir = node.package(&package)?;
            let (local, seen) = (
                dir.state().await.map_err(NodeError::from)?,
                dir.seen().await,
            );
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
                        });
                    }
                    Fresh::Changed(t) => marker = Some(t.version),
                    Fresh::Missing => {}
                }
            }
            let remote = bucket.state(&package).await.map_err(bucket_err(&package))?;
            Ok(PackagePlan {
                plan: plan(&package, &local, &remote),
                marker,
            })
        })
        .buffered(READ_AT_ONCE)
        .collect()
        .await
}

/// `ftl sync`: wait the splay, take the lock (not for a dry run), clear what
/// interrupted runs left, read and plan every package, then carry the plans
/// out (or, for a dry run, print them).
pub async fn run(node: &Node, bucket: &Bucket, opts: &Options) -> Result<(), SyncError> {
    // Before anything else (the lock, the bucket): the point is to spread those.
    crate::splay::wait(opts.splay).await;
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
        let n = root
            .clean_leftovers()
            .await
            .map_err(|e| StepError::Node(e.into()))?;
        if n > 0 {
            tracing::info!("removed {n} leftovers of interrupted runs");
        }
    }
    let packages = node
        .packages(opts.packages.clone())
        .await
        .map_err(StepError::Node)?;
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
    for r in plan_all(node, bucket, &packages, full_every).await {
        match r {
            Ok(p) => {
                for w in &p.plan.warnings {
                    tracing::warn!("{w}");
                }
                plans.push(p);
            }
            Err(e) => {
                tracing::error!("{e}");
                errors.push(e);
            }
        }
    }
    if opts.dry_run {
        for p in &plans {
            print!("{}", p.plan.describe());
        }
    } else {
        execute(node, bucket, &plans, opts).await?;
    }
    tracing::debug!("sync took {:.1?}", started.elapsed());
    SyncError::check(errors, packages.len())
}
