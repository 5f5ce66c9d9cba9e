//! With `FTL_ALLOWED_SIGNERS`: a package's signed bless checked before its
//! plan is made (the plan then follows the signed bless, not the unsigned
//! pointers), and a revision's signed manifest checked before its download
//! starts. A refusal leaves the package or the revision untouched.

use std::sync::Arc;

use crate::bucket::{Bucket, Pointers, RemoteRevision, RemoteState, bless_key, signature_key};
use crate::names::PackageName;
use crate::root::{AcceptedBless, Package};
use crate::signing::{
    AllowedSigners, BlessManifest, Refusal, RevisionManifest, Signed, Signer, check_bless,
    check_revision, now,
};

use super::StepError;

/// What a node trusts.
#[derive(Clone)]
pub struct Trust {
    pub allowed: Arc<AllowedSigners>,
    /// Distinct principals a bless needs (`FTL_REQUIRE_SIGNERS`, at least 1).
    pub require: usize,
    /// `FTL_MAX_BLESS_AGE` (seconds): a signed bless older than this says
    /// the bucket's view may be frozen.
    pub max_age: Option<u64>,
}

impl Trust {
    /// How old a bless signed at `signed` is now, and whether that is older
    /// than `FTL_MAX_BLESS_AGE`.
    pub fn age(&self, signed: u64) -> (u64, bool) {
        let age = now().saturating_sub(signed);
        (age, self.max_age.is_some_and(|max| age > max))
    }
}

/// The local fingerprint an idle sync compares (see `root::Seen`), with
/// what the node verifies: turning `FTL_ALLOWED_SIGNERS` on, or changing
/// the signers or their number, makes the next sync check in full.
pub fn seen_fingerprint(local: &crate::root::LocalState, trust: Option<&Trust>) -> String {
    match trust {
        None => local.fingerprint(),
        Some(t) => format!(
            "{} signed:{}:{}",
            local.fingerprint(),
            t.require,
            t.allowed.digest()
        ),
    }
}

/// A bless that verified.
#[derive(Debug, Clone)]
pub struct VerifiedBless {
    pub manifest: BlessManifest,
    pub signers: Vec<Signer>,
}

/// A revision's manifest that verified, and its document (recorded on the
/// node with the revision).
#[derive(Debug, Clone)]
pub struct VerifiedRevision {
    pub manifest: RevisionManifest,
    pub signers: Vec<Signer>,
    pub document: String,
}

fn refused(package: &PackageName, subject: String, refusal: Refusal) -> StepError {
    StepError::Refused {
        package: package.clone(),
        subject,
        what: "refused",
        refusal: Box::new(refusal),
    }
}

fn bless_refused(package: &PackageName, subject: String, refusal: Refusal) -> StepError {
    StepError::Refused {
        package: package.clone(),
        subject,
        what: "bless refused",
        refusal: Box::new(refusal),
    }
}

/// Checks the package's signed bless against the allowed signers and the
/// highest bless this node accepted; on success the remote state's
/// pointers are those of the signed bless. Nothing blessed and no signed
/// bless is no bless (new revisions may still be fetched, if signed).
pub async fn check_package_bless(
    dir: &Package,
    bucket: &Bucket,
    trust: &Trust,
    package: &PackageName,
    remote: &mut RemoteState,
) -> Result<Option<VerifiedBless>, StepError> {
    let bucket_err = |source| StepError::Bucket {
        package: package.clone(),
        source,
    };
    let named = remote.pointers.blessed.clone();
    // The line's prefix is the revision blessed (the package's when none is
    // named), as for every failure; "bless refused" says what was.
    let subject = |m: Option<&BlessManifest>| match m.map(|m| &m.blessed).or(named.as_ref()) {
        Some(r) => r.to_string(),
        None => package.to_string(),
    };
    let Some(listed) = &remote.bless else {
        if named.is_none() {
            remote.pointers = Pointers::default();
            return Ok(None);
        }
        return Err(bless_refused(
            package,
            subject(None),
            Refusal::Missing(bless_key(package)),
        ));
    };
    let doc = bucket
        .document(listed)
        .await
        .map_err(bucket_err)?
        .map_err(|r| bless_refused(package, subject(None), r))?;
    let (manifest, signers) = check_bless(&trust.allowed, &doc, package, trust.require, now())
        .map_err(|r| bless_refused(package, subject(None), r))?;
    let at = |r| bless_refused(package, subject(Some(&manifest)), r);
    if let Some(accepted) = dir
        .accepted_bless()
        .await
        .map_err(|e| StepError::Node(e.into()))?
    {
        if manifest.sequence < accepted.sequence {
            return Err(at(Refusal::Backwards {
                found: manifest.sequence,
                accepted: accepted.sequence,
            }));
        }
        if manifest.sequence == accepted.sequence
            && manifest.blessed.to_string() != accepted.blessed
        {
            return Err(at(Refusal::Replayed {
                sequence: manifest.sequence,
                accepted: accepted.blessed,
                found: manifest.blessed.to_string(),
            }));
        }
    }
    if named.as_ref() != Some(&manifest.blessed) {
        tracing::warn!(
            "{package}: the bucket's pointers name {} but the signed bless names {}: \
             following the signed bless",
            named.map_or_else(|| "nothing".to_owned(), |r| r.to_string()),
            manifest.blessed
        );
    }
    remote.pointers = Pointers {
        blessed: Some(manifest.blessed.clone()),
        previous: manifest.previous.clone(),
    };
    Ok(Some(VerifiedBless { manifest, signers }))
}

/// With more than one signer required, revisions are fetched ahead of their
/// bless no more: one key signs a revision, and its post-sync hook would
/// run on install, before any second person looked at it. Only what the
/// signed bless names, and what lies between its blessed and previous
/// revisions, is downloaded.
pub fn only_blessed(plan: &mut super::plan::Plan, remote: &RemoteState) {
    let named = [&remote.pointers.blessed, &remote.pointers.previous];
    let Some(top) = named.iter().filter_map(|r| r.as_ref().map(|r| &r.id)).max() else {
        plan.download.clear();
        return;
    };
    plan.download.retain(|r| r.name.id <= *top);
}

/// `FTL_MAX_BLESS_AGE`: a sync follows an old signed bless all the same
/// (it is valid), but says that the bucket's view may be frozen; `status`
/// makes it a result (exit 3).
pub fn warn_if_stale(trust: &Trust, bless: &VerifiedBless) {
    let Some(signed) = crate::names::parse_utc(&bless.manifest.time) else {
        return;
    };
    if let (age, true) = trust.age(signed) {
        tracing::warn!(
            "{}: the signed bless is {age}s old, more than FTL_MAX_BLESS_AGE ({}s): the \
             bucket's view may be frozen (a periodic `ftl jump --master --refresh` keeps a \
             live one fresh)",
            bless.manifest.blessed,
            trust.max_age.unwrap_or_default()
        );
    }
}

/// Records a verified bless as the highest accepted (durably): an older one
/// is refused from now on.
pub async fn accept(dir: &Package, bless: &VerifiedBless) -> Result<(), StepError> {
    let accepted = AcceptedBless {
        sequence: bless.manifest.sequence,
        blessed: bless.manifest.blessed.to_string(),
        signed: crate::names::parse_utc(&bless.manifest.time),
    };
    dir.set_accepted_bless(accepted)
        .await
        .map_err(|e| StepError::Node(e.into()))
}

/// Checks a revision's signed manifest before anything of the object is
/// read: the right revision, its key and its size as listed.
pub async fn check_revision_signature(
    bucket: &Bucket,
    trust: &Trust,
    rev: &RemoteRevision,
) -> Result<VerifiedRevision, StepError> {
    let package = &rev.name.package;
    let subject = || rev.name.to_string();
    let Some(listed) = &rev.signature else {
        return Err(refused(
            package,
            subject(),
            Refusal::Missing(signature_key(&rev.name)),
        ));
    };
    let doc: Signed = bucket
        .document(listed)
        .await
        .map_err(|source| StepError::Bucket {
            package: package.clone(),
            source,
        })?
        .map_err(|r| refused(package, subject(), r))?;
    let (manifest, signers) = check_revision(&trust.allowed, &doc, &rev.name, now())
        .map_err(|r| refused(package, subject(), r))?;
    if manifest.object != rev.key {
        return Err(refused(
            package,
            subject(),
            Refusal::Mismatch(format!(
                "is for object {}, not {}",
                manifest.object, rev.key
            )),
        ));
    }
    if manifest.size != rev.size {
        return Err(refused(
            package,
            subject(),
            Refusal::Mismatch(format!(
                "says {} bytes, the object has {}",
                manifest.size, rev.size
            )),
        ));
    }
    let document = doc
        .text()
        .map_err(|e| refused(package, subject(), Refusal::Garbage(e.0)))?;
    Ok(VerifiedRevision {
        manifest,
        signers,
        document,
    })
}

/// A signature document as `ftl list --master` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignatureView {
    /// Its key in the bucket.
    pub key: String,
    /// The signed text, byte for byte (what `ssh-keygen -Y verify` reads).
    pub manifest: Option<String>,
    /// Each signature, PEM (`-----BEGIN SSH SIGNATURE-----`).
    pub signatures: Vec<String>,
    /// The keys that signed, with their principals when verified.
    pub signers: Vec<SignerView>,
    /// Whether it verifies against FTL_ALLOWED_SIGNERS (null when unset).
    pub verified: Option<bool>,
    /// Why it does not, or why it could not be read.
    pub error: Option<String>,
    /// A bless's sequence number.
    pub sequence: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SignerView {
    pub fingerprint: String,
    /// From FTL_ALLOWED_SIGNERS, when the signature verified.
    pub principals: Option<String>,
}

impl SignatureView {
    /// Who signed, for a line of text: principals when verified, else the
    /// key fingerprints.
    pub fn who(&self) -> String {
        self.signers
            .iter()
            .map(|s| {
                s.principals
                    .clone()
                    .unwrap_or_else(|| s.fingerprint.clone())
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The signatures of a package's revisions (in its order) and of its bless,
/// read and, with `allowed`, verified (at most 8 reads at once).
pub async fn inspect(
    bucket: &Bucket,
    allowed: Option<&AllowedSigners>,
    package: &PackageName,
    state: &RemoteState,
) -> Result<(Vec<Option<SignatureView>>, Option<SignatureView>), crate::bucket::BucketError> {
    use futures::StreamExt;
    let revisions: Vec<_> = futures::stream::iter(&state.revisions)
        .map(|r| async move {
            match &r.signature {
                Some(l) => view(bucket, allowed, l, |a, d, n| {
                    check_revision(a, d, &r.name, n).map(|(_, s)| (s, None))
                })
                .await
                .map(Some),
                None => Ok(None),
            }
        })
        .buffered(8)
        .collect()
        .await;
    let revisions = revisions.into_iter().collect::<Result<Vec<_>, _>>()?;
    let bless = match &state.bless {
        Some(l) => Some(
            view(bucket, allowed, l, |a, d, n| {
                check_bless(a, d, package, 1, n).map(|(m, s)| (s, Some(m.sequence)))
            })
            .await?,
        ),
        None => None,
    };
    Ok((revisions, bless))
}

async fn view(
    bucket: &Bucket,
    allowed: Option<&AllowedSigners>,
    listed: &crate::bucket::Listed,
    check: impl Fn(&AllowedSigners, &Signed, u64) -> Result<(Vec<Signer>, Option<u64>), Refusal>,
) -> Result<SignatureView, crate::bucket::BucketError> {
    let mut v = SignatureView {
        key: listed.key.clone(),
        manifest: None,
        signatures: Vec::new(),
        signers: Vec::new(),
        verified: None,
        error: None,
        sequence: None,
    };
    let doc = match bucket.document(listed).await? {
        Ok(d) => d,
        Err(r) => {
            v.error = Some(r.to_string());
            v.verified = allowed.map(|_| false);
            return Ok(v);
        }
    };
    v.manifest = Some(doc.manifest.clone());
    v.signatures = doc.pems().unwrap_or_default();
    v.sequence = BlessManifest::parse(&doc.manifest).ok().map(|m| m.sequence);
    v.signers = crate::signing::fingerprints(&doc.signatures)
        .into_iter()
        .map(|fingerprint| SignerView {
            fingerprint,
            principals: None,
        })
        .collect();
    if let Some(a) = allowed {
        match check(a, &doc, now()) {
            Ok((signers, _)) => {
                v.verified = Some(true);
                for s in &mut v.signers {
                    s.principals = signers
                        .iter()
                        .find(|g| g.fingerprint == s.fingerprint)
                        .map(|g| g.principals.clone());
                }
            }
            Err(r) => {
                v.verified = Some(false);
                v.error = Some(r.to_string());
            }
        }
    }
    Ok(v)
}
