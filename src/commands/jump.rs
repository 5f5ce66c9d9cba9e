use crate::cli::{JumpArgs, JumpBackArgs};
use crate::error::Error;
use crate::names::{PackageName, RevisionName};
use crate::node::Jumped;
use crate::settings::{ChangeSettings, Settings};

pub async fn jump(settings: &Settings, args: &JumpArgs) -> Result<(), Error> {
    let rev: RevisionName = args.revision.parse()?;
    if args.master {
        let bucket = settings.bucket().await?;
        if bucket.bless(&rev).await? {
            tracing::info!("blessed {rev} in {}", bucket.describe());
        } else {
            tracing::info!("{rev} was blessed already");
        }
        return Ok(());
    }
    let (node, _lock) = super::locked_node(&ChangeSettings::resolve(&args.node)).await?;
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
        let bucket = settings.bucket().await?;
        let rev = bucket.jump_back(&package).await?;
        tracing::info!("blessed {rev} in {}", bucket.describe());
        return Ok(());
    }
    let (node, _lock) = super::locked_node(&ChangeSettings::resolve(&args.node)).await?;
    node.jump_back(&package, args.ignore_unjump_failure).await?;
    Ok(())
}
