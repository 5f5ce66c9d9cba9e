//! The bucket's history of blesses: one small object per bless and
//! jump-back, written beside the pointers and never rewritten, read only by
//! `ftl log --master` (never by a sync, idle or not).
//!
//! Keys are `<package>.!bless-<YYYYMMDD>T<HHMMSS><mmm>Z-<8 hex>`: UTC to the
//! millisecond, so that they list in time order, then a random part so that
//! two blesses in one millisecond both stay. `!` is in no revision id and
//! there is no second `.`: ftl 0.2.6's listing (delimiter `.`) sees a plain
//! key, neither a revision nor a prefix of one, and this version's listing
//! (`parse_revision_key`) skips it.

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Bucket, Result};
use crate::names::{PackageName, RevisionName};
use crate::store::Expect;

/// What follows `<package>` in every history key.
const INFIX: &str = ".!bless-";

/// History objects read at once by `log`.
const READ_AT_ONCE: usize = 16;

/// One bless, as recorded (the object's content, one JSON document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bless {
    /// When, UTC to the millisecond, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub at: String,
    /// `bless` (`jump --master`) or `jump-back` (`jump-back --master`).
    pub action: String,
    /// The revision blessed.
    pub revision: String,
    /// The revision blessed before it (the new `.previous`).
    pub previous: Option<String>,
    /// Who, as the operator's client saw itself: `$USER@host`.
    pub by: String,
    /// The key that signed the bless, when it was signed: its fingerprint,
    /// `SHA256:…` as `ssh-keygen -l` shows it (who holds it is for the
    /// allowed signers to say, which the blessing client need not have).
    #[serde(default)]
    pub signer: Option<String>,
}

/// A time as the key's part and as `at`.
fn stamps(now: std::time::SystemTime) -> (String, String) {
    let d = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (y, m, day) = crate::names::civil_from_days(days);
    let s = secs % 86_400;
    let (hh, mm, ss) = (s / 3600, s / 60 % 60, s % 60);
    let ms = d.subsec_millis();
    let key = format!("{y:04}{m:02}{day:02}T{hh:02}{mm:02}{ss:02}{ms:03}Z");
    let at = format!("{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z");
    (key, at)
}

impl Bucket {
    /// Record a bless of `revision` (`previous` before it) in the history,
    /// with the fingerprint of the key that signed it, if one did. The bless
    /// has happened whatever becomes of this: a failed write is a warning,
    /// not an error.
    pub(super) async fn record_bless(
        &self,
        action: &str,
        revision: &RevisionName,
        previous: Option<&RevisionName>,
        signer: Option<String>,
    ) {
        let (stamp, at) = stamps(std::time::SystemTime::now());
        let key = format!(
            "{}{INFIX}{stamp}-{:08x}",
            revision.package,
            crate::splay::below(1 << 32)
        );
        let entry = Bless {
            at,
            action: action.to_owned(),
            revision: revision.to_string(),
            previous: previous.map(ToString::to_string),
            by: self.operator.clone(),
            signer,
        };
        let written = match serde_json::to_string(&entry) {
            Ok(text) => self
                .store
                .put_text(&key, &text, Expect::Absent)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::warn!(
                "{action} {revision} is done, but its history entry {key} could not be written: {e}"
            );
        }
    }

    /// The last `limit` blesses of `package` (all with 0), newest first. An
    /// entry that cannot be read as one is skipped with a warning.
    pub async fn history(&self, package: &PackageName, limit: usize) -> Result<Vec<Bless>> {
        let keys = self.store.list(&format!("{package}{INFIX}")).await?;
        let skip = if limit == 0 {
            0
        } else {
            keys.len().saturating_sub(limit)
        };
        let read: Vec<_> = futures::stream::iter(keys.into_iter().skip(skip).rev())
            .map(|o| async move {
                let text = self.store.get_text(&o.key).await;
                (o.key, text)
            })
            .buffered(READ_AT_ONCE)
            .collect()
            .await;
        let mut out = Vec::new();
        for (key, text) in read {
            // None: deleted between the listing and the read.
            if let Some(t) = text? {
                match serde_json::from_str::<Bless>(&t.text) {
                    Ok(b) => out.push(b),
                    Err(e) => tracing::warn!("ignoring {key}: not a history entry ({e})"),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_time_order_and_are_no_revision() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_millis(s);
        let (a, at) = stamps(t(1_796_169_600_000 + 3_661_005));
        assert_eq!(a, "20261202T010101005Z");
        assert_eq!(at, "2026-12-02T01:01:01.005Z");
        let (b, _) = stamps(t(1_796_169_600_000 + 3_661_010));
        assert!(a < b);
        let key = format!("app{INFIX}{a}-0000abcd");
        assert!(super::super::parse_revision_key(&key, 1).is_none());
        assert!(!key["app.".len()..].contains('.'));
    }
}
