use crate::cli::ListArgs;
use crate::error::Error;
use crate::names::PackageName;
use crate::output::{self, LocalPackage, MasterPackage, lines};
use crate::settings::{RootSettings, Settings};

/// Without a package, the package names; with one, its revisions.
pub async fn run(settings: &Settings, args: &ListArgs) -> Result<(), Error> {
    let package: Option<PackageName> = args.package.as_deref().map(str::parse).transpose()?;
    let packages: Vec<(String, bool)> = if args.master {
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
        let allowed = settings.allowed_signers()?;
        let mut packages = Vec::new();
        for (p, s) in names.iter().zip(states) {
            let (sigs, bless) =
                crate::sync::verify::inspect(&bucket, allowed.as_deref(), p, &s).await?;
            // The SHA-256s cost a HEAD per revision: for JSON only.
            let sha256s = if args.json {
                bucket.sha256s(&s.revisions).await?
            } else {
                Vec::new()
            };
            packages.push(MasterPackage::new(p, s, sigs, bless).with_sha256s(sha256s));
        }
        if args.json {
            return Ok(output::print_json(&output::MasterList { packages })?);
        }
        let text: String = packages.iter().map(MasterPackage::lines).collect();
        return Ok(output::print_text(&text)?);
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
