//! The registry's part of Kubernetes admission (the decisions are in `admission`, above the
//! registry): whether a repository holds a manifest, the records of admitted workloads and the
//! drift rows in the store, and the signal that evidence or policy changed, which sends the drift
//! check over the admitted digests again.

use std::collections::HashMap;
use std::sync::Mutex;

use storage::Digest;

use super::{Registry, Result};
use crate::metadata::admissions::{AdmissionRecord, AdmittedImage, DriftRecord, Workload};
use crate::names::RepoName;

/// Workloads whose last written record this node remembers before it forgets them all.
const REMEMBERED_LIMIT: usize = 10_000;

/// What this node last wrote for each workload, so that admitting the same images again (every
/// pod of a ReplicaSet, every re-apply) writes nothing.
#[derive(Default)]
pub(super) struct Remembered {
    written: Mutex<HashMap<Workload, Vec<AdmittedImage>>>,
}

impl Registry {
    /// Whether `repo` holds the manifest `digest`.
    pub async fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self.metadata.manifest_link(repo, digest).await?.is_some())
    }

    /// Remembers that `workload` runs `images` (no images: forgets it). Writes only when this
    /// node did not write the same already; `since` is kept when the images are unchanged.
    pub async fn remember_admission(&self, workload: &Workload, images: Vec<AdmittedImage>, now: i64) -> Result<()> {
        let unchanged = self.remembered.written.lock().expect("cache lock is never poisoned").get(workload) == Some(&images);
        if unchanged {
            return Ok(());
        }
        if images.is_empty() {
            self.metadata.remove_admission(workload).await?;
        } else {
            let record = AdmissionRecord { workload: workload.clone(), images: images.clone(), since: now };
            self.metadata.put_admission(&record).await?;
        }
        let mut written = self.remembered.written.lock().expect("cache lock is never poisoned");
        if written.len() >= REMEMBERED_LIMIT {
            written.clear();
        }
        written.insert(workload.clone(), images);
        Ok(())
    }

    /// Forgets `workload` (it was deleted).
    pub async fn forget_admission(&self, workload: &Workload) -> Result<()> {
        self.metadata.remove_admission(workload).await?;
        self.remembered.written.lock().expect("cache lock is never poisoned").remove(workload);
        Ok(())
    }

    /// Every admission record, at most `limit`; those that do not decode are logged and skipped.
    pub async fn admissions(&self, limit: usize) -> Result<Vec<AdmissionRecord>> {
        let (records, corrupt) = self.metadata.admissions(limit).await?;
        for key in corrupt {
            tracing::warn!(key = %key, "admission record does not decode; skipped");
        }
        Ok(records)
    }

    /// Every drift row, at most `limit`; those that do not decode are logged and skipped.
    pub async fn drift(&self, limit: usize) -> Result<Vec<DriftRecord>> {
        let (records, corrupt) = self.metadata.drift(limit).await?;
        for key in corrupt {
            tracing::warn!(key = %key, "drift row does not decode; skipped");
        }
        Ok(records)
    }

    /// Creates a drift row; `false` when it was there already.
    pub async fn create_drift(&self, record: &DriftRecord) -> Result<bool> {
        Ok(self.metadata.create_drift(record).await?)
    }

    /// Replaces a drift row.
    pub async fn update_drift(&self, record: &DriftRecord) -> Result<()> {
        Ok(self.metadata.put_drift(record).await?)
    }

    /// Removes the drift row of `digest` in `repo`.
    pub async fn remove_drift(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.metadata.remove_drift(repo, digest).await?)
    }

    /// Says that evidence arrived or policy changed: the drift check runs again soon.
    pub fn judge_again(&self) {
        self.changes.notify_one();
    }

    /// Waits until [`Registry::judge_again`] is called (at once when it was called since the last
    /// wait).
    pub async fn changed(&self) {
        self.changes.notified().await;
    }
}
