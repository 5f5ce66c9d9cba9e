use futures::StreamExt;

use crate::bucket::Bucket;
use crate::error::Error;
use crate::names::{PackageName, RevisionName};
use crate::node::{Node, blocking};
use crate::output::{self, LocalPackage, LocalRevision, MasterPackage, MasterRevision};
use crate::root::Root;
use crate::settings::Settings;

fn mark(active: bool) -> &'static str {
    if active { " (active)" } else { "" }
}

pub async fn run(
    settings: &Settings,
    package: Option<&str>,
    master: bool,
    json: bool,
) -> Result<(), Error> {
    let package: Option<PackageName> = package.map(str::parse).transpose()?;
    if master {
        let bucket = settings.bucket().await?;
        if json {
            let packages = match package {
                Some(p) => vec![p],
                None => bucket.packages().await?.into_iter().collect(),
            };
            let list = output::MasterList {
                packages: master_packages(&bucket, packages).await?,
            };
            return Ok(output::print_json(&list)?);
        }
        let mut out = String::new();
        match package {
            None => {
                for p in bucket.packages().await? {
                    out.push_str(&format!("{p}\n"));
                }
            }
            Some(p) => {
                let (revs, ptrs) = futures::try_join!(bucket.revisions(&p), bucket.pointers(&p))?;
                for r in revs {
                    let active = ptrs.blessed.as_ref() == Some(&r.name);
                    out.push_str(&format!("{}{}\n", r.name, mark(active)));
                }
            }
        }
        return Ok(output::print_text(&out)?);
    }
    let root = Root::new(settings.root()?.to_owned());
    root.check()?;
    let node = Node::new(root, None);
    if json {
        let packages = blocking(move || {
            let names = match package {
                Some(p) => vec![p],
                None => node.root().packages()?,
            };
            names.iter().map(|p| local_package(&node, p)).collect()
        })
        .await?;
        return Ok(output::print_json(&output::LocalList { packages })?);
    }
    let out = blocking(move || {
        let mut out = String::new();
        match package {
            None => {
                for p in node.root().packages()? {
                    out.push_str(&format!("{p}\n"));
                }
            }
            Some(p) => {
                let dir = node.package(&p)?;
                let current = dir.current()?;
                for id in dir.revisions()? {
                    let active = current.as_ref() == Some(&id);
                    out.push_str(&format!("{p}.{id}{}\n", mark(active)));
                }
            }
        }
        Ok(out)
    })
    .await?;
    Ok(output::print_text(&out)?)
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
