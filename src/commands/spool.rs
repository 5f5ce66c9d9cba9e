use crate::cli::SpoolArgs;
use crate::error::Error;
use crate::names::{NameError, split_file_name};
use crate::progress;
use crate::settings::{self, Settings};

pub async fn run(settings: &Settings, args: &SpoolArgs) -> Result<(), Error> {
    let file = &args.file;
    // Refuse a bad name before loading any AWS configuration.
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| NameError::FileName(file.display().to_string()))?;
    split_file_name(name)?;
    let meta = std::fs::metadata(file)
        .map_err(|e| Error::Failed(format!("cannot read {}: {e}", file.display())))?;
    if !meta.is_file() {
        return Err(Error::Failed(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    // The key first: a wrong passphrase must not cost an upload.
    let key = settings::signing_key(&args.sign).await?;
    let bucket = settings.bucket().await?;
    let bar = progress::bytes(meta.len(), &format!("spool {name}"));
    let rev = bucket
        .spool(
            file,
            bar.as_ref().map(|b| b.callback()),
            key.as_ref(),
            args.delta,
        )
        .await?;
    if let Some(b) = bar {
        b.finish();
    }
    tracing::debug!(
        "spooled {} as {rev} to {}",
        file.display(),
        bucket.describe()
    );
    if let Some(k) = &key {
        tracing::info!("{rev} signed by {}", k.fingerprint());
    }
    println!("{rev}");
    Ok(())
}
