//! Reading the audit log for people: newest records first, a bounded number of reads per call,
//! and the chain's verification, recomputed at most once per [`RECHECK`] however often it is
//! asked for (a whole-chain check reads every record).

use std::time::{Duration, Instant};

use super::{Registry, RegistryError, Result};
use crate::metadata::audit::{Broken, Record};

/// How long a verification of the whole chain is reused before it is computed again.
pub const RECHECK: Duration = Duration::from_secs(60);

/// The outcome of verifying the whole audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// The number of records that verified, or the first break.
    pub outcome: std::result::Result<u64, Broken>,
    /// When it was computed, seconds since the Unix epoch.
    pub checked_at: i64,
}

/// The last chain check and when (on this node's clock) it was made.
#[derive(Default)]
pub(super) struct LastCheck(tokio::sync::Mutex<Option<(Instant, ChainCheck)>>);

impl Registry {
    /// Audit records before sequence number `before` (from the newest when `None`), newest
    /// first: at most `limit` that `keep` keeps, reading at most `scan` records. Returns them and
    /// the sequence number to continue before, when older records remain.
    pub async fn audit_records_before(
        &self,
        before: Option<u64>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<(Vec<Record>, Option<u64>)> {
        self.audit.list_back(before, limit, scan, keep).await.map_err(|err| RegistryError::Internal(err.to_string()))
    }

    /// The verification of the whole audit chain, at most [`RECHECK`] old. Callers that ask while
    /// it is being computed wait for that computation instead of starting their own.
    pub async fn audit_chain(&self) -> Result<ChainCheck> {
        let mut last = self.audit_checked.0.lock().await;
        if let Some((at, check)) = last.as_ref().filter(|(at, _)| at.elapsed() < RECHECK) {
            tracing::debug!(age_ms = at.elapsed().as_millis() as u64, "audit chain check reused");
            return Ok(check.clone());
        }
        let outcome = self.audit.verify().await.map_err(|err| RegistryError::Internal(err.to_string()))?;
        let check = ChainCheck { outcome, checked_at: super::verdicts::now_secs() };
        *last = Some((Instant::now(), check.clone()));
        Ok(check)
    }
}
