//! The push side of garbage collection's protocol (ARCHITECTURE.md, Lifecycles: Collection).
//!
//! A push that relies on stored objects (the blobs and child manifests a manifest names, the
//! content an upload or a mount links) opens a fence before it checks them, touches the old ones
//! as it checks (`Metadata::touch`: a pass never removes what was written after it began), writes
//! its own objects, and closes the fence. Closing reads the sweep record again: with no pass at
//! either end and less than [`window`] between them, no pass can have removed anything in between
//! (every pass keeps its sweep record at least that long); otherwise every key the push needs is
//! looked at again, after waiting for a pass that lists one of them among the keys it may delete.
//! The push then fails for what is gone of what it relies on, and writes again what is gone of
//! its own objects.

use std::time::{Duration, Instant};

use super::{Registry, RegistryError, Result};
use crate::metadata::lifecycle::{bucket_of, SweepRecord};

/// Longest a push waits for a pass that is removing a key it needs.
const PASS_WAIT: Duration = Duration::from_secs(120);
/// How often a waiting push looks whether the pass is over.
const PASS_POLL: Duration = Duration::from_millis(200);

/// The fast path's bound: a push whose fence stood open for less, with no pass at either end,
/// overlapped no deletion. Every pass keeps its sweep record at least this long.
pub(super) fn window(grace: Duration) -> Duration {
    (grace / 2).min(Duration::from_secs(60))
}

/// An open fence: when it opened, and the pass sweeping then.
pub(super) struct Fence {
    opened: Instant,
    pass: Option<String>,
}

impl Registry {
    /// Opens a fence: before the push looks at anything it relies on.
    pub(super) async fn open_fence(&self) -> Result<Fence> {
        let pass = self.metadata.sweep().await?.map(|sweep| sweep.record.pass);
        Ok(Fence { opened: Instant::now(), pass })
    }

    /// How old a link must be for a push to touch it: half the grace, so that a link a pass could
    /// remove (older than the grace) is always touched, whatever the clocks' skew below that.
    pub(super) fn touch_age(&self) -> Duration {
        self.config().gc.grace / 2
    }

    /// Closes a fence after the push wrote its objects; returns the keys of `needed` that are not
    /// stored (none when nothing can have been removed meanwhile).
    pub(super) async fn close_fence(&self, fence: Fence, needed: &[String]) -> Result<Vec<String>> {
        let sweep = self.metadata.sweep().await?.map(|sweep| sweep.record);
        if fence.pass.is_none() && sweep.is_none() && fence.opened.elapsed() < window(self.config().gc.grace) {
            return Ok(Vec::new());
        }
        if let Some(sweep) = sweep.filter(|sweep| sweep.claimed) {
            if self.doomed_any(&sweep, needed).await? {
                self.wait_for_pass(&sweep.pass).await?;
            }
        }
        let mut missing = Vec::new();
        for key in needed {
            if !self.metadata.present(key).await? {
                missing.push(key.clone());
            }
        }
        Ok(missing)
    }

    /// Whether the claimed pass `sweep` may delete any of `keys`.
    async fn doomed_any(&self, sweep: &SweepRecord, keys: &[String]) -> Result<bool> {
        let mut buckets: std::collections::BTreeMap<String, Vec<&String>> = std::collections::BTreeMap::new();
        for key in keys {
            buckets.entry(bucket_of(key, sweep.digits)).or_default().push(key);
        }
        for (prefix, keys) in buckets {
            let bucket = self.metadata.doomed(&sweep.pass, &prefix).await?;
            if keys.iter().any(|key| bucket.victims.binary_search(key).is_ok()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits until the pass `pass` is over (its sweep record gone or another pass's).
    async fn wait_for_pass(&self, pass: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.metadata.sweep().await? {
                Some(sweep) if sweep.record.pass == pass => {}
                _ => return Ok(()),
            }
            if started.elapsed() > PASS_WAIT {
                return Err(RegistryError::Unavailable(format!(
                    "a garbage-collection pass is removing content this push needs and has not finished in {}s; retry",
                    PASS_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(PASS_POLL).await;
        }
    }
}
