//! Bad input and bad surroundings: one clear line, a documented exit status.

mod common;

use common::{Backend, World, stderr};

#[test]
fn missing_variables_are_named() {
    let w = World::new(Backend::Dir);
    let out = w
        .ftl(w.tmp.path())
        .env_remove("FTL_BUCKET")
        .args(["list", "--master"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("FTL_BUCKET is not set"),
        "{}",
        stderr(&out)
    );
    let out = w
        .ftl(w.tmp.path())
        .env_remove("FTL_ROOT")
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("FTL_ROOT is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn local_commands_need_no_bucket() {
    let w = World::new(Backend::Dir);
    let root = w.node("node", &["app"]);
    let out = w
        .ftl(&root)
        .env_remove("FTL_BUCKET")
        .arg("list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(common::stdout(&out), "app\n");
}

#[test]
fn invalid_names_are_refused_before_any_io() {
    let w = World::new(Backend::Dir);
    // An unreachable bucket: a name check that did I/O first would fail differently.
    for args in [
        vec!["jump", "--master", "../x"],
        vec!["jump", "--master", "a/b.c"],
        vec!["jump", "--master", "pkg"],
        vec!["jump", "--master", ""],
        vec!["purge", "--master", "p.\u{e9}"],
        vec!["list", "--master", "a.b"],
        vec!["jump-back", "--master", "x/y"],
    ] {
        let out = w
            .ftl(w.tmp.path())
            .env("FTL_BUCKET", "file:///nonexistent/bucket")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "one line: {}",
            stderr(&out)
        );
    }
}

#[test]
fn spool_refuses_bad_files() {
    let w = World::new(Backend::Dir);
    let out = w
        .ftl(w.tmp.path())
        .args(["spool", "/nonexistent/app.tgz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/app.tgz"),
        "{}",
        stderr(&out)
    );
    let bad = w.path("my site.tgz");
    std::fs::write(&bad, "x").unwrap();
    let out = w.ftl(w.tmp.path()).arg("spool").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid package name"),
        "{}",
        stderr(&out)
    );
    let out = w
        .ftl(w.tmp.path())
        .arg("spool")
        .arg(w.tmp.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn missing_bucket() {
    let w = World::new(Backend::S3);
    let out = w
        .ftl(w.tmp.path())
        .env("FTL_BUCKET", "no-such-bucket-here")
        .args(["list", "--master"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let w = World::new(Backend::Dir);
    let out = w
        .ftl(w.tmp.path())
        .env("FTL_BUCKET", "file:///nonexistent/dir")
        .args(["list", "--master"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn wrong_credentials() {
    let w = World::new(Backend::S3);
    // moto accepts any credentials: the in-process server only.
    common::in_process(&w);
    let out = w
        .ftl(w.tmp.path())
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .args(["list", "--master"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("denied"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn server_that_does_not_answer() {
    let w = World::new(Backend::S3);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let out = w
        .ftl(w.tmp.path())
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .args(["list", "--master"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    assert!(started.elapsed().as_secs() < 30);
}
