//! The tar stream as its raw entries, for splitting it into pieces at spool:
//! each entry is every header block that belongs to it (PAX and GNU long-name
//! extensions included, byte for byte), then its data and padding. Nothing is
//! interpreted beyond what the index records; the node's unpack applies the
//! tar rules to the same bytes.

use std::io::{self, Read};

pub(super) const BLOCK: usize = 512;

/// An entry's header blocks and what the index records of it; its data
/// (`size` bytes, then padding to a block) follows in the stream.
pub(super) struct RawEntry {
    pub header: Vec<u8>,
    pub kind: Kind,
    pub path: String,
    pub mode: u32,
    /// Bytes of data in the stream after the header (before padding).
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Link,
    Other,
}

/// The bytes of padding after `size` bytes of data.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TarError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a tar stream: {0}")]
    Bad(String),
}

fn octal(field: &[u8]) -> Option<u64> {
    // GNU base-256 for large values: the high bit of the first byte set.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|b| *b != 0)
        .filter(|b| *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Reads exactly `buf.len()` bytes; false at a clean end before the first.
fn read_block(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, TarError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(TarError::Bad("it ends inside a header block".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// The PAX records of an extended header that the index needs.
fn pax(data: &[u8], path: &mut Option<Vec<u8>>, size: &mut Option<u64>) {
    let mut rest = data;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            return;
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return;
        };
        if len <= space || len > rest.len() {
            return;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            let (k, v) = (&record[..eq], &record[eq + 1..]);
            match k {
                b"path" => *path = Some(v.to_vec()),
                b"size" => *size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
                _ => {}
            }
        }
        rest = &rest[len..];
    }
}

/// The next entry's header (its data is left in `r`), or `None` at the
/// end-of-archive block (what follows is the trailer).
pub(super) fn next_entry(r: &mut impl Read) -> Result<Option<RawEntry>, TarError> {
    let mut header = Vec::new();
    let mut long_path: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    loop {
        let mut block = [0u8; BLOCK];
        if !read_block(r, &mut block)? {
            if header.is_empty() {
                return Ok(None);
            }
            return Err(TarError::Bad("it ends after an extension header".into()));
        }
        if block.iter().all(|b| *b == 0) {
            if header.is_empty() {
                return Ok(None);
            }
            return Err(TarError::Bad(
                "an extension header is followed by the end".into(),
            ));
        }
        let size = octal(&block[124..136])
            .ok_or_else(|| TarError::Bad("a header has an unreadable size".into()))?;
        let kind = block[156];
        header.extend_from_slice(&block);
        match kind {
            // Extensions: their data belongs to the header of the entry that follows.
            b'x' | b'g' | b'L' | b'K' => {
                if size > 1 << 20 {
                    return Err(TarError::Bad("an extension header over 1 MiB".into()));
                }
                let padded = (size + padding(size)) as usize;
                let mut data = vec![0u8; padded];
                if padded > 0 && !read_block(r, &mut data)? {
                    return Err(TarError::Bad("it ends inside an extension header".into()));
                }
                let body = &data[..size as usize];
                match kind {
                    b'x' => pax(body, &mut pax_path, &mut pax_size),
                    b'L' => long_path = Some(cstr(body).to_vec()),
                    _ => {}
                }
                header.extend_from_slice(&data);
            }
            b'S' => {
                return Err(TarError::Bad(
                    "it has a GNU sparse entry, which a delta-ready object cannot hold \
                     (make the archive without --sparse)"
                        .into(),
                ));
            }
            _ => {
                let path = match pax_path.or(long_path) {
                    Some(p) => p,
                    None => {
                        let name = cstr(&block[0..100]);
                        let prefix = if &block[257..262] == b"ustar" {
                            cstr(&block[345..500])
                        } else {
                            &[]
                        };
                        if prefix.is_empty() {
                            name.to_vec()
                        } else {
                            [prefix, b"/", name].concat()
                        }
                    }
                };
                let mode = octal(&block[100..108])
                    .ok_or_else(|| TarError::Bad("a header has an unreadable mode".into()))?;
                let path = String::from_utf8_lossy(&path).into_owned();
                let kind = match kind {
                    b'0' | 0 | b'7' if path.ends_with('/') => Kind::Dir,
                    b'0' | 0 | b'7' => Kind::File,
                    b'5' => Kind::Dir,
                    b'2' => Kind::Symlink,
                    b'1' => Kind::Link,
                    _ => Kind::Other,
                };
                return Ok(Some(RawEntry {
                    header,
                    kind,
                    path,
                    mode: (mode & 0o7777) as u32,
                    size: pax_size.unwrap_or(size),
                }));
            }
        }
    }
}
