//! ftl's key layout on a store: revision objects, the blessed and previous
//! pointers, and what ftl 0.2.x left in old buckets.
//!
//! | key | content |
//! | --- | --- |
//! | `<package>.<id>.<ext>` | a spooled file |
//! | `<package>.current` | the blessed revision name (what ftl 0.2.x reads first and writes) |
//! | `<package>.rev` | the same name, for ftl 0.3 nodes older than the `.current` rule |
//! | `<package>.previous` | the revision blessed before it |
//! | `<package>.changed` | rewritten after every change to the package (spool, bless, purge), so an idle node asks one cheap conditional GET instead of listing |
//! | `<package>.sig-<id>` | the signed manifest of revision `<id>` (see `signing`) |
//! | `<package>.bless` | the signed manifest of the current bless |
//! | `<package>.!bless-<time>-<random>` | one per bless and jump-back, never rewritten: the history `ftl log --master` prints (see `history.rs`) |
//! | `!report!<package>!<node>!…` | a node's report (`FTL_REPORT=1`), for `ftl fleet` (see `report.rs`) |
//!
//! The signature and history keys have no `.` after `<package>.` and do not
//! start with `<package>.<id>`: ftl 0.2.6 (and ftl's own listing) never takes
//! them for revisions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::SystemTime;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::digest::{Expected, hex, parse_hex32};
use crate::names::{NameError, PackageName, RevisionId, RevisionName, split_file_name};
use crate::signing::{BlessManifest, SigningKey};
use crate::store::{Expect, Fresh, Object, Progress, Store, StoreError, Text};

mod history;
mod report;
mod signed;
pub use history::Bless;
pub use report::{Failure as ReportFailure, Report};

/// User metadata key holding the SHA-256 of the whole object, in hex.
pub const SHA256_META: &str = "ftl-sha256";
/// A delta-ready object's index: `<offset>+<length>` in the object.
pub const DELTA_INDEX_META: &str = "ftl-delta-index";
/// The SHA-256 of those bytes, in hex.
pub const DELTA_SHA256_META: &str = "ftl-delta-sha256";

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
    #[error(
        "{0} is the bucket's previous revision, where `ftl jump-back --master` returns to; \
         bless another one first, or purge it anyway with --force"
    )]
    Previous(RevisionName),
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
    #[error(
        "{key}: its {SHA256_META} metadata {value:?} is not a SHA-256 (64 hex digits); \
         refusing to install it unverified"
    )]
    BadDigest { key: String, value: String },
    #[error("{0}")]
    Signing(String),
    #[error(transparent)]
    Delta(#[from] crate::delta::DeltaError),
    #[error("{revision}: {why}")]
    Unsigned { revision: RevisionName, why: String },
    #[error(
        "{revision}: the object's SHA-256 is {found}, not {wanted} as its {SHA256_META} \
         metadata says: refusing to sign it"
    )]
    SignMismatch {
        revision: RevisionName,
        found: String,
        wanted: String,
    },
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
    /// The object's ETag as listed (empty if unknown): a revision that failed
    /// is tried again at once when it changes.
    pub etag: String,
    /// When the object was written (spooled), as listed.
    pub modified: Option<SystemTime>,
    /// Its signature object (`<package>.sig-<id>`), as listed.
    pub signature: Option<Listed>,
}

/// Where a delta-ready object keeps its index, from its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaSource {
    pub offset: u64,
    pub length: u64,
    pub sha256: [u8; 32],
    /// The object's size.
    pub size: u64,
}

/// `ftl-delta-index` and `ftl-delta-sha256` as written by spool; `None`
/// when either is missing or malformed (then the object is downloaded
/// whole, and checked as a whole).
fn delta_source(meta: &crate::store::ObjectMeta) -> Option<DeltaSource> {
    let (offset, length) = meta.metadata.get(DELTA_INDEX_META)?.split_once('+')?;
    Some(DeltaSource {
        offset: offset.parse().ok()?,
        length: length.parse().ok()?,
        sha256: parse_hex32(meta.metadata.get(DELTA_SHA256_META)?)?,
        size: meta.size,
    })
}

/// A small object as the listing showed it: read only when needed, and
/// refused unread when too large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// The pointers of a package: what is blessed and what was before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointers {
    pub blessed: Option<RevisionName>,
    pub previous: Option<RevisionName>,
}

/// What the bucket has of a package: its revisions (oldest first) and its
/// pointers, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteState {
    pub revisions: Vec<RemoteRevision>,
    pub pointers: Pointers,
    /// The signed bless (`<package>.bless`), as listed.
    pub bless: Option<Listed>,
}

pub struct Bucket {
    store: Box<dyn Store>,
    /// Who blesses, for the history (`$USER@host`).
    operator: String,
}

fn rev_key(p: &PackageName) -> String {
    format!("{p}.rev")
}
fn previous_key(p: &PackageName) -> String {
    format!("{p}.previous")
}
fn current_key(p: &PackageName) -> String {
    format!("{p}.current")
}

fn changed_key(p: &PackageName) -> String {
    format!("{p}.changed")
}

/// The signature object of a revision: no `.` after the package's.
pub fn signature_key(r: &RevisionName) -> String {
    format!("{}.sig-{}", r.package, r.id)
}

pub fn bless_key(p: &PackageName) -> String {
    format!("{p}.bless")
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
        etag: String::new(),
        signature: None,
        modified: None,
    })
}

/// A pointer's revision; a pointer that names another package's revision
/// counts as absent (the one place that rule is applied).
fn parse_pointer(package: &PackageName, key: &str, t: Option<Text>) -> Option<RevisionName> {
    let t = t?;
    match t.text.trim().parse::<RevisionName>() {
        Ok(r) => Some(r).filter(|r| r.package == *package),
        Err(_) => {
            tracing::warn!("ignoring {key}: {:?} is not a revision name", t.text.trim());
            None
        }
    }
}

/// The pointer objects as read, with their versions, for conditional writes.
struct Seen {
    current: Option<Text>,
    rev: Option<Text>,
    previous: Option<Text>,
}

/// Re-reads of the pointers before a write while another blesser may be
/// between its writes, and the pause between two.
const SETTLE_TRIES: u32 = 10;
const SETTLE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// HEAD requests in flight at once for [`Bucket::sha256s`].
const HEADS_AT_ONCE: usize = 16;

/// Packages whose bucket state is read at once (by [`Bucket::states`], and by a
/// sync's plan): each read is one to four small requests, so that up to this
/// many packages cost the round trips of one, and a run against a bucket of
/// thousands of packages does not open thousands of connections.
pub const PACKAGES_AT_ONCE: usize = 64;

/// Attempts at writing the change marker, and the pause before the second
/// (multiplied by 4 for each further one).
const TOUCH_ATTEMPTS: u32 = 2;
const TOUCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl Seen {
    fn versions(&self) -> [Option<&str>; 3] {
        [&self.current, &self.rev, &self.previous].map(|t| t.as_ref().map(|t| t.version.as_str()))
    }

    /// Both blessed pointers hold exactly `name` (no newline, which 0.2.x
    /// would take as part of the id).
    fn both_hold(&self, name: &RevisionName) -> bool {
        let holds = |t: &Option<Text>| t.as_ref().is_some_and(|t| t.text == name.to_string());
        holds(&self.current) && holds(&self.rev)
    }
}

/// The blessed revision from `.current` and `.rev`. ftl 0.2.x writes and reads
/// `.current` (falling back to `.rev` when it is empty); ftl 0.3 wrote `.rev`
/// only until it wrote both. When they disagree, the one written last wins
/// (on equal times `.current`, as 0.2.x reads it), with a warning naming
/// both. An empty `.current`, which 0.2.x leaves after reading a package that
/// had no pointer, is no pointer.
fn blessed_of(
    package: &PackageName,
    current: Option<&Text>,
    rev: Option<&Text>,
) -> (Option<RevisionName>, Option<String>) {
    let current = current.filter(|t| !t.text.trim().is_empty());
    let (ck, rk) = (current_key(package), rev_key(package));
    let from_current = current.and_then(|t| parse_pointer(package, &ck, Some(t.clone())));
    let from_rev = rev.and_then(|t| parse_pointer(package, &rk, Some(t.clone())));
    match (from_current, from_rev) {
        (Some(c), Some(r)) if c != r => {
            let modified = |t: Option<&Text>| t.and_then(|t| t.modified);
            let rev_newer = matches!(
                (modified(rev), modified(current)),
                (Some(r), Some(c)) if r > c
            );
            let (winner, key) = if rev_newer {
                (r.clone(), &rk)
            } else {
                (c.clone(), &ck)
            };
            let warning = format!(
                "{ck} names {c} but {rk} names {r}: following {key}, written last \
                 (bless again with ftl 0.3 to make them agree)"
            );
            (Some(winner), Some(warning))
        }
        (c, r) => (c.or(r), None),
    }
}

impl Bucket {
    pub fn new(store: Box<dyn Store>) -> Self {
        Self {
            store,
            operator: String::from("unknown"),
        }
    }

    /// Who blesses through this handle, as the history records it.
    pub fn with_operator(self, operator: String) -> Self {
        Self { operator, ..self }
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
        Ok(self.listing(package).await?.0)
    }

    /// The package's revisions (oldest first, each with its signature
    /// object if any) and its signed bless, from one listing.
    async fn listing(
        &self,
        package: &PackageName,
    ) -> Result<(Vec<RemoteRevision>, Option<Listed>)> {
        let listing = self.store.list(&format!("{package}.")).await?;
        let mut by_id: BTreeMap<RevisionId, RemoteRevision> = BTreeMap::new();
        let mut signatures: HashMap<RevisionId, Listed> = HashMap::new();
        let mut bless = None;
        let sig_prefix = format!("{package}.sig-");
        let listed = |o: &crate::store::ObjectInfo| Listed {
            key: o.key.clone(),
            size: o.size,
            etag: o.etag.clone(),
        };
        for o in listing {
            // `<package>.sig-<id>` has no further `.`; a revision whose id
            // starts with `sig-` has one (its extension).
            if let Some(id) = o.key.strip_prefix(&sig_prefix)
                && let Ok(id) = id.parse::<RevisionId>()
            {
                signatures.insert(id, listed(&o));
                continue;
            }
            if o.key == bless_key(package) {
                bless = Some(listed(&o));
                continue;
            }
            if let Some(mut r) = parse_revision_key(&o.key, o.size)
                && r.name.package == *package
            {
                r.etag = o.etag;
                r.modified = o.modified;
                by_id.entry(r.name.id.clone()).or_insert(r);
            }
        }
        for (id, r) in &mut by_id {
            r.signature = signatures.remove(id);
        }
        Ok((by_id.into_values().collect(), bless))
    }

    /// The pointers, and their versions for conditional writes. `for_update`
    /// reads `.previous` strictly before `.current` and `.rev`: two reads in
    /// parallel may be answered far apart, and a `.previous` read after another
    /// blesser's writes paired with a pointer read before them would let a
    /// stale `.previous` pass its condition.
    async fn read_pointers(
        &self,
        package: &PackageName,
        for_update: bool,
    ) -> Result<(Seen, Pointers)> {
        let mut seen = self.read_seen(package, for_update).await?;
        let mut blessed = blessed_of(package, seen.current.as_ref(), seen.rev.as_ref());
        // Before a write, `.current` and `.rev` disagreeing may be another
        // blesser between its two writes: its half-made state must not become
        // our `.previous`. Read again until nothing moves (a bless takes
        // milliseconds); a disagreement that stays is a real one (ftl 0.2.x).
        let mut tries = 0;
        while for_update && blessed.1.is_some() && tries < SETTLE_TRIES {
            tokio::time::sleep(SETTLE_PAUSE).await;
            let again = self.read_seen(package, true).await?;
            let moved = again.versions() != seen.versions();
            seen = again;
            blessed = blessed_of(package, seen.current.as_ref(), seen.rev.as_ref());
            if !moved {
                break;
            }
            tries += 1;
        }
        if let Some(w) = &blessed.1 {
            tracing::warn!("{w}");
        }
        let previous = parse_pointer(package, &previous_key(package), seen.previous.clone());
        Ok((
            seen,
            Pointers {
                blessed: blessed.0,
                previous,
            },
        ))
    }

    /// The three pointer objects, `.previous` first for an update (see
    /// [`Bucket::read_pointers`]).
    async fn read_seen(&self, package: &PackageName, for_update: bool) -> Result<Seen> {
        let (ck, rk, pk) = (
            current_key(package),
            rev_key(package),
            previous_key(package),
        );
        let (current, rev, previous) = if for_update {
            let previous = self.store.get_text(&pk).await?;
            let (current, rev) =
                futures::try_join!(self.store.get_text(&ck), self.store.get_text(&rk))?;
            (current, rev, previous)
        } else {
            futures::try_join!(
                self.store.get_text(&ck),
                self.store.get_text(&rk),
                self.store.get_text(&pk)
            )?
        };
        Ok(Seen {
            current,
            rev,
            previous,
        })
    }

    pub async fn pointers(&self, package: &PackageName) -> Result<Pointers> {
        Ok(self.read_pointers(package, false).await?.1)
    }

    /// [`Bucket::state`] of several packages, up to [`PACKAGES_AT_ONCE`] at
    /// once, in their order.
    pub async fn states(&self, packages: &[PackageName]) -> Result<Vec<RemoteState>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(packages)
            .map(|p| self.state(p))
            .buffered(PACKAGES_AT_ONCE)
            .try_collect()
            .await
    }

    /// The package's revisions and pointers, read concurrently.
    pub async fn state(&self, package: &PackageName) -> Result<RemoteState> {
        let ((revisions, bless), pointers) =
            futures::try_join!(self.listing(package), self.pointers(package))?;
        Ok(RemoteState {
            revisions,
            pointers,
            bless,
        })
    }

    pub async fn find(&self, rev: &RevisionName) -> Result<RemoteRevision> {
        self.revisions(&rev.package)
            .await?
            .into_iter()
            .find(|r| r.name == *rev)
            .ok_or_else(|| BucketError::NoSuchRevision(rev.clone()))
    }

    /// Point `.current` and `.rev` at `target`, `.previous` at what was blessed.
    /// `.previous` is written first so a reader between the writes sees a
    /// harmless pair; then `.current`, which ftl 0.2.x and this version read
    /// first. Each holds the name alone, as 0.2.x uses a pointer's bytes as
    /// they are.
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
            self.put_pointer(
                &previous_key(package),
                &prev.to_string(),
                expect(seen.previous),
            )
            .await
            .map_err(conflict)?;
        }
        let name = target.to_string();
        for (key, seen) in [
            (current_key(package), seen.current),
            (rev_key(package), seen.rev),
        ] {
            match self.put_pointer(&key, &name, expect(seen)).await {
                Ok(()) => {}
                // Past `.previous`, a conflict may be another blesser that
                // read our first writes: if the pointers now show our bless
                // (blessed, or the previous of a later one), it happened.
                Err(e @ (StoreError::Conflict { .. } | StoreError::AlreadyExists { .. })) => {
                    let now = self.pointers(package).await?;
                    if [now.blessed, now.previous].contains(&Some(target.clone())) {
                        return Ok(());
                    }
                    return Err(conflict(e).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A conditional pointer write whose failed precondition is checked: when
    /// the SDK retries a write whose answer was lost, the retry meets our own
    /// write and gets a 412. If the pointer now holds exactly `text`, the
    /// write happened.
    async fn put_pointer(&self, key: &str, text: &str, expect: Expect) -> Result<(), StoreError> {
        match self.store.put_text(key, text, expect).await {
            Err(e @ (StoreError::Conflict { .. } | StoreError::AlreadyExists { .. })) => {
                match self.store.get_text(key).await {
                    Ok(Some(now)) if now.text == text => {
                        tracing::debug!("{key}: precondition failed, but it holds our write");
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    /// Has the package changed since the marker version `seen`? One request.
    pub async fn changed(&self, package: &PackageName, seen: Option<&str>) -> Result<Fresh> {
        Ok(self
            .store
            .get_text_if_changed(&changed_key(package), seen)
            .await?)
    }

    /// Record that the package changed: nodes that saw the old marker look
    /// again. Tried [`TOUCH_ATTEMPTS`] times (on top of the SDK's retries),
    /// then reported as a warning: what it records has happened, and nodes
    /// still see it at their next full check (`--full-every`).
    async fn touch(&self, package: &PackageName, what: &str) {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let text = format!("{now} {} {what}\n", std::process::id());
        let key = changed_key(package);
        let mut pause = TOUCH_PAUSE;
        for attempt in 1..=TOUCH_ATTEMPTS {
            match self.store.put_text(&key, &text, Expect::Any).await {
                Ok(()) => return,
                Err(e) if attempt == TOUCH_ATTEMPTS => {
                    tracing::warn!(
                        "{what} is done, but the change marker could not be written ({e}): \
                         nodes see it at their next full check (--full-every)"
                    );
                }
                Err(e) => {
                    tracing::debug!("change marker, attempt {attempt}: {e}");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
        }
    }

    /// Bless a revision, signing the bless with `key` if given. Returns
    /// false when it already was blessed (signed again all the same, with a
    /// higher sequence: a refresh).
    pub async fn bless(
        &self,
        rev: &RevisionName,
        key: Option<&std::sync::Arc<SigningKey>>,
    ) -> Result<(bool, Option<BlessManifest>)> {
        let package = &rev.package;
        let ((seen, ptrs), _) =
            futures::try_join!(self.read_pointers(package, true), self.find(rev))?;
        let again = ptrs.blessed.as_ref() == Some(rev);
        if again {
            // Re-blessing still writes the marker: the way to give a bucket of
            // ftl 0.2.x one, so its nodes stop listing on every sync; and it
            // makes `.current` and `.rev` agree if they do not.
            if !seen.both_hold(rev) {
                self.set_blessed(package, rev, None, seen).await?;
            }
        } else {
            self.set_blessed(package, rev, ptrs.blessed.as_ref(), seen)
                .await?;
        }
        let previous = if again { &ptrs.previous } else { &ptrs.blessed };
        let signed = self.sign_bless(rev, previous.as_ref(), key).await?;
        if !again {
            let signer = key.filter(|_| signed.is_some()).map(|k| k.fingerprint());
            self.record_bless("bless", rev, ptrs.blessed.as_ref(), signer)
                .await;
        }
        self.touch(package, &format!("bless {rev}")).await;
        Ok((!again, signed))
    }

    /// The signed bless written after the pointers (a node that verifies
    /// follows it alone), or the warning that there is none.
    async fn sign_bless(
        &self,
        rev: &RevisionName,
        previous: Option<&RevisionName>,
        key: Option<&std::sync::Arc<SigningKey>>,
    ) -> Result<Option<BlessManifest>> {
        match key {
            Some(key) => Ok(Some(self.write_bless(rev, previous, key).await?)),
            None => {
                self.warn_unsigned_bless(rev).await;
                Ok(None)
            }
        }
    }

    /// Swap blessed and previous; returns the newly blessed revision. With
    /// `key`, the swap is a new signed bless with a higher sequence, so
    /// that nodes that refuse a bless going backwards follow it.
    pub async fn jump_back(
        &self,
        package: &PackageName,
        key: Option<&std::sync::Arc<SigningKey>>,
    ) -> Result<RevisionName> {
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
        let signed = self.sign_bless(&previous, Some(&blessed), key).await?;
        let signer = key.filter(|_| signed.is_some()).map(|k| k.fingerprint());
        self.record_bless("jump-back", &previous, Some(&blessed), signer)
            .await;
        self.touch(package, &format!("bless {previous}")).await;
        Ok(previous)
    }

    /// The object a purge of `rev` would delete, after its checks: never the
    /// blessed revision, nor the previous one unless `force` (nodes would warn
    /// on every sync, and `jump-back --master` would fail). Changes nothing:
    /// `purge --dry-run` is this alone.
    pub async fn purgeable(&self, rev: &RevisionName, force: bool) -> Result<RemoteRevision> {
        let (ptrs, found) = futures::try_join!(self.pointers(&rev.package), self.find(rev))?;
        if ptrs.blessed.as_ref() == Some(rev) {
            return Err(BucketError::Blessed(rev.clone()));
        }
        if ptrs.previous.as_ref() == Some(rev) {
            if !force {
                return Err(BucketError::Previous(rev.clone()));
            }
            tracing::warn!(
                "{rev} is the bucket's previous revision: purging it (--force); \
                 `ftl jump-back --master {}` has nothing to return to until the next bless",
                rev.package
            );
        }
        Ok(found)
    }

    /// Delete a revision object, after [`Bucket::purgeable`]'s checks.
    pub async fn purge(&self, rev: &RevisionName, force: bool) -> Result<()> {
        let found = self.purgeable(rev, force).await?;
        self.store.delete(&found.key).await?;
        self.touch(&rev.package, &format!("purge {rev}")).await;
        Ok(())
    }

    /// Each revision's `ftl-sha256` metadata (`None` when it has none, as
    /// objects spooled by ftl 0.2.x): one HEAD each, a few at once.
    pub async fn sha256s(&self, revisions: &[RemoteRevision]) -> Result<Vec<Option<String>>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(revisions)
            .map(|r| async move {
                let meta = self.store.head(&r.key).await?;
                Ok::<_, BucketError>(meta.and_then(|m| m.metadata.get(SHA256_META).cloned()))
            })
            .buffered(HEADS_AT_ONCE)
            .try_collect()
            .await
    }

    /// Open a revision for download, with how to verify it.
    pub async fn open(&self, rev: &RemoteRevision) -> Result<(Object, Expected)> {
        let object = self.store.get(&rev.key).await?;
        let digest = match object.meta.metadata.get(SHA256_META) {
            // Present but malformed: refused, never taken as absent.
            Some(h) => Expected::Sha256(parse_hex32(h).ok_or_else(|| BucketError::BadDigest {
                key: rev.key.clone(),
                value: h.chars().take(80).collect(),
            })?),
            None => match rev.name.id.md5_tag() {
                Some(tag) => Expected::Md5Tag(tag.to_owned()),
                None => Expected::Nothing,
            },
        };
        Ok((object, digest))
    }

    /// Where `rev`'s index is, if it is delta-ready (one HEAD).
    pub async fn delta_source(&self, rev: &RemoteRevision) -> Result<Option<DeltaSource>> {
        let meta = self.store.head(&rev.key).await?;
        Ok(meta.as_ref().and_then(delta_source))
    }

    /// Where the index of an object [`Bucket::open`] gave is, if it is
    /// delta-ready (read from the GET's own metadata: no HEAD).
    pub fn delta_source_of(object: &Object) -> Option<DeltaSource> {
        delta_source(&object.meta)
    }

    /// Bytes `[from, to)` of `rev`'s object, of the version listed.
    pub async fn read_range(
        &self,
        rev: &RemoteRevision,
        from: u64,
        to: u64,
    ) -> Result<bytes::Bytes, StoreError> {
        let version = Some(rev.etag.as_str()).filter(|e| !e.is_empty());
        self.store.get_range(&rev.key, from, to, version).await
    }

    /// Upload a file as a new revision, and sign it with `key` if given.
    /// With `delta`, the archive is first rewritten as a delta-ready one
    /// (see `delta`), in the temporary directory, and that is uploaded.
    pub async fn spool(
        &self,
        path: &Path,
        progress: Option<Progress>,
        signing: Option<&std::sync::Arc<SigningKey>>,
        delta: bool,
    ) -> Result<RevisionName> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| NameError::FileName(path.display().to_string()))?;
        let (package, ext) = split_file_name(file_name)?;
        if !delta {
            return self
                .spool_as(path, &package, ext, None, progress, signing)
                .await;
        }
        let codec = crate::delta::Codec::for_ext(&ext)
            .ok_or_else(|| crate::delta::DeltaError::Unsupported(ext.clone()))?;
        let temp = std::env::temp_dir().join(format!(
            ".ftl-delta-{}-{:08x}.{ext}",
            std::process::id(),
            crate::splay::below(u64::from(u32::MAX))
        ));
        let (src, dest) = (path.to_owned(), temp.clone());
        let written = crate::task::blocking(
            move || crate::delta::write::write(&src, codec, &dest),
            |e| crate::delta::DeltaError::Write(std::io::Error::other(e)),
        )
        .await;
        let spooled = match written {
            Ok(w) => {
                self.spool_as(&temp, &package, ext, Some(w), progress, signing)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = std::fs::remove_file(&temp)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", temp.display());
        }
        spooled
    }

    async fn spool_as(
        &self,
        path: &Path,
        package: &PackageName,
        ext: String,
        delta: Option<crate::delta::write::Written>,
        progress: Option<Progress>,
        signing: Option<&std::sync::Arc<SigningKey>>,
    ) -> Result<RevisionName> {
        // A delta-ready file was hashed as it was written.
        let (md5, sha256) = match &delta {
            Some(d) => (d.md5, d.sha256),
            None => digest_file(path).await?,
        };
        let id = RevisionId::generate(SystemTime::now(), &md5);
        let name = RevisionName::new(package.clone(), id);
        let key = format!("{name}.{ext}");
        let mut meta = HashMap::new();
        meta.insert(SHA256_META.to_owned(), hex(&sha256));
        if let Some(d) = &delta {
            meta.insert(
                DELTA_INDEX_META.to_owned(),
                format!("{}+{}", d.index_offset, d.index_length),
            );
            meta.insert(DELTA_SHA256_META.to_owned(), hex(&d.index_sha256));
        }
        self.store.put_file_new(&key, path, meta, progress).await?;
        if let Some(signer) = signing {
            let size = self.store.head(&key).await?.map_or(0, |m| m.size);
            let rev = RemoteRevision {
                name: name.clone(),
                key: key.clone(),
                ext,
                size,
                etag: String::new(),
                modified: None,
                signature: None,
            };
            let index = delta.map(|d| d.index_sha256);
            if let Err(e) = self
                .write_revision_signature(&rev, sha256, index, signer)
                .await
            {
                self.touch(&name.package, &format!("spool {name}")).await;
                return Err(BucketError::Unsigned {
                    revision: name.clone(),
                    why: format!("spooled, but not signed ({e}); sign it with `ftl sign {name}`"),
                });
            }
        }
        self.touch(&name.package, &format!("spool {name}")).await;
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
