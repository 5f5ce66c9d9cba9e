use futures::StreamExt;

use crate::bucket::Bucket;
use crate::error::Error;
use crate::names::{PackageName, RevisionName};
use crate::node::{Node, blocking};
use crate::output::{self, LocalPackage, LocalRevision, MasterPackage, MasterRevision};
use crate::root::Root;
use crate::settings::Settings;

/// One line a name; a package's revisions oldest first, the active one marked.
fn lines<'a>(names: impl IntoIterator<Item = (&'a str, bool)>) -> String {
    names
        .into_iter()
        .map(|(name, active)| {
            let mark = if active { " (active)" } else { "" };
            format!("{name}{mark}\n")
        })
        .collect()
}

/// Without a package, the package names; with one, its revisions.
pub async fn run(
    settings: &Settings,
    package: Option<&str>,
    master: bool,
    json: bool,
) -> Result<(), Error> {
    let package: Option<PackageName> = package.map(str::parse).transpose()?;
    if master {
        let bucket = settings.bucket().await?;
        let packages = match package.clone() {
            Some(p) => vec![p],
            None => bucket.packages().await?.into_iter().collect(),
        };
        if json {
            let packages = master_packages(&bucket, packages).await?;
            return Ok(output::print_json(&output::MasterList { packages })?);
        }
        let text = match package {
            None => lines(packages.iter().map(|p| (p.as_str(), false))),
            Some(p) => {
                let listed = master_packages(&bucket, vec![p]).await?;
                lines(
                    listed
                        .iter()
                        .flat_map(|p| &p.revisions)
                        .map(|r| (r.name.as_str(), r.active)),
                )
            }
        };
        return Ok(output::print_text(&text)?);
    }
    let root = Root::new(settings.root()?.to_owned());
    root.check()?;
    let node = Node::new(root, None);
    let named = package.is_some();
    let (names, packages) = blocking(move || {
        let names = match package {
            Some(p) => vec![p],
            None => node.root().packages()?,
        };
        // The revisions are read for JSON, or for the one package named.
        let packages = if json || named {
            names
                .iter()
                .map(|p| local_package(&node, p))
                .collect::<crate::node::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok((names, packages))
    })
    .await?;
    if json {
        return Ok(output::print_json(&output::LocalList { packages })?);
    }
    let text = if named {
        lines(
            packages
                .iter()
                .flat_map(|p| &p.revisions)
                .map(|r| (r.name.as_str(), r.active)),
        )
    } else {
        lines(names.iter().map(|p| (p.as_str(), false)))
    };
    Ok(output::print_text(&text)?)
}

/// Blocking: reads the package's directory.
fn local_package(node: &Node, p: &PackageName) -> crate::node::Result<LocalPackage> {
    let dir = node.package(p)?;
    let (current, previous) = (dir.current()?, dir.previous()?);
    let full = |id| RevisionName::new(p.clone(), id).to_string();
    let revisions = dir
        .revisions()?
        .into_iter()
        .map(|id| LocalRevision {
            active: current.as_ref() == Some(&id),
            name: full(id),
        })
        .collect();
    Ok(LocalPackage {
        name: p.to_string(),
        current: current.map(full),
        previous: previous.map(full),
        revisions,
    })
}

async fn master_packages(
    bucket: &Bucket,
    packages: Vec<PackageName>,
) -> Result<Vec<MasterPackage>, Error> {
    futures::stream::iter(packages)
        .map(|p| async move {
            let (revs, ptrs) = futures::try_join!(bucket.revisions(&p), bucket.pointers(&p))?;
            let ours = |r: Option<RevisionName>| r.filter(|r| r.package == p);
            let (blessed, previous) = (ours(ptrs.blessed), ours(ptrs.previous));
            let revisions = revs
                .into_iter()
                .map(|r| MasterRevision {
                    active: blessed.as_ref() == Some(&r.name),
                    name: r.name.to_string(),
                    key: r.key,
                    size: r.size,
                })
                .collect();
            Ok(MasterPackage {
                name: p.to_string(),
                blessed: blessed.map(|r| r.to_string()),
                previous: previous.map(|r| r.to_string()),
                revisions,
            })
        })
        // A few packages at once: each is a listing and two small reads.
        .buffered(8)
        .collect::<Vec<Result<MasterPackage, Error>>>()
        .await
        .into_iter()
        .collect()
}
