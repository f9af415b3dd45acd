//! Content digests (`sha256:<hex>`) and hashing while streaming.
//!
//! Only sha256 is accepted: it is what every OCI client sends, and accepting an algorithm we do not
//! verify would make a digest a mere label. sha512 is recognised so that callers can answer
//! "unsupported" rather than "invalid".

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::Digest as _;

use crate::ByteStream;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not an acceptable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not of the form `algorithm:encoded`, or the encoded part is malformed.
    #[error("invalid digest {0:?}")]
    Invalid(String),
    /// A well-formed digest of an algorithm this registry does not verify.
    #[error("unsupported digest algorithm {0:?}")]
    Unsupported(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest { hex: hex::encode(sha2::Sha256::digest(bytes)) }
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let invalid = || DigestError::Invalid(s.chars().take(160).collect());
        let (algorithm, encoded) = s.split_once(':').ok_or_else(invalid)?;
        // distribution-spec "Pulling blobs" / image-spec descriptor grammar:
        // algorithm-component ([a-z0-9]+) joined by [+._-], encoded [a-zA-Z0-9=_-]+.
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let encoded_ok = !encoded.is_empty()
            && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if !algorithm_ok || !encoded_ok {
            return Err(invalid());
        }
        let hex_len = match algorithm {
            "sha256" => 64,
            "sha512" => return Err(DigestError::Unsupported(algorithm.to_owned())),
            _ => return Err(DigestError::Unsupported(algorithm.chars().take(32).collect())),
        };
        if encoded.len() != hex_len || !encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(Digest { hex: encoded.to_owned() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A running sha256, shared between a stream being written and the code that owns the upload.
///
/// Cloning shares the state. [`Hasher::snapshot`] copies it, so a failed append can be undone by
/// [`Hasher::restore`].
#[derive(Clone, Default)]
pub struct Hasher {
    state: Arc<Mutex<sha2::Sha256>>,
}

impl Hasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// Feeds bytes.
    pub fn update(&self, bytes: &[u8]) {
        self.state.lock().expect("hasher lock is never poisoned: update cannot panic").update(bytes);
    }

    /// The digest of everything fed so far (the state is kept).
    pub fn digest(&self) -> Digest {
        let state = self.state.lock().expect("hasher lock is never poisoned").clone();
        Digest { hex: hex::encode(state.finalize()) }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> sha2::Sha256 {
        self.state.lock().expect("hasher lock is never poisoned").clone()
    }

    /// Puts back a state taken by [`Hasher::snapshot`].
    pub fn restore(&self, state: sha2::Sha256) {
        *self.state.lock().expect("hasher lock is never poisoned") = state;
    }

    /// Wraps `body` so that every byte passing through is fed to this hasher.
    ///
    /// Bytes pass through in batches of about [`BATCH`] (small chunks are gathered into one
    /// buffer, large ones pass as they are), and each batch is hashed on the blocking pool while
    /// the next one is received and the consumer writes this one: hashing is the most expensive
    /// step of an upload, and it no longer runs between receiving and writing. The hasher's state
    /// changes only when the stream ends: an append that fails part way leaves it as it was,
    /// unless the body was read to its end.
    pub fn tap(&self, body: ByteStream) -> ByteStream {
        let tap = Tap { body, home: self.clone(), state: TapState::Idle(self.snapshot()), buffer: BytesMut::new() };
        Box::pin(futures::stream::unfold(tap, Tap::next))
    }

    /// Feeds a whole stream, for rebuilding the state of an upload from its staged bytes.
    pub async fn consume(&self, mut body: ByteStream) -> io::Result<()> {
        while let Some(chunk) = body.next().await {
            self.update(&chunk?);
        }
        Ok(())
    }
}

/// Bytes per batch of a tapped stream: each is one trip to the blocking pool for hashing (which
/// takes about half a millisecond per MiB, so the trip costs little) and one write downstream.
/// Small enough to bound what an upload holds: about three batches.
pub const BATCH: usize = 1 << 20;

/// The stream state behind [`Hasher::tap`].
struct Tap {
    body: ByteStream,
    home: Hasher,
    state: TapState,
    /// Small chunks gathered into the next batch.
    buffer: BytesMut,
}

enum TapState {
    /// No batch is being hashed; the state has seen every batch passed on so far.
    Idle(sha2::Sha256),
    /// A batch is being hashed on the blocking pool; the task returns the state.
    Hashing(tokio::task::JoinHandle<sha2::Sha256>),
    /// The stream ended or failed.
    Done,
}

impl Tap {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Tap)> {
        loop {
            if matches!(self.state, TapState::Done) {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) if self.buffer.is_empty() && chunk.len() >= BATCH => return self.pass(chunk).await,
                Some(Ok(chunk)) => {
                    self.buffer.reserve(BATCH.saturating_sub(self.buffer.len()).max(chunk.len()));
                    self.buffer.extend_from_slice(&chunk);
                    if self.buffer.len() >= BATCH {
                        let batch = self.buffer.split().freeze();
                        return self.pass(batch).await;
                    }
                }
                Some(Err(err)) => return self.fail(err),
                None if !self.buffer.is_empty() => {
                    let batch = self.buffer.split().freeze();
                    return self.pass(batch).await;
                }
                None => {
                    match self.idle_state().await {
                        Ok(state) => self.home.restore(state),
                        Err(err) => return self.fail(err),
                    }
                    return None;
                }
            }
        }
    }

    /// Starts hashing `batch` once the previous batch is hashed, and passes it on.
    async fn pass(mut self, batch: Bytes) -> Option<(io::Result<Bytes>, Tap)> {
        let mut state = match self.idle_state().await {
            Ok(state) => state,
            Err(err) => return self.fail(err),
        };
        let hashed = batch.clone();
        self.state = TapState::Hashing(tokio::task::spawn_blocking(move || {
            state.update(&hashed);
            state
        }));
        Some((Ok(batch), self))
    }

    /// Waits for the batch being hashed, if any, and returns the state (leaving `Done` behind).
    async fn idle_state(&mut self) -> io::Result<sha2::Sha256> {
        match std::mem::replace(&mut self.state, TapState::Done) {
            TapState::Idle(state) => Ok(state),
            TapState::Hashing(task) => task.await.map_err(io::Error::other),
            TapState::Done => Err(io::Error::other("hashing stream used after it ended")),
        }
    }

    /// Passes an error on and ends the stream; the hasher keeps its state from before.
    fn fail(mut self, err: io::Error) -> Option<(io::Result<Bytes>, Tap)> {
        self.state = TapState::Done;
        self.buffer = BytesMut::new();
        Some((Err(err), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(empty.parse::<Digest>().unwrap(), Digest::of(b""));
        assert_eq!(Digest::of(b"").to_string(), empty);
        let cases = [
            ("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "invalid"),
            ("sha256:abc", "invalid"),
            ("sha256", "invalid"),
            ("", "invalid"),
            ("SHA256:aa", "invalid"),
            ("sha256:../../etc/passwd", "invalid"),
            ("sha512:aa", "unsupported"),
            ("md5:aa", "unsupported"),
        ];
        for (input, expected) in cases {
            let got = match input.parse::<Digest>() {
                Ok(_) => "ok",
                Err(DigestError::Invalid(_)) => "invalid",
                Err(DigestError::Unsupported(_)) => "unsupported",
            };
            assert_eq!(got, expected, "{input}");
        }
    }

    #[tokio::test]
    async fn tap_and_restore() {
        let hasher = Hasher::new();
        let body: ByteStream = Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(b"ab"))]));
        hasher.consume(hasher.tap(Box::pin(futures::stream::empty()))).await.unwrap();
        let before = hasher.snapshot();
        let mut tapped = hasher.tap(body);
        while tapped.next().await.is_some() {}
        assert_eq!(hasher.digest(), Digest::of(b"ab"));
        hasher.restore(before);
        assert_eq!(hasher.digest(), Digest::of(b""));
    }

    #[tokio::test]
    async fn tap_hashes_in_batches_and_changes_state_only_at_the_end() {
        let data: Vec<u8> = (0..3 * BATCH + 12_345).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<io::Result<Bytes>> = data.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let hasher = Hasher::new();
        let mut tapped = hasher.tap(Box::pin(futures::stream::iter(chunks)));
        let mut passed = Vec::new();
        while let Some(chunk) = tapped.next().await {
            passed.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(passed, data, "chunks pass through unchanged and in order");
        assert_eq!(hasher.digest(), Digest::of(&data));

        // Small chunks are gathered into batches; a large one passes as it is when no small
        // ones are waiting.
        let sizes = [1, 4096, BATCH - 4097, 2 * BATCH, 10, 3 * BATCH, 7];
        let chunks: Vec<io::Result<Bytes>> = sizes.iter().enumerate().map(|(i, n)| Ok(Bytes::from(vec![i as u8; *n]))).collect();
        let expected: Vec<u8> = data.iter().copied().chain(sizes.iter().enumerate().flat_map(|(i, n)| std::iter::repeat_n(i as u8, *n))).collect();
        let batches: Vec<usize> = hasher.tap(Box::pin(futures::stream::iter(chunks))).map(|b| b.unwrap().len()).collect().await;
        assert_eq!(batches, [BATCH, 2 * BATCH, 3 * BATCH + 10, 7]);
        assert_eq!(hasher.digest(), Digest::of(&expected));

        // A body that breaks after more than a batch leaves the state as it was, and nothing
        // after the error is read.
        let failing = vec![Ok(Bytes::from(vec![1u8; 2 * BATCH])), Err(io::Error::other("gone")), Ok(Bytes::from_static(b"never"))];
        let mut tapped = hasher.tap(Box::pin(futures::stream::iter(failing)));
        assert!(tapped.next().await.unwrap().is_ok());
        assert!(tapped.next().await.unwrap().is_err());
        assert!(tapped.next().await.is_none());
        drop(tapped);
        assert_eq!(hasher.digest(), Digest::of(&expected));
    }
}
