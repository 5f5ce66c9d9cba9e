//! ftl: deploy software to a fleet through S3.
//!
//! The flow: `cli` (raw flags) → `settings` (resolved, validated) → `commands::*`
//! (thin) over the domain modules: `names`, `store`, `bucket` on the bucket side;
//! `root`, `unpack`, `hooks`, `sync` on the node side.

pub mod hooks;
pub mod names;
pub mod root;
pub mod store;
pub mod unpack;
