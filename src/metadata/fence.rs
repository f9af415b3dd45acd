//! The push side of garbage collection's protocol (ARCHITECTURE.md, Lifecycles: Collection).
//!
//! Whatever links content that may be old (a push relying on the blobs and child manifests a
//! manifest names, an upload or a mount linking stored content, a promotion linking a source's
//! content into its target, the proxy linking or storing what it fetched) opens a fence before
//! it checks what it relies on, touches the old links it relies on as it checks
//! (`Metadata::touch`: a pass never removes what was written after it began), writes its own
//! objects, and closes the fence. Closing reads the sweep record again: with no pass at either
//! end and less than [`window`] between them, no pass can have removed anything in between
//! (every pass keeps its sweep record at least that long); otherwise every key the work needs is
//! looked at again, after waiting for a pass that lists one of them among the keys it may
//! delete. The caller then fails for what is gone of what it relies on, and writes again what is
//! gone of its own objects.

use std::time::{Duration, Instant};

use storage::BlobStoreError;

use super::lifecycle::{bucket_of, SweepRecord};
use super::{Metadata, MetadataError, Result};

/// Longest a fence waits for a pass that is removing a key it needs.
const PASS_WAIT: Duration = Duration::from_secs(120);
/// How often a waiting fence looks whether the pass is over.
const PASS_POLL: Duration = Duration::from_millis(200);

/// The fast path's bound for a grace of `grace`: a fence that stood open for less, with no pass
/// at either end, overlapped no deletion. Every pass keeps its sweep record at least this long.
pub fn window(grace: Duration) -> Duration {
    (grace / 2).min(Duration::from_secs(60))
}

/// An open fence: when it opened, and the pass sweeping then.
#[derive(Debug)]
pub struct Fence {
    opened: Instant,
    pass: Option<String>,
}

impl Fence {
    /// Opens a fence: before the work looks at anything it relies on.
    pub async fn open(metadata: &Metadata) -> Result<Fence> {
        let pass = metadata.sweep().await?.map(|sweep| sweep.record.pass);
        Ok(Fence { opened: Instant::now(), pass })
    }

    /// Closes the fence after the work wrote its objects, under collection's `grace`; returns
    /// the keys of `needed` that are not stored (none when nothing can have been removed
    /// meanwhile). Waits for a claimed pass that may delete one of them; `Unavailable` when it
    /// does not end within two minutes.
    pub async fn close(self, metadata: &Metadata, grace: Duration, needed: &[String]) -> Result<Vec<String>> {
        let sweep = metadata.sweep().await?.map(|sweep| sweep.record);
        if self.pass.is_none() && sweep.is_none() && self.opened.elapsed() < window(grace) {
            return Ok(Vec::new());
        }
        if let Some(sweep) = sweep.filter(|sweep| sweep.claimed) {
            if doomed_any(metadata, &sweep, needed).await? {
                wait_for_pass(metadata, &sweep.pass).await?;
            }
        }
        let mut missing = Vec::new();
        for key in needed {
            if !metadata.present(key).await? {
                missing.push(key.clone());
            }
        }
        Ok(missing)
    }
}

/// Whether the claimed pass `sweep` may delete any of `keys`.
async fn doomed_any(metadata: &Metadata, sweep: &SweepRecord, keys: &[String]) -> Result<bool> {
    let mut buckets: std::collections::BTreeMap<String, Vec<&String>> = std::collections::BTreeMap::new();
    for key in keys {
        buckets.entry(bucket_of(key, sweep.digits)).or_default().push(key);
    }
    for (prefix, keys) in buckets {
        let bucket = metadata.doomed(&sweep.pass, &prefix).await?;
        if keys.iter().any(|key| bucket.victims.binary_search(key).is_ok()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Waits until the pass `pass` is over (its sweep record gone or another pass's).
async fn wait_for_pass(metadata: &Metadata, pass: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match metadata.sweep().await? {
            Some(sweep) if sweep.record.pass == pass => {}
            _ => return Ok(()),
        }
        if started.elapsed() > PASS_WAIT {
            return Err(MetadataError::Store(BlobStoreError::Unavailable(format!(
                "a garbage-collection pass is removing content this work needs and has not finished in {}s; retry",
                PASS_WAIT.as_secs()
            ))));
        }
        tokio::time::sleep(PASS_POLL).await;
    }
}
