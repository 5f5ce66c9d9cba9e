//! How a downloaded object is verified: the digest it must have, as `Bucket::open`
//! finds it and the unpack checks it, and digests as hex text.

use std::fmt::Write as _;

/// How a downloaded object is to be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// SHA-256 of the whole object, as recorded at spool time.
    Sha256([u8; 32]),
    /// Spooled by 0.2.x: only the two MD5 symbols at the end of its revision id.
    Md5Tag(String),
    /// No check (the object cannot be verified).
    Nothing,
}

/// `bytes` as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A SHA-256 from its 64 hex digits; `None` for anything else.
pub(crate) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digest() {
        let h = hex(&[0xab; 32]);
        assert_eq!(parse_hex32(&h), Some([0xab; 32]));
        assert_eq!(parse_hex32("zz"), None);
    }
}
