//! The record of the last install into a package (`<package>/.ftl-installed`):
//! which revision, the bytes it moved from the bucket and the bytes of file
//! data a delta install took from an earlier revision here. `status --json`
//! reports it (`last_install`); only a record, never a decision.

use std::fs;

use crate::names::RevisionId;

use super::package::PackageDir;
use super::{INSTALLED, RootError};

/// The last install of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub id: RevisionId,
    /// Bytes fetched from the bucket (the whole object, or a delta's index
    /// and pieces).
    pub moved: u64,
    /// Bytes of file data taken from an earlier revision here (0 for a full
    /// download).
    pub reused: u64,
    /// Installed as a delta.
    pub delta: bool,
}

impl PackageDir {
    /// The record; `None` when there is none or it is unreadable.
    pub fn installed(&self) -> Option<Installed> {
        let text = fs::read_to_string(self.path.join(INSTALLED)).ok()?;
        let mut words = text.split_whitespace();
        Some(Installed {
            id: words.next()?.parse().ok()?,
            moved: words.next()?.parse().ok()?,
            reused: words.next()?.parse().ok()?,
            delta: match words.next()? {
                "delta" => true,
                "whole" => false,
                _ => return None,
            },
        })
    }

    /// Replaces the record atomically (no fsync: losing it loses a figure).
    pub fn set_installed(&self, i: &Installed) -> Result<(), RootError> {
        let how = if i.delta { "delta" } else { "whole" };
        let text = format!("{} {} {} {how}\n", i.id, i.moved, i.reused);
        self.write_record(INSTALLED, &text, false)
    }
}
