//! Hostile input, one test a case: command-line arguments, environment values,
//! node layouts, archives, hooks. Each asserts what a user would check: a clear
//! one-line error and a documented exit status, or a safe success; nothing
//! written outside the revision directory; nothing half-installed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{
    Backend, World, error_line, figure, id_of, leftovers, link_target, ok, output_within, run,
    stderr, stdout,
};

const LIMIT: Duration = Duration::from_secs(120);

/// Fails with `code`, one error line containing every `needle`; returns the line.
fn fails(out: &Output, code: i32, needles: &[&str]) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    let line = error_line(out);
    for n in needles {
        assert!(line.contains(n), "{n:?} not in {line:?}");
    }
    figure("hostile_inputs", 1);
    line
}

// ---------------------------------------------------------------------------------
// Command-line arguments

fn usage_error(args: &[&str]) {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let out = run(&w, &root, args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    figure("hostile_inputs", 1);
}

#[test]
fn cli_dotdot_in_revision_names() {
    for args in [
        ["jump", "../x.2026112643200Ab"],
        ["jump", "app/../../x"],
        ["remove", "..\u{2e}.x"],
        ["jump", "app.."],
    ] {
        usage_error(&args);
    }
}

#[test]
fn cli_dotdot_in_package_names() {
    for args in [
        vec!["jump-back", ".."],
        vec!["sync", ".."],
        vec!["clean", "../app"],
        vec!["list", ".."],
    ] {
        usage_error(&args);
    }
}

#[test]
fn cli_slash_in_names() {
    for args in [
        vec!["jump", "a/b.c"],
        vec!["remove", "app.x/y"],
        vec!["sync", "/etc"],
        vec!["jump-back", "app/"],
    ] {
        usage_error(&args);
    }
}

#[test]
fn cli_unicode_names() {
    // Accented, Cyrillic look-alike, right-to-left override, zero-width space.
    for name in [
        "app.\u{e9}t\u{e9}",
        "\u{430}pp.2026112643200Ab",
        "app.\u{202e}bA0023462110262",
        "app\u{200b}.2026112643200Ab",
    ] {
        usage_error(&["jump", name]);
    }
}

#[test]
fn cli_control_characters_are_not_echoed_raw() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    // A terminal escape (clear screen) and a newline that would forge a log line.
    for name in ["app.\u{1b}[2Jx", "app.x\nINFO app.y is now current"] {
        let out = run(&w, &root, &["jump", name]);
        let line = fails(&out, 2, &["invalid"]);
        assert!(!line.contains('\u{1b}'), "{line:?}");
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn cli_very_long_names_give_a_short_error() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let long = "a".repeat(100_000);
    for arg in [long.clone(), format!("app.{long}"), format!("{long}.1")] {
        let out = run(&w, &root, &["jump", &arg]);
        let line = fails(&out, 2, &["invalid"]);
        assert!(line.len() < 400, "the error echoes {} bytes", line.len());
    }
}

#[test]
fn cli_long_but_valid_names_work_end_to_end() {
    let w = World::new(Backend::Dir);
    let pkg = "p".repeat(128);
    let root = w.node("n", &[pkg.as_str()]);
    let file = common::package(w.tmp.path(), &format!("{pkg}.tgz"), &[("f", "x", 0o644)]);
    let rev = w.spool(&file);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    ok(&w, &root, &["sync"]);
    assert_eq!(link_target(&root, &pkg, "current"), Some(id_of(&rev)));
    // One character more is refused, before any I/O.
    let out = run(&w, &root, &["jump-back", &"p".repeat(129)]);
    fails(&out, 2, &["invalid package name"]);
}

#[test]
fn cli_revision_not_installed() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let out = run(&w, &root, &["jump", &format!("app.{}", "9".repeat(128))]);
    fails(&out, 1, &["not on this node"]);
    let out = run(&w, &root, &["remove", "app.2026112643200Ab"]);
    fails(&out, 1, &["not on this node"]);
}

#[test]
fn cli_bad_numbers() {
    for args in [
        vec!["sync", "--jobs", "0"],
        vec!["sync", "--jobs", "65"],
        vec!["sync", "--jobs", "-1"],
        vec!["clean", "--keep", "-1"],
        vec!["clean", "--keep", "1e3"],
        vec!["list", "--lock-timeout", "soon"],
        vec!["sync", "--max-entries", "-5"],
        vec!["sync", "--max-unpacked-bytes", "99999999999999999999999"],
        vec!["sync", "--hook-timeout", "1.5"],
    ] {
        usage_error(&args);
    }
}

#[test]
fn cli_spool_of_things_that_are_not_files() {
    let w = World::new(Backend::Dir);
    // A FIFO would block a reader forever; a device never ends.
    let fifo = w.path("app.tgz");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dir = w.path("dir.tgz");
    std::fs::create_dir(&dir).unwrap();
    let dev = w.path("zero.tgz");
    std::os::unix::fs::symlink("/dev/zero", &dev).unwrap();
    for p in [&fifo, &dir, &dev] {
        let started = Instant::now();
        let out = output_within(w.ftl(w.tmp.path()).arg("spool").arg(p), LIMIT);
        fails(&out, 1, &["not a regular file"]);
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    assert_eq!(ok(&w, w.tmp.path(), &["list", "--master"]), "");
}

#[test]
fn cli_spool_of_badly_named_files() {
    let w = World::new(Backend::Dir);
    for name in [
        ".tgz",
        "a b.tgz",
        "app\n.tgz",
        "caf\u{e9}.tgz",
        ".hidden.tgz",
    ] {
        let p = w.path(name);
        std::fs::write(&p, "x").unwrap();
        let out = output_within(w.ftl(w.tmp.path()).arg("spool").arg(&p), LIMIT);
        fails(&out, 2, &["invalid"]);
    }
    assert_eq!(ok(&w, w.tmp.path(), &["list", "--master"]), "");
}

// ---------------------------------------------------------------------------------
// Environment values

#[test]
fn env_bucket_values_are_checked() {
    let w = World::new(Backend::Dir);
    for bad in [
        "s3://bucket",
        "ab",
        "bucket/../x",
        "file://relative/dir",
        "bu cket",
        "bucket/pre\u{7}fix",
        &"b".repeat(64),
        "https://evil.example/bucket",
    ] {
        let out = output_within(
            w.ftl(w.tmp.path())
                .env("FTL_BUCKET", bad)
                .args(["list", "--master"]),
            LIMIT,
        );
        fails(&out, 2, &["FTL_BUCKET"]);
    }
}

#[test]
fn env_bucket_empty_is_missing() {
    let w = World::new(Backend::Dir);
    let out = output_within(
        w.ftl(w.tmp.path())
            .env("FTL_BUCKET", "")
            .args(["list", "--master"]),
        LIMIT,
    );
    fails(&out, 2, &["FTL_BUCKET is not set"]);
}

#[test]
fn env_bucket_directory_that_is_a_file() {
    let w = World::new(Backend::Dir);
    let file = w.path("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = output_within(
        w.ftl(w.tmp.path())
            .env("FTL_BUCKET", format!("file://{}", file.display()))
            .args(["list", "--master"]),
        LIMIT,
    );
    fails(&out, 1, &["is not a directory"]);
}

#[test]
fn env_endpoint_garbage() {
    let w = World::new(Backend::S3);
    for bad in [
        "not a url",
        "http://[::1",
        "ftp://127.0.0.1:1/",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:1/\u{1}",
    ] {
        let out = output_within(
            w.ftl(w.tmp.path())
                .env("AWS_ENDPOINT_URL", bad)
                .args(["list", "--master"]),
            LIMIT,
        );
        assert_ne!(out.status.code(), Some(0), "{bad:?}");
        let line = error_line(&out);
        assert!(!stderr(&out).contains("panicked"), "{bad:?}: {line}");
        figure("hostile_inputs", 1);
    }
}

/// Values that end up in the signed Authorization header: the SDK panics on a
/// control character there, so ftl must refuse them first.
#[test]
fn env_header_bound_values_with_control_characters() {
    let w = World::new(Backend::S3);
    for (var, value) in [
        ("AWS_REGION", "us-east-1\n"),
        ("AWS_REGION", "eu\u{7f}"),
        ("AWS_DEFAULT_REGION", "a\u{1}b"),
        ("AWS_ACCESS_KEY_ID", "AKIA\nX"),
        ("AWS_ACCESS_KEY_ID", "AKIA\u{1}X"),
        ("AWS_SESSION_TOKEN", "tok\nen"),
    ] {
        let mut cmd = w.ftl(w.tmp.path());
        if var == "AWS_DEFAULT_REGION" {
            cmd.env_remove("AWS_REGION");
        }
        let out = output_within(cmd.env(var, value).args(["list", "--master"]), LIMIT);
        assert!(
            !stderr(&out).contains("panicked"),
            "{var}: {}",
            stderr(&out)
        );
        fails(&out, 2, &[var.trim_start_matches("AWS_DEFAULT_")]);
    }
}

#[test]
fn env_root_is_a_file() {
    let w = World::new(Backend::Dir);
    let file = w.path("rootfile");
    std::fs::write(&file, "x").unwrap();
    for cmd in [&["sync"][..], &["list"], &["clean"]] {
        let out = run(&w, &file, cmd);
        fails(&out, 1, &["not a directory"]);
    }
}

#[test]
fn env_root_is_a_dangling_symlink() {
    let w = World::new(Backend::Dir);
    let link = w.path("rootlink");
    std::os::unix::fs::symlink(w.path("nowhere"), &link).unwrap();
    let out = run(&w, &link, &["sync"]);
    fails(&out, 1, &["does not exist"]);
    assert!(!w.path("nowhere").exists(), "not created");
}

#[test]
fn env_root_is_a_symlink_to_a_directory() {
    let w = World::new(Backend::Dir);
    let real = w.node("real", &["app"]);
    let link = w.path("rootlink");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let rev = w.spool_files("app.tgz", &[("f", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    ok(&w, &link, &["sync"]);
    assert_eq!(link_target(&real, "app", "current"), Some(id_of(&rev)));
}

#[test]
fn env_root_relative() {
    let w = World::new(Backend::Dir);
    let root = w.node("rel", &["app"]);
    let rev = w.spool_files("app.tgz", &[("f", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = output_within(
        w.ftl(&root)
            .current_dir(w.tmp.path())
            .env("FTL_ROOT", "rel")
            .arg("sync"),
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&rev)));
}

#[test]
fn env_root_empty_is_missing() {
    let w = World::new(Backend::Dir);
    let out = output_within(w.ftl(w.tmp.path()).env("FTL_ROOT", "").arg("list"), LIMIT);
    // clap refuses an empty path itself, naming the flag.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--root"), "{}", stderr(&out));
    figure("hostile_inputs", 1);
}

#[test]
fn env_huge_timeouts_do_not_overflow() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", &[("post-sync.sh", "echo hooked", 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let max = u64::MAX.to_string();
    let out = output_within(
        w.ftl(&root)
            .env("FTL_LOCK_TIMEOUT", &max)
            .env("FTL_HOOK_TIMEOUT", &max)
            .arg("sync"),
        LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("hooked"));
    figure("hostile_inputs", 1);
}

#[test]
fn env_bad_log_settings() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let out = output_within(w.ftl(&root).env("FTL_LOG_FORMAT", "xml").arg("list"), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A filter that does not parse is not worth failing a deploy for.
    let out = output_within(w.ftl(&root).env("FTL_LOG", "[[[=!").arg("list"), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "app\n");
    figure("hostile_inputs", 2);
}

// ---------------------------------------------------------------------------------
// Node layouts

/// A world with one blessed revision of `app` and a node with the package.
fn blessed(files: &[(&str, &str, u32)]) -> (World, PathBuf, String) {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", files);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    (w, root, rev)
}

#[test]
fn layout_current_is_a_directory() {
    let (w, root, _) = blessed(&[("f", "1", 0o644)]);
    std::fs::create_dir_all(root.join("app/current")).unwrap();
    std::fs::write(root.join("app/current/precious"), "mine").unwrap();
    let out = run(&w, &root, &["sync"]);
    fails(&out, 1, &["current", "not a symlink"]);
    assert_eq!(
        std::fs::read_to_string(root.join("app/current/precious")).unwrap(),
        "mine",
        "never replaced"
    );
}

#[test]
fn layout_current_dangles_after_a_manual_rm() {
    let (w, root, rev) = blessed(&[("f", "1", 0o644)]);
    ok(&w, &root, &["sync"]);
    // An operator deletes the active revision by hand.
    std::fs::remove_dir_all(root.join("app/revs").join(id_of(&rev))).unwrap();
    let out = run(&w, &root, &["sync"]);
    assert!(out.status.success(), "sync repairs it: {}", stderr(&out));
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&rev)));
    assert!(root.join("app/current/f").is_file());
    figure("hostile_inputs", 1);
}

#[test]
fn layout_revision_path_taken_by_a_file() {
    let (w, root, rev) = blessed(&[("f", "1", 0o644)]);
    std::fs::create_dir_all(root.join("app/revs")).unwrap();
    std::fs::write(root.join("app/revs").join(id_of(&rev)), "squatter").unwrap();
    let out = run(&w, &root, &["sync"]);
    fails(&out, 1, &[&rev]);
    assert_eq!(link_target(&root, "app", "current"), None);
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());
}

#[test]
fn layout_package_directory_is_a_symlink() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &[]);
    let elsewhere = w.path("other-disk/app");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.join("app")).unwrap();
    let rev = w.spool_files("app.tgz", &[("f", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    ok(&w, &root, &["sync"]);
    assert!(elsewhere.join("revs").join(id_of(&rev)).join("f").is_file());
    assert_eq!(
        std::fs::read_link(root.join("app")).unwrap(),
        elsewhere,
        "the operator's link is kept"
    );
    assert_eq!(ok(&w, &root, &["list"]), "app\n");
    figure("hostile_inputs", 1);
}

#[test]
fn layout_package_symlinks_that_lead_nowhere() {
    let (w, root, _) = blessed(&[("f", "1", 0o644)]);
    let n = w.node("m", &[]);
    std::os::unix::fs::symlink(w.path("gone"), n.join("app")).unwrap();
    std::os::unix::fs::symlink("loop", n.join("loop")).unwrap();
    std::fs::write(n.join("file"), "x").unwrap();
    // Not packages: a plain sync serves nothing (and says so).
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ok(&w, &n, &["list"]), "");
    // Named explicitly: a clear error.
    let out = run(&w, &n, &["sync", "app"]);
    fails(&out, 1, &["app", "no directory"]);
    assert!(!w.path("gone").exists());
    drop(root);
}

// ---------------------------------------------------------------------------------
// Archives

/// Makes `name` in a fresh directory with python3's tarfile: `body` gets `t` (the
/// open archive, gzip), `add(name, data=b'x', **attrs)` and `out` (a directory
/// outside the root that must stay empty).
fn archive(w: &World, name: &str, mode: &str, body: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = w.path(&format!("arch-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let script = format!(
        "import tarfile, io, sys, os\n\
         out = {out:?}\n\
         t = tarfile.open({path:?}, {mode:?}, format=tarfile.PAX_FORMAT)\n\
         def add(name, data=b'x', **kw):\n    i = tarfile.TarInfo(name)\n    i.size = len(data)\n    i.mode = kw.pop('mode', 0o644)\n    [setattr(i, k, v) for k, v in kw.items()]\n    t.addfile(i, io.BytesIO(data) if i.isreg() else None)\n\
         {body}\n\
         t.close()\n",
        out = outside(w).display().to_string(),
        path = path.display().to_string(),
    );
    common::python(&script);
    path
}

/// A directory outside every root, where an escape would land.
fn outside(w: &World) -> PathBuf {
    let p = w.path("outside");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Every path under the world (symlinks not followed) with its size, except the
/// node's revision directories and lock (where sync may write).
fn snapshot(w: &World, root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![w.tmp.path().to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.starts_with(root) {
                // Only the root's own dir is watched; revs/ may change, and
                // so may ftl's records (.ftl-failed: the refused revision;
                // .ftl-wanted: what the bucket wants here; .ftl-installed:
                // the last install; .ftl-files: its files' identity).
                if p.file_name().is_some_and(|n| {
                    n == "revs"
                        || n == ".lock"
                        || n == ".ftl-seen"
                        || n == ".ftl-failed"
                        || n == ".ftl-wanted"
                        || n == ".ftl-installed"
                        || n == ".ftl-files"
                }) || p
                    .file_name()
                    .is_some_and(|n| n == "current" || n == "previous")
                {
                    continue;
                }
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, if m.is_dir() { 0 } else { m.len() });
        }
    }
    out
}

/// Spools `file` as `app`, blesses it and syncs a fresh node; asserts the sync
/// fails with a line containing each of `needles`, nothing was installed and
/// nothing changed outside the node's `revs/`.
fn refused(w: &World, file: &Path, env: &[(&str, &str)], needles: &[&str]) -> String {
    let root = w.node("n", &["app"]);
    let rev = w.spool(file);
    ok(w, w.tmp.path(), &["jump", "--master", &rev]);
    let before = snapshot(w, &root);
    let mut cmd = w.ftl(&root);
    cmd.arg("sync");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output_within(&mut cmd, LIMIT);
    let line = fails(&out, 1, needles);
    assert!(line.contains(&rev), "names the revision: {line}");
    assert_eq!(
        snapshot(w, &root),
        before,
        "something changed outside revs/"
    );
    assert_eq!(
        std::fs::read_dir(root.join("app/revs"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "nothing installed, no staging left"
    );
    assert_eq!(link_target(&root, "app", "current"), None);
    assert_eq!(std::fs::read_dir(outside(w)).unwrap().count(), 0);
    line
}

/// Like `refused`, for archives that may install but must stay inside.
fn contained(w: &World, file: &Path) -> (PathBuf, String, bool) {
    let root = w.node("n", &["app"]);
    let rev = w.spool(file);
    ok(w, w.tmp.path(), &["jump", "--master", &rev]);
    let before = snapshot(w, &root);
    let out = run(w, &root, &["sync"]);
    assert_eq!(
        snapshot(w, &root),
        before,
        "something changed outside revs/"
    );
    assert_eq!(std::fs::read_dir(outside(w)).unwrap().count(), 0);
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());
    if !out.status.success() {
        fails(&out, 1, &[&rev]);
    } else {
        figure("hostile_inputs", 1);
    }
    (root, rev, out.status.success())
}

#[test]
fn tar_dotdot_path() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('ok'); add('a/../../../outside/x')",
    );
    refused(&w, &f, &[], &["outside/x", ".."]);
}

#[test]
fn tar_absolute_path() {
    let w = World::new(Backend::Dir);
    let f = archive(&w, "app.tgz", "w:gz", "add(out + '/abs')");
    refused(&w, &f, &[], &["absolute"]);
}

#[test]
fn tar_symlink_escaping_upwards() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('up', type=tarfile.SYMTYPE, linkname='../../../..')",
    );
    refused(&w, &f, &[], &["up", "outside"]);
}

#[test]
fn tar_symlink_absolute() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('etc', type=tarfile.SYMTYPE, linkname='/etc')",
    );
    refused(&w, &f, &[], &["etc", "absolute"]);
}

#[test]
fn tar_symlink_then_write_through_it() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('d', type=tarfile.SYMTYPE, linkname=out)\nadd('d/pwned', b'gotcha')",
    );
    refused(&w, &f, &[], &["d"]);
}

#[test]
fn tar_inside_symlink_then_write_through_it() {
    let w = World::new(Backend::Dir);
    // The link points inside, but a later entry going through it could be
    // redirected by a tampered revision: refused, or written inside.
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('real', type=tarfile.DIRTYPE, mode=0o755)\nadd('d', type=tarfile.SYMTYPE, linkname='real')\nadd('d/f', b'through')",
    );
    let (root, rev, installed) = contained(&w, &f);
    if installed {
        // Written into a real directory: the link was replaced, not followed.
        let d = root.join("app/revs").join(id_of(&rev)).join("d");
        assert!(std::fs::symlink_metadata(&d).unwrap().is_dir());
        assert_eq!(std::fs::read_to_string(d.join("f")).unwrap(), "through");
    }
}

#[test]
fn tar_symlink_replaced_by_a_file_is_not_written_through() {
    let w = World::new(Backend::Dir);
    // Same name twice: first a link out, then a regular file. The file must
    // replace the link, not be written through it.
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('x', type=tarfile.SYMTYPE, linkname='../../../../outside/target')\nadd('x', b'data')",
    );
    let (root, rev, installed) = contained(&w, &f);
    assert!(!outside(&w).join("target").exists());
    if installed {
        let x = root.join("app/revs").join(id_of(&rev)).join("x");
        assert!(std::fs::symlink_metadata(&x).unwrap().is_file());
    }
}

#[test]
fn tar_hard_link_to_outside() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new(Backend::Dir);
    let target = w.path("secret");
    std::fs::write(&target, "secret").unwrap();
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        &format!(
            "add('h', type=tarfile.LNKTYPE, linkname={:?})",
            target.display().to_string()
        ),
    );
    refused(&w, &f, &[], &["h"]);
    assert_eq!(std::fs::metadata(&target).unwrap().nlink(), 1);
}

#[test]
fn tar_hard_link_with_dotdot() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('h', type=tarfile.LNKTYPE, linkname='../../../../outside/x')",
    );
    refused(&w, &f, &[], &["h"]);
}

#[test]
fn tar_hard_link_to_an_entry_not_extracted() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('h', type=tarfile.LNKTYPE, linkname='later')\nadd('later')",
    );
    refused(&w, &f, &[], &["h"]);
}

#[test]
fn tar_character_device() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('null', type=tarfile.CHRTYPE, devmajor=1, devminor=3)",
    );
    refused(&w, &f, &[], &["null"]);
}

#[test]
fn tar_block_device() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('sda', type=tarfile.BLKTYPE, devmajor=8, devminor=0)",
    );
    refused(&w, &f, &[], &["sda"]);
}

#[test]
fn tar_fifo() {
    let w = World::new(Backend::Dir);
    let f = archive(&w, "app.tgz", "w:gz", "add('pipe', type=tarfile.FIFOTYPE)");
    refused(&w, &f, &[], &["pipe"]);
}

#[test]
fn tar_pax_path_overrides_an_innocent_name() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('innocent', pax_headers={'path': '../../../../outside/pax'})",
    );
    refused(&w, &f, &[], &["pax"]);
}

#[test]
fn tar_pax_linkpath_overrides_an_innocent_target() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('l', type=tarfile.SYMTYPE, linkname='inside', pax_headers={'linkpath': '/etc/shadow'})",
    );
    refused(&w, &f, &[], &["l", "absolute"]);
}

#[test]
fn tar_gnu_long_name_with_traversal() {
    let w = World::new(Backend::Dir);
    let long = format!("{}/../../../../../outside/gnu", "d".repeat(150));
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        &format!("t.format = tarfile.GNU_FORMAT\nadd({long:?})"),
    );
    refused(&w, &f, &[], &[".."]);
}

#[test]
fn tar_gzip_bomb_beyond_the_limit() {
    let w = World::new(Backend::Dir);
    // 50 MB of zeros: ~50 KB compressed. With a 1 MB limit, refused.
    let f = archive(&w, "app.tgz", "w:gz", "add('zeros', bytes(50_000_000))");
    assert!(std::fs::metadata(&f).unwrap().len() < 1_000_000);
    refused(
        &w,
        &f,
        &[("FTL_MAX_UNPACKED_BYTES", "1000000")],
        &["limit", "1000000"],
    );
    // The limit, not the archive, refused it: the default lets it through.
    let root = w.node("n2", &["app"]);
    ok(&w, &root, &["sync"]);
    assert_eq!(
        std::fs::metadata(root.join("app/current/zeros"))
            .unwrap()
            .len(),
        50_000_000
    );
}

#[test]
fn gz_bomb_single_file_beyond_the_limit() {
    let w = World::new(Backend::Dir);
    let f = w.path("app.bin.gz");
    let script = format!(
        "import gzip\nwith gzip.open({:?}, 'wb') as g:\n    g.write(bytes(30_000_000))\n",
        f.display().to_string()
    );
    common::python(&script);
    refused(&w, &f, &[("FTL_MAX_UNPACKED_BYTES", "2000000")], &["limit"]);
}

#[test]
fn tar_a_million_empty_entries_beyond_the_limit() {
    let w = World::new(Backend::Dir);
    // Raw headers: a million zero-size files, ~512 MB of tar, ~1 MB gzipped.
    let f = w.path("app.tgz");
    let script = format!(
        "import gzip, tarfile\n\
         i = tarfile.TarInfo('e'); i.size = 0\n\
         h = i.tobuf(tarfile.USTAR_FORMAT)\n\
         with gzip.open({:?}, 'wb', compresslevel=1) as g:\n\
         \x20   for _ in range(100):\n\
         \x20       g.write(h * 10000)\n\
         \x20   g.write(bytes(1024))\n",
        f.display().to_string()
    );
    common::python(&script);
    let started = Instant::now();
    refused(
        &w,
        &f,
        &[("FTL_MAX_ENTRIES", "10000")],
        &["limit", "entries"],
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn tar_name_component_too_long() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        &format!("add({:?})", "n".repeat(300)),
    );
    refused(&w, &f, &[], &["nnnn"]);
}

#[test]
fn tar_path_deeper_than_path_max() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        &format!("add({:?})", "d/".repeat(2100) + "f"),
    );
    refused(&w, &f, &[], &["d/d/d"]);
}

#[test]
fn tar_setuid_and_setgid_bits_are_dropped() {
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('suid', b'#!/bin/sh\\n', mode=0o4755)\nadd('sgid', b'x', mode=0o2755)\nadd('sticky', type=tarfile.DIRTYPE, mode=0o1777)",
    );
    let (root, _, installed) = contained(&w, &f);
    assert!(installed);
    for (name, want) in [("suid", 0o755), ("sgid", 0o755)] {
        let mode = std::fs::metadata(root.join("app/current").join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, want, "{name}");
    }
}

#[test]
fn tar_foreign_owners_are_ignored() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new(Backend::Dir);
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        "add('owned', uid=12345, gid=54321, uname='mallory', gname='evil')",
    );
    let (root, _, installed) = contained(&w, &f);
    assert!(installed);
    let m = std::fs::metadata(root.join("app/current/owned")).unwrap();
    let me = std::fs::metadata(w.tmp.path()).unwrap();
    assert_eq!((m.uid(), m.gid()), (me.uid(), me.gid()));
}

#[test]
fn tar_nul_inside_a_header_name() {
    let w = World::new(Backend::Dir);
    // Raw ustar header whose name field is "ok\0../../../../outside/nul": tar
    // readers stop at the NUL.
    let f = w.path("app.tar");
    let script = format!(
        "import tarfile\n\
         i = tarfile.TarInfo('ok'); i.size = 1\n\
         h = bytearray(i.tobuf(tarfile.USTAR_FORMAT))\n\
         evil = b'ok\\0../../../../outside/nul'\n\
         h[0:len(evil)] = evil\n\
         h[148:156] = b' ' * 8\n\
         s = sum(h)\n\
         h[148:156] = ('%06o\\0 ' % s).encode()\n\
         open({:?}, 'wb').write(bytes(h) + b'x' + bytes(511) + bytes(1024))\n",
        f.display().to_string()
    );
    common::python(&script);
    let (root, _, installed) = contained(&w, &f);
    if installed {
        assert_eq!(
            std::fs::read_to_string(root.join("app/current/ok")).unwrap(),
            "x"
        );
    }
}

#[test]
fn tar_that_is_not_an_archive() {
    let w = World::new(Backend::Dir);
    let f = w.path("app.tgz");
    std::fs::write(&f, common::Rng::new(5).bytes(100_000)).unwrap();
    refused(&w, &f, &[], &["corrupt"]);
}

#[test]
fn tar_truncated_but_spooled_as_is() {
    let w = World::new(Backend::Dir);
    let (full, _) = common::random_package(w.tmp.path(), "app.tgz", 11, 8, 64 << 10);
    let bytes = std::fs::read(&full).unwrap();
    let f = w.path("app.tgz");
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    refused(&w, &f, &[], &["corrupt"]);
}

#[test]
fn tar_file_then_directory_of_the_same_name() {
    let w = World::new(Backend::Dir);
    let f = archive(&w, "app.tgz", "w:gz", "add('x')\nadd('x/y')");
    contained(&w, &f);
}

#[test]
fn tar_hook_symlinked_outside_is_not_run() {
    let w = World::new(Backend::Dir);
    let marker = w.path("ran");
    let script = w.path("evil.sh");
    std::fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The link itself is refused at unpack (absolute), so the hook never runs.
    let f = archive(
        &w,
        "app.tgz",
        "w:gz",
        &format!(
            "add('post-sync.sh', type=tarfile.SYMTYPE, linkname={:?})",
            script.display().to_string()
        ),
    );
    refused(&w, &f, &[], &["post-sync.sh"]);
    assert!(!marker.exists(), "the hook ran");
}

// ---------------------------------------------------------------------------------
// Hooks

/// Running, as opposed to gone or a zombie waiting for its reaper.
fn pid_alive(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid.trim()).join("stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn hook_that_hangs_is_killed_with_its_children() {
    let w = World::new(Backend::Dir);
    let pidfile = w.path("child.pid");
    let hook = format!("sleep 600 &\necho $! > {}\nwait\n", pidfile.display());
    let (_, root, rev) = {
        let root = w.node("n", &["app"]);
        let rev = w.spool_files("app.tgz", &[("post-sync.sh", hook.as_str(), 0o755)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
        ((), root, rev)
    };
    let started = Instant::now();
    let out = output_within(w.ftl(&root).env("FTL_HOOK_TIMEOUT", "2").arg("sync"), LIMIT);
    fails(&out, 1, &[&rev, "post-sync", "did not finish"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(link_target(&root, "app", "current"), None);
    assert_eq!(
        std::fs::read_dir(root.join("app/revs")).unwrap().count(),
        0,
        "not installed"
    );
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!pid_alive(&pid), "the hook's child {pid} survived");
}

#[test]
fn hook_that_leaves_a_child_holding_its_output() {
    let w = World::new(Backend::Dir);
    let pidfile = w.path("daemon.pid");
    // The hook succeeds at once, but a child keeps its stdout open.
    let hook = format!("sleep 600 &\necho $! > {}\nexit 0\n", pidfile.display());
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", &[("post-sync.sh", hook.as_str(), 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let started = Instant::now();
    let out = run(&w, &root, &["sync"]);
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    if !pid.is_empty() {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&rev)));
    figure("hostile_inputs", 1);
}

#[test]
fn hook_that_prints_megabytes_without_a_newline() {
    let w = World::new(Backend::Dir);
    let hook = "head -c 20000000 /dev/zero | tr '\\0' x\n";
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", &[("post-sync.sh", hook, 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = run(&w, &root, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let prefix = format!("{rev} post-sync: ");
    let mut payload = 0;
    for line in text.lines() {
        assert!(line.starts_with(&prefix), "unattributed line");
        assert!(
            line.len() <= prefix.len() + 64 * 1024,
            "a {} byte line",
            line.len()
        );
        payload += line.len() - prefix.len();
    }
    assert_eq!(payload, 20_000_000, "every byte re-emitted");
    figure("hostile_inputs", 1);
}

#[test]
fn hook_that_prints_many_lines_and_binary() {
    let w = World::new(Backend::Dir);
    let hook = "seq 1 300000\nprintf '\\377\\376\\000bin\\n'\nseq 1 1000 >&2\n";
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", &[("post-sync.sh", hook, 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = run(&w, &root, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.contains(" post-sync: ")).count(),
        300_001
    );
    assert!(text.contains(&format!("{rev} post-sync: 300000\n")));
    assert!(stderr(&out).contains(&format!("{rev} post-sync: 1000")));
    figure("hostile_inputs", 1);
}

#[test]
fn hook_killed_by_a_signal_exits_1() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", &[("pre-jump.sh", "kill -9 $$\n", 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = run(&w, &root, &["sync"]);
    fails(&out, 1, &[&rev, "pre-jump"]);
    assert_eq!(link_target(&root, "app", "current"), None);
}

#[test]
fn hook_exit_status_255_is_passed_on() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let rev = w.spool_files("app.tgz", &[("pre-jump.sh", "exit 255\n", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = run(&w, &root, &["sync"]);
    fails(&out, 255, &[&rev, "pre-jump"]);
}
