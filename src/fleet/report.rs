//! The node's side of reports: after a sync or a jump, write a package's
//! report when its state changed since the last one (another current
//! revision, a failure, a failure cleared) or the last one is older than
//! `FTL_REPORT_EVERY`. What was last reported is in a local record
//! (`root::Reported`): an idle sync asks the bucket nothing more.
//!
//! A report that cannot be written is one warning per run, never an error:
//! reports are advisory, and the sync or jump has happened.

use std::time::Duration;

use futures::StreamExt;

use crate::bucket::{Bucket, Report, ReportFailure};
use crate::names::{NodeId, PackageName, RevisionId};
use crate::node::Node;
use crate::root::Reported;

/// Who reports, and how often at least.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub node: NodeId,
    /// A report older than this is written again, changed or not (each node
    /// and package after its own part of it, between half and all).
    pub every: Duration,
}

/// A package's state on this node after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub package: PackageName,
    pub current: Option<RevisionId>,
    /// The run's failure for this package: the revision that failed (when
    /// it was a revision's) and the error line.
    pub failure: Option<(Option<RevisionId>, String)>,
}

/// Reports written at once.
const WRITES_AT_ONCE: usize = 8;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How old this node's report on `package` may get before it is written
/// again: between half and all of `every`, fixed per node and package (a
/// hash of both), so that a fleet that reported in the minute of a bless does
/// not refresh in one minute every hour ever after.
fn refresh_after(every: Duration, node: &NodeId, package: &PackageName) -> Duration {
    // FNV-1a: stable across runs and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .as_str()
        .bytes()
        .chain([0])
        .chain(package.as_str().bytes())
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let half = every.as_secs() / 2;
    Duration::from_secs(half + h % (every.as_secs() - half + 1))
}

/// Whether `state` must be reported, given the last report.
fn due(state: &State, last: Option<&Reported>, now: u64, every: Duration) -> bool {
    let Some(last) = last else { return true };
    let Some(old) = Report::parse_key(&last.key) else {
        return true;
    };
    let failed_rev = |f: &Option<(Option<RevisionId>, String)>| f.as_ref().map(|(r, _)| r.clone());
    let error = state
        .failure
        .as_ref()
        .map(|(_, e)| e.as_str())
        .unwrap_or("");
    old.package != state.package
        || old.current != state.current
        || old.failure.as_ref().map(|f| f.revision.clone()) != failed_rev(&state.failure)
        || last.error != error
        || now.saturating_sub(old.at) >= every.as_secs()
}

/// Writes the reports of `states` that are due. Never fails: what could not
/// be written is one warning for the whole run.
pub async fn report(node: &Node, bucket: &Bucket, reporter: &Reporter, states: Vec<State>) {
    let now = now_secs();
    let results: Vec<Result<bool, String>> = futures::stream::iter(states)
        .map(|state| async move {
            let dir = node.package(&state.package).map_err(|e| e.to_string())?;
            let last = dir.reported().await;
            let every = refresh_after(reporter.every, &reporter.node, &state.package);
            if !due(&state, last.as_ref(), now, every) {
                return Ok(false);
            }
            let error = state.failure.as_ref().map(|(_, e)| e.clone());
            let report = Report {
                node: reporter.node.clone(),
                package: state.package.clone(),
                current: state.current.clone(),
                failure: state.failure.map(|(revision, error)| ReportFailure {
                    revision,
                    error: Some(error),
                }),
                at: now,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let key = bucket
                .put_report(&report)
                .await
                .map_err(|e| e.to_string())?;
            // Recorded before the old key is deleted: a failed delete leaves
            // two reports, of which the view takes the newer.
            let record = Reported {
                key: key.clone(),
                error: error.unwrap_or_default(),
            };
            if let Err(e) = dir.set_reported(record).await {
                tracing::debug!("{}: cannot record the report: {e}", state.package);
            }
            if let Some(old) = last.filter(|l| l.key != key) {
                bucket
                    .delete_report(&old.key)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(true)
        })
        .buffer_unordered(WRITES_AT_ONCE)
        .collect()
        .await;
    let written = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = failed.first() {
        tracing::warn!(
            "could not report this node's state to the bucket ({} of {} reports): {first}; \
             reports only inform `ftl fleet`, nothing else is affected",
            failed.len(),
            failed.len() + written
        );
    } else if written > 0 {
        tracing::debug!("{written} report(s) written as {}", reporter.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(current: &str, failure: Option<&str>) -> State {
        State {
            package: "app".parse().unwrap(),
            current: Some(current.parse().unwrap()),
            failure: failure.map(|e| (Some("2".parse().unwrap()), e.to_owned())),
        }
    }

    #[test]
    fn a_report_is_due_on_a_change_or_when_old() {
        let every = Duration::from_secs(3600);
        let node: NodeId = "n1".parse().unwrap();
        let last = |s: &State, at: u64| {
            let r = Report {
                node: node.clone(),
                package: s.package.clone(),
                current: s.current.clone(),
                failure: s.failure.as_ref().map(|(r, e)| ReportFailure {
                    revision: r.clone(),
                    error: Some(e.clone()),
                }),
                at,
                version: "0.3.0".into(),
            };
            Reported {
                key: r.key(),
                error: s.failure.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
            }
        };
        let t = 1_800_000_000;
        let ok1 = state("1", None);
        assert!(due(&ok1, None, t, every));
        assert!(!due(&ok1, Some(&last(&ok1, t - 10)), t, every));
        assert!(due(&ok1, Some(&last(&ok1, t - 3600)), t, every));
        assert!(due(&state("2", None), Some(&last(&ok1, t)), t, every));
        let failed = state("1", Some("app.2: hook failed"));
        assert!(due(&failed, Some(&last(&ok1, t)), t, every));
        assert!(!due(&failed, Some(&last(&failed, t)), t, every));
        assert!(due(
            &state("1", Some("other")),
            Some(&last(&failed, t)),
            t,
            every
        ));
        assert!(due(&ok1, Some(&last(&failed, t)), t, every), "cleared");
    }

    #[test]
    fn refreshes_spread_between_half_and_all_of_the_period() {
        let every = Duration::from_secs(3600);
        let p: PackageName = "app".parse().unwrap();
        let spread: std::collections::BTreeSet<u64> = (0..50)
            .map(|i| {
                let node: NodeId = format!("web-{i:02}").parse().unwrap();
                let d = refresh_after(every, &node, &p).as_secs();
                assert!((1800..=3600).contains(&d), "{d}");
                assert_eq!(refresh_after(every, &node, &p).as_secs(), d, "stable");
                d / 60
            })
            .collect();
        assert!(spread.len() > 20, "{spread:?}");
    }
}
