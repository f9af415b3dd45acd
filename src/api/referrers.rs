//! end-12a/12b: `GET /v2/<name>/referrers/<digest>`, an image index of the manifests whose
//! `subject` is the digest, optionally filtered by `artifactType`.

use http::{header, HeaderValue, StatusCode};
use storage::Digest;

use super::error::ApiError;
use super::{json_response, Body, OCI_FILTERS_APPLIED};
use crate::registry::manifest::OCI_INDEX;
use crate::names::RepoName;
use crate::registry::Registry;

pub(super) async fn list(
    registry: &Registry,
    name: &RepoName,
    digest: &Digest,
    artifact_type: Option<&str>,
) -> Result<http::Response<Body>, ApiError> {
    let referrers = registry.referrers(name, digest, artifact_type).await?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": referrers.descriptors,
    });
    let mut response = json_response(StatusCode::OK, index.to_string());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if referrers.filtered {
        response.headers_mut().insert(OCI_FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}
