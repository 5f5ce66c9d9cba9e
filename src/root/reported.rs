//! The record of the last report this node wrote to the bucket for a package
//! (`<package>/.ftl-reported`): its key, which says what it reported and
//! when, and its error line. A sync compares the package's state with it,
//! so that it writes a report only when something changed (or the last one
//! is old) without asking the bucket anything.

use std::fs;

use super::package::PackageDir;
use super::{REPORTED, RootError};

/// What was last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The report's key in the bucket.
    pub key: String,
    /// Its error line, empty for none.
    pub error: String,
}

impl PackageDir {
    /// The record; `None` when there is none or it is unreadable (the worst
    /// that costs is one report written again).
    pub fn reported(&self) -> Option<Reported> {
        let text = fs::read_to_string(self.path.join(REPORTED)).ok()?;
        let mut lines = text.lines();
        let key = lines.next()?.to_owned();
        let error = lines.next().unwrap_or_default().to_owned();
        Some(Reported { key, error })
    }

    /// Replaces the record atomically (no fsync: a lost record costs one
    /// more report).
    pub fn set_reported(&self, r: &Reported) -> Result<(), RootError> {
        let clean = |s: &str| s.replace(['\n', '\r'], " ");
        let text = format!("{}\n{}\n", clean(&r.key), clean(&r.error));
        self.write_record(REPORTED, &text, false)
    }
}
