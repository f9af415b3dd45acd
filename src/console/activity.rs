//! The promotions and audit pages, both read from the audit log newest first, each page reading
//! at most [`SCAN`] records by key (no listing) and offering to go on from where it stopped.
//!
//! Promotions (and refused promotions) show to viewers who may pull their target, as
//! `GET /api/v1/promotions` does; audit records to viewers who hold `admin` on their repository,
//! as `GET /api/v1/audit` does. The audit page opens with the chain's verification, computed at
//! most once a minute (`Registry::audit_chain`).

use askama::Template;
use serde_json::Value;

use super::format;
use super::{ConsoleError, Nav, Viewer};
use crate::auth::rules::Action;
use crate::metadata::audit::Record;
use crate::registry::Registry;

/// Rows shown on one page.
const PAGE: usize = 50;
/// The most audit records one page reads.
const SCAN: usize = 1_000;

/// The filters of the audit page; empty ones match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Records of this kind (`promotion`, `pull_denied`, ...).
    pub kind: String,
    /// Records about this repository.
    pub repository: String,
    /// Records by this actor.
    pub actor: String,
    /// Continue with the records before this sequence number.
    pub before: Option<u64>,
}

struct PromotionRow {
    time: String,
    actor: String,
    source: String,
    target: String,
    target_href: String,
    tags: String,
    digest: String,
    short_digest: String,
    href: String,
    /// `promoted` or `refused`.
    outcome: &'static str,
    /// Each requirement of the verdict in one line, or why there was none.
    summary: Vec<String>,
    vsa: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "promotions.html")]
struct PromotionsPage {
    nav: Nav,
    rows: Vec<PromotionRow>,
    older: Option<String>,
}

struct AuditRow {
    seq: u64,
    time: String,
    kind: String,
    actor: String,
    repository: String,
    digest: String,
    short_digest: String,
    href: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    /// Whether the chain verified, and the words for it.
    chain_ok: bool,
    chain: String,
    query: AuditQuery,
    rows: Vec<AuditRow>,
    older: Option<String>,
}

/// The promotions page: promotions and refused promotions into repositories the viewer may
/// pull, newest first.
pub async fn promotions(registry: &Registry, viewer: &Viewer, before: Option<u64>) -> Result<String, ConsoleError> {
    let keep = |record: &Record| {
        (record.kind == "promotion" || record.kind == "promotion_denied") && viewer.principal.may(Action::Pull, &record.repository)
    };
    let (records, next) = registry.audit_records_before(before, PAGE, SCAN, keep).await?;
    let rows = records.iter().map(promotion_row).collect();
    let older = next.map(|seq| format::with_query("/ui/promotions", &[("before", &seq.to_string())]));
    Ok(PromotionsPage { nav: Nav::new(viewer, "promotions"), rows, older }.render()?)
}

fn promotion_row(record: &Record) -> PromotionRow {
    let detail = &record.detail;
    let field = |name: &str| detail[name].as_str().unwrap_or_default().to_owned();
    let verdict = &detail["verdict"];
    let summary = match verdict["requirements"].as_array() {
        Some(requirements) => requirements
            .iter()
            .map(|r| {
                let mark = if r["passed"].as_bool() == Some(true) { "passed" } else { "failed" };
                format!("{} {mark}: {}", r["name"].as_str().unwrap_or_default(), r["detail"].as_str().unwrap_or_default())
            })
            .collect(),
        None => vec![detail["vsa_skipped"].as_str().unwrap_or("no gate applies to the target").to_owned()],
    };
    let target = record.repository.clone();
    PromotionRow {
        time: format::time(record.time),
        actor: record.actor.clone(),
        source: field("source"),
        target_href: format::repository_href(&target),
        tags: detail["tags"].as_array().map(|tags| tags.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        short_digest: format::short_digest(&record.digest),
        href: format::image_href(&target, &record.digest),
        digest: record.digest.clone(),
        outcome: if record.kind == "promotion" { "promoted" } else { "refused" },
        summary,
        vsa: detail["vsa"].as_str().map(|vsa| (format::image_href(&target, vsa), format::short_digest(vsa))),
        target,
    }
}

/// The audit page: the chain's verification, then the records the viewer may read that match
/// the query, newest first.
pub async fn audit(registry: &Registry, viewer: &Viewer, query: &AuditQuery) -> Result<String, ConsoleError> {
    let check = registry.audit_chain().await?;
    let (chain_ok, chain) = match &check.outcome {
        Ok(n_records) => (true, format!("The chain of {n_records} records verifies (checked {}).", format::time(check.checked_at))),
        Err(broken) => (false, format!("The chain is broken at record {}: {} (checked {}).", broken.seq, broken.reason, format::time(check.checked_at))),
    };
    let keep = |record: &Record| {
        (query.kind.is_empty() || record.kind == query.kind)
            && (query.repository.is_empty() || record.repository == query.repository)
            && (query.actor.is_empty() || record.actor == query.actor)
            && viewer.principal.may(Action::Admin, &record.repository)
    };
    let (records, next) = registry.audit_records_before(query.before, PAGE, SCAN, keep).await?;
    let rows = records
        .into_iter()
        .map(|record| AuditRow {
            seq: record.seq,
            time: format::time(record.time),
            href: format::image_href(&record.repository, &record.digest),
            short_digest: format::short_digest(&record.digest),
            detail: detail_line(&record.detail),
            kind: record.kind,
            actor: record.actor,
            repository: record.repository,
            digest: record.digest,
        })
        .collect();
    let older = next.map(|seq| {
        let seq = seq.to_string();
        let params = [("kind", query.kind.as_str()), ("repository", &query.repository), ("actor", &query.actor), ("before", &seq)];
        format::with_query("/ui/audit", &params)
    });
    Ok(AuditPage { nav: Nav::new(viewer, "audit"), chain_ok, chain, query: query.clone(), rows, older }.render()?)
}

/// The gist of a record's detail: a verdict's failed requirements, or its members in brief.
fn detail_line(detail: &Value) -> String {
    let verdict = if detail["requirements"].is_array() { detail } else { &detail["verdict"] };
    if let Some(requirements) = verdict["requirements"].as_array() {
        let failed: Vec<String> = requirements
            .iter()
            .filter(|r| r["passed"].as_bool() != Some(true))
            .map(|r| format!("{}: {}", r["name"].as_str().unwrap_or_default(), r["detail"].as_str().unwrap_or_default()))
            .collect();
        return if failed.is_empty() { "every requirement passed".to_owned() } else { failed.join("; ") };
    }
    let mut line = detail.to_string();
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}
