//! The top-level error: every domain error converts into it, and only here is
//! an error mapped to an exit status.

use crate::bucket::BucketError;
use crate::hooks::HookError;
use crate::names::NameError;
use crate::node::NodeError;
use crate::output::OutputError;
use crate::root::RootError;
use crate::settings::SettingsError;
use crate::store::StoreError;
use crate::sync::SyncError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Output(#[from] OutputError),
    /// `ftl status`: the node is readable but lags (or leads) the bucket.
    #[error("{lagging} of {total} packages not in step with the bucket")]
    NotInStep { lagging: usize, total: usize },
    /// `jump --master --wait` ended without the fleet on the revision: a
    /// first line saying why, then one line per node concerned.
    #[error("{}", .lines.first().map(String::as_str).unwrap_or("the wait failed"))]
    Rollout {
        lines: Vec<String>,
        /// The timeout passed (exit 3); otherwise failures made the goal
        /// unreachable (exit 1).
        timed_out: bool,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Bucket(BucketError::Store(e))
    }
}

/// Documented in `docs/configuration.md`.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// `ftl status` found a package not in step (distinct from 1: could not tell).
pub const EXIT_NOT_IN_STEP: u8 = 3;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            // A key or an allowed_signers file that cannot be used is a
            // failure of the setup, not of the command line.
            Self::Settings(SettingsError::Key(_) | SettingsError::AllowedSigners(_)) => {
                EXIT_FAILURE
            }
            Self::Settings(_) | Self::Name(_) | Self::Usage(_) => EXIT_USAGE,
            Self::Bucket(BucketError::Name(_)) => EXIT_USAGE,
            Self::NotInStep { .. } => EXIT_NOT_IN_STEP,
            Self::Rollout {
                timed_out: true, ..
            } => EXIT_NOT_IN_STEP,
            Self::Hook(h) => clamp(h.exit_code()),
            Self::Node(n) => n.hook_exit_code().map(clamp).unwrap_or(EXIT_FAILURE),
            Self::Sync(s) => s.hook_exit_code().map(clamp).unwrap_or(EXIT_FAILURE),
            _ => EXIT_FAILURE,
        }
    }
}

impl Error {
    /// What the command reports on stderr, one line per failure (a sync or a
    /// clean may fail at several revisions); nothing for `NotInStep`, a
    /// result that `ftl status` printed and its exit status says.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Self::NotInStep { .. } => Vec::new(),
            Self::Sync(s) => s.messages(),
            Self::Node(n) => n.messages(),
            Self::Rollout { lines, .. } => lines.clone(),
            other => vec![other.to_string()],
        }
    }
}

fn clamp(code: i32) -> u8 {
    u8::try_from(code)
        .ok()
        .filter(|c| *c != 0)
        .unwrap_or(EXIT_FAILURE)
}
