//! Blob reads (with single `Range` requests) and deletes.

use http::{header, HeaderMap, StatusCode};
use storage::Digest;

use super::error::ApiError;
use super::{empty_response, header_str, stream_body, Body, DOCKER_CONTENT_DIGEST};
use crate::names::RepoName;
use crate::registry::{Registry, RegistryError};

/// end-2: `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub(super) async fn get(
    registry: &Registry,
    name: &RepoName,
    digest: &Digest,
    head: bool,
    headers: &HeaderMap,
) -> Result<http::Response<Body>, ApiError> {
    // A proxied repository's blob that is not cached comes from the upstream, streamed as it
    // arrives (a range is answered from the store once the whole blob is there).
    if let Some(upstream) = registry.upstream_blob(name, digest, head, headers.contains_key(header::RANGE)).await? {
        let mut reply = vec![
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::ETAG, format!("\"{digest}\"")),
        ];
        reply.extend(upstream.size.map(|size| (header::CONTENT_LENGTH, size.to_string())));
        let mut response = match upstream.body {
            Some(body) => http::Response::new(stream_body(body)),
            None => http::Response::new(super::empty()),
        };
        super::set_headers(&mut response, &reply)?;
        return Ok(response);
    }
    if !head {
        if let Some(url) = registry.blob_redirect(name, digest).await? {
            // The object store serves the bytes (and any Range) itself.
            let reply = [(header::LOCATION, url), (DOCKER_CONTENT_DIGEST, digest.to_string())];
            return empty_response(StatusCode::TEMPORARY_REDIRECT, &reply);
        }
    }
    let size = registry.blob_size(name, digest).await?;
    let range = match header_str(headers, &header::RANGE) {
        Some(value) => Some(parse_range(value, size).ok_or(RegistryError::RangeNotSatisfiable { size })?),
        None => None,
    };
    let (status, start, end) = match &range {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range.start, range.end),
        None => (StatusCode::OK, 0, size),
    };
    let mut reply = vec![
        (header::CONTENT_LENGTH, (end - start).to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
        (DOCKER_CONTENT_DIGEST, digest.to_string()),
        (header::ETAG, format!("\"{digest}\"")),
    ];
    if range.is_some() {
        reply.push((header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end - 1)));
    }
    if head {
        return empty_response(status, &reply);
    }
    let reader = registry.open_blob(name, digest, range).await?;
    let mut response = http::Response::new(stream_body(reader.body));
    *response.status_mut() = status;
    super::set_headers(&mut response, &reply)?;
    Ok(response)
}

/// end-10: `DELETE /v2/<name>/blobs/<digest>`.
pub(super) async fn delete(registry: &Registry, name: &RepoName, digest: &Digest, actor: &str) -> Result<http::Response<Body>, ApiError> {
    registry.delete_blob(name, digest, actor).await?;
    empty_response(StatusCode::ACCEPTED, &[(DOCKER_CONTENT_DIGEST, digest.to_string())])
}

/// Parses a single `bytes=` range against a blob of `size` bytes into `start..end` (exclusive).
/// Multiple ranges are not supported and answered as unsatisfiable.
fn parse_range(value: &str, size: u64) -> Option<std::ops::Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.saturating_sub(n), size)
        }
        (first, "") => (first.parse().ok()?, size),
        (first, last) => {
            let last: u64 = last.parse().ok()?;
            (first.parse().ok()?, last.saturating_add(1).min(size))
        }
    };
    (start < end && end <= size).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        let cases = [
            ("bytes=0-9", 100, Some(0..10)),
            ("bytes=90-", 100, Some(90..100)),
            ("bytes=-10", 100, Some(90..100)),
            ("bytes=95-200", 100, Some(95..100)),
            ("bytes=100-", 100, None),
            ("bytes=5-4", 100, None),
            ("bytes=0-1,5-6", 100, None),
            ("items=0-1", 100, None),
            ("bytes=-0", 100, None),
        ];
        for (value, size, expected) in cases {
            assert_eq!(parse_range(value, size), expected, "{value}");
        }
    }
}
