//! The node side, run as a user would: `ftl sync`, `jump`, `jump-back`,
//! `list`, `remove`, `clean` as processes against a real S3 protocol server
//! and the local-directory store.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Backend, World, current, id_of, ok, previous, revs, run, stderr, stdout};

/// Every entry of revs/, dot-entries included.
fn all_entries(root: &Path, package: &str) -> Vec<String> {
    std::fs::read_dir(root.join(package).join("revs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pause() {
    // Revision ids have a resolution of one second.
    std::thread::sleep(Duration::from_millis(1050));
}

both!(two_nodes_converge_on_the_blessed_revision, |w: World| {
    let n1 = w.node("n1", &["site"]);
    let n2 = w.node("n2", &["site"]);
    let a = w.spool_files(
        "site.tgz",
        &[
            ("index.html", "v1", 0o644),
            ("bin/run", "#!/bin/sh\n", 0o755),
        ],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n1, &["sync"]);
    assert_eq!(current(&n1, "site"), Some(id_of(&a)));
    assert_eq!(
        std::fs::read_to_string(n1.join("site/current/index.html")).unwrap(),
        "v1"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(n1.join("site/current/bin/run"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o111, 0o111, "execute bits kept");

    pause();
    let b = w.spool_files("site.tgz", &[("index.html", "v2", 0o644)]);
    // Spooled, not blessed: downloaded ahead, current unchanged.
    ok(&w, &n1, &["sync"]);
    assert_eq!(current(&n1, "site"), Some(id_of(&a)));
    assert_eq!(revs(&n1, "site"), vec![id_of(&a), id_of(&b)]);

    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    for n in [&n1, &n2] {
        ok(&w, n, &["sync"]);
        assert_eq!(current(n, "site"), Some(id_of(&b)));
        assert_eq!(previous(n, "site"), Some(id_of(&a)));
        assert_eq!(
            std::fs::read_to_string(n.join("site/current/index.html")).unwrap(),
            "v2"
        );
    }
    assert_eq!(
        ok(&w, &n2, &["list", "site"]),
        format!("{a}\n{b}\t(active)\n")
    );
    assert_eq!(ok(&w, &n2, &["list"]), "site\n");

    // A second sync with nothing new changes nothing.
    ok(&w, &n2, &["sync"]);
    assert_eq!(current(&n2, "site"), Some(id_of(&b)));
});

both!(dry_run_changes_nothing, |w: World| {
    let n = w.node("n", &["app"]);
    let a = w.spool_files("app.tgz", &[("f", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let plan = ok(&w, &n, &["sync", "--dry-run"]);
    assert!(plan.contains(&format!("download {a}")), "{plan}");
    assert!(plan.contains(&format!("jump to {a}")), "{plan}");
    assert_eq!(revs(&n, "app"), Vec::<String>::new());
    assert_eq!(current(&n, "app"), None);
});

/// A package whose hooks append "<step> <revision> <current> <previous> <cwd>" to a log.
fn hooked_package(w: &World, version: &str, extra: &[(&str, &str, u32)]) -> PathBuf {
    let log = w.path("hooks.log");
    let script = format!(
        "#!/bin/sh\necho \"$FTL_STEP $FTL_REVISION cur=$FTL_CURRENT_REVISION prev=$FTL_PREVIOUS_REVISION pkg=$FTL_PACKAGE path_ok=$([ \"$FTL_REVISION_PATH\" = \"$(pwd -P)\" ] && echo y)\" >> {}\necho \"said $FTL_STEP\"\n",
        log.display()
    );
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
    files.extend_from_slice(extra);
    // Leak to satisfy the borrow of `script` inside `files` past this scope.
    common::package(w.tmp.path(), "hk.tgz", &files)
}

both!(hooks_run_in_order_with_their_environment, |w: World| {
    let n = w.node("n", &["hk"]);
    let a = w.spool(&hooked_package(&w, "1", &[]));
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Hook output is annotated with revision and step.
    assert!(
        stdout(&out).contains(&format!("{a} post-sync: said post-sync")),
        "stdout: {}",
        stdout(&out)
    );
    pause();
    let b = w.spool(&hooked_package(&w, "2", &[]));
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    let log = std::fs::read_to_string(w.path("hooks.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let steps: Vec<String> = lines
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        steps,
        vec![
            format!("post-sync {a}"),
            format!("pre-jump {a}"),
            format!("post-jump {a}"),
            format!("post-sync {b}"),
            format!("pre-jump {b}"),
            format!("un-jump {a}"),
            format!("post-jump {b}"),
        ],
        "{log}"
    );
    assert!(lines[4].contains(&format!("cur={a}")), "{}", lines[4]);
    assert!(
        lines[6].contains(&format!("cur={b} prev={a}")),
        "{}",
        lines[6]
    );
    assert!(
        lines.iter().all(|l| l.contains("pkg=hk path_ok=y")),
        "{log}"
    );
});

both!(failing_pre_jump_keeps_current, |w: World| {
    let n = w.node("n", &["hk"]);
    let a = w.spool_files("hk.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);
    pause();
    let b = w.spool_files(
        "hk.tgz",
        &[
            ("v", "2", 0o644),
            ("pre-jump.sh", "echo no way >&2; exit 7", 0o644),
        ],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    let out = run(&w, &n, &["sync"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the hook's status: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("{b} pre-jump: no way")),
        "{}",
        stderr(&out)
    );
    assert_eq!(current(&n, "hk"), Some(id_of(&a)));
    // A local jump gives the same answer.
    let out = run(&w, &n, &["jump", &b]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(current(&n, "hk"), Some(id_of(&a)));
});

both!(
    failing_post_sync_is_not_installed_and_retried,
    |w: World| {
        let n = w.node("n", &["ps"]);
        let gate = w.path("gate");
        let hook = format!("test -e {} || exit 3", gate.display());
        let a = w.spool_files("ps.tgz", &[("post-sync.sh", hook.as_str(), 0o755)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);
        let out = run(&w, &n, &["sync"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_eq!(revs(&n, "ps"), Vec::<String>::new(), "not installed");
        assert_eq!(current(&n, "ps"), None, "not jumped to");
        std::fs::write(&gate, "").unwrap();
        // A failed revision waits for its back-off (issue 14, item 2) ...
        let out = run(&w, &n, &["sync"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("not tried again before"));
        // ... unless the operator, who fixed the cause, asks.
        ok(&w, &n, &["sync", "--retry-failed"]);
        assert_eq!(revs(&n, "ps"), vec![id_of(&a)]);
        assert_eq!(current(&n, "ps"), Some(id_of(&a)));
    }
);

both!(jump_back_locally_and_in_the_bucket, |w: World| {
    let n = w.node("n", &["jb"]);
    let a = w.spool_files("jb.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    pause();
    let b = w.spool_files("jb.tgz", &[("v", "2", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    assert_eq!(
        (current(&n, "jb"), previous(&n, "jb")),
        (Some(id_of(&b)), Some(id_of(&a)))
    );

    ok(&w, &n, &["jump-back", "jb"]);
    assert_eq!(
        (current(&n, "jb"), previous(&n, "jb")),
        (Some(id_of(&a)), Some(id_of(&b)))
    );
    // The next sync puts the node back on what the bucket blesses.
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "jb"), Some(id_of(&b)));

    ok(&w, w.tmp.path(), &["jump-back", "--master", "jb"]);
    ok(&w, &n, &["sync"]);
    assert_eq!(
        (current(&n, "jb"), previous(&n, "jb")),
        (Some(id_of(&a)), Some(id_of(&b)))
    );
    assert_eq!(
        std::fs::read_to_string(n.join("jb/current/v")).unwrap(),
        "1"
    );
});

both!(
    purge_then_sync_removes_locally_and_clean_keeps_current_and_previous,
    |w: World| {
        let n = w.node("n", &["pc"]);
        let mut all = Vec::new();
        for i in 0..4 {
            if i > 0 {
                pause();
            }
            let v = i.to_string();
            all.push(w.spool_files("pc.tgz", &[("v", v.as_str(), 0o644)]));
        }
        // Bless the first, then the last: previous = first; the middle ones are newer
        // than previous, so all four are downloaded.
        ok(&w, w.tmp.path(), &["jump", "--master", &all[0]]);
        ok(&w, w.tmp.path(), &["jump", "--master", &all[3]]);
        ok(&w, &n, &["sync"]);
        assert_eq!(revs(&n, "pc").len(), 4);

        ok(&w, w.tmp.path(), &["purge", "--master", &all[1]]);
        ok(&w, &n, &["sync"]);
        assert_eq!(
            revs(&n, "pc"),
            vec![id_of(&all[0]), id_of(&all[2]), id_of(&all[3])]
        );

        // Keep one: current (3) and previous (0) stay, and 2 too, which lies
        // between them in the bucket: the next sync would download it again.
        ok(&w, &n, &["clean", "--keep", "1"]);
        assert_eq!(
            revs(&n, "pc"),
            vec![id_of(&all[0]), id_of(&all[2]), id_of(&all[3])]
        );

        let out = run(&w, &n, &["remove", &all[3]]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("current"), "{}", stderr(&out));
    }
);

both!(tampered_object_is_refused, |w: World| {
    let n = w.node("n", &["tp"]);
    let a = w.spool_files("tp.tgz", &[("v", "good", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    // Replace the object's bytes behind the store's back, keeping its metadata.
    let evil = common::package(w.tmp.path(), "evil.tgz", &[("v", "evil", 0o644)]);
    let key = format!("{a}.tgz");
    let path = match &w.server {
        None => PathBuf::from(w.bucket.strip_prefix("file://").unwrap()).join(&key),
        Some(_) => common::in_process(&w).bucket_dir(&w.bucket).join(&key),
    };
    std::fs::copy(&evil, &path).unwrap();
    let out = run(&w, &n, &["sync"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&a) && stderr(&out).to_lowercase().contains("digest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(revs(&n, "tp"), Vec::<String>::new());
    assert_eq!(current(&n, "tp"), None);
    // Nothing half-installed either.
    ok(&w, &n, &["sync", "--dry-run"]);
    assert!(
        all_entries(&n, "tp")
            .iter()
            .all(|e| !e.starts_with(".staging")),
        "{:?}",
        all_entries(&n, "tp")
    );
});

both!(hostile_archive_is_refused, |w: World| {
    let n = w.node("n", &["hx"]);
    let tgz = w.path("hx.tgz");
    let script = format!(
        "import tarfile, io\nt = tarfile.open('{}', 'w:gz')\nfor name in ['ok.txt', '../../escaped.txt']:\n    d = b'x'\n    i = tarfile.TarInfo(name); i.size = len(d); t.addfile(i, io.BytesIO(d))\nt.close()\n",
        tgz.display()
    );
    common::python(&script);
    let a = w.spool(&tgz);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let out = run(&w, &n, &["sync"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("escaped.txt"),
        "the entry is named: {}",
        stderr(&out)
    );
    assert!(!n.join("escaped.txt").exists() && !w.tmp.path().join("escaped.txt").exists());
    assert_eq!(revs(&n, "hx"), Vec::<String>::new());
});

both!(the_lock_serialises_commands, |w: World| {
    let n = w.node("n", &["lk"]);
    let mut slow = common::sync_holding_the_lock(&w, &n, 3);
    let out = w
        .ftl(&n)
        .env("FTL_LOCK_TIMEOUT", "1")
        .args(["clean"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    // With time to wait, the second command goes through after the first.
    let out = w
        .ftl(&n)
        .env("FTL_LOCK_TIMEOUT", "30")
        .args(["clean"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(slow.wait().unwrap().success());
});

#[test]
fn local_commands_read_02x_links() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["old"]);
    for r in ["2014010100000AA", "2014010200000BB"] {
        std::fs::create_dir_all(n.join("old/revs").join(r)).unwrap();
    }
    // ftl 0.2.x wrote absolute link targets.
    std::os::unix::fs::symlink(n.join("old/revs/2014010200000BB"), n.join("old/current")).unwrap();
    let out = run(&w, &n, &["list", "old"]);
    assert_eq!(
        stdout(&out),
        "old.2014010100000AA\nold.2014010200000BB\t(active)\n",
        "{}",
        stderr(&out)
    );
    ok(&w, &n, &["jump", "old.2014010100000AA"]);
    assert_eq!(current(&n, "old").as_deref(), Some("2014010100000AA"));
    assert_eq!(previous(&n, "old").as_deref(), Some("2014010200000BB"));
}

#[test]
fn sync_survives_kill_9() {
    // A package large enough that a sync takes a while: random data (incompressible).
    let w = World::new(Backend::S3);
    let n = w.node("n", &["big"]);
    let src = w.path("bigsrc");
    std::fs::create_dir_all(&src).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..200 {
        let data: Vec<u8> = (0..(128 * 1024))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(src.join(format!("f{i:03}")), data).unwrap();
    }
    let tgz = w.path("big.tgz");
    assert!(
        std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let a = w.spool(&tgz);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    for delay_ms in [5u64, 30, 80, 150, 300, 600] {
        let mut child = w
            .ftl(&n)
            .arg("sync")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Invariants: a visible revision is complete; current resolves if present.
        for r in revs(&n, "big") {
            let count = std::fs::read_dir(n.join("big/revs").join(&r))
                .unwrap()
                .count();
            assert_eq!(
                count, 200,
                "partial revision {r} visible after kill at {delay_ms} ms"
            );
        }
        if std::fs::symlink_metadata(n.join("big/current")).is_ok() {
            assert!(
                n.join("big/current/f000").exists(),
                "current dangles after kill at {delay_ms} ms"
            );
        }
    }
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "big"), Some(id_of(&a)));
    assert_eq!(
        std::fs::read_dir(n.join("big/current")).unwrap().count(),
        200
    );
    assert!(
        all_entries(&n, "big").iter().all(|e| !e.starts_with('.')),
        "leftovers: {:?}",
        all_entries(&n, "big")
    );
}

/// The reads of a sync run for all packages at once: an idle sync of 20
/// packages costs about the round trip of one.
#[test]
fn idle_sync_of_20_packages_costs_about_one_round_trip() {
    let w = World::new(Backend::S3);
    let server = common::in_process(&w);
    let names: Vec<String> = (1..=20).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = w.node("n", &refs);
    for p in &names {
        let rev = w.spool_files(&format!("{p}.tgz"), &[("v", "1", 0o644)]);
        ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    }
    ok(&w, &n, &["sync"]);
    // What a sync costs without the round trips: starting, the lock, the reads
    // of the node.
    let started = std::time::Instant::now();
    ok(&w, &n, &["sync"]);
    let local = started.elapsed();
    const RTT: u64 = 400;
    server.set_fault(common::Fault::Delay(RTT));
    server.counts.reset();
    let started = std::time::Instant::now();
    ok(&w, &n, &["sync"]);
    let took = started.elapsed();
    server.set_fault(common::Fault::None);
    assert_eq!(server.counts.total(), 20, "one request per package");
    let trips = took.saturating_sub(local).as_millis() as f64 / RTT as f64;
    assert!(
        trips < 1.8,
        "{trips:.1} round trips ({took:?}, {local:?} without the delay)"
    );
}

#[test]
fn idle_sync_makes_one_request_per_package_and_no_listing() {
    let w = World::new(Backend::S3);
    let server = common::in_process(&w);
    let n = w.node("n", &["p1", "p2"]);
    let [a, _] = w.bless_one_each(["p1", "p2"]);
    ok(&w, &n, &["sync"]);

    server.counts.reset();
    ok(&w, &n, &["sync"]);
    assert_eq!(server.counts.get("LIST"), 0, "idle sync lists nothing");
    assert_eq!(
        server.counts.get("GET"),
        2,
        "one conditional GET per package"
    );
    assert_eq!(server.counts.not_modified(), 2, "answered Not Modified");
    assert_eq!(server.counts.total(), 2, "nothing else");

    // A new spool is seen (and downloaded ahead) by the next sync.
    pause();
    let a2 = w.spool_files("p1.tgz", &[("v", "2", 0o644)]);
    ok(&w, &n, &["sync"]);
    assert_eq!(revs(&n, "p1"), vec![id_of(&a), id_of(&a2)]);

    // A node moved by hand is put back on the blessed revision.
    ok(&w, &n, &["jump", &a2]);
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "p1"), Some(id_of(&a)));

    // --full-every 0 always lists.
    server.counts.reset();
    ok(&w, &n, &["sync", "--full-every", "0"]);
    assert_eq!(server.counts.get("LIST"), 2);
}

#[test]
fn crash_during_post_sync_reruns_it() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["ps"]);
    let started = w.path("started");
    let done = w.path("done");
    // First run: signal, then hang until killed. Later runs: finish at once.
    let hook = format!(
        "if [ ! -e {s} ]; then touch {s}; sleep 30; fi\necho ok >> {d}\n",
        s = started.display(),
        d = done.display()
    );
    let a = w.spool_files("ps.tgz", &[("post-sync.sh", hook.as_str(), 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let mut child = w
        .ftl(&n)
        .arg("sync")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if started.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(started.exists(), "post-sync never started");
    child.kill().unwrap(); // SIGKILL in the middle of post-sync
    child.wait().unwrap();
    assert_eq!(current(&n, "ps"), None);
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "ps"), Some(id_of(&a)));
    assert_eq!(
        std::fs::read_to_string(&done).unwrap(),
        "ok\n",
        "post-sync ran to the end once"
    );
    assert!(
        all_entries(&n, "ps").iter().all(|e| !e.starts_with('.')),
        "{:?}",
        all_entries(&n, "ps")
    );
}

/// An immutable file (`chattr +i`, as root on ext4): what an application
/// running as another user, or a read-only mount, makes of a leftover.
fn immutable(path: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let out = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output();
    let done = out.as_ref().is_ok_and(|o| o.status.success());
    common::require(
        &format!("chattr {flag} (e2fsprogs, as root on ext4): {out:?}"),
        done,
    );
}

/// Issue 14, item 1: a leftover that cannot be deleted used to fail every
/// later sync (`?` in the clean-up). Now a warning names it, the sync goes
/// on, `status` lists it, and the next sync that can delete it does.
#[test]
fn an_undeletable_leftover_does_not_stop_syncs() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let a = w.spool_files("site.tgz", &[("index.html", "v1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);
    // A dead process's trash, with a file nobody may delete.
    let trash = n.join("site/revs/.trash-x-999999999-0");
    std::fs::create_dir_all(trash.join("data")).unwrap();
    let stuck = trash.join("data/pinned");
    std::fs::write(&stuck, "x").unwrap();
    immutable(&stuck, true);
    struct Unpin(PathBuf);
    impl Drop for Unpin {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .output();
        }
    }
    let _unpin = Unpin(stuck.clone());

    pause();
    let b = w.spool_files("site.tgz", &[("index.html", "v2", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    let out = run(&w, &n, &["sync"]);
    let err = stderr(&out);
    assert!(out.status.success(), "sync failed: {err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains(".trash-x-999999999-0")),
        "no warning naming the leftover: {err}"
    );
    assert_eq!(current(&n, "site"), Some(id_of(&b)));

    let out = run(&w, &n, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let left = &doc["packages"][0]["leftovers"];
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{doc}");
    assert!(
        left[0].as_str().unwrap().ends_with(".trash-x-999999999-0"),
        "{doc}"
    );
    assert!(stdout(&run(&w, &n, &["status"])).contains("leftovers="));

    immutable(&stuck, false);
    ok(&w, &n, &["sync"]);
    assert!(!trash.exists(), "the next sync removes it");
    let out = run(&w, &n, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["packages"][0]["leftovers"], serde_json::json!([]));
}

/// Issue 14, item 5: integrity is never skipped silently. An object whose
/// `ftl-sha256` is present but malformed is refused; one without it, whose id
/// carries no 0.2.x MD5 characters, is installed with a warning naming it and
/// shown as unverified by `status`.
#[test]
fn integrity_is_never_skipped_silently() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let bucket = w.path("bucket");
    let tgz = common::package(w.tmp.path(), "site.tgz", &[("index.html", "v1", 0o644)]);
    // Put there by hand or another tool: no metadata, an id that is not 0.2.x's.
    std::fs::copy(&tgz, bucket.join("site.v1.tgz")).unwrap();
    ok(&w, w.tmp.path(), &["jump", "--master", "site.v1"]);
    let out = run(&w, &n, &["sync"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("site.v1.tgz") && l.contains("unverified")),
        "no warning: {err}"
    );
    assert_eq!(current(&n, "site").as_deref(), Some("v1"));
    let out = run(&w, &n, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["packages"][0]["unverified"],
        serde_json::json!(["site.v1"]),
        "{doc}"
    );

    // A malformed digest is refused, not taken as absent.
    std::fs::copy(&tgz, bucket.join("site.v2.tgz")).unwrap();
    std::fs::write(
        bucket.join(".meta.site.v2.tgz"),
        "ftl-sha256=not-a-digest\n",
    )
    .unwrap();
    ok(&w, w.tmp.path(), &["jump", "--master", "site.v2"]);
    let out = run(&w, &n, &["sync"]);
    assert!(!out.status.success());
    let line = common::error_line(&out);
    assert!(
        line.contains("site.v2.tgz") && line.contains("not a SHA-256"),
        "{line}"
    );
    assert_eq!(revs(&n, "site"), vec!["v1".to_owned()]);
    assert_eq!(current(&n, "site").as_deref(), Some("v1"));
}

/// Issue 14, item 2: a revision that failed is backed off, but tried again at
/// once when its object in the bucket changes.
#[test]
fn a_failed_revision_is_retried_at_once_when_its_object_changes() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let a = w.spool_files("site.tgz", &[("index.html", "v1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let object = w.path("bucket").join(format!("{a}.tgz"));
    let good = std::fs::read(&object).unwrap();
    let other = common::package(w.tmp.path(), "other.tgz", &[("index.html", "evil", 0o644)]);
    std::fs::copy(&other, &object).unwrap();

    let out = run(&w, &n, &["sync"]);
    assert!(!out.status.success());
    assert!(
        common::error_line(&out).contains("digest"),
        "{}",
        stderr(&out)
    );
    let out = run(&w, &n, &["sync"]);
    assert!(!out.status.success());
    let line = common::error_line(&out);
    assert!(line.contains("not tried again before"), "{line}");

    // The object is replaced (here: repaired): tried at once.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&object, &good).unwrap();
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&n, "site"), Some(id_of(&a)));
    assert!(!n.join("site/.ftl-failed").exists(), "record cleared");
}

/// The samples of a Prometheus text file, `name{labels}` → value; panics on a
/// line that is not a comment or a sample.
fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let ok = k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
            assert!(ok && !k.contains(' '), "{l:?}");
            (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("{l:?}")))
        })
        .collect()
}

/// Issue 14, item 9: `FTL_METRICS_FILE`: after every sync and status, the
/// node's state for node_exporter's textfile collector.
#[test]
fn sync_and_status_write_metrics() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let prom = w.path("ftl.prom");
    let a = w.spool_files("site.tgz", &[("index.html", "v1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    let out = w
        .ftl(&n)
        .env("FTL_METRICS_FILE", &prom)
        .arg("sync")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = samples(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(m["ftl_sync_success"], 1.0, "{m:?}");
    assert!(m["ftl_sync_downloaded_bytes"] > 0.0, "{m:?}");
    let success = m["ftl_sync_last_success_timestamp_seconds"];
    assert!(success >= m["ftl_sync_last_start_timestamp_seconds"]);
    assert_eq!(m[r#"ftl_package_in_step{package="site"}"#], 1.0);
    let cur = format!(r#"ftl_package_current_revision{{package="site",revision="{a}"}}"#);
    assert_eq!(m[&cur], 1.0, "{m:?}");
    assert_eq!(m[r#"ftl_package_failed_revisions{package="site"}"#], 0.0);

    // A revision that fails: the sync's result, the package out of step,
    // the failed revision and its back-off; the last success kept.
    pause();
    let b = w.spool_files("site.tgz", &[("index.html", "v2", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    let object = w.path("bucket").join(format!("{b}.tgz"));
    std::fs::write(&object, b"not the spooled bytes").unwrap();
    let out = w
        .ftl(&n)
        .args(["sync", "--metrics-file"])
        .arg(&prom)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let m = samples(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(m["ftl_sync_success"], 0.0);
    assert_eq!(m["ftl_sync_last_success_timestamp_seconds"], success);
    assert_eq!(m[r#"ftl_package_in_step{package="site"}"#], 0.0);
    assert_eq!(m[r#"ftl_package_failed_revisions{package="site"}"#], 1.0);
    let retry = format!(r#"ftl_revision_retry_timestamp_seconds{{package="site",revision="{b}"}}"#);
    assert!(m[&retry] > success, "{m:?}");

    // status writes the same file, keeping what the last sync recorded.
    let out = w
        .ftl(&n)
        .env("FTL_METRICS_FILE", &prom)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let m = samples(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(m["ftl_sync_success"], 0.0);
    assert_eq!(m["ftl_sync_last_success_timestamp_seconds"], success);
    assert!(m.contains_key(r#"ftl_metrics_written_timestamp_seconds{command="status"}"#));
    assert_eq!(m[r#"ftl_package_in_step{package="site"}"#], 0.0);
    let leftover: Vec<_> = std::fs::read_dir(w.tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}

/// Issue 14, item 8: `current` pointing at a directory that is gone (deleted
/// by hand, and no longer in the bucket) must not make every sync fail: the
/// sync reports it and repairs it by jumping to the blessed revision.
#[test]
fn current_pointing_at_a_missing_revision_is_repaired() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let a = w.spool_files("site.tgz", &[("un-jump.sh", "exit 0", 0o755)]);
    pause();
    let b = w.spool_files("site.tgz", &[("v", "2", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    ok(&w, &n, &["jump", &a]);
    // Gone from the bucket too (deleted there by hand).
    std::fs::remove_file(w.path("bucket").join(format!("{a}.tgz"))).unwrap();
    std::fs::remove_dir_all(n.join("site/revs").join(id_of(&a))).unwrap();
    let out = run(&w, &n, &["sync"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines().any(|l| l.contains("WARN") && l.contains(&a)),
        "not reported: {err}"
    );
    assert_eq!(current(&n, "site"), Some(id_of(&b)));
    assert!(n.join("site/current/v").is_file());
    ok(&w, &n, &["sync"]);
}

/// Issue 14, item 8: a revision whose post-sync hook failed while it was
/// already linked (current, re-downloaded after its directory went missing)
/// is never confirmed by a later clean-up: the next sync installs it again
/// and runs the hook, until it passes.
#[test]
fn a_linked_revision_that_failed_post_sync_is_not_confirmed_by_clean_up() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let gate = w.path("gate");
    let hook = format!("test -e {} && exit 4; exit 0", gate.display());
    let a = w.spool_files("site.tgz", &[("post-sync.sh", hook.as_str(), 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, &n, &["sync"]);
    let marker = n
        .join("site/revs")
        .join(format!(".unconfirmed-{}", id_of(&a)));
    // Deleted by hand while current; its post-sync now fails.
    std::fs::remove_dir_all(n.join("site/revs").join(id_of(&a))).unwrap();
    std::fs::write(&gate, "").unwrap();
    let out = run(&w, &n, &["sync"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(marker.exists(), "kept unconfirmed: it is current");
    // The next syncs neither confirm it nor pass: the hook runs again.
    for _ in 0..2 {
        let out = run(&w, &n, &["sync", "--retry-failed"]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert!(marker.exists(), "confirmed without its hook");
        assert!(
            n.join("site/current/post-sync.sh").is_file(),
            "current resolves"
        );
    }
    std::fs::remove_file(&gate).unwrap();
    ok(&w, &n, &["sync", "--retry-failed"]);
    assert!(!marker.exists());
    assert_eq!(current(&n, "site"), Some(id_of(&a)));
    assert_eq!(revs(&n, "site"), vec![id_of(&a)]);
}

/// Issue 14, item 2: the record of a failed revision goes with the revision:
/// once it is purged from the bucket, status no longer shows it.
#[test]
fn a_failed_revision_purged_from_the_bucket_is_forgotten() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["site"]);
    let a = w.spool_files("site.tgz", &[("v", "1", 0o644)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    pause();
    let b = w.spool_files("site.tgz", &[("v", "2", 0o644)]);
    std::fs::write(w.path("bucket").join(format!("{b}.tgz")), b"garbage").unwrap();
    let out = run(&w, &n, &["sync"]);
    assert!(!out.status.success());
    assert!(n.join("site/.ftl-failed").exists());
    ok(&w, w.tmp.path(), &["purge", "--master", &b]);
    ok(&w, &n, &["sync"]);
    assert!(!n.join("site/.ftl-failed").exists(), "record kept");
    let out = run(&w, &n, &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["packages"][0]["failed"], serde_json::json!([]), "{doc}");
}

// Issue 17, item 5: `clean` keeps what `sync` wants (the bucket's blessed and
// previous and what lies between them), so a daily clean and a sync every
// minute do not undo each other; what sync does not want goes.
both!(clean_keeps_what_sync_wants, |w: World| {
    let n = w.node("n", &["ck"]);
    let box_ = w.tmp.path();
    let mut all = Vec::new();
    for i in 0..4 {
        if i > 0 {
            pause();
        }
        all.push(w.spool_files("ck.tgz", &[("v", &i.to_string(), 0o644)]));
    }
    // Blessing the oldest first makes the node download all four.
    ok(&w, box_, &["jump", "--master", &all[0]]);
    ok(&w, &n, &["sync"]);
    ok(&w, box_, &["jump", "--master", &all[1]]);
    ok(&w, box_, &["jump", "--master", &all[3]]);
    ok(&w, &n, &["sync"]);
    let ids: Vec<String> = all.iter().map(|r| id_of(r)).collect();
    assert_eq!(revs(&n, "ck"), ids);

    // Only 0 is older than the bucket's previous (1): only 0 goes, and the
    // preview says so first, changing nothing.
    assert_eq!(
        ok(&w, &n, &["clean", "--keep", "1", "--dry-run"]),
        format!("ck: remove {}\n", all[0])
    );
    assert_eq!(revs(&n, "ck"), ids);
    ok(&w, &n, &["clean", "--keep", "1"]);
    assert_eq!(revs(&n, "ck"), ids[1..]);
    assert_eq!(
        ok(&w, &n, &["clean", "--keep", "0", "--dry-run"]),
        "ck: nothing to remove\n"
    );

    // The next sync has nothing to do, and the node is in step.
    assert_eq!(ok(&w, &n, &["sync", "--dry-run"]), "ck: up to date\n");
    let out = run(&w, &n, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    // Without the bucket (clean loads no AWS configuration, needs no
    // FTL_BUCKET), the same rule from what the last sync saw.
    let out = w
        .ftl(&n)
        .env_remove("FTL_BUCKET")
        .args(["clean", "--keep", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(revs(&n, "ck"), ids[1..]);

    // A local jump takes the node's links off the bucket's pointers (now
    // current 2, previous 3): the recorded view still keeps the bucket's
    // previous (1), which the next sync would fetch again.
    ok(&w, &n, &["jump", &all[2]]);
    ok(&w, &n, &["clean", "--keep", "0"]);
    assert_eq!(revs(&n, "ck"), ids[1..]);
});

/// Without a record of the bucket's view (a root synced by ftl 0.2.6, or
/// by hand), clean takes the node's own links as the bucket's pointers.
#[test]
fn clean_without_a_record_keeps_from_the_older_link_on() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["old"]);
    let ids = [
        "2014010100000AA",
        "2014010200000BB",
        "2014010300000CC",
        "2014010400000DD",
    ];
    for r in ids {
        std::fs::create_dir_all(n.join("old/revs").join(r)).unwrap();
    }
    std::os::unix::fs::symlink("revs/2014010400000DD", n.join("old/current")).unwrap();
    std::os::unix::fs::symlink("revs/2014010200000BB", n.join("old/previous")).unwrap();
    ok(&w, &n, &["clean", "--keep", "0"]);
    assert_eq!(revs(&n, "old"), ids[1..]);
}

/// Issue 17, item 7: `clean --dry-run` and `remove --dry-run` say what would
/// go, run no hook, delete nothing and take no lock.
#[test]
fn clean_and_remove_preview_without_the_lock_or_hooks() {
    use std::os::unix::io::AsRawFd;
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["pv"]);
    let hooked = w.path("pre-remove.ran");
    let hook = format!("#!/bin/sh\ntouch {}\n", hooked.display());
    let mut all = Vec::new();
    for i in 0..3 {
        if i > 0 {
            pause();
        }
        let v = i.to_string();
        all.push(w.spool_files(
            "pv.tgz",
            &[("v", &v, 0o644), ("pre-remove.sh", &hook, 0o755)],
        ));
        ok(&w, w.tmp.path(), &["jump", "--master", &all[i]]);
        ok(&w, &n, &["sync"]);
    }
    // Another command holds the lock.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(n.join(".lock"))
        .unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let quick = |args: &[&str]| {
        w.ftl(&n)
            .env("FTL_LOCK_TIMEOUT", "0")
            .args(args)
            .output()
            .unwrap()
    };
    let out = quick(&["clean", "--keep", "0", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("pv: remove {}\n", all[0]));
    let out = quick(&["remove", "--dry-run", &all[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("pv: remove {}\n", all[0]));
    // The preview refuses what the command refuses.
    let out = quick(&["remove", "-n", &all[2]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("current"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // The real thing needs the lock, which is held.
    let out = quick(&["remove", &all[0]]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("lock"), "{}", stderr(&out));
    assert_eq!(revs(&n, "pv").len(), 3);
    assert!(!hooked.exists(), "a preview ran pre-remove");
    drop(lock);
    ok(&w, &n, &["remove", &all[0]]);
    assert!(hooked.exists());
}
