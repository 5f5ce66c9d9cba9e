//! Flags and environment, resolved and validated before any command runs.
//! Nothing here touches the network; the AWS configuration is loaded only
//! when a command asks for the bucket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use crate::bucket::Bucket;
use crate::cli::{ChangeArgs, GlobalArgs, LimitArgs, ReportArgs, RootArgs, SignArgs, WaitArgs};
use crate::names::NameError;
use crate::signing::{AllowedSigners, SigningKey};
use crate::store::{Store, dir::DirStore, s3::S3Store};
use crate::unpack::Limits;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{var} is not set (set it, or pass {flag})")]
    Missing {
        var: &'static str,
        flag: &'static str,
    },
    /// `sync` and `status` without either: both named at once, not one
    /// per try.
    #[error("FTL_BUCKET and FTL_ROOT are not set (set them, or pass --bucket and --root)")]
    MissingBucketAndRoot,
    #[error("invalid FTL_BUCKET {value:?}: {why}")]
    Bucket { value: String, why: &'static str },
    #[error("invalid FTL_ROOT {value:?}: {why}")]
    Root { value: String, why: &'static str },
    #[error(transparent)]
    Aws(#[from] crate::store::s3::ConfigError),
    #[error(transparent)]
    Owner(#[from] crate::root::OwnerError),
    /// A package or revision name on the command line.
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    AllowedSigners(String),
    #[error(
        "invalid {var} {value:?}: expected a duration, seconds or with units, e.g. 90, 90s, 15m, 1h, 1h30m"
    )]
    Duration { var: &'static str, value: String },
    #[error("invalid {var} {value:?}: {why}")]
    NodeId {
        var: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("invalid --wait {0:?}: expected a percentage from 1 to 100, e.g. 95 or 95%")]
    Percent(String),
}

/// Where the bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketLocation {
    /// An S3 bucket, with a key prefix (empty, or ending in `/`).
    S3 { bucket: String, prefix: String },
    /// The local-directory store.
    Dir(PathBuf),
}

impl BucketLocation {
    pub fn parse(value: &str) -> Result<Self, SettingsError> {
        let bad = |why| SettingsError::Bucket {
            value: value.to_owned(),
            why,
        };
        if let Some(path) = value.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// bucket needs an absolute path, e.g. file:///srv/ftl",
                ));
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if value.contains("://") {
            return Err(bad(
                "use a bucket name (set AWS_ENDPOINT_URL for another server), or file:///dir",
            ));
        }
        let (bucket, prefix) = match value.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (value, ""),
        };
        // Lenient on purpose (legacy buckets allow upper case and '_'), strict on
        // what could never be a bucket or would change the request's meaning.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        if !bucket_ok {
            return Err(bad(
                "a bucket name is 3 to 63 letters, digits, '-', '.' or '_'",
            ));
        }
        if prefix.chars().any(|c| c.is_control()) || prefix.split('/').any(|s| s == "..") {
            return Err(bad("the prefix has control characters or '..'"));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

/// What every command may use: the bucket (checked only when asked for).
#[derive(Debug, Clone)]
pub struct Settings {
    bucket: Option<Result<BucketLocation, SettingsError>>,
    /// Object bodies fetched at once (`FTL_CONNECTIONS`).
    connections: usize,
    /// `FTL_ALLOWED_SIGNERS`, read when a command asks for it.
    allowed_signers: Option<PathBuf>,
    /// `FTL_REQUIRE_SIGNERS`.
    require_signers: usize,
    /// `FTL_MAX_BLESS_AGE`, seconds (0: unset).
    max_bless_age: Option<u64>,
}

impl Settings {
    /// Resolve flags (which clap already merged with the environment).
    /// A bad value is reported only by the commands that need it.
    pub fn resolve(args: &GlobalArgs) -> Self {
        let bucket = args
            .bucket
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(BucketLocation::parse);
        Self {
            bucket,
            connections: usize::from(args.connections),
            allowed_signers: args
                .allowed_signers
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            require_signers: usize::from(args.require_signers).max(1),
            max_bless_age: args.max_bless_age,
        }
    }

    /// What a node verifies: the allowed signers, and how many distinct
    /// ones a bless needs; `None` without `FTL_ALLOWED_SIGNERS`.
    pub fn trust(&self) -> Result<Option<crate::sync::verify::Trust>, SettingsError> {
        Ok(self
            .allowed_signers()?
            .map(|allowed| crate::sync::verify::Trust {
                allowed,
                require: self.require_signers,
                max_age: self.max_bless_age.filter(|&s| s > 0),
            }))
    }

    /// The signers this node trusts (`FTL_ALLOWED_SIGNERS`), `None` when
    /// unset. A file that cannot be read, or that has a line ftl cannot
    /// take, is an error: never a silent "trust nothing" or "trust all".
    pub fn allowed_signers(&self) -> Result<Option<Arc<AllowedSigners>>, SettingsError> {
        let Some(path) = &self.allowed_signers else {
            return Ok(None);
        };
        let allowed = AllowedSigners::read(path)
            .map_err(|e| SettingsError::AllowedSigners(format!("FTL_ALLOWED_SIGNERS: {e}")))?;
        if allowed.is_empty() {
            return Err(SettingsError::AllowedSigners(format!(
                "FTL_ALLOWED_SIGNERS: {} lists no key: nothing could ever be installed",
                path.display()
            )));
        }
        Ok(Some(Arc::new(allowed)))
    }

    pub fn bucket_location(&self) -> Result<&BucketLocation, SettingsError> {
        match &self.bucket {
            None => Err(SettingsError::Missing {
                var: "FTL_BUCKET",
                flag: "--bucket",
            }),
            Some(r) => r.as_ref().map_err(Clone::clone),
        }
    }

    /// For the commands that need the bucket and the root: when neither is
    /// set, one error names both.
    pub fn check_with_root(&self, root: &RootSettings) -> Result<(), SettingsError> {
        match (self.bucket_location(), root.path()) {
            (Err(SettingsError::Missing { .. }), Err(SettingsError::Missing { .. })) => {
                Err(SettingsError::MissingBucketAndRoot)
            }
            _ => Ok(()),
        }
    }

    /// Open the bucket; only here is the AWS configuration loaded.
    pub async fn bucket(&self) -> Result<Bucket, SettingsError> {
        let store: Box<dyn Store> = match self.bucket_location()? {
            BucketLocation::Dir(path) => Box::new(DirStore::new(path.clone())),
            BucketLocation::S3 { bucket, prefix } => {
                Box::new(S3Store::connect(bucket.clone(), prefix.clone(), self.connections).await?)
            }
        };
        Ok(Bucket::new(store).with_operator(operator()))
    }
}

/// Who blesses, as the bucket's history records it: `$USER@host` as this
/// client sees itself (`LOGNAME` when `USER` is unset, `uid<N>` when both are).
fn operator() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }));
    let host = hostname().unwrap_or_else(|| String::from("unknown-host"));
    format!("{user}@{host}")
}

/// This machine's host name, as `gethostname` gives it.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is cut at its NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// A duration as ftl's flags take it: seconds (`90`), or numbers with units
/// `s`, `m`, `h`, `d` (`90s`, `15m`, `1h30m`).
pub fn duration(var: &'static str, value: &str) -> Result<Duration, SettingsError> {
    let bad = || SettingsError::Duration {
        var,
        value: value.to_owned(),
    };
    let v = value.trim();
    if v.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// How often nodes report at least (`FTL_REPORT_EVERY`), at least a minute.
fn report_every(value: &str) -> Result<Duration, SettingsError> {
    Ok(duration("FTL_REPORT_EVERY", value)?.max(Duration::from_secs(60)))
}

/// When a report is stale: a node that syncs rewrites its report at least
/// every FTL_REPORT_EVERY (once a sync runs after it passed); twice that,
/// plus 5 minutes for a sync's splay and duration, means it stopped.
pub fn stale_after(report_every_value: &str) -> Result<Duration, SettingsError> {
    Ok(report_every(report_every_value)? * 2 + Duration::from_secs(300))
}

/// This node as a reporter (`FTL_REPORT`), `None` when it does not report.
pub fn reporter(args: &ReportArgs) -> Result<Option<crate::fleet::Reporter>, SettingsError> {
    if !args.report {
        return Ok(None);
    }
    let every = report_every(&args.report_every)?;
    let (var, value) = match args.node_id.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => ("FTL_NODE_ID", v.to_owned()),
        None => (
            "the host name (set FTL_NODE_ID)",
            hostname().unwrap_or_default(),
        ),
    };
    let node = value
        .parse()
        .map_err(|why| SettingsError::NodeId { var, value, why })?;
    Ok(Some(crate::fleet::Reporter { node, every }))
}

/// `--wait [PERCENT]` and `--wait-timeout`: `None` without `--wait`. The
/// first pause between two looks is 2 s (`FTL_TEST_WAIT_POLL_MS` shortens
/// it, for tests only).
pub fn wait_for(
    args: &WaitArgs,
    report: &ReportArgs,
    revision: crate::names::RevisionName,
) -> Result<Option<crate::fleet::WaitFor>, SettingsError> {
    let Some(p) = &args.wait else {
        return Ok(None);
    };
    let percent = p
        .trim()
        .trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| SettingsError::Percent(p.clone()))?;
    let first_poll = std::env::var("FTL_TEST_WAIT_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2));
    Ok(Some(crate::fleet::WaitFor {
        revision,
        percent,
        timeout: duration("--wait-timeout", &args.wait_timeout)?,
        first_poll,
        stale_after: stale_after(&report.report_every)?,
    }))
}

/// The node's root, for the commands that read it.
#[derive(Debug, Clone)]
pub struct RootSettings {
    root: Option<Result<PathBuf, SettingsError>>,
}

impl RootSettings {
    pub fn resolve(args: &RootArgs) -> Self {
        let root = args
            .root
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(resolve_root);
        Self { root }
    }

    pub fn path(&self) -> Result<&Path, SettingsError> {
        match &self.root {
            None => Err(SettingsError::Missing {
                var: "FTL_ROOT",
                flag: "--root",
            }),
            Some(r) => r.as_deref().map_err(Clone::clone),
        }
    }
}

/// For the commands that change the node.
#[derive(Debug, Clone)]
pub struct ChangeSettings {
    pub root: RootSettings,
    pub lock_timeout: Duration,
    pub hook_timeout: Option<Duration>,
}

impl ChangeSettings {
    pub fn resolve(args: &ChangeArgs) -> Self {
        Self {
            root: RootSettings::resolve(&args.root),
            lock_timeout: Duration::from_secs(args.lock_timeout),
            hook_timeout: (args.hook_timeout > 0).then(|| Duration::from_secs(args.hook_timeout)),
        }
    }
}

/// 0 means no limit, as for the hook timeout.
pub fn limits(args: &LimitArgs) -> Limits {
    let cap = |n: u64| Some(n).filter(|n| *n > 0).unwrap_or(u64::MAX);
    Limits {
        max_unpacked_bytes: cap(args.max_unpacked_bytes),
        max_entries: cap(args.max_entries),
    }
}

/// `FTL_OWNER`, resolved to ids (an empty value is no owner).
pub fn owner(value: Option<&str>) -> Result<Option<crate::root::Owner>, SettingsError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => Ok(Some(crate::root::Owner::parse(v)?)),
    }
}

/// The signing key of `--sign`/`FTL_SIGNING_KEY`, loaded (a passphrase is
/// asked on the terminal); `None` when not given.
pub async fn signing_key(args: &SignArgs) -> Result<Option<Arc<SigningKey>>, SettingsError> {
    let Some(path) = args.key.clone().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let agent = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
    crate::task::blocking(
        move || {
            SigningKey::load(&path, agent)
                .map(|k| Some(Arc::new(k)))
                .map_err(|e| SettingsError::Key(e.to_string()))
        },
        SettingsError::Key,
    )
    .await
}

/// Names given on the command line, parsed before any I/O.
pub fn names<T: std::str::FromStr<Err = NameError>>(
    values: &[String],
) -> Result<Vec<T>, SettingsError> {
    Ok(values
        .iter()
        .map(|v| v.parse())
        .collect::<Result<Vec<T>, _>>()?)
}

fn resolve_root(p: &Path) -> Result<PathBuf, SettingsError> {
    if p.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(SettingsError::Root {
            value: p.display().to_string(),
            why: "contains a NUL byte",
        });
    }
    // Relative roots are made absolute once, so hooks and symlinks see one path.
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .map_err(|_| SettingsError::Root {
                value: p.display().to_string(),
                why: "relative, and the current directory is unreadable",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hung hook must not hold the root's lock forever: without a flag or
    /// variable, hooks are killed after 10 minutes; 0 still means no limit.
    #[test]
    fn hooks_have_a_default_timeout() {
        use clap::Parser;
        let change = |args: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(args).unwrap();
            match cli.command {
                crate::cli::Command::Sync(a) => ChangeSettings::resolve(&a.node),
                _ => unreachable!(),
            }
        };
        // SAFETY: no other test of this binary reads or writes this variable.
        unsafe { std::env::remove_var("FTL_HOOK_TIMEOUT") };
        assert_eq!(
            change(&["ftl", "sync"]).hook_timeout,
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            change(&["ftl", "sync", "--hook-timeout", "0"]).hook_timeout,
            None
        );
    }

    #[test]
    fn durations() {
        let d = |v| duration("X", v).map(|d| d.as_secs());
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("15m"), Ok(900));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("2d"), Ok(172_800));
        for bad in ["", "m", "1x", "1h30", "-5", "1.5h", "99999999999999999999d"] {
            assert!(d(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bucket_values() {
        assert_eq!(
            BucketLocation::parse("deploys").unwrap(),
            BucketLocation::S3 {
                bucket: "deploys".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            BucketLocation::parse("deploys/prod/web/").unwrap(),
            BucketLocation::S3 {
                bucket: "deploys".into(),
                prefix: "prod/web/".into()
            }
        );
        assert_eq!(
            BucketLocation::parse("file:///srv/ftl").unwrap(),
            BucketLocation::Dir("/srv/ftl".into())
        );
        for bad in [
            "file://rel",
            "s3://x",
            "ab",
            "a b c",
            "bu\ncket",
            "bucket/../x",
            "bucket/a\u{7}",
        ] {
            assert!(BucketLocation::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
