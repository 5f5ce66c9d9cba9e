//! The deploy box's side of reports: the fleet as its reports show it
//! (`ftl fleet`), and waiting for a bless to reach the fleet
//! (`jump --master --wait`). Reads the bucket's listing of reports, the
//! pointers of each package, and the bodies of failed reports only.

use std::time::{Duration, Instant};

use crate::bucket::{Bucket, BucketError, Report};
use crate::names::{NodeId, PackageName, RevisionName};

/// One node's report on one package, as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub node: NodeId,
    pub package: PackageName,
    pub revision: Option<RevisionName>,
    /// Runs the blessed revision, and its last run went through.
    pub in_step: bool,
    pub failed: bool,
    /// The revision whose failure it reported, if any.
    pub failed_revision: Option<RevisionName>,
    pub error: Option<String>,
    /// Older than the stale limit: the node may have stopped syncing.
    pub stale: bool,
    /// Seconds since the epoch.
    pub at: u64,
    pub version: String,
}

impl Row {
    fn of(r: Report, blessed: Option<&RevisionName>, now: u64, stale_after: Duration) -> Row {
        let revision = r.current.as_ref().map(|i| r.name(i));
        let failed_revision = r
            .failure
            .as_ref()
            .and_then(|f| f.revision.as_ref())
            .map(|i| r.name(i));
        let failed = r.failure.is_some();
        Row {
            in_step: !failed && blessed.is_some() && revision.as_ref() == blessed,
            stale: now.saturating_sub(r.at) > stale_after.as_secs(),
            error: r.failure.and_then(|f| f.error),
            node: r.node,
            package: r.package,
            revision,
            failed,
            failed_revision,
            at: r.at,
            version: r.version,
        }
    }

    /// Laggards and failures first: failed, behind, stale, in step.
    fn rank(&self) -> u8 {
        match (self.failed, self.stale, self.in_step) {
            (true, _, _) => 0,
            (false, false, false) => 1,
            (false, true, _) => 2,
            (false, false, true) => 3,
        }
    }
}

/// One package's reports.
#[derive(Debug, Clone)]
pub struct PackageView {
    pub package: PackageName,
    pub blessed: Option<RevisionName>,
    /// Laggards and failures first, then by node.
    pub rows: Vec<Row>,
}

impl PackageView {
    /// Fresh reports not in step.
    pub fn lagging(&self) -> usize {
        self.rows.iter().filter(|r| !r.stale && !r.in_step).count()
    }

    /// `41 of 43 nodes on my_site.… (blessed); 1 failed: web-07; 1 stale: web-12`.
    pub fn summary(&self) -> String {
        let names = |pick: &dyn Fn(&Row) -> bool| -> Vec<&str> {
            self.rows
                .iter()
                .filter(|r| pick(r))
                .map(|r| r.node.as_str())
                .collect()
        };
        let total = self.rows.len();
        let mut out = match &self.blessed {
            Some(b) => {
                let on = self.rows.iter().filter(|r| r.in_step && !r.stale).count();
                format!("{on} of {total} nodes on {b} (blessed)")
            }
            None => format!(
                "{total} nodes report {}, which has no blessed revision",
                self.package
            ),
        };
        for (what, list) in [
            ("failed", names(&|r| r.failed && !r.stale)),
            ("behind", names(&|r| !r.failed && !r.stale && !r.in_step)),
            ("stale", names(&|r| r.stale)),
        ] {
            if !list.is_empty() {
                out.push_str(&format!("; {} {what}: {}", list.len(), shorten(&list)));
            }
        }
        out
    }
}

/// At most 10 names, then how many more.
fn shorten(names: &[&str]) -> String {
    const MAX: usize = 10;
    if names.len() <= MAX {
        names.join(", ")
    } else {
        format!(
            "{}, … ({} more)",
            names[..MAX].join(", "),
            names.len() - MAX
        )
    }
}

/// The fleet as its reports show it.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub packages: Vec<PackageView>,
}

impl View {
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.packages.iter().flat_map(|p| p.rows.iter())
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The reports of `packages` (every package that has reports when empty),
/// each package with its blessed revision. A report older than
/// `stale_after` is stale.
pub async fn view(
    bucket: &Bucket,
    packages: &[PackageName],
    stale_after: Duration,
) -> Result<View, BucketError> {
    let reports = bucket.reports(packages).await?.reports;
    let mut names: Vec<PackageName> = packages.to_vec();
    for r in &reports {
        if !names.contains(&r.package) {
            names.push(r.package.clone());
        }
    }
    names.sort();
    let now = now_secs();
    let mut out = Vec::new();
    let mut reports = reports;
    for package in names {
        let blessed = bucket.pointers(&package).await?.blessed;
        let (mine, rest): (Vec<Report>, Vec<Report>) =
            reports.into_iter().partition(|r| r.package == package);
        reports = rest;
        let mut rows: Vec<Row> = mine
            .into_iter()
            .map(|r| Row::of(r, blessed.as_ref(), now, stale_after))
            .collect();
        rows.sort_by(|a, b| (a.rank(), &a.node).cmp(&(b.rank(), &b.node)));
        out.push(PackageView {
            package,
            blessed,
            rows,
        });
    }
    Ok(View { packages: out })
}

/// What `jump --master REV --wait` waits for.
#[derive(Debug, Clone)]
pub struct WaitFor {
    pub revision: RevisionName,
    /// Of the fresh reports, this many percent must run REV, ok.
    pub percent: u8,
    pub timeout: Duration,
    /// The first pause between two looks (it grows to [`MAX_POLL`]).
    pub first_poll: Duration,
    pub stale_after: Duration,
}

/// The longest pause between two looks.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// How long the first pause is kept before it grows.
const KEEP_FIRST_POLL: Duration = Duration::from_secs(120);

/// Where a wait stands: of `fresh` reporting nodes, `on` run the revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub on: usize,
    pub fresh: usize,
    /// How many must.
    pub needed: usize,
}

/// How a wait ended.
#[derive(Debug, Clone)]
pub enum Waited {
    Reached(Count),
    /// The timeout passed: the fresh nodes not on the revision.
    TimedOut {
        count: Count,
        laggards: Vec<Row>,
    },
    /// So many nodes failed the revision that the percentage cannot be reached.
    Failed {
        count: Count,
        failed: Vec<Row>,
    },
}

/// Where the fleet stands on `w.revision`, from one view of its package.
fn assess(w: &WaitFor, rows: &[Row]) -> (Count, Vec<Row>, Vec<Row>) {
    let fresh: Vec<&Row> = rows.iter().filter(|r| !r.stale).collect();
    let on = fresh
        .iter()
        .filter(|r| !r.failed && r.revision.as_ref() == Some(&w.revision))
        .count();
    let needed = (fresh.len() * usize::from(w.percent)).div_ceil(100);
    let failed: Vec<Row> = fresh
        .iter()
        .filter(|r| r.failed_revision.as_ref() == Some(&w.revision))
        .map(|r| (*r).clone())
        .collect();
    let laggards: Vec<Row> = fresh
        .iter()
        .filter(|r| r.failed || r.revision.as_ref() != Some(&w.revision))
        .map(|r| (*r).clone())
        .collect();
    let count = Count {
        on,
        fresh: fresh.len(),
        needed,
    };
    (count, failed, laggards)
}

/// Watches the reports of the revision's package until `percent` of the
/// fresh reporting nodes run it with result ok (no fresh report: waits on),
/// until so many failed it that this cannot be, or until the timeout.
/// `progress` is told of every look. Listing errors after the first look are
/// warnings: a wait outlives a network hiccup.
pub async fn wait(
    bucket: &Bucket,
    w: &WaitFor,
    progress: &(dyn Fn(&Count) + Sync),
) -> Result<Waited, BucketError> {
    let started = Instant::now();
    let deadline = started + w.timeout;
    let mut pause = w.first_poll.max(Duration::from_millis(10));
    let package = std::slice::from_ref(&w.revision.package);
    let mut looked = false;
    let mut last_warning = None;
    loop {
        match view(bucket, package, w.stale_after).await {
            Ok(v) => {
                looked = true;
                let rows: Vec<Row> = v.packages.into_iter().flat_map(|p| p.rows).collect();
                let (count, failed, laggards) = assess(w, &rows);
                progress(&count);
                if count.fresh > 0 && count.on >= count.needed {
                    return Ok(Waited::Reached(count));
                }
                if count.fresh > 0 && count.fresh - failed.len() < count.needed {
                    return Ok(Waited::Failed { count, failed });
                }
                if Instant::now() >= deadline {
                    return Ok(Waited::TimedOut { count, laggards });
                }
            }
            Err(e) if !looked => return Err(e),
            Err(e) => {
                let line = e.to_string();
                if last_warning.as_ref() != Some(&line) {
                    tracing::warn!("cannot read the reports (trying again): {line}");
                    last_warning = Some(line);
                }
                if Instant::now() >= deadline {
                    return Err(e);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(pause.min(left)).await;
        if started.elapsed() >= KEEP_FIRST_POLL {
            pause = (pause * 3 / 2).min(MAX_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, rev: &str, failed: Option<&str>, stale: bool) -> Row {
        let name = |id: &str| format!("app.{id}").parse::<RevisionName>().unwrap();
        Row {
            node: node.parse().unwrap(),
            package: "app".parse().unwrap(),
            revision: Some(name(rev)),
            in_step: rev == "2" && failed.is_none(),
            failed: failed.is_some(),
            failed_revision: failed.map(name),
            error: failed.map(|_| "boom".to_owned()),
            stale,
            at: 0,
            version: "0.3.0".into(),
        }
    }

    fn wait_for(percent: u8) -> WaitFor {
        WaitFor {
            revision: "app.2".parse().unwrap(),
            percent,
            timeout: Duration::from_secs(1),
            first_poll: Duration::from_secs(1),
            stale_after: Duration::from_secs(7500),
        }
    }

    #[test]
    fn counts_fresh_reports_only_and_sees_when_the_goal_is_out_of_reach() {
        let rows = [
            row("a", "2", None, false),
            row("b", "1", None, false),
            row("c", "1", Some("2"), false),
            row("d", "1", None, true),
        ];
        let (count, failed, laggards) = assess(&wait_for(100), &rows);
        assert_eq!(
            count,
            Count {
                on: 1,
                fresh: 3,
                needed: 3
            }
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(laggards.len(), 2);
        // 60 % of 3 is 2 (rounded up): c's failure leaves it within reach.
        let (count, failed, _) = assess(&wait_for(60), &rows);
        assert_eq!(count.needed, 2);
        assert!(count.fresh - failed.len() >= count.needed);
    }

    #[test]
    fn summary_names_failed_behind_and_stale_nodes() {
        let v = PackageView {
            package: "app".parse().unwrap(),
            blessed: Some("app.2".parse().unwrap()),
            rows: vec![
                row("c", "1", Some("2"), false),
                row("b", "1", None, false),
                row("d", "1", None, true),
                row("a", "2", None, false),
            ],
        };
        assert_eq!(
            v.summary(),
            "1 of 4 nodes on app.2 (blessed); 1 failed: c; 1 behind: b; 1 stale: d"
        );
        assert_eq!(v.lagging(), 2);
    }
}
