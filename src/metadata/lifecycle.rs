//! What garbage collection keeps in the store, and the reads it needs: the lease one collector
//! holds at a time (`leases/<name>`), the sweep state of a pass (`gc/sweep`) with the buckets of
//! keys it may remove (`gc/doomed/<hex prefix>`), listings with each object's size and time of
//! last write, and the touch a push gives an old link so that a pass leaves it alone. The protocol
//! these serve is in ARCHITECTURE.md (Lifecycles, Collection) and `registry::collect`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use storage::{BlobStoreError, Digest, ETag, ObjectMeta, PutCondition};

use super::{decode, encode, layout, Key, Metadata, MetadataError, Prefix, Result, SMALL_LIMIT};
use crate::names::{RepoName, Tag};

/// Entries listed per page.
const PAGE: usize = 1000;

/// `gc/sweep`: a collection pass that may remove what its buckets list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRecord {
    /// The pass, a random id; its buckets carry it.
    pub pass: String,
    /// Whether its buckets are complete and it may delete what they list.
    pub claimed: bool,
    /// When the pass began marking, by the store's clock (seconds since the Unix epoch): nothing
    /// written since then is removed by it.
    pub marked: i64,
    /// Hex digits of a victim key's sha256 that name its bucket.
    pub digits: u8,
}

/// A sweep record as read, with its version for a conditional rewrite.
#[derive(Debug, Clone)]
pub struct StoredSweep {
    /// What it says.
    pub record: SweepRecord,
    /// Its version.
    pub etag: ETag,
}

/// `gc/doomed/<prefix>`: the keys of one bucket that a pass may remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoomedBucket {
    /// The pass that wrote it.
    pub pass: String,
    /// Keys, sorted.
    pub victims: Vec<String>,
}

/// `leases/<name>`: who holds the lease, and until when by their clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder, a random id per process and lease.
    pub holder: String,
    /// Seconds since the Unix epoch after which others may take it over.
    pub expires: i64,
}

/// A lease as read, with its version.
#[derive(Debug, Clone)]
pub struct StoredLease {
    /// What it says.
    pub record: LeaseRecord,
    /// Its version.
    pub etag: ETag,
}

/// The bucket a key is listed in, for a pass that names buckets by `digits` hex digits.
pub fn bucket_of(key: &str, digits: u8) -> String {
    Digest::of(key.as_bytes()).hex()[..usize::from(digits)].to_owned()
}

/// Seconds since the Unix epoch of a store time (0 before it).
pub fn epoch_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Metadata {
    /// The pass sweeping now, if any.
    pub async fn sweep(&self) -> Result<Option<StoredSweep>> {
        let key = Key::Sweep.to_string();
        match self.store.get_small(&key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(StoredSweep { record: decode(&key, &object.bytes)?, etag: object.etag })),
            None => Ok(None),
        }
    }

    /// Writes the sweep record under `condition`; returns its version and the store's time of the
    /// write. `Store(PreconditionFailed)` when the condition does not hold.
    pub async fn put_sweep(&self, record: &SweepRecord, condition: PutCondition) -> Result<(ETag, SystemTime)> {
        let key = Key::Sweep.to_string();
        let etag = self.store.put_small(&key, encode(record), condition).await?;
        let meta = self.store.stat(&key).await?.ok_or_else(|| MetadataError::Corrupt { key, message: "written and then gone".to_owned() })?;
        Ok((etag, meta.modified))
    }

    /// Ends a pass: removes its sweep record.
    pub async fn delete_sweep(&self) -> Result<()> {
        Ok(self.store.delete(&Key::Sweep.to_string()).await?)
    }

    /// The bucket `prefix` of the pass sweeping now; empty when it is absent or another pass's.
    pub async fn doomed(&self, pass: &str, prefix: &str) -> Result<DoomedBucket> {
        let bucket: Option<DoomedBucket> = self.read(&Key::Doomed(prefix).to_string()).await?;
        Ok(bucket.filter(|bucket| bucket.pass == pass).unwrap_or_default())
    }

    /// Writes one bucket of a pass.
    pub async fn put_doomed(&self, prefix: &str, bucket: &DoomedBucket) -> Result<()> {
        let bytes = encode(bucket);
        if bytes.len() > SMALL_LIMIT {
            return Err(MetadataError::Corrupt { key: Key::Doomed(prefix).to_string(), message: format!("a bucket of {} bytes", bytes.len()) });
        }
        self.store.put_small(&Key::Doomed(prefix).to_string(), bytes, PutCondition::Always).await?;
        Ok(())
    }

    /// Names (hex prefixes) of the buckets in the store, of any pass.
    pub async fn doomed_buckets(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.walk_meta(&Prefix::Doomed.to_string(), |name, _| names.push(name.to_owned())).await?;
        Ok(names)
    }

    /// Removes one bucket.
    pub async fn delete_doomed(&self, prefix: &str) -> Result<()> {
        Ok(self.store.delete(&Key::Doomed(prefix).to_string()).await?)
    }

    /// The lease `name`, if anyone holds or held it.
    pub async fn lease(&self, name: &str) -> Result<Option<StoredLease>> {
        let key = Key::Lease(name).to_string();
        match self.store.get_small(&key, SMALL_LIMIT).await? {
            Some(object) => Ok(Some(StoredLease { record: decode(&key, &object.bytes)?, etag: object.etag })),
            None => Ok(None),
        }
    }

    /// Writes the lease under `condition` (create-only to take a free one, `IfMatch` to renew or
    /// take over); `None` when the condition failed (someone else got there first).
    pub async fn put_lease(&self, name: &str, record: &LeaseRecord, condition: PutCondition) -> Result<Option<ETag>> {
        match self.store.put_small(&Key::Lease(name).to_string(), encode(record), condition).await {
            Ok(etag) => Ok(Some(etag)),
            Err(BlobStoreError::PreconditionFailed(_)) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Gives the lease up, if it is still ours (a version check, then the delete: a holder that
    /// took it over in between gets it back at its next renewal, which fails only for us).
    pub async fn release_lease(&self, name: &str, etag: &ETag) -> Result<()> {
        if self.lease(name).await?.is_some_and(|lease| lease.etag == *etag) {
            self.store.delete(&Key::Lease(name).to_string()).await?;
        }
        Ok(())
    }

    /// Tag names of `repo` with their times of last write (when they were bound).
    pub async fn tags_with_times(&self, repo: &RepoName) -> Result<Vec<(String, ObjectMeta)>> {
        self.listed(Prefix::Tags(repo)).await
    }

    /// Manifest revisions of `repo` (digest hex) with their times of last write.
    pub async fn manifests_with_times(&self, repo: &RepoName) -> Result<Vec<(String, ObjectMeta)>> {
        self.listed(Prefix::Manifests(repo)).await
    }

    /// Blob links of `repo` (digest hex) with their times of last write.
    pub async fn blob_links_with_times(&self, repo: &RepoName) -> Result<Vec<(String, ObjectMeta)>> {
        self.listed(Prefix::BlobLinks(repo)).await
    }

    /// Tombstoned tag names of `repo`.
    pub async fn tombstones(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest)>> {
        let mut found = Vec::new();
        for (name, _) in self.listed(Prefix::Tombstones(repo)).await? {
            let Ok(tag) = name.parse::<Tag>() else { continue };
            if let Some(record) = self.tombstone(repo, &tag).await? {
                found.extend(record.digest.parse::<Digest>().ok().map(|digest| (tag, digest)));
            }
        }
        Ok(found)
    }

    /// Every referrer link of `repo` as (subject, referrer).
    pub async fn referrer_pairs(&self, repo: &RepoName) -> Result<Vec<(Digest, Digest)>> {
        let mut pairs = Vec::new();
        self.walk_meta(&Prefix::AllReferrers(repo).to_string(), |entry, _| {
            if let Some((subject, referrer)) = entry.split_once('/') {
                if let (Some(subject), Some(referrer)) = (layout::digest_of_hex(subject), layout::digest_of_hex(referrer)) {
                    pairs.push((subject, referrer));
                }
            }
        })
        .await?;
        Ok(pairs)
    }

    /// Digests with a proxy record in `repo`: content the proxy's own cap evicts.
    pub async fn proxied_digests(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        Ok(self.listed(Prefix::Proxied(repo)).await?.iter().filter_map(|(hex, _)| layout::digest_of_hex(hex)).collect())
    }

    /// Every piece of stored content with its size and time of writing, in digest order, given to
    /// `each` page by page (there may be millions).
    pub async fn walk_content(&self, mut each: impl FnMut(Digest, &ObjectMeta)) -> Result<()> {
        self.walk_meta(&Prefix::Blobs.to_string(), |entry, meta| {
            if let Some(digest) = layout::blob_entry_digest(entry) {
                each(digest, meta);
            }
        })
        .await
    }

    /// Size and time of last write of the object under `key`, `None` when absent.
    pub async fn stat_key(&self, key: &Key<'_>) -> Result<Option<ObjectMeta>> {
        Ok(self.store.stat(&key.to_string()).await?)
    }

    /// Removes the object under `key` (the collector's only delete).
    pub async fn delete_key(&self, key: &str) -> Result<()> {
        Ok(self.store.delete(key).await?)
    }

    /// Makes an old link (blob or manifest link) look new to collection, if it was written more
    /// than `older_than` ago: writes the same bytes again, only over the version just read, so a
    /// link removed meanwhile is not brought back. Returns whether the link is there (touched,
    /// young enough not to need it, or rewritten by someone else meanwhile).
    pub async fn touch(&self, key: &Key<'_>, older_than: Duration) -> Result<bool> {
        let key = key.to_string();
        let Some(meta) = self.store.stat(&key).await? else { return Ok(false) };
        if meta.modified > SystemTime::now() - older_than {
            return Ok(true);
        }
        let Some(object) = self.store.get_small(&key, SMALL_LIMIT).await? else { return Ok(false) };
        match self.store.put_small(&key, object.bytes, PutCondition::IfMatch(object.etag)).await {
            Ok(_) => Ok(true),
            // Changed since it was read: rewritten (new) or removed.
            Err(BlobStoreError::PreconditionFailed(_)) => Ok(self.store.stat(&key).await?.is_some()),
            Err(err) => Err(err.into()),
        }
    }

    /// Every entry below `prefix` with its metadata.
    async fn listed(&self, prefix: Prefix<'_>) -> Result<Vec<(String, ObjectMeta)>> {
        let mut entries = Vec::new();
        self.walk_meta(&prefix.to_string(), |name, meta| entries.push((name.to_owned(), meta.clone()))).await?;
        Ok(entries)
    }

    pub(super) async fn walk_meta(&self, prefix: &str, mut each: impl FnMut(&str, &ObjectMeta)) -> Result<()> {
        let mut last: Option<String> = None;
        loop {
            let page = self.store.list_meta(prefix, last.as_deref(), PAGE).await?;
            for (name, meta) in &page.entries {
                each(name, meta);
            }
            match (page.truncated, page.entries.last()) {
                (true, Some((name, _))) => last = Some(name.clone()),
                _ => return Ok(()),
            }
        }
    }
}

impl Metadata {
    /// Whether an object is stored under `key` (a key built by [`Key`]).
    pub async fn present(&self, key: &str) -> Result<bool> {
        self.exists(key).await
    }
}

impl Metadata {
    /// Digests promoted into `target` (their promotion records' names).
    pub async fn promoted_digests(&self, target: &RepoName) -> Result<Vec<Digest>> {
        Ok(self.listed(Prefix::PromotionRecords(target)).await?.iter().filter_map(|(hex, _)| layout::digest_of_hex(hex)).collect())
    }
}
