//! Content digests (`sha256:<hex>`) and hashing while streaming.
//!
//! Only sha256 is accepted: it is what every OCI client sends, and accepting an algorithm we do not
//! verify would make a digest a mere label. sha512 is recognised so that callers can answer
//! "unsupported" rather than "invalid".

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
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

    /// The store key of the content with this digest: `blobs/sha256/<2>/<hex>`.
    pub fn blob_key(&self) -> String {
        format!("blobs/sha256/{}/{}", &self.hex[..2], self.hex)
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

    /// Wraps `body` so that every chunk passing through is fed to this hasher.
    pub fn tap(&self, body: ByteStream) -> ByteStream {
        let hasher = self.clone();
        Box::pin(body.inspect(move |chunk: &io::Result<Bytes>| {
            if let Ok(bytes) = chunk {
                hasher.update(bytes);
            }
        }))
    }

    /// Feeds a whole stream, for rebuilding the state of an upload from its staged bytes.
    pub async fn consume(&self, mut body: ByteStream) -> io::Result<()> {
        while let Some(chunk) = body.next().await {
            self.update(&chunk?);
        }
        Ok(())
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

    #[test]
    fn blob_key() {
        let digest = Digest::of(b"");
        assert_eq!(
            digest.blob_key(),
            "blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
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
}
