use crate::bucket::Bucket;
use crate::cli::{JumpArgs, JumpBackArgs};
use crate::error::Error;
use crate::fleet::{self, WaitFor};
use crate::names::{PackageName, RevisionName};
use crate::node::Jumped;
use crate::output;
use crate::settings::{self, ChangeSettings, Settings};

/// `ftl jump`: on the node, or with `--master` in the bucket (a bless, a
/// cosignature, or the signed bless signed again).
pub async fn jump(settings: &Settings, args: &JumpArgs) -> Result<(), Error> {
    if args.refresh {
        return refresh(settings, args).await;
    }
    let rev: RevisionName = args.revision.parse()?;
    match (args.master, args.cosign) {
        (true, true) => cosign(settings, args, &rev).await,
        (true, false) => bless(settings, args, &rev).await,
        (false, _) => jump_here(settings, args, &rev).await,
    }
}

/// `ftl jump --master --cosign REV`: one more signature on its bless.
async fn cosign(settings: &Settings, args: &JumpArgs, rev: &RevisionName) -> Result<(), Error> {
    let key = settings::signing_key(&args.sign).await?.ok_or_else(|| {
        Error::Usage("--cosign needs a key: --sign KEY or FTL_SIGNING_KEY".into())
    })?;
    let bucket = settings.bucket().await?;
    let n = bucket.cosign(rev, &key).await?;
    tracing::info!(
        "bless of {rev} cosigned by {}: {n} signatures",
        key.fingerprint()
    );
    Ok(())
}

/// `ftl jump --master REV`: the bless, signed with a key if given, then
/// `--wait` if asked.
async fn bless(settings: &Settings, args: &JumpArgs, rev: &RevisionName) -> Result<(), Error> {
    let wait = settings::wait_for(&args.wait, &args.report, rev.clone())?;
    let key = settings::signing_key(&args.sign).await?;
    let bucket = settings.bucket().await?;
    let (changed, signed) = bucket.bless(rev, key.as_ref()).await?;
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
    wait_after(&bucket, wait).await
}

/// `ftl jump REV` on this node, under its lock, reported if asked.
async fn jump_here(settings: &Settings, args: &JumpArgs, rev: &RevisionName) -> Result<(), Error> {
    let change = ChangeSettings::resolve(&args.node);
    let reporter = settings::reporter(&args.report)?;
    let node = super::node_trusting(settings, &change)?;
    let _lock = node.lock(change.lock_timeout).await?;
    let jumped = node
        .jump(rev, args.ignore_unjump_failure)
        .await
        .map_err(|e| e.at(rev));
    let failure = jumped
        .as_ref()
        .err()
        .map(|e| (Some(rev.id.clone()), e.to_string()));
    if let Some(r) = &reporter {
        let bucket = settings.bucket().await;
        fleet::report::after_jump(&node, bucket, r, &rev.package, failure).await;
    }
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
    if let Some(r) = &reporter {
        let bucket = settings.bucket().await;
        fleet::report::after_jump(&node, bucket, r, &package, failure).await;
    }
    jumped?;
    Ok(())
}

/// `--wait`: watch the reports until the fleet runs the revision.
async fn wait_after(bucket: &Bucket, wait: Option<WaitFor>) -> Result<(), Error> {
    let Some(w) = wait else { return Ok(()) };
    let progress = output::WaitProgress::new(&w.revision);
    let waited = fleet::view::wait(bucket, &w, &|c| progress.show(c)).await;
    progress.finish();
    let count = waited?.outcome(&w)?;
    let rev = &w.revision;
    tracing::info!(
        "{rev} runs on {} of {} reporting nodes",
        count.on,
        count.fresh
    );
    Ok(())
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
