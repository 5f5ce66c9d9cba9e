//! ftl's key layout on a store: revision objects, the blessed and previous
//! pointers, and what ftl 0.2.x left in old buckets.
//!
//! | key | content |
//! | --- | --- |
//! | `<package>.<id>.<ext>` | a spooled file |
//! | `<package>.rev` | the blessed revision name |
//! | `<package>.previous` | the revision blessed before it |
//! | `<package>.current` | 0.2.x: the blessed revision, read when `.rev` is absent |
//! | `<package>.changed` | rewritten after every change to the package (spool, bless, purge), so an idle node asks one cheap conditional GET instead of listing |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::SystemTime;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::digest::{Expected, hex, parse_hex32};
use crate::names::{NameError, PackageName, RevisionId, RevisionName, split_file_name};
use crate::store::{Expect, Fresh, Object, Progress, Store, StoreError, Text};

/// User metadata key holding the SHA-256 of the whole object, in hex.
pub const SHA256_META: &str = "ftl-sha256";

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("the bucket has no revision {0}")]
    NoSuchRevision(RevisionName),
    #[error("{0} is the blessed revision; bless another one first")]
    Blessed(RevisionName),
    #[error("package {0} has no blessed revision in the bucket")]
    NothingBlessed(PackageName),
    #[error("package {0} has no previous revision in the bucket to jump back to")]
    NoPrevious(PackageName),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
}

pub type Result<T, E = BucketError> = std::result::Result<T, E>;

/// A revision object in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRevision {
    pub name: RevisionName,
    pub key: String,
    /// Everything after `<package>.<id>.` in the key (`tgz`, `tar.gz`, `jar`).
    pub ext: String,
    pub size: u64,
}

/// The pointers of a package: what is blessed and what was before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointers {
    pub blessed: Option<RevisionName>,
    pub previous: Option<RevisionName>,
}

pub struct Bucket {
    store: Box<dyn Store>,
}

fn rev_key(p: &PackageName) -> String {
    format!("{p}.rev")
}
fn previous_key(p: &PackageName) -> String {
    format!("{p}.previous")
}
fn legacy_key(p: &PackageName) -> String {
    format!("{p}.current")
}

fn changed_key(p: &PackageName) -> String {
    format!("{p}.changed")
}

/// `<package>.<id>.<ext>` → the revision; anything else (pointers, foreign keys) → None.
pub fn parse_revision_key(key: &str, size: u64) -> Option<RemoteRevision> {
    let mut parts = key.splitn(3, '.');
    let package: PackageName = parts.next()?.parse().ok()?;
    let id: RevisionId = parts.next()?.parse().ok()?;
    let ext = parts.next()?;
    if ext.is_empty() {
        return None;
    }
    Some(RemoteRevision {
        name: RevisionName::new(package, id),
        key: key.to_owned(),
        ext: ext.to_owned(),
        size,
    })
}

fn parse_pointer(key: &str, t: Option<Text>) -> Option<RevisionName> {
    let t = t?;
    match t.text.trim().parse() {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::warn!("ignoring {key}: {:?} is not a revision name", t.text.trim());
            None
        }
    }
}

/// The pointer objects as read, with their versions, for conditional writes.
struct Seen {
    rev: Option<Text>,
    previous: Option<Text>,
}

impl Bucket {
    pub fn new(store: Box<dyn Store>) -> Self {
        Self { store }
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Every package that has a revision or a pointer in the bucket.
    pub async fn packages(&self) -> Result<BTreeSet<PackageName>> {
        Ok(self
            .store
            .list("")
            .await?
            .iter()
            .filter_map(|o| o.key.split_once('.').and_then(|(p, _)| p.parse().ok()))
            .collect())
    }

    /// The package's revisions, oldest first.
    pub async fn revisions(&self, package: &PackageName) -> Result<Vec<RemoteRevision>> {
        let listing = self.store.list(&format!("{package}.")).await?;
        let mut by_id: BTreeMap<RevisionId, RemoteRevision> = BTreeMap::new();
        for o in listing {
            if let Some(r) = parse_revision_key(&o.key, o.size)
                && r.name.package == *package
            {
                by_id.entry(r.name.id.clone()).or_insert(r);
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// The pointers, and their versions for conditional writes. `for_update`
    /// reads `.previous` strictly before `.rev`: two reads in parallel may be
    /// answered far apart, and a `.previous` read after another blesser's writes
    /// paired with a `.rev` read before them would let a stale `.previous` pass
    /// its condition.
    async fn read_pointers(
        &self,
        package: &PackageName,
        for_update: bool,
    ) -> Result<(Seen, Pointers)> {
        let (rk, pk) = (rev_key(package), previous_key(package));
        let (rev, prev) = if for_update {
            let prev = self.store.get_text(&pk).await?;
            (self.store.get_text(&rk).await?, prev)
        } else {
            futures::try_join!(self.store.get_text(&rk), self.store.get_text(&pk))?
        };
        let (rev_text, blessed) = match rev {
            Some(t) => (Some(t.clone()), parse_pointer(&rev_key(package), Some(t))),
            None => {
                let legacy = self.store.get_text(&legacy_key(package)).await?;
                (None, parse_pointer(&legacy_key(package), legacy))
            }
        };
        let seen = Seen {
            rev: rev_text,
            previous: prev.clone(),
        };
        let previous = parse_pointer(&previous_key(package), prev);
        Ok((seen, Pointers { blessed, previous }))
    }

    pub async fn pointers(&self, package: &PackageName) -> Result<Pointers> {
        Ok(self.read_pointers(package, false).await?.1)
    }

    pub async fn find(&self, rev: &RevisionName) -> Result<RemoteRevision> {
        self.revisions(&rev.package)
            .await?
            .into_iter()
            .find(|r| r.name == *rev)
            .ok_or_else(|| BucketError::NoSuchRevision(rev.clone()))
    }

    /// Point `.rev` at `target`, `.previous` at what was blessed. `.previous` is
    /// written first so a reader between the two writes sees a harmless pair.
    /// Both are written only if nobody changed them since we read them: with an
    /// unconditional `.previous`, a blesser that lost the race on `.rev` had
    /// already overwritten the winner's `.previous` with what it saw, silently.
    async fn set_blessed(
        &self,
        package: &PackageName,
        target: &RevisionName,
        new_previous: Option<&RevisionName>,
        seen: Seen,
    ) -> Result<()> {
        let expect = |t: Option<Text>| match t {
            Some(t) => Expect::Version(t.version),
            None => Expect::Absent,
        };
        let conflict = |e| match e {
            StoreError::AlreadyExists { key } => StoreError::Conflict { key },
            other => other,
        };
        if let Some(prev) = new_previous {
            self.store
                .put_text(
                    &previous_key(package),
                    &format!("{prev}\n"),
                    expect(seen.previous),
                )
                .await
                .map_err(conflict)?;
        }
        self.store
            .put_text(&rev_key(package), &format!("{target}\n"), expect(seen.rev))
            .await
            .map_err(conflict)?;
        Ok(())
    }

    /// Has the package changed since the marker version `seen`? One request.
    pub async fn changed(&self, package: &PackageName, seen: Option<&str>) -> Result<Fresh> {
        Ok(self
            .store
            .get_text_if_changed(&changed_key(package), seen)
            .await?)
    }

    /// Record that the package changed: nodes that saw the old marker look again.
    async fn touch(&self, package: &PackageName, what: &str) -> Result<()> {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let text = format!("{now} {} {what}\n", std::process::id());
        self.store
            .put_text(&changed_key(package), &text, Expect::Any)
            .await?;
        Ok(())
    }

    /// Bless a revision. Returns false when it already was.
    pub async fn bless(&self, rev: &RevisionName) -> Result<bool> {
        let package = &rev.package;
        let ((seen, ptrs), _) =
            futures::try_join!(self.read_pointers(package, true), self.find(rev))?;
        if ptrs.blessed.as_ref() == Some(rev) {
            // Re-blessing still writes the marker: the way to give a bucket of
            // ftl 0.2.x one, so its nodes stop listing on every sync.
            self.touch(package, &format!("bless {rev}")).await?;
            return Ok(false);
        }
        self.set_blessed(package, rev, ptrs.blessed.as_ref(), seen)
            .await?;
        self.touch(package, &format!("bless {rev}")).await?;
        Ok(true)
    }

    /// Swap blessed and previous; returns the newly blessed revision.
    pub async fn jump_back(&self, package: &PackageName) -> Result<RevisionName> {
        let (seen, ptrs) = self.read_pointers(package, true).await?;
        let blessed = ptrs
            .blessed
            .ok_or_else(|| BucketError::NothingBlessed(package.clone()))?;
        let previous = ptrs
            .previous
            .ok_or_else(|| BucketError::NoPrevious(package.clone()))?;
        self.find(&previous).await?;
        self.set_blessed(package, &previous, Some(&blessed), seen)
            .await?;
        self.touch(package, &format!("bless {previous}")).await?;
        Ok(previous)
    }

    /// Delete a revision object; never the blessed one.
    pub async fn purge(&self, rev: &RevisionName) -> Result<()> {
        let ptrs = self.pointers(&rev.package).await?;
        if ptrs.blessed.as_ref() == Some(rev) {
            return Err(BucketError::Blessed(rev.clone()));
        }
        let found = self.find(rev).await?;
        self.store.delete(&found.key).await?;
        self.touch(&rev.package, &format!("purge {rev}")).await?;
        Ok(())
    }

    /// Open a revision for download, with how to verify it.
    pub async fn open(&self, rev: &RemoteRevision) -> Result<(Object, Expected)> {
        let object = self.store.get(&rev.key).await?;
        let digest = match object
            .meta
            .metadata
            .get(SHA256_META)
            .and_then(|h| parse_hex32(h))
        {
            Some(d) => Expected::Sha256(d),
            None => match rev.name.id.md5_tag() {
                Some(tag) => Expected::Md5Tag(tag.to_owned()),
                None => Expected::Nothing,
            },
        };
        Ok((object, digest))
    }

    /// Upload a file as a new revision.
    pub async fn spool(&self, path: &Path, progress: Option<Progress>) -> Result<RevisionName> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| NameError::FileName(path.display().to_string()))?;
        let (package, ext) = split_file_name(file_name)?;
        let (md5, sha256) = digest_file(path).await?;
        let id = RevisionId::generate(SystemTime::now(), &md5);
        let name = RevisionName::new(package, id);
        let key = format!("{name}.{ext}");
        let mut meta = HashMap::new();
        meta.insert(SHA256_META.to_owned(), hex(&sha256));
        self.store.put_file_new(&key, path, meta, progress).await?;
        self.touch(&name.package, &format!("spool {name}")).await?;
        Ok(name)
    }
}

/// MD5 (for the id) and SHA-256 (for verification) in one read of the file,
/// each on its own core while a third thread reads ahead: the time is that of
/// MD5 alone (the slower of the two; SHA-256 has CPU instructions here).
async fn digest_file(path: &Path) -> Result<([u8; 16], [u8; 32])> {
    let owned = path.to_owned();
    let joined = tokio::task::spawn_blocking(move || digest_file_blocking(&owned)).await;
    joined.unwrap_or_else(|e| {
        Err(BucketError::File {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })
    })
}

/// Size and number of the read buffers shared by the two hashing threads.
const HASH_CHUNK: usize = 1 << 20;
const HASH_BUFFERS: usize = 8;

fn digest_file_blocking(path: &Path) -> Result<([u8; 16], [u8; 32])> {
    use std::sync::{Arc, mpsc};
    let err = |source| BucketError::File {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(BucketError::NotAFile {
            path: path.display().to_string(),
        });
    }
    type Chunk = Arc<Vec<u8>>;
    let (md5_tx, md5_rx) = mpsc::sync_channel::<Chunk>(HASH_BUFFERS);
    let (sha_tx, sha_rx) = mpsc::sync_channel::<Chunk>(HASH_BUFFERS);
    // Each hasher hands every chunk back when done with it; a chunk is free
    // again once both have.
    let (back_tx, back_rx) = mpsc::channel::<Chunk>();
    std::thread::scope(|s| {
        let back = back_tx.clone();
        let md5 = s.spawn(move || {
            let mut h = Md5::new();
            for chunk in md5_rx {
                h.update(&chunk[..]);
                let _ = back.send(chunk);
            }
            <[u8; 16]>::from(h.finalize())
        });
        let back = back_tx;
        let sha = s.spawn(move || {
            let mut h = Sha256::new();
            for chunk in sha_rx {
                h.update(&chunk[..]);
                let _ = back.send(chunk);
            }
            <[u8; 32]>::from(h.finalize())
        });
        let read = (|| -> std::io::Result<()> {
            let (mut free, mut allocated) = (Vec::<Chunk>::new(), 0);
            loop {
                let mut chunk = loop {
                    if let Some(c) = free.pop() {
                        break c;
                    }
                    if allocated < HASH_BUFFERS {
                        allocated += 1;
                        break Arc::new(Vec::with_capacity(HASH_CHUNK));
                    }
                    match back_rx.recv() {
                        Ok(c) if Arc::strong_count(&c) == 1 => free.push(c),
                        // The other hasher still has it and will hand it back too.
                        Ok(_) => {}
                        Err(_) => return Err(std::io::Error::other("a hashing thread died")),
                    }
                };
                // Free chunks are no longer shared, so this never copies.
                let buf = Arc::make_mut(&mut chunk);
                buf.resize(HASH_CHUNK, 0);
                let mut filled = 0;
                while filled < HASH_CHUNK {
                    match std::io::Read::read(&mut file, &mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if filled == 0 {
                    return Ok(());
                }
                buf.truncate(filled);
                // A send fails only if a hasher died: its join reports it.
                if md5_tx.send(chunk.clone()).is_err() || sha_tx.send(chunk).is_err() {
                    return Err(std::io::Error::other("a hashing thread died"));
                }
            }
        })();
        drop((md5_tx, sha_tx));
        let died = |_| std::io::Error::other("a hashing thread panicked");
        let (md5, sha) = (md5.join().map_err(died), sha.join().map_err(died));
        read.map_err(err)?;
        Ok((md5.map_err(err)?, sha.map_err(err)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys() {
        let r = parse_revision_key("my_site.2026112643200Ab.tar.gz", 7).unwrap();
        assert_eq!(r.name.to_string(), "my_site.2026112643200Ab");
        assert_eq!(r.ext, "tar.gz");
        assert!(parse_revision_key("my_site.rev", 1).is_none());
        assert!(parse_revision_key("my_site.previous", 1).is_none());
        assert!(parse_revision_key("my site.1.tgz", 1).is_none());
        assert!(parse_revision_key("a.b.", 1).is_none());
    }

    #[test]
    fn file_digests_match_one_pass_digests() {
        let dir = tempfile::tempdir().unwrap();
        // Empty, smaller than a chunk, and several chunks plus a bit: every
        // buffer is reused several times.
        for len in [0, 1000, HASH_CHUNK * (HASH_BUFFERS * 3) + 12345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let (md5, sha) = digest_file_blocking(&path).unwrap();
            assert_eq!(
                md5,
                <[u8; 16]>::from(Md5::digest(&data)),
                "md5 of {len} bytes"
            );
            assert_eq!(
                sha,
                <[u8; 32]>::from(Sha256::digest(&data)),
                "sha of {len} bytes"
            );
        }
        assert!(matches!(
            digest_file_blocking(dir.path()),
            Err(BucketError::NotAFile { .. })
        ));
    }
}
