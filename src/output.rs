//! The `--json` documents of `list`, `list --master` and `status`.
//!
//! These shapes are a public interface (documented in `docs/json.md`, pinned
//! by `tests/ux.rs`): add fields if needed, never rename or remove one.
//! Revisions are always full names (`<package>.<id>`), absent ones `null`.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use crate::bucket::{Bless, RemoteState};
use crate::names::{PackageName, RevisionName};
use crate::root::LocalState;
pub use crate::sync::status::Status;
pub use crate::sync::verify::SignatureView;

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

impl LocalPackage {
    pub fn new(package: &PackageName, state: LocalState) -> Self {
        let full = |id| RevisionName::new(package.clone(), id).to_string();
        let current = state.current;
        let revisions = state
            .installed
            .into_iter()
            .map(|id| LocalRevision {
                active: current.as_ref() == Some(&id),
                name: full(id),
            })
            .collect();
        Self {
            name: package.to_string(),
            current: current.map(full),
            previous: state.previous.map(full),
            revisions,
        }
    }
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
    /// The signed bless (`<package>.bless`), if any.
    pub bless: Option<SignatureView>,
}

impl MasterPackage {
    /// The package as listed, with the signatures of its revisions (in
    /// their order) and of its bless.
    pub fn new(
        package: &PackageName,
        state: RemoteState,
        signatures: Vec<Option<SignatureView>>,
        bless: Option<SignatureView>,
    ) -> Self {
        let (blessed, previous) = (state.pointers.blessed, state.pointers.previous);
        let revisions = state
            .revisions
            .into_iter()
            .zip(signatures.into_iter().chain(std::iter::repeat(None)))
            .map(|(r, signature)| MasterRevision {
                active: blessed.as_ref() == Some(&r.name),
                name: r.name.to_string(),
                key: r.key,
                size: r.size,
                spooled: r.modified.map(utc),
                sha256: None,
                signature,
            })
            .collect();
        Self {
            name: package.to_string(),
            blessed: blessed.map(|r| r.to_string()),
            previous: previous.map(|r| r.to_string()),
            revisions,
            bless,
        }
    }

    /// `ftl list --master PKG` as text: `name<TAB>(active)` as ftl 0.2.x
    /// printed it, then, for what is signed, `signed-by=` (principals when
    /// verified against FTL_ALLOWED_SIGNERS, key fingerprints otherwise) or
    /// `signature-refused`; the line of the revision the signed bless names
    /// also `blessed-by=` and `bless-sequence=`.
    pub fn lines(&self) -> String {
        // `blessed-by=` goes on the revision the signed bless names, which
        // is not the pointers' one when someone blessed without a key (the
        // nodes that check signatures follow the signed bless).
        let signed_blessed = self.bless.as_ref().map(|b| {
            b.manifest
                .as_deref()
                .and_then(|m| crate::signing::BlessManifest::parse(m).ok())
                .map(|m| m.blessed.to_string())
        });
        let mut out = String::new();
        for r in &self.revisions {
            out.push_str(&r.name);
            if r.active {
                out.push_str("\t(active)");
            }
            if let Some(s) = &r.signature {
                out.push_str(&signed_words("signed-by", s));
            }
            let bless_here = match &signed_blessed {
                Some(Some(name)) => *name == r.name,
                // A bless that cannot be read is shown where the pointers are.
                Some(None) => r.active,
                None => false,
            };
            if bless_here && let Some(b) = &self.bless {
                out.push_str(&signed_words("blessed-by", b));
                if let Some(seq) = b.sequence {
                    let _ = write!(out, "\tbless-sequence={seq}");
                }
            }
            out.push('\n');
        }
        out
    }
}

fn signed_words(key: &str, s: &SignatureView) -> String {
    if s.verified == Some(false) || (s.verified.is_none() && s.error.is_some()) {
        format!("\t{key}-refused")
    } else {
        format!("\t{key}={}", s.who())
    }
}

#[derive(Debug, Serialize)]
pub struct MasterRevision {
    pub name: String,
    /// It is the blessed one.
    pub active: bool,
    /// The object's key, relative to the bucket prefix.
    pub key: String,
    pub size: u64,
    /// When it was spooled: the object's last-modified time, UTC.
    pub spooled: Option<String>,
    /// Its `ftl-sha256` metadata (`None` for objects of ftl 0.2.x).
    pub sha256: Option<String>,
    /// Its signature (`<package>.sig-<id>`), if any.
    pub signature: Option<SignatureView>,
}

impl MasterPackage {
    /// Each revision's SHA-256, in the order of `revisions`.
    pub fn with_sha256s(mut self, sha256s: Vec<Option<String>>) -> Self {
        for (r, sha) in self.revisions.iter_mut().zip(sha256s) {
            r.sha256 = sha;
        }
        self
    }
}

/// A time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::names::utc(secs)
}

/// `ftl log --master [PKG] --json`: each package's blesses, newest first.
#[derive(Debug, Serialize)]
pub struct History {
    pub packages: Vec<PackageHistory>,
}

#[derive(Debug, Serialize)]
pub struct PackageHistory {
    pub name: String,
    /// Newest first.
    pub blesses: Vec<Bless>,
}

/// `ftl log --master` as text: one line a bless, newest first across the
/// packages, `key=value` words after the revision:
/// `2026-12-01T10:45:12.345Z bless my_site.… previous=my_site.… by=alice@deploy1`
pub fn history_text(history: &History) -> String {
    let mut all: Vec<&Bless> = history.packages.iter().flat_map(|p| &p.blesses).collect();
    // Stable: within one millisecond, each package's own order stays.
    all.sort_by(|a, b| b.at.cmp(&a.at));
    let mut out = String::new();
    for b in all {
        let previous = b.previous.as_deref().unwrap_or("-");
        let _ = write!(
            out,
            "{} {} {} previous={previous} by={}",
            b.at, b.action, b.revision, b.by
        );
        if let Some(s) = &b.signer {
            let _ = write!(out, " signer={s}");
        }
        out.push('\n');
    }
    out
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

/// One line a name; a package's revisions oldest first, the active one marked.
pub fn lines<'a>(names: impl IntoIterator<Item = (&'a str, bool)>) -> String {
    names
        .into_iter()
        .map(|(name, active)| {
            let mark = if active { "\t(active)" } else { "" };
            format!("{name}{mark}\n")
        })
        .collect()
}

/// `ftl status` as text: one line a package, `key=value` words after the
/// state, so that `grep`/`awk` over a fleet's output work:
/// `my_site: in-step current=my_site.… previous=… blessed=… blessed-previous=…`
pub fn status_text(report: &Status) -> String {
    let mut out = String::new();
    for p in &report.packages {
        let _ = write!(out, "{}: {}", p.name, p.state.as_str());
        if let Some(e) = &p.error {
            let _ = writeln!(out, " {e}");
            continue;
        }
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        for (key, value) in [
            ("current", &p.current),
            ("previous", &p.previous),
            ("blessed", &p.blessed),
            ("blessed-previous", &p.blessed_previous),
        ] {
            let _ = write!(out, " {key}={}", or_dash(value));
        }
        // What a sync would do, only when it would do something.
        let s = &p.sync;
        for (key, values) in [("download", &s.download), ("remove", &s.remove)] {
            if !values.is_empty() {
                let _ = write!(out, " {key}={}", values.join(","));
            }
        }
        for (key, value) in [("jump", &s.jump), ("set-previous", &s.previous)] {
            if let Some(v) = value {
                let _ = write!(out, " {key}={v}");
            }
        }
        if !p.leftovers.is_empty() {
            let _ = write!(out, " leftovers={}", p.leftovers.join(","));
        }
        if !p.unverified.is_empty() {
            let _ = write!(out, " unverified={}", p.unverified.join(","));
        }
        if let Some(b) = &p.bless {
            let who: Vec<&str> = b.signers.iter().map(|s| s.principals.as_str()).collect();
            let _ = write!(
                out,
                " bless-sequence={} bless-signed-by={}",
                b.sequence,
                who.join(",")
            );
        }
        if p.bless_pending.is_some() {
            out.push_str(" bless-pending");
        }
        if p.bless_stale
            && let Some(age) = p.bless_age
        {
            let _ = write!(out, " bless-stale={age}s");
        }
        if !p.refused.is_empty() {
            let _ = write!(out, " refused={}", p.refused.len());
        }
        for f in &p.failed {
            let _ = write!(out, " failed={}(retry-at={})", f.name, f.retry_at);
        }
        out.push('\n');
    }
    out
}

/// `ftl clean --dry-run`: in the style of `sync --dry-run`, one line a
/// revision that would go, `<package>: nothing to remove` for the others.
pub fn clean_preview(packages: &[PackageName], doomed: &[RevisionName]) -> String {
    let mut out = String::new();
    for p in packages {
        let mut any = false;
        for rev in doomed.iter().filter(|r| r.package == *p) {
            let _ = writeln!(out, "{p}: remove {rev}");
            any = true;
        }
        if !any {
            let _ = writeln!(out, "{p}: nothing to remove");
        }
    }
    out
}

/// One object of `ftl fleet --json` (an array of them).
#[derive(Debug, Serialize)]
pub struct FleetRow {
    pub node: String,
    pub package: String,
    pub revision: Option<String>,
    pub in_step: bool,
    /// `ok` or `failed`.
    pub result: &'static str,
    pub error: Option<String>,
    pub stale: bool,
    /// RFC 3339, UTC.
    pub reported_at: String,
    pub version: String,
}

/// `ftl fleet --json`: every row, in the text's order.
pub fn fleet_json(view: &crate::fleet::View) -> Vec<FleetRow> {
    view.rows()
        .map(|r| FleetRow {
            node: r.node.to_string(),
            package: r.package.to_string(),
            revision: r.revision.as_ref().map(ToString::to_string),
            in_step: r.in_step,
            result: if r.failed { "failed" } else { "ok" },
            error: r.error.clone(),
            stale: r.stale,
            reported_at: crate::names::utc(r.at),
            version: r.version.clone(),
        })
        .collect()
}

/// An age as `45s`, `12m`, `3h`, `2d`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `ftl fleet` as text: per package, one line per node (columns aligned:
/// node, revision, `in-step`/`behind`, `ok`/`failed`, the report's age and
/// `stale` when it is, then a failure's error line), then its summary.
pub fn fleet_text(view: &crate::fleet::View, now: u64) -> String {
    let width =
        |f: &dyn Fn(&crate::fleet::view::Row) -> usize| view.rows().map(f).max().unwrap_or(0);
    let wn = width(&|r| r.node.as_str().len());
    let wr = width(&|r| r.revision.as_ref().map_or(1, |x| x.to_string().len()));
    let mut out = String::new();
    for p in &view.packages {
        for r in &p.rows {
            let rev = r
                .revision
                .as_ref()
                .map_or("-".to_owned(), ToString::to_string);
            let step = if r.in_step { "in-step" } else { "behind" };
            let result = if r.failed { "failed" } else { "ok" };
            let mut line = format!(
                "{:<wn$}  {rev:<wr$}  {step:<7}  {result:<6}  {}",
                r.node.as_str(),
                age(now.saturating_sub(r.at))
            );
            if r.stale {
                line.push_str(" stale");
            }
            if let Some(e) = &r.error {
                let _ = write!(line, "  {e}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let _ = writeln!(out, "{}", p.summary());
    }
    out
}
