//! Who owns an installed revision: `FTL_OWNER=user[:group]`, for nodes where
//! ftl runs as root and the application as another user.

use std::ffi::CString;
use std::os::unix::fs::lchown;
use std::path::Path;

use super::{RootError, io_err};

/// A user and group, resolved once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("invalid FTL_OWNER {0:?}: expected user[:group]")]
    Syntax(String),
    #[error("invalid FTL_OWNER: no user {0:?} on this system")]
    NoUser(String),
    #[error("invalid FTL_OWNER: no group {0:?} on this system")]
    NoGroup(String),
    #[error("FTL_OWNER {0:?} needs ftl to run as root")]
    NotRoot(String),
}

impl Owner {
    /// `user`, `user:group`, or numeric ids; a user alone brings its primary
    /// group. Refused unless we run as root (only root can give files away)
    /// or it names ourselves.
    pub fn parse(spec: &str) -> Result<Self, OwnerError> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err(OwnerError::Syntax(spec.to_owned()));
        }
        let (uid, primary) = match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => {
                let (uid, gid) =
                    lookup_user(user).ok_or_else(|| OwnerError::NoUser(user.to_owned()))?;
                (uid, Some(gid))
            }
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => lookup_group(g).ok_or_else(|| OwnerError::NoGroup(g.to_owned()))?,
            },
            // A numeric user without a group: its group of the same number.
            None => primary.unwrap_or(uid),
        };
        // SAFETY: geteuid and getegid cannot fail and take no arguments.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if euid != 0 && (uid, gid) != (euid, egid) {
            return Err(OwnerError::NotRoot(spec.to_owned()));
        }
        Ok(Self { uid, gid })
    }

    /// Gives `top` and everything under it to this owner, never following a
    /// symlink (a link is changed itself).
    pub(super) fn apply(&self, top: &Path) -> Result<(), RootError> {
        let mut stack = vec![top.to_owned()];
        while let Some(path) = stack.pop() {
            lchown(&path, Some(self.uid), Some(self.gid))
                .map_err(io_err("cannot change the owner of", &path))?;
            let meta = std::fs::symlink_metadata(&path).map_err(io_err("cannot stat", &path))?;
            if meta.is_dir() {
                for entry in
                    std::fs::read_dir(&path).map_err(io_err("cannot read directory", &path))?
                {
                    let entry = entry.map_err(io_err("cannot read directory", &path))?;
                    stack.push(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// A buffer size for the reentrant look-ups, as the system suggests.
fn buffer(kind: libc::c_int) -> Vec<libc::c_char> {
    // SAFETY: sysconf takes a constant and returns -1 when it has no answer.
    let n = unsafe { libc::sysconf(kind) };
    vec![0; usize::try_from(n).unwrap_or(16 * 1024).max(1024)]
}

/// Calls a reentrant look-up with a buffer, growing it while the system says
/// it is too small; `call` returns the status and the answer if found.
fn with_buffer<T>(
    kind: libc::c_int,
    mut call: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<T>),
) -> Option<T> {
    let mut buf = buffer(kind);
    loop {
        match call(&mut buf) {
            (libc::ERANGE, _) if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            (0, found) => return found,
            _ => return None,
        }
    }
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    with_buffer(libc::_SC_GETPW_R_SIZE_MAX, |buf| {
        // SAFETY: every pointer is valid for the call: `pwd` and `found` are
        // ours, `buf` is a live buffer of the length passed.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then_some((pwd.pw_uid, pwd.pw_gid)))
    })
}

fn lookup_group(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    with_buffer(libc::_SC_GETGR_R_SIZE_MAX, |buf| {
        // SAFETY: as in lookup_user.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        (rc, (!found.is_null()).then_some(grp.gr_gid))
    })
}
