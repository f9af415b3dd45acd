//! The registry's domain core: blobs, uploads, manifests, tags and referrers of repositories,
//! over the metadata layer, its only way to the object store. Knows nothing of HTTP.

mod admissions;
pub mod audit;
pub mod body;
pub mod evidence;
pub mod collect;
mod fence;
mod promotion;
pub mod manifest;
pub mod proxied;
mod proxy_cache;
pub mod scrub;
mod tags;
pub mod uploads;
pub mod verdicts;

use std::sync::Arc;

use bytes::Bytes;
use storage::{BlobStoreError, Digest, ObjectReader};

use crate::config::Config;
use crate::metadata::audit::{AuditLog, Entry, Record};
use crate::metadata::{ManifestLink, ManifestSummary, Metadata, MetadataError};
use crate::metrics::Metrics;
use crate::names::{Reference, RepoName, Tag, UploadId};

/// The registry: configuration, metadata and store, shared by every request.
pub struct Registry {
    /// The configuration it runs with; replaced whole by [`Registry::reload`].
    config: arc_swap::ArcSwap<Config>,
    /// Everything in the store, through typed accessors: the registry's only way to it.
    metadata: Metadata,
    /// `metadata` reading through its read cache, for the pull path (`metadata::cache`).
    cached: Metadata,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    sessions: uploads::Sessions,
    /// The trust in force; replaced with the configuration.
    trust: arc_swap::ArcSwap<verdicts::LoadedTrust>,
    caches: verdicts::Caches,
    audit: AuditLog,
    signing: crate::signing::SigningKey,
    /// Access control for the configuration in force; `None` when `[auth]` is absent (open).
    auth: arc_swap::ArcSwapOption<crate::auth::Auth>,
    /// The upstreams that repositories may mirror (`[[upstreams]]`); the registry's only way to
    /// another registry.
    proxy: crate::proxy::Proxy,
    /// Evidence arrived or policy changed since the drift check last looked (`admissions.rs`).
    changes: tokio::sync::Notify,
    /// The admission records this node last wrote.
    remembered: admissions::Remembered,
    /// The last verification of the whole audit chain (see `audit.rs`).
    audit_checked: audit::LastCheck,
    /// Pulls seen, whose records are written at most hourly (`metadata::pulls`).
    pulls: crate::metadata::pulls::RecentPulls,
}

/// Registry behaviour and limits (`[registry]`).
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Whether DELETE of blobs and manifests is allowed.
    pub delete_enabled: bool,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: usize,
    /// Largest blob accepted, in bytes.
    pub max_blob_bytes: u64,
    /// Idle time after which an upload session is removed.
    pub upload_timeout: std::time::Duration,
}

/// Outcomes the registry refuses or cannot produce, each mapped to one OCI error by the API.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The blob is not in the repository.
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    /// The upload session does not exist (or belongs to another repository).
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// The upload request is malformed or its body broke off.
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk does not start where the upload ends.
    #[error("chunk out of order: the upload holds {offset} bytes")]
    RangeInvalid {
        /// The upload's repository.
        repo: RepoName,
        /// The upload, so the client can be told where it stands.
        upload_id: UploadId,
        /// Bytes held so far.
        offset: u64,
    },
    /// The blob exceeds the configured limit.
    #[error("blob exceeds the limit of {limit} bytes")]
    BlobTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Content does not hash to the digest given.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// What the client said.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The manifest is malformed or inconsistent.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// A descriptor's size does not match the content it names.
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    /// The manifest exceeds the configured limit.
    #[error("manifest exceeds the limit of {limit} bytes")]
    ManifestTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A blob or child manifest the manifest references is not in the repository.
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    /// The content's stored bytes did not hash to its digest: it was moved to the quarantine and
    /// is served again once its right bytes are pushed.
    #[error("{} {digest} is quarantined: its stored bytes did not match the digest; push it again", kind.as_str())]
    Quarantined {
        /// The digest.
        digest: Digest,
        /// Whether a blob or a manifest was asked for.
        kind: scrub::ContentKind,
    },
    /// The manifest (by tag or digest) is not in the repository.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// The repository does not exist.
    #[error("repository name not known to registry: {0}")]
    NameUnknown(RepoName),
    /// The operation is refused by a rule.
    #[error("{0}")]
    Denied(String),
    /// The operation is disabled in this registry.
    #[error("{0}")]
    Unsupported(String),
    /// A blob range outside the blob.
    #[error("range not satisfiable: the blob has {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// The store cannot be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An upstream of a proxied repository failed, refused or misbehaved (the message names it).
    #[error("{0}")]
    Upstream(String),
    /// A pull names an upstream (`?ns=`) that no `[[upstreams]]` entry serves, or a repository
    /// that mirrors no upstream where one is required.
    #[error("{0}")]
    NoUpstream(String),
    /// Anything else: a bug or a broken store. Not shown to clients.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why the registry could not take a configuration, at start or on reload.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// The trust material does not parse.
    #[error("trust: {0}")]
    Trust(#[from] crate::policy::verify::TrustError),
    /// The signing key of verification summaries cannot be loaded or generated.
    #[error(transparent)]
    SigningKey(#[from] crate::signing::SigningError),
    /// A reload changes the listen address, the storage or the index directory.
    #[error("listen, storage and index_dir change only with a restart; configuration not reloaded")]
    StorageChanged,
    /// A reload turns TLS or client certificates on or off, or changes the client CA.
    #[error("turning TLS or client certificates on or off, or changing the client CA, needs a restart; configuration not reloaded")]
    ListenerTlsChanged,
    /// An upstream cannot be set up (its password variable is unset, its CA unusable).
    #[error("{0}")]
    Upstream(String),
}

/// Result of registry operations.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl From<BlobStoreError> for RegistryError {
    fn from(err: BlobStoreError) -> Self {
        match err {
            BlobStoreError::Unavailable(message) => RegistryError::Unavailable(message),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<MetadataError> for RegistryError {
    fn from(err: MetadataError) -> Self {
        match err {
            MetadataError::Store(store) => store.into(),
            other => RegistryError::Internal(other.to_string()),
        }
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(err: std::io::Error) -> Self {
        RegistryError::Internal(err.to_string())
    }
}

/// A manifest as served: its digest, media type and bytes.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// The content digest.
    pub digest: Digest,
    /// The media type it was pushed with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub bytes: Bytes,
    /// For the client: a proxied tag served stale (its upstream failing) or held back.
    pub warning: Option<String>,
}

/// What a manifest push produced.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    /// The content digest.
    pub digest: Digest,
    /// The subject it refers to, for the `OCI-Subject` header.
    pub subject: Option<Digest>,
}

/// Referrers of a subject, ready for the Referrers API.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// Descriptors, after filtering.
    pub descriptors: Vec<serde_json::Value>,
    /// Whether an `artifactType` filter was applied.
    pub filtered: bool,
}

/// The most referrers listed for one subject.
const MAX_REFERRERS: usize = 10_000;
/// Times a manifest push writes its objects again after a collection pass removed some.
const PUSH_ROUNDS: usize = 3;

/// The keys a manifest push relies on (its targets, each with the digest to name when it is gone)
/// and the keys it writes.
struct NeededKeys {
    targets: Vec<(String, Digest)>,
    own: Vec<String>,
}

impl NeededKeys {
    fn all(&self) -> Vec<String> {
        self.targets.iter().map(|(key, _)| key.clone()).chain(self.own.iter().cloned()).collect()
    }
}

fn needed_keys(repo: &RepoName, parsed: &manifest::ParsedManifest, digest: &Digest, tags: &[&Tag]) -> NeededKeys {
    use crate::metadata::layout::Key;
    let mut targets = Vec::new();
    for blob in parsed.required_blobs() {
        targets.push((Key::BlobLink(repo, &blob.digest).to_string(), blob.digest.clone()));
        targets.push((Key::Blob(&blob.digest).to_string(), blob.digest.clone()));
    }
    for child in &parsed.manifests {
        targets.push((Key::ManifestLink(repo, &child.digest).to_string(), child.digest.clone()));
        targets.push((Key::Blob(&child.digest).to_string(), child.digest.clone()));
    }
    let mut own = vec![Key::Blob(digest).to_string(), Key::ManifestLink(repo, digest).to_string()];
    own.extend(parsed.subject.iter().map(|subject| Key::Referrer { repo, subject, referrer: digest }.to_string()));
    own.extend(parsed.manifests.iter().map(|child| Key::Parent { repo, child: &child.digest, parent: digest }.to_string()));
    own.extend(tags.iter().map(|tag| Key::Tag(repo, tag).to_string()));
    NeededKeys { targets, own }
}
/// Blobs a manifest push checks at once (existence and size).
const REFERENCE_CHECKS: usize = 16;
/// The largest layer an inert manifest may have: the largest evidence `registry::evidence` reads.
const MAX_INERT_LAYER_BYTES: usize = 4 << 20;
/// The most bytes read to decide that one manifest is inert.
const MAX_INERT_BYTES: usize = 16 << 20;

impl Registry {
    /// A registry over `metadata` (and its store) with `config`: builds the trust and loads (or
    /// generates) the registry's signing key.
    pub async fn open(config: Config, metadata: Metadata, metrics: Arc<Metrics>) -> Result<Registry, ConfigureError> {
        let trust = verdicts::load_trust(&config.trust)?;
        let configured_key = config.signing_key_pem.as_ref().map(secrecy::ExposeSecret::expose_secret);
        let signing = crate::signing::SigningKey::load(configured_key, &metadata).await?;
        let auth = config.auth.clone().map(|auth| Arc::new(crate::auth::Auth::new(Arc::new(auth), None)));
        let proxy = crate::proxy::Proxy::new(&config.upstreams, metrics.clone(), &|name| std::env::var(name).ok()).map_err(ConfigureError::Upstream)?;
        Ok(Registry {
            config: arc_swap::ArcSwap::new(Arc::new(config)),
            trust: arc_swap::ArcSwap::new(Arc::new(trust)),
            caches: verdicts::Caches::default(),
            audit: metadata.audit_log(),
            signing,
            cached: metadata.cached(),
            metadata,
            metrics,
            sessions: uploads::Sessions::default(),
            auth: arc_swap::ArcSwapOption::new(auth),
            proxy,
            changes: tokio::sync::Notify::new(),
            remembered: admissions::Remembered::default(),
            audit_checked: audit::LastCheck::default(),
            pulls: crate::metadata::pulls::RecentPulls::default(),
        })
    }

    /// Access control in force now; `None`: the registry is open to everyone.
    pub fn auth(&self) -> Option<Arc<crate::auth::Auth>> {
        self.auth.load_full()
    }

    /// The trust in force now.
    pub fn trust(&self) -> Arc<verdicts::LoadedTrust> {
        self.trust.load_full()
    }

    /// Audit records after sequence number `after` that `keep` keeps, at most `limit`, with the
    /// sequence number to continue after when there may be more.
    pub async fn audit_records(&self, after: u64, limit: usize, keep: impl Fn(&Record) -> bool) -> Result<(Vec<Record>, Option<u64>)> {
        self.audit.list(after, limit, keep).await.map_err(|err| RegistryError::Internal(err.to_string()))
    }

    /// Whether the store answers (readiness): one listing of at most one name.
    pub async fn ready(&self) -> Result<()> {
        Ok(self.metadata.probe().await?)
    }

    /// Whether the node-local index was built completely since it was created; when not, it is
    /// rebuilt with [`Registry::reindex`].
    pub fn index_complete(&self) -> Result<bool> {
        Ok(self.metadata.index_complete()?)
    }

    /// The registry's signing key.
    pub fn signing_key(&self) -> &crate::signing::SigningKey {
        &self.signing
    }

    /// Appends to the audit log; a failure is logged, not returned (the decision stands).
    pub async fn record_audit(&self, kind: &str, actor: &str, repo: &RepoName, digest: &Digest, detail: serde_json::Value) {
        self.log_audit(kind, actor, repo.to_string(), digest.to_string(), detail).await;
    }

    /// Appends a record about no one repository or digest (a collection pass) to the audit log;
    /// a failure is logged, not returned.
    pub async fn record_audit_event(&self, kind: &str, actor: &str, detail: serde_json::Value) {
        self.log_audit(kind, actor, String::new(), String::new(), detail).await;
    }

    async fn log_audit(&self, kind: &str, actor: &str, repository: String, digest: String, detail: serde_json::Value) {
        let entry = Entry { kind: kind.to_owned(), actor: actor.to_owned(), repository, digest, detail };
        if let Err(err) = self.audit.append(entry.clone()).await {
            tracing::error!(kind, repo = %entry.repository, digest = %entry.digest, error = %err, "cannot append to the audit log");
        }
    }

    /// [`Registry::record_audit`] for a caller that must know whether the record was written.
    pub async fn append_audit(&self, kind: &str, actor: &str, repo: &RepoName, digest: &Digest, detail: serde_json::Value) -> Result<()> {
        let entry = Entry {
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            repository: repo.to_string(),
            digest: digest.to_string(),
            detail,
        };
        self.audit.append(entry).await.map_err(|err| RegistryError::Internal(err.to_string()))?;
        Ok(())
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Replaces policy, trust and access rules with those of `new` (SIGHUP). Settings that need
    /// a restart (listen address, storage, index, whether TLS and client certificates are on) must
    /// be unchanged; otherwise the old configuration stays. Failed-login counts and a generated
    /// token key survive the reload.
    pub fn reload(&self, new: Config) -> Result<(), ConfigureError> {
        let current = self.config();
        if new.listen != current.listen || new.storage != current.storage || new.index_dir != current.index_dir {
            return Err(ConfigureError::StorageChanged);
        }
        let listener_tls = |config: &Config| config.tls.as_ref().map(|tls| (tls.client_auth, tls.client_ca.clone()));
        if listener_tls(&new) != listener_tls(&current) {
            return Err(ConfigureError::ListenerTlsChanged);
        }
        let trust = verdicts::load_trust(&new.trust)?;
        self.proxy.configure(&new.upstreams, &|name| std::env::var(name).ok()).map_err(ConfigureError::Upstream)?;
        let previous = self.auth();
        let auth = new.auth.clone().map(|auth| Arc::new(crate::auth::Auth::new(Arc::new(auth), previous.as_deref())));
        self.config.store(Arc::new(new));
        self.trust.store(Arc::new(trust));
        self.auth.store(auth);
        self.judge_again();
        Ok(())
    }

    /// Size of a blob in `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if !self.metadata.blob_linked(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        match self.metadata.content_size(digest).await? {
            Some(size) => Ok(size),
            None => Err(self.content_missing(digest, scrub::ContentKind::Blob).await),
        }
    }

    /// Opens a blob of `repo` for streaming, whole or a byte range (end exclusive).
    pub async fn open_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ObjectReader> {
        if !self.metadata.blob_linked(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        match self.metadata.open_content(digest, range).await {
            Ok(Some(reader)) => Ok(reader),
            Ok(None) => Err(self.content_missing(digest, scrub::ContentKind::Blob).await),
            Err(MetadataError::Store(BlobStoreError::RangeNotSatisfiable { size, .. })) => Err(RegistryError::RangeNotSatisfiable { size }),
            Err(err) => Err(err.into()),
        }
    }

    /// Where to send a blob GET instead of streaming it: a presigned URL when the S3 backend is
    /// configured with `redirect_blobs`.
    pub async fn blob_redirect(&self, repo: &RepoName, digest: &Digest) -> Result<Option<String>> {
        let config = self.config();
        let crate::config::StorageConfig::S3(s3) = &config.storage else { return Ok(None) };
        if !s3.redirect_blobs {
            return Ok(None);
        }
        if !self.metadata.blob_linked(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        // A URL to the store is handed out only for content that is there: quarantined content
        // is not (and a URL to nothing would answer the client in S3's words, not the registry's).
        if self.metadata.content_size(digest).await?.is_none() {
            return Err(self.content_missing(digest, scrub::ContentKind::Blob).await);
        }
        Ok(self.metadata.presign_content(digest, s3.presign_expiry).await?)
    }

    /// Removes a blob from `repo`, unless `repo` keeps its content (see [`Registry::protection`]).
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest, actor: &str) -> Result<()> {
        self.deletion_enabled()?;
        if let Some(why) = self.protection(repo) {
            return Err(RegistryError::Denied(format!(
                "blobs of {repo} cannot be deleted: {why}, so its manifests stay pullable whole"
            )));
        }
        if !self.metadata.blob_linked(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        self.metadata.unlink_blob(repo, digest).await?;
        self.record_audit("delete_blob", actor, repo, digest, serde_json::json!({})).await;
        Ok(())
    }

    /// Why `repo` keeps its content, if it does: in a promotion-only namespace, or one whose tags
    /// are immutable or write-once, no blob is deleted, nor evidence while its subject is there.
    pub fn protection(&self, repo: &RepoName) -> Option<String> {
        let config = self.config();
        let ns = config.namespace(repo.as_str())?;
        if ns.promotion_only {
            Some(format!("namespace {:?} is promotion-only", ns.pattern))
        } else if ns.tags != crate::policy::namespaces::TagMode::Mutable {
            Some(format!("namespace {:?} has {} tags", ns.pattern, ns.tags))
        } else {
            None
        }
    }

    /// Cross-repository mount: links the blob into `repo` when `from` has it. Returns whether it did.
    pub async fn mount_blob(&self, repo: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        self.refuse_if_promotion_only(repo, "blobs")?;
        let fence = self.open_fence().await?;
        let from_link = crate::metadata::layout::Key::BlobLink(from, digest);
        if !self.metadata.touch(&from_link, self.touch_age()).await? || self.metadata.content_size(digest).await?.is_none() {
            return Ok(false);
        }
        self.metadata.link_blob(repo, digest).await?;
        let content = crate::metadata::layout::Key::Blob(digest).to_string();
        if !self.close_fence(fence, std::slice::from_ref(&content)).await?.is_empty() {
            // Collected meanwhile: the client uploads it instead.
            self.metadata.unlink_blob(repo, digest).await?;
            return Ok(false);
        }
        Ok(true)
    }

    fn deletion_enabled(&self) -> Result<()> {
        if self.config().registry.delete_enabled {
            Ok(())
        } else {
            Err(RegistryError::Unsupported("deletion is disabled in this registry".to_owned()))
        }
    }

    /// Stores a pushed manifest under `reference` and every tag in `extra_tags`, all or nothing.
    pub async fn push_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        extra_tags: &[Tag],
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PushedManifest> {
        self.refuse_if_promotion_only(repo, "manifests")?;
        if bytes.len() > self.config().registry.max_manifest_bytes {
            return Err(RegistryError::ManifestTooLarge { limit: self.config().registry.max_manifest_bytes });
        }
        let parsed = manifest::parse(content_type, &bytes).map_err(RegistryError::ManifestInvalid)?;
        let digest = Digest::of(&bytes);
        let mut tags: Vec<&Tag> = extra_tags.iter().collect();
        match reference {
            Reference::Digest(expected) if *expected != digest => {
                return Err(RegistryError::DigestMismatch { expected: expected.clone(), actual: digest });
            }
            Reference::Digest(_) => {}
            Reference::Tag(tag) => tags.insert(0, tag),
        }
        self.refuse_upstream_tags(repo, &tags)?;
        // Garbage collection's fence (see `fence`): what was checked is still there once the
        // manifest is, and what a pass removed meanwhile of the push's own objects is written again.
        let needed = needed_keys(repo, &parsed, &digest, &tags);
        for _ in 0..PUSH_ROUNDS {
            let fence = self.open_fence().await?;
            self.check_references(repo, &parsed).await?;
            self.store_manifest(repo, &parsed, &digest, bytes.clone()).await?;
            self.bind_tags(repo, &tags, &digest).await?;
            let missing = self.close_fence(fence, &needed.all()).await?;
            if let Some(target) = needed.targets.iter().find(|(key, _)| missing.contains(key)) {
                return Err(RegistryError::ManifestBlobUnknown(target.1.clone()));
            }
            if missing.is_empty() {
                break;
            }
        }
        // New evidence (a referrer, or under cosign's tag scheme) may change verdicts of digests
        // that run in clusters.
        if parsed.subject.is_some() || tags.iter().any(|tag| tag.cosign_subject().is_some()) {
            self.judge_again();
        }
        Ok(PushedManifest { digest, subject: parsed.subject })
    }

    /// Whether content reaches `repo` only through promotion.
    pub fn promotion_only(&self, repo: &RepoName) -> bool {
        self.config().namespace(repo.as_str()).is_some_and(|ns| ns.promotion_only)
    }

    /// Refuses (with `Denied`) to take `what` into a promotion-only namespace from a client.
    fn refuse_if_promotion_only(&self, repo: &RepoName, what: &str) -> Result<()> {
        match self.config().namespace(repo.as_str()).filter(|ns| ns.promotion_only) {
            Some(ns) => Err(RegistryError::Denied(format!(
                "{repo} is in namespace {:?}, where {what} arrive only through promotion (POST /api/v1/promotions)",
                ns.pattern
            ))),
            None => Ok(()),
        }
    }

    /// Every blob and child manifest that `parsed` references is in `repo` with the size (and,
    /// for children, the media type) its descriptor gives: clients verify by size and digest
    /// together, so a descriptor that lies would make the image unpullable.
    async fn check_references(&self, repo: &RepoName, parsed: &manifest::ParsedManifest) -> Result<()> {
        let required: Vec<&manifest::Descriptor> = parsed.required_blobs().collect();
        for batch in required.chunks(REFERENCE_CHECKS) {
            futures::future::try_join_all(batch.iter().map(|blob| self.check_blob_reference(repo, blob))).await?;
        }
        for child in &parsed.manifests {
            self.metadata.touch(&crate::metadata::layout::Key::ManifestLink(repo, &child.digest), self.touch_age()).await?;
            let link = self.metadata.manifest_link(repo, &child.digest).await?;
            let link = link.ok_or_else(|| RegistryError::ManifestBlobUnknown(child.digest.clone()))?;
            if link.size != child.size || link.media_type != child.media_type {
                return Err(RegistryError::ManifestInvalid(format!(
                    "the descriptor of {} gives a {} of {} bytes, but the manifest is a {} of {} bytes",
                    child.digest, child.media_type, child.size, link.media_type, link.size
                )));
            }
        }
        Ok(())
    }

    async fn check_blob_reference(&self, repo: &RepoName, blob: &manifest::Descriptor) -> Result<()> {
        let link = crate::metadata::layout::Key::BlobLink(repo, &blob.digest);
        let stored = match self.metadata.touch(&link, self.touch_age()).await? {
            true => self.metadata.content_size(&blob.digest).await?,
            false => None,
        };
        match stored {
            None => Err(RegistryError::ManifestBlobUnknown(blob.digest.clone())),
            Some(size) if size != blob.size => Err(RegistryError::SizeInvalid(format!(
                "the descriptor of {} gives {} bytes, but the blob has {}",
                blob.digest, blob.size, size
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Stores validated manifest bytes and links them into `repo` with their referrer and parent
    /// links. The content is durable before anything points at it; tags are the caller's, last.
    /// A digest keeps the media type it was first stored with, everywhere.
    async fn store_manifest(&self, repo: &RepoName, parsed: &manifest::ParsedManifest, digest: &Digest, bytes: Bytes) -> Result<()> {
        let settled = self.metadata.settle_manifest_type(digest, parsed.media_type).await?;
        let linked = self.metadata.manifest_link(repo, digest).await?;
        let other_type = std::iter::once(settled.media_type).chain(linked.map(|link| link.media_type)).find(|t| t != parsed.media_type);
        if let Some(stored_as) = other_type {
            return Err(RegistryError::ManifestInvalid(format!(
                "{digest} is stored as a {stored_as}; refusing to store the same bytes as a {}",
                parsed.media_type
            )));
        }
        let size = bytes.len() as u64;
        self.metadata.store_content(digest, bytes).await?;
        let runnable = self.runnable(parsed).await?;
        self.metadata.put_summary(digest, &parsed.summary(runnable))?;
        let link = ManifestLink { media_type: parsed.media_type.to_owned(), size, pushed: Some(verdicts::now_secs()) };
        self.metadata.link_manifest(repo, digest, &link).await?;
        if let Some(subject) = &parsed.subject {
            let descriptor = parsed.referrer_descriptor(digest, size);
            self.metadata.add_referrer(repo, subject, digest, &descriptor).await?;
        }
        for child in &parsed.manifests {
            self.metadata.add_parent(repo, &child.digest, digest).await?;
        }
        Ok(())
    }

    /// Whether a container runtime could run the manifest. Layer types decide first (see
    /// `manifest::ParsedManifest::inert_layers`); a manifest whose layer types are inert is inert
    /// only if those layers hold JSON, which no tar or gzip archive is, so that a runtime that
    /// ignores layer types cannot be handed a filesystem under an evidence name. Reading is
    /// bounded per layer and in total; beyond the bounds the manifest counts as runnable (judged).
    async fn runnable(&self, parsed: &manifest::ParsedManifest) -> Result<bool> {
        let Some(layers) = &parsed.inert_layers else { return Ok(true) };
        let mut checked = std::collections::HashSet::new();
        let mut budget = MAX_INERT_BYTES;
        for layer in layers.iter().filter(|layer| checked.insert(*layer)) {
            let bytes = match self.metadata.read_content(layer, MAX_INERT_LAYER_BYTES.min(budget)).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) | Err(MetadataError::Store(BlobStoreError::TooLarge { .. })) => return Ok(true),
                Err(err) => return Err(err.into()),
            };
            budget -= bytes.len();
            if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Resolves a reference in `repo` to a manifest digest (a proxied repository's tag as its
    /// upstream has it, see `proxied`).
    pub async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        Ok(self.resolve_served(repo, reference).await?.0)
    }

    /// [`Registry::resolve`], with the warning a proxied tag is served with, if any.
    async fn resolve_served(&self, repo: &RepoName, reference: &Reference) -> Result<(Digest, Option<String>)> {
        match (reference, self.proxy.mapped(repo)) {
            (Reference::Tag(tag), Some(mapped)) => self.resolve_upstream_tag(&mapped, repo, tag).await,
            _ => Ok((self.resolve_local(repo, reference).await?, None)),
        }
    }

    async fn resolve_local(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        match reference {
            Reference::Digest(digest) => Ok(digest.clone()),
            Reference::Tag(tag) => {
                let stored = self.cached.tag(repo, tag).await?;
                let record = stored.ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}:{tag}")))?.record;
                record.digest.parse().map_err(|_| RegistryError::Internal(format!("tag {repo}:{tag} holds {:?}", record.digest)))
            }
        }
    }

    /// The revision of `digest` in `repo` (media type, size, when it was stored there), without
    /// its bytes; `None` when `repo` does not have it.
    pub async fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestLink>> {
        Ok(self.metadata.manifest_link(repo, digest).await?)
    }

    /// The manifest `reference` names in `repo`, with its bytes. In a proxied repository it is
    /// fetched from the upstream when missing, and in a gated one its evidence too.
    pub async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<StoredManifest> {
        let (digest, warning) = self.resolve_served(repo, reference).await?;
        if let Some(mapped) = self.proxy.mapped(repo) {
            match self.metadata.manifest_link(repo, &digest).await? {
                Some(_) => self.proxy.hit(&mapped.upstream, "manifest"),
                None => self.fetch_upstream_manifest(&mapped, repo, &digest).await?,
            }
            self.touch_proxied(&mapped, repo, &digest).await?;
            if self.config().namespace(repo.as_str()).is_some_and(|ns| ns.gate.is_some()) {
                self.refresh_upstream_evidence(&mapped, repo, &digest).await;
            }
        }
        let stored = self.stored_manifest(repo, &digest).await?;
        let stored = stored.ok_or_else(|| RegistryError::ManifestUnknown(format!("{repo}@{digest}")))?;
        Ok(StoredManifest { warning, ..stored })
    }

    /// Notes that a client pulled the manifest `digest` from `repo` (a `GET` that was answered, by
    /// tag or by digest), for retention's `not_pulled`: written to the store in the background at
    /// most once an hour per digest (see `metadata::pulls`). A failed write is logged, never the
    /// pull's failure.
    pub fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        let interval = crate::metadata::pulls::WRITE_INTERVAL;
        if !self.pulls.note(repo, digest, crate::metadata::pulls::epoch_millis(), interval) {
            return;
        }
        let (metadata, repo, digest) = (self.metadata.clone(), repo.clone(), digest.clone());
        tokio::spawn(async move {
            if let Err(err) = metadata.record_pull(&repo, &digest).await {
                tracing::warn!(repo = %repo, digest = %digest, error = %err, "cannot record a pull");
            }
        });
    }

    /// The manifest `digest` as `repo` holds it now, `None` when it does not: never fetched from
    /// an upstream nor counted as a pull (the console reads with this; looking is not pulling).
    pub async fn stored_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>> {
        let Some(link) = self.cached.manifest_link(repo, digest).await? else { return Ok(None) };
        let bytes = self.cached.read_content(digest, self.config().registry.max_manifest_bytes).await?;
        let Some(bytes) = bytes else {
            return match self.content_missing(digest, scrub::ContentKind::Manifest).await {
                err @ RegistryError::Quarantined { .. } => Err(err),
                _ => Ok(None),
            };
        };
        // Manifests are small and read whole: each is verified before it is served, and one
        // whose bytes do not match is quarantined at once.
        let actual = Digest::of(&bytes);
        if actual != *digest {
            if let Some(meta) = self.metadata.stat_key(&crate::metadata::layout::Key::Blob(digest)).await? {
                self.corrupt_found(digest, &meta, actual, "read").await?;
            }
            return Err(RegistryError::Quarantined { digest: digest.clone(), kind: scrub::ContentKind::Manifest });
        }
        Ok(Some(StoredManifest { digest: digest.clone(), media_type: link.media_type, bytes, warning: None }))
    }

    /// Deletes a tag, or a manifest revision with every tag pointing to it, as tag rules and the
    /// namespace's protection allow; every delete is an audit record.
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference, actor: &str) -> Result<()> {
        self.deletion_enabled()?;
        let digest = match reference {
            Reference::Tag(tag) => {
                let digest = self.delete_tag(repo, tag).await?;
                self.record_audit("delete_tag", actor, repo, &digest, serde_json::json!({ "tag": tag.as_str() })).await;
                return Ok(());
            }
            Reference::Digest(digest) => digest,
        };
        if self.metadata.manifest_link(repo, digest).await?.is_none() {
            return Err(RegistryError::ManifestUnknown(format!("{repo}@{digest}")));
        }
        let tags = self.tags_pointing_to(repo, digest).await?;
        if let Some(tag) = tags.iter().find(|tag| self.tag_rule(repo, tag).mode == crate::policy::namespaces::TagMode::Immutable) {
            return Err(RegistryError::Denied(format!(
                "{repo}@{digest} is tagged {tag}, which is immutable ({}); it cannot be deleted while tagged",
                self.tag_rule(repo, tag).source()
            )));
        }
        let summary = self.summary(digest).await?;
        let subject = summary.subject.as_deref().and_then(|s| s.parse::<Digest>().ok());
        if let Some(subject) = subject.as_ref().filter(|_| !summary.runnable) {
            self.refuse_evidence_delete(repo, subject, &format!("{repo}@{digest}")).await?;
        }
        for tag in &tags {
            self.delete_tag(repo, tag).await?;
        }
        if let Some(subject) = &subject {
            self.metadata.remove_referrer(repo, subject, digest).await?;
        }
        for child in summary.manifests.iter().filter_map(|c| c.parse::<Digest>().ok()) {
            self.metadata.remove_parent(repo, &child, digest).await?;
        }
        self.metadata.unlink_manifest(repo, digest).await?;
        let tags: Vec<&str> = tags.iter().map(Tag::as_str).collect();
        self.record_audit("delete_manifest", actor, repo, digest, serde_json::json!({ "tags": tags })).await;
        Ok(())
    }

    /// Refuses to delete `what`, evidence about `subject`, while `subject` is in a protected `repo`:
    /// its gate would fail, or pass on less than what was promoted.
    async fn refuse_evidence_delete(&self, repo: &RepoName, subject: &Digest, what: &str) -> Result<()> {
        let Some(why) = self.protection(repo) else { return Ok(()) };
        if self.metadata.manifest_link(repo, subject).await?.is_none() {
            return Ok(());
        }
        Err(RegistryError::Denied(format!(
            "{what} is evidence about {repo}@{subject}, which is still there; {why}, so evidence stays while its subject does"
        )))
    }

    /// The content summary of a stored manifest, from the index or computed from its bytes and
    /// the media type it is stored as.
    pub async fn summary(&self, digest: &Digest) -> Result<ManifestSummary> {
        if let Some(summary) = self.metadata.summary(digest)? {
            return Ok(summary);
        }
        let bytes = self.metadata.read_content(digest, self.config().registry.max_manifest_bytes).await?;
        let bytes = bytes.ok_or_else(|| RegistryError::ManifestUnknown(digest.to_string()))?;
        // Manifests stored before types were recorded name their type in the document or by their
        // shape, which the parser checks is unambiguous.
        let stored_type = self.metadata.manifest_type(digest).await?.map(|record| record.media_type);
        let parsed = match stored_type {
            Some(media_type) => manifest::parse(Some(&media_type), &bytes),
            None => manifest::parse(None, &bytes)
                .or_else(|_| manifest::parse(Some(manifest::OCI_MANIFEST), &bytes))
                .or_else(|_| manifest::parse(Some(manifest::OCI_INDEX), &bytes)),
        };
        let parsed = parsed.map_err(|err| RegistryError::Internal(format!("stored manifest {digest}: {err}")))?;
        let summary = parsed.summary(self.runnable(&parsed).await?);
        self.metadata.put_summary(digest, &summary)?;
        Ok(summary)
    }

    async fn tags_pointing_to(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Tag>> {
        let wanted = digest.to_string();
        let mut found = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.metadata.tags(repo, last.as_deref(), 1000).await?;
            for name in &page.entries {
                let Ok(tag) = name.parse::<Tag>() else { continue };
                if self.metadata.tag(repo, &tag).await?.is_some_and(|stored| stored.record.digest == wanted) {
                    found.push(tag);
                }
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(name)) => last = Some(name.clone()),
                _ => return Ok(found),
            }
        }
    }

    /// A page of tag names of `repo`.
    pub async fn list_tags(&self, repo: &RepoName, last: Option<&str>, limit: usize) -> Result<storage::ListPage> {
        if !self.metadata.repository_exists(repo).await? {
            return Err(RegistryError::NameUnknown(repo.clone()));
        }
        Ok(self.metadata.tags(repo, last, limit).await?)
    }

    /// A page of repository names.
    pub async fn catalog(&self, last: Option<&RepoName>, limit: usize) -> Result<storage::ListPage> {
        Ok(self.metadata.catalog(last, limit).await?)
    }

    /// A page of repository names from the first at or after `prefix` (a seek in the sorted
    /// catalog, so its cost does not grow with the names before it).
    pub async fn catalog_from(&self, prefix: &str, limit: usize) -> Result<storage::ListPage> {
        Ok(self.metadata.catalog_from(prefix, limit).await?)
    }

    /// Referrers of `subject` in `repo`, optionally only those of `artifact_type`.
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Referrers> {
        let mut descriptors = self.metadata.referrers(repo, subject, MAX_REFERRERS).await?;
        if let Some(wanted) = artifact_type {
            descriptors.retain(|d| d.get("artifactType").and_then(|t| t.as_str()) == Some(wanted));
        }
        Ok(Referrers { descriptors, filtered: artifact_type.is_some() })
    }

    /// Rebuilds the node-local index from the store; returns the number of manifests indexed.
    pub async fn reindex(&self) -> Result<usize> {
        self.metadata.clear_index()?;
        let mut n_manifests = 0;
        let mut last_repo: Option<RepoName> = None;
        loop {
            let repos = self.metadata.catalog(last_repo.as_ref(), 1000).await?;
            for name in &repos.entries {
                let Ok(repo) = name.parse::<RepoName>() else { continue };
                n_manifests += self.reindex_repository(&repo).await?;
                last_repo = Some(repo);
            }
            if !repos.truncated {
                break;
            }
        }
        self.metadata.mark_index_complete()?;
        Ok(n_manifests)
    }

    async fn reindex_repository(&self, repo: &RepoName) -> Result<usize> {
        let mut n_manifests = 0;
        let mut last: Option<String> = None;
        loop {
            let page = self.metadata.manifests(repo, last.as_deref(), 1000).await?;
            for hex in &page.entries {
                let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else { continue };
                self.summary(&digest).await?;
                n_manifests += 1;
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(hex)) => last = Some(hex.clone()),
                _ => return Ok(n_manifests),
            }
        }
    }
}
