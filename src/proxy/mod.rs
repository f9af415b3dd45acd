//! Pull-through from upstream registries: the only code that talks to other registries.
//!
//! The proxy knows the upstreams (`[[upstreams]]`, [`upstream::UpstreamConfig`]), which
//! repositories map to which ([`routes`]), how to reach and authenticate to each (`client`,
//! `auth`: Basic, the Docker token flow with tokens cached until they expire, TLS with the
//! system roots or the upstream's CA), and fetches from them within bounds: manifests whole up
//! to `max_manifest_bytes`, blobs streamed through the store's staged uploads with one upstream
//! fetch however many clients wait ([`blobs`]), small work under one lock per key ([`locks`]).
//! It keeps each upstream's health for `portcullis upstreams`.
//!
//! Handlers never call it: they ask the `Registry` for a manifest or a blob, and the registry
//! asks the proxy when the repository maps to an upstream, then stores what it gets exactly as
//! pushed content is stored (same keys, same digests, the bytes as received), so tag rules,
//! gates and promotion treat it as any other content. What the registry decides with the proxy
//! (tag freshness, stale serving, tag moves, evidence, the cache's size cap) is in
//! `registry::proxied`.

pub mod blobs;
mod auth;
mod client;
pub mod locks;
mod reach;
pub mod routes;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use secrecy::SecretString;
use storage::Digest;

use crate::metrics::Metrics;
use crate::names::{RepoName, Tag};
use upstream::{Password, UpstreamConfig, UpstreamName};

/// Why the proxy could not get something from an upstream. Every message names the upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The upstream does not have it (404).
    #[error("upstream {upstream} {detail}")]
    NotFound {
        /// The upstream's name.
        upstream: String,
        /// What it said.
        detail: String,
    },
    /// The upstream cannot be reached, timed out, or answered 5xx or 429: cached content may be
    /// served instead.
    #[error("upstream {upstream} is unavailable: it {detail}")]
    Unavailable {
        /// The upstream's name.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// The upstream refused the proxy's credentials or access (401, 403).
    #[error("upstream {upstream} refused the proxy: it {detail}")]
    Refused {
        /// The upstream's name.
        upstream: String,
        /// What it said.
        detail: String,
    },
    /// The upstream answered what cannot be right: bytes that do not match their digest, an
    /// oversized or malformed answer, a redirect that is not followed.
    #[error("upstream {upstream} answered what portcullis refuses: it {detail}")]
    Invalid {
        /// The upstream's name.
        upstream: String,
        /// What was wrong.
        detail: String,
    },
}

impl ProxyError {
    /// The kind, as the `kind` label of `portcullis_proxy_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NotFound { .. } => "not_found",
            ProxyError::Unavailable { .. } => "unavailable",
            ProxyError::Refused { .. } => "refused",
            ProxyError::Invalid { .. } => "invalid",
        }
    }
}

/// How an upstream has been doing, as this process saw it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// When it last answered.
    pub last_ok: Option<SystemTime>,
    /// When it last failed, and how.
    pub last_error: Option<(SystemTime, String)>,
    /// Failures since it last answered.
    pub consecutive_failures: u64,
}

/// An upstream's health and cache size, kept across reloads by its name.
#[derive(Default)]
pub struct Status {
    health: Mutex<Health>,
    /// The proxied content cached, as this process counts it.
    pub cache: Mutex<CacheTally>,
    recent: Mutex<Recent>,
    /// When content was last pulled, and when that was last written to its record.
    pulls: crate::metadata::pulls::RecentPulls,
}

/// What this process remembers of recent evidence checks, by repository and digest.
#[derive(Default)]
struct Recent {
    /// When evidence about a subject was last fetched from the upstream.
    evidence: HashMap<(RepoName, Digest), Instant>,
    /// When the upstream last said that a tag never pulled here does not exist.
    absent: HashMap<(RepoName, Tag), Instant>,
}

/// Evidence checks [`Recent`] holds; beyond, it starts again.
const MAX_RECENT: usize = crate::metadata::pulls::MAX_RECENT_PULLS;

/// Bytes and objects of an upstream's cache, by digest (content shared by several repositories
/// counts once).
#[derive(Debug, Clone, Default)]
pub struct CacheTally {
    /// Size of each cached digest.
    pub sizes: HashMap<Digest, u64>,
    /// Whether the store has been walked to count what was cached before this process started.
    pub counted: bool,
}

impl CacheTally {
    /// Bytes cached.
    pub fn bytes(&self) -> u64 {
        self.sizes.values().sum()
    }
}

impl Status {
    fn succeeded(&self) {
        let mut health = self.health.lock().expect("health lock is never poisoned");
        health.last_ok = Some(SystemTime::now());
        health.consecutive_failures = 0;
    }

    fn failed(&self, err: &ProxyError) {
        let mut health = self.health.lock().expect("health lock is never poisoned");
        health.last_error = Some((SystemTime::now(), err.to_string()));
        health.consecutive_failures += 1;
    }

    /// The upstream's health now.
    pub fn health(&self) -> Health {
        self.health.lock().expect("health lock is never poisoned").clone()
    }

    /// Notes a pull of `digest` in `repo` now; whether it is time to write it to the content's
    /// record (at most once per `interval`).
    pub fn touch(&self, repo: &RepoName, digest: &Digest, interval: Duration) -> bool {
        self.pulls.note(repo, digest, crate::metadata::pulls::epoch_millis(), interval)
    }

    /// When this process last saw `digest` of `repo` pulled (milliseconds since the epoch).
    pub fn last_pulled(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.pulls.last(repo, digest)
    }

    /// Whether evidence about `subject` in `repo` is due to be fetched again (not within `ttl`);
    /// when it is, the fetch is noted as done now.
    /// Whether the upstream said within `ttl` that `tag` of `repo` does not exist: a tag is
    /// asked about at most once per `tag_ttl` whether it exists or not, so clients retrying a
    /// missing tag (a typo in a pod spec, on every node) cost one counted upstream `GET`.
    pub fn known_absent(&self, repo: &RepoName, tag: &Tag, ttl: Duration) -> bool {
        let recent = self.recent.lock().expect("recent lock is never poisoned");
        recent.absent.get(&(repo.clone(), tag.clone())).is_some_and(|said| said.elapsed() < ttl)
    }

    /// Remembers that the upstream said `tag` of `repo` does not exist.
    pub fn absent(&self, repo: &RepoName, tag: &Tag) {
        let mut recent = self.recent.lock().expect("recent lock is never poisoned");
        if recent.absent.len() >= MAX_RECENT {
            recent.absent.clear();
        }
        recent.absent.insert((repo.clone(), tag.clone()), Instant::now());
    }

    pub fn evidence_due(&self, repo: &RepoName, subject: &Digest, ttl: Duration) -> bool {
        let mut recent = self.recent.lock().expect("recent lock is never poisoned");
        if recent.evidence.len() >= MAX_RECENT {
            recent.evidence.clear();
        }
        let key = (repo.clone(), subject.clone());
        if recent.evidence.get(&key).is_some_and(|checked| checked.elapsed() < ttl) {
            return false;
        }
        recent.evidence.insert(key, Instant::now());
        true
    }
}

/// An upstream as `GET /api/v1/upstreams` (and `portcullis upstreams`) shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamReport {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// The repositories that map to it.
    pub namespace: String,
    /// The `?ns=` hosts it serves.
    pub hosts: Vec<String>,
    /// Whether it is the default upstream (dockerd's mirrors).
    pub default: bool,
    /// `up` (answered last), `down` (failed last) or `unknown` (not asked yet).
    pub health: &'static str,
    /// When it last answered (RFC 3339).
    pub last_ok: Option<String>,
    /// When it last failed (RFC 3339), and how.
    pub last_error: Option<(String, String)>,
    /// Failures since it last answered.
    pub consecutive_failures: u64,
    /// Bytes cached (distinct content), as this process counts them.
    pub cache_bytes: u64,
    /// Manifests and blobs cached.
    pub cache_objects: usize,
    /// Whether the count includes what was cached before this process started.
    pub cache_counted: bool,
    /// The size cap, if any.
    pub max_bytes: Option<u64>,
    /// `follow` or `hold`.
    pub tag_moves: &'static str,
}

/// A manifest as an upstream served it, its digest checked.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Its `Content-Type`, without parameters.
    pub media_type: String,
    /// The bytes, exactly as received.
    pub bytes: Bytes,
}

/// One configured upstream: its configuration, client and status.
pub struct Upstream {
    /// As configured.
    pub config: Arc<UpstreamConfig>,
    /// Health and cache size.
    pub status: Arc<Status>,
    client: client::Client,
}

/// A repository that maps to an upstream.
#[derive(Clone)]
pub struct Mapped {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// The repository's name upstream.
    pub remote: String,
}

/// How a pull's repository name is routed (see [`routes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// As requested.
    AsIs,
    /// Under an upstream's prefix: `?ns=` named the upstream, or the name was below its prefix
    /// but spelled without `library/`.
    To(RepoName),
    /// To the default upstream if the repository does not exist here (dockerd's mirrors).
    ToIfAbsent(RepoName),
}

/// The upstreams, as configured now.
pub struct Proxy {
    upstreams: arc_swap::ArcSwap<Vec<Arc<Upstream>>>,
    statuses: Mutex<HashMap<UpstreamName, Arc<Status>>>,
    metrics: Arc<Metrics>,
    /// One holder per manifest fetch or tag check.
    pub locks: locks::Locks,
    /// One upstream fetch per blob.
    pub blobs: blobs::Flights,
    /// One pass of the caches' size caps at a time.
    pub eviction: tokio::sync::Mutex<()>,
}

/// The media types a manifest request accepts (`Accept`): the registry asks for the types it
/// stores, and the upstream answers with what the tag or digest is.
pub type Accept<'a> = &'a [&'a str];

impl Proxy {
    /// The proxy for `configs`; `env` reads the environment (for `password_env`).
    pub fn new(configs: &[UpstreamConfig], metrics: Arc<Metrics>, env: &dyn Fn(&str) -> Option<String>) -> Result<Proxy, String> {
        let proxy = Proxy {
            upstreams: arc_swap::ArcSwap::new(Arc::new(Vec::new())),
            statuses: Mutex::new(HashMap::new()),
            metrics,
            locks: locks::Locks::default(),
            blobs: blobs::Flights::default(),
            eviction: tokio::sync::Mutex::new(()),
        };
        proxy.configure(configs, env)?;
        Ok(proxy)
    }

    /// Replaces the upstreams (a reload). Health and cache counts stay with the upstream's name;
    /// clients and tokens are made anew.
    pub fn configure(&self, configs: &[UpstreamConfig], env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        let mut upstreams = Vec::new();
        for config in configs {
            let password = match config.credentials.as_ref().map(|c| &c.password) {
                Some(Password::File(password)) => Some(password.clone()),
                Some(Password::Env(variable)) => {
                    let value = env(variable).ok_or_else(|| format!("upstream {}: password_env {variable} is not set", config.name))?;
                    Some(SecretString::from(value))
                }
                None => None,
            };
            let status = self.status_of(&config.name);
            let config = Arc::new(config.clone());
            let client = client::Client::new(config.clone(), password, status.clone(), self.metrics.clone())
                .map_err(|err| format!("upstream {}: {err}", config.name))?;
            upstreams.push(Arc::new(Upstream { config, status, client }));
        }
        self.upstreams.store(Arc::new(upstreams));
        Ok(())
    }

    fn status_of(&self, name: &UpstreamName) -> Arc<Status> {
        let mut statuses = self.statuses.lock().expect("status lock is never poisoned");
        statuses.entry(name.clone()).or_default().clone()
    }

    /// The upstreams in force.
    pub fn upstreams(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.upstreams.load_full()
    }

    /// The upstream `repo` maps to, with its name there.
    pub fn mapped(&self, repo: &RepoName) -> Option<Mapped> {
        self.upstreams()
            .iter()
            .find_map(|upstream| routes::remote_name(&upstream.config, repo).map(|remote| Mapped { upstream: upstream.clone(), remote }))
    }

    /// Where a pull of `name` goes, `ns` being containerd's `?ns=` parameter. A host no upstream
    /// serves is an error: serving this registry's own `name` in its place would hand the
    /// client other content than it asked for.
    pub fn route(&self, name: &RepoName, ns: Option<&str>) -> Result<Route, String> {
        let upstreams = self.upstreams();
        if let Some(host) = ns {
            let upstream = upstreams
                .iter()
                .find(|upstream| upstream.config.hosts.iter().any(|h| h == host))
                .ok_or_else(|| format!("no upstream of this registry mirrors {host} (?ns={host})"))?;
            let local = routes::local_name(&upstream.config, name.as_str()).map_err(|err| err.to_string())?;
            return Ok(Route::To(local));
        }
        if let Some(mapped) = self.mapped(name) {
            let local = routes::local_name(&mapped.upstream.config, &mapped.remote).map_err(|err| err.to_string())?;
            return Ok(if local == *name { Route::AsIs } else { Route::To(local) });
        }
        match upstreams.iter().find(|upstream| upstream.config.default) {
            Some(upstream) => {
                let local = routes::local_name(&upstream.config, name.as_str()).map_err(|err| err.to_string())?;
                Ok(Route::ToIfAbsent(local))
            }
            None => Ok(Route::AsIs),
        }
    }

    /// Counts a pull answered from the cache.
    pub fn hit(&self, upstream: &Upstream, kind: &str) {
        self.metrics.proxy_hits.with_label_values(&[upstream.config.name.as_str(), kind]).inc();
    }

    /// Counts a pull that needed the upstream.
    pub fn miss(&self, upstream: &Upstream, kind: &str) {
        self.metrics.proxy_misses.with_label_values(&[upstream.config.name.as_str(), kind]).inc();
    }

    /// Counts a tag served stale.
    pub fn stale_serve(&self, upstream: &Upstream) {
        self.metrics.proxy_stale_serves.with_label_values(&[upstream.config.name.as_str()]).inc();
    }

    /// Counts a tag move.
    pub fn tag_moved(&self, upstream: &Upstream, action: &str) {
        self.metrics.proxy_tag_moves.with_label_values(&[upstream.config.name.as_str(), action]).inc();
    }

    /// The metrics the proxy counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Every upstream with its health and cache.
    pub fn report(&self) -> Vec<UpstreamReport> {
        let time = |at: SystemTime| humantime::format_rfc3339_seconds(at).to_string();
        self.upstreams()
            .iter()
            .map(|upstream| {
                let config = &upstream.config;
                let health = upstream.status.health();
                let state = match (&health.last_ok, &health.last_error) {
                    (None, None) => "unknown",
                    (Some(_), None) => "up",
                    (None, Some(_)) => "down",
                    (Some(ok), Some((failed, _))) => if failed > ok { "down" } else { "up" },
                };
                let cache = upstream.status.cache.lock().expect("cache lock is never poisoned");
                UpstreamReport {
                    name: config.name.to_string(),
                    url: config.url.to_string(),
                    namespace: format!("{}/**", config.prefix),
                    hosts: config.hosts.clone(),
                    default: config.default,
                    health: state,
                    last_ok: health.last_ok.map(time),
                    last_error: health.last_error.map(|(at, message)| (time(at), message)),
                    consecutive_failures: health.consecutive_failures,
                    cache_bytes: cache.bytes(),
                    cache_objects: cache.sizes.len(),
                    cache_counted: cache.counted,
                    max_bytes: config.max_bytes,
                    tag_moves: match config.tag_moves {
                        upstream::TagMoves::Follow => "follow",
                        upstream::TagMoves::Hold => "hold",
                    },
                }
            })
            .collect()
    }
}

impl Upstream {
    /// Counts content stored from this upstream in its cache.
    pub fn cached(&self, digest: &Digest, size: u64) {
        let bytes = {
            let mut tally = self.status.cache.lock().expect("cache lock is never poisoned");
            tally.sizes.insert(digest.clone(), size);
            tally.bytes()
        };
        self.client.cache_gauge(bytes);
    }

    /// The digest `tag` points to upstream, by `HEAD` (which Docker Hub does not count against
    /// its rate limit); `None` when the upstream does not say (`Docker-Content-Digest`).
    pub async fn head_manifest(&self, remote: &str, tag: &Tag, accept: Accept<'_>) -> Result<Option<Digest>, ProxyError> {
        let res = self.client.send(client::Method::Head, remote, &format!("manifests/{tag}"), accept, client::Size::Small).await?;
        let header = res.headers().get("docker-content-digest").map(|value| value.to_str().map(str::parse::<Digest>));
        match header {
            None => Ok(None),
            Some(Ok(Ok(digest))) => Ok(Some(digest)),
            Some(_) => Err(self.client.invalid(format!("gave {remote}:{tag} a Docker-Content-Digest that is no sha256 digest"))),
        }
    }

    /// The manifest `reference` names upstream, at most `limit` bytes, its digest checked: that
    /// of a digest reference, and the upstream's own `Docker-Content-Digest` when it sends one.
    pub async fn get_manifest(&self, remote: &str, reference: &str, accept: Accept<'_>, limit: usize) -> Result<FetchedManifest, ProxyError> {
        let res = self.client.send(client::Method::Get, remote, &format!("manifests/{reference}"), accept, client::Size::Small).await?;
        let media_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let announced = res.headers().get("docker-content-digest").map(|value| value.to_str().ok().and_then(|text| text.parse::<Digest>().ok()));
        let bytes = self.client.read_small(res, limit, "manifest").await?;
        let digest = Digest::of(&bytes);
        let expected = reference.parse::<Digest>().ok();
        if let Some(expected) = expected.filter(|expected| *expected != digest) {
            return Err(self.client.invalid(format!("served bytes hashing to {digest} for {remote}@{expected}")));
        }
        match announced {
            Some(Some(announced)) if announced != digest => {
                Err(self.client.invalid(format!("announced {announced} for {remote}:{reference} and served bytes hashing to {digest}")))
            }
            Some(None) => Err(self.client.invalid(format!("gave {remote}:{reference} a Docker-Content-Digest that is no sha256 digest"))),
            _ => Ok(FetchedManifest { digest, media_type, bytes }),
        }
    }

    /// The descriptors the Referrers API lists for `subject` upstream (an index of at most
    /// `limit` bytes); `None` when the upstream has no Referrers API (404).
    pub async fn referrers(&self, remote: &str, subject: &Digest, accept: Accept<'_>, limit: usize) -> Result<Option<Vec<serde_json::Value>>, ProxyError> {
        let res = match self.client.send(client::Method::Get, remote, &format!("referrers/{subject}"), accept, client::Size::Small).await {
            Ok(res) => res,
            Err(ProxyError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let bytes = self.client.read_small(res, limit, "referrers index").await?;
        let index: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|err| self.client.invalid(format!("served a referrers list of {remote}@{subject} that is no JSON: {err}")))?;
        Ok(Some(index["manifests"].as_array().cloned().unwrap_or_default()))
    }

    /// The size of blob `digest` of `remote` upstream, by `HEAD`.
    pub async fn head_blob(&self, remote: &str, digest: &Digest) -> Result<Option<u64>, ProxyError> {
        let res = self.client.send(client::Method::Head, remote, &format!("blobs/{digest}"), &[], client::Size::Small).await?;
        let length = res.headers().get(reqwest::header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse().ok());
        Ok(length)
    }
}
