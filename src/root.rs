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

use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::names::{PackageName, RevisionId, RevisionName};

const LOCK_FILE: &str = ".lock";
const REVS: &str = "revs";
const CURRENT: &str = "current";
const PREVIOUS: &str = "previous";
const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";
const UNCONFIRMED_PREFIX: &str = ".unconfirmed-";
/// Temporary links are `.<link>.tmp-<pid>-<n>`.
const TMP_LINK_INFIX: &str = ".tmp-";
/// How often a waiting command retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(200);
/// Bound on how much of the lock file is read for the "held by" message.
const HOLDER_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
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

/// Makes the entries of `dir` (renames, new links) survive a power loss.
fn sync_dir(dir: &Path) -> Result<(), RootError> {
    let f = File::open(dir).map_err(io_err("cannot open directory", dir))?;
    match f.sync_all() {
        // Some file systems cannot fsync a directory; nothing more to do there.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        r => r.map_err(io_err("cannot sync directory", dir)),
    }
}

/// Flushes everything written to the file systems holding `paths`: one
/// `syncfs` per file system (not per path), instead of an fsync per file of
/// large unpacked trees. Used by `sync` to make all the revisions it staged
/// durable at once, before renaming any of them into place.
pub fn sync_file_systems(paths: &[PathBuf]) -> Result<(), RootError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    for path in paths {
        let dev = fs::metadata(path)
            .map_err(io_err("cannot stat", path))?
            .dev();
        if !seen.contains(&dev) {
            seen.push(dev);
            sync_fs(path)?;
        }
    }
    Ok(())
}

/// Writes back to disk, in the background, what is being unpacked under `path`
/// while it is still being unpacked, so that the flush which must precede the
/// renames ([`sync_file_systems`]) finds little left and the disk works while
/// the CPUs decompress. Only a head start: durability still comes from that
/// final flush. Stops (and waits for its last round) when dropped.
pub struct EarlyFlush {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EarlyFlush {
    /// How often a round starts at most.
    const PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn start(path: &Path) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, path) = (stop.clone(), path.to_owned());
        let thread = std::thread::Builder::new()
            .name("ftl-flush".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    if let Err(e) = sync_fs(&path) {
                        tracing::debug!("early flush: {e}");
                        return;
                    }
                    if let Some(rest) = Self::PERIOD.checked_sub(started.elapsed()) {
                        std::thread::park_timeout(rest);
                    }
                }
            })
            .ok();
        Self { stop, thread }
    }
}

impl Drop for EarlyFlush {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Flushes everything written to the file system holding `path`: one call
/// instead of an fsync per file of a large unpacked tree.
fn sync_fs(path: &Path) -> Result<(), RootError> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).map_err(io_err("cannot open", path))?;
    // SAFETY: the descriptor is open for the whole call; syncfs only reads it.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io_err("cannot sync the file system of", path)(
            io::Error::last_os_error(),
        ))
    }
}

/// Deletes a file or a whole tree, never following symlinks. Directories
/// without write/search permission for us are fixed up and retried.
fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(_) => {
            make_dirs_writable(path)?;
            match fs::remove_dir_all(path) {
                Err(e) if not_found(&e) => Ok(()),
                r => r,
            }
        }
    }
}

/// chmod u+rwx every directory of a tree (read-only directories shipped in a
/// package cannot be emptied otherwise). Iterative: trees may be deep.
fn make_dirs_writable(top: &Path) -> io::Result<()> {
    let mut stack = vec![top.to_owned()];
    while let Some(dir) = stack.pop() {
        // symlink_metadata: a symlink is never followed, so chmod only ever
        // touches directories inside the tree.
        let meta = match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => m,
            Ok(_) => continue,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let mode = meta.permissions().mode();
        if mode & 0o700 != 0o700 {
            fs::set_permissions(&dir, Permissions::from_mode(mode | 0o700))?;
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

/// The id a `current`/`previous` link designates: the last component of its
/// target, whether relative (`revs/<id>`) or absolute as ftl 0.2.x wrote it
/// (`/var/opt/deploy/my_site/revs/<id>`).
fn id_of_target(target: &Path) -> Option<RevisionId> {
    target.file_name()?.to_str()?.parse().ok()
}

/// This process, as shown to whoever waits for the lock: `pid 1234 (ftl sync)`.
fn holder_description() -> String {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "ftl".to_owned());
    let mut command = program;
    for a in args {
        command.push(' ');
        command.push_str(&a.to_string_lossy());
    }
    format!("pid {} ({})", std::process::id(), one_line(&command))
}

/// Text from a file or argv made safe for a one-line message.
fn one_line(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    clean.trim().to_owned()
}

fn read_holder(file: &File) -> String {
    let mut buf = [0u8; HOLDER_MAX];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    let text = one_line(&String::from_utf8_lossy(&buf[..n]));
    if text.is_empty() {
        // Between taking the lock and writing into it, or an ftl that wrote nothing.
        "another process".to_owned()
    } else {
        text
    }
}

/// The deployment directory of a node.
#[derive(Debug, Clone)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    /// No I/O: see [`Root::check`].
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root exists and is a directory (a symlink to one counts).
    pub fn check(&self) -> Result<(), RootError> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(RootError::NotADirectory(self.path.clone())),
            Err(e) if not_found(&e) => Err(RootError::Missing(self.path.clone())),
            Err(e) => Err(io_err("cannot access FTL_ROOT", &self.path)(e)),
        }
    }

    /// Package directories, sorted. A symlink to a directory counts (a package
    /// may live on another disk); dot-entries (ftl's own) and names that are
    /// not valid package names are skipped.
    pub fn packages(&self) -> Result<Vec<PackageName>, RootError> {
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

    pub fn package(&self, name: &PackageName) -> PackageDir {
        PackageDir {
            name: name.clone(),
            path: self.path.join(name.as_str()),
        }
    }

    /// [`PackageDir::clean_leftovers`] for every package; call it with the
    /// lock held. Returns how many entries were removed in all.
    pub fn clean_leftovers(&self) -> Result<usize, RootError> {
        let mut removed = 0;
        for name in self.packages()? {
            removed += self.package(&name).clean_leftovers()?;
        }
        Ok(removed)
    }

    /// Takes the exclusive lock on `$FTL_ROOT/.lock`.
    ///
    /// It is an `flock`, so the kernel releases it when the process dies: no
    /// stale lock ever blocks. When it is busy, says once (warn) who holds it
    /// and retries until `wait` has elapsed, then fails with
    /// [`RootError::Locked`]. Never blocks the runtime: `try_lock` plus an
    /// async sleep. Locks are per open file, so a second call in the same
    /// process waits for the first guard too.
    pub async fn lock(&self, wait: Duration) -> Result<RootLock, RootError> {
        let path = self.path.join(LOCK_FILE);
        // Never truncated on open and never deleted: deleting a lock file lets
        // two processes lock two different files.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("cannot open the lock file", &path))?;
        let start = Instant::now();
        let mut warned = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io_err("cannot lock", &path)(e)),
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(RootError::Locked {
                    holder: read_holder(&file),
                    path,
                    waited,
                });
            }
            if !warned {
                tracing::warn!(
                    "waiting for the lock on {}, held by {}",
                    path.display(),
                    read_holder(&file)
                );
                warned = true;
            }
            tokio::time::sleep(LOCK_POLL.min(wait - waited)).await;
        }
        // Say who holds it, for the message of whoever waits next. Best
        // effort: the lock itself is what matters (e.g. on a full disk).
        let me = holder_description();
        if let Err(e) = file
            .set_len(0)
            .and_then(|()| file.write_all_at(me.as_bytes(), 0))
        {
            tracing::debug!("cannot write into {}: {e}", path.display());
        }
        Ok(RootLock { file, path })
    }
}

/// The held root lock; dropping it releases it.
#[derive(Debug)]
pub struct RootLock {
    file: File,
    path: PathBuf,
}

impl RootLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootLock {
    fn drop(&mut self) {
        // Clear our name first so nobody is told we still hold it. Errors are
        // moot: closing the file releases the lock anyway.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// `$FTL_ROOT/<package>`.
#[derive(Debug, Clone)]
pub struct PackageDir {
    name: PackageName,
    path: PathBuf,
}

impl PackageDir {
    pub fn name(&self) -> &PackageName {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The operator created it (sync serves only packages that exist).
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn revision_path(&self, id: &RevisionId) -> PathBuf {
        self.revs().join(id.as_str())
    }

    fn revs(&self) -> PathBuf {
        self.path.join(REVS)
    }

    fn revision_name(&self, id: &RevisionId) -> RevisionName {
        RevisionName::new(self.name.clone(), id.clone())
    }

    /// Installed revisions, sorted by id (never by file time). Only real
    /// directories with a valid id count; dot-entries (staging, trash) never do.
    pub fn revisions(&self) -> Result<Vec<RevisionId>, RootError> {
        let revs = self.revs();
        let entries = match fs::read_dir(&revs) {
            Ok(e) => e,
            Err(e) if not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot read directory", &revs)(e)),
        };
        let mut ids = Vec::new();
        let mut unconfirmed = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot read directory", &revs))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if let Some(id) = name.strip_prefix(UNCONFIRMED_PREFIX) {
                unconfirmed.push(id.to_owned());
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            let Ok(id) = name.parse::<RevisionId>() else {
                continue;
            };
            // Readers such as `ftl list` do not take the lock: an entry may
            // vanish (renamed to trash) between listing and stat.
            let is_dir = match entry.file_type() {
                Ok(t) => t.is_dir(),
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(io_err("cannot stat", &entry.path())(e)),
            };
            if is_dir {
                ids.push(id);
            }
        }
        ids.retain(|id| !unconfirmed.iter().any(|u| u == id.as_str()));
        ids.sort();
        Ok(ids)
    }

    /// The revision `current` designates; `None` when there is no link. A link
    /// to a revision that is not (or no longer) installed still gives its id:
    /// the caller compares with [`PackageDir::revisions`] if it matters.
    pub fn current(&self) -> Result<Option<RevisionId>, RootError> {
        self.read_link(CURRENT)
    }

    /// Like [`PackageDir::current`], for `previous`.
    pub fn previous(&self) -> Result<Option<RevisionId>, RootError> {
        self.read_link(PREVIOUS)
    }

    fn read_link(&self, name: &str) -> Result<Option<RevisionId>, RootError> {
        let link = self.path.join(name);
        match fs::read_link(&link) {
            Ok(target) => match id_of_target(&target) {
                Some(id) => Ok(Some(id)),
                None => Err(RootError::BadLink { link, target }),
            },
            Err(e) if not_found(&e) => Ok(None),
            // EINVAL: it exists but is not a symlink.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Err(RootError::NotALink(link)),
            Err(e) => Err(io_err("cannot read link", &link)(e)),
        }
    }

    /// Points `current` at `revs/<id>` atomically: a new relative symlink is
    /// renamed over the old one, so `current` is never missing or dangling.
    /// Refused unless `revs/<id>` is an installed revision.
    pub fn set_current(&self, id: &RevisionId) -> Result<(), RootError> {
        self.switch_link(CURRENT, Some(id))
    }

    /// Like [`PackageDir::set_current`]; `None` removes the link.
    pub fn set_previous(&self, id: Option<&RevisionId>) -> Result<(), RootError> {
        self.switch_link(PREVIOUS, id)
    }

    /// A jump: `previous` to `old` (if any), then `current` to `new`, each
    /// atomically as in [`PackageDir::set_current`], with one fsync of the
    /// package directory for both. A crash in between leaves `previous` =
    /// `current` or the old pair, both harmless.
    pub fn switch(&self, new: &RevisionId, old: Option<&RevisionId>) -> Result<(), RootError> {
        self.require_installed(new)?;
        if let Some(old) = old {
            self.replace_link(PREVIOUS, old)?;
        }
        self.replace_link(CURRENT, new)?;
        sync_dir(&self.path)
    }

    fn switch_link(&self, name: &str, id: Option<&RevisionId>) -> Result<(), RootError> {
        let link = self.path.join(name);
        let Some(id) = id else {
            match fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if not_found(&e) => return Ok(()),
                Err(e) => return Err(io_err("cannot remove", &link)(e)),
            }
            return sync_dir(&self.path);
        };
        self.require_installed(id)?;
        self.replace_link(name, id)?;
        sync_dir(&self.path)
    }

    /// Points the link `name` at `revs/<id>` by renaming a new symlink over it.
    fn replace_link(&self, name: &str, id: &RevisionId) -> Result<(), RootError> {
        let link = self.path.join(name);
        let target = Path::new(REVS).join(id.as_str());
        let prefix = format!(".{name}{TMP_LINK_INFIX}");
        let (tmp, ()) = with_unique_name("cannot create symlink", &self.path, &prefix, |tmp| {
            symlink(&target, tmp)
        })?;
        if let Err(e) = fs::rename(&tmp, &link) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("cannot replace", &link)(e));
        }
        Ok(())
    }

    fn require_installed(&self, id: &RevisionId) -> Result<(), RootError> {
        let path = self.revision_path(id);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => Ok(()),
            Err(e) if !not_found(&e) => Err(io_err("cannot stat", &path)(e)),
            _ => Err(RootError::NotInstalled {
                revision: self.revision_name(id),
                path,
            }),
        }
    }

    /// A fresh, empty, hidden directory `revs/.staging-<id>-<pid>-<n>` to
    /// unpack `id` into: on the same file system as `revs/<id>`, so that
    /// [`PackageDir::commit_install`] is an atomic rename. Creates `revs/` if needed
    /// (but never the package directory itself: the operator creates that).
    pub fn new_staging(&self, id: &RevisionId) -> Result<PathBuf, RootError> {
        let revs = self.revs();
        match fs::create_dir(&revs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot create directory", &revs)(e)),
        }
        let prefix = format!("{STAGING_PREFIX}{id}-");
        let (path, ()) = with_unique_name("cannot create directory", &revs, &prefix, |p| {
            fs::create_dir(p)
        })?;
        Ok(path)
    }

    /// rename(2) would silently replace an empty directory: check first (we
    /// hold the lock, so nobody creates it meanwhile).
    fn refuse_installed(&self, id: &RevisionId) -> Result<(), RootError> {
        let dest = self.revision_path(id);
        match fs::symlink_metadata(&dest) {
            Ok(_) => Err(RootError::AlreadyInstalled {
                revision: self.revision_name(id),
                path: dest,
            }),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(io_err("cannot stat", &dest)(e)),
        }
    }

    /// First step of making a complete staging directory (from
    /// [`PackageDir::new_staging`]) the revision `id`, so that after a power
    /// loss `revs/<id>` is complete or absent. Refuses an installed `id` and
    /// marks it unconfirmed (`revs/.unconfirmed-<id>`, removed by
    /// [`PackageDir::confirm`] once its post-sync hook succeeded). The marker
    /// and the staged content must then be flushed together
    /// ([`sync_file_systems`], once for all the revisions a sync installs)
    /// before [`PackageDir::commit_install`], so the marker is durable before
    /// the revision can be.
    pub fn prepare_install(&self, id: &RevisionId) -> Result<(), RootError> {
        self.refuse_installed(id)?;
        let marker = self.unconfirmed_marker(id);
        File::create(&marker).map_err(io_err("cannot create", &marker))?;
        Ok(())
    }

    /// Last step of an install, once the staging directory and the marker are
    /// on disk: renames the staging directory into place and
    /// makes the rename durable.
    pub fn commit_install(&self, staging: &Path, id: &RevisionId) -> Result<(), RootError> {
        self.refuse_installed(id)?;
        let dest = self.revision_path(id);
        let already = || RootError::AlreadyInstalled {
            revision: self.revision_name(id),
            path: dest.clone(),
        };
        match fs::rename(staging, &dest) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                return Err(already());
            }
            Err(e) => return Err(io_err("cannot rename staging directory", staging)(e)),
        }
        sync_dir(&self.revs())
    }

    fn unconfirmed_marker(&self, id: &RevisionId) -> PathBuf {
        self.revs().join(format!("{UNCONFIRMED_PREFIX}{id}"))
    }

    /// Removes the marker of [`PackageDir::prepare_install`]: the revision's
    /// post-sync hook succeeded (or the revision is gone).
    pub fn confirm(&self, id: &RevisionId) -> Result<(), RootError> {
        let marker = self.unconfirmed_marker(id);
        match fs::remove_file(&marker) {
            Ok(()) => sync_dir(&self.revs()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(io_err("cannot delete", &marker)(e)),
        }
    }

    /// Deletes a staging directory whose unpacking failed (read-only
    /// directories and symlinks inside handled as in `remove_revision`).
    /// Refuses any path that is not one of this package's staging directories.
    pub fn discard_staging(&self, staging: &Path) -> Result<(), RootError> {
        let ours = staging.parent() == Some(self.revs().as_path())
            && staging
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(STAGING_PREFIX));
        if !ours {
            return Err(RootError::NotStaging(staging.to_owned()));
        }
        remove_tree(staging).map_err(io_err("cannot delete", staging))
    }

    /// Deletes an installed revision; refused for the current and the
    /// previous one. It is first renamed to a hidden `revs/.trash-*` (and that
    /// rename made durable), so a crash while deleting never leaves a
    /// half-deleted revision visible; the trash is cleaned by the next run.
    pub fn remove_revision(&self, id: &RevisionId) -> Result<(), RootError> {
        for (role, linked) in [("current", self.current()?), ("previous", self.previous()?)] {
            if linked.as_ref() == Some(id) {
                return Err(RootError::InUse {
                    revision: self.revision_name(id),
                    role,
                });
            }
        }
        self.require_installed(id)?;
        let path = self.revision_path(id);
        let revs = self.revs();
        let prefix = format!("{TRASH_PREFIX}{id}-");
        let (trash, ()) =
            with_unique_name("cannot move the revision to", &revs, &prefix, |trash| {
                // rename(2) would replace an empty directory: never reuse a name.
                match fs::symlink_metadata(trash) {
                    Ok(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
                    Err(e) if not_found(&e) => fs::rename(&path, trash),
                    Err(e) => Err(e),
                }
            })?;
        sync_dir(&revs)?;
        remove_tree(&trash).map_err(io_err("cannot delete", &trash))?;
        self.confirm(id)
    }

    /// Removes what interrupted runs left behind: staging and trash
    /// directories under `revs/`, temporary links in the package directory.
    /// Call it with the lock held: then every leftover belongs to a dead
    /// process. Returns how many entries were removed.
    pub fn clean_leftovers(&self) -> Result<usize, RootError> {
        let mut removed = 0;
        let revs = self.revs();
        // Revisions whose post-sync hook never finished: deleted, so that the
        // next sync installs them again and runs the hook.
        for marker in hidden_entries(&revs, |n| n.starts_with(UNCONFIRMED_PREFIX))? {
            let id = marker
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(UNCONFIRMED_PREFIX))
                .and_then(|i| i.parse::<RevisionId>().ok());
            if let Some(id) = id
                && self.revision_path(&id).is_dir()
            {
                let linked = [self.current()?, self.previous()?].contains(&Some(id.clone()));
                if linked {
                    // Made current by hand since: keep it, as the operator wants.
                    tracing::warn!(
                        "{} never finished its post-sync hook, but it is linked; keeping it",
                        self.revision_name(&id)
                    );
                } else {
                    self.remove_revision(&id)?;
                    tracing::info!(
                        "removed {}: its post-sync hook never finished",
                        self.revision_name(&id)
                    );
                }
            }
            match fs::remove_file(&marker) {
                Ok(()) => removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(io_err("cannot delete", &marker)(e)),
            }
        }
        for path in hidden_entries(&revs, |n| {
            n.starts_with(STAGING_PREFIX) || n.starts_with(TRASH_PREFIX)
        })? {
            remove_tree(&path).map_err(io_err("cannot delete", &path))?;
            removed += 1;
        }
        let tmp_links = [
            format!(".{CURRENT}{TMP_LINK_INFIX}"),
            format!(".{PREVIOUS}{TMP_LINK_INFIX}"),
            format!("{SEEN}{TMP_LINK_INFIX}"),
        ];
        for path in hidden_entries(&self.path, |n| tmp_links.iter().any(|p| n.starts_with(p)))? {
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(io_err("cannot delete", &path)(e)),
            }
        }
        if removed > 0 {
            tracing::info!(
                "removed {removed} leftover(s) of interrupted runs in {}",
                self.path.display()
            );
        }
        Ok(removed)
    }
}

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

const SEEN: &str = ".ftl-seen";

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
        let prefix = format!("{SEEN}{TMP_LINK_INFIX}");
        let (tmp, ()) = with_unique_name("cannot write", &self.path, &prefix, |tmp| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
            io::Write::write_all(&mut f, text.as_bytes())
        })?;
        let path = self.path.join(SEEN);
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("cannot replace", &path)(e)
        })
    }

    /// Forget the recorded [`Seen`]: the next sync checks in full.
    pub fn forget_seen(&self) {
        let _ = fs::remove_file(self.path.join(SEEN));
    }
}

/// Entries of `dir` whose name satisfies `wanted` (none if `dir` is missing).
fn hidden_entries(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, RootError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io_err("cannot read directory", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("cannot read directory", dir))?;
        if entry.file_name().to_str().is_some_and(&wanted) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    fn id(s: &str) -> RevisionId {
        s.parse().unwrap()
    }

    fn setup() -> (tempfile::TempDir, Root, PackageDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_owned());
        let pkg = root.package(&"my_site".parse().unwrap());
        fs::create_dir(pkg.path()).unwrap();
        (dir, root, pkg)
    }

    #[test]
    fn a_batched_install_is_hidden_until_confirmed() {
        let (_d, _root, pkg) = setup();
        let staging = pkg.new_staging(&id("r1")).unwrap();
        fs::write(staging.join("index.html"), "r1").unwrap();
        pkg.prepare_install(&id("r1")).unwrap();
        sync_file_systems(std::slice::from_ref(&staging)).unwrap();
        pkg.commit_install(&staging, &id("r1")).unwrap();
        assert_eq!(
            fs::read_to_string(pkg.revision_path(&id("r1")).join("index.html")).unwrap(),
            "r1"
        );
        assert!(
            pkg.revisions().unwrap().is_empty(),
            "unconfirmed: not listed"
        );
        pkg.confirm(&id("r1")).unwrap();
        assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
        assert_eq!(
            fs::read_dir(pkg.revs()).unwrap().count(),
            1,
            "no marker left"
        );
    }

    #[test]
    fn a_batched_install_refuses_an_installed_revision() {
        let (_d, _root, pkg) = setup();
        install(&pkg, "r1");
        let e = pkg.prepare_install(&id("r1")).unwrap_err();
        assert!(matches!(e, RootError::AlreadyInstalled { .. }), "{e}");
        let staging = pkg.new_staging(&id("r1")).unwrap();
        let e = pkg.commit_install(&staging, &id("r1")).unwrap_err();
        assert!(matches!(e, RootError::AlreadyInstalled { .. }), "{e}");
        assert_eq!(pkg.revisions().unwrap(), [id("r1")], "the first one stays");
    }

    #[test]
    fn the_early_flush_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let flush = EarlyFlush::start(&path);
            fs::write(path.join("f"), "x").unwrap();
            // Past a few rounds, so that the stop is seen mid-loop.
            std::thread::sleep(Duration::from_millis(250));
            drop(flush);
            // On a path that cannot be flushed, it gives up, and dropping it still returns.
            drop(EarlyFlush::start(&path.join("missing")));
            let _ = done.send(());
        });
        // A flusher that ignored the stop would keep the drop waiting forever.
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("dropping the early flush did not return within 10 s");
    }

    /// Installs a staged revision the way sync does: marker, flush, rename;
    /// then confirms it, as a successful post-sync hook does.
    fn install_staged(pkg: &PackageDir, staging: &Path, id: &RevisionId) -> Result<(), RootError> {
        pkg.prepare_install(id)?;
        sync_file_systems(&[staging.to_owned()])?;
        pkg.commit_install(staging, id)?;
        pkg.confirm(id)
    }

    fn install(pkg: &PackageDir, rev: &str) {
        let staging = pkg.new_staging(&id(rev)).unwrap();
        fs::write(staging.join("index.html"), rev).unwrap();
        install_staged(pkg, &staging, &id(rev)).unwrap();
    }

    #[test]
    fn check_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Root::new(dir.path().to_owned()).check().is_ok());
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        let e = Root::new(file.clone()).check().unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("FTL_ROOT {} is not a directory", file.display())
        );
        let e = Root::new(dir.path().join("nope")).check().unwrap_err();
        assert!(e.to_string().ends_with("nope does not exist"), "{e}");
    }

    #[test]
    fn packages_sorted_dirs_only_no_dot_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_owned());
        for d in ["zeta", "alpha", ".staging", "bad name", "mid-1"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join(".lock"), "").unwrap();
        fs::write(dir.path().join("file"), "").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), dir.path().join("linked")).unwrap();
        symlink(dir.path().join("gone"), dir.path().join("dangling")).unwrap();
        let names: Vec<String> = root
            .packages()
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(names, ["alpha", "linked", "mid-1", "zeta"]);
    }

    #[test]
    fn revisions_sorted_by_id_not_time_and_hidden_ones_skipped() {
        let (_d, _root, pkg) = setup();
        assert!(pkg.exists());
        assert_eq!(pkg.revisions().unwrap(), Vec::<RevisionId>::new()); // no revs/ yet
        // Created newest id first, and given mtimes in reverse order.
        for (i, rev) in ["2026112643200Ab", "2025010100001zz", "2026010100000AA"]
            .iter()
            .enumerate()
        {
            install(&pkg, rev);
            let f = File::open(pkg.revision_path(&id(rev))).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 - i as u64))
                .unwrap();
        }
        let _staging = pkg.new_staging(&id("2027010100000AA")).unwrap();
        fs::create_dir(pkg.revs().join(".trash-x")).unwrap();
        fs::write(pkg.revs().join("2028010100000AA"), "a file, not a revision").unwrap();
        fs::create_dir(pkg.revs().join("not valid")).unwrap();
        let ids: Vec<String> = pkg
            .revisions()
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(
            ids,
            ["2025010100001zz", "2026010100000AA", "2026112643200Ab"]
        );
    }

    #[test]
    fn staging_is_hidden_in_revs_and_install_refuses_existing() {
        let (_d, _root, pkg) = setup();
        let staging = pkg.new_staging(&id("r1")).unwrap();
        assert_eq!(staging.parent().unwrap(), pkg.revs());
        let name = staging.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".staging-r1-"), "{name}");
        let other = pkg.new_staging(&id("r1")).unwrap();
        assert_ne!(staging, other);
        install_staged(&pkg, &staging, &id("r1")).unwrap();
        assert!(pkg.revision_path(&id("r1")).is_dir());
        let e = install_staged(&pkg, &other, &id("r1")).unwrap_err();
        assert!(matches!(e, RootError::AlreadyInstalled { .. }), "{e}");
        assert!(e.to_string().contains("my_site.r1"), "{e}");
        // Even an empty directory in the way is not silently replaced.
        fs::create_dir(pkg.revision_path(&id("r2"))).unwrap();
        assert!(install_staged(&pkg, &other, &id("r2")).is_err());
    }

    #[test]
    fn discard_staging_only_takes_staging_dirs() {
        let (_d, _root, pkg) = setup();
        install(&pkg, "r1");
        let staging = pkg.new_staging(&id("r2")).unwrap();
        fs::create_dir_all(staging.join("ro/sub")).unwrap();
        fs::set_permissions(staging.join("ro"), Permissions::from_mode(0o555)).unwrap();
        for wrong in [
            pkg.revision_path(&id("r1")),
            pkg.path().to_owned(),
            PathBuf::from("/tmp"),
        ] {
            let e = pkg.discard_staging(&wrong).unwrap_err();
            assert!(matches!(e, RootError::NotStaging(_)), "{e}");
        }
        pkg.discard_staging(&staging).unwrap();
        assert!(!staging.exists());
        assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
    }

    #[test]
    fn new_staging_does_not_create_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = Root::new(dir.path().to_owned()).package(&"ghost".parse().unwrap());
        assert!(!pkg.exists());
        assert!(pkg.new_staging(&id("r1")).is_err());
        assert!(!pkg.exists());
    }

    #[test]
    fn links_are_relative_and_switch_refuses_missing_revisions() {
        let (_d, _root, pkg) = setup();
        assert_eq!(pkg.current().unwrap(), None);
        assert_eq!(pkg.previous().unwrap(), None);
        let e = pkg.set_current(&id("r1")).unwrap_err();
        assert!(matches!(e, RootError::NotInstalled { .. }), "{e}");
        install(&pkg, "r1");
        install(&pkg, "r2");
        pkg.set_current(&id("r1")).unwrap();
        pkg.set_previous(Some(&id("r2"))).unwrap();
        assert_eq!(
            fs::read_link(pkg.path().join("current")).unwrap(),
            Path::new("revs/r1")
        );
        assert_eq!(pkg.current().unwrap(), Some(id("r1")));
        assert_eq!(pkg.previous().unwrap(), Some(id("r2")));
        assert_eq!(
            fs::read_to_string(pkg.path().join("current/index.html")).unwrap(),
            "r1"
        );
        pkg.set_previous(None).unwrap();
        pkg.set_previous(None).unwrap();
        assert_eq!(pkg.previous().unwrap(), None);
        // No temporary link is left behind.
        let names: Vec<_> = fs::read_dir(pkg.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}"); // current, revs
    }

    #[test]
    fn links_written_by_02x_are_read() {
        let (_d, _root, pkg) = setup();
        symlink(
            "/var/opt/deploy/my_site/revs/2019010100000Ab",
            pkg.path().join("current"),
        )
        .unwrap();
        symlink(
            "/var/opt/deploy/my_site/revs/2018010100000Zz/",
            pkg.path().join("previous"),
        )
        .unwrap();
        // Dangling here (another root), still the id it designates.
        assert_eq!(pkg.current().unwrap(), Some(id("2019010100000Ab")));
        assert_eq!(pkg.previous().unwrap(), Some(id("2018010100000Zz")));
        // And ftl replaces it with a relative link.
        install(&pkg, "r3");
        pkg.set_current(&id("r3")).unwrap();
        assert_eq!(
            fs::read_link(pkg.path().join("current")).unwrap(),
            Path::new("revs/r3")
        );
    }

    #[test]
    fn bad_links_are_reported() {
        let (_d, _root, pkg) = setup();
        symlink("revs/.staging-x", pkg.path().join("current")).unwrap();
        let e = pkg.current().unwrap_err();
        assert!(matches!(e, RootError::BadLink { .. }), "{e}");
        fs::create_dir(pkg.path().join("previous")).unwrap();
        let e = pkg.previous().unwrap_err();
        assert!(e.to_string().contains("is not a symlink"), "{e}");
    }

    #[test]
    fn current_never_missing_while_switching() {
        let (_d, _root, pkg) = setup();
        install(&pkg, "r1");
        install(&pkg, "r2");
        pkg.set_current(&id("r1")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (stop, pkg) = (stop.clone(), pkg.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Resolves: neither missing nor dangling.
                    let body = fs::read_to_string(pkg.path().join("current/index.html"))
                        .expect("current must always resolve");
                    assert!(body == "r1" || body == "r2");
                    assert!(pkg.current().unwrap().is_some());
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..1000 {
            pkg.set_current(&id(if i % 2 == 0 { "r2" } else { "r1" }))
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
        assert_eq!(pkg.current().unwrap(), Some(id("r1")));
    }

    #[test]
    fn remove_refuses_current_and_previous() {
        let (_d, _root, pkg) = setup();
        for r in ["r1", "r2", "r3"] {
            install(&pkg, r);
        }
        pkg.set_current(&id("r2")).unwrap();
        pkg.set_previous(Some(&id("r1"))).unwrap();
        let e = pkg.remove_revision(&id("r2")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing to remove revision my_site.r2: it is the current revision"
        );
        let e = pkg.remove_revision(&id("r1")).unwrap_err();
        assert!(e.to_string().contains("previous"), "{e}");
        pkg.remove_revision(&id("r3")).unwrap();
        assert_eq!(pkg.revisions().unwrap(), [id("r1"), id("r2")]);
        let e = pkg.remove_revision(&id("r3")).unwrap_err();
        assert!(matches!(e, RootError::NotInstalled { .. }), "{e}");
        // No trash left behind.
        assert_eq!(fs::read_dir(pkg.revs()).unwrap().count(), 2);
    }

    #[test]
    fn remove_handles_read_only_dirs_and_never_follows_symlinks() {
        let (_d, _root, pkg) = setup();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious"), "keep").unwrap();
        let staging = pkg.new_staging(&id("r1")).unwrap();
        let deep = staging.join("a/b/c");
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), "x").unwrap();
        symlink(outside.path(), staging.join("a/link-dir")).unwrap();
        symlink(outside.path().join("precious"), staging.join("a/link-file")).unwrap();
        for d in [deep.as_path(), &staging.join("a/b"), &staging.join("a")] {
            fs::set_permissions(d, Permissions::from_mode(0o555)).unwrap();
        }
        install_staged(&pkg, &staging, &id("r1")).unwrap();
        pkg.remove_revision(&id("r1")).unwrap();
        assert!(!pkg.revision_path(&id("r1")).exists());
        assert_eq!(
            fs::read_to_string(outside.path().join("precious")).unwrap(),
            "keep"
        );
        let mode = fs::metadata(outside.path()).unwrap().permissions().mode();
        assert_ne!(mode & 0o777, 0o555);
        assert_eq!(fs::read_dir(pkg.revs()).unwrap().count(), 0);
    }

    #[test]
    fn unconfirmed_install_is_removed_by_the_next_clean_up() {
        let (_d, _root, pkg) = setup();
        install(&pkg, "r1");
        pkg.set_current(&id("r1")).unwrap();
        let staging = pkg.new_staging(&id("r2")).unwrap();
        pkg.prepare_install(&id("r2")).unwrap();
        sync_file_systems(std::slice::from_ref(&staging)).unwrap();
        pkg.commit_install(&staging, &id("r2")).unwrap();
        // A crash here: r2 exists, but its post-sync never finished: not listed.
        assert!(pkg.revision_path(&id("r2")).is_dir());
        assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
        pkg.clean_leftovers().unwrap();
        assert!(
            !pkg.revision_path(&id("r2")).exists(),
            "removed, to be fetched again"
        );
        assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
        assert_eq!(
            fs::read_dir(pkg.revs()).unwrap().count(),
            1,
            "marker gone too"
        );
    }

    #[test]
    fn leftovers_are_cleaned_and_nothing_else() {
        let (_d, root, pkg) = setup();
        install(&pkg, "r1");
        pkg.set_current(&id("r1")).unwrap();
        let staging = pkg.new_staging(&id("r2")).unwrap();
        fs::create_dir_all(staging.join("x/y")).unwrap();
        fs::set_permissions(staging.join("x"), Permissions::from_mode(0o500)).unwrap();
        fs::create_dir(pkg.revs().join(".trash-r0-1-1")).unwrap();
        symlink("revs/r1", pkg.path().join(".current.tmp-1-1")).unwrap();
        symlink("revs/r1", pkg.path().join(".previous.tmp-1-1")).unwrap();
        fs::write(pkg.path().join(".operator-notes"), "mine").unwrap();
        assert_eq!(root.clean_leftovers().unwrap(), 4);
        assert_eq!(pkg.clean_leftovers().unwrap(), 0);
        assert_eq!(fs::read_dir(pkg.revs()).unwrap().count(), 1);
        assert!(pkg.path().join(".operator-notes").exists());
        assert_eq!(pkg.current().unwrap(), Some(id("r1")));
    }

    #[tokio::test]
    async fn second_lock_waits_says_who_then_fails_and_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_owned());
        let first = root.lock(Duration::ZERO).await.unwrap();
        let holder = fs::read_to_string(dir.path().join(".lock")).unwrap();
        assert!(
            holder.starts_with(&format!("pid {} (", std::process::id())),
            "{holder}"
        );

        // The wait must not block the runtime: another task keeps ticking.
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let start = Instant::now();
        let e = root.lock(Duration::from_millis(500)).await.unwrap_err();
        ticker.abort();
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert!(ticks.load(Ordering::Relaxed) > 10, "runtime was blocked");
        let msg = e.to_string();
        assert!(matches!(e, RootError::Locked { .. }));
        assert!(
            msg.contains(&format!("{}", dir.path().join(".lock").display())),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("held by pid {}", std::process::id())),
            "{msg}"
        );

        drop(first);
        let again = root.lock(Duration::from_secs(1)).await.unwrap();
        drop(again);
    }

    #[tokio::test]
    async fn lock_is_released_when_the_holder_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_owned());
        let lock_path = dir.path().join(".lock");
        let has_flock = std::process::Command::new("flock")
            .arg("--version")
            .output();
        if !has_flock.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: flock(1) is not installed");
            return;
        }
        // The shell opens the file, flock(1) locks that open file, and the
        // shell then becomes `sleep`, which keeps holding it.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec 9>>"$1" && flock -x 9 && exec sleep 60"#)
            .arg("sh")
            .arg(&lock_path)
            .spawn()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Err(e) = root.lock(Duration::ZERO).await {
                assert!(e.to_string().contains("held by another process"), "{e}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "child never locked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        root.lock(Duration::from_secs(2)).await.unwrap();
    }

    const CRASH_ENV: &str = "FTL_TEST_CRASH_HELPER_PKG";
    const CRASH_FILES: usize = 40;

    /// A revision whose completeness can be checked.
    fn install_full(pkg: &PackageDir, new: &RevisionId) {
        let staging = pkg.new_staging(new).unwrap();
        fs::create_dir(staging.join("sub")).unwrap();
        for i in 0..CRASH_FILES {
            fs::write(staging.join(format!("sub/f{i}")), vec![b'x'; 4096]).unwrap();
        }
        fs::write(staging.join("complete"), "").unwrap();
        install_staged(pkg, &staging, new).unwrap();
    }

    /// Not a test on its own: when `crash_at_any_instant` runs this binary
    /// with CRASH_ENV set, it deploys in a loop until it is killed.
    #[test]
    fn crash_helper() {
        let Some(path) = std::env::var_os(CRASH_ENV) else {
            return;
        };
        let path = PathBuf::from(path);
        let pkg = PackageDir {
            name: "my_site".parse().unwrap(),
            path,
        };
        // Continue after the newest id of earlier rounds (ids never reused).
        let newest = pkg.revisions().unwrap().pop().unwrap();
        let mut n: u64 = newest.as_str()[1..].parse().unwrap();
        loop {
            n += 1;
            let new = id(&format!("r{n:09}"));
            install_full(&pkg, &new);
            let old = pkg.current().unwrap();
            pkg.set_previous(old.as_ref()).unwrap();
            pkg.set_current(&new).unwrap();
            let keep = [Some(new), old];
            for r in pkg.revisions().unwrap() {
                if !keep.contains(&Some(r.clone())) {
                    pkg.remove_revision(&r).unwrap();
                }
            }
        }
    }

    #[test]
    fn crash_at_any_instant_leaves_a_repairable_package() {
        let (_d, _root, pkg) = setup();
        install_full(&pkg, &id("r000000000"));
        pkg.set_current(&id("r000000000")).unwrap();
        let exe = std::env::current_exe().unwrap();
        for round in 0..12u64 {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "root::tests::crash_helper",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_ENV, pkg.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Vary the instant of death.
            std::thread::sleep(Duration::from_millis(40 + round * 37));
            child.kill().unwrap();
            let status = child.wait().unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "helper ended by itself: {status}");

            // current resolves, to a complete revision.
            let current = pkg.current().unwrap().unwrap();
            assert!(
                pkg.path().join("current/complete").exists(),
                "round {round}"
            );
            // Every visible revision is complete.
            let revisions = pkg.revisions().unwrap();
            assert!(revisions.contains(&current));
            for r in &revisions {
                let p = pkg.revision_path(r);
                assert!(p.join("complete").exists(), "partial revision {r}");
                assert_eq!(fs::read_dir(p.join("sub")).unwrap().count(), CRASH_FILES);
            }
            // The next run (holding the lock) removes every leftover.
            pkg.clean_leftovers().unwrap();
            for dir in [pkg.path().to_owned(), pkg.revs()] {
                for e in fs::read_dir(&dir).unwrap() {
                    let name = e.unwrap().file_name();
                    assert!(!name.to_string_lossy().starts_with('.'), "left {name:?}");
                }
            }
        }
        // The helper really deployed (so it was killed in the middle of work).
        assert!(pkg.current().unwrap().unwrap() > id("r000000010"));
    }
}
