//! When a manifest was last pulled in a repository, recorded cheaply: a pull is noted in memory
//! ([`RecentPulls`]) and written to the store at most once per interval for each (repository,
//! digest), as an empty object (`_pulled/sha256/<hex>`) whose time of writing, by the store's
//! clock, is the pull's. So a steady stream of pulls costs one small write per interval, the
//! collector reads every pull time of a repository with one listing, and replicas' clocks do not
//! matter. A pull after the last write of an interval is not written until the next pull: the
//! records are exact to within the interval, which retention's ages are far above.
//!
//! The proxy's memory of when its content was pulled (for its cache's eviction order) is a
//! [`RecentPulls`] too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use storage::{Digest, PutCondition};

use super::{layout, Key, Metadata, Prefix, Result};
use crate::names::RepoName;

/// How often a pull of one digest in one repository is written, at most.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(3600);

/// Entries a [`RecentPulls`] holds; beyond, the entries already written go first (a later pull
/// of theirs is due for a write anyway), then all.
pub const MAX_RECENT_PULLS: usize = 100_000;

/// What this process remembers of recent pulls, by repository and digest: when each was last
/// pulled and when that was last written (milliseconds since the Unix epoch).
#[derive(Debug, Default)]
pub struct RecentPulls {
    pulls: Mutex<HashMap<(RepoName, Digest), (u64, u64)>>,
}

impl RecentPulls {
    /// Notes a pull of `digest` in `repo` at `now` (milliseconds); whether it is time to write it
    /// to the store (no write for it in the last `interval`).
    pub fn note(&self, repo: &RepoName, digest: &Digest, now: u64, interval: Duration) -> bool {
        let interval = interval.as_millis() as u64;
        let mut pulls = self.pulls.lock().expect("pulls lock is never poisoned");
        if pulls.len() >= MAX_RECENT_PULLS && !pulls.contains_key(&(repo.clone(), digest.clone())) {
            pulls.retain(|_, (pulled, written)| pulled > written);
            if pulls.len() >= MAX_RECENT_PULLS {
                pulls.clear();
            }
        }
        let (pulled, written) = pulls.entry((repo.clone(), digest.clone())).or_insert((now, 0));
        *pulled = now;
        let due = *written == 0 || now.saturating_sub(*written) >= interval;
        if due {
            *written = now;
        }
        due
    }

    /// When this process last saw `digest` of `repo` pulled (milliseconds since the epoch).
    pub fn last(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.pulls.lock().expect("pulls lock is never poisoned").get(&(repo.clone(), digest.clone())).map(|(pulled, _)| *pulled)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.pulls.lock().expect("pulls lock is never poisoned").len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Milliseconds since the Unix epoch now.
pub fn epoch_millis() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Metadata {
    /// Records that `digest` was pulled in `repo` now (the store's time of this write).
    pub async fn record_pull(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.store.put_small(&Key::Pulled(repo, digest).to_string(), Bytes::new(), PutCondition::Always).await?;
        Ok(())
    }

    /// The recorded pulls of `repo`: each manifest digest with the time of its last recorded pull.
    pub async fn pulls(&self, repo: &RepoName) -> Result<Vec<(Digest, SystemTime)>> {
        let mut pulls = Vec::new();
        self.walk_meta(&Prefix::Pulled(repo).to_string(), |hex, meta| pulls.extend(layout::digest_of_hex(hex).map(|digest| (digest, meta.modified))))
            .await?;
        Ok(pulls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_are_written_at_most_once_an_interval() {
        let recent = RecentPulls::default();
        let (a, b): (RepoName, RepoName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let digest = Digest::of(b"m");
        let hour = Duration::from_secs(3600);
        let ms = |secs: u64| secs * 1000;
        // (repository, pull at second, written now?)
        let steps = [
            (&a, 10, true),         // the first pull is written at once
            (&a, 20, false),        // then coalesced
            (&b, 20, true),         // each repository on its own
            (&a, 3609, false),      // still within the hour of the write at 10
            (&a, 3610, true),       // an hour after the write
            (&a, 3611, false),
        ];
        for (repo, at, due) in steps {
            assert_eq!(recent.note(repo, &digest, ms(at), hour), due, "{repo} at {at}");
            assert_eq!(recent.last(repo, &digest), Some(ms(at)), "the last pull is remembered, written or not");
        }
    }

    #[test]
    fn the_memory_is_bounded() {
        let recent = RecentPulls::default();
        let repo: RepoName = "a".parse().unwrap();
        let hour = Duration::from_secs(3600);
        for i in 0..MAX_RECENT_PULLS {
            recent.note(&repo, &Digest::of(&i.to_le_bytes()), 1, hour);
        }
        // One of them pulled again since its write: it is kept when the map is full.
        let kept = Digest::of(&0usize.to_le_bytes());
        recent.note(&repo, &kept, 2, hour);
        assert_eq!(recent.len(), MAX_RECENT_PULLS);
        assert!(recent.note(&repo, &Digest::of(b"one more"), 3, hour), "a new entry is written");
        assert_eq!(recent.len(), 2, "the entries already written went");
        assert_eq!(recent.last(&repo, &kept), Some(2));
    }
}
