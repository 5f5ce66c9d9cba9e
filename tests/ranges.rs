//! Downloads in byte ranges, against the in-process S3 server: an object larger
//! than one range (8 MiB) comes as several ranges at once and is reassembled
//! exactly; a cut range is asked for again alone; an object replaced during the
//! download fails the sync with one clear line and installs nothing; a slow
//! first range does not let the later ones pile up beyond the window.

mod common;

use std::path::{Path, PathBuf};

use common::{Backend, Fault, FaultKind, Rng, Server, World, error_line, id_of, leftovers, revs};

const RANGE: usize = 8 << 20;
/// Ranges of one download started and not yet consumed (`s3.rs`).
const WINDOW: usize = 12;

fn server(w: &World) -> &Server {
    match &w.server {
        Some(s) if !s.is_external() => s,
        _ => panic!("these tests need the in-process server: unset FTL_TEST_S3_ENDPOINT"),
    }
}

/// Spools `<package>.bin` of `size` random bytes and blesses it; returns the
/// revision and the bytes.
fn spool_blessed(w: &World, package: &str, size: usize, seed: u64) -> (String, Vec<u8>) {
    let dir = w.tmp.path().join(format!("src-{package}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{package}.bin"));
    let bytes = Rng::new(seed).bytes(size);
    std::fs::write(&file, &bytes).unwrap();
    let rev = w.spool_new(&file);
    let out = w
        .ftl(w.tmp.path())
        .args(["jump", "--master", &rev])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    (rev, bytes)
}

/// The installed file of a revision.
fn installed(root: &Path, package: &str, rev: &str) -> PathBuf {
    root.join(package)
        .join("revs")
        .join(id_of(rev))
        .join(format!("{package}.bin"))
}

fn sync(w: &World, root: &Path, log: &str) -> std::process::Output {
    common::output_within(
        w.ftl(root)
            .env("FTL_LOG", log)
            .args(["sync", "--jobs", "4"]),
        std::time::Duration::from_secs(300),
    )
}

#[test]
fn ranges_reassemble_to_exactly_the_object() {
    let w = World::new(Backend::S3);
    let sizes = [
        ("empty", 0),
        ("one_byte", 1),
        ("one_range", RANGE),
        ("one_range_and_a_byte", RANGE + 1),
        ("two_and_a_half", 2 * RANGE + RANGE / 2 + 12_345),
    ];
    let spooled: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, (p, size))| (*p, spool_blessed(&w, p, *size, 70 + i as u64)))
        .collect();
    let packages: Vec<&str> = sizes.iter().map(|(p, _)| *p).collect();
    let root = w.node("n", &packages);
    server(&w).set_slow_gets(true);
    let out = sync(&w, &root, "ftl::store=debug");
    assert!(out.status.success(), "{}", common::stderr(&out));
    for (package, (rev, bytes)) in &spooled {
        let got = std::fs::read(installed(&root, package, rev)).unwrap();
        assert_eq!(got.len(), bytes.len(), "{package}");
        assert!(got == *bytes, "{package}: the bytes differ");
    }
    // Only the objects larger than one range went by ranges: through a link
    // slower than the unpacking, their first range was cut.
    let log = common::stderr(&out);
    let ranged = log.lines().filter(|l| l.contains("in ranges of")).count();
    assert_eq!(ranged, 2, "{log}");
    let cut = log
        .lines()
        .filter(|l| l.contains("up to 1 at once"))
        .count();
    assert_eq!(cut, 0, "{log}");
}

#[test]
fn a_cut_range_is_asked_for_again_alone() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let (rev, bytes) = spool_blessed(&w, "app", 3 * RANGE - 7, 81);
    // Through a slow link: the first range, asked whole, is cut at 8 MiB.
    s.set_slow_gets(true);
    // A clean sync, for the number of requests it takes.
    let clean = w.node("clean", &["app"]);
    s.counts.reset();
    let out = sync(&w, &clean, "");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let gets = s.counts.get("GET");
    // The second range is cut in the middle.
    let cut = w.node("cut", &["app"]);
    s.counts.reset();
    s.set_fault(Fault::CutRangeAt(RANGE as u64));
    let out = sync(&w, &cut, "");
    s.set_fault(Fault::None);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(s.injected(FaultKind::CutBody), 1);
    assert!(std::fs::read(installed(&cut, "app", &rev)).unwrap() == bytes);
    // One request more than the clean sync: the rest of that range, not the object.
    assert_eq!(s.counts.get("GET"), gets + 1);
}

#[test]
fn an_object_replaced_during_the_download_fails_and_installs_nothing() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let (rev, _) = spool_blessed(&w, "app", 3 * RANGE + 5, 82);
    let root = w.node("n", &["app"]);
    s.set_slow_gets(true);
    s.set_fault(Fault::ReplaceAfterGet(id_of(&rev)));
    let out = sync(&w, &root, "");
    s.set_fault(Fault::None);
    assert!(!out.status.success());
    let line = error_line(&out);
    eprintln!("{line}");
    assert!(
        line.contains(&rev) && line.contains("was replaced or deleted during the download"),
        "{line}"
    );
    // Asked once: a stale plan is not tried again.
    assert_eq!(
        common::stderr(&out).matches("trying again").count(),
        0,
        "{}",
        common::stderr(&out)
    );
    assert!(revs(&root, "app").is_empty());
    assert!(common::current(&root, "app").is_none());
    assert!(
        leftovers(&root, "app").is_empty(),
        "{:?}",
        leftovers(&root, "app")
    );
}

#[test]
fn a_slow_first_range_keeps_the_later_ones_within_the_window() {
    let w = World::new(Backend::S3);
    let s = server(&w);
    let size = (WINDOW + 3) * RANGE + 1;
    let (rev, bytes) = spool_blessed(&w, "app", size, 83);
    let root = w.node("n", &["app"]);
    s.set_fault(Fault::SlowFirstRange);
    let out = sync(&w, &root, "ftl::store=debug");
    s.set_fault(Fault::None);
    let log = common::stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(std::fs::read(installed(&root, "app", &rev)).unwrap() == bytes);
    let peak: u64 = log
        .lines()
        .find_map(|l| {
            l.split(" while the first range was read")
                .next()?
                .rsplit('(')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak in {log}"));
    eprintln!("peak {peak} bytes buffered while the first range was read");
    // The first range, asked whole, was cut: the consumer waited for it.
    // The ranges after it were asked for and began to arrive while it was
    // slow (their first MiB, then their connections wait), and no more than
    // that was held: the two started when it was cut hold back at 2 MiB
    // until their rates are known, and a slow range among fast ones does
    // not open the window (more connections would not bring the slow one
    // faster).
    assert!(peak >= 1 << 20, "peak {peak}");
    assert!(peak <= 3 * (2 << 20), "peak {peak}");
}
