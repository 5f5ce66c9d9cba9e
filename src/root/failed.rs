//! The record of revisions that failed on this node (`<package>/.ftl-failed`),
//! so that a bad revision is not fetched again on every sync.

use std::fs::{self};
use std::io;

use crate::names::RevisionId;

use super::package::PackageDir;
use super::{FAILED, RootError, io_err};

/// A revision that failed here: why, how often, and when to try it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: RevisionId,
    /// The object's ETag when it failed: another one is tried at once.
    pub etag: String,
    /// Failures in a row.
    pub count: u32,
    /// Seconds since the epoch of the last failure.
    pub at: u64,
    /// Seconds since the epoch before which it is not tried again.
    pub retry_at: u64,
    /// The last failure's message, on one line.
    pub reason: String,
}

impl Failure {
    fn line(&self) -> String {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            self.id,
            clean(&self.etag),
            self.count,
            self.at,
            self.retry_at,
            clean(&self.reason)
        )
    }

    fn parse(line: &str) -> Option<Failure> {
        let mut f = line.splitn(6, '\t');
        Some(Failure {
            id: f.next()?.parse().ok()?,
            etag: f.next()?.to_owned(),
            count: f.next()?.parse().ok()?,
            at: f.next()?.parse().ok()?,
            retry_at: f.next()?.parse().ok()?,
            reason: f.next()?.to_owned(),
        })
    }
}

impl PackageDir {
    /// The recorded failures (an unreadable record reads as none: the worst
    /// that costs is one more download).
    pub fn failures(&self) -> Vec<Failure> {
        let Ok(text) = fs::read_to_string(self.path.join(FAILED)) else {
            return Vec::new();
        };
        text.lines().filter_map(Failure::parse).collect()
    }

    /// Replaces the record atomically; an empty one removes the file.
    pub fn set_failures(&self, failures: &[Failure]) -> Result<(), RootError> {
        let path = self.path.join(FAILED);
        if failures.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(io_err("cannot delete", &path)(e))
                }
                _ => Ok(()),
            };
        }
        let text: String = failures.iter().map(Failure::line).collect();
        self.write_record(FAILED, &text, false)
    }
}
