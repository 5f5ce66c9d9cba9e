//! The record of what the bucket wanted on this node when a sync last read
//! it (`<package>/.ftl-wanted`): the oldest revision sync keeps. `clean`
//! reads it, so that it keeps what the next sync would download again,
//! without the bucket (it works offline and loads no AWS configuration).

use std::fs::{self};

use crate::names::RevisionId;

use super::package::PackageDir;
use super::{RootError, WANTED};

impl PackageDir {
    /// The recorded oldest wanted revision; `None` when there is no record
    /// (never synced by this version) or it is unreadable.
    pub fn wanted_from(&self) -> Option<RevisionId> {
        let text = fs::read_to_string(self.path.join(WANTED)).ok()?;
        text.lines().next()?.parse().ok()
    }

    /// Records `id` atomically, when it differs from the record (no fsync:
    /// a lost record makes `clean` fall back to the node's own links).
    pub fn set_wanted_from(&self, id: &RevisionId) -> Result<(), RootError> {
        if self.wanted_from().as_ref() == Some(id) {
            return Ok(());
        }
        self.write_record(WANTED, &format!("{id}\n"), false)
    }
}
