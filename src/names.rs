//! Package names, revision ids and revision names: validation, generation, order.
//! Pure: no I/O here.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid package name {0:?}: only letters, digits, '_' and '-' are allowed")]
    Package(String),
    #[error("invalid revision id {0:?}: only letters, digits, '_' and '-' are allowed")]
    Id(String),
    #[error("invalid revision name {0:?}: expected <package>.<id>, e.g. my_site.2026112643200Ab")]
    Revision(String),
    #[error(
        "cannot infer a package name from file name {0:?}: expected <package>.<ext>, e.g. my_site.tgz"
    )]
    FileName(String),
}

/// A refused value as an error message quotes it: cut long ones short, so that
/// a 100 KB argument still gives one readable line.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn valid_word(s: &str) -> bool {
    // 128 is far beyond any real name and keeps keys and paths short.
    !s.is_empty() && s.len() <= 128 && s.chars().all(is_name_char)
}

/// A package: `[A-Za-z0-9_-]+`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PackageName(String);

impl PackageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PackageName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if valid_word(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Package(shown(s)))
        }
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A revision id. Ids made by ftl sort lexically in time order; any
/// `[A-Za-z0-9_-]+` is accepted when reading.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId(String);

/// The alphabet of ftl 0.2.x (note: 64 symbols, '0' appears twice).
const ID_ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz0";

/// The first two base64 symbols (standard bit order) of an MD5 digest.
pub fn md5_tag(md5: &[u8; 16]) -> String {
    let a = md5[0] >> 2;
    let b = ((md5[0] & 0b11) << 4) | (md5[1] >> 4);
    [
        ID_ALPHABET[a as usize] as char,
        ID_ALPHABET[b as usize] as char,
    ]
    .iter()
    .collect()
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian): Howard
/// Hinnant's algorithm. Revision ids and log timestamps both use it.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date: the inverse of
/// [`civil_from_days`] (same algorithm), for times read back from keys.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`utc`]: `YYYY-MM-DDTHH:MM:SSZ` as seconds since the epoch;
/// `None` when it is not one.
pub(crate) fn parse_utc(time: &str) -> Option<u64> {
    let well_formed = time.len() == 20
        && time.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if !well_formed {
        return None;
    }
    let n = |r: std::ops::Range<usize>| time.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(i64::from(y), mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    u64::try_from(secs).ok()
}

/// A node's name in its reports (`FTL_NODE_ID`, by default the host name):
/// `[A-Za-z0-9._-]`, at most 128 characters, so that it is one field of a
/// report's key and can be named in an IAM policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeId {
    /// Why it is refused; the caller names where the value came from.
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("it is empty");
        }
        if s.len() > 128 {
            return Err("it is longer than 128 characters");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("only letters, digits, '.', '_' and '-' are allowed");
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (y, m, d) = civil_from_days(days);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

impl RevisionId {
    /// `YYYYMMDD` + seconds of the day (5 digits) + 2 symbols of the content's MD5:
    /// the format of ftl 0.2.x.
    pub fn generate(at: SystemTime, md5: &[u8; 16]) -> Self {
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        Self(format!("{y:04}{m:02}{d:02}{sod:05}{}", md5_tag(md5)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The two MD5 symbols at the end of an id, when it has the 0.2.x shape.
    pub fn md5_tag(&self) -> Option<&str> {
        let s = &self.0;
        (s.len() == 15 && s[..13].bytes().all(|b| b.is_ascii_digit())).then(|| &s[13..])
    }
}

impl FromStr for RevisionId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if valid_word(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Id(shown(s)))
        }
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<package>.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionName {
    pub package: PackageName,
    pub id: RevisionId,
}

impl RevisionName {
    pub fn new(package: PackageName, id: RevisionId) -> Self {
        Self { package, id }
    }
}

impl FromStr for RevisionName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Revision(shown(s));
        let (p, i) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            package: p.parse().map_err(|_| bad())?,
            id: i.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for RevisionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.package, self.id)
    }
}

/// Package name and extension of a file to spool: the base name up to its
/// first `.`, and everything after it (`my_site.tar.gz` → `my_site`, `tar.gz`).
pub fn split_file_name(file_name: &str) -> Result<(PackageName, String), NameError> {
    let bad = || NameError::FileName(shown(file_name));
    let (p, ext) = file_name.split_once('.').ok_or_else(bad)?;
    let package: PackageName = p.parse()?;
    let ext_ok = !ext.is_empty() && ext.len() <= 64 && ext.split('.').all(valid_word);
    if !ext_ok {
        return Err(bad());
    }
    Ok((package, ext.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn id_matches_02x_format() {
        // 2026-11-26 12:00:00 UTC
        let at = UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 43_200);
        let md5 = [
            0b0010_1000,
            0b1010_0000,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let id = RevisionId::generate(at, &md5);
        // 0b001010 = 10 -> 'A'; 0b00_1010 = 10 -> 'A'
        assert_eq!(id.as_str(), "2026112643200AA");
        assert_eq!(id.md5_tag(), Some("AA"));
    }

    #[test]
    fn md5_tag_uses_the_02x_alphabet() {
        let mut md5 = [0u8; 16];
        md5[0] = 0xff;
        md5[1] = 0xff;
        assert_eq!(md5_tag(&md5), "00"); // index 63 is '0'
        md5[0] = 0b1001_0011;
        md5[1] = 0b0111_0000;
        // 100100 = 36 -> '_', 11 0111 = 55 -> 's'
        assert_eq!(md5_tag(&md5), "_s");
    }

    #[test]
    fn dates_around_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn ids_sort_in_time_order() {
        let md5 = [0xffu8; 16];
        let a = RevisionId::generate(UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 9), &md5);
        let b = RevisionId::generate(
            UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 10_000),
            &md5,
        );
        let c = RevisionId::generate(UNIX_EPOCH + Duration::from_secs(1_795_737_600), &md5);
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn revision_names_are_validated() {
        let r: RevisionName = "my_site.2026112643200Ab".parse().unwrap();
        assert_eq!(r.package.as_str(), "my_site");
        assert_eq!(r.id.as_str(), "2026112643200Ab");
        for bad in [
            "", "pkg", "../x", "a/b.c", "a.b/c", "a..b", ".x", "x.", "a.b.c", "ü.1", "a.b\0",
        ] {
            assert!(bad.parse::<RevisionName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_names_split_at_first_dot() {
        let (p, e) = split_file_name("my_site.tar.gz").unwrap();
        assert_eq!((p.as_str(), e.as_str()), ("my_site", "tar.gz"));
        assert!(split_file_name("my site.tgz").is_err());
        assert!(split_file_name("nodot").is_err());
        assert!(split_file_name("x.").is_err());
        assert!(split_file_name(".tgz").is_err());
    }
}
