//! `ftl status`: read-only, so no lock.

use crate::cli::StatusArgs;
use crate::error::Error;
use crate::output;
use crate::settings::{self, RootSettings, Settings};

pub async fn run(settings: &Settings, args: &StatusArgs) -> Result<(), Error> {
    let named = settings::names(&args.packages)?;
    let root = RootSettings::resolve(&args.root);
    settings.check_with_root(&root)?;
    let trust = settings.trust()?;
    let node = super::node(&root, None)?.trusting(trust.as_ref().map(|t| t.allowed.clone()));
    let bucket = settings.bucket().await?;
    let packages = node.packages(named).await?;
    let metrics = args.metrics.metrics_file.as_deref();
    let metrics = metrics.filter(|p| !p.as_os_str().is_empty());
    let report =
        crate::sync::status::status(&node, &bucket, &packages, metrics, trust.as_ref()).await;
    if args.json {
        output::print_json(&report)?;
    } else {
        output::print_text(&output::status_text(&report))?;
    }
    let total = report.packages.len();
    if total == 0 {
        // A wrong FTL_ROOT must not look like a healthy node.
        return Err(Error::Failed(format!(
            "no package directories under {}: nothing to check (is FTL_ROOT right? \
             `mkdir {}/<package>` enrols this node in a package)",
            node.root().path().display(),
            node.root().path().display()
        )));
    }
    match report.counts() {
        (0, 0) => Ok(()),
        (0, lagging) => Err(Error::NotInStep { lagging, total }),
        (errors, _) => Err(Error::Failed(format!(
            "the status of {errors} of {total} packages could not be read"
        ))),
    }
}
