use crate::cli::CleanArgs;
use crate::error::Error;
use crate::output;
use crate::settings::{self, ChangeSettings};

pub async fn run(args: &CleanArgs) -> Result<(), Error> {
    let named = settings::names(&args.packages)?;
    let settings = ChangeSettings::resolve(&args.node);
    if args.dry_run {
        // Reads only: no lock, no hook.
        let node = super::node(&settings.root, Some(&settings))?;
        let packages = node.packages(named).await?;
        let doomed = node.clean_plan(&packages, args.keep).await?;
        return Ok(output::print_text(&output::clean_preview(
            &packages, &doomed,
        ))?);
    }
    let (node, _lock) = super::locked_node(&settings).await?;
    let packages = node.packages(named).await?;
    Ok(node.clean(&packages, args.keep).await?)
}
