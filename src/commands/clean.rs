use crate::cli::CleanArgs;
use crate::error::Error;
use crate::settings::{self, ChangeSettings};

pub async fn run(args: &CleanArgs) -> Result<(), Error> {
    let named = settings::names(&args.packages)?;
    let (node, _lock) = super::locked_node(&ChangeSettings::resolve(&args.node)).await?;
    let packages = node.packages(named).await?;
    Ok(node.clean(&packages, args.keep).await?)
}
