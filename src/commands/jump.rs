use std::io::IsTerminal as _;

use crate::bucket::Bucket;
use crate::cli::{JumpArgs, JumpBackArgs};
use crate::error::Error;
use crate::fleet::{Count, Reporter, WaitFor, Waited};
use crate::names::{PackageName, RevisionName};
use crate::node::Jumped;
use crate::node::Node;
use crate::settings::{self, ChangeSettings, Settings};

pub async fn jump(settings: &Settings, args: &JumpArgs) -> Result<(), Error> {
    if args.refresh {
        return refresh(settings, args).await;
    }
    let rev: RevisionName = args.revision.parse()?;
    if args.master && args.cosign {
        let key = settings::signing_key(&args.sign).await?.ok_or_else(|| {
            Error::Usage("--cosign needs a key: --sign KEY or FTL_SIGNING_KEY".into())
        })?;
        let bucket = settings.bucket().await?;
        let n = bucket.cosign(&rev, &key).await?;
        tracing::info!(
            "bless of {rev} cosigned by {}: {n} signatures",
            key.fingerprint()
        );
        return Ok(());
    }
    if args.master {
        let wait = settings::wait_for(&args.wait, &args.report, rev.clone())?;
        let key = settings::signing_key(&args.sign).await?;
        let bucket = settings.bucket().await?;
        let (changed, signed) = bucket.bless(&rev, key.as_ref()).await?;
        if changed {
            tracing::info!("blessed {rev} in {}", bucket.describe());
        } else {
            tracing::info!("{rev} was blessed already");
        }
        if let (Some(m), Some(k)) = (signed, &key) {
            tracing::info!(
                "bless of {rev} signed by {} (sequence {})",
                k.fingerprint(),
                m.sequence
            );
        }
        return wait_after(&bucket, wait).await;
    }
    let change = ChangeSettings::resolve(&args.node);
    let reporter = settings::reporter(&args.report)?;
    let node = super::node_trusting(settings, &change)?;
    let _lock = node.lock(change.lock_timeout).await?;
    let jumped = node
        .jump(&rev, args.ignore_unjump_failure)
        .await
        .map_err(|e| e.at(&rev));
    let failure = jumped
        .as_ref()
        .err()
        .map(|e| (Some(rev.id.clone()), e.to_string()));
    report_local(settings, &node, reporter, &rev.package, failure).await;
    match jumped? {
        Jumped::Already => tracing::info!("{rev} is current already"),
        Jumped::Switched => {}
    }
    Ok(())
}

pub async fn jump_back(settings: &Settings, args: &JumpBackArgs) -> Result<(), Error> {
    let package: PackageName = args.package.parse()?;
    if args.master {
        // Checked before the bless; the revision is known only after it.
        let placeholder = RevisionName::new(package.clone(), "0".parse()?);
        settings::wait_for(&args.wait, &args.report, placeholder)?;
        let key = settings::signing_key(&args.sign).await?;
        let bucket = settings.bucket().await?;
        let rev = bucket.jump_back(&package, key.as_ref()).await?;
        tracing::info!("blessed {rev} in {}", bucket.describe());
        let wait = settings::wait_for(&args.wait, &args.report, rev)?;
        return wait_after(&bucket, wait).await;
    }
    let change = ChangeSettings::resolve(&args.node);
    let reporter = settings::reporter(&args.report)?;
    let node = super::node_trusting(settings, &change)?;
    let _lock = node.lock(change.lock_timeout).await?;
    let jumped = node.jump_back(&package, args.ignore_unjump_failure).await;
    let failure = jumped.as_ref().err().map(|e| {
        let rev = e.refused().map(|r| r.id.clone());
        (rev, e.to_string())
    });
    report_local(settings, &node, reporter, &package, failure).await;
    jumped?;
    Ok(())
}

/// With FTL_REPORT: the package's state after a local jump, reported.
/// Without a bucket, one warning: the jump stands either way.
async fn report_local(
    settings: &Settings,
    node: &Node,
    reporter: Option<Reporter>,
    package: &PackageName,
    failure: Option<(Option<crate::names::RevisionId>, String)>,
) {
    let Some(reporter) = reporter else { return };
    let bucket = match settings.bucket().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("FTL_REPORT is set, but no report can be written: {e}");
            return;
        }
    };
    let current = match node.package(package) {
        Ok(dir) => dir.state().await.ok().and_then(|s| s.current),
        Err(_) => return,
    };
    let state = crate::fleet::State {
        package: package.clone(),
        current,
        failure,
    };
    crate::fleet::report::report(node, &bucket, &reporter, vec![state]).await;
}

/// `--wait`: watch the reports until the fleet runs the revision. A
/// progress line on a terminal, a plain line at each change otherwise.
async fn wait_after(bucket: &Bucket, wait: Option<WaitFor>) -> Result<(), Error> {
    let Some(w) = wait else { return Ok(()) };
    let rev = w.revision.clone();
    let tty = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(None::<Count>);
    let progress = |c: &Count| {
        let Ok(mut last) = last.lock() else { return };
        if *last == Some(*c) {
            return;
        }
        *last = Some(*c);
        if tty {
            eprint!("\r{}/{} on {rev} ({} needed) ", c.on, c.fresh, c.needed);
        } else {
            tracing::info!("{}/{} nodes on {rev} ({} needed)", c.on, c.fresh, c.needed);
        }
    };
    let waited = crate::fleet::view::wait(bucket, &w, &progress).await;
    if tty {
        eprintln!();
    }
    match waited? {
        Waited::Reached(c) => {
            tracing::info!("{rev} runs on {} of {} reporting nodes", c.on, c.fresh);
            Ok(())
        }
        Waited::TimedOut { count, laggards } => {
            let mut lines = vec![if count.fresh == 0 {
                format!(
                    "{rev}: no fresh node report of {} after {}: do the nodes report \
                     (FTL_REPORT=1)?",
                    rev.package,
                    shown(w.timeout)
                )
            } else {
                format!(
                    "{rev}: on {} of {} reporting nodes after {}, {} needed ({}%); not on it:",
                    count.on,
                    count.fresh,
                    shown(w.timeout),
                    count.needed,
                    w.percent
                )
            }];
            lines.extend(laggards.iter().map(|r| {
                let on = r
                    .revision
                    .as_ref()
                    .map_or("no revision".to_owned(), ToString::to_string);
                match &r.error {
                    Some(e) if r.failed => format!("{}: on {on}, failed: {e}", r.node),
                    _ if r.failed => format!("{}: on {on}, failed", r.node),
                    _ => format!("{}: on {on}", r.node),
                }
            }));
            Err(Error::Rollout {
                lines,
                timed_out: true,
            })
        }
        Waited::Failed { count, failed } => {
            let mut lines = vec![format!(
                "{rev}: failed on {} of {} reporting nodes: {}% ({} nodes) can no longer be reached",
                failed.len(),
                count.fresh,
                w.percent,
                count.needed
            )];
            lines.extend(failed.iter().map(|r| {
                format!(
                    "{}: {}",
                    r.node,
                    r.error
                        .as_deref()
                        .unwrap_or("failed (its report has no error line)")
                )
            }));
            Err(Error::Rollout {
                lines,
                timed_out: false,
            })
        }
    }
}

/// `ftl jump --master --refresh PKG|REV`: the signed bless signed again.
async fn refresh(settings: &Settings, args: &JumpArgs) -> Result<(), Error> {
    let (package, expected): (PackageName, Option<RevisionName>) = if args.revision.contains('.') {
        let rev: RevisionName = args.revision.parse()?;
        (rev.package.clone(), Some(rev))
    } else {
        (args.revision.parse()?, None)
    };
    let key = settings::signing_key(&args.sign).await?.ok_or_else(|| {
        Error::Usage("--refresh needs a key: --sign KEY or FTL_SIGNING_KEY".into())
    })?;
    let allowed = settings.allowed_signers()?.ok_or_else(|| {
        Error::Usage(
            "--refresh signs again only a bless it can verify: set FTL_ALLOWED_SIGNERS \
             (the nodes' allowed signers) here too"
                .into(),
        )
    })?;
    let bucket = settings.bucket().await?;
    let m = bucket
        .refresh(&package, expected.as_ref(), &key, &allowed)
        .await?;
    tracing::info!(
        "bless of {} signed again by {} (sequence {}, {})",
        m.blessed,
        key.fingerprint(),
        m.sequence,
        m.time
    );
    Ok(())
}

/// A duration as the flags take it: `10m`, `90s`, `1h`.
fn shown(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
