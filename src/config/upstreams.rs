//! `[[upstreams]]`: the registries portcullis pulls through (see `config/proxy.example.toml`).
//! Checked here: names, URLs, which repositories map to each (its namespace, the `?ns=` hosts,
//! at most one default), the CA file (read and parsed) and the password file (read, never
//! hashed into the revision, never printed). An environment variable named by `password_env`
//! is read when the proxy is configured, not here: loading stays pure.

use std::time::Duration;

use serde::Deserialize;

use super::files::Files;
use crate::names::RepoName;
use crate::proxy::upstream::{check_ca_pem, Credentials, Password, TagMoves, UpstreamConfig};

/// `[[upstreams]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    name: String,
    url: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    library: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    ca: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_tag_ttl")]
    tag_ttl: String,
    #[serde(default = "default_stale_for")]
    stale_for: String,
    #[serde(default)]
    tag_moves: TagMoves,
    #[serde(default)]
    max_bytes: Option<u64>,
}

fn default_timeout() -> String {
    "30s".to_owned()
}

fn default_tag_ttl() -> String {
    "5m".to_owned()
}

fn default_stale_for() -> String {
    "7d".to_owned()
}

/// The upstreams, each checked, and checked against each other: unique names, hosts and
/// namespaces, no namespace inside another, at most one default.
pub(super) fn load(upstreams: Vec<FileUpstream>, files: &mut Files) -> Result<Vec<UpstreamConfig>, String> {
    let loaded = upstreams.into_iter().map(|upstream| upstream.load(files)).collect::<Result<Vec<_>, String>>()?;
    for (i, a) in loaded.iter().enumerate() {
        for b in &loaded[i + 1..] {
            if a.name == b.name {
                return Err(format!("upstreams: the name {:?} is used twice", a.name.as_str()));
            }
            if let Some(host) = a.hosts.iter().find(|host| b.hosts.contains(host)) {
                return Err(format!("upstreams {:?} and {:?} both serve ns={host}", a.name.as_str(), b.name.as_str()));
            }
            let (pa, pb) = (a.prefix.as_str(), b.prefix.as_str());
            let nested = |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
            if nested(pa, pb) || nested(pb, pa) {
                return Err(format!("upstreams {:?} and {:?}: namespaces {pa}/** and {pb}/** overlap", a.name.as_str(), b.name.as_str()));
            }
            if a.default && b.default {
                return Err(format!("upstreams {:?} and {:?} are both default; at most one may be", a.name.as_str(), b.name.as_str()));
            }
        }
    }
    Ok(loaded)
}

/// Parses `30s`, `5m`, `7d` (humantime) for the key `what`.
fn duration(text: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{what}: {text:?}: {err}"))
}

impl FileUpstream {
    fn load(self, files: &mut Files) -> Result<UpstreamConfig, String> {
        let name = self.name.parse().map_err(|err| format!("upstreams.name: {err}"))?;
        let what = format!("upstreams {:?}", self.name);
        let url = self.url.parse().map_err(|err| format!("{what} url: {err}"))?;
        let namespace = self.namespace.unwrap_or_else(|| format!("proxy/{}/**", self.name));
        let prefix: RepoName = namespace
            .strip_suffix("/**")
            .and_then(|prefix| prefix.parse().ok())
            .ok_or_else(|| format!("{what} namespace: expected a repository prefix followed by /** (e.g. \"proxy/docker.io/**\"), found {namespace:?}"))?;
        let hosts = self.hosts.unwrap_or_else(|| vec![self.name.clone()]);
        if let Some(host) = hosts.iter().find(|host| host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))) {
            return Err(format!("{what} hosts: {host:?} is not a host name"));
        }
        let library = self.library.unwrap_or_else(|| hosts.iter().any(|host| host == "docker.io"));
        let password = match (self.password_file, self.password_env) {
            (Some(_), Some(_)) => return Err(format!("{what}: set one of password_file and password_env, not both")),
            (Some(path), None) => {
                // Read directly, not through `Files::read`: a secret has no place in the revision.
                let full = files.resolve(&path);
                let text = std::fs::read_to_string(&full).map_err(|err| format!("{what} password_file: cannot read {}: {err}", full.display()))?;
                Some(Password::File(text.trim_end_matches(['\r', '\n']).to_owned().into()))
            }
            (None, Some(variable)) => Some(Password::Env(variable)),
            (None, None) => None,
        };
        let credentials = match (self.user, password) {
            (Some(user), Some(password)) if !user.is_empty() && !user.contains(':') => Some(Credentials { user, password }),
            (Some(user), Some(_)) => return Err(format!("{what} user: {user:?} is not a user name (empty, or holds ':')")),
            (Some(_), None) => return Err(format!("{what}: user needs password_file or password_env")),
            (None, Some(_)) => return Err(format!("{what}: password_file or password_env needs user")),
            (None, None) => None,
        };
        let ca_pem = match &self.ca {
            Some(path) => {
                let pem = files.read(path, &format!("{what} ca"))?;
                check_ca_pem(&pem).map_err(|err| format!("{what} ca {path:?}: {err}"))?;
                Some(pem)
            }
            None => None,
        };
        let timeout = duration(&self.timeout, &format!("{what} timeout"))?;
        if timeout.is_zero() || timeout > Duration::from_secs(600) {
            return Err(format!("{what} timeout: expected 1s to 10m, found {:?}", self.timeout));
        }
        let stale_for = duration(&self.stale_for, &format!("{what} stale_for"))?;
        let tag_ttl = duration(&self.tag_ttl, &format!("{what} tag_ttl"))?;
        if self.max_bytes == Some(0) {
            return Err(format!("{what} max_bytes: expected a positive number of bytes (leave it out for no cap)"));
        }
        Ok(UpstreamConfig {
            name,
            url,
            prefix,
            hosts,
            default: self.default,
            library,
            credentials,
            ca_pem,
            timeout,
            tag_ttl,
            stale_for,
            tag_moves: self.tag_moves,
            max_bytes: self.max_bytes,
        })
    }
}
