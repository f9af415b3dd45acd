//! Content-addressed object store for portcullis.
//!
//! A [`BlobStore`] knows keys and bytes, nothing about OCI: no repositories, tags or manifests.
//! Keys are `/`-separated paths of printable ASCII segments (see [`validate_key`]); the registry
//! builds them from names it has already validated, and every backend checks them again so that no
//! key can escape its root.
//!
//! The contract every backend keeps (checked by `tests/conformance.rs`):
//! - Large objects arrive through a *staged upload*: bytes are appended in order to a temporary
//!   object and become visible under their final key only by [`BlobStore::stage_commit`], atomically.
//!   A failed append leaves the staged object at its previous size.
//! - Small objects (metadata) are written whole with a [`PutCondition`]: create-only and
//!   compare-and-swap are atomic, also between processes sharing the store.
//! - Listing returns keys in byte order, a page at a time, and never needs the whole store in memory.
//! - Reads stream; nothing here holds a whole large object in memory.
//!
//! This crate does not hash: callers wrap the streams they append with [`digest::Hasher`].

pub mod digest;
pub mod fs;
#[cfg(feature = "s3")]
pub mod s3;
mod s3_config;
#[cfg(feature = "test-support")]
pub mod test_s3;

use std::io;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use digest::Digest;
pub use fs::FsBlobStore;
#[cfg(feature = "s3")]
pub use s3::S3BlobStore;
pub use s3_config::{S3Config, DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE};

/// A stream of bytes read from or written to the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Size, entity tag and time of last write of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Length in bytes.
    pub size: u64,
    /// Opaque version of the object's content, for compare-and-swap.
    pub etag: ETag,
    /// When the object was last written, by the store's clock (the file's mtime, S3's
    /// `Last-Modified`; whole seconds on S3). Rewriting an object, even with the same bytes,
    /// moves it.
    pub modified: std::time::SystemTime,
}

/// Opaque version identifier of an object, as returned by a read or a write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

/// Precondition of a small-object write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Write whatever is there.
    Always,
    /// Write only if no object exists under the key (`If-None-Match: *`).
    IfAbsent,
    /// Write only if the object's current version is this one (`If-Match`).
    IfMatch(ETag),
}

/// A small object read whole, with its version.
#[derive(Debug, Clone)]
pub struct SmallObject {
    /// The object's bytes.
    pub bytes: Bytes,
    /// The version, for a later [`PutCondition::IfMatch`].
    pub etag: ETag,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Keys, or with a delimiter the names directly below the prefix, in byte order, prefix removed.
    pub entries: Vec<String>,
    /// Whether more entries follow the last one.
    pub truncated: bool,
}

/// One page of a listing with metadata ([`BlobStore::list_meta`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaPage {
    /// Keys below the prefix (prefix removed), in byte order, each with its metadata.
    pub entries: Vec<(String, ObjectMeta)>,
    /// Whether more entries follow the last one.
    pub truncated: bool,
}

/// An open object for reading: its metadata and a stream of the requested bytes.
pub struct ObjectReader {
    /// Metadata of the whole object (not of the range).
    pub meta: ObjectMeta,
    /// The requested bytes.
    pub body: ByteStream,
}

/// Errors of a [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    /// The key is not a valid store key.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// A conditional write found the object in another state than required.
    #[error("precondition failed for {0}")]
    PreconditionFailed(String),
    /// The object, or the staged upload, does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A requested range lies outside the object.
    #[error("range {start}..{end} not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable {
        /// First byte requested.
        start: u64,
        /// One past the last byte requested.
        end: u64,
        /// The object's size.
        size: u64,
    },
    /// A small object was larger than the caller's limit.
    #[error("object {key} is larger than {limit} bytes")]
    TooLarge {
        /// The key read.
        key: String,
        /// The limit.
        limit: usize,
    },
    /// The backend could not be reached or answered with an error it may recover from.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An I/O error of the backend.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Result of store operations.
pub type Result<T, E = BlobStoreError> = std::result::Result<T, E>;

/// The object store behind the registry. Held as `Arc<dyn BlobStore>`.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size and version of the object, `None` when absent.
    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// Opens the object for streaming, the whole of it or `range` (end exclusive), `None` when absent.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<ObjectReader>>;

    /// Reads a small object whole, refusing one over `limit` bytes; `None` when absent.
    async fn get_small(&self, key: &str, limit: usize) -> Result<Option<SmallObject>>;

    /// Writes a small object whole under `condition`; returns its new version.
    async fn put_small(&self, key: &str, bytes: Bytes, condition: PutCondition) -> Result<ETag>;

    /// Deletes the object; deleting an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Lists keys below `prefix` (which ends in `/` or is empty) that sort after `start_after`
    /// (relative to `prefix`). With `delimited`, lists the names directly below `prefix` instead:
    /// each name once, objects and "directories" alike.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        delimited: bool,
    ) -> Result<ListPage>;

    /// Lists keys below `prefix` as a non-delimited [`BlobStore::list`] does, each with its
    /// metadata, for walks that need sizes and ages (garbage collection). A key deleted between
    /// listing and looking is left out. The default looks at each key with [`BlobStore::stat`];
    /// backends whose listings carry metadata (S3) answer from the listing.
    async fn list_meta(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<MetaPage> {
        let page = self.list(prefix, start_after, limit, false).await?;
        let mut entries = Vec::with_capacity(page.entries.len());
        for key in page.entries {
            if let Some(meta) = self.stat(&format!("{prefix}{key}")).await? {
                entries.push((key, meta));
            }
        }
        Ok(MetaPage { entries, truncated: page.truncated })
    }

    /// Starts an empty staged upload named `id` (a single key segment).
    async fn stage_create(&self, id: &str) -> Result<()>;

    /// Appends `body` to the staged upload, which must currently hold exactly `offset` bytes.
    /// Returns the new size. On error the staged upload keeps its previous size.
    async fn stage_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64>;

    /// Streams the staged bytes so far (used to rebuild a hash this process does not hold).
    async fn stage_read(&self, id: &str) -> Result<ByteStream>;

    /// Size of the staged upload, `None` when there is none.
    async fn stage_size(&self, id: &str) -> Result<Option<u64>>;

    /// Makes the staged bytes the object at `key`, atomically, and ends the staged upload.
    async fn stage_commit(&self, id: &str, key: &str) -> Result<()>;

    /// Ends the staged upload and frees what it holds; aborting an unknown upload succeeds.
    async fn stage_abort(&self, id: &str) -> Result<()>;

    /// Lists staged uploads last touched more than `older_than` ago, for the janitor.
    async fn stale_stages(&self, older_than: std::time::Duration) -> Result<Vec<String>>;

    /// Frees backend resources abandoned for longer than `older_than` that no stage owns any more
    /// (S3: multipart uploads of interrupted commits); returns how many. Nothing to do by default.
    async fn abort_stale_uploads(&self, _older_than: std::time::Duration) -> Result<usize> {
        Ok(0)
    }

    /// A URL that serves the object directly for `expires`, when the backend can issue one
    /// (S3: a presigned GET). `None` by default: the registry streams the bytes itself.
    async fn presigned_get(&self, _key: &str, _expires: std::time::Duration) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Checks that `key` is a relative path of non-empty segments made of `[A-Za-z0-9._-]`, none of
/// them `.` or `..`. Backends call this on every key they are given.
pub fn validate_key(key: &str) -> Result<()> {
    let valid_segment = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if key.len() > 1024 || !key.split('/').all(valid_segment) {
        return Err(BlobStoreError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid key followed by `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(key) => validate_key(key),
        None => Err(BlobStoreError::InvalidKey(prefix.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "blobs/sha256/ab/abcdef", "repositories/build/app/_tags/v1.0-rc_1"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "..", "a/../b", "a/./b", "a\\b", "a b", "a\0b", "é"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("a/b/").is_ok());
        assert!(validate_prefix("a/b").is_err());
        assert!(validate_prefix("/").is_err());
    }
}
