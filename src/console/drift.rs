//! The drift page: digests that Kubernetes admission let run and that fail their gate now, each
//! with the one line a pull of it is refused with (`Verdict::summary`, as the drift check
//! recorded it) and the workloads that run it. At most [`ROWS`] rows are read per page.
//!
//! Rows show to viewers holding `admin` on their repository, as `GET /api/v1/drift` decides:
//! they name clusters' workloads.

use askama::Template;

use super::format;
use super::{ConsoleError, Nav, Viewer};
use crate::auth::rules::Action;
use crate::registry::Registry;

/// The most drift rows read for one page.
const ROWS: usize = 500;

struct DriftRow {
    repository: String,
    repository_href: String,
    digest: String,
    short_digest: String,
    href: String,
    since: String,
    reason: String,
    /// `cluster: namespace/Kind name`, one per workload.
    workloads: Vec<String>,
}

#[derive(Template)]
#[template(path = "drift.html")]
struct DriftPage {
    nav: Nav,
    rows: Vec<DriftRow>,
    /// Whether more rows exist than were read.
    truncated: bool,
    limit: usize,
    admission: bool,
}

/// The drift page.
pub async fn drift(registry: &Registry, viewer: &Viewer) -> Result<String, ConsoleError> {
    viewer.require_login()?;
    let records = registry.drift(ROWS + 1).await?;
    let truncated = records.len() > ROWS;
    let rows = records
        .into_iter()
        .take(ROWS)
        .filter(|record| viewer.principal.may(Action::Admin, &record.repository))
        .map(|record| DriftRow {
            repository_href: format::repository_href(&record.repository),
            href: format::image_href(&record.repository, &record.digest),
            short_digest: format::short_digest(&record.digest),
            since: format::time(record.since),
            reason: record.summary,
            workloads: record.workloads.iter().map(|w| format!("{}: {}/{} {}", w.cluster, w.namespace, w.kind, w.name)).collect(),
            repository: record.repository,
            digest: record.digest,
        })
        .collect();
    let admission = registry.config().admission.is_some();
    Ok(DriftPage { nav: Nav::new(viewer, "drift"), rows, truncated, limit: ROWS, admission }.render()?)
}
