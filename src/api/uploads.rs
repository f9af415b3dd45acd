//! Blob uploads: sessions, chunks with `Content-Range`, monolithic pushes and cross-repository mounts.

use http::{header, HeaderMap, HeaderName, StatusCode};
use storage::{ByteStream, Digest};

use super::error::ApiError;
use super::{empty_response, header_str, Body, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID};
use crate::registry::names::{RepoName, UploadId};
use crate::registry::uploads::ChunkRange;
use crate::registry::Registry;

/// `Location` of an upload session.
pub(super) fn location(name: &RepoName, upload_id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{upload_id}")
}

/// `Range` of an upload holding `offset` bytes. The spec's Range is inclusive; an empty upload
/// reports 0-0 as Distribution does.
pub(super) fn range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn session_headers(name: &RepoName, upload_id: &UploadId, offset: u64) -> Vec<(HeaderName, String)> {
    vec![(header::LOCATION, location(name, upload_id)), (header::RANGE, range(offset)), (DOCKER_UPLOAD_UUID, upload_id.to_string())]
}

fn blob_created(name: &RepoName, digest: &Digest) -> Result<http::Response<Body>, ApiError> {
    let headers = [(header::LOCATION, format!("/v2/{name}/blobs/{digest}")), (DOCKER_CONTENT_DIGEST, digest.to_string())];
    empty_response(StatusCode::CREATED, &headers)
}

/// end-4a, end-4b, end-11: `POST /v2/<name>/blobs/uploads/`.
pub(super) async fn start(
    registry: &Registry,
    name: &RepoName,
    digest: Option<&Digest>,
    mount: Option<&Digest>,
    from: Option<&RepoName>,
    body: ByteStream,
) -> Result<http::Response<Body>, ApiError> {
    if let (Some(mount), Some(from)) = (mount, from) {
        if registry.mount_blob(name, from, mount).await? {
            return blob_created(name, mount);
        }
        // Not mountable: the spec says fall back to an ordinary upload session.
    } else if let Some(digest) = digest {
        registry.put_blob(name, digest, body).await?;
        return blob_created(name, digest);
    }
    let upload_id = registry.start_upload(name).await?;
    empty_response(StatusCode::ACCEPTED, &session_headers(name, &upload_id, 0))
}

/// end-5: `PATCH /v2/<name>/blobs/uploads/<id>`.
pub(super) async fn patch(
    registry: &Registry,
    name: &RepoName,
    upload_id: &UploadId,
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<http::Response<Body>, ApiError> {
    let offset = registry.append_upload(name, upload_id, content_range(headers)?, body).await?;
    empty_response(StatusCode::ACCEPTED, &session_headers(name, upload_id, offset))
}

/// end-6: `PUT /v2/<name>/blobs/uploads/<id>?digest=`.
pub(super) async fn finish(
    registry: &Registry,
    name: &RepoName,
    upload_id: &UploadId,
    digest: &Digest,
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<http::Response<Body>, ApiError> {
    registry.finish_upload(name, upload_id, digest, content_range(headers)?, body).await?;
    blob_created(name, digest)
}

/// end-13: `GET /v2/<name>/blobs/uploads/<id>`.
pub(super) async fn status(registry: &Registry, name: &RepoName, upload_id: &UploadId) -> Result<http::Response<Body>, ApiError> {
    let offset = registry.upload_offset(name, upload_id).await?;
    empty_response(StatusCode::NO_CONTENT, &session_headers(name, upload_id, offset))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub(super) async fn cancel(registry: &Registry, name: &RepoName, upload_id: &UploadId) -> Result<http::Response<Body>, ApiError> {
    registry.cancel_upload(name, upload_id).await?;
    empty_response(StatusCode::NO_CONTENT, &[])
}

/// `Content-Range: <start>-<end>` (the spec's form; `bytes ` and `bytes=` prefixes are tolerated).
fn content_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let malformed = || ApiError::ChunkRange(format!("malformed Content-Range {value:?}"));
    let text = value.to_str().map_err(|_| malformed())?.trim();
    let text = text.strip_prefix("bytes=").or_else(|| text.strip_prefix("bytes ")).unwrap_or(text);
    let text = text.split('/').next().unwrap_or(text);
    let (start, end) = text.split_once('-').ok_or_else(malformed)?;
    let range = ChunkRange {
        start: start.trim().parse().map_err(|_| malformed())?,
        end: end.trim().parse().map_err(|_| malformed())?,
    };
    if range.end < range.start {
        return Err(malformed());
    }
    if let Some(length) = header_str(headers, &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
        if length != range.end - range.start + 1 {
            return Err(ApiError::ChunkRange(format!(
                "Content-Range {}-{} announces {} bytes but Content-Length is {length}",
                range.start,
                range.end,
                range.end - range.start + 1
            )));
        }
    }
    Ok(Some(range))
}
