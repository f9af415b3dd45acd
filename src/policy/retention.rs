//! Retention rules of a namespace (`[namespaces.retention]`): which tags a collection pass
//! removes, decided from facts alone (names, push times, tag modes), so the rules are tested as a
//! table. What the removal of a tag leaves untagged, and how old untagged manifests go, is
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
}

/// What retention looks at of one tag.
#[derive(Debug, Clone)]
pub struct TagFacts {
    /// The tag's name.
    pub name: String,
    /// When it was bound, seconds since the Unix epoch.
    pub pushed: i64,
    /// Whether its tag mode is immutable or write-once: such tags are never removed.
    pub fixed: bool,
}

impl Retention {
    /// Rules from the config; fails when a pattern does not compile.
    pub fn new(keep_last: Option<usize>, keep_tags: Vec<String>, untagged: Option<Duration>) -> Result<Retention, PatternError> {
        let compiled = keep_tags.iter().map(|pattern| NamePattern::parse(pattern)).collect::<Result<_, _>>()?;
        Ok(Retention { keep_last, keep_tags: compiled, keep_tag_patterns: keep_tags, untagged })
    }

    /// Whether any rule removes tags.
    pub fn removes_tags(&self) -> bool {
        self.keep_last.is_some()
    }

    /// The names of `tags` these rules remove. Never: immutable and write-once tags, tags that
    /// match `keep_tags`, cosign's `sha256-<hex>.sig/.att/.sbom` tags (evidence goes with its
    /// subject, not by count). Those count toward `keep_last` only if they are not fixed or kept
    /// by pattern: the last N are the newest N of the others.
    pub fn expired(&self, tags: &[TagFacts]) -> Vec<String> {
        let Some(keep_last) = self.keep_last else { return Vec::new() };
        let mut candidates: Vec<&TagFacts> = tags
            .iter()
            .filter(|tag| !tag.fixed && !is_cosign(&tag.name) && !self.keep_tags.iter().any(|pattern| pattern.is_match(&tag.name)))
            .collect();
        // Newest first; equal times by name, so the outcome does not depend on listing order.
        candidates.sort_by(|a, b| b.pushed.cmp(&a.pushed).then_with(|| a.name.cmp(&b.name)));
        candidates.into_iter().skip(keep_last).map(|tag| tag.name.clone()).collect()
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
        TagFacts { name: name.to_owned(), pushed, fixed }
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
            let mut got = rules.expired(&tags);
            got.sort();
            let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            expected.sort();
            assert_eq!(got, expected, "{rules:?}");
        };
        // (rules, tags removed)
        check(Retention::default(), &[]);
        check(Retention::new(None, vec![], Some(Duration::from_secs(1))).unwrap(), &[]);
        check(Retention::new(Some(2), vec![], None).unwrap(), &["v1", "v2", "release-1"]);
        check(Retention::new(Some(2), vec!["release-*".into()], None).unwrap(), &["v1", "v2"]);
        check(Retention::new(Some(0), vec!["regex:v[0-9]+".into()], None).unwrap(), &["latest", "release-1"]);
        check(Retention::new(Some(100), vec![], None).unwrap(), &[]);
        // Immutable and write-once tags, and cosign's evidence tags, are never removed.
        check(Retention::new(Some(0), vec![], None).unwrap(), &["v1", "v2", "v3", "latest", "release-1"]);
        assert!(Retention::new(None, vec!["regex:(".into()], None).is_err());
    }
}
