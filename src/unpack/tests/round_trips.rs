//! Archives of every format unpack to what they hold.

use bytes::{Buf, BytesMut};

use super::*;
use crate::unpack::decode::DECODED_CHUNK;

#[tokio::test]
async fn round_trip_every_tar_format() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let plain = normal_archive();
        for ext in ["tar", "tgz", "tar.zst", "txz", "tar.bz2"] {
            let data = compress(format_for(ext), &plain).await;
            let s = Scene::new();
            let got = s
                .unpack(data.clone(), ext, &sha256(&data), &Limits::default())
                .await
                .unwrap_or_else(|e| panic!("{ext}: {e}"));
            assert_eq!(got.bytes_in, data.len() as u64, "{ext}");
            check_normal(&s, &got);
        }
    }
}

#[tokio::test]
async fn builder_archive_with_long_names() {
    let long = format!("{}/file.txt", "d".repeat(150));
    let mut builder = tokio_tar::Builder::new(Vec::new());
    let mut header = tokio_tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o640);
    builder
        .append_data(&mut header, &long, &b"long"[..])
        .await
        .expect("append");
    let data = builder.into_inner().await.expect("finish");
    let s = Scene::new();
    s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
        .await
        .expect("unpack");
    assert_eq!(fs::read(s.path(&long)).expect("long"), b"long");
    assert_eq!(mode_of(&s.path(&long)), 0o640);
}

/// Archives written by GNU tar, in its own and in the PAX format (long names,
/// links, a `./` prefix on every name). Skipped where there is no `tar`.
#[tokio::test]
async fn gnu_tar_archives() {
    let src = tempfile::tempdir().expect("tempdir");
    let long_dir = "l".repeat(120);
    fs::create_dir_all(src.path().join(&long_dir).join("sub")).expect("mkdir");
    let long_file = format!("{long_dir}/sub/{}.txt", "n".repeat(110));
    fs::write(src.path().join(&long_file), b"long").expect("write");
    fs::write(src.path().join("run.sh"), b"#!/bin/sh\n").expect("write");
    fs::set_permissions(src.path().join("run.sh"), Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink(&long_file, src.path().join("link")).expect("symlink");
    fs::hard_link(src.path().join("run.sh"), src.path().join("hard")).expect("link");
    for format in ["gnu", "pax"] {
        let out = tempfile::tempdir().expect("tempdir");
        let archive = out.path().join("a.tgz");
        let status = std::process::Command::new("tar")
            .arg(format!("--format={format}"))
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(src.path())
            .arg(".")
            .status();
        // GNU tar is on every Debian system, and .ci/run installs it.
        assert!(
            status.is_ok_and(|s| s.success()),
            "GNU tar (--format={format}) is needed by this test"
        );
        let data = fs::read(&archive).expect("read archive");
        let s = Scene::new();
        s.unpack(data, "tgz", &Expected::Nothing, &Limits::default())
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(fs::read(s.path(&long_file)).expect("long"), b"long");
        assert_eq!(fs::read(s.path("link")).expect("link"), b"long");
        assert_eq!(mode_of(&s.path("hard")), 0o755);
        let run = fs::metadata(s.path("run.sh")).expect("run");
        let hard = fs::metadata(s.path("hard")).expect("hard");
        assert_eq!(run.ino(), hard.ino(), "{format}");
    }
}

#[tokio::test]
async fn multi_member_gzip() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let plain = normal_archive();
        let (a, b) = plain.split_at(plain.len() / 2 + 123);
        let mut data = compress(Format::Gz, a).await;
        data.extend(compress(Format::Gz, b).await);
        let s = Scene::new();
        let got = s
            .unpack(data.clone(), "tgz", &sha256(&data), &Limits::default())
            .await
            .expect("unpack");
        check_normal(&s, &got);
    }
}

#[tokio::test]
async fn multi_frame_zstd() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        let plain = normal_archive();
        let (a, b) = plain.split_at(1000);
        let mut data = compress(Format::Zst, a).await;
        data.extend(compress(Format::Zst, b).await);
        let s = Scene::new();
        let got = s
            .unpack(data, "tar.zst", &Expected::Nothing, &Limits::default())
            .await
            .expect("unpack");
        check_normal(&s, &got);
    }
}

#[tokio::test]
async fn single_compressed_files_are_decompressed() {
    for threads in BOTH_WAYS {
        THREADS.set(threads);
        for (ext, stored) in [("jar.gz", "app.jar"), ("gz", "app"), ("txt.zst", "app.txt")] {
            let content = b"PK\x03\x04 not really a jar".repeat(100);
            let data = compress(format_for(ext), &content).await;
            let s = Scene::new();
            let got = s
                .unpack(data.clone(), ext, &sha256(&data), &Limits::default())
                .await
                .unwrap_or_else(|e| panic!("{ext}: {e}"));
            assert_eq!(fs::read(s.path(stored)).expect("stored"), content, "{ext}");
            assert_eq!(got.bytes_out, content.len() as u64);
            assert_eq!(got.bytes_in, data.len() as u64);
            assert_eq!(got.entries, 1);
            assert_eq!(fs::read_dir(&s.dest).expect("ls").count(), 1);
        }
    }
}

#[tokio::test]
async fn plain_file_is_stored_as_is() {
    let content = big_data();
    let s = Scene::new();
    let got = s
        .unpack(
            content.clone(),
            "jar",
            &sha256(&content),
            &Limits::default(),
        )
        .await
        .expect("unpack");
    assert_eq!(fs::read(s.path("app.jar")).expect("jar"), content);
    assert_eq!(got.bytes_in, content.len() as u64);
    assert_eq!(got.bytes_out, content.len() as u64);
}

#[tokio::test]
async fn overwriting_never_follows_links() {
    let s = Scene::new();
    let data = tar(&[
        file("x", b"first", 0o644),
        file("x", b"second", 0o755),
        file("other", b"keep me", 0o644),
        symlink("y", "other"),
        file("y", b"replaces the link", 0o644),
        hardlink("h", "other"),
        file("h", b"replaces the hard link", 0o644),
        symlink("x", "other"),
    ]);
    s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
        .await
        .expect("unpack");
    assert_eq!(fs::read_link(s.path("x")).expect("x"), Path::new("other"));
    assert_eq!(fs::read(s.path("other")).expect("other"), b"keep me");
    assert_eq!(fs::read(s.path("y")).expect("y"), b"replaces the link");
    assert!(fs::symlink_metadata(s.path("y")).expect("y").is_file());
    assert_eq!(fs::read(s.path("h")).expect("h"), b"replaces the hard link");
}

#[tokio::test]
async fn harmless_links_are_allowed() {
    let s = Scene::new();
    let data = tar(&[
        symlink("self", "."),
        symlink("d/up", "../x"),
        symlink("d/e/upup", "../../x"),
        symlink("dangling", "not/yet/there"),
        dir("l/"),
        file("l/inside", b"ok", 0o644),
    ]);
    s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
        .await
        .expect("unpack");
    assert_eq!(fs::read_link(s.path("self")).expect("self"), Path::new("."));
    assert_eq!(
        fs::read_link(s.path("d/e/upup")).expect("upup"),
        Path::new("../../x")
    );
}

#[tokio::test]
async fn a_directory_entry_replaces_an_earlier_symlink() {
    let s = Scene::new();
    let data = tar(&[
        dir("sub/"),
        symlink("l", "sub"),
        dir("l/"),
        file("l/x", b"x", 0o644),
    ]);
    s.unpack(data, "tar", &Expected::Nothing, &Limits::default())
        .await
        .expect("unpack");
    assert!(fs::symlink_metadata(s.path("l")).expect("l").is_dir());
    assert!(!s.path("sub/x").exists());
}

#[test]
fn recycled_chunks_keep_their_allocation() {
    let mut chunk = BytesMut::with_capacity(DECODED_CHUNK);
    chunk.resize(DECODED_CHUNK, 7);
    let start = chunk.as_ptr();
    let mut sent = chunk.freeze();
    sent.advance(DECODED_CHUNK);
    let mut back = sent.try_into_mut().expect("unique");
    back.clear();
    back.reserve(DECODED_CHUNK);
    assert_eq!(back.as_ptr(), start);
    assert!(back.capacity() >= DECODED_CHUNK);
}
