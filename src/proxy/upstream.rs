//! One upstream registry as configured (`[[upstreams]]`, validated): where it is, how to reach
//! and authenticate to it, which repositories map to it, and how its cache behaves. Built by
//! `config::upstreams`; the proxy is its only consumer. Secrets (the password) are
//! `SecretString`s and never printed.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

use crate::names::RepoName;

/// An upstream registry, validated.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Its name: in metrics, the API (`/api/v1/upstreams/<name>`), audit records and store keys.
    pub name: UpstreamName,
    /// Its base URL (`https://host[:port]`, or `http://` on a loopback address).
    pub url: UpstreamUrl,
    /// Repositories below this prefix map to the upstream: `<prefix>/<upstream repository>`.
    pub prefix: RepoName,
    /// Hosts that containerd's `?ns=` names for this upstream (`docker.io`).
    pub hosts: Vec<String>,
    /// Whether pulls without `?ns=` of repositories that do not exist here mirror this upstream
    /// (dockerd's `registry-mirrors`).
    pub default: bool,
    /// Whether a one-component name gets `library/` in front, as Docker Hub's names do.
    pub library: bool,
    /// Credentials, when the upstream needs them.
    pub credentials: Option<Credentials>,
    /// PEM of the CA that signed the upstream's certificate; the system roots when absent.
    pub ca_pem: Option<String>,
    /// Bound on connecting and on each read from the upstream, and on whole small responses.
    pub timeout: Duration,
    /// How long a tag checked upstream is served from the cache before it is checked again.
    pub tag_ttl: Duration,
    /// How long after its last successful check a tag is still served when the upstream fails.
    pub stale_for: Duration,
    /// What happens when an upstream tag moves to another digest.
    pub tag_moves: TagMoves,
    /// Cache size cap in bytes; the least recently pulled content is evicted beyond it.
    pub max_bytes: Option<u64>,
}

/// An upstream's name: `[a-z0-9]`, then `[a-z0-9._-]`, at most 64 characters, ending
/// alphanumeric; safe in store keys, metric labels and URL paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(String);

/// An upstream's base URL: `https`, or `http` to a loopback address only (tests, a sidecar);
/// no user, path, query or fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl(reqwest::Url);

/// How the proxy authenticates to an upstream: a user and a password read from a file or an
/// environment variable (never from the configuration file itself).
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// Where the password comes from.
    pub password: Password,
}

/// Where an upstream password comes from.
#[derive(Debug, Clone)]
pub enum Password {
    /// Read from a file at load time (trailing newline removed).
    File(SecretString),
    /// The environment variable of this name, read when the proxy is configured.
    Env(String),
}

/// What happens when a tag upstream moves to another digest. Either way the move is an audit
/// record (`upstream_tag_moved`) and counted in `portcullis_proxy_tag_moves_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagMoves {
    /// Serve the new digest.
    #[default]
    Follow,
    /// Keep serving the old digest until an admin accepts the new one
    /// (`POST /api/v1/upstreams/<name>/accept`).
    Hold,
}

impl std::str::FromStr for UpstreamName {
    type Err = String;

    fn from_str(s: &str) -> Result<UpstreamName, String> {
        let bytes = s.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid = (1..=64).contains(&bytes.len())
            && bytes.first().is_some_and(alnum)
            && bytes.last().is_some_and(alnum)
            && bytes.iter().all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(UpstreamName(s.to_owned()))
        } else {
            Err(format!("expected [a-z0-9][a-z0-9._-]* of at most 64 characters ending in a letter or digit, found {s:?}"))
        }
    }
}

impl UpstreamName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<UpstreamUrl, String> {
        let url = reqwest::Url::parse(s).map_err(|err| format!("{s:?} is not a URL: {err}"))?;
        let host = url.host_str().unwrap_or_default();
        let loopback = is_loopback_host(host);
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(format!("{s:?}: plain http is allowed to loopback addresses only; use https")),
            other => return Err(format!("{s:?}: expected an https URL, found scheme {other:?}")),
        }
        if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{s:?}: expected https://host[:port], without credentials (use user and password_file)"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{s:?}: expected https://host[:port] with no path, query or fragment (the API is at /v2/)"));
        }
        Ok(UpstreamUrl(url))
    }
}

impl UpstreamUrl {
    /// The URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.0
    }

    /// Whether it is plain http (a loopback address).
    pub fn is_plain_http(&self) -> bool {
        self.0.scheme() == "http"
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Url` always ends a base URL with `/`; people write it without.
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether a URL's host (`127.0.0.1`, `[::1]`, `localhost`) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks that `pem` holds at least one certificate reqwest can trust (the `ca` of an upstream).
pub fn check_ca_pem(pem: &str) -> Result<(), String> {
    match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err("holds no PEM certificate".to_owned()),
        Err(err) => Err(format!("not a PEM certificate bundle: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["docker.io", "ghcr.io", "a", "partner-1", "quay_io"] {
            assert!(ok.parse::<UpstreamName>().is_ok(), "{ok}");
        }
        for bad in ["", "Docker", "-a", "a-", "a/b", "a b", "..", &"a".repeat(65)] {
            assert!(bad.parse::<UpstreamName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        let check = |text: &str, expected: Result<&str, &str>| match (text.parse::<UpstreamUrl>(), expected) {
            (Ok(url), Ok(shown)) => assert_eq!(url.to_string(), shown, "{text}"),
            (Err(err), Err(part)) => assert!(err.contains(part), "{text}: {err}"),
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        };
        check("https://registry-1.docker.io", Ok("https://registry-1.docker.io"));
        check("https://registry.example.com:8443/", Ok("https://registry.example.com:8443"));
        check("http://127.0.0.1:5000", Ok("http://127.0.0.1:5000"));
        check("http://[::1]:5000", Ok("http://[::1]:5000"));
        check("http://localhost:5000", Ok("http://localhost:5000"));
        check("http://registry.example.com", Err("plain http is allowed to loopback addresses only"));
        check("http://10.0.0.1:5000", Err("plain http is allowed to loopback addresses only"));
        check("ftp://example.com", Err("expected an https URL"));
        check("https://user:pw@example.com", Err("without credentials"));
        check("https://example.com/v2/", Err("no path"));
        check("https://example.com/?x=1", Err("no path"));
        check("example.com", Err("is not a URL"));
    }
}
