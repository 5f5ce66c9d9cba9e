//! Watching a rollout: nodes with `FTL_REPORT=1` report what they run,
//! `ftl fleet` shows it, `jump --master --wait` waits for it. Run as a user
//! would, against the in-process S3 server (and moto in .ci/run's second
//! pass, but for the tests that count requests or inject faults) and the
//! local-directory store.

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    Backend, Fault, RUN_LIMIT, World, current, id_of, legacy, ok, output_within, run, stderr,
    stdout,
};

/// ftl on `root` as node `node`, reporting.
fn as_node(w: &World, root: &Path, node: &str) -> Command {
    let mut cmd = w.ftl(root);
    cmd.env("FTL_REPORT", "1").env("FTL_NODE_ID", node);
    cmd
}

fn node_run(w: &World, root: &Path, node: &str, args: &[&str]) -> Output {
    output_within(as_node(w, root, node).args(args), RUN_LIMIT)
}

fn node_ok(w: &World, root: &Path, node: &str, args: &[&str]) -> String {
    let out = node_run(w, root, node, args);
    assert!(
        out.status.success(),
        "{node}: ftl {args:?} failed: {}",
        stderr(&out)
    );
    stderr(&out)
}

/// ftl on the deploy box (no root), polling fast when it waits.
fn deploy_box(w: &World, args: &[&str]) -> Output {
    let mut cmd = w.ftl(w.tmp.path());
    cmd.env("FTL_TEST_WAIT_POLL_MS", "50").args(args);
    output_within(&mut cmd, RUN_LIMIT)
}

/// The report keys in the bucket.
fn report_keys(w: &World) -> Vec<String> {
    legacy::list(w, "!report!", "", 1000).keys
}

/// `ftl fleet --json`, parsed, and its exit status.
fn fleet_json(w: &World, args: &[&str]) -> (Vec<serde_json::Value>, Option<i32>) {
    let mut all = vec!["fleet", "--json"];
    all.extend_from_slice(args);
    let out = deploy_box(w, &all);
    let rows: Vec<serde_json::Value> = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("fleet --json: {e}: {}{}", stdout(&out), stderr(&out)));
    (rows, out.status.code())
}

fn row<'a>(rows: &'a [serde_json::Value], node: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no row of {node} in {rows:?}"))
}

fn pause() {
    // Revision ids have a resolution of one second.
    std::thread::sleep(std::time::Duration::from_millis(1050));
}

/// A package whose post-sync hook fails on a node that has a file `fail`
/// in its root.
fn spool_with_hook(w: &World, content: &str) -> String {
    w.spool_files(
        "site.tgz",
        &[
            ("index.html", content, 0o644),
            (
                "post-sync.sh",
                "#!/bin/sh\nif [ -e \"$FTL_ROOT/fail\" ]; then echo 'cannot start' >&2; exit 7; fi\n",
                0o755,
            ),
        ],
    )
}

both!(
    fleet_shows_three_nodes_before_and_after_they_sync,
    |w: World| {
        let nodes: Vec<_> = ["web-01", "web-02", "web-03"]
            .iter()
            .map(|n| (*n, w.node(n, &["site"])))
            .collect();
        let a = w.spool_files("site.tgz", &[("v", "1", 0o644)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);

        // No report yet: nothing to show is a failure, said so.
        let out = deploy_box(&w, &["fleet"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("FTL_REPORT=1"), "{}", stderr(&out));

        for (n, root) in &nodes {
            node_ok(&w, root, n, &["sync"]);
        }
        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(0), "{rows:?}");
        assert_eq!(rows.len(), 3);
        for (n, _) in &nodes {
            let r = row(&rows, n);
            assert_eq!(r["package"], "site");
            assert_eq!(r["revision"], a.as_str());
            assert_eq!(r["in_step"], true);
            assert_eq!(r["result"], "ok");
            assert_eq!(r["error"], serde_json::Value::Null);
            assert_eq!(r["stale"], false);
            assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
            let at = r["reported_at"].as_str().unwrap();
            assert!(at.ends_with('Z') && at.len() == 20, "{at}");
            let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys.len(),
                9,
                "exactly the documented keys: {keys:?} (docs/json.md)"
            );
        }
        // One report per node and package.
        assert_eq!(report_keys(&w).len(), 3, "{:?}", report_keys(&w));

        // A new bless: before the nodes sync, every one is behind (exit 3);
        // after two of them, the third is named first and in the summary.
        pause();
        let b = w.spool_files("site.tgz", &[("v", "2", 0o644)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &b]);
        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(3));
        assert!(rows.iter().all(|r| r["in_step"] == false), "{rows:?}");
        for (n, root) in &nodes[..2] {
            node_ok(&w, root, n, &["sync"]);
        }
        let out = deploy_box(&w, &["fleet", "site"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("web-03 ") && lines[0].contains(&a) && lines[0].contains("behind"),
            "the laggard first: {text}"
        );
        assert!(
            lines[1].starts_with("web-01 ") && lines[1].contains("in-step"),
            "{text}"
        );
        assert_eq!(
            lines[3],
            format!("2 of 3 nodes on {b} (blessed); 1 behind: web-03")
        );
        // Each node replaced its report: still one per node.
        assert_eq!(report_keys(&w).len(), 3, "{:?}", report_keys(&w));

        node_ok(&w, &nodes[2].1, "web-03", &["sync"]);
        let out = deploy_box(&w, &["fleet"]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        assert!(
            stdout(&out).ends_with(&format!("3 of 3 nodes on {b} (blessed)\n")),
            "{}",
            stdout(&out)
        );
    }
);

both!(wait_returns_once_the_last_node_converges, |w: World| {
    let nodes: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| (*n, w.node(n, &["site"])))
        .collect();
    let a = w.spool_files("site.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    for (n, root) in &nodes {
        node_ok(&w, root, n, &["sync"]);
    }
    pause();
    let b = w.spool_files("site.tgz", &[("v", "2", 0o644)]);

    // Blessed, two of three nodes follow: waiting for all of them times out,
    // naming the third; waiting for 60 % is satisfied.
    let out = deploy_box(
        &w,
        &["jump", "--master", &b, "--wait", "--wait-timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    for (n, root) in &nodes[..2] {
        node_ok(&w, root, n, &["sync"]);
    }
    let out = deploy_box(
        &w,
        &["jump", "--master", &b, "--wait", "--wait-timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("on 2 of 3 reporting nodes after 1s"), "{err}");
    assert!(err.contains(&format!("n3: on {a}")), "{err}");
    assert!(!err.contains("n1: on"), "{err}");
    let out = deploy_box(
        &w,
        &[
            "jump",
            "--master",
            &b,
            "--wait",
            "60%",
            "--wait-timeout",
            "1s",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A wait that runs while the last node converges ends with it.
    let mut waiting = w.ftl(w.tmp.path());
    waiting
        .env("FTL_TEST_WAIT_POLL_MS", "50")
        .args(["jump", "--master", &b, "--wait", "--wait-timeout", "5m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = waiting.spawn().expect("spawn ftl");
    // It is still waiting after several looks at two of three...
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut child = child;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the wait ended before the last node converged"
    );
    // ...and ends once the third syncs.
    node_ok(&w, &nodes[2].1, "n3", &["sync"]);
    let out = output_of(child);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("3/3 nodes on"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{b} runs on 3 of 3 reporting nodes")),
        "{}",
        stderr(&out)
    );
});

/// The child's output, within the usual limit.
fn output_of(mut child: std::process::Child) -> Output {
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("ftl did not end within {RUN_LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

both!(
    wait_gives_up_naming_the_node_whose_post_sync_hook_failed,
    |w: World| {
        let nodes: Vec<_> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| (*n, w.node(n, &["site"])))
            .collect();
        let a = spool_with_hook(&w, "1");
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);
        for (n, root) in &nodes {
            node_ok(&w, root, n, &["sync"]);
        }
        pause();
        let b = spool_with_hook(&w, "2");
        ok(&w, w.tmp.path(), &["jump", "--master", &b]);
        std::fs::write(nodes[2].1.join("fail"), "").unwrap();
        for (n, root) in &nodes {
            let out = node_run(&w, root, n, &["sync"]);
            assert_eq!(out.status.success(), *n != "n3", "{n}: {}", stderr(&out));
        }
        assert_eq!(current(&nodes[2].1, "site"), Some(id_of(&a)));

        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(3));
        let r = row(&rows, "n3");
        assert_eq!(r["result"], "failed");
        assert_eq!(r["revision"], a.as_str());
        let error = r["error"].as_str().unwrap();
        assert!(
            error.starts_with(&b) && error.contains("post-sync"),
            "{error}"
        );
        assert_eq!(rows[0]["node"], "n3", "failures first: {rows:?}");

        // All of them can no longer run it: the wait gives up at once (exit 1),
        // long before its timeout, naming n3 and its error.
        let out = deploy_box(
            &w,
            &["jump", "--master", &b, "--wait", "--wait-timeout", "5m"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("failed on 1 of 3 reporting nodes"), "{err}");
        assert!(
            err.contains(&format!("n3: {b}")) && err.contains("post-sync"),
            "{err}"
        );
        // 60 % stays within reach, and is there.
        let out = deploy_box(&w, &["jump", "--master", &b, "--wait", "60"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

        // The failure cleared: the report says so.
        std::fs::remove_file(nodes[2].1.join("fail")).unwrap();
        node_ok(&w, &nodes[2].1, "n3", &["sync", "--retry-failed"]);
        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(0), "{rows:?}");
        assert_eq!(row(&rows, "n3")["result"], "ok");
        assert_eq!(row(&rows, "n3")["error"], serde_json::Value::Null);
    }
);

#[test]
fn idle_sync_with_reports_writes_nothing_and_asks_no_more() {
    let w = World::new(Backend::S3);
    let server = common::in_process(&w);
    let n = w.node("n", &["p1", "p2"]);
    w.bless_one_each(["p1", "p2"]);
    node_ok(&w, &n, "n", &["sync"]);
    assert_eq!(report_keys(&w).len(), 2);

    server.counts.reset();
    node_ok(&w, &n, "n", &["sync"]);
    assert_eq!(server.counts.get("PUT"), 0, "no report written");
    assert_eq!(server.counts.get("DELETE"), 0);
    assert_eq!(server.counts.get("LIST"), 0);
    assert_eq!(server.counts.total(), 2, "one conditional GET per package");

    // A report older than FTL_REPORT_EVERY is written again, the old one
    // replaced. (The minimum is a minute: the record is made older instead
    // of the test waiting.)
    let record = n.join("p1").join(".ftl-reported");
    let text = std::fs::read_to_string(&record).unwrap();
    let old_key = text.lines().next().unwrap().to_owned();
    let aged = old_key.replace("!ok!!2026", "!ok!!2025");
    assert_ne!(aged, old_key);
    let body = legacy::get(&w, &old_key).unwrap();
    legacy::put(&w, &aged, &body, "application/json");
    legacy::delete(&w, &old_key);
    std::fs::write(&record, text.replacen(&old_key, &aged, 1)).unwrap();
    server.counts.reset();
    node_ok(&w, &n, "n", &["sync"]);
    assert_eq!(server.counts.get("PUT"), 1, "p1's report again");
    assert_eq!(server.counts.get("DELETE"), 1, "the old key deleted");
    assert_eq!(report_keys(&w).len(), 2, "{:?}", report_keys(&w));
}

#[test]
fn a_denied_report_write_leaves_the_sync_green_with_one_warning() {
    let w = World::new(Backend::S3);
    let server = common::in_process(&w);
    let n = w.node("n", &["p1", "p2"]);
    for p in ["p1", "p2"] {
        let r = w.spool_files(&format!("{p}.tgz"), &[("v", "1", 0o644)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &r]);
    }
    server.set_fault(Fault::DenyPut("!report!".into()));
    let out = node_run(&w, &n, "n", &["sync"]);
    server.set_fault(Fault::None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.denied_puts() >= 2, "both reports were tried");
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the run: {err}");
    assert!(
        warnings[0].contains("could not report this node's state to the bucket (2 of 2 reports)")
            && warnings[0].contains("denied"),
        "{err}"
    );
    assert!(current(&n, "p1").is_some(), "the sync went through");
    assert!(report_keys(&w).is_empty());
    // Nothing recorded as reported: the next sync reports.
    node_ok(&w, &n, "n", &["sync"]);
    assert_eq!(report_keys(&w).len(), 2);
}

both!(
    a_garbage_report_is_skipped_by_fleet_with_one_warning,
    |w: World| {
        let n = w.node("n", &["site"]);
        let a = w.spool_files("site.tgz", &[("v", "1", 0o644)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);
        node_ok(&w, &n, "web-01", &["sync"]);
        legacy::put(&w, "!report!site!garbage", b"{", "text/plain");
        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(0));
        assert_eq!(rows.len(), 1, "{rows:?}");
        let out = deploy_box(&w, &["fleet"]);
        let err = stderr(&out);
        let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{err}");
        assert!(warnings[0].contains("!report!site!garbage"), "{err}");
    }
);

both!(an_old_report_is_stale_and_does_not_count, |w: World| {
    let n = w.node("n", &["site"]);
    let a = w.spool_files("site.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    node_ok(&w, &n, "web-01", &["sync"]);
    // A node that stopped a day ago, on an older revision.
    legacy::put(
        &w,
        "!report!site!web-12!2026010100000Aa!ok!!20260101T000000Z!0~3~0",
        b"{}",
        "application/json",
    );
    let out = deploy_box(&w, &["fleet"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stale reports do not count: {}",
        stdout(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("web-12") && text.contains(" stale"), "{text}");
    assert!(
        text.ends_with(&format!("1 of 2 nodes on {a} (blessed); 1 stale: web-12\n")),
        "{text}"
    );
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    let (rows, _) = fleet_json(&w, &[]);
    assert_eq!(row(&rows, "web-12")["stale"], true);
    assert_eq!(row(&rows, "web-12")["reported_at"], "2026-01-01T00:00:00Z");
});

both!(
    reports_follow_local_jumps_and_node_ids_are_checked,
    |w: World| {
        let n = w.node("n", &["site"]);
        let a = w.spool_files("site.tgz", &[("v", "1", 0o644)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);
        pause();
        let b = w.spool_files("site.tgz", &[("v", "2", 0o644)]);
        node_ok(&w, &n, "web-01", &["sync"]);
        node_ok(&w, &n, "web-01", &["jump", &b]);
        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(3), "moved off the blessed revision by hand");
        assert_eq!(row(&rows, "web-01")["revision"], b.as_str());
        node_ok(&w, &n, "web-01", &["jump-back", "site"]);
        let (rows, code) = fleet_json(&w, &[]);
        assert_eq!(code, Some(0));
        assert_eq!(row(&rows, "web-01")["revision"], a.as_str());

        let out = node_run(&w, &n, "web 01", &["sync"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("invalid FTL_NODE_ID \"web 01\": only letters, digits"),
            "{}",
            stderr(&out)
        );
        // Without FTL_REPORT, the name is not even looked at.
        let out = run(&w, &n, &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
);
