//! The proxy's part of the registry's own API: `GET /api/v1/upstreams` (each upstream with its
//! health, cache size and last error; what `portcullis upstreams` prints) and
//! `POST /api/v1/upstreams/<name>/accept` (accept the digest a held upstream tag moved to).

use http::StatusCode;
use storage::Digest;

use super::error::ApiError;
use super::{json_response, Body};
use crate::names::{RepoName, Tag};
use crate::registry::Registry;

/// `GET /api/v1/upstreams`.
pub(super) fn list(registry: &Registry) -> http::Response<Body> {
    let body = serde_json::json!({ "upstreams": registry.upstreams() });
    json_response(StatusCode::OK, body.to_string())
}

/// `POST /api/v1/upstreams/<name>/accept?repository=&tag=[&digest=]`: needs `admin` on the
/// repository; the caller is the audit record's actor.
pub(super) async fn accept(
    registry: &Registry,
    upstream: &str,
    repository: &RepoName,
    tag: &Tag,
    digest: Option<&Digest>,
    actor: &str,
) -> Result<http::Response<Body>, ApiError> {
    let accepted = registry.accept_upstream_tag(upstream, repository, tag, digest, actor).await?;
    let body = serde_json::json!({ "repository": repository.as_str(), "tag": tag.as_str(), "digest": accepted.to_string() });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
