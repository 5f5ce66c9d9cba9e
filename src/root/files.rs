//! The record of the installed files' identity (`<package>/.ftl-files`),
//! git's index idea: for each regular file of the last revision installed
//! with known SHA-256s, its path, size, inode, mtime and ctime and its
//! SHA-256. The next delta install takes a file of that revision whose
//! `lstat` still matches as holding that SHA-256, without reading it to
//! check (see [`crate::fileid`] for why that holds, and when it does not).
//!
//! One record, for the newest install: it is the next delta's base. A
//! record that names another revision, or that does not parse whole, is not
//! used (every file is then read and hashed, as without a record).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::digest::{hex, parse_hex32};
use crate::fileid::{self, FileId, MARGIN};
use crate::names::RevisionId;

use super::package::PackageDir;
use super::{FILES, RootError, io_err};

const MAGIC: &str = "ftl-files 1";

/// The identity and SHA-256 of the regular files of one installed revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: RevisionId,
    /// When the stats were taken (nanoseconds since the epoch), with the
    /// revision still ftl's alone (before it is renamed into place).
    pub sealed: i64,
    /// Paths relative to the revision, `/`-separated.
    pub files: Vec<(String, FileId, [u8; 32])>,
}

impl FileRecord {
    /// The entries whose identity proves their content: a ctime older than
    /// the stats by more than a tick (the others are read and hashed).
    pub fn settled(&self) -> HashMap<String, (FileId, [u8; 32])> {
        self.files
            .iter()
            .filter(|(_, id, _)| id.settled(self.sealed))
            .map(|(p, id, sha)| (p.clone(), (*id, *sha)))
            .collect()
    }

    pub(super) fn render(&self) -> String {
        let mut out = format!("{MAGIC}\nrevision {}\nsealed {}\n", self.id, self.sealed);
        for (path, id, sha) in &self.files {
            out.push_str(&format!(
                "{} {} {} {} {} {path}\n",
                id.size,
                id.ino,
                id.mtime,
                id.ctime,
                hex(sha)
            ));
        }
        // A record cut short (a crash while it was replaced) does not parse.
        out.push_str(&format!("end {}\n", self.files.len()));
        out
    }

    pub(super) fn parse(text: &str) -> Option<FileRecord> {
        let body = text.strip_suffix('\n')?;
        let mut lines = body.split('\n');
        if lines.next()? != MAGIC {
            return None;
        }
        let id = lines.next()?.strip_prefix("revision ")?.parse().ok()?;
        let sealed = lines.next()?.strip_prefix("sealed ")?.parse().ok()?;
        let mut files = Vec::new();
        for line in lines {
            if let Some(n) = line.strip_prefix("end ") {
                return (n.parse::<usize>().ok()? == files.len()).then_some(FileRecord {
                    id,
                    sealed,
                    files,
                });
            }
            let mut f = line.splitn(6, ' ');
            let id = FileId {
                size: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
                mtime: f.next()?.parse().ok()?,
                ctime: f.next()?.parse().ok()?,
            };
            let sha = parse_hex32(f.next()?)?;
            let path = f.next().filter(|p| !p.is_empty())?;
            files.push((path.to_owned(), id, sha));
        }
        // No end line: cut short.
        None
    }
}

impl PackageDir {
    /// The record; `None` when there is none or it does not parse.
    pub fn files(&self) -> Option<FileRecord> {
        FileRecord::parse(&fs::read_to_string(self.path.join(FILES)).ok()?)
    }

    /// What the record proves of revision `id`'s files ([`FileRecord::settled`]);
    /// empty unless there is a record, it parses, and it is `id`'s.
    pub fn files_of(&self, id: &RevisionId) -> HashMap<String, (FileId, [u8; 32])> {
        self.files()
            .filter(|r| r.id == *id)
            .map(|r| r.settled())
            .unwrap_or_default()
    }

    /// Replaces the record atomically (no fsync: losing it costs one
    /// install's reading of the files).
    pub fn set_files(&self, record: &FileRecord) -> Result<(), RootError> {
        self.write_record(FILES, &record.render(), false)
    }

    /// The identity of the regular files under `staging` (the revision `id`,
    /// final: unpacked, modes and owner set) whose path and size `digests`
    /// knows (path → size, SHA-256). Called just before the revision is
    /// renamed into place: until then nobody but ftl writes it. If a file
    /// changed less than [`MARGIN`] ago, waits until it did not, once, so
    /// that a write after the rename changes its ctime (see
    /// [`crate::fileid`]) rather than every file of a fast install being
    /// left out.
    pub fn identify(
        &self,
        staging: &Path,
        id: &RevisionId,
        digests: &HashMap<String, (u64, [u8; 32])>,
    ) -> Result<FileRecord, RootError> {
        let mut files = Vec::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let dir = staging.join(&rel);
            for entry in fs::read_dir(&dir).map_err(io_err("cannot read directory", &dir))? {
                let entry = entry.map_err(io_err("cannot read directory", &dir))?;
                let rel = rel.join(entry.file_name());
                let path = staging.join(&rel);
                let m = fs::symlink_metadata(&path).map_err(io_err("cannot stat", &path))?;
                if m.is_dir() {
                    todo.push(rel);
                    continue;
                }
                // A path the record's lines cannot hold is not recorded.
                let Some(name) = rel.to_str().filter(|p| !p.contains('\n')) else {
                    continue;
                };
                if let Some((size, sha)) = digests.get(name)
                    && m.is_file()
                    && m.len() == *size
                {
                    files.push((name.to_owned(), FileId::of(&m), *sha));
                }
            }
        }
        let newest = files.iter().map(|(_, f, _)| f.ctime).max();
        let margin = MARGIN.as_nanos() as i64;
        if let Some(newest) = newest {
            let wait = newest.saturating_add(margin + 1_000_000) - fileid::now();
            if wait > 0 {
                // At most once the margin: a ctime further ahead (the clock
                // moved back) is left out by the check below.
                std::thread::sleep(std::time::Duration::from_nanos(
                    wait.min(margin + 1_000_000) as u64,
                ));
            }
        }
        let sealed = fileid::now();
        files.retain(|(_, f, _)| f.settled(sealed));
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(FileRecord {
            id: id.clone(),
            sealed,
            files,
        })
    }
}
