//! The repository page: its namespace's rules, its tags (a page of [`TAGS`] at a time, from the
//! store's sorted listing) with the digest, media type, size, push time and gate verdict of each,
//! and the latest promotions into it.

use askama::Template;
use storage::Digest;

use super::format;
use super::{ConsoleError, Nav, Viewer};
use crate::auth::rules::Action;
use crate::names::{Reference, RepoName, Tag};
use crate::policy::gate::{GateMode, Verdict};
use crate::registry::{Registry, RegistryError};

/// Tags shown on one page.
const TAGS: usize = 100;
/// Promotions into the repository shown.
const PROMOTIONS: usize = 20;

/// What a tag's manifest gets when pulled from here, as a badge.
pub(super) struct Badge {
    /// `passed`, `denied`, `audit`, `evidence` or `ungated`: the badge's CSS class.
    pub(super) class: &'static str,
    /// The words on it.
    pub(super) label: &'static str,
    /// Why, in a tooltip.
    pub(super) title: String,
}

impl Badge {
    /// The badge of a manifest: `verdict` is `None` where no gate applies, `runnable` whether a
    /// runtime could run it (what could not is served without a verdict).
    pub(super) fn of(verdict: Option<&Verdict>, runnable: bool) -> Badge {
        match verdict {
            _ if !runnable => Badge { class: "evidence", label: "not gated", title: "not runnable (evidence): served without a verdict".to_owned() },
            None => Badge { class: "ungated", label: "not gated", title: "no gate applies here".to_owned() },
            Some(verdict) if verdict.passed => Badge { class: "passed", label: "passed", title: verdict.summary() },
            Some(verdict) if verdict.mode == GateMode::Audit => {
                Badge { class: "audit", label: "fails (audit)", title: verdict.summary() }
            }
            Some(verdict) => Badge { class: "denied", label: "denied", title: verdict.summary() },
        }
    }
}

struct TagRow {
    tag: String,
    digest: String,
    short_digest: String,
    href: String,
    media_type: String,
    size: String,
    pushed: String,
    badge: Badge,
}

struct PromotionRow {
    time: String,
    actor: String,
    source: String,
    tags: String,
    href: String,
    short_digest: String,
}

#[derive(Template)]
#[template(path = "repository.html")]
struct RepositoryPage {
    nav: Nav,
    name: String,
    namespace: String,
    tags_rule: String,
    gate: String,
    rows: Vec<TagRow>,
    next: Option<String>,
    promotions: Vec<PromotionRow>,
}

/// The page of `repo`, its tags from after `after`.
pub async fn repository(registry: &Registry, viewer: &Viewer, repo: &RepoName, after: Option<&str>) -> Result<String, ConsoleError> {
    if !viewer.principal.may(Action::Pull, repo.as_str()) {
        return Err(ConsoleError::NotFound);
    }
    let page = match registry.list_tags(repo, after, TAGS).await {
        Ok(page) => page,
        Err(RegistryError::NameUnknown(_)) => return Err(ConsoleError::NotFound),
        Err(err) => return Err(err.into()),
    };
    let mut rows = Vec::new();
    for name in &page.entries {
        let Ok(tag) = name.parse::<Tag>() else { continue };
        // A tag deleted since the listing is no longer there to show.
        let digest = match registry.resolve(repo, &Reference::Tag(tag.clone())).await {
            Ok(digest) => digest,
            Err(RegistryError::ManifestUnknown(_)) => continue,
            Err(err) => return Err(err.into()),
        };
        rows.push(tag_row(registry, repo, &tag, &digest).await?);
    }
    let next = match (page.truncated, page.entries.last()) {
        (true, Some(last)) => Some(format::with_query(&format::repository_href(repo.as_str()), &[("after", last)])),
        _ => None,
    };
    let promotions = registry
        .promotions(repo, PROMOTIONS)
        .await?
        .into_iter()
        .map(|record| PromotionRow {
            time: format::time(record.time),
            tags: record.tags.join(", "),
            href: format::image_href(repo.as_str(), &record.digest),
            short_digest: format::short_digest(&record.digest),
            actor: record.actor,
            source: record.source,
        })
        .collect();
    let (namespace, tags_rule, gate) = format::namespace_of(&registry.config().namespaces, repo);
    let page = RepositoryPage { nav: Nav::new(viewer, "repositories"), name: repo.to_string(), namespace, tags_rule, gate, rows, next, promotions };
    Ok(page.render()?)
}

async fn tag_row(registry: &Registry, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<TagRow, ConsoleError> {
    let link = registry.manifest_link(repo, digest).await?;
    let summary = registry.summary(digest).await?;
    let verdict = if summary.runnable { registry.verdict(repo, digest).await? } else { None };
    let (media_type, size, pushed) = match link {
        Some(link) => (link.media_type, format::size(link.size), link.pushed.map_or_else(|| "-".to_owned(), format::time)),
        None => (summary.media_type.clone(), "-".to_owned(), "-".to_owned()),
    };
    let digest = digest.to_string();
    Ok(TagRow {
        tag: tag.to_string(),
        short_digest: format::short_digest(&digest),
        href: format::image_href(repo.as_str(), &digest),
        digest,
        media_type,
        size,
        pushed,
        badge: Badge::of(verdict.as_ref(), summary.runnable),
    })
}
