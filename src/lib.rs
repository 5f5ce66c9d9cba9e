//! ftl: deploy software to a fleet through S3.
//!
//! The flow: `cli` (raw flags) → `settings` (resolved, validated) → `commands::*`
//! (thin) over the domain modules: `names`, `store`, `bucket` on the bucket side;
//! `root`, `unpack`, `hooks`, `sync` on the node side; `digest` (how a download is
//! verified) between the two.

pub mod bucket;
pub mod cli;
pub mod commands;
pub mod digest;
pub mod error;
pub mod hooks;
pub mod logging;
pub mod names;
pub mod node;
pub mod output;
pub mod progress;
pub mod root;
pub mod settings;
pub mod splay;
pub mod store;
pub mod sync;
mod task;
pub mod unpack;
