//! Drift: the digests admitted into clusters, judged again. A digest that passed its gate when it
//! was admitted may fail later (a new scan with a blocking finding, a scan or allowlist entry
//! expired, a key removed from trust); [`check`] walks the admission records, asks each admitted
//! (repository, digest) for its verdict (cached unless evidence or policy changed), and keeps one
//! drift row per failing digest naming the workloads that run it. A digest seen failing for the
//! first time is an audit record (`admission_drift`) and counts in
//! `portcullis_admission_drift_detected_total`; `portcullis_admission_drift_digests` is the
//! number failing now. A row goes when its digest passes again or runs nowhere any more.
//!
//! [`run`] checks at start, whenever the registry says evidence arrived or policy was reloaded
//! (`Registry::judge_again`), and every `revalidate_every`. Replicas on one store each check; a
//! row is created with a create-only write, so each drift is recorded once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use storage::Digest;

use crate::metadata::admissions::{DriftRecord, Workload};
use crate::names::RepoName;
use crate::registry::{Registry, RegistryError};

/// The most admission records one check reads (each is a small object).
const MAX_RECORDS: usize = 100_000;
/// How long a check waits after a change before it starts: evidence comes in bursts (a
/// signature, then attestations), and one check after the burst is enough.
const SETTLE: Duration = Duration::from_millis(500);
/// How long the task sleeps between looks at the configuration when admission is off.
const IDLE: Duration = Duration::from_secs(3600);

/// What one check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Distinct (repository, digest) pairs judged.
    pub digests: usize,
    /// Of those, the ones failing.
    pub failing: usize,
    /// Of those, the ones seen failing for the first time.
    pub new: usize,
}

/// Checks for drift until the task is aborted: at start, after every change the registry
/// signals, and every `revalidate_every` of the configuration in force.
pub async fn run(registry: Arc<Registry>) {
    loop {
        let every = registry.config().admission.as_ref().map(|admission| admission.revalidate_every);
        if every.is_some() {
            match check(&registry).await {
                Ok(checked) => tracing::debug!(digests = checked.digests, failing = checked.failing, new = checked.new, "drift check"),
                Err(err) => tracing::warn!(error = %err, "drift check failed; it runs again at the next change or period"),
            }
        }
        tokio::select! {
            _ = registry.changed() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(every.unwrap_or(IDLE)) => {}
        }
    }
}

/// Judges every admitted digest again and brings the drift rows up to date.
pub async fn check(registry: &Registry) -> Result<Checked, RegistryError> {
    let mut running: BTreeMap<(RepoName, Digest), BTreeSet<Workload>> = BTreeMap::new();
    for record in registry.admissions(MAX_RECORDS).await? {
        for image in record.images {
            // Decoding checked both.
            let (Ok(repo), Ok(digest)) = (image.repository.parse::<RepoName>(), image.digest.parse::<Digest>()) else { continue };
            running.entry((repo, digest)).or_default().insert(record.workload.clone());
        }
    }
    let mut rows: HashMap<(String, String), DriftRecord> =
        registry.drift(MAX_RECORDS).await?.into_iter().map(|row| ((row.repository.clone(), row.digest.clone()), row)).collect();
    let mut checked = Checked { digests: running.len(), ..Checked::default() };
    for ((repo, digest), workloads) in &running {
        let row = rows.remove(&(repo.to_string(), digest.to_string()));
        let failed = registry.verdict(repo, digest).await?.filter(|verdict| !verdict.passed);
        let Some(verdict) = failed else {
            if row.is_some() {
                registry.remove_drift(repo, digest).await?;
            }
            continue;
        };
        checked.failing += 1;
        let workloads: Vec<Workload> = workloads.iter().cloned().collect();
        let summary = verdict.summary();
        let row = match row {
            Some(row) if row.summary == summary && row.workloads == workloads => row,
            Some(row) => {
                let row = DriftRecord { summary, workloads, ..row };
                registry.update_drift(&row).await?;
                row
            }
            None => {
                let row =
                    DriftRecord { repository: repo.to_string(), digest: digest.to_string(), since: verdict.evaluated_at, summary, workloads, audited: false };
                // Create-only: of several replicas, one records the drift.
                if !registry.create_drift(&row).await? {
                    continue;
                }
                checked.new += 1;
                registry.metrics.admission_drift_detected.inc();
                tracing::warn!(repo = %repo, digest = %digest, verdict = %row.summary, "drift: an admitted digest fails its gate now");
                row
            }
        };
        // The record, then the mark: a row left unaudited (a pass stopped after creating it, an
        // append that failed) is audited by the next pass.
        if !row.audited {
            let detail = serde_json::json!({ "summary": row.summary, "workloads": row.workloads, "verdict": verdict });
            registry.append_audit("admission_drift", "portcullis", repo, digest, detail).await?;
            registry.update_drift(&DriftRecord { audited: true, ..row }).await?;
        }
    }
    // Rows of digests that run nowhere any more.
    for row in rows.into_values() {
        if let (Ok(repo), Ok(digest)) = (row.repository.parse::<RepoName>(), row.digest.parse::<Digest>()) {
            registry.remove_drift(&repo, &digest).await?;
        }
    }
    registry.metrics.admission_drift_digests.set(checked.failing as i64);
    Ok(checked)
}
