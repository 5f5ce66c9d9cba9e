use crate::cli::RemoveArgs;
use crate::error::Error;
use crate::names::RevisionName;
use crate::settings::ChangeSettings;

pub async fn run(args: &RemoveArgs) -> Result<(), Error> {
    let rev: RevisionName = args.revision.parse()?;
    let (node, _lock) = super::locked_node(&ChangeSettings::resolve(&args.node)).await?;
    Ok(node.remove(&rev).await.map_err(|e| e.at(&rev))?)
}
