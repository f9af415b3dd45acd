//! Upload sessions: the record that lets any node continue one (`uploads/<uuid>`), and the staged
//! bytes, which the backend keeps in its own staging area until they are committed under the
//! blob's content address.

use serde::{Deserialize, Serialize};
use storage::{ByteStream, Digest, PutCondition};

use super::{encode, parses_as, Key, Metadata, Result};
use crate::names::{RepoName, UploadId};

/// An upload session as kept in the store, so any node can continue it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The repository the upload belongs to; checked to be a repository name when read.
    #[serde(deserialize_with = "parses_as::<RepoName, _>")]
    pub repo: String,
    /// Seconds since the Unix epoch when it started.
    pub started: u64,
}

impl Metadata {
    /// Opens a session: an empty stage, then its record.
    pub async fn start_upload(&self, upload_id: &UploadId, record: &UploadRecord) -> Result<()> {
        self.store.stage_create(upload_id.as_str()).await?;
        self.store.put_small(&Key::Upload(upload_id.as_str()).to_string(), encode(record), PutCondition::IfAbsent).await?;
        Ok(())
    }

    /// The session's record, if it exists.
    pub async fn upload(&self, upload_id: &UploadId) -> Result<Option<UploadRecord>> {
        self.read(&Key::Upload(upload_id.as_str()).to_string()).await
    }

    /// How many bytes the session's stage holds, `None` when it has none.
    pub async fn staged_size(&self, upload_id: &UploadId) -> Result<Option<u64>> {
        Ok(self.store.stage_size(upload_id.as_str()).await?)
    }

    /// The bytes staged so far (to rebuild a hash this process does not hold).
    pub async fn staged_bytes(&self, upload_id: &UploadId) -> Result<ByteStream> {
        Ok(self.store.stage_read(upload_id.as_str()).await?)
    }

    /// Appends `body` to the stage, which must hold exactly `offset` bytes; returns the new size.
    /// On error the stage keeps its previous size.
    pub async fn append_staged(&self, upload_id: &UploadId, offset: u64, body: ByteStream) -> Result<u64> {
        Ok(self.store.stage_append(upload_id.as_str(), offset, body).await?)
    }

    /// Makes the staged bytes the content of `digest` (which the caller checked they hash to),
    /// unless that content is stored already.
    pub async fn commit_upload(&self, upload_id: &UploadId, digest: &Digest) -> Result<()> {
        let key = Key::Blob(digest).to_string();
        if self.store.stat(&key).await?.is_some() {
            return Ok(());
        }
        Ok(self.store.stage_commit(upload_id.as_str(), &key).await?)
    }

    /// Ends a session: frees its stage, then forgets its record.
    pub async fn end_upload(&self, upload_id: &UploadId) -> Result<()> {
        self.store.stage_abort(upload_id.as_str()).await?;
        Ok(self.store.delete(&Key::Upload(upload_id.as_str()).to_string()).await?)
    }

    /// Names of the stages last touched more than `older_than` ago.
    pub async fn stale_stages(&self, older_than: std::time::Duration) -> Result<Vec<String>> {
        Ok(self.store.stale_stages(older_than).await?)
    }

    /// Frees a stage that belongs to no session (its name is no upload id).
    pub async fn abort_stray_stage(&self, name: &str) -> Result<()> {
        Ok(self.store.stage_abort(name).await?)
    }

    /// Frees what the backend holds for interrupted commits older than `older_than`; returns how
    /// many it freed.
    pub async fn abort_stale_commits(&self, older_than: std::time::Duration) -> Result<usize> {
        Ok(self.store.abort_stale_uploads(older_than).await?)
    }
}
