//! A bucket in another region than the configured one. S3 answers a request
//! signed for the wrong region with a 301 PermanentRedirect (or a 400) naming
//! the bucket's region; ftl follows it, says once which region to configure,
//! and fails in one line when the server keeps redirecting. And ftl 0.2.6's
//! `AWS_DEFAULT_REGION=us-east`, which means us-east-1.
//!
//! The in-process server plays S3's part: with `Fault::Region` set, a request
//! whose SigV4 credential scope names another region than the buckets' gets
//! S3's wrong-region answer (see `WrongRegion` in common/mod.rs).

mod common;

use common::{
    Backend, RegionAnswer, Server, World, WrongRegion, current, error_line, id_of, output_within,
    stderr, stdout,
};
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

/// A world on the in-process server (not on an external one, which cannot
/// answer for a region).
fn world() -> World {
    let w = World::new(Backend::S3);
    // Not run against an external server (see .ci/run): say so if it is.
    assert!(
        w.server.as_ref().is_some_and(|s| !s.is_external()),
        "the region suite needs the in-process server: unset FTL_TEST_S3_ENDPOINT"
    );
    w
}

fn server(w: &World) -> &Server {
    w.server.as_ref().expect("S3 world")
}

fn run(cmd: &mut Command) -> Output {
    output_within(cmd, LIMIT)
}

fn succeeds(out: &Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed: {}", stderr(out));
    stderr(out)
}

/// The warning of a run that met the bucket in `bucket_region` after asking in `asked`.
fn warning(w: &World, bucket_region: &str, asked: &str) -> String {
    format!(
        "the bucket {} is in {bucket_region}, not {asked}: set AWS_REGION={bucket_region} to skip a round trip",
        w.bucket
    )
}

/// spool, bless, list --master and sync, each configured for us-east-1 while
/// the bucket is in eu-west-1: each succeeds and warns exactly once.
fn followed(answer: RegionAnswer) {
    let w = world();
    let s = server(&w);
    s.set_fault(WrongRegion::fault("eu-west-1", answer));
    let warned = warning(&w, "eu-west-1", "us-east-1");
    let once = |err: &str, what: &str| {
        assert_eq!(err.matches(&warned).count(), 1, "{what}: {err}");
        assert_eq!(err.matches("AWS_REGION").count(), 1, "{what}: {err}");
    };

    let pkg = common::package(w.tmp.path(), "app.tgz", &[("index.html", "hi", 0o644)]);
    let out = run(w.ftl(w.tmp.path()).arg("spool").arg(&pkg));
    once(&succeeds(&out, "spool"), "spool");
    let rev = stdout(&out).trim().to_owned();
    assert!(rev.starts_with("app.") && !rev.contains('\n'), "{rev:?}");
    // The first request (a HEAD) was answered wrong-region, and only it (and,
    // when it named no region, the HeadBucket that asked for it).
    let expected = if answer == RegionAnswer::Unnamed {
        2
    } else {
        1
    };
    assert_eq!(s.wrong_region_answers(), expected, "spool");

    let out = run(w.ftl(w.tmp.path()).args(["jump", "--master", &rev]));
    once(&succeeds(&out, "jump --master"), "jump --master");

    let out = run(w.ftl(w.tmp.path()).args(["list", "--master"]));
    once(&succeeds(&out, "list --master"), "list --master");
    assert_eq!(stdout(&out).trim(), "app");
    let out = run(w.ftl(w.tmp.path()).args(["list", "--master", "app"]));
    once(&succeeds(&out, "list --master app"), "list --master app");
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with(&rev) && l.ends_with("(active)")),
        "{}",
        stdout(&out)
    );

    let root = w.node("node", &["app", "other"]);
    let out = run(w.ftl(&root).arg("sync"));
    once(&succeeds(&out, "sync"), "sync");
    assert_eq!(current(&root, "app"), Some(id_of(&rev)));
    assert_eq!(
        std::fs::read_to_string(root.join("app/current/index.html")).ok(),
        Some("hi".into())
    );

    // Configured as the warning says: no warning, no wrong-region answer.
    let before = s.wrong_region_answers();
    let out = run(w.ftl(&root).env("AWS_REGION", "eu-west-1").arg("sync"));
    let err = succeeds(&out, "sync in eu-west-1");
    assert!(!err.contains("AWS_REGION"), "{err}");
    assert_eq!(s.wrong_region_answers(), before);
}

/// S3's usual answer: 301 PermanentRedirect with `x-amz-bucket-region`.
#[test]
fn permanent_redirect_is_followed() {
    followed(RegionAnswer::Redirect);
}

/// 400 AuthorizationHeaderMalformed, the region in the body's `<Region>`.
#[test]
fn authorization_header_malformed_is_followed() {
    followed(RegionAnswer::Malformed);
}

/// A redirect naming no region: HeadBucket's answer names it.
#[test]
fn unnamed_redirect_asks_head_bucket() {
    followed(RegionAnswer::Unnamed);
}

/// A multipart spool (64 MiB and more) in the wrong region: the client switches
/// at the first request, and parts, completion and all go to the bucket's region.
#[test]
fn multipart_spool_is_followed() {
    let w = world();
    let s = server(&w);
    s.set_fault(WrongRegion::fault("ap-southeast-2", RegionAnswer::Redirect));
    let file = w.path("big.bin");
    let mut rng = common::Rng::new(7);
    std::fs::write(&file, rng.bytes(65 << 20)).unwrap();
    let out = run(w.ftl(w.tmp.path()).arg("spool").arg(&file));
    let err = succeeds(&out, "spool");
    assert_eq!(
        err.matches(&warning(&w, "ap-southeast-2", "us-east-1"))
            .count(),
        1,
        "{err}"
    );
    assert_eq!(s.wrong_region_answers(), 1);
    assert!(s.pending_uploads().is_empty(), "{:?}", s.pending_uploads());
    let rev = stdout(&out).trim().to_owned();
    let out = run(w.ftl(w.tmp.path()).args(["list", "--master", "big"]));
    assert!(stdout(&out).contains(&rev), "{}", stderr(&out));
    let _ = std::fs::remove_file(&file);
}

/// A server that answers wrong-region even in the region it names: each command
/// follows it once, then fails with one line naming the region; no loop.
#[test]
fn endless_redirects_fail_in_one_line() {
    let w = world();
    let s = server(&w);
    let pkg = common::package(w.tmp.path(), "app.tgz", &[("a", "a", 0o644)]);
    let rev = w.spool(&pkg);
    s.set_fault(WrongRegion::fault("eu-west-1", RegionAnswer::Always));
    let root = w.node("node", &["app"]);
    let warned = warning(&w, "eu-west-1", "us-east-1");
    for args in [
        vec!["spool", pkg.to_str().unwrap()],
        vec!["list", "--master"],
        vec!["jump", "--master", &rev],
        vec!["sync"],
    ] {
        let before = s.wrong_region_answers();
        let out = run(w.ftl(&root).args(&args));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let line = error_line(&out);
        for needle in ["eu-west-1", "HTTP 301", "AWS_REGION"] {
            assert!(line.contains(needle), "{args:?}: {needle:?} not in {line}");
        }
        assert_eq!(
            stderr(&out).matches(&warned).count(),
            1,
            "{args:?}: {}",
            stderr(&out)
        );
        let answered = s.wrong_region_answers() - before;
        // Once, then once more in eu-west-1 (sync may have a few requests in flight).
        assert!((2..=8).contains(&answered), "{args:?}: {answered} answers");
    }
    assert_eq!(current(&root, "app"), None);
}

/// ftl 0.2.6's README name for the region: `us-east` is us-east-1, whether given
/// as AWS_DEFAULT_REGION or AWS_REGION; requests are signed for us-east-1.
#[test]
fn us_east_means_us_east_1() {
    let w = world();
    let s = server(&w);
    s.set_fault(WrongRegion::fault("us-east-1", RegionAnswer::Redirect));
    let root = w.node("node", &["app"]);
    let pkg = common::package(w.tmp.path(), "app.tgz", &[("a", "a", 0o644)]);
    let out = run(w
        .ftl(&root)
        .env("AWS_DEFAULT_REGION", "us-east")
        .arg("spool")
        .arg(&pkg));
    let err = succeeds(&out, "spool");
    assert!(!err.contains("WARN"), "{err}");
    let rev = stdout(&out).trim().to_owned();
    for args in [
        vec!["jump", "--master", &rev],
        vec!["list", "--master"],
        vec!["sync"],
    ] {
        let out = run(w
            .ftl(&root)
            .env("AWS_DEFAULT_REGION", "us-east")
            .args(&args));
        let err = succeeds(&out, &args.join(" "));
        assert!(!err.contains("WARN"), "{args:?}: {err}");
    }
    assert_eq!(current(&root, "app"), Some(id_of(&rev)));
    let out = run(w
        .ftl(&root)
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_REGION", "us-east")
        .args(["list", "--master", "app"]));
    let err = succeeds(&out, "list --master with AWS_REGION=us-east");
    assert!(!err.contains("WARN"), "{err}");
    assert_eq!(s.wrong_region_answers(), 0);

    // The server does tell regions apart: us-east-2 is not us-east-1.
    let out = run(w
        .ftl(&root)
        .env("AWS_DEFAULT_REGION", "us-east-2")
        .args(["list", "--master"]));
    let err = succeeds(&out, "list --master in us-east-2");
    assert_eq!(
        err.matches(&warning(&w, "us-east-1", "us-east-2")).count(),
        1,
        "{err}"
    );
}

/// A stand-in for the EC2 instance metadata service on loopback: an IMDSv2
/// token, the role `ftl-node` with the test server's keys, and `region` as the
/// instance's region. Counts the requests by path.
struct Imds {
    endpoint: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Imds {
    fn start(region: &'static str) -> Imds {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        // A worker thread of its own keeps serving while the test runs ftl.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let log = seen.clone();
        rt.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    log.lock().unwrap().push(path.clone());
                    let (status, body) = match path.as_str() {
                        "/latest/api/token" => (200, "stand-in-token".to_owned()),
                        "/latest/meta-data/placement/region" => (200, region.to_owned()),
                        "/latest/meta-data/iam/security-credentials/" => (200, "ftl-node".into()),
                        "/latest/meta-data/iam/security-credentials/ftl-node" => (
                            200,
                            format!(
                                r#"{{"Code":"Success","LastUpdated":"2026-12-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"{}","SecretAccessKey":"{}","Token":"stand-in-session","Expiration":"2099-01-01T00:00:00Z"}}"#,
                                common::ACCESS_KEY,
                                common::SECRET_KEY
                            ),
                        ),
                        _ => (404, String::new()),
                    };
                    let resp = http::Response::builder()
                        .status(status)
                        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
                        .body(s3s::Body::from(body));
                    async move { resp }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), svc),
                );
            }
        });
        Imds {
            endpoint,
            seen,
            _runtime: rt,
        }
    }

    fn requests(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.as_str() == path)
            .count()
    }
}

/// SPEC, decided 2026-12-02: taking the region from the environment (no
/// region lookup) must not switch the metadata service off for credentials.
/// A node with no keys in its environment reaches the bucket with its instance
/// role, whether the region is configured (`us-east`, or a wrong one, which is
/// followed) or not (then us-east-1, never looked up from the metadata service).
#[test]
fn instance_role_credentials_with_or_without_a_region() {
    let w = world();
    let s = server(&w);
    let rev = w.spool_files("app.tgz", &[("a", "a", 0o644)]);
    let imds = Imds::start("eu-west-1");
    let role = "/latest/meta-data/iam/security-credentials/ftl-node";
    let region = "/latest/meta-data/placement/region";
    let node = |cmd: &mut Command| -> Output {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.endpoint);
        run(cmd)
    };
    let list = |region_var: Option<&str>| -> Output {
        let mut cmd = w.ftl(w.tmp.path());
        cmd.env_remove("AWS_DEFAULT_REGION")
            .args(["list", "--master", "app"]);
        if let Some(r) = region_var {
            cmd.env("AWS_DEFAULT_REGION", r);
        }
        node(&mut cmd)
    };

    // The region configured: no lookup, credentials from the instance role.
    let out = list(Some("us-east"));
    let err = succeeds(&out, "list --master with AWS_DEFAULT_REGION=us-east");
    assert!(stdout(&out).contains(&rev), "{err}");
    assert_eq!(imds.requests(region), 0);
    assert!(imds.requests(role) >= 1, "{:?}", imds.seen.lock().unwrap());

    // The bucket in eu-west-1: followed, still with the instance role's keys.
    s.set_fault(WrongRegion::fault("eu-west-1", RegionAnswer::Redirect));
    let out = list(Some("us-east"));
    let err = succeeds(&out, "list --master in the wrong region");
    assert_eq!(
        err.matches(&warning(&w, "eu-west-1", "us-east-1")).count(),
        1,
        "{err}"
    );
    assert!(stdout(&out).contains(&rev), "{err}");

    // No region configured (issue 14, item 6): us-east-1, without asking the
    // metadata service for a region; its credentials are still used, and the
    // bucket in eu-west-1 is followed with ftl's one warning, no SDK dump.
    let role_before = imds.requests(role);
    let out = list(None);
    let err = succeeds(&out, "list --master with no region configured");
    assert!(stdout(&out).contains(&rev), "{err}");
    assert_eq!(imds.requests(region), 0, "{:?}", imds.seen.lock().unwrap());
    assert!(imds.requests(role) > role_before, "instance role not used");
    assert_eq!(
        err.matches(&warning(&w, "eu-west-1", "us-east-1")).count(),
        1,
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "only ftl's line: {err}");
}

/// Issue 14, item 6: the SDK's own warnings (debug dumps, which cron mails
/// every minute) never reach the operator raw: at most one line of ftl's.
#[test]
fn sdk_warnings_become_one_line_of_ours() {
    let w = world();
    w.spool_files("app.tgz", &[("a", "a", 0o644)]);
    // Two settings the SDK warns about, each in its own words.
    let out = run(w
        .ftl(w.tmp.path())
        .env("AWS_USE_DUALSTACK_ENDPOINT", "perhaps")
        .env("AWS_USE_FIPS_ENDPOINT", "perhaps")
        .args(["list", "--master"]));
    let err = succeeds(&out, "list --master");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("WARN the AWS SDK reported a problem (aws_config"),
        "{err}"
    );
    assert!(!err.contains("invalid value"), "{err}");
    // Asked for, they are shown.
    let out = run(w
        .ftl(w.tmp.path())
        .env("AWS_USE_DUALSTACK_ENDPOINT", "perhaps")
        .env("FTL_LOG", "aws_config=warn")
        .args(["list", "--master"]));
    assert!(succeeds(&out, "list --master").contains("invalid value"));
}
