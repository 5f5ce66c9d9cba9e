//! `ftl status`: is this node in step with the bucket? The same reading and
//! plan as a sync, compared; read-only, so it takes no lock (the links it
//! reads are switched atomically).
//!
//! These shapes are part of the public `--json` interface (`docs/json.md`):
//! add fields if needed, never rename or remove one.

use futures::StreamExt;
use serde::Serialize;

use crate::bucket::{Bucket, BucketError, RemoteState};
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::node::Node;
use crate::root::{LocalState, RootError};

use super::plan::plan;
use super::verify::Trust;

/// Why one package's status could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
}

/// Packages read at once (each is a listing and two small reads).
const PARALLEL: usize = 8;

/// `ftl status [PKG…] --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This ftl's version (`CARGO_PKG_VERSION`), so a fleet-wide collection
    /// shows which nodes run which build.
    pub version: &'static str,
    /// The commit it was built from, when known (`ftl --version` shows both).
    pub commit: Option<&'static str>,
    /// Every package is in step.
    pub in_step: bool,
    pub packages: Vec<PackageStatus>,
}

#[derive(Debug, Serialize)]
pub struct PackageStatus {
    pub name: String,
    pub state: State,
    pub in_step: bool,
    pub current: Option<String>,
    pub previous: Option<String>,
    pub blessed: Option<String>,
    pub blessed_previous: Option<String>,
    /// What `ftl sync` would do now.
    pub sync: SyncPlan,
    /// Why the package could not be read (state `error`).
    pub error: Option<String>,
    /// Hidden staging or trash directories that a sync could not delete
    /// (it warns and goes on): they need the operator's hand.
    pub leftovers: Vec<String>,
    /// Installed revisions that had nothing to verify them against (no
    /// `ftl-sha256` metadata, no 0.2.x MD5 characters in the id).
    pub unverified: Vec<String>,
    /// Revisions that failed here and are backing off (see `sync::failed`).
    pub failed: Vec<FailedRevision>,
    /// With FTL_ALLOWED_SIGNERS: the signed bless this node verified (null
    /// when none, or when it was refused).
    pub bless: Option<BlessStatus>,
    /// With FTL_ALLOWED_SIGNERS: installed revisions whose recorded
    /// signature verifies now, and who signed them.
    pub verified: Vec<VerifiedStatus>,
    /// With FTL_ALLOWED_SIGNERS: each signature refused, one line each.
    pub refused: Vec<String>,
    /// With FTL_REQUIRE_SIGNERS: a signed bless that still lacks signers
    /// (`ftl jump --master --cosign` adds one); it is not followed yet.
    pub bless_pending: Option<String>,
    /// With FTL_ALLOWED_SIGNERS: how old (seconds) the newest signed bless
    /// this node has seen is: the one it verified now, else the last it
    /// accepted. Null when there is none.
    pub bless_age: Option<u64>,
    /// `bless_age` is above FTL_MAX_BLESS_AGE: the bucket's view may be
    /// frozen (the package is out of step).
    pub bless_stale: bool,
    /// The last revision a sync installed here, and what it moved (null when
    /// none was installed since this record exists).
    pub last_install: Option<LastInstall>,
}

#[derive(Debug, Serialize)]
pub struct LastInstall {
    pub revision: String,
    /// `delta` (from an earlier revision and the pieces that changed) or
    /// `whole` (the whole object).
    pub how: &'static str,
    /// Bytes fetched from the bucket.
    pub moved_bytes: u64,
    /// Bytes of file data taken from an earlier revision here.
    pub reused_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct BlessStatus {
    pub blessed: String,
    pub previous: Option<String>,
    pub sequence: u64,
    /// When it was signed, as its manifest says.
    pub time: String,
    pub signers: Vec<crate::signing::Signer>,
}

#[derive(Debug, Serialize)]
pub struct VerifiedStatus {
    pub name: String,
    pub signers: Vec<crate::signing::Signer>,
}

#[derive(Debug, Serialize)]
pub struct FailedRevision {
    pub name: String,
    /// The last failure's message.
    pub reason: String,
    /// Failures in a row.
    pub failures: u32,
    /// When it last failed, UTC.
    pub at: String,
    /// Not tried again by `sync` before this, UTC, unless its object changes.
    pub retry_at: String,
    #[serde(skip)]
    retry_at_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// `ftl sync` would change nothing and current is the blessed revision.
    InStep,
    /// Anything else the bucket and the node disagree on.
    OutOfStep,
    /// The bucket has nothing for this package (wrong FTL_BUCKET, or never spooled).
    Unknown,
    /// The node or the bucket could not be read.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::InStep => "in-step",
            State::OutOfStep => "out-of-step",
            State::Unknown => "unknown",
            State::Error => "error",
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct SyncPlan {
    pub download: Vec<String>,
    pub jump: Option<String>,
    pub previous: Option<String>,
    pub remove: Vec<String>,
}

impl Status {
    /// How many packages could not be read, and how many are not in step.
    pub fn counts(&self) -> (usize, usize) {
        let count = |state| self.packages.iter().filter(|p| p.state == state).count();
        (
            count(State::Error),
            self.packages.len() - count(State::InStep),
        )
    }
}

/// The status of each package (every package directory when none is named);
/// written to `metrics_file` too, if given.
pub async fn status(
    node: &Node,
    bucket: &Bucket,
    packages: &[PackageName],
    metrics_file: Option<&std::path::Path>,
    trust: Option<&Trust>,
) -> Status {
    let packages: Vec<PackageStatus> = futures::stream::iter(packages)
        .map(|package| async move {
            let read = async {
                let dir = node.root().package(package)?;
                let local = dir.state().await?;
                let leftovers = dir.leftovers().await?;
                let unverified = dir.unverified().await?;
                let failures = dir.failures().await;
                let installed = dir.installed().await;
                let mut remote = bucket.state(package).await?;
                let bless = match trust {
                    Some(t) => Some(
                        super::verify::check_package_bless(&dir, bucket, t, package, &mut remote)
                            .await,
                    ),
                    None => None,
                };
                Ok::<_, ReadError>((
                    local, leftovers, unverified, failures, installed, remote, bless, dir,
                ))
            };
            match read.await {
                Ok((local, leftovers, unverified, failures, installed, remote, bless, dir)) => {
                    let mut status = compare(package, &local, &remote);
                    status.last_install = installed.map(|i| LastInstall {
                        revision: RevisionName::new(package.clone(), i.id).to_string(),
                        how: if i.delta { "delta" } else { "whole" },
                        moved_bytes: i.moved,
                        reused_bytes: i.reused,
                    });
                    if let Some(trust) = trust {
                        verified(node, &dir, package, &local, bless, &mut status).await;
                        freshness(&dir, trust, &mut status).await;
                    }
                    status.failed = failures
                        .into_iter()
                        .map(|f| FailedRevision {
                            name: RevisionName::new(package.clone(), f.id).to_string(),
                            reason: f.reason,
                            failures: f.count,
                            at: crate::names::utc(f.at),
                            retry_at: crate::names::utc(f.retry_at),
                            retry_at_secs: f.retry_at,
                        })
                        .collect();
                    status.unverified = unverified
                        .into_iter()
                        .map(|id| RevisionName::new(package.clone(), id).to_string())
                        .collect();
                    for path in leftovers {
                        tracing::warn!(
                            "{package}: leftover {} could not be deleted by sync",
                            path.display()
                        );
                        status.leftovers.push(path.display().to_string());
                    }
                    status
                }
                // Reported once, in the status itself.
                Err(e) => failed(package, e.to_string()),
            }
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    if let Some(path) = metrics_file {
        let metrics = packages
            .iter()
            .map(|p| crate::metrics::PackageMetrics {
                name: p.name.clone(),
                in_step: p.in_step,
                current: p.current.clone(),
                failed: p
                    .failed
                    .iter()
                    .map(|f| (f.name.clone(), f.retry_at_secs))
                    .collect(),
                refused: trust.map(|_| p.refused.len() as u64),
                bless_age: p.bless_age,
            })
            .collect();
        if let Err(e) = crate::metrics::write(path, "status", None, metrics).await {
            tracing::warn!("{e}");
        }
    }
    Status {
        version: env!("CARGO_PKG_VERSION"),
        commit: crate::COMMIT,
        // Nothing checked is nothing known to be in step.
        in_step: !packages.is_empty() && packages.iter().all(|s| s.in_step),
        packages,
    }
}

/// `FTL_MAX_BLESS_AGE`: how old the newest signed bless seen here is (the
/// one verified now, else the last accepted), and whether that is too old.
/// Stale is a result (out of step, exit 3), said once as a warning.
async fn freshness(dir: &crate::root::Package, trust: &Trust, status: &mut PackageStatus) {
    let signed = match &status.bless {
        Some(b) => crate::names::parse_utc(&b.time),
        None => dir
            .accepted_bless()
            .await
            .ok()
            .flatten()
            .and_then(|a| a.signed),
    };
    let Some(signed) = signed else {
        return;
    };
    let (age, stale) = trust.age(signed);
    status.bless_age = Some(age);
    if stale {
        tracing::warn!(
            "{}: the newest signed bless seen is {age}s old, more than FTL_MAX_BLESS_AGE \
             ({}s): the bucket's view may be frozen (a periodic `ftl jump --master --refresh` \
             keeps a live one fresh)",
            status.blessed.as_deref().unwrap_or(&status.name),
            trust.max_age.unwrap_or_default()
        );
        status.bless_stale = true;
        status.state = State::OutOfStep;
        status.in_step = false;
    }
}

/// What the node verified of a package: its bless (or why it was refused:
/// then a sync would change nothing, and the package is not in step) and
/// the signatures of its installed revisions, checked again now.
async fn verified(
    node: &Node,
    dir: &crate::root::Package,
    package: &PackageName,
    local: &LocalState,
    bless: Option<Result<Option<super::verify::VerifiedBless>, super::StepError>>,
    status: &mut PackageStatus,
) {
    match bless {
        Some(Ok(Some(b))) => {
            status.bless = Some(BlessStatus {
                blessed: b.manifest.blessed.to_string(),
                previous: b.manifest.previous.as_ref().map(ToString::to_string),
                sequence: b.manifest.sequence,
                time: b.manifest.time.clone(),
                signers: b.signers,
            });
        }
        Some(Err(super::StepError::Refused { refusal, .. }))
            if matches!(*refusal, crate::signing::Refusal::TooFewSigners { .. }) =>
        {
            tracing::warn!("{package}: a bless is pending: {refusal}");
            status.bless_pending = Some(refusal.to_string());
            status.state = State::OutOfStep;
            status.in_step = false;
            status.sync = SyncPlan::default();
        }
        Some(Err(e)) => {
            // A result of status (exit 3), not its error: said once, here,
            // since the text line only counts refusals.
            tracing::warn!("{e}");
            status.refused.push(e.to_string());
            status.state = State::OutOfStep;
            status.in_step = false;
            status.sync = SyncPlan::default();
        }
        _ => {}
    }
    for id in &local.installed {
        let rev = RevisionName::new(package.clone(), id.clone());
        match node.check_signature(dir, &rev).await {
            Ok(Some(signers)) => status.verified.push(VerifiedStatus {
                name: rev.to_string(),
                signers,
            }),
            Ok(None) => {}
            Err(e) => {
                // Only the current one matters now: the others are checked
                // before a jump to them.
                if local.current.as_ref() == Some(id) {
                    let e = e.at(&rev);
                    tracing::warn!("{e}");
                    status.refused.push(e.to_string());
                }
            }
        }
    }
}

/// Pure: both sides of a package in, its status out.
pub(super) fn compare(
    package: &PackageName,
    local: &LocalState,
    remote: &RemoteState,
) -> PackageStatus {
    let plan = plan(package, local, remote);
    // An unknown package's warning is sync's ("leaving it untouched"): the
    // state `unknown` says it here.
    if !plan.unknown {
        for w in &plan.warnings {
            tracing::warn!("{w}");
        }
    }
    let full = |id: &RevisionId| RevisionName::new(package.clone(), id.clone()).to_string();
    let blessed = remote.pointers.blessed.as_ref();
    let on_blessed = blessed.is_none_or(|b| local.current.as_ref() == Some(&b.id));
    let state = if plan.unknown {
        State::Unknown
    } else if plan.is_empty() && on_blessed {
        State::InStep
    } else {
        State::OutOfStep
    };
    PackageStatus {
        current: local.current.as_ref().map(full),
        previous: local.previous.as_ref().map(full),
        blessed: blessed.map(ToString::to_string),
        blessed_previous: remote.pointers.previous.as_ref().map(ToString::to_string),
        sync: SyncPlan {
            download: plan.download.iter().map(|r| r.name.to_string()).collect(),
            jump: plan.jump.as_ref().map(full),
            previous: plan.previous.as_ref().map(full),
            remove: plan.remove.iter().map(full).collect(),
        },
        ..blank(package, state)
    }
}

fn failed(package: &PackageName, error: String) -> PackageStatus {
    PackageStatus {
        error: Some(error),
        ..blank(package, State::Error)
    }
}

/// A package's status with nothing known yet but its name and state; what
/// the node's records add is filled in afterwards.
fn blank(package: &PackageName, state: State) -> PackageStatus {
    PackageStatus {
        name: package.to_string(),
        state,
        in_step: state == State::InStep,
        current: None,
        previous: None,
        blessed: None,
        blessed_previous: None,
        sync: SyncPlan::default(),
        error: None,
        leftovers: Vec::new(),
        unverified: Vec::new(),
        failed: Vec::new(),
        bless: None,
        verified: Vec::new(),
        refused: Vec::new(),
        bless_pending: None,
        bless_age: None,
        bless_stale: false,
        last_install: None,
    }
}
