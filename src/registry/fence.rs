//! The registry's use of collection's fence (`metadata::fence`, where the protocol is): with
//! the grace in force, and how old a link must be for a push to touch it.

use std::time::Duration;

use super::{Registry, Result};
use crate::metadata::fence::Fence;

impl Registry {
    /// Opens a fence: before the push looks at anything it relies on.
    pub(super) async fn open_fence(&self) -> Result<Fence> {
        Ok(Fence::open(&self.metadata).await?)
    }

    /// How old a link must be for a push to touch it: half the grace, so that a link a pass could
    /// remove (older than the grace) is always touched, whatever the clocks' skew below that.
    pub(super) fn touch_age(&self) -> Duration {
        self.config().gc.grace / 2
    }

    /// Closes a fence after the push wrote its objects; returns the keys of `needed` that are not
    /// stored (none when nothing can have been removed meanwhile).
    pub(super) async fn close_fence(&self, fence: Fence, needed: &[String]) -> Result<Vec<String>> {
        Ok(fence.close(&self.metadata, self.config().gc.grace, needed).await?)
    }
}
