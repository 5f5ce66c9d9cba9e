//! Test harness: a real S3 protocol server (s3s-fs with SigV4 auth, in this
//! process, on 127.0.0.1:0; or the server named by FTL_TEST_S3_ENDPOINT, e.g.
//! moto_server started by .ci/run), and a way to run the ftl binary against it
//! with a clean environment.
#![allow(dead_code)]

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

/// Requests seen by the in-process server, by kind (method, and LIST for
/// bucket listings).
#[derive(Default)]
pub struct Counts(Mutex<BTreeMap<String, u64>>);

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
    /// Answer every UploadPart of part 2 with a 500.
    FailPart2,
    /// Hold every UploadPart for this many milliseconds first.
    SlowParts(u64),
}

pub struct Server {
    pub endpoint: String,
    pub counts: Arc<Counts>,
    pub fault: Arc<Mutex<Fault>>,
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
        let (c, f) = (counts.clone(), fault.clone());
        runtime.spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (service, c, f) = (service.clone(), c.clone(), f.clone());
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let kind = kind_of(&req);
                    c.add(kind.clone());
                    let fault = f.lock().map(|g| g.clone()).unwrap_or(Fault::None);
                    let service = service.clone();
                    async move {
                        if let Fault::SlowDownGet(k) = &fault
                            && kind == "GET"
                            && req.uri().path().contains(k.as_str())
                        {
                            let body =
                                "<Error><Code>SlowDown</Code><Message>injected</Message></Error>";
                            return Ok(http::Response::builder()
                                .status(503)
                                .body(s3s::Body::from(body.to_owned()))
                                .expect("response"));
                        }
                        if let Fault::SlowParts(ms) = fault
                            && req.uri().query().unwrap_or("").contains("partNumber=")
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                        }
                        if fault == Fault::FailPart2
                            && req.uri().query().unwrap_or("").contains("partNumber=2")
                        {
                            let body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
                            return Ok(http::Response::builder()
                                .status(500)
                                .body(s3s::Body::from(body.to_owned()))
                                .expect("response"));
                        }
                        hyper::service::Service::call(&service, req).await
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
        let out = self
            .ftl(self.tmp.path())
            .arg("spool")
            .arg(file)
            .output()
            .expect("run ftl");
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

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
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
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .expect("tar");
    assert!(status.success());
    out
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Server {
    /// Multipart uploads started and neither completed nor aborted.
    pub fn pending_uploads(&self) -> Vec<String> {
        let root = self.fs_root.as_ref().expect("in-process server");
        std::fs::read_dir(root)
            .expect("server root")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    pub fn set_fault(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }

    /// Where the in-process server keeps a bucket's objects.
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.fs_root
            .as_ref()
            .expect("in-process server")
            .join(bucket)
    }
}
