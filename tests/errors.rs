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

#[test]
fn remove_of_a_revision_not_here_does_not_suggest_sync() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let out = w
        .ftl(&root)
        .args(["remove", "app.2026120600000AA"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = common::error_line(&out);
    assert_eq!(
        line,
        "ftl: error: app.2026120600000AA: not on this node, nothing to remove \
         (`ftl list app` lists its revisions)"
    );
    // A jump to it is another matter: a sync may bring it.
    let out = w
        .ftl(&root)
        .args(["jump", "app.2026120600000AA"])
        .output()
        .unwrap();
    assert!(
        common::error_line(&out)
            .contains("app.2026120600000AA: not on this node (run `ftl sync` first)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_values_from_the_environment_name_the_variable() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    for (var, value, args) in [
        ("FTL_LOCK_TIMEOUT", "abc", vec!["sync"]),
        ("FTL_HOOK_TIMEOUT", "-1", vec!["jump", "app.x"]),
        ("FTL_LOG_FORMAT", "xml", vec!["list"]),
        ("FTL_CONNECTIONS", "0", vec!["list", "--master"]),
        ("FTL_MAX_ENTRIES", "many", vec!["sync"]),
    ] {
        let out = w.ftl(&root).env(var, value).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!(
                "error: invalid value '{value}' for {var} (which sets --"
            )),
            "{var}: {err}"
        );
        // The usage line is the command's plain one.
        assert!(
            err.contains(&format!("Usage: ftl {} [OPTIONS]", args[0])),
            "{err}"
        );
    }
    // Typed on the command line, the flag is named as usual.
    let out = w
        .ftl(&root)
        .env("FTL_LOCK_TIMEOUT", "abc")
        .args(["sync", "--lock-timeout", "abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("for '--lock-timeout <SECS>'")
            && !stderr(&out).contains("FTL_LOCK_TIMEOUT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_do_not_repeat_options_from_the_environment() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    // FTL_BUCKET and FTL_ROOT are set, as on any configured box.
    for (args, usage) in [
        (vec!["jump"], "Usage: ftl jump [OPTIONS] <REVISION>"),
        (
            vec!["sync", "--bogus"],
            "Usage: ftl sync [OPTIONS] [PACKAGES]...",
        ),
        (vec!["spool"], "Usage: ftl spool [OPTIONS] <FILE>"),
    ] {
        let out = w.ftl(&root).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        let line = err
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_default();
        assert_eq!(line, usage, "{err}");
    }
}

#[test]
fn missing_bucket_and_root_are_named_at_once() {
    let w = World::new(Backend::Dir);
    for cmd in ["sync", "status"] {
        let out = w
            .ftl(w.tmp.path())
            .env_remove("FTL_BUCKET")
            .env_remove("FTL_ROOT")
            .arg(cmd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert_eq!(
            common::error_line(&out),
            "ftl: error: FTL_BUCKET and FTL_ROOT are not set (set them, or pass --bucket and --root)"
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn a_missing_bucket_directory_is_named_with_the_fix() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let dir = w.path("no/such/bucket");
    let out = w
        .ftl(&root)
        .env("FTL_BUCKET", format!("file://{}", dir.display()))
        .args(["list", "--master"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        common::error_line(&out),
        format!(
            "ftl: error: the bucket directory {0} does not exist (create it: mkdir -p {0})",
            dir.display()
        )
    );
}

#[test]
fn remove_says_it_keeps_the_previous_revision() {
    let w = World::new(Backend::Dir);
    let out = w
        .ftl(w.tmp.path())
        .args(["remove", "--help"])
        .output()
        .unwrap();
    let help = common::stdout(&out);
    assert!(
        help.contains("never the current or the previous one"),
        "{help}"
    );
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `ftl remove REV`"))
        .expect("README lists remove");
    assert!(row.contains("previous"), "{row}");
}
