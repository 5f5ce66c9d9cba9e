//! Upgrading a fleet from ftl 0.2.6 one box at a time: while both versions
//! share a bucket, each must follow what the other blesses, and nothing this
//! ftl writes may change what a 0.2.6 node sees. The 0.2.6 side is played by
//! `common::legacy`, which reads and writes the bucket as 0.2.6's code does.

#[macro_use]
mod common;

use std::time::{Duration, SystemTime};

use common::{Backend, World, current, id_of, legacy, ok, previous, run, stderr, stdout};

/// Ids have one-second resolution, and which pointer was written last is
/// judged by the store's times, which S3 gives in whole seconds.
fn pause() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Two revisions of `app`, spooled by this ftl, oldest first.
fn two_revisions(w: &World) -> (String, String) {
    let a = w.spool_files("app.tgz", &[("v", "1", 0o644)]);
    pause();
    let b = w.spool_files("app.tgz", &[("v", "2", 0o644)]);
    (a, b)
}

/// A revision of `app` spooled by ftl 0.2.6, with the file `v` = `content`.
fn spool_026(w: &World, content: &str) -> String {
    let file = common::package(w.tmp.path(), "app.tgz", &[("v", content, 0o644)]);
    legacy::spool(w, &file)
}

/// The revision `ftl list --master PKG` marks active, whatever separates the mark.
fn active_in_bucket(w: &World, package: &str) -> Option<String> {
    ok(w, w.tmp.path(), &["list", "--master", package])
        .lines()
        .find_map(|l| l.strip_suffix("(active)"))
        .map(|n| n.trim_end().to_owned())
}

/// The lines of a command's stderr that name both revisions.
fn lines_naming(out: &std::process::Output, a: &str, b: &str) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains(a) && l.contains(b))
        .map(str::to_owned)
        .collect()
}

/// Every pointer object of `package` holds a revision name and nothing else
/// (0.2.6 uses their bytes as they are: a newline would be part of the id).
fn assert_bare_pointers(w: &World, package: &str) {
    for suffix in ["current", "rev", "previous"] {
        let key = format!("{package}.{suffix}");
        let Some(bytes) = legacy::get(w, &key) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let id = text.strip_prefix(&format!("{package}.")).unwrap_or("");
        assert!(
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{key} holds {text:?}, not just a revision name"
        );
    }
}

// The helper itself: 0.2.6's listings, replayed on both stores, give what
// 0.2.6's code would make of them, sidecar keys and all.
both!(the_026_listings_are_replayed_as_026_does, |w: World| {
    let rev = "app.2014010100000AA";
    for (key, body) in [
        ("app.2014010100000AA.tgz", "payload"),
        // Sorts before `.tgz`: 0.2.6 would download this one.
        ("app.2014010100000AA.sig", "signature"),
        (
            "app.history.1",
            "a key with two more dots: a revision to 0.2.6",
        ),
        ("app.changed", "a key with one more dot: ignored"),
        ("app.current", rev),
        ("apple.2014010100000BB.tgz", "another package"),
    ] {
        legacy::put(&w, key, body.as_bytes(), "application/octet-stream");
    }
    assert_eq!(legacy::revisions(&w, "app"), vec![rev, "app.history"]);
    assert_eq!(
        legacy::download_key(&w, "app", "2014010100000AA").as_deref(),
        Some("app.2014010100000AA.sig")
    );
    assert_eq!(legacy::packages(&w), vec!["app", "apple"]);
    assert_eq!(legacy::blessed(&w, "app").as_deref(), Some(rev));
    assert_eq!(legacy::previous(&w, "app"), None);
    // max-keys counts keys and common prefixes alike, in one byte order, as
    // S3 and s3s-fs do (moto answers such a listing in full: not checked there).
    if !w.server.as_ref().is_some_and(|s| s.is_external()) {
        assert_eq!(
            legacy::list(&w, "app.", ".", 2),
            legacy::Listing {
                keys: vec!["app.changed".into()],
                prefixes: vec![format!("{rev}.")],
            }
        );
        assert_eq!(
            legacy::list(&w, "app.", ".", 3).keys,
            vec!["app.changed", "app.current"]
        );
    }
    // 0.2.6's purge deletes the first key under `<rev>.`.
    assert_eq!(
        legacy::purge(&w, rev).as_deref(),
        Ok("app.2014010100000AA.sig")
    );
    // A read of a package without pointers leaves an empty `.current`.
    assert_eq!(legacy::current_revision(&w, "apple"), None);
    assert_eq!(legacy::get(&w, "apple.current"), Some(Vec::new()));
    assert_eq!(legacy::blessed(&w, "apple"), None);
    // A bless writes `.previous` from what it read, then `.current`.
    legacy::bless(&w, "app", "app.2014010200000BB");
    assert_eq!(
        legacy::previous(&w, "app").as_deref(),
        Some("app.2014010100000AA")
    );
    assert_eq!(
        legacy::blessed(&w, "app").as_deref(),
        Some("app.2014010200000BB")
    );
    assert_eq!(legacy::jump_back(&w, "app"), Ok(()));
    assert_eq!(legacy::blessed(&w, "app").as_deref(), Some(rev));
    // Ids: UTC date, seconds of the day, two MD5 symbols in 0.2.6's alphabet.
    let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let md5_empty = [
        0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42,
        0x7e,
    ];
    assert_eq!(
        legacy::revision_id(at(1_388_534_400), &md5_empty),
        "2014010100000q1"
    );
    let md5_ftl = [
        0x9a, 0xfc, 0xc0, 0x4a, 0x09, 0x41, 0xbe, 0xf1, 0x9d, 0x3c, 0xec, 0x85, 0x7b, 0x25, 0xf7,
        0x1f,
    ];
    assert_eq!(
        legacy::revision_id(at(1_709_251_199), &md5_ftl),
        "2024022986399bk"
    );
});

// Every feature that writes to the bucket leaves 0.2.6's view as it should be.

both!(spool_leaves_the_026_view_as_it_should_be, |w: World| {
    legacy::expect_view(
        &w,
        "app",
        || w.spool_files("app.tgz", &[("v", "1", 0o644)]),
        |v, a| legacy::add_revision(v, a, &format!("{a}.tgz")),
    );
    pause();
    // Not a tarball: in the bucket, `<package>.<id>.<ext>` all the same.
    let jar = w.path("app.jar");
    std::fs::write(&jar, b"PK\x03\x04 not really a jar").unwrap();
    legacy::expect_view(
        &w,
        "app",
        || w.spool(&jar),
        |v, b| legacy::add_revision(v, b, &format!("{b}.jar")),
    );
    legacy::assert_view_unchanged(&w, "app", || w.spool_files("web.tgz", &[("v", "1", 0o644)]));
    assert_eq!(legacy::packages(&w), vec!["app", "web"]);
});

both!(bless_leaves_the_026_view_as_it_should_be, |w: World| {
    let (a, b) = two_revisions(&w);
    let box_ = w.tmp.path();
    legacy::expect_view(
        &w,
        "app",
        || ok(&w, box_, &["jump", "--master", &a]),
        |v, _| v.blessed = Some(a.clone()),
    );
    legacy::expect_view(
        &w,
        "app",
        || ok(&w, box_, &["jump", "--master", &b]),
        |v, _| {
            v.blessed = Some(b.clone());
            v.previous = Some(a.clone());
        },
    );
    // ftl writes `.current` on every bless: what 0.2.6 reads first.
    assert_eq!(legacy::get(&w, "app.current"), Some(b.clone().into_bytes()));
    assert_bare_pointers(&w, "app");
    // Blessing the blessed revision again changes nothing 0.2.6 sees.
    legacy::assert_view_unchanged(&w, "app", || ok(&w, box_, &["jump", "--master", &b]));
    // A bless refused changes nothing either.
    legacy::assert_view_unchanged(&w, "app", || {
        let out = run(&w, box_, &["jump", "--master", "app.2014010100000AA"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    });
    assert_eq!(legacy::packages(&w), vec!["app"]);
});

// Signatures (`<package>.sig-<id>`, `<package>.bless`) are invisible to
// 0.2.6: a signed spool adds the revision alone, a signed bless moves the
// pointers alone, and `ftl sign` changes nothing 0.2.6 sees.
both!(signing_leaves_the_026_view_as_it_should_be, |w: World| {
    let key = w.path("deploy_key");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen (openssh-client) is needed by this test");
    assert!(made.status.success(), "{}", stderr(&made));
    let box_ = w.tmp.path();
    let signed = |args: &[&str]| {
        let out = common::output_within(
            w.ftl(box_).env("FTL_SIGNING_KEY", &key).args(args),
            common::RUN_LIMIT,
        );
        assert!(out.status.success(), "ftl {args:?}: {}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    let file = common::package(w.tmp.path(), "app.tgz", &[("v", "1", 0o644)]);
    let a = legacy::expect_view(
        &w,
        "app",
        || signed(&["spool", file.to_str().unwrap()]),
        |v, a| legacy::add_revision(v, a, &format!("{a}.tgz")),
    );
    pause();
    let b = w.spool_files("app.tgz", &[("v", "2", 0o644)]);
    legacy::assert_view_unchanged(&w, "app", || {
        signed(&["sign", &b]);
    });
    legacy::expect_view(
        &w,
        "app",
        || signed(&["jump", "--master", &a]),
        |v, _| v.blessed = Some(a.clone()),
    );
    legacy::expect_view(
        &w,
        "app",
        || signed(&["jump", "--master", &b]),
        |v, _| {
            v.blessed = Some(b.clone());
            v.previous = Some(a.clone());
        },
    );
    // A signed jump-back: a new signed bless and a history entry.
    legacy::expect_view(
        &w,
        "app",
        || signed(&["jump-back", "--master", "app"]),
        |v, _| {
            v.blessed = Some(a.clone());
            v.previous = Some(b.clone());
        },
    );
    assert_bare_pointers(&w, "app");
    assert!(legacy::get(&w, "app.bless").is_some());
    assert!(legacy::get(&w, &format!("app.sig-{}", id_of(&b))).is_some());
    assert_eq!(legacy::packages(&w), vec!["app"]);
    // Every key ftl added (signatures, the signed bless, the history) is a
    // plain key to 0.2.6's listing: its revisions are the two spooled.
    let listing = legacy::list(&w, "app.", ".", legacy::MAX_KEYS);
    assert_eq!(
        listing.prefixes,
        vec![format!("{a}."), format!("{b}.")],
        "0.2.6's revisions: {listing:?}"
    );
    for key in [
        "app.bless".to_owned(),
        format!("app.sig-{}", id_of(&a)),
        format!("app.sig-{}", id_of(&b)),
    ] {
        assert!(listing.keys.contains(&key), "{key} in {listing:?}");
    }
    let history = listing
        .keys
        .iter()
        .filter(|k| k.starts_with("app.!bless-"))
        .count();
    assert_eq!(history, 3, "{listing:?}");
    // ftl's own listing ignores them too.
    let list = ok(&w, box_, &["list", "--master", "app"]);
    let names: Vec<&str> = list
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default())
        .collect();
    assert_eq!(names, vec![a.as_str(), b.as_str()], "{list}");
});

// Issue 17, item 10: the history objects that blesses write beside the
// pointers are plain keys to 0.2.6: no revision, no prefix of one.
both!(history_leaves_the_026_view_as_it_should_be, |w: World| {
    let (a, b) = two_revisions(&w);
    let box_ = w.tmp.path();
    ok(&w, box_, &["jump", "--master", &a]);
    let before = legacy::view(&w, "app");
    ok(&w, box_, &["jump", "--master", &b]);
    ok(&w, box_, &["jump-back", "--master", "app"]);
    let listing = legacy::list(&w, "app.", ".", legacy::MAX_KEYS);
    let history: Vec<&String> = listing
        .keys
        .iter()
        .filter(|k| k.starts_with("app.!bless-"))
        .collect();
    assert_eq!(history.len(), 3, "{listing:?}");
    assert_eq!(
        listing.prefixes,
        vec![format!("{a}."), format!("{b}.")],
        "0.2.6's revisions"
    );
    let mut expected = before;
    expected.blessed = Some(a.clone());
    expected.previous = Some(b.clone());
    assert_eq!(legacy::view(&w, "app"), expected);
    assert_eq!(legacy::packages(&w), vec!["app"]);
    // And this version's own listing.
    assert_eq!(
        ok(&w, box_, &["list", "--master", "app"]),
        format!("{a}\t(active)\n{b}\n")
    );
});

both!(jump_back_leaves_the_026_view_as_it_should_be, |w: World| {
    let (a, b) = two_revisions(&w);
    let box_ = w.tmp.path();
    ok(&w, box_, &["jump", "--master", &a]);
    ok(&w, box_, &["jump", "--master", &b]);
    legacy::expect_view(
        &w,
        "app",
        || ok(&w, box_, &["jump-back", "--master", "app"]),
        |v, _| {
            v.blessed = Some(a.clone());
            v.previous = Some(b.clone());
        },
    );
    legacy::expect_view(
        &w,
        "app",
        || ok(&w, box_, &["jump-back", "--master", "app"]),
        |v, _| {
            v.blessed = Some(b.clone());
            v.previous = Some(a.clone());
        },
    );
    assert_bare_pointers(&w, "app");
    assert_eq!(legacy::packages(&w), vec!["app"]);
});

both!(purge_leaves_the_026_view_as_it_should_be, |w: World| {
    let (a, b) = two_revisions(&w);
    pause();
    let c = w.spool_files("app.tgz", &[("v", "3", 0o644)]);
    let box_ = w.tmp.path();
    ok(&w, box_, &["jump", "--master", &b]);
    for gone in [&c, &a] {
        legacy::expect_view(
            &w,
            "app",
            || ok(&w, box_, &["purge", "--master", gone]),
            |v, _| legacy::remove_revision(v, gone),
        );
    }
    // The blessed revision is refused, and nothing changes.
    legacy::assert_view_unchanged(&w, "app", || {
        let out = run(&w, box_, &["purge", "--master", &b]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    });
    assert_eq!(legacy::revisions(&w, "app"), vec![b.clone()]);
    assert_eq!(legacy::packages(&w), vec!["app"]);
});

// Blessed by one version, followed by the other.

both!(follows_a_bucket_blessed_by_026, |w: World| {
    let n = w.node("n", &["app"]);
    let a = spool_026(&w, "1");
    pause();
    let b = spool_026(&w, "2");
    legacy::bless(&w, "app", &a);
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "app"), Some(id_of(&a)));
    assert_eq!(
        std::fs::read_to_string(n.join("app/current/v")).unwrap(),
        "1"
    );
    assert_eq!(active_in_bucket(&w, "app"), Some(a.clone()));

    legacy::bless(&w, "app", &b);
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "app"), Some(id_of(&b)));
    assert_eq!(previous(&n, "app"), Some(id_of(&a)));
    assert_eq!(
        std::fs::read_to_string(n.join("app/current/v")).unwrap(),
        "2"
    );
    let out = run(&w, &n, &["status", "app"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
});

both!(a_03_bless_after_a_026_bless_is_seen_by_026, |w: World| {
    let (a, b) = two_revisions(&w);
    legacy::bless(&w, "app", &a);
    pause();
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    assert_eq!(legacy::blessed(&w, "app"), Some(b.clone()));
    assert_eq!(legacy::previous(&w, "app"), Some(a.clone()));
    assert_bare_pointers(&w, "app");
    // Both pointers agree now: nothing to warn about.
    let out = run(&w, w.tmp.path(), &["list", "--master", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    assert_eq!(active_in_bucket(&w, "app"), Some(b.clone()));
});

both!(
    a_026_bless_after_a_03_one_is_reported_by_status_at_once_and_followed_at_the_next_full_check,
    |w: World| {
        let n = w.node("n", &["app"]);
        let (a, b) = two_revisions(&w);
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);
        ok(&w, &n, &["sync"]);
        assert_eq!(current(&n, "app"), Some(id_of(&a)));
        pause();
        // 0.2.6 does not touch the change marker.
        legacy::bless(&w, "app", &b);
        let out = run(&w, &n, &["status", "app"]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "status must report the node out of step at once: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains(&b), "{}", stdout(&out));
        // The next full check follows it.
        ok(&w, &n, &["sync", "--full-every", "0"]);
        assert_eq!(current(&n, "app"), Some(id_of(&b)));
        assert_eq!(previous(&n, "app"), Some(id_of(&a)));
        let out = run(&w, &n, &["status", "app"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(active_in_bucket(&w, "app"), Some(b.clone()));
    }
);

both!(jump_back_master_by_03_is_seen_by_026, |w: World| {
    let n = w.node("n", &["app"]);
    let a = spool_026(&w, "1");
    pause();
    let b = spool_026(&w, "2");
    legacy::bless(&w, "app", &a);
    legacy::bless(&w, "app", &b);
    ok(&w, &n, &["sync"]);
    pause();
    ok(&w, w.tmp.path(), &["jump-back", "--master", "app"]);
    assert_eq!(legacy::blessed(&w, "app"), Some(a.clone()));
    assert_eq!(legacy::previous(&w, "app"), Some(b.clone()));
    assert_bare_pointers(&w, "app");
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "app"), Some(id_of(&a)));
    assert_eq!(previous(&n, "app"), Some(id_of(&b)));
});

both!(a_026_jump_back_is_followed, |w: World| {
    let n = w.node("n", &["app"]);
    let (a, b) = two_revisions(&w);
    let box_ = w.tmp.path();
    ok(&w, box_, &["jump", "--master", &a]);
    ok(&w, box_, &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    pause();
    // 0.2.6 jumps back with `.previous` and `.current` alone.
    assert_eq!(legacy::jump_back(&w, "app"), Ok(()));
    assert_eq!(legacy::blessed(&w, "app"), Some(a.clone()));
    assert_eq!(active_in_bucket(&w, "app"), Some(a.clone()));
    ok(&w, &n, &["sync", "--full-every", "0"]);
    assert_eq!(current(&n, "app"), Some(id_of(&a)));
    assert_eq!(previous(&n, "app"), Some(id_of(&b)));
});

// `.current` and `.rev` disagreeing: the one written last wins.

both!(a_newer_rev_wins_over_an_older_current, |w: World| {
    let n = w.node("n", &["app"]);
    let (a, b) = two_revisions(&w);
    legacy::bless(&w, "app", &a);
    pause();
    // As a 0.3 node from before `.current` was written blesses.
    legacy::put(&w, "app.rev", format!("{b}\n").as_bytes(), "text/plain");
    assert_eq!(active_in_bucket(&w, "app"), Some(b.clone()));
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "app"), Some(id_of(&b)));
});

both!(a_newer_current_wins_over_an_older_rev, |w: World| {
    let n = w.node("n", &["app"]);
    let (a, b) = two_revisions(&w);
    legacy::put(&w, "app.rev", format!("{a}\n").as_bytes(), "text/plain");
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "app"), Some(id_of(&a)));
    pause();
    legacy::bless(&w, "app", &b);
    assert_eq!(active_in_bucket(&w, "app"), Some(b.clone()));
    // The spools wrote a change marker, which a 0.2.6 bless leaves as it is:
    // the node follows at its next full check.
    ok(&w, &n, &["sync", "--full-every", "0"]);
    assert_eq!(current(&n, "app"), Some(id_of(&b)));
    assert_eq!(previous(&n, "app"), Some(id_of(&a)));
});

both!(on_equal_times_current_wins, |w: World| {
    let (a, b) = two_revisions(&w);
    legacy::put(&w, "app.rev", format!("{a}\n").as_bytes(), "text/plain");
    legacy::put(&w, "app.current", b.as_bytes(), "text/plain");
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs - 30);
    // An external server's times cannot be set: .ci/run skips this test there.
    assert!(
        legacy::set_modified(&w, "app.rev", at) && legacy::set_modified(&w, "app.current", at),
        "needs the in-process server or a directory bucket"
    );
    assert_eq!(active_in_bucket(&w, "app"), Some(b.clone()));
});

both!(a_disagreement_is_named_in_one_warning, |w: World| {
    let n = w.node("n", &["app"]);
    let (a, b) = two_revisions(&w);
    legacy::bless(&w, "app", &a);
    pause();
    legacy::put(&w, "app.rev", format!("{b}\n").as_bytes(), "text/plain");
    let out = run(&w, w.tmp.path(), &["list", "--master", "app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        lines_naming(&out, &a, &b).len(),
        1,
        "one warning naming both pointers: {}",
        stderr(&out)
    );
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        lines_naming(&out, &a, &b).len(),
        1,
        "one warning naming both pointers: {}",
        stderr(&out)
    );
});

// Pointers left by a 0.2.6 read.

both!(
    an_empty_current_left_by_a_026_read_is_nothing_blessed,
    |w: World| {
        let n = w.node("n", &["app"]);
        let a = w.spool_files("app.tgz", &[("v", "1", 0o644)]);
        // A 0.2.6 sync (or list --master app) of a package with no pointer.
        assert_eq!(legacy::current_revision(&w, "app"), None);
        assert_eq!(legacy::get(&w, "app.current"), Some(Vec::new()));
        let out = run(&w, w.tmp.path(), &["list", "--master", "app"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("{a}\n"));
        assert!(
            !stderr(&out).contains("WARN"),
            "an empty .current is no pointer, not a bad one: {}",
            stderr(&out)
        );
        ok(&w, &n, &["sync"]);
        assert_eq!(current(&n, "app"), None);
        ok(&w, w.tmp.path(), &["jump", "--master", &a]);
        assert_eq!(legacy::blessed(&w, "app"), Some(a.clone()));
        ok(&w, &n, &["sync"]);
        assert_eq!(current(&n, "app"), Some(id_of(&a)));
    }
);

// Scripts written for 0.2.6.

both!(list_marks_the_active_revision_with_a_tab, |w: World| {
    let n = w.node("n", &["app"]);
    let (a, b) = two_revisions(&w);
    // Both blessed in turn, so that the node keeps both.
    ok(&w, w.tmp.path(), &["jump", "--master", &a]);
    ok(&w, w.tmp.path(), &["jump", "--master", &b]);
    ok(&w, &n, &["sync"]);
    let want = format!("{a}\n{b}\t(active)\n");
    assert_eq!(ok(&w, &n, &["list", "app"]), want);
    assert_eq!(ok(&w, &n, &["list", "--master", "app"]), want);
});

both!(master_may_stand_before_the_command, |w: World| {
    let (a, b) = two_revisions(&w);
    let box_ = w.tmp.path();
    ok(&w, box_, &["--master", "jump", &a]);
    assert_eq!(active_in_bucket(&w, "app"), Some(a.clone()));
    assert_eq!(
        ok(&w, box_, &["--master", "list", "app"]),
        ok(&w, box_, &["list", "--master", "app"])
    );
    assert_eq!(
        ok(&w, box_, &["--master", "list"]),
        ok(&w, box_, &["list", "--master"])
    );
    ok(&w, box_, &["--master", "jump", &b]);
    ok(&w, box_, &["--master", "jump-back", "app"]);
    assert_eq!(active_in_bucket(&w, "app"), Some(a.clone()));
});

both!(a_package_with_ftl_hooks_runs_only_those, |w: World| {
    let n = w.node("n", &["app"]);
    let log = w.path("hooks.log");
    let hook = format!("#!/bin/sh\necho \"ftl/$FTL_STEP\" >> {}\n", log.display());
    let stray = format!(
        "#!/bin/sh\necho \"stray $0\" >> {}\nexit 1\n",
        log.display()
    );
    let rev = w.spool_files(
        "app.tgz",
        &[
            ("ftl/post-sync", &hook, 0o755),
            ("ftl/post-jump", &hook, 0o755),
            // The application's own scripts, named like hooks.
            ("validate.sh", &stray, 0o755),
            ("post-sync.sh", &stray, 0o755),
            ("pre-jump.sh", &stray, 0o755),
        ],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    ok(&w, &n, &["sync"]);
    assert_eq!(current(&n, "app"), Some(id_of(&rev)));
    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(ran, "ftl/post-sync\nftl/post-jump\n");
});

/// A hook that starts a daemon with `&` (a common way to restart an
/// application): the daemon keeps running and writing after ftl exited.
#[test]
fn a_hooks_background_process_outlives_ftl() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["app"]);
    let beat = w.path("beat");
    // The daemon writes to its inherited stdout every 50 ms, and appends a
    // line to `beat` each time (appends: a reader never sees it half-written).
    let hook = format!(
        "#!/bin/sh\n(i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo tick; echo $i >> {}; sleep 0.05; done) &\necho started\n",
        beat.display()
    );
    let rev = w.spool_files("app.tgz", &[("ftl/post-jump", &hook, 0o755)]);
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = run(&w, &n, &["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("post-jump hook of app.")
            && stderr(&out).contains("holding its output"),
        "the hand-over is said once, naming the hook: {}",
        stderr(&out)
    );
    // ftl has exited; the daemon is still alive and writing.
    let count = || {
        std::fs::read_to_string(&beat)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let before = count();
    std::thread::sleep(Duration::from_millis(1000));
    let after = count();
    assert!(
        after > before + 5,
        "the daemon stopped: {before} then {after}"
    );
}

/// FTL_OWNER: the revision belongs to that user before its first hook runs
/// (as root); refused in one line otherwise.
#[test]
fn owner_is_applied_before_the_hooks() {
    let w = World::new(Backend::Dir);
    let n = w.node("n", &["app"]);
    let seen = w.path("owner-seen");
    let hook = format!("#!/bin/sh\nstat -c %U:%G index.html > {}\n", seen.display());
    let rev = w.spool_files(
        "app.tgz",
        &[("index.html", "hi", 0o644), ("ftl/post-sync", &hook, 0o755)],
    );
    ok(&w, w.tmp.path(), &["jump", "--master", &rev]);
    let out = run(&w, &n, &["sync", "--owner", "nobody:nogroup"]);
    // SAFETY: geteuid cannot fail.
    // Not root: the refusal is what is checked.
    if !common::is_root() {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("needs ftl to run as root"),
            "{}",
            stderr(&out)
        );
        return;
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "nobody:nogroup\n");
    let meta = |p: &str| std::fs::symlink_metadata(n.join("app/current").join(p)).unwrap();
    use std::os::unix::fs::MetadataExt;
    for p in ["index.html", "ftl", "ftl/post-sync", "."] {
        assert_eq!((meta(p).uid(), meta(p).gid()), (65534, 65534), "{p}");
    }
    // An unknown user is a usage error, before anything is downloaded.
    let out = run(&w, &n, &["sync", "--owner", "no-such-user-here"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no user"), "{}", stderr(&out));
}

// Issue 19: node reports live under `!report!`, keys without a `.`: neither
// a revision nor a package to 0.2.6, nor to this version's `list --master`.
both!(
    reports_leave_the_026_view_and_list_master_as_they_are,
    |w: World| {
        let (a, _b) = two_revisions(&w);
        let box_ = w.tmp.path();
        ok(&w, box_, &["jump", "--master", &a]);
        let n = w.node("n", &["app"]);
        legacy::assert_view_unchanged(&w, "app", || {
            let out = w
                .ftl(&n)
                .env("FTL_REPORT", "1")
                .env("FTL_NODE_ID", "web-01.example.com")
                .arg("sync")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        });
        let reports = legacy::list(&w, "!report!", "", legacy::MAX_KEYS).keys;
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(!reports[0].contains('.'), "{reports:?}");
        assert_eq!(legacy::packages(&w), vec!["app"]);
        assert_eq!(ok(&w, box_, &["list", "--master"]), "app\n");
        assert_eq!(
            ok(&w, box_, &["list", "--master", "app"]),
            format!("{a}\t(active)\n{_b}\n")
        );
        let fleet = ok(&w, box_, &["fleet"]);
        assert!(fleet.starts_with("web-01.example.com "), "{fleet}");
    }
);
