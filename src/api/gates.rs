//! `GET /api/v1/verdict?image=...[&target=...]`: would this manifest pass its namespace's gate
//! (or, with `target`, the gate of the repository it would be promoted to), and why.

use http::StatusCode;

use super::error::ApiError;
use super::{json_response, Body};
use crate::names::{ImageRef, RepoName};
use crate::registry::Registry;

pub(super) async fn verdict(registry: &Registry, image: &ImageRef, target: Option<&RepoName>) -> Result<http::Response<Body>, ApiError> {
    let digest = registry.resolve(&image.repo, &image.reference).await?;
    // 404 for an image that is not there, rather than a verdict about nothing.
    registry.manifest(&image.repo, &crate::names::Reference::Digest(digest.clone())).await?;
    let verdict = match target {
        Some(target) => registry.verdict_for(target, &image.repo, &digest).await?,
        None => registry.verdict(&image.repo, &digest).await?,
    };
    let body = match verdict {
        // `summary` is the one line a refused pull carries (and the console shows).
        Some(verdict) => serde_json::json!({
            "gated": true, "image": image.to_string(), "digest": digest.to_string(), "summary": verdict.summary(), "verdict": verdict,
        }),
        None => serde_json::json!({ "gated": false, "image": image.to_string(), "digest": digest.to_string() }),
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}
