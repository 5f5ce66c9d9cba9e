//! The S3 server of the benchmarks: s3s-fs with SigV4 on (the same store, the
//! same protocol code, the same command line as the `s3s-fs` binary), except
//! that object bodies are read from disk 256 KiB at a time.
//!
//! s3s-fs 0.14 streams a GET 4 KiB per read, each read a hop through tokio's
//! blocking pool: about 0.5 s of CPU per 110 MB served. On a 2-core machine
//! that CPU is taken from the client being measured, so the benchmark would
//! measure the server. Every client (ftl, aws-cli, rclone, curl) gets the
//! same faster server.
//!
//! With `--rate` and `--delay-ms` it serves through a modelled wide-area link
//! (the kernel of the benchmark machines has no netem): every connection's
//! response bodies are paced to `--rate` bytes per second (server → client, as
//! S3 caps one connection), and every request is answered `--delay-ms` late
//! (a round trip). Several connections get the rate each, as on S3.
//!
//! Built by benches/common.sh: `cargo build --release --example s3_server`.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::service::S3ServiceBuilder;
use s3s::stream::ByteStream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Size of one read from an object's file.
const CHUNK: usize = 256 << 10;

#[derive(Parser)]
struct Opt {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    /// Bytes per second each connection's response bodies are paced to (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Milliseconds added before every answer (0: none).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Directory holding one subdirectory per bucket.
    root: PathBuf,
}

/// Pieces a paced body is sent in: small enough that the pace is smooth.
const PACE_PIECE: usize = 64 << 10;

/// How far behind its schedule a connection may catch up.
const SLACK: Duration = Duration::from_millis(20);

/// When a connection may send its next byte, at its rate.
struct Pacer {
    rate: u64,
    next: Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// Waits for the link to carry `len` bytes after everything sent before.
    async fn carry(&self, len: usize) {
        let took = Duration::from_secs_f64(len as f64 / self.rate as f64);
        let done = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            // A sleep ends up to a millisecond late: a piece sent late may
            // catch up (up to SLACK), or the link would run below its rate.
            let now = tokio::time::Instant::now();
            let start = (*next).max(now.checked_sub(SLACK).unwrap_or(now));
            *next = start + took;
            *next
        };
        tokio::time::sleep_until(done).await;
    }
}

/// A response body sent through `pacer`, in pieces of at most [`PACE_PIECE`].
fn paced(body: s3s::Body, pacer: Arc<Pacer>) -> s3s::Body {
    let pieces = body.flat_map(|item| {
        let items: Vec<Result<Bytes, BoxError>> = match item {
            Ok(chunk) => (0..chunk.len())
                .step_by(PACE_PIECE)
                .map(|i| Ok(chunk.slice(i..(i + PACE_PIECE).min(chunk.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    });
    let stream = pieces.then(move |item| {
        let pacer = pacer.clone();
        async move {
            if let Ok(piece) = &item {
                pacer.carry(piece.len()).await;
            }
            item
        }
    });
    let body: s3s::stream::DynByteStream =
        Box::pin(FileBody(Box::pin(SyncStream(Mutex::new(Box::pin(stream))))));
    s3s::Body::from(body)
}

/// Makes a `Send` stream `Sync` (s3s wants both), by a lock nobody contends.
struct SyncStream<S>(Mutex<Pin<Box<S>>>);

impl<S: Stream + Send> Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.lock() {
            Ok(mut inner) => inner.as_mut().poll_next(cx),
            Err(_) => Poll::Ready(None),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An object's bytes as s3s wants a body.
struct FileBody(Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send + Sync>>);

impl Stream for FileBody {
    type Item = Result<Bytes, BoxError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl ByteStream for FileBody {}

/// `bytes FIRST-LAST/TOTAL` of a Content-Range header.
fn content_range(value: &str) -> Option<(u64, u64)> {
    let (first, last) = value
        .strip_prefix("bytes ")?
        .split('/')
        .next()?
        .split_once('-')?;
    let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
    Some((first, last.checked_sub(first)? + 1))
}

/// Streams `len` bytes of `path` from `offset`.
async fn file_body(path: &Path, offset: u64, len: u64) -> std::io::Result<s3s::Body> {
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(SeekFrom::Start(offset)).await?;
    let reader = file.take(len);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, CHUNK)
        .map(|r| r.map_err(|e| Box::new(e) as BoxError));
    let body: s3s::stream::DynByteStream = Box::pin(FileBody(Box::pin(stream)));
    Ok(s3s::Body::from(body))
}

/// The file s3s-fs keeps `/<bucket>/<key>` in, for a plain object GET.
fn object_file(root: &Path, req: &http::Request<hyper::body::Incoming>) -> Option<PathBuf> {
    // The Rust SDK tags its requests with `?x-id=GetObject`; any other
    // parameter (a listing, a part, a version) goes to s3s-fs unchanged.
    let plain = |q: &str| q.split('&').all(|p| p.is_empty() || p.starts_with("x-id="));
    if req.method() != http::Method::GET || !req.uri().query().is_none_or(plain) {
        return None;
    }
    let path = req.uri().path().strip_prefix('/')?;
    let (bucket, key) = path.split_once('/')?;
    if bucket.is_empty() || key.is_empty() || path.contains("..") || path.contains('%') {
        return None;
    }
    Some(root.join(bucket).join(key))
}

fn main() -> Result<(), BoxError> {
    let opt = Opt::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(opt))
}

async fn serve(opt: Opt) -> Result<(), BoxError> {
    let fs =
        s3s_fs::FileSystem::new(&opt.root).map_err(|e| format!("{}: {e:?}", opt.root.display()))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        opt.access_key,
        opt.secret_key,
    ));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind((opt.host.as_str(), opt.port)).await?;
    let http = ConnBuilder::new(TokioExecutor::new());
    let root = opt.root.clone();
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        // As S3's own front ends: an answer's head and its body go out as they are
        // written. With Nagle's algorithm a body written after its head (s3s streams
        // it from the file) waits for the client's delayed ACK: 40 ms for a small
        // object, a stall the bench would charge to whoever asked.
        let _ = socket.set_nodelay(true);
        let (service, root) = (service.clone(), root.clone());
        // One pace per connection: its answers share its rate, one after another.
        let pacer = (opt.rate > 0).then(|| {
            Arc::new(Pacer {
                rate: opt.rate,
                next: Mutex::new(tokio::time::Instant::now()),
            })
        });
        let delay = Duration::from_millis(opt.delay_ms);
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (service, file) = (service.clone(), object_file(&root, &req));
            let pacer = pacer.clone();
            async move {
                let resp = answer(service, file, req).await?;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, s3s::HttpError>(match pacer {
                    Some(pacer) => resp.map(|body| paced(body, pacer)),
                    None => resp,
                })
            }
        });
        let conn = http
            .serve_connection(TokioIo::new(socket), svc)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// s3s's answer, with the body of a successful object GET read faster.
async fn answer(
    service: s3s::service::S3Service,
    file: Option<PathBuf>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
    // s3s answers (authentication, headers, errors); only the body of a
    // successful object GET is replaced by a faster read of the same file.
    let mut resp = hyper::service::Service::call(&service, req).await?;
    let Some(file) = file else {
        return Ok(resp);
    };
    let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let span = match resp.status() {
        http::StatusCode::OK => header(http::header::CONTENT_LENGTH)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|len| (0, len)),
        http::StatusCode::PARTIAL_CONTENT => {
            header(http::header::CONTENT_RANGE).and_then(content_range)
        }
        _ => None,
    };
    if let Some((offset, len)) = span
        && let Ok(body) = file_body(&file, offset, len).await
    {
        *resp.body_mut() = body;
    }
    Ok(resp)
}
