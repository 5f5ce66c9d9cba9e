//! The feeder, the first stage: reads the download, hashes every (compressed) byte of
//! it and hands the chunks on; then the check of the digest against what was expected.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Md5;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::UnpackError;
use crate::digest::{Expected, hex};
use crate::names::md5_tag;

pub(super) struct Fed {
    pub(super) bytes_in: u64,
    /// `None` when the body was not read to its end.
    pub(super) digest: Option<Computed>,
}

pub(super) enum Hasher {
    Sha256(Box<Sha256>),
    Md5(Md5),
    Nothing,
}

pub(super) enum Computed {
    Sha256([u8; 32]),
    Md5([u8; 16]),
    Nothing,
}

impl Hasher {
    pub(super) fn new(expected: &Expected) -> Self {
        match expected {
            Expected::Sha256(_) => Hasher::Sha256(Box::default()),
            Expected::Md5Tag(_) => Hasher::Md5(Md5::new()),
            Expected::Nothing => Hasher::Nothing,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::Nothing => {}
        }
    }

    fn finish(self) -> Computed {
        match self {
            Hasher::Sha256(h) => Computed::Sha256(h.finalize().into()),
            Hasher::Md5(h) => Computed::Md5(h.finalize().into()),
            Hasher::Nothing => Computed::Nothing,
        }
    }
}

pub(super) async fn feed(
    mut body: impl Stream<Item = io::Result<Bytes>> + Unpin,
    tx: mpsc::Sender<io::Result<Bytes>>,
    mut hasher: Hasher,
    keep_hashing: &AtomicBool,
) -> io::Result<Fed> {
    let mut bytes_in = 0u64;
    let mut tx = Some(tx);
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => {
                bytes_in += chunk.len() as u64;
                hasher.update(&chunk);
                if let Some(sender) = &tx
                    && sender.send(Ok(chunk)).await.is_err()
                {
                    // The pipeline stopped reading (done or failed).
                    tx = None;
                    if matches!(hasher, Hasher::Nothing) {
                        return Ok(Fed {
                            bytes_in,
                            digest: Some(Computed::Nothing),
                        });
                    }
                    if !keep_hashing.load(Ordering::SeqCst) {
                        return Ok(Fed {
                            bytes_in,
                            digest: None,
                        });
                    }
                }
            }
            Err(e) => {
                if let Some(sender) = &tx {
                    // Let the worker stop at once; the original error is reported by us.
                    let _ = sender
                        .send(Err(io::Error::new(e.kind(), e.to_string())))
                        .await;
                }
                return Err(e);
            }
        }
    }
    Ok(Fed {
        bytes_in,
        digest: Some(hasher.finish()),
    })
}

pub(super) fn verify(expected: &Expected, actual: &Computed) -> Result<(), UnpackError> {
    match (expected, actual) {
        (Expected::Nothing, _) => Ok(()),
        (Expected::Sha256(want), Computed::Sha256(got)) => {
            if want == got {
                Ok(())
            } else {
                Err(UnpackError::DigestMismatch {
                    expected: format!("sha256 {}", hex(want)),
                    actual: format!("sha256 {}", hex(got)),
                })
            }
        }
        (Expected::Md5Tag(want), Computed::Md5(got)) => {
            let tag = md5_tag(got);
            if *want == tag {
                Ok(())
            } else {
                Err(UnpackError::DigestMismatch {
                    expected: format!("md5 tag {want:?}"),
                    actual: format!("md5 tag {tag:?} (md5 {})", hex(got)),
                })
            }
        }
        // Cannot happen (the hasher is chosen from `expected`); refuse rather than pass.
        (Expected::Sha256(want), _) => Err(UnpackError::DigestMismatch {
            expected: format!("sha256 {}", hex(want)),
            actual: "nothing computed".to_owned(),
        }),
        (Expected::Md5Tag(want), _) => Err(UnpackError::DigestMismatch {
            expected: format!("md5 tag {want:?}"),
            actual: "nothing computed".to_owned(),
        }),
    }
}
