//! The S3 store, on the official SDK. The only file that sees `aws_*` types:
//! every SDK error is turned into a `StoreError` here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkBody, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use super::{
    Expect, Fresh, Object, ObjectInfo, ObjectMeta, Progress, Result, Store, StoreError, Text,
};

/// Files at least this large upload as multipart.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Smallest part; grows so that no upload needs more than 10,000 parts.
const MIN_PART: u64 = 16 << 20;
/// Parts in flight at once (each streams from the file: memory stays small).
const PART_JOBS: usize = 8;

pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// ftl 0.2.6's README calls the default region `us-east`; it means `us-east-1`
/// (which S3 would not recognise as `us-east`). Any other name is kept as it is.
fn canonical_region(name: &str) -> &str {
    match name {
        "us-east" => "us-east-1",
        other => other,
    }
}

/// A configuration value the SDK would choke on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {why}")]
pub struct ConfigError {
    what: String,
    why: &'static str,
}

/// The access key id and the region go into the signed Authorization header, the
/// session token into a header of its own: the SDK panics (aws-runtime unwraps
/// the header value) or fails obscurely on a control character there.
fn check_header_values(region: Option<&str>) -> Result<(), ConfigError> {
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN"] {
        if std::env::var(var).is_ok_and(|v| v.chars().any(char::is_control)) {
            return Err(ConfigError {
                // Not echoed: it may be a secret.
                what: var.to_owned(),
                why: "it contains control characters",
            });
        }
    }
    if let Some(r) = region
        && (r.is_empty() || r.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        let shown: String = r.chars().take(64).collect();
        return Err(ConfigError {
            what: format!(
                "AWS region {shown:?} (from AWS_REGION, AWS_DEFAULT_REGION or the profile)"
            ),
            why: "expected a name such as eu-west-1",
        });
    }
    Ok(())
}

impl S3Store {
    /// Load the SDK's configuration (credential chain, region, endpoint) the
    /// way the AWS CLI would, plus what the contract adds.
    pub async fn connect(bucket: String, prefix: String) -> Result<Self, ConfigError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // S3-compatible servers often reject the SDK's default CRC trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            );
        // The seed documents AWS_DEFAULT_REGION; the Rust SDK reads only AWS_REGION.
        // Either may hold ftl 0.2.6's name `us-east`: given to the loader as
        // `us-east-1`, so that credential providers that use the region see it too.
        // With neither, the loader's own chain runs (profile, then the instance
        // metadata service) exactly as before: nothing here turns that service off.
        if let Some(r) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
            loader = loader.region(Region::new(canonical_region(&r).to_owned()));
        }
        let conf = loader.load().await;
        check_header_values(conf.region().map(|r| r.as_ref()))?;
        // A profile's `region = us-east` is 0.2.6's name too; no region at all: us-east-1.
        let region = canonical_region(conf.region().map_or("us-east-1", |r| r.as_ref())).to_owned();
        let mut s3 = aws_sdk_s3::config::Builder::from(&conf).region(Region::new(region));
        // A custom endpoint (MinIO, a test server, `http://minio:9000`) wants
        // path-style addressing: virtual hosts would need DNS for each bucket.
        if env("AWS_ENDPOINT_URL_S3").is_some() || env("AWS_ENDPOINT_URL").is_some() {
            s3 = s3.force_path_style(true);
        }
        Ok(Self {
            client: Client::from_conf(s3.build()),
            bucket,
            prefix,
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn err<E>(
        &self,
        what: &str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let what = format!("{what} s3://{}/{}", self.bucket, self.full(key));
        match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or("").to_owned();
                match (code, status) {
                    ("NoSuchBucket", _) => StoreError::NoSuchBucket {
                        bucket: self.bucket.clone(),
                    },
                    ("NoSuchKey", _) | (_, 404) => StoreError::NotFound {
                        what: "read",
                        key: key.to_owned(),
                    },
                    ("PreconditionFailed" | "ConditionalRequestConflict", _) | (_, 412) => {
                        StoreError::Conflict {
                            key: key.to_owned(),
                        }
                    }
                    (
                        "AccessDenied"
                        | "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "ExpiredToken"
                        | "InvalidToken",
                        _,
                    )
                    | (_, 401 | 403) => StoreError::Denied {
                        what,
                        detail: match (code, message.as_str()) {
                            ("", _) => format!("HTTP {status}"),
                            (c, "") => c.to_owned(),
                            (c, m) => format!("{c}: {m}"),
                        } + " (check the credentials and the bucket policy)",
                    },
                    ("", _) => StoreError::Other {
                        what,
                        detail: format!("HTTP {status}: {}", chain(&err)),
                    },
                    _ => StoreError::Other {
                        what,
                        detail: format!("{code} (HTTP {status}) {message}")
                            .trim()
                            .to_owned(),
                    },
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StoreError::Other {
                what,
                detail: format!("cannot reach the S3 endpoint: {}", chain(&err)),
            },
            _ => StoreError::Other {
                what,
                detail: chain(&err),
            },
        }
    }
}

/// An error and its causes on one line, without repeats.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn lower_keys(m: Option<&HashMap<String, String>>) -> HashMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

impl Store for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        Box::pin(async move {
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err("list", prefix, e))?;
                for o in page.contents() {
                    let Some(key) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                        continue;
                    };
                    out.push(ObjectInfo {
                        key: key.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            Ok(out)
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectMeta>>> {
        Box::pin(async move {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .send()
                .await
            {
                Ok(o) => Ok(Some(ObjectMeta {
                    size: o.content_length().unwrap_or(0).max(0) as u64,
                    metadata: lower_keys(o.metadata()),
                })),
                Err(e) => match self.err("read", key, e) {
                    StoreError::NotFound { .. } => Ok(None),
                    other => Err(other),
                },
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>> {
        Box::pin(async move {
            let o = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .send()
                .await
                .map_err(|e| match self.err("download", key, e) {
                    StoreError::NotFound { key, .. } => StoreError::NotFound {
                        what: "download",
                        key,
                    },
                    other => other,
                })?;
            let meta = ObjectMeta {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                metadata: lower_keys(o.metadata()),
            };
            let body = futures::stream::try_unfold(o.body, |mut body| async move {
                match body.next().await {
                    None => Ok(None),
                    Some(Ok(bytes)) => Ok(Some((bytes, body))),
                    Some(Err(e)) => Err(std::io::Error::other(chain(&e))),
                }
            });
            Ok(Object {
                meta,
                body: Box::pin(body),
            })
        })
    }

    fn put_file_new<'a>(
        &'a self,
        key: &'a str,
        path: &'a Path,
        metadata: HashMap<String, String>,
        progress: Option<Progress>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let size = tokio::fs::metadata(path)
                .await
                .map_err(|source| StoreError::Io {
                    what: path.display().to_string(),
                    source,
                })?
                .len();
            // Not every S3-compatible server honours If-None-Match: check first too.
            if self.head(key).await?.is_some() {
                return Err(StoreError::AlreadyExists { key: key.into() });
            }
            if size < MULTIPART_THRESHOLD {
                let body = SdkBody::from_path(path)
                    .await
                    .map_err(|e| StoreError::Other {
                        what: path.display().to_string(),
                        detail: chain(&e),
                    })?;
                let sha = metadata.get(crate::bucket::SHA256_META).cloned();
                let sent = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(self.full(key))
                    .set_metadata(Some(metadata))
                    .if_none_match("*")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(_) => {}
                    // The write may have been applied and only its answer lost: the
                    // SDK's retry then meets our own object (412), or the retries ran
                    // out. The key was absent before, and the id is made of the
                    // content's digest: an object there with our size and SHA-256 is ours.
                    Err(_) if self.completed(key, size, sha.as_deref()).await => {}
                    Err(e) => return Err(created_only(self.err("upload", key, e), key)),
                }
                if let Some(p) = progress {
                    p(size);
                }
                return Ok(());
            }
            self.multipart(key, path, size, metadata, progress).await
        })
    }

    fn get_text<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Text>>> {
        Box::pin(async move {
            let o = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    return match self.err("read", key, e) {
                        StoreError::NotFound { .. } => Ok(None),
                        other => Err(other),
                    };
                }
            };
            let version = o.e_tag().unwrap_or("").to_owned();
            let bytes = o.body.collect().await.map_err(|e| StoreError::Other {
                what: format!("read {key}"),
                detail: chain(&e),
            })?;
            Ok(Some(Text {
                text: String::from_utf8_lossy(&bytes.into_bytes()).into_owned(),
                version,
            }))
        })
    }

    fn get_text_if_changed<'a>(
        &'a self,
        key: &'a str,
        seen: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fresh>> {
        Box::pin(async move {
            let o = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .set_if_none_match(seen.map(str::to_owned))
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    if let SdkError::ServiceError(se) = &e
                        && se.raw().status().as_u16() == 304
                    {
                        return Ok(Fresh::Unchanged);
                    }
                    return match self.err("read", key, e) {
                        StoreError::NotFound { .. } => Ok(Fresh::Missing),
                        other => Err(other),
                    };
                }
            };
            let version = o.e_tag().unwrap_or("").to_owned();
            // A server that ignores If-None-Match still tells by the ETag.
            if Some(version.as_str()) == seen {
                return Ok(Fresh::Unchanged);
            }
            let bytes = o.body.collect().await.map_err(|e| StoreError::Other {
                what: format!("read {key}"),
                detail: chain(&e),
            })?;
            Ok(Fresh::Changed(Text {
                text: String::from_utf8_lossy(&bytes.into_bytes()).into_owned(),
                version,
            }))
        })
    }

    fn put_text<'a>(
        &'a self,
        key: &'a str,
        text: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Check first as well: some servers ignore conditional headers.
            if expect != Expect::Any {
                let now = self.get_text(key).await?;
                match (&expect, &now) {
                    (Expect::Absent, Some(_)) => {
                        return Err(StoreError::AlreadyExists { key: key.into() });
                    }
                    (Expect::Version(v), Some(t)) if *v == t.version => {}
                    (Expect::Version(_), _) => {
                        return Err(StoreError::Conflict { key: key.into() });
                    }
                    _ => {}
                }
            }
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .content_type("text/plain")
                .body(SdkBody::from(text.as_bytes().to_vec()));
            req = match expect {
                Expect::Any => req,
                Expect::Absent => req.if_none_match("*"),
                Expect::Version(v) => req.if_match(v),
            };
            req.send().await.map_err(|e| self.err("write", key, e))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(self.full(key))
                .send()
                .await
                .map_err(|e| self.err("delete", key, e))?;
            Ok(())
        })
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when it is first polled.
fn interrupted() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            // Without handlers the default action (exit) stands: never resolve.
            _ => std::future::pending().await,
        }
    }
}

/// A precondition failure on a create-only write means the key exists.
fn created_only(e: StoreError, key: &str) -> StoreError {
    match e {
        StoreError::Conflict { .. } => StoreError::AlreadyExists { key: key.into() },
        other => other,
    }
}

impl S3Store {
    async fn multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        metadata: HashMap<String, String>,
        progress: Option<Progress>,
    ) -> Result<()> {
        let sha = metadata.get(crate::bucket::SHA256_META).cloned();
        // Listen for Ctrl-C and SIGTERM before the upload exists: once it does,
        // being killed by either must not leave it dangling (it is billed).
        let interrupted = interrupted();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_metadata(Some(metadata))
            .send()
            .await;
        let result = match created {
            Err(e) => Err(self.err("start upload of", key, e)),
            Ok(created) => match created.upload_id().map(str::to_owned) {
                None => Err(StoreError::Other {
                    what: format!("upload {key}"),
                    detail: "the server returned no upload id".into(),
                }),
                Some(upload_id) => {
                    let upload = self.upload_parts(key, path, size, &upload_id, progress);
                    // Ctrl-C must not leave a dangling multipart upload (it is billed).
                    let r = tokio::select! {
                        r = upload => match r {
                            // The completion may have been applied and its answer lost
                            // (a retry then finds no such upload), or the server answered
                            // with XML the SDK cannot parse (moto): the object tells
                            // whether it completed.
                            Err(_) if self.completed(key, size, sha.as_deref()).await => Ok(()),
                            other => other,
                        },
                        _ = interrupted => Err(StoreError::Other {
                            what: format!("upload {key}"),
                            detail: "interrupted".into(),
                        }),
                    };
                    if r.is_err() {
                        self.abort(key, &upload_id).await;
                    }
                    r
                }
            },
        };
        // A start whose answer was lost (and retried by the SDK) left an upload
        // we never heard of: uploads of this exact key can only be ours.
        self.abort_strays(key).await;
        result
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        let abort = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(e) = abort {
            tracing::warn!(
                "could not abort the multipart upload {upload_id} of {key}: {}",
                self.err("abort", key, e)
            );
        }
    }

    /// Aborts every multipart upload still open for `key`. Best effort: some
    /// servers do not implement the listing.
    async fn abort_strays(&self, key: &str) {
        let full = self.full(key);
        let listed = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&full)
            .send()
            .await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(
                    "cannot list open uploads of {key}: {}",
                    self.err("list uploads of", key, e)
                );
                return;
            }
        };
        for u in listed.uploads() {
            if let (Some(k), Some(id)) = (u.key(), u.upload_id())
                && k == full
            {
                tracing::debug!("aborting the stray multipart upload {id} of {key}");
                self.abort(key, id).await;
            }
        }
    }

    async fn completed(&self, key: &str, size: u64, sha: Option<&str>) -> bool {
        match self.head(key).await {
            Ok(Some(m)) => {
                m.size == size
                    && sha.is_none_or(|h| {
                        m.metadata
                            .get(crate::bucket::SHA256_META)
                            .map(String::as_str)
                            == Some(h)
                    })
            }
            _ => false,
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
        progress: Option<Progress>,
    ) -> Result<()> {
        let part_size = MIN_PART.max(size.div_ceil(10_000));
        let count = size.div_ceil(part_size);
        let sent = Arc::new(AtomicU64::new(0));
        let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
            .map(|i| {
                let sent = sent.clone();
                let progress = progress.clone();
                async move {
                    let offset = i * part_size;
                    let len = part_size.min(size - offset);
                    let body = SdkBody::read_from()
                        .path(path)
                        .offset(offset)
                        .length(Length::Exact(len))
                        .build()
                        .await
                        .map_err(|e| StoreError::Other {
                            what: path.display().to_string(),
                            detail: chain(&e),
                        })?;
                    let number = (i + 1) as i32;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(self.full(key))
                        .upload_id(upload_id)
                        .part_number(number)
                        .content_length(len as i64)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| self.err("upload part of", key, e))?;
                    let done = sent.fetch_add(len, Ordering::Relaxed) + len;
                    if let Some(p) = &progress {
                        p(done);
                    }
                    Ok::<_, StoreError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .build(),
                    )
                }
            })
            .buffer_unordered(PART_JOBS)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| created_only(self.err("complete upload of", key, e), key))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn us_east_is_us_east_1() {
        assert_eq!(canonical_region("us-east"), "us-east-1");
        assert_eq!(canonical_region("us-east-1"), "us-east-1");
        assert_eq!(canonical_region("us-east-2"), "us-east-2");
        assert_eq!(canonical_region("eu-west-1"), "eu-west-1");
    }
}
