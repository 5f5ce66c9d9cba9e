//! Operator experience, checked as an operator would: `ftl status` and its
//! exit status, the `--json` shapes, completions and the man page, help
//! examples, output fit for pipes and terminals, `--splay`, the validate
//! hook's rollback, and the cron and systemd files of docs/operations.md.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser as _};
use common::{Backend, World, current, id_of, ok, previous, revs, run, stderr, stdout};
use serde_json::{Value, json};

fn pause() {
    // Revision ids have a resolution of one second.
    std::thread::sleep(Duration::from_millis(1050));
}

fn json_of(out: &Output) -> Value {
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A `status --json` document without its `version` and `commit`, after
/// checking them against the binary's own `--version` line.
fn status_of(w: &World, out: &Output) -> Value {
    let mut doc = json_of(out);
    let version = doc["version"].take();
    let commit = doc["commit"].take();
    assert_eq!(version, json!(env!("CARGO_PKG_VERSION")), "{doc}");
    let line = ok(w, w.tmp.path(), &["--version"]);
    let expected = match commit.as_str() {
        Some(c) => format!("ftl {} ({c})", env!("CARGO_PKG_VERSION")),
        None => format!("ftl {}", env!("CARGO_PKG_VERSION")),
    };
    assert_eq!(
        line.trim(),
        expected,
        "status --json's commit is --version's"
    );
    if let Some(map) = doc.as_object_mut() {
        map.remove("version");
        map.remove("commit");
    }
    doc
}

// ---------------------------------------------------------------- status

both!(status_tells_in_step_from_lagging, |w: World| {
    let n = w.node("n", &["st"]);
    let a = w.spool_files("st.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);

    // Nothing here yet: exit status 3, and what a sync would do.
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "st: out-of-step current=- previous=- blessed={a} blessed-previous=- download={a} jump={a}\n"
        )
    );
    // Out of step is the result, said by the line and the exit status: not
    // an error on stderr as well.
    assert!(
        !stderr(&out).contains("error") && !stderr(&out).contains("not in step"),
        "{}",
        stderr(&out)
    );
    assert_eq!(revs(&n, "st"), Vec::<String>::new(), "status is read-only");

    ok(&w, &n, &["sync"]);
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("st: in-step current={a} previous=- blessed={a} blessed-previous=-\n")
    );

    // Spooled, not blessed: a sync would fetch it ahead, so not in step.
    pause();
    let b = w.spool_files("st.tgz", &[("v", "2", 0o644)]);
    let out = run(&w, &n, &["status", "st"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stdout(&out),
        format!(
            "st: out-of-step current={a} previous=- blessed={a} blessed-previous=- download={b}\n"
        )
    );

    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        format!("st: in-step current={b} previous={a} blessed={b} blessed-previous={a}\n")
    );

    // Jumped back by hand: the node leads elsewhere than the bucket.
    ok(&w, &n, &["jump-back", "st"]);
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stdout(&out),
        format!(
            "st: out-of-step current={a} previous={b} blessed={b} blessed-previous={a} jump={b}\n"
        )
    );
});

#[test]
fn status_of_unknown_and_unreadable_packages() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["known", "ghost"]);
    let a = w.spool_files("known.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);

    // A package directory the bucket knows nothing of (a mistyped FTL_BUCKET
    // looks like this for every package): not in step.
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "ghost: unknown current=- previous=- blessed=- blessed-previous=-\n\
             known: in-step current={a} previous=- blessed={a} blessed-previous=-\n"
        )
    );
    assert_eq!(run(&w, &n, &["status", "known"]).status.code(), Some(0));

    // Cannot tell is not the same as lagging: exit status 1.
    let out = run(&w, &n, &["status", "known", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("known: in-step current={a} ")),
        "{text}"
    );
    assert!(
        text.contains("\nnope: error package nope has no directory under"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("ftl: error: the status of 1 of 2 packages could not be read"),
        "{}",
        stderr(&out)
    );

    // An unreachable bucket: exit 1, not 3.
    let out = w
        .ftl(&n)
        .env("FTL_BUCKET", "file:///nonexistent/bucket")
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("known: error "), "{}", stdout(&out));
}

#[test]
fn status_takes_no_lock() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["lk"]);
    let mut slow = common::sync_holding_the_lock(&w, &n, 4);
    let started = Instant::now();
    let out = w
        .ftl(&n)
        .env("FTL_LOCK_TIMEOUT", "1")
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Not vacuous: the sync held the lock all along.
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the sync ended before status ran, after {:?}",
        started.elapsed()
    );
    assert!(slow.wait().unwrap().success());
}

#[test]
fn status_with_nothing_to_check_fails() {
    let w = World::new(Backend::Dir);
    // A root without package directories: most likely the wrong FTL_ROOT.
    let n = w.node("n", &[]);
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        common::error_line(&out),
        format!(
            "ftl: error: no package directories under {0}: nothing to check \
             (is FTL_ROOT right? `mkdir {0}/<package>` enrols this node in a package)",
            n.display()
        )
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let out = run(&w, &n, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        status_of(&w, &out),
        json!({"in_step": false, "packages": []})
    );
}

#[test]
fn unknown_packages_are_unknown_to_status_and_dry_run() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["ghost"]);
    w.spool_files("other.tgz", &[("v", "1", 0o644)]);
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ghost: unknown current=- previous=- blessed=- blessed-previous=-\n"
    );
    // The line says it; sync's "leaving it untouched" is not status's word.
    assert_eq!(stderr(&out), "", "{}", stderr(&out));
    let out = run(&w, &n, &["sync", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ghost: unknown: the bucket has nothing for it, nothing to do\n"
    );
}

// ------------------------------------------------------------------ JSON

#[test]
fn json_shapes_are_pinned() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["js", "empty"]);
    let sha256 = |p: &Path| {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(std::fs::read(p).unwrap());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let pa = common::package(w.tmp.path(), "js.tgz", &[("v", "1", 0o644)]);
    let (size_a, sha_a) = (std::fs::metadata(&pa).unwrap().len(), sha256(&pa));
    let a = w.spool(&pa);
    pause();
    let pb = common::package(w.tmp.path(), "js.tgz", &[("v", "22", 0o644)]);
    let (size_b, sha_b) = (std::fs::metadata(&pb).unwrap().len(), sha256(&pb));
    let b = w.spool(&pb);
    for rev in [&a, &b] {
        let out = w
            .ftl(w.tmp.path())
            .env("USER", "tester")
            .args(["jump", "--master", rev])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    ok(&w, &n, &["sync"]);
    // The spool time is the object's: pinned here through the file's time.
    for rev in [&a, &b] {
        let file = w.path("bucket").join(format!("{rev}.tgz"));
        let touched = std::process::Command::new("touch")
            .arg("-d")
            .arg("@1796169600")
            .arg(&file)
            .status()
            .unwrap();
        assert!(touched.success());
    }

    // ftl list --json [PKG]
    let js_local = json!({
        "name": "js",
        "current": b,
        "previous": a,
        "revisions": [
            {"name": a, "active": false},
            {"name": b, "active": true},
        ],
    });
    let empty_local = json!({"name": "empty", "current": null, "previous": null, "revisions": []});
    assert_eq!(
        json_of(&run(&w, &n, &["list", "--json"])),
        json!({"packages": [empty_local, js_local]})
    );
    assert_eq!(
        json_of(&run(&w, &n, &["list", "js", "--json"])),
        json!({"packages": [js_local]})
    );

    // ftl list --master --json [PKG]
    let js_master = json!({
        "name": "js",
        "blessed": b,
        "previous": a,
        "revisions": [
            {"name": a, "active": false, "key": format!("{a}.tgz"), "size": size_a,
             "spooled": "2026-12-02T00:00:00Z", "sha256": sha_a, "signature": null},
            {"name": b, "active": true, "key": format!("{b}.tgz"), "size": size_b,
             "spooled": "2026-12-02T00:00:00Z", "sha256": sha_b, "signature": null},
        ],
        "bless": null,
    });
    assert_eq!(
        json_of(&run(&w, &n, &["list", "--master", "--json"])),
        json!({"packages": [js_master]})
    );
    assert_eq!(
        json_of(&run(&w, &n, &["list", "--master", "js", "--json"])),
        json!({"packages": [js_master]})
    );

    // ftl log --master --json [PKG]: the time of each bless is checked for
    // its form, then set aside.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let by = format!("tester@{}", host.trim());
    let js_log = json!({
        "name": "js",
        "blesses": [
            {"at": "T", "action": "bless", "revision": b, "previous": a, "by": by, "signer": null},
            {"at": "T", "action": "bless", "revision": a, "previous": null, "by": by, "signer": null},
        ],
    });
    for args in [
        &["log", "--master", "--json"][..],
        &["log", "--master", "js", "--json"],
    ] {
        let mut log = json_of(&run(&w, &n, args));
        for e in log["packages"][0]["blesses"].as_array_mut().unwrap() {
            let at = e["at"].as_str().unwrap().to_owned();
            assert!(
                at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
                "{at}"
            );
            e["at"] = json!("T");
        }
        assert_eq!(log, json!({"packages": [js_log]}), "{args:?}");
    }

    // ftl status --json [PKG…]
    let no_sync = json!({"download": [], "jump": null, "previous": null, "remove": []});
    // The newest revision the sync installed, downloaded whole.
    let last_install = json!({
        "revision": b, "how": "whole", "moved_bytes": size_b, "reused_bytes": 0,
    });
    let js_in_step = json!({
        "name": "js", "state": "in-step", "in_step": true,
        "current": b, "previous": a, "blessed": b, "blessed_previous": a,
        "sync": no_sync, "error": null, "leftovers": [], "unverified": [], "failed": [],
        "bless": null, "verified": [], "refused": [], "bless_pending": null,
        "bless_age": null, "bless_stale": false, "last_install": last_install,
    });
    let out = run(&w, &n, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        status_of(&w, &out),
        json!({"in_step": false, "packages": [
            {
                "name": "empty", "state": "unknown", "in_step": false,
                "current": null, "previous": null, "blessed": null, "blessed_previous": null,
                "sync": no_sync, "error": null, "leftovers": [], "unverified": [], "failed": [],
                "bless": null, "verified": [], "refused": [], "bless_pending": null,
                "bless_age": null, "bless_stale": false, "last_install": null,
            },
            js_in_step,
        ]})
    );
    let out = run(&w, &n, &["status", "js", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        status_of(&w, &out),
        json!({"in_step": true, "packages": [js_in_step]})
    );

    // Out of step: what a sync would do, in full.
    pause();
    let c = w.spool_files("js.tgz", &[("v", "333", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &c]);
    let out = run(&w, &n, &["status", "js", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        status_of(&w, &out),
        json!({"in_step": false, "packages": [{
            "name": "js", "state": "out-of-step", "in_step": false,
            "current": b, "previous": a, "blessed": c, "blessed_previous": b,
            "sync": {"download": [c], "jump": c, "previous": null, "remove": []},
            "error": null, "leftovers": [], "unverified": [], "failed": [],
            "bless": null, "verified": [], "refused": [], "bless_pending": null,
            "bless_age": null, "bless_stale": false, "last_install": last_install,
        }]})
    );

    // Unreadable: the message in `error`, the same shape otherwise.
    let out = run(&w, &n, &["status", "nope", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let mut doc = status_of(&w, &out);
    let message = doc["packages"][0]["error"].take();
    assert!(
        message
            .as_str()
            .is_some_and(|m| m.starts_with("package nope has no directory under ")),
        "{message}"
    );
    assert_eq!(
        doc,
        json!({"in_step": false, "packages": [{
            "name": "nope", "state": "error", "in_step": false,
            "current": null, "previous": null, "blessed": null, "blessed_previous": null,
            "sync": no_sync, "error": null, "leftovers": [], "unverified": [], "failed": [],
            "bless": null, "verified": [], "refused": [], "bless_pending": null,
            "bless_age": null, "bless_stale": false, "last_install": null,
        }]})
    );
}

// ------------------------------------------- completions, man page, help

#[test]
fn version_names_the_commit_it_was_built_from() {
    // The tests are built from this checkout, so the binary must name its HEAD.
    common::require("git", common::has_tool("git"));
    let repo = env!("CARGO_MANIFEST_DIR");
    let head = std::process::Command::new("git")
        .args(["-C", repo, "rev-parse", "--short=12", "HEAD"])
        .output()
        .unwrap();
    assert!(head.status.success(), "not a git checkout: {repo}");
    let head = String::from_utf8(head.stdout).unwrap();
    let w = World::new(Backend::Dir);
    let line = ok(&w, w.tmp.path(), &["--version"]);
    let prefix = format!("ftl {} ({}", env!("CARGO_PKG_VERSION"), head.trim());
    assert!(
        line.starts_with(&prefix),
        "{line:?} does not start with {prefix:?}"
    );
    assert!(line.trim_end().ends_with(')'), "{line:?}");
}

fn subcommands() -> Vec<String> {
    ftl::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn completions_for_each_shell() {
    let w = World::new(Backend::Dir);
    // (shell, a line every script of that shell has, its syntax checker)
    for (shell, marker, check) in [
        ("bash", "complete -F _ftl", ["bash", "-n"]),
        ("zsh", "#compdef ftl", ["zsh", "-n"]),
        ("fish", "complete -c ftl", ["fish", "--no-execute"]),
    ] {
        let out = w
            .ftl(w.tmp.path())
            .env_remove("FTL_BUCKET")
            .env_remove("FTL_ROOT")
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for word in subcommands().iter().map(String::as_str).chain([
            "--splay",
            "--json",
            "--master",
            "--ignore-unjump-failure",
        ]) {
            // fish names long options without their dashes.
            let word = word.trim_start_matches('-');
            assert!(script.contains(word), "{shell} completes no {word}");
        }
        let file = w.path(&format!("ftl.{shell}"));
        std::fs::write(&file, &script).unwrap();
        // The content checks above ran in any case.
        common::require(
            &format!("{} (syntax of the {shell} completions)", check[0]),
            common::has_tool(check[0]),
        );
        let o = std::process::Command::new(check[0])
            .arg(check[1])
            .arg(&file)
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell} -n: {}", stderr(&o));
    }
    let out = run(&w, w.tmp.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_page() {
    let w = World::new(Backend::Dir);
    // Needs no configuration at all.
    let out = w
        .ftl(w.tmp.path())
        .env_remove("FTL_BUCKET")
        .env_remove("FTL_ROOT")
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH ftl 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section}");
    }
    for sub in subcommands() {
        let roff = sub.replace('-', "\\-");
        assert!(
            page.contains(&format!("ftl\\-{roff}(1)")),
            "ftl(1) lists no {sub}"
        );
    }
    // No page for clap's `help`, so none listed.
    assert!(!page.contains("ftl\\-help"), "{page}");
    // The reference a node with only the binary needs.
    for section in [".SH HOOKS", ".SH ENVIRONMENT", ".SH \"EXIT STATUS\""] {
        assert!(page.contains(section), "no {section}");
    }
    for step in ftl::hooks::Step::ALL {
        let name = step.as_str().replace('-', "\\-");
        assert!(
            page.contains(&format!("\\fB{name}\\fR")),
            "no hook step {step}"
        );
    }
    for var in variables_the_code_reads() {
        assert!(page.contains(&format!("\\fB{var}\\fR")), "no {var}");
    }
    for status in [
        0,
        ftl::error::EXIT_FAILURE,
        ftl::error::EXIT_USAGE,
        ftl::error::EXIT_NOT_IN_STEP,
    ] {
        assert!(
            page.contains(&format!(".TP\n\\fB{status}\\fR\n")),
            "no exit status {status}"
        );
    }
    // Render it as man would, warnings on.
    common::require(
        "groff (rendering the manual page)",
        common::has_tool("groff"),
    );
    {
        let mut groff = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = groff.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&out).contains("Deploy software to a fleet"));
    }

    // One page per command, with its examples; the directory is made.
    let dir = w.path("share/man/man1");
    ok(&w, w.tmp.path(), &["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dir.join("ftl.1")).unwrap(), page);
    assert!(!dir.join("ftl-help.1").exists());
    for sub in subcommands() {
        let page = std::fs::read_to_string(dir.join(format!("ftl-{sub}.1")))
            .unwrap_or_else(|e| panic!("ftl-{sub}.1: {e}"));
        assert!(page.contains("Example"), "ftl-{sub}.1 shows no example");
    }
    let sync = std::fs::read_to_string(dir.join("ftl-sync.1")).unwrap();
    assert!(sync.contains("\\-\\-splay"), "{sync}");
}

/// Every `FTL_*` variable named in the source (flags' variables, hooks'
/// environment, `FTL_LOG`), tests' own aside.
fn variables_the_code_reads() -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    walk(&p, found);
                }
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices("\"FTL_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect();
                    if !name.starts_with("FTL_TEST") {
                        found.push(name);
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    found.sort();
    found.dedup();
    assert!(found.len() > 15, "{found:?}");
    found
}

/// `/etc/default/ftl` (pkg/deb/default) offers every variable of the manual's
/// ENVIRONMENT section, commented out with a line that says what it does, and
/// sets none: ftl's defaults stay the defaults until the operator decides.
#[test]
fn the_default_file_offers_every_variable_commented_out() {
    let w = World::new(Backend::Dir);
    let page = ok(&w, w.tmp.path(), &["man"]);
    let environment = page
        .split(".SH ENVIRONMENT")
        .nth(1)
        .and_then(|rest| rest.split(".SH ").next())
        .expect("an ENVIRONMENT section");
    let mut variables: Vec<String> = environment
        .match_indices("\\fB")
        .flat_map(|(i, _)| {
            let names = &environment[i + 3..];
            let names = &names[..names.find("\\fR").unwrap_or(0)];
            names.split(", ").map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|v| v.starts_with("FTL_") || v.starts_with("AWS_"))
        .collect();
    variables.dedup();
    assert!(variables.len() > 15, "{variables:?}");
    let default =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/deb/default"))
            .unwrap();
    let lines: Vec<&str> = default.lines().collect();
    for var in &variables {
        if matches!(var.as_str(), "AWS_SESSION_TOKEN") {
            continue; // short-lived: never in a file
        }
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("#{var}=")))
            .unwrap_or_else(|| panic!("pkg/deb/default does not offer {var}"));
        // Its explanation: the comment above it, or above the group of
        // alternatives it belongs to (AWS_DEFAULT_REGION, AWS_REGION).
        let explained = lines[..at]
            .iter()
            .rev()
            .find(|l| !(l.starts_with("#FTL_") || l.starts_with("#AWS_")))
            .is_some_and(|l| l.starts_with("# ") && l.len() > 10);
        assert!(explained, "{var} has no line that explains it");
    }
    for line in &lines {
        assert!(
            line.is_empty() || line.starts_with('#'),
            "set, not offered: {line}"
        );
    }
}

/// The ftl command in an example line: from the word `ftl` up to a comment,
/// pipe or redirection.
fn ftl_words(line: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words.iter().position(|w| *w == "ftl")?;
    Some(
        words[start..]
            .iter()
            .take_while(|w| !matches!(**w, "#" | "|" | ">" | ">>" | "&&" | ";"))
            .map(|w| (*w).to_owned())
            .collect(),
    )
}

#[test]
fn each_command_lists_only_its_own_options() {
    let w = World::new(Backend::Dir);
    let help = |cmd: &str| ok(&w, w.tmp.path(), &[cmd, "--help"]);
    let node_only = [
        "--root",
        "--hook-timeout",
        "--lock-timeout",
        "--max-entries",
    ];
    for cmd in ["spool", "purge", "completions", "man"] {
        let text = help(cmd);
        for flag in node_only {
            assert!(
                !text.contains(flag),
                "ftl {cmd} --help shows {flag}:\n{text}"
            );
        }
    }
    let sync = help("sync");
    for flag in node_only
        .iter()
        .chain(&["--max-unpacked-bytes", "--bucket"])
    {
        assert!(sync.contains(flag), "ftl sync --help lacks {flag}:\n{sync}");
    }
    let status = help("status");
    assert!(
        status.contains("--root") && !status.contains("--hook-timeout"),
        "{status}"
    );
}

#[test]
fn every_command_shows_examples_that_parse() {
    let w = World::new(Backend::Dir);
    for sub in ftl::cli::Cli::command().get_subcommands() {
        let name = sub.get_name();
        let help = ok(&w, w.tmp.path(), &[name, "--help"]);
        assert!(help.contains("Example"), "ftl {name} --help: no example");
        let after = sub
            .get_after_help()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let mut examples = 0;
        for words in after.lines().filter_map(ftl_words) {
            if let Err(e) = ftl::cli::Cli::try_parse_from(&words) {
                panic!("example {words:?} of ftl {name} does not parse: {e}");
            }
            let used = ftl::cli::Cli::command()
                .try_get_matches_from(&words)
                .ok()
                .and_then(|m| m.subcommand_name().map(str::to_owned));
            assert_eq!(used.as_deref(), Some(name), "{words:?}");
            examples += 1;
        }
        assert!(examples > 0, "ftl {name}: no example is an ftl command");
    }
    let help = ok(&w, w.tmp.path(), &["--help"]);
    assert!(
        help.contains("Examples:") && help.contains("ftl status"),
        "{help}"
    );
}

// ----------------------------------------------------------------- output

/// A package whose hooks log "<step> <revision>" to `hooks.log` and talk on
/// stdout and stderr; `validate` fails (status 4) when the package has `bad`.
fn talking_package(w: &World, name: &str, version: &str, bad: bool) -> PathBuf {
    let log = w.path("hooks.log");
    let script = format!(
        "#!/bin/sh\necho \"$FTL_STEP $FTL_REVISION\" >> {}\necho \"said $FTL_STEP\"\necho \"warned $FTL_STEP\" >&2\n",
        log.display()
    );
    let validate = format!("{script}if [ -e bad ]; then echo 'not healthy' >&2; exit 4; fi\n");
    let mut files: Vec<(&str, &str, u32)> = vec![("version", version, 0o644)];
    for step in [
        "post-sync.sh",
        "pre-jump.sh",
        "post-jump.sh",
        "un-jump.sh",
        "pre-remove.sh",
    ] {
        files.push((step, script.as_str(), 0o755));
    }
    files.push(("validate.sh", validate.as_str(), 0o755));
    if bad {
        files.push(("bad", "", 0o644));
    }
    common::package(w.tmp.path(), &format!("{name}.tgz"), &files)
}

fn hook_log(w: &World) -> Vec<String> {
    std::fs::read_to_string(w.path("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn clear_hook_log(w: &World) {
    let _ = std::fs::remove_file(w.path("hooks.log"));
}

fn assert_no_escapes(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.contains(&0x1b),
            "{what}: escape codes on {stream}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn no_escape_codes_when_not_a_terminal() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["esc"]);
    let a = w.spool(&talking_package(&w, "esc", "1", false));
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    pause();
    let b = w.spool(&talking_package(&w, "esc", "2", true));
    let mut logs = 0;
    for args in [
        vec!["sync", "-v"],
        vec!["status"],
        vec!["list"],
        vec!["list", "esc"],
        vec!["list", "--master", "esc"],
        vec!["sync"],
        vec!["jump", &b],
        vec!["remove", &a],
        vec!["sync", "--bogus"],
        vec!["--help"],
        vec!["sync", "--help"],
    ] {
        let out = run(&w, &n, &args);
        assert_no_escapes(&format!("ftl {args:?}"), &out);
        logs += stderr(&out).lines().count();
    }
    // Not vacuous: there were log lines, warnings, hook output and errors.
    assert!(logs > 10, "{logs} lines only");
}

/// On a terminal (a pty from `script`), log levels are coloured: what the
/// test above proves absent is really there otherwise.
#[test]
fn a_terminal_gets_colours() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["tty"]);
    let a = w.spool_files("tty.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let ftl = assert_cmd::cargo::cargo_bin!("ftl");
    // The environment `w.ftl` would give ftl, given to `script` instead.
    let env = w.ftl(&n);
    common::require("script from util-linux (a pty)", common::has_tool("script"));
    let out = std::process::Command::new("script")
        .env_clear()
        .envs(
            env.get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
        )
        .env("TERM", "xterm")
        .args(["-q", "-e", "-c"])
        .arg(format!("'{}' sync", ftl.display()))
        .arg("/dev/null")
        .output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(current(&n, "tty"), Some(id_of(&a)));
    assert!(
        out.stdout.windows(2).any(|w| w == b"\x1b["),
        "no colour on a terminal: {:?}",
        stdout(&out)
    );
    // The time is for log files: a person at a terminal knows it.
    assert!(
        !stdout(&out).lines().any(|l| common::unstamped(l) != l),
        "{}",
        stdout(&out)
    );
}

#[test]
fn quiet_and_verbose() {
    let w = World::new(Backend::Dir);
    let a = w.spool_files(
        "qv.tgz",
        &[("post-sync.sh", "echo hello from the hook", 0o755)],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let levels = |out: &Output| {
        let e = stderr(out);
        (e.contains("INFO"), e.contains("DEBUG"))
    };

    let out = run(&w, &w.node("n1", &["qv"]), &["sync", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(levels(&out), (false, false), "{}", stderr(&out));
    // A hook's output is not a log line: -q keeps it.
    assert_eq!(
        stdout(&out),
        format!("{a} post-sync: hello from the hook\n")
    );

    let out = run(&w, &w.node("n2", &["qv"]), &["sync"]);
    assert_eq!(levels(&out), (true, false), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("INFO {a} is now current")));

    let out = run(&w, &w.node("n3", &["qv"]), &["sync", "-v"]);
    assert_eq!(levels(&out), (true, true), "{}", stderr(&out));

    // Errors and warnings stay under -q, one line each.
    let out = run(&w, &w.node("n4", &["qv", "other"]), &["sync", "-q"]);
    let e = stderr(&out);
    assert!(e.contains("WARN") && e.contains("other"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn json_log_lines_parse_as_json() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["jl", "unknown"]);
    let a = w.spool_files(
        "jl.tgz",
        &[(
            "post-sync.sh",
            "echo out; echo err1 >&2; printf err2 >&2",
            0o755,
        )],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let out = run(&w, &n, &["sync", "-v", "--log-format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for l in &lines {
        for key in ["timestamp", "level", "message"] {
            assert!(l[key].is_string(), "{key} missing: {l}");
        }
    }
    let levels: Vec<&str> = lines.iter().filter_map(|l| l["level"].as_str()).collect();
    for level in ["DEBUG", "INFO", "WARN"] {
        assert!(levels.contains(&level), "no {level} in {levels:?}");
    }
    // The hook's stderr, as JSON lines with the revision and the step.
    let hook: Vec<&Value> = lines.iter().filter(|l| l["step"] == "post-sync").collect();
    assert_eq!(hook.len(), 2, "{lines:?}");
    assert_eq!(hook[0]["message"], format!("{a} post-sync: err1"));
    assert_eq!(hook[1]["message"], format!("{a} post-sync: err2"));
    assert_eq!(hook[1]["revision"], a.as_str());
    assert_eq!(hook[1]["stream"], "stderr");
    // Its stdout stays plain annotated lines on stdout.
    assert_eq!(stdout(&out), format!("{a} post-sync: out\n"));

    // The final error too.
    let out = run(
        &w,
        &n,
        &["jump", "jl.nosuchrevision", "--log-format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_str(stderr(&out).trim()).expect("JSON error line");
    assert_eq!(err["level"], "ERROR");
    assert_eq!(err["exit_status"], 1);
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("jl.nosuchrevision")),
        "{err}"
    );
}

#[test]
fn every_line_of_hook_output_is_annotated() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["an"]);
    let a = w.spool_files(
        "an.tgz",
        &[(
            "post-sync.sh",
            "printf 'one\\ntwo\\n\\nlast without newline'; printf 'e1\\r\\ne2' >&2",
            0o755,
        )],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p = format!("{a} post-sync: ");
    assert_eq!(
        stdout(&out),
        format!("{p}one\n{p}two\n{p}\n{p}last without newline\n")
    );
    let err = stderr(&out);
    let hook_err: Vec<&str> = err
        .lines()
        .map(common::unstamped)
        .filter(|l| l.contains(": e"))
        .collect();
    assert_eq!(hook_err, [format!("{p}e1"), format!("{p}e2")]);
}

/// The lines of stderr that are not a hook's output.
fn own_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .map(common::unstamped)
        .filter(|l| !l.contains(" post-sync: ") || l.starts_with("ftl: error: "))
        .filter(|l| !l.contains(" pre-remove: ") || l.starts_with("ftl: error: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn one_failure_one_line() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["of"]);
    let a = w.spool_files(
        "of.tgz",
        &[("post-sync.sh", "echo broken >&2; exit 7", 0o755)],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);

    // A failing post-sync hook: its status, and one line naming it.
    let out = run(&w, &n, &["sync"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let said: Vec<String> = own_lines(&out)
        .into_iter()
        .filter(|l| l.contains("failed with exit status 7"))
        .collect();
    assert_eq!(
        said,
        [format!(
            "ftl: error: {a}: the post-sync hook of {a} failed with exit status 7"
        )],
        "{}",
        stderr(&out)
    );
    assert_eq!(common::error_line(&out), said[0]);

    // The same as JSON: one ERROR object.
    let out = run(&w, &n, &["sync", "--retry-failed", "--log-format", "json"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let errors: Vec<Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{}", stderr(&out));
    assert_eq!(errors[0]["exit_status"], 7);
    assert_eq!(
        errors[0]["message"],
        format!("{a}: the post-sync hook of {a} failed with exit status 7")
    );

    // A missing package directory, through sync, clean and status.
    for args in [
        vec!["sync", "nope"],
        vec!["clean", "nope"],
        vec!["status", "nope"],
    ] {
        let out = run(&w, &n, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let everything = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(
            everything.matches("package nope has no directory").count(),
            1,
            "{args:?}: {everything}"
        );
    }

    // pre-remove: each failure of a clean once, each naming its revision.
    let m = w.node("m", &["pr"]);
    let mut revs = Vec::new();
    for v in ["1", "2", "3", "4"] {
        revs.push(w.spool_files(
            "pr.tgz",
            &[("v", v, 0o644), ("pre-remove.sh", "exit 5", 0o755)],
        ));
        pause();
    }
    // All four on the node; the two oldest neither blessed nor previous.
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[0]]);
    ok(&w, &m, &["sync"]);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[2]]);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[3]]);
    ok(&w, &m, &["sync"]);
    assert_eq!(common::revs(&m, "pr").len(), 4);
    let out = run(&w, &m, &["clean", "--keep", "0"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let mut failed: Vec<String> = own_lines(&out)
        .into_iter()
        .filter(|l| l.contains("exit status 5"))
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        [&revs[0], &revs[1]].map(|r| format!(
            "ftl: error: {r}: the pre-remove hook of {r} failed with exit status 5"
        )),
        "{}",
        stderr(&out)
    );
    // And through remove.
    let out = run(&w, &m, &["remove", &revs[0]]);
    assert_eq!(out.status.code(), Some(5));
    let failed: Vec<String> = own_lines(&out)
        .into_iter()
        .filter(|l| l.contains("exit status 5"))
        .collect();
    assert_eq!(
        failed,
        [format!(
            "ftl: error: {0}: the pre-remove hook of {0} failed with exit status 5",
            revs[0]
        )]
    );
}

#[test]
fn out_of_step_is_not_an_error() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["os"]);
    let a = w.spool_files("os.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    for args in [
        vec!["status"],
        vec!["status", "-q"],
        vec!["status", "--log-format", "json"],
    ] {
        let out = run(&w, &n, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(stdout(&out).contains("out-of-step"), "{}", stdout(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

/// `2026-12-06T13:45:01Z `: RFC 3339, UTC, whole seconds, then a space.
fn is_stamped(line: &str) -> bool {
    common::unstamped(line).len() + 21 == line.len()
}

#[test]
fn log_lines_start_with_the_level_or_the_time() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["lt", "unknown"]);
    let a = w.spool_files("lt.tgz", &[("post-sync.sh", "echo hi >&2", 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let levels = ["INFO ", "WARN ", "ERROR ", "DEBUG "];
    let starts_well = |l: &str| {
        levels.iter().any(|p| l.starts_with(p))
            || l.starts_with(&format!("{a} post-sync: "))
            || l.starts_with("ftl: error: ")
    };

    // A pipe or a file, as from cron: every line carries the time.
    let out = w
        .ftl(&n)
        .env_remove("JOURNAL_STREAM")
        .args(["sync", "-v"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.lines().count() > 3, "{err}");
    for line in err.lines() {
        assert!(is_stamped(line), "no time: {line:?}");
        assert!(starts_well(common::unstamped(line)), "{line:?}");
        let year: u32 = line[..4].parse().unwrap();
        assert!(year >= 2025, "{line}");
    }
    assert!(
        err.contains(" WARN the bucket has nothing for package unknown"),
        "{err}"
    );
    // The final error line too.
    let out = w
        .ftl(&n)
        .env_remove("JOURNAL_STREAM")
        .args(["jump", "lt.nosuchrevision"])
        .output()
        .unwrap();
    let last = stderr(&out);
    assert!(is_stamped(last.trim_end()), "{last}");

    // The journal: its stream is ftl's stderr (systemd names it in
    // JOURNAL_STREAM as device:inode). No time, no padding before the level.
    let log = w.path("journal");
    let file = std::fs::File::create(&log).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().unwrap();
    let status = w
        .ftl(&n)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .args(["sync", "-v", "--retry-failed"])
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 1, "{text}");
    for line in text.lines() {
        assert!(!is_stamped(line), "{line:?}");
        assert!(starts_well(line), "{line:?}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("WARN the bucket has nothing for package unknown")),
        "grep '^WARN' finds it: {text}"
    );
    // JOURNAL_STREAM inherited, but stderr is elsewhere: stamped.
    let out = w
        .ftl(&n)
        .env(
            "JOURNAL_STREAM",
            format!("{}:{}", meta.dev(), meta.ino() + 1),
        )
        .args(["sync"])
        .output()
        .unwrap();
    assert!(stderr(&out).lines().all(is_stamped), "{}", stderr(&out));
}

// ----------------------------------------------------------------- splay

#[test]
fn splay_waits_less_than_its_bound() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &[]);
    let waited = |out: &Output| -> Option<f64> {
        let e = stderr(out);
        let line = e.lines().find(|l| l.contains("before starting"))?;
        line.split_whitespace()
            .find_map(|w| w.strip_suffix('s')?.parse().ok())
    };
    for _ in 0..3 {
        let started = Instant::now();
        let out = run(&w, &n, &["sync", "--splay", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let secs = waited(&out).unwrap_or_else(|| panic!("no wait logged: {}", stderr(&out)));
        assert!((0.0..2.0).contains(&secs), "{secs}");
        assert!(started.elapsed() >= Duration::from_secs_f64(secs));
    }
    let out = run(&w, &n, &["sync", "--splay", "0"]);
    assert_eq!(waited(&out), None, "{}", stderr(&out));
    let out = run(&w, &n, &["sync", "--splay", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

// -------------------------------------------------------------- validate

both!(failed_validation_rolls_back_through_sync, |w: World| {
    let n = w.node("n", &["va"]);
    let a = w.spool(&talking_package(&w, "va", "1", false));
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);
    pause();
    let b = w.spool(&talking_package(&w, "va", "2", false));
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    assert_eq!(
        (current(&n, "va"), previous(&n, "va")),
        (Some(id_of(&b)), Some(id_of(&a)))
    );

    pause();
    let c = w.spool(&talking_package(&w, "va", "3", true));
    ok(&w, w.tmp.path(), &["jump", "--master", &c]);
    clear_hook_log(&w);
    let out = run(&w, &n, &["sync"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "the validate hook's status: {}",
        stderr(&out)
    );
    let e = stderr(&out);
    assert!(e.contains(&format!("{c} validate: not healthy")), "{e}");
    assert!(
        e.contains(&format!(
            "the validate hook of {c} failed with exit status 4; rolled back to {b}"
        )),
        "{e}"
    );
    // Back where it was: current and previous both.
    assert_eq!(
        (current(&n, "va"), previous(&n, "va")),
        (Some(id_of(&b)), Some(id_of(&a)))
    );
    assert_eq!(
        std::fs::read_to_string(n.join("va/current/version")).unwrap(),
        "2"
    );
    assert_eq!(
        hook_log(&w),
        [
            format!("post-sync {c}"),
            format!("pre-jump {c}"),
            format!("un-jump {b}"),
            format!("post-jump {c}"),
            format!("validate {c}"),
            // The way back: a jump's hooks, no validate.
            format!("pre-jump {b}"),
            format!("un-jump {c}"),
            format!("post-jump {b}"),
        ]
    );
    // The blessed revision stays downloaded; the node is reported lagging.
    assert!(revs(&n, "va").contains(&id_of(&c)));
    assert_eq!(run(&w, &n, &["status"]).status.code(), Some(3));
});

// Issue 17, item 6: a revision that failed validation here never becomes the
// target of a local jump-back, even when the bucket makes it its previous
// (the usual `jump-back --master` after a bad deploy); status shows it.
both!(
    a_revision_that_failed_validation_is_never_made_previous,
    |w: World| {
        let n = w.node("n", &["vp"]);
        let box_ = w.tmp.path();
        let a = w.spool(&talking_package(&w, "vp", "1", false));
        ok(&w, box_, &["jump", "--master", &a]);
        ok(&w, &n, &["sync"]);
        pause();
        let b = w.spool(&talking_package(&w, "vp", "2", false));
        ok(&w, box_, &["jump", "--master", &b]);
        ok(&w, &n, &["sync"]);
        pause();
        let c = w.spool(&talking_package(&w, "vp", "3", true));
        ok(&w, box_, &["jump", "--master", &c]);
        assert_eq!(run(&w, &n, &["sync"]).status.code(), Some(4));
        assert_eq!(
            (current(&n, "vp"), previous(&n, "vp")),
            (Some(id_of(&b)), Some(id_of(&a)))
        );
        // The operator rolls the bucket back: blessed b, previous c.
        ok(&w, box_, &["jump-back", "--master", "vp"]);
        let out = run(&w, &n, &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            (current(&n, "vp"), previous(&n, "vp")),
            (Some(id_of(&b)), Some(id_of(&a))),
            "previous points at the revision that failed validation"
        );
        let out = run(&w, &n, &["status"]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        assert!(
            stdout(&out).contains(&format!(" failed={c}(retry-at=")),
            "{}",
            stdout(&out)
        );
        // A local jump-back goes where it did before the bad deploy.
        ok(&w, &n, &["jump-back", "vp"]);
        assert_eq!(current(&n, "vp"), Some(id_of(&a)));
    }
);

#[test]
fn failed_validation_rolls_back_through_jump() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["vj"]);
    let a = w.spool(&talking_package(&w, "vj", "1", false));
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    pause();
    let b = w.spool(&talking_package(&w, "vj", "2", true));
    ok(&w, &n, &["sync"]);
    assert_eq!(revs(&n, "vj"), [id_of(&a), id_of(&b)], "b fetched ahead");
    clear_hook_log(&w);

    let out = run(&w, &n, &["jump", &b]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "ftl: error: {b}: the validate hook of {b} failed with exit status 4; rolled back to {a}"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        (current(&n, "vj"), previous(&n, "vj")),
        (Some(id_of(&a)), None)
    );
    assert_eq!(
        hook_log(&w),
        [
            format!("pre-jump {b}"),
            format!("un-jump {a}"),
            format!("post-jump {b}"),
            format!("validate {b}"),
            format!("pre-jump {a}"),
            format!("un-jump {b}"),
            format!("post-jump {a}"),
        ]
    );
}

both!(successful_validation_keeps_the_jump, |w: World| {
    let n = w.node("n", &["vs"]);
    let a = w.spool(&talking_package(&w, "vs", "1", false));
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);
    pause();
    let b = w.spool(&talking_package(&w, "vs", "2", false));
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    clear_hook_log(&w);
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("{b} validate: said validate")));
    assert_eq!(
        (current(&n, "vs"), previous(&n, "vs")),
        (Some(id_of(&b)), Some(id_of(&a)))
    );
    assert_eq!(
        hook_log(&w),
        [
            format!("post-sync {b}"),
            format!("pre-jump {b}"),
            format!("un-jump {a}"),
            format!("post-jump {b}"),
            format!("validate {b}"),
        ]
    );
    // And through a local jump.
    clear_hook_log(&w);
    ok(&w, &n, &["jump", &a]);
    assert_eq!(current(&n, "vs"), Some(id_of(&a)));
    assert_eq!(hook_log(&w).last(), Some(&format!("validate {a}")));
});

#[test]
fn failed_validation_with_nothing_to_roll_back_to() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["vn"]);
    let a = w.spool(&talking_package(&w, "vn", "1", true));
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let out = run(&w, &n, &["sync"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "the validate hook of {a} failed with exit status 4; nothing was current before it, so {a} stays current"
        )),
        "{}",
        stderr(&out)
    );
    // Said once, by the error line.
    assert_eq!(
        stderr(&out).matches("stays current").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(current(&n, "vn"), Some(id_of(&a)));
}

// ------------------------------------------------------------ operations

/// The fenced blocks of a markdown file whose info string has `file=NAME`.
fn doc_files(markdown: &str) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```")
                    && let Some(name) = info
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("file="))
                {
                    open = Some((name.to_owned(), String::new()));
                }
            }
            Some((_, body)) if line.starts_with("```") => {
                let _ = body;
                files.extend(open.take());
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    files
}

fn operations_doc() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md");
    let text = std::fs::read_to_string(&path).expect("docs/operations.md");
    doc_files(&text)
}

fn doc_file(name: &str) -> String {
    operations_doc()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("docs/operations.md has no block file={name}"))
}

/// The ftl arguments of a command line in the docs must parse.
fn assert_ftl_command(line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words
        .iter()
        .position(|w| *w == "ftl" || w.ends_with("/ftl"))
        .unwrap_or_else(|| panic!("no ftl in {line:?}"));
    let args: Vec<&str> = words[start..]
        .iter()
        .take_while(|w| !w.starts_with('>') && !w.starts_with("2>") && **w != "|")
        .copied()
        .collect();
    if let Err(e) = ftl::cli::Cli::try_parse_from(&args) {
        panic!("{args:?} does not parse: {e}");
    }
}

/// One cron time field: `*`, or a list of values and ranges, each with an
/// optional `/step`, within `lo..=hi` (or one of `names`).
fn cron_field_ok(field: &str, lo: u32, hi: u32, names: &[&str]) -> bool {
    let value = |v: &str| -> Option<u32> {
        v.parse::<u32>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .or_else(|| {
                names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(v))
                    .map(|i| i as u32 + lo)
            })
    };
    field.split(',').all(|part| {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let step_ok = step.is_none_or(|s| s.parse::<u32>().is_ok_and(|s| s >= 1 && s <= hi));
        let range_ok = range == "*"
            || match range.split_once('-') {
                Some((a, b)) => matches!((value(a), value(b)), (Some(a), Some(b)) if a <= b),
                None => value(range).is_some(),
            };
        !part.is_empty() && step_ok && range_ok
    })
}

#[test]
fn cron_field_checker_refuses_what_cron_refuses() {
    // The checker below must be able to fail.
    assert!(cron_field_ok("*", 0, 59, &[]));
    assert!(cron_field_ok("*/5", 0, 59, &[]));
    assert!(cron_field_ok("1-5,6", 0, 6, &[]));
    assert!(cron_field_ok(
        "mon-fri",
        0,
        6,
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    ));
    for bad in ["60", "*/0", "5-1", "", "x", "1,,2", "**"] {
        assert!(!cron_field_ok(bad, 0, 59, &[]), "{bad:?} accepted");
    }
}

#[test]
fn cron_line_is_valid() {
    let cron = doc_file("/etc/cron.d/ftl");
    let mut jobs = 0;
    for line in cron.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // NAME=value lines set the environment of the jobs.
        if let Some((name, _)) = line.split_once('=')
            && !name.contains(char::is_whitespace)
        {
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{line}"
            );
            continue;
        }
        // /etc/cron.d: five time fields, a user, the command.
        let fields: Vec<&str> = line.splitn(7, char::is_whitespace).collect();
        assert_eq!(fields.len(), 7, "{line}");
        let months = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        for (f, (lo, hi, names)) in fields[..5].iter().zip([
            (0, 59, &[][..]),
            (0, 23, &[][..]),
            (1, 31, &[][..]),
            (1, 12, &months[..]),
            (0, 7, &days[..]),
        ]) {
            assert!(cron_field_ok(f, lo, hi, names), "bad field {f:?} in {line}");
        }
        assert!(
            fields[5]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "user {:?}",
            fields[5]
        );
        assert!(
            !fields[6].contains('%'),
            "cron turns % into newlines: {line}"
        );
        assert_ftl_command(fields[6]);
        assert!(fields[6].contains("--splay"), "{line}");
        jobs += 1;
    }
    assert_eq!(jobs, 1, "{cron}");
}

/// `section -> [(key, value)]` of a unit file.
fn unit_keys(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line:?}"));
        keys.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    keys
}

fn unit_value<'a>(
    keys: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Option<&'a str> {
    keys.iter()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
}

#[test]
fn systemd_units_are_valid() {
    let service = doc_file("ftl-sync.service");
    let timer = doc_file("ftl-sync.timer");

    // Always: the keys that make it work, parsed by hand.
    let s = unit_keys(&service);
    assert_eq!(unit_value(&s, "Service", "Type"), Some("oneshot"));
    let exec = unit_value(&s, "Service", "ExecStart").expect("ExecStart");
    assert!(
        exec.starts_with('/'),
        "systemd wants an absolute path: {exec}"
    );
    assert_ftl_command(exec);
    assert!(exec.contains("sync") && exec.contains("--splay"), "{exec}");
    assert_eq!(
        unit_value(&s, "Service", "EnvironmentFile"),
        Some("/etc/default/ftl")
    );
    // The docs show the units the Debian package installs, as they are.
    for (name, text) in [("ftl-sync.service", &service), ("ftl-sync.timer", &timer)] {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("pkg/deb")
                .join(name),
        )
        .unwrap();
        assert_eq!(
            *text, shipped,
            "docs/operations.md's {name} is not pkg/deb/{name}"
        );
    }
    let t = unit_keys(&timer);
    assert!(unit_value(&t, "Timer", "OnCalendar").is_some(), "{timer}");
    assert_eq!(unit_value(&t, "Install", "WantedBy"), Some("timers.target"));
    // The timer starts the service of its own name, unless it says otherwise.
    assert!(unit_value(&t, "Timer", "Unit").is_none_or(|u| u == "ftl-sync.service"));

    // systemd's own checker (the keys were checked above in any case).
    common::require("systemd-analyze", common::has_tool("systemd-analyze"));
    let version = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let ftl = assert_cmd::cargo::cargo_bin!("ftl");
    // verify checks that ExecStart's program exists: point it at this build.
    let service = service.replace(
        exec.split_whitespace().next().unwrap_or_default(),
        &ftl.display().to_string(),
    );
    std::fs::write(dir.path().join("ftl-sync.service"), service).unwrap();
    std::fs::write(dir.path().join("ftl-sync.timer"), timer).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("ftl-sync.service"))
        .arg(dir.path().join("ftl-sync.timer"))
        .output()
        .unwrap();
    // It exits 0 after merely warning about a bad value: its output counts too.
    let said: Vec<String> = stderr(&out)
        .lines()
        .chain(stdout(&out).lines())
        .filter(|l| l.contains("ftl-sync"))
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success() && said.is_empty(),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

// ------------------------------------------------------------------ docs

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// GitHub's anchor for a heading: lower case, spaces to '-', other
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn docs_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![PathBuf::from("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p.strip_prefix(root).unwrap().to_owned());
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = doc(file.to_str().unwrap());
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("man:") {
                continue;
            }
            let (path, frag) = target.split_once('#').unwrap_or((target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(Path::new("")).join(path)
            };
            let dest_text = std::fs::read_to_string(root.join(&dest))
                .unwrap_or_else(|_| panic!("{}: broken link {target}", file.display()));
            if !frag.is_empty() {
                let anchors: Vec<String> = dest_text
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|h| anchor(h.trim_start_matches('#')))
                    .collect();
                assert!(
                    anchors.iter().any(|a| a == frag),
                    "{}: no heading for {target} in {anchors:?}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn docs_cover_every_step_variable_and_status() {
    let hooks = doc("docs/hooks.md");
    for step in ftl::hooks::Step::ALL {
        assert!(hooks.contains(&format!("`{step}`")), "hooks.md: no {step}");
    }
    for var in [
        "FTL_ROOT",
        "FTL_PACKAGE",
        "FTL_REVISION",
        "FTL_REVISION_PATH",
        "FTL_STEP",
        "FTL_CURRENT_REVISION",
        "FTL_PREVIOUS_REVISION",
    ] {
        assert!(hooks.contains(&format!("`{var}`")), "hooks.md: no {var}");
    }
    for needle in [
        "ftl/post-spool",
        "--ignore-unjump-failure",
        "--hook-timeout",
    ] {
        assert!(hooks.contains(needle), "hooks.md: no {needle}");
    }

    // Every variable a flag reads, in the guide and in configuration.md.
    let guide = doc("docs/guide.md");
    let config = doc("docs/configuration.md");
    // The global flags and every subcommand's own.
    let cli = ftl::cli::Cli::command();
    let mut vars: Vec<String> = std::iter::once(&cli)
        .chain(cli.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    vars.sort();
    vars.dedup();
    assert!(vars.len() >= 5, "{vars:?}");
    for var in vars
        .iter()
        .map(String::as_str)
        .chain(["FTL_LOG", "AWS_DEFAULT_REGION"])
    {
        assert!(guide.contains(&format!("`{var}`")), "guide.md: no {var}");
        assert!(
            config.contains(&format!("`{var}`")),
            "configuration.md: no {var}"
        );
    }
    for status in [
        ftl::error::EXIT_FAILURE,
        ftl::error::EXIT_USAGE,
        ftl::error::EXIT_NOT_IN_STEP,
    ] {
        let row = format!("| {status} |");
        assert!(guide.contains(&row), "guide.md: no exit status {status}");
        assert!(
            config.contains(&row),
            "configuration.md: no exit status {status}"
        );
    }

    let migration = doc("docs/migration.md");
    for needle in [".current", "absolute", "ids", "ftl/", "AWS_DEFAULT_REGION"] {
        assert!(migration.contains(needle), "migration.md: no {needle}");
    }
}
