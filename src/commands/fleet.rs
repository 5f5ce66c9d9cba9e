use crate::cli::FleetArgs;
use crate::error::Error;
use crate::output;
use crate::settings::{self, Settings};

/// `ftl fleet [PKG…]`: the nodes' reports, laggards first; exit 3 when a
/// fresh report is not in step.
pub async fn run(settings: &Settings, args: &FleetArgs) -> Result<(), Error> {
    let packages = settings::names(&args.packages)?;
    let stale_after = settings::stale_after(&args.report_every)?;
    let bucket = settings.bucket().await?;
    let view = crate::fleet::view::view(&bucket, &packages, stale_after).await?;
    let total = view.rows().count();
    if total == 0 {
        return Err(Error::Failed(format!(
            "no node reports in {} (nodes write them with FTL_REPORT=1)",
            bucket.describe()
        )));
    }
    if args.json {
        output::print_json(&output::fleet_json(&view))?;
    } else {
        let now = crate::fleet::view::now_secs();
        output::print_text(&output::fleet_text(&view, now))?;
    }
    let lagging: usize = view.packages.iter().map(|p| p.lagging()).sum();
    if lagging > 0 {
        return Err(Error::NotInStep { lagging, total });
    }
    Ok(())
}
