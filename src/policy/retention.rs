//! Retention rules of a namespace (`[namespaces.retention]`): which tags a collection pass
//! removes, decided from facts alone (names, push and pull times, tag modes), so the rules are
//! tested as a table. What the removal of a tag leaves untagged, and how old untagged manifests go, is
//! `registry::collect`'s walk; the rules only say for how long (`untagged`).

use std::time::Duration;

use super::namespaces::{NamePattern, PatternError};

/// A namespace's retention rules. Without any, a pass removes no tag and no manifest, only what
/// nothing references.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep the newest N tags by push time; older ones are removed.
    pub keep_last: Option<usize>,
    /// Tags matching any of these are always kept (globs or `regex:`, as tag rules).
    keep_tags: Vec<NamePattern>,
    /// The patterns as written.
    pub keep_tag_patterns: Vec<String>,
    /// Untagged manifests older than this are removed (with what only they reference).
    pub untagged: Option<Duration>,
    /// Tags neither pulled nor pushed for this long are removed.
    pub not_pulled: Option<Duration>,
}

/// What retention looks at of one tag.
#[derive(Debug, Clone)]
pub struct TagFacts {
    /// The tag's name.
    pub name: String,
    /// When it was bound, seconds since the Unix epoch.
    pub pushed: i64,
    /// When the manifest it points to was last pulled in its repository, as recorded (seconds
    /// since the Unix epoch); `None`: never, as far as the records go.
    pub pulled: Option<i64>,
    /// Whether it is never removed: its tag mode is immutable or write-once, or it names promoted
    /// content.
    pub fixed: bool,
}

impl Retention {
    /// Rules from the config; fails when a pattern does not compile.
    pub fn new(keep_last: Option<usize>, keep_tags: Vec<String>, untagged: Option<Duration>, not_pulled: Option<Duration>) -> Result<Retention, PatternError> {
        let compiled = keep_tags.iter().map(|pattern| NamePattern::parse(pattern)).collect::<Result<_, _>>()?;
        Ok(Retention { keep_last, keep_tags: compiled, keep_tag_patterns: keep_tags, untagged, not_pulled })
    }

    /// The names of `tags` these rules remove, judged at `now` (seconds since the Unix epoch).
    /// Each rule that is set keeps what it names, and a tag goes only when none keeps it:
    /// `keep_last` keeps the newest N by push time, `not_pulled` every tag pulled or pushed
    /// within its age (so with both set, a tag goes when it is beyond the last N *and* unused).
    /// Never removed: immutable and write-once tags, tags that match `keep_tags`, cosign's
    /// `sha256-<hex>.sig/.att/.sbom` tags (evidence goes with its subject, not by these rules).
    /// Those do not count toward `keep_last`: the last N are the newest N of the others.
    pub fn expired(&self, tags: &[TagFacts], now: i64) -> Vec<String> {
        if self.keep_last.is_none() && self.not_pulled.is_none() {
            return Vec::new();
        }
        let mut candidates: Vec<&TagFacts> = tags
            .iter()
            .filter(|tag| !tag.fixed && !is_cosign(&tag.name) && !self.keep_tags.iter().any(|pattern| pattern.is_match(&tag.name)))
            .collect();
        // Newest first; equal times by name, so the outcome does not depend on listing order.
        candidates.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| a.name.cmp(&b.name)));
        let unused = |tag: &TagFacts| {
            let age = self.not_pulled.map_or(0, |age| age.as_secs() as i64);
            tag.pushed.max(tag.pulled.unwrap_or(i64::MIN)) < now - age
        };
        candidates
            .into_iter()
            .enumerate()
            .filter(|(newest, tag)| self.keep_last.is_none_or(|n| *newest >= n) && (self.not_pulled.is_none() || unused(tag)))
            .map(|(_, tag)| tag.name.clone())
            .collect()
    }
}

/// cosign's tag scheme for evidence about a digest.
fn is_cosign(name: &str) -> bool {
    name.strip_prefix("sha256-")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(hex, suffix)| hex.len() == 64 && matches!(suffix, "sig" | "att" | "sbom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, pushed: i64, fixed: bool) -> TagFacts {
        TagFacts { name: name.to_owned(), pushed, pulled: None, fixed }
    }

    fn pulled(name: &str, pushed: i64, pulled: Option<i64>) -> TagFacts {
        TagFacts { name: name.to_owned(), pushed, pulled, fixed: false }
    }

    #[test]
    fn expired_tags() {
        let cosign = format!("sha256-{}.sig", "a".repeat(64));
        let tags = vec![
            tag("v1", 1, false),
            tag("v2", 2, false),
            tag("v3", 3, false),
            tag("latest", 4, false),
            tag("release-1", 0, false),
            tag("pinned", 0, true),
            tag(&cosign, 0, false),
        ];
        let check = |rules: Retention, expected: &[&str]| {
            let mut got = rules.expired(&tags, 10);
            got.sort();
            let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(got, expected, "{rules:?}");
        };
        // (rules, tags removed)
        check(Retention::default(), &[]);
        check(Retention::new(None, vec![], Some(Duration::from_secs(1)), None).unwrap(), &[]);
        check(Retention::new(Some(2), vec![], None, None).unwrap(), &["v1", "v2", "release-1"]);
        check(Retention::new(Some(2), vec!["release-*".into()], None, None).unwrap(), &["v1", "v2"]);
        check(Retention::new(Some(0), vec!["regex:v[0-9]+".into()], None, None).unwrap(), &["latest", "release-1"]);
        check(Retention::new(Some(100), vec![], None, None).unwrap(), &[]);
        // Immutable and write-once tags, and cosign's evidence tags, are never removed.
        check(Retention::new(Some(0), vec![], None, None).unwrap(), &["v1", "v2", "v3", "latest", "release-1"]);
        assert!(Retention::new(None, vec!["regex:(".into()], None, None).is_err());
    }

    #[test]
    fn tags_not_pulled() {
        let day = 86_400;
        let now = 100 * day;
        let cosign = format!("sha256-{}.att", "b".repeat(64));
        let tags = vec![
            // Pushed long ago, pulled yesterday: in use.
            pulled("served", day, Some(now - day)),
            // Pushed long ago, last pulled 40 days ago.
            pulled("stale", day, Some(now - 40 * day)),
            // Pushed long ago, never pulled: its push time counts.
            pulled("never", day, None),
            // Pushed yesterday, never pulled: too young to judge.
            pulled("fresh", now - day, None),
            // A pull record older than the push (a tag moved onto an old digest): the push counts.
            pulled("moved", now - 2 * day, Some(5 * day)),
            pulled("release-1", day, None),
            TagFacts { name: "pinned".into(), pushed: day, pulled: None, fixed: true },
            pulled(&cosign, day, None),
            // Exactly at the age is still kept: only older goes.
            pulled("edge", now - 30 * day, None),
        ];
        let check = |rules: Retention, expected: &[&str]| {
            let mut got = rules.expired(&tags, now);
            got.sort();
            let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(got, expected, "{rules:?}");
        };
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        // (rules, tags removed)
        check(Retention::new(None, vec![], None, days(30)).unwrap(), &["stale", "never", "release-1"]);
        check(Retention::new(None, vec!["release-*".into()], None, days(30)).unwrap(), &["stale", "never"]);
        check(Retention::new(None, vec![], None, days(50)).unwrap(), &["never", "release-1"]);
        check(Retention::new(None, vec![], None, days(0)).unwrap(), &["served", "stale", "never", "fresh", "moved", "release-1", "edge"]);
        // Both rules: a tag goes only when neither keeps it. By push time the newest two are
        // fresh and moved; of the rest, the unused ones go.
        check(Retention::new(Some(2), vec![], None, days(30)).unwrap(), &["stale", "never", "release-1"]);
        check(Retention::new(Some(0), vec![], None, days(1)).unwrap(), &["stale", "never", "moved", "release-1", "edge"]);
        // keep_last alone ignores pulls.
        check(Retention::new(Some(6), vec![], None, None).unwrap(), &["stale"]);
    }
}
