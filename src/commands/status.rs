//! `ftl status`: is this node in step with the bucket? Read-only, so no lock:
//! it may run beside a sync (the links it reads are switched atomically).

use std::fmt::Write as _;

use futures::StreamExt;

use crate::error::Error;
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::node::{Node, blocking};
use crate::output::{self, PackageStatus, State, SyncPlan};
use crate::root::Root;
use crate::settings::Settings;
use crate::sync::{self, Local, Remote};

/// Packages read at once (each is a listing and two small reads).
const PARALLEL: usize = 8;

pub async fn run(settings: &Settings, packages: &[String], json: bool) -> Result<(), Error> {
    let named: Vec<PackageName> = super::parse_all(packages)?;
    let root = Root::new(settings.root()?.to_owned());
    root.check()?;
    let bucket = settings.bucket().await?;
    let node = Node::new(root, None);
    let packages = if named.is_empty() {
        let r = node.root().clone();
        blocking(move || Ok(r.packages()?)).await?
    } else {
        named
    };
    if packages.is_empty() {
        tracing::warn!(
            "no package directories under {}: nothing to compare",
            node.root().path().display()
        );
    }
    let (node, bucket) = (&node, &bucket);
    let statuses: Vec<PackageStatus> = futures::stream::iter(packages)
        .map(|package| async move {
            match read(node, bucket, &package).await {
                Ok((local, remote)) => compare(&package, &local, &remote),
                Err(e) => {
                    tracing::error!("{package}: {e}");
                    failed(&package, e.to_string())
                }
            }
        })
        .buffered(PARALLEL)
        .collect()
        .await;

    let report = output::Status {
        in_step: statuses.iter().all(|s| s.in_step),
        packages: statuses,
    };
    if json {
        output::print_json(&report)?;
    } else {
        output::print_text(&text(&report))?;
    }
    let count = |state| report.packages.iter().filter(|p| p.state == state).count();
    let total = report.packages.len();
    match (count(State::Error), total - count(State::InStep)) {
        (0, 0) => Ok(()),
        (0, lagging) => Err(Error::NotInStep { lagging, total }),
        (errors, _) => Err(Error::Failed(format!(
            "the status of {errors} of {total} packages could not be read"
        ))),
    }
}

async fn read(
    node: &Node,
    bucket: &crate::bucket::Bucket,
    package: &PackageName,
) -> Result<(Local, Remote), Error> {
    let dir = node.package(package)?;
    let local = blocking(move || {
        Ok(Local {
            installed: dir.revisions()?,
            current: dir.current()?,
            previous: dir.previous()?,
        })
    })
    .await?;
    let (revisions, pointers) =
        futures::try_join!(bucket.revisions(package), bucket.pointers(package))?;
    Ok((
        local,
        Remote {
            revisions,
            pointers,
        },
    ))
}

/// Pure: both sides of a package in, its status out.
fn compare(package: &PackageName, local: &Local, remote: &Remote) -> PackageStatus {
    let plan = sync::plan(package, local, remote);
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let full = |id: &RevisionId| RevisionName::new(package.clone(), id.clone()).to_string();
    let blessed = remote
        .pointers
        .blessed
        .as_ref()
        .filter(|r| r.package == *package);
    let known = !remote.revisions.is_empty()
        || remote.pointers.blessed.is_some()
        || remote.pointers.previous.is_some();
    let on_blessed = blessed.is_none_or(|b| local.current.as_ref() == Some(&b.id));
    let state = if !known {
        State::Unknown
    } else if plan.is_empty() && on_blessed {
        State::InStep
    } else {
        State::OutOfStep
    };
    PackageStatus {
        name: package.to_string(),
        state,
        in_step: state == State::InStep,
        current: local.current.as_ref().map(full),
        previous: local.previous.as_ref().map(full),
        blessed: blessed.map(ToString::to_string),
        blessed_previous: remote
            .pointers
            .previous
            .as_ref()
            .filter(|r| r.package == *package)
            .map(ToString::to_string),
        sync: SyncPlan {
            download: plan.download.iter().map(|r| r.name.to_string()).collect(),
            jump: plan.jump.as_ref().map(full),
            previous: plan.previous.as_ref().map(full),
            remove: plan.remove.iter().map(full).collect(),
        },
        error: None,
    }
}

fn failed(package: &PackageName, error: String) -> PackageStatus {
    PackageStatus {
        name: package.to_string(),
        state: State::Error,
        in_step: false,
        current: None,
        previous: None,
        blessed: None,
        blessed_previous: None,
        sync: SyncPlan::default(),
        error: Some(error),
    }
}

/// One line a package, `key=value` words after the state, so that
/// `grep`/`awk` over a fleet's output work:
/// `my_site: in-step current=my_site.… previous=… blessed=… blessed-previous=…`
fn text(report: &output::Status) -> String {
    let mut out = String::new();
    for p in &report.packages {
        let _ = write!(out, "{}: {}", p.name, p.state.as_str());
        if let Some(e) = &p.error {
            let _ = writeln!(out, " {e}");
            continue;
        }
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        for (key, value) in [
            ("current", &p.current),
            ("previous", &p.previous),
            ("blessed", &p.blessed),
            ("blessed-previous", &p.blessed_previous),
        ] {
            let _ = write!(out, " {key}={}", or_dash(value));
        }
        // What a sync would do, only when it would do something.
        let s = &p.sync;
        for (key, values) in [("download", &s.download), ("remove", &s.remove)] {
            if !values.is_empty() {
                let _ = write!(out, " {key}={}", values.join(","));
            }
        }
        for (key, value) in [("jump", &s.jump), ("set-previous", &s.previous)] {
            if let Some(v) = value {
                let _ = write!(out, " {key}={v}");
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::fixtures::{local, remote};

    fn pkg() -> PackageName {
        "app".parse().unwrap()
    }

    #[test]
    fn states() {
        let cases = [
            (
                "in step",
                local(&["a1", "a2"], Some("a2"), Some("a1")),
                remote(&["a1", "a2"], Some("a2"), Some("a1")),
                State::InStep,
            ),
            (
                "blessed not yet downloaded",
                local(&["a1"], Some("a1"), None),
                remote(&["a1", "a2"], Some("a2"), Some("a1")),
                State::OutOfStep,
            ),
            (
                "spooled, not blessed, not downloaded ahead",
                local(&["a1"], Some("a1"), None),
                remote(&["a1", "a2"], Some("a1"), None),
                State::OutOfStep,
            ),
            (
                "jumped by hand away from blessed",
                local(&["a1", "a2"], Some("a1"), Some("a2")),
                remote(&["a1", "a2"], Some("a2"), Some("a1")),
                State::OutOfStep,
            ),
            (
                "blessed revision missing from the bucket: sync cannot help, still not in step",
                local(&["a1"], Some("a1"), None),
                remote(&["a1"], Some("a2"), Some("a1")),
                State::OutOfStep,
            ),
            (
                "nothing blessed, newest downloaded",
                local(&["a2"], None, None),
                remote(&["a1", "a2"], None, None),
                State::InStep,
            ),
            (
                "the bucket knows nothing",
                local(&["a1"], Some("a1"), None),
                remote(&[], None, None),
                State::Unknown,
            ),
        ];
        for (what, l, r, state) in cases {
            let s = compare(&pkg(), &l, &r);
            assert_eq!(s.state, state, "{what}");
            assert_eq!(s.in_step, state == State::InStep, "{what}");
        }
    }
}
