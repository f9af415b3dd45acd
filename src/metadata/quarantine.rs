//! What scrub reads and the quarantine it keeps: stored content listed page by page (to re-hash
//! it), and content whose bytes do not hash to its digest moved aside to
//! `quarantine/sha256/<hex>` (the bytes, for whoever investigates), so that no read finds it
//! under `blobs/` any more. A push of the right bytes stores the content again (content that is
//! absent is written, see `blobs.rs`), and scrub then drops the quarantined copy. Which content is
//! corrupt is `registry::scrub`'s to decide; this module only moves and lists.

use storage::{Digest, ObjectMeta};

use super::{layout, Key, Metadata, Prefix, Result};

/// Content listed per page.
const PAGE: usize = 1000;

/// Quarantined objects listed at most (a store with more has a disk to replace, not a list to
/// read).
const QUARANTINE_LIMIT: usize = 100_000;

/// One page of stored content.
#[derive(Debug, Clone)]
pub struct ContentPage {
    /// Digests with the size, version and time of writing of their bytes, in digest order.
    pub entries: Vec<(Digest, ObjectMeta)>,
    /// Where the next page starts; `None` after the last one.
    pub next: Option<String>,
}

impl Metadata {
    /// The page of stored content after `after` (the previous page's `next`; `None` for the
    /// first page).
    pub async fn content_page(&self, after: Option<&str>) -> Result<ContentPage> {
        let page = self.store.list_meta(&Prefix::Blobs.to_string(), after, PAGE).await?;
        let next = page.entries.last().filter(|_| page.truncated).map(|(entry, _)| entry.clone());
        let entries = page.entries.into_iter().filter_map(|(entry, meta)| Some((layout::blob_entry_digest(&entry)?, meta))).collect();
        Ok(ContentPage { entries, next })
    }

    /// Moves the content `digest` aside: its bytes are copied to the quarantine (through a staged
    /// upload committed there) and removed from `blobs/`, if they are still the version `seen`
    /// (a version written since then is someone's new push, which scrub will look at next time).
    /// Returns whether it was moved.
    pub async fn quarantine_content(&self, digest: &Digest, seen: &ObjectMeta) -> Result<bool> {
        let content = Key::Blob(digest).to_string();
        let Some(reader) = self.store.get(&content, None).await? else { return Ok(false) };
        if reader.meta.etag != seen.etag {
            return Ok(false);
        }
        let stage = format!("quarantine-{}", uuid::Uuid::new_v4());
        self.store.stage_create(&stage).await?;
        let copied = async {
            self.store.stage_append(&stage, 0, reader.body).await?;
            self.store.stage_commit(&stage, &Key::Quarantine(digest).to_string()).await
        };
        if let Err(err) = copied.await {
            let _ = self.store.stage_abort(&stage).await;
            return Err(err.into());
        }
        if self.store.stat(&content).await?.is_none_or(|now| now.etag != seen.etag) {
            return Ok(false);
        }
        self.store.delete(&content).await?;
        Ok(true)
    }

    /// The quarantined copy of `digest`, if there is one.
    pub async fn quarantined(&self, digest: &Digest) -> Result<Option<ObjectMeta>> {
        Ok(self.store.stat(&Key::Quarantine(digest).to_string()).await?)
    }

    /// Every quarantined digest (at most [`QUARANTINE_LIMIT`]) with its copy's size and time of
    /// quarantine, in digest order.
    pub async fn quarantine_list(&self) -> Result<Vec<(Digest, ObjectMeta)>> {
        let prefix = Prefix::Quarantine.to_string();
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list_meta(&prefix, after.as_deref(), PAGE).await?;
            after = page.entries.last().filter(|_| page.truncated).map(|(hex, _)| hex.clone());
            found.extend(page.entries.into_iter().filter_map(|(hex, meta)| Some((layout::digest_of_hex(&hex)?, meta))));
            if after.is_none() || found.len() >= QUARANTINE_LIMIT {
                found.truncate(QUARANTINE_LIMIT);
                return Ok(found);
            }
        }
    }

    /// Drops the quarantined copy of `digest` (its right bytes are stored again).
    pub async fn release_quarantined(&self, digest: &Digest) -> Result<()> {
        Ok(self.store.delete(&Key::Quarantine(digest).to_string()).await?)
    }
}
