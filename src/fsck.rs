//! `portcullis fsck`: a read-only walk over the store's metadata that reports every object that
//! does not parse, or points to nothing, with its key.
//!
//! It walks the catalog, the repositories' links, tags, tombstones, referrer and parent links,
//! the upload sessions and the promotion records, and verifies the audit log's chain. Each
//! metadata object is checked as the registry checks it when a request reads it
//! ([`metadata::Object::check`]), so what `fsck` reports is what would answer a 500. It only
//! lists and reads: it never writes, repairs or deletes, and it needs no index, so it runs beside
//! a live server. Blob contents are not hashed.

use std::sync::Arc;

use storage::{BlobStore, BlobStoreError, Digest};

use crate::metadata::{self, MetadataError};
use crate::promote;
use crate::registry::names::RepoName;

/// Keys listed per request.
const PAGE: usize = 1000;
/// Largest promotion record read.
const MAX_RECORD: usize = 1 << 20;

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
    Audit(#[from] crate::audit::AuditError),
}

/// Walks the metadata in `store`, handing each finding to `report` as it is found (so nothing
/// accumulates); returns how many objects were checked and how many were damaged.
pub async fn run(store: Arc<dyn BlobStore>, report: impl FnMut(Finding)) -> Result<Summary, FsckError> {
    let mut walk = Walk { store: store.as_ref(), summary: Summary::default(), report };
    for prefix in ["catalog/", "repositories/", "uploads/"] {
        walk.metadata(prefix).await?;
    }
    walk.promotion_records().await?;
    match crate::audit::AuditLog::new(store.clone()).verify().await? {
        Ok(n_records) => walk.summary.checked += n_records,
        Err(broken) => walk.found(&format!("audit/records/{:020}", broken.seq), &broken.reason),
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

    async fn metadata(&mut self, prefix: &str) -> Result<(), FsckError> {
        self.each_key(prefix, async |walk: &mut Self, key: String| {
            let Some(object) = metadata::Object::from_key(&key) else {
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

    /// `promotions/<target>/_records/<hex>`: a record of that promotion.
    async fn promotion_records(&mut self) -> Result<(), FsckError> {
        self.each_key("promotions/", async |walk: &mut Self, key: String| {
            let Some((target, digest)) = promotion_record_key(&key) else {
                walk.found(&key, "not a key the registry writes");
                return Ok(());
            };
            let bytes = match walk.store.get_small(&key, MAX_RECORD).await {
                Ok(Some(object)) => object.bytes,
                Ok(None) => return Ok(()),
                Err(BlobStoreError::TooLarge { .. }) => {
                    walk.found(&key, &format!("larger than any promotion record ({MAX_RECORD} bytes)"));
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            };
            match serde_json::from_slice::<promote::Record>(&bytes) {
                Err(err) => walk.found(&key, &format!("not a promotion record: {err}")),
                Ok(record) if record.target != target.as_str() || record.digest != digest.to_string() => {
                    walk.found(&key, &format!("records the promotion of {} into {}, not what its key names", record.digest, record.target));
                }
                Ok(_) => {}
            }
            Ok(())
        })
        .await
    }
}

/// The target and digest a promotion record's key names, if it is one the registry writes.
fn promotion_record_key(key: &str) -> Option<(RepoName, Digest)> {
    let (target, hex) = key.strip_prefix("promotions/")?.split_once("/_records/")?;
    let (target, digest) = (target.parse().ok()?, format!("sha256:{hex}").parse().ok()?);
    (promote::record_key(&target, &digest) == key).then_some((target, digest))
}
