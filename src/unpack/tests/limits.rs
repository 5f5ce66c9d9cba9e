//! The limits stop bombs and absurd archives.

use super::*;
use crate::unpack::extract::MAX_METADATA;

#[tokio::test]
async fn entry_count_limit() {
    let entries: Vec<E> = (0..5)
        .map(|i| file(&format!("f{i}"), b"x", 0o644))
        .collect();
    let s = Scene::new();
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = s
        .unpack(tar(&entries), "tar", &Expected::Nothing, &limits)
        .await
        .expect_err("too many");
    assert!(
        matches!(
            err,
            UnpackError::TooLarge {
                what: "entries",
                limit: 3
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn size_limits_stop_bombs() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let limits = Limits {
            max_unpacked_bytes: 1 << 20,
            ..Limits::default()
        };
        let zeros = vec![0u8; 4 << 20];
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("declared size", tar(&[file("big", &zeros, 0o644)]), "tgz"),
            (
                "trailing zeros after the archive",
                {
                    let mut t = tar(&[file("small", b"x", 0o644)]);
                    t.extend_from_slice(&zeros);
                    t
                },
                "tgz",
            ),
            ("single file", zeros.clone(), "gz"),
        ];
        for (label, plain, ext) in cases {
            let data = compress(format_for(ext), &plain).await;
            assert!(data.len() < 1 << 20, "{label}: the bomb must be small");
            let s = Scene::new();
            let err = s
                .unpack(data, ext, &Expected::Nothing, &limits)
                .await
                .expect_err(label);
            assert!(
                matches!(
                    err,
                    UnpackError::TooLarge {
                        what: "unpacked bytes",
                        ..
                    }
                ),
                "{label}: {err}"
            );
            let on_disk: u64 = fs::read_dir(&s.dest)
                .expect("ls")
                .map(|e| e.expect("e").metadata().expect("md").len())
                .sum();
            assert!(on_disk <= 1 << 20, "{label}: wrote {on_disk}");
        }
    }
}

#[tokio::test]
async fn huge_header_data_is_refused_before_it_fills_memory() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        // A GNU long name or PAX record over the cap: tokio_tar would hold all of it.
        let huge = "a".repeat(4 << 20);
        for (label, first) in [
            ("gnu longname", gnu_longname(&huge)),
            ("pax", pax(b'x', "comment", &huge)),
        ] {
            let data = compress(Format::Zst, &tar(&[first, file("f", b"x", 0o644)])).await;
            let s = Scene::new();
            let err = s
                .unpack(data, "tar.zst", &Expected::Nothing, &Limits::default())
                .await
                .expect_err(label);
            assert!(
                matches!(
                    err,
                    UnpackError::TooLarge {
                        limit: MAX_METADATA,
                        ..
                    }
                ),
                "{label}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn payloads_of_non_files_are_skipped() {
    // A global PAX header and a directory carrying data are fine and stream past.
    let big = vec![b'x'; 3 << 20];
    let data = tar(&[
        E {
            data: big.clone(),
            ..pax(b'g', "comment", "x")
        },
        E {
            data: big,
            ..dir("d/")
        },
        file("d/f", b"f", 0o644),
    ]);
    let s = Scene::new();
    s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
        .await
        .expect("unpack");
    assert_eq!(fs::read(s.path("d/f")).expect("f"), b"f");
}
