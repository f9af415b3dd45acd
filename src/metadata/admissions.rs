//! What Kubernetes admission leaves in the store: the record of each workload admitted with this
//! registry's images (`admissions/...`: which digests it runs, and where), and the drift rows
//! (`drift/...`: admitted digests whose verdict turned to failing, with the workloads that run
//! them). The order of work that writes them is in `admission`.
//!
//! A workload's names become key segments, so they are checked here against the Kubernetes
//! grammar (namespaces are DNS labels, names DNS subdomains, kinds alphanumeric); the cluster (the
//! name of the webhook's client certificate) is hex-encoded.

use serde::{Deserialize, Serialize};
use storage::{BlobStoreError, Digest, PutCondition};

use super::layout::{Key, Prefix};
use super::{decode, encode, parses_as, Metadata, MetadataError, Result, SMALL_LIMIT};
use crate::names::RepoName;

/// Longest cluster name kept (its hex is one key segment, and file names stop at 255 bytes).
const MAX_CLUSTER_LEN: usize = 100;
/// Keys listed per request while walking.
const PAGE: usize = 1000;

/// Where something runs: a Kubernetes object in a namespace of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// The name of the client certificate the cluster's API server presented to the webhook.
    pub cluster: String,
    /// The namespace.
    pub namespace: String,
    /// The kind (`Deployment`, `Pod`, ...).
    pub kind: String,
    /// The object's name.
    pub name: String,
}

/// One image of this registry that a workload was admitted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmittedImage {
    /// The image as the workload writes it.
    pub image: String,
    /// Its repository in this registry; checked to be a repository name when read.
    #[serde(deserialize_with = "parses_as::<RepoName, _>")]
    pub repository: String,
    /// The manifest digest it ran as when admitted; checked to be a digest when read.
    #[serde(deserialize_with = "parses_as::<Digest, _>")]
    pub digest: String,
}

/// `admissions/...`: a workload and the images of this registry it was last admitted with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionRecord {
    /// Where.
    pub workload: Workload,
    /// What.
    pub images: Vec<AdmittedImage>,
    /// When it was first admitted with these images, seconds since the Unix epoch.
    pub since: i64,
}

/// `drift/...`: an admitted digest whose verdict turned to failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// The repository whose gate judged it; checked to be a repository name when read.
    #[serde(deserialize_with = "parses_as::<RepoName, _>")]
    pub repository: String,
    /// The digest; checked to be a digest when read.
    #[serde(deserialize_with = "parses_as::<Digest, _>")]
    pub digest: String,
    /// When it was first seen failing, seconds since the Unix epoch.
    pub since: i64,
    /// The verdict's one line (`Verdict::summary`).
    pub summary: String,
    /// The workloads admitted with it.
    pub workloads: Vec<Workload>,
    /// Whether its `admission_drift` audit record is written. A row is created unaudited and
    /// marked once the record is appended, so a pass that stops in between (or an append that
    /// fails) leaves the record to the next pass. Rows written before this field: audited.
    #[serde(default = "already_audited")]
    pub audited: bool,
}

fn already_audited() -> bool {
    true
}

/// Whether `text` is a DNS label (RFC 1123) as Kubernetes namespaces are: at most 63 characters
/// of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `text` is a DNS subdomain (RFC 1123) as most Kubernetes object names are.
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

impl Workload {
    /// A workload whose names are what Kubernetes allows, so they make safe keys; `None` otherwise.
    pub fn new(cluster: &str, namespace: &str, kind: &str, name: &str) -> Option<Workload> {
        let kind_ok = kind.len() <= 63 && kind.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) && kind.bytes().all(|b| b.is_ascii_alphanumeric());
        let valid = cluster.len() <= MAX_CLUSTER_LEN && is_dns_label(namespace) && kind_ok && is_dns_subdomain(name);
        valid.then(|| Workload { cluster: cluster.to_owned(), namespace: namespace.to_owned(), kind: kind.to_owned(), name: name.to_owned() })
    }

    /// The key segment of its cluster: the name in hex, or `-` when there is none.
    pub(super) fn cluster_segment(&self) -> String {
        if self.cluster.is_empty() {
            "-".to_owned()
        } else {
            hex::encode(&self.cluster)
        }
    }
}

impl Metadata {
    /// Stores (replaces) the record of a workload.
    pub async fn put_admission(&self, record: &AdmissionRecord) -> Result<()> {
        self.store.put_small(&Key::Admission(&record.workload).to_string(), encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// Forgets a workload.
    pub async fn remove_admission(&self, workload: &Workload) -> Result<()> {
        Ok(self.store.delete(&Key::Admission(workload).to_string()).await?)
    }

    /// Every admission record, at most `limit`, in key order, with the keys of those that do not
    /// decode (which are skipped).
    pub async fn admissions(&self, limit: usize) -> Result<(Vec<AdmissionRecord>, Vec<String>)> {
        self.walk(&Prefix::Admissions.to_string(), limit).await
    }

    /// Creates the drift row of `record`'s digest; `false` when it exists already (another walk,
    /// on this node or another, got there first).
    pub async fn create_drift(&self, record: &DriftRecord) -> Result<bool> {
        let (repo, digest) = drift_names(record)?;
        match self.store.put_small(&Key::Drift(&repo, &digest).to_string(), encode(record), PutCondition::IfAbsent).await {
            Ok(_) => Ok(true),
            Err(BlobStoreError::PreconditionFailed(_)) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Replaces a drift row.
    pub async fn put_drift(&self, record: &DriftRecord) -> Result<()> {
        let (repo, digest) = drift_names(record)?;
        self.store.put_small(&Key::Drift(&repo, &digest).to_string(), encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// Removes the drift row of `digest` in `repo`.
    pub async fn remove_drift(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&Key::Drift(repo, digest).to_string()).await?)
    }

    /// Every drift row, at most `limit`, with the keys of those that do not decode.
    pub async fn drift(&self, limit: usize) -> Result<(Vec<DriftRecord>, Vec<String>)> {
        self.walk(&Prefix::Drift.to_string(), limit).await
    }

    /// The objects below `prefix`, at most `limit`, and the keys of those that do not decode.
    async fn walk<T: for<'de> Deserialize<'de>>(&self, prefix: &str, limit: usize) -> Result<(Vec<T>, Vec<String>)> {
        let mut found = Vec::new();
        let mut corrupt = Vec::new();
        let mut last: Option<String> = None;
        while found.len() + corrupt.len() < limit {
            let page = self.store.list(prefix, last.as_deref(), PAGE.min(limit - found.len() - corrupt.len()), false).await?;
            for name in &page.entries {
                let key = format!("{prefix}{name}");
                // An object deleted between listing and reading is skipped.
                let Some(object) = self.store.get_small(&key, SMALL_LIMIT).await? else { continue };
                match decode(&key, &object.bytes) {
                    Ok(record) => found.push(record),
                    Err(_) => corrupt.push(key),
                }
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(name)) => last = Some(name.clone()),
                _ => break,
            }
        }
        Ok((found, corrupt))
    }
}

/// The repository and digest a drift row names (decoding checked them; a record built in memory
/// is checked here).
fn drift_names(record: &DriftRecord) -> Result<(RepoName, Digest)> {
    let corrupt = |message: String| MetadataError::Corrupt { key: format!("drift row of {}@{}", record.repository, record.digest), message };
    let repo = record.repository.parse::<RepoName>().map_err(|err| corrupt(err.to_string()))?;
    let digest = record.digest.parse::<Digest>().map_err(|err| corrupt(err.to_string()))?;
    Ok((repo, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_kubernetes_names() {
        let check = |cluster: &str, namespace: &str, kind: &str, name: &str, valid: bool| {
            assert_eq!(Workload::new(cluster, namespace, kind, name).is_some(), valid, "{cluster} {namespace} {kind} {name}");
        };
        check("admission-controller", "shop", "Deployment", "web", true);
        check("", "shop", "Pod", "web-7d4b9c-x2x9z", true);
        check("c", "shop", "StatefulSet", "db.primary", true);
        check("c", "Shop", "Pod", "web", false);
        check("c", "shop", "Pod", "", false);
        check("c", "shop", "Pod", "..", false);
        check("c", "shop", "Pod", "a/../../etc", false);
        check("c", "shop", "Pod", "-web", false);
        check("c", "shop", "Po d", "web", false);
        check("c", "", "Pod", "web", false);
        check(&"c".repeat(101), "shop", "Pod", "web", false);
        check("c", "shop", "Pod", &"a".repeat(254), false);
    }
}
