//! Scrub: every piece of stored content is read again and hashed, at a bounded rate
//! ([`Throttle`]), and content whose bytes do not hash to its digest is quarantined: moved aside
//! (`metadata::quarantine`), so that reads answer `BLOB_UNKNOWN` / `MANIFEST_UNKNOWN` naming the
//! quarantine instead of serving it, and a push of the right bytes stores it again. Each such
//! object is an audit record (`scrub_corrupt`) and counts in `portcullis_scrub_corrupt_total`.
//! Manifests are also verified whenever they are read to be served (`Registry::stored_manifest`),
//! which quarantines them the same way. The lease and the schedule are `crate::scrub`'s.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use storage::{BlobStoreError, Digest, ObjectMeta};

use super::{Registry, RegistryError, Result};
use crate::metadata::MetadataError;
use crate::names::RepoName;

/// Repositories looked at to name those that link a corrupt object.
const LINK_SCAN_LIMIT: usize = 10_000;

/// A pass's pace: at most `per_tick` bytes are read in each tick (a tenth of a second in the
/// server), so `bytes_per_second` bounds the pass however fast the store answers. Bytes are paid
/// for a batch (about 1 MiB) at a time, before the batch after next is read.
#[derive(Debug)]
pub struct Throttle {
    per_tick: u64,
    left: u64,
    ticks: tokio::time::Interval,
    waited: u64,
}

/// The tick of the server's and the CLI's passes.
pub const TICK: Duration = Duration::from_millis(100);

impl Throttle {
    /// A pace of `bytes_per_second` in ticks of `tick`; at least a byte per tick.
    pub fn new(bytes_per_second: u64, tick: Duration) -> Throttle {
        let per_tick = (u128::from(bytes_per_second) * tick.as_nanos() / 1_000_000_000).clamp(1, u128::from(u64::MAX)) as u64;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        // A tick missed while hashing does not bank bytes for a burst later.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Throttle { per_tick, left: per_tick, ticks, waited: 0 }
    }

    /// Waits until `bytes` more may be read: each tick grants `per_tick` bytes and no more.
    pub async fn spend(&mut self, mut bytes: u64) {
        while bytes > 0 {
            if self.left == 0 {
                self.ticks.tick().await;
                self.left = self.per_tick;
                self.waited += 1;
            }
            let take = bytes.min(self.left);
            self.left -= take;
            bytes -= take;
        }
    }

    /// Bytes granted per tick.
    pub fn per_tick(&self) -> u64 {
        self.per_tick
    }

    /// Ticks waited for so far.
    pub fn ticks(&self) -> u64 {
        self.waited
    }
}

/// What a piece of content is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    /// A blob (a layer, a config, anything not pushed as a manifest).
    Blob,
    /// A manifest (its digest has a recorded manifest type).
    Manifest,
}

impl ContentKind {
    /// Its name in reports, metrics and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Blob => "blob",
            ContentKind::Manifest => "manifest",
        }
    }
}

/// Content whose bytes did not hash to its digest.
#[derive(Debug, Clone, Serialize)]
pub struct Corrupt {
    /// The digest it is stored under.
    pub digest: String,
    /// What it is.
    pub kind: ContentKind,
    /// Bytes stored.
    pub size: u64,
    /// What the stored bytes hash to.
    pub actual: String,
    /// Repositories that link it (the first [`LINK_SCAN_LIMIT`] repositories are looked at).
    pub repositories: Vec<String>,
    /// Whether it was moved to the quarantine (not when it changed meanwhile).
    pub quarantined: bool,
}

/// A quarantined object still waiting for its right bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// The digest.
    pub digest: String,
    /// What it is.
    pub kind: ContentKind,
    /// Bytes of the quarantined copy.
    pub size: u64,
}

/// What a pass found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scrubbed {
    /// Objects hashed.
    pub objects: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Corrupt content found (and quarantined) by this pass.
    pub corrupt: Vec<Corrupt>,
    /// Quarantined digests whose right bytes were pushed again: their copies were dropped.
    pub healed: Vec<String>,
    /// Quarantined digests that no repository links any more (deleted or collected since): their
    /// copies were dropped, there is nothing left to heal.
    pub forgotten: Vec<String>,
    /// Everything in the quarantine after the pass (earlier passes' finds included).
    pub quarantined: Vec<Quarantined>,
}

impl Registry {
    /// Hashes every piece of stored content at `throttle`'s pace, quarantines what does not match
    /// its digest, and drops the quarantined copies of content that is stored intact again.
    pub async fn scrub_pass(&self, throttle: &mut Throttle) -> Result<Scrubbed> {
        let waiting: HashSet<Digest> = self.metadata.quarantine_list().await?.into_iter().map(|(digest, _)| digest).collect();
        let mut scrubbed = Scrubbed::default();
        let mut after: Option<String> = None;
        loop {
            let page = self.metadata.content_page(after.as_deref()).await?;
            for (digest, meta) in &page.entries {
                let Some(actual) = self.hash_content(digest, throttle).await? else { continue };
                scrubbed.objects += 1;
                scrubbed.bytes += meta.size;
                self.metrics.scrub_checked_objects.inc();
                self.metrics.scrub_checked_bytes.inc_by(meta.size);
                if actual == *digest {
                    if waiting.contains(digest) {
                        self.metadata.release_quarantined(digest).await?;
                        tracing::info!(digest = %digest, "quarantined content is stored intact again; its copy is dropped");
                        scrubbed.healed.push(digest.to_string());
                    }
                    continue;
                }
                // Read it again before acting: a fault of one read is not corruption.
                if self.hash_content(digest, throttle).await?.as_ref() != Some(&actual) {
                    continue;
                }
                scrubbed.corrupt.extend(self.corrupt_found(digest, meta, actual, "scrub").await?);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        for (digest, meta) in self.metadata.quarantine_list().await? {
            if self.metadata.content_size(&digest).await?.is_none() && self.linking_repositories(&digest).await? == (Vec::new(), true) {
                self.metadata.release_quarantined(&digest).await?;
                scrubbed.forgotten.push(digest.to_string());
                continue;
            }
            let kind = self.content_kind(&digest).await?;
            scrubbed.quarantined.push(Quarantined { digest: digest.to_string(), kind, size: meta.size });
        }
        Ok(scrubbed)
    }

    /// Quarantines content found corrupt (by a scrub pass or a read), names the repositories that
    /// link it, and records it in the audit log and the metrics; `None` when another reader or
    /// pass quarantined it first (and recorded it).
    pub(super) async fn corrupt_found(&self, digest: &Digest, meta: &ObjectMeta, actual: Digest, found_by: &str) -> Result<Option<Corrupt>> {
        let quarantined = self.metadata.quarantine_content(digest, meta).await?;
        if !quarantined && self.metadata.content_size(digest).await?.is_none() {
            return Ok(None);
        }
        let kind = self.content_kind(digest).await?;
        let (repositories, _) = self.linking_repositories(digest).await?;
        tracing::error!(digest = %digest, actual = %actual, kind = kind.as_str(), quarantined, found_by, "stored content does not match its digest");
        self.metrics.scrub_corrupt.with_label_values(&[kind.as_str()]).inc();
        let detail = serde_json::json!({
            "kind": kind.as_str(),
            "size": meta.size,
            "actual": actual.to_string(),
            "found_by": found_by,
            "quarantined": quarantined,
            "repositories": repositories,
        });
        let repository = repositories.first().map(String::as_str).unwrap_or_default();
        self.log_audit("scrub_corrupt", "portcullis", repository.to_owned(), digest.to_string(), detail).await;
        Ok(Some(Corrupt { digest: digest.to_string(), kind, size: meta.size, actual: actual.to_string(), repositories, quarantined }))
    }

    /// The error a read of `digest` gets when its content is not stored: quarantined, or unknown.
    pub(super) async fn content_missing(&self, digest: &Digest, kind: ContentKind) -> RegistryError {
        match self.metadata.quarantined(digest).await {
            Ok(Some(_)) => RegistryError::Quarantined { digest: digest.clone(), kind },
            Ok(None) => match kind {
                ContentKind::Blob => RegistryError::BlobUnknown(digest.clone()),
                ContentKind::Manifest => RegistryError::ManifestUnknown(digest.to_string()),
            },
            Err(err) => err.into(),
        }
    }

    /// What `digest`'s bytes hash to, read whole at `throttle`'s pace; `None` when it is gone.
    async fn hash_content(&self, digest: &Digest, throttle: &mut Throttle) -> Result<Option<Digest>> {
        let Some(reader) = self.metadata.open_content(digest, None).await? else { return Ok(None) };
        let hasher = storage::digest::Hasher::new();
        // The tap hashes batches of about 1 MiB on the blocking pool while the next is read.
        let mut body = hasher.tap(reader.body);
        while let Some(batch) = body.next().await {
            let batch = batch.map_err(|err| MetadataError::Store(BlobStoreError::Io(err)))?;
            throttle.spend(batch.len() as u64).await;
        }
        Ok(Some(hasher.digest()))
    }

    async fn content_kind(&self, digest: &Digest) -> Result<ContentKind> {
        Ok(match self.metadata.manifest_type(digest).await? {
            Some(_) => ContentKind::Manifest,
            None => ContentKind::Blob,
        })
    }

    /// Repositories (among the first [`LINK_SCAN_LIMIT`]) that link `digest` as a blob or a
    /// manifest, and whether every repository was looked at.
    async fn linking_repositories(&self, digest: &Digest) -> Result<(Vec<String>, bool)> {
        let mut found = Vec::new();
        let mut last: Option<RepoName> = None;
        let mut looked = 0;
        loop {
            let page = self.metadata.catalog(last.as_ref(), 1000).await?;
            for name in &page.entries {
                let Ok(repo) = name.parse::<RepoName>() else { continue };
                if self.metadata.blob_linked(&repo, digest).await? || self.metadata.manifest_link(&repo, digest).await?.is_some() {
                    found.push(repo.to_string());
                }
                looked += 1;
                last = Some(repo);
            }
            if !page.truncated || last.is_none() {
                return Ok((found, true));
            }
            if looked >= LINK_SCAN_LIMIT {
                return Ok((found, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pace is counted, not timed: a pass of `total` bytes waits for exactly as many ticks as
    // it needs beyond the first, so no tick granted more than `per_tick`.
    #[tokio::test]
    async fn the_throttle_grants_per_tick_bytes_and_no_more() {
        for (bytes_per_second, chunk, total) in [(100_000, 333, 10_000), (100_000, 100, 10_000), (10_000_000, 1 << 20, 1 << 20), (1, 10, 10)] {
            let mut throttle = Throttle::new(bytes_per_second, Duration::from_millis(1));
            let per_tick = throttle.per_tick();
            assert_eq!(per_tick, (bytes_per_second / 1000).max(1));
            let mut spent = 0;
            while spent < total {
                let n = chunk.min(total - spent);
                throttle.spend(n).await;
                spent += n;
                assert!(spent <= per_tick * (throttle.ticks() + 1), "{spent} bytes after {} ticks of {per_tick}", throttle.ticks());
            }
            assert_eq!(throttle.ticks(), total.div_ceil(per_tick) - 1, "{bytes_per_second} B/s in chunks of {chunk}");
        }
    }
}
