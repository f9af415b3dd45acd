//! Repositories that mirror an upstream (`[[upstreams]]`): what the registry decides with the
//! proxy, and how it stores what the proxy fetches.
//!
//! Content from an upstream is stored exactly as pushed content is (the same keys and digests,
//! the bytes as received, `store_manifest` for manifests and the store's staged uploads for
//! blobs), plus a record of where and when it came from, so tag rules, the one-digest-one-type
//! rule, gates and promotion apply to it unchanged.
//!
//! - **By digest**, a manifest is fetched once and kept: content never changes.
//! - **By tag**, the upstream is asked (`HEAD`) at most once per `tag_ttl` (under one lock per
//!   tag, so concurrent pulls ask once); in between the tag is served from the cache. A failed
//!   check counts as a check: a down upstream costs one timeout per tag per `tag_ttl`.
//! - **Stale serving**: when the check fails (down, slow past its timeout, 5xx, 429, refused),
//!   the tag resolves to the digest last seen, for up to `stale_for` after the last check that
//!   reached the upstream, with a warning for the client and `portcullis_proxy_stale_serves_total`.
//! - **Tag moves**: a tag that now points elsewhere upstream is an audit record
//!   (`upstream_tag_moved`) and `portcullis_proxy_tag_moves_total`; `follow` serves the new digest,
//!   `hold` (or a tag rule that refuses the move) keeps the old one until an admin accepts the
//!   new one ([`Registry::accept_upstream_tag`], audited as `upstream_tag_accepted`).
//! - **Evidence** for a gated namespace is fetched from the upstream with the image (cosign's
//!   `sha256-<hex>.sig/.att` tags and the Referrers API) and again at most once per `tag_ttl`,
//!   and kept with it; a cosign tag pushed here (our CI's signature) is never replaced by the
//!   upstream's. Only evidence manifests about runnable content are fetched, of evidence types,
//!   at most [`MAX_UPSTREAM_REFERRERS`] per subject, within the evidence bounds.
//! - Clients may push evidence into a proxied repository (blobs, manifests by digest, cosign's
//!   tags), never other tags: those mirror the upstream.

use std::time::{Duration, SystemTime};

use storage::Digest;

use super::{manifest, Registry, RegistryError, Result};
use crate::metadata::layout::Key;
use crate::metadata::{ProxiedRecord, UpstreamTagRecord};
use crate::names::{RepoName, Tag};
use crate::proxy::blobs::{BlobError, Fetched, Mode, Target};
use crate::proxy::upstream::TagMoves;
use crate::proxy::{Mapped, ProxyError, Route};

/// The manifest types the registry stores: what is asked of upstreams.
const ACCEPT: &[&str] = &[manifest::OCI_INDEX, manifest::OCI_MANIFEST, manifest::DOCKER_LIST, manifest::DOCKER_MANIFEST];
/// Evidence referrers fetched per subject from an upstream.
pub const MAX_UPSTREAM_REFERRERS: usize = 64;
/// Largest referrers list read from an upstream.
const MAX_REFERRERS_INDEX: usize = 1 << 20;
/// Largest evidence manifest fetched (as `registry::evidence` reads them).
const MAX_EVIDENCE_MANIFEST: usize = 1 << 20;
/// How often the time a piece of proxied content was last pulled is written to its record.
const PULL_WRITE_INTERVAL: Duration = crate::metadata::pulls::WRITE_INTERVAL;

/// A blob of a proxied repository that the upstream serves (the registry had none to serve).
pub struct UpstreamBlob {
    /// Its size, when known.
    pub size: Option<u64>,
    /// The bytes as they arrive (`None` for a `HEAD`); the body ends with an error unless the
    /// blob arrived whole and matching its digest.
    pub body: Option<storage::ByteStream>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// An upstream's failure as the registry answers it.
pub(super) fn upstream_error(err: ProxyError, unknown: impl FnOnce() -> RegistryError) -> RegistryError {
    match err {
        ProxyError::NotFound { .. } => unknown(),
        other => RegistryError::Upstream(other.to_string()),
    }
}

fn blob_error(err: BlobError, digest: &Digest) -> RegistryError {
    match err {
        BlobError::Upstream(err) => upstream_error(err, || RegistryError::BlobUnknown(digest.clone())),
        BlobError::Store(message) => RegistryError::Unavailable(message),
    }
}

impl Registry {
    /// The repository a pull of `name` is served from: `name`, or the repository kept for an
    /// upstream (`?ns=`, the spelling with `library/`, the default upstream when `name` does not
    /// exist here).
    pub async fn route_pull(&self, name: &RepoName, ns: Option<&str>) -> Result<RepoName> {
        match self.proxy.route(name, ns).map_err(RegistryError::NoUpstream)? {
            Route::AsIs => Ok(name.clone()),
            Route::To(local) => Ok(local),
            Route::ToIfAbsent(local) => match self.metadata.repository_exists(name).await? {
                true => Ok(name.clone()),
                false => Ok(local),
            },
        }
    }

    /// Refuses a client's tag in a proxied repository unless it is one of cosign's evidence tags:
    /// the others mirror the upstream.
    pub(super) fn refuse_upstream_tags(&self, repo: &RepoName, tags: &[&Tag]) -> Result<()> {
        let Some(mapped) = self.proxy.mapped(repo) else { return Ok(()) };
        match tags.iter().find(|tag| tag.cosign_subject().is_none()) {
            Some(tag) => Err(RegistryError::Denied(format!(
                "tags of {repo} mirror upstream {} ({}); only evidence tags (sha256-<hex>.sig/.att/.sbom) may be pushed here, not {tag}",
                mapped.upstream.config.name, mapped.remote
            ))),
            None => Ok(()),
        }
    }

    /// Resolves `tag` in a proxied repository: from the cache within `tag_ttl` of the last check,
    /// else checked upstream (see the module doc). Returns the digest and, when it is served
    /// stale or held, the warning for the client.
    pub(super) async fn resolve_upstream_tag(&self, mapped: &Mapped, repo: &RepoName, tag: &Tag) -> Result<(Digest, Option<String>)> {
        let upstream = &mapped.upstream;
        let config = &upstream.config;
        let _one_check = self.proxy.locks.lock(format!("tag {repo}:{tag}")).await;
        let now = now_secs();
        let record = self.metadata.upstream_tag(repo, tag).await?;
        let local = self.local_tag(repo, tag).await?;
        if let (Some(record), Some(local)) = (&record, &local) {
            if now.saturating_sub(record.checked) < config.tag_ttl.as_secs() {
                self.proxy.hit(upstream, "tag");
                let warning = match record.failing {
                    true => Some(self.stale_warning(mapped, record, local, now, None)?),
                    false => record.pending.as_ref().map(|pending| held_warning(mapped, tag, pending)),
                };
                return Ok((local.clone(), warning));
            }
        }
        if local.is_none() && upstream.status.known_absent(repo, tag, config.tag_ttl) {
            self.proxy.hit(upstream, "tag");
            return Err(RegistryError::ManifestUnknown(format!("{repo}:{tag} (not at upstream {} when last asked)", config.name)));
        }
        self.proxy.miss(upstream, "tag");
        let max = self.config().registry.max_manifest_bytes;
        let answer = match &local {
            // A tag served before is only checked: `HEAD`, which Docker Hub does not count.
            Some(_) => match upstream.head_manifest(&mapped.remote, tag, ACCEPT).await {
                Ok(Some(digest)) => Ok((digest, None)),
                Ok(None) => upstream.get_manifest(&mapped.remote, tag.as_str(), ACCEPT, max).await.map(|m| (m.digest.clone(), Some(m))),
                Err(err) => Err(err),
            },
            None => upstream.get_manifest(&mapped.remote, tag.as_str(), ACCEPT, max).await.map(|m| (m.digest.clone(), Some(m))),
        };
        let (current, fetched) = match answer {
            Ok(answer) => answer,
            Err(ProxyError::NotFound { .. }) if config.tag_moves == TagMoves::Follow || local.is_none() => {
                // Gone upstream: gone here.
                if local.is_some() {
                    self.delete_tag(repo, tag).await?;
                }
                self.metadata.delete_upstream_tag(repo, tag).await?;
                upstream.status.absent(repo, tag);
                return Err(RegistryError::ManifestUnknown(format!("{repo}:{tag} (no longer upstream at {})", config.name)));
            }
            Err(err) => {
                // A failed check counts as a check; the digest last seen is served while it may be.
                let (Some(mut record), Some(local)) = (record, local) else {
                    return Err(upstream_error(err, || RegistryError::ManifestUnknown(format!("{repo}:{tag}"))));
                };
                record.checked = now;
                record.failing = true;
                self.metadata.put_upstream_tag(repo, tag, &record).await?;
                let warning = self.stale_warning(mapped, &record, &local, now, Some(&err))?;
                return Ok((local, Some(warning)));
            }
        };
        // What the tag was last seen to point to upstream; a tag cached before its record
        // (nothing else writes one) counts from its local digest.
        let seen = record.as_ref().map(|r| r.pending.clone().unwrap_or_else(|| r.digest.clone())).or_else(|| local.as_ref().map(Digest::to_string));
        let served = record.as_ref().map(|r| r.digest.clone()).or_else(|| local.as_ref().map(Digest::to_string));
        let moved = seen.as_ref().is_some_and(|seen| *seen != current.to_string());
        let mut hold = config.tag_moves == TagMoves::Hold && local.is_some();
        if moved {
            self.upstream_tag_moved(mapped, repo, tag, seen.as_deref().unwrap_or_default(), &current, hold).await;
        }
        // The manifest the tag now names upstream is fetched either way: by digest it never
        // changes, and an admin accepting a held move may find the upstream down.
        match fetched {
            Some(fetched) => self.store_upstream_manifest(mapped, repo, fetched).await?,
            None => self.fetch_upstream_manifest(mapped, repo, &current).await?,
        }
        let mut pending = None;
        if !hold && local.as_ref() != Some(&current) {
            match self.bind_tags(repo, &[tag], &current).await {
                Ok(()) => {}
                // A tag rule that refuses the move holds it, as `hold` does.
                Err(RegistryError::Denied(why)) if local.is_some() => {
                    tracing::warn!(repo = %repo, tag = %tag, digest = %current, reason = %why, "upstream tag moved; the tag rule holds the old digest");
                    hold = true;
                }
                Err(err) => return Err(err),
            }
        }
        let serving = if hold {
            let old = served.clone().unwrap_or_else(|| current.to_string());
            pending = (old != current.to_string()).then(|| current.to_string());
            old
        } else {
            current.to_string()
        };
        let record = UpstreamTagRecord { digest: serving.clone(), checked: now, confirmed: now, failing: false, pending: pending.clone() };
        self.metadata.put_upstream_tag(repo, tag, &record).await?;
        let digest = serving.parse().map_err(|_| RegistryError::Internal(format!("upstream tag record of {repo}:{tag} holds {serving:?}")))?;
        Ok((digest, pending.as_ref().map(|pending| held_warning(mapped, tag, pending))))
    }

    /// The digest `tag` is bound to here, without asking an upstream (in a proxied repository,
    /// what the last check settled on; the console reads tags with this).
    pub async fn local_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match self.metadata.tag(repo, tag).await? {
            Some(stored) => Ok(Some(stored.record.digest.parse().map_err(|_| RegistryError::Internal(format!("tag {repo}:{tag} holds {:?}", stored.record.digest)))?)),
            None => Ok(None),
        }
    }

    /// The warning for a tag served while its upstream fails, or the upstream's error when the
    /// last check that reached it is older than `stale_for`.
    fn stale_warning(&self, mapped: &Mapped, record: &UpstreamTagRecord, local: &Digest, now: u64, err: Option<&ProxyError>) -> Result<String> {
        let upstream = &mapped.upstream;
        let age = now.saturating_sub(record.confirmed);
        let failure = err.map(ToString::to_string).or_else(|| upstream.status.health().last_error.map(|(_, message)| message));
        let failure = failure.unwrap_or_else(|| format!("upstream {} failed its last check", upstream.config.name));
        if age >= upstream.config.stale_for.as_secs() {
            return Err(RegistryError::Upstream(format!(
                "{failure}; the cached digest was last confirmed {} ago, longer than stale_for ({})",
                humantime::format_duration(Duration::from_secs(age)),
                humantime::format_duration(upstream.config.stale_for)
            )));
        }
        self.proxy.stale_serve(upstream);
        Ok(format!(
            "stale: {failure}; serving {local}, last confirmed upstream {} ago",
            humantime::format_duration(Duration::from_secs(age))
        ))
    }

    /// Records a tag move: an audit record and the metric.
    async fn upstream_tag_moved(&self, mapped: &Mapped, repo: &RepoName, tag: &Tag, old: &str, new: &Digest, held: bool) {
        let upstream = &mapped.upstream.config.name;
        let action = if held { "hold" } else { "follow" };
        tracing::warn!(upstream = %upstream, repo = %repo, tag = %tag, old = %old, new = %new, action, "upstream tag moved");
        self.proxy.tag_moved(&mapped.upstream, action);
        let detail = serde_json::json!({ "upstream": upstream.as_str(), "remote": mapped.remote, "tag": tag.as_str(), "old": old, "new": new.to_string(), "action": action });
        self.record_audit("upstream_tag_moved", &format!("upstream:{upstream}"), repo, new, detail).await;
    }

    /// Makes the manifest `digest` of a proxied repository present: fetched once, then kept.
    pub(super) async fn fetch_upstream_manifest(&self, mapped: &Mapped, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _one_fetch = self.proxy.locks.lock(format!("manifest {repo}@{digest}")).await;
        if self.metadata.manifest_link(repo, digest).await?.is_some() {
            return Ok(());
        }
        self.proxy.miss(&mapped.upstream, "manifest");
        let max = self.config().registry.max_manifest_bytes;
        let fetched = mapped
            .upstream
            .get_manifest(&mapped.remote, &digest.to_string(), ACCEPT, max)
            .await
            .map_err(|err| upstream_error(err, || RegistryError::ManifestUnknown(format!("{repo}@{digest}"))))?;
        self.store_upstream_manifest(mapped, repo, fetched).await
    }

    /// Stores a manifest fetched from the upstream as a push would (without requiring its blobs,
    /// which arrive when pulled), with the record of where it came from. An evidence manifest's
    /// layers are fetched first, so that the evidence rule judges it on their bytes.
    async fn store_upstream_manifest(&self, mapped: &Mapped, repo: &RepoName, fetched: crate::proxy::FetchedManifest) -> Result<()> {
        let upstream = &mapped.upstream;
        let content_type = Some(fetched.media_type.as_str()).filter(|t| !t.is_empty());
        let parsed = manifest::parse(content_type, &fetched.bytes).map_err(|err| {
            RegistryError::Upstream(format!("upstream {} served {}@{} as a manifest portcullis cannot store: {err}", upstream.config.name, mapped.remote, fetched.digest))
        })?;
        if let Some(inert) = &parsed.inert_layers {
            for layer in parsed.blobs.iter().filter(|blob| inert.contains(&blob.digest) && blob.size <= super::MAX_INERT_LAYER_BYTES as u64) {
                if !self.metadata.blob_linked(repo, &layer.digest).await? {
                    self.fetch_upstream_blob(mapped, repo, &layer.digest, Mode::Stored).await?;
                }
            }
        }
        let size = fetched.bytes.len() as u64;
        // Collection's fence (see `metadata::fence`): the same bytes may be stored already, old,
        // and about to be collected; then they are stored again once that pass is over.
        let fence = self.open_fence().await?;
        self.store_manifest(repo, &parsed, &fetched.digest, fetched.bytes.clone()).await?;
        let needed = [Key::Blob(&fetched.digest).to_string(), Key::ManifestLink(repo, &fetched.digest).to_string()];
        if !self.close_fence(fence, &needed).await?.is_empty() {
            self.store_manifest(repo, &parsed, &fetched.digest, fetched.bytes).await?;
        }
        let now = now_secs();
        let record = ProxiedRecord { upstream: upstream.config.name.to_string(), size, manifest: true, fetched: now, pulled: now };
        self.metadata.put_proxied(repo, &fetched.digest, &record).await?;
        upstream.cached(&fetched.digest, size);
        self.proxy.blobs.stored.notify_one();
        Ok(())
    }

    /// Notes a pull of proxied content, for the cache's least-recently-pulled order: in memory
    /// always, in its record at most once per [`PULL_WRITE_INTERVAL`].
    pub(super) async fn touch_proxied(&self, mapped: &Mapped, repo: &RepoName, digest: &Digest) -> Result<()> {
        if mapped.upstream.status.touch(repo, digest, PULL_WRITE_INTERVAL) {
            if let Some(mut record) = self.metadata.proxied(repo, digest).await? {
                record.pulled = now_secs();
                self.metadata.put_proxied(repo, digest, &record).await?;
            }
        }
        Ok(())
    }

    /// For a blob GET or HEAD of a proxied repository: `None` when the registry serves it from
    /// the store (it was cached, or is now), else what the upstream serves.
    ///
    /// Content stored for another repository is linked here only after the upstream has served
    /// its bytes and they hashed to the digest (the fetch commits nothing new, it only links):
    /// an upstream's word (`HEAD` 200) is no proof that it has a blob, and taking it would let an
    /// upstream that says yes to every digest hand any stored blob, a private repository's
    /// included, to whoever may pull its proxy namespace.
    pub async fn upstream_blob(&self, repo: &RepoName, digest: &Digest, head: bool, whole_from_store: bool) -> Result<Option<UpstreamBlob>> {
        let Some(mapped) = self.proxy.mapped(repo) else { return Ok(None) };
        let upstream = &mapped.upstream;
        if self.metadata.blob_linked(repo, digest).await? && self.metadata.content_size(digest).await?.is_some() {
            self.proxy.hit(upstream, "blob");
            return Ok(None);
        }
        self.proxy.miss(upstream, "blob");
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        if head {
            let size = upstream.head_blob(&mapped.remote, digest).await.map_err(|err| upstream_error(err, unknown))?;
            return Ok(Some(UpstreamBlob { size, body: None }));
        }
        let mode = if whole_from_store { Mode::Stored } else { Mode::Stream };
        match self.fetch_upstream_blob(&mapped, repo, digest, mode).await? {
            Fetched::Streaming { size, body } => Ok(Some(UpstreamBlob { size, body: Some(body) })),
            Fetched::Stored => Ok(None),
        }
    }

    /// Fetches a blob of a proxied repository (or joins its fetch).
    async fn fetch_upstream_blob(&self, mapped: &Mapped, repo: &RepoName, digest: &Digest, mode: Mode) -> Result<Fetched> {
        let config = self.config();
        let target = Target { metadata: self.metadata.clone(), repo: repo.clone(), digest: digest.clone(), max_bytes: config.registry.max_blob_bytes, grace: config.gc.grace };
        self.proxy.blobs.fetch(mapped.upstream.clone(), mapped.remote.clone(), target, mode).await.map_err(|err| blob_error(err, digest))
    }

    /// For a promotion out of a proxied repository: fetches (and waits for) a required blob the
    /// repository does not hold yet, so nothing promoted lacks its bytes.
    pub(super) async fn ensure_upstream_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if self.upstream_blob(repo, digest, false, true).await?.is_some() {
            return Err(RegistryError::Internal(format!("blob {digest} of {repo} was streamed when it was to be stored")));
        }
        Ok(())
    }

    /// Fetches the evidence about `subject` from the upstream of a gated proxied repository, at
    /// most once per `tag_ttl`; a failure keeps the evidence cached before (it is logged).
    pub(super) async fn refresh_upstream_evidence(&self, mapped: &Mapped, repo: &RepoName, subject: &Digest) {
        let config = &mapped.upstream.config;
        if !mapped.upstream.status.evidence_due(repo, subject, config.tag_ttl) {
            return;
        }
        if let Err(err) = self.fetch_upstream_evidence(mapped, repo, subject).await {
            tracing::warn!(upstream = %config.name, repo = %repo, subject = %subject, error = %err, "cannot fetch evidence from the upstream; using what is cached");
        }
    }

    async fn fetch_upstream_evidence(&self, mapped: &Mapped, repo: &RepoName, subject: &Digest) -> Result<()> {
        if !self.summary(subject).await?.runnable {
            return Ok(());
        }
        let upstream = &mapped.upstream;
        for suffix in ["sig", "att"] {
            let tag = Tag::cosign(subject, suffix);
            let fetched = match upstream.get_manifest(&mapped.remote, tag.as_str(), ACCEPT, MAX_EVIDENCE_MANIFEST).await {
                Ok(fetched) => fetched,
                Err(ProxyError::NotFound { .. }) => continue,
                Err(err) => return Err(RegistryError::Upstream(err.to_string())),
            };
            let digest = fetched.digest.clone();
            let record = self.metadata.upstream_tag(repo, &tag).await?;
            let local = self.local_tag(repo, &tag).await?;
            // A cosign tag pushed here (our CI signing the image) stays: it holds the upstream's
            // signatures too, as cosign appends to the tag it finds.
            let pushed_here = local.as_ref().is_some_and(|local| record.as_ref().is_none_or(|r| r.digest != local.to_string()));
            if pushed_here || local.as_ref() == Some(&digest) {
                continue;
            }
            if self.metadata.manifest_link(repo, &digest).await?.is_none() {
                self.store_upstream_manifest(mapped, repo, fetched).await?;
            }
            self.bind_tags(repo, &[&tag], &digest).await?;
            let now = now_secs();
            self.metadata.put_upstream_tag(repo, &tag, &UpstreamTagRecord { digest: digest.to_string(), checked: now, confirmed: now, failing: false, pending: None }).await?;
        }
        let accept = [manifest::OCI_INDEX];
        let listed = upstream.referrers(&mapped.remote, subject, &accept, MAX_REFERRERS_INDEX).await.map_err(|err| RegistryError::Upstream(err.to_string()))?;
        let evidence = listed
            .unwrap_or_default()
            .into_iter()
            .filter(super::evidence::carries_evidence)
            .filter_map(|descriptor| descriptor["digest"].as_str().and_then(|digest| digest.parse::<Digest>().ok()))
            .take(MAX_UPSTREAM_REFERRERS);
        for referrer in evidence {
            if self.metadata.manifest_link(repo, &referrer).await?.is_none() {
                self.fetch_upstream_manifest(mapped, repo, &referrer).await?;
            }
        }
        Ok(())
    }

    /// Accepts the digest an upstream tag moved to while `hold` kept the old one: the tag is bound
    /// to it and the acceptance audited. Refused when `tag` has no held move (or another one
    /// than `digest`, when given).
    pub async fn accept_upstream_tag(&self, upstream: &str, repo: &RepoName, tag: &Tag, digest: Option<&Digest>, actor: &str) -> Result<Digest> {
        let mapped = self.proxy.mapped(repo).filter(|mapped| mapped.upstream.config.name.as_str() == upstream);
        let Some(mapped) = mapped else {
            return Err(RegistryError::NoUpstream(format!("{repo} does not mirror upstream {upstream}")));
        };
        let _one_check = self.proxy.locks.lock(format!("tag {repo}:{tag}")).await;
        let record = self.metadata.upstream_tag(repo, tag).await?;
        let Some(mut record) = record else {
            return Err(RegistryError::ManifestUnknown(format!("{repo}:{tag} has not been pulled from {upstream}")));
        };
        let Some(pending) = record.pending.clone() else {
            return Err(RegistryError::Denied(format!("{repo}:{tag} has no move held; it serves {} as upstream {upstream} does", record.digest)));
        };
        let pending: Digest = pending.parse().map_err(|_| RegistryError::Internal(format!("upstream tag record of {repo}:{tag} holds {pending:?}")))?;
        if let Some(digest) = digest.filter(|digest| **digest != pending) {
            return Err(RegistryError::Denied(format!("{repo}:{tag} moved upstream to {pending}, not {digest}; nothing accepted")));
        }
        self.fetch_upstream_manifest(&mapped, repo, &pending).await?;
        self.bind_tags(repo, &[tag], &pending).await?;
        let old = std::mem::replace(&mut record.digest, pending.to_string());
        record.pending = None;
        self.metadata.put_upstream_tag(repo, tag, &record).await?;
        let detail = serde_json::json!({ "upstream": upstream, "tag": tag.as_str(), "old": old, "new": pending.to_string() });
        self.record_audit("upstream_tag_accepted", actor, repo, &pending, detail).await;
        Ok(pending)
    }

    /// The digest `tag` of the proxied `repo` moved to upstream while `tag_moves = "hold"` keeps
    /// the old one, if a move is held (what [`Registry::accept_upstream_tag`] would accept).
    pub async fn held_upstream_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<String>> {
        Ok(self.metadata.upstream_tag(repo, tag).await?.and_then(|record| record.pending))
    }

    /// Waits until content fetched from an upstream was stored (the caches' size caps look then).
    pub async fn proxied_content_stored(&self) {
        self.proxy.blobs.stored.notified().await;
    }

    /// The upstreams, their health and their caches, for `portcullis upstreams`.
    pub fn upstreams(&self) -> Vec<crate::proxy::UpstreamReport> {
        self.proxy.report()
    }
}

/// The warning for a tag whose move is held.
fn held_warning(mapped: &Mapped, tag: &Tag, pending: &str) -> String {
    format!(
        "held: upstream {} moved {}:{tag} to {pending}; serving the accepted digest until an admin accepts the move",
        mapped.upstream.config.name, mapped.remote
    )
}

