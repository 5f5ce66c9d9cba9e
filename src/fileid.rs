//! A file's identity as `lstat`/`fstat` tell it (size, inode, modification
//! and change times), and when it proves the content unchanged.
//!
//! Nobody but root moving the clock can write a file without changing its
//! ctime, which cannot be set. But the kernel stamps times from a clock that
//! advances in ticks (a few milliseconds): a file written again within the
//! tick of its last change keeps its ctime ("racily clean", as git calls it).
//! So an identity proves nothing about writes in the tick of its own ctime:
//! it is trusted only when that ctime is older than [`MARGIN`] before the
//! moment after which others could write the file (more than any tick).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// More than the kernel's timestamp granularity (a tick: 1-10 ms).
pub(crate) const MARGIN: Duration = Duration::from_millis(20);

/// What must stay the same for a file's bytes to be the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub size: u64,
    pub ino: u64,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    pub ctime: i64,
}

impl FileId {
    pub(crate) fn of(m: &Metadata) -> FileId {
        FileId {
            size: m.len(),
            ino: m.ino(),
            mtime: ns(m.mtime(), m.mtime_nsec()),
            ctime: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// Whether this identity proves the content as it was up to `since`
    /// (nanoseconds, [`now`]): its ctime is older than `since` by more than
    /// a tick, so a later write would have changed it.
    pub(crate) fn settled(&self, since: i64) -> bool {
        self.ctime < since.saturating_sub(MARGIN.as_nanos() as i64)
    }
}

fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The wall clock, in nanoseconds since the epoch (the clock file times use).
pub(crate) fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_identity_older_than_the_margin_is_settled() {
        let id = |ctime| FileId {
            size: 1,
            ino: 2,
            mtime: 0,
            ctime,
        };
        let at = 1_700_000_000_000_000_000;
        let margin = MARGIN.as_nanos() as i64;
        assert!(id(at - margin - 1).settled(at));
        assert!(!id(at - margin).settled(at));
        assert!(!id(at - 1).settled(at));
        assert!(!id(at).settled(at));
        // A ctime in the future (the clock moved back) is never settled.
        assert!(!id(at + 5_000_000_000).settled(at));
    }

    #[test]
    fn a_write_changes_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"one").unwrap();
        let before = FileId::of(&std::fs::metadata(&p).unwrap());
        std::thread::sleep(MARGIN * 2);
        std::fs::write(&p, b"two").unwrap();
        let after = FileId::of(&std::fs::metadata(&p).unwrap());
        assert_eq!((before.size, before.ino), (after.size, after.ino));
        assert!(after.ctime > before.ctime);
        assert_ne!(before, after);
    }
}
