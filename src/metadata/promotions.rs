//! Promotion records (`promotions/<target>/_records/<hex>`): what a promotion of a digest into a
//! target did, kept so that an identical promotion is answered with it and the target's
//! promotions can be listed. The order of work that writes them is in `promote.rs`.

use serde::{Deserialize, Serialize};
use storage::{Digest, PutCondition};

use super::layout::Prefix;
use super::{encode, Key, Metadata, MetadataError, Result};
use crate::names::RepoName;

/// Largest promotion record read.
pub(super) const MAX_RECORD: usize = 1 << 20;

/// A promotion as recorded (and returned by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionRecord {
    /// The source as requested.
    pub source: String,
    /// The digest it resolved to.
    pub digest: String,
    /// The target repository.
    pub target: String,
    /// Tags bound in the target.
    pub tags: Vec<String>,
    /// What was done.
    pub result: PromotionResult,
    /// Who asked.
    pub actor: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The verdict it passed (absent when the target is ungated).
    pub verdict: Option<serde_json::Value>,
    /// Digest of the attached verification summary manifest.
    pub vsa: Option<String>,
    /// Why no verification summary was signed, when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsa_skipped: Option<String>,
    /// How many blobs, manifests and evidence manifests were linked.
    pub linked: Linked,
    /// Runnable manifests among the source's referrers, which did not travel with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_behind: Vec<LeftBehind>,
}

/// What a promotion did, as the record (and the API) spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionResult {
    /// Linked and tagged in the target: `promoted`.
    Promoted,
    /// Evaluated and reported, nothing written: `dry_run`.
    DryRun,
}

/// A referrer of the source that a runtime could run, so it is not evidence and stays behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftBehind {
    /// Its digest.
    pub digest: String,
    /// How it was found: `referrer sha256:…` or `tag sha256-….sig`.
    pub found_as: String,
}

/// Counts of what a promotion linked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linked {
    /// Blobs (layers, configs, evidence payloads).
    pub blobs: usize,
    /// Manifests (the image, its children).
    pub manifests: usize,
    /// Evidence manifests (signatures, attestations, SBOMs).
    pub evidence: usize,
}

impl Metadata {
    /// Stores the record of the promotion of `digest` into `target`, replacing an earlier one.
    pub async fn put_promotion_record(&self, target: &RepoName, digest: &Digest, record: &PromotionRecord) -> Result<()> {
        let key = Key::PromotionRecord { target, digest }.to_string();
        self.store.put_small(&key, encode(record), PutCondition::Always).await?;
        Ok(())
    }

    /// The record of the promotion of `digest` into `target`. One that does not decode counts as
    /// absent: `fsck` names it, and the next promotion of that digest writes it anew.
    pub async fn promotion_record(&self, target: &RepoName, digest: &Digest) -> Result<Option<PromotionRecord>> {
        self.read_promotion_record(&Key::PromotionRecord { target, digest }.to_string()).await
    }

    /// Records of promotions into `target` in the order of their digests, from one listing of at
    /// most `limit` names; those that do not decode are skipped.
    pub async fn promotion_records(&self, target: &RepoName, limit: usize) -> Result<Vec<PromotionRecord>> {
        let prefix = Prefix::PromotionRecords(target).to_string();
        let page = self.store.list(&prefix, None, limit, true).await?;
        let mut records = Vec::new();
        for name in &page.entries {
            if let Some(record) = self.read_promotion_record(&format!("{prefix}{name}")).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn read_promotion_record(&self, key: &str) -> Result<Option<PromotionRecord>> {
        let object = self.store.get_small(key, MAX_RECORD).await?;
        Ok(object.and_then(|object| serde_json::from_slice(&object.bytes).ok()))
    }
}

/// Checks that `bytes` stored under `key` are the record of the promotion of `digest` into
/// `target`, for `fsck`.
pub(super) fn check(key: &str, bytes: &[u8], target: &RepoName, digest: &Digest) -> Result<()> {
    let corrupt = |message: String| Err(MetadataError::Corrupt { key: key.to_owned(), message });
    match serde_json::from_slice::<PromotionRecord>(bytes) {
        Err(err) => corrupt(format!("not a promotion record: {err}")),
        Ok(record) if record.target != target.as_str() || record.digest != digest.to_string() => {
            corrupt(format!("records the promotion of {} into {}, not what its key names", record.digest, record.target))
        }
        Ok(_) => Ok(()),
    }
}
