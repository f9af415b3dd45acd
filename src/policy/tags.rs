//! Tag rules: which mode (mutable, immutable, write-once) applies to a repository and tag, and a
//! human explanation of why. Enforcement is in `registry::tags`; this decides, it does not write.

use crate::policy::namespaces::{self, Namespace, TagMode};

/// The rule in force for one tag, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRule {
    /// How the tag behaves.
    pub mode: TagMode,
    /// The namespace pattern that matched the repository, if any.
    pub namespace: Option<String>,
    /// The position of that namespace in the config (1-based), for explanations.
    pub namespace_index: Option<usize>,
    /// The tag rule pattern inside the namespace that matched the tag, if any.
    pub tag_pattern: Option<String>,
    /// Whether manifests arrive in this namespace only through promotion.
    pub promotion_only: bool,
}

/// The rule for `tag` in `repo` under `namespaces` (the first that matches applies). Without a
/// matching namespace, tags are mutable.
pub fn rule_for(namespaces: &[Namespace], repo: &str, tag: Option<&str>) -> EffectiveRule {
    let Some((index, ns)) = namespaces::first_match(namespaces, repo) else {
        return EffectiveRule { mode: TagMode::Mutable, namespace: None, namespace_index: None, tag_pattern: None, promotion_only: false };
    };
    let tag_rule = tag.and_then(|tag| ns.tag_rule(tag));
    EffectiveRule {
        mode: tag_rule.map_or(ns.tags, |rule| rule.tags),
        namespace: Some(ns.pattern.clone()),
        namespace_index: Some(index + 1),
        tag_pattern: tag_rule.map(|rule| rule.pattern.clone()),
        promotion_only: ns.promotion_only,
    }
}

impl EffectiveRule {
    /// Where the rule comes from, e.g. `namespace "prod/**", tag rule "sha256-*.sig"`.
    pub fn source(&self) -> String {
        match (&self.namespace, &self.tag_pattern) {
            (Some(ns), Some(tag)) => format!("namespace {ns:?}, tag rule {tag:?}"),
            (Some(ns), None) => format!("namespace {ns:?}"),
            (None, _) => "no namespace matches (default: mutable)".to_owned(),
        }
    }

    /// A paragraph for `portcullis policy explain`.
    pub fn explain(&self, repo: &str, tag: Option<&str>) -> String {
        let mut out = match (&self.namespace, self.namespace_index) {
            (Some(ns), Some(index)) if ns.strip_suffix("/**") == Some(repo) => {
                format!("repository {repo} matches namespace {ns:?} (rule {index}, the first that matches; a pattern X/** covers X itself)\n")
            }
            (Some(ns), Some(index)) => format!("repository {repo} matches namespace {ns:?} (rule {index}, the first that matches)\n"),
            _ => format!("repository {repo} matches no namespace: tags are mutable, nothing is gated\n"),
        };
        if self.promotion_only {
            out.push_str("  manifests arrive only through promotion; direct pushes are refused\n");
        }
        let meaning = match self.mode {
            TagMode::Mutable => "may be moved and deleted",
            TagMode::Immutable => "once bound, can neither be moved nor deleted, and its manifest cannot be deleted while tagged",
            TagMode::WriteOnce => "can be bound once, ever; it may be deleted but never bound to other content",
        };
        match (tag, &self.tag_pattern) {
            (Some(tag), Some(pattern)) => out.push_str(&format!("  tag {tag} matches tag rule {pattern:?}: {} ({meaning})\n", self.mode)),
            (Some(tag), None) => out.push_str(&format!("  tag {tag}: {} ({meaning})\n", self.mode)),
            (None, _) => out.push_str(&format!("  tags: {} ({meaning})\n", self.mode)),
        }
        out
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_rules() {
        let config = Config::embedded_default(std::path::Path::new("/tmp/x"));
        let config = config.namespaces.as_slice();
        let digest_tag = format!("sha256-{}.sig", "a".repeat(64));
        let cases = [
            ("build/app", Some("v1"), TagMode::Mutable, "namespace \"build/**\""),
            ("prod/app", Some("v1"), TagMode::Immutable, "namespace \"prod/**\""),
            ("prod/app", Some(digest_tag.as_str()), TagMode::Mutable, "namespace \"prod/**\", tag rule \"regex:sha256-[0-9a-f]{64}\\\\.(sig|att|sbom)\""),
            // Regression: #13 (5). A look-alike of a cosign tag is an ordinary, immutable prod tag.
            ("prod/team/app", Some("sha256-x.att"), TagMode::Immutable, "namespace \"prod/**\""),
            ("prod", Some("v1"), TagMode::Immutable, "namespace \"prod/**\""),
            ("other", Some("v1"), TagMode::Mutable, "namespace \"**\""),
        ];
        for (repo, tag, mode, source) in cases {
            let rule = rule_for(config, repo, tag);
            assert_eq!((rule.mode, rule.source().as_str()), (mode, source), "{repo}:{tag:?}");
        }
        let text = rule_for(config, "prod/app", Some("v1")).explain("prod/app", Some("v1"));
        assert!(text.contains("matches namespace \"prod/**\" (rule 2"), "{text}");
        assert!(text.contains("tag v1: immutable"), "{text}");
        assert!(text.contains("only through promotion"), "{text}");
        let text = rule_for(config, "prod", None).explain("prod", None);
        assert!(text.contains("covers X itself") && text.contains("only through promotion"), "{text}");
    }
}
