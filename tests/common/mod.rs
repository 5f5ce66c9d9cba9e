//! Test harness: a real S3 protocol server (s3s-fs with SigV4 auth, in this
//! process, on 127.0.0.1:0; or the server named by FTL_TEST_S3_ENDPOINT, e.g.
//! moto_server started by .ci/run), and a way to run the ftl binary against it
//! with a clean environment.
#![allow(dead_code)]

pub mod legacy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::process::Command;
use tempfile::TempDir;

pub const ACCESS_KEY: &str = "AKIAFTLTESTKEY000001";
pub const SECRET_KEY: &str = "ftl-test-secret-key-not-a-real-one-0001";

/// Run a test body against both stores: `both!(name, |w: World| { ... })`.
#[macro_export]
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn s3() {
                ($body)(World::new(Backend::S3));
            }
            #[test]
            fn dir() {
                ($body)(World::new(Backend::Dir));
            }
        }
    };
}

/// Requests seen by the in-process server, by kind (method, and LIST for
/// bucket listings); and, under [`Fault::Delay`], how many of a kind were held
/// at once at most (now, peak).
#[derive(Default)]
pub struct Counts(
    Mutex<BTreeMap<String, u64>>,
    AtomicU64,
    Mutex<BTreeMap<String, (u64, u64)>>,
);

impl Counts {
    pub fn get(&self, kind: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(kind).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
    pub fn reset(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
        self.1.store(0, Ordering::Relaxed);
        if let Ok(mut m) = self.2.lock() {
            m.clear();
        }
    }
    /// The most requests of this kind held by [`Fault::Delay`] at the same
    /// time: the client's concurrency, whatever the timing.
    pub fn peak_held(&self, kind: &str) -> u64 {
        self.2
            .lock()
            .map(|m| m.get(kind).map_or(0, |e| e.1))
            .unwrap_or(0)
    }
    fn held(&self, kind: &str, more: bool) {
        if let Ok(mut m) = self.2.lock() {
            let e = m.entry(kind.to_owned()).or_default();
            if more {
                e.0 += 1;
                e.1 = e.1.max(e.0);
            } else {
                e.0 = e.0.saturating_sub(1);
            }
        }
    }
    /// GETs answered 304 Not Modified (counted among the GETs too).
    pub fn not_modified(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }
    fn add(&self, kind: String) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(kind).or_default() += 1;
        }
    }
}

/// A fault to inject into the next responses of the in-process server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Answer GETs of objects whose key contains this with a 503 SlowDown.
    SlowDownGet(String),
    /// Random faults at a rate, drawn from a seeded RNG (see [`Chaos`]).
    Chaos(Chaos),
    /// Answer every UploadPart of part 2 with a 500.
    FailPart2,
    /// Hold every UploadPart for this many milliseconds first.
    SlowParts(u64),
    /// The buckets are in another region than the client's: see [`WrongRegion`].
    Region(WrongRegion),
    /// The next PUT of a key ending with this is applied, then answered with
    /// a 500 (a lost answer: the SDK's retry meets its own write); then no
    /// more faults.
    LoseAnswerOnce(String),
    /// Every PUT of a key ending with this is answered with a 500, not applied.
    FailPut(String),
    /// Every PUT of a key containing this (`!` as sent, `%21`, or as is) is
    /// refused with a 403 AccessDenied, as an IAM policy would, not applied.
    DenyPut(String),
    /// Cut the body of the next GET whose `Range` starts at this byte, once.
    CutRangeAt(u64),
    /// Once the first GET of a key containing this is answered, replace the
    /// object (other bytes, another ETag), as a re-spool during a download would.
    ReplaceAfterGet(String),
    /// Send the body of every GET whose `Range` starts at byte 0 slowly: a slow
    /// first range, the later ones arriving before it.
    SlowFirstRange,
    /// Answer every request this many milliseconds late: a round trip.
    Delay(u64),
}

/// S3's answers to a request signed for another region than the bucket's (the
/// region of the SigV4 credential scope in the Authorization header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongRegion {
    /// The buckets' region.
    pub region: String,
    /// How a request for another region is answered.
    pub answer: RegionAnswer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionAnswer {
    /// 301 PermanentRedirect with `x-amz-bucket-region` (no body for a HEAD), as
    /// S3 answers most requests.
    Redirect,
    /// 400 AuthorizationHeaderMalformed naming the region in the body's
    /// `<Region>` only; a HEAD, which has no body, gets `x-amz-bucket-region`.
    Malformed,
    /// 301 naming no region at all, except to HeadBucket (`HEAD /bucket`),
    /// which always has `x-amz-bucket-region`, as in S3.
    Unnamed,
    /// A broken server: 301 naming `region` to every request, even one signed
    /// for it.
    Always,
}

impl WrongRegion {
    /// The fault that puts the buckets in `region`.
    pub fn fault(region: &str, answer: RegionAnswer) -> Fault {
        Fault::Region(WrongRegion {
            region: region.to_owned(),
            answer,
        })
    }

    /// The answer to a request, if it is one about the region.
    fn answer(
        &self,
        req: &http::Request<hyper::body::Incoming>,
    ) -> Option<http::Response<s3s::Body>> {
        let signed_for = signing_region(req).unwrap_or_default();
        if signed_for == self.region && self.answer != RegionAnswer::Always {
            return None;
        }
        let head = req.method() == http::Method::HEAD;
        let head_bucket = head && !req.uri().path().trim_matches('/').contains('/');
        let (status, body) = match self.answer {
            RegionAnswer::Malformed => (
                400,
                format!(
                    "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region '{signed_for}' is wrong; expecting '{}'</Message><Region>{}</Region><RequestId>R1</RequestId></Error>",
                    self.region, self.region
                ),
            ),
            _ => (
                301,
                "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><RequestId>R1</RequestId></Error>".to_owned(),
            ),
        };
        let mut r = http::Response::new(if head {
            s3s::Body::empty()
        } else {
            s3s::Body::from(body)
        });
        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/xml"),
        );
        let named = match self.answer {
            RegionAnswer::Redirect | RegionAnswer::Always => true,
            RegionAnswer::Malformed => head,
            RegionAnswer::Unnamed => head_bucket,
        };
        if named {
            r.headers_mut().insert(
                "x-amz-bucket-region",
                http::HeaderValue::from_str(&self.region).expect("region"),
            );
        }
        Some(r)
    }
}

/// The region of a request's SigV4 credential scope:
/// `AWS4-HMAC-SHA256 Credential=KEY/20260101/eu-west-1/s3/aws4_request, ...`.
pub fn signing_region<B>(req: &http::Request<B>) -> Option<String> {
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let scope = auth.split_once("Credential=")?.1.split(',').next()?;
    Some(scope.split('/').nth(2)?.to_owned())
}

/// What can go wrong with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// 500 InternalError; the request never reaches the store.
    Internal,
    /// 503 SlowDown; the request never reaches the store.
    SlowDown,
    /// The connection is dropped without an answer; the request is not applied.
    Reset,
    /// Not for GET: the request is applied, then answered with a 500 (a lost answer).
    LostAnswer,
    /// GET: the body stops halfway and the connection is cut.
    CutBody,
    /// GET of a revision object: half the body, with a Content-Length that agrees
    /// (a lying server; only the digest can tell).
    TruncatedBody,
    /// GET: the body trickles in small pieces with pauses.
    SlowBody,
    /// GET of a revision object: one byte in the middle flipped, length unchanged.
    FlipByte,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Internal,
        FaultKind::SlowDown,
        FaultKind::Reset,
        FaultKind::LostAnswer,
        FaultKind::CutBody,
        FaultKind::TruncatedBody,
        FaultKind::SlowBody,
        FaultKind::FlipByte,
    ];

    fn is_body(self) -> bool {
        matches!(
            self,
            FaultKind::CutBody
                | FaultKind::TruncatedBody
                | FaultKind::SlowBody
                | FaultKind::FlipByte
        )
    }

    /// Whether this fault makes sense for a request of `kind` (method, or LIST) on `path`.
    fn applies(self, kind: &str, path: &str) -> bool {
        // Pointers (`.rev`, `.previous`, `.current`) are small texts with no digest of
        // their own: a lying body there tests the transport, not ftl.
        let revision_object = path
            .rsplit('/')
            .next()
            .is_some_and(|k| k.matches('.').count() >= 2);
        match self {
            FaultKind::Internal | FaultKind::SlowDown | FaultKind::Reset => true,
            FaultKind::LostAnswer => kind != "GET" && kind != "LIST" && kind != "HEAD",
            FaultKind::CutBody | FaultKind::SlowBody => kind == "GET",
            FaultKind::TruncatedBody | FaultKind::FlipByte => kind == "GET" && revision_object,
        }
    }
}

/// Random faults: each eligible request fails with probability `per_mille`/1000,
/// the kind drawn uniformly from those of `kinds` that apply to it. The RNG is
/// seeded, so a run's mix of faults is reproducible (their order depends on the
/// order in which concurrent requests arrive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chaos {
    pub per_mille: u32,
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    /// Only requests of these kinds (`GET`, `PUT`, `POST`, `LIST`, `HEAD`, `DELETE`);
    /// empty: all.
    pub only: Vec<&'static str>,
    /// Only requests whose path contains this (empty: all).
    pub path_contains: String,
}

impl Chaos {
    pub fn new(per_mille: u32, seed: u64) -> Chaos {
        Chaos {
            per_mille,
            seed,
            kinds: FaultKind::ALL.to_vec(),
            only: Vec::new(),
            path_contains: String::new(),
        }
    }
}

/// splitmix64: small, seedable, good enough to pick faults and kill instants.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The server's RNG (reseeded whenever a fault is set) and what it injected.
#[derive(Default)]
struct ChaosState {
    rng: Mutex<Option<Rng>>,
    injected: Counts,
    /// See [`Server::set_slow_gets`].
    slow_gets: std::sync::atomic::AtomicBool,
}

impl ChaosState {
    /// The fault to inject into this request, if any.
    fn draw(&self, chaos: &Chaos, kind: &str, path: &str) -> Option<FaultKind> {
        if (!chaos.only.is_empty() && !chaos.only.contains(&kind))
            || !path.contains(chaos.path_contains.as_str())
        {
            return None;
        }
        let usable: Vec<FaultKind> = chaos
            .kinds
            .iter()
            .copied()
            .filter(|k| k.applies(kind, path))
            .collect();
        if usable.is_empty() {
            return None;
        }
        let mut guard = self.rng.lock().ok()?;
        let rng = guard.get_or_insert_with(|| Rng::new(chaos.seed));
        if rng.below(1000) >= u64::from(chaos.per_mille) {
            return None;
        }
        let k = usable[rng.below(usable.len() as u64) as usize];
        drop(guard);
        self.injected.add(format!("{k:?}"));
        Some(k)
    }
}

fn error_response(status: u16, code: &str) -> http::Response<s3s::Body> {
    let body = format!("<Error><Code>{code}</Code><Message>injected</Message></Error>");
    let mut r = http::Response::new(s3s::Body::from(body));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r
}

type BodyItem = Result<bytes::Bytes, s3s::StdError>;

/// s3s wants a `Sync` stream; a mutex around any `Send` one is that.
struct SyncStream(Mutex<std::pin::Pin<Box<dyn futures::Stream<Item = BodyItem> + Send>>>);

impl futures::Stream for SyncStream {
    type Item = BodyItem;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<BodyItem>> {
        let inner = match self.get_mut().0.get_mut() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        inner.as_mut().poll_next(cx)
    }
}

impl s3s::stream::ByteStream for SyncStream {}

/// Applies a body fault to a successful GET's answer.
fn mangle(mut resp: http::Response<s3s::Body>, fault: FaultKind) -> http::Response<s3s::Body> {
    use futures::StreamExt;
    if !resp.status().is_success() {
        return resp;
    }
    let len: u64 = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let half = len / 2;
    if fault == FaultKind::TruncatedBody {
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(half));
    }
    let body = std::mem::take(resp.body_mut());
    // State: the body, bytes passed so far, and what comes next.
    #[derive(Clone, Copy, PartialEq)]
    enum Next {
        More,
        Cut,
        End,
    }
    let stream = futures::stream::unfold(
        (body, 0u64, Next::More),
        move |(mut body, pos, next)| async move {
            match next {
                Next::End => return None,
                Next::Cut => {
                    let e: s3s::StdError = "injected: connection cut".into();
                    return Some((Err(e), (body, pos, Next::End)));
                }
                Next::More => {}
            }
            if fault == FaultKind::SlowBody {
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
            match body.next().await {
                None => None,
                Some(Err(e)) => Some((Err(e), (body, pos, Next::End))),
                Some(Ok(chunk)) => {
                    let end = pos + chunk.len() as u64;
                    let keep = (half - pos.min(half)) as usize;
                    match fault {
                        FaultKind::CutBody if end > half => {
                            Some((Ok(chunk.slice(..keep)), (body, half, Next::Cut)))
                        }
                        FaultKind::TruncatedBody if end >= half => {
                            Some((Ok(chunk.slice(..keep)), (body, half, Next::End)))
                        }
                        FaultKind::FlipByte if pos <= half && half < end => {
                            let mut v = chunk.to_vec();
                            v[keep] ^= 0x20;
                            Some((Ok(bytes::Bytes::from(v)), (body, end, Next::More)))
                        }
                        _ => Some((Ok(chunk), (body, end, Next::More))),
                    }
                }
            }
        },
    );
    let stream: std::pin::Pin<Box<dyn futures::Stream<Item = BodyItem> + Send>> =
        if fault == FaultKind::SlowBody {
            // Re-chunked small, so that the pauses add up.
            Box::pin(stream.flat_map(|item| {
                let pieces: Vec<BodyItem> = match item {
                    Ok(c) => (0..c.len())
                        .step_by(16 << 10)
                        .map(|i| Ok(c.slice(i..(i + (16 << 10)).min(c.len()))))
                        .collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(pieces)
            }))
        } else {
            Box::pin(stream)
        };
    *resp.body_mut() =
        s3s::Body::from(Box::pin(SyncStream(Mutex::new(stream))) as s3s::stream::DynByteStream);
    resp
}

pub struct Server {
    pub endpoint: String,
    pub counts: Arc<Counts>,
    pub fault: Arc<Mutex<Fault>>,
    chaos: Arc<ChaosState>,
    fs_root: Option<PathBuf>,
    _dir: Option<TempDir>,
    runtime: Option<tokio::runtime::Runtime>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn kind_of(req: &http::Request<hyper::body::Incoming>) -> String {
    let path = req.uri().path().trim_matches('/');
    let query = req.uri().query().unwrap_or("");
    let object = path.contains('/');
    match (req.method().as_str(), object) {
        ("GET", false) if !query.contains("location") => "LIST".into(),
        (m, _) => m.to_owned(),
    }
}

impl Server {
    /// The in-process server, or the external one named by FTL_TEST_S3_ENDPOINT.
    pub fn start() -> Server {
        if let Ok(endpoint) = std::env::var("FTL_TEST_S3_ENDPOINT")
            && !endpoint.is_empty()
        {
            return Server {
                endpoint,
                counts: Arc::default(),
                fault: Arc::new(Mutex::new(Fault::None)),
                chaos: Arc::default(),
                fs_root: None,
                _dir: None,
                runtime: None,
            };
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let counts: Arc<Counts> = Arc::default();
        let fault = Arc::new(Mutex::new(Fault::None));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let chaos: Arc<ChaosState> = Arc::default();
        // Real S3 applies a conditional write atomically and answers a GET with
        // the content and the ETag of one version; s3s-fs checks, then writes,
        // and reads content and ETag from two files. Conditional writes one at a
        // time, and never during a read, give the tests S3's semantics.
        let conditional = Arc::new(tokio::sync::RwLock::new(()));
        let (c, f, ch, fs_root) = (counts.clone(), fault.clone(), chaos.clone(), root.clone());
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Without it a small object's body, written after its head, waits
                // 40 ms for the client's delayed ACK (see benches/s3_server.rs).
                let _ = socket.set_nodelay(true);
                let (service, c, f, ch, conditional, fs_root) = (
                    service.clone(),
                    c.clone(),
                    f.clone(),
                    ch.clone(),
                    conditional.clone(),
                    fs_root.clone(),
                );
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let kind = kind_of(&req);
                    c.add(kind.clone());
                    let fault = f.lock().map(|g| g.clone()).unwrap_or(Fault::None);
                    let injected = match &fault {
                        Fault::Chaos(chaos) => ch.draw(chaos, &kind, req.uri().path()),
                        _ => None,
                    };
                    let service = service.clone();
                    let conditional = conditional.clone();
                    let fs_root = fs_root.clone();
                    let c = c.clone();
                    let (f, ch) = (f.clone(), ch.clone());
                    let wrong_region = match &fault {
                        Fault::Region(w) => w.answer(&req),
                        _ => None,
                    };
                    let path = req.uri().path().to_owned();
                    let lose_once = matches!(&fault, Fault::LoseAnswerOnce(k)
                        if kind == "PUT" && path.ends_with(k.as_str()));
                    if lose_once && let Ok(mut g) = f.lock() {
                        *g = Fault::None;
                    }
                    let fail_put = matches!(&fault, Fault::FailPut(k)
                        if kind == "PUT" && path.ends_with(k.as_str()));
                    let deny_put = matches!(&fault, Fault::DenyPut(k)
                        if kind == "PUT" && path.replace("%21", "!").contains(k.as_str()));
                    if deny_put {
                        ch.injected.add("DenyPut".into());
                    }
                    if wrong_region.is_some() {
                        ch.injected.add("WrongRegion".into());
                    }
                    async move {
                        if let Some(r) = wrong_region {
                            return Ok(r);
                        }
                        if fail_put {
                            return Ok(error_response(500, "InternalError"));
                        }
                        if deny_put {
                            return Ok(error_response(403, "AccessDenied"));
                        }
                        if let Fault::Delay(ms) = fault {
                            c.held(&kind, true);
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            c.held(&kind, false);
                        }
                        let part = req.uri().query().unwrap_or("").contains("partNumber=");
                        if let Fault::SlowParts(ms) = fault
                            && part
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        if fault == Fault::FailPart2
                            && req.uri().query().unwrap_or("").contains("partNumber=2")
                        {
                            return Ok(error_response(500, "InternalError"));
                        }
                        if let Fault::SlowDownGet(k) = &fault
                            && kind == "GET"
                            && req.uri().path().contains(k.as_str())
                        {
                            ch.injected.add("SlowDownGet".into());
                            let body =
                                "<Error><Code>SlowDown</Code><Message>injected</Message></Error>";
                            return Ok(http::Response::builder()
                                .status(503)
                                .body(s3s::Body::from(body.to_owned()))
                                .expect("response"));
                        }
                        match injected {
                            Some(FaultKind::Internal) => {
                                return Ok(error_response(500, "InternalError"));
                            }
                            Some(FaultKind::SlowDown) => {
                                return Ok(error_response(503, "SlowDown"));
                            }
                            // An error from the service makes hyper drop the connection.
                            Some(FaultKind::Reset) => {
                                return Err(s3s::HttpError::new("injected: reset".into()));
                            }
                            _ => {}
                        }
                        if kind == "LIST"
                            && req.uri().query().is_some_and(|q| {
                                q.split('&')
                                    .any(|p| p == "uploads" || p.starts_with("uploads="))
                            })
                        {
                            return Ok(list_uploads(&fs_root, req.uri()));
                        }
                        let is_conditional = req.headers().contains_key(http::header::IF_MATCH)
                            || req.headers().contains_key(http::header::IF_NONE_MATCH);
                        let (_write, _read) = if is_conditional && kind != "GET" && kind != "HEAD" {
                            (Some(conditional.write().await), None)
                        } else if kind == "GET" || kind == "HEAD" {
                            (None, Some(conditional.read().await))
                        } else {
                            (None, None)
                        };
                        // s3s-fs ignores If-None-Match on GET; answer 304 as S3 does.
                        let if_none_match = req
                            .headers()
                            .get(http::header::IF_NONE_MATCH)
                            .map(|v| v.as_bytes().to_vec());
                        let range_start = req
                            .headers()
                            .get(http::header::RANGE)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("bytes="))
                            .and_then(|v| v.split('-').next())
                            .and_then(|v| v.parse::<u64>().ok());
                        let if_match = req
                            .headers()
                            .get(http::header::IF_MATCH)
                            .map(|v| v.as_bytes().to_vec());
                        let object_path = percent_decode(req.uri().path().trim_start_matches('/'));
                        let resp = hyper::service::Service::call(&service, req).await;
                        // s3s-fs ignores If-Match on GET; answer 412 as S3 does.
                        if kind == "GET"
                            && let (Some(want), Ok(r)) = (&if_match, &resp)
                            && r.status().is_success()
                            && r.headers().get(http::header::ETAG).map(|v| v.as_bytes())
                                != Some(want.as_slice())
                        {
                            return Ok(error_response(412, "PreconditionFailed"));
                        }
                        let slow = (kind == "GET" && ch.slow_gets.load(Ordering::Relaxed))
                            .then_some(FaultKind::SlowBody);
                        let ranged_fault = match (&fault, range_start) {
                            (Fault::CutRangeAt(at), Some(start))
                                if kind == "GET" && *at == start =>
                            {
                                if let Ok(mut g) = f.lock() {
                                    *g = Fault::None;
                                }
                                ch.injected.add("CutBody".into());
                                Some(FaultKind::CutBody)
                            }
                            (Fault::SlowFirstRange, Some(0)) if kind == "GET" => {
                                Some(FaultKind::SlowBody)
                            }
                            (Fault::ReplaceAfterGet(k), _)
                                if kind == "GET" && object_path.contains(k.as_str()) =>
                            {
                                if let Ok(mut g) = f.lock() {
                                    *g = Fault::None;
                                }
                                replace_object(&fs_root, &object_path);
                                slow
                            }
                            _ => slow,
                        };
                        let resp = match (ranged_fault, resp) {
                            (Some(k), Ok(r)) => Ok(mangle(r, k)),
                            (_, r) => r,
                        };
                        let not_modified = kind == "GET"
                            && injected.is_none()
                            && if_none_match.is_some()
                            && resp.as_ref().is_ok_and(|r| {
                                r.headers().get(http::header::ETAG).map(|v| v.as_bytes())
                                    == if_none_match.as_deref()
                            });
                        if not_modified {
                            c.1.fetch_add(1, Ordering::Relaxed);
                            return Ok(http::Response::builder()
                                .status(304)
                                .body(s3s::Body::empty())
                                .expect("response"));
                        }
                        if lose_once && resp.is_ok() {
                            return Ok(error_response(500, "InternalError"));
                        }
                        match (injected, resp) {
                            (Some(FaultKind::LostAnswer), Ok(_)) => {
                                Ok(error_response(500, "InternalError"))
                            }
                            (Some(k), Ok(r)) if k.is_body() => Ok(mangle(r, k)),
                            (_, r) => r,
                        }
                    }
                });
                let conn = http
                    .serve_connection(TokioIo::new(socket), svc)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Server {
            endpoint: format!("http://{addr}"),
            counts,
            fault,
            chaos,
            fs_root: Some(root),
            _dir: Some(dir),
            runtime: Some(runtime),
        }
    }

    pub fn is_external(&self) -> bool {
        self.fs_root.is_none()
    }

    /// A fresh, empty bucket.
    pub fn bucket(&self) -> String {
        let name = format!(
            "ftl-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match &self.fs_root {
            // s3s-fs keeps a bucket as a directory.
            Some(root) => std::fs::create_dir(root.join(&name)).expect("bucket dir"),
            None => {
                let status = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                    .arg(format!("{}/{name}", self.endpoint))
                    .output()
                    .expect("curl");
                assert!(status.status.success(), "create bucket {name}");
            }
        }
        name
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Where a test's bucket lives.
pub enum Backend {
    S3,
    Dir,
}

/// One deployment world: a bucket (S3 or directory) and a clean environment.
pub struct World {
    pub server: Option<Server>,
    pub bucket: String,
    pub tmp: TempDir,
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

impl World {
    pub fn new(backend: Backend) -> World {
        let tmp = tempfile::tempdir().expect("temp dir");
        // Empty AWS config files: nothing of the machine's own leaks in.
        std::fs::write(tmp.path().join("aws-config"), "").expect("aws config");
        match backend {
            Backend::S3 => {
                let server = Server::start();
                let bucket = server.bucket();
                World {
                    server: Some(server),
                    bucket,
                    tmp,
                }
            }
            Backend::Dir => {
                let dir = tmp.path().join("bucket");
                std::fs::create_dir(&dir).expect("bucket dir");
                World {
                    server: None,
                    bucket: format!("file://{}", dir.display()),
                    tmp,
                }
            }
        }
    }

    /// A node root with the given package directories.
    pub fn node(&self, name: &str, packages: &[&str]) -> PathBuf {
        let root = self.tmp.path().join(name);
        for p in packages {
            std::fs::create_dir_all(root.join(p)).expect("package dir");
        }
        std::fs::create_dir_all(&root).expect("root");
        root
    }

    /// `ftl` with only the environment the test gives it.
    pub fn ftl(&self, root: &Path) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("ftl"));
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .env("HOME", self.tmp.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.tmp.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.tmp.path().join("aws-config"),
            )
            .env("FTL_BUCKET", &self.bucket)
            .env("FTL_ROOT", root)
            .env("FTL_LOCK_TIMEOUT", "20");
        if let Some(s) = &self.server {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_ENDPOINT_URL", &s.endpoint);
        }
        cmd
    }

    /// Spool a file and return the revision name.
    pub fn spool(&self, file: &Path) -> String {
        let out = self.spool_output(file);
        assert!(
            out.status.success(),
            "spool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            !rev.contains('\n'),
            "spool printed more than the name: {rev:?}"
        );
        rev
    }

    /// `ftl spool FILE`, as it ended.
    fn spool_output(&self, file: &Path) -> std::process::Output {
        output_within(self.ftl(self.tmp.path()).arg("spool").arg(file), RUN_LIMIT)
    }

    /// Spool a package of `files` (see [`package`]) and return the revision name.
    pub fn spool_files(&self, file_name: &str, files: &[(&str, &str, u32)]) -> String {
        self.spool(&package(self.tmp.path(), file_name, files))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Spools and blesses one revision of each package (one file, `v`), as a
    /// fleet's first deploy; returns the revisions' names.
    pub fn bless_one_each<const N: usize>(&self, packages: [&str; N]) -> [String; N] {
        packages.map(|p| {
            let rev = self.spool_files(&format!("{p}.tgz"), &[("v", "1", 0o644)]);
            ok(self, self.tmp.path(), &["jump", "--master", &rev]);
            rev
        })
    }
}

/// Write a `.tar.gz` package named `file_name` with the given files
/// (`(path, content, mode)`), using the system tar.
pub fn package(dir: &Path, file_name: &str, files: &[(&str, &str, u32)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = dir.join(format!("src-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    for (path, content, mode) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    let out = dir.join(file_name);
    tar_czf(&out, &src);
    out
}

/// How long one ftl command of a test may run: a hang fails the test.
pub const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs ftl with `args` on the node `root`.
pub fn run(w: &World, root: &Path, args: &[&str]) -> std::process::Output {
    output_within(w.ftl(root).args(args), RUN_LIMIT)
}

/// Runs ftl with `args` on the node `root`, which must succeed; its stdout.
pub fn ok(w: &World, root: &Path, args: &[&str]) -> String {
    let out = run(w, root, args);
    assert!(
        out.status.success(),
        "ftl {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Server {
    /// Where the in-process server keeps a bucket's objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.fs_root
            .as_ref()
            .expect("in-process server")
            .join(bucket)
    }
}

impl Server {
    /// Sets the fault for the next requests; chaos starts from its seed again.
    pub fn set_fault(&self, fault: Fault) {
        if let Ok(mut rng) = self.chaos.rng.lock() {
            *rng = None;
        }
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }

    /// Sends the body of every GET slowly (about 1 MB/s a connection), whatever
    /// the fault: a link that limits each connection, slower than any
    /// consumer, so that a download is cut into ranges.
    pub fn set_slow_gets(&self, slow: bool) {
        self.chaos.slow_gets.store(slow, Ordering::Relaxed);
    }

    /// Faults injected so far, by kind (`CutBody`, `Internal`, ...).
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.chaos.injected.get(&format!("{kind:?}"))
    }

    /// PUTs refused by [`Fault::DenyPut`] so far.
    pub fn denied_puts(&self) -> u64 {
        self.chaos.injected.get("DenyPut")
    }

    /// Requests answered "the bucket is in another region" so far.
    pub fn wrong_region_answers(&self) -> u64 {
        self.chaos.injected.get("WrongRegion")
    }

    /// GETs refused by [`Fault::SlowDownGet`] so far: each is a download
    /// that was tried.
    pub fn slowed_gets(&self) -> u64 {
        self.chaos.injected.get("SlowDownGet")
    }

    /// Faults injected so far, of every kind.
    pub fn injected_total(&self) -> u64 {
        self.chaos.injected.total()
    }

    /// Multipart uploads started and neither completed nor aborted: s3s-fs keeps
    /// each as an `.upload-<id>.json` (and its parts) in its root.
    pub fn pending_uploads(&self) -> Vec<String> {
        let Some(root) = &self.fs_root else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                } else if name.starts_with(".upload") {
                    found.push(name);
                }
            }
        }
        found.sort();
        found
    }
}

/// Figures for the reliability report: when FTL_TEST_FIGURES names a file, each
/// `figure(key, n)` appends `key n` to it (the long-run script sums them).
pub fn figure(key: &str, n: u64) {
    eprintln!("figure {key} {n}");
    if let Ok(path) = std::env::var("FTL_TEST_FIGURES")
        && !path.is_empty()
    {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{key} {n}");
        }
    }
}

/// A count from the environment (the long-run script raises them), or `default`.
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `.tar.gz` package of `files` files of `size` random bytes each (seeded, so
/// incompressible and distinct per seed), plus a `seed` file. Returns the archive
/// and the directory it was made from (what an installed revision must equal).
pub fn random_package(
    dir: &Path,
    file_name: &str,
    seed: u64,
    files: usize,
    size: usize,
) -> (PathBuf, PathBuf) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let src = dir.join(format!("rsrc-{n}"));
    std::fs::create_dir_all(src.join("data")).expect("mkdir");
    let mut rng = Rng::new(seed);
    for i in 0..files {
        std::fs::write(src.join("data").join(format!("f{i:04}")), rng.bytes(size)).expect("write");
    }
    std::fs::write(src.join("seed"), seed.to_string()).expect("write");
    let out_dir = dir.join(format!("rpkg-{n}"));
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out = out_dir.join(file_name);
    tar_czf(&out, &src);
    (out, src)
}

/// Starts `ftl sync` on the node `root` (which has the package `lk`) with a
/// blessed revision whose post-jump hook sleeps `secs` seconds, and returns
/// once the revision is current: the sync then holds the root's lock for
/// about `secs` seconds more.
pub fn sync_holding_the_lock(w: &World, root: &Path, secs: u32) -> std::process::Child {
    let sleep = format!("sleep {secs}");
    let rev = w.spool_files("lk.tgz", &[("post-jump.sh", &sleep, 0o755)]);
    ok(w, w.tmp.path(), &["jump", "--master", &rev]);
    let mut child = w
        .ftl(root)
        .arg("sync")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ftl sync");
    for _ in 0..100 {
        if current(root, "lk").is_some() {
            return child;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the sync did not make {rev} current within 5 s");
}

/// Runs a Python script (tests build hostile archives with `tarfile`, which
/// writes what GNU tar refuses to).
pub fn python(script: &str) {
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .expect("run python3");
    assert!(status.success(), "python3 failed on:\n{script}");
}

/// `tar -czf out -C src .`
pub fn tar_czf(out: &Path, src: &Path) {
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(out)
        .arg("-C")
        .arg(src)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success(), "tar -czf {}: {status}", out.display());
}

/// The id part of a revision name.
pub fn id_of(rev: &str) -> String {
    rev.split_once('.')
        .map(|(_, i)| i.to_owned())
        .unwrap_or_default()
}

/// What a link of a package points at (its last component), as `readlink` shows it.
pub fn link_target(root: &Path, package: &str, link: &str) -> Option<String> {
    let target = std::fs::read_link(root.join(package).join(link)).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The id `current` points at, read as a user would (`readlink`).
pub fn current(root: &Path, package: &str) -> Option<String> {
    link_target(root, package, "current")
}

pub fn previous(root: &Path, package: &str) -> Option<String> {
    link_target(root, package, "previous")
}

/// Visible revision directories (what `ls revs` shows, dot-entries excluded).
pub fn revs(root: &Path, package: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(package).join("revs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Entries a user would call leftovers: dot-entries under `revs/`, and
/// temporary links in the package directory.
pub fn leftovers(root: &Path, package: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(root.join(package).join("revs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // .unverified-<id> records how a revision was installed.
        .filter(|n| n.starts_with('.') && !n.starts_with(".unverified-"))
        .map(|n| format!("revs/{n}"))
        .collect();
    found.extend(
        std::fs::read_dir(root.join(package))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // .ftl-seen (the idle-sync record), .ftl-failed (revisions
            // backing off), .ftl-wanted (what the bucket wants here, for
            // clean), .ftl-installed (the last install, for status) and
            // .ftl-files (its files' identity, for the next delta) are
            // records, not leftovers.
            .filter(|n| {
                n.starts_with('.')
                    && ![
                        ".ftl-seen",
                        ".ftl-failed",
                        ".ftl-wanted",
                        ".ftl-installed",
                        ".ftl-files",
                    ]
                    .contains(&n.as_str())
            }),
    );
    found.sort();
    found
}

/// Compares two trees (names, kinds, bytes); returns the bytes compared.
pub fn same_tree(got: &Path, want: &Path) -> Result<u64, String> {
    let names = |d: &Path| -> Result<Vec<String>, String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map_err(|e| format!("{}: {e}", d.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    };
    let (g, w) = (names(got)?, names(want)?);
    if g != w {
        return Err(format!("{}: has {g:?}, expected {w:?}", got.display()));
    }
    let mut bytes = 0;
    for n in &w {
        let (gp, wp) = (got.join(n), want.join(n));
        let gm = std::fs::symlink_metadata(&gp).map_err(|e| format!("{}: {e}", gp.display()))?;
        if gm.is_dir() {
            bytes += same_tree(&gp, &wp)?;
        } else {
            let (a, b) = (
                std::fs::read(&gp).map_err(|e| format!("{}: {e}", gp.display()))?,
                std::fs::read(&wp).map_err(|e| format!("{}: {e}", wp.display()))?,
            );
            if a != b {
                return Err(format!(
                    "{}: {} bytes differ from the package's {} bytes",
                    gp.display(),
                    a.len(),
                    b.len()
                ));
            }
            bytes += a.len() as u64;
        }
    }
    Ok(bytes)
}

/// The node invariants for one package, checked as a user would: every visible
/// revision is one of `expected` (id → source tree) and equal to it, byte for
/// byte; `current` and `previous`, where present, resolve to such a revision.
/// Returns the bytes verified.
pub fn check_node(
    root: &Path,
    package: &str,
    expected: &BTreeMap<String, PathBuf>,
) -> Result<u64, String> {
    let revs = root.join(package).join("revs");
    let mut bytes = 0;
    for e in std::fs::read_dir(&revs).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let Some(src) = expected.get(&name) else {
            return Err(format!("unexpected revision {name} in {}", revs.display()));
        };
        bytes += same_tree(&e.path(), src).map_err(|e| format!("revision {name}: {e}"))?;
    }
    for link in ["current", "previous"] {
        let path = root.join(package).join(link);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let Some(id) = link_target(root, package, link) else {
            return Err(format!("{} is not a symlink", path.display()));
        };
        let real = std::fs::canonicalize(&path).map_err(|e| format!("{link} dangles: {e}"))?;
        if real != std::fs::canonicalize(revs.join(&id)).unwrap_or_default()
            || !expected.contains_key(&id)
        {
            return Err(format!("{link} -> {id} is not an installed revision"));
        }
    }
    Ok(bytes)
}

/// Runs a command to its end, or kills it and panics after `limit`: a hang is a
/// failure, never a stuck suite.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The line of stderr without the time that starts it when stderr is
/// neither a terminal nor the journal (as under a test):
/// `2026-12-06T13:45:01Z INFO …` → `INFO …`.
pub fn unstamped(line: &str) -> &str {
    let b = line.as_bytes();
    let stamped = b.len() > 21
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[19] == b'Z'
        && b[20] == b' '
        && line[..4].bytes().all(|c| c.is_ascii_digit());
    if stamped { &line[21..] } else { line }
}

/// The error lines of a failed ftl (without their time): one per failure,
/// at least one, the last lines of stderr (a sync that fails at several
/// revisions reports each once).
pub fn error_lines(out: &std::process::Output) -> Vec<String> {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().map(unstamped).collect();
    let first = lines
        .iter()
        .position(|l| l.starts_with("ftl: error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        lines[first..].iter().all(|l| l.starts_with("ftl: error: ")),
        "the error lines come last: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    lines[first..].iter().map(|l| (*l).to_owned()).collect()
}

/// The error line of a failed ftl (without its time): the last line of
/// stderr, which must say `ftl: error: ` and be the only such line.
pub fn error_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err
        .lines()
        .map(unstamped)
        .filter(|l| l.starts_with("ftl: error: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert_eq!(
        err.lines().last().map(unstamped),
        Some(lines[0]),
        "the error line comes last: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_owned()
}

impl World {
    /// Spool, riding out the one-in-4096 chance that two different files spooled
    /// in the same second get the same revision id (the 0.2.x id format).
    pub fn spool_new(&self, file: &Path) -> String {
        for _ in 0..3 {
            let out = self.spool_output(file);
            if out.status.success() {
                return stdout(&out).trim().to_owned();
            }
            assert!(
                stderr(&out).contains("already exists"),
                "spool failed: {}",
                stderr(&out)
            );
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        panic!("spool of {} kept colliding", file.display());
    }
}

fn base64_url_decode(s: &str) -> Option<String> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn base64_url_encode(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in s.bytes() {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// Replaces the object at `bucket/key` in s3s-fs's files with other bytes of the
/// same size (renamed over it: a body already being sent keeps the old ones), and
/// drops its stored ETag, so that s3s-fs answers with the new content's.
fn replace_object(root: &Path, object_path: &str) {
    let Some((bucket, key)) = object_path.split_once('/') else {
        return;
    };
    let path = root.join(bucket).join(key);
    let Ok(mut bytes) = std::fs::read(&path) else {
        return;
    };
    for b in &mut bytes {
        *b ^= 0x5a;
    }
    let tmp = root.join(bucket).join(format!(".replace-{key}"));
    std::fs::write(&tmp, &bytes).expect("write the replacement");
    std::fs::rename(&tmp, &path).expect("rename the replacement");
    let info = root.join(format!(
        ".bucket-{}.object-{}.internal.json",
        base64_url_encode(bucket),
        base64_url_encode(key)
    ));
    let _ = std::fs::remove_file(info);
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// ListMultipartUploads, which s3s-fs lacks, answered from its files: an open
/// upload is an `.upload-<id>.json` with a
/// `.bucket-<b64>.object-<b64>.upload-<id>.metadata.json` beside it.
fn list_uploads(root: &Path, uri: &http::Uri) -> http::Response<s3s::Body> {
    let bucket = uri.path().trim_matches('/').to_owned();
    let prefix = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("prefix="))
        .map(percent_decode)
        .unwrap_or_default();
    let mut uploads = String::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(".bucket-")
            .and_then(|r| r.strip_suffix(".metadata.json"))
        else {
            continue;
        };
        let Some((b, rest)) = rest.split_once(".object-") else {
            continue;
        };
        let Some((k, id)) = rest.split_once(".upload-") else {
            continue;
        };
        let (Some(b), Some(k)) = (base64_url_decode(b), base64_url_decode(k)) else {
            continue;
        };
        if b == bucket && k.starts_with(&prefix) && root.join(format!(".upload-{id}.json")).exists()
        {
            uploads.push_str(&format!(
                "<Upload><Key>{k}</Key><UploadId>{id}</UploadId><Initiated>2026-01-01T00:00:00.000Z</Initiated></Upload>"
            ));
        }
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>{bucket}</Bucket><Prefix>{prefix}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>{uploads}</ListMultipartUploadsResult>"
    );
    let mut r = http::Response::new(s3s::Body::from(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r
}

/// What a test needs (a tool, root, a mount) must be there: a missing one
/// fails the test, naming it, rather than letting it pass unchecked
/// (.ci/run installs every tool and runs as root).
pub fn require(what: &str, ok: bool) {
    assert!(ok, "{what}: missing (.ci/run installs it and runs as root)");
}

/// Whether `tool` runs (`tool --version` or the given probe arguments).
pub fn has_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The in-process server, which a test needs to inject faults, count
/// requests or write the store's files: such a test fails against an
/// external server (the moto pass of .ci/run skips it by name).
pub fn in_process(w: &World) -> &Server {
    match &w.server {
        Some(s) if !s.is_external() => s,
        _ => panic!("this test needs the in-process server: .ci/run's moto pass must --skip it"),
    }
}
