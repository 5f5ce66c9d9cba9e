//! The signed texts. Each is a few `key: value` lines in a fixed order,
//! ending with a newline, so that the bytes signed are the bytes shown
//! (`ftl list --master --json`) and `ssh-keygen -Y verify` can check them:
//!
//! ```text
//! ftl-revision 1                 ftl-bless 1
//! package: my_site               package: my_site
//! revision: my_site.2026…Ab      blessed: my_site.2026…Ab
//! object: my_site.2026…Ab.tgz    previous: my_site.2026…Cd   (or -)
//! size: 1234                     sequence: 1796500000
//! sha256: 9f86…                  time: 2026-12-06T13:54:11Z
//! time: 2026-12-06T13:54:11Z
//! ```
//!
//! A signed document (the object in the bucket) is the manifest followed by
//! one or more `-----BEGIN SSH SIGNATURE-----` blocks over it.

use ssh_key::{LineEnding, SshSig};

use crate::digest::{hex, parse_hex32};
use crate::names::{PackageName, RevisionName};

use super::{MAX_DOCUMENT, Refusal};

const REVISION_HEADER: &str = "ftl-revision 1";
const BLESS_HEADER: &str = "ftl-bless 1";
const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// What a revision's signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionManifest {
    pub revision: RevisionName,
    /// The object's key, relative to the bucket prefix.
    pub object: String,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The SHA-256 of a delta-ready object's index (`delta-index:`, after
    /// `sha256:`); absent for other objects, and in manifests of older ftl.
    pub delta_index: Option<[u8; 32]>,
    /// When it was signed, as written (`YYYY-MM-DDTHH:MM:SSZ`).
    pub time: String,
}

/// What a bless's signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlessManifest {
    pub package: PackageName,
    pub blessed: RevisionName,
    pub previous: Option<RevisionName>,
    /// Grows with every bless of the package; a node refuses one lower than
    /// the highest it accepted.
    pub sequence: u64,
    pub time: String,
}

/// The lines of a manifest after its header, checked against `keys` in order.
fn fields<'a>(text: &'a str, header: &str, keys: &[&str]) -> Result<Vec<&'a str>, ManifestError> {
    let bad = |why: String| ManifestError(why);
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| bad("it does not end with a newline".into()))?;
    let mut lines = body.split('\n');
    match lines.next() {
        Some(h) if h == header => {}
        Some(h) => {
            return Err(bad(format!(
                "it starts with {:?}, not {header:?}",
                h.chars().take(40).collect::<String>()
            )));
        }
        None => return Err(bad("it is empty".into())),
    }
    let mut values = Vec::new();
    for key in keys {
        let line = lines
            .next()
            .ok_or_else(|| bad(format!("its {key:?} line is missing")))?;
        let value = line
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(": "))
            .ok_or_else(|| bad(format!("expected {key:?}, found {line:?}")))?;
        values.push(value);
    }
    if lines.next().is_some() {
        return Err(bad("it has lines after \"time\"".into()));
    }
    Ok(values)
}

impl RevisionManifest {
    pub fn text(&self) -> String {
        let delta = self
            .delta_index
            .map(|d| format!("delta-index: {}\n", hex(&d)))
            .unwrap_or_default();
        format!(
            "{REVISION_HEADER}\npackage: {}\nrevision: {}\nobject: {}\nsize: {}\nsha256: {}\n{delta}time: {}\n",
            self.revision.package,
            self.revision,
            self.object,
            self.size,
            hex(&self.sha256),
            self.time
        )
    }

    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        // `delta-index` is the one optional line, in its place or nowhere.
        let delta = text.contains("\ndelta-index: ");
        let keys: &[&str] = if delta {
            &[
                "package",
                "revision",
                "object",
                "size",
                "sha256",
                "delta-index",
                "time",
            ]
        } else {
            &["package", "revision", "object", "size", "sha256", "time"]
        };
        let mut f = fields(text, REVISION_HEADER, keys)?;
        let delta_index = if delta {
            let d = f.remove(5);
            Some(
                parse_hex32(d)
                    .ok_or_else(|| ManifestError(format!("delta-index {d:?} is not valid")))?,
            )
        } else {
            None
        };
        let bad = |what: &str, v: &str| ManifestError(format!("{what} {v:?} is not valid"));
        let package: PackageName = f[0].parse().map_err(|_| bad("package", f[0]))?;
        let revision: RevisionName = f[1].parse().map_err(|_| bad("revision", f[1]))?;
        if revision.package != package {
            return Err(ManifestError(format!(
                "names package {package} but revision {revision}"
            )));
        }
        let m = Self {
            revision,
            object: f[2].to_owned(),
            size: f[3].parse().map_err(|_| bad("size", f[3]))?,
            sha256: parse_hex32(f[4]).ok_or_else(|| bad("sha256", f[4]))?,
            delta_index,
            time: f[5].to_owned(),
        };
        // Written by this very function: anything else is not canonical.
        if m.text() != text {
            return Err(ManifestError("it is not in canonical form".into()));
        }
        Ok(m)
    }
}

impl BlessManifest {
    pub fn text(&self) -> String {
        let previous = self
            .previous
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        format!(
            "{BLESS_HEADER}\npackage: {}\nblessed: {}\nprevious: {previous}\nsequence: {}\ntime: {}\n",
            self.package, self.blessed, self.sequence, self.time
        )
    }

    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let f = fields(
            text,
            BLESS_HEADER,
            &["package", "blessed", "previous", "sequence", "time"],
        )?;
        let bad = |what: &str, v: &str| ManifestError(format!("{what} {v:?} is not valid"));
        let m = Self {
            package: f[0].parse().map_err(|_| bad("package", f[0]))?,
            blessed: f[1].parse().map_err(|_| bad("blessed", f[1]))?,
            previous: match f[2] {
                "-" => None,
                p => Some(p.parse().map_err(|_| bad("previous", p))?),
            },
            sequence: f[3].parse().map_err(|_| bad("sequence", f[3]))?,
            time: f[4].to_owned(),
        };
        if m.text() != text {
            return Err(ManifestError("it is not in canonical form".into()));
        }
        Ok(m)
    }
}

/// A signature document: a manifest and the signatures over it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub manifest: String,
    pub signatures: Vec<SshSig>,
}

impl Signed {
    /// Reads a document, refusing (never panicking on) anything malformed.
    pub fn parse(text: &str) -> Result<Self, Refusal> {
        if text.len() as u64 > MAX_DOCUMENT {
            return Err(Refusal::TooLarge(text.len() as u64));
        }
        let garbage = |why: &str| Refusal::Garbage(why.to_owned());
        let start = text
            .find(&format!("\n{BEGIN}"))
            .ok_or_else(|| garbage("no SSH signature in it"))?;
        let (manifest, mut rest) = text.split_at(start + 1);
        let mut signatures = Vec::new();
        while let Some(b) = rest.find(BEGIN) {
            let e = rest[b..]
                .find(END)
                .ok_or_else(|| garbage("a signature block is not closed"))?
                + b
                + END.len();
            let sig = SshSig::from_pem(&rest[b..e])
                .map_err(|e| Refusal::Garbage(format!("a signature block is malformed ({e})")))?;
            signatures.push(sig);
            rest = &rest[e..];
        }
        if !rest.trim().is_empty() {
            return Err(garbage("there is text after the last signature"));
        }
        Ok(Self {
            manifest: manifest.to_owned(),
            signatures,
        })
    }

    /// The document as stored: the manifest, then each signature in PEM.
    pub fn text(&self) -> Result<String, ManifestError> {
        let mut out = self.manifest.clone();
        for s in &self.signatures {
            out.push_str(&self.pem(s)?);
        }
        Ok(out)
    }

    /// The signatures alone, PEM blocks one after the other (what
    /// `ssh-keygen -Y verify -s` reads, one at a time).
    pub fn pems(&self) -> Result<Vec<String>, ManifestError> {
        self.signatures.iter().map(|s| self.pem(s)).collect()
    }

    fn pem(&self, s: &SshSig) -> Result<String, ManifestError> {
        let mut pem = s
            .to_pem(LineEnding::LF)
            .map_err(|e| ManifestError(format!("cannot encode a signature: {e}")))?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        Ok(pem)
    }
}
