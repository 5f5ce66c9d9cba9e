//! Revisions that failed on this node (a digest mismatch, an archive refused,
//! a failing post-sync or validate hook): recorded per package with the
//! reason, and not tried again before an exponential back-off with jitter has
//! passed, unless the bucket's object changed (its ETag) or the operator asks
//! (`ftl sync --retry-failed`). Without this, one bad revision is downloaded
//! by every node on every sync.

use std::collections::BTreeMap;

use crate::names::{PackageName, RevisionId, RevisionName, utc};
use crate::node::Node;
use crate::root::Failure;

use super::StepError;

/// The back-off after the first failure, and its cap (seconds).
const FIRST: u64 = 60;
const CAP: u64 = 3600;

/// Seconds to wait after the `count`-th failure in a row: 1 min, doubling,
/// capped at 1 h, each ±25 % so a fleet does not retry in the same minute.
pub(super) fn backoff(count: u32) -> u64 {
    let doublings = count.saturating_sub(1).min(16);
    let base = FIRST.saturating_mul(1 << doublings).min(CAP);
    base - base / 4 + crate::splay::below(base / 2 + 1)
}

/// The records of the packages a sync touches, changed in memory and written
/// back once at the end.
#[derive(Default)]
pub(super) struct Records {
    by_package: BTreeMap<PackageName, (Vec<Failure>, bool)>,
}

impl Records {
    pub(super) async fn load(node: &Node, packages: impl Iterator<Item = &PackageName>) -> Self {
        let mut by_package = BTreeMap::new();
        for p in packages {
            if let Ok(dir) = node.package(p) {
                by_package.insert(p.clone(), (dir.failures().await, false));
            }
        }
        Self { by_package }
    }

    fn get(&self, rev: &RevisionName) -> Option<&Failure> {
        let (list, _) = self.by_package.get(&rev.package)?;
        list.iter().find(|f| f.id == rev.id)
    }

    /// The record that holds `rev` back now, if any: it failed, its back-off
    /// has not passed, and (when `etag` is known) the object is the same.
    pub(super) fn holding_back(
        &self,
        rev: &RevisionName,
        etag: Option<&str>,
        now: u64,
        retry_failed: bool,
    ) -> Option<StepError> {
        let f = self.get(rev)?;
        let same_object = etag.is_none_or(|e| e == f.etag);
        if retry_failed || !same_object || now >= f.retry_at {
            return None;
        }
        Some(StepError::BackingOff {
            revision: rev.clone(),
            count: f.count,
            at: utc(f.at),
            retry_at: utc(f.retry_at),
            reason: f.reason.clone(),
        })
    }

    /// `rev` failed now with `e` (the object had `etag`, when known).
    pub(super) fn failed(
        &mut self,
        rev: &RevisionName,
        etag: Option<&str>,
        e: &StepError,
        now: u64,
    ) {
        let Some((list, changed)) = self.by_package.get_mut(&rev.package) else {
            return;
        };
        let etag = etag.map(str::to_owned);
        let old = list
            .iter()
            .position(|f| f.id == rev.id)
            .map(|i| list.remove(i));
        let count = match &old {
            // The same object failing again: back off further.
            Some(f) if etag.as_ref().is_none_or(|e| *e == f.etag) => f.count.saturating_add(1),
            _ => 1,
        };
        let wait = backoff(count);
        tracing::warn!(
            "{rev}: failed {count} time(s) in a row; not trying it again before {} \
             unless its object changes (`ftl sync --retry-failed` tries now)",
            utc(now + wait)
        );
        list.push(Failure {
            id: rev.id.clone(),
            etag: etag.or(old.map(|f| f.etag)).unwrap_or_default(),
            count,
            at: now,
            retry_at: now + wait,
            reason: e.to_string(),
        });
        *changed = true;
    }

    /// `rev` went through: forget its failures.
    pub(super) fn succeeded(&mut self, rev: &RevisionName) {
        if let Some((list, changed)) = self.by_package.get_mut(&rev.package)
            && let Some(i) = list.iter().position(|f| f.id == rev.id)
        {
            list.remove(i);
            *changed = true;
        }
    }

    /// Forget the records of `package`'s revisions the bucket no longer has.
    pub(super) fn keep_only(&mut self, package: &PackageName, listed: &[RevisionId]) {
        if let Some((list, changed)) = self.by_package.get_mut(package) {
            let before = list.len();
            list.retain(|f| listed.contains(&f.id));
            *changed |= list.len() != before;
        }
    }

    pub(super) async fn save(self, node: &Node) {
        for (package, (list, changed)) in self.by_package {
            if !changed {
                continue;
            }
            let saved = match node.package(&package) {
                Ok(dir) => dir.set_failures(list).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = saved {
                tracing::warn!("{package}: cannot record failed revisions: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_to_an_hour_with_jitter() {
        for (count, base) in [
            (1, 60),
            (2, 120),
            (3, 240),
            (6, 1920),
            (7, 3600),
            (40, 3600),
        ] {
            for _ in 0..20 {
                let b = backoff(count);
                assert!(
                    b >= base - base / 4 && b <= base + base / 4,
                    "{count}: {b} vs {base}"
                );
            }
        }
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_169_600 + 3661), "2026-12-02T01:01:01Z");
    }
}
