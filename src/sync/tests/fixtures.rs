//! Plans' inputs for unit tests: package `app`.

use crate::bucket::{Pointers, RemoteRevision, RemoteState};
use crate::names::{RevisionId, RevisionName};
use crate::root::LocalState;

pub fn id(s: &str) -> RevisionId {
    s.parse().unwrap()
}
pub fn ids(list: &[&str]) -> Vec<RevisionId> {
    list.iter().map(|s| id(s)).collect()
}
pub fn name(s: &str) -> RevisionName {
    RevisionName::new("app".parse().unwrap(), id(s))
}
pub fn remote(revs: &[&str], blessed: Option<&str>, previous: Option<&str>) -> RemoteState {
    RemoteState {
        revisions: revs
            .iter()
            .map(|r| RemoteRevision {
                name: name(r),
                key: format!("app.{r}.tgz"),
                ext: "tgz".into(),
                size: 1,
                etag: String::new(),
                signature: None,
                modified: None,
            })
            .collect(),
        pointers: Pointers {
            blessed: blessed.map(name),
            previous: previous.map(name),
        },
        bless: None,
    }
}
pub fn local(installed: &[&str], current: Option<&str>, previous: Option<&str>) -> LocalState {
    LocalState {
        installed: ids(installed),
        current: current.map(id),
        previous: previous.map(id),
        failed: Vec::new(),
    }
}
