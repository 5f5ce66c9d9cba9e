//! One object fetched as byte ranges, several at once, handed on as one stream in
//! order. The store starts each range (on a task of its own, so that it keeps
//! reading while the consumer is busy) and sends its bytes into a [`Sink`];
//! [`reassemble`] reads the ranges in order through a window of at most `window`
//! ranges started and not yet consumed, so that no more than `window × range`
//! bytes are ever buffered, however large the object and however slow the
//! consumer. Knows nothing of S3.
//!
//! The window opens as the network proves to be the bound: it starts at two
//! ranges (the one being read and the next, so that a range boundary costs no
//! round trip) and, after each `range / window` bytes consumed, grows by one if
//! the consumer spent at least half of that time waiting for the rest of ranges
//! it had begun to receive (the connection is slower than the consumer; waits
//! for a request's answer do not count). Judged on the share of time rather than
//! on single waits, so that a smooth stream of small chunks, as from S3, counts
//! as much as one paced in large pieces.
//! A consumer slower than one connection (an unpack onto a slow disk from a
//! server on the same network) then keeps two ranges in memory, not the whole
//! window's worth. And the ranges in flight end one after another,
//! `range / window` bytes apart, rather than all at once: the bytes waiting
//! for the consumer average half a window instead of seven eighths of it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::ByteStream;

/// Ranges started at first.
const FIRST_WINDOW: usize = 2;

/// Bytes received from the network and not yet taken by the consumer.
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Buffered {
    fn add(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, n: u64) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }

    /// The most that was ever buffered at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// Where a range's bytes go, in order; an error ends the whole download.
pub(crate) struct Sink {
    tx: mpsc::UnboundedSender<io::Result<Bytes>>,
    buffered: Arc<Buffered>,
}

impl Sink {
    /// Hands on a chunk; false when the reader is gone (stop fetching).
    pub(crate) fn send(&self, chunk: Bytes) -> bool {
        let n = chunk.len() as u64;
        self.buffered.add(n);
        if self.tx.send(Ok(chunk)).is_err() {
            self.buffered.sub(n);
            return false;
        }
        true
    }

    /// Fails the download with `e`.
    pub(crate) fn fail(&self, e: io::Error) {
        let _ = self.tx.send(Err(e));
    }

    /// Whether the reader is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts fetching bytes `[start, end)` into the sink; returns the task's handle,
/// aborted when the download is dropped.
pub(crate) type Start = Box<dyn FnMut(u64, u64, Sink) -> AbortHandle + Send>;

/// A range started and not yet consumed.
struct Pending {
    rx: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    task: AbortHandle,
    /// Bytes still expected.
    left: u64,
    /// Whether some bytes came already (a wait is then for bandwidth, not for
    /// the answer to the request).
    begun: bool,
}

struct Reassembly {
    what: String,
    size: u64,
    range: u64,
    /// The most ranges started and not yet consumed.
    window: usize,
    /// The window now (grows up to `window`).
    open: usize,
    /// Bytes handed to the consumer so far; where, and when, the current
    /// stretch of `range / window` bytes began; how long the consumer waited
    /// for bandwidth during it.
    consumed: u64,
    grown_at: u64,
    stretch_began: Instant,
    waited: Duration,
    start: Start,
    /// First byte not yet asked for.
    next: u64,
    queue: VecDeque<Pending>,
    buffered: Arc<Buffered>,
    ended: bool,
}

impl Drop for Reassembly {
    fn drop(&mut self) {
        for p in &self.queue {
            p.task.abort();
        }
    }
}

impl Reassembly {
    /// Starts ranges until the window is full or every range is started.
    fn fill(&mut self) {
        while self.queue.len() < self.open && self.next < self.size {
            let (from, to) = (self.next, self.size.min(self.next + self.range));
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = Sink {
                tx,
                buffered: self.buffered.clone(),
            };
            let task = (self.start)(from, to, sink);
            self.queue.push_back(Pending {
                rx,
                task,
                left: to - from,
                begun: false,
            });
            self.next = to;
        }
    }

    async fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        if self.ended {
            return None;
        }
        loop {
            self.fill();
            let Some(front) = self.queue.front_mut() else {
                self.ended = true;
                tracing::debug!(
                    "{}: {} bytes in ranges of {}, up to {} at once, at most {} bytes buffered",
                    self.what,
                    self.size,
                    self.range,
                    self.open,
                    self.buffered.peak()
                );
                return None;
            };
            let received = match front.rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let waiting = Instant::now();
                    let item = front.rx.recv().await;
                    if front.begun {
                        self.waited += waiting.elapsed();
                    }
                    item
                }
            };
            let Some(front) = self.queue.front_mut() else {
                continue;
            };
            match received {
                Some(Ok(chunk)) => {
                    let n = chunk.len() as u64;
                    self.buffered.sub(n);
                    if n > front.left {
                        return Some(Err(self.fail("more bytes than asked for")));
                    }
                    front.left -= n;
                    front.begun = true;
                    self.consumed += n;
                    self.judge();
                    return Some(Ok(chunk));
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                None if front.left == 0 => {
                    self.queue.pop_front();
                }
                None => return Some(Err(self.fail("a range ended early"))),
            }
        }
    }

    /// At the end of each stretch of `range / window` bytes: one range more if
    /// the consumer waited for bandwidth at least half of the stretch's time.
    fn judge(&mut self) {
        if self.consumed - self.grown_at < self.range / self.window as u64 {
            return;
        }
        if self.open < self.window && self.waited * 2 >= self.stretch_began.elapsed() {
            self.open += 1;
        }
        self.grown_at = self.consumed;
        self.stretch_began = Instant::now();
        self.waited = Duration::ZERO;
    }

    fn fail(&mut self, why: &str) -> io::Error {
        self.ended = true;
        io::Error::other(format!("{}: {why}", self.what))
    }
}

/// The object of `size` bytes as one stream, fetched in ranges of `range` bytes,
/// at most `window` of them started and not yet consumed. `what` names the
/// object in errors.
pub(crate) fn reassemble(
    what: String,
    size: u64,
    range: u64,
    window: usize,
    start: Start,
) -> (ByteStream, Arc<Buffered>) {
    let buffered = Arc::new(Buffered::default());
    let state = Reassembly {
        what,
        size,
        range: range.max(1),
        window: window.max(1),
        open: FIRST_WINDOW.min(window.max(1)),
        consumed: 0,
        grown_at: 0,
        stretch_began: Instant::now(),
        waited: Duration::ZERO,
        start,
        next: 0,
        queue: VecDeque::new(),
        buffered: buffered.clone(),
        ended: false,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let item = s.next_chunk().await?;
        Some((item, s))
    });
    (Box::pin(stream), buffered)
}
