//! Resource faults: a disk that fills up during an unpack, a root (or a package
//! directory) that is read-only. A clear error, nothing half-installed, current
//! unchanged; and once space or write access is back, the next sync succeeds.
//!
//! These mount file systems (tmpfs, bind mounts), so they need root; where
//! mounting is not permitted they fail, naming what was refused (.ci/run runs
//! as root).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    Backend, World, check_node, error_line, figure, id_of, leftovers, link_target, ok,
    output_within, stderr,
};

const LIMIT: Duration = Duration::from_secs(120);

/// A mount, unmounted when dropped (also when the test fails).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], target: &Path) -> Mount {
    std::fs::create_dir_all(target).unwrap();
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .expect("mount (util-linux) runs");
    let what = format!(
        "mount {} (needs root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    common::require(&what, out.status.success());
    Mount(target.to_owned())
}

fn remount(target: &Path, options: &str) {
    let status = Command::new("mount")
        .args(["-o", options])
        .arg(target)
        .status()
        .unwrap();
    assert!(status.success(), "remount {options}");
}

/// A small revision, synced and current, and a big one blessed after it.
fn two_revisions(w: &World, root: &Path) -> (String, String, BTreeMap<String, PathBuf>) {
    let mut expected = BTreeMap::new();
    let (small, src) = common::random_package(w.tmp.path(), "app.tgz", 1, 2, 16 << 10);
    let a = w.spool_new(&small);
    expected.insert(id_of(&a), src);
    ok(w, w.tmp.path(), &["jump", "--master", &a]);
    ok(w, root, &["sync"]);
    assert_eq!(link_target(root, "app", "current"), Some(id_of(&a)));
    // 6 MB of incompressible data: more than the 2 MB disk.
    let (big, src) = common::random_package(w.tmp.path(), "app.tgz", 2, 24, 256 << 10);
    let b = w.spool_new(&big);
    expected.insert(id_of(&b), src);
    ok(w, w.tmp.path(), &["jump", "--master", &b]);
    (a, b, expected)
}

#[test]
fn full_disk_during_unpack() {
    let w = World::new(Backend::Dir);
    let root = w.path("small-disk");
    let _m = mount(&["-t", "tmpfs", "-o", "size=2m", "tmpfs"], &root);
    std::fs::create_dir_all(root.join("app")).unwrap();
    let (a, b, expected) = two_revisions(&w, &root);

    let out = output_within(w.ftl(&root).arg("sync"), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    eprintln!("{line}");
    assert!(
        line.contains(&b) && line.contains("No space left on device"),
        "{line}"
    );
    // Nothing half-installed, the old revision still current and intact.
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&a)));
    assert!(!root.join("app/revs").join(id_of(&b)).exists());
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());

    // Space freed: the next sync goes through.
    remount(&root, "remount,size=32m");
    ok(&w, &root, &["sync"]);
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&b)));
    assert_eq!(link_target(&root, "app", "previous"), Some(id_of(&a)));
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());
    figure("resource_faults", 1);
}

#[test]
fn read_only_root() {
    let w = World::new(Backend::Dir);
    let root = w.path("ro-root");
    let _m = mount(&["-t", "tmpfs", "-o", "size=32m", "tmpfs"], &root);
    std::fs::create_dir_all(root.join("app")).unwrap();
    let (a, b, expected) = two_revisions(&w, &root);
    remount(&root, "remount,ro");

    let out = output_within(w.ftl(&root).arg("sync"), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    eprintln!("{line}");
    assert!(line.contains("Read-only file system"), "{line}");
    assert!(
        line.contains(&root.display().to_string()),
        "names the path: {line}"
    );
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&a)));

    remount(&root, "remount,rw");
    ok(&w, &root, &["sync"]);
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&b)));
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());
    figure("resource_faults", 1);
}

#[test]
fn read_only_package_directory() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let (a, b, expected) = two_revisions(&w, &root);
    // The root stays writable (the lock works); the package directory does not.
    let pkg = root.join("app");
    let _m = mount(&["--bind", pkg.to_str().unwrap()], &pkg);
    remount(&pkg, "remount,bind,ro");

    let out = output_within(w.ftl(&root).arg("sync"), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = error_line(&out);
    eprintln!("{line}");
    assert!(
        line.contains(&b) && line.contains("Read-only file system"),
        "{line}"
    );
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&a)));

    remount(&pkg, "remount,bind,rw");
    ok(&w, &root, &["sync"]);
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&b)));
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());
    figure("resource_faults", 1);
}
