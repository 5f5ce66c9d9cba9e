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
//! Built by benches/common.sh: `cargo build --release --example s3_server`.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

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
    /// Directory holding one subdirectory per bucket.
    root: PathBuf,
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
        let (service, root) = (service.clone(), root.clone());
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (service, file) = (service.clone(), object_file(&root, &req));
            async move {
                // s3s answers (authentication, headers, errors); only the body
                // of a successful object GET is replaced by a faster read of
                // the same file.
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
                Ok::<_, s3s::HttpError>(resp)
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
