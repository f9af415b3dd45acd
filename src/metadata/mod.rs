//! Repository metadata: blob and manifest links, tags, referrer links and the catalog, kept as
//! small objects in the store (the truth), plus a node-local sled index that can be deleted and
//! rebuilt at any time.
//!
//! Keys (all below the store root):
//! - `repositories/<name>/_blobs/sha256/<hex>`: the blob is visible in the repository.
//! - `repositories/<name>/_manifests/sha256/<hex>`: a manifest revision, JSON [`ManifestLink`].
//! - `repositories/<name>/_tags/<tag>`: JSON [`TagRecord`].
//! - `repositories/<name>/_tombstones/<tag>`: JSON [`TagRecord`] of a deleted write-once tag,
//!   written before the tag is deleted so that the name stays bound to its digest.
//! - `repositories/<name>/_referrers/sha256/<subject hex>/<referrer hex>`: the referrer's
//!   descriptor, JSON, as the Referrers API returns it.
//! - `repositories/<name>/_parents/sha256/<child hex>/<parent hex>`: empty; the index `parent`
//!   in the repository lists the manifest `child`.
//! - `catalog/<hex of name, in 200-character segments>/-`: the repository exists. Hex keeps the
//!   byte order of names (`a` < `a-b` < `a/b`, which `/`-separated keys would not), the segments
//!   keep file names short, and the final `-` sorts before any hex digit so a name comes before
//!   the longer names it prefixes.
//! - `types/sha256/<hex>`: JSON [`ManifestType`], the media type a manifest digest was first
//!   stored with, written create-only: one digest is one type, in every repository, forever.
//! - `uploads/<id>`: an upload session, JSON [`UploadRecord`].
//!
//! Repository components never start with `_` (see `registry::names`), so these keys cannot
//! collide with a repository's own path. [`Object`] reads a key back and checks what is stored
//! under it (for `portcullis fsck`); every object is checked on its way in too, when it is read,
//! so a damaged one is an error (a 500 to a client), never a malformed answer.
//!
//! The sled index holds what is derived from immutable content: the [`ManifestSummary`] of each
//! manifest digest. This module is the only one that imports sled.

mod index;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use storage::{BlobStore, BlobStoreError, Digest, ETag, ListPage, PutCondition};

use crate::registry::names::{RepoName, Tag, UploadId};

/// Largest small metadata object read (links, tags, descriptors, sessions).
const SMALL_LIMIT: usize = 64 << 10;

/// Metadata over the store, with the node-local index.
#[derive(Clone)]
pub struct Metadata {
    store: Arc<dyn BlobStore>,
    index: index::Index,
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

/// An upload session as kept in the store, so any node can continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The repository the upload belongs to; checked to be a repository name when read.
    #[serde(deserialize_with = "parses_as::<RepoName, _>")]
    pub repo: String,
    /// Seconds since the Unix epoch when it started.
    pub started: u64,
}

/// A metadata object, known by its key (see the module doc for the layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// `catalog/...`: the repository exists.
    Catalog(RepoName),
    /// `repositories/<name>/_blobs/sha256/<hex>`
    BlobLink(RepoName, Digest),
    /// `repositories/<name>/_manifests/sha256/<hex>`
    ManifestLink(RepoName, Digest),
    /// `repositories/<name>/_tags/<tag>`
    Tag(RepoName, Tag),
    /// `repositories/<name>/_tombstones/<tag>`
    Tombstone(RepoName, Tag),
    /// `repositories/<name>/_referrers/sha256/<subject>/<referrer>`
    Referrer {
        /// The repository.
        repo: RepoName,
        /// The manifest referred to.
        subject: Digest,
        /// The manifest that refers to it.
        referrer: Digest,
    },
    /// `repositories/<name>/_parents/sha256/<child>/<parent>`
    Parent {
        /// The repository.
        repo: RepoName,
        /// The manifest listed.
        child: Digest,
        /// The index that lists it.
        parent: Digest,
    },
    /// `uploads/<id>`
    Upload(String),
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

fn repo_key(repo: &RepoName, rest: &str) -> String {
    format!("repositories/{repo}/{rest}")
}

fn blob_link_key(repo: &RepoName, digest: &Digest) -> String {
    repo_key(repo, &format!("_blobs/sha256/{}", digest.hex()))
}

fn manifest_link_key(repo: &RepoName, digest: &Digest) -> String {
    repo_key(repo, &format!("_manifests/sha256/{}", digest.hex()))
}

fn tags_prefix(repo: &RepoName) -> String {
    repo_key(repo, "_tags/")
}

fn tag_key(repo: &RepoName, tag: &Tag) -> String {
    format!("{}{tag}", tags_prefix(repo))
}

fn tombstone_key(repo: &RepoName, tag: &Tag) -> String {
    repo_key(repo, &format!("_tombstones/{tag}"))
}

fn referrers_prefix(repo: &RepoName, subject: &Digest) -> String {
    repo_key(repo, &format!("_referrers/sha256/{}/", subject.hex()))
}

fn referrer_key(repo: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}{}", referrers_prefix(repo, subject), referrer.hex())
}

fn parents_prefix(repo: &RepoName, child: &Digest) -> String {
    repo_key(repo, &format!("_parents/sha256/{}/", child.hex()))
}

fn parent_key(repo: &RepoName, child: &Digest, parent: &Digest) -> String {
    format!("{}{}", parents_prefix(repo, child), parent.hex())
}

const CATALOG: &str = "catalog/";

/// The catalog key of `repo`, relative to `catalog/`.
fn catalog_entry(repo: &RepoName) -> String {
    let hex = hex::encode(repo.as_str());
    let segments: Vec<&str> = hex.as_bytes().chunks(200).map(|c| std::str::from_utf8(c).expect("hex is ASCII")).collect();
    format!("{}/-", segments.join("/"))
}

fn catalog_key(repo: &RepoName) -> String {
    format!("{CATALOG}{}", catalog_entry(repo))
}

/// The repository name of a catalog key relative to `catalog/`; `None` for anything else.
fn catalog_name(entry: &str) -> Option<String> {
    let hex: String = entry.strip_suffix("/-")?.split('/').collect();
    String::from_utf8(hex::decode(hex).ok()?).ok()
}

fn manifest_type_key(digest: &Digest) -> String {
    format!("types/sha256/{}", digest.hex())
}

fn upload_key(upload_id: &str) -> String {
    format!("uploads/{upload_id}")
}

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
        Ok(Metadata { index: index::Index::open(index_dir)?, store })
    }

    /// The store this metadata lives in.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.store.stat(key).await?.is_some())
    }

    async fn read<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get_small(key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(decode(key, &object.bytes)?)),
            None => Ok(None),
        }
    }

    /// Makes a stored blob visible in `repo`.
    pub async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.store.put_small(&blob_link_key(repo, digest), Bytes::new(), PutCondition::Always).await?;
        self.ensure_repository(repo).await
    }

    /// Whether the blob is visible in `repo`.
    pub async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.exists(&blob_link_key(repo, digest)).await
    }

    /// Removes the blob from `repo` (its bytes stay until garbage collection).
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&blob_link_key(repo, digest)).await?)
    }

    /// Records a manifest revision in `repo`.
    pub async fn link_manifest(&self, repo: &RepoName, digest: &Digest, link: &ManifestLink) -> Result<()> {
        self.store.put_small(&manifest_link_key(repo, digest), encode(link), PutCondition::Always).await?;
        self.ensure_repository(repo).await
    }

    /// The manifest revision, if `repo` has it.
    pub async fn manifest_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestLink>> {
        self.read(&manifest_link_key(repo, digest)).await
    }

    /// Removes a manifest revision from `repo`.
    pub async fn unlink_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&manifest_link_key(repo, digest)).await?)
    }

    /// Digests of every manifest revision in `repo`, a page at a time.
    pub async fn manifests(&self, repo: &RepoName, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        Ok(self.store.list(&repo_key(repo, "_manifests/sha256/"), start_after, limit, true).await?)
    }

    /// The tag, if it exists.
    pub async fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<StoredTag>> {
        let key = tag_key(repo, tag);
        match self.store.get_small(&key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(StoredTag { record: decode(&key, &object.bytes)?, etag: object.etag })),
            None => Ok(None),
        }
    }

    /// Writes the tag under `condition`; `BlobStoreError::PreconditionFailed` when it is not met.
    pub async fn put_tag(&self, repo: &RepoName, tag: &Tag, record: &TagRecord, condition: PutCondition) -> Result<()> {
        let key = tag_key(repo, tag);
        self.store.put_small(&key, encode(record), condition).await?;
        self.ensure_repository(repo).await
    }

    /// Deletes the tag.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        Ok(self.store.delete(&tag_key(repo, tag)).await?)
    }

    /// The tombstone of a deleted write-once tag.
    pub async fn tombstone(&self, repo: &RepoName, tag: &Tag) -> Result<Option<TagRecord>> {
        self.read(&tombstone_key(repo, tag)).await
    }

    /// Burns a write-once tag name to `record`'s digest.
    pub async fn put_tombstone(&self, repo: &RepoName, tag: &Tag, record: &TagRecord) -> Result<()> {
        self.store.put_small(&tombstone_key(repo, tag), encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// Tag names of `repo` in byte order after `last`, at most `limit`.
    pub async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: usize) -> Result<ListPage> {
        Ok(self.store.list(&tags_prefix(repo), last, limit, true).await?)
    }

    /// Records that `referrer` (described by `descriptor`) refers to `subject` in `repo`.
    pub async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &serde_json::Value,
    ) -> Result<()> {
        let key = referrer_key(repo, subject, referrer);
        self.store.put_small(&key, encode(descriptor), PutCondition::Always).await?;
        Ok(())
    }

    /// Removes a referrer link.
    pub async fn remove_referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<()> {
        let key = referrer_key(repo, subject, referrer);
        Ok(self.store.delete(&key).await?)
    }

    /// The descriptor of one referrer link, `None` when `referrer` does not refer to `subject` in `repo`.
    pub async fn referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<Option<serde_json::Value>> {
        self.read(&format!("{}{}", referrers_prefix(repo, subject), referrer.hex())).await
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`, at most `limit`.
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, limit: usize) -> Result<Vec<serde_json::Value>> {
        let prefix = referrers_prefix(repo, subject);
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
        self.referrer_names(&referrers_prefix(repo, subject), limit).await
    }

    /// Names (digest hex) of the referrer links below `prefix`, at most `limit`. Pages are as large
    /// as the rest of `limit` (the filesystem reads the whole directory for each page; S3 serves
    /// at most 1000 names a page whatever is asked).
    async fn referrer_names(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.store.list(prefix, last.as_deref(), limit - names.len(), true).await?;
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
        let key = parent_key(repo, child, parent);
        self.store.put_small(&key, Bytes::new(), PutCondition::Always).await?;
        Ok(())
    }

    /// Forgets that `parent` lists `child`.
    pub async fn remove_parent(&self, repo: &RepoName, child: &Digest, parent: &Digest) -> Result<()> {
        Ok(self.store.delete(&parent_key(repo, child, parent)).await?)
    }

    /// Indexes in `repo` that list `child`, at most `limit`.
    pub async fn parents(&self, repo: &RepoName, child: &Digest, limit: usize) -> Result<Vec<Digest>> {
        let page = self.store.list(&parents_prefix(repo, child), None, limit, true).await?;
        Ok(page.entries.iter().filter_map(|hex| format!("sha256:{hex}").parse().ok()).collect())
    }

    /// Marks `repo` as existing, for the catalog.
    pub async fn ensure_repository(&self, repo: &RepoName) -> Result<()> {
        let key = catalog_key(repo);
        if !self.exists(&key).await? {
            self.store.put_small(&key, Bytes::new(), PutCondition::Always).await?;
        }
        Ok(())
    }

    /// Whether anything was ever pushed to `repo`.
    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        self.exists(&catalog_key(repo)).await
    }

    /// Repository names in byte order after `last`, at most `limit`.
    pub async fn catalog(&self, last: Option<&RepoName>, limit: usize) -> Result<ListPage> {
        let start_after = last.map(catalog_entry);
        let page = self.store.list(CATALOG, start_after.as_deref(), limit, false).await?;
        let entries = page.entries.iter().filter_map(|entry| catalog_name(entry)).collect();
        Ok(ListPage { entries, truncated: page.truncated })
    }

    /// The media type `digest` was first stored with, recording `media_type` when there is none
    /// yet. Of racing first pushes with different types exactly one type wins.
    pub async fn settle_manifest_type(&self, digest: &Digest, media_type: &str) -> Result<ManifestType> {
        let key = manifest_type_key(digest);
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
        self.read(&manifest_type_key(digest)).await
    }

    /// Saves an upload session.
    pub async fn put_upload(&self, upload_id: &UploadId, record: &UploadRecord) -> Result<()> {
        self.store.put_small(&upload_key(upload_id.as_str()), encode(record), PutCondition::IfAbsent).await?;
        Ok(())
    }

    /// The upload session, if it exists.
    pub async fn upload(&self, upload_id: &UploadId) -> Result<Option<UploadRecord>> {
        self.read(&upload_key(upload_id.as_str())).await
    }

    /// Forgets an upload session.
    pub async fn delete_upload(&self, upload_id: &UploadId) -> Result<()> {
        Ok(self.store.delete(&upload_key(upload_id.as_str())).await?)
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
    /// The object the registry keeps under `key`; `None` for a key where it keeps none.
    pub fn from_key(key: &str) -> Option<Object> {
        let object = Object::parse(key)?;
        // Round-tripped through the key builders, so the layout is written down once.
        (object.key() == key).then_some(object)
    }

    fn parse(key: &str) -> Option<Object> {
        if let Some(entry) = key.strip_prefix(CATALOG) {
            return catalog_name(entry)?.parse().ok().map(Object::Catalog);
        }
        if let Some(upload_id) = key.strip_prefix("uploads/") {
            return upload_id.parse::<UploadId>().is_ok().then(|| Object::Upload(upload_id.to_owned()));
        }
        let rest = key.strip_prefix("repositories/")?;
        // The name ends where the registry's own segments begin: no component of it starts with `_`.
        let (name, own) = rest.split_once("/_")?;
        let repo: RepoName = name.parse().ok()?;
        let digest = |hex: &str| format!("sha256:{hex}").parse::<Digest>().ok();
        match own.split('/').collect::<Vec<_>>().as_slice() {
            ["blobs", "sha256", hex] => Some(Object::BlobLink(repo, digest(hex)?)),
            ["manifests", "sha256", hex] => Some(Object::ManifestLink(repo, digest(hex)?)),
            ["tags", tag] => Some(Object::Tag(repo, tag.parse().ok()?)),
            ["tombstones", tag] => Some(Object::Tombstone(repo, tag.parse().ok()?)),
            ["referrers", "sha256", subject, referrer] => {
                Some(Object::Referrer { repo, subject: digest(subject)?, referrer: digest(referrer)? })
            }
            ["parents", "sha256", child, parent] => Some(Object::Parent { repo, child: digest(child)?, parent: digest(parent)? }),
            _ => None,
        }
    }

    /// The key it is kept under.
    pub fn key(&self) -> String {
        match self {
            Object::Catalog(repo) => catalog_key(repo),
            Object::BlobLink(repo, digest) => blob_link_key(repo, digest),
            Object::ManifestLink(repo, digest) => manifest_link_key(repo, digest),
            Object::Tag(repo, tag) => tag_key(repo, tag),
            Object::Tombstone(repo, tag) => tombstone_key(repo, tag),
            Object::Referrer { repo, subject, referrer } => referrer_key(repo, subject, referrer),
            Object::Parent { repo, child, parent } => parent_key(repo, child, parent),
            Object::Upload(upload_id) => upload_key(upload_id),
        }
    }

    /// Reads the object from `store` and checks it as every read does: `None` when it is not
    /// there (any more), else the keys of the objects it points to, which must exist for it to
    /// mean anything. `Corrupt` when it is not what the registry writes under its key.
    pub async fn check(&self, store: &dyn BlobStore) -> Result<Option<Vec<String>>> {
        let key = self.key();
        let bytes = match store.get_small(&key, SMALL_LIMIT).await {
            Ok(Some(object)) => object.bytes,
            Ok(None) => return Ok(None),
            Err(BlobStoreError::TooLarge { limit, .. }) => {
                return Err(MetadataError::Corrupt { key, message: format!("larger than any metadata object ({limit} bytes)") });
            }
            Err(err) => return Err(err.into()),
        };
        let pointers = match self {
            // Their presence is what they say.
            Object::Catalog(_) => Vec::new(),
            Object::BlobLink(_, digest) => vec![digest.blob_key()],
            Object::ManifestLink(_, digest) => {
                decode::<ManifestLink>(&key, &bytes)?;
                vec![digest.blob_key()]
            }
            Object::Tag(repo, _) => {
                let record: TagRecord = decode(&key, &bytes)?;
                // Decoding checked that it is a digest.
                record.digest.parse().map(|digest| vec![manifest_link_key(repo, &digest)]).unwrap_or_default()
            }
            // A tombstone remembers a digest whose manifest may be long gone.
            Object::Tombstone(..) => {
                decode::<TagRecord>(&key, &bytes)?;
                Vec::new()
            }
            Object::Referrer { repo, referrer, .. } => {
                decode_referrer(&key, &bytes)?;
                vec![manifest_link_key(repo, referrer)]
            }
            Object::Parent { repo, parent, .. } => vec![manifest_link_key(repo, parent)],
            Object::Upload(_) => {
                decode::<UploadRecord>(&key, &bytes)?;
                Vec::new()
            }
        };
        Ok(Some(pointers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_sort_like_names() {
        let long = format!("{}/x", "a".repeat(150));
        let mut names = vec!["a", "a-b", "a.b", "a/b", "a_b", "ab", "b", long.as_str(), "a/b/c"];
        names.sort();
        let mut entries: Vec<String> = names.iter().map(|n| catalog_entry(&n.parse().unwrap())).collect();
        entries.sort();
        let decoded: Vec<String> = entries.iter().map(|e| catalog_name(e).unwrap()).collect();
        assert_eq!(decoded, names);
        for entry in &entries {
            storage::validate_key(&format!("{CATALOG}{entry}")).unwrap();
            assert!(entry.split('/').all(|segment| segment.len() <= 200));
        }
    }

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

    #[test]
    fn objects_and_their_keys() {
        let hex = "ab".repeat(32);
        let upload_id = "0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";
        let check = |key: &str, expected: Option<&str>| {
            let got = Object::from_key(key).map(|object| format!("{object:?}"));
            match (got.as_deref(), expected) {
                (Some(got), Some(expected)) => assert!(got.starts_with(expected), "{key}: got {got}, expected {expected}"),
                (got, expected) => assert_eq!(got, expected, "{key}"),
            }
        };
        check(&catalog_key(&"a/b".parse().unwrap()), Some("Catalog(RepoName(\"a/b\"))"));
        check(&format!("repositories/a/b/_blobs/sha256/{hex}"), Some("BlobLink(RepoName(\"a/b\"), sha256:abab"));
        check(&format!("repositories/a/_manifests/sha256/{hex}"), Some("ManifestLink(RepoName(\"a\"), sha256:abab"));
        check("repositories/a/_tags/v1", Some("Tag(RepoName(\"a\"), Tag(\"v1\"))"));
        check("repositories/a/_tombstones/v1", Some("Tombstone(RepoName(\"a\"), Tag(\"v1\"))"));
        check(&format!("repositories/a/_referrers/sha256/{hex}/{hex}"), Some("Referrer { repo: RepoName(\"a\"), subject: sha256:abab"));
        check(&format!("repositories/a/_parents/sha256/{hex}/{hex}"), Some("Parent { repo: RepoName(\"a\"), child: sha256:abab"));
        check(&format!("uploads/{upload_id}"), Some("Upload(\"0b7d5c7e"));
        // Keys where the registry keeps no metadata object.
        for key in [
            "repositories/a/_manifests/sha256/zz".to_owned(),
            format!("repositories/A/_manifests/sha256/{hex}"),
            "repositories/a/_tags/-v1".into(),
            "repositories/a/_tags/v1/x".into(),
            "repositories/a/_unknown/v1".into(),
            "repositories/a/tags/v1".into(),
            format!("repositories/a/_referrers/sha256/{hex}"),
            "uploads/not-an-id".into(),
            "catalog/zz/-".into(),
            "catalog/61".into(),
            "keys/vsa-signing-key.pem".into(),
        ] {
            check(&key, None);
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
        // The keys it points to, or the start of why it is corrupt.
        type Expected = Result<Vec<String>, &'static str>;
        // (object, stored bytes, expected)
        let cases: Vec<(&Object, String, Expected)> = vec![
            (&link, r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":3}"#.into(), Ok(vec![digest.blob_key()])),
            (&link, r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json\nX-Injected: 1","size":3}"#.into(), Err("\"application/vnd.oci.image.manifest.v1+json\\nX-Injected: 1\" is not a media type")),
            (&link, r#"{"mediaType":"applic"#.into(), Err("EOF while parsing")),
            (&link, r#"{"size":3}"#.into(), Err("missing field `mediaType`")),
            (&tag, format!(r#"{{"digest":"{digest}"}}"#), Ok(vec![manifest_link_key(&repo, &digest)])),
            (&tag, r#"{"digest":"sha256:xyz"}"#.into(), Err("invalid digest")),
            (&tag, r#"{"digest":"#.into(), Err("EOF while parsing")),
            (&tag, huge, Err("larger than any metadata object")),
            (&referrer, descriptor.clone(), Ok(vec![manifest_link_key(&repo, &digest)])),
            (&referrer, descriptor.replace(&digest.to_string(), &other.to_string()), Err("describes sha256:")),
            (&referrer, "[]".into(), Err("not a descriptor")),
            (&upload, r#"{"repo":"a","started":1}"#.into(), Ok(Vec::new())),
            (&upload, r#"{"repo":"../a","started":1}"#.into(), Err("invalid repository name")),
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
