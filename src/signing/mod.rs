//! Signed revisions and blesses: who may deploy is decided by SSH keys the
//! nodes trust, not by who can write to the bucket.
//!
//! - [`manifest`]: the small texts that are signed (a revision: package, id,
//!   object, size, SHA-256, time; a bless: package, blessed, previous,
//!   sequence, time) and the signed document that carries them;
//! - [`allowed`]: OpenSSH's `allowed_signers` file (`FTL_ALLOWED_SIGNERS`);
//! - [`key`]: the signing key (`--sign KEY`, `FTL_SIGNING_KEY`): an OpenSSH
//!   private key file, or a public key whose private half is in `ssh-agent`.
//!
//! Signatures are OpenSSH `sshsig` (what `ssh-keygen -Y sign` writes), made
//! and verified in-process with the `ssh-key` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use ssh_key::{HashAlg, PublicKey, SshSig};

pub mod allowed;
pub mod key;
pub mod manifest;
#[cfg(test)]
mod tests;

pub use allowed::AllowedSigners;
#[cfg(test)]
use key::KeyError;
pub use key::SigningKey;
pub use manifest::{BlessManifest, RevisionManifest, Signed};

/// The namespace of a revision's signature (`ssh-keygen -Y sign -n`).
pub const REVISION_NAMESPACE: &str = "ftl-revision@ftl.invalid";
/// The namespace of a bless's signature: a revision's signature can never
/// pass for a bless, nor the other way round.
pub const BLESS_NAMESPACE: &str = "ftl-bless@ftl.invalid";

/// The largest signature document ftl reads (a manifest and a few
/// signatures are well under 4 KiB): anything larger is refused unread.
pub const MAX_DOCUMENT: u64 = 64 * 1024;

/// Why a signature was not accepted: each names what a user can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not signed (no {0} in the bucket)")]
    Missing(String),
    #[error(
        "no verified signature is recorded for it on this node: it was installed before \
         FTL_ALLOWED_SIGNERS was set (`ftl remove` it, then `ftl sync` installs it verified)"
    )]
    NotRecorded,
    #[error("its signature file is larger than {MAX_DOCUMENT} bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("its signature file is not a signed ftl manifest: {0}")]
    Garbage(String),
    #[error("signed in namespace {found:?}, not {wanted:?}")]
    WrongNamespace { found: String, wanted: String },
    #[error("signed by a key that is not in the allowed signers: {0}")]
    UnknownKey(String),
    #[error(
        "signed by {principals} ({fingerprint}), whose allowed_signers line does not allow namespace {namespace:?}"
    )]
    NamespaceNotAllowed {
        principals: String,
        fingerprint: String,
        namespace: String,
    },
    #[error("signed by {principals} ({fingerprint}), who is not a valid signer now ({why})")]
    OutsideValidity {
        principals: String,
        fingerprint: String,
        why: String,
    },
    #[error("a signature by {0} does not verify: the signed text was changed, or it is forged")]
    BadSignature(String),
    #[error("signed by a {0} key, which ftl does not verify (use ed25519 or ECDSA)")]
    UnsupportedKey(String),
    #[error("its signed manifest {0}")]
    Mismatch(String),
    #[error(
        "its bless goes backwards: sequence {found} is lower than {accepted}, the highest this node accepted (an old bless replayed?)"
    )]
    Backwards { found: u64, accepted: u64 },
    #[error(
        "its bless has sequence {sequence}, which this node accepted before for {accepted}, not {found}"
    )]
    Replayed {
        sequence: u64,
        accepted: String,
        found: String,
    },
    #[error(
        "signed by {found} of the {wanted} distinct allowed signers FTL_REQUIRE_SIGNERS asks for"
    )]
    TooFewSigners { found: usize, wanted: usize },
}

/// Who made a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// The principals field of the matching `allowed_signers` line.
    pub principals: String,
    /// The key's fingerprint, `SHA256:…` as `ssh-keygen -l` shows it.
    pub fingerprint: String,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.principals, self.fingerprint)
    }
}

/// A key's fingerprint as `ssh-keygen -l` shows it.
pub fn fingerprint(key: &ssh_key::public::KeyData) -> String {
    PublicKey::from(key.clone())
        .fingerprint(HashAlg::Sha256)
        .to_string()
}

/// The fingerprints of the keys that made `signatures`, verified or not (for
/// display where no allowed signers are configured).
pub fn fingerprints(signatures: &[SshSig]) -> Vec<String> {
    signatures
        .iter()
        .map(|s| fingerprint(s.public_key()))
        .collect()
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl AllowedSigners {
    /// Verify every signature of `doc` over its manifest in `namespace`, at
    /// time `now`; returns the distinct signers, at least one. The first
    /// signature that does not verify is the refusal: a document with a bad
    /// signature beside a good one is not what any signer wrote.
    pub fn verify(&self, namespace: &str, doc: &Signed, now: u64) -> Result<Vec<Signer>, Refusal> {
        let mut signers: Vec<Signer> = Vec::new();
        for sig in &doc.signatures {
            let signer = self.verify_one(namespace, doc.manifest.as_bytes(), sig, now)?;
            if !signers.iter().any(|s| s.principals == signer.principals) {
                signers.push(signer);
            }
        }
        if signers.is_empty() {
            return Err(Refusal::Garbage("it holds no signature".into()));
        }
        Ok(signers)
    }

    fn verify_one(
        &self,
        namespace: &str,
        message: &[u8],
        sig: &SshSig,
        now: u64,
    ) -> Result<Signer, Refusal> {
        if sig.namespace() != namespace {
            return Err(Refusal::WrongNamespace {
                found: sig.namespace().to_owned(),
                wanted: namespace.to_owned(),
            });
        }
        let key = sig.public_key();
        let fingerprint = fingerprint(key);
        let line = self.allowing(key, namespace, now).map_err(|e| match e {
            None => Refusal::UnknownKey(fingerprint.clone()),
            Some(r) => r,
        })?;
        use ssh_key::Algorithm;
        match key.algorithm() {
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
            other => return Err(Refusal::UnsupportedKey(other.to_string())),
        }
        PublicKey::from(key.clone())
            .verify(namespace, message, sig)
            .map_err(|_| Refusal::BadSignature(format!("{} ({fingerprint})", line.principals)))?;
        Ok(Signer {
            principals: line.principals.clone(),
            fingerprint,
        })
    }
}

/// A revision's signature document checked for revision `rev`: signed by an
/// allowed key in the revision namespace, over a manifest of `rev` itself
/// (not of another revision or package whose signature was copied here).
pub fn check_revision(
    allowed: &AllowedSigners,
    doc: &Signed,
    rev: &crate::names::RevisionName,
    now: u64,
) -> Result<(RevisionManifest, Vec<Signer>), Refusal> {
    let signers = allowed.verify(REVISION_NAMESPACE, doc, now)?;
    let m = RevisionManifest::parse(&doc.manifest).map_err(|e| Refusal::Garbage(e.0))?;
    if m.revision != *rev {
        return Err(Refusal::Mismatch(format!(
            "is for {}, not {rev}",
            m.revision
        )));
    }
    Ok((m, signers))
}

/// A bless's signature document checked for `package`: signed in the bless
/// namespace by at least `require` distinct allowed principals, over a
/// manifest that blesses a revision of this package.
pub fn check_bless(
    allowed: &AllowedSigners,
    doc: &Signed,
    package: &crate::names::PackageName,
    require: usize,
    now: u64,
) -> Result<(BlessManifest, Vec<Signer>), Refusal> {
    let signers = allowed.verify(BLESS_NAMESPACE, doc, now)?;
    let m = BlessManifest::parse(&doc.manifest).map_err(|e| Refusal::Garbage(e.0))?;
    let foreign = [Some(&m.blessed), m.previous.as_ref()]
        .into_iter()
        .flatten()
        .find(|r| r.package != *package);
    if m.package != *package {
        return Err(Refusal::Mismatch(format!(
            "is a bless of package {}, not {package}",
            m.package
        )));
    }
    if let Some(r) = foreign {
        return Err(Refusal::Mismatch(format!(
            "names {r}, a revision of another package"
        )));
    }
    if signers.len() < require {
        return Err(Refusal::TooFewSigners {
            found: signers.len(),
            wanted: require,
        });
    }
    Ok((m, signers))
}
