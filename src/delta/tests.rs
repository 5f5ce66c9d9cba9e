use super::index::{Entry, Index, Piece, VERSION};
use super::node::{GAP, MAX_RUN, Run, runs};
use super::tar::Kind;
use super::write::{PIECE, Written, write_with};
use super::{Codec, DeltaError};
use crate::digest::hex;

fn piece(offset: u64, length: u64) -> Piece {
    Piece {
        offset,
        length,
        size: 1024,
        sha256: "ab".repeat(32),
    }
}

fn entry(path: &str, first: usize) -> Entry {
    Entry {
        path: path.into(),
        kind: Kind::File,
        mode: 0o644,
        size: 1,
        sha256: Some("cd".repeat(32)),
        header: "00".repeat(512),
        first,
        count: 1,
    }
}

/// Entries of one piece each, `len` bytes apart from `gaps`.
fn index(pieces: &[(u64, u64)]) -> Index {
    Index {
        version: VERSION,
        codec: Codec::Zstd,
        entries: (0..pieces.len())
            .map(|i| entry(&format!("f{i}"), i))
            .collect(),
        pieces: pieces.iter().map(|(o, l)| piece(*o, *l)).collect(),
    }
}

#[test]
fn neighbouring_pieces_are_one_range_distant_ones_two() {
    let ix = index(&[(0, 100), (100, 100), (200 + GAP, 100), (300 + 3 * GAP, 100)]);
    let all = runs(&ix, &[false; 4]);
    assert_eq!(
        all,
        vec![
            Run {
                from: 0,
                to: 300 + GAP,
                pieces: 0..3
            },
            Run {
                from: 300 + 3 * GAP,
                to: 400 + 3 * GAP,
                pieces: 3..4
            },
        ]
    );
    // A reused entry between two fetched ones that lie close comes along.
    let close = index(&[(0, 100), (100, 100), (200, 100)]);
    assert_eq!(
        runs(&close, &[false, true, false]),
        vec![Run {
            from: 0,
            to: 300,
            pieces: 0..3
        }]
    );
    // Nothing to fetch: no range.
    assert_eq!(runs(&ix, &[true; 4]), Vec::<Run>::new());
}

#[test]
fn a_range_stays_within_its_cap() {
    let step = MAX_RUN / 4;
    let ix = index(&(0..10).map(|i| (i * step, step)).collect::<Vec<_>>());
    let all = runs(&ix, &[false; 10]);
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.iter().all(|r| r.to - r.from <= MAX_RUN), "{all:?}");
}

#[test]
fn the_index_travels_in_either_container() {
    for codec in [Codec::Zstd, Codec::Gzip] {
        let mut ix = index(&[(0, 10), (10, 10)]);
        ix.codec = codec;
        // Large enough that gzip needs several members for it.
        for i in 0..3000 {
            ix.entries.push(Entry {
                path: format!("dir/{i:05}-{}", "x".repeat(i % 90)),
                ..entry("", 0)
            });
        }
        let raw = ix.encode().unwrap();
        assert_eq!(Index::decode(codec, &raw).unwrap(), ix);
        let other = match codec {
            Codec::Zstd => Codec::Gzip,
            Codec::Gzip => Codec::Zstd,
        };
        assert!(Index::decode(other, &raw).is_err());
        let mut bad = raw.clone();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        assert!(Index::decode(codec, &bad).is_err());
    }
}

#[test]
fn pieces_outside_the_archive_or_not_an_entrys_own_are_refused() {
    let ix = index(&[(0, 100), (100, 100)]);
    ix.check(200).unwrap();
    assert!(matches!(ix.check(150), Err(DeltaError::Range(_))));
    let mut overlapping = ix.clone();
    overlapping.pieces[1].offset = 50;
    assert!(matches!(overlapping.check(200), Err(DeltaError::Range(_))));
    let mut shared = ix.clone();
    shared.entries[1].first = 0;
    assert!(matches!(shared.check(200), Err(DeltaError::Index(_))));
    let mut short = ix.clone();
    short.entries[0].size = 5000;
    assert!(matches!(short.check(200), Err(DeltaError::Index(_))));
}

/// A ustar archive of `files` (name, mode, content), each header made here
/// so that the bytes never depend on a tool's version.
fn tar_of(files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, mode, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(*mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 1_700_000_000);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Files of every size class a piece boundary cares about: empty, small,
/// text, random, and larger than a piece (several pieces), in a fixed order.
fn spool_input() -> Vec<(String, u32, Vec<u8>)> {
    let mut seed = 20u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (seed >> 33) as u8
            })
            .collect()
    };
    let mut files = vec![("empty".to_owned(), 0o644, Vec::new())];
    for i in 0..40 {
        let data = if i % 2 == 0 {
            format!("line {i}\n").repeat(100 + i * 37).into_bytes()
        } else {
            random(1000 + i * 1013)
        };
        files.push((format!("f{i:02}"), 0o644, data));
    }
    files.push(("big".to_owned(), 0o755, random(PIECE + 12_345)));
    files.push(("text".to_owned(), 0o600, b"x".repeat(300_000)));
    files
}

/// The delta-ready rewrite of `spool_input`, with `threads` compressing.
fn rewrite(codec: Codec, threads: usize) -> (Vec<u8>, Written) {
    let dir = tempfile::tempdir().unwrap();
    let tar = tar_of(&spool_input());
    let src = dir.path().join("in");
    let packed = match codec {
        Codec::Zstd => zstd::bulk::compress(&tar, 3).unwrap(),
        Codec::Gzip => {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        }
    };
    std::fs::write(&src, packed).unwrap();
    let dest = dir.path().join("out");
    let written = write_with(&src, codec, &dest, threads).unwrap();
    (std::fs::read(&dest).unwrap(), written)
}

#[test]
fn spool_writes_the_same_object_on_any_number_of_threads() {
    use sha2::{Digest, Sha256};
    // The SHA-256 of the object the one-thread rewrite made for this input
    // before compression went to several threads (since with the index at
    // zstd level 9, not 19; the pieces unchanged): the object must not
    // change with the way it is made (nodes' indexes, GNU tar, signatures).
    let expected = [
        (
            Codec::Zstd,
            "ace144ae422d2ccff7431d51f938668e467308f674b79398557a5fbd1053ce58",
        ),
        (
            Codec::Gzip,
            "e15e2b9b435a52e6d87b3962959ea3b1ee81a5bd99e870de88e1c83c9bebe678",
        ),
    ];
    for (codec, want) in expected {
        let (one, w1) = rewrite(codec, 1);
        assert_eq!(hex(&Sha256::digest(&one)), want, "{codec:?}");
        let (many, w) = rewrite(codec, 3);
        assert!(one == many, "{codec:?} on 3 threads");
        assert_eq!(w, w1);
        // The digests handed to the upload are those of the file.
        assert_eq!(w1.sha256, <[u8; 32]>::from(Sha256::digest(&one)));
        assert_eq!(w1.md5, <[u8; 16]>::from(md5::Md5::digest(&one)));
    }
}

/// An index entry for a local file `name` holding `data`.
fn local_entry(name: &str, data: &[u8]) -> Entry {
    use sha2::{Digest, Sha256};
    Entry {
        path: name.into(),
        size: data.len() as u64,
        sha256: Some(hex(&Sha256::digest(data))),
        ..entry(name, 0)
    }
}

#[test]
fn a_reused_file_is_used_as_checked_or_fails_safe() {
    use super::node::{Budget, IN_MEMORY, Source, Taken, Writer, check_local, copy_local};
    let dir = tempfile::tempdir().unwrap();
    let budget = Budget::new(64 << 20);
    // A small file: the bytes used are the bytes checked, whatever the
    // application writes afterwards.
    let small = b"checked bytes\n".repeat(100);
    std::fs::write(dir.path().join("small"), &small).unwrap();
    let e = local_entry("small", &small);
    let memory = || Taken::now(&budget, small.len() as u64);
    let Source::Local(held) = check_local(dir.path(), &e, memory()) else {
        panic!("an unchanged small file is reused from memory");
    };
    std::fs::write(dir.path().join("small"), b"X".repeat(small.len())).unwrap();
    assert!(held.bytes == small);
    // Checked without memory for it: read again when written.
    assert!(matches!(check_local(dir.path(), &e, None), Source::Fetch));
    std::fs::write(dir.path().join("small"), &small).unwrap();
    assert!(matches!(
        check_local(dir.path(), &e, None),
        Source::LocalLarge(_)
    ));
    // Changed before the check: fetched.
    std::fs::write(dir.path().join("small"), b"X".repeat(small.len())).unwrap();
    assert!(matches!(
        check_local(dir.path(), &e, memory()),
        Source::Fetch
    ));

    // A large file is read again when written, and checked again: changed
    // between the check and the copy, the copy fails (the install is tried
    // again), and never passes the changed bytes as the index's.
    let large: Vec<u8> = (0..IN_MEMORY + 4096).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("large"), &large).unwrap();
    let e = local_entry("large", &large);
    assert!(matches!(
        check_local(dir.path(), &e, None),
        Source::LocalLarge(_)
    ));
    let mut changed = large.clone();
    changed[IN_MEMORY as usize] ^= 1;
    std::fs::write(dir.path().join("large"), &changed).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut out = Writer::new(&tx);
    let copied = copy_local(dir.path(), &e, None, &mut out);
    assert!(
        matches!(&copied, Err(DeltaError::Local(e)) if e.to_string().contains("changed while being read")),
        "{copied:?}"
    );
    drop(out);
    drop(tx);
    let mut passed = 0;
    while let Some(chunk) = rx.blocking_recv() {
        passed += chunk.unwrap().len();
    }
    assert!(
        passed < large.len(),
        "the changed file was not passed whole"
    );
    // Unchanged, it is copied whole.
    std::fs::write(dir.path().join("large"), &large).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut out = Writer::new(&tx);
    copy_local(dir.path(), &e, None, &mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    drop(tx);
    let mut got = Vec::new();
    while let Some(chunk) = rx.blocking_recv() {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == large);
}

#[test]
fn the_install_record_decides_without_reading() {
    use super::node::{Base, Known, bases};
    use crate::digest::parse_hex32;
    use crate::fileid::FileId;
    let dir = tempfile::tempdir().unwrap();
    let files: [(&str, &[u8]); 5] = [
        ("same", b"unchanged"),
        ("changed", b"old bytes"),
        ("touched", b"unchanged"),
        ("unknown", b"unchanged"),
        ("other-size", b"short"),
    ];
    let mut entries = Vec::new();
    for (i, (name, data)) in files.iter().enumerate() {
        std::fs::write(dir.path().join(name), data).unwrap();
        entries.push(Entry {
            first: i,
            ..local_entry(name, b"unchanged")
        });
    }
    let index = Index {
        entries,
        ..index(&[(0, 10), (10, 10), (20, 10), (30, 10), (40, 10)])
    };
    let id = |name: &str| FileId::of(&std::fs::symlink_metadata(dir.path().join(name)).unwrap());
    let sha = |data: &[u8]| {
        use sha2::{Digest, Sha256};
        parse_hex32(&hex(&Sha256::digest(data))).unwrap()
    };
    let mut known = Known::new();
    known.insert("same".into(), (id("same"), sha(b"unchanged")));
    // Recorded with the bytes it had: the index wants others.
    known.insert("changed".into(), (id("changed"), sha(b"old bytes")));
    // The application wrote it since (another ctime): the record says
    // nothing of it any more.
    let stale = FileId {
        ctime: id("touched").ctime - 1,
        ..id("touched")
    };
    known.insert("touched".into(), (stale, sha(b"unchanged")));
    let got = bases(&index, dir.path(), &known);
    assert_eq!(
        got,
        vec![
            Base::Same(id("same")),
            Base::Fetch,
            Base::Check,
            Base::Check,
            Base::Fetch,
        ]
    );
}

#[test]
fn a_proven_identity_spares_the_second_hash_and_nothing_else() {
    use super::node::{Writer, copy_local};
    use crate::fileid::FileId;
    let dir = tempfile::tempdir().unwrap();
    let data = b"the file's bytes\n".repeat(1000);
    let path = dir.path().join("f");
    std::fs::write(&path, &data).unwrap();
    let copy = |e: &Entry, proven: Option<FileId>| {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut out = Writer::new(&tx);
        let r = copy_local(dir.path(), e, proven, &mut out).and_then(|()| out.flush());
        drop(out);
        drop(tx);
        let mut got = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            got.extend_from_slice(&chunk.unwrap());
        }
        r.map(|()| got)
    };
    // An entry whose SHA-256 the bytes do not have: only a copy that does
    // not hash passes it.
    let wrong = Entry {
        sha256: Some("00".repeat(32)),
        ..local_entry("f", &data)
    };
    let id = FileId::of(&std::fs::metadata(&path).unwrap());
    assert!(copy(&wrong, Some(id)).unwrap() == data);
    // Without proof, or with an identity the file no longer has, it is
    // hashed again and refused.
    assert!(copy(&wrong, None).is_err());
    let other = FileId {
        ctime: id.ctime + 1,
        ..id
    };
    assert!(copy(&wrong, Some(other)).is_err());
    // Hashed again, the right bytes still pass.
    assert!(copy(&local_entry("f", &data), Some(other)).unwrap() == data);
}

#[test]
fn a_long_range_is_asked_for_in_parts_that_cover_it() {
    use super::node::split;
    assert_eq!(split(10, 20), vec![(10, 20)]);
    assert_eq!(split(0, 1 << 20), vec![(0, 1 << 20)]);
    for (from, len) in [
        (7, (1 << 20) + 1),
        (100, 5 << 19),
        (0, 3 << 20),
        (9, 64 << 20),
    ] {
        let parts = split(from, from + len);
        assert!(parts.len() > 1 && parts.len() <= 4, "{parts:?}");
        assert_eq!(parts[0].0, from);
        assert_eq!(parts.last().unwrap().1, from + len);
        for w in parts.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
    }
    assert_eq!(split(0, 5 << 19).len(), 3);
}
