use crate::cli::PurgeArgs;
use crate::error::Error;
use crate::names::RevisionName;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: &PurgeArgs) -> Result<(), Error> {
    let rev: RevisionName = args.revision.parse()?;
    if !args.master {
        return Err(Error::Usage(
            "purge deletes from the bucket: say `ftl purge --master REV` (a local revision is deleted with `ftl remove REV`)".into(),
        ));
    }
    let bucket = settings.bucket().await?;
    bucket.purge(&rev).await?;
    tracing::info!("purged {rev} from {}", bucket.describe());
    Ok(())
}
