//! `ftl sign REV`: sign a revision already in the bucket.

use crate::cli::SignCmdArgs;
use crate::error::Error;
use crate::names::RevisionName;
use crate::settings::{self, Settings};

pub async fn run(settings: &Settings, args: &SignCmdArgs) -> Result<(), Error> {
    let rev: RevisionName = args.revision.parse()?;
    let key = settings::signing_key(&args.sign).await?.ok_or_else(|| {
        Error::Usage("ftl sign needs a key: --sign KEY or FTL_SIGNING_KEY".into())
    })?;
    let bucket = settings.bucket().await?;
    let manifest = bucket.sign(&rev, &key).await?;
    tracing::info!(
        "signed {rev} (sha256 {}, {} bytes) with {}",
        crate::digest::hex(&manifest.sha256),
        manifest.size,
        key.fingerprint()
    );
    Ok(())
}
