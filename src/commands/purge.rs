use crate::cli::PurgeArgs;
use crate::error::Error;
use crate::names::RevisionName;
use crate::output;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &PurgeArgs) -> Result<(), Error> {
    let rev: RevisionName = args.revision.parse()?;
    if !args.master {
        return Err(Error::Usage(
            "purge deletes from the bucket: say `ftl purge --master REV` (a local revision is deleted with `ftl remove REV`)".into(),
        ));
    }
    let bucket = settings.bucket().await?;
    if args.dry_run {
        let found = bucket.purgeable(&rev, args.force).await?;
        let line = format!(
            "{}: purge {rev} ({}, {} bytes)\n",
            rev.package, found.key, found.size
        );
        return Ok(output::print_text(&line)?);
    }
    bucket.purge(&rev, args.force).await?;
    tracing::info!("purged {rev} from {}", bucket.describe());
    Ok(())
}
