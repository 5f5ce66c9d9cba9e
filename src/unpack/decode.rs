//! Decompression: the codec chosen by the format, and the decoder stage that turns
//! compressed chunks into decompressed ones (`Threads::Pipelined`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{BzDecoder, GzipDecoder, XzDecoder, ZstdDecoder};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use super::Format;
use super::reader::ChannelReader;

/// Size and number of decompressed chunks in flight to the writer. Their buffers are
/// recycled (see `ChannelReader::recycle`): no allocation, and so no fresh pages to
/// fault in, per chunk.
pub(super) const DECODED_CHUNK: usize = 256 << 10;
pub(super) const DECODED_CHUNKS: usize = 8;

#[derive(Debug, Clone, Copy)]
pub(super) enum Codec {
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Xz => "xz",
            Codec::Bzip2 => "bzip2",
        }
    }

    pub(super) fn of(format: Format) -> Option<Codec> {
        match format {
            Format::Tar | Format::Plain => None,
            Format::TarGz | Format::Gz => Some(Codec::Gzip),
            Format::TarZst | Format::Zst => Some(Codec::Zstd),
            Format::TarXz | Format::Xz => Some(Codec::Xz),
            Format::TarBz2 | Format::Bz2 => Some(Codec::Bzip2),
        }
    }
}

/// The decompressor for `codec` over `input`. Concatenated members/frames are all
/// decoded (as `gzip -d` does).
pub(super) fn decoder_for(
    codec: Codec,
    input: &mut ChannelReader,
) -> Box<dyn AsyncRead + Unpin + '_> {
    match codec {
        Codec::Gzip => {
            let mut d = GzipDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
        Codec::Zstd => {
            let mut d = ZstdDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
        Codec::Xz => {
            let mut d = XzDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
        Codec::Bzip2 => {
            let mut d = BzDecoder::new(input);
            d.multiple_members(true);
            Box::new(d)
        }
    }
}

/// A decompressor whose errors name the codec (as `decode` does in-band).
pub(super) struct Named<R> {
    pub(super) inner: R,
    pub(super) codec: Codec,
}

impl<R: AsyncRead + Unpin> AsyncRead for Named<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let codec = self.codec;
        Pin::new(&mut self.inner)
            .poll_read(cx, buf)
            .map_err(|e| io::Error::new(e.kind(), format!("{} data: {e}", codec.name())))
    }
}

/// Runs on its own blocking thread (`Threads::Pipelined`). Errors are passed on
/// in-band; the writer classifies them.
pub(super) fn decode(
    codec: Codec,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    recycled: &std::sync::mpsc::Receiver<BytesMut>,
) {
    let mut input = ChannelReader::new(rx);
    let mut decoder = decoder_for(codec, &mut input);
    futures::executor::block_on(async {
        loop {
            // A buffer the writer is done with, or a new one while the pipeline fills up
            // (at most DECODED_CHUNKS + 2 are ever in use). `reserve` moves a recycled
            // buffer's (empty) view back to the start of its allocation.
            let mut chunk = recycled
                .try_recv()
                .unwrap_or_else(|_| BytesMut::with_capacity(DECODED_CHUNK));
            chunk.reserve(DECODED_CHUNK);
            let mut failed = None;
            while chunk.len() < DECODED_CHUNK {
                match decoder.read_buf(&mut chunk).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let at_end = chunk.len() < DECODED_CHUNK;
            // A send fails only when the writer is gone: then stop, which closes our input.
            if !chunk.is_empty() && tx.send(Ok(chunk.freeze())).await.is_err() {
                return;
            }
            if let Some(e) = failed {
                let e = io::Error::new(e.kind(), format!("{} data: {e}", codec.name()));
                let _ = tx.send(Err(e)).await;
                return;
            }
            if at_end {
                return;
            }
        }
    });
}
