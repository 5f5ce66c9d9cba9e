//! `$FTL_ROOT/<package>`: its revisions, the `current` and `previous`
//! links, installing and removing a revision. Blocking; [`super::Package`] is
//! the async face the rest of ftl uses.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::names::{PackageName, RevisionId, RevisionName};

use super::durable::sync_dir;
use super::{
    BLESS, CURRENT, FAILED, FILES, INSTALLED, PREVIOUS, REVS, RootError, SEEN, STAGING_PREFIX,
    TMP_LINK_INFIX, TRASH_PREFIX, UNCONFIRMED_PREFIX, UNVERIFIED_PREFIX, WANTED, io_err, not_found,
    with_unique_name,
};

/// The id a `current`/`previous` link designates: the last component of its
/// target, whether relative (`revs/<id>`) or absolute as ftl 0.2.x wrote it
/// (`/var/opt/deploy/my_site/revs/<id>`).
fn id_of_target(target: &Path) -> Option<RevisionId> {
    target.file_name()?.to_str()?.parse().ok()
}

/// `$FTL_ROOT/<package>`.
#[derive(Debug, Clone)]
pub struct PackageDir {
    pub(super) name: PackageName,
    pub(super) path: PathBuf,
}

/// What the node has of a package: its revisions and links, read together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalState {
    pub installed: Vec<RevisionId>,
    pub current: Option<RevisionId>,
    pub previous: Option<RevisionId>,
    /// Revisions with a failure record here (`.ftl-failed`): sync never
    /// points `previous` at one, so a local jump-back cannot land on it.
    pub failed: Vec<RevisionId>,
}

impl LocalState {
    /// What [`super::Seen`] records: links and revisions, in one line.
    pub fn fingerprint(&self) -> String {
        let show = |o: &Option<RevisionId>| o.as_ref().map(|i| i.to_string()).unwrap_or_default();
        let revs: Vec<&str> = self.installed.iter().map(RevisionId::as_str).collect();
        format!(
            "current={} previous={} revs={}",
            show(&self.current),
            show(&self.previous),
            revs.join(",")
        )
    }
}

impl PackageDir {
    pub fn new(name: PackageName, path: PathBuf) -> Self {
        Self { name, path }
    }

    /// Replaces the small record `name` (one of ftl's dot files) with `text`
    /// atomically: written beside it, then renamed over it. `durable` flushes
    /// the file and the directory too, for a record whose loss would weaken a
    /// promise (the accepted bless); the others cost at most a re-check.
    pub(super) fn write_record(
        &self,
        name: &str,
        text: &str,
        durable: bool,
    ) -> Result<(), RootError> {
        let prefix = format!("{name}{TMP_LINK_INFIX}");
        let (tmp, ()) = with_unique_name("cannot write", &self.path, &prefix, |tmp| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)?;
            io::Write::write_all(&mut f, text.as_bytes())?;
            if durable { f.sync_all() } else { Ok(()) }
        })?;
        let path = self.path.join(name);
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("cannot replace", &path)(e)
        })?;
        if durable {
            sync_dir(&self.path)
        } else {
            Ok(())
        }
    }

    pub fn state(&self) -> Result<LocalState, RootError> {
        Ok(LocalState {
            installed: self.revisions()?,
            current: self.current()?,
            previous: self.previous()?,
            failed: self.failures().into_iter().map(|f| f.id).collect(),
        })
    }

    #[cfg(test)]
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

    pub(super) fn revs(&self) -> PathBuf {
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

    /// Points `current` at `revs/<id>` (tests; ftl itself moves both links
    /// at once with [`PackageDir::switch`]).
    #[cfg(test)]
    pub fn set_current(&self, id: &RevisionId) -> Result<(), RootError> {
        self.switch_link(CURRENT, Some(id))
    }

    /// Points `previous` at `revs/<id>` atomically: a new relative symlink is
    /// renamed over the old one, so the link is never missing or dangling.
    /// Refused unless `revs/<id>` is an installed revision; `None` removes it.
    pub fn set_previous(&self, id: Option<&RevisionId>) -> Result<(), RootError> {
        self.switch_link(PREVIOUS, id)
    }

    /// A jump: `previous` to `old` (if any), then `current` to `new`, each
    /// atomically as in [`PackageDir::set_previous`], with one fsync of the
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
    /// hold the lock, so nobody creates it meanwhile). A revision that never
    /// passed its post-sync hook (still marked unconfirmed, kept because it
    /// is linked) may be replaced: see [`PackageDir::commit_install`].
    fn refuse_installed(&self, id: &RevisionId) -> Result<(), RootError> {
        let dest = self.revision_path(id);
        match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() && self.unconfirmed_marker(id).exists() => Ok(()),
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
        if dest.is_dir() {
            // An unconfirmed revision that is linked: swapped with the new
            // copy in one step (`current` never dangles), the old one deleted.
            exchange(staging, &dest).map_err(io_err("cannot replace", &dest))?;
            sync_dir(&self.revs())?;
            return remove_tree(staging).map_err(io_err("cannot delete", staging));
        }
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

    fn unverified_marker(&self, id: &RevisionId) -> PathBuf {
        self.revs().join(format!("{UNVERIFIED_PREFIX}{id}"))
    }

    /// Marks revision `id` as installed without a digest to check it
    /// against, or removes that mark.
    pub fn set_unverified(&self, id: &RevisionId, unverified: bool) -> Result<(), RootError> {
        let marker = self.unverified_marker(id);
        if unverified {
            File::create(&marker).map_err(io_err("cannot create", &marker))?;
            return Ok(());
        }
        match fs::remove_file(&marker) {
            Err(e) if !not_found(&e) => Err(io_err("cannot delete", &marker)(e)),
            _ => Ok(()),
        }
    }

    /// Installed revisions marked by [`PackageDir::set_unverified`].
    pub fn unverified(&self) -> Result<Vec<RevisionId>, RootError> {
        let installed = self.revisions()?;
        Ok(installed
            .into_iter()
            .filter(|id| self.unverified_marker(id).exists())
            .collect())
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
        self.set_unverified(id, false)?;
        self.set_signature(id, None)?;
        self.confirm(id)
    }

    /// Removes what interrupted runs left behind: staging and trash
    /// directories under `revs/`, temporary links in the package directory.
    /// Call it with the lock held: then every leftover belongs to a dead
    /// process. An entry that cannot be removed (an immutable file, a
    /// directory another user's application wrote into a revision) does not
    /// stop the others, nor the sync: it is returned in [`Cleaned::stuck`],
    /// to be reported, and tried again by the next run.
    pub fn clean_leftovers(&self) -> Cleaned {
        let mut cleaned = Cleaned::default();
        if let Err(e) = self.clean_leftovers_into(&mut cleaned) {
            cleaned.stuck.push(e);
        }
        if cleaned.removed > 0 {
            tracing::info!(
                "removed {} leftover(s) of interrupted runs in {}",
                cleaned.removed,
                self.path.display()
            );
        }
        cleaned
    }

    /// Hidden staging and trash directories under `revs/` that no living
    /// process is working on (their names carry the pid that made them):
    /// what `ftl status` reports as leftovers. Read without the lock.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>, RootError> {
        let mut found = hidden_entries(&self.revs(), |n| {
            n.starts_with(STAGING_PREFIX) || n.starts_with(TRASH_PREFIX)
        })?;
        found.retain(|p| !made_by_a_living_process(p));
        found.sort();
        Ok(found)
    }

    fn clean_leftovers_into(&self, cleaned: &mut Cleaned) -> Result<(), RootError> {
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
                    // Linked (made current by hand, or current when its
                    // post-sync failed): kept, but never confirmed without
                    // its hook: the marker stays, so it is not listed and the
                    // next sync installs it again and runs the hook.
                    tracing::warn!(
                        "{} never passed its post-sync hook, but it is linked: keeping it \
                         unconfirmed until a sync installs it again",
                        self.revision_name(&id)
                    );
                    continue;
                } else {
                    if let Err(e) = self.remove_revision(&id) {
                        // The marker stays: the next run tries again.
                        cleaned.stuck.push(e);
                        continue;
                    }
                    tracing::info!(
                        "removed {}: its post-sync hook never finished",
                        self.revision_name(&id)
                    );
                }
            }
            match fs::remove_file(&marker) {
                Ok(()) => cleaned.removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => cleaned.stuck.push(io_err("cannot delete", &marker)(e)),
            }
        }
        for path in hidden_entries(&revs, |n| {
            n.starts_with(STAGING_PREFIX) || n.starts_with(TRASH_PREFIX)
        })? {
            match remove_tree(&path) {
                Ok(()) => cleaned.removed += 1,
                Err(e) => cleaned.stuck.push(io_err("cannot delete", &path)(e)),
            }
        }
        let tmp_links = [
            format!(".{CURRENT}{TMP_LINK_INFIX}"),
            format!(".{PREVIOUS}{TMP_LINK_INFIX}"),
            format!("{SEEN}{TMP_LINK_INFIX}"),
            format!("{FAILED}{TMP_LINK_INFIX}"),
            format!("{BLESS}{TMP_LINK_INFIX}"),
            format!("{WANTED}{TMP_LINK_INFIX}"),
            format!("{INSTALLED}{TMP_LINK_INFIX}"),
            format!("{FILES}{TMP_LINK_INFIX}"),
        ];
        for path in hidden_entries(&self.path, |n| tmp_links.iter().any(|p| n.starts_with(p)))? {
            match fs::remove_file(&path) {
                Ok(()) => cleaned.removed += 1,
                Err(e) if not_found(&e) => {}
                Err(e) => cleaned.stuck.push(io_err("cannot delete", &path)(e)),
            }
        }
        Ok(())
    }
}

/// What [`PackageDir::clean_leftovers`] did.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// Entries removed.
    pub removed: usize,
    /// Why each entry that could not be removed is still there.
    pub stuck: Vec<RootError>,
}

/// Whether the process whose pid a hidden name carries
/// (`.staging-<id>-<pid>-<n>`, `.trash-<id>-<pid>-<n>`) is alive; then the
/// entry is its work in progress, not a leftover.
fn made_by_a_living_process(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let mut parts = name.rsplit('-');
    let (_n, pid) = (parts.next(), parts.next());
    pid.and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists())
}

/// Swaps two directories atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths for the whole call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
