use crate::error::Error;
use crate::names::{PackageName, RevisionName};
use crate::node::blocking;
use crate::settings::Settings;

pub async fn run(settings: &Settings, packages: &[String], keep: usize) -> Result<(), Error> {
    let named: Vec<PackageName> = super::parse_all(packages)?;
    let (node, _lock) = super::locked_node(settings).await?;
    let r = node.root().clone();
    let packages = if named.is_empty() {
        blocking(move || Ok(r.packages()?)).await?
    } else {
        named
    };
    let mut first_error = None;
    for package in packages {
        let dir = node.package(&package)?;
        let (installed, current, previous) =
            blocking(move || Ok((dir.revisions()?, dir.current()?, dir.previous()?))).await?;
        // Newest first by id; keep N of them, plus current and previous wherever they are.
        let doomed = installed
            .iter()
            .rev()
            .skip(keep)
            .filter(|id| Some(*id) != current.as_ref() && Some(*id) != previous.as_ref());
        for id in doomed {
            let rev = RevisionName::new(package.clone(), id.clone());
            if let Err(e) = node.remove(&rev).await {
                tracing::error!("{rev}: {e}");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e.into()),
    }
}
