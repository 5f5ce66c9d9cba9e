use crate::cli::{JumpArgs, JumpBackArgs};
use crate::error::Error;
use crate::names::{PackageName, RevisionName};
use crate::node::Jumped;
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
        return Ok(());
    }
    let change = ChangeSettings::resolve(&args.node);
    let node = super::node_trusting(settings, &change)?;
    let _lock = node.lock(change.lock_timeout).await?;
    match node
        .jump(&rev, args.ignore_unjump_failure)
        .await
        .map_err(|e| e.at(&rev))?
    {
        Jumped::Already => tracing::info!("{rev} is current already"),
        Jumped::Switched => {}
    }
    Ok(())
}

pub async fn jump_back(settings: &Settings, args: &JumpBackArgs) -> Result<(), Error> {
    let package: PackageName = args.package.parse()?;
    if args.master {
        let key = settings::signing_key(&args.sign).await?;
        let bucket = settings.bucket().await?;
        let rev = bucket.jump_back(&package, key.as_ref()).await?;
        tracing::info!("blessed {rev} in {}", bucket.describe());
        return Ok(());
    }
    let change = ChangeSettings::resolve(&args.node);
    let node = super::node_trusting(settings, &change)?;
    let _lock = node.lock(change.lock_timeout).await?;
    node.jump_back(&package, args.ignore_unjump_failure).await?;
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
