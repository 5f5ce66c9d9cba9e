//! The node's side: which entries the local revision still has, which pieces
//! to fetch (coalesced into few ranges), and the tar stream rebuilt from both,
//! in order, for the unpack.
//!
//! A pipeline, every stage in the stream's order, each bounded:
//!
//! - the plan (before anything is read) looks at the regular files of the
//!   local revision whose size is the index's: one whose `lstat` is the one
//!   the install record gives ([`Known`]) holds the recorded SHA-256, so it
//!   is reused, or fetched, without being read to check; the others are
//!   candidates;
//! - checking threads read each candidate and hash it against the index's
//!   SHA-256, up to [`CHECK_AHEAD`] ahead of the writer, so that a changed
//!   file's range is asked for long before the writer needs it. A file up to
//!   [`IN_MEMORY`] is kept in memory while [`LOCAL_AHEAD`] allows, so the
//!   bytes checked are the bytes used (one read); any other is read again
//!   by the writer, and hashed again unless its identity proves it
//!   unchanged since the check ([`FileId`]). A file that does not match is
//!   fetched instead;
//! - as those decisions come in order, the pieces to fetch are coalesced into
//!   ranges, each handed to the fetcher as soon as it cannot grow;
//! - the fetcher (on the caller's task) asks for [`RANGES_AT_ONCE`] ranges at
//!   once, ahead of the writer within [`FETCHED_AHEAD`] bytes, a range longer
//!   than [`SPLIT`] as several requests at once;
//! - the writer rebuilds the stream: headers from the index, reused data,
//!   fetched pieces checked and decompressed, in chunks to the unpack.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc as std_mpsc};

use bytes::Bytes;
use futures::{Future, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use super::index::{Entry, Index};
use super::tar::{Kind, padding};
use super::{Codec, DeltaError};
use crate::digest::{hex, parse_hex32};
use crate::fileid::{self, FileId};
use crate::unpack::Limits;

/// Pieces at most this far apart are fetched in one request (the bytes
/// between cost less than another request's round trip).
pub(crate) const GAP: u64 = 8 << 10;
/// A range is at most this long (unless one piece is longer).
pub(crate) const MAX_RUN: u64 = 8 << 20;
/// Ranges in flight at once.
const RANGES_AT_ONCE: usize = 8;
/// A range longer than this is asked for as several requests at once, one
/// connection each: on a link of 10 MB/s per connection a changed file of
/// 1-3 MiB alone would take 0.1-0.3 s.
const SPLIT: u64 = 1 << 20;
/// Requests one range is split into, at most.
const SPLIT_MAX: u64 = 4;
/// Bytes of ranges fetched or being fetched ahead of the writer: they are
/// few and small, and the writer must not wait for a round trip.
const FETCHED_AHEAD: u64 = 24 << 20;
/// Local files up to this size are checked in memory and used from there.
pub(crate) const IN_MEMORY: u64 = 4 << 20;
/// Bytes of checked local files held in memory ahead of the writer.
const LOCAL_AHEAD: u64 = 24 << 20;
/// How far ahead of the writer local files are checked (each counted as at
/// most [`IN_MEMORY`]): a changed file is found, and its range asked for,
/// this long before the writer needs it. A file checked while the memory
/// is taken is read again (and checked again) by the writer.
const CHECK_AHEAD: u64 = 128 << 20;
/// Entries held back while a range may still grow, at most (as counted
/// for [`CHECK_AHEAD`]): past this the range is fetched as it is.
const HELD_BACK: u64 = 4 << 20;
/// Threads checking local files, at most.
const CHECKERS: usize = 4;
/// Chunks handed to the unpack.
const CHUNK: usize = 256 << 10;

/// What a delta install moved and reused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Bytes fetched from the bucket (the index and the ranges).
    pub fetched: u64,
    /// Requests made (the metadata, the index, the ranges).
    pub requests: u64,
    /// Bytes of file data taken from the local revision.
    pub reused: u64,
    /// Local files the install record vouched for (not read to check).
    pub known: u64,
    /// Local files read and hashed to find out whether they changed.
    pub checked: u64,
}

/// What the install record says of the local revision's files (path →
/// identity, SHA-256), the entries whose identity proves their content.
pub(crate) type Known = std::collections::HashMap<String, (FileId, [u8; 32])>;

/// What the plan found of an entry in the local revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    /// Nothing to take from there: its pieces are fetched (if it has data).
    Fetch,
    /// A regular file of the index's size: read and hashed to find out.
    Check,
    /// The file holds the index's SHA-256, as long as its identity is this
    /// one (the install record says so).
    Same(FileId),
}

/// A range of the object to fetch: its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub from: u64,
    pub to: u64,
    pub pieces: Range<usize>,
}

/// The entry's path relative to the revision, as the unpack writes it.
pub(crate) fn relative(e: &Entry) -> Option<PathBuf> {
    let rel = crate::unpack::relative_path(e.path.as_bytes()).ok()?;
    (!rel.as_os_str().is_empty()).then_some(rel)
}

fn local_path(base: &Path, e: &Entry) -> Option<PathBuf> {
    relative(e).map(|rel| base.join(rel))
}

/// The local file of `e`, if it is a regular file of the index's size.
/// Opened without following a final symlink; the index's path must pass the
/// unpack's own path rules.
fn open_local(path: &Path, size: u64) -> io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let m = f.metadata()?;
    Ok((m.is_file() && m.len() == size).then_some(f))
}

/// What the local revision (`base`) has of each entry: regular files of the
/// index's size there (by `lstat`), known by the record or to be checked
/// (what is read is checked).
pub(super) fn bases(index: &Index, base: &Path, known: &Known) -> Vec<Base> {
    index
        .entries
        .iter()
        .map(|e| {
            if e.kind != Kind::File || e.size == 0 {
                return Base::Fetch;
            }
            let Some(rel) = relative(e) else {
                return Base::Fetch;
            };
            match std::fs::symlink_metadata(base.join(&rel)) {
                Ok(m) if m.is_file() && m.len() == e.size => {
                    let id = FileId::of(&m);
                    match rel.to_str().and_then(|p| known.get(p)) {
                        Some((recorded, sha)) if *recorded == id => {
                            if e.sha256.as_deref().and_then(parse_hex32) == Some(*sha) {
                                Base::Same(id)
                            } else {
                                // Changed in this revision: fetched at once.
                                Base::Fetch
                            }
                        }
                        _ => Base::Check,
                    }
                }
                _ => Base::Fetch,
            }
        })
        .collect()
}

/// Where an entry's data comes from.
pub(super) enum Source {
    /// Nothing but its header (no data).
    Header,
    /// The local file's bytes, checked.
    Local(Held),
    /// The local file, read when written: hashed again then, unless it still
    /// has this identity (proven unchanged since the check, or the record's).
    LocalLarge(Option<FileId>),
    /// Its pieces.
    Fetch,
}

/// Reads the local file of `e` and checks it against the index's SHA-256:
/// kept in memory when small, `Fetch` when it is not what the index says
/// (changed by the application, or unreadable).
pub(super) fn check_local(base: &Path, e: &Entry, memory: Option<Taken>) -> Source {
    // The memory taken for this entry goes back when `held` is dropped,
    // unless its bytes are used.
    let mut held = memory.map(|taken| Held {
        bytes: Vec::new(),
        _taken: taken,
    });
    let Some(path) = local_path(base, e) else {
        return Source::Fetch;
    };
    let Ok(Some(mut f)) = open_local(&path, e.size) else {
        return Source::Fetch;
    };
    let mut h = Sha256::new();
    let mut proven = None;
    match held.as_mut() {
        Some(held) => {
            held.bytes.reserve_exact(e.size as usize);
            let read = (&mut f).take(e.size).read_to_end(&mut held.bytes);
            if read.is_err() || held.bytes.len() as u64 != e.size {
                return Source::Fetch;
            }
            h.update(&held.bytes);
        }
        None => {
            // The same identity before and after the read, settled before
            // it began: the writer, finding it again, needs no second hash.
            let since = fileid::now();
            let before = f.metadata().map(|m| FileId::of(&m));
            match io::copy(&mut f, &mut h) {
                Ok(n) if n == e.size => {}
                _ => return Source::Fetch,
            }
            let after = f.metadata().map(|m| FileId::of(&m));
            if let (Ok(a), Ok(b)) = (before, after)
                && a == b
                && a.settled(since)
            {
                proven = Some(a);
            }
        }
    }
    if Some(hex(&h.finalize())) != e.sha256 {
        return Source::Fetch;
    }
    match held {
        Some(held) => Source::Local(held),
        None => Source::LocalLarge(proven),
    }
}

/// Bytes of memory the checking threads may hold ahead of the writer,
/// taken in the stream's order (so the writer's next entry never waits for
/// one behind it) and given back as the writer drops them.
pub(super) struct Budget {
    used: Mutex<(u64, bool)>,
    freed: Condvar,
    cap: u64,
}

impl Budget {
    pub(super) fn new(cap: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: Mutex::new((0, false)),
            freed: Condvar::new(),
            cap,
        })
    }

    /// Takes `n` bytes (any `n` when nothing is taken); false once closed.
    fn take(&self, n: u64) -> bool {
        let mut g = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while !g.1 && g.0 > 0 && g.0 + n > self.cap {
            g = self.freed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.0 += n;
        !g.1
    }

    /// Takes `n` bytes if they are free now.
    fn try_take(&self, n: u64) -> bool {
        let mut g = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if g.1 || g.0 + n > self.cap {
            return false;
        }
        g.0 += n;
        true
    }

    fn give(&self, n: u64) {
        let mut g = self.used.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(n);
        self.freed.notify_all();
    }

    /// The writer stopped: nobody waits for memory any more.
    fn close(&self) {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// Bytes taken from a budget, given back when dropped.
pub(super) struct Taken {
    budget: Arc<Budget>,
    n: u64,
}

impl Taken {
    /// `n` bytes of `budget`, waiting for them; `None` once it is closed.
    fn wait(budget: &Arc<Budget>, n: u64) -> Option<Taken> {
        budget.take(n).then(|| Taken {
            budget: budget.clone(),
            n,
        })
    }

    /// `n` bytes of `budget` if they are free now.
    pub(super) fn now(budget: &Arc<Budget>, n: u64) -> Option<Taken> {
        budget.try_take(n).then(|| Taken {
            budget: budget.clone(),
            n,
        })
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.budget.give(self.n);
    }
}

/// A checked local file's bytes, with the memory they hold.
pub(super) struct Held {
    pub(super) bytes: Vec<u8>,
    _taken: Taken,
}

/// An entry's source on its way to the writer, with its share of
/// [`CHECK_AHEAD`] (given back once written).
type Decided = (usize, Source, Option<Taken>);

/// Pieces coalesced into ranges as the entries' sources come in order; an
/// entry's source is passed on once the range holding its pieces is final.
struct Coalescer<'a> {
    index: &'a Index,
    open: Option<Run>,
    /// Sources behind the open range, and what they count for [`HELD_BACK`].
    held: Vec<Decided>,
    held_bytes: u64,
}

impl<'a> Coalescer<'a> {
    fn new(index: &'a Index) -> Self {
        Self {
            index,
            open: None,
            held: Vec::new(),
            held_bytes: 0,
        }
    }

    /// Adds entry `i`'s source; `close` gets the ranges that became final
    /// and `pass` the sources that may go on, both in order.
    fn add(&mut self, d: Decided, close: &mut impl FnMut(Run), pass: &mut impl FnMut(Decided)) {
        let (i, source, _) = &d;
        let i = *i;
        let e = &self.index.entries[i];
        if matches!(source, Source::Fetch) {
            for k in e.first..e.first + e.count {
                let p = &self.index.pieces[k];
                match &mut self.open {
                    // Pieces between (of entries taken from here) come along.
                    Some(r)
                        if p.offset <= r.to + GAP && p.offset + p.length - r.from <= MAX_RUN =>
                    {
                        r.to = p.offset + p.length;
                        r.pieces.end = k + 1;
                    }
                    _ => {
                        self.finish(close, pass);
                        self.open = Some(Run {
                            from: p.offset,
                            to: p.offset + p.length,
                            pieces: k..k + 1,
                        });
                    }
                }
            }
        } else if let Some(r) = &self.open {
            // The open range can no longer reach a later piece, or holds
            // back too much: it is final.
            let far = e.count > 0 && self.index.pieces[e.first].offset > r.to + GAP;
            if far || self.held_bytes > HELD_BACK {
                self.finish(close, pass);
            }
        }
        self.held_bytes += d.2.as_ref().map_or(0, |t| t.n);
        self.held.push(d);
        if self.open.is_none() {
            self.finish(close, pass);
        }
    }

    /// The open range (if any) is final: out with it and what it held back.
    fn finish(&mut self, close: &mut impl FnMut(Run), pass: &mut impl FnMut(Decided)) {
        if let Some(r) = self.open.take() {
            close(r);
        }
        for d in self.held.drain(..) {
            pass(d);
        }
        self.held_bytes = 0;
    }
}

/// The entries whose data must be fetched, as coalesced ranges.
pub(crate) fn runs(index: &Index, reuse: &[bool]) -> Vec<Run> {
    let mut c = Coalescer::new(index);
    let mut all = Vec::new();
    for (i, (e, reused)) in index.entries.iter().zip(reuse).enumerate() {
        let source = if *reused {
            Source::LocalLarge(None)
        } else if e.size == 0 {
            Source::Header
        } else {
            Source::Fetch
        };
        c.add((i, source, None), &mut |r| all.push(r), &mut |_| {});
    }
    c.finish(&mut |r| all.push(r), &mut |_| {});
    all
}

/// Checks the index against the limits, then finds what the local revision
/// has of each entry (on a blocking thread, with what the install record
/// `known` says of it) and the bytes to fetch if every file checked matches
/// (what a progress bar shows).
pub(crate) async fn plan(
    index: Arc<Index>,
    base: PathBuf,
    known: Known,
    limits: Limits,
) -> Result<(Vec<Base>, u64), DeltaError> {
    let entries = index.entries.len() as u64;
    if limits.max_entries > 0 && entries > limits.max_entries {
        return Err(DeltaError::TooLarge {
            what: "entries",
            limit: limits.max_entries,
        });
    }
    let total: u64 = index.entries.iter().map(|e| e.size).sum();
    if limits.max_unpacked_bytes > 0 && total > limits.max_unpacked_bytes {
        return Err(DeltaError::TooLarge {
            what: "bytes",
            limit: limits.max_unpacked_bytes,
        });
    }
    crate::task::blocking(
        move || {
            let bases = bases(&index, &base, &known);
            let reuse: Vec<bool> = bases.iter().map(|b| *b != Base::Fetch).collect();
            let planned = runs(&index, &reuse).iter().map(|r| r.to - r.from).sum();
            Ok((bases, planned))
        },
        |e| DeltaError::Local(io::Error::other(e)),
    )
    .await
}

/// Rebuilds the tar stream into `tx`, taking from the local revision `base`
/// what [`plan`] found there (`bases`) and fetching the rest with `fetch`
/// (bytes `[from, to)` of the object). Ends when the stream is complete or
/// `tx` is closed (the unpack failed: [`DeltaError::Stopped`]).
pub async fn transfer<F, Fut>(
    index: Arc<Index>,
    base: PathBuf,
    bases: Vec<Base>,
    fetch: F,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> Result<Moved, DeltaError>
where
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = io::Result<Bytes>>,
{
    let (runs_tx, mut runs_rx) = mpsc::unbounded_channel::<Run>();
    let (fetched_tx, fetched_rx) = mpsc::channel::<Fetched>(RANGES_AT_ONCE * 4);
    let local = tokio::task::spawn_blocking(move || {
        local_stages(&index, &base, &bases, runs_tx, fetched_rx, &tx)
    });
    let ahead = Arc::new(Semaphore::new(kib(FETCHED_AHEAD) as usize));
    let fetcher = async {
        let runs = futures::stream::poll_fn(|cx| runs_rx.poll_recv(cx));
        let mut ranges = runs
            .map(|r| {
                let ahead = ahead.clone();
                let fetch = &fetch;
                async move {
                    // Taken in the ranges' order (the semaphore is fair):
                    // the writer's next range never waits behind a later one.
                    let Ok(permit) = ahead
                        .acquire_many_owned(kib(r.to - r.from).min(kib(FETCHED_AHEAD)))
                        .await
                    else {
                        return (r, Err(io::Error::other("closed")), None);
                    };
                    let got = fetch_split(fetch, r.from, r.to).await;
                    (r, got, Some(permit))
                }
            })
            .buffered(RANGES_AT_ONCE);
        while let Some((run, got, permit)) = ranges.next().await {
            let bytes = got.map_err(DeltaError::Download)?;
            if bytes.len() as u64 != run.to - run.from {
                return Err(DeltaError::Range(format!(
                    "bytes {}-{} of the object came back as {} bytes",
                    run.from,
                    run.to - 1,
                    bytes.len()
                )));
            }
            if fetched_tx.send((run, bytes, permit)).await.is_err() {
                // The writer stopped; it says why.
                return Ok(());
            }
        }
        Ok(())
    };
    let (fetched_ok, done) = tokio::join!(fetcher, local);
    let done = done.map_err(|e| DeltaError::Local(io::Error::other(e.to_string())))?;
    match (done, fetched_ok) {
        // The writer stopped for want of a range: the fetcher says why.
        (Err(DeltaError::Stopped), Err(e)) => Err(e),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(moved), Ok(())) => Ok(moved),
    }
}

/// The requests range `[from, to)` is fetched with: parts of at most about
/// [`SPLIT`] bytes (at most [`SPLIT_MAX`]), in order, covering it exactly.
pub(crate) fn split(from: u64, to: u64) -> Vec<(u64, u64)> {
    let len = to.saturating_sub(from);
    let n = len.div_ceil(SPLIT).clamp(1, SPLIT_MAX);
    let step = len.div_ceil(n).max(1);
    (0..n)
        .map(|i| (from + i * step, (from + (i + 1) * step).min(to)))
        .filter(|(a, b)| a < b)
        .collect()
}

/// Range `[from, to)` through `fetch`, its parts ([`split`]) asked for at
/// once (each pinned to the same version by the caller's `fetch`) and put
/// back together in order.
async fn fetch_split<F, Fut>(fetch: &F, from: u64, to: u64) -> io::Result<Bytes>
where
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = io::Result<Bytes>>,
{
    let parts = split(from, to);
    if parts.len() <= 1 {
        return fetch(from, to).await;
    }
    let got = futures::future::try_join_all(parts.iter().map(|(a, b)| fetch(*a, *b))).await?;
    let mut all = bytes::BytesMut::with_capacity((to - from) as usize);
    for ((a, b), bytes) in parts.iter().zip(got) {
        if bytes.len() as u64 != b - a {
            return Err(io::Error::other(format!(
                "bytes {a}-{} of the object came back as {} bytes",
                b - 1,
                bytes.len()
            )));
        }
        all.extend_from_slice(&bytes);
    }
    Ok(all.freeze())
}

fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// A fetched range, with its share of [`FETCHED_AHEAD`].
type Fetched = (Run, Bytes, Option<tokio::sync::OwnedSemaphorePermit>);

/// The blocking stages: checking threads, the coalescer (here) and the
/// writer. Returns what moved (the fetcher's part counted from the ranges).
fn local_stages(
    index: &Index,
    base: &Path,
    bases: &[Base],
    runs: mpsc::UnboundedSender<Run>,
    fetched: mpsc::Receiver<Fetched>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<Moved, DeltaError> {
    let memory = Budget::new(LOCAL_AHEAD);
    let ahead = Budget::new(CHECK_AHEAD);
    let checkers = std::thread::available_parallelism().map_or(1, |n| n.get().min(CHECKERS));
    // Every entry's source arrives through its own slot, the slots in order.
    type Slot = std_mpsc::Receiver<(Source, Option<Taken>)>;
    type Job = (
        usize,
        Option<Taken>,
        Taken,
        std_mpsc::SyncSender<(Source, Option<Taken>)>,
    );
    let (slots_tx, slots_rx) = std_mpsc::sync_channel::<Slot>(4096);
    let (jobs_tx, jobs_rx) = std_mpsc::sync_channel::<Job>(checkers * 2);
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    // Not bounded by a count: the budgets bound what the entries hold (their
    // memory, how far ahead they are checked), and a count would hold the
    // checks back to a few MiB ahead of the writer when files are small.
    let (order_tx, order_rx) = std_mpsc::channel::<Decided>();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let r = write_stream(index, base, order_rx, fetched, tx);
            memory.close();
            ahead.close();
            r
        });
        for _ in 0..checkers {
            let jobs = jobs_rx.clone();
            s.spawn(move || {
                loop {
                    let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((i, held, lead, slot)) = job else {
                        return;
                    };
                    let source = check_local(base, &index.entries[i], held);
                    // A failed send: the stream stopped.
                    let _ = slot.send((source, Some(lead)));
                }
            });
        }
        drop(jobs_rx);
        let (memory, ahead) = (&memory, &ahead);
        s.spawn(move || {
            for (i, e) in index.entries.iter().enumerate() {
                let (slot_tx, slot_rx) = std_mpsc::sync_channel(1);
                if slots_tx.send(slot_rx).is_err() {
                    return;
                }
                let b = bases.get(i).copied().unwrap_or(Base::Fetch);
                if let Base::Same(id) = b {
                    // Decided without reading: passed on at once, so that the
                    // ranges of the files around it are asked for now.
                    let _ = slot_tx.send((Source::LocalLarge(Some(id)), None));
                } else if b == Base::Check {
                    // In the stream's order, so the writer's next entry never
                    // waits behind a later one.
                    let Some(lead) = Taken::wait(ahead, e.size.min(IN_MEMORY)) else {
                        return;
                    };
                    let held = (e.size <= IN_MEMORY)
                        .then(|| Taken::now(memory, e.size))
                        .flatten();
                    if jobs_tx.send((i, held, lead, slot_tx)).is_err() {
                        return;
                    }
                } else {
                    let source = if e.size == 0 {
                        Source::Header
                    } else {
                        Source::Fetch
                    };
                    let _ = slot_tx.send((source, None));
                }
            }
        });
        let mut coalescer = Coalescer::new(index);
        let (mut fetched, mut requests) = (0, 0);
        let mut close = |r: Run| {
            fetched += r.to - r.from;
            requests += split(r.from, r.to).len() as u64;
            // A failed send: the fetcher stopped, and says why.
            let _ = runs.send(r);
        };
        // A failed send: the writer stopped, and says why.
        let mut pass = |d: Decided| {
            let _ = order_tx.send(d);
        };
        for (i, slot) in slots_rx.iter().enumerate() {
            let Ok((source, lead)) = slot.recv() else {
                break;
            };
            coalescer.add((i, source, lead), &mut close, &mut pass);
        }
        coalescer.finish(&mut close, &mut pass);
        // The end of the fetcher's list, and of the writer's.
        drop(runs);
        drop(order_tx);
        let reused = writer
            .join()
            .map_err(|_| DeltaError::Local(io::Error::other("the delta writer panicked")))??;
        let count = |want: fn(&Base) -> bool| bases.iter().filter(|b| want(b)).count() as u64;
        Ok(Moved {
            fetched,
            requests,
            reused,
            known: count(|b| matches!(b, Base::Same(_))),
            checked: count(|b| *b == Base::Check),
        })
    })
}

/// Chunk buffers kept for the writer to fill again (more than are ever in
/// flight: the channel's, the unpack's current one, the writer's).
const POOLED: usize = 16;

/// Chunk buffers given back by the unpack once it has consumed them.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// A chunk on its way to the unpack: its first `len` bytes; the buffer goes
/// back to the pool when the unpack drops it. Fresh buffers would cost page
/// faults on every chunk (a profile found them a third of the writer's time).
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED {
            pool.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The rebuilt stream, in chunks of [`CHUNK`] bytes to the unpack.
pub(super) struct Writer<'a> {
    tx: &'a mpsc::Sender<io::Result<Bytes>>,
    /// Always [`CHUNK`] bytes long; the first `filled` are the stream's.
    chunk: Vec<u8>,
    filled: usize,
    pool: Pool,
}

impl<'a> Writer<'a> {
    pub(super) fn new(tx: &'a mpsc::Sender<io::Result<Bytes>>) -> Self {
        Writer {
            tx,
            chunk: vec![0; CHUNK],
            filled: 0,
            pool: Pool::default(),
        }
    }

    fn put(&mut self, mut data: &[u8]) -> Result<(), DeltaError> {
        while !data.is_empty() {
            let n = (CHUNK - self.filled).min(data.len());
            self.chunk[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == CHUNK {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Reads up to `left` bytes of `f` straight into the stream (no copy);
    /// the bytes read (none at its end). The outer error: the unpack stopped.
    fn read_from(&mut self, f: &mut File, left: u64) -> Result<io::Result<&[u8]>, DeltaError> {
        if self.filled == CHUNK {
            self.flush()?;
        }
        let start = self.filled;
        let want = ((CHUNK - start) as u64).min(left) as usize;
        Ok(match f.read(&mut self.chunk[start..start + want]) {
            Ok(n) => {
                self.filled += n;
                Ok(&self.chunk[start..start + n])
            }
            Err(e) => Err(e),
        })
    }

    pub(super) fn flush(&mut self) -> Result<(), DeltaError> {
        if self.filled == 0 {
            return Ok(());
        }
        let next = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let buf = std::mem::replace(&mut self.chunk, next.unwrap_or_else(|| vec![0; CHUNK]));
        let chunk = Bytes::from_owner(Pooled {
            buf,
            len: std::mem::take(&mut self.filled),
            pool: self.pool.clone(),
        });
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| DeltaError::Stopped)
    }
}

/// Padding after an entry's data (less than a block).
const ZEROS: [u8; super::tar::BLOCK] = [0; super::tar::BLOCK];

/// The writer stage: every entry in order, from its source; returns the
/// bytes of file data reused.
fn write_stream(
    index: &Index,
    base: &Path,
    sources: std_mpsc::Receiver<Decided>,
    mut runs: mpsc::Receiver<Fetched>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<u64, DeltaError> {
    let mut out = Writer::new(tx);
    let mut current: Option<Fetched> = None;
    let mut reused = 0u64;
    let mut next = 0usize;
    // Each entry's share of the look-ahead goes back once it is written.
    for (i, source, _lead) in sources {
        // The coalescer passes every entry once, in order; anything else is a bug
        // that must not become a wrong tree.
        if i != next {
            return Err(DeltaError::Local(io::Error::other(
                "delta entries out of order",
            )));
        }
        next += 1;
        let e = &index.entries[i];
        let header =
            decode_hex(&e.header).ok_or_else(|| DeltaError::Index("a header is not hex".into()))?;
        match source {
            Source::Header if e.size == 0 => out.put(&header)?,
            Source::Local(held) => {
                out.put(&header)?;
                out.put(&held.bytes)?;
                out.put(&ZEROS[..padding(e.size) as usize])?;
                reused += e.size;
            }
            Source::LocalLarge(proven) => {
                out.put(&header)?;
                copy_local(base, e, proven, &mut out)?;
                out.put(&ZEROS[..padding(e.size) as usize])?;
                reused += e.size;
            }
            Source::Header | Source::Fetch => {
                // Piece by piece (an entry may be larger than memory): checked
                // as they pass, the whole entry once its last piece has.
                let mut check = EntryCheck::new(e, header);
                for k in e.first..e.first + e.count {
                    let raw = piece(index, k, &mut current, &mut runs)?;
                    let bytes = unpack_piece(index, k, &raw)?;
                    check.update(&bytes)?;
                    out.put(&bytes)?;
                }
                check.finish()?;
            }
        }
    }
    if next != index.entries.len() {
        // The coalescer stopped early: the stream is not complete.
        return Err(DeltaError::Stopped);
    }
    // The end of the archive.
    out.put(&[0u8; 2 * super::tar::BLOCK])?;
    out.flush()?;
    Ok(reused)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The compressed bytes of piece `i`, from the range that holds it (the
/// ranges come in order).
fn piece(
    index: &Index,
    i: usize,
    current: &mut Option<Fetched>,
    runs: &mut mpsc::Receiver<Fetched>,
) -> Result<Bytes, DeltaError> {
    loop {
        if let Some((run, bytes, _)) = current
            && run.pieces.contains(&i)
        {
            let p = &index.pieces[i];
            let start = (p.offset - run.from) as usize;
            return Ok(bytes.slice(start..start + p.length as usize));
        }
        // The fetcher stopped: it says why.
        *current = Some(runs.blocking_recv().ok_or(DeltaError::Stopped)?);
    }
}

/// Piece `i` checked against its digest and decompressed.
fn unpack_piece(index: &Index, i: usize, raw: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let p = &index.pieces[i];
    let got: [u8; 32] = Sha256::digest(raw).into();
    if Some(got) != parse_hex32(&p.sha256) {
        return Err(DeltaError::PieceDigest {
            piece: i,
            expected: p.sha256.clone(),
            actual: hex(&got),
        });
    }
    let corrupt = |why: String| DeltaError::Disagree {
        path: format!("piece {i}"),
        why,
    };
    let size = usize::try_from(p.size).map_err(|_| corrupt("too large".into()))?;
    let out = match index.codec {
        Codec::Zstd => {
            zstd::bulk::decompress(raw, size).map_err(|e| corrupt(format!("zstd: {e}")))?
        }
        Codec::Gzip => {
            let mut out = Vec::with_capacity(size);
            flate2::read::GzDecoder::new(raw)
                .take(size as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| corrupt(format!("gzip: {e}")))?;
            out
        }
    };
    if out.len() != size {
        return Err(corrupt(format!(
            "it decompresses to {} bytes, not {size}",
            out.len()
        )));
    }
    Ok(out)
}

/// A fetched entry is what the index says: its header, then data of its
/// size and SHA-256, then padding.
struct EntryCheck<'a> {
    e: &'a Entry,
    header: Vec<u8>,
    /// Bytes of the entry's stream seen so far.
    seen: u64,
    sha: Sha256,
}

impl<'a> EntryCheck<'a> {
    fn new(e: &'a Entry, header: Vec<u8>) -> Self {
        Self {
            e,
            header,
            seen: 0,
            sha: Sha256::new(),
        }
    }

    fn disagree(&self, why: &str) -> DeltaError {
        DeltaError::Disagree {
            path: self.e.path.clone(),
            why: why.to_owned(),
        }
    }

    fn update(&mut self, bytes: &[u8]) -> Result<(), DeltaError> {
        let (start, end) = (self.seen, self.seen + bytes.len() as u64);
        let head = self.header.len() as u64;
        if end > self.e.stream_len() {
            return Err(self.disagree("its size"));
        }
        // The part of `bytes` that is header, and the part that is data.
        if start < head {
            let n = (head.min(end) - start) as usize;
            if bytes[..n] != self.header[start as usize..start as usize + n] {
                return Err(self.disagree("its header"));
            }
        }
        let data = (head, head + self.e.size);
        let (a, b) = (start.max(data.0), end.min(data.1));
        if a < b {
            self.sha
                .update(&bytes[(a - start) as usize..(b - start) as usize]);
        }
        self.seen = end;
        Ok(())
    }

    fn finish(self) -> Result<(), DeltaError> {
        if self.seen != self.e.stream_len() {
            return Err(self.disagree("its size"));
        }
        if let Some(want) = &self.e.sha256
            && hex(&self.sha.finalize()) != *want
        {
            return Err(DeltaError::Disagree {
                path: self.e.path.clone(),
                why: "its content's SHA-256".into(),
            });
        }
        Ok(())
    }
}

/// A reused file's data. Checked again as it is read (it was checked when
/// planned; the application may have written it since), unless it still has
/// the identity `proven` when opened and after it was read: then no write
/// came between (see [`crate::fileid`]), and its bytes are the ones checked
/// (or the ones the install record vouches for).
pub(super) fn copy_local(
    base: &Path,
    e: &Entry,
    proven: Option<FileId>,
    out: &mut Writer,
) -> Result<(), DeltaError> {
    let changed = || {
        DeltaError::Local(io::Error::other(format!(
            "{}: changed while being read for a delta install",
            e.path
        )))
    };
    let path = local_path(base, e).ok_or_else(changed)?;
    let mut f = open_local(&path, e.size)
        .map_err(DeltaError::Local)?
        .ok_or_else(changed)?;
    let same =
        |f: &File| proven.is_some() && f.metadata().is_ok_and(|m| Some(FileId::of(&m)) == proven);
    let trusted = same(&f);
    let mut h = Sha256::new();
    let mut left = e.size;
    while left > 0 {
        let got = match out.read_from(&mut f, left)? {
            Ok([]) => return Err(changed()),
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DeltaError::Local(e)),
        };
        if !trusted {
            h.update(got);
        }
        left -= got.len() as u64;
    }
    let ok = if trusted {
        same(&f)
    } else {
        Some(hex(&h.finalize())) == e.sha256
    };
    if !ok {
        return Err(changed());
    }
    Ok(())
}
