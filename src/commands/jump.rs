use crate::error::Error;
use crate::names::{PackageName, RevisionName};
use crate::node::Jumped;
use crate::settings::Settings;

pub async fn jump(
    settings: &Settings,
    revision: &str,
    master: bool,
    force_unjump: bool,
) -> Result<(), Error> {
    let rev: RevisionName = revision.parse()?;
    if master {
        let bucket = settings.bucket().await?;
        if bucket.bless(&rev).await? {
            tracing::info!("blessed {rev} in {}", bucket.describe());
        } else {
            tracing::info!("{rev} was blessed already");
        }
        return Ok(());
    }
    let (node, _lock) = super::locked_node(settings).await?;
    match node.jump(&rev, force_unjump).await? {
        Jumped::Already => tracing::info!("{rev} is current already"),
        Jumped::Switched => {}
    }
    Ok(())
}

pub async fn jump_back(
    settings: &Settings,
    package: &str,
    master: bool,
    force_unjump: bool,
) -> Result<(), Error> {
    let package: PackageName = package.parse()?;
    if master {
        let bucket = settings.bucket().await?;
        let rev = bucket.jump_back(&package).await?;
        tracing::info!("blessed {rev} in {}", bucket.describe());
        return Ok(());
    }
    let (node, _lock) = super::locked_node(settings).await?;
    node.jump_back(&package, force_unjump).await?;
    Ok(())
}
