//! Garbage collection's walks and its sweep (the protocol is in ARCHITECTURE.md, Lifecycles:
//! Collection, and the push side in `fence`).
//!
//! A mark walks every repository: tags (less those retention removes, judged by push times and
//! recorded pull times), tombstones, promotion records, proxied content, the digests admitted
//! workloads run, and every manifest younger than the cut-off are roots; kept manifests keep
//! their children and their referrers; kept manifests keep the blob links of the blobs they name.
//! What is left and older than the cut-off is a victim: tags, manifest links (with their
//! referrer and parent links and pull records), blob links, then content that no kept link and
//! no kept manifest names. A protected namespace (promotion-only, immutable or write-once tags)
//! and a repository that maps to an upstream (the proxy's cap evicts from it) lose nothing.
//!
//! A pass marks once, writes the victims into buckets, claims them (from then on a push that
//! needs a listed key waits for the pass), marks again and deletes what both marks found, tags
//! and links first and content last.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use serde::Serialize;
use storage::{Digest, PutCondition};

use super::{Registry, RegistryError, Result};
use crate::metadata::layout::Key;
use crate::metadata::lifecycle::{bucket_of, epoch_secs, DoomedBucket, SweepRecord};
use crate::names::{RepoName, Tag};
use crate::policy::namespaces::TagMode;
use crate::policy::retention::TagFacts;

/// Repositories listed per catalog page.
const PAGE: usize = 1000;
/// Admission records read per mark (the drift check's bound).
const MAX_ADMISSIONS: usize = 100_000;
/// Promotion records read per repository.
const MAX_PROMOTIONS: usize = 100_000;
/// Deletes in flight at once.
const DELETES: usize = 32;
/// Keys per bucket aimed for, so a bucket stays far below the 64 KiB of a small object.
const BUCKET_KEYS: usize = 200;
/// The most victims one pass removes; the rest is the next pass's.
const MAX_VICTIMS: usize = 1 << 20;

/// What a victim is, in the order a sweep deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VictimKind {
    /// A tag retention removes.
    Tag,
    /// A referrer link of a removed manifest.
    ReferrerLink,
    /// A parent link of a removed index.
    ParentLink,
    /// The pull record of a removed (or deleted) manifest.
    PullRecord,
    /// A manifest revision in a repository.
    Manifest,
    /// A blob link no kept manifest names.
    BlobLink,
    /// Stored bytes nothing links.
    Content,
}

/// One object a pass removes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Victim {
    /// Its key in the store.
    pub key: String,
    /// What it is.
    pub kind: VictimKind,
    /// Bytes reclaimed (content only; metadata objects count 0).
    pub bytes: u64,
}

/// A pass's outcome.
#[derive(Debug, Clone, Default)]
pub struct Swept {
    /// What was removed, in deletion order.
    pub removed: Vec<Victim>,
    /// Whether a pass left unfinished by a collector that died was finished first.
    pub resumed: bool,
    /// The pass's id (its sweep record's and its buckets').
    pub pass: String,
}

/// Whether `time` is before `cutoff` (old enough to remove), to the second: S3 keeps whole
/// seconds, so a time in the cut-off's second counts as young.
fn older(time: SystemTime, cutoff: i64) -> bool {
    epoch_secs(time) < cutoff
}

fn digest_of(hex: &str) -> Option<Digest> {
    crate::metadata::layout::digest_of_hex(hex)
}

impl Registry {
    /// Every victim with the cut-off `cutoff` (seconds since the Unix epoch, store clock):
    /// nothing written at or after it is one.
    pub async fn gc_mark(&self, cutoff: i64) -> Result<Vec<Victim>> {
        let mut admitted: HashSet<(String, Digest)> = HashSet::new();
        let (records, _) = self.metadata.admissions(MAX_ADMISSIONS).await?;
        for record in records {
            for image in record.images {
                admitted.extend(image.digest.parse::<Digest>().ok().map(|digest| (image.repository, digest)));
            }
        }
        let mut linked: HashSet<Digest> = HashSet::new();
        let mut victims = Vec::new();
        let mut last: Option<RepoName> = None;
        loop {
            let page = self.metadata.catalog(last.as_ref(), PAGE).await?;
            for name in &page.entries {
                let Ok(repo) = name.parse::<RepoName>() else { continue };
                self.mark_repository(&repo, cutoff, &admitted, &mut linked, &mut victims).await?;
                last = Some(repo);
            }
            if !page.truncated || page.entries.is_empty() {
                break;
            }
        }
        self.metadata
            .walk_content(|digest, meta| {
                if !linked.contains(&digest) && older(meta.modified, cutoff) {
                    victims.push(Victim { key: Key::Blob(&digest).to_string(), kind: VictimKind::Content, bytes: meta.size });
                }
            })
            .await?;
        victims.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.key.cmp(&b.key)));
        victims.truncate(MAX_VICTIMS);
        Ok(victims)
    }

    async fn mark_repository(
        &self,
        repo: &RepoName,
        cutoff: i64,
        admitted: &HashSet<(String, Digest)>,
        linked: &mut HashSet<Digest>,
        victims: &mut Vec<Victim>,
    ) -> Result<()> {
        let manifests: HashMap<Digest, SystemTime> = self
            .metadata
            .manifests_with_times(repo)
            .await?
            .into_iter()
            .filter_map(|(hex, meta)| Some((digest_of(&hex)?, meta.modified)))
            .collect();
        let blob_links: Vec<(Digest, SystemTime)> =
            self.metadata.blob_links_with_times(repo).await?.into_iter().filter_map(|(hex, meta)| Some((digest_of(&hex)?, meta.modified))).collect();
        let keep_all = |linked: &mut HashSet<Digest>| {
            linked.extend(manifests.keys().cloned());
            linked.extend(blob_links.iter().map(|(digest, _)| digest.clone()));
        };
        // A protected namespace keeps its content; a proxied repository is the proxy's, whose
        // cap evicts from it (its tags mirror the upstream's, not pushes).
        if self.protection(repo).is_some() || self.proxy.mapped(repo).is_some() {
            keep_all(linked);
            return Ok(());
        }
        let retention = self.config().namespace(repo.as_str()).map(|ns| ns.retention.clone()).unwrap_or_default();

        // Tags, and those retention removes.
        let mut tags: Vec<(Tag, Digest, SystemTime)> = Vec::new();
        for (name, meta) in self.metadata.tags_with_times(repo).await? {
            let Ok(tag) = name.parse::<Tag>() else { continue };
            let Some(stored) = self.metadata.tag(repo, &tag).await? else { continue };
            let Ok(digest) = stored.record.digest.parse::<Digest>() else { continue };
            tags.push((tag, digest, meta.modified));
        }
        let pulls: HashMap<Digest, SystemTime> = self.metadata.pulls(repo).await?.into_iter().collect();
        let promoted: HashSet<Digest> = self.metadata.promoted_digests(repo).await?.into_iter().take(MAX_PROMOTIONS).collect();
        let facts: Vec<TagFacts> = tags
            .iter()
            .map(|(tag, digest, modified)| TagFacts {
                name: tag.to_string(),
                pushed: epoch_secs(*modified),
                pulled: pulls.get(digest).map(|pulled| epoch_secs(*pulled)),
                // Immutable and write-once tags, and tags of promoted content, are never removed.
                fixed: self.tag_rule(repo, tag).mode != TagMode::Mutable || promoted.contains(digest),
            })
            .collect();
        let expired: HashSet<String> = retention.expired(&facts, cutoff).into_iter().collect();
        let mut roots: Vec<Digest> = Vec::new();
        for (tag, digest, modified) in &tags {
            if expired.contains(tag.as_str()) && older(*modified, cutoff) {
                victims.push(Victim { key: Key::Tag(repo, tag).to_string(), kind: VictimKind::Tag, bytes: 0 });
            } else if tag.cosign_subject().is_none() {
                roots.push(digest.clone());
            }
        }
        roots.extend(self.metadata.tombstones(repo).await?.into_iter().map(|(_, digest)| digest));
        let proxied: HashSet<Digest> = self.metadata.proxied_digests(repo).await?.into_iter().collect();
        roots.extend(proxied.iter().cloned());
        roots.extend(promoted.iter().cloned());
        roots.extend(admitted.iter().filter(|(name, _)| name == repo.as_str()).map(|(_, digest)| digest.clone()));
        for (digest, modified) in &manifests {
            if retention.untagged.is_none() || !older(*modified, cutoff - retention.untagged.unwrap_or_default().as_secs() as i64) {
                roots.push(digest.clone());
            }
        }

        // Kept manifests: the roots, their children and their referrers (and cosign's tags
        // about them).
        let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (subject, referrer) in self.metadata.referrer_pairs(repo).await? {
            referrers.entry(subject).or_default().push(referrer);
        }
        let cosign: HashMap<String, Vec<Digest>> = tags
            .iter()
            .filter(|(tag, ..)| !expired.contains(tag.as_str()))
            .filter_map(|(tag, digest, _)| Some((tag.cosign_subject()?.to_string(), digest.clone())))
            .fold(HashMap::new(), |mut map, (subject, digest)| {
                map.entry(subject).or_insert_with(Vec::new).push(digest);
                map
            });
        let mut kept: HashSet<Digest> = HashSet::new();
        let mut summaries = HashMap::new();
        let mut queue: Vec<Digest> = roots;
        while let Some(digest) = queue.pop() {
            if !manifests.contains_key(&digest) || !kept.insert(digest.clone()) {
                continue;
            }
            let summary = match self.summary(&digest).await {
                Ok(summary) => summary,
                Err(err) => {
                    // What it references is unknown: keep the whole repository this pass.
                    tracing::warn!(repo = %repo, digest = %digest, error = %err, "cannot read a kept manifest; nothing of the repository is collected");
                    keep_all(linked);
                    return Ok(());
                }
            };
            queue.extend(summary.manifests.iter().filter_map(|child| child.parse().ok()));
            queue.extend(referrers.get(&digest).into_iter().flatten().cloned());
            queue.extend(cosign.get(&digest.to_string()).into_iter().flatten().cloned());
            summaries.insert(digest, summary);
        }
        // Cosign tags whose subject goes go with it.
        for (tag, _, modified) in &tags {
            let Some(subject) = tag.cosign_subject() else { continue };
            if !expired.contains(tag.as_str()) && manifests.contains_key(&subject) && !kept.contains(&subject) && older(*modified, cutoff) {
                victims.push(Victim { key: Key::Tag(repo, tag).to_string(), kind: VictimKind::Tag, bytes: 0 });
            }
        }

        // Removed manifests, with the referrer and parent links they made.
        for (digest, modified) in &manifests {
            if kept.contains(digest) || !older(*modified, cutoff) {
                continue;
            }
            victims.push(Victim { key: Key::ManifestLink(repo, digest).to_string(), kind: VictimKind::Manifest, bytes: 0 });
            if let Ok(summary) = self.summary(digest).await {
                if let Some(subject) = summary.subject.as_deref().and_then(|s| s.parse::<Digest>().ok()) {
                    victims.push(Victim { key: Key::Referrer { repo, subject: &subject, referrer: digest }.to_string(), kind: VictimKind::ReferrerLink, bytes: 0 });
                }
                for child in summary.manifests.iter().filter_map(|c| c.parse::<Digest>().ok()) {
                    victims.push(Victim { key: Key::Parent { repo, child: &child, parent: digest }.to_string(), kind: VictimKind::ParentLink, bytes: 0 });
                }
            }
        }
        // Pull records of what is no longer (or soon no longer) in the repository.
        for (digest, pulled) in &pulls {
            if !kept.contains(digest) && !manifests.get(digest).is_some_and(|modified| !older(*modified, cutoff)) && older(*pulled, cutoff) {
                victims.push(Victim { key: Key::Pulled(repo, digest).to_string(), kind: VictimKind::PullRecord, bytes: 0 });
            }
        }
        linked.extend(kept.iter().cloned());

        // Blob links that no kept manifest names.
        let mut named: HashSet<Digest> = HashSet::new();
        for summary in summaries.values() {
            named.extend(summary.blobs.iter().filter_map(|blob| blob.parse().ok()));
        }
        for (digest, modified) in &blob_links {
            if named.contains(digest) || proxied.contains(digest) || !older(*modified, cutoff) {
                linked.insert(digest.clone());
            } else {
                victims.push(Victim { key: Key::BlobLink(repo, digest).to_string(), kind: VictimKind::BlobLink, bytes: 0 });
            }
        }
        // Content a kept manifest names stays, linked here or not (a proxied manifest's blobs
        // arrive later).
        linked.extend(named);
        Ok(())
    }

    /// One collection pass (the caller holds the lease): finishes a claimed pass a dead collector
    /// left, then marks, claims, marks again and deletes.
    pub async fn gc_pass(&self) -> Result<Swept> {
        let mut swept = Swept::default();
        if let Some(left) = self.metadata.sweep().await? {
            if left.record.claimed {
                swept.removed = self.gc_finish(&left.record, Instant::now()).await?;
                swept.resumed = true;
            } else {
                // It deleted nothing yet: forget it.
                self.gc_clear().await?;
            }
        }
        let pass = uuid::Uuid::new_v4().to_string();
        swept.pass = pass.clone();
        let opening = SweepRecord { pass: pass.clone(), claimed: false, marked: 0, digits: 0 };
        let started = Instant::now();
        let (etag, marked) = match self.metadata.put_sweep(&opening, PutCondition::IfAbsent).await {
            Ok(written) => written,
            Err(crate::metadata::MetadataError::Store(storage::BlobStoreError::PreconditionFailed(_))) => {
                return Err(RegistryError::Unavailable("another collection pass is sweeping (is the lease shared?)".to_owned()));
            }
            Err(err) => return Err(err.into()),
        };
        let marked = epoch_secs(marked);
        let first = self.gc_mark(marked - self.config().gc.grace.as_secs() as i64).await?;
        let digits = digits_for(first.len());
        let mut buckets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for victim in &first {
            buckets.entry(bucket_of(&victim.key, digits)).or_default().push(victim.key.clone());
        }
        for (prefix, mut victims) in buckets {
            victims.sort();
            self.metadata.put_doomed(&prefix, &DoomedBucket { pass: pass.clone(), victims }).await?;
        }
        let claimed = SweepRecord { pass, claimed: true, marked, digits };
        self.metadata.put_sweep(&claimed, PutCondition::IfMatch(etag)).await?;
        // Tests stop here to kill the collector with its pass claimed.
        fail::fail_point!("gc-claimed");
        swept.removed.extend(self.gc_finish(&claimed, started).await?);
        Ok(swept)
    }

    /// Marks again and deletes what the claimed pass's buckets list and the mark still finds,
    /// then ends the pass (no sooner than the fence window after `started`).
    async fn gc_finish(&self, sweep: &SweepRecord, started: Instant) -> Result<Vec<Victim>> {
        let grace = self.config().gc.grace;
        let second = self.gc_mark(sweep.marked - grace.as_secs() as i64).await?;
        let mut listed: HashSet<String> = HashSet::new();
        let mut cache: HashMap<String, DoomedBucket> = HashMap::new();
        for victim in &second {
            let prefix = bucket_of(&victim.key, sweep.digits);
            if !cache.contains_key(&prefix) {
                let bucket = self.metadata.doomed(&sweep.pass, &prefix).await?;
                cache.insert(prefix.clone(), bucket);
            }
            if cache.get(&prefix).is_some_and(|bucket| bucket.victims.binary_search(&victim.key).is_ok()) {
                listed.insert(victim.key.clone());
            }
        }
        let victims: Vec<Victim> = second.into_iter().filter(|victim| listed.contains(&victim.key)).collect();
        // Kind by kind: what points (tags, links) is removed before what it points to.
        let mut kinds: Vec<VictimKind> = victims.iter().map(|victim| victim.kind).collect();
        kinds.dedup();
        for kind in kinds {
            // Owned keys and metadata handles: a stream of futures borrowing them is not `Send`
            // for every lifetime, which the spawned scheduler needs.
            let deletes = victims.iter().filter(|victim| victim.kind == kind).map(|victim| {
                let (metadata, key) = (self.metadata.clone(), victim.key.clone());
                async move { metadata.delete_key(&key).await }
            });
            let mut deletes = futures::stream::iter(deletes.collect::<Vec<_>>()).buffer_unordered(DELETES);
            while let Some(deleted) = deletes.next().await {
                deleted?;
            }
        }
        self.gc_clear_buckets().await?;
        let window = crate::metadata::fence::window(grace);
        if let Some(rest) = window.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        self.metadata.delete_sweep().await?;
        Ok(victims)
    }

    async fn gc_clear(&self) -> Result<()> {
        self.gc_clear_buckets().await?;
        Ok(self.metadata.delete_sweep().await?)
    }

    async fn gc_clear_buckets(&self) -> Result<()> {
        for prefix in self.metadata.doomed_buckets().await? {
            self.metadata.delete_doomed(&prefix).await?;
        }
        Ok(())
    }

    /// What a pass would remove now, without writing anything.
    pub async fn gc_dry_run(&self) -> Result<Vec<Victim>> {
        let now = epoch_secs(SystemTime::now());
        self.gc_mark(now - self.config().gc.grace.as_secs() as i64).await
    }
}

/// Hex digits of bucket names for `victims` keys: about [`BUCKET_KEYS`] keys a bucket.
fn digits_for(victims: usize) -> u8 {
    let mut digits = 1;
    while digits < 5 && victims / 16usize.pow(u32::from(digits)) > BUCKET_KEYS {
        digits += 1;
    }
    digits
}

impl Registry {
    /// Takes the lease `name` for `holder` until `ttl` from now, if it is free or its holder let
    /// it expire; `None` when someone else holds it.
    pub async fn take_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<Option<storage::ETag>> {
        let record = lease_record(holder, ttl);
        let condition = match self.metadata.lease(name).await? {
            None => PutCondition::IfAbsent,
            Some(held) if held.record.expires < epoch_secs(SystemTime::now()) => PutCondition::IfMatch(held.etag),
            Some(_) => return Ok(None),
        };
        Ok(self.metadata.put_lease(name, &record, condition).await?)
    }

    /// Extends a held lease; `None` when it was lost (taken over after it expired).
    pub async fn renew_lease(&self, name: &str, holder: &str, etag: &storage::ETag, ttl: std::time::Duration) -> Result<Option<storage::ETag>> {
        Ok(self.metadata.put_lease(name, &lease_record(holder, ttl), PutCondition::IfMatch(etag.clone())).await?)
    }

    /// Gives a held lease up.
    pub async fn release_lease(&self, name: &str, etag: &storage::ETag) -> Result<()> {
        Ok(self.metadata.release_lease(name, etag).await?)
    }
}

fn lease_record(holder: &str, ttl: std::time::Duration) -> crate::metadata::lifecycle::LeaseRecord {
    let expires = epoch_secs(SystemTime::now()) + ttl.as_secs().max(1) as i64;
    crate::metadata::lifecycle::LeaseRecord { holder: holder.to_owned(), expires }
}
