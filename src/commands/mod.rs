//! One file per subcommand, each thin: its arguments resolved into settings,
//! one call into the domain, output.

use std::sync::Arc;

use crate::cli::{Command, GlobalArgs};
use crate::error::Error;
use crate::logging::HookLog;
use crate::node::Node;
use crate::root::{Root, RootLock};
use crate::settings::{ChangeSettings, RootSettings, Settings};

mod clean;
mod completions;
mod fleet;
mod jump;
mod list;
mod log;
mod man;
mod purge;
mod remove;
mod sign;
mod spool;
mod status;
mod sync;

pub async fn run(global: &GlobalArgs, command: Command) -> Result<(), Error> {
    let s = &Settings::resolve(global);
    match command {
        Command::Spool(args) => spool::run(s, &args).await,
        Command::List(args) => list::run(s, &args).await,
        Command::Status(args) => status::run(s, &args).await,
        Command::Sync(args) => sync::run(s, &args).await,
        Command::Jump(args) => jump::jump(s, &args).await,
        Command::JumpBack(args) => jump::jump_back(s, &args).await,
        Command::Sign(args) => sign::run(s, &args).await,
        Command::Purge(args) => purge::run(s, &args).await,
        Command::Log(args) => log::run(s, &args).await,
        Command::Fleet(args) => fleet::run(s, &args).await,
        Command::Remove(args) => remove::run(&args).await,
        Command::Clean(args) => clean::run(&args).await,
        Command::Completions(args) => completions::run(args.shell),
        Command::Man(args) => man::run(args.dir.as_deref()),
    }
}

/// The node under the configured root, its hook output going to our log.
fn node(root: &RootSettings, settings: Option<&ChangeSettings>) -> Result<Node, Error> {
    let root = Root::open(root.path()?.to_owned())?;
    let hook_timeout = settings.and_then(|s| s.hook_timeout);
    Ok(Node::new(root, hook_timeout, Arc::new(HookLog)))
}

/// The node, verifying signatures before a jump when
/// `FTL_ALLOWED_SIGNERS` is set.
fn node_trusting(settings: &Settings, change: &ChangeSettings) -> Result<Node, Error> {
    Ok(node(&change.root, Some(change))?.trusting(settings.allowed_signers()?))
}

/// The node, locked, for commands that change it.
async fn locked_node(settings: &ChangeSettings) -> Result<(Node, RootLock), Error> {
    let node = node(&settings.root, Some(settings))?;
    let lock = node.lock(settings.lock_timeout).await?;
    Ok((node, lock))
}
