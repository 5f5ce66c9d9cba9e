//! What happens on a node, step by step and with its hooks: jump, jump back,
//! install a downloaded revision, remove one. Composes `root` and `hooks`;
//! used by the node-side commands and by `sync`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::hooks::{self, HookContext, HookError, HookSink, Step};
use crate::names::{PackageName, RevisionId, RevisionName};
use crate::root::{LocalState, Package, Root, RootError, RootLock};
use crate::signing::AllowedSigners;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Hook(#[from] HookError),
    // The revision is named by the line's prefix (see `At`, and sync's
    // `StepError::NodeAt`), not again here.
    #[error("not on this node (run `ftl sync` first)")]
    NotInstalled(RevisionName),
    /// `ftl remove` of a revision that is not here: nothing a sync would fix.
    #[error("not on this node, nothing to remove (`ftl list {}` lists its revisions)", .0.package)]
    NothingToRemove(RevisionName),
    #[error("it is the current revision; jump to another one first")]
    IsCurrent(RevisionName),
    #[error("it is the previous revision, kept for `ftl jump-back`; jump to another one first")]
    IsPrevious(RevisionName),
    #[error("package {0} has no previous revision to jump back to")]
    NoPrevious(PackageName),
    /// FTL_ALLOWED_SIGNERS is set and the revision's signature does not
    /// hold. Named by the line's prefix (`At`, `StepError::NodeAt`).
    #[error("refused: {refusal}")]
    Refused {
        revision: RevisionName,
        refusal: Box<crate::signing::Refusal>,
    },
    /// A failure about one revision, reported as `<package>.<id>: …`.
    #[error("{revision}: {source}")]
    At {
        revision: RevisionName,
        source: Box<NodeError>,
    },
    /// Several failures of one command (`ftl clean`), each reported on its
    /// own line (see [`NodeError::messages`]).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<NodeError>),
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
            Self::At { source, .. } => source.hook_exit_code(),
            // The first failure's, as for a sync.
            Self::Several(errors) => errors.first().and_then(Self::hook_exit_code),
            _ => None,
        }
    }

    /// The revision whose signature was refused, if that is the failure.
    pub fn refused(&self) -> Option<&RevisionName> {
        match self {
            Self::Refused { revision, .. } => Some(revision),
            Self::At { source, .. } => source.refused(),
            _ => None,
        }
    }

    /// This error as a failure of `revision`.
    pub fn at(self, revision: &RevisionName) -> Self {
        Self::At {
            revision: revision.clone(),
            source: Box::new(self),
        }
    }

    /// One line per failure.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::Several(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }

    /// Ok with no errors, the error itself with one, [`NodeError::Several`].
    fn all(mut errors: Vec<NodeError>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Several(errors)),
        }
    }
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

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
    /// Where hook output goes: the command decides.
    hooks: Arc<dyn HookSink>,
    /// `FTL_ALLOWED_SIGNERS`: jump only to revisions whose signature holds.
    trust: Option<Arc<AllowedSigners>>,
}

impl Node {
    pub fn new(root: Root, hook_timeout: Option<Duration>, hooks: Arc<dyn HookSink>) -> Self {
        Self {
            root,
            hook_timeout,
            hooks,
            trust: None,
        }
    }

    /// This node, jumping only to revisions that `allowed` signed.
    pub fn trusting(mut self, allowed: Option<Arc<AllowedSigners>>) -> Self {
        self.trust = allowed;
        self
    }

    /// With signers to trust: the signature recorded when `rev` was
    /// installed, checked again now (the key may have been revoked since).
    /// Returns who signed it.
    pub async fn check_signature(
        &self,
        dir: &Package,
        rev: &RevisionName,
    ) -> Result<Option<Vec<crate::signing::Signer>>> {
        use crate::signing::{Refusal, Signed, check_revision, now};
        let Some(allowed) = &self.trust else {
            return Ok(None);
        };
        let refused = |refusal| NodeError::Refused {
            revision: rev.clone(),
            refusal: Box::new(refusal),
        };
        let Some(text) = dir.signature(&rev.id).await else {
            return Err(refused(Refusal::NotRecorded));
        };
        let doc = Signed::parse(&text).map_err(refused)?;
        let (_, signers) = check_revision(allowed, &doc, rev, now()).map_err(refused)?;
        Ok(Some(signers))
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    pub async fn lock(&self, wait: Duration) -> Result<RootLock> {
        Ok(self.root.lock(wait).await?)
    }

    /// The package's directory, which the operator must have created.
    pub fn package(&self, package: &PackageName) -> Result<Package> {
        Ok(self.root.package(package)?)
    }

    fn context(
        &self,
        dir: &Package,
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
    pub async fn hook(&self, step: Step, dir: &Package, rev: &RevisionName) -> Result<bool> {
        let state = dir.state().await?;
        let ctx = self.context(dir, rev, state.current.as_ref(), state.previous.as_ref());
        let output = self.hooks.output(step, &ctx);
        Ok(hooks::run(step, &ctx, output).await?)
    }

    /// Make `rev` current: pre-jump (new), un-jump (old), switch, post-jump
    /// (new), then validate (new). With `ignore_unjump_failure`, a failing un-jump is
    /// reported and the jump goes on; the command still fails with the hook's
    /// status after switching. When validate fails, the jump is undone by a
    /// jump back to the old revision (its hooks run, validate does not) and
    /// the old `previous` restored.
    pub async fn jump(&self, rev: &RevisionName, ignore_unjump_failure: bool) -> Result<Jumped> {
        let dir = self.package(&rev.package)?;
        let state = dir.state().await?;
        if !state.installed.contains(&rev.id) {
            return Err(NodeError::NotInstalled(rev.clone()));
        }
        let (mut current, previous) = (state.current, state.previous);
        if current.as_ref() == Some(&rev.id) {
            return Ok(Jumped::Already);
        }
        // Before any hook of it runs.
        self.check_signature(&dir, rev).await?;
        // `current` at a directory that is gone (deleted by hand) must not
        // block every jump: there is no un-jump hook to run, and nothing to
        // keep as `previous`.
        if let Some(c) = current.take_if(|c| !state.installed.contains(c)) {
            tracing::warn!(
                "{}.{c} is current but not installed (its directory is gone): \
                 jumping to {rev} without its un-jump hook",
                rev.package
            );
        }
        let unjump_failure = self
            .switch(
                &dir,
                rev,
                current.as_ref(),
                current.as_ref(),
                ignore_unjump_failure,
            )
            .await?;
        match self.hook(Step::Validate, &dir, rev).await {
            Ok(_) => {}
            Err(NodeError::Hook(failed)) => {
                return Err(self
                    .roll_back(&dir, rev, failed, current, previous, ignore_unjump_failure)
                    .await);
            }
            Err(e) => return Err(e),
        }
        match unjump_failure {
            Some(e) => Err(e.into()),
            None => Ok(Jumped::Switched),
        }
    }

    /// The hooks and the switch of a jump from `current` to `rev`, pointing
    /// `previous` at `previous_after` (left as it is when `None`); returns the
    /// un-jump failure tolerated with `ignore_unjump_failure`.
    async fn switch(
        &self,
        dir: &Package,
        rev: &RevisionName,
        current: Option<&RevisionId>,
        previous_after: Option<&RevisionId>,
        ignore_unjump_failure: bool,
    ) -> Result<Option<HookError>> {
        self.hook(Step::PreJump, dir, rev).await?;
        let mut unjump_failure = None;
        if let Some(old) = current {
            let old_rev = RevisionName::new(rev.package.clone(), old.clone());
            match self.hook(Step::UnJump, dir, &old_rev).await {
                Ok(_) => {}
                Err(NodeError::Hook(e)) if ignore_unjump_failure => {
                    tracing::warn!("{e}; jumping anyway (--ignore-unjump-failure)");
                    unjump_failure = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // previous first: a crash between the two leaves previous == current,
        // a harmless pair, never a missing current.
        dir.switch(&rev.id, previous_after).await?;
        tracing::info!("{rev} is now current");
        self.hook(Step::PostJump, dir, rev).await?;
        Ok(unjump_failure)
    }

    /// After `rev` failed validation: jump back to `old`, with `previous`
    /// where it pointed before, as if the jump never happened. `previous` is
    /// never pointed at `rev`, not even for an instant (a crash then would
    /// make the failed revision the target of a local jump-back).
    async fn roll_back(
        &self,
        dir: &Package,
        rev: &RevisionName,
        failed: HookError,
        old: Option<RevisionId>,
        old_previous: Option<RevisionId>,
        ignore_unjump_failure: bool,
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
            // Without an old previous, `previous` (which is `old`) stays
            // through the switch, a harmless pair, and goes after it.
            self.switch(
                dir,
                &old_rev,
                Some(&rev.id),
                old_previous.as_ref(),
                ignore_unjump_failure,
            )
            .await?;
            if old_previous.is_none() {
                dir.set_previous(None).await?;
            }
            Ok(())
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
        ignore_unjump_failure: bool,
    ) -> Result<RevisionName> {
        let dir = self.package(package)?;
        let previous = dir.state().await?.previous;
        let previous = previous.ok_or_else(|| NodeError::NoPrevious(package.clone()))?;
        let rev = RevisionName::new(package.clone(), previous);
        self.jump(&rev, ignore_unjump_failure)
            .await
            .map_err(|e| e.at(&rev))?;
        Ok(rev)
    }

    /// Delete a local revision: pre-remove, then the directory. Never current or previous.
    pub async fn remove(&self, rev: &RevisionName) -> Result<()> {
        let dir = self.package(&rev.package)?;
        check_removable(&dir.state().await?, rev)?;
        self.hook(Step::PreRemove, &dir, rev).await?;
        dir.remove_revision(&rev.id).await?;
        tracing::info!("removed {rev}");
        Ok(())
    }

    /// The packages named, or with none named every package directory.
    pub async fn packages(&self, named: Vec<PackageName>) -> Result<Vec<PackageName>> {
        if named.is_empty() {
            Ok(self.root.packages().await?)
        } else {
            Ok(named)
        }
    }

    /// What `clean` deletes of each package, by [`doomed`]: the bucket's view
    /// is what the last sync recorded (see [`wanted_from`]), or without a
    /// record the node's own `current` and `previous` in its place (what they
    /// are once a sync went through). Reads only: no lock, no hook.
    pub async fn clean_plan(
        &self,
        packages: &[PackageName],
        keep: usize,
    ) -> Result<Vec<RevisionName>> {
        let mut out = Vec::new();
        for package in packages {
            let dir = self.package(package)?;
            let state = dir.state().await?;
            let floor = match dir.wanted_from().await {
                Some(id) => Some(id),
                None => wanted_from(
                    state.current.as_ref(),
                    state.previous.as_ref(),
                    state.installed.last(),
                ),
            };
            out.extend(
                doomed(&state, floor.as_ref(), keep)
                    .into_iter()
                    .map(|id| RevisionName::new(package.clone(), id)),
            );
        }
        Ok(out)
    }

    /// Delete what [`Node::clean_plan`] names, each with its pre-remove hook.
    /// A failed removal does not stop the others; every failure is returned,
    /// each naming its revision.
    pub async fn clean(&self, packages: &[PackageName], keep: usize) -> Result<()> {
        let mut errors = Vec::new();
        for rev in self.clean_plan(packages, keep).await? {
            if let Err(e) = self.remove(&rev).await {
                errors.push(e.at(&rev));
            }
        }
        NodeError::all(errors)
    }

    /// The checks of [`Node::remove`] alone, for `remove --dry-run`.
    pub async fn removable(&self, rev: &RevisionName) -> Result<()> {
        let state = self.package(&rev.package)?.state().await?;
        check_removable(&state, rev)
    }
}

fn check_removable(state: &LocalState, rev: &RevisionName) -> Result<()> {
    if !state.installed.contains(&rev.id) {
        return Err(NodeError::NothingToRemove(rev.clone()));
    }
    if state.current.as_ref() == Some(&rev.id) {
        return Err(NodeError::IsCurrent(rev.clone()));
    }
    if state.previous.as_ref() == Some(&rev.id) {
        return Err(NodeError::IsPrevious(rev.clone()));
    }
    Ok(())
}

/// The oldest revision `sync` wants on a node, from the bucket's pointers:
/// the older of blessed and previous; with neither, the newest revision, so
/// that its first bless is instant everywhere. Sync downloads every revision
/// the bucket has from there on, and `clean` keeps them: the one place this
/// rule lives.
pub fn wanted_from(
    blessed: Option<&RevisionId>,
    previous: Option<&RevisionId>,
    newest: Option<&RevisionId>,
) -> Option<RevisionId> {
    match (blessed, previous) {
        (Some(b), Some(p)) => Some(b.min(p).clone()),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => newest.cloned(),
    }
}

/// What a node keeps, `sync` and `clean` alike: `current` and `previous`,
/// every revision from `wanted_from` on (what sync would download again),
/// and the `keep` newest. The rest is what `clean` deletes, oldest first.
pub fn doomed(
    state: &LocalState,
    wanted_from: Option<&RevisionId>,
    keep: usize,
) -> Vec<RevisionId> {
    let newest: Vec<&RevisionId> = state.installed.iter().rev().take(keep).collect();
    state
        .installed
        .iter()
        .filter(|id| {
            Some(*id) != state.current.as_ref()
                && Some(*id) != state.previous.as_ref()
                && wanted_from.is_none_or(|w| *id < w)
                && !newest.contains(id)
        })
        .cloned()
        .collect()
}
