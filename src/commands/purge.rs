use crate::error::Error;
use crate::names::RevisionName;
use crate::settings::Settings;

pub async fn run(settings: &Settings, revision: &str, master: bool) -> Result<(), Error> {
    let rev: RevisionName = revision.parse()?;
    if !master {
        return Err(Error::Usage(
            "purge deletes from the bucket: say `ftl purge --master REV` (a local revision is deleted with `ftl remove REV`)".into(),
        ));
    }
    let bucket = settings.bucket().await?;
    bucket.purge(&rev).await?;
    tracing::info!("purged {rev} from {}", bucket.describe());
    Ok(())
}
