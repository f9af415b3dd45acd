//! The HTTP side of Kubernetes admission: `POST /admission/mutate` and `POST /admission/validate`
//! (behind a verified client certificate, see `auth::admit`) take an `AdmissionReview` of at most
//! [`MAX_REVIEW_BYTES`] and answer one; `GET /api/v1/drift` lists the admitted digests that fail
//! their gate now, with the workloads that run them.

use http::StatusCode;

use super::auth::Connection;
use super::endpoint::RouteError;
use super::error::ApiError;
use super::{json_response, read_bounded, Body};
use crate::admission::{AdmissionError, Webhook};
use crate::auth::rules::Action;
use crate::auth::Principal;
use crate::registry::Registry;

/// Largest review read: etcd keeps objects of up to 1.5 MiB, and an update carries the object twice.
const MAX_REVIEW_BYTES: usize = 4 << 20;
/// The most drift rows listed.
const MAX_DRIFT_ROWS: usize = 10_000;

pub(super) async fn review(registry: &Registry, webhook: Webhook, body: storage::ByteStream, connection: &Connection) -> Result<http::Response<Body>, ApiError> {
    let bytes = read_bounded(body, MAX_REVIEW_BYTES)
        .await
        .map_err(|err| ApiError::BadRequest(format!("body broke off: {err}")))?
        .ok_or_else(|| ApiError::BadRequest(format!("an AdmissionReview larger than {MAX_REVIEW_BYTES} bytes")))?;
    // The name of the API server's client certificate tells clusters apart.
    let cluster = connection.client_cert.as_deref().unwrap_or_default();
    match crate::admission::answer(registry, webhook, &bytes, cluster).await {
        Ok(answer) => Ok(json_response(StatusCode::OK, answer)),
        Err(AdmissionError::NotConfigured) => Err(ApiError::Route(RouteError::NotFound)),
        Err(AdmissionError::Review(err)) => Err(ApiError::BadRequest(err.to_string())),
        Err(AdmissionError::Registry(err)) => Err(err.into()),
    }
}

/// Only rows of repositories the caller holds `admin` on: they name workloads of clusters.
pub(super) async fn drift(registry: &Registry, principal: &Principal) -> Result<http::Response<Body>, ApiError> {
    let mut rows = registry.drift(MAX_DRIFT_ROWS).await?;
    rows.retain(|row| principal.may(Action::Admin, &row.repository));
    Ok(json_response(StatusCode::OK, serde_json::json!({ "drift": rows }).to_string()))
}
