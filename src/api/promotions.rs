//! The promotion API: `POST /api/v1/promotions`, `GET /api/v1/promotions?repository=`, and the
//! registry's public key at `GET /api/v1/keys` (to check the summaries promotions attach).

use http::StatusCode;
use serde::Deserialize;
use storage::ByteStream;

use super::error::ApiError;
use crate::auth::rules::Action;
use crate::auth::Principal;
use super::{json_response, read_bounded, Body};
use crate::promote;
use crate::registry::names::{ImageRef, RepoName, Tag};
use crate::registry::Registry;

/// Largest promotion request body.
const MAX_REQUEST: usize = 64 << 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromotionBody {
    source: String,
    target: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/promotions`: needs `promote` on the target and `pull` on the source; the
/// caller's name is the promotion's actor.
pub(super) async fn promote(registry: &Registry, body: ByteStream, principal: &Principal) -> Result<http::Response<Body>, ApiError> {
    let bytes = read_bounded(body, MAX_REQUEST)
        .await
        .map_err(|err| ApiError::BadRequest(format!("body broke off: {err}")))?
        .ok_or_else(|| ApiError::BadRequest(format!("body exceeds {MAX_REQUEST} bytes")))?;
    let request: PromotionBody = serde_json::from_slice(&bytes).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let bad = |what: &str, err: crate::registry::names::NameError| ApiError::BadRequest(format!("{what}: {err}"));
    let source = request.source.parse::<ImageRef>().map_err(|err| bad("source", err))?;
    let request = promote::Request {
        skip_source_gate: principal.may_skip_gate(source.repo.as_str(), registry.promotion_only(&source.repo)),
        source,
        target: request.target.parse::<RepoName>().map_err(|err| bad("target", err))?,
        tags: request.tags.iter().map(|t| t.parse::<Tag>()).collect::<Result<_, _>>().map_err(|err| bad("tags", err))?,
        dry_run: request.dry_run,
        actor: principal.name().to_owned(),
    };
    for (action, repo) in [(Action::Promote, &request.target), (Action::Pull, &request.source.repo)] {
        if !principal.may(action, repo.as_str()) {
            return Err(ApiError::Forbidden(format!("{} may not {action} {repo}", principal.name())));
        }
    }
    let outcome = promote::run(registry, request).await?;
    let status = if outcome.already_done || outcome.record.result == promote::PromotionResult::DryRun { StatusCode::OK } else { StatusCode::CREATED };
    let body = serde_json::json!({ "already_done": outcome.already_done, "promotion": outcome.record });
    Ok(json_response(status, body.to_string()))
}

pub(super) async fn list(registry: &Registry, repository: &RepoName) -> Result<http::Response<Body>, ApiError> {
    let records = promote::list(registry, repository, 1000).await?;
    Ok(json_response(StatusCode::OK, serde_json::json!({ "repository": repository.as_str(), "promotions": records }).to_string()))
}

pub(super) fn keys(registry: &Registry) -> http::Response<Body> {
    let body = serde_json::json!({ "keys": [{
        "name": "portcullis",
        "use": "verification summaries (in-toto, https://slsa.dev/verification_summary/v1) attached to promoted images",
        "algorithm": "ecdsa-p256-sha256",
        "public_key_pem": registry.signing_key().public_pem(),
    }]});
    json_response(StatusCode::OK, body.to_string())
}
