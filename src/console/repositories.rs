//! The repositories page: the namespaces with their tag rules and gates, and the repositories
//! the viewer may pull, searched and paged.
//!
//! The catalog is a sorted store listing, so a page never reads it whole:
//! - browsing and a prefix search (the default) seek to where the page starts (`after`, or the
//!   prefix) and read forward; a prefix search stops at the first name past the prefix. A page
//!   costs one seek and at most [`SCAN`] names, whatever the catalog's size;
//! - a substring search (`match=contains`) cannot seek: it reads at most [`SCAN`] names per page
//!   and, when they hold fewer than [`PAGE`] matches, offers to search on from where it stopped.
//!
//! Names the viewer may not pull are read but not shown (they count towards [`SCAN`]).

use askama::Template;

use super::format;
use super::{ConsoleError, Nav, Viewer};
use crate::names::RepoName;
use crate::registry::Registry;

/// Repositories shown on one page.
const PAGE: usize = 50;
/// The most catalog names one page reads.
const SCAN: usize = 2_000;
/// Names read per store listing.
const BATCH: usize = 500;

/// What the repositories page was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoriesQuery {
    /// The search text; empty lists everything.
    pub q: String,
    /// Match names containing `q` anywhere, instead of starting with it.
    pub contains: bool,
    /// Continue after this name.
    pub after: Option<RepoName>,
}

struct NamespaceRow {
    pattern: String,
    tags: String,
    gate: String,
}

struct RepositoryRow {
    name: String,
    href: String,
    namespace: String,
    tags: String,
    gate: String,
}

#[derive(Template)]
#[template(path = "repositories.html")]
struct RepositoriesPage {
    nav: Nav,
    namespaces: Vec<NamespaceRow>,
    q: String,
    contains: bool,
    rows: Vec<RepositoryRow>,
    next: Option<String>,
    /// Set when the page stopped at [`SCAN`] names without filling up.
    scanned: Option<usize>,
}

/// Which names a listing shows.
enum Search<'a> {
    All,
    Prefix(&'a str),
    Contains(&'a str),
}

impl Search<'_> {
    fn matches(&self, name: &str) -> bool {
        match self {
            Search::All => true,
            Search::Prefix(prefix) => name.starts_with(prefix),
            Search::Contains(text) => name.contains(text),
        }
    }
}

/// The repositories page.
pub async fn repositories(registry: &Registry, viewer: &Viewer, query: &RepositoriesQuery) -> Result<String, ConsoleError> {
    let config = registry.config();
    let search = match (query.q.as_str(), query.contains) {
        ("", _) => Search::All,
        (text, false) => Search::Prefix(text),
        (text, true) => Search::Contains(text),
    };
    let mut rows = Vec::new();
    let mut cursor = query.after.clone();
    let mut n_read = 0;
    // Whether names past the cursor remain to be read.
    let mut more = true;
    while more && rows.len() < PAGE && n_read < SCAN {
        let page = match (&cursor, &search) {
            (None, Search::Prefix(prefix)) => registry.catalog_from(prefix, BATCH).await?,
            (cursor, _) => registry.catalog(cursor.as_ref(), BATCH).await?,
        };
        more = page.truncated;
        let n_entries = page.entries.len();
        for (i, name) in page.entries.into_iter().enumerate() {
            if matches!(search, Search::Prefix(prefix) if !name.starts_with(prefix)) {
                more = false;
                break;
            }
            n_read += 1;
            let Ok(repo) = name.parse::<RepoName>() else { continue };
            if search.matches(&name) && viewer.principal.may_list(&name) {
                let (namespace, tags, gate) = format::namespace_of(&config.namespaces, &repo);
                rows.push(RepositoryRow { href: format::repository_href(&name), name, namespace, tags, gate });
            }
            cursor = Some(repo);
            if rows.len() == PAGE || n_read == SCAN {
                more = more || i + 1 < n_entries;
                break;
            }
        }
        if cursor.is_none() {
            break;
        }
    }
    let next = match (&cursor, more) {
        (Some(last), true) => Some(format::with_query(
            "/ui/repositories",
            &[("q", &query.q), ("match", if query.contains { "contains" } else { "" }), ("after", last.as_str())],
        )),
        _ => None,
    };
    let namespaces = config
        .namespaces
        .iter()
        .map(|ns| NamespaceRow { pattern: ns.pattern.clone(), tags: format::tag_rule(ns), gate: format::gate(ns.gate.as_ref()) })
        .collect();
    let scanned = (more && rows.len() < PAGE).then_some(n_read);
    let page = RepositoriesPage { nav: Nav::new(viewer, "repositories"), namespaces, q: query.q.clone(), contains: query.contains, rows, next, scanned };
    Ok(page.render()?)
}
