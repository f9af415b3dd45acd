//! `portcullis fsck`: a read-only walk over the store's metadata that reports every object that
//! does not parse, or points to nothing, with its key.
//!
//! It walks the catalog, the repositories' links, tags, tombstones, referrer and parent links,
//! the upload sessions and the promotion records, and verifies the audit log's chain. Each
//! metadata object is checked as the registry checks it when a request reads it
//! ([`Object::check`]), so what `fsck` reports is what would answer a 500. It only
//! lists and reads: it never writes, repairs or deletes, and it needs no index, so it runs beside
//! a live server. Blob contents are not hashed.

use std::sync::Arc;

use storage::{BlobStore, BlobStoreError};

use crate::metadata::audit::{AuditError, AuditLog};
use crate::metadata::layout::{Key, OBJECT_ROOTS};
use crate::metadata::{MetadataError, Object};

/// Keys listed per request.
const PAGE: usize = 1000;

/// One damaged object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Its key in the store.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

/// What a walk saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Objects checked.
    pub checked: u64,
    /// Findings reported.
    pub problems: u64,
}

/// Why a walk could not finish.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] BlobStoreError),
    /// Reading metadata failed other than by finding it damaged.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The audit log could not be read.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Walks the metadata in `store`, handing each finding to `report` as it is found (so nothing
/// accumulates); returns how many objects were checked and how many were damaged.
pub async fn run(store: Arc<dyn BlobStore>, report: impl FnMut(Finding)) -> Result<Summary, FsckError> {
    let mut walk = Walk { store: store.as_ref(), summary: Summary::default(), report };
    for prefix in OBJECT_ROOTS {
        walk.objects(prefix).await?;
    }
    match AuditLog::new(store.clone()).verify().await? {
        Ok(n_records) => walk.summary.checked += n_records,
        Err(broken) => walk.found(&Key::AuditRecord(broken.seq).to_string(), &broken.reason),
    }
    Ok(walk.summary)
}

struct Walk<'a, F> {
    store: &'a dyn BlobStore,
    summary: Summary,
    report: F,
}

impl<F: FnMut(Finding)> Walk<'_, F> {
    fn found(&mut self, key: &str, problem: &str) {
        self.summary.problems += 1;
        (self.report)(Finding { key: key.to_owned(), problem: problem.to_owned() });
    }

    /// Every key below `prefix`, a page at a time, handed to `check`.
    async fn each_key(&mut self, prefix: &str, mut check: impl AsyncFnMut(&mut Self, String) -> Result<(), FsckError>) -> Result<(), FsckError> {
        let mut last: Option<String> = None;
        loop {
            let page = self.store.list(prefix, last.as_deref(), PAGE, false).await?;
            for name in &page.entries {
                self.summary.checked += 1;
                check(self, format!("{prefix}{name}")).await?;
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(name)) => last = Some(name.clone()),
                _ => return Ok(()),
            }
        }
    }

    async fn objects(&mut self, prefix: &str) -> Result<(), FsckError> {
        self.each_key(prefix, async |walk: &mut Self, key: String| {
            let Some(object) = Object::from_key(&key) else {
                walk.found(&key, "not a key the registry writes");
                return Ok(());
            };
            match object.check(walk.store).await {
                // Gone since it was listed: deleted by a running server.
                Ok(None) => {}
                Ok(Some(pointers)) => {
                    for pointer in pointers {
                        if walk.store.stat(&pointer).await?.is_none() {
                            walk.found(&key, &format!("points to {pointer}, which does not exist"));
                        }
                    }
                }
                Err(MetadataError::Corrupt { message, .. }) => walk.found(&key, &message),
                Err(err) => return Err(err.into()),
            }
            Ok(())
        })
        .await
    }
}
