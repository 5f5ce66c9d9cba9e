//! The plan of one package: what a sync downloads, activates and deletes,
//! from both sides of it. Pure: a table of cases tests it.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::bucket::{RemoteRevision, RemoteState};
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::root::LocalState;

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
    /// The bucket has nothing for the package (no revision, no pointer):
    /// nothing is done to it (`status` says `unknown`).
    pub unknown: bool,
    /// The oldest revision the bucket wants here ([`crate::node::wanted_from`]),
    /// when the bucket knows the package: recorded for `clean`.
    pub wanted_from: Option<RevisionId>,
}

/// The plan for one package. Pure: a table of cases tests it.
pub fn plan(package: &PackageName, local: &LocalState, remote: &RemoteState) -> Plan {
    let mut plan = Plan {
        package: Some(package.clone()),
        ..Plan::default()
    };
    let id = |r: &Option<RevisionName>| r.as_ref().map(|r| r.id.clone());
    let blessed = id(&remote.pointers.blessed);
    let bucket_previous = id(&remote.pointers.previous);
    if remote.revisions.is_empty() && blessed.is_none() && bucket_previous.is_none() {
        plan.unknown = true;
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
    let floor = crate::node::wanted_from(
        blessed.as_ref(),
        bucket_previous.as_ref(),
        remote.revisions.last().map(|r| &r.name.id),
    );
    plan.wanted_from = floor.clone();
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
        // A revision that failed here (its jump, validate included) never
        // becomes the target of a local jump-back; `status` lists it.
        if let Some(p) = &bucket_previous
            && p != b
            && will_have(p)
            && previous_after.as_ref() != Some(p)
            && !local.failed.contains(p)
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
        if self.unknown {
            // As `ftl status` says it: not "up to date", which it is not.
            let _ = writeln!(
                out,
                "{p}: unknown: the bucket has nothing for it, nothing to do"
            );
        } else if self.is_empty() {
            let _ = writeln!(out, "{p}: up to date");
        }
        out
    }
}
