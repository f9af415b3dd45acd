//! Blob upload sessions: append in order while hashing, then commit under the digest.
//!
//! The session record and the staged bytes live in the store, so a session survives a restart and
//! can continue on another node. The running sha256 lives in this process only; a node that does
//! not hold it rebuilds it from the staged bytes before going on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use storage::digest::Hasher;
use storage::{BlobStoreError, ByteStream, Digest};

use crate::names::{RepoName, UploadId};
use super::{Registry, RegistryError, Result};
use crate::metadata::layout::Key;
use crate::metadata::{MetadataError, UploadRecord};

/// In-process state of upload sessions, by upload id.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Session>>>>,
}

/// One session's running state. Its lock serialises the requests of one upload.
struct Session {
    offset: u64,
    /// `None` until rebuilt from the staged bytes on a node that did not start the upload.
    hasher: Option<Hasher>,
}

impl Sessions {
    fn get(&self, upload_id: &UploadId) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        self.open.lock().expect("sessions lock is never poisoned").get(upload_id).cloned()
    }

    fn insert(&self, upload_id: &UploadId, session: Session) -> Arc<tokio::sync::Mutex<Session>> {
        let mut open = self.open.lock().expect("sessions lock is never poisoned");
        open.entry(upload_id.clone()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(session))).clone()
    }

    fn remove(&self, upload_id: &UploadId) {
        self.open.lock().expect("sessions lock is never poisoned").remove(upload_id);
    }

    /// Number of sessions this process holds state for.
    pub fn count(&self) -> usize {
        self.open.lock().expect("sessions lock is never poisoned").len()
    }
}

/// Bytes a client claims to send in one request, from `Content-Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn unknown_if_missing(err: MetadataError) -> RegistryError {
    match err {
        MetadataError::Store(BlobStoreError::NotFound(_)) => RegistryError::BlobUploadUnknown,
        other => other.into(),
    }
}

impl Registry {
    /// Opens an upload session in `repo`; returns its id.
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadId> {
        self.refuse_if_promotion_only(repo, "blobs")?;
        let upload_id = UploadId::random();
        let record = UploadRecord { repo: repo.to_string(), started: now_secs() };
        self.metadata.start_upload(&upload_id, &record).await?;
        self.sessions.insert(&upload_id, Session { offset: 0, hasher: Some(Hasher::new()) });
        self.metrics.upload_sessions.set(self.sessions.count() as i64);
        Ok(upload_id)
    }

    /// The session's lock, loading it from the store when this process does not hold it.
    async fn session(&self, repo: &RepoName, upload_id: &UploadId) -> Result<Arc<tokio::sync::Mutex<Session>>> {
        // A session opened before a reload made the namespace promotion-only takes no more bytes.
        self.refuse_if_promotion_only(repo, "blobs")?;
        let record = self.metadata.upload(upload_id).await?;
        if record.as_ref().map(|r| r.repo.as_str()) != Some(repo.as_str()) {
            return Err(RegistryError::BlobUploadUnknown);
        }
        if let Some(session) = self.sessions.get(upload_id) {
            return Ok(session);
        }
        let offset = self.metadata.staged_size(upload_id).await?.ok_or(RegistryError::BlobUploadUnknown)?;
        let session = self.sessions.insert(upload_id, Session { offset, hasher: None });
        self.metrics.upload_sessions.set(self.sessions.count() as i64);
        Ok(session)
    }

    /// Bytes received so far.
    pub async fn upload_offset(&self, repo: &RepoName, upload_id: &UploadId) -> Result<u64> {
        let session = self.session(repo, upload_id).await?;
        let offset = session.lock().await.offset;
        Ok(offset)
    }

    /// Appends a chunk; returns the new offset. A chunk that does not start at the current offset
    /// is refused with [`RegistryError::RangeInvalid`] and changes nothing.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        upload_id: &UploadId,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let session = self.session(repo, upload_id).await?;
        let mut session = session.lock().await;
        self.append_locked(repo, upload_id, &mut session, range, body).await
    }

    async fn append_locked(
        &self,
        repo: &RepoName,
        upload_id: &UploadId,
        session: &mut Session,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let expected_len = match range {
            Some(range) if range.start != session.offset || range.end < range.start => {
                return Err(RegistryError::RangeInvalid { repo: repo.clone(), upload_id: upload_id.clone(), offset: session.offset });
            }
            Some(range) => Some(range.end - range.start + 1),
            None => None,
        };
        let hasher = match &session.hasher {
            Some(hasher) => hasher.clone(),
            None => {
                let hasher = Hasher::new();
                hasher.consume(self.metadata.staged_bytes(upload_id).await.map_err(unknown_if_missing)?).await?;
                session.hasher = Some(hasher.clone());
                hasher
            }
        };
        let room = self.config().registry.max_blob_bytes.saturating_sub(session.offset);
        let before = hasher.snapshot();
        let body = hasher.tap(super::body::bounded(body, expected_len, room));
        match self.metadata.append_staged(upload_id, session.offset, body).await {
            Ok(offset) => {
                self.metrics.bytes_received.inc_by(offset - session.offset);
                session.offset = offset;
                Ok(offset)
            }
            Err(err) => {
                hasher.restore(before);
                Err(super::body::classify(err))
            }
        }
    }

    /// Appends the last chunk (possibly empty), checks the digest and makes the blob visible in
    /// `repo`. A digest mismatch ends the session and stores nothing.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        upload_id: &UploadId,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<()> {
        let session = self.session(repo, upload_id).await?;
        let mut session = session.lock().await;
        self.append_locked(repo, upload_id, &mut session, range, body).await?;
        let actual = session.hasher.as_ref().expect("append_locked always leaves a hasher").digest();
        if actual != *digest {
            self.end_session(upload_id).await?;
            return Err(RegistryError::DigestMismatch { expected: digest.clone(), actual });
        }
        let linked = self.commit_and_link(repo, upload_id, digest).await;
        self.end_session(upload_id).await?;
        linked
    }

    /// Commits the staged bytes (unless that content is stored) and links the blob, inside a
    /// collection fence (see `fence`): content stored before may be collected meanwhile, so when
    /// the fence finds it gone, the staged bytes, still there, are committed again.
    async fn commit_and_link(&self, repo: &RepoName, upload_id: &UploadId, digest: &Digest) -> Result<()> {
        let fence = self.open_fence().await?;
        self.metadata.commit_upload(upload_id, digest).await?;
        self.metadata.link_blob(repo, digest).await?;
        let needed = [Key::Blob(digest).to_string(), Key::BlobLink(repo, digest).to_string()];
        if !self.close_fence(fence, &needed).await?.is_empty() {
            // The pass that removed them is over, and what is written now is younger than any
            // pass's cut-off.
            self.metadata.commit_upload(upload_id, digest).await?;
            self.metadata.link_blob(repo, digest).await?;
        }
        Ok(())
    }

    async fn end_session(&self, upload_id: &UploadId) -> Result<()> {
        self.metadata.end_upload(upload_id).await?;
        self.sessions.remove(upload_id);
        self.metrics.upload_sessions.set(self.sessions.count() as i64);
        Ok(())
    }

    /// Cancels an upload session.
    pub async fn cancel_upload(&self, repo: &RepoName, upload_id: &UploadId) -> Result<()> {
        let session = self.session(repo, upload_id).await?;
        let _held = session.lock().await;
        self.end_session(upload_id).await
    }

    /// Monolithic upload: one request carries the whole blob and its digest.
    pub async fn put_blob(&self, repo: &RepoName, digest: &Digest, body: ByteStream) -> Result<()> {
        let upload_id = self.start_upload(repo).await?;
        let res = self.finish_upload(repo, &upload_id, digest, None, body).await;
        if res.is_err() {
            // finish_upload ends the session on a digest mismatch but not on a broken body.
            let _ = self.end_session(&upload_id).await;
        }
        res
    }

    /// Removes upload sessions idle for longer than the configured timeout; returns how many.
    pub async fn expire_uploads(&self) -> Result<usize> {
        let timeout = self.config().registry.upload_timeout;
        let stale = self.metadata.stale_stages(timeout).await?;
        for stage in &stale {
            match stage.parse::<UploadId>() {
                Ok(upload_id) => self.end_session(&upload_id).await?,
                // Stages are only made under ids the registry hands out; a stray one has no
                // session, so only its bytes go.
                Err(_) => self.metadata.abort_stray_stage(stage).await?,
            }
        }
        let n_expired = stale.len() + self.metadata.abort_stale_commits(timeout).await?;
        // Counted with what collection removes.
        self.metrics.gc_removed_objects.with_label_values(&["upload_session"]).inc_by(n_expired as u64);
        Ok(n_expired)
    }
}
