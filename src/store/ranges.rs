//! One object fetched as byte ranges, several at once, handed on as one stream in
//! order. The store starts each range (on a task of its own, so that it keeps
//! reading while the consumer is busy) and sends its bytes into a [`Sink`];
//! [`reassemble`] reads the ranges in order through a window of at most `window`
//! ranges started and not yet consumed, so that no more than `window × range`
//! bytes are ever buffered, however large the object and however slow the
//! consumer. Knows nothing of S3.
//!
//! The first range is asked for as the whole object, and read alone as one
//! stream for as long as the consumer keeps up with one connection (a local
//! server, an unpack onto a slow disk): nothing more is buffered than with a
//! plain GET. It is cut (at the first range boundary after the bytes it
//! brought, its connection dropped there) once a stretch shows that one
//! connection is the bound: the consumer waited for it at least a third of
//! the time, would take more than it brings (see below), and the connection
//! hardly had to hold back for the consumer (less than a twentieth of the
//! time: a server that sends in bursts between pauses, on busy cores, is not
//! a slow connection). The window then opens to three ranges, the two new
//! ones holding back at 2 MiB until the next stretch has judged them. From
//! then on, after each stretch of at least `range / window` bytes consumed
//! and 20 ms, the window:
//! - grows by one if the consumer spent at least a third of that time waiting
//!   for the rest of ranges it had begun to receive (the connection is slower
//!   than the consumer; waits for a request's answer do not count), every
//!   range still arriving comes at least 3/4 of the fastest rate one range was
//!   seen at (each connection carries its own share, as on a link that limits
//!   each connection: S3 over a network), and the window is still below what
//!   the consumer needs: its own rate (bytes over the time it did not wait)
//!   divided by that fastest rate, plus one range for the request's round trip
//!   at each boundary;
//! - shrinks by one (not below two) when a range still arriving comes slower
//!   than that (the connections share one bound: a server on the same cores,
//!   a link that one connection fills; more of them would only hold more
//!   bytes, not bring them faster), or when the window is more than one range
//!   wider than the consumer needs (a fast server: two connections of a
//!   loopback server feed an unpack onto disk).
//!
//! The fastest rate is the fastest any range of the store was seen at, over
//! every download of the run: they share the server and the link, so a
//! download whose ranges all come slowly while another's came fast is
//! sharing a bound, not on a slow link.
//!
//! Ranges end on multiples of `range` (the multipart parts' boundaries),
//! except near the object's end: once what is left (in flight and not yet
//! asked for) is less than a range for each range of the window, a range
//! started is that share of it, at least 2 MiB, so that the last ranges end
//! together instead of one range's time after each other. Once shares began,
//! every later range is one (at most a range long), even if the window
//! narrows: a part's boundary would leave a sliver to the request after it.
//!
//! Bytes that would only wait in memory are not fetched: the range being
//! read holds back once 256 KiB of it wait for the consumer, and the others
//! after 2 MiB while the window is at its narrowest, 256 KiB once a stretch
//! showed that the consumer needs no more than that (see [`Sink::room`]);
//! their connections wait, the bytes in the socket.
//!
//! Judged on the share of time rather than on single waits, so that a smooth
//! stream of small chunks, as from S3, counts as much as one paced in large
//! pieces. A consumer slower than one connection (an unpack onto a slow disk)
//! keeps one stream and 256 KiB in memory; a local server slower than the
//! consumer, two ranges once split. And the ranges in flight end one after
//! another, `range / window` bytes apart, rather than all at once: the bytes waiting
//! for the consumer average half a window instead of seven eighths of it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::ByteStream;

/// Ranges started at first.
const FIRST_WINDOW: usize = 2;

/// Bytes received from the network and not yet taken by the consumer (and
/// all bytes received).
#[derive(Debug, Default)]
pub(crate) struct Buffered {
    now: AtomicU64,
    peak: AtomicU64,
    arrived: AtomicU64,
}

impl Buffered {
    fn add(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.arrived.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: u64) {
        self.now.fetch_sub(n, Ordering::Relaxed);
        self.arrived.fetch_sub(n, Ordering::Relaxed);
    }

    fn taken(&self, n: u64) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }

    /// The most that was ever buffered at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// What the ranges' tasks are told of the consumer: which range it reads,
/// and whether the others should hold (see [`Sink::room`]).
#[derive(Debug, Default)]
struct Flow {
    /// The first byte of the range being read.
    head: AtomicU64,
    /// How many bytes a range that is not being read may hold (see
    /// [`Sink::room`]); `u64::MAX` while the window is open.
    hold: AtomicU64,
    changed: tokio::sync::Notify,
}

/// Where a range's bytes go, in order; an error ends the whole download.
pub(crate) struct Sink {
    tx: mpsc::UnboundedSender<io::Result<Bytes>>,
    buffered: Arc<Buffered>,
    /// How this range's bytes come.
    arrival: Arc<Arrival>,
    /// Its first byte.
    from: u64,
    flow: Arc<Flow>,
}

impl Sink {
    /// Hands on a chunk; false when the reader is gone (stop fetching).
    pub(crate) fn send(&self, chunk: Bytes) -> bool {
        let n = chunk.len() as u64;
        self.buffered.add(n);
        self.arrival.first.get_or_init(|| (Instant::now(), n));
        self.arrival.bytes.fetch_add(n, Ordering::Relaxed);
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

    /// The end of the bytes the range is to bring (earlier than asked when
    /// the object's first range, asked whole, was cut: see [`Reassembly::split`]).
    pub(crate) fn end(&self) -> u64 {
        self.arrival.end.load(Ordering::Acquire)
    }

    /// Waits, before the range's task reads more, while the bytes it holds
    /// would only wait in memory:
    /// - the range being read holds back once [`HEAD_HOLD`] of its bytes wait for
    ///   the consumer (a consumer slower than the connection: the bytes wait
    ///   in the socket instead, as they did with one stream per object), and
    ///   goes on when the consumer has taken half of them;
    /// - any other range holds back after [`HOLD`] bytes while the window is
    ///   at its narrowest: there the consumer is the bound (its request is
    ///   answered, so a range boundary still costs no round trip), and after
    ///   [`HEAD_HOLD`] while the last stretch showed that the consumer needs
    ///   no more than that (it takes less than one range brings: the next
    ///   range's rate cannot open the window, and its bytes would only wait;
    ///   before that stretch, its 2 MiB show its rate). A window that opened
    ///   (the network is the bound) holds nothing back there.
    ///
    /// The time held is left out of the range's rate.
    pub(crate) async fn room(&self) {
        loop {
            let changed = self.flow.changed.notified();
            let taken = self.arrival.taken_more.notified();
            tokio::pin!(changed, taken);
            changed.as_mut().enable();
            taken.as_mut().enable();
            // Said before reading what the consumer took (both SeqCst, as on
            // the consumer's side): either it sees this, or this sees its take.
            self.arrival.holding.store(true, Ordering::SeqCst);
            let bytes = self.arrival.bytes.load(Ordering::Relaxed);
            let waiting = bytes.saturating_sub(self.arrival.taken.load(Ordering::SeqCst));
            let hold = if self.flow.head.load(Ordering::Acquire) == self.from {
                waiting >= HEAD_HOLD
            } else {
                bytes >= self.flow.hold.load(Ordering::Acquire)
            };
            if !hold {
                self.arrival.holding.store(false, Ordering::Relaxed);
                return;
            }
            let held = Instant::now();
            let since = self.arrival.since_first(held);
            self.arrival.hold_began.store(since + 1, Ordering::Relaxed);
            tokio::select! {
                () = changed => {}
                () = taken => {}
            }
            self.arrival
                .held
                .fetch_add(nanos(held.elapsed()), Ordering::Relaxed);
            self.arrival.hold_began.store(0, Ordering::Relaxed);
        }
    }
}

/// See [`Sink::room`]. Above [`RATE_BYTES`] and the first chunk, so that a
/// range holding back has shown its rate (a fast range among slow ones must
/// still say that the window should shrink).
const HOLD: u64 = 2 << 20;
/// See [`Sink::room`]: enough to keep the consumer busy while the range's
/// task takes up its connection again (a wake-up, no round trip).
const HEAD_HOLD: u64 = 256 << 10;

/// The fastest rate one range of any download of a store was seen at, bytes
/// a second (as f64 bits): the downloads of one run share the server and the
/// link, so a range far slower than that is sharing a bound, even when the
/// other ranges of its own download are as slow (a local server on cores
/// that four unpacks keep busy: without it, each download's start looks like
/// a slow link, and its window opens for nothing).
#[derive(Debug, Default)]
pub(crate) struct Fastest(AtomicU64);

impl Fastest {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn raise(&self, rate: f64) {
        // Non-negative floats order as their bits do.
        if rate.is_finite() && rate > 0.0 {
            self.0.fetch_max(rate.to_bits(), Ordering::Relaxed);
        }
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
    /// Whether the consumer took some bytes already (a wait is then for
    /// bandwidth, not for the answer to the request).
    begun: bool,
    /// How its bytes come (counted by the range's task).
    arrival: Arc<Arrival>,
    /// Its size.
    len: u64,
    /// Its first byte.
    from: u64,
    /// Whether it is the whole object's first range, cut short (see
    /// [`Reassembly::split`]): its task may have sent bytes past its new end.
    cut: bool,
}

/// How one range's bytes come: since when, how many.
#[derive(Debug, Default)]
pub(crate) struct Arrival {
    /// When the first bytes came, and how many.
    first: std::sync::OnceLock<(Instant, u64)>,
    /// Nanoseconds the range's task held back (see [`Sink::room`]): not
    /// the link's time.
    held: AtomicU64,
    /// When the hold going on began (nanoseconds after the first bytes, plus
    /// one; 0 when none is).
    hold_began: AtomicU64,
    bytes: AtomicU64,
    /// Bytes the consumer took; whether the task holds back, and the wake-up
    /// for it when the consumer has taken enough (see [`Sink::room`]).
    taken: AtomicU64,
    holding: std::sync::atomic::AtomicBool,
    taken_more: tokio::sync::Notify,
    /// See [`Sink::end`].
    end: AtomicU64,
}

impl Arrival {
    /// Nanoseconds from its first bytes to `now` (0 before them).
    fn since_first(&self, now: Instant) -> u64 {
        self.first.get().map_or(0, |(at, _)| nanos(now - *at))
    }

    /// Nanoseconds it held back so far, the hold going on included.
    fn held_so_far(&self, now: Instant) -> u64 {
        let began = self.hold_began.load(Ordering::Relaxed);
        let holding = match began {
            0 => 0,
            b => self.since_first(now).saturating_sub(b - 1),
        };
        self.held.load(Ordering::Relaxed) + holding
    }

    /// Bytes a second since its first bytes (those after them: the first
    /// chunk says when the answer came, not how fast), once they came at
    /// least [`RATE_AFTER`] ago and [`RATE_BYTES`] more have come, or five
    /// times that long ago (a range that slow is slow: shorter spans say
    /// more of the scheduler, or of how the server paces its writes, than of
    /// the link).
    fn rate(&self, now: Instant) -> Option<f64> {
        let (at, first) = *self.first.get()?;
        let held = Duration::from_nanos(self.held_so_far(now));
        let took = (now - at).saturating_sub(held);
        let after = self.bytes.load(Ordering::Relaxed).saturating_sub(first);
        // A range that held back came faster than it was read: what it
        // brought before is its rate, however short the time.
        let judged = if held.is_zero() {
            took >= RATE_AFTER && (after >= RATE_BYTES || took >= 5 * RATE_AFTER)
        } else {
            after >= RATE_BYTES && !took.is_zero()
        };
        judged.then(|| after as f64 / took.as_secs_f64())
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// See [`Arrival::rate`].
const RATE_AFTER: Duration = Duration::from_millis(20);
/// See [`Arrival::rate`]: a few of a paced server's writes would be off by
/// one write's worth.
const RATE_BYTES: u64 = 1 << 20;

/// The smallest range [`Reassembly::tail_share`] asks for: at 10 MB/s a
/// connection, 0.2 s against a round trip of tens of milliseconds.
const TAIL_MIN: u64 = 2 << 20;

/// The window opens only while the ranges in flight each arrive at least this
/// share of the fastest rate one range was seen arriving at.
const KEEPS_UP: f64 = 0.75;

struct Reassembly {
    what: String,
    size: u64,
    /// The first range's end (the store asked for it before it knew `range`).
    first: u64,
    range: u64,
    /// The most ranges started and not yet consumed.
    window: usize,
    /// The window now (grows up to `window`), and the widest it was.
    open: usize,
    widest: usize,
    /// Whether the consumer needs no more than the narrowest window, as far
    /// as is known (see [`Sink::room`]).
    narrow: bool,
    /// Whether the ranges started when the first range was split still
    /// hold back as in the narrowest window, until the next stretch is
    /// judged: one connection that was slow says nothing yet of the others
    /// (it may be the one slow connection of a fast server).
    trial: bool,
    /// The most bytes buffered while the first range was read.
    first_peak: u64,
    /// Bytes handed to the consumer so far; where, and when, the current
    /// stretch of `range / window` bytes began; how long the consumer waited
    /// during it for bandwidth, and in all.
    consumed: u64,
    grown_at: u64,
    /// How long the first range had held back when the stretch began (see
    /// [`Reassembly::head_held_back`]).
    head_held: u64,
    stretch_began: Instant,
    waited: Duration,
    idle: Duration,
    /// The fastest rate one range was seen arriving at, bytes a second.
    fastest: f64,
    /// The same, over every download of the store.
    seen: Arc<Fastest>,
    start: Start,
    /// First byte not yet asked for.
    next: u64,
    queue: VecDeque<Pending>,
    buffered: Arc<Buffered>,
    flow: Arc<Flow>,
    ended: bool,
    /// Whether the ranges started are shares of what is left (see
    /// [`Reassembly::tail_share`]): they stay so to the end.
    tail: bool,
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
            // After the first range, each ends on a multiple of `range` (the
            // multipart parts' boundaries, when the store aligned it with them).
            let end = if self.next == 0 {
                self.first
            } else {
                // Near the end, shares of what is left, no longer aligned,
                // and never again (a narrower window makes the share larger:
                // a part's boundary would then leave a sliver to the next).
                let share = self.tail_share();
                self.tail |= share < self.range;
                if self.tail {
                    self.next + share.min(self.range)
                } else {
                    (self.next / self.range + 1) * self.range
                }
            };
            let (from, to) = (self.next, self.size.min(end));
            let (tx, rx) = mpsc::unbounded_channel();
            let arrival = Arc::new(Arrival {
                end: AtomicU64::new(to),
                ..Arrival::default()
            });
            let sink = Sink {
                tx,
                buffered: self.buffered.clone(),
                arrival: arrival.clone(),
                from,
                flow: self.flow.clone(),
            };
            let task = (self.start)(from, to, sink);
            self.queue.push_back(Pending {
                rx,
                task,
                left: to - from,
                begun: false,
                arrival,
                len: to - from,
                from,
                cut: false,
            });
            self.next = to;
        }
    }

    /// The size of a range started now near the object's end: what is
    /// still to come (in flight and not yet asked for) shared out among the
    /// window, at least [`TAIL_MIN`], so that the last ranges end together.
    /// With whole ranges, the last range asked ends a whole range's time
    /// after the one before it began, and the window empties one connection
    /// at a time: on a link of 10 MB/s a connection, the last 0.8 s ran on
    /// fewer and fewer of them.
    fn tail_share(&self) -> u64 {
        let in_flight: u64 = self
            .queue
            .iter()
            .map(|p| {
                p.len
                    .saturating_sub(p.arrival.bytes.load(Ordering::Relaxed))
            })
            .sum();
        let left = in_flight + (self.size - self.next);
        (left / self.open.max(1) as u64).max(TAIL_MIN)
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
                    "{}: {} bytes in ranges of {}, up to {} at once, at most {} bytes buffered \
                     ({} while the first range was read); one range came at up to {:.0} MB/s",
                    self.what,
                    self.size,
                    self.range,
                    self.widest,
                    self.buffered.peak(),
                    self.first_peak,
                    self.fastest / 1e6
                );
                return None;
            };
            let received = match front.rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let waiting = Instant::now();
                    let item = front.rx.recv().await;
                    let waited = waiting.elapsed();
                    self.idle += waited;
                    if front.begun {
                        self.waited += waited;
                    }
                    item
                }
            };
            let Some(front) = self.queue.front_mut() else {
                continue;
            };
            match received {
                Some(Ok(mut chunk)) => {
                    self.buffered.taken(chunk.len() as u64);
                    if chunk.len() as u64 > front.left {
                        if !front.cut {
                            return Some(Err(self.fail("more bytes than asked for")));
                        }
                        // Sent before its task saw the new end.
                        chunk.truncate(front.left as usize);
                    }
                    let n = chunk.len() as u64;
                    front.left -= n;
                    front.begun = true;
                    let taken = front.arrival.taken.fetch_add(n, Ordering::SeqCst) + n;
                    if front.arrival.holding.load(Ordering::SeqCst)
                        && front
                            .arrival
                            .bytes
                            .load(Ordering::Relaxed)
                            .saturating_sub(taken)
                            <= HEAD_HOLD / 2
                    {
                        front.arrival.taken_more.notify_waiters();
                    }
                    self.consumed += n;
                    if front.cut && front.left == 0 {
                        self.drop_cut_head();
                    }
                    self.judge();
                    return Some(Ok(chunk));
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                None if front.left == 0 => {
                    self.first_read();
                    self.queue.pop_front();
                    self.tell();
                }
                None => return Some(Err(self.fail("a range ended early"))),
            }
        }
    }

    /// At the end of each stretch of `range / window` bytes: one range more
    /// if the consumer waited for bandwidth at least a third of the stretch's
    /// time, the ranges still arriving each keep up with the fastest one seen
    /// and the consumer could take more than the window brings; one less if
    /// the ranges do not keep up or the window is wider than the consumer
    /// needs (see the module's comment).
    fn judge(&mut self) {
        let stretch = self.consumed - self.grown_at;
        if stretch < self.range / self.window as u64 {
            return;
        }
        let now = Instant::now();
        let elapsed = now - self.stretch_began;
        // A few milliseconds say more of the scheduler than of the link or
        // the consumer (a fast local server).
        if elapsed < RATE_AFTER {
            return;
        }
        // The slowest range still arriving (a finished one says nothing of
        // the ranges in flight now).
        let rates: Vec<(f64, bool)> = self
            .queue
            .iter()
            .filter_map(|p| {
                let rate = p.arrival.rate(now)?;
                Some((rate, p.arrival.bytes.load(Ordering::Relaxed) < p.len))
            })
            .collect();
        let slowest = rates
            .iter()
            .filter(|(_, arriving)| *arriving)
            .map(|(r, _)| *r)
            .reduce(f64::min);
        // Every range seen counts for the fastest, those held back too (they
        // came faster than they were read).
        for (rate, _) in &rates {
            self.fastest = self.fastest.max(*rate);
        }
        self.seen.raise(self.fastest);
        self.fastest = self.fastest.max(self.seen.get());
        let keeps_up = slowest.is_none_or(|r| r >= KEEPS_UP * self.fastest);
        let needed = self.needed(stretch, elapsed.saturating_sub(self.idle));
        let (was, narrow, trial) = (self.open, self.narrow, self.trial);
        self.trial = false;
        self.narrow = needed <= FIRST_WINDOW;
        let grow = keeps_up && self.open < self.window.min(needed) && self.waited * 3 >= elapsed;
        if (!keeps_up || self.open > needed + 1) && self.open > FIRST_WINDOW {
            self.open -= 1;
        } else if grow && self.open == 1 {
            // One connection is the bound: worth splitting only when the
            // consumer would take more than one brings, and the connection
            // hardly held back for it in the stretch. The window opens to
            // where one of two would be after one stretch (three: the first
            // range, and two whose requests are under way).
            if needed > FIRST_WINDOW && !self.head_held_back(elapsed) && self.split() {
                self.open = (FIRST_WINDOW + 1).min(self.window);
                self.trial = true;
                self.widest = self.widest.max(self.open);
            }
        } else if grow {
            self.open += 1;
            self.widest = self.widest.max(self.open);
        }
        if self.open != was || self.narrow != narrow || self.trial != trial {
            self.tell();
            tracing::trace!(
                "{}: {} ranges at once{} after {} bytes (waited {:.0} %, slowest {:.1} MB/s, \
                 fastest {:.1} MB/s, {needed} needed)",
                self.what,
                self.open,
                if self.narrow {
                    ", the next held at 256 KiB"
                } else {
                    ""
                },
                self.consumed,
                100.0 * self.waited.as_secs_f64() / elapsed.as_secs_f64(),
                slowest.unwrap_or(0.0) / 1e6,
                self.fastest / 1e6
            );
        }
        self.grown_at = self.consumed;
        self.head_held = self.queue.front().map_or(0, |h| h.arrival.held_so_far(now));
        self.stretch_began = now;
        self.waited = Duration::ZERO;
        self.idle = Duration::ZERO;
    }

    /// The ranges that would keep a consumer busy that took `bytes` in `busy`
    /// time of its own: its rate over the fastest one range was seen at, and
    /// one more for the round trip at each range's start. The whole window
    /// while either rate is unknown.
    fn needed(&self, bytes: u64, busy: Duration) -> usize {
        let busy = busy.as_secs_f64();
        if self.fastest <= 0.0 || busy <= 0.0 {
            return self.window;
        }
        let ranges = (bytes as f64 / busy / self.fastest).ceil();
        if ranges >= self.window as f64 {
            self.window
        } else {
            ranges as usize + 1
        }
    }

    /// Whether the first range, still whole, held back during the stretch:
    /// its connection brought bytes faster than the consumer took them, for
    /// a while at least. Then the consumer's waits were the server's or the
    /// scheduler's pauses, not a connection too slow for it: a loopback
    /// server on busy cores, where more connections would only hold more
    /// bytes. (A link that limits each connection never fills the
    /// consumer's 256 KiB while the consumer waits for it.)
    fn head_held_back(&self, elapsed: Duration) -> bool {
        let held = self.queue.front().map_or(0, |h| {
            h.arrival
                .held_so_far(Instant::now())
                .saturating_sub(self.head_held)
        });
        // A twentieth of the stretch: more than a wake-up's delay, less than
        // any wait of the consumer that counts (a third of the stretch).
        u128::from(held) * 20 >= elapsed.as_nanos()
    }

    /// Cuts the first range, asked for as the whole object, at the first
    /// range boundary after the bytes it brought, so that ranges can be
    /// started after it; false when there is nothing left to split.
    fn split(&mut self) -> bool {
        let range = self.range;
        let Some(head) = self.queue.front_mut() else {
            return false;
        };
        if head.from != 0 || head.cut || self.next < self.size {
            return false;
        }
        let came = head.arrival.bytes.load(Ordering::Acquire);
        let end = (came / range + 1) * range;
        if end >= self.size {
            return false;
        }
        head.arrival.end.store(end, Ordering::Release);
        head.left -= head.len - end;
        head.len = end;
        head.cut = true;
        self.next = end;
        tracing::trace!("{}: the first range cut at {end}", self.what);
        true
    }

    /// The cut first range is consumed: its connection, still open on the
    /// rest of the object, is dropped, and what it sent past its end with it.
    fn drop_cut_head(&mut self) {
        self.first_read();
        if let Some(mut head) = self.queue.pop_front() {
            head.task.abort();
            head.rx.close();
            while let Ok(item) = head.rx.try_recv() {
                if let Ok(chunk) = item {
                    self.buffered.taken(chunk.len() as u64);
                }
            }
        }
        self.tell();
    }

    /// Notes the most buffered while the first range was read, when the
    /// range read is the first.
    fn first_read(&mut self) {
        if self.queue.front().is_some_and(|p| p.from == 0) {
            self.first_peak = self.buffered.peak();
        }
    }

    /// Tells the ranges' tasks which range is read, and whether to hold.
    fn tell(&self) {
        if let Some(front) = self.queue.front() {
            self.flow.head.store(front.from, Ordering::Release);
        }
        let hold = if self.open > FIRST_WINDOW && !self.trial {
            u64::MAX
        } else if self.narrow {
            HEAD_HOLD
        } else {
            HOLD
        };
        self.flow.hold.store(hold, Ordering::Release);
        self.flow.changed.notify_waiters();
    }

    fn fail(&mut self, why: &str) -> io::Error {
        self.ended = true;
        io::Error::other(format!("{}: {why}", self.what))
    }
}

/// The object of `size` bytes as one stream, fetched as the range of bytes
/// `[0, first)` and then ranges ending on multiples of `range` (the last at
/// `size`), at most `window` of them started and not yet consumed. `what`
/// names the object in errors.
pub(crate) fn reassemble(
    what: String,
    size: u64,
    first: u64,
    range: u64,
    window: usize,
    seen: Arc<Fastest>,
    start: Start,
) -> (ByteStream, Arc<Buffered>) {
    let buffered = Arc::new(Buffered::default());
    // The first range asked for the whole object: it alone, until the
    // consumer shows that it would take more than one connection brings.
    let whole_or = |n| if first >= size { 1 } else { n };
    let state = Reassembly {
        what,
        size,
        first: first.max(1),
        range: range.max(1),
        window: window.max(1),
        open: whole_or(FIRST_WINDOW.min(window.max(1))),
        widest: whole_or(FIRST_WINDOW.min(window.max(1))),
        narrow: false,
        trial: false,
        first_peak: 0,
        consumed: 0,
        grown_at: 0,
        head_held: 0,
        stretch_began: Instant::now(),
        waited: Duration::ZERO,
        idle: Duration::ZERO,
        fastest: 0.0,
        seen,
        start,
        next: 0,
        queue: VecDeque::new(),
        buffered: buffered.clone(),
        flow: Arc::new(Flow::default()),
        ended: false,
        tail: false,
    };
    state.tell();
    let stream = futures::stream::unfold(state, |mut s| async move {
        let item = s.next_chunk().await?;
        Some((item, s))
    });
    (Box::pin(stream), buffered)
}

#[cfg(test)]
mod tests {
    //! The window against modelled links and consumers, on tokio's paused clock:
    //! the time they take is simulated, so the outcome does not depend on the
    //! machine's load.

    use std::sync::Mutex;

    use futures::StreamExt;

    use super::*;
    use crate::store::s3::WINDOW;

    const MIB: u64 = 1 << 20;
    const RANGE: u64 = 8 * MIB;
    const CHUNK: u64 = 64 << 10;

    /// How the bytes of the ranges arrive.
    #[derive(Clone, Copy)]
    enum Link {
        /// Each connection carries `rate` bytes a second, after `delay`.
        PerConnection { rate: f64, delay: Duration },
        /// One server sends `rate` bytes a second in all, shared by its
        /// connections chunk by chunk (a server on the same cores, or a shared
        /// link): more ranges do not make it faster.
        Shared { rate: f64 },
        /// Each connection carries `rate` bytes a second for `on`, then
        /// nothing for `off`, and so on: a server on cores that other work
        /// keeps busy, scheduled in slices.
        Bursty {
            rate: f64,
            on: Duration,
            off: Duration,
        },
    }

    fn secs(bytes: u64, rate: f64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / rate)
    }

    /// Serves the ranges over `link` in pieces of `chunk` bytes.
    fn start(link: Link, chunk: u64) -> Start {
        // When the shared server is next free.
        let free = Arc::new(Mutex::new(Instant::now()));
        let began = Instant::now();
        Box::new(move |from, to, sink| {
            let free = free.clone();
            tokio::spawn(async move {
                if let Link::PerConnection { delay, .. } = link {
                    tokio::time::sleep(delay).await;
                }
                // Deadlines, not sleeps: the paused clock counts whole
                // milliseconds.
                let mut due = Instant::now();
                let mut at = from;
                while at < to.min(sink.end()) {
                    sink.room().await;
                    let n = chunk.min(to - at);
                    match link {
                        Link::PerConnection { rate, .. } => {
                            due += secs(n, rate);
                            tokio::time::sleep_until(due).await;
                        }
                        Link::Bursty { rate, on, off } => {
                            // No catching up on a pause's bytes: a slice missed is lost.
                            due =
                                due.max(Instant::now() - Duration::from_millis(1)) + secs(n, rate);
                            let cycle = (on + off).as_nanos();
                            let phase = (due - began).as_nanos() % cycle;
                            if phase >= on.as_nanos() {
                                due += Duration::from_nanos((cycle - phase) as u64);
                            }
                            tokio::time::sleep_until(due).await;
                        }
                        Link::Shared { rate } => {
                            let until = {
                                let mut f = free.lock().unwrap();
                                let idle = Instant::now() - Duration::from_millis(1);
                                *f = (*f).max(idle) + secs(n, rate);
                                *f
                            };
                            tokio::time::sleep_until(until).await;
                        }
                    }
                    if !sink.send(Bytes::from(vec![(at % 251) as u8; n as usize])) {
                        return;
                    }
                    at += n;
                }
            })
            .abort_handle()
        })
    }

    /// Reads an object of `size` bytes through the window, taking `consumer`
    /// bytes a second; checks every byte; returns the most bytes buffered and
    /// how long it took.
    async fn fetch(size: u64, link: Link, consumer: f64) -> (u64, Duration) {
        fetch_in(size, link, CHUNK, consumer).await
    }

    /// [`fetch`], the link sending `chunk` bytes at a time (the paused clock
    /// counts whole milliseconds: a consumer's time per chunk must be several
    /// of them to be seen).
    async fn fetch_in(size: u64, link: Link, chunk: u64, consumer: f64) -> (u64, Duration) {
        fetch_seen(size, link, chunk, consumer, Arc::default()).await
    }

    /// [`fetch_in`], other downloads of the store having seen `seen`.
    async fn fetch_seen(
        size: u64,
        link: Link,
        chunk: u64,
        consumer: f64,
        seen: Arc<Fastest>,
    ) -> (u64, Duration) {
        let began = Instant::now();
        let (mut stream, buffered) = reassemble(
            "test".into(),
            size,
            size,
            RANGE,
            WINDOW,
            seen,
            start(link, chunk),
        );
        let mut at = 0u64;
        let mut due = Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            // Chunks are filled with the offset they start at (modulo 251).
            assert!(chunk.iter().all(|b| *b == (at % 251) as u8), "byte {at}");
            at += chunk.len() as u64;
            // Waiting for bytes is no credit (a tick of the clock is).
            due = due.max(Instant::now() - Duration::from_millis(1))
                + secs(chunk.len() as u64, consumer);
            tokio::time::sleep_until(due).await;
        }
        assert_eq!(at, size);
        (buffered.peak(), began.elapsed())
    }

    /// A remote link of 10 MB/s a connection, 20 ms a request, and a consumer
    /// at 300 MB/s: the window opens to its twelve ranges, and the download
    /// takes less than eight connections' worth.
    #[tokio::test(start_paused = true)]
    async fn a_slow_link_opens_the_window() {
        let size = 256 * MIB;
        let link = Link::PerConnection {
            rate: 10e6,
            delay: Duration::from_millis(20),
        };
        let (peak, took) = fetch(size, link, 300e6).await;
        let reference = secs(size, 8.0 * 10e6);
        eprintln!("peak {} MiB, {took:?} against {reference:?}", peak / MIB);
        // The targets: within 1.3 x of eight connections' worth, and
        // 1.5 x faster than ten connections that download, then unpack (the
        // window opens over the first 8 MiB).
        assert!(took < reference, "{took:?}");
        assert!(peak <= WINDOW as u64 * RANGE, "{peak}");
    }

    /// The same link: the last ranges are shares of what is left, so that
    /// they end together and the connections stay busy to the end. With
    /// whole ranges to the end, the last one began 72 ms after the one before
    /// it and took 0.84 s, while the window emptied (3.03 s).
    #[tokio::test(start_paused = true)]
    async fn the_last_ranges_end_together() {
        let link = Link::PerConnection {
            rate: 10e6,
            delay: Duration::from_millis(20),
        };
        let (_, took) = fetch(256 * MIB, link, 300e6).await;
        assert!(took < Duration::from_millis(2900), "{took:?}");
    }

    /// The first range is cut at a range boundary in the middle of one of
    /// its chunks (100 kB chunks do not divide 8 MiB): the consumer gets
    /// exactly the object, the part of that chunk past the cut taken from
    /// the range after it, not twice.
    #[tokio::test(start_paused = true)]
    async fn a_cut_inside_a_chunk_hands_on_each_byte_once() {
        let link = Link::PerConnection {
            rate: 10e6,
            delay: Duration::from_millis(20),
        };
        let (peak, _) = fetch_in(40 * MIB + 12_345, link, 100_000, 300e6).await;
        // It was cut (more than one range held bytes at once).
        assert!(peak > 2 * HOLD, "{peak}");
    }

    /// A server that sends faster than the consumer takes: the first range,
    /// asked whole, is never cut, and holds at most 256 KiB and two chunks (its
    /// connection waits for the rest), as one plain GET would.
    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_holds_what_one_get_would() {
        let (peak, _) = fetch(256 * MIB, Link::Shared { rate: 1e9 }, 250e6).await;
        eprintln!("peak {} KiB", peak >> 10);
        assert!(peak <= HEAD_HOLD + 2 * CHUNK, "{peak}");
    }

    /// A server that sends in bursts faster than the consumer takes, and
    /// pauses in between (on busy cores): the consumer waits in the pauses,
    /// but the first range holds back in the bursts, so a second connection
    /// would bring nothing sooner; it stays whole, one stream.
    #[tokio::test(start_paused = true)]
    async fn a_bursty_server_keeps_one_stream() {
        let link = Link::Bursty {
            rate: 1e9,
            on: Duration::from_millis(5),
            off: Duration::from_millis(20),
        };
        let (peak, took) = fetch(64 * MIB, link, 250e6).await;
        eprintln!("peak {} KiB, {took:?}", peak >> 10);
        assert!(peak <= HEAD_HOLD + 2 * CHUNK, "{peak}");
    }

    /// Ranges that each come at 50 MB/s to a consumer of 300 MB/s look like a
    /// link that limits each connection, and the window opens; but when
    /// another download of the store saw a range come at 1 GB/s, they are
    /// sharing a bound (a local server on busy cores), and it stays shut.
    #[tokio::test(start_paused = true)]
    async fn a_range_seen_faster_elsewhere_keeps_the_window_shut() {
        let size = 64 * MIB;
        let link = Link::PerConnection {
            rate: 50e6,
            delay: Duration::from_millis(1),
        };
        let (alone, _) = fetch_in(size, link, CHUNK, 300e6).await;
        let seen = Arc::new(Fastest::default());
        seen.raise(1e9);
        let (shared, _) = fetch_seen(size, link, CHUNK, 300e6, seen).await;
        eprintln!("peak {} KiB alone, {} KiB", alone >> 10, shared >> 10);
        assert!(alone > 2 * RANGE, "{alone}");
        assert!(shared <= RANGE + 2 * HOLD, "{shared}");
    }

    /// A link of 100 MB/s a connection and a consumer of 250 MB/s: three
    /// connections are enough, and the window opens no further than that
    /// (four ranges with the one whose request is under way; the consumer
    /// waiting at each range's start opened it to six before), at the
    /// consumer's speed.
    #[tokio::test(start_paused = true)]
    async fn the_window_opens_no_further_than_the_consumer_needs() {
        let size = 256 * MIB;
        let link = Link::PerConnection {
            rate: 100e6,
            delay: Duration::from_millis(5),
        };
        let (peak, took) = fetch_in(size, link, 256 << 10, 250e6).await;
        let consumer = secs(size, 250e6);
        eprintln!("peak {} MiB, {took:?} against {consumer:?}", peak / MIB);
        assert!(peak <= 3 * RANGE, "{peak}");
        assert!(
            took.as_secs_f64() < 1.1 * consumer.as_secs_f64(),
            "{took:?}"
        );
    }

    /// A server slower than the consumer, whose connections share its rate (a
    /// server on the same cores, or a link that one connection fills): more
    /// ranges would not be faster, only buffer more; the window stays small.
    #[tokio::test(start_paused = true)]
    async fn a_shared_bound_does_not_open_the_window() {
        let (peak, took) = fetch(256 * MIB, Link::Shared { rate: 100e6 }, 300e6).await;
        eprintln!("peak {} MiB, {took:?}", peak / MIB);
        // 21 MiB before the ranges not being read held back.
        assert!(peak <= 4 * HOLD, "{peak}");
    }
}
