//! Node reports: what each node runs, written by nodes with `FTL_REPORT=1`
//! and read by `ftl fleet` and `jump --master --wait` (never by a sync).
//!
//! One object per node and package, under the reserved prefix `!report!`:
//!
//! `!report!<package>!<node>!<current id>!<ok|failed>!<failed id>!<YYYYMMDDTHHMMSSZ>!<version>`
//!
//! Everything the view needs is in the key, so that the view of 10,000 nodes
//! costs a listing (about 10 LISTs), not a GET per node; the body (one JSON
//! document, the whole report) is read only for failed reports, for their
//! error line. An empty id field is "none"; a `.` in the node's name or the
//! version is written `~`, so that no report key has a `.`. The prefix starts
//! with `!`, which no package name has: ftl 0.2.6's listing of `<package>.`
//! never meets a report, its `list --master` (the whole bucket, delimiter `.`)
//! sees plain keys and no package, this version's listing
//! (`parse_revision_key`) skips them, and an IAM policy can grant write on
//! `!report!*` alone.
//!
//! A node replaces its report by writing the new key, then deleting the one it
//! wrote before (it keeps that key in a local record): a delete lost to a crash
//! leaves two, and the view takes the newer.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Bucket, Result};
use crate::names::{NodeId, PackageName, RevisionId, RevisionName};
use crate::store::Expect;

/// The reserved prefix of every report key.
pub const PREFIX: &str = "!report!";

/// Bodies of failed reports read at once.
const READ_AT_ONCE: usize = 16;

/// The largest body read (a report is a few hundred bytes).
const MAX_BODY: usize = 16 * 1024;

/// One node's report on one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub node: NodeId,
    pub package: PackageName,
    /// The node's current revision.
    pub current: Option<RevisionId>,
    /// `None`: `ok`. Otherwise the failure.
    pub failure: Option<Failure>,
    /// Seconds since the epoch.
    pub at: u64,
    /// The ftl version that wrote it.
    pub version: String,
}

/// A failure as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The revision that failed, when the failure was a revision's.
    pub revision: Option<RevisionId>,
    /// The error line; from a listing, unknown until the body is read.
    pub error: Option<String>,
}

/// A report's body.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    node: String,
    package: String,
    revision: Option<String>,
    result: String,
    failed: Option<String>,
    error: Option<String>,
    reported_at: String,
    version: String,
}

/// `secs` as the key's time: [`names::utc`](crate::names::utc) without its
/// separators, `YYYYMMDDTHHMMSSZ`.
fn stamp(secs: u64) -> String {
    crate::names::utc(secs).replace(['-', ':'], "")
}

/// The key's time back as seconds since the epoch.
fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || !s.is_ascii() || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let (date, time) = (s.get(0..8)?, s.get(9..15)?);
    crate::names::parse_utc(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &time[0..2],
        &time[2..4],
        &time[4..6]
    ))
}

/// A node id or version as a key field: `.` becomes `~`, so that the key has
/// no `.` at all (ftl 0.2.6's `list --master` lists the whole bucket with the
/// delimiter `.` and would take what comes before one for a package), and
/// anything else outside `[A-Za-z0-9_-]` (a version's `+build`) becomes `_`.
fn field(v: &str) -> String {
    v.chars()
        .map(|c| match c {
            '.' => '~',
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') => c,
            _ => '_',
        })
        .collect()
}

/// A key field back: `~` is `.`.
fn unfield(v: &str) -> String {
    v.replace('~', ".")
}

impl Report {
    /// Its key (see the module's documentation).
    pub fn key(&self) -> String {
        let id = |r: Option<&RevisionId>| r.map(ToString::to_string).unwrap_or_default();
        let (result, failed) = match &self.failure {
            None => ("ok", String::new()),
            Some(f) => ("failed", id(f.revision.as_ref())),
        };
        format!(
            "{PREFIX}{}!{}!{}!{result}!{failed}!{}!{}",
            self.package,
            field(self.node.as_str()),
            id(self.current.as_ref()),
            stamp(self.at),
            field(&self.version)
        )
    }

    /// A report from its key; `None` if the key is not one.
    pub fn parse_key(key: &str) -> Option<Report> {
        let rest = key.strip_prefix(PREFIX)?;
        let f: Vec<&str> = rest.split('!').collect();
        let [package, node, current, result, failed, at, version] = f[..] else {
            return None;
        };
        let id = |s: &str| -> Option<Option<RevisionId>> {
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        let failure = match result {
            "ok" if failed.is_empty() => None,
            "failed" => Some(Failure {
                revision: id(failed)?,
                error: None,
            }),
            _ => return None,
        };
        let is_field = |v: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '~'))
        };
        if !is_field(version) || !is_field(node) {
            return None;
        }
        Some(Report {
            node: unfield(node).parse().ok()?,
            package: package.parse().ok()?,
            current: id(current)?,
            failure,
            at: parse_stamp(at)?,
            version: unfield(version),
        })
    }

    /// The full name of a revision of this report's package.
    pub fn name(&self, id: &RevisionId) -> RevisionName {
        RevisionName::new(self.package.clone(), id.clone())
    }

    fn body(&self) -> Body {
        Body {
            node: self.node.to_string(),
            package: self.package.to_string(),
            revision: self.current.as_ref().map(|i| self.name(i).to_string()),
            result: if self.failure.is_some() {
                "failed"
            } else {
                "ok"
            }
            .to_owned(),
            failed: self
                .failure
                .as_ref()
                .and_then(|f| f.revision.as_ref())
                .map(|i| self.name(i).to_string()),
            error: self.failure.as_ref().and_then(|f| f.error.clone()),
            reported_at: crate::names::utc(self.at),
            version: self.version.clone(),
        }
    }
}

/// What a listing of the reports found.
#[derive(Debug, Default)]
pub struct Reports {
    /// The newest report of each node and package, by package then node;
    /// failed ones with their error line when their body could be read.
    pub reports: Vec<Report>,
}

impl Bucket {
    /// Writes `report` under its key ([`Report::key`]), which it returns.
    pub async fn put_report(&self, report: &Report) -> Result<String> {
        let key = report.key();
        let body = serde_json::to_string(&report.body()).unwrap_or_default();
        self.store.put_text(&key, &body, Expect::Any).await?;
        Ok(key)
    }

    /// Deletes a report this node wrote before (only ever a report's key).
    pub async fn delete_report(&self, key: &str) -> Result<()> {
        if key.starts_with(PREFIX) {
            self.store.delete(key).await?;
        }
        Ok(())
    }

    /// The reports of `packages` (of every package when empty): one listing
    /// per package (one in all without packages), and one GET per failed
    /// report, for its error line. A key under the prefix that is no report is
    /// skipped with a warning naming it.
    pub async fn reports(&self, packages: &[PackageName]) -> Result<Reports> {
        let prefixes: Vec<String> = if packages.is_empty() {
            vec![PREFIX.to_owned()]
        } else {
            packages.iter().map(|p| format!("{PREFIX}{p}!")).collect()
        };
        let mut newest: BTreeMap<(PackageName, NodeId), (Report, String)> = BTreeMap::new();
        for prefix in prefixes {
            for o in self.store.list(&prefix).await? {
                let Some(r) = Report::parse_key(&o.key) else {
                    tracing::warn!("ignoring {}: not a node report", o.key);
                    continue;
                };
                let slot = (r.package.clone(), r.node.clone());
                match newest.get(&slot) {
                    Some((old, key)) if (old.at, key.as_str()) >= (r.at, o.key.as_str()) => {}
                    _ => {
                        newest.insert(slot, (r, o.key));
                    }
                }
            }
        }
        let read: Vec<(Report, String)> = newest.into_values().collect();
        let reports = futures::stream::iter(read)
            .map(|(mut r, key)| async move {
                if let Some(f) = &mut r.failure {
                    f.error = self.report_error(&key).await;
                }
                r
            })
            .buffered(READ_AT_ONCE)
            .collect()
            .await;
        Ok(Reports { reports })
    }

    /// The error line in a failed report's body; `None` (with a warning) when
    /// it cannot be read.
    async fn report_error(&self, key: &str) -> Option<String> {
        match self.store.get_text(key).await {
            Ok(Some(t)) if t.text.len() <= MAX_BODY => {
                match serde_json::from_str::<Body>(&t.text) {
                    Ok(b) => b.error,
                    Err(e) => {
                        tracing::warn!("{key}: its body is not a node report ({e})");
                        None
                    }
                }
            }
            Ok(Some(_)) => {
                tracing::warn!("{key}: its body is larger than {MAX_BODY} bytes; not read");
                None
            }
            // Replaced by a newer report meanwhile.
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("cannot read {key}: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failure: Option<Failure>) -> Report {
        Report {
            node: "web-01.example.com".parse().unwrap(),
            package: "my_site".parse().unwrap(),
            current: Some("2026120243200Ab".parse().unwrap()),
            failure,
            at: 1_796_169_600 + 3661,
            version: "0.3.0+git".into(),
        }
    }

    #[test]
    fn keys_round_trip_and_are_no_revision_nor_a_packages_key() {
        let ok = report(None);
        let key = ok.key();
        assert_eq!(
            key,
            "!report!my_site!web-01~example~com!2026120243200Ab!ok!!20261202T010101Z!0~3~0_git"
        );
        let back = Report::parse_key(&key).unwrap();
        assert_eq!(back.version, "0.3.0_git");
        assert_eq!(back.node.as_str(), "web-01.example.com");
        assert_eq!(
            Report {
                version: ok.version.clone(),
                ..back
            },
            ok
        );
        let failed = report(Some(Failure {
            revision: Some("2026120300000Zz".parse().unwrap()),
            error: None,
        }));
        assert_eq!(
            Report::parse_key(&failed.key()).unwrap().failure,
            failed.failure
        );
        for k in [&key, &failed.key()] {
            assert!(super::super::parse_revision_key(k, 1).is_none());
            assert!(!k.contains('.'), "{k}");
        }
    }

    #[test]
    fn garbage_keys_are_no_report() {
        for k in [
            "!report!garbage",
            "!report!my_site!web!x!ok!!20261202T010101Z!0.3.0!extra",
            "!report!my_site!web!x!maybe!!20261202T010101Z!0.3.0",
            "!report!my_site!web!x!ok!!2026-12-02!0.3.0",
            "!report!my_site!web!x!ok!!20261302T010101Z!0.3.0",
            "!report!my site!web!x!ok!!20261202T010101Z!0.3.0",
            "!report!my_site!web!x!ok!!20261202T010101Z!",
            "!report!my_site!web.1!x!ok!!20261202T010101Z!0~3",
            "!report!my_site!web!x!ok!!20261202T010101Z!0.3",
        ] {
            assert!(Report::parse_key(k).is_none(), "{k}");
        }
    }

    #[test]
    fn stamps_round_trip() {
        for secs in [0, 951_782_400, 1_796_169_600 + 86_399, 4_102_444_800] {
            assert_eq!(parse_stamp(&stamp(secs)), Some(secs), "{secs}");
        }
    }
}
