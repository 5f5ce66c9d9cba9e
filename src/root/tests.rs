use super::*;
use std::fs::{File, Permissions};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

fn id(s: &str) -> RevisionId {
    s.parse().unwrap()
}

fn setup() -> (tempfile::TempDir, Root, PackageDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = Root {
        path: dir.path().to_owned(),
    };
    let pkg = root.dir(&"my_site".parse().unwrap());
    fs::create_dir(pkg.path()).unwrap();
    (dir, root, pkg)
}

#[test]
fn a_batched_install_is_hidden_until_confirmed() {
    let (_d, _root, pkg) = setup();
    let staging = pkg.new_staging(&id("r1")).unwrap();
    fs::write(staging.join("index.html"), "r1").unwrap();
    pkg.prepare_install(&id("r1")).unwrap();
    sync_file_systems(std::slice::from_ref(&staging)).unwrap();
    pkg.commit_install(&staging, &id("r1")).unwrap();
    assert_eq!(
        fs::read_to_string(pkg.revision_path(&id("r1")).join("index.html")).unwrap(),
        "r1"
    );
    assert!(
        pkg.revisions().unwrap().is_empty(),
        "unconfirmed: not listed"
    );
    pkg.confirm(&id("r1")).unwrap();
    assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
    assert_eq!(
        fs::read_dir(pkg.revs()).unwrap().count(),
        1,
        "no marker left"
    );
}

#[test]
fn a_batched_install_refuses_an_installed_revision() {
    let (_d, _root, pkg) = setup();
    install(&pkg, "r1");
    let e = pkg.prepare_install(&id("r1")).unwrap_err();
    assert!(matches!(e, RootError::AlreadyInstalled { .. }), "{e}");
    let staging = pkg.new_staging(&id("r1")).unwrap();
    let e = pkg.commit_install(&staging, &id("r1")).unwrap_err();
    assert!(matches!(e, RootError::AlreadyInstalled { .. }), "{e}");
    assert_eq!(pkg.revisions().unwrap(), [id("r1")], "the first one stays");
}

#[test]
fn the_early_flush_stops_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let flush = EarlyFlush::start(&path);
        fs::write(path.join("f"), "x").unwrap();
        // Past a few rounds, so that the stop is seen mid-loop.
        std::thread::sleep(Duration::from_millis(250));
        drop(flush);
        // On a path that cannot be flushed, it gives up, and dropping it still returns.
        drop(EarlyFlush::start(&path.join("missing")));
        let _ = done.send(());
    });
    // A flusher that ignored the stop would keep the drop waiting forever.
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("dropping the early flush did not return within 10 s");
}

/// Installs a staged revision the way sync does: marker, flush, rename;
/// then confirms it, as a successful post-sync hook does.
fn install_staged(pkg: &PackageDir, staging: &Path, id: &RevisionId) -> Result<(), RootError> {
    pkg.prepare_install(id)?;
    sync_file_systems(&[staging.to_owned()])?;
    pkg.commit_install(staging, id)?;
    pkg.confirm(id)
}

fn install(pkg: &PackageDir, rev: &str) {
    let staging = pkg.new_staging(&id(rev)).unwrap();
    fs::write(staging.join("index.html"), rev).unwrap();
    install_staged(pkg, &staging, &id(rev)).unwrap();
}

#[test]
fn check_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Root::open(dir.path().to_owned()).is_ok());
    let file = dir.path().join("f");
    fs::write(&file, "").unwrap();
    let e = Root::open(file.clone()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("FTL_ROOT {} is not a directory", file.display())
    );
    let e = Root::open(dir.path().join("nope")).unwrap_err();
    assert!(e.to_string().ends_with("nope does not exist"), "{e}");
}

#[test]
fn packages_sorted_dirs_only_no_dot_entries() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root {
        path: dir.path().to_owned(),
    };
    for d in ["zeta", "alpha", ".staging", "bad name", "mid-1"] {
        fs::create_dir(dir.path().join(d)).unwrap();
    }
    fs::write(dir.path().join(".lock"), "").unwrap();
    fs::write(dir.path().join("file"), "").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(elsewhere.path(), dir.path().join("linked")).unwrap();
    symlink(dir.path().join("gone"), dir.path().join("dangling")).unwrap();
    let names: Vec<String> = root
        .read_packages()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(names, ["alpha", "linked", "mid-1", "zeta"]);
}

#[test]
fn revisions_sorted_by_id_not_time_and_hidden_ones_skipped() {
    let (_d, _root, pkg) = setup();
    assert!(pkg.exists());
    assert_eq!(pkg.revisions().unwrap(), Vec::<RevisionId>::new()); // no revs/ yet
    // Created newest id first, and given mtimes in reverse order.
    for (i, rev) in ["2026112643200Ab", "2025010100001zz", "2026010100000AA"]
        .iter()
        .enumerate()
    {
        install(&pkg, rev);
        let f = File::open(pkg.revision_path(&id(rev))).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 - i as u64))
            .unwrap();
    }
    let _staging = pkg.new_staging(&id("2027010100000AA")).unwrap();
    fs::create_dir(pkg.revs().join(".trash-x")).unwrap();
    fs::write(pkg.revs().join("2028010100000AA"), "a file, not a revision").unwrap();
    fs::create_dir(pkg.revs().join("not valid")).unwrap();
    let ids: Vec<String> = pkg
        .revisions()
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert_eq!(
        ids,
        ["2025010100001zz", "2026010100000AA", "2026112643200Ab"]
    );
}

#[test]
fn staging_is_hidden_in_revs_and_install_refuses_existing() {
    let (_d, _root, pkg) = setup();
    let staging = pkg.new_staging(&id("r1")).unwrap();
    assert_eq!(staging.parent().unwrap(), pkg.revs());
    let name = staging.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(".staging-r1-"), "{name}");
    let other = pkg.new_staging(&id("r1")).unwrap();
    assert_ne!(staging, other);
    install_staged(&pkg, &staging, &id("r1")).unwrap();
    assert!(pkg.revision_path(&id("r1")).is_dir());
    let e = install_staged(&pkg, &other, &id("r1")).unwrap_err();
    assert!(matches!(e, RootError::AlreadyInstalled { .. }), "{e}");
    assert!(e.to_string().contains("my_site.r1"), "{e}");
    // Even an empty directory in the way is not silently replaced.
    fs::create_dir(pkg.revision_path(&id("r2"))).unwrap();
    assert!(install_staged(&pkg, &other, &id("r2")).is_err());
}

#[test]
fn discard_staging_only_takes_staging_dirs() {
    let (_d, _root, pkg) = setup();
    install(&pkg, "r1");
    let staging = pkg.new_staging(&id("r2")).unwrap();
    fs::create_dir_all(staging.join("ro/sub")).unwrap();
    fs::set_permissions(staging.join("ro"), Permissions::from_mode(0o555)).unwrap();
    for wrong in [
        pkg.revision_path(&id("r1")),
        pkg.path().to_owned(),
        PathBuf::from("/tmp"),
    ] {
        let e = pkg.discard_staging(&wrong).unwrap_err();
        assert!(matches!(e, RootError::NotStaging(_)), "{e}");
    }
    pkg.discard_staging(&staging).unwrap();
    assert!(!staging.exists());
    assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
}

#[test]
fn new_staging_does_not_create_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = Root {
        path: dir.path().to_owned(),
    }
    .dir(&"ghost".parse().unwrap());
    assert!(!pkg.exists());
    assert!(pkg.new_staging(&id("r1")).is_err());
    assert!(!pkg.exists());
}

#[test]
fn links_are_relative_and_switch_refuses_missing_revisions() {
    let (_d, _root, pkg) = setup();
    assert_eq!(pkg.current().unwrap(), None);
    assert_eq!(pkg.previous().unwrap(), None);
    let e = pkg.set_current(&id("r1")).unwrap_err();
    assert!(matches!(e, RootError::NotInstalled { .. }), "{e}");
    install(&pkg, "r1");
    install(&pkg, "r2");
    pkg.set_current(&id("r1")).unwrap();
    pkg.set_previous(Some(&id("r2"))).unwrap();
    assert_eq!(
        fs::read_link(pkg.path().join("current")).unwrap(),
        Path::new("revs/r1")
    );
    assert_eq!(pkg.current().unwrap(), Some(id("r1")));
    assert_eq!(pkg.previous().unwrap(), Some(id("r2")));
    assert_eq!(
        fs::read_to_string(pkg.path().join("current/index.html")).unwrap(),
        "r1"
    );
    pkg.set_previous(None).unwrap();
    pkg.set_previous(None).unwrap();
    assert_eq!(pkg.previous().unwrap(), None);
    // No temporary link is left behind.
    let names: Vec<_> = fs::read_dir(pkg.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}"); // current, revs
}

#[test]
fn links_written_by_02x_are_read() {
    let (_d, _root, pkg) = setup();
    symlink(
        "/var/opt/deploy/my_site/revs/2019010100000Ab",
        pkg.path().join("current"),
    )
    .unwrap();
    symlink(
        "/var/opt/deploy/my_site/revs/2018010100000Zz/",
        pkg.path().join("previous"),
    )
    .unwrap();
    // Dangling here (another root), still the id it designates.
    assert_eq!(pkg.current().unwrap(), Some(id("2019010100000Ab")));
    assert_eq!(pkg.previous().unwrap(), Some(id("2018010100000Zz")));
    // And ftl replaces it with a relative link.
    install(&pkg, "r3");
    pkg.set_current(&id("r3")).unwrap();
    assert_eq!(
        fs::read_link(pkg.path().join("current")).unwrap(),
        Path::new("revs/r3")
    );
}

#[test]
fn bad_links_are_reported() {
    let (_d, _root, pkg) = setup();
    symlink("revs/.staging-x", pkg.path().join("current")).unwrap();
    let e = pkg.current().unwrap_err();
    assert!(matches!(e, RootError::BadLink { .. }), "{e}");
    fs::create_dir(pkg.path().join("previous")).unwrap();
    let e = pkg.previous().unwrap_err();
    assert!(e.to_string().contains("is not a symlink"), "{e}");
}

#[test]
fn current_never_missing_while_switching() {
    let (_d, _root, pkg) = setup();
    install(&pkg, "r1");
    install(&pkg, "r2");
    pkg.set_current(&id("r1")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, pkg) = (stop.clone(), pkg.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Resolves: neither missing nor dangling.
                let body = fs::read_to_string(pkg.path().join("current/index.html"))
                    .expect("current must always resolve");
                assert!(body == "r1" || body == "r2");
                assert!(pkg.current().unwrap().is_some());
                reads += 1;
            }
            reads
        })
    };
    for i in 0..1000 {
        pkg.set_current(&id(if i % 2 == 0 { "r2" } else { "r1" }))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(pkg.current().unwrap(), Some(id("r1")));
}

#[test]
fn remove_refuses_current_and_previous() {
    let (_d, _root, pkg) = setup();
    for r in ["r1", "r2", "r3"] {
        install(&pkg, r);
    }
    pkg.set_current(&id("r2")).unwrap();
    pkg.set_previous(Some(&id("r1"))).unwrap();
    let e = pkg.remove_revision(&id("r2")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refusing to remove revision my_site.r2: it is the current revision"
    );
    let e = pkg.remove_revision(&id("r1")).unwrap_err();
    assert!(e.to_string().contains("previous"), "{e}");
    pkg.remove_revision(&id("r3")).unwrap();
    assert_eq!(pkg.revisions().unwrap(), [id("r1"), id("r2")]);
    let e = pkg.remove_revision(&id("r3")).unwrap_err();
    assert!(matches!(e, RootError::NotInstalled { .. }), "{e}");
    // No trash left behind.
    assert_eq!(fs::read_dir(pkg.revs()).unwrap().count(), 2);
}

#[test]
fn remove_handles_read_only_dirs_and_never_follows_symlinks() {
    let (_d, _root, pkg) = setup();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("precious"), "keep").unwrap();
    let staging = pkg.new_staging(&id("r1")).unwrap();
    let deep = staging.join("a/b/c");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f"), "x").unwrap();
    symlink(outside.path(), staging.join("a/link-dir")).unwrap();
    symlink(outside.path().join("precious"), staging.join("a/link-file")).unwrap();
    for d in [deep.as_path(), &staging.join("a/b"), &staging.join("a")] {
        fs::set_permissions(d, Permissions::from_mode(0o555)).unwrap();
    }
    install_staged(&pkg, &staging, &id("r1")).unwrap();
    pkg.remove_revision(&id("r1")).unwrap();
    assert!(!pkg.revision_path(&id("r1")).exists());
    assert_eq!(
        fs::read_to_string(outside.path().join("precious")).unwrap(),
        "keep"
    );
    let mode = fs::metadata(outside.path()).unwrap().permissions().mode();
    assert_ne!(mode & 0o777, 0o555);
    assert_eq!(fs::read_dir(pkg.revs()).unwrap().count(), 0);
}

#[test]
fn unconfirmed_install_is_removed_by_the_next_clean_up() {
    let (_d, _root, pkg) = setup();
    install(&pkg, "r1");
    pkg.set_current(&id("r1")).unwrap();
    let staging = pkg.new_staging(&id("r2")).unwrap();
    pkg.prepare_install(&id("r2")).unwrap();
    sync_file_systems(std::slice::from_ref(&staging)).unwrap();
    pkg.commit_install(&staging, &id("r2")).unwrap();
    // A crash here: r2 exists, but its post-sync never finished: not listed.
    assert!(pkg.revision_path(&id("r2")).is_dir());
    assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
    assert!(pkg.clean_leftovers().stuck.is_empty());
    assert!(
        !pkg.revision_path(&id("r2")).exists(),
        "removed, to be fetched again"
    );
    assert_eq!(pkg.revisions().unwrap(), [id("r1")]);
    assert_eq!(
        fs::read_dir(pkg.revs()).unwrap().count(),
        1,
        "marker gone too"
    );
}

#[test]
fn leftovers_are_cleaned_and_nothing_else() {
    let (_d, root, pkg) = setup();
    install(&pkg, "r1");
    pkg.set_current(&id("r1")).unwrap();
    let staging = pkg.new_staging(&id("r2")).unwrap();
    fs::create_dir_all(staging.join("x/y")).unwrap();
    fs::set_permissions(staging.join("x"), Permissions::from_mode(0o500)).unwrap();
    fs::create_dir(pkg.revs().join(".trash-r0-1-1")).unwrap();
    symlink("revs/r1", pkg.path().join(".current.tmp-1-1")).unwrap();
    symlink("revs/r1", pkg.path().join(".previous.tmp-1-1")).unwrap();
    fs::write(pkg.path().join(".operator-notes"), "mine").unwrap();
    assert_eq!(root.clean_all_leftovers().removed, 4);
    assert_eq!(pkg.clean_leftovers().removed, 0);
    assert_eq!(fs::read_dir(pkg.revs()).unwrap().count(), 1);
    assert!(pkg.path().join(".operator-notes").exists());
    assert_eq!(pkg.current().unwrap(), Some(id("r1")));
}

#[tokio::test]
async fn second_lock_waits_says_who_then_fails_and_succeeds_after_release() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root {
        path: dir.path().to_owned(),
    };
    let first = root.lock(Duration::ZERO).await.unwrap();
    let holder = fs::read_to_string(dir.path().join(".lock")).unwrap();
    assert!(
        holder.starts_with(&format!("pid {} (", std::process::id())),
        "{holder}"
    );

    // The wait must not block the runtime: another task keeps ticking.
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let start = Instant::now();
    let e = root.lock(Duration::from_millis(500)).await.unwrap_err();
    ticker.abort();
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(ticks.load(Ordering::Relaxed) > 10, "runtime was blocked");
    let msg = e.to_string();
    assert!(matches!(e, RootError::Locked { .. }));
    assert!(
        msg.contains(&format!("{}", dir.path().join(".lock").display())),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("held by pid {}", std::process::id())),
        "{msg}"
    );

    drop(first);
    let again = root.lock(Duration::from_secs(1)).await.unwrap();
    drop(again);
}

#[tokio::test]
async fn lock_is_released_when_the_holder_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root {
        path: dir.path().to_owned(),
    };
    let lock_path = dir.path().join(".lock");
    let has_flock = std::process::Command::new("flock")
        .arg("--version")
        .output();
    // util-linux, on every Debian system; .ci/run checks for it.
    assert!(
        has_flock.is_ok_and(|o| o.status.success()),
        "flock(1) (util-linux) is needed by this test"
    );
    // The shell opens the file, flock(1) locks that open file, and the
    // shell then becomes `sleep`, which keeps holding it.
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"exec 9>>"$1" && flock -x 9 && exec sleep 60"#)
        .arg("sh")
        .arg(&lock_path)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Err(e) = root.lock(Duration::ZERO).await {
            assert!(e.to_string().contains("held by another process"), "{e}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "child never locked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    root.lock(Duration::from_secs(2)).await.unwrap();
}

const CRASH_ENV: &str = "FTL_TEST_CRASH_HELPER_PKG";
const CRASH_FILES: usize = 40;

/// A revision whose completeness can be checked.
fn install_full(pkg: &PackageDir, new: &RevisionId) {
    let staging = pkg.new_staging(new).unwrap();
    fs::create_dir(staging.join("sub")).unwrap();
    for i in 0..CRASH_FILES {
        fs::write(staging.join(format!("sub/f{i}")), vec![b'x'; 4096]).unwrap();
    }
    fs::write(staging.join("complete"), "").unwrap();
    install_staged(pkg, &staging, new).unwrap();
}

/// Not a test on its own: when `crash_at_any_instant` runs this binary
/// with CRASH_ENV set, it deploys in a loop until it is killed.
#[test]
#[ignore = "a helper: crash_at_any_instant_leaves_a_repairable_package runs it in a child"]
fn crash_helper() {
    let path = std::env::var_os(CRASH_ENV)
        .unwrap_or_else(|| panic!("a helper of crash_at_any_instant: {CRASH_ENV} is not set"));
    let path = PathBuf::from(path);
    let pkg = PackageDir {
        name: "my_site".parse().unwrap(),
        path,
    };
    // Continue after the newest id of earlier rounds (ids never reused).
    let newest = pkg.revisions().unwrap().pop().unwrap();
    let mut n: u64 = newest.as_str()[1..].parse().unwrap();
    loop {
        n += 1;
        let new = id(&format!("r{n:09}"));
        install_full(&pkg, &new);
        let old = pkg.current().unwrap();
        pkg.set_previous(old.as_ref()).unwrap();
        pkg.set_current(&new).unwrap();
        let keep = [Some(new), old];
        for r in pkg.revisions().unwrap() {
            if !keep.contains(&Some(r.clone())) {
                pkg.remove_revision(&r).unwrap();
            }
        }
    }
}

#[test]
fn crash_at_any_instant_leaves_a_repairable_package() {
    let (_d, _root, pkg) = setup();
    install_full(&pkg, &id("r000000000"));
    pkg.set_current(&id("r000000000")).unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..12u64 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "root::tests::crash_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_ENV, pkg.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Vary the instant of death.
        std::thread::sleep(Duration::from_millis(40 + round * 37));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "helper ended by itself: {status}");

        // current resolves, to a complete revision.
        let current = pkg.current().unwrap().unwrap();
        assert!(
            pkg.path().join("current/complete").exists(),
            "round {round}"
        );
        // Every visible revision is complete.
        let revisions = pkg.revisions().unwrap();
        assert!(revisions.contains(&current));
        for r in &revisions {
            let p = pkg.revision_path(r);
            assert!(p.join("complete").exists(), "partial revision {r}");
            assert_eq!(fs::read_dir(p.join("sub")).unwrap().count(), CRASH_FILES);
        }
        // The next run (holding the lock) removes every leftover.
        assert!(pkg.clean_leftovers().stuck.is_empty());
        for dir in [pkg.path().to_owned(), pkg.revs()] {
            for e in fs::read_dir(&dir).unwrap() {
                let name = e.unwrap().file_name();
                assert!(!name.to_string_lossy().starts_with('.'), "left {name:?}");
            }
        }
    }
    // The helper really deployed (so it was killed in the middle of work).
    assert!(pkg.current().unwrap().unwrap() > id("r000000010"));
}

#[test]
fn the_accepted_bless_keeps_its_signing_time_and_reads_older_records() {
    let (_d, _root, pkg) = setup();
    assert_eq!(pkg.accepted_bless().unwrap(), None);
    // As this version's predecessor wrote it: no time.
    fs::write(pkg.path().join(BLESS), "17 my_site.r1\n").unwrap();
    let old = pkg.accepted_bless().unwrap().unwrap();
    assert_eq!((old.sequence, old.signed), (17, None));
    let new = AcceptedBless {
        sequence: 18,
        blessed: "my_site.r2".into(),
        signed: Some(1_796_169_600),
    };
    pkg.set_accepted_bless(&new).unwrap();
    assert_eq!(pkg.accepted_bless().unwrap(), Some(new));
    fs::write(pkg.path().join(BLESS), "18 my_site.r2 soon\n").unwrap();
    assert!(pkg.accepted_bless().is_err(), "damaged, not guessed");
}

mod file_record {
    use super::*;
    use crate::fileid::{FileId, MARGIN};
    use std::collections::HashMap;

    fn fid(ctime: i64) -> FileId {
        FileId {
            size: 5,
            ino: 42,
            mtime: 1_000,
            ctime,
        }
    }

    fn record(rev: &str, sealed: i64) -> FileRecord {
        FileRecord {
            id: id(rev),
            sealed,
            files: vec![
                (
                    "a/b c.txt".into(),
                    fid(sealed - 10 * MARGIN.as_nanos() as i64),
                    [1; 32],
                ),
                ("z".into(), fid(sealed - 1), [2; 32]),
            ],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let (_t, _root, pkg) = setup();
        let r = record("2026120600001Aa", 1_800_000_000_000_000_000);
        pkg.set_files(&r).unwrap();
        assert_eq!(pkg.files(), Some(r.clone()));
        let text = FileRecord::render(&r);
        assert_eq!(FileRecord::parse(&text), Some(r));
    }

    #[test]
    fn a_record_of_another_revision_or_garbled_is_not_used() {
        let (_t, _root, pkg) = setup();
        let sealed = 1_800_000_000_000_000_000;
        let r = record("2026120600001Aa", sealed);
        pkg.set_files(&r).unwrap();
        assert_eq!(pkg.files_of(&id("2026120600001Aa")).len(), 1);
        // Another revision (an older record): nothing known.
        assert!(pkg.files_of(&id("2026120600002Bb")).is_empty());
        let text = FileRecord::render(&r);
        let garbled = [
            // Cut short: no end line, or an end line that counts otherwise.
            text.lines().take(4).collect::<Vec<_>>().join("\n") + "\n",
            text.replace("end 2", "end 3"),
            text.replace(&text[text.len() - 1..], ""),
            // A line that does not parse.
            text.replace(" 42 ", " x42 "),
            text.replace(&"01".repeat(32), &"01".repeat(31)),
            text.replace("ftl-files 1", "ftl-files 2"),
            text.replace("revision ", "revision ../"),
            String::new(),
            "garbage\n".into(),
        ];
        for g in garbled {
            assert_eq!(FileRecord::parse(&g), None, "{g}");
            std::fs::write(pkg.path().join(FILES), &g).unwrap();
            assert!(pkg.files_of(&id("2026120600001Aa")).is_empty(), "{g}");
        }
    }

    #[test]
    fn an_entry_changed_within_the_margin_of_the_stats_is_not_trusted() {
        let sealed = 1_800_000_000_000_000_000;
        let margin = MARGIN.as_nanos() as i64;
        let r = FileRecord {
            id: id("2026120600001Aa"),
            sealed,
            files: vec![
                ("old".into(), fid(sealed - margin - 1), [1; 32]),
                ("edge".into(), fid(sealed - margin), [2; 32]),
                ("fresh".into(), fid(sealed - 1), [3; 32]),
                ("ahead".into(), fid(sealed + 1_000_000_000), [4; 32]),
            ],
        };
        let settled = r.settled();
        assert_eq!(settled.keys().collect::<Vec<_>>(), vec!["old"]);
        assert_eq!(settled["old"], (fid(sealed - margin - 1), [1; 32]));
    }

    #[test]
    fn identify_records_a_fresh_tree_whole_after_the_margin() {
        let (_t, _root, pkg) = setup();
        let rev = id("2026120600001Aa");
        let staging = pkg.new_staging(&rev).unwrap();
        std::fs::create_dir_all(staging.join("d")).unwrap();
        std::fs::write(staging.join("d/one"), b"one").unwrap();
        std::fs::write(staging.join("two"), b"two!").unwrap();
        std::fs::write(staging.join("other size"), b"x").unwrap();
        std::fs::write(staging.join("unknown"), b"u").unwrap();
        std::fs::write(staging.join("new\nline"), b"n").unwrap();
        symlink("two", staging.join("link")).unwrap();
        let digests: HashMap<String, (u64, [u8; 32])> = [
            ("d/one", 3, [1; 32]),
            ("two", 4, [2; 32]),
            ("other size", 5, [3; 32]),
            ("new\nline", 1, [4; 32]),
            ("link", 3, [5; 32]),
        ]
        .into_iter()
        .map(|(p, n, s)| (p.to_owned(), (n, s)))
        .collect();
        // Just written: identify waits for the margin rather than leave
        // them out.
        let r = pkg.identify(&staging, &rev, &digests).unwrap();
        assert_eq!(r.id, rev);
        let paths: Vec<&str> = r.files.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, vec!["d/one", "two"]);
        let one = std::fs::metadata(staging.join("d/one")).unwrap();
        assert_eq!(r.files[0].1, FileId::of(&one));
        assert_eq!(r.files[0].2, [1; 32]);
        assert_eq!(r.settled().len(), 2);
        // It reads back, and proves both.
        pkg.set_files(&r).unwrap();
        assert_eq!(pkg.files_of(&rev).len(), 2);
    }
}
