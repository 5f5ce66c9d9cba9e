use crate::cli::LogArgs;
use crate::error::Error;
use crate::names::PackageName;
use crate::output::{self, History, PackageHistory};
use crate::settings::Settings;

/// `ftl log --master [PKG]`: the blesses of one package, or of every one.
pub async fn run(settings: &Settings, args: &LogArgs) -> Result<(), Error> {
    let package: Option<PackageName> = args.package.as_deref().map(str::parse).transpose()?;
    if !args.master {
        return Err(Error::Usage(
            "log shows the bucket's history: say `ftl log --master [PKG]`".into(),
        ));
    }
    let bucket = settings.bucket().await?;
    let names = match package {
        Some(p) => vec![p],
        None => bucket.packages().await?.into_iter().collect(),
    };
    let mut packages = Vec::new();
    for p in names {
        let blesses = bucket.history(&p, args.limit).await?;
        packages.push(PackageHistory {
            name: p.to_string(),
            blesses,
        });
    }
    let history = History { packages };
    if args.json {
        return Ok(output::print_json(&history)?);
    }
    Ok(output::print_text(&output::history_text(&history))?)
}
