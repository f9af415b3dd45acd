//! `GET /api/v1/audit`: the audit log, filtered and paged by sequence number.

use http::StatusCode;

use super::error::ApiError;
use crate::auth::rules::Action;
use crate::auth::Principal;
use super::{json_response, Body};
use crate::metadata::audit::Record;
use crate::registry::Registry;

const MAX_PAGE: usize = 1000;

/// Only records of repositories the caller holds `admin` on.
pub(super) async fn list(
    registry: &Registry,
    principal: &Principal,
    kind: Option<&str>,
    repository: Option<&str>,
    after: u64,
    limit: Option<usize>,
) -> Result<http::Response<Body>, ApiError> {
    let limit = limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let keep = |record: &Record| {
        kind.is_none_or(|k| record.kind == k)
            && repository.is_none_or(|r| record.repository == r)
            && principal.may(Action::Admin, &record.repository)
    };
    let (records, next) = registry.audit_records(after, limit, keep).await?;
    let body = serde_json::json!({ "records": records, "next_after": next });
    Ok(json_response(StatusCode::OK, body.to_string()))
}
