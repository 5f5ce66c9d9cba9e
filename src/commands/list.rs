use crate::error::Error;
use crate::names::PackageName;
use crate::node::{Node, blocking};
use crate::root::Root;
use crate::settings::Settings;

fn mark(active: bool) -> &'static str {
    if active { " (active)" } else { "" }
}

pub async fn run(settings: &Settings, package: Option<&str>, master: bool) -> Result<(), Error> {
    let package: Option<PackageName> = package.map(str::parse).transpose()?;
    let mut out = String::new();
    if master {
        let bucket = settings.bucket().await?;
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
    } else {
        let root = Root::new(settings.root()?.to_owned());
        root.check()?;
        let node = Node::new(root, None);
        out = blocking(move || {
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
    }
    print!("{out}");
    Ok(())
}
