//! Tests of the whole pipeline, through `unpack_with`: this file builds the archives
//! (by hand, since the builder refuses hostile paths) and the scene they are unpacked
//! in; the tests themselves are grouped by subject beside it.

use std::cell::Cell;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_compression::tokio::bufread::{BzEncoder, GzipEncoder, XzEncoder, ZstdEncoder};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;

use super::extract::WRITE_BUFFER;
use super::*;

mod digests;
mod hostile;
mod limits;
mod names;
mod round_trips;

// ---- building archives by hand (the builder refuses hostile paths) ----

#[derive(Clone)]
struct E {
    name: Vec<u8>,
    kind: u8,
    data: Vec<u8>,
    link: Vec<u8>,
    mode: u32,
}

fn file(name: &str, data: &[u8], mode: u32) -> E {
    E {
        name: name.into(),
        kind: b'0',
        data: data.to_vec(),
        link: vec![],
        mode,
    }
}
fn dir(name: &str) -> E {
    E {
        kind: b'5',
        ..file(name, b"", 0o755)
    }
}
fn symlink(name: &str, target: &str) -> E {
    E {
        kind: b'2',
        link: target.into(),
        ..file(name, b"", 0o777)
    }
}
fn hardlink(name: &str, target: &str) -> E {
    E {
        kind: b'1',
        link: target.into(),
        ..file(name, b"", 0o644)
    }
}
fn special(name: &str, kind: u8) -> E {
    E {
        kind,
        ..file(name, b"", 0o644)
    }
}
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // "<len> key=value\n", where len counts itself.
    let rest = format!(" {key}={value}\n");
    let mut len = rest.len() + 1;
    while format!("{len}{rest}").len() != len {
        len += 1;
    }
    format!("{len}{rest}").into_bytes()
}
fn pax(kind: u8, key: &str, value: &str) -> E {
    E {
        kind,
        data: pax_record(key, value),
        ..file("PaxHeaders/x", b"", 0o644)
    }
}
fn gnu_longname(name: &str) -> E {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    E {
        kind: b'L',
        data,
        ..file("././@LongLink", b"", 0o644)
    }
}

const MTIME: u64 = 1_600_000_000;

fn octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}", width = field.len() - 1);
    field[..digits.len()].copy_from_slice(digits.as_bytes());
}

fn header(e: &E) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..e.name.len()].copy_from_slice(&e.name);
    octal(&mut h[100..108], u64::from(e.mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], e.data.len() as u64);
    octal(&mut h[136..148], MTIME);
    h[156] = e.kind;
    h[157..157 + e.link.len()].copy_from_slice(&e.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&header(e));
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

async fn compress(format: Format, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let result = match format {
        Format::Tar | Format::Plain => {
            out = data.to_vec();
            Ok(0)
        }
        Format::TarGz | Format::Gz => GzipEncoder::new(data).read_to_end(&mut out).await,
        Format::TarZst | Format::Zst => ZstdEncoder::new(data).read_to_end(&mut out).await,
        Format::TarXz | Format::Xz => XzEncoder::new(data).read_to_end(&mut out).await,
        Format::TarBz2 | Format::Bz2 => BzEncoder::new(data).read_to_end(&mut out).await,
    };
    result.expect("compress");
    out
}

fn sha256(data: &[u8]) -> Expected {
    Expected::Sha256(Sha256::digest(data).into())
}

fn body(data: Vec<u8>) -> impl Stream<Item = io::Result<Bytes>> + Unpin {
    // Odd chunk size, so that chunk and block boundaries never line up.
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(777)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// `unpack_with`, decompressing on a thread of its own (`Threads::Pipelined`).
async fn unpack(
    body: impl Stream<Item = io::Result<Bytes>> + Unpin,
    package: &str,
    ext: &str,
    dest: &Path,
    expected: &Expected,
    limits: &Limits,
) -> Result<Unpacked, UnpackError> {
    unpack_with(
        body,
        package,
        ext,
        dest,
        expected,
        limits,
        Threads::Pipelined,
    )
    .await
}

thread_local! {
    /// How `Scene::unpack` decompresses (tests of codecs run both ways).
    static THREADS: Cell<Threads> = const { Cell::new(Threads::Pipelined) };
}
const BOTH_WAYS: [Threads; 2] = [Threads::Pipelined, Threads::Shared];

/// A parent directory holding the staging directory, so that anything written
/// outside the staging directory shows up in the parent's listing.
struct Scene {
    parent: TempDir,
    dest: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let parent = tempfile::tempdir().expect("tempdir");
        let dest = parent.path().join("stage");
        fs::create_dir(&dest).expect("mkdir stage");
        Self { parent, dest }
    }

    fn outside(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.parent.path())
            .expect("list parent")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "stage")
            .collect();
        names.sort();
        names
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    async fn unpack(
        &self,
        data: Vec<u8>,
        ext: &str,
        expected: &Expected,
        limits: &Limits,
    ) -> Result<Unpacked, UnpackError> {
        let threads = THREADS.get();
        unpack_with(
            body(data),
            "app",
            ext,
            &self.dest,
            expected,
            limits,
            threads,
        )
        .await
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

// ---- the archive of the round trips ----

fn big_data() -> Vec<u8> {
    // Larger than the write buffer, not trivially compressible.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..(WRITE_BUFFER * 5 / 2))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect()
}

fn normal_archive() -> Vec<u8> {
    tar(&[
        pax(b'g', "comment", "global header, to be skipped"),
        dir("top/"),
        file("top/a.txt", b"hello", 0o644),
        file("top/sub/deep/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        file("top/suid", b"x", 0o4755),
        file("top/sgid-sticky", b"y", 0o3640),
        file("./top/dotted", b"dot", 0o600),
        file("top/empty", b"", 0o644),
        file("top/big", &big_data(), 0o644),
        symlink("top/link", "sub/deep/run.sh"),
        symlink("top/sub/deep/up", "../../a.txt"),
        hardlink("top/hard", "top/a.txt"),
        dir("top/emptydir/"),
    ])
}

fn check_normal(s: &Scene, got: &Unpacked) {
    assert_eq!(got.entries, 13);
    assert_eq!(
        got.bytes_out,
        (5 + 18 + 1 + 1 + 3 + big_data().len()) as u64
    );
    assert_eq!(fs::read(s.path("top/a.txt")).expect("a"), b"hello");
    assert_eq!(fs::read(s.path("top/big")).expect("big"), big_data());
    assert_eq!(fs::read(s.path("top/dotted")).expect("dotted"), b"dot");
    assert_eq!(fs::read(s.path("top/empty")).expect("empty"), b"");
    assert_eq!(mode_of(&s.path("top/sub/deep/run.sh")), 0o755);
    assert_eq!(mode_of(&s.path("top/a.txt")), 0o644);
    assert_eq!(mode_of(&s.path("top/suid")), 0o755);
    assert_eq!(mode_of(&s.path("top/sgid-sticky")), 0o640);
    assert_eq!(mode_of(&s.path("top/dotted")), 0o600);
    assert!(s.path("top/emptydir").is_dir());
    assert_eq!(
        fs::read_link(s.path("top/link")).expect("link"),
        Path::new("sub/deep/run.sh")
    );
    assert_eq!(
        fs::read(s.path("top/link")).expect("via link"),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(fs::read(s.path("top/sub/deep/up")).expect("up"), b"hello");
    let a = fs::metadata(s.path("top/a.txt")).expect("a");
    let hard = fs::metadata(s.path("top/hard")).expect("hard");
    assert_eq!((a.dev(), a.ino()), (hard.dev(), hard.ino()));
    assert_eq!(a.mtime(), MTIME as i64);
    assert_eq!(s.outside(), Vec::<String>::new());
}
