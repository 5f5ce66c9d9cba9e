//! ftl 0.2.6 (rhettg/ftl, Go) on the bucket side: its reads and writes, done
//! the way its code does them, so that a test can ask "what would a 0.2.6 node
//! make of this bucket?" and act as a 0.2.6 deploy box.
//!
//! What 0.2.6 does (facts from its `ftl/remote.go` and `ftl/util.go`):
//! - Its sync lists `<package>.` with the delimiter `.` (ListObjects v1, one
//!   page of at most 1,000 entries, never continued) and takes every common
//!   prefix, minus the final `.`, as a revision ([`revisions`]).
//! - It downloads, for a revision, the first key in listing order of a
//!   listing with the prefix `<package>.<id>` (no trailing `.`, no delimiter,
//!   at most one key) ([`download_key`]).
//! - It takes as blessed the bytes of `<package>.current` as they are; when
//!   that object is missing or empty, those of `<package>.rev` ([`blessed`]).
//!   When both are missing or empty it writes an empty `<package>.current` and
//!   deletes `<package>.rev` ([`current_revision`]).
//! - Its bless writes `<package>.previous` (what it read as blessed) and then
//!   `<package>.current`, bare names, no newline ([`bless`]); its jump-back
//!   swaps the raw bytes of `.previous` and `.current`, without looking at
//!   `.rev` ([`jump_back`]).
//! - A revision name is parsed by splitting on `.` and keeping the first two
//!   parts ([`RevisionInfo`]).
//!
//! How the requests are made: an S3 world goes through the aws-sdk-s3 client to
//! the test server, whichever it is (the in-process s3s-fs, or moto named by
//! `FTL_TEST_S3_ENDPOINT`), so that the listings are answered by the server's
//! own rules for prefixes, delimiters and order rather than by a second
//! implementation of them here, and the same code serves both servers (the
//! in-process server's files, `Server::bucket_dir`, do not exist for moto).
//! The requests are those 0.2.6 sends (ListObjects v1 with the same prefix,
//! delimiter and max-keys; GET; PUT with its content types and private ACL;
//! DELETE); only the signature differs (SigV4 here, SigV2 in 0.2.6's goamz),
//! which changes nothing in the answers.
//!
//! A directory world (`file:///dir`) has no server: the directory store keeps
//! each key as a file of that name (its own files start with `.`), so the same
//! listings are computed here from the file names with S3's rules (byte
//! order, common prefixes, max-keys counting keys and prefixes alike).
//!
//! 0.2.6 keeps pointer bytes as they are (Go `string(data)`); they are given
//! back here as `String` (lossily, for non-UTF-8 bytes, which ftl never writes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ObjectCannedAcl;
use md5::{Digest, Md5};

use super::{ACCESS_KEY, SECRET_KEY, World};

/// 0.2.6's page size for every listing (`bucket.List(…, 1000)`).
pub const MAX_KEYS: i32 = 1000;

/// Where a world's objects are.
enum Store {
    S3 {
        endpoint: String,
        bucket: String,
        /// The in-process server's directory of the bucket, when there is one.
        files: Option<PathBuf>,
    },
    Dir(PathBuf),
}

fn store(w: &World) -> Store {
    match &w.server {
        Some(s) => Store::S3 {
            endpoint: s.endpoint.clone(),
            bucket: w.bucket.clone(),
            files: (!s.is_external()).then(|| s.bucket_dir(&w.bucket)),
        },
        None => Store::Dir(PathBuf::from(
            w.bucket
                .strip_prefix("file://")
                .expect("a directory world's bucket is file://"),
        )),
    }
}

/// Runs one S3 exchange on a runtime of its own (the tests are synchronous).
fn s3<T>(endpoint: &str, f: impl AsyncFnOnce(aws_sdk_s3::Client) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "ftl-tests",
            ))
            // 0.2.6 sends no checksums, and the test servers want none.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        f(aws_sdk_s3::Client::from_conf(conf)).await
    })
}

/// One answer of ListObjects: keys and common prefixes, each in listing order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub keys: Vec<String>,
    pub prefixes: Vec<String>,
}

/// One ListObjects (v1) request, as goamz's `Bucket.List(prefix, delimiter, "", max)`
/// sends it: one page, not continued. An empty `delimiter` is no delimiter.
pub fn list(w: &World, prefix: &str, delimiter: &str, max_keys: i32) -> Listing {
    match store(w) {
        Store::S3 {
            endpoint, bucket, ..
        } => s3(&endpoint, async |c| {
            let mut req = c
                .list_objects()
                .bucket(&bucket)
                .prefix(prefix)
                .max_keys(max_keys);
            if !delimiter.is_empty() {
                req = req.delimiter(delimiter);
            }
            let out = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("list {prefix:?} {delimiter:?}: {e:?}"));
            Listing {
                keys: out
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned))
                    .collect(),
                prefixes: out
                    .common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_owned))
                    .collect(),
            }
        }),
        Store::Dir(dir) => list_names(&dir_keys(&dir), prefix, delimiter, max_keys),
    }
}

/// The keys of a directory store: its files, except its own dot-files.
fn dir_keys(dir: &Path) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    keys.sort();
    keys
}

/// S3's listing rules applied to a set of keys: keys under `prefix`; those with
/// `delimiter` after the prefix rolled up into one common prefix each; keys and
/// prefixes together in byte order, the first `max_keys` of them.
pub fn list_names(keys: &[String], prefix: &str, delimiter: &str, max_keys: i32) -> Listing {
    let mut entries: BTreeMap<String, bool> = BTreeMap::new();
    for key in keys.iter().filter(|k| k.starts_with(prefix)) {
        let rest = &key[prefix.len()..];
        match rest.find(delimiter).filter(|_| !delimiter.is_empty()) {
            Some(i) => {
                entries.insert(format!("{prefix}{}", &rest[..i + delimiter.len()]), true);
            }
            None => {
                entries.insert(key.clone(), false);
            }
        }
    }
    let mut out = Listing::default();
    for (name, is_prefix) in entries.into_iter().take(max_keys.max(0) as usize) {
        if is_prefix {
            out.prefixes.push(name);
        } else {
            out.keys.push(name);
        }
    }
    out
}

/// An object's bytes; `None` when the key does not exist.
pub fn get(w: &World, key: &str) -> Option<Vec<u8>> {
    match store(w) {
        Store::S3 {
            endpoint, bucket, ..
        } => s3(&endpoint, async |c| {
            match c.get_object().bucket(&bucket).key(key).send().await {
                Ok(out) => Some(
                    out.body
                        .collect()
                        .await
                        .unwrap_or_else(|e| panic!("get {key}: body: {e}"))
                        .into_bytes()
                        .to_vec(),
                ),
                Err(aws_sdk_s3::error::SdkError::ServiceError(e))
                    if e.raw().status().as_u16() == 404 =>
                {
                    None
                }
                Err(e) => panic!("get {key}: {e:?}"),
            }
        }),
        Store::Dir(dir) => match std::fs::read(dir.join(key)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("read {key}: {e}"),
        },
    }
}

static TMP: AtomicU64 = AtomicU64::new(0);

/// A whole-object PUT, as goamz's `Bucket.Put`/`PutReader` with `s3.Private`
/// send it: no user metadata, so nothing of ftl 0.3's (its SHA-256) survives
/// on the key.
pub fn put(w: &World, key: &str, body: &[u8], content_type: &str) {
    match store(w) {
        Store::S3 {
            endpoint, bucket, ..
        } => s3(&endpoint, async |c| {
            c.put_object()
                .bucket(&bucket)
                .key(key)
                .content_type(content_type)
                .acl(ObjectCannedAcl::Private)
                .body(ByteStream::from(body.to_vec()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
        }),
        Store::Dir(dir) => {
            let tmp = dir.join(format!(
                ".legacy-put-{}-{}",
                std::process::id(),
                TMP.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&tmp, body).unwrap_or_else(|e| panic!("write {key}: {e}"));
            std::fs::rename(&tmp, dir.join(key)).unwrap_or_else(|e| panic!("rename {key}: {e}"));
            // A new object replaces the old one's metadata too.
            let _ = std::fs::remove_file(dir.join(format!(".meta.{key}")));
        }
    }
}

/// A DELETE; a missing key is no error (as on S3).
pub fn delete(w: &World, key: &str) {
    match store(w) {
        Store::S3 {
            endpoint, bucket, ..
        } => s3(&endpoint, async |c| {
            c.delete_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
        }),
        Store::Dir(dir) => {
            for name in [key.to_owned(), format!(".meta.{key}")] {
                match std::fs::remove_file(dir.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("delete {name}: {e}"),
                }
            }
        }
    }
}

/// Sets when an object was last written (its file's mtime: what the in-process
/// server and the directory store report). `false` where that cannot be done
/// (an external server): the caller skips what needs it.
pub fn set_modified(w: &World, key: &str, at: SystemTime) -> bool {
    let path = match store(w) {
        Store::S3 {
            files: Some(dir), ..
        }
        | Store::Dir(dir) => dir.join(key),
        Store::S3 { files: None, .. } => return false,
    };
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(at))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
    true
}

/// A revision as 0.2.6 parses a name (`NewRevisionInfo`): split on `.`, the
/// first part is the package, the second the revision; further parts are
/// dropped; fewer than two parts is no revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionInfo {
    pub package: String,
    pub revision: String,
}

impl RevisionInfo {
    pub fn parse(name: &str) -> Option<RevisionInfo> {
        let mut parts = name.split('.');
        let package = parts.next()?.to_owned();
        let revision = parts.next()?.to_owned();
        Some(RevisionInfo { package, revision })
    }

    /// `Name()`: package and revision joined again by a `.`.
    pub fn name(&self) -> String {
        format!("{}.{}", self.package, self.revision)
    }
}

/// `revisionFromPath`: the object's bytes as they are; "" when it is missing
/// (0.2.6 cannot tell a missing pointer from an empty one).
fn pointer(w: &World, key: &str) -> String {
    get(w, key)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// What 0.2.6 takes as the blessed revision name: `<package>.current`'s bytes,
/// or when that is missing or empty `<package>.rev`'s, as they are (no trimming);
/// `None` when both are missing or empty. Read only: see [`current_revision`]
/// for the write 0.2.6 does alongside.
pub fn blessed(w: &World, package: &str) -> Option<String> {
    let current = pointer(w, &format!("{package}.current"));
    let name = if current.is_empty() {
        pointer(w, &format!("{package}.rev"))
    } else {
        current
    };
    (!name.is_empty()).then_some(name)
}

/// `<package>.previous`'s bytes as they are; `None` when missing or empty.
pub fn previous(w: &World, package: &str) -> Option<String> {
    Some(pointer(w, &format!("{package}.previous"))).filter(|p| !p.is_empty())
}

/// 0.2.6's `GetCurrentRevision`, run by its sync, `list --master PKG`,
/// `jump --master` and `purge --master`: [`blessed`], parsed; and when both
/// pointers are missing or empty, an empty `<package>.current` is written and
/// `<package>.rev` deleted (0.2.6's attempt at moving `.rev` to `.current`,
/// whose condition is inverted).
pub fn current_revision(w: &World, package: &str) -> Option<RevisionInfo> {
    let name = blessed(w, package);
    if name.is_none() {
        put(w, &format!("{package}.current"), b"", "text/plain");
        delete(w, &format!("{package}.rev"));
    }
    RevisionInfo::parse(&name?)
}

/// `ftl jump --master REV` of 0.2.6: `.previous` := the blessed revision as
/// read and re-rendered (`Name()`: byte for byte for a one-dot name), when
/// there is one; then `.current` := the new name. Bare names, no newline,
/// unconditional writes, no check that the revision exists.
pub fn bless(w: &World, package: &str, rev: &str) {
    let new = RevisionInfo::parse(rev).expect("0.2.6 refuses a name without a '.'");
    assert_eq!(
        new.package, package,
        "0.2.6 takes the package from the name"
    );
    if let Some(cur) = current_revision(w, package) {
        put(
            w,
            &format!("{package}.previous"),
            cur.name().as_bytes(),
            "text/plain",
        );
    }
    put(
        w,
        &format!("{package}.current"),
        new.name().as_bytes(),
        "text/plain",
    );
}

/// `ftl jump-back --master PKG` of 0.2.6: reads `.previous` and `.current`
/// (never `.rev`) as they are, then writes `.previous` := the old `.current`
/// and `.current` := the old `.previous`. Its errors, as it words them.
pub fn jump_back(w: &World, package: &str) -> Result<(), String> {
    let (pk, ck) = (format!("{package}.previous"), format!("{package}.current"));
    let prev = pointer(w, &pk);
    if prev.is_empty() {
        return Err("Failed to find previous revision".into());
    }
    let cur = pointer(w, &ck);
    if cur.is_empty() {
        return Err("Failed to find current revision".into());
    }
    put(w, &pk, cur.as_bytes(), "text/plain");
    put(w, &ck, prev.as_bytes(), "text/plain");
    Ok(())
}

/// `ftl purge --master REV` of 0.2.6: reads the blessed revision (with its
/// side effect) but never refuses it; deletes the first key of a listing with
/// the prefix `<rev>.` and the delimiter `/`. Returns the key deleted.
pub fn purge(w: &World, rev: &str) -> Result<String, String> {
    let r = RevisionInfo::parse(rev).ok_or("Invalid revision name")?;
    let _ = current_revision(w, &r.package);
    let listing = list(w, &format!("{}.", r.name()), "/", 1);
    let key = listing
        .keys
        .first()
        .cloned()
        .ok_or("Failed to find revision")?;
    delete(w, &key);
    Ok(key)
}

/// A 0.2.6 revision id: UTC `YYYYMMDD`, the seconds of the day as five digits,
/// then the first two symbols of the MD5 in 0.2.6's base64 alphabet.
pub fn revision_id(at: SystemTime, md5: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz0";
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, of_day) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let a = ALPHABET[usize::from(md5[0] >> 2)] as char;
    let b = ALPHABET[usize::from(((md5[0] & 3) << 4) | (md5[1] >> 4))] as char;
    format!("{year:04}{month:02}{day:02}{of_day:05}{a}{b}")
}

/// `ftl spool FILE` of 0.2.6: the key `<package>.<id>.<rest>` (package: the
/// file name up to its first `.`; rest: everything after it), one PUT of type
/// `application/octet-stream`, no metadata, no check for an existing key.
/// Returns the revision name it prints.
pub fn spool(w: &World, file: &Path) -> String {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let (package, rest) = name
        .split_once('.')
        .expect("0.2.6 panics on a file name without '.'");
    let body = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let id = revision_id(SystemTime::now(), &Md5::digest(&body).into());
    put(
        w,
        &format!("{package}.{id}.{rest}"),
        &body,
        "application/octet-stream",
    );
    format!("{package}.{id}")
}

/// The revisions a 0.2.6 sync sees: the common prefixes of a listing of
/// `<package>.` with the delimiter `.`, each without its final `.`, as
/// `NewRevisionInfo(…).Name()` renders them, in listing order.
pub fn revisions(w: &World, package: &str) -> Vec<String> {
    list(w, &format!("{package}."), ".", MAX_KEYS)
        .prefixes
        .iter()
        .filter_map(|p| RevisionInfo::parse(&p[..p.len() - 1]))
        .map(|r| r.name())
        .collect()
}

/// The packages `ftl list --master` of 0.2.6 prints: every common prefix of a
/// listing of the whole bucket with the delimiter `.`, without the `.`.
pub fn packages(w: &World) -> Vec<String> {
    list(w, "", ".", MAX_KEYS)
        .prefixes
        .iter()
        .map(|p| p[..p.len() - 1].to_owned())
        .collect()
}

/// The key a 0.2.6 sync downloads for revision `<package>.<id>`: the first key
/// of a listing with that prefix (no trailing `.`, no delimiter, one key).
pub fn download_key(w: &World, package: &str, id: &str) -> Option<String> {
    list(w, &format!("{package}.{id}"), "", 1)
        .keys
        .into_iter()
        .next()
}

/// What a 0.2.6 node makes of one package in the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// [`revisions`]
    pub revisions: Vec<String>,
    /// Revision name → [`download_key`] for each of them.
    pub downloads: BTreeMap<String, Option<String>>,
    /// [`blessed`]
    pub blessed: Option<String>,
    /// [`previous`]
    pub previous: Option<String>,
}

/// A snapshot of [`View`]: only reads (not the write of [`current_revision`]).
pub fn view(w: &World, package: &str) -> View {
    let revisions = revisions(w, package);
    let downloads = revisions
        .iter()
        .map(|r| {
            let id = RevisionInfo::parse(r)
                .map(|r| r.revision)
                .unwrap_or_default();
            (r.clone(), download_key(w, package, &id))
        })
        .collect();
    View {
        revisions,
        downloads,
        blessed: blessed(w, package),
        previous: previous(w, package),
    }
}

/// Runs `op` and checks that it changed 0.2.6's view of `package` exactly as
/// `change` says (which gets the view before and what `op` returned), and
/// nothing else. Returns what `op` returned.
pub fn expect_view<T>(
    w: &World,
    package: &str,
    op: impl FnOnce() -> T,
    change: impl FnOnce(&mut View, &T),
) -> T {
    let before = view(w, package);
    let out = op();
    let mut expected = before.clone();
    change(&mut expected, &out);
    let after = view(w, package);
    assert_eq!(
        after, expected,
        "ftl 0.2.6's view of {package}: got the left one, expected the right one (before: {before:?})"
    );
    out
}

/// Runs `op` and checks that 0.2.6's view of `package` is the same after it.
pub fn assert_view_unchanged<T>(w: &World, package: &str, op: impl FnOnce() -> T) -> T {
    expect_view(w, package, op, |_, _| {})
}

/// `view.revisions` and `view.downloads` with one more revision, `rev`,
/// downloaded from `key` (a spool's expected change).
pub fn add_revision(view: &mut View, rev: &str, key: &str) {
    view.revisions.push(rev.to_owned());
    view.revisions.sort();
    view.downloads.insert(rev.to_owned(), Some(key.to_owned()));
}

/// `view` without the revision `rev` (a purge's expected change).
pub fn remove_revision(view: &mut View, rev: &str) {
    view.revisions.retain(|r| r != rev);
    view.downloads.remove(rev);
}
