//! Paginated listings: a repository's tags and the catalog, with `n`, `last` and `Link`.

use http::{header, StatusCode};

use super::error::ApiError;
use super::{json_response, set_headers, Body};
use crate::auth::Principal;
use crate::registry::names::RepoName;
use crate::registry::Registry;

/// Page size when the client asks for everything, and the most one response carries; beyond it,
/// a `Link` header leads on.
const MAX_PAGE: usize = 10_000;

/// end-8a/8b: `GET /v2/<name>/tags/list`.
pub(super) async fn list(
    registry: &Registry,
    name: &RepoName,
    n: Option<usize>,
    last: Option<&str>,
) -> Result<http::Response<Body>, ApiError> {
    let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let page = registry.list_tags(name, last, limit).await?;
    // `n=0` asks for no tags; the repository's existence was still checked above.
    let tags = if limit == 0 { Vec::new() } else { page.entries };
    let next = (page.truncated && limit > 0).then(|| tags.last().cloned()).flatten();
    let body = serde_json::json!({ "name": name.as_str(), "tags": tags }).to_string();
    paged(body, next.map(|last| format!("/v2/{name}/tags/list?n={limit}&last={last}")))
}

/// `GET /v2/_catalog`: only the repositories the caller may pull.
pub(super) async fn catalog(
    registry: &Registry,
    principal: &Principal,
    n: Option<usize>,
    last: Option<&RepoName>,
) -> Result<http::Response<Body>, ApiError> {
    let limit = n.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let mut entries: Vec<String> = Vec::new();
    let mut cursor: Option<RepoName> = last.cloned();
    let mut truncated = false;
    // Filtering may drop names: read pages until this one is full or the catalog ends.
    while entries.len() < limit {
        let page = registry.catalog(cursor.as_ref(), limit).await?;
        let n_read = page.entries.len();
        for (i, name) in page.entries.into_iter().enumerate() {
            cursor = name.parse().ok();
            if principal.may_list(&name) {
                entries.push(name);
            }
            if entries.len() == limit {
                truncated = page.truncated || i + 1 < n_read;
                break;
            }
        }
        if !page.truncated || cursor.is_none() {
            break;
        }
    }
    let next = (truncated && limit > 0).then(|| entries.last().cloned()).flatten();
    let body = serde_json::json!({ "repositories": entries }).to_string();
    paged(body, next.map(|last| format!("/v2/_catalog?n={limit}&last={last}")))
}

fn paged(body: String, next: Option<String>) -> Result<http::Response<Body>, ApiError> {
    let mut response = json_response(StatusCode::OK, body);
    if let Some(next) = next {
        set_headers(&mut response, &[(header::LINK, format!("<{next}>; rel=\"next\""))])?;
    }
    Ok(response)
}
