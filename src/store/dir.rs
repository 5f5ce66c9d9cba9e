//! The `file://` store: a local directory with the bucket's key layout.
//! Every write is atomic (temporary file, then link or rename), so a reader
//! never sees a partial object, and create-only writes are race-free.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::{
    Expect, Fresh, Object, ObjectInfo, ObjectMeta, Progress, Result, Store, StoreError, Text,
};

pub struct DirStore {
    dir: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

impl DirStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Keys are flat names; anything that could leave the directory or hit
    /// our own dot-files is refused.
    fn path(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty() || key.starts_with('.') || key.contains(['/', '\0']) {
            return Err(StoreError::Other {
                what: format!("key {key:?}"),
                detail: "not a valid key for a directory store".into(),
            });
        }
        Ok(self.dir.join(key))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!(".meta.{key}"))
    }

    fn temp_path(&self, key: &str) -> PathBuf {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!(".tmp.{key}.{}.{n}", std::process::id()))
    }

    fn check_dir(&self) -> Result<()> {
        match fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::NotADirectory(self.dir.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NoDirectory(self.dir.clone()))
            }
            Err(e) => Err(StoreError::Io {
                what: format!("cannot read the bucket directory {}", self.dir.display()),
                source: e,
            }),
        }
    }

    fn io(&self, what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Io { what, source }
    }
}

fn read_meta(path: &Path) -> HashMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn version_of(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Run blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    crate::task::blocking(f, |detail| StoreError::Other {
        what: "directory store".into(),
        detail,
    })
    .await
}

impl DirStore {
    fn clone_handle(&self) -> Self {
        Self {
            dir: self.dir.clone(),
        }
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check_dir()?;
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(self.io(self.dir.display().to_string()))?;
        for entry in entries {
            let entry = entry.map_err(self.io(self.dir.display().to_string()))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.starts_with(prefix) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                // No ETag here: the change time and size stand for one.
                let etag = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| format!("{}.{:09}-{}", d.as_secs(), d.subsec_nanos(), meta.len()))
                    .unwrap_or_default();
                out.push(ObjectInfo {
                    key: name,
                    size: meta.len(),
                    etag,
                    modified: meta.modified().ok(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn head_sync(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(ObjectMeta {
                size: m.len(),
                metadata: read_meta(&self.meta_path(key)),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_dir()?;
                Ok(None)
            }
            Err(e) => Err(self.io(path.display().to_string())(e)),
        }
    }

    fn put_file_sync(
        &self,
        key: &str,
        src: &Path,
        metadata: &HashMap<String, String>,
        progress: Option<Progress>,
    ) -> Result<()> {
        self.check_dir()?;
        let dest = self.path(key)?;
        if dest.exists() {
            return Err(StoreError::AlreadyExists { key: key.into() });
        }
        let tmp = self.temp_path(key);
        let result = (|| {
            let mut input = fs::File::open(src).map_err(self.io(src.display().to_string()))?;
            let mut out = fs::File::create_new(&tmp).map_err(self.io(tmp.display().to_string()))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            loop {
                let n = input
                    .read(&mut buf)
                    .map_err(self.io(src.display().to_string()))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])
                    .map_err(self.io(tmp.display().to_string()))?;
                sent += n as u64;
                if let Some(p) = &progress {
                    p(sent);
                }
            }
            out.sync_all().map_err(self.io(tmp.display().to_string()))?;
            // link(2) fails if the key exists: create-only without a race.
            fs::hard_link(&tmp, &dest).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    StoreError::AlreadyExists { key: key.into() }
                } else {
                    self.io(dest.display().to_string())(e)
                }
            })?;
            // Only the winner of that race writes the metadata: a loser
            // writing it first replaced the winner's digest with its own.
            let meta: String = metadata.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            write_atomic(&self.meta_path(key), meta.as_bytes(), &self.temp_path(key)).map_err(|e| {
                // Not published without its digest: the spool failed.
                let _ = fs::remove_file(&dest);
                self.io(format!("metadata of {key}"))(e)
            })
        })();
        let _ = fs::remove_file(&tmp);
        result
    }

    fn get_text_sync(&self, key: &str) -> Result<Option<Text>> {
        let path = self.path(key)?;
        // The time from the file that was read, not from a second look-up.
        let read = fs::File::open(&path).and_then(|mut f| {
            let modified = f.metadata()?.modified().ok();
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok((bytes, modified))
        });
        match read {
            Ok((bytes, modified)) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                Ok(Some(Text {
                    version: version_of(&text),
                    text,
                    modified,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.check_dir()?;
                Ok(None)
            }
            Err(e) => Err(self.io(path.display().to_string())(e)),
        }
    }

    fn put_text_sync(&self, key: &str, text: &str, expect: Expect) -> Result<()> {
        self.check_dir()?;
        let path = self.path(key)?;
        // Compare-and-swap across processes: an exclusive lock around read + rename.
        let lock_path = self.dir.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(lock_path.display().to_string()))?;
        lock.lock()
            .map_err(self.io(lock_path.display().to_string()))?;
        let now = self.get_text_sync(key)?;
        match (&expect, &now) {
            (Expect::Any, _) | (Expect::Absent, None) => {}
            (Expect::Absent, Some(_)) => {
                return Err(StoreError::AlreadyExists { key: key.into() });
            }
            (Expect::Version(v), Some(t)) if *v == t.version => {}
            (Expect::Version(_), _) => return Err(StoreError::Conflict { key: key.into() }),
        }
        write_atomic(&path, text.as_bytes(), &self.temp_path(key))
            .map_err(self.io(path.display().to_string()))
    }

    fn delete_sync(&self, key: &str) -> Result<()> {
        self.check_dir()?;
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(path.display().to_string())(e)),
        }
        let _ = fs::remove_file(self.meta_path(key));
        Ok(())
    }
}

fn write_atomic(path: &Path, data: &[u8], tmp: &Path) -> io::Result<()> {
    let result = (|| {
        let mut f = fs::File::create_new(tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

impl Store for DirStore {
    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        let this = self.clone_handle();
        let prefix = prefix.to_owned();
        Box::pin(blocking(move || this.list_sync(&prefix)))
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectMeta>>> {
        let this = self.clone_handle();
        let key = key.to_owned();
        Box::pin(blocking(move || this.head_sync(&key)))
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let meta = self.head(key).await?.ok_or_else(|| StoreError::NotFound {
                what: "download",
                key: key.into(),
            })?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(self.io(path.display().to_string()))?;
            let body = futures::stream::try_unfold(file, |mut file| async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 256 * 1024];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some((Bytes::from(buf), file)))
            });
            Ok(Object {
                meta,
                body: Box::pin(body),
            })
        })
    }

    fn get_range<'a>(
        &'a self,
        key: &'a str,
        from: u64,
        to: u64,
        _version: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Bytes>> {
        let this = self.clone_handle();
        let key = key.to_owned();
        Box::pin(blocking(move || {
            use std::io::{Read, Seek};
            let path = this.path(&key)?;
            let shown = path.display().to_string();
            let mut file = fs::File::open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::NotFound {
                    what: "download",
                    key: key.clone(),
                },
                _ => this.io(shown.clone())(e),
            })?;
            let len = usize::try_from(to.saturating_sub(from)).map_err(|_| StoreError::Other {
                what: format!("download {key}"),
                detail: "range too large".into(),
            })?;
            file.seek(io::SeekFrom::Start(from))
                .map_err(this.io(shown.clone()))?;
            let mut buf = vec![0u8; len];
            file.read_exact(&mut buf).map_err(|e| StoreError::Other {
                what: format!("download {key} (bytes {from}-{})", to.saturating_sub(1)),
                detail: e.to_string(),
            })?;
            Ok(Bytes::from(buf))
        }))
    }

    fn put_file_new<'a>(
        &'a self,
        key: &'a str,
        path: &'a Path,
        metadata: HashMap<String, String>,
        progress: Option<Progress>,
    ) -> BoxFuture<'a, Result<()>> {
        let this = self.clone_handle();
        let key = key.to_owned();
        let path = path.to_owned();
        Box::pin(blocking(move || {
            this.put_file_sync(&key, &path, &metadata, progress)
        }))
    }

    fn get_text<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Text>>> {
        let this = self.clone_handle();
        let key = key.to_owned();
        Box::pin(blocking(move || this.get_text_sync(&key)))
    }

    fn get_text_if_changed<'a>(
        &'a self,
        key: &'a str,
        seen: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fresh>> {
        Box::pin(async move {
            Ok(match self.get_text(key).await? {
                None => Fresh::Missing,
                Some(t) if Some(t.version.as_str()) == seen => Fresh::Unchanged,
                Some(t) => Fresh::Changed(t),
            })
        })
    }

    fn put_text<'a>(
        &'a self,
        key: &'a str,
        text: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<()>> {
        let this = self.clone_handle();
        let key = key.to_owned();
        let text = text.to_owned();
        Box::pin(blocking(move || this.put_text_sync(&key, &text, expect)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let this = self.clone_handle();
        let key = key.to_owned();
        Box::pin(blocking(move || this.delete_sync(&key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, item 8: two spools racing for one key: the object and its
    /// metadata are both the winner's (the loser used to write its metadata
    /// before losing the race, over the winner's).
    #[test]
    fn the_loser_of_a_create_only_race_leaves_the_winners_metadata() {
        let d = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(DirStore::new(d.path().join("b")));
        fs::create_dir(d.path().join("b")).unwrap();
        let mut mismatches = 0;
        for round in 0..40 {
            let key = format!("app.r{round}.tgz");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let racers: Vec<_> = ["one", "two"]
                .into_iter()
                .map(|who| {
                    let src = d.path().join(format!("{who}-{round}"));
                    fs::write(&src, who).unwrap();
                    let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
                    std::thread::spawn(move || {
                        let meta = HashMap::from([("who".to_owned(), who.to_owned())]);
                        barrier.wait();
                        store.put_file_sync(&key, &src, &meta, None)
                    })
                })
                .collect();
            let won = racers
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(Result::is_ok)
                .count();
            assert_eq!(won, 1, "round {round}");
            let body = fs::read_to_string(store.path(&key).unwrap()).unwrap();
            let meta = read_meta(&store.meta_path(&key));
            if meta.get("who") != Some(&body) {
                mismatches += 1;
            }
        }
        assert_eq!(
            mismatches, 0,
            "metadata of the loser on the winner's object"
        );
    }
}
