//! Watching a rollout: nodes report what they run (`report`, opt-in with
//! `FTL_REPORT`), the deploy box reads the reports (`view`: `ftl fleet`,
//! `jump --master --wait`). Reports are advisory: no sync reads them.

pub mod report;
pub mod view;

pub use report::{Reporter, State};
pub use view::{Count, View, WaitFor, Waited};
