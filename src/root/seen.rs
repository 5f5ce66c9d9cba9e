//! The record of the last complete sync of a package, which lets an idle
//! sync skip listing the bucket.

use std::fs::{self};

use super::package::PackageDir;
use super::{RootError, SEEN};

/// What the last complete sync of a package confirmed: the bucket's change
/// marker, and a fingerprint of the node's links and revisions then. While both
/// still hold, an idle sync needs one conditional request and no listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub marker: String,
    pub local: String,
    /// Seconds since the epoch when it was recorded.
    pub at: u64,
}

impl PackageDir {
    /// The recorded [`Seen`], if any and readable (it is a cache: anything
    /// odd reads as absent, which costs one full check).
    pub fn seen(&self) -> Option<Seen> {
        let text = fs::read_to_string(self.path.join(SEEN)).ok()?;
        let mut lines = text.lines();
        Some(Seen {
            marker: lines.next()?.to_owned(),
            local: lines.next()?.to_owned(),
            at: lines.next()?.parse().ok()?,
        })
    }

    /// Record a [`Seen`] atomically (no fsync: losing it costs one full check).
    pub fn set_seen(&self, seen: &Seen) -> Result<(), RootError> {
        if [&seen.marker, &seen.local].iter().any(|s| s.contains('\n')) {
            return Ok(());
        }
        let text = format!("{}\n{}\n{}\n", seen.marker, seen.local, seen.at);
        self.write_record(SEEN, &text, false)
    }
}
