//! What this node verified: the signature document of each revision it
//! installed with `FTL_ALLOWED_SIGNERS` set (`revs/.signature-<id>`, checked
//! again before every jump to it), and the highest bless sequence it
//! accepted per package (`<package>/.ftl-bless`, durable: a bless going
//! backwards is refused even after a crash or a reboot).

use std::fs::{self};
use std::io;

use crate::names::RevisionId;

use super::package::PackageDir;
use super::{BLESS, RootError, SIGNATURE_PREFIX, io_err, not_found};

/// The last bless this node accepted for a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedBless {
    pub sequence: u64,
    /// The blessed revision's full name.
    pub blessed: String,
    /// When it was signed (seconds since the epoch), for
    /// `FTL_MAX_BLESS_AGE`; `None` in a record written before it was kept.
    pub signed: Option<u64>,
}

impl PackageDir {
    fn signature_path(&self, id: &RevisionId) -> std::path::PathBuf {
        self.revs().join(format!("{SIGNATURE_PREFIX}{id}"))
    }

    /// Records (or with `None` forgets) the verified signature document of
    /// revision `id`. Made durable with the revision itself (same directory).
    pub fn set_signature(&self, id: &RevisionId, doc: Option<&str>) -> Result<(), RootError> {
        let path = self.signature_path(id);
        match doc {
            Some(doc) => fs::write(&path, doc).map_err(io_err("cannot write", &path)),
            None => match fs::remove_file(&path) {
                Err(e) if !not_found(&e) => Err(io_err("cannot delete", &path)(e)),
                _ => Ok(()),
            },
        }
    }

    /// The recorded signature document of revision `id`, if any.
    pub fn signature(&self, id: &RevisionId) -> Option<String> {
        let path = self.signature_path(id);
        // Never more than a signature document: a larger file is not ours.
        let len = fs::metadata(&path).ok()?.len();
        if len > crate::signing::MAX_DOCUMENT {
            return None;
        }
        fs::read_to_string(path).ok()
    }

    /// The highest bless accepted here, if any (an unreadable record reads
    /// as none only when absent: a damaged one is an error, never a reset).
    pub fn accepted_bless(&self) -> Result<Option<AcceptedBless>, RootError> {
        let path = self.path.join(BLESS);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        let damaged = || {
            io_err("cannot read", &path)(io::Error::new(
                io::ErrorKind::InvalidData,
                "not \"<sequence> <revision> [<signed>]\" (delete it to accept any signed bless again)",
            ))
        };
        let mut words = text.split_whitespace();
        let (Some(seq), Some(blessed)) = (words.next(), words.next()) else {
            return Err(damaged());
        };
        let signed = match words.next() {
            Some(t) => Some(t.parse().map_err(|_| damaged())?),
            None => None,
        };
        Ok(Some(AcceptedBless {
            sequence: seq.parse().map_err(|_| damaged())?,
            blessed: blessed.to_owned(),
            signed,
        }))
    }

    /// Records an accepted bless: written, flushed and renamed into place,
    /// the directory flushed too.
    pub fn set_accepted_bless(&self, accepted: &AcceptedBless) -> Result<(), RootError> {
        let mut text = format!("{} {}", accepted.sequence, accepted.blessed);
        if let Some(t) = accepted.signed {
            text.push_str(&format!(" {t}"));
        }
        text.push('\n');
        self.write_record(BLESS, &text, true)
    }
}
