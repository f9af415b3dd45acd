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
//! - `catalog/<hex of name, in 200-character segments>/-`: the repository exists. Hex keeps the
//!   byte order of names (`a` < `a-b` < `a/b`, which `/`-separated keys would not), the segments
//!   keep file names short, and the final `-` sorts before any hex digit so a name comes before
//!   the longer names it prefixes.
//! - `uploads/<id>`: an upload session, JSON [`UploadRecord`].
//!
//! Repository components never start with `_` (see `registry::names`), so these keys cannot
//! collide with a repository's own path.
//!
//! The sled index holds what is derived from immutable content: the [`ManifestSummary`] of each
//! manifest digest. This module is the only one that imports sled.

mod index;

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use storage::{BlobStore, BlobStoreError, Digest, ETag, ListPage, PutCondition};

use crate::registry::names::{RepoName, Tag};

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
    /// The media type it was pushed with (its `Content-Type` on pull).
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its length in bytes.
    pub size: u64,
}

/// What a tag holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The manifest the tag points to.
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
    /// Whether it carries evidence (signatures, attestations, SBOMs, sigstore bundles) rather than
    /// a runnable image: evidence stays pullable in gated namespaces so clients can verify it.
    pub evidence: bool,
}

/// An upload session as kept in the store, so any node can continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The repository the upload belongs to.
    pub repo: String,
    /// Seconds since the Unix epoch when it started.
    pub started: u64,
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

fn tombstone_key(repo: &RepoName, tag: &Tag) -> String {
    repo_key(repo, &format!("_tombstones/{tag}"))
}

fn referrers_prefix(repo: &RepoName, subject: &Digest) -> String {
    repo_key(repo, &format!("_referrers/sha256/{}/", subject.hex()))
}

fn parents_prefix(repo: &RepoName, child: &Digest) -> String {
    repo_key(repo, &format!("_parents/sha256/{}/", child.hex()))
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

fn upload_key(upload_id: &str) -> String {
    format!("uploads/{upload_id}")
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
        let key = format!("{}{tag}", tags_prefix(repo));
        match self.store.get_small(&key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(StoredTag { record: decode(&key, &object.bytes)?, etag: object.etag })),
            None => Ok(None),
        }
    }

    /// Writes the tag under `condition`; `BlobStoreError::PreconditionFailed` when it is not met.
    pub async fn put_tag(&self, repo: &RepoName, tag: &Tag, record: &TagRecord, condition: PutCondition) -> Result<()> {
        let key = format!("{}{tag}", tags_prefix(repo));
        self.store.put_small(&key, encode(record), condition).await?;
        self.ensure_repository(repo).await
    }

    /// Deletes the tag.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        Ok(self.store.delete(&format!("{}{tag}", tags_prefix(repo))).await?)
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
        let key = format!("{}{}", referrers_prefix(repo, subject), referrer.hex());
        self.store.put_small(&key, encode(descriptor), PutCondition::Always).await?;
        Ok(())
    }

    /// Removes a referrer link.
    pub async fn remove_referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<()> {
        let key = format!("{}{}", referrers_prefix(repo, subject), referrer.hex());
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
            if let Some(descriptor) = self.read(&format!("{prefix}{name}")).await? {
                descriptors.push(descriptor);
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
        let key = format!("{}{}", parents_prefix(repo, child), parent.hex());
        self.store.put_small(&key, Bytes::new(), PutCondition::Always).await?;
        Ok(())
    }

    /// Forgets that `parent` lists `child`.
    pub async fn remove_parent(&self, repo: &RepoName, child: &Digest, parent: &Digest) -> Result<()> {
        Ok(self.store.delete(&format!("{}{}", parents_prefix(repo, child), parent.hex())).await?)
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

    /// Saves an upload session.
    pub async fn put_upload(&self, upload_id: &str, record: &UploadRecord) -> Result<()> {
        self.store.put_small(&upload_key(upload_id), encode(record), PutCondition::IfAbsent).await?;
        Ok(())
    }

    /// The upload session, if it exists.
    pub async fn upload(&self, upload_id: &str) -> Result<Option<UploadRecord>> {
        self.read(&upload_key(upload_id)).await
    }

    /// Forgets an upload session.
    pub async fn delete_upload(&self, upload_id: &str) -> Result<()> {
        Ok(self.store.delete(&upload_key(upload_id)).await?)
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
}
