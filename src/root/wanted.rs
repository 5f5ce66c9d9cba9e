//! The record of what the bucket wanted on this node when a sync last read
//! it (`<package>/.ftl-wanted`): the oldest revision sync keeps. `clean`
//! reads it, so that it keeps what the next sync would download again,
//! without the bucket (it works offline and loads no AWS configuration).

use std::fs::{self, OpenOptions};
use std::io;

use crate::names::RevisionId;

use super::package::PackageDir;
use super::{RootError, TMP_LINK_INFIX, WANTED, io_err, with_unique_name};

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
        let text = format!("{id}\n");
        let prefix = format!("{WANTED}{TMP_LINK_INFIX}");
        let (tmp, ()) = with_unique_name("cannot write", &self.path, &prefix, |tmp| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
            io::Write::write_all(&mut f, text.as_bytes())
        })?;
        let path = self.path.join(WANTED);
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("cannot replace", &path)(e)
        })
    }
}
