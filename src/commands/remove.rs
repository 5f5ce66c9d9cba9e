use crate::error::Error;
use crate::names::RevisionName;
use crate::settings::Settings;

pub async fn run(settings: &Settings, revision: &str) -> Result<(), Error> {
    let rev: RevisionName = revision.parse()?;
    let (node, _lock) = super::locked_node(settings).await?;
    node.remove(&rev).await.map_err(Error::from)
}
