use std::sync::Arc;
use std::time::Duration;

use crate::cli::SyncArgs;
use crate::error::Error;
use crate::settings::{self, ChangeSettings, Settings};
use crate::sync::Options;

pub async fn run(settings: &Settings, args: &SyncArgs) -> Result<(), Error> {
    let node_settings = ChangeSettings::resolve(&args.node);
    settings.check_with_root(&node_settings.root)?;
    let opts = Options {
        packages: settings::names(&args.packages)?,
        jobs: usize::from(args.jobs),
        dry_run: args.dry_run,
        lock_timeout: node_settings.lock_timeout,
        full_every: Duration::from_secs(args.full_every),
        splay: Duration::from_secs(args.splay),
        limits: settings::limits(&args.limits),
        owner: settings::owner(args.owner.as_deref())?,
        show_plan: |text| {
            let _ = crate::output::print_text(text);
        },
        progress: Arc::new(crate::progress::Bars),
        retry_failed: args.retry_failed,
        metrics_file: args
            .metrics
            .metrics_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        trust: settings.trust()?,
        report: settings::reporter(&args.report)?,
    };
    let node = super::node(&node_settings.root, Some(&node_settings))?
        .trusting(opts.trust.as_ref().map(|t| t.allowed.clone()));
    let bucket = settings.bucket().await?;
    Ok(crate::sync::run(&node, &bucket, &opts).await?)
}
