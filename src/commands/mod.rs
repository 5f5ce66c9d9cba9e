//! One file per subcommand, each thin: settings in, domain calls, output out.

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::node::Node;
use crate::root::{Root, RootLock};
use crate::settings::Settings;

mod clean;
mod completions;
mod jump;
mod list;
mod man;
mod purge;
mod remove;
mod spool;
mod status;
mod sync;

pub async fn run(cli: Cli) -> Result<(), Error> {
    let settings = Settings::resolve(&cli.global);
    let s = &settings;
    match cli.command {
        Command::Spool { file } => spool::run(s, &file).await,
        Command::List {
            package,
            master,
            json,
        } => list::run(s, package.as_deref(), master, json).await,
        Command::Status { packages, json } => status::run(s, &packages, json).await,
        Command::Sync {
            packages,
            jobs,
            dry_run,
            full_every,
            splay,
        } => {
            // Before anything else (the lock, the bucket): the point is to spread those.
            crate::splay::wait(splay).await;
            let full_every = std::time::Duration::from_secs(full_every);
            sync::run(s, &packages, usize::from(jobs), dry_run, full_every).await
        }
        Command::Jump {
            revision,
            master,
            ignore_unjump_failure,
        } => jump::jump(s, &revision, master, ignore_unjump_failure).await,
        Command::JumpBack {
            package,
            master,
            ignore_unjump_failure,
        } => jump::jump_back(s, &package, master, ignore_unjump_failure).await,
        Command::Purge { revision, master } => purge::run(s, &revision, master).await,
        Command::Remove { revision } => remove::run(s, &revision).await,
        Command::Clean { packages, keep } => clean::run(s, &packages, keep).await,
        Command::Completions { shell } => completions::run(shell),
        Command::Man { dir } => man::run(dir.as_deref()),
    }
}

/// Parse names given on the command line (before any I/O).
fn parse_all<T: std::str::FromStr<Err = crate::names::NameError>>(
    values: &[String],
) -> Result<Vec<T>, Error> {
    Ok(values
        .iter()
        .map(|v| v.parse())
        .collect::<Result<Vec<T>, _>>()?)
}

/// The node, with its root checked and locked, for commands that change it.
async fn locked_node(settings: &Settings) -> Result<(Node, RootLock), Error> {
    let root = Root::new(settings.root()?.to_owned());
    root.check()?;
    let node = Node::new(root, settings.hook_timeout);
    let lock = node.lock(settings.lock_timeout).await?;
    Ok((node, lock))
}
