//! OpenSSH's `allowed_signers` file, as `ssh-keygen -Y verify -f` and git's
//! `gpg.ssh.allowedSignersFile` read it: one key a line,
//!
//! ```text
//! deploy@example.com,ci@example.com namespaces="ftl-*@ftl.invalid",valid-before="20270101Z" ssh-ed25519 AAAA… comment
//! ```
//!
//! principals, then optional options (`namespaces=`, `valid-after=`,
//! `valid-before=`), the key type and the base64 key. `cert-authority` lines
//! (keys that sign certificates) are refused when the file is read: ftl
//! verifies plain keys only, and a trusted CA silently doing nothing would be
//! worse than an error.

use std::path::Path;

use ssh_key::public::KeyData;

use super::{Refusal, fingerprint};

#[derive(Debug, thiserror::Error)]
pub enum AllowedError {
    #[error("cannot read the allowed signers file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {why}")]
    Line {
        path: String,
        line: usize,
        why: String,
    },
}

/// One key line.
#[derive(Debug, Clone)]
pub struct Line {
    /// The principals field as written (`a@x,b@y`).
    pub principals: String,
    key: KeyData,
    /// Pattern list; `None`: every namespace.
    namespaces: Option<String>,
    /// Seconds since the epoch.
    valid_after: Option<u64>,
    valid_before: Option<u64>,
}

/// The signers a node trusts (`FTL_ALLOWED_SIGNERS`).
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    lines: Vec<Line>,
    /// SHA-256 of the file's text, hex: changes when the file does.
    digest: String,
}

impl AllowedSigners {
    pub fn read(path: &Path) -> Result<Self, AllowedError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AllowedError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, why)| AllowedError::Line {
            path: shown,
            line,
            why,
        })
    }

    /// The file's text; an error names the line (1-based) and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut lines = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            lines.push(parse_line(raw).map_err(|why| (n + 1, why))?);
        }
        use sha2::Digest;
        let digest = crate::digest::hex(&sha2::Sha256::digest(text.as_bytes()));
        Ok(Self { lines, digest })
    }

    /// Changes when the file's text does.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The line that lets `key` sign in `namespace` at `now`. `Err(None)`:
    /// the key is on no line; `Err(Some(why))`: it is, but no line allows it.
    pub(super) fn allowing(
        &self,
        key: &KeyData,
        namespace: &str,
        now: u64,
    ) -> Result<&Line, Option<Refusal>> {
        let mut why = None;
        for line in self.lines.iter().filter(|l| l.key == *key) {
            let fingerprint = fingerprint(key);
            if let Some(ns) = &line.namespaces
                && !pattern_list_matches(ns, namespace)
            {
                why.get_or_insert(Refusal::NamespaceNotAllowed {
                    principals: line.principals.clone(),
                    fingerprint,
                    namespace: namespace.to_owned(),
                });
                continue;
            }
            let outside = match (line.valid_after, line.valid_before) {
                (Some(a), _) if now < a => Some(format!("valid after {}", crate::names::utc(a))),
                (_, Some(b)) if now >= b => Some(format!("valid before {}", crate::names::utc(b))),
                _ => None,
            };
            if let Some(w) = outside {
                why = Some(Refusal::OutsideValidity {
                    principals: line.principals.clone(),
                    fingerprint,
                    why: w,
                });
                continue;
            }
            return Ok(line);
        }
        Err(why)
    }
}

/// Splits at unquoted whitespace; quotes stay in the tokens.
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (i, c) in line.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    out.push(&line[s..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if let Some(s) = start {
        out.push(&line[s..]);
    }
    out
}

fn is_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
}

fn parse_line(line: &str) -> Result<Line, String> {
    let t = tokens(line);
    let principals = t
        .first()
        .ok_or("no principals")?
        .trim_matches('"')
        .to_owned();
    if principals.is_empty() {
        return Err("empty principals".into());
    }
    let (options, rest) = match t.get(1) {
        Some(o) if !is_key_type(o) => (Some(*o), &t[2..]),
        _ => (None, t.get(1..).unwrap_or(&[])),
    };
    let (kind, blob) = match rest {
        [kind, blob, ..] => (*kind, *blob),
        _ => return Err("expected principals, [options], key type and key".into()),
    };
    let key = ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}"))
        .map_err(|e| format!("not a public key ({kind}): {e}"))?;
    let mut parsed = Line {
        principals,
        key: key.key_data().clone(),
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    for opt in options.map(split_options).unwrap_or_default() {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"'))),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("cert-authority", _) => {
                return Err(
                    "cert-authority is not supported by ftl: list the signing keys themselves"
                        .into(),
                );
            }
            ("namespaces", Some(v)) => parsed.namespaces = Some(v.to_owned()),
            ("valid-after", Some(v)) => parsed.valid_after = Some(timestamp(v)?),
            ("valid-before", Some(v)) => parsed.valid_before = Some(timestamp(v)?),
            _ => return Err(format!("unknown option {opt:?}")),
        }
    }
    Ok(parsed)
}

/// Options are separated by commas outside quotes.
fn split_options(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// `YYYYMMDD[HHMM[SS]][Z]`: with `Z` UTC, without it the local time zone
/// (as OpenSSH reads it).
pub(crate) fn timestamp(v: &str) -> Result<u64, String> {
    let bad = || format!("{v:?} is not a time (YYYYMMDD[HHMM[SS]][Z])");
    let (digits, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (v, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).map_or(Ok(0), |s| s.parse::<i64>());
    let (y, mo, d) = (
        num(0..4).map_err(|_| bad())?,
        num(4..6).map_err(|_| bad())?,
        num(6..8).map_err(|_| bad())?,
    );
    let (h, mi, s) = (
        num(8..10).map_err(|_| bad())?,
        num(10..12).map_err(|_| bad())?,
        num(12..14).map_err(|_| bad())?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let secs = if utc {
        let day = |v: i64| u32::try_from(v).map_err(|_| bad());
        crate::names::days_from_civil(y, day(mo)?, day(d)?) * 86_400 + h * 3600 + mi * 60 + s
    } else {
        local_time(y, mo, d, h, mi, s).ok_or_else(bad)?
    };
    u64::try_from(secs).map_err(|_| bad())
}

/// A local time as seconds since the epoch, by the C library's `mktime`.
fn local_time(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<i64> {
    let int = |v: i64| libc::c_int::try_from(v).ok();
    // SAFETY: an all-zero `tm` is a valid value of the plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = int(y - 1900)?;
    tm.tm_mon = int(mo - 1)?;
    tm.tm_mday = int(d)?;
    tm.tm_hour = int(h)?;
    tm.tm_min = int(mi)?;
    tm.tm_sec = int(s)?;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, exclusively borrowed struct; mktime only
    // reads and normalises it.
    let t = unsafe { libc::mktime(&mut tm) };
    #[allow(clippy::useless_conversion)] // time_t is not i64 everywhere
    (t != -1).then_some(i64::from(t))
}

/// OpenSSH's pattern lists: comma-separated `*`/`?` patterns, a `!` before
/// one negates it; a negated match wins over any other.
pub(crate) fn pattern_list_matches(list: &str, s: &str) -> bool {
    let mut matched = false;
    for p in list.split(',').map(str::trim) {
        match p.strip_prefix('!') {
            Some(neg) if glob(neg.as_bytes(), s.as_bytes()) => return false,
            Some(_) => {}
            None => matched |= glob(p.as_bytes(), s.as_bytes()),
        }
    }
    matched
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}
