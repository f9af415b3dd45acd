//! Bounds on request bodies streamed into the store, and what a failed stream means.

use std::io;
use std::task::{ready, Poll};

use storage::{BlobStoreError, ByteStream};

use super::RegistryError;
use crate::metadata::MetadataError;

/// Why a bounded body was cut off.
#[derive(Debug, thiserror::Error)]
enum BodyLimit {
    #[error("body exceeds the {0} bytes allowed")]
    TooLarge(u64),
    #[error("body length {actual} differs from the {expected} bytes announced by Content-Range")]
    LengthMismatch { expected: u64, actual: u64 },
}

/// Wraps `body` so that it fails (and the store undoes the append) when it carries more than
/// `room` bytes, or, with `exact`, any other number of bytes than announced.
pub(super) fn bounded(mut body: ByteStream, exact: Option<u64>, room: u64) -> ByteStream {
    let mut seen = 0u64;
    let mut done = false;
    Box::pin(futures::stream::poll_fn(move |cx| {
        if done {
            return Poll::Ready(None);
        }
        let outcome = match ready!(body.as_mut().poll_next(cx)) {
            Some(Ok(chunk)) => {
                seen += chunk.len() as u64;
                match exact {
                    _ if seen > room => Err(BodyLimit::TooLarge(room)),
                    Some(expected) if seen > expected => Err(BodyLimit::LengthMismatch { expected, actual: seen }),
                    _ => Ok(chunk),
                }
            }
            Some(Err(err)) => {
                done = true;
                return Poll::Ready(Some(Err(err)));
            }
            // The end of the stream is where a short body shows itself.
            None => match exact {
                Some(expected) if seen != expected => Err(BodyLimit::LengthMismatch { expected, actual: seen }),
                _ => return Poll::Ready(None),
            },
        };
        done = outcome.is_err();
        Poll::Ready(Some(outcome.map_err(io::Error::other)))
    }))
}

/// Maps a failed append to the client's error: an exceeded bound, a chunk racing another, or a
/// body that broke off (client gone); anything else is the store's failure.
pub(super) fn classify(err: MetadataError) -> RegistryError {
    let MetadataError::Store(err) = err else { return err.into() };
    match err {
        BlobStoreError::Io(io_err) => match io_err.get_ref().and_then(|inner| inner.downcast_ref::<BodyLimit>()) {
            Some(BodyLimit::TooLarge(limit)) => RegistryError::BlobTooLarge { limit: *limit },
            Some(mismatch @ BodyLimit::LengthMismatch { .. }) => RegistryError::UploadInvalid(mismatch.to_string()),
            None if is_body_error(&io_err) => RegistryError::UploadInvalid(format!("request body broke off: {io_err}")),
            None => BlobStoreError::Io(io_err).into(),
        },
        BlobStoreError::PreconditionFailed(_) => RegistryError::UploadInvalid("a concurrent request changed this upload".to_owned()),
        BlobStoreError::NotFound(_) => RegistryError::BlobUploadUnknown,
        other => other.into(),
    }
}

/// Errors from reading the request body carry this marker (set where the HTTP body is adapted).
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub struct BodyReadError(pub String);

fn is_body_error(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<BodyReadError>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::StreamExt;

    async fn drain(body: ByteStream) -> Result<u64, String> {
        let mut body = body;
        let mut n = 0;
        while let Some(chunk) = body.next().await {
            n += chunk.map_err(|e| e.to_string())?.len() as u64;
        }
        Ok(n)
    }

    fn chunks(sizes: &[usize]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> = sizes.iter().map(|n| Ok(Bytes::from(vec![0u8; *n]))).collect();
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn bounds() {
        assert_eq!(drain(bounded(chunks(&[3, 4]), None, 7)).await, Ok(7));
        assert!(drain(bounded(chunks(&[3, 5]), None, 7)).await.unwrap_err().contains("exceeds"));
        assert_eq!(drain(bounded(chunks(&[3, 4]), Some(7), 100)).await, Ok(7));
        assert!(drain(bounded(chunks(&[3, 3]), Some(7), 100)).await.unwrap_err().contains("differs"));
        assert!(drain(bounded(chunks(&[3, 5]), Some(7), 100)).await.unwrap_err().contains("differs"));
    }
}
