//! Concurrency: twenty processes changing one root at once, and operators
//! blessing at the same time in one bucket.
//!
//! Rounds of the blessing race: FTL_TEST_RACE_ROUNDS (default 6).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use common::{
    Backend, World, check_node, env_count, figure, id_of, leftovers, link_target, ok, stderr,
};

fn spawn(w: &World, root: &Path, args: &[&str], lock_timeout: &str) -> Child {
    w.ftl(root)
        .args(args)
        .env("FTL_LOCK_TIMEOUT", lock_timeout)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(children: Vec<(Vec<String>, Child)>) -> Vec<(Vec<String>, Output)> {
    children
        .into_iter()
        .map(|(args, c)| (args, c.wait_with_output().unwrap()))
        .collect()
}

/// Spools `n` revisions of `app` and returns their names, oldest id first.
fn spool_many(w: &World, n: usize, seed: u64) -> (Vec<String>, BTreeMap<String, PathBuf>) {
    let mut expected = BTreeMap::new();
    for i in 0..n {
        let (tgz, src) =
            common::random_package(w.tmp.path(), "app.tgz", seed + i as u64, 4, 16 << 10);
        let rev = w.spool_new(&tgz);
        expected.insert(id_of(&rev), src);
    }
    let revs = expected.keys().map(|id| format!("app.{id}")).collect();
    (revs, expected)
}

#[test]
fn twenty_processes_on_one_root() {
    let w = World::new(Backend::Dir);
    let root = w.node("n", &["app"]);
    let (revs, expected) = spool_many(&w, 4, 10);
    // All four on the node; the bucket blesses the newest, with the one before it
    // as previous.
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[0]]);
    ok(&w, &root, &["sync"]);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[2]]);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[3]]);
    ok(&w, &root, &["sync"]);
    assert_eq!(std::fs::read_dir(root.join("app/revs")).unwrap().count(), 4);

    // Jumps only between the two newest, which `clean --keep 2` never removes: every
    // command is valid whatever ran before it, so each must succeed unless it
    // could not get the lock in time.
    let mut children = Vec::new();
    for i in 0..20 {
        let args: Vec<String> = match i % 4 {
            0 => vec!["sync".into()],
            1 => vec!["jump".into(), revs[2 + (i / 4) % 2].clone()],
            2 => vec!["jump-back".into(), "app".into()],
            _ => vec!["clean".into(), "--keep".into(), "2".into()],
        };
        let timeout = if i % 2 == 0 { "1" } else { "120" };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        children.push((args.clone(), spawn(&w, &root, &argv, timeout)));
    }
    let (mut succeeded, mut locked_out) = (0u64, 0u64);
    for (args, out) in finish(children) {
        if out.status.success() {
            succeeded += 1;
            continue;
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let line = common::error_line(&out);
        assert!(
            line.contains("lock") && line.contains("gave up"),
            "{args:?} failed for another reason than the lock: {err}"
        );
        locked_out += 1;
    }
    eprintln!("{succeeded} succeeded, {locked_out} gave up waiting for the lock");
    assert!(succeeded >= 10, "the patient ones all get through");
    check_node(&root, "app", &expected).unwrap();
    assert_eq!(leftovers(&root, "app"), Vec::<String>::new());
    for link in ["current", "previous"] {
        let id = link_target(&root, "app", link);
        assert!(
            id == Some(id_of(&revs[2])) || id == Some(id_of(&revs[3])),
            "{link} -> {id:?}"
        );
    }
    ok(&w, &root, &["sync"]);
    assert_eq!(link_target(&root, "app", "current"), Some(id_of(&revs[3])));
    assert_eq!(link_target(&root, "app", "previous"), Some(id_of(&revs[2])));
    figure("concurrent_commands", 20);
}

/// The bucket's pointer files, read as an operator with access to the store would.
fn pointer(w: &World, name: &str) -> Option<String> {
    let dir = match &w.server {
        None => PathBuf::from(w.bucket.strip_prefix("file://").unwrap()),
        Some(s) => s.bucket_dir(&w.bucket),
    };
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|t| t.trim().to_owned())
}

/// Operators blessing at once: each either succeeds or reports the conflict; the
/// history is a chain, with no update lost silently: the final pointer is one a
/// succeeding command wrote, and `previous` is what was blessed just before it.
fn blessing_race(w: World) {
    if w.server.is_some() {
        // The pointers are read from the in-process server's files.
        common::in_process(&w);
    }
    let (revs, _) = spool_many(&w, 9, 100);
    ok(&w, w.tmp.path(), &["jump", "--master", &revs[0]]);
    let rounds = env_count("FTL_TEST_RACE_ROUNDS", 6);
    let (mut wins, mut conflicts) = (0u64, 0u64);
    for round in 0..rounds {
        let before = pointer(&w, "app.rev").unwrap();
        let targets: Vec<&String> = revs.iter().filter(|r| **r != before).take(8).collect();
        let children: Vec<(Vec<String>, Child)> = targets
            .iter()
            .map(|t| {
                (
                    vec![t.to_string()],
                    spawn(&w, w.tmp.path(), &["jump", "--master", t], "10"),
                )
            })
            .collect();
        let mut won = Vec::new();
        let mut log = String::new();
        for (t, out) in finish(children) {
            log.push_str(&format!(
                "{} -> {:?}: {}\n",
                t[0],
                out.status.code(),
                stderr(&out)
            ));
            if out.status.success() {
                won.push(t[0].clone());
            } else {
                assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
                let line = common::error_line(&out);
                assert!(
                    line.contains("changed by someone else"),
                    "round {round}: not a conflict: {line}"
                );
                conflicts += 1;
            }
        }
        wins += won.len() as u64;
        let (rev, prev) = (pointer(&w, "app.rev").unwrap(), pointer(&w, "app.previous"));
        assert!(!won.is_empty(), "round {round}: nobody won");
        assert!(
            won.contains(&rev),
            "round {round}: {rev} is blessed, but its command failed (won: {won:?})"
        );
        // A chain: before → w1 → w2 → … → rev, so previous is `before` when one
        // won, else another winner.
        let prev = prev.unwrap_or_default();
        if won.len() == 1 {
            assert_eq!(
                prev, before,
                "round {round}: previous lost (blessed {rev}, won: {won:?})\n{log}"
            );
        } else {
            assert!(
                prev != rev && won.contains(&prev),
                "round {round}: previous {prev} is not the blessing before {rev} \
                 (started from {before}, won: {won:?}): an update was lost"
            );
        }
    }
    eprintln!("{rounds} rounds: {wins} blessings went through, {conflicts} conflicts reported");
    figure("blessing_races", rounds);
}

#[test]
fn blessing_race_s3() {
    blessing_race(World::new(Backend::S3));
}

#[test]
fn blessing_race_dir() {
    blessing_race(World::new(Backend::Dir));
}
