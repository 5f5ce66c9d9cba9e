//! The S3 store, on the official SDK. The only file that sees `aws_*` types:
//! every SDK error is turned into a `StoreError` here.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ranges::{self, Sink, Start};
use super::{
    Expect, Fresh, Object, ObjectInfo, ObjectMeta, Progress, Result, Store, StoreError, Text,
};

/// Files at least this large upload as multipart.
const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Smallest part; grows so that no upload needs more than 10,000 parts.
const MIN_PART: u64 = 16 << 20;
/// Parts in flight at once (each streams from the file: memory stays small).
const PART_JOBS: usize = 8;
/// A larger object is downloaded as byte ranges of this size, several at once
/// (AWS advises 8–16 MiB; two ranges to each of spool's 16 MiB parts), or of
/// the size [`range_size`] aligns with the object's multipart parts; the last
/// window's worth are shares of what is left, so that they end together.
pub(crate) const RANGE: u64 = 8 << 20;
/// Ranges of one download started and not yet consumed, at 8 MiB each: memory
/// per download stays below `WINDOW × RANGE` (96 MiB) however slow the
/// unpacking (fewer ranges when they are larger). Twelve connections of a
/// link that carries 10 MB/s each bring a large object 1.5 x faster than the
/// ten of `aws s3 cp` (which unpacks after the download); the window opens
/// only that far where the consumer is fast and each connection slow.
pub(crate) const WINDOW: usize = 12;
/// Attempts at one range (a cut body, an error after the SDK's own retries).
const RANGE_ATTEMPTS: u32 = 4;
/// Pause before a range's second attempt; doubled for each further one.
const RANGE_BACKOFF: Duration = Duration::from_millis(100);

pub struct S3Store {
    /// The client, and the region it signs for. Replaced (once, in practice)
    /// when S3 answers that the bucket is in another region: see [`S3Store::send`].
    regional: RwLock<Regional>,
    /// Whether the "bucket is in another region" warning was printed: once a run.
    warned: AtomicBool,
    bucket: String,
    prefix: String,
    /// Permits for object bodies in flight (whole objects and ranges), shared
    /// by every download of the run, first come first served.
    connections: Arc<Semaphore>,
    /// The fastest rate one range was seen at, over every download.
    fastest: Arc<ranges::Fastest>,
}

/// A client and the region it was built for.
#[derive(Clone)]
struct Regional {
    client: Client,
    region: String,
}

/// What the SDK's fluent builders' `send()` returns.
type SdkResult<T, E> = std::result::Result<T, SdkError<E, HttpResponse>>;

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
    /// At most `connections` object bodies are fetched at once.
    pub async fn connect(
        bucket: String,
        prefix: String,
        connections: usize,
    ) -> Result<Self, ConfigError> {
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
        // With neither, the profile's region, and with none there us-east-1:
        // never the SDK's last resort, the instance metadata service, which
        // costs a round trip (or connect time-outs where it is unroutable) and
        // three WARN lines before every command; a bucket elsewhere is
        // followed (`send`). Only the region lookup is skipped: the credential
        // chain, instance roles included, is the SDK's, untouched.
        let region = match env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
            Some(r) => r,
            None => aws_config::meta::region::ProvideRegion::region(
                &aws_config::profile::ProfileFileRegionProvider::new(),
            )
            .await
            .map_or_else(|| "us-east-1".to_owned(), |r| r.as_ref().to_owned()),
        };
        loader = loader.region(Region::new(canonical_region(&region).to_owned()));
        let conf = loader.load().await;
        check_header_values(conf.region().map(|r| r.as_ref()))?;
        // A profile's `region = us-east` is 0.2.6's name too; no region at all: us-east-1.
        let region = canonical_region(conf.region().map_or("us-east-1", |r| r.as_ref())).to_owned();
        let mut s3 = aws_sdk_s3::config::Builder::from(&conf).region(Region::new(region.clone()));
        // A custom endpoint (MinIO, a test server, `http://minio:9000`) wants
        // path-style addressing: virtual hosts would need DNS for each bucket.
        if env("AWS_ENDPOINT_URL_S3").is_some() || env("AWS_ENDPOINT_URL").is_some() {
            s3 = s3.force_path_style(true);
        }
        Ok(Self {
            regional: RwLock::new(Regional {
                client: Client::from_conf(s3.build()),
                region,
            }),
            warned: AtomicBool::new(false),
            bucket,
            prefix,
            connections: Arc::new(Semaphore::new(connections.max(1))),
            fastest: Arc::default(),
        })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The client to use now, and its region.
    fn regional(&self) -> Regional {
        self.regional
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends one request, built by `op` on the current client. The SDK does not
    /// follow S3's answer that the bucket is in another region (a 301
    /// PermanentRedirect, or a 400 for some operations): when that answer names
    /// the bucket's region, every later request of the run goes there (the client
    /// is rebuilt for it, see [`S3Store::move_to`]) and this one is sent once more.
    /// At most once: a server that keeps redirecting gets its answer reported
    /// by [`S3Store::err`].
    ///
    /// Every request of this store goes through here, so that list, get, head,
    /// put, conditional put, delete and multipart all benefit. `op` may be
    /// called twice, so it must build the request afresh each time (request
    /// bodies: see [`again`]).
    async fn send<T, E, F, Fut>(&self, op: F) -> SdkResult<T, E>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = SdkResult<T, E>>,
        E: ProvideErrorMetadata,
    {
        let used = self.regional();
        let err = match op(used.client.clone()).await {
            Err(e) => e,
            ok => return ok,
        };
        match self.bucket_region(&err, &used).await {
            Some(region) => op(self.move_to(&region)).await,
            None => Err(err),
        }
    }

    /// The bucket's region, when `err` is S3 saying that the bucket is not in
    /// `used`'s region and the region it names is another one.
    async fn bucket_region<E: ProvideErrorMetadata>(
        &self,
        err: &SdkError<E, HttpResponse>,
        used: &Regional,
    ) -> Option<String> {
        let named = match elsewhere(err) {
            Elsewhere::No => None,
            Elsewhere::In(region) => Some(region),
            Elsewhere::Unnamed => self.ask_region(&used.client).await,
        }?;
        (named != used.region).then_some(named)
    }

    /// The bucket's region as an answer to HeadBucket names it: S3 sends
    /// `x-amz-bucket-region` with every such answer (200, 301, 400 or 403).
    async fn ask_region(&self, client: &Client) -> Option<String> {
        let named = match client.head_bucket().bucket(&self.bucket).send().await {
            Ok(out) => out.bucket_region().map(str::to_owned),
            Err(e) => e
                .raw_response()
                .and_then(|r| r.headers().get(BUCKET_REGION))
                .map(str::to_owned),
        };
        named.filter(|r| valid_region(r))
    }

    /// Makes `region` the region of every later request (unless another request
    /// already did), and says once which region to configure. Returns the client
    /// to use now.
    fn move_to(&self, region: &str) -> Client {
        let mut now = self
            .regional
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if now.region != region {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the bucket {} is in {region}, not {}: set AWS_REGION={region} to skip a round trip",
                    self.bucket,
                    now.region
                );
            }
            // Same credentials, endpoint, retries and timeouts; another region.
            let conf = now
                .client
                .config()
                .to_builder()
                .region(Region::new(region.to_owned()))
                .build();
            *now = Regional {
                client: Client::from_conf(conf),
                region: region.to_owned(),
            };
        }
        now.client.clone()
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
        // Still "the bucket is elsewhere" after `send` followed it once, or a
        // redirect that names no region, or only the very region asked for. A
        // 400 that names the region asked for is another error (S3 sends the
        // header with many answers): reported below with S3's own message.
        if let Some(raw) = err.raw_response() {
            let status = raw.status().as_u16();
            let answer = match err.code() {
                Some(c) => format!("HTTP {status} {c}"),
                None => format!("HTTP {status}"),
            };
            let redirect = matches!(status, 301 | 302 | 307);
            let asked = self.regional().region;
            match elsewhere(&err) {
                Elsewhere::In(named) if redirect || named != asked => {
                    return StoreError::Other {
                        what,
                        detail: format!(
                            "the server keeps sending ftl to another region ({answer} to a request for {asked}, naming {named}): check AWS_REGION and AWS_ENDPOINT_URL"
                        ),
                    };
                }
                Elsewhere::Unnamed if redirect => {
                    return StoreError::Other {
                        what,
                        detail: format!(
                            "the bucket is not in {asked} ({answer}) and the server does not say where it is: set AWS_REGION to the bucket's region"
                        ),
                    };
                }
                _ => {}
            }
        }
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

/// The header in which S3 names a bucket's region.
const BUCKET_REGION: &str = "x-amz-bucket-region";

/// What an error answer says about where the bucket is.
#[derive(Debug, PartialEq, Eq)]
enum Elsewhere {
    /// Nothing: it is another kind of error.
    No,
    /// In this region.
    In(String),
    /// In another region than the one asked, but the answer does not say which.
    Unnamed,
}

/// Reads S3's "wrong region" answers: a 301 PermanentRedirect (a HEAD gets it
/// without a body), a 302 or 307 redirect, a 400 AuthorizationHeaderMalformed or
/// IllegalLocationConstraintException, or a HEAD's 400 (as boto3 reads them).
/// The region is in the header `x-amz-bucket-region`, else in the error's
/// `<Region>` element; an answer with neither is `Unnamed`.
fn elsewhere<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Elsewhere {
    let Some(raw) = err.raw_response() else {
        return Elsewhere::No;
    };
    wrong_region(
        raw.status().as_u16(),
        err.code(),
        raw.headers().get(BUCKET_REGION),
        raw.body().bytes(),
    )
}

/// [`elsewhere`] on the parts of an answer.
fn wrong_region(
    status: u16,
    code: Option<&str>,
    header: Option<&str>,
    body: Option<&[u8]>,
) -> Elsewhere {
    let region_answer = match status {
        301 | 302 | 307 => true,
        // A HEAD has no body, hence no code: its 400 may be a wrong region too.
        400 => matches!(
            code,
            None | Some("AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")
        ),
        _ => false,
    };
    if !region_answer {
        return Elsewhere::No;
    }
    let body = body.map(String::from_utf8_lossy);
    let in_body = body.as_deref().and_then(|b| {
        let (_, rest) = b.split_once("<Region>")?;
        Some(rest.split_once("</Region>")?.0.trim())
    });
    match header.or(in_body) {
        // Goes into the endpoint's host name and the signature: names only.
        Some(r) if valid_region(r) => Elsewhere::In(r.to_owned()),
        Some(_) => Elsewhere::No,
        None => Elsewhere::Unnamed,
    }
}

/// A region name as S3 spells them (`eu-west-1`, `us-gov-west-1`).
fn valid_region(r: &str) -> bool {
    (1..=64).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A fresh copy of a request body, for each attempt [`S3Store::send`] makes.
/// Bodies read from a file or from memory can always be read again; the error
/// is for any other kind, which ftl does not send.
#[allow(clippy::result_large_err)] // the SDK's error type, as `send()` returns it
fn again<E>(body: &SdkBody) -> SdkResult<ByteStream, E> {
    body.try_clone()
        .map(ByteStream::new)
        .ok_or_else(|| SdkError::construction_failure("the request body cannot be sent again"))
}

/// An error and its causes on one line, without repeats. Some SDK messages
/// span lines (the credential chain lists each provider it tried on its own
/// line): their lines are joined with "; ".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
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
            // All pages in one `send`: a wrong region shows on the first page, and
            // the listing then starts again in the bucket's region.
            let pages = self
                .send(|c| {
                    c.list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(self.full(prefix))
                        .into_paginator()
                        .send()
                        .try_collect()
                })
                .await
                .map_err(|e| self.err("list", prefix, e))?;
            let mut out = Vec::new();
            for page in &pages {
                for o in page.contents() {
                    let Some(key) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                        continue;
                    };
                    out.push(ObjectInfo {
                        key: key.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().unwrap_or_default().to_owned(),
                        modified: o
                            .last_modified()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    });
                }
            }
            Ok(out)
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectMeta>>> {
        Box::pin(async move {
            match self
                .send(|c| {
                    c.head_object()
                        .bucket(&self.bucket)
                        .key(self.full(key))
                        .send()
                })
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
            let permit = self.permit(key).await?;
            let not_found = |e| match e {
                StoreError::NotFound { key, .. } => StoreError::NotFound {
                    what: "download",
                    key,
                },
                other => other,
            };
            // The first range, the whole object: its answer tells the object's
            // size and version, and whether the server answers ranges. It is
            // read alone until the consumer shows that one connection is too
            // slow for it, and only then cut into ranges (see `ranges.rs`).
            let first = self
                .send(|c| {
                    c.get_object()
                        .bucket(&self.bucket)
                        .key(self.full(key))
                        .range("bytes=0-")
                        .send()
                })
                .await;
            let o = match first {
                Ok(o) => o,
                // An empty object has no first byte: S3 answers 416.
                Err(e) if status_of(&e) == Some(416) => self
                    .send(|c| {
                        c.get_object()
                            .bucket(&self.bucket)
                            .key(self.full(key))
                            .send()
                    })
                    .await
                    .map_err(|e| not_found(self.err("download", key, e)))?,
                Err(e) => return Err(not_found(self.err("download", key, e))),
            };
            // What the answer says it holds: the first range of `size` bytes, or
            // (from a server that ignores ranges) the whole object.
            let (length, size, ranged) = match o.content_range().and_then(span_of) {
                Some((0, last, size)) => (last + 1, size, true),
                _ => {
                    let length = o.content_length().unwrap_or(0).max(0) as u64;
                    (length, length, false)
                }
            };
            let meta = ObjectMeta {
                size,
                metadata: lower_keys(o.metadata()),
            };
            let body = match o.e_tag() {
                Some(etag) if size > length || (ranged && size > RANGE) => {
                    let range = range_size(size, etag);
                    let job = Arc::new(RangeJob {
                        client: self.regional().client,
                        bucket: self.bucket.clone(),
                        full: self.full(key),
                        key: key.to_owned(),
                        etag: etag.to_owned(),
                        connections: self.connections.clone(),
                    });
                    let mut first = Some((o.body, permit));
                    let start: Start = Box::new(move |from, to, sink| {
                        let open = if from == 0 { first.take() } else { None };
                        tokio::spawn(job.clone().run(from, to, open, sink)).abort_handle()
                    });
                    // The memory bound is in bytes: fewer ranges when larger.
                    let window = (WINDOW * RANGE as usize / range as usize).max(2);
                    ranges::reassemble(
                        format!("download {key}"),
                        size,
                        length,
                        range,
                        window,
                        self.fastest.clone(),
                        start,
                    )
                    .0
                }
                // One request: the body as it comes, holding its permit.
                _ => Box::pin(futures::stream::try_unfold(
                    (o.body, permit),
                    |(mut body, permit)| async move {
                        match body.next().await {
                            None => Ok(None),
                            Some(Ok(bytes)) => Ok(Some((bytes, (body, permit)))),
                            Some(Err(e)) => Err(std::io::Error::other(chain(&e))),
                        }
                    },
                )),
            };
            Ok(Object { meta, body })
        })
    }

    fn get_range<'a>(
        &'a self,
        key: &'a str,
        from: u64,
        to: u64,
        version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bytes::Bytes>> {
        Box::pin(async move {
            let what = || format!("download {key} (bytes {from}-{})", to.saturating_sub(1));
            if to <= from {
                return Ok(bytes::Bytes::new());
            }
            let _permit = self.permit(key).await?;
            let answer = self
                .send(|c| {
                    c.get_object()
                        .bucket(&self.bucket)
                        .key(self.full(key))
                        .range(format!("bytes={from}-{}", to - 1))
                        .set_if_match(version.map(str::to_owned))
                        .send()
                })
                .await;
            let o = match answer {
                Ok(o) => o,
                Err(e) if matches!(status_of(&e), Some(412)) => {
                    return Err(StoreError::Replaced { key: key.into() });
                }
                Err(e) => return Err(self.err("download", key, e)),
            };
            match check_range(o.content_range(), o.e_tag(), from, to, version) {
                Ok(()) => {}
                Err(RangeMismatch::Span(answered)) => {
                    return Err(StoreError::Other {
                        what: what(),
                        detail: format!("the server answered with {answered}"),
                    });
                }
                Err(RangeMismatch::Replaced) => {
                    return Err(StoreError::Replaced { key: key.into() });
                }
            }
            let bytes = o
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Other {
                    what: what(),
                    detail: chain(&e),
                })?
                .into_bytes();
            if bytes.len() as u64 != to - from {
                return Err(StoreError::Other {
                    what: what(),
                    detail: format!("the answer ended after {} bytes", bytes.len()),
                });
            }
            Ok(bytes)
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
                let body = ByteStream::from_path(path)
                    .await
                    .map_err(|e| StoreError::Other {
                        what: path.display().to_string(),
                        detail: chain(&e),
                    })?
                    .into_inner();
                let sent_meta = metadata.clone();
                let sent = self
                    .send(|c| {
                        let req = c
                            .put_object()
                            .bucket(&self.bucket)
                            .key(self.full(key))
                            .set_metadata(Some(metadata.clone()))
                            .if_none_match("*");
                        let body = again(&body);
                        async move { req.body(body?).send().await }
                    })
                    .await;
                match sent {
                    Ok(_) => {}
                    // The write may have been applied and only its answer lost: the
                    // SDK's retry then meets our own object (412), or the retries ran
                    // out. The key was absent before, and the id is made of the
                    // content's digest: an object there with our size and SHA-256 is ours.
                    Err(_) if self.completed(key, size, &sent_meta).await => {}
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
                .send(|c| {
                    c.get_object()
                        .bucket(&self.bucket)
                        .key(self.full(key))
                        .send()
                })
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
            let modified = o
                .last_modified()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok());
            let bytes = o.body.collect().await.map_err(|e| StoreError::Other {
                what: format!("read {key}"),
                detail: chain(&e),
            })?;
            Ok(Some(Text {
                text: String::from_utf8_lossy(&bytes.into_bytes()).into_owned(),
                version,
                modified,
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
                .send(|c| {
                    c.get_object()
                        .bucket(&self.bucket)
                        .key(self.full(key))
                        .set_if_none_match(seen.map(str::to_owned))
                        .send()
                })
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
            let modified = o
                .last_modified()
                .and_then(|t| std::time::SystemTime::try_from(*t).ok());
            let bytes = o.body.collect().await.map_err(|e| StoreError::Other {
                what: format!("read {key}"),
                detail: chain(&e),
            })?;
            Ok(Fresh::Changed(Text {
                text: String::from_utf8_lossy(&bytes.into_bytes()).into_owned(),
                version,
                modified,
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
            self.send(|c| {
                let req = c
                    .put_object()
                    .bucket(&self.bucket)
                    .key(self.full(key))
                    .content_type("text/plain")
                    .body(ByteStream::from(text.as_bytes().to_vec()));
                match &expect {
                    Expect::Any => req,
                    Expect::Absent => req.if_none_match("*"),
                    Expect::Version(v) => req.if_match(v),
                }
                .send()
            })
            .await
            .map_err(|e| self.err("write", key, e))?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.send(|c| {
                c.delete_object()
                    .bucket(&self.bucket)
                    .key(self.full(key))
                    .send()
            })
            .await
            .map_err(|e| self.err("delete", key, e))?;
            Ok(())
        })
    }
}

/// The HTTP status of a failed request, when there was an answer.
fn status_of<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// The part size of a multipart object of `size` bytes, from its ETag: S3
/// writes a multipart object's ETag as `<hex>-<number of parts>`; the parts
/// are of one size but the last. Spool's own rule ([`MIN_PART`], grown for
/// 10,000 parts) when it gives that count; else, of the whole MiB that give
/// it, the roundest (most factors of two: the usual sizes of other uploaders
/// are 5, 8, 16, 64 MiB...). Many parts leave one candidate; a guess costs
/// nothing but speed, as every range is checked against the object anyway.
/// `None` for a single-part object or an ETag of another form.
fn part_size(size: u64, etag: &str) -> Option<u64> {
    const MIB: u64 = 1 << 20;
    let parts: u64 = etag.trim_matches('"').rsplit_once('-')?.1.parse().ok()?;
    if parts < 2 || size < parts {
        return None;
    }
    let spool = MIN_PART.max(size.div_ceil(10_000));
    if size.div_ceil(spool) == parts {
        return Some(spool);
    }
    let smallest = size.div_ceil(parts).div_ceil(MIB);
    (smallest..smallest + 4096)
        .take_while(|mib| size.div_ceil(mib * MIB) == parts)
        .max_by_key(|mib| (mib.trailing_zeros(), std::cmp::Reverse(*mib)))
        .map(|mib| mib * MIB)
}

/// The size of the ranges of a download: [`RANGE`], or when the object's
/// parts are known, the smallest size of at least [`RANGE`] whose ranges
/// begin and end on part boundaries (a part split evenly, or several whole
/// parts), up to 16 MiB; [`RANGE`] if there is none.
fn range_size(size: u64, etag: &str) -> u64 {
    let Some(part) = part_size(size, etag) else {
        return RANGE;
    };
    if part < RANGE {
        return part * RANGE.div_ceil(part);
    }
    (1..=part / RANGE)
        .rev()
        .find(|k| part % k == 0)
        .map(|k| part / k)
        .filter(|r| *r <= 2 * RANGE)
        .unwrap_or(RANGE)
}

/// How an answer to a request for bytes `[from, to)` differs from it.
#[derive(Debug, PartialEq)]
enum RangeMismatch {
    /// Another span (as the server named it).
    Span(String),
    /// Another version than `etag`.
    Replaced,
}

/// Whether an answer (its `Content-Range` and ETag) holds bytes `[from, to)`
/// of the version `etag`, when one was asked for. The ETag is checked even
/// though the request carried `If-Match`: some servers ignore it on GET.
fn check_range(
    content_range: Option<&str>,
    e_tag: Option<&str>,
    from: u64,
    to: u64,
    etag: Option<&str>,
) -> std::result::Result<(), RangeMismatch> {
    if !matches!(content_range.and_then(span_of),
        Some((first, last, _)) if first == from && last + 1 == to)
    {
        return Err(RangeMismatch::Span(
            content_range.unwrap_or("the whole object").to_owned(),
        ));
    }
    match (etag, e_tag) {
        (Some(asked), Some(answered)) if asked != answered => Err(RangeMismatch::Replaced),
        _ => Ok(()),
    }
}

/// First byte, last byte and the object's size from a `Content-Range`
/// (`bytes 0-8388607/20000000`).
fn span_of(content_range: &str) -> Option<(u64, u64, u64)> {
    let (span, size) = content_range.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    (first <= last).then_some((first, last, size.trim().parse().ok()?))
}

/// What every range of one download needs, owned: each range runs on a task
/// of its own, so that it keeps reading while the unpacking is busy.
struct RangeJob {
    /// The client of the region the first range was read from.
    client: Client,
    bucket: String,
    full: String,
    /// The key as ftl names it, for messages.
    key: String,
    /// The version of the object the first range came from: every range asks
    /// for it (`If-Match`), so two versions are never mixed.
    etag: String,
    connections: Arc<Semaphore>,
}

/// Why a range request failed.
enum RangeFailure {
    /// The object is not the version the download started with.
    Replaced,
    /// Worth another attempt.
    Again(String),
    /// Not worth another.
    Fatal(String),
}

impl RangeJob {
    /// Sends bytes `[from, to)` into `sink`, starting with `open` (the body of
    /// the first request, and its permit) when given. A failed or cut range is
    /// asked for again from where it stopped, alone, a few times.
    async fn run(
        self: Arc<Self>,
        from: u64,
        to: u64,
        open: Option<(ByteStream, OwnedSemaphorePermit)>,
        sink: Sink,
    ) {
        let (mut body, mut permit) = match open {
            Some((b, p)) => (Some(b), Some(p)),
            None => (None, None),
        };
        let mut got = 0u64;
        let mut failures = 0u32;
        // The end of the request being read (the range's may move nearer).
        let mut asked = to;
        // Names the bytes the range is to bring now (a cut first range's
        // nearer end, not the whole object it was asked as).
        let fail = |why: String| {
            std::io::Error::other(format!(
                "download {} (bytes {from}-{}): {why}",
                self.key,
                sink.end().saturating_sub(1)
            ))
        };
        while from + got < sink.end() {
            if sink.is_closed() {
                return;
            }
            let mut stream = match body.take() {
                Some(b) => b,
                None => {
                    if permit.is_none() {
                        match self.connections.clone().acquire_owned().await {
                            Ok(p) => permit = Some(p),
                            Err(_) => return sink.fail(fail("no connection permit".into())),
                        }
                    }
                    asked = sink.end();
                    match self.request(from + got, asked).await {
                        Ok(b) => b,
                        Err(RangeFailure::Replaced) => {
                            return sink.fail(std::io::Error::other(StoreError::Replaced {
                                key: self.key.clone(),
                            }));
                        }
                        Err(RangeFailure::Fatal(why)) => return sink.fail(fail(why)),
                        Err(RangeFailure::Again(why)) => {
                            failures += 1;
                            if failures >= RANGE_ATTEMPTS {
                                return sink.fail(fail(why));
                            }
                            tracing::debug!("{}; asking again", fail(why));
                            tokio::time::sleep(RANGE_BACKOFF * 2u32.pow(failures - 1)).await;
                            continue;
                        }
                    }
                }
            };
            let cut = loop {
                sink.room().await;
                match stream.next().await {
                    None => break None,
                    Some(Ok(chunk)) => {
                        if from + got + chunk.len() as u64 > asked {
                            return sink
                                .fail(fail("the server sent more than was asked for".into()));
                        }
                        got += chunk.len() as u64;
                        if !sink.send(chunk) {
                            return;
                        }
                        // Past a nearer end, the rest of the answer is not
                        // wanted: dropping it closes the connection.
                        let end = sink.end();
                        if end < asked && from + got >= end {
                            return;
                        }
                    }
                    Some(Err(e)) => break Some(chain(&e)),
                }
            };
            if from + got < sink.end() {
                failures += 1;
                let why = cut.unwrap_or_else(|| "the answer ended early".into());
                if failures >= RANGE_ATTEMPTS {
                    return sink.fail(fail(why));
                }
                tracing::debug!("{}; asking for the rest again", fail(why));
                tokio::time::sleep(RANGE_BACKOFF * 2u32.pow(failures - 1)).await;
            }
        }
    }

    /// One request for bytes `[from, to)` of the version the download started with.
    async fn request(&self, from: u64, to: u64) -> std::result::Result<ByteStream, RangeFailure> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.full)
            .range(format!("bytes={from}-{}", to - 1))
            .if_match(&self.etag)
            .send()
            .await;
        match answer {
            Ok(o) => {
                // A short body is found short while reading it (and asked for
                // again); another range than the one asked for is not.
                match check_range(o.content_range(), o.e_tag(), from, to, Some(&self.etag)) {
                    Ok(()) => Ok(o.body),
                    Err(RangeMismatch::Span(answered)) => Err(RangeFailure::Fatal(format!(
                        "the server answered a request for bytes {from}-{} with {answered}",
                        to - 1
                    ))),
                    Err(RangeMismatch::Replaced) => Err(RangeFailure::Replaced),
                }
            }
            Err(e) => match status_of(&e) {
                Some(404 | 412) => Err(RangeFailure::Replaced),
                _ => Err(RangeFailure::Again(chain(&e))),
            },
        }
    }
}

impl S3Store {
    /// A permit to fetch an object body (see `connections`).
    async fn permit(&self, key: &str) -> Result<OwnedSemaphorePermit> {
        self.connections
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Other {
                what: format!("download {key}"),
                detail: "no connection permit".into(),
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
        let sent_meta = metadata.clone();
        // Listen for Ctrl-C and SIGTERM before the upload exists: once it does,
        // being killed by either must not leave it dangling (it is billed).
        let interrupted = interrupted();
        let created = self
            .send(|c| {
                c.create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(self.full(key))
                    .set_metadata(Some(metadata.clone()))
                    .send()
            })
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
                            Err(_) if self.completed(key, size, &sent_meta).await => Ok(()),
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
            .send(|c| {
                c.abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(self.full(key))
                    .upload_id(upload_id)
                    .send()
            })
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
            .send(|c| {
                c.list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(&full)
                    .send()
            })
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

    /// Whether an upload whose answer was lost did complete: the object is
    /// there with our size and every metadata value we sent (the caller's
    /// digest among them, whatever it names it).
    async fn completed(&self, key: &str, size: u64, sent: &HashMap<String, String>) -> bool {
        match self.head(key).await {
            Ok(Some(m)) => {
                m.size == size
                    && sent
                        .iter()
                        .all(|(k, v)| m.metadata.get(&k.to_ascii_lowercase()) == Some(v))
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
                    let body = ByteStream::read_from()
                        .path(path)
                        .offset(offset)
                        .length(Length::Exact(len))
                        .build()
                        .await
                        .map_err(|e| StoreError::Other {
                            what: path.display().to_string(),
                            detail: chain(&e),
                        })?
                        .into_inner();
                    let number = (i + 1) as i32;
                    let out = self
                        .send(|c| {
                            let req = c
                                .upload_part()
                                .bucket(&self.bucket)
                                .key(self.full(key))
                                .upload_id(upload_id)
                                .part_number(number)
                                .content_length(len as i64);
                            let body = again(&body);
                            async move { req.body(body?).send().await }
                        })
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
        self.send(|c| {
            c.complete_multipart_upload()
                .bucket(&self.bucket)
                .key(self.full(key))
                .upload_id(upload_id)
                .if_none_match("*")
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts.clone()))
                        .build(),
                )
                .send()
        })
        .await
        .map_err(|e| created_only(self.err("complete upload of", key, e), key))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_align_with_the_parts() {
        const MIB: u64 = 1 << 20;
        // Not multipart, or not an S3 multipart ETag: 8 MiB.
        assert_eq!(range_size(100 * MIB, "\"0123abcd\""), RANGE);
        assert_eq!(range_size(100 * MIB, ""), RANGE);
        assert_eq!(range_size(100 * MIB, "\"abc-1\""), RANGE);
        // Spool's 16 MiB parts: two ranges each.
        assert_eq!(part_size(100 * MIB + 5, "\"abc-7\""), Some(16 * MIB));
        assert_eq!(range_size(100 * MIB + 5, "\"abc-7\""), 8 * MIB);
        // Spool's parts of a 200 GB object (20 MB each, for 10,000 parts).
        let size: u64 = 200_000_000_000;
        let part = size.div_ceil(10_000);
        let etag = format!("\"abc-{}\"", size.div_ceil(part));
        assert_eq!(part_size(size, &etag), Some(part));
        assert_eq!(range_size(size, &etag), part / 2);
        // Another uploader's parts larger than 16 MiB: split evenly.
        assert_eq!(part_size(24 * MIB * 9 + 1, "\"abc-10\""), Some(24 * MIB));
        assert_eq!(range_size(24 * MIB * 9 + 1, "\"abc-10\""), 8 * MIB);
        assert_eq!(range_size(64 * MIB * 3, "\"abc-3\""), 8 * MIB);
        assert_eq!(part_size(100 * MIB * 40 + 1, "\"abc-41\""), Some(100 * MIB));
        assert_eq!(range_size(100 * MIB * 40 + 1, "\"abc-41\""), 10 * MIB);
        // Smaller ones: several whole parts.
        assert_eq!(range_size(5 * MIB * 40, "\"abc-40\""), 10 * MIB);
        assert_eq!(range_size(8 * MIB * 40 - 3, "\"abc-40\""), 8 * MIB);
        // No range of 8-16 MiB ends on the parts' boundaries (spool's odd
        // parts of 20,000,001 bytes): 8 MiB.
        let size: u64 = 200_000_010_000;
        assert_eq!(range_size(size, "\"abc-10000\""), RANGE);
    }

    fn named(r: &str) -> Elsewhere {
        Elsewhere::In(r.to_owned())
    }

    #[test]
    fn wrong_region_answers() {
        let redirect = b"<Error><Code>PermanentRedirect</Code><Message>m</Message></Error>";
        let malformed = b"<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>";
        // S3's 301, with and without a body (HEAD).
        let code = Some("PermanentRedirect");
        let answer = wrong_region(301, code, Some("eu-west-1"), Some(redirect));
        assert_eq!(answer, named("eu-west-1"));
        assert_eq!(
            wrong_region(301, None, Some("eu-west-1"), None),
            named("eu-west-1")
        );
        assert_eq!(
            wrong_region(307, None, Some("ap-south-1"), None),
            named("ap-south-1")
        );
        // The 400s: the region in the header, else in the body.
        let code = Some("AuthorizationHeaderMalformed");
        assert_eq!(
            wrong_region(400, code, None, Some(malformed)),
            named("eu-west-1")
        );
        let code = Some("IllegalLocationConstraintException");
        assert_eq!(
            wrong_region(400, code, Some("eu-central-1"), None),
            named("eu-central-1")
        );
        assert_eq!(
            wrong_region(400, None, Some("eu-west-1"), None),
            named("eu-west-1")
        );
        // A redirect that names no region: ask HeadBucket.
        assert_eq!(
            wrong_region(301, code, None, Some(redirect)),
            Elsewhere::Unnamed
        );
        assert_eq!(wrong_region(400, None, None, None), Elsewhere::Unnamed);
        // Other errors, even with the header (S3 sends it on many answers).
        for (status, code) in [
            (400, Some("InvalidArgument")),
            (403, Some("AccessDenied")),
            (404, None),
            (500, None),
        ] {
            assert_eq!(
                wrong_region(status, code, Some("eu-west-1"), None),
                Elsewhere::No
            );
        }
        // What is not a region name is not followed.
        for bad in [
            "",
            "eu-west-1.evil.com",
            "EU",
            "eu west",
            "eu-west-1\n",
            &"a".repeat(65),
        ] {
            assert_eq!(
                wrong_region(301, None, Some(bad), None),
                Elsewhere::No,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chain_is_one_line() {
        let e = std::io::Error::other(
            "no credentials found in chain. Attempted:\n  Environment: not set\n  Ec2InstanceMetadata: disabled\n",
        );
        assert_eq!(
            chain(&e),
            "no credentials found in chain. Attempted:; Environment: not set; Ec2InstanceMetadata: disabled"
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            span_of("bytes 0-8388607/20000000"),
            Some((0, 8388607, 20000000))
        );
        assert_eq!(span_of("bytes 0-0/1"), Some((0, 0, 1)));
        assert_eq!(
            check_range(Some("bytes 8-15/20"), Some("\"e\""), 8, 16, Some("\"e\"")),
            Ok(())
        );
        assert_eq!(
            check_range(Some("bytes 8-15/20"), Some("\"f\""), 8, 16, Some("\"e\"")),
            Err(RangeMismatch::Replaced)
        );
        assert_eq!(
            check_range(Some("bytes 8-15/20"), Some("\"f\""), 8, 16, None),
            Ok(())
        );
        assert_eq!(
            check_range(None, None, 8, 16, None),
            Err(RangeMismatch::Span("the whole object".into()))
        );
        assert_eq!(
            check_range(Some("bytes 0-15/20"), None, 8, 16, None),
            Err(RangeMismatch::Span("bytes 0-15/20".into()))
        );
        // Another span and another version: named as the span, the first
        // thing wrong with the answer.
        assert_eq!(
            check_range(Some("bytes 0-15/20"), Some("\"f\""), 8, 16, Some("\"e\"")),
            Err(RangeMismatch::Span("bytes 0-15/20".into()))
        );
        assert_eq!(span_of("bytes 5-4/10"), None);
        assert_eq!(span_of("bytes */10"), None);
        assert_eq!(span_of("bytes 0-9/*"), None);
        assert_eq!(span_of(""), None);
    }

    #[test]
    fn us_east_is_us_east_1() {
        assert_eq!(canonical_region("us-east"), "us-east-1");
        assert_eq!(canonical_region("us-east-1"), "us-east-1");
        assert_eq!(canonical_region("us-east-2"), "us-east-2");
        assert_eq!(canonical_region("eu-west-1"), "eu-west-1");
    }
}
