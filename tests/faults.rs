//! A hostile S3 server: 500s, 503 SlowDown, connections reset or cut in the middle
//! of a body, truncated bodies, slow bodies, flipped bytes, answers lost after the
//! write was applied. Under a 10 % fault rate, `ftl sync` of 20 revisions completes
//! by retrying or fails with one clear line, and never installs a corrupt or partial
//! revision; `ftl spool` never leaves a visible partial revision or a dangling
//! multipart upload.
//!
//! Runs: FTL_TEST_FAULT_RUNS (default 3; benches/reliability.sh raises it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{
    Backend, Chaos, Fault, FaultKind, Server, World, check_node, env_count, error_line, figure,
    id_of, leftovers, link_target, output_within, stderr, stdout,
};

const LIMIT: Duration = Duration::from_secs(300);

fn runs() -> u64 {
    env_count("FTL_TEST_FAULT_RUNS", 3)
}

/// Faults are injected by the in-process server only: this suite is not
/// run against an external one (see .ci/run), and says so if it is.
fn server(w: &World) -> &Server {
    match &w.server {
        Some(s) if !s.is_external() => s,
        _ => panic!("the fault suite needs the in-process server: unset FTL_TEST_S3_ENDPOINT"),
    }
}

/// `n` revisions of package `app` in the bucket, the oldest blessed first and
/// the newest after it, so a fresh node downloads all of them.
struct Deployed {
    expected: BTreeMap<String, PathBuf>,
    oldest: String,
    newest: String,
}

fn deploy(w: &World, n: usize, seed: u64) -> Deployed {
    let mut expected = BTreeMap::new();
    for i in 0..n {
        let (tgz, src) =
            common::random_package(w.tmp.path(), "app.tgz", seed + i as u64, 4, 48 << 10);
        let rev = w.spool_new(&tgz);
        expected.insert(id_of(&rev), src);
    }
    let ids: Vec<&String> = expected.keys().collect();
    let (oldest, newest) = (format!("app.{}", ids[0]), format!("app.{}", ids[n - 1]));
    for rev in [&oldest, &newest] {
        let out = w
            .ftl(w.tmp.path())
            .args(["jump", "--master", rev])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    Deployed {
        expected,
        oldest,
        newest,
    }
}

#[test]
fn sync_of_20_revisions_under_10_percent_faults() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let d = deploy(&w, 20, 1000);
    let (mut completed, mut failed, mut verified) = (0u64, 0u64, 0u64);
    for run in 0..runs() {
        let n = w.node(&format!("n{run}"), &["app"]);
        s.set_fault(Fault::Chaos(Chaos::new(100, 0xfa17 + run)));
        let out = output_within(w.ftl(&n).args(["sync", "--jobs", "4"]), LIMIT);
        s.set_fault(Fault::None);
        // Whatever happened, nothing partial or corrupt is visible.
        verified += check_node(&n, "app", &d.expected)
            .unwrap_or_else(|e| panic!("run {run}: {e}\n{}", stderr(&out)));
        assert_eq!(leftovers(&n, "app"), Vec::<String>::new(), "run {run}");
        if out.status.success() {
            completed += 1;
            assert_eq!(
                link_target(&n, "app", "current"),
                Some(id_of(&d.newest)),
                "run {run}"
            );
            assert_eq!(
                link_target(&n, "app", "previous"),
                Some(id_of(&d.oldest)),
                "run {run}"
            );
        } else {
            failed += 1;
            assert_eq!(out.status.code(), Some(1), "run {run}: {}", stderr(&out));
            for line in common::error_lines(&out) {
                assert!(line.contains("app."), "names the revision: {line}");
            }
            // A blessed revision that did not install is never current.
            if let Some(cur) = link_target(&n, "app", "current") {
                assert!(n.join("app/revs").join(cur).is_dir());
            }
        }
        // The next sync, with the server healthy again, repairs everything
        // (told to retry at once what failed verification: by itself it would
        // wait for the back-off, see `a_bad_revision_is_not_fetched_every_sync`).
        let out = output_within(w.ftl(&n).args(["sync", "--retry-failed"]), LIMIT);
        assert!(out.status.success(), "run {run}: {}", stderr(&out));
        verified += check_node(&n, "app", &d.expected).unwrap_or_else(|e| panic!("run {run}: {e}"));
        assert_eq!(
            std::fs::read_dir(n.join("app/revs")).unwrap().count(),
            20,
            "run {run}: all 20 revisions after the repair"
        );
        assert_eq!(link_target(&n, "app", "current"), Some(id_of(&d.newest)));
    }
    let injected = s.injected_total();
    eprintln!(
        "sync under faults: {completed} completed, {failed} failed cleanly, {injected} faults injected: {:?}",
        FaultKind::ALL.map(|k| (k, s.injected(k)))
    );
    assert!(injected > 0, "the fault injection did nothing");
    figure("fault_sync_runs", completed + failed);
    figure("fault_sync_completed", completed);
    figure("fault_sync_failed_cleanly", failed);
    figure("faults_injected", injected);
    figure("bytes_verified", verified);
}

/// Each body fault, alone and on every revision download: sync retries and
/// completes, or refuses; a lying server (truncated body with a matching length,
/// a flipped byte) is caught by the digest.
#[test]
fn every_body_fault_is_caught_or_ridden_out() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let d = deploy(&w, 2, 2000);
    for kind in [
        FaultKind::CutBody,
        FaultKind::TruncatedBody,
        FaultKind::FlipByte,
        FaultKind::SlowBody,
    ] {
        let n = w.node(&format!("n-{kind:?}"), &["app"]);
        let mut chaos = Chaos::new(1000, 7);
        chaos.kinds = vec![kind];
        chaos.path_contains = ".tgz".into();
        s.set_fault(Fault::Chaos(chaos));
        let before = s.injected(kind);
        let out = output_within(w.ftl(&n).arg("sync"), LIMIT);
        s.set_fault(Fault::None);
        assert!(s.injected(kind) > before, "{kind:?} was injected");
        check_node(&n, "app", &d.expected).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(leftovers(&n, "app"), Vec::<String>::new(), "{kind:?}");
        if kind == FaultKind::SlowBody {
            assert!(
                out.status.success(),
                "a slow body is only slow: {}",
                stderr(&out)
            );
            continue;
        }
        // Every download fails, every time: the sync must fail, naming why.
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", stderr(&out));
        for line in common::error_lines(&out) {
            match kind {
                FaultKind::TruncatedBody | FaultKind::FlipByte => {
                    assert!(line.contains("digest"), "{kind:?}: {line}")
                }
                _ => assert!(line.contains("app."), "{kind:?}: {line}"),
            }
        }
        assert_eq!(link_target(&n, "app", "current"), None, "{kind:?}");
        figure("faults_injected", s.injected(kind) - before);
    }
}

/// A spool whose requests fail at random: it succeeds, or fails with one line;
/// the bucket then holds exactly the revisions whose spool succeeded, each
/// complete, and no multipart upload is left open.
#[test]
fn spool_under_faults_leaves_nothing_partial() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let mut spooled: BTreeMap<String, PathBuf> = BTreeMap::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let runs = runs() * 4;
    for run in 0..runs {
        let (tgz, _) = common::random_package(w.tmp.path(), "sp.tgz", 3000 + run, 2, 64 << 10);
        s.set_fault(Fault::Chaos(Chaos::new(250, 0x5b001 + run)));
        let out = output_within(w.ftl(w.tmp.path()).arg("spool").arg(&tgz), LIMIT);
        s.set_fault(Fault::None);
        if out.status.success() {
            ok += 1;
            spooled.insert(stdout(&out).trim().to_owned(), tgz);
        } else {
            failed += 1;
            let line = error_line(&out);
            assert!(
                !line.contains("already exists"),
                "run {run}: our own upload refused: {line}"
            );
        }
        std::thread::sleep(Duration::from_millis(1050)); // distinct ids
    }
    check_bucket(&w, s, "sp", &spooled);
    figure("fault_spool_runs", ok + failed);
    figure("faults_injected", s.injected_total());
    eprintln!("spool under faults: {ok} ok, {failed} failed cleanly");
}

/// The bucket holds exactly `spooled` of `package`, each byte for byte.
fn check_bucket(w: &World, s: &Server, package: &str, spooled: &BTreeMap<String, PathBuf>) {
    let out = w
        .ftl(w.tmp.path())
        .args(["list", "--master", package])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.trim_end_matches("\t(active)").to_owned())
        .collect();
    let want: Vec<String> = spooled.keys().cloned().collect();
    assert_eq!(listed, want, "the bucket holds exactly what spool reported");
    for (rev, file) in spooled {
        let ext = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('.'))
            .map(|(_, e)| e.to_owned())
            .unwrap_or_default();
        let stored = std::fs::read(s.bucket_dir(&w.bucket).join(format!("{rev}.{ext}"))).unwrap();
        assert!(
            stored == std::fs::read(file).unwrap(),
            "{rev} is stored intact"
        );
        figure("bytes_verified", stored.len() as u64);
    }
    assert_eq!(
        s.pending_uploads(),
        Vec::<String>::new(),
        "no multipart upload left open"
    );
}

/// Files of 64 MiB and more upload in parts: faults on the parts, the start, the
/// completion and the abort.
#[test]
fn multipart_spool_under_faults() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let mut rng = common::Rng::new(99);
    let block = rng.bytes(1 << 20);
    let mut spooled = BTreeMap::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let runs = env_count("FTL_TEST_MULTIPART_RUNS", 2);
    for run in 0..runs {
        let dir = w.path(&format!("mp{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.bin");
        let mut data = Vec::with_capacity(65 << 20);
        for i in 0..65u64 {
            data.extend_from_slice(&(run * 1000 + i).to_le_bytes());
            data.extend_from_slice(&block[8..]);
        }
        std::fs::write(&file, &data).unwrap();
        drop(data);
        let mut chaos = Chaos::new(150, 0x3a17 + run);
        chaos.only = vec!["PUT", "POST", "DELETE"];
        chaos.kinds = vec![
            FaultKind::Internal,
            FaultKind::SlowDown,
            FaultKind::Reset,
            FaultKind::LostAnswer,
        ];
        s.set_fault(Fault::Chaos(chaos));
        let out = output_within(w.ftl(w.tmp.path()).arg("spool").arg(&file), LIMIT);
        s.set_fault(Fault::None);
        if out.status.success() {
            ok += 1;
            spooled.insert(stdout(&out).trim().to_owned(), file);
        } else {
            failed += 1;
            let line = error_line(&out);
            assert!(!line.contains("already exists"), "run {run}: {line}");
        }
        std::thread::sleep(Duration::from_millis(1050));
    }
    check_bucket(&w, s, "big", &spooled);
    for f in spooled.values() {
        let _ = std::fs::remove_file(f);
    }
    figure("fault_spool_runs", ok + failed);
    figure("faults_injected", s.injected_total());
    eprintln!("multipart spool under faults: {ok} ok, {failed} failed cleanly");
}

/// The bucket's text of `key`, read from the in-process server's files.
fn bucket_text(w: &World, key: &str) -> String {
    let dir = server(w).bucket_dir(&w.bucket);
    std::fs::read_to_string(dir.join(key)).unwrap_or_default()
}

/// Issue 14, item 4: a lost answer to a pointer write, retried by the SDK,
/// comes back as 412 although the pointer holds our text: the bless went
/// through and must be reported as such (and its change marker written). A
/// change marker that cannot be written is a warning, never a failed bless.
#[test]
fn bless_believes_a_412_only_after_reading_the_pointer() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let mut revs = Vec::new();
    for v in 0..5 {
        let tgz = common::package(w.tmp.path(), "site.tgz", &[("v", &v.to_string(), 0o644)]);
        revs.push(w.spool_new(&tgz));
    }
    let bless =
        |rev: &str| output_within(w.ftl(w.tmp.path()).args(["jump", "--master", rev]), LIMIT);
    let out = bless(&revs[0]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Each pointer's answer lost in turn: `.previous` first, then `.current`, `.rev`.
    for (i, key) in ["site.previous", "site.current", "site.rev"]
        .iter()
        .enumerate()
    {
        let (rev, before) = (&revs[i + 1], &revs[i]);
        let marker = bucket_text(&w, "site.changed");
        s.set_fault(Fault::LoseAnswerOnce((*key).to_owned()));
        let out = bless(rev);
        s.set_fault(Fault::None);
        assert!(
            out.status.success(),
            "lost answer to {key}: {}",
            stderr(&out)
        );
        assert_eq!(bucket_text(&w, "site.current"), *rev);
        assert_eq!(bucket_text(&w, "site.rev"), *rev);
        assert_eq!(bucket_text(&w, "site.previous"), *before);
        assert_ne!(
            bucket_text(&w, "site.changed"),
            marker,
            "marker not written"
        );
    }
    // A change marker that cannot be written: the bless stands, with a warning.
    s.set_fault(Fault::FailPut("site.changed".into()));
    let out = bless(&revs[4]);
    s.set_fault(Fault::None);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("change marker")),
        "{err}"
    );
    assert_eq!(bucket_text(&w, "site.current"), revs[4]);
    assert_eq!(bucket_text(&w, "site.previous"), revs[3]);
}

/// Issue 14, item 2: a revision that fails verification is downloaded once
/// per run (a digest mismatch is not retried within it), recorded with its
/// reason, and not downloaded again before its back-off, which `status`
/// shows; `sync --retry-failed` tries it at once.
#[test]
fn a_bad_revision_is_not_fetched_every_sync() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let d = deploy(&w, 1, 3000);
    let n = w.node("n", &["app"]);
    let mut chaos = Chaos::new(1000, 11);
    chaos.kinds = vec![FaultKind::FlipByte];
    chaos.path_contains = ".tgz".into();
    s.set_fault(Fault::Chaos(chaos));

    let flips = s.injected(FaultKind::FlipByte);
    let out = output_within(w.ftl(&n).arg("sync"), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(error_line(&out).contains("digest"), "{}", stderr(&out));
    assert_eq!(
        s.injected(FaultKind::FlipByte) - flips,
        1,
        "a digest mismatch is not downloaded again within the run"
    );

    let flips = s.injected(FaultKind::FlipByte);
    let out = output_within(w.ftl(&n).arg("sync"), LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("not tried again before") && line.contains("--retry-failed"),
        "{line}"
    );
    assert_eq!(
        s.injected(FaultKind::FlipByte) - flips,
        0,
        "not downloaded again during its back-off"
    );

    let out = output_within(w.ftl(&n).args(["status", "--json"]), LIMIT);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = &doc["packages"][0]["failed"];
    assert_eq!(failed[0]["name"], serde_json::json!(d.newest), "{doc}");
    assert_eq!(failed[0]["failures"], serde_json::json!(1), "{doc}");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("digest"),
        "{doc}"
    );
    assert!(stdout(&output_within(w.ftl(&n).arg("status"), LIMIT)).contains("failed=app."));

    s.set_fault(Fault::None);
    let out = output_within(w.ftl(&n).args(["sync", "--retry-failed"]), LIMIT);
    assert!(out.status.success(), "{}", stderr(&out));
    check_node(&n, "app", &d.expected).unwrap();
    assert_eq!(link_target(&n, "app", "current"), Some(id_of(&d.newest)));
    let out = output_within(w.ftl(&n).args(["status", "--json"]), LIMIT);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["packages"][0]["failed"], serde_json::json!([]), "{doc}");
}
