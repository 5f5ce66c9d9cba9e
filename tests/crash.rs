//! Crashes: `ftl sync` killed with SIGKILL at random instants, again and again on
//! one node, each kill followed by the invariants a user would check; and a kill
//! in the middle of `jump`, between the old revision's un-jump hook and the switch.
//!
//! Runs: FTL_TEST_CRASH_RUNS (default 12; benches/reliability.sh uses 50).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    Backend, Rng, World, check_node, env_count, figure, id_of, leftovers, link_target, ok, stderr,
};

const LIMIT: Duration = Duration::from_secs(120);

/// Revisions whose post-sync hook finished, from the log the hooks append to.
fn post_synced(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn sync_killed_at_random_instants() {
    let w = World::new(Backend::S3);
    let runs = env_count("FTL_TEST_CRASH_RUNS", 12);
    let log = w.path("post-sync.log");
    // Four revisions of 40 × 64 KiB; the post-sync hook takes a moment and then
    // records that it finished.
    let mut expected: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut revs = Vec::new();
    for i in 0..4u64 {
        let (tgz, src) = common::random_package(w.tmp.path(), "app.tgz", 500 + i, 40, 64 << 10);
        // Add the hook to the package (the tree is what the revision must equal).
        let hook = format!(
            "#!/bin/sh\nsleep 0.1\necho \"$FTL_REVISION\" >> {}\n",
            log.display()
        );
        std::fs::write(src.join("post-sync.sh"), hook).unwrap();
        set_exec(&src.join("post-sync.sh"));
        common::tar_czf(&tgz, &src);
        let rev = w.spool_new(&tgz);
        expected.insert(id_of(&rev), src);
        revs.push(rev);
    }
    // How long an uninterrupted sync of everything takes, on a scratch node.
    let scratch = w.node("scratch", &["app"]);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[0]]);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[3]]);
    ok(&w, &scratch, &["sync"]);
    // Then, as every run below does, the two revisions clean removed: the
    // window the kills are drawn from is what such a sync takes here and now
    // (a first sync, measured while other tests start, can take much longer).
    ok(&w, &scratch, &["clean", "--keep", "0"]);
    let started = Instant::now();
    ok(&w, &scratch, &["sync"]);
    let window = started.elapsed();
    eprintln!("a sync of two revisions takes {window:?}");

    let node = w.node("n", &["app"]);
    let mut rng = Rng::new(0xc4a5);
    let mut killed = 0u64;
    let mut verified = 0u64;
    for run in 0..runs {
        // A new blessing now and then, so kills land in jumps and removals too.
        if run % 3 == 0 {
            let pick = &revs[rng.below(4) as usize];
            let out = w
                .ftl(w.tmp.path())
                .args(["jump", "--master", pick])
                .output()
                .unwrap();
            assert!(out.status.success() || stderr(&out).contains("already"));
        }
        // Work for every run: only current and previous stay, the sync downloads
        // the others again.
        ok(&w, &node, &["clean", "--keep", "0"]);
        // Within the first half of such a sync: some runs have less to do
        // (the blessed and previous revisions decide what is fetched).
        let delay = Duration::from_micros(rng.below(window.as_micros() as u64 / 2 + 1));
        let mut child = w
            .ftl(&node)
            .arg("sync")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        verified += check_node(&node, "app", &expected)
            .unwrap_or_else(|e| panic!("run {run}, killed after {delay:?}: {e}"));
        if run % 4 == 3 || run + 1 == runs {
            // An uninterrupted sync repairs whatever the kills left.
            ok(&w, &node, &["sync"]);
            verified += check_node(&node, "app", &expected).unwrap();
            assert_eq!(leftovers(&node, "app"), Vec::<String>::new(), "run {run}");
            let blessed = common::stdout(
                &w.ftl(w.tmp.path())
                    .args(["list", "--master", "app"])
                    .output()
                    .unwrap(),
            )
            .lines()
            .find_map(|l| l.strip_suffix("\t(active)").map(str::to_owned))
            .unwrap();
            assert_eq!(link_target(&node, "app", "current"), Some(id_of(&blessed)));
            // Every installed revision went through its post-sync hook.
            let hooked = post_synced(&log);
            for e in std::fs::read_dir(node.join("app/revs")).unwrap().flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                assert!(
                    hooked.contains(&format!("app.{id}")),
                    "run {run}: app.{id} is installed but its post-sync hook never finished"
                );
            }
        }
    }
    eprintln!("{runs} runs, {killed} killed mid-sync");
    assert!(killed * 2 >= runs, "most kills must land while ftl runs");
    figure("crash_runs", runs);
    figure("crashes_survived", killed);
    figure("bytes_verified", verified);
}

fn set_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs ftl with `args` on `node` until the hook that writes its pid to
/// `signal` runs, then kills ftl (SIGKILL) and the orphaned hook, which is in a
/// process group of its own.
fn kill_during_hook(w: &World, node: &Path, args: &[&str], signal: &Path, hook: &str) {
    let _ = std::fs::remove_file(signal);
    let mut child = w
        .ftl(node)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(signal)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(started.elapsed() < LIMIT, "the {hook} hook never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let pid = std::fs::read_to_string(signal).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status();
}

/// The un-jump hook of the current revision signals the test and sleeps; the test
/// kills ftl there. The node must still be consistent: current unchanged and
/// resolving, and the next jump goes through.
#[test]
fn jump_killed_between_unjump_and_switch() {
    let w = World::new(Backend::Dir);
    let node = w.node("n", &["app"]);
    let signal = w.path("unjump-started");
    let gate = w.path("unjump-may-pass");
    let hook = format!(
        "#!/bin/sh\n[ -e {gate} ] && exit 0\necho $$ > {signal}\nsleep 30\n",
        gate = gate.display(),
        signal = signal.display()
    );
    let mut expected = BTreeMap::new();
    let mut revs = Vec::new();
    for i in 0..2u64 {
        let (tgz, src) = common::random_package(w.tmp.path(), "app.tgz", 700 + i, 3, 1024);
        std::fs::write(src.join("un-jump.sh"), &hook).unwrap();
        set_exec(&src.join("un-jump.sh"));
        common::tar_czf(&tgz, &src);
        let rev = w.spool_new(&tgz);
        expected.insert(id_of(&rev), src);
        revs.push(rev);
    }
    let (a, b) = (&revs[0], &revs[1]);
    // Both installed, a current and b previous.
    ok(&w, w.tmp.path(), &["jump", "--master", b]);
    ok(&w, w.tmp.path(), &["jump", "--master", a]);
    std::fs::write(&gate, "").unwrap();
    ok(&w, &node, &["sync"]);
    std::fs::remove_file(&gate).unwrap();
    assert_eq!(link_target(&node, "app", "current"), Some(id_of(a)));
    assert_eq!(link_target(&node, "app", "previous"), Some(id_of(b)));

    for attempt in 0..3 {
        kill_during_hook(&w, &node, &["jump", b], &signal, "un-jump");
        check_node(&node, "app", &expected).unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert_eq!(
            link_target(&node, "app", "current"),
            Some(id_of(a)),
            "the switch did not happen"
        );
        assert_eq!(link_target(&node, "app", "previous"), Some(id_of(b)));
        figure("crashes_survived", 1);
    }
    // Nothing stands in the way of the next jump.
    std::fs::write(&gate, "").unwrap();
    ok(&w, &node, &["jump", b]);
    assert_eq!(link_target(&node, "app", "current"), Some(id_of(b)));
    assert_eq!(link_target(&node, "app", "previous"), Some(id_of(a)));
    assert_eq!(leftovers(&node, "app"), Vec::<String>::new());
    check_node(&node, "app", &expected).unwrap();
}

/// Killed while a revision's post-sync hook runs: the revision is in place but
/// was never confirmed by its hook. The next sync must not take it as done: the
/// hook runs again (and the revision is used only once it succeeds).
#[test]
fn sync_killed_during_post_sync() {
    let w = World::new(Backend::Dir);
    let node = w.node("n", &["app"]);
    let signal = w.path("post-sync-started");
    let gate = w.path("post-sync-may-pass");
    let done = w.path("post-sync-done");
    let hook = format!(
        "#!/bin/sh\nif [ ! -e {gate} ]; then echo $$ > {signal}; sleep 30; fi\necho \"$FTL_REVISION\" >> {done}\n",
        gate = gate.display(),
        signal = signal.display(),
        done = done.display()
    );
    let (tgz, src) = common::random_package(w.tmp.path(), "app.tgz", 900, 3, 1024);
    std::fs::write(src.join("post-sync.sh"), &hook).unwrap();
    set_exec(&src.join("post-sync.sh"));
    common::tar_czf(&tgz, &src);
    let rev = w.spool_new(&tgz);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    kill_during_hook(&w, &node, &["sync"], &signal, "post-sync");
    // Not current: it never passed post-sync.
    assert_eq!(link_target(&node, "app", "current"), None);
    std::fs::write(&gate, "").unwrap();
    ok(&w, &node, &["sync"]);
    assert_eq!(
        std::fs::read_to_string(&done).unwrap_or_default(),
        format!("{rev}\n"),
        "the post-sync hook ran to its end before the revision was used"
    );
    assert_eq!(link_target(&node, "app", "current"), Some(id_of(&rev)));
    assert_eq!(leftovers(&node, "app"), Vec::<String>::new());
    figure("crashes_survived", 1);
}
