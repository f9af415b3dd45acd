//! The upstreams page: each `[[upstreams]]` entry with its health, last error and cache, then
//! the tag-move alarms (`upstream_tag_moved` and `upstream_tag_accepted` audit records, newest
//! first, at most [`SCAN`] records read per page) with the moves still held.
//!
//! Who sees what is what the API decides: the upstreams list, as `GET /api/v1/upstreams`, to
//! any signed-in viewer (everyone on an open registry); the alarms, audit records, to viewers
//! holding `admin` on their repository, as `GET /api/v1/audit`, which is also who may accept a
//! held move. Nothing here asks an upstream anything: health is what pulls last saw.

use askama::Template;
use storage::Digest;

use super::format;
use super::{ConsoleError, Nav, Viewer};
use crate::auth::rules::Action;
use crate::metadata::audit::Record;
use crate::names::{RepoName, Tag};
use crate::registry::Registry;

/// Alarms shown on one page.
const PAGE: usize = 50;
/// The most audit records one page reads.
const SCAN: usize = 1_000;

struct UpstreamRow {
    name: String,
    url: String,
    namespace: String,
    hosts: String,
    /// `up`, `down` or `unknown`: also the badge's CSS class.
    health: &'static str,
    last_ok: String,
    /// When and what, if it failed since this process started.
    last_error: Option<(String, String)>,
    failures: u64,
    cache: String,
    tag_moves: &'static str,
}

struct MoveRow {
    time: String,
    actor: String,
    upstream: String,
    repository: String,
    repository_href: String,
    tag: String,
    old: Option<(String, String)>,
    new: (String, String),
    /// `follow`, `hold` or `accepted`.
    action: String,
    /// For a move still held: the digest waiting, and the request that accepts it.
    held: Option<String>,
}

#[derive(Template)]
#[template(path = "upstreams.html")]
struct UpstreamsPage {
    nav: Nav,
    upstreams: Vec<UpstreamRow>,
    moves: Vec<MoveRow>,
    older: Option<String>,
}

/// The upstreams page; its alarms from before audit record `before`.
pub async fn upstreams(registry: &Registry, viewer: &Viewer, before: Option<u64>) -> Result<String, ConsoleError> {
    viewer.require_login()?;
    let upstreams = registry
        .upstreams()
        .into_iter()
        .map(|report| {
            let mut cache = format!("{} in {} objects", format::size(report.cache_bytes), report.cache_objects);
            if let Some(max) = report.max_bytes {
                cache.push_str(&format!(" of {}", format::size(max)));
            }
            if !report.cache_counted {
                cache.push_str(" (since start; the store is still being counted)");
            }
            let mut hosts = report.hosts.join(", ");
            if report.default {
                hosts.push_str(if hosts.is_empty() { "the default upstream" } else { "; the default upstream" });
            }
            UpstreamRow {
                name: report.name,
                url: report.url,
                namespace: report.namespace,
                hosts,
                health: report.health,
                last_ok: report.last_ok.unwrap_or_else(|| "-".to_owned()),
                last_error: report.last_error,
                failures: report.consecutive_failures,
                cache,
                tag_moves: report.tag_moves,
            }
        })
        .collect();
    let keep = |record: &Record| {
        (record.kind == "upstream_tag_moved" || record.kind == "upstream_tag_accepted") && viewer.principal.may(Action::Admin, &record.repository)
    };
    let (records, next) = registry.audit_records_before(before, PAGE, SCAN, keep).await?;
    let mut moves = Vec::with_capacity(records.len());
    for record in &records {
        moves.push(move_row(registry, record).await?);
    }
    let older = next.map(|seq| format::with_query("/ui/upstreams", &[("before", &seq.to_string())]));
    Ok(UpstreamsPage { nav: Nav::new(viewer, "upstreams"), upstreams, moves, older }.render()?)
}

async fn move_row(registry: &Registry, record: &Record) -> Result<MoveRow, ConsoleError> {
    let detail = &record.detail;
    let field = |name: &str| detail[name].as_str().unwrap_or_default().to_owned();
    let repo = record.repository.as_str();
    let digest_link = |digest: &str| (format::image_href(repo, digest), format::short_digest(digest));
    let (tag, new) = (field("tag"), field("new"));
    let action = if record.kind == "upstream_tag_accepted" { "accepted".to_owned() } else { field("action") };
    // A hold is still held while the tag's record waits on this very digest.
    let held = match (action.as_str(), repo.parse::<RepoName>(), tag.parse::<Tag>(), new.parse::<Digest>()) {
        ("hold", Ok(name), Ok(parsed_tag), Ok(_)) => match registry.held_upstream_tag(&name, &parsed_tag).await? {
            Some(pending) if pending == new => {
                let accept = format!("POST /api/v1/upstreams/{}/accept", field("upstream"));
                Some(format::with_query(&accept, &[("repository", repo), ("tag", &tag), ("digest", &new)]))
            }
            _ => None,
        },
        _ => None,
    };
    let old = field("old");
    Ok(MoveRow {
        time: format::time(record.time),
        actor: record.actor.clone(),
        upstream: field("upstream"),
        repository_href: format::repository_href(repo),
        repository: record.repository.clone(),
        old: (!old.is_empty()).then(|| digest_link(&old)),
        new: digest_link(&new),
        tag,
        action,
        held,
    })
}
