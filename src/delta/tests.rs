use super::index::{Entry, Index, Piece, VERSION};
use super::node::{GAP, MAX_RUN, Run, runs};
use super::tar::Kind;
use super::{Codec, DeltaError};

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
