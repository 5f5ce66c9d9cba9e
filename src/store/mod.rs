//! The object store behind ftl: one interface, two implementations
//! (S3 via the official SDK, and a local directory for `file://`).
//! Keys here are relative to the bucket prefix; this layer knows nothing of
//! ftl's key layout (that is `bucket.rs`).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;

pub mod dir;
mod ranges;
pub mod s3;

/// A streamed object body.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Called with the number of bytes sent so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: no such key {key:?}")]
    NotFound { what: &'static str, key: String },
    #[error("{key:?} already exists in the bucket; refusing to overwrite it")]
    AlreadyExists { key: String },
    #[error("{key:?} was changed by someone else meanwhile; re-read it and try again")]
    Conflict { key: String },
    /// A download in ranges met another version of the object than its first
    /// range did (re-spooled or purged meanwhile).
    #[error("{key:?} was replaced or deleted during the download; nothing of it was used")]
    Replaced { key: String },
    #[error("the bucket {bucket:?} does not exist")]
    NoSuchBucket { bucket: String },
    /// A `file://` bucket whose directory is missing.
    #[error("the bucket directory {} does not exist (create it: mkdir -p {})", .0.display(), .0.display())]
    NoDirectory(std::path::PathBuf),
    /// A `file://` bucket that is something else than a directory.
    #[error("the bucket directory {} is not a directory", .0.display())]
    NotADirectory(std::path::PathBuf),
    #[error("access to {what} was denied: {detail}")]
    Denied { what: String, detail: String },
    #[error("{what}: {detail}")]
    Other { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Changes when the object is replaced (S3's ETag; empty if unknown).
    pub etag: String,
    /// When it was written, as the store says (S3's LastModified).
    pub modified: Option<std::time::SystemTime>,
}

/// Metadata of an object, as written by `put_file`.
#[derive(Debug, Clone, Default)]
pub struct ObjectMeta {
    pub size: u64,
    /// User metadata (`x-amz-meta-*` on S3), keys lower case.
    pub metadata: HashMap<String, String>,
}

pub struct Object {
    pub meta: ObjectMeta,
    pub body: ByteStream,
}

/// A small text object, the version it was read at, and when it was written
/// (when the store says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub text: String,
    pub version: String,
    pub modified: Option<std::time::SystemTime>,
}

/// The answer to "has this small object changed since version V?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    Unchanged,
    Missing,
    Changed(Text),
}

/// Precondition of a small-text write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Write unconditionally.
    Any,
    /// Write only if the key does not exist.
    Absent,
    /// Write only if the key still has this version.
    Version(String),
}

pub trait Store: Send + Sync {
    /// A name for messages (`s3://bucket/prefix`, `file:///dir`).
    fn describe(&self) -> String;

    /// Every key that starts with `prefix`, in key order, across all pages.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>>>;

    /// Metadata of a key, `None` if it does not exist.
    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectMeta>>>;

    /// Stream an object's body. S3 fetches a large object as several byte
    /// ranges at once, each pinned to the version of the first (see `s3.rs`);
    /// the stream is the object's bytes in order either way.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>>;

    /// Bytes `[from, to)` of an object, in one request, of version `version`
    /// (its ETag, `If-Match`) when given: `Replaced` when the object is now
    /// another. For small ranges (a delta's pieces): held in memory.
    fn get_range<'a>(
        &'a self,
        key: &'a str,
        from: u64,
        to: u64,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Bytes>>;

    /// Upload a file under a key that must not exist yet. A failed upload
    /// leaves neither the key nor any partial upload behind.
    fn put_file_new<'a>(
        &'a self,
        key: &'a str,
        path: &'a Path,
        metadata: HashMap<String, String>,
        progress: Option<Progress>,
    ) -> BoxFuture<'a, Result<()>>;

    /// A small text object, `None` if it does not exist.
    fn get_text<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Text>>>;

    /// A small text object unless it still has version `seen`: one
    /// conditional request (`If-None-Match`), no body when nothing changed.
    fn get_text_if_changed<'a>(
        &'a self,
        key: &'a str,
        seen: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fresh>>;

    /// Write a small text object under a precondition; `Conflict` (or
    /// `AlreadyExists` for `Expect::Absent`) when it does not hold.
    fn put_text<'a>(
        &'a self,
        key: &'a str,
        text: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<()>>;

    /// Delete a key; deleting a missing key succeeds.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
}
