//! Blob and manifest bytes by content address (`blobs/sha256/<2 hex>/<64 hex>`): written under
//! their digest once and never changed, so writing the same content again is harmless.

use bytes::Bytes;
use storage::{Digest, ObjectReader, PutCondition};

use super::{Key, Metadata, Result};

impl Metadata {
    /// The size of the content with `digest`, `None` when it is not stored.
    pub async fn content_size(&self, digest: &Digest) -> Result<Option<u64>> {
        Ok(self.store.stat(&Key::Blob(digest).to_string()).await?.map(|meta| meta.size))
    }

    /// Opens the content for streaming, whole or `range` (end exclusive); `None` when it is not
    /// stored. A range outside it is `Store(BlobStoreError::RangeNotSatisfiable)`.
    pub async fn open_content(&self, digest: &Digest, range: Option<std::ops::Range<u64>>) -> Result<Option<ObjectReader>> {
        Ok(self.store.get(&Key::Blob(digest).to_string(), range).await?)
    }

    /// The content whole, if it has at most `limit` bytes (`Store(BlobStoreError::TooLarge)`
    /// otherwise); `None` when it is not stored.
    pub async fn read_content(&self, digest: &Digest, limit: usize) -> Result<Option<Bytes>> {
        Ok(self.get_small(&Key::Blob(digest).to_string(), limit).await?.map(|object| object.bytes))
    }

    /// Stores `bytes`, whose digest is `digest`, unless that content is stored already.
    pub async fn store_content(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let key = Key::Blob(digest).to_string();
        if self.store.stat(&key).await?.is_none() {
            self.store.put_small(&key, bytes, PutCondition::Always).await?;
        }
        Ok(())
    }

    /// A URL valid for `expires` where clients can fetch the content themselves, when the backend
    /// makes them (S3 with `redirect_blobs`).
    pub async fn presign_content(&self, digest: &Digest, expires: std::time::Duration) -> Result<Option<String>> {
        Ok(self.store.presigned_get(&Key::Blob(digest).to_string(), expires).await?)
    }
}
