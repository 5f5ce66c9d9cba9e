use crate::cli::RemoveArgs;
use crate::error::Error;
use crate::names::RevisionName;
use crate::output;
use crate::settings::ChangeSettings;

pub async fn run(args: &RemoveArgs) -> Result<(), Error> {
    let rev: RevisionName = args.revision.parse()?;
    let settings = ChangeSettings::resolve(&args.node);
    if args.dry_run {
        // Reads only: no lock, no hook.
        let node = super::node(&settings.root, Some(&settings))?;
        node.removable(&rev).await.map_err(|e| e.at(&rev))?;
        return Ok(output::print_text(&format!(
            "{}: remove {rev}\n",
            rev.package
        ))?);
    }
    let (node, _lock) = super::locked_node(&settings).await?;
    Ok(node.remove(&rev).await.map_err(|e| e.at(&rev))?)
}
