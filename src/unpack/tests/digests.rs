//! The digest covers the whole download; corrupt, truncated and failed downloads.

use md5::Md5;

use super::*;
use crate::names::md5_tag;

#[tokio::test]
async fn digest_mismatch_is_refused() {
    let data = compress(Format::TarGz, &normal_archive()).await;
    let s = Scene::new();
    let err = s
        .unpack(
            data.clone(),
            "tgz",
            &Expected::Sha256([7; 32]),
            &Limits::default(),
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");

    let md5: [u8; 16] = Md5::digest(&data).into();
    let right = md5_tag(&md5);
    let s = Scene::new();
    s.unpack(
        data.clone(),
        "tgz",
        &Expected::Md5Tag(right.clone()),
        &Limits::default(),
    )
    .await
    .expect("right md5 tag");
    let wrong = if right == "00" { "01" } else { "00" };
    let s = Scene::new();
    let err = s
        .unpack(
            data,
            "tgz",
            &Expected::Md5Tag(wrong.to_owned()),
            &Limits::default(),
        )
        .await
        .expect_err("must fail");
    assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&right), "{err}");
}

#[tokio::test]
async fn the_digest_covers_bytes_after_the_archive() {
    // A plain tar with trailing padding: the digest is over the whole object.
    let mut data = tar(&[file("a", b"a", 0o644)]);
    data.extend(vec![0; 10_000]);
    let s = Scene::new();
    s.unpack(data.clone(), "tar", &sha256(&data), &Limits::default())
        .await
        .expect("full digest");
    let s = Scene::new();
    let err = s
        .unpack(
            data.clone(),
            "tar",
            &sha256(&data[..data.len() - 1]),
            &Limits::default(),
        )
        .await
        .expect_err("prefix digest");
    assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn corrupt_and_truncated_bodies() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let data = compress(Format::TarGz, &normal_archive()).await;
        let truncated = data[..data.len() - 100].to_vec();
        let s = Scene::new();
        let err = s
            .unpack(
                truncated.clone(),
                "tgz",
                &Expected::Nothing,
                &Limits::default(),
            )
            .await
            .expect_err("truncated");
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
        // With a digest, the damage is reported as what it is.
        let s = Scene::new();
        let err = s
            .unpack(truncated, "tgz", &sha256(&data), &Limits::default())
            .await
            .expect_err("truncated");
        assert!(matches!(err, UnpackError::DigestMismatch { .. }), "{err}");

        let s = Scene::new();
        let err = s
            .unpack(
                b"not gzip at all".repeat(100),
                "tgz",
                &Expected::Nothing,
                &Limits::default(),
            )
            .await
            .expect_err("garbage");
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_failed_download_is_a_download_error() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let data = compress(Format::TarGz, &normal_archive()).await;
        let half = Bytes::copy_from_slice(&data[..data.len() / 2]);
        let chunks = vec![Ok(half), Err(io::Error::other("connection reset"))];
        let s = Scene::new();
        let err = unpack_with(
            Box::pin(futures::stream::iter(chunks)),
            "app",
            "tgz",
            &s.dest,
            &sha256(&data),
            &Limits::default(),
            threads,
        )
        .await
        .expect_err("must fail");
        assert!(matches!(&err, UnpackError::Download { .. }), "{err}");
        assert_eq!(err.to_string(), "reading the download: connection reset");
    }
}
