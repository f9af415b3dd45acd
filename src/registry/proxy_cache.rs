//! The proxy cache's size cap (`max_bytes` of an upstream): past it, the least recently pulled
//! proxied content is evicted from its repository, until the upstream's cache fits again.
//!
//! The unit is an image: a runnable manifest goes with its evidence (its referrers and cosign
//! tags, which are never pulled themselves and would otherwise go first), and then each of their
//! blobs that no manifest kept in the repository references. A blob pulled on its own (no
//! manifest of the repository names it) is a unit too. Evicting removes the repository's links,
//! tags and records, never bytes: content no repository links any more is garbage collection's,
//! which removes it under its protocol (ARCHITECTURE.md, Lifecycles: Collection), so a push or a
//! promotion linking the same bytes while they are evicted keeps them. A later pull fetches what
//! was evicted again.
//!
//! Sizes come from the records in the store (`_proxied/sha256/<hex>`), walked for each pass, so
//! the count survives restarts and holds for every replica; each process keeps its own running
//! count in between, to know when a pass is due. When content was last pulled is the later of
//! its record (written at most hourly) and this process's memory.
//!
//! Cost: a pass lists the upstream's repositories and their records, and reads the summary of
//! each cached manifest. Passes run one at a time, when content was stored past the cap.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use storage::Digest;

use super::{Registry, Result};
use crate::names::{RepoName, Tag, COSIGN_SUFFIXES};
use crate::proxy::Upstream;

/// Records listed per page.
const PAGE: usize = 1000;

/// One piece of cached content in one repository.
#[derive(Debug, Clone)]
struct Entry {
    size: u64,
    manifest: bool,
    pulled: u64,
}

/// What one pass knows of an upstream's cache.
#[derive(Default)]
struct Cached {
    entries: HashMap<(RepoName, Digest), Entry>,
}

impl Cached {
    /// Bytes of distinct content.
    fn bytes(&self) -> u64 {
        let mut sizes: HashMap<&Digest, u64> = HashMap::new();
        for ((_, digest), entry) in &self.entries {
            sizes.insert(digest, entry.size);
        }
        sizes.values().sum()
    }
}

impl Registry {
    /// Runs a pass of every upstream's cache whose count is unknown (since start) or over its cap;
    /// one pass at a time.
    pub async fn enforce_cache_caps(&self) -> Result<()> {
        let _one_pass = self.proxy.eviction.lock().await;
        for upstream in self.proxy.upstreams().iter() {
            let due = {
                let tally = upstream.status.cache.lock().expect("cache lock is never poisoned");
                !tally.counted || upstream.config.max_bytes.is_some_and(|max| tally.bytes() > max)
            };
            if due {
                self.evict_upstream(upstream).await?;
            }
        }
        Ok(())
    }

    async fn evict_upstream(&self, upstream: &Arc<Upstream>) -> Result<()> {
        let mut cached = self.walk_cache(upstream).await?;
        if let Some(max) = upstream.config.max_bytes {
            while cached.bytes() > max {
                let Some((repo, digest)) = self.least_recently_pulled(&cached).await? else { break };
                let evicted = self.evict(&mut cached, &repo, &digest).await?;
                self.proxy.metrics().proxy_evicted_bytes.with_label_values(&[upstream.config.name.as_str()]).inc_by(evicted);
                tracing::info!(upstream = %upstream.config.name, repo = %repo, digest = %digest, evicted, "evicted from the proxy cache");
            }
        }
        let sizes: HashMap<Digest, u64> = cached.entries.iter().map(|((_, digest), entry)| (digest.clone(), entry.size)).collect();
        let mut tally = upstream.status.cache.lock().expect("cache lock is never poisoned");
        tally.sizes = sizes;
        tally.counted = true;
        self.proxy.metrics().proxy_cache_bytes.with_label_values(&[upstream.config.name.as_str()]).set(tally.bytes() as i64);
        Ok(())
    }

    /// Every record of the upstream's repositories (those below its prefix, in catalog order).
    async fn walk_cache(&self, upstream: &Arc<Upstream>) -> Result<Cached> {
        let prefix = &upstream.config.prefix;
        let mut cached = Cached::default();
        let mut last = Some(prefix.clone());
        'catalog: loop {
            let page = self.metadata.catalog(last.as_ref(), PAGE).await?;
            for name in &page.entries {
                // Names below the prefix are contiguous in byte order; `prefix-x` sorts among them.
                if !name.starts_with(prefix.as_str()) {
                    break 'catalog;
                }
                let Ok(repo) = name.parse::<RepoName>() else { continue };
                if name.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/')) {
                    self.walk_repository(upstream, &repo, &mut cached).await?;
                }
                last = Some(repo);
            }
            if !page.truncated || page.entries.is_empty() {
                break;
            }
        }
        Ok(cached)
    }

    async fn walk_repository(&self, upstream: &Arc<Upstream>, repo: &RepoName, cached: &mut Cached) -> Result<()> {
        let mut last: Option<String> = None;
        loop {
            let page = self.metadata.proxied_hexes(repo, last.as_deref(), PAGE).await?;
            for hex in &page.entries {
                let Some(digest) = crate::metadata::layout::digest_of_hex(hex) else { continue };
                let Some(record) = self.metadata.proxied(repo, &digest).await? else { continue };
                // Milliseconds: this process's memory is that fine, records are seconds.
                let pulled = upstream.status.last_pulled(repo, &digest).unwrap_or(0).max(record.pulled.saturating_mul(1000));
                cached.entries.insert((repo.clone(), digest), Entry { size: record.size, manifest: record.manifest, pulled });
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(hex)) => last = Some(hex.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// The unit to evict next: the least recently pulled runnable manifest, or blob that no
    /// cached manifest of its repository references.
    async fn least_recently_pulled(&self, cached: &Cached) -> Result<Option<(RepoName, Digest)>> {
        let referenced = self.referenced_blobs(cached).await?;
        let mut best: Option<(&(RepoName, Digest), u64)> = None;
        for (key, entry) in &cached.entries {
            let candidate = match entry.manifest {
                true => self.summary(&key.1).await?.runnable,
                false => !referenced.contains(key),
            };
            if candidate && best.is_none_or(|(_, pulled)| entry.pulled < pulled) {
                best = Some((key, entry.pulled));
            }
        }
        Ok(best.map(|(key, _)| key.clone()))
    }

    /// (repository, blob) pairs that a cached manifest of the repository references.
    async fn referenced_blobs(&self, cached: &Cached) -> Result<HashSet<(RepoName, Digest)>> {
        let mut referenced = HashSet::new();
        for ((repo, digest), entry) in &cached.entries {
            if entry.manifest {
                for blob in self.summary(digest).await?.blobs.iter().filter_map(|b| b.parse::<Digest>().ok()) {
                    referenced.insert((repo.clone(), blob));
                }
            }
        }
        Ok(referenced)
    }

    /// Evicts one unit (see the module doc) from `repo`; returns the bytes it held in the cache.
    async fn evict(&self, cached: &mut Cached, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let before = cached.bytes();
        let is_manifest = cached.entries.get(&(repo.clone(), digest.clone())).is_some_and(|entry| entry.manifest);
        if is_manifest {
            let mut manifests = vec![digest.clone()];
            manifests.extend(self.evidence_of(repo, digest).await?);
            for manifest in &manifests {
                if cached.entries.remove(&(repo.clone(), manifest.clone())).is_none() {
                    continue;
                }
                self.unlink_cached_manifest(repo, manifest).await?;
            }
            // Then each blob of theirs that no kept manifest of the repository references.
            let referenced = self.referenced_blobs(cached).await?;
            for manifest in &manifests {
                for blob in self.summary(manifest).await?.blobs.iter().filter_map(|b| b.parse::<Digest>().ok()) {
                    let key = (repo.clone(), blob);
                    if referenced.contains(&key) {
                        continue;
                    }
                    if cached.entries.remove(&key).is_some() {
                        self.metadata.unlink_blob(repo, &key.1).await?;
                        self.metadata.delete_proxied(repo, &key.1).await?;
                    }
                }
            }
        } else if cached.entries.remove(&(repo.clone(), digest.clone())).is_some() {
            self.metadata.unlink_blob(repo, digest).await?;
            self.metadata.delete_proxied(repo, digest).await?;
        }
        Ok(before - cached.bytes())
    }

    /// The evidence manifests about `subject` in `repo`: its referrers and cosign's tags.
    async fn evidence_of(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Digest>> {
        let mut evidence: Vec<Digest> = self.metadata.referrer_hexes(repo, subject, super::MAX_REFERRERS).await?.iter().filter_map(|hex| crate::metadata::layout::digest_of_hex(hex)).collect();
        for suffix in COSIGN_SUFFIXES {
            let tag = Tag::cosign(subject, suffix);
            if let Some(stored) = self.metadata.tag(repo, &tag).await? {
                evidence.extend(stored.record.digest.parse::<Digest>().ok());
            }
        }
        Ok(evidence)
    }

    /// Removes a cached manifest from `repo`: the tags pointing to it (with their upstream
    /// records), its referrer and parent links, its revision and its record. Tag rules do not
    /// apply: this is the cache forgetting, and the next pull fetches it again.
    async fn unlink_cached_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        for tag in self.tags_pointing_to(repo, digest).await? {
            self.metadata.delete_tag(repo, &tag).await?;
            self.metadata.delete_upstream_tag(repo, &tag).await?;
        }
        let summary = self.summary(digest).await?;
        if let Some(subject) = summary.subject.as_deref().and_then(|s| s.parse::<Digest>().ok()) {
            self.metadata.remove_referrer(repo, &subject, digest).await?;
        }
        for child in summary.manifests.iter().filter_map(|c| c.parse::<Digest>().ok()) {
            self.metadata.remove_parent(repo, &child, digest).await?;
        }
        self.metadata.unlink_manifest(repo, digest).await?;
        self.metadata.delete_proxied(repo, digest).await?;
        Ok(())
    }
}
