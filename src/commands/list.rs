use crate::cli::ListArgs;
use crate::error::Error;
use crate::names::PackageName;
use crate::output::{self, LocalPackage, MasterPackage, lines};
use crate::settings::{RootSettings, Settings};

/// Without a package, the package names; with one, its revisions.
pub async fn run(settings: &Settings, args: &ListArgs) -> Result<(), Error> {
    let package: Option<PackageName> = args.package.as_deref().map(str::parse).transpose()?;
    let packages = if args.master {
        let bucket = settings.bucket().await?;
        let names = match package.clone() {
            Some(p) => vec![p],
            None => bucket.packages().await?.into_iter().collect(),
        };
        if !args.json && package.is_none() {
            return Ok(output::print_text(&lines(
                names.iter().map(|p| (p.as_str(), false)),
            ))?);
        }
        let states = bucket.states(&names).await?;
        if args.json {
            // The SHA-256s cost a HEAD per revision: only here.
            let mut packages = Vec::new();
            for (p, s) in names.iter().zip(states) {
                let sha256s = bucket.sha256s(&s.revisions).await?;
                packages.push(MasterPackage::new(p, s).with_sha256s(sha256s));
            }
            return Ok(output::print_json(&output::MasterList { packages })?);
        }
        let packages = names
            .iter()
            .zip(states)
            .map(|(p, s)| MasterPackage::new(p, s));
        packages
            .flat_map(|p| p.revisions)
            .map(|r| (r.name, r.active))
            .collect::<Vec<_>>()
    } else {
        let node = super::node(&RootSettings::resolve(&args.root), None)?;
        let names = node.packages(package.clone().into_iter().collect()).await?;
        // The revisions are read for JSON, or for the one package named.
        if !args.json && package.is_none() {
            return Ok(output::print_text(&lines(
                names.iter().map(|p| (p.as_str(), false)),
            ))?);
        }
        let mut packages = Vec::new();
        for p in &names {
            packages.push(LocalPackage::new(p, node.package(p)?.state().await?));
        }
        if args.json {
            return Ok(output::print_json(&output::LocalList { packages })?);
        }
        packages
            .into_iter()
            .flat_map(|p| p.revisions)
            .map(|r| (r.name, r.active))
            .collect()
    };
    let text = lines(packages.iter().map(|(n, a)| (n.as_str(), *a)));
    Ok(output::print_text(&text)?)
}
