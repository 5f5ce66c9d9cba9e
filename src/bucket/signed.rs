//! Signatures in the bucket: writing them at the source (spool, `ftl sign`,
//! bless) and reading them, size-capped, for a node to verify.

use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::digest::{hex, parse_hex32};
use crate::names::{PackageName, RevisionName};
use crate::signing::{
    BLESS_NAMESPACE, BlessManifest, MAX_DOCUMENT, REVISION_NAMESPACE, Refusal, RevisionManifest,
    Signed, SigningKey,
};
use crate::store::{Expect, StoreError, Text};

use super::{
    Bucket, BucketError, DELTA_SHA256_META, Listed, RemoteRevision, Result, SHA256_META, bless_key,
    signature_key,
};

/// Signs `manifest` in `namespace` off the async threads (an agent is a
/// socket round trip, a passphrase-less key a few microseconds).
async fn sign(key: &Arc<SigningKey>, namespace: &'static str, manifest: String) -> Result<Signed> {
    let key = key.clone();
    crate::task::blocking(
        move || {
            let sig = key
                .sign(namespace, manifest.as_bytes())
                .map_err(|e| BucketError::Signing(e.to_string()))?;
            Ok(Signed {
                manifest,
                signatures: vec![sig],
            })
        },
        BucketError::Signing,
    )
    .await
}

fn text(doc: &Signed) -> Result<String> {
    doc.text().map_err(|e| BucketError::Signing(e.to_string()))
}

impl Bucket {
    /// A signature document as listed: refused unread when the listing
    /// shows it too large, and read no further than [`MAX_DOCUMENT`] bytes
    /// (it may have grown since the listing).
    pub async fn document(&self, listed: &Listed) -> Result<Result<Signed, Refusal>> {
        if listed.size > MAX_DOCUMENT {
            return Ok(Err(Refusal::TooLarge(listed.size)));
        }
        let object = match self.store.get(&listed.key).await {
            Ok(o) => o,
            Err(StoreError::NotFound { .. }) => {
                return Ok(Err(Refusal::Missing(listed.key.clone())));
            }
            Err(e) => return Err(e.into()),
        };
        if object.meta.size > MAX_DOCUMENT {
            return Ok(Err(Refusal::TooLarge(object.meta.size)));
        }
        let mut body = object.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| StoreError::Io {
                what: format!("download of {}", listed.key),
                source,
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > MAX_DOCUMENT {
                return Ok(Err(Refusal::TooLarge(bytes.len() as u64)));
            }
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(Err(Refusal::Garbage("it is not UTF-8 text".into())));
        };
        Ok(Signed::parse(&text))
    }

    /// Writes the signature of a revision whose object holds `sha256`
    /// (replacing an older one: re-signing after a key rotation).
    pub(super) async fn write_revision_signature(
        &self,
        rev: &RemoteRevision,
        sha256: [u8; 32],
        delta_index: Option<[u8; 32]>,
        key: &Arc<SigningKey>,
    ) -> Result<RevisionManifest> {
        let manifest = RevisionManifest {
            revision: rev.name.clone(),
            object: rev.key.clone(),
            size: rev.size,
            sha256,
            delta_index,
            time: crate::names::utc(crate::signing::now()),
        };
        let doc = sign(key, REVISION_NAMESPACE, manifest.text()).await?;
        self.store
            .put_text(&signature_key(&rev.name), &text(&doc)?, Expect::Any)
            .await?;
        Ok(manifest)
    }

    /// `ftl sign REV`: hashes the object as it is in the bucket (what the
    /// nodes will download), checks it against its recorded digest, signs.
    pub async fn sign(
        &self,
        rev: &RevisionName,
        key: &Arc<SigningKey>,
    ) -> Result<RevisionManifest> {
        let found = self.find(rev).await?;
        let object = self.store.get(&found.key).await?;
        let recorded = object.meta.metadata.get(SHA256_META).cloned();
        // A delta-ready object's index is signed too, once its bytes here
        // are checked against its recorded digest.
        let delta = super::delta_source(&object.meta);
        let mut index_hasher = Sha256::new();
        let mut body = object.body;
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| StoreError::Io {
                what: format!("download of {}", found.key),
                source,
            })?;
            if let Some(d) = &delta {
                let (from, to) = (size, size + chunk.len() as u64);
                let (a, b) = (d.offset.max(from), (d.offset + d.length).min(to));
                if a < b {
                    index_hasher.update(&chunk[(a - from) as usize..(b - from) as usize]);
                }
            }
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        let sha: [u8; 32] = hasher.finalize().into();
        let index_sha: [u8; 32] = index_hasher.finalize().into();
        let delta_index = match delta {
            Some(d) if d.sha256 == index_sha => Some(index_sha),
            Some(d) => {
                return Err(BucketError::SignMismatch {
                    revision: rev.clone(),
                    found: format!("{} (its delta index)", hex(&index_sha)),
                    wanted: format!("{} ({DELTA_SHA256_META})", hex(&d.sha256)),
                });
            }
            None => None,
        };
        if let Some(r) = recorded
            && parse_hex32(&r) != Some(sha)
        {
            return Err(BucketError::SignMismatch {
                revision: rev.clone(),
                found: hex(&sha),
                wanted: r,
            });
        }
        let manifest = self
            .write_revision_signature(&RemoteRevision { size, ..found }, sha, delta_index, key)
            .await?;
        self.touch(&rev.package, &format!("sign {rev}")).await;
        Ok(manifest)
    }

    /// The signed bless as it is, with its version, for the next one.
    async fn read_bless(&self, package: &PackageName) -> Result<(Option<Text>, u64)> {
        let t = self.store.get_text(&bless_key(package)).await?;
        let sequence = t
            .as_ref()
            .filter(|t| t.text.len() as u64 <= MAX_DOCUMENT)
            .and_then(|t| Signed::parse(&t.text).ok())
            .and_then(|d| BlessManifest::parse(&d.manifest).ok())
            .filter(|m| m.package == *package)
            .map_or(0, |m| m.sequence);
        Ok((t, sequence))
    }

    /// Signs the bless of `blessed` (after `previous`) with the next
    /// sequence number: above the last one, and at least the time in
    /// seconds, so that a deleted or garbled `.bless` cannot make a later
    /// bless look older than one the nodes accepted. Written only if nobody
    /// replaced the signed bless since it was read.
    pub(super) async fn write_bless(
        &self,
        blessed: &RevisionName,
        previous: Option<&RevisionName>,
        key: &Arc<SigningKey>,
    ) -> Result<BlessManifest> {
        let (seen, last) = self.read_bless(&blessed.package).await?;
        self.write_bless_over(blessed, previous, key, seen, last)
            .await
    }

    /// [`Bucket::write_bless`] over the signed bless `seen` (sequence
    /// `last`), written only if it is still the one in the bucket.
    async fn write_bless_over(
        &self,
        blessed: &RevisionName,
        previous: Option<&RevisionName>,
        key: &Arc<SigningKey>,
        seen: Option<Text>,
        last: u64,
    ) -> Result<BlessManifest> {
        let package = &blessed.package;
        let now = crate::signing::now();
        let manifest = BlessManifest {
            package: package.clone(),
            blessed: blessed.clone(),
            previous: previous.cloned(),
            sequence: last.saturating_add(1).max(now),
            time: crate::names::utc(now),
        };
        let doc = sign(key, BLESS_NAMESPACE, manifest.text()).await?;
        let expect = match seen {
            Some(t) => Expect::Version(t.version),
            None => Expect::Absent,
        };
        let key = bless_key(package);
        match self.store.put_text(&key, &text(&doc)?, expect).await {
            Ok(()) => Ok(manifest),
            Err(StoreError::AlreadyExists { key }) => Err(StoreError::Conflict { key }.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Warns, on a bless without a key, when the package's blesses are
    /// signed: nodes that verify keep following the last signed one.
    pub(super) async fn warn_unsigned_bless(&self, rev: &RevisionName) {
        if let Ok((Some(_), _)) = self.read_bless(&rev.package).await {
            tracing::warn!(
                "{rev}: blessed without a signature, but {} holds a signed bless: nodes with \
                 FTL_ALLOWED_SIGNERS keep following that one (sign blesses with --sign KEY or \
                 FTL_SIGNING_KEY)",
                bless_key(&rev.package)
            );
        }
    }
}

impl Bucket {
    /// `ftl jump --master --refresh PKG`: signs the package's signed bless
    /// again, the same blessed and previous revisions with a higher sequence
    /// and the time now, so that nodes with `FTL_MAX_BLESS_AGE` see a live
    /// view. Only a bless that verifies against `allowed` (the nodes'
    /// allowed signers) and that the pointers agree with is refreshed: a
    /// periodic job must never lend its key to what someone else put there.
    /// `expected`, when given, must be the blessed revision. Writes no
    /// history entry (nothing changed but the time).
    pub async fn refresh(
        &self,
        package: &PackageName,
        expected: Option<&RevisionName>,
        key: &Arc<SigningKey>,
        allowed: &crate::signing::AllowedSigners,
    ) -> Result<BlessManifest> {
        let bk = bless_key(package);
        let fail = |why: String| BucketError::Signing(format!("{bk}: {why}"));
        let t = self.store.get_text(&bk).await?.ok_or_else(|| {
            fail(format!(
                "no signed bless to refresh (bless with `ftl jump --master --sign KEY {package}.<id>` first)"
            ))
        })?;
        if t.text.len() as u64 > MAX_DOCUMENT {
            return Err(fail(Refusal::TooLarge(t.text.len() as u64).to_string()));
        }
        let doc = Signed::parse(&t.text).map_err(|r| fail(r.to_string()))?;
        let (m, _) = crate::signing::check_bless(allowed, &doc, package, 1, crate::signing::now())
            .map_err(|r| fail(format!("not refreshed: it does not verify: {r}")))?;
        if let Some(rev) = expected.filter(|r| **r != m.blessed) {
            return Err(fail(format!("it blesses {}, not {rev}", m.blessed)));
        }
        let ptrs = self.pointers(package).await?;
        if ptrs.blessed.as_ref() != Some(&m.blessed) {
            return Err(fail(format!(
                "not refreshed: it blesses {} but the pointers name {}; bless the right one \
                 with `ftl jump --master`",
                m.blessed,
                ptrs.blessed
                    .as_ref()
                    .map_or_else(|| "nothing".to_owned(), ToString::to_string)
            )));
        }
        let sequence = m.sequence;
        let refreshed = self
            .write_bless_over(&m.blessed, m.previous.as_ref(), key, Some(t), sequence)
            .await?;
        self.touch(package, &format!("refresh {}", m.blessed)).await;
        Ok(refreshed)
    }

    /// `ftl jump --master --cosign REV`: adds a signature by `key` to the
    /// signed bless of `rev` (the same manifest, so the same sequence), for
    /// nodes that need more than one signer (`FTL_REQUIRE_SIGNERS`).
    pub async fn cosign(&self, rev: &RevisionName, key: &Arc<SigningKey>) -> Result<usize> {
        let bk = bless_key(&rev.package);
        let fail = |why: String| BucketError::Signing(format!("{bk}: {why}"));
        let t = self
            .store
            .get_text(&bk)
            .await?
            .ok_or_else(|| fail(format!("no signed bless to cosign (bless {rev} first)")))?;
        let mut doc = Signed::parse(&t.text).map_err(|r| fail(r.to_string()))?;
        let m = BlessManifest::parse(&doc.manifest).map_err(|e| fail(e.0))?;
        if m.blessed != *rev {
            return Err(fail(format!("it blesses {}, not {rev}", m.blessed)));
        }
        if crate::signing::fingerprints(&doc.signatures).contains(&key.fingerprint()) {
            return Err(fail(format!("already signed by {}", key.fingerprint())));
        }
        let added = sign(key, BLESS_NAMESPACE, doc.manifest.clone()).await?;
        doc.signatures.extend(added.signatures);
        match self
            .store
            .put_text(&bk, &text(&doc)?, Expect::Version(t.version))
            .await
        {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { key }) => {
                return Err(StoreError::Conflict { key }.into());
            }
            Err(e) => return Err(e.into()),
        }
        self.record_bless("cosign", rev, m.previous.as_ref(), Some(key.fingerprint()))
            .await;
        self.touch(&rev.package, &format!("cosign {rev}")).await;
        Ok(doc.signatures.len())
    }
}
