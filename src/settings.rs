//! Flags and environment, resolved and validated before any command runs.
//! Nothing here touches the network; the AWS configuration is loaded only
//! when a command asks for the bucket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bucket::Bucket;
use crate::cli::GlobalArgs;
use crate::store::{Store, dir::DirStore, s3::S3Store};
use crate::unpack::Limits;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{var} is not set (set it, or pass {flag})")]
    Missing {
        var: &'static str,
        flag: &'static str,
    },
    #[error("invalid FTL_BUCKET {value:?}: {why}")]
    Bucket { value: String, why: &'static str },
    #[error("invalid FTL_ROOT {value:?}: {why}")]
    Root { value: String, why: &'static str },
    #[error(transparent)]
    Aws(#[from] crate::store::s3::ConfigError),
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

#[derive(Debug, Clone)]
pub struct Settings {
    bucket: Option<Result<BucketLocation, SettingsError>>,
    root: Option<Result<PathBuf, SettingsError>>,
    pub lock_timeout: Duration,
    pub hook_timeout: Option<Duration>,
    /// Caps on what one revision may unpack to (sync).
    pub limits: Limits,
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
        let root = args
            .root
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
            .map(resolve_root);
        Self {
            bucket,
            root,
            lock_timeout: Duration::from_secs(args.lock_timeout),
            hook_timeout: (args.hook_timeout > 0).then(|| Duration::from_secs(args.hook_timeout)),
            // 0 means no limit, as for the hook timeout.
            limits: Limits {
                max_unpacked_bytes: Some(args.max_unpacked_bytes)
                    .filter(|n| *n > 0)
                    .unwrap_or(u64::MAX),
                max_entries: Some(args.max_entries)
                    .filter(|n| *n > 0)
                    .unwrap_or(u64::MAX),
            },
        }
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

    pub fn root(&self) -> Result<&Path, SettingsError> {
        match &self.root {
            None => Err(SettingsError::Missing {
                var: "FTL_ROOT",
                flag: "--root",
            }),
            Some(r) => r.as_deref().map_err(Clone::clone),
        }
    }

    /// Open the bucket; only here is the AWS configuration loaded.
    pub async fn bucket(&self) -> Result<Bucket, SettingsError> {
        let store: Box<dyn Store> = match self.bucket_location()? {
            BucketLocation::Dir(path) => Box::new(DirStore::new(path.clone())),
            BucketLocation::S3 { bucket, prefix } => {
                Box::new(S3Store::connect(bucket.clone(), prefix.clone()).await?)
            }
        };
        Ok(Bucket::new(store))
    }
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
