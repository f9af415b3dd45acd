//! Image references as Kubernetes pods spell them (`[host[:port]/]path[:tag][@digest]`), read
//! with the rules container runtimes use (distribution's `reference` grammar and Docker's
//! normalisation): a first component with a `.` or a `:`, `localhost`, or an uppercase letter is
//! a host; otherwise the host is `docker.io`, and a one-component path is below `library/`.
//!
//! A reference a runtime would refuse (an uppercase path, a digest that is not lowercase hex of
//! its algorithm's length, a bad tag) does not parse here either, so admission refuses it with
//! a clear message instead of letting the pod fail to pull.

use std::fmt;

use crate::names::{RepoName, Tag};

/// The host a reference without one names.
const DOCKER_HUB: &str = "docker.io";
/// What Docker reads as [`DOCKER_HUB`].
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
/// Longest reference accepted: distribution's name limit (255) plus a tag and a digest.
const MAX_REFERENCE_LEN: usize = 512;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// The registry host as written, lowercased, with its port when it has one
    /// (`registry.example.com:5443`); `docker.io` when the reference names none.
    pub host: String,
    /// The repository path (`prod/app`; `library/nginx` for `nginx`).
    pub repo: RepoName,
    /// The tag, when one is written.
    pub tag: Option<Tag>,
    /// The digest, when one is written: it is what a runtime pulls, whatever the tag says.
    pub digest: Option<ImageDigest>,
}

/// A digest in a reference: `sha256:` with 64 lowercase hex digits, the one algorithm this
/// registry stores, or `sha512:` with 128, which other registries may serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageDigest {
    /// A digest this registry can look up.
    Sha256(storage::Digest),
    /// A valid digest of another algorithm (`sha512:...`).
    Other(String),
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reference:?} is not a valid image reference: {why}")]
pub struct ImageError {
    /// The reference, cut to a readable length.
    pub reference: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl ImageName {
    /// Parses `text` as a runtime would.
    pub fn parse(text: &str) -> Result<ImageName, ImageError> {
        let error = |why: &'static str| ImageError { reference: text.chars().take(160).collect(), why };
        if text.is_empty() || text.len() > MAX_REFERENCE_LEN {
            return Err(error("empty or longer than 512 characters"));
        }
        let (named, digest) = match text.split_once('@') {
            Some((named, digest)) => (named, Some(parse_digest(digest).ok_or_else(|| error("the digest is not sha256 with 64 lowercase hex digits (or sha512 with 128)"))?)),
            None => (text, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is the host's port).
        let last_slash = named.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match named[last_slash..].rfind(':') {
            Some(colon) => {
                let tag = &named[last_slash + colon + 1..];
                (&named[..last_slash + colon], Some(tag.parse::<Tag>().map_err(|_| error("the tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"))?))
            }
            None => (named, None),
        };
        let (host, path) = split_host(name);
        if !valid_host(host) {
            return Err(error("the registry host is not a host name or address with an optional port"));
        }
        let host = host.to_ascii_lowercase();
        // Docker's legacy name for its hub is the hub.
        let host = if host == LEGACY_DOCKER_HUB { DOCKER_HUB.to_owned() } else { host };
        let path = if host == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_owned() };
        let repo = path.parse::<RepoName>().map_err(|_| error("the repository path is not lowercase components separated by /"))?;
        Ok(ImageName { host, repo, tag, digest })
    }

    /// The host without its port.
    pub fn host_name(&self) -> &str {
        if self.host.starts_with('[') {
            // An IPv6 literal: the port, if any, follows the bracket.
            return self.host.split_once("]:").map_or(self.host.as_str(), |(ip, _)| &self.host[..ip.len() + 1]);
        }
        self.host.split_once(':').map_or(self.host.as_str(), |(host, _)| host)
    }
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageDigest::Sha256(digest) => write!(f, "{digest}"),
            ImageDigest::Other(digest) => f.write_str(digest),
        }
    }
}

/// Docker's split: the first component is a host when it could not be a path component.
fn split_host(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) => {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// `host[:port]`: labels of letters, digits and `-` joined by `.`, or a bracketed IPv6 address.
fn valid_host(host: &str) -> bool {
    let port_ok = |port: &str| !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    if let Some((ip, after)) = host.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        return ip.parse::<std::net::Ipv6Addr>().is_ok() && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    port.is_none_or(port_ok) && name.split('.').all(label_ok)
}

fn parse_digest(text: &str) -> Option<ImageDigest> {
    let (algorithm, hex) = text.split_once(':')?;
    let lower_hex = |len: usize| hex.len() == len && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match algorithm {
        "sha256" if lower_hex(64) => text.parse().ok().map(ImageDigest::Sha256),
        "sha512" if lower_hex(128) => Some(ImageDigest::Other(text.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (host, repo, tag, digest), or a part of the error.
    type Expected<'a> = Result<(&'a str, &'a str, Option<&'a str>, Option<&'a str>), &'a str>;

    /// `text` parses to what is expected.
    fn check(text: &str, expected: Expected<'_>) {
        let got = ImageName::parse(text);
        match (got, expected) {
            (Ok(image), Ok((host, repo, tag, digest))) => {
                let digest_text = image.digest.as_ref().map(ToString::to_string);
                assert_eq!(
                    (image.host.as_str(), image.repo.as_str(), image.tag.as_ref().map(Tag::as_str), digest_text.as_deref()),
                    (host, repo, tag, digest),
                    "{text}"
                );
            }
            (Err(err), Err(why)) => assert!(err.to_string().contains(why), "{text}: {err}"),
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn references_as_runtimes_read_them() {
        let hex = "a".repeat(64);
        let digest = format!("sha256:{hex}");
        let sha512 = format!("sha512:{}", "b".repeat(128));
        check("nginx", Ok(("docker.io", "library/nginx", None, None)));
        check("nginx:1.25", Ok(("docker.io", "library/nginx", Some("1.25"), None)));
        check("bitnami/redis:7", Ok(("docker.io", "bitnami/redis", Some("7"), None)));
        check("docker.io/library/nginx", Ok(("docker.io", "library/nginx", None, None)));
        check("index.docker.io/nginx:1", Ok(("docker.io", "library/nginx", Some("1"), None)));
        check("Docker.IO/nginx", Ok(("docker.io", "library/nginx", None, None)));
        check("registry.example.com/prod/app:v1", Ok(("registry.example.com", "prod/app", Some("v1"), None)));
        check("Registry.Example.com/prod/app:v1", Ok(("registry.example.com", "prod/app", Some("v1"), None)));
        check("registry.example.com:5443/prod/app:v1", Ok(("registry.example.com:5443", "prod/app", Some("v1"), None)));
        check("registry.example.com:5443/prod/app", Ok(("registry.example.com:5443", "prod/app", None, None)));
        check("localhost/app", Ok(("localhost", "app", None, None)));
        check("localhost:5000/a/b/c:latest", Ok(("localhost:5000", "a/b/c", Some("latest"), None)));
        check("[::1]:5000/app:v1", Ok(("[::1]:5000", "app", Some("v1"), None)));
        check(&format!("registry.example.com/prod/app@{digest}"), Ok(("registry.example.com", "prod/app", None, Some(&digest))));
        check(&format!("registry.example.com/prod/app:v1@{digest}"), Ok(("registry.example.com", "prod/app", Some("v1"), Some(&digest))));
        check(&format!("ghcr.io/org/tool@{sha512}"), Ok(("ghcr.io", "org/tool", None, Some(&sha512))));
        // What a runtime refuses.
        check(&format!("registry.example.com/prod/app@sha256:{}", hex.to_uppercase()), Err("the digest is not sha256"));
        check("registry.example.com/prod/app@sha256:abc", Err("the digest is not sha256"));
        check("registry.example.com/prod/app@md5:abc", Err("the digest is not sha256"));
        check("registry.example.com/Prod/app:v1", Err("the repository path"));
        check("registry.example.com/prod/app:-v1", Err("the tag"));
        check("registry.example.com:http/app", Err("the registry host"));
        check("-bad.example.com/app", Err("the registry host"));
        check("registry.example.com//app", Err("the repository path"));
        check("", Err("empty"));
        check(&"a".repeat(600), Err("longer than 512"));
    }

    #[test]
    fn host_names_without_ports() {
        for (text, host) in [("registry.example.com:5443/a", "registry.example.com"), ("nginx", "docker.io"), ("[::1]:5000/a", "[::1]"), ("[::1]/a", "[::1]")] {
            assert_eq!(ImageName::parse(text).unwrap().host_name(), host, "{text}");
        }
    }
}
