//! `FTL_METRICS_FILE`: after every `sync` and `status`, the node's state in the
//! Prometheus text format, written atomically (a temporary file renamed over
//! the old one) for node_exporter's textfile collector. What `status` cannot
//! know (the last sync's times, result and bytes) is carried over from the
//! file as the last sync left it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One `ftl sync` run.
#[derive(Debug, Clone, Copy)]
pub struct SyncRun {
    /// Seconds since the epoch.
    pub started: f64,
    pub duration: f64,
    pub success: bool,
    pub downloaded_bytes: u64,
    pub reused_bytes: u64,
}

/// One package as the command that writes the file saw it.
#[derive(Debug, Clone, Default)]
pub struct PackageMetrics {
    pub name: String,
    pub in_step: bool,
    pub current: Option<String>,
    /// Revisions backing off, and when they may be tried again (seconds).
    pub failed: Vec<(String, u64)>,
    /// Signatures refused by this run (`FTL_ALLOWED_SIGNERS`); `None`: not
    /// checked.
    pub refused: Option<u64>,
    /// Age in seconds of the newest signed bless seen (`FTL_ALLOWED_SIGNERS`).
    pub bless_age: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the metrics file {path}: {source}")]
pub struct MetricsError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

const LAST_START: &str = "ftl_sync_last_start_timestamp_seconds";
const LAST_SUCCESS: &str = "ftl_sync_last_success_timestamp_seconds";
const DURATION: &str = "ftl_sync_duration_seconds";
const RESULT: &str = "ftl_sync_success";
const BYTES: &str = "ftl_sync_downloaded_bytes";
const REUSED: &str = "ftl_sync_reused_bytes";
const REFUSED_TOTAL: &str = "ftl_signature_refusals_total";

/// Write the file: `run` is the sync just done (`None` for `status`).
pub async fn write(
    path: &Path,
    command: &str,
    run: Option<SyncRun>,
    packages: Vec<PackageMetrics>,
) -> Result<(), MetricsError> {
    let (path, command) = (path.to_owned(), command.to_owned());
    crate::task::blocking(
        move || {
            let old = std::fs::read_to_string(&path).unwrap_or_default();
            let text = render(&old, &command, run, &packages, now());
            write_atomically(&path, &text).map_err(|source| MetricsError {
                path: path.clone(),
                source,
            })
        },
        |e| MetricsError {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        },
    )
    .await
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The unlabelled samples of a previous file.
fn previous(old: &str) -> BTreeMap<&str, f64> {
    old.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k, v.trim().parse().ok()?)))
        .collect()
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The file's text (pure).
fn render(
    old: &str,
    command: &str,
    run: Option<SyncRun>,
    packages: &[PackageMetrics],
    now: f64,
) -> String {
    let mut sync = previous(old);
    let refused: u64 = packages.iter().filter_map(|p| p.refused).sum();
    if refused > 0 || sync.contains_key(REFUSED_TOTAL) {
        let before = sync.get(REFUSED_TOTAL).copied().unwrap_or(0.0);
        sync.insert(REFUSED_TOTAL, before + refused as f64);
    }
    if let Some(r) = run {
        sync.insert(LAST_START, r.started);
        sync.insert(DURATION, r.duration);
        sync.insert(RESULT, if r.success { 1.0 } else { 0.0 });
        sync.insert(BYTES, r.downloaded_bytes as f64);
        sync.insert(REUSED, r.reused_bytes as f64);
        if r.success {
            sync.insert(LAST_SUCCESS, r.started + r.duration);
        }
    }
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    };
    for (name, help) in [
        (
            LAST_START,
            "When the last ftl sync started (seconds since the epoch).",
        ),
        (LAST_SUCCESS, "When the last successful ftl sync ended."),
        (DURATION, "How long the last ftl sync took."),
        (RESULT, "1 if the last ftl sync succeeded, 0 if it failed."),
        (
            BYTES,
            "Bytes the last ftl sync moved from the bucket for the revisions it installed \
             (whole objects, or the index and pieces of delta installs).",
        ),
        (
            REUSED,
            "Bytes of file data the last ftl sync's delta installs took from earlier \
             revisions on this node instead of the bucket.",
        ),
    ] {
        if let Some(v) = sync.get(name) {
            gauge(&mut out, name, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    if let Some(v) = sync.get(REFUSED_TOTAL) {
        let _ = writeln!(
            out,
            "# HELP {REFUSED_TOTAL} Signatures refused by ftl sync and status on this node \
             (FTL_ALLOWED_SIGNERS), since this file was first written.\n\
             # TYPE {REFUSED_TOTAL} counter\n{REFUSED_TOTAL} {v}"
        );
    }
    gauge(
        &mut out,
        "ftl_metrics_written_timestamp_seconds",
        "When this file was written, and by which command.",
    );
    let _ = writeln!(
        out,
        "ftl_metrics_written_timestamp_seconds{{command=\"{}\"}} {now}",
        label(command)
    );
    gauge(
        &mut out,
        "ftl_package_in_step",
        "1 if the package is in step with the bucket (as the last sync or status saw it).",
    );
    for p in packages {
        let _ = writeln!(
            out,
            "ftl_package_in_step{{package=\"{}\"}} {}",
            label(&p.name),
            u8::from(p.in_step)
        );
    }
    gauge(
        &mut out,
        "ftl_package_current_revision",
        "The package's current revision on this node (always 1).",
    );
    for p in packages {
        if let Some(c) = &p.current {
            let _ = writeln!(
                out,
                "ftl_package_current_revision{{package=\"{}\",revision=\"{}\"}} 1",
                label(&p.name),
                label(c)
            );
        }
    }
    gauge(
        &mut out,
        "ftl_package_failed_revisions",
        "Revisions of the package that failed here and are backing off.",
    );
    for p in packages {
        let _ = writeln!(
            out,
            "ftl_package_failed_revisions{{package=\"{}\"}} {}",
            label(&p.name),
            p.failed.len()
        );
    }
    if packages.iter().any(|p| p.refused.is_some()) {
        gauge(
            &mut out,
            "ftl_package_signature_refusals",
            "Signatures of the package refused by the command that wrote this file.",
        );
    }
    for p in packages {
        if let Some(n) = p.refused {
            let _ = writeln!(
                out,
                "ftl_package_signature_refusals{{package=\"{}\"}} {n}",
                label(&p.name)
            );
        }
    }
    if packages.iter().any(|p| p.bless_age.is_some()) {
        gauge(
            &mut out,
            "ftl_package_bless_age_seconds",
            "Age of the newest signed bless this node has seen (FTL_MAX_BLESS_AGE: alert \
             when it grows past the refresh period).",
        );
    }
    for p in packages {
        if let Some(age) = p.bless_age {
            let _ = writeln!(
                out,
                "ftl_package_bless_age_seconds{{package=\"{}\"}} {age}",
                label(&p.name)
            );
        }
    }
    gauge(
        &mut out,
        "ftl_revision_retry_timestamp_seconds",
        "When a failed revision may be tried again (seconds since the epoch).",
    );
    for p in packages {
        for (rev, at) in &p.failed {
            let _ = writeln!(
                out,
                "ftl_revision_retry_timestamp_seconds{{package=\"{}\",revision=\"{}\"}} {at}",
                label(&p.name),
                label(rev)
            );
        }
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_keeps_the_last_success_and_status_keeps_the_sync() {
        let pkg = |in_step| PackageMetrics {
            name: "site".into(),
            in_step,
            current: Some("site.1".into()),
            failed: vec![("site.2".into(), 1_900_000_000)],
            refused: None,
            bless_age: None,
        };
        let ok = SyncRun {
            started: 100.0,
            duration: 2.0,
            success: true,
            downloaded_bytes: 5,
            reused_bytes: 0,
        };
        let first = render("", "sync", Some(ok), &[pkg(true)], 103.0);
        assert!(
            first.contains("\nftl_sync_last_success_timestamp_seconds 102\n"),
            "{first}"
        );
        assert!(first.contains("ftl_package_in_step{package=\"site\"} 1\n"));
        assert!(first.contains(
            "ftl_revision_retry_timestamp_seconds{package=\"site\",revision=\"site.2\"} 1900000000\n"
        ));
        let failed = SyncRun {
            started: 200.0,
            success: false,
            ..ok
        };
        let second = render(&first, "sync", Some(failed), &[pkg(false)], 203.0);
        assert!(second.contains("\nftl_sync_last_success_timestamp_seconds 102\n"));
        assert!(second.contains("\nftl_sync_success 0\n"));
        assert!(second.contains("\nftl_sync_last_start_timestamp_seconds 200\n"));
        let third = render(&second, "status", None, &[pkg(true)], 300.0);
        assert!(third.contains("\nftl_sync_last_start_timestamp_seconds 200\n"));
        assert!(third.contains("command=\"status\"} 300\n"));
    }
}
