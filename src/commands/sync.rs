use std::time::{Duration, Instant};

use crate::error::Error;
use crate::names::PackageName;
use crate::node::Node;
use crate::root::Root;
use crate::settings::Settings;
use crate::sync::{self, Options, SyncError};

pub async fn run(
    settings: &Settings,
    packages: &[String],
    jobs: usize,
    dry_run: bool,
    full_every: Duration,
) -> Result<(), Error> {
    let named: Vec<PackageName> = super::parse_all(packages)?;
    let root = Root::new(settings.root()?.to_owned());
    root.check()?;
    let bucket = settings.bucket().await?;
    let node = Node::new(root, settings.hook_timeout);
    let started = Instant::now();
    let _lock = if dry_run {
        None
    } else {
        Some(node.lock(settings.lock_timeout).await?)
    };
    if !dry_run {
        let r = node.root().clone();
        crate::node::blocking(move || {
            let n = r.clean_leftovers()?;
            if n > 0 {
                tracing::info!("removed {n} leftovers of interrupted runs");
            }
            Ok(())
        })
        .await?;
    }
    let packages = if named.is_empty() {
        let r = node.root().clone();
        crate::node::blocking(move || Ok(r.packages()?)).await?
    } else {
        named
    };
    if packages.is_empty() {
        tracing::warn!(
            "no package directories under {}: create one per package to deploy",
            node.root().path().display()
        );
        return Ok(());
    }
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for r in sync::plan_all(
        &node,
        &bucket,
        &packages,
        jobs,
        (!dry_run).then_some(full_every),
    )
    .await
    {
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
    if dry_run {
        for p in &plans {
            print!("{}", p.plan.describe());
        }
    } else {
        let opts = Options {
            jobs,
            limits: settings.limits,
            full_every,
        };
        if let Err(e) = sync::execute(&node, &bucket, &plans, &opts).await {
            return Err(e.into());
        }
    }
    tracing::debug!("sync took {:.1?}", started.elapsed());
    match errors.len() {
        0 => Ok(()),
        n => {
            let first = Box::new(errors.remove(0));
            Err(if n == 1 {
                SyncError::Step(first)
            } else {
                SyncError::Failed {
                    failed: n,
                    total: packages.len(),
                    first,
                }
            }
            .into())
        }
    }
}
