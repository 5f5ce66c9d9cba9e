//! The `--json` documents of `list`, `list --master` and `status`.
//!
//! These shapes are a public interface (documented in `docs/json.md`, pinned
//! by `tests/ux.rs`): add fields if needed, never rename or remove one.
//! Revisions are always full names (`<package>.<id>`), absent ones `null`.

use std::io::Write;

use serde::Serialize;

/// `ftl list [PKG] --json`: this node's packages, each with its revisions.
#[derive(Debug, Serialize)]
pub struct LocalList {
    pub packages: Vec<LocalPackage>,
}

#[derive(Debug, Serialize)]
pub struct LocalPackage {
    pub name: String,
    pub current: Option<String>,
    pub previous: Option<String>,
    /// Oldest first.
    pub revisions: Vec<LocalRevision>,
}

#[derive(Debug, Serialize)]
pub struct LocalRevision {
    pub name: String,
    /// It is `current`.
    pub active: bool,
}

/// `ftl list --master [PKG] --json`: the bucket's packages, each with its revisions.
#[derive(Debug, Serialize)]
pub struct MasterList {
    pub packages: Vec<MasterPackage>,
}

#[derive(Debug, Serialize)]
pub struct MasterPackage {
    pub name: String,
    pub blessed: Option<String>,
    pub previous: Option<String>,
    /// Oldest first.
    pub revisions: Vec<MasterRevision>,
}

#[derive(Debug, Serialize)]
pub struct MasterRevision {
    pub name: String,
    /// It is the blessed one.
    pub active: bool,
    /// The object's key, relative to the bucket prefix.
    pub key: String,
    pub size: u64,
}

/// `ftl status [PKG…] --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Every package is in step.
    pub in_step: bool,
    pub packages: Vec<PackageStatus>,
}

#[derive(Debug, Serialize)]
pub struct PackageStatus {
    pub name: String,
    pub state: State,
    pub in_step: bool,
    pub current: Option<String>,
    pub previous: Option<String>,
    pub blessed: Option<String>,
    pub blessed_previous: Option<String>,
    /// What `ftl sync` would do now.
    pub sync: SyncPlan,
    /// Why the package could not be read (state `error`).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// `ftl sync` would change nothing and current is the blessed revision.
    InStep,
    /// Anything else the bucket and the node disagree on.
    OutOfStep,
    /// The bucket has nothing for this package (wrong FTL_BUCKET, or never spooled).
    Unknown,
    /// The node or the bucket could not be read.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::InStep => "in-step",
            State::OutOfStep => "out-of-step",
            State::Unknown => "unknown",
            State::Error => "error",
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct SyncPlan {
    pub download: Vec<String>,
    pub jump: Option<String>,
    pub previous: Option<String>,
    pub remove: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write to stdout: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One JSON document, one line, on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), OutputError> {
    let mut text = serde_json::to_string(value)?;
    text.push('\n');
    print_text(&text)
}

/// Text on stdout; an error (closed pipe included) is reported, not a panic
/// as with `print!`.
pub fn print_text(text: &str) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialise_as_documented() {
        for s in [
            State::InStep,
            State::OutOfStep,
            State::Unknown,
            State::Error,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
