//! The readers the worker reads through: the channel's chunks as one byte stream, and
//! the count of decompressed bytes that enforces the size limits.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// The channel's chunks as one buffered byte stream, without copying them.
pub(super) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
    done: bool,
    /// Where consumed chunks go back to be filled again (decoded chunks only).
    recycle: Option<std::sync::mpsc::Sender<BytesMut>>,
}

impl ChannelReader {
    pub(super) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            chunk: Bytes::new(),
            done: false,
            recycle: None,
        }
    }

    pub(super) fn recycling(mut self, to: Option<std::sync::mpsc::Sender<BytesMut>>) -> Self {
        self.recycle = to;
        self
    }

    /// Hands the (consumed) current chunk's buffer back to its producer.
    fn recycle(&mut self) {
        if let Some(to) = &self.recycle
            && let Ok(mut buf) = std::mem::take(&mut self.chunk).try_into_mut()
        {
            buf.clear();
            // The producer may be gone: then the buffer is simply freed.
            let _ = to.send(buf);
        }
    }
}

impl AsyncBufRead for ChannelReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.chunk.is_empty() && !this.done {
            this.recycle();
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => this.chunk = chunk,
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Err(e));
                }
                None => this.done = true,
            }
        }
        Poll::Ready(Ok(&this.chunk[..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.chunk.advance(amt.min(this.chunk.len()));
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

/// Counts decompressed bytes and fails the read once they exceed the limit or the
/// current window (the writer then reports `TooLarge`, seeing the count).
pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) count: Rc<Cell<u64>>,
    pub(super) limit: u64,
    /// Position in the stream beyond which reading is refused for now (see `untar`).
    pub(super) window: Rc<Cell<u64>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let total = this
            .count
            .get()
            .saturating_add((buf.filled().len() - before) as u64);
        this.count.set(total);
        if total > this.limit || total > this.window.get() {
            return Poll::Ready(Err(io::Error::other("unpacked size limit exceeded")));
        }
        Poll::Ready(Ok(()))
    }
}
