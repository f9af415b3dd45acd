//! Everything the registry keeps in the object store, and the one place its layout is spelled:
//! content by digest, repository metadata (links, tags, tombstones, referrer and parent links,
//! the catalog, when manifests were last pulled), manifest types, upload sessions, promotion records, the audit log, the
//! generated signing key, the proxy's records of upstream tags and proxied content, and what
//! Kubernetes admission remembers (admitted workloads, drift rows), and the content scrub
//! quarantined, each behind a typed accessor;
//! plus a node-local sled index that can be
//! deleted and rebuilt at any time. Nothing outside this module builds a key ([`layout`] does).
//!
//! Below the store root (`data_dir/store/objects/` on the filesystem, `prefix/` in a bucket):
//! ```text
//! blobs/sha256/<2 hex>/<64 hex>                          blob and manifest bytes, by content
//! repositories/<name>/_blobs/sha256/<hex>                blob visible in the repository (empty)
//! repositories/<name>/_manifests/sha256/<hex>            manifest revision {"mediaType","size","pushed"}
//! repositories/<name>/_tags/<tag>                        {"digest"}
//! repositories/<name>/_tombstones/<tag>                  {"digest"} of a deleted write-once tag
//! repositories/<name>/_referrers/sha256/<subject>/<hex>  descriptor as listed by the Referrers API
//! repositories/<name>/_parents/sha256/<child>/<parent>   an index in the repository lists the child (empty)
//! repositories/<name>/_upstream_tags/<tag>               {"digest","checked","confirmed","failing","pending"} the upstream's tag as last checked
//! repositories/<name>/_proxied/sha256/<hex>              {"upstream","size","fetched","pulled"} proxied content: from where, when
//! repositories/<name>/_pulled/sha256/<hex>               a manifest pulled here (empty; its time of writing is the last pull, to within an hour)
//! types/sha256/<hex>                                     {"mediaType"} a manifest digest is stored as, create-only
//! catalog/<hex name in 200-char segments>/-              the repository exists (empty; hex keeps name order)
//! promotions/<target>/_records/<hex>                     the promotion record of a digest
//! audit/records/<seq, 20 digits>                         audit record, hash-chained, create-only
//! audit/head                                             {"seq","hash"} of the last audit record, a hint
//! keys/vsa-signing-key.pem                               generated verification-summary key, create-only
//! uploads/<uuid>                                         upload session {"repo","started"}
//! leases/<name>                                          {"holder","since"} held by one process (gc, scrub), renewed with If-Match
//! gc/sweep                                               {"pass","digits"} a collection pass is removing what gc/doomed/ lists
//! gc/doomed/<hex prefix>                                 {"pass","victims"} objects a pass is about to remove, by sha256 of their keys
//! admissions/<hex cluster>/<namespace>/<kind>/<name>    a workload admitted with this registry's images {"workload","images","since"}
//! drift/<name>/_digests/<hex>                            an admitted digest whose verdict turned to failing {"summary","workloads",...}
//! quarantine/sha256/<hex>                                content whose bytes did not hash to its digest, moved aside by scrub (the bytes)
//! ```
//! A tombstone is written before its tag is deleted, so that the name stays bound to its digest.
//! A referrer link is the referrer's descriptor as the Referrers API returns it. The first media
//! type a digest is stored with is its type, in every repository, forever. Repository components
//! never start with `_` (see `names`), so the registry's segments cannot collide with a
//! repository's own path. Admission records and drift rows are not walked by `fsck`: a workload's
//! record is written again when it is next admitted, and drift rows are recomputed by every walk.
//!
//! Every object is checked as it is read, so a damaged one is an error (a 500 to a client), never
//! a malformed answer; [`Object`] reads a key back and checks what is stored under it, for
//! `portcullis fsck`.
//!
//! The sled index holds what is derived from immutable content: the [`ManifestSummary`] of each
//! manifest digest. This module is the only one that imports sled.

pub mod admissions;
pub mod audit;
mod blobs;
pub mod cache;
pub mod fence;
mod index;
pub mod layout;
pub mod lifecycle;
mod promotions;
mod proxied;
pub mod pulls;
mod quarantine;
mod signing_key;
mod uploads;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use storage::{BlobStore, BlobStoreError, Digest, ETag, ListPage, PutCondition};

use crate::names::{RepoName, Tag};
use layout::{Key, Prefix};
pub use layout::Object;
pub use promotions::{LeftBehind, Linked, PromotionRecord, PromotionResult};
pub use proxied::{ProxiedRecord, UpstreamTagRecord};
pub use uploads::UploadRecord;

/// Largest small metadata object read (links, tags, descriptors, sessions).
const SMALL_LIMIT: usize = 64 << 10;

/// Metadata over the store, with the node-local index.
#[derive(Clone)]
pub struct Metadata {
    /// The store, through [`cache::Forgetting`]: every write forgets what it changes.
    store: Arc<dyn BlobStore>,
    index: index::Index,
    cache: Arc<cache::ReadCache>,
    /// Whether tags, manifest links, content and referrer listings are read through `cache`
    /// ([`Metadata::cached`]).
    cached_reads: bool,
}

/// A manifest revision in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestLink {
    /// The media type it was pushed with (its `Content-Type` on pull). Checked to be one when
    /// read, so a damaged link cannot put anything else into a response header.
    #[serde(rename = "mediaType", deserialize_with = "media_type")]
    pub media_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// When it was last stored in the repository (pushed or promoted), seconds since the Unix
    /// epoch; absent in links written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<i64>,
}

/// What a tag holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The manifest the tag points to; checked to be a digest when read.
    #[serde(deserialize_with = "parses_as::<Digest, _>")]
    pub digest: String,
}

/// A tag as read, with the version needed to change it conditionally.
#[derive(Debug, Clone)]
pub struct StoredTag {
    /// The tag's content.
    pub record: TagRecord,
    /// The version of the tag object.
    pub etag: ETag,
}

/// What the registry needs to know of a manifest's content, derived from its bytes alone, so it
/// never goes stale and can be cached on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSummary {
    /// The manifest's media type.
    pub media_type: String,
    /// The `subject` it refers to, if any (OCI 1.1 referrers).
    pub subject: Option<String>,
    /// Digests of the manifests an index lists.
    pub manifests: Vec<String>,
    /// Digests of the blobs an image manifest references (config and layers).
    pub blobs: Vec<String>,
    /// Whether a container runtime could run it (the evidence rule of ARCHITECTURE.md). What is
    /// not runnable (signatures, attestations, SBOMs) stays pullable in gated namespaces so that
    /// clients can verify it; everything runnable there needs a passing verdict.
    pub runnable: bool,
}

/// The media type a manifest digest is stored as, everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestType {
    /// The media type of its first push.
    #[serde(rename = "mediaType")]
    pub media_type: String,
}

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] BlobStoreError),
    /// The node-local index failed.
    #[error("index: {0}")]
    Index(String),
    /// A metadata object does not parse: the store was edited or damaged.
    #[error("corrupt metadata object {key}: {message}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// The parser's message.
        message: String,
    },
}

type Result<T, E = MetadataError> = std::result::Result<T, E>;

/// Whether `value` is a media type without parameters (RFC 6838 4.2: `type/subtype`, each a
/// restricted name), which is also a valid header value.
pub fn is_media_type(value: &str) -> bool {
    let restricted_name = |name: &str| {
        let mut bytes = name.bytes();
        bytes.next().is_some_and(|first| first.is_ascii_alphanumeric())
            && name.len() <= 127
            && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value.split_once('/').is_some_and(|(type_name, subtype)| restricted_name(type_name) && restricted_name(subtype))
}

/// `deserialize_with` of stored media types.
fn media_type<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let value = String::deserialize(deserializer)?;
    if !is_media_type(&value) {
        return Err(serde::de::Error::custom(format!("{:?} is not a media type", value.chars().take(160).collect::<String>())));
    }
    Ok(value)
}

/// `deserialize_with` of stored strings that must parse as a `T` (a digest, a repository name).
fn parses_as<'de, T, D>(deserializer: D) -> Result<String, D::Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
    D: serde::Deserializer<'de>,
{
    let value = String::deserialize(deserializer)?;
    value.parse::<T>().map_err(serde::de::Error::custom)?;
    Ok(value)
}

/// The parts of a referrer link's descriptor that must hold; the rest (`artifactType`,
/// `annotations`) is listed as stored.
#[derive(Deserialize)]
struct ReferrerDescriptor {
    #[serde(rename = "mediaType", deserialize_with = "media_type")]
    _media_type: String,
    #[serde(deserialize_with = "parses_as::<Digest, _>")]
    digest: String,
    #[serde(rename = "size")]
    _size: u64,
}

/// Decodes the referrer link at `key`, whose last segment is the referrer's hex: a descriptor of
/// that manifest.
fn decode_referrer(key: &str, bytes: &[u8]) -> Result<serde_json::Value> {
    let descriptor: serde_json::Value = decode(key, bytes)?;
    let fields: ReferrerDescriptor = serde_json::from_value(descriptor.clone())
        .map_err(|err| MetadataError::Corrupt { key: key.to_owned(), message: format!("not a descriptor: {err}") })?;
    let named = key.rsplit('/').next().unwrap_or_default();
    if fields.digest.strip_prefix("sha256:") != Some(named) {
        let message = format!("describes {}, not the referrer its key names", fields.digest);
        return Err(MetadataError::Corrupt { key: key.to_owned(), message });
    }
    Ok(descriptor)
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| MetadataError::Corrupt { key: key.to_owned(), message: err.to_string() })
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("metadata records always serialize"))
}

impl Metadata {
    /// Opens the index in `index_dir` (recreating it when corrupt) over `store`.
    pub fn open(store: Arc<dyn BlobStore>, index_dir: &std::path::Path) -> Result<Metadata> {
        let cache = Arc::new(cache::ReadCache::default());
        let store = Arc::new(cache::Forgetting::new(store, cache.clone()));
        Ok(Metadata { index: index::Index::open(index_dir)?, store, cache, cached_reads: false })
    }

    /// The same metadata, reading small objects and the first page of a referrer listing through
    /// the read cache: what this process wrote is seen at once, what another replica wrote within
    /// [`cache::TTL`]. For the pull path; whoever decides a write from what it reads uses `self`.
    pub fn cached(&self) -> Metadata {
        Metadata { cached_reads: true, ..self.clone() }
    }

    async fn get_small(&self, key: &str, limit: usize) -> Result<Option<storage::SmallObject>> {
        Ok(match self.cached_reads {
            true => self.cache.get_small(&*self.store, key, limit).await?,
            false => self.store.get_small(key, limit).await?,
        })
    }

    /// The audit log, in the same store.
    pub fn audit_log(&self) -> audit::AuditLog {
        audit::AuditLog::new(self.store.clone())
    }

    /// Whether the store answers: one listing of at most one name (readiness).
    pub async fn probe(&self) -> Result<()> {
        self.store.list("", None, 1, true).await?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.store.stat(key).await?.is_some())
    }

    async fn read<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        match self.get_small(key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(decode(key, &object.bytes)?)),
            None => Ok(None),
        }
    }

    /// Makes a stored blob visible in `repo`.
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.store.put_small(&Key::BlobLink(repo, digest).to_string(), Bytes::new(), PutCondition::Always).await?;
        self.ensure_repository(repo).await
    }

    /// Whether the blob is visible in `repo`.
    pub async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.exists(&Key::BlobLink(repo, digest).to_string()).await
    }

    /// Removes the blob from `repo` (its bytes stay until garbage collection).
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&Key::BlobLink(repo, digest).to_string()).await?)
    }

    /// Records a manifest revision in `repo`.
    pub async fn link_manifest(&self, repo: &RepoName, digest: &Digest, link: &ManifestLink) -> Result<()> {
        self.store.put_small(&Key::ManifestLink(repo, digest).to_string(), encode(link), PutCondition::Always).await?;
        self.ensure_repository(repo).await
    }

    /// The manifest revision, if `repo` has it.
    pub async fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestLink>> {
        self.read(&Key::ManifestLink(repo, digest).to_string()).await
    }

    /// Removes a manifest revision from `repo`.
    pub async fn unlink_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&Key::ManifestLink(repo, digest).to_string()).await?)
    }

    /// Digests of every manifest revision in `repo`, a page at a time.
    pub async fn manifests(&self, repo: &RepoName, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        Ok(self.store.list(&Prefix::Manifests(repo).to_string(), start_after, limit, true).await?)
    }

    /// The tag, if it exists.
    pub async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<StoredTag>> {
        let key = Key::Tag(repo, tag).to_string();
        match self.get_small(&key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(StoredTag { record: decode(&key, &object.bytes)?, etag: object.etag })),
            None => Ok(None),
        }
    }

    /// Writes the tag under `condition`; `BlobStoreError::PreconditionFailed` when it is not met.
    pub async fn put_tag(&self, repo: &RepoName, tag: &Tag, record: &TagRecord, condition: PutCondition) -> Result<()> {
        let key = Key::Tag(repo, tag).to_string();
        self.store.put_small(&key, encode(record), condition).await?;
        self.ensure_repository(repo).await
    }

    /// Deletes the tag.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        Ok(self.store.delete(&Key::Tag(repo, tag).to_string()).await?)
    }

    /// The tombstone of a deleted write-once tag.
    pub async fn tombstone(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>> {
        self.read(&Key::Tombstone(repo, tag).to_string()).await
    }

    /// Burns a write-once tag name to `record`'s digest.
    pub async fn put_tombstone(&self, repo: &RepoName, tag: &Tag, record: &TagRecord) -> Result<()> {
        self.store.put_small(&Key::Tombstone(repo, tag).to_string(), encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// Tag names of `repo` in byte order after `last`, at most `limit`.
    pub async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: usize) -> Result<ListPage> {
        Ok(self.store.list(&Prefix::Tags(repo).to_string(), last, limit, true).await?)
    }

    /// Records that `referrer` (described by `descriptor`) refers to `subject` in `repo`.
    pub async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &serde_json::Value,
    ) -> Result<()> {
        let key = Key::Referrer { repo, subject, referrer }.to_string();
        self.store.put_small(&key, encode(descriptor), PutCondition::Always).await?;
        Ok(())
    }

    /// Removes a referrer link.
    pub async fn remove_referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<()> {
        let key = Key::Referrer { repo, subject, referrer }.to_string();
        Ok(self.store.delete(&key).await?)
    }

    /// The descriptor of one referrer link, `None` when `referrer` does not refer to `subject` in `repo`.
    pub async fn referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<Option<serde_json::Value>> {
        self.read(&Key::Referrer { repo, subject, referrer }.to_string()).await
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`, at most `limit`.
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, limit: usize) -> Result<Vec<serde_json::Value>> {
        let prefix = Prefix::Referrers(repo, subject).to_string();
        let mut descriptors = Vec::new();
        for name in self.referrer_names(&prefix, limit).await? {
            // A link deleted between listing and reading is skipped, not an error.
            let key = format!("{prefix}{name}");
            if let Some(object) = self.store.get_small(&key, SMALL_LIMIT).await? {
                descriptors.push(decode_referrer(&key, &object.bytes)?);
            }
        }
        Ok(descriptors)
    }

    /// Digest hex of the manifests in `repo` whose subject is `subject`, at most `limit`, as
    /// listed: nothing is read or parsed (a gated pull asks this on every request).
    pub async fn referrer_hexes(&self, repo: &RepoName, subject: &Digest, limit: usize) -> Result<Vec<String>> {
        self.referrer_names(&Prefix::Referrers(repo, subject).to_string(), limit).await
    }

    /// Names (digest hex) of the referrer links below `prefix`, at most `limit`. Pages are as large
    /// as the rest of `limit` (the filesystem reads the whole directory for each page; S3 serves
    /// at most 1000 names a page whatever is asked).
    async fn referrer_names(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = match (&last, self.cached_reads) {
                (None, true) => self.cache.list_first(&*self.store, prefix, limit).await?,
                _ => self.store.list(prefix, last.as_deref(), limit - names.len(), true).await?,
            };
            let truncated = page.truncated;
            last = page.entries.last().cloned();
            names.extend(page.entries.into_iter().take(limit - names.len()));
            if names.len() >= limit || !truncated || last.is_none() {
                return Ok(names);
            }
        }
    }

    /// Records that the index `parent` in `repo` lists `child`.
    pub async fn add_parent(&self, repo: &RepoName, child: &Digest, parent: &Digest) -> Result<()> {
        let key = Key::Parent { repo, child, parent }.to_string();
        self.store.put_small(&key, Bytes::new(), PutCondition::Always).await?;
        Ok(())
    }

    /// Forgets that `parent` lists `child`.
    pub async fn remove_parent(&self, repo: &RepoName, child: &Digest, parent: &Digest) -> Result<()> {
        Ok(self.store.delete(&Key::Parent { repo, child, parent }.to_string()).await?)
    }

    /// Indexes in `repo` that list `child`, at most `limit`.
    pub async fn parents(&self, repo: &RepoName, child: &Digest, limit: usize) -> Result<Vec<Digest>> {
        let page = self.store.list(&Prefix::Parents(repo, child).to_string(), None, limit, true).await?;
        Ok(page.entries.iter().filter_map(|hex| layout::digest_of_hex(hex)).collect())
    }

    /// Marks `repo` as existing, for the catalog.
    pub async fn ensure_repository(&self, repo: &RepoName) -> Result<()> {
        let key = Key::Catalog(repo).to_string();
        if !self.exists(&key).await? {
            self.store.put_small(&key, Bytes::new(), PutCondition::Always).await?;
        }
        Ok(())
    }

    /// Whether anything was ever pushed to `repo`.
    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        self.exists(&Key::Catalog(repo).to_string()).await
    }

    /// Repository names in byte order after `last`, at most `limit`.
    pub async fn catalog(&self, last: Option<&RepoName>, limit: usize) -> Result<ListPage> {
        let start_after = last.map(layout::catalog_entry);
        let page = self.store.list(&Prefix::Catalog.to_string(), start_after.as_deref(), limit, false).await?;
        let entries = page.entries.iter().filter_map(|entry| layout::catalog_name(entry)).collect();
        Ok(ListPage { entries, truncated: page.truncated })
    }

    /// Repository names in byte order from the first at or after `prefix`, at most `limit`.
    pub async fn catalog_from(&self, prefix: &str, limit: usize) -> Result<ListPage> {
        let start_after = layout::catalog_seek(prefix);
        let page = self.store.list(&Prefix::Catalog.to_string(), Some(&start_after), limit, false).await?;
        let entries = page.entries.iter().filter_map(|entry| layout::catalog_name(entry)).collect();
        Ok(ListPage { entries, truncated: page.truncated })
    }

    /// The media type `digest` was first stored with, recording `media_type` when there is none
    /// yet. Of racing first pushes with different types exactly one type wins.
    pub async fn settle_manifest_type(&self, digest: &Digest, media_type: &str) -> Result<ManifestType> {
        let key = Key::ManifestType(digest).to_string();
        let wanted = ManifestType { media_type: media_type.to_owned() };
        if let Some(settled) = self.read(&key).await? {
            return Ok(settled);
        }
        match self.store.put_small(&key, encode(&wanted), PutCondition::IfAbsent).await {
            Ok(_) => Ok(wanted),
            Err(BlobStoreError::PreconditionFailed(_)) => {
                let settled = self.read(&key).await?;
                settled.ok_or_else(|| MetadataError::Corrupt { key, message: "created and then gone".to_owned() })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The media type `digest` is stored as, if it was pushed since types are recorded.
    pub async fn manifest_type(&self, digest: &Digest) -> Result<Option<ManifestType>> {
        self.read(&Key::ManifestType(digest).to_string()).await
    }

    /// The cached summary of a manifest's content.
    pub fn summary(&self, digest: &Digest) -> Result<Option<ManifestSummary>> {
        self.index.summary(digest)
    }

    /// Caches the summary of a manifest's content.
    pub fn put_summary(&self, digest: &Digest, summary: &ManifestSummary) -> Result<()> {
        self.index.put_summary(digest, summary)
    }

    /// Whether the index was built completely since it was created.
    pub fn index_complete(&self) -> Result<bool> {
        self.index.complete()
    }

    /// Marks the index as completely built.
    pub fn mark_index_complete(&self) -> Result<()> {
        self.index.mark_complete()
    }

    /// Empties the index.
    pub fn clear_index(&self) -> Result<()> {
        self.index.clear()
    }
}

impl Object {
    /// Reads the object from `store` and checks it as every read does: `None` when it is not
    /// there (any more), else the keys of the objects it points to, which must exist for it to
    /// mean anything. `Corrupt` when it is not what the registry writes under its key.
    pub async fn check(&self, store: &dyn BlobStore) -> Result<Option<Vec<String>>> {
        let key = self.key();
        let (limit, what) = match self {
            Object::PromotionRecord { .. } => (promotions::MAX_RECORD, "promotion record"),
            _ => (SMALL_LIMIT, "metadata object"),
        };
        let bytes = match store.get_small(&key, limit).await {
            Ok(Some(object)) => object.bytes,
            Ok(None) => return Ok(None),
            Err(BlobStoreError::TooLarge { limit, .. }) => {
                return Err(MetadataError::Corrupt { key, message: format!("larger than any {what} ({limit} bytes)") });
            }
            Err(err) => return Err(err.into()),
        };
        let pointers = match self {
            // Their presence is what they say.
            Object::Catalog(_) => Vec::new(),
            Object::BlobLink(_, digest) => vec![Key::Blob(digest).to_string()],
            Object::ManifestLink(_, digest) => {
                decode::<ManifestLink>(&key, &bytes)?;
                vec![Key::Blob(digest).to_string()]
            }
            Object::Tag(repo, _) => {
                let record: TagRecord = decode(&key, &bytes)?;
                // Decoding checked that it is a digest.
                record.digest.parse().map(|digest| vec![Key::ManifestLink(repo, &digest).to_string()]).unwrap_or_default()
            }
            // A tombstone remembers a digest whose manifest may be long gone.
            Object::Tombstone(..) => {
                decode::<TagRecord>(&key, &bytes)?;
                Vec::new()
            }
            Object::Referrer { repo, referrer, .. } => {
                decode_referrer(&key, &bytes)?;
                vec![Key::ManifestLink(repo, referrer).to_string()]
            }
            Object::Parent { repo, parent, .. } => vec![Key::ManifestLink(repo, parent).to_string()],
            Object::Upload(_) => {
                decode::<UploadRecord>(&key, &bytes)?;
                Vec::new()
            }
            Object::PromotionRecord { target, digest } => {
                promotions::check(&key, &bytes, target, digest)?;
                Vec::new()
            }
            // The last digest seen upstream may never have been fetched (a tag held back).
            Object::UpstreamTag(..) => {
                decode::<UpstreamTagRecord>(&key, &bytes)?;
                Vec::new()
            }
            Object::Proxied(_, digest) => {
                decode::<ProxiedRecord>(&key, &bytes)?;
                vec![Key::Blob(digest).to_string()]
            }
            // A pull record outlives a manifest deleted after it (the next collection removes it).
            Object::Pulled(..) => Vec::new(),
        };
        Ok(Some(pointers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for ok in ["application/vnd.oci.image.manifest.v1+json", "text/plain", "a/b"] {
            assert!(is_media_type(ok), "{ok:?}");
        }
        let long = format!("application/{}", "x".repeat(128));
        for bad in ["", "application", "application/", "/json", "a/b/c", "application/json; charset=utf-8", "text/plain\nX-Injected: 1", "text/pl\u{e9}in", &long] {
            assert!(!is_media_type(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn objects_are_checked_as_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = storage::FsBlobStore::open(dir.path()).await.unwrap();
        let repo: RepoName = "a".parse().unwrap();
        let digest = Digest::of(b"manifest");
        let link = Object::ManifestLink(repo.clone(), digest.clone());
        let referrer = Object::Referrer { repo: repo.clone(), subject: Digest::of(b"subject"), referrer: digest.clone() };
        let tag = Object::Tag(repo.clone(), "v1".parse().unwrap());
        let upload = Object::Upload("0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11".into());
        let descriptor = format!(r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":3,"artifactType":"x/y"}}"#);
        let other = Digest::of(b"other");
        let huge = format!(r#"{{"digest":"{digest}","pad":"{}"}}"#, " ".repeat(SMALL_LIMIT));
        let target: RepoName = "prod/a".parse().unwrap();
        let promotion = Object::PromotionRecord { target: target.clone(), digest: digest.clone() };
        let record = |target: &RepoName, digest: &Digest| {
            let record = PromotionRecord {
                source: "a:v1".into(),
                digest: digest.to_string(),
                target: target.to_string(),
                tags: vec!["v1".into()],
                result: PromotionResult::Promoted,
                actor: "ci".into(),
                time: 1,
                verdict: None,
                vsa: None,
                vsa_skipped: None,
                linked: Linked::default(),
                left_behind: Vec::new(),
            };
            serde_json::to_string(&record).unwrap()
        };
        // The keys it points to, or the start of why it is corrupt.
        type Expected = Result<Vec<String>, &'static str>;
        // (object, stored bytes, expected)
        let cases: Vec<(&Object, String, Expected)> = vec![
            (&link, r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":3}"#.into(), Ok(vec![Key::Blob(&digest).to_string()])),
            (&link, r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json\nX-Injected: 1","size":3}"#.into(), Err("\"application/vnd.oci.image.manifest.v1+json\\nX-Injected: 1\" is not a media type")),
            (&link, r#"{"mediaType":"applic"#.into(), Err("EOF while parsing")),
            (&link, r#"{"size":3}"#.into(), Err("missing field `mediaType`")),
            (&tag, format!(r#"{{"digest":"{digest}"}}"#), Ok(vec![Key::ManifestLink(&repo, &digest).to_string()])),
            (&tag, r#"{"digest":"sha256:xyz"}"#.into(), Err("invalid digest")),
            (&tag, r#"{"digest":"#.into(), Err("EOF while parsing")),
            (&tag, huge, Err("larger than any metadata object")),
            (&referrer, descriptor.clone(), Ok(vec![Key::ManifestLink(&repo, &digest).to_string()])),
            (&referrer, descriptor.replace(&digest.to_string(), &other.to_string()), Err("describes sha256:")),
            (&referrer, "[]".into(), Err("not a descriptor")),
            (&upload, r#"{"repo":"a","started":1}"#.into(), Ok(Vec::new())),
            (&upload, r#"{"repo":"../a","started":1}"#.into(), Err("invalid repository name")),
            (&promotion, record(&target, &digest), Ok(Vec::new())),
            (&promotion, record(&repo, &digest), Err("records the promotion of sha256:")),
            (&promotion, record(&target, &other), Err("records the promotion of sha256:")),
            (&promotion, r#"{"source":"a:v1"}"#.into(), Err("not a promotion record: missing field")),
            (&promotion, format!(r#"{{"pad":"{}"}}"#, " ".repeat(promotions::MAX_RECORD)), Err("larger than any promotion record")),
        ];
        for (object, bytes, expected) in cases {
            let key = object.key();
            store.put_small(&key, Bytes::from(bytes.clone()), PutCondition::Always).await.unwrap();
            match (object.check(&store).await, expected) {
                (Ok(Some(pointers)), Ok(expected)) => assert_eq!(pointers, expected, "{bytes}"),
                (Err(MetadataError::Corrupt { key: corrupt_key, message }), Err(expected)) => {
                    assert_eq!(corrupt_key, key);
                    assert!(message.starts_with(expected), "{bytes}: {message}");
                }
                (got, expected) => panic!("{bytes}: got {got:?}, expected {expected:?}"),
            }
        }
        store.delete(&tag.key()).await.unwrap();
        assert!(tag.check(&store).await.unwrap().is_none(), "an object that is gone is not corrupt");
    }
}
