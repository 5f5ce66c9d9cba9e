//! Delta deploys (`spool --delta`, and a node's sync from its earlier
//! revision), run as a user would, against the in-process S3 server and a
//! `file://` bucket: the tree a delta install gives is the tree a full
//! download gives, for zstd and gzip; GNU tar reads a delta-ready object as
//! any archive; a file changed on the node is fetched, not reused; no two
//! revisions share an inode; a bad index, range or piece is refused with the
//! revision named and nothing installed; ftl 0.2.6 sees one object per
//! revision. The install record of the files' identity: a delta after a
//! whole install of a delta-ready revision reads no unchanged file to know
//! it, and a file changed in place (its mtime put back) is still fetched.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{Backend, Rng, World, current, id_of, ok, revs, run, stderr};

/// Every entry under `dir`: kind, permission bits, and content or target.
fn tree(dir: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let m = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let shown = rel.display().to_string();
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(dir.join(&rel)).unwrap();
                out.insert(shown, ('l', 0, t.display().to_string().into_bytes()));
            } else if m.is_dir() {
                out.insert(shown, ('d', mode, Vec::new()));
                todo.push(rel);
            } else {
                out.insert(shown, ('f', mode, std::fs::read(dir.join(&rel)).unwrap()));
            }
        }
    }
    out
}

/// Inodes of the regular files under `dir`, by path.
fn inodes(dir: &Path) -> BTreeMap<String, u64> {
    tree(dir)
        .into_iter()
        .filter(|(_, (k, _, _))| *k == 'f')
        .map(|(p, _)| {
            let ino = std::fs::metadata(dir.join(&p)).unwrap().ino();
            (p, ino)
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Codec {
    Zstd,
    Gzip,
}

impl Codec {
    fn ext(self) -> &'static str {
        match self {
            Codec::Zstd => "tar.zst",
            Codec::Gzip => "tgz",
        }
    }
    fn tar_flag(self) -> &'static str {
        match self {
            Codec::Zstd => "--zstd",
            Codec::Gzip => "-z",
        }
    }
}

/// The archive `<package>.<ext>` of the directory `src`, made by GNU tar.
fn archive(w: &World, package: &str, src: &Path, codec: Codec, n: u32) -> PathBuf {
    if matches!(codec, Codec::Zstd) {
        common::require("zstd", common::has_tool("zstd"));
    }
    let dir = w.path(&format!("out-{package}-{n}"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{package}.{}", codec.ext()));
    let status = std::process::Command::new("tar")
        .arg("-c")
        .arg(codec.tar_flag())
        .arg("-f")
        .arg(&out)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    out
}

fn spool_delta(w: &World, file: &Path) -> String {
    let out = w
        .ftl(w.tmp.path())
        .args(["spool", "--delta"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "spool --delta: {}", stderr(&out));
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    ok(w, w.tmp.path(), &["jump", "--master", &rev]);
    rev
}

fn write(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The first revision's tree: large and small files, an executable, an
/// empty file and directory, symlinks.
fn first_tree(src: &Path) {
    let mut rng = Rng::new(7);
    write(&src.join("big.bin"), &rng.bytes(1 << 20), 0o644);
    // Larger than a piece (4 MiB): in two.
    write(&src.join("huge.bin"), &rng.bytes(5 << 20), 0o644);
    for i in 0..40 {
        write(
            &src.join(format!("static/f{i:02}.txt")),
            format!("file {i}\n").repeat(200).as_bytes(),
            0o644,
        );
    }
    write(&src.join("bin/run"), b"#!/bin/sh\necho run\n", 0o755);
    write(&src.join("keep.txt"), b"the same in both\n", 0o644);
    write(&src.join("old-name.txt"), b"moved along\n", 0o644);
    write(&src.join("gone.txt"), b"removed in the second\n", 0o644);
    write(&src.join("empty"), b"", 0o644);
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("static/f01.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("bin", src.join("bin-link")).unwrap();
}

/// The second: files changed, added (one of random bytes), removed,
/// renamed, a mode changed, a link retargeted.
fn second_tree(src: &Path) {
    write(
        &src.join("static/blob.bin"),
        &Rng::new(8).bytes(200 << 10),
        0o644,
    );
    write(&src.join("static/f07.txt"), b"changed\n", 0o644);
    write(&src.join("static/new.txt"), b"added\n", 0o600);
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::rename(src.join("old-name.txt"), src.join("new-name.txt")).unwrap();
    std::fs::set_permissions(src.join("keep.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("static/f02.txt", src.join("link")).unwrap();
    write(&src.join("empty2"), b"", 0o600);
}

/// The "bytes fetched" of a delta install's log line, if there was one.
fn fetched(out: &std::process::Output) -> Option<u64> {
    let err = stderr(out);
    let line = err.lines().find(|l| l.contains(": delta from "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "bytes")?;
    words[at - 1].parse().ok()
}

/// What a delta install's log line says of the earlier revision's files:
/// (known by the install record, read to check).
fn known_and_checked(out: &std::process::Output) -> (u64, u64) {
    let err = stderr(out);
    let found = || {
        let line = err.lines().find(|l| l.contains(": delta from "))?;
        let (_, tail) = line.split_once(" bytes reused (")?;
        let words: Vec<&str> = tail.split_whitespace().collect();
        Some((words.first()?.parse().ok()?, words.get(7)?.parse().ok()?))
    };
    found().unwrap_or_else(|| panic!("no delta install's line: {err}"))
}

/// The revision `.ftl-files` names, if there is one.
fn recorded(node: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(node.join(package).join(".ftl-files")).ok()?;
    let line = text.lines().nth(1)?;
    Some(line.strip_prefix("revision ")?.to_owned())
}

/// The object of revision `rev` (with its extension) in the bucket.
fn object_path(w: &World, key: &str) -> PathBuf {
    match &w.server {
        None => PathBuf::from(w.bucket.strip_prefix("file://").unwrap()).join(key),
        Some(_) => common::in_process(w).bucket_dir(&w.bucket).join(key),
    }
}

/// The size of revision `rev`'s object, as `list --master --json` gives it
/// (from the listing: any server).
fn master_size(w: &World, node: &Path, rev: &str) -> u64 {
    let out = run(w, node, &["list", "--master", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["revisions"].as_array().unwrap().iter())
        .find(|r| r["name"] == rev)
        .and_then(|r| r["size"].as_u64())
        .unwrap_or_else(|| panic!("no {rev} in {doc}"))
}

/// `last_install` of `status --json` for the node's first package.
fn last_install(w: &World, node: &Path) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&ok(w, node, &["status", "--json"])).unwrap();
    status["packages"][0]["last_install"].clone()
}

fn delta_equals_full(w: &World, codec: Codec) {
    let package = "dp";
    let src = w.path("src-dp");
    first_tree(&src);
    let a = spool_delta(w, &archive(w, package, &src, codec, 1));
    let node = w.node("delta", &[package]);
    ok(w, &node, &["sync"]);
    assert_eq!(current(&node, package), Some(id_of(&a)));
    // A whole install of a delta-ready revision records its files' SHA-256s
    // (from the index, read beside the object: its bytes count as moved).
    assert_eq!(recorded(&node, package), Some(id_of(&a)));
    let first = last_install(w, &node);
    let size_a = std::fs::metadata(object_path(w, &format!("{a}.{}", codec.ext())))
        .unwrap()
        .len();
    assert_eq!(first["how"], serde_json::json!("whole"), "{first}");
    let moved_a = first["moved_bytes"].as_u64().unwrap();
    assert!(
        moved_a > size_a && moved_a < size_a + size_a / 10,
        "{first}"
    );

    second_tree(&src);
    let second = archive(w, package, &src, codec, 2);
    let b = spool_delta(w, &second);
    let metrics = w.path("metrics.prom");
    let out = common::output_within(
        w.ftl(&node).env("FTL_METRICS_FILE", &metrics).arg("sync"),
        common::RUN_LIMIT,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&node, package), Some(id_of(&b)));
    let moved = fetched(&out).unwrap_or_else(|| panic!("no delta install: {}", stderr(&out)));
    // Every file of the first revision is known by the record: none is read
    // to find out whether it changed.
    let (known, checked) = known_and_checked(&out);
    assert!(known >= 40 && checked == 0, "{}", stderr(&out));
    assert_eq!(recorded(&node, package), Some(id_of(&b)));
    let size = std::fs::metadata(&second).unwrap().len();
    assert!(
        moved * 20 < size,
        "a small change moves a small part: {moved} of {size} bytes"
    );
    // What it moved and reused, in status and the metrics.
    let status: serde_json::Value =
        serde_json::from_str(&ok(w, &node, &["status", "--json"])).unwrap();
    let last = &status["packages"][0]["last_install"];
    assert_eq!(last["revision"], serde_json::json!(b), "{status}");
    assert_eq!(last["how"], serde_json::json!("delta"), "{status}");
    assert_eq!(last["moved_bytes"], serde_json::json!(moved), "{status}");
    let reused = last["reused_bytes"].as_u64().unwrap();
    assert!(reused > 6 << 20, "{status}");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains(&format!("ftl_sync_downloaded_bytes {moved}\n"))
            && prom.contains(&format!("ftl_sync_reused_bytes {reused}\n")),
        "{prom}"
    );

    // A node without the first revision downloads the whole object.
    let fresh = w.node("full", &[package]);
    let out = run(w, &fresh, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fetched(&out), None, "{}", stderr(&out));

    let by_delta = node.join(package).join("revs").join(id_of(&b));
    let by_full = fresh.join(package).join("revs").join(id_of(&b));
    let t = tree(&by_delta);
    assert_eq!(t, tree(&by_full));
    // GNU tar reads the delta-ready object to the same tree.
    let gnu = w.path(&format!("gnu-{}", codec.ext()));
    std::fs::create_dir_all(&gnu).unwrap();
    let object = object_path(w, &format!("{b}.{}", codec.ext()));
    let status = std::process::Command::new("tar")
        .arg("-x")
        .arg(codec.tar_flag())
        .arg("-f")
        .arg(&object)
        .arg("-C")
        .arg(&gnu)
        .status()
        .unwrap();
    assert!(status.success());
    let mut from_tar = tree(&gnu);
    // GNU tar gives `.` the archive's mode; compare what both have.
    from_tar.retain(|p, _| !p.is_empty());
    assert_eq!(t, from_tar);
    assert_eq!(tree(&src), t);
    assert!(t.contains_key("empty-dir") && t.contains_key("empty2"));

    // No file of the new revision shares an inode with the old one.
    let old = inodes(&node.join(package).join("revs").join(id_of(&a)));
    for (p, ino) in inodes(&by_delta) {
        assert_ne!(old.get(&p), Some(&ino), "{p} shares an inode");
    }
}

both!(delta_install_equals_full_download_zstd, |w: World| {
    delta_equals_full(&w, Codec::Zstd);
});

both!(delta_install_equals_full_download_gzip, |w: World| {
    delta_equals_full(&w, Codec::Gzip);
});

/// Two revisions of `package`, the first installed on a node; returns the
/// node, both names, and the second's archive.
fn two_revisions(w: &World, package: &str, codec: Codec) -> (PathBuf, String, String, PathBuf) {
    let src = w.path(&format!("src-{package}"));
    first_tree(&src);
    let a = spool_delta(w, &archive(w, package, &src, codec, 1));
    let node = w.node("n", &[package]);
    ok(w, &node, &["sync"]);
    second_tree(&src);
    let second = archive(w, package, &src, codec, 2);
    let b = spool_delta(w, &second);
    (node, a, b, second)
}

both!(
    a_file_changed_on_the_node_is_fetched_not_reused,
    |w: World| {
        let (node, a, b, _) = two_revisions(&w, "lm", Codec::Zstd);
        // The application wrote into its revision: same size, other bytes.
        let local = node.join("lm").join("revs").join(id_of(&a)).join("big.bin");
        let mut bytes = std::fs::read(&local).unwrap();
        let wanted = bytes.clone();
        bytes[100] ^= 1;
        std::fs::write(&local, &bytes).unwrap();
        let out = run(&w, &node, &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let moved = fetched(&out).expect("a delta install");
        assert!(moved > 1 << 20, "big.bin was fetched: {moved} bytes");
        let installed = node.join("lm").join("revs").join(id_of(&b)).join("big.bin");
        assert_eq!(std::fs::read(installed).unwrap(), wanted);
    }
);

both!(
    a_large_file_changed_on_the_node_is_fetched_not_reused,
    |w: World| {
        // Larger than what a node checks in memory (4 MiB): checked by one
        // read, copied by another.
        let (node, a, b, _) = two_revisions(&w, "ll", Codec::Gzip);
        let local = node
            .join("ll")
            .join("revs")
            .join(id_of(&a))
            .join("huge.bin");
        let mut bytes = std::fs::read(&local).unwrap();
        let wanted = bytes.clone();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&local, &bytes).unwrap();
        let out = run(&w, &node, &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let moved = fetched(&out).expect("a delta install");
        assert!(moved > 4 << 20, "huge.bin was fetched: {moved} bytes");
        let installed = node
            .join("ll")
            .join("revs")
            .join(id_of(&b))
            .join("huge.bin");
        assert!(std::fs::read(installed).unwrap() == wanted);
    }
);

both!(
    a_file_changed_in_place_with_its_mtime_put_back_is_fetched,
    |w: World| {
        let (node, a, b, _) = two_revisions(&w, "mt", Codec::Zstd);
        assert_eq!(recorded(&node, "mt"), Some(id_of(&a)));
        // Same size, same inode, same mtime: only its ctime tells.
        let local = node.join("mt").join("revs").join(id_of(&a)).join("big.bin");
        let mtime = std::fs::metadata(&local).unwrap().modified().unwrap();
        let wanted = std::fs::read(&local).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&local)
            .unwrap();
        std::io::Write::write_all(&mut f, b"changed by the application").unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(mtime))
            .unwrap();
        drop(f);
        assert_eq!(
            std::fs::metadata(&local).unwrap().modified().unwrap(),
            mtime
        );
        let out = run(&w, &node, &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let moved = fetched(&out).expect("a delta install");
        assert!(moved > 1 << 20, "big.bin was fetched: {moved} bytes");
        // It alone was read to check; the record vouched for the others.
        let (known, checked) = known_and_checked(&out);
        assert!(known >= 40 && checked == 1, "{}", stderr(&out));
        let installed = node.join("mt").join("revs").join(id_of(&b)).join("big.bin");
        assert!(std::fs::read(installed).unwrap() == wanted);
    }
);

both!(
    a_record_that_does_not_parse_means_reading_every_file,
    |w: World| {
        let (node, a, b, _) = two_revisions(&w, "gr", Codec::Gzip);
        let record = node.join("gr").join(".ftl-files");
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(text.contains(&format!("revision {}", id_of(&a))), "{text}");
        // Cut short, as a crash while it was replaced could leave it.
        std::fs::write(&record, &text[..text.len() / 2]).unwrap();
        let out = run(&w, &node, &["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let (known, checked) = known_and_checked(&out);
        assert!(known == 0 && checked >= 40, "{}", stderr(&out));
        let fresh = w.node("fresh", &["gr"]);
        ok(&w, &fresh, &["sync"]);
        let rev = |n: &Path| n.join("gr").join("revs").join(id_of(&b));
        assert_eq!(tree(&rev(&node)), tree(&rev(&fresh)));
    }
);

both!(ftl_delta_0_downloads_whole_revisions, |w: World| {
    let (node, a, b, _) = two_revisions(&w, "nd", Codec::Gzip);
    let out = w
        .ftl(&node)
        .env("FTL_DELTA", "0")
        .arg("sync")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fetched(&out), None, "{}", stderr(&out));
    assert_eq!(current(&node, "nd"), Some(id_of(&b)));
    // Nothing but the object: no index beside it, no record of its files
    // (the first revision's stays, still true of it).
    let size = master_size(&w, &node, &b);
    let last = last_install(&w, &node);
    assert_eq!(last["moved_bytes"], serde_json::json!(size), "{last}");
    assert_eq!(recorded(&node, "nd"), Some(id_of(&a)));
    let fresh = w.node("fresh", &["nd"]);
    let out = w
        .ftl(&fresh)
        .env("FTL_DELTA", "0")
        .arg("sync")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let last = last_install(&w, &fresh);
    assert_eq!(last["moved_bytes"], serde_json::json!(size), "{last}");
    assert_eq!(recorded(&fresh, "nd"), None);
});

/// The object's file and its metadata file, in a `file://` bucket.
fn object_files(w: &World, key: &str) -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(w.bucket.strip_prefix("file://").unwrap());
    (dir.join(key), dir.join(format!(".meta.{key}")))
}

fn meta_value(meta: &Path, name: &str) -> String {
    std::fs::read_to_string(meta)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} in {}", meta.display()))
}

/// The sync refuses `b`: exit 1, one line naming it and `what`; the first
/// revision stays current and alone, nothing staged.
fn refused(w: &World, node: &Path, package: &str, a: &str, b: &str, what: &str) {
    let out = run(w, node, &["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = common::error_line(&out);
    assert!(
        line.contains(b) && line.to_lowercase().contains(what),
        "{line}\n{}",
        stderr(&out)
    );
    assert_eq!(current(node, package), Some(id_of(a)));
    assert_eq!(revs(node, package), vec![id_of(a)]);
    assert_eq!(common::leftovers(node, package), Vec::<String>::new());
}

#[test]
fn a_corrupt_index_is_refused() {
    let w = World::new(Backend::Dir);
    let (node, a, b, _) = two_revisions(&w, "ci", Codec::Zstd);
    let (object, meta) = object_files(&w, &format!("{b}.tar.zst"));
    let (offset, _) = meta_value(&meta, "ftl-delta-index")
        .split_once('+')
        .map(|(o, l)| (o.parse::<u64>().unwrap(), l.to_owned()))
        .unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[offset as usize + 20] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    refused(
        &w,
        &node,
        "ci",
        &a,
        &b,
        "digest mismatch: expected delta index",
    );
}

#[test]
fn an_index_range_outside_the_object_is_refused() {
    let w = World::new(Backend::Dir);
    let (node, a, b, _) = two_revisions(&w, "wr", Codec::Gzip);
    let (object, meta) = object_files(&w, &format!("{b}.tgz"));
    let size = std::fs::metadata(&object).unwrap().len();
    let text = std::fs::read_to_string(&meta).unwrap();
    let old = meta_value(&meta, "ftl-delta-index");
    let text = text.replace(&old, &format!("{}+100", size - 10));
    std::fs::write(&meta, text).unwrap();
    refused(&w, &node, "wr", &a, &b, "delta index: the index");
}

both!(a_bad_piece_is_refused, |w: World| {
    let (node, a, b, _) = two_revisions(&w, "bp", Codec::Zstd);
    // The changed file is random: zstd stores it as it is, so its bytes are
    // in the object; change one of them.
    let key = format!("{b}.tar.zst");
    let object = match &w.server {
        None => object_files(&w, &key).0,
        Some(_) => common::in_process(&w).bucket_dir(&w.bucket).join(&key),
    };
    let mut bytes = std::fs::read(&object).unwrap();
    let blob = std::fs::read(w.path("src-bp/static/blob.bin")).unwrap();
    let needle = &blob[1000..1032];
    let at = bytes
        .windows(needle.len())
        .position(|win| win == needle)
        .expect("the changed bytes are in the object");
    bytes[at] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    refused(
        &w,
        &node,
        "bp",
        &a,
        &b,
        "digest mismatch: expected delta piece",
    );
});

both!(ftl_0_2_6_sees_one_object_per_revision, |w: World| {
    let src = w.path("src-lg");
    write(&src.join("v"), b"one", 0o644);
    let a = spool_delta(&w, &archive(&w, "lg", &src, Codec::Zstd, 1));
    write(&src.join("v"), b"two", 0o644);
    let b = spool_delta(&w, &archive(&w, "lg", &src, Codec::Gzip, 2));
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(common::legacy::revisions(&w, "lg"), want);
    assert_eq!(
        common::legacy::download_key(&w, "lg", &id_of(&a)),
        Some(format!("{a}.tar.zst"))
    );
    let list = ok(&w, w.tmp.path(), &["list", "--master", "lg"]);
    assert_eq!(
        list.lines().filter(|l| l.contains("lg.")).count(),
        2,
        "{list}"
    );
});
