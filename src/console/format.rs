//! How values read from the registry are written on pages: sizes (`human::size`), times, short digests, links,
//! a namespace's rules and gate in words. Pure functions; escaping is the templates' job.

use crate::names::RepoName;
use crate::policy::gate::{Gate, GateMode};
use crate::policy::namespaces::Namespace;

pub(super) use crate::human::size;

/// A time in seconds since the Unix epoch, as RFC 3339 in UTC; a negative one as `-`.
pub(super) fn time(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(secs) => humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// The first 12 hex digits of a digest, as people quote them.
pub(super) fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// The console's page of a repository.
pub(super) fn repository_href(repo: &str) -> String {
    format!("/ui/r/{repo}")
}

/// The console's page of a manifest in a repository.
pub(super) fn image_href(repo: &str, digest: &str) -> String {
    format!("/ui/r/{repo}/@{digest}")
}

/// `href` with the query parameters, each value percent-encoded.
pub(super) fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in params.iter().filter(|(_, value)| !value.is_empty()) {
        query.append_pair(key, value);
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// `enforce` or `audit`.
pub(super) fn gate_mode(mode: GateMode) -> &'static str {
    match mode {
        GateMode::Enforce => "enforce",
        GateMode::Audit => "audit",
    }
}

/// A gate in one line: its mode and each requirement.
pub(super) fn gate(gate: Option<&Gate>) -> String {
    let Some(gate) = gate else { return "not gated".to_owned() };
    let mut needs = Vec::new();
    if !gate.signed_by.is_empty() {
        needs.push(format!("signed by one of {}", gate.signed_by.join(", ")));
    }
    if !gate.signed_by_all.is_empty() {
        needs.push(format!("signed by each of {}", gate.signed_by_all.join(", ")));
    }
    for attestation in &gate.attestations {
        needs.push(format!("attestation {}", attestation.predicate_type));
    }
    if gate.sbom {
        needs.push("an SBOM".to_owned());
    }
    if gate.scan.is_some() {
        needs.push("a passing signed scan".to_owned());
    }
    if needs.is_empty() {
        needs.push("nothing".to_owned());
    }
    format!("{}: {}", gate_mode(gate.mode), needs.join("; "))
}

/// A namespace's tag rule in one line: its mode and the exceptions.
pub(super) fn tag_rule(namespace: &Namespace) -> String {
    let mut line = format!("{}", namespace.tags);
    for rule in &namespace.tag_rules {
        line.push_str(&format!("; {} for {}", rule.tags, rule.pattern));
    }
    if namespace.promotion_only {
        line.push_str("; promotion only");
    }
    line
}

/// The namespace that applies to `repo` in `namespaces`: its pattern, tag rule and gate, or
/// what applies when none matches.
pub(super) fn namespace_of(namespaces: &[Namespace], repo: &RepoName) -> (String, String, String) {
    match crate::policy::namespaces::first_match(namespaces, repo.as_str()) {
        Some((_, ns)) => (ns.pattern.clone(), tag_rule(ns), gate(ns.gate.as_ref())),
        None => ("(none)".to_owned(), "mutable".to_owned(), gate(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_words() {
        let check = |got: String, expected: &str| assert_eq!(got, expected);
        check(time(0), "1970-01-01T00:00:00Z");
        check(time(-1), "-");
        check(short_digest(&format!("sha256:{}", "ab".repeat(32))), "abababababab");
        check(with_query("/ui/repositories", &[("q", "a b&c"), ("after", "")]), "/ui/repositories?q=a+b%26c");
        check(with_query("/ui/audit", &[]), "/ui/audit");
        check(image_href("prod/app", "sha256:00"), "/ui/r/prod/app/@sha256:00");
    }
}
