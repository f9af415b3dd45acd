//! Manifest reads with `Accept` negotiation, pushes (with several `?tag=`), and deletes.

use http::{header, HeaderMap, StatusCode};
use storage::ByteStream;

use super::error::ApiError;
use super::{empty_response, full, header_str, read_bounded, set_headers, Body, DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use crate::registry::manifest::bare_media_type;
use crate::names::{Reference, RepoName, Tag};
use crate::registry::{Registry, RegistryError};

/// end-3: `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub(super) async fn get(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
    head: bool,
    headers: &HeaderMap,
    principal: &crate::auth::Principal,
) -> Result<http::Response<Body>, ApiError> {
    let manifest = registry.manifest(name, reference).await?;
    // The gate is enforced where the bytes leave, for GET and HEAD alike. It is for consumers:
    // whoever may push here (docker HEADs what it pushed) or scan reads without it.
    if !principal.may_skip_gate(name.as_str(), registry.promotion_only(name)) {
        registry.check_pull(name, &manifest.digest, principal.name()).await?;
    }
    if !accepts(headers, &manifest.media_type) {
        return Err(RegistryError::ManifestUnknown(format!(
            "{name}:{reference} is a {}, which the request's Accept header does not list",
            manifest.media_type
        ))
        .into());
    }
    let mut reply = vec![
        (header::CONTENT_TYPE, manifest.media_type.clone()),
        (header::CONTENT_LENGTH, manifest.bytes.len().to_string()),
        (DOCKER_CONTENT_DIGEST, manifest.digest.to_string()),
        (header::ETAG, format!("\"{}\"", manifest.digest)),
    ];
    if let Some(warning) = &manifest.warning {
        // RFC 7234 5.5: 110 "Response is Stale" (or held back), text quoted; the text comes from an
        // upstream's error, so it is kept to what a header value may hold.
        let text: String = warning.chars().map(|c| if c == '"' || c == '\\' || !(' '..='~').contains(&c) { '\'' } else { c }).collect();
        reply.push((header::WARNING, format!("110 portcullis \"{text}\"")));
    }
    // A GET hands out the manifest, so it counts for retention's `not_pulled` whether it named a
    // tag or the digest (clients resolve a tag with HEAD and then GET by digest, and Kubernetes
    // pulls pinned digests). A HEAD does not: nothing can be run from it, and update checkers and
    // pushes HEAD tags all day.
    if !head {
        registry.note_pull(name, &manifest.digest);
    }
    let mut response = if head {
        empty_response(StatusCode::OK, &[])?
    } else {
        http::Response::new(full(manifest.bytes))
    };
    set_headers(&mut response, &reply)?;
    Ok(response)
}

/// Whether the `Accept` headers admit `media_type`. No `Accept` (or a wildcard) admits anything.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut offered = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(bare_media_type)
        .filter(|v| !v.is_empty())
        .peekable();
    if offered.peek().is_none() {
        return true;
    }
    offered.any(|v| v == media_type || v == "*/*" || v == "application/*" || v == "application/json")
}

/// end-7: `PUT /v2/<name>/manifests/<reference>?tag=...`.
pub(super) async fn put(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
    tags: &[Tag],
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<http::Response<Body>, ApiError> {
    let limit = registry.config().registry.max_manifest_bytes;
    let too_large = || ApiError::from(RegistryError::ManifestTooLarge { limit });
    let bytes = match read_bounded(body, limit).await {
        Ok(Some(bytes)) => bytes,
        // Oversized: the rest of the body was drained (up to a bound) so the client reads the 413
        // instead of a connection reset.
        Ok(None) => return Err(too_large()),
        Err(err) => return Err(RegistryError::ManifestInvalid(format!("request body broke off: {err}")).into()),
    };
    let content_type = header_str(headers, &header::CONTENT_TYPE);
    let pushed = registry.push_manifest(name, reference, tags, content_type, bytes).await?;
    let mut reply = vec![
        (header::LOCATION, format!("/v2/{name}/manifests/{}", pushed.digest)),
        (DOCKER_CONTENT_DIGEST, pushed.digest.to_string()),
    ];
    if let Some(subject) = &pushed.subject {
        reply.push((OCI_SUBJECT, subject.to_string()));
    }
    empty_response(StatusCode::CREATED, &reply)
}

/// end-9: `DELETE /v2/<name>/manifests/<reference>`.
pub(super) async fn delete(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
    actor: &str,
) -> Result<http::Response<Body>, ApiError> {
    registry.delete_manifest(name, reference, actor).await?;
    empty_response(StatusCode::ACCEPTED, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let oci = "application/vnd.oci.image.index.v1+json";
        let check = |accept: &[&str], expected: bool| {
            let mut headers = HeaderMap::new();
            for value in accept {
                headers.append(header::ACCEPT, value.parse().unwrap());
            }
            assert_eq!(accepts(&headers, oci), expected, "{accept:?}");
        };
        check(&[], true);
        check(&["*/*"], true);
        check(&[oci], true);
        check(&["application/vnd.docker.distribution.manifest.v2+json", &format!("{oci}; q=0.5")], true);
        check(&["application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"], false);
    }
}
