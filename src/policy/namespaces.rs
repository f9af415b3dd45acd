//! Namespaces: which rules apply to a repository. A [`Namespace`] is a pattern on repository names
//! with its tag mode, tag rules, promotion-only flag and gate; the first namespace whose pattern
//! matches applies. Patterns are matched here ([`NamePattern`]); what the rules mean is decided
//! in `policy::tags` and `policy::gate`.

use std::fmt;

use serde::Deserialize;

use crate::policy::gate::Gate;

/// A namespace rule: a pattern on repository names and what applies there.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The pattern as written in the config.
    pub pattern: String,
    matcher: NamePattern,
    /// How tags behave, unless a tag rule says otherwise.
    pub tags: TagMode,
    /// Exceptions by tag name; the first match applies.
    pub tag_rules: Vec<TagRule>,
    /// Manifests arrive only through promotion.
    pub promotion_only: bool,
    /// What a manifest needs to be pulled or promoted here; `None`: ungated.
    pub gate: Option<Gate>,
    /// What garbage collection removes here beyond unreferenced content.
    pub retention: crate::policy::retention::Retention,
}

/// An exception inside a namespace: tags matching a pattern behave differently.
#[derive(Debug, Clone)]
pub struct TagRule {
    /// The pattern on tag names as written.
    pub pattern: String,
    matcher: NamePattern,
    /// How matching tags behave.
    pub tags: TagMode,
}

/// How tags behave in a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagMode {
    /// Tags move freely (the default).
    #[default]
    Mutable,
    /// A tag never moves and is never deleted; its manifest is not deleted while tagged.
    Immutable,
    /// A tag name is bound once, ever; deletion leaves it burned.
    WriteOnce,
}

/// Why a pattern does not compile.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// A malformed glob.
    #[error("{0}")]
    Glob(#[from] globset::Error),
    /// A malformed `regex:` expression.
    #[error("{0}")]
    Regex(#[from] regex::Error),
}

/// A pattern on repository or tag names: a glob (`*` stays within one path component, `**` spans
/// several, and `X/**` also matches `X` itself, so that a namespace covers its own root), or
/// `regex:<expression>`, which must match the whole name.
#[derive(Debug, Clone)]
pub(crate) struct NamePattern {
    matcher: NameMatcher,
    /// The `X` of a glob `X/**`.
    root: Option<String>,
}

#[derive(Debug, Clone)]
enum NameMatcher {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

/// The first namespace whose pattern matches `repo`, with its position (from 0).
pub fn first_match<'a>(namespaces: &'a [Namespace], repo: &str) -> Option<(usize, &'a Namespace)> {
    namespaces.iter().enumerate().find(|(_, ns)| ns.matches(repo))
}

impl Namespace {
    /// A namespace on `pattern`; fails when the pattern does not compile.
    pub fn new(
        pattern: String,
        tags: TagMode,
        tag_rules: Vec<TagRule>,
        promotion_only: bool,
        gate: Option<Gate>,
        retention: crate::policy::retention::Retention,
    ) -> Result<Namespace, PatternError> {
        Ok(Namespace { matcher: NamePattern::parse(&pattern)?, pattern, tags, tag_rules, promotion_only, gate, retention })
    }

    /// Whether the namespace's pattern matches the repository name.
    pub fn matches(&self, repo: &str) -> bool {
        self.matcher.is_match(repo)
    }

    /// The first tag rule whose pattern matches `tag`.
    pub fn tag_rule(&self, tag: &str) -> Option<&TagRule> {
        self.tag_rules.iter().find(|rule| rule.matcher.is_match(tag))
    }
}

impl TagRule {
    /// A tag rule on `pattern`; fails when the pattern does not compile.
    pub fn new(pattern: String, tags: TagMode) -> Result<TagRule, PatternError> {
        Ok(TagRule { matcher: NamePattern::parse(&pattern)?, pattern, tags })
    }
}

impl fmt::Display for TagMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TagMode::Mutable => "mutable",
            TagMode::Immutable => "immutable",
            TagMode::WriteOnce => "write-once",
        })
    }
}

impl NamePattern {
    pub(crate) fn parse(pattern: &str) -> Result<NamePattern, PatternError> {
        if let Some(expression) = pattern.strip_prefix("regex:") {
            let regex = regex::Regex::new(&format!("^(?:{expression})$"))?;
            return Ok(NamePattern { matcher: NameMatcher::Regex(regex), root: None });
        }
        let glob = globset::GlobBuilder::new(pattern).literal_separator(true).build()?;
        let root = pattern.strip_suffix("/**").map(str::to_owned);
        Ok(NamePattern { matcher: NameMatcher::Glob(glob.compile_matcher()), root })
    }

    pub(crate) fn is_match(&self, name: &str) -> bool {
        self.root.as_deref() == Some(name)
            || match &self.matcher {
                NameMatcher::Glob(glob) => glob.is_match(name),
                NameMatcher::Regex(regex) => regex.is_match(name),
            }
    }
}
