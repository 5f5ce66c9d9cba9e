//! ftl: deploy software to a fleet through S3.
//!
//! The flow: `cli` (raw flags) → `settings` (resolved, validated) → `commands::*`
//! (thin) over the domain modules: `names`, `store`, `bucket` on the bucket side;
//! `root`, `unpack`, `hooks`, `sync` on the node side; `digest` (how a download is
//! verified) between the two.
//!
//! Public: what the binary (`main.rs`) and the integration tests use.

pub(crate) mod bucket;
pub mod cli;
pub mod commands;
pub(crate) mod delta;
pub(crate) mod digest;
pub mod error;
pub(crate) mod fileid;
pub(crate) mod fleet;
pub mod hooks;
pub mod logging;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod node;
pub(crate) mod output;
pub(crate) mod progress;
pub(crate) mod root;
pub(crate) mod settings;
pub(crate) mod signing;
pub(crate) mod splay;
pub(crate) mod store;
pub(crate) mod sync;
mod task;
pub(crate) mod unpack;

/// `ftl --version`: the version and, when known, the commit it was built
/// from (`build.rs`), e.g. `0.3.0 (45606ec3a1b2)`.
pub const VERSION: &str = env!("BUILT_VERSION");

/// The commit this binary was built from, when known (see `build.rs`).
pub(crate) const COMMIT: Option<&str> = option_env!("BUILT_COMMIT");
