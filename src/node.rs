//! What happens on a node, step by step and with its hooks: jump, jump back,
//! install a downloaded revision, remove one. Composes `root` and `hooks`;
//! used by the node-side commands and by `sync`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::hooks::{self, HookContext, HookError, Step};
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::root::{PackageDir, Root, RootError, RootLock};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(
        "package {package} has no directory under {root} (create it to deploy the package here)"
    )]
    NoPackage { package: PackageName, root: PathBuf },
    #[error("revision {0} is not on this node (run `ftl sync` first)")]
    NotInstalled(RevisionName),
    #[error("{0} is the current revision; jump to another one first")]
    IsCurrent(RevisionName),
    #[error("{0} is the previous revision, kept for jump-back")]
    IsPrevious(RevisionName),
    #[error("package {0} has no previous revision to jump back to")]
    NoPrevious(PackageName),
    #[error("internal error: a blocking task failed: {0}")]
    Join(String),
    /// The validate hook failed after a jump, and ftl jumped back by itself.
    #[error("{failed}; {rollback}")]
    Validation {
        failed: Box<HookError>,
        rollback: Rollback,
    },
}

/// What became of the automatic jump back after a failed validate hook.
#[derive(Debug)]
pub enum Rollback {
    /// The revision current before the jump is current again.
    Done(RevisionName),
    /// Jumping back to it failed too (a hook of the way back).
    Failed(RevisionName, Box<NodeError>),
    /// Nothing was current before: the failed revision stays current.
    NothingToRollBackTo(RevisionName),
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done(old) => write!(f, "rolled back to {old}"),
            Self::Failed(old, e) => write!(f, "rolling back to {old} failed: {e}"),
            Self::NothingToRollBackTo(rev) => {
                write!(f, "nothing was current before it, so {rev} stays current")
            }
        }
    }
}

impl NodeError {
    pub fn hook_exit_code(&self) -> Option<i32> {
        match self {
            Self::Hook(h) => Some(h.exit_code()),
            // The validation's status, whatever became of the way back.
            Self::Validation { failed, .. } => Some(failed.exit_code()),
            _ => None,
        }
    }
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Run blocking file-system work (symlinks, renames, deletes) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // On a single-threaded runtime (the local commands, see main.rs) this is
    // the only thing going on: handing it to another thread would only add
    // two context switches, which cost milliseconds on a loaded machine.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Join(e.to_string()))?
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jumped {
    /// The revision was current already: nothing ran.
    Already,
    Switched,
}

#[derive(Clone)]
pub struct Node {
    root: Root,
    hook_timeout: Option<Duration>,
}

impl Node {
    pub fn new(root: Root, hook_timeout: Option<Duration>) -> Self {
        Self { root, hook_timeout }
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    pub async fn lock(&self, wait: Duration) -> Result<RootLock> {
        Ok(self.root.lock(wait).await?)
    }

    /// The package's directory, which the operator must have created.
    pub fn package(&self, package: &PackageName) -> Result<PackageDir> {
        let dir = self.root.package(package);
        if !dir.exists() {
            return Err(NodeError::NoPackage {
                package: package.clone(),
                root: self.root.path().to_owned(),
            });
        }
        Ok(dir)
    }

    fn context(
        &self,
        dir: &PackageDir,
        rev: &RevisionName,
        current: Option<&RevisionId>,
        previous: Option<&RevisionId>,
    ) -> HookContext {
        let full = |id: &RevisionId| RevisionName::new(rev.package.clone(), id.clone());
        HookContext {
            root: self.root.path().to_owned(),
            revision: rev.clone(),
            revision_path: dir.revision_path(&rev.id),
            current: current.map(full),
            previous: previous.map(full),
            timeout: self.hook_timeout,
        }
    }

    /// Run one hook of a revision of this package.
    pub async fn hook(&self, step: Step, dir: &PackageDir, rev: &RevisionName) -> Result<bool> {
        let d = dir.clone();
        let (current, previous) = blocking(move || Ok((d.current()?, d.previous()?))).await?;
        let ctx = self.context(dir, rev, current.as_ref(), previous.as_ref());
        Ok(hooks::run(step, &ctx).await?)
    }

    /// Make `rev` current: pre-jump (new), un-jump (old), switch, post-jump
    /// (new), then validate (new). With `force_unjump`, a failing un-jump is
    /// reported and the jump goes on; the command still fails with the hook's
    /// status after switching. When validate fails, the jump is undone by a
    /// jump back to the old revision (its hooks run, validate does not) and
    /// the old `previous` restored.
    pub async fn jump(&self, rev: &RevisionName, force_unjump: bool) -> Result<Jumped> {
        let dir = self.package(&rev.package)?;
        let d = dir.clone();
        let (installed, current, previous) =
            blocking(move || Ok((d.revisions()?, d.current()?, d.previous()?))).await?;
        if !installed.contains(&rev.id) {
            return Err(NodeError::NotInstalled(rev.clone()));
        }
        if current.as_ref() == Some(&rev.id) {
            return Ok(Jumped::Already);
        }
        let unjump_failure = self
            .switch(&dir, rev, current.as_ref(), force_unjump)
            .await?;
        match self.hook(Step::Validate, &dir, rev).await {
            Ok(_) => {}
            Err(NodeError::Hook(failed)) => {
                return Err(self
                    .roll_back(&dir, rev, failed, current, previous, force_unjump)
                    .await);
            }
            Err(e) => return Err(e),
        }
        match unjump_failure {
            Some(e) => Err(e.into()),
            None => Ok(Jumped::Switched),
        }
    }

    /// The hooks and the switch of a jump from `current` to `rev`; returns the
    /// un-jump failure tolerated with `force_unjump`.
    async fn switch(
        &self,
        dir: &PackageDir,
        rev: &RevisionName,
        current: Option<&RevisionId>,
        force_unjump: bool,
    ) -> Result<Option<HookError>> {
        self.hook(Step::PreJump, dir, rev).await?;
        let mut unjump_failure = None;
        if let Some(old) = current {
            let old_rev = RevisionName::new(rev.package.clone(), old.clone());
            match self.hook(Step::UnJump, dir, &old_rev).await {
                Ok(_) => {}
                Err(NodeError::Hook(e)) if force_unjump => {
                    tracing::warn!("{e}; jumping anyway (--ignore-unjump-failure)");
                    unjump_failure = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let d = dir.clone();
        let (new, old) = (rev.id.clone(), current.cloned());
        // previous first: a crash between the two leaves previous == current,
        // a harmless pair, never a missing current.
        blocking(move || {
            d.switch(&new, old.as_ref())?;
            Ok(())
        })
        .await?;
        tracing::info!("{rev} is now current");
        self.hook(Step::PostJump, dir, rev).await?;
        Ok(unjump_failure)
    }

    /// After `rev` failed validation: jump back to `old`, then point
    /// `previous` where it pointed before, as if the jump never happened.
    async fn roll_back(
        &self,
        dir: &PackageDir,
        rev: &RevisionName,
        failed: HookError,
        old: Option<RevisionId>,
        old_previous: Option<RevisionId>,
        force_unjump: bool,
    ) -> NodeError {
        let Some(old) = old else {
            return NodeError::Validation {
                failed: Box::new(failed),
                rollback: Rollback::NothingToRollBackTo(rev.clone()),
            };
        };
        let old_rev = RevisionName::new(rev.package.clone(), old);
        // Announced now, as the way back's hooks will talk; the failure itself
        // is reported once, by the returned error.
        tracing::warn!("{failed}; rolling back to {old_rev}");
        let back = async {
            self.switch(dir, &old_rev, Some(&rev.id), force_unjump)
                .await?;
            let d = dir.clone();
            blocking(move || Ok(d.set_previous(old_previous.as_ref())?)).await
        }
        .await;
        let rollback = match back {
            Ok(()) => {
                tracing::info!("rolled back: {old_rev} is current again");
                Rollback::Done(old_rev)
            }
            Err(e) => Rollback::Failed(old_rev, Box::new(e)),
        };
        NodeError::Validation {
            failed: Box::new(failed),
            rollback,
        }
    }

    /// Swap current and previous.
    pub async fn jump_back(
        &self,
        package: &PackageName,
        force_unjump: bool,
    ) -> Result<RevisionName> {
        let dir = self.package(package)?;
        let d = dir.clone();
        let previous = blocking(move || Ok(d.previous()?)).await?;
        let previous = previous.ok_or_else(|| NodeError::NoPrevious(package.clone()))?;
        let rev = RevisionName::new(package.clone(), previous);
        self.jump(&rev, force_unjump).await?;
        Ok(rev)
    }

    /// Delete a local revision: pre-remove, then the directory. Never current or previous.
    pub async fn remove(&self, rev: &RevisionName) -> Result<()> {
        let dir = self.package(&rev.package)?;
        let d = dir.clone();
        let (installed, current, previous) =
            blocking(move || Ok((d.revisions()?, d.current()?, d.previous()?))).await?;
        if !installed.contains(&rev.id) {
            return Err(NodeError::NotInstalled(rev.clone()));
        }
        if current.as_ref() == Some(&rev.id) {
            return Err(NodeError::IsCurrent(rev.clone()));
        }
        if previous.as_ref() == Some(&rev.id) {
            return Err(NodeError::IsPrevious(rev.clone()));
        }
        self.hook(Step::PreRemove, &dir, rev).await?;
        let id = rev.id.clone();
        blocking(move || Ok(dir.remove_revision(&id)?)).await?;
        tracing::info!("removed {rev}");
        Ok(())
    }
}
