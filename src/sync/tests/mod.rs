//! Unit tests of the plan and the status comparison.

mod fixtures;

use super::plan::plan;
use super::status::{State, compare};
use crate::bucket::RemoteState;
use crate::names::PackageName;
use crate::root::LocalState;
use fixtures::*;

struct Case {
    what: &'static str,
    local: LocalState,
    remote: RemoteState,
    download: &'static [&'static str],
    jump: Option<&'static str>,
    previous: Option<&'static str>,
    remove: &'static [&'static str],
    warns: bool,
}

#[test]
fn plans() {
    let cases = [
        Case {
            what: "fresh node: blessed and previous and newer ones, not the older ones",
            local: local(&[], None, None),
            remote: remote(&["a1", "a2", "a3", "a4"], Some("a3"), Some("a2")),
            download: &["a2", "a3", "a4"],
            jump: Some("a3"),
            previous: Some("a2"),
            remove: &[],
            warns: false,
        },
        Case {
            what: "node behind: downloads the new one and jumps",
            local: local(&["a1", "a2"], Some("a2"), Some("a1")),
            remote: remote(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
            download: &["a3"],
            jump: Some("a3"),
            previous: None,
            remove: &[],
            warns: false,
        },
        Case {
            what: "up to date: nothing",
            local: local(&["a2", "a3"], Some("a3"), Some("a2")),
            remote: remote(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
            download: &[],
            jump: None,
            previous: None,
            remove: &[],
            warns: false,
        },
        Case {
            what: "spooled but not blessed: downloaded ahead, no jump",
            local: local(&["a2", "a3"], Some("a3"), Some("a2")),
            remote: remote(&["a2", "a3", "a4"], Some("a3"), Some("a2")),
            download: &["a4"],
            jump: None,
            previous: None,
            remove: &[],
            warns: false,
        },
        Case {
            what: "node ahead (jumped by hand): back to blessed",
            local: local(&["a2", "a3", "a4"], Some("a4"), Some("a3")),
            remote: remote(&["a2", "a3", "a4"], Some("a3"), Some("a2")),
            download: &[],
            jump: Some("a3"),
            previous: Some("a2"),
            remove: &[],
            warns: false,
        },
        Case {
            what: "jump-back in the bucket: previous is newer than blessed",
            local: local(&["a2", "a3"], Some("a3"), Some("a2")),
            remote: remote(&["a1", "a2", "a3"], Some("a2"), Some("a3")),
            download: &[],
            jump: Some("a2"),
            previous: None,
            remove: &[],
            warns: false,
        },
        Case {
            what: "purged from the bucket: removed locally, never current or previous",
            local: local(&["a0", "a1", "a2", "a3"], Some("a3"), Some("a1")),
            remote: remote(&["a2", "a3"], Some("a3"), Some("a2")),
            download: &[],
            jump: None,
            previous: Some("a2"),
            remove: &["a0"],
            warns: false,
        },
        Case {
            what: "older than previous but still in the bucket: kept",
            local: local(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
            remote: remote(&["a1", "a2", "a3"], Some("a3"), Some("a2")),
            download: &[],
            jump: None,
            previous: None,
            remove: &[],
            warns: false,
        },
        Case {
            what: "the bucket knows nothing: untouched, with a warning",
            local: local(&["a1", "a2"], Some("a2"), Some("a1")),
            remote: remote(&[], None, None),
            download: &[],
            jump: None,
            previous: None,
            remove: &[],
            warns: true,
        },
        Case {
            what: "nothing blessed yet: the newest is fetched ahead",
            local: local(&[], None, None),
            remote: remote(&["a1", "a2"], None, None),
            download: &["a2"],
            jump: None,
            previous: None,
            remove: &[],
            warns: false,
        },
        Case {
            what: "blessed revision missing from the bucket: warn, no jump, no delete of it",
            local: local(&["a1", "a2"], Some("a2"), Some("a1")),
            remote: remote(&["a1"], Some("a2"), Some("a1")),
            download: &[],
            jump: None,
            previous: None,
            remove: &[],
            warns: true,
        },
        Case {
            what: "0.2.x-style node with no previous link",
            local: local(&["a1"], Some("a1"), None),
            remote: remote(&["a1", "a2"], Some("a2"), Some("a1")),
            download: &["a2"],
            jump: Some("a2"),
            previous: None,
            remove: &[],
            warns: false,
        },
    ];
    for c in cases {
        let p = plan(&"app".parse().unwrap(), &c.local, &c.remote);
        let down: Vec<String> = p.download.iter().map(|r| r.name.id.to_string()).collect();
        assert_eq!(down, c.download, "{}: download", c.what);
        assert_eq!(p.jump, c.jump.map(id), "{}: jump", c.what);
        assert_eq!(p.previous, c.previous.map(id), "{}: previous", c.what);
        assert_eq!(p.remove, ids(c.remove), "{}: remove", c.what);
        assert_eq!(
            !p.warnings.is_empty(),
            c.warns,
            "{}: warnings {:?}",
            c.what,
            p.warnings
        );
    }
}

#[test]
fn states() {
    let cases = [
        (
            "in step",
            local(&["a1", "a2"], Some("a2"), Some("a1")),
            remote(&["a1", "a2"], Some("a2"), Some("a1")),
            State::InStep,
        ),
        (
            "blessed not yet downloaded",
            local(&["a1"], Some("a1"), None),
            remote(&["a1", "a2"], Some("a2"), Some("a1")),
            State::OutOfStep,
        ),
        (
            "spooled, not blessed, not downloaded ahead",
            local(&["a1"], Some("a1"), None),
            remote(&["a1", "a2"], Some("a1"), None),
            State::OutOfStep,
        ),
        (
            "jumped by hand away from blessed",
            local(&["a1", "a2"], Some("a1"), Some("a2")),
            remote(&["a1", "a2"], Some("a2"), Some("a1")),
            State::OutOfStep,
        ),
        (
            "blessed revision missing from the bucket: sync cannot help, still not in step",
            local(&["a1"], Some("a1"), None),
            remote(&["a1"], Some("a2"), Some("a1")),
            State::OutOfStep,
        ),
        (
            "nothing blessed, newest downloaded",
            local(&["a2"], None, None),
            remote(&["a1", "a2"], None, None),
            State::InStep,
        ),
        (
            "the bucket knows nothing",
            local(&["a1"], Some("a1"), None),
            remote(&[], None, None),
            State::Unknown,
        ),
    ];
    for (what, l, r, state) in cases {
        let s = compare(&"app".parse::<PackageName>().unwrap(), &l, &r);
        assert_eq!(s.state, state, "{what}");
        assert_eq!(s.in_step, state == State::InStep, "{what}");
    }
}

#[test]
fn states_serialise_as_documented() {
    for s in [
        State::InStep,
        State::OutOfStep,
        State::Unknown,
        State::Error,
    ] {
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
}

#[test]
fn a_revision_that_failed_here_is_never_made_previous() {
    let mut l = local(&["a1", "a2", "a3"], Some("a2"), Some("a1"));
    l.failed = ids(&["a3"]);
    let r = remote(&["a1", "a2", "a3"], Some("a2"), Some("a3"));
    let p = plan(&"app".parse().unwrap(), &l, &r);
    assert!(p.is_empty(), "{p:?}");
    l.failed.clear();
    let p = plan(&"app".parse().unwrap(), &l, &r);
    assert_eq!(p.previous, Some(id("a3")));
}

#[test]
fn clean_keeps_what_sync_wants_and_the_newest() {
    use crate::node::{doomed, wanted_from};
    let l = local(&["a1", "a2", "a3", "a4", "a5"], Some("a4"), Some("a2"));
    // The bucket: previous a2, blessed a4; a3 between them, a5 spooled ahead.
    let r = remote(&["a1", "a2", "a3", "a4", "a5"], Some("a4"), Some("a2"));
    let floor = plan(&"app".parse().unwrap(), &l, &r).wanted_from;
    assert_eq!(floor, Some(id("a2")));
    assert_eq!(doomed(&l, floor.as_ref(), 0), ids(&["a1"]));
    assert_eq!(doomed(&l, floor.as_ref(), 5), ids(&[]));
    // Without the bucket's view: current and previous and the newest alone.
    assert_eq!(doomed(&l, None, 1), ids(&["a1", "a3"]));
    // Nothing blessed: the newest revision is what sync wants.
    assert_eq!(wanted_from(None, None, Some(&id("a5"))), Some(id("a5")));
    assert_eq!(
        wanted_from(Some(&id("a2")), Some(&id("a1")), Some(&id("a5"))),
        Some(id("a1"))
    );
}
