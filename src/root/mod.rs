//! A node's `$FTL_ROOT`: packages, their revisions, the `current` and
//! `previous` links, the lock, and the hidden directories that make every
//! change atomic.
//!
//! ```text
//! $FTL_ROOT/.lock
//! $FTL_ROOT/<package>/current  -> revs/<id>
//! $FTL_ROOT/<package>/previous -> revs/<id>
//! $FTL_ROOT/<package>/revs/<id>/...
//! ```
//!
//! Crash-safety (kill -9 or power loss at any instant):
//! - a revision appears under `revs/` only by renaming a complete hidden
//!   staging directory (`revs/.staging-*`) into place;
//! - it disappears by first being renamed to a hidden `revs/.trash-*`, and only
//!   then deleted, so no half-deleted revision is ever visible;
//! - `current`/`previous` are replaced by renaming a new symlink over the old
//!   one (`.current.tmp-*`), so they never go missing or dangle;
//! - a revision is installed with a marker `revs/.unconfirmed-<id>` beside it,
//!   removed once its post-sync hook succeeded: a marked revision is not listed,
//!   and the next run deletes it, so a crash during post-sync makes the hook
//!   run again rather than leave a revision that never passed it.
//!
//! Hidden leftovers of interrupted runs are removed by
//! [`PackageDir::clean_leftovers`], called with the lock held.
//!
//! Everything here is blocking except [`Root::lock`]: callers run the slow
//! methods ([`sync_file_systems`], [`PackageDir::commit_install`],
//! [`PackageDir::remove_revision`], [`PackageDir::clean_leftovers`]) in
//! `tokio::task::spawn_blocking`; both [`Root`] and [`PackageDir`] are cheap
//! to clone for that.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::names::{PackageName, RevisionId, RevisionName};

mod durable;
mod failed;
mod files;
mod installed;
mod lock;
mod owner;
mod package;
mod reported;
mod seen;
mod signed;
#[cfg(test)]
mod tests;
mod wanted;

pub use durable::EarlyFlush;
pub use failed::Failure;
pub use files::FileRecord;
pub use installed::Installed;
pub use lock::RootLock;
pub use owner::{Owner, OwnerError};
pub use package::{Cleaned, LocalState};
pub use reported::Reported;
pub use seen::Seen;
pub use signed::AcceptedBless;

use durable::sync_file_systems;
use package::PackageDir;

const REVS: &str = "revs";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";
const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";
const UNCONFIRMED_PREFIX: &str = ".unconfirmed-";
/// `revs/.unverified-<id>`: the revision was installed with nothing to check
/// its bytes against (see [`Package::set_unverified`]).
const UNVERIFIED_PREFIX: &str = ".unverified-";
/// The record of the last complete sync, see [`Seen`].
const SEEN: &str = ".ftl-seen";
/// The record of revisions that failed here, see [`Failure`].
const FAILED: &str = ".ftl-failed";
/// `revs/.signature-<id>`: the verified signature document of a revision.
const SIGNATURE_PREFIX: &str = ".signature-";
/// The highest bless sequence accepted, see [`AcceptedBless`].
const BLESS: &str = ".ftl-bless";
/// The oldest revision the bucket wanted here at the last sync that read it.
const WANTED: &str = ".ftl-wanted";
/// The last report written to the bucket, see [`Reported`].
const REPORTED: &str = ".ftl-reported";
/// The record of the last install, see [`Installed`].
const INSTALLED: &str = ".ftl-installed";
/// The identity of the last install's files, see [`FileRecord`].
const FILES: &str = ".ftl-files";
/// Temporary links are `.<link>.tmp-<pid>-<n>`.
const TMP_LINK_INFIX: &str = ".tmp-";

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(
        "package {package} has no directory under {root} (create it to deploy the package here)"
    )]
    NoPackage { package: PackageName, root: PathBuf },
    #[error("internal error: a blocking task failed: {0}")]
    Join(String),
    #[error("FTL_ROOT {0} does not exist")]
    Missing(PathBuf),
    #[error("FTL_ROOT {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the lock on {path} is held by {holder}; gave up after {waited:.1?}")]
    Locked {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    #[error("{0} is not a symlink; ftl manages it, move it out of the way")]
    NotALink(PathBuf),
    #[error("{link} points to {target}, which is not a revision")]
    BadLink { link: PathBuf, target: PathBuf },
    #[error("revision {revision} is not installed ({path} is not a directory)")]
    NotInstalled {
        revision: RevisionName,
        path: PathBuf,
    },
    #[error("revision {revision} is already installed at {path}")]
    AlreadyInstalled {
        revision: RevisionName,
        path: PathBuf,
    },
    #[error("refusing to delete {0}: not a staging directory of ftl")]
    NotStaging(PathBuf),
    #[error("refusing to remove revision {revision}: it is the {role} revision")]
    InUse {
        revision: RevisionName,
        role: &'static str,
    },
}

/// `map_err` helper: an I/O error on `path` while doing `action`.
fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootError + 'a {
    move |source| RootError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// A name no other process (pid) and no earlier call of this process (counter)
/// uses, so concurrent or stale temporary entries never collide.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n}", std::process::id())
}

/// Tries `make` with fresh unique names until one does not exist yet. A
/// collision can only come from a dead process with our recycled pid.
fn with_unique_name<T>(
    action: &'static str,
    dir: &Path,
    prefix: &str,
    mut make: impl FnMut(&Path) -> io::Result<T>,
) -> Result<(PathBuf, T), RootError> {
    let mut last = None;
    for _ in 0..100 {
        let path = dir.join(unique(prefix));
        match make(&path) {
            Ok(v) => return Ok((path, v)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(e) => return Err(io_err(action, &path)(e)),
        }
    }
    let (path, e) = last.unwrap_or_else(|| {
        (
            dir.to_owned(),
            io::Error::from(io::ErrorKind::AlreadyExists),
        )
    });
    Err(io_err(action, &path)(e))
}

/// Runs blocking file-system work (symlinks, renames, deletes) off the async
/// threads: every async method of [`Root`] and [`Package`] goes through here.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RootError> + Send + 'static,
) -> Result<T, RootError> {
    crate::task::blocking(f, RootError::Join).await
}

/// The deployment directory of a node.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// The root, which must exist and be a directory (a symlink to one counts).
    pub fn open(path: PathBuf) -> Result<Self, RootError> {
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Self { path }),
            Ok(_) => Err(RootError::NotADirectory(path)),
            Err(e) if not_found(&e) => Err(RootError::Missing(path)),
            Err(e) => Err(io_err("cannot access FTL_ROOT", &path)(e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Package directories, sorted. A symlink to a directory counts (a package
    /// may live on another disk); dot-entries (ftl's own) and names that are
    /// not valid package names are skipped.
    pub async fn packages(&self) -> Result<Vec<PackageName>, RootError> {
        let root = self.clone();
        blocking(move || root.read_packages()).await
    }

    /// The package's directory, which the operator must have created.
    pub fn package(&self, name: &PackageName) -> Result<Package, RootError> {
        let dir = self.dir(name);
        if !dir.exists() {
            return Err(RootError::NoPackage {
                package: name.clone(),
                root: self.path.clone(),
            });
        }
        Ok(Package { dir })
    }

    /// Removes the hidden leftovers of interrupted runs in every package; call
    /// it with the lock held. What could not be removed is returned, per
    /// package, for the caller to report: it never stops a sync.
    pub async fn clean_leftovers(&self) -> Result<Cleaned, RootError> {
        let root = self.clone();
        blocking(move || Ok(root.clean_all_leftovers())).await
    }

    /// Makes everything written under `paths` durable: one `syncfs` per file
    /// system, see [`durable`].
    pub async fn flush(&self, paths: Vec<PathBuf>) -> Result<(), RootError> {
        blocking(move || sync_file_systems(&paths)).await
    }

    /// Starts writing back what is being unpacked under the root, see [`EarlyFlush`].
    pub fn early_flush(&self) -> EarlyFlush {
        EarlyFlush::start(&self.path)
    }

    fn dir(&self, name: &PackageName) -> PackageDir {
        PackageDir::new(name.clone(), self.path.join(name.as_str()))
    }

    fn read_packages(&self) -> Result<Vec<PackageName>, RootError> {
        let entries =
            fs::read_dir(&self.path).map_err(io_err("cannot read directory", &self.path))?;
        let mut packages = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read directory", &self.path))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let Ok(package) = name.parse::<PackageName>() else {
                tracing::debug!(
                    "ignoring {}: not a valid package name",
                    entry.path().display()
                );
                continue;
            };
            // metadata follows the symlink; a dangling one is not a package.
            if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                packages.push(package);
            }
        }
        packages.sort();
        Ok(packages)
    }

    fn clean_all_leftovers(&self) -> Cleaned {
        let mut all = Cleaned::default();
        let names = match self.read_packages() {
            Ok(names) => names,
            Err(e) => {
                all.stuck.push(e);
                return all;
            }
        };
        for name in names {
            let mut one = self.dir(&name).clean_leftovers();
            all.removed += one.removed;
            all.stuck.append(&mut one.stuck);
        }
        all
    }
}

/// A package on this node, as the rest of ftl sees it: each method is one
/// step, run on a blocking task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Package {
    dir: PackageDir,
}

impl Package {
    /// Runs `f` on the package directory, off the async threads.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PackageDir) -> Result<T, RootError> + Send + 'static,
    ) -> Result<T, RootError> {
        let dir = self.dir.clone();
        blocking(move || f(&dir)).await
    }

    pub fn revision_path(&self, id: &RevisionId) -> PathBuf {
        self.dir.revision_path(id)
    }

    /// Its revisions and links, read together.
    pub async fn state(&self) -> Result<LocalState, RootError> {
        self.run(PackageDir::state).await
    }

    /// Its state and the record of its last complete sync (see [`Seen`]), in
    /// one hand-over to a blocking thread: the idle sync of many packages
    /// does this for each.
    pub async fn state_and_seen(&self) -> Result<(LocalState, Option<Seen>), RootError> {
        self.run(|d| Ok((d.state()?, d.seen()))).await
    }

    /// Leftovers of interrupted runs still there, see [`PackageDir::leftovers`].
    pub async fn leftovers(&self) -> Result<Vec<PathBuf>, RootError> {
        self.run(PackageDir::leftovers).await
    }

    /// Records whether revision `id` was installed without a digest to
    /// check it against (`ftl status` shows it).
    pub async fn set_unverified(&self, id: &RevisionId, unverified: bool) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| d.set_unverified(&id, unverified)).await
    }

    /// Installed revisions that were installed unverified.
    pub async fn unverified(&self) -> Result<Vec<RevisionId>, RootError> {
        self.run(PackageDir::unverified).await
    }

    /// Revisions that failed here, see [`Failure`].
    pub async fn failures(&self) -> Vec<Failure> {
        self.run(|d| Ok(d.failures())).await.unwrap_or_default()
    }

    pub async fn set_failures(&self, failures: Vec<Failure>) -> Result<(), RootError> {
        self.run(move |d| d.set_failures(&failures)).await
    }

    /// Records the verified signature document of revision `id` (`None`
    /// forgets it).
    pub async fn set_signature(
        &self,
        id: &RevisionId,
        doc: Option<String>,
    ) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| d.set_signature(&id, doc.as_deref()))
            .await
    }

    /// The verified signature document recorded for revision `id`.
    pub async fn signature(&self, id: &RevisionId) -> Option<String> {
        let id = id.clone();
        self.run(move |d| Ok(d.signature(&id))).await.ok().flatten()
    }

    /// The highest bless accepted on this node, see [`AcceptedBless`].
    pub async fn accepted_bless(&self) -> Result<Option<AcceptedBless>, RootError> {
        self.run(PackageDir::accepted_bless).await
    }

    pub async fn set_accepted_bless(&self, accepted: AcceptedBless) -> Result<(), RootError> {
        self.run(move |d| d.set_accepted_bless(&accepted)).await
    }

    /// See [`PackageDir::wanted_from`].
    pub async fn wanted_from(&self) -> Option<RevisionId> {
        self.run(|d| Ok(d.wanted_from())).await.unwrap_or_default()
    }

    pub async fn set_wanted_from(&self, id: &RevisionId) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| d.set_wanted_from(&id)).await
    }

    /// See [`PackageDir::reported`].
    pub async fn reported(&self) -> Option<Reported> {
        self.run(|d| Ok(d.reported())).await.unwrap_or_default()
    }

    pub async fn set_reported(&self, r: Reported) -> Result<(), RootError> {
        self.run(move |d| d.set_reported(&r)).await
    }

    /// The record of the last install (see [`Installed`]).
    pub async fn installed(&self) -> Option<Installed> {
        self.run(|d| Ok(d.installed())).await.unwrap_or_default()
    }

    pub async fn set_installed(&self, installed: Installed) -> Result<(), RootError> {
        self.run(move |d| d.set_installed(&installed)).await
    }

    /// What the record of the installed files' identity proves of revision
    /// `id`'s files (see [`FileRecord`]): path → identity, SHA-256.
    pub async fn files_of(
        &self,
        id: &RevisionId,
    ) -> std::collections::HashMap<String, (crate::fileid::FileId, [u8; 32])> {
        let id = id.clone();
        self.run(move |d| Ok(d.files_of(&id)))
            .await
            .unwrap_or_default()
    }

    pub async fn set_files(&self, record: FileRecord) -> Result<(), RootError> {
        self.run(move |d| d.set_files(&record)).await
    }

    /// See [`PackageDir::identify`].
    pub async fn identify(
        &self,
        staging: &Path,
        id: &RevisionId,
        digests: std::sync::Arc<std::collections::HashMap<String, (u64, [u8; 32])>>,
    ) -> Result<FileRecord, RootError> {
        let (staging, id) = (staging.to_owned(), id.clone());
        self.run(move |d| d.identify(&staging, &id, &digests)).await
    }

    pub async fn set_seen(&self, seen: Seen) -> Result<(), RootError> {
        self.run(move |d| d.set_seen(&seen)).await
    }

    /// A jump: `previous` to `old`, then `current` to `new`, see [`PackageDir::switch`].
    pub async fn switch(
        &self,
        new: &RevisionId,
        old: Option<&RevisionId>,
    ) -> Result<(), RootError> {
        let (new, old) = (new.clone(), old.cloned());
        self.run(move |d| d.switch(&new, old.as_ref())).await
    }

    /// Points `previous` at `id` (`None` removes the link).
    pub async fn set_previous(&self, id: Option<&RevisionId>) -> Result<(), RootError> {
        let id = id.cloned();
        self.run(move |d| d.set_previous(id.as_ref())).await
    }

    pub async fn remove_revision(&self, id: &RevisionId) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| d.remove_revision(&id)).await
    }

    /// Removes an installed revision that never passed its post-sync hook,
    /// and its unconfirmed marker.
    pub async fn uninstall(&self, id: &RevisionId) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| {
            d.remove_revision(&id)?;
            d.confirm(&id)
        })
        .await
    }

    /// A fresh hidden directory to unpack `id` into.
    pub async fn new_staging(&self, id: &RevisionId) -> Result<PathBuf, RootError> {
        let id = id.clone();
        self.run(move |d| d.new_staging(&id)).await
    }

    /// Gives a staged revision to `owner` (`FTL_OWNER`), before any hook runs.
    pub async fn give(&self, staging: &Path, owner: Owner) -> Result<(), RootError> {
        let staging = staging.to_owned();
        self.run(move |_| owner.apply(&staging)).await
    }

    /// See [`PackageDir::prepare_install`].
    pub async fn prepare_install(&self, id: &RevisionId) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| d.prepare_install(&id)).await
    }

    /// See [`PackageDir::commit_install`].
    pub async fn commit_install(&self, staging: &Path, id: &RevisionId) -> Result<(), RootError> {
        let (staging, id) = (staging.to_owned(), id.clone());
        self.run(move |d| d.commit_install(&staging, &id)).await
    }

    /// See [`PackageDir::confirm`].
    pub async fn confirm(&self, id: &RevisionId) -> Result<(), RootError> {
        let id = id.clone();
        self.run(move |d| d.confirm(&id)).await
    }

    /// Removes a staging directory that will not be installed, and the
    /// unconfirmed marker left for it, if any.
    pub async fn discard_staging(
        &self,
        staging: &Path,
        marker: Option<&RevisionId>,
    ) -> Result<(), RootError> {
        let (staging, marker) = (staging.to_owned(), marker.cloned());
        self.run(move |d| {
            d.discard_staging(&staging)?;
            match marker {
                Some(id) => d.confirm(&id),
                None => Ok(()),
            }
        })
        .await
    }
}
