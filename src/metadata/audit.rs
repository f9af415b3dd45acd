//! The audit log: append-only, hash-chained JSON records in the object store.
//!
//! Record `n` lives at `audit/records/<n, 20 digits>`, is created with a create-only write (so
//! replicas appending at once each get their own sequence number, never the same one), and
//! carries the hash of record `n-1`. Its own hash is sha256 of the previous hash and its JSON
//! without the `hash` field. `audit/head` remembers the last sequence number and hash, so removing
//! records at the end is detected too. [`AuditLog::verify`] recomputes the chain and names the
//! first record that does not fit. The keys are `metadata::layout`'s.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use storage::{BlobStore, BlobStoreError, PutCondition};

use super::layout::{self, Key, Prefix};

const MAX_RECORD: usize = 256 << 10;
/// The hash before the first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// `promotion`, `promotion_denied`, `promotion_dry_run`, `pull_denied`, `pull_audit`,
    /// `gc_pass` (with an empty repository and digest), and others.
    pub kind: String,
    /// Who acted (`anonymous` without authentication).
    pub actor: String,
    /// The repository concerned.
    pub repository: String,
    /// The manifest digest concerned.
    pub digest: String,
    /// Kind-specific detail (the verdict, the promotion record).
    pub detail: serde_json::Value,
    /// Hash of the previous record.
    pub prev: String,
    /// sha256 of `prev` and this record without `hash`.
    #[serde(default)]
    pub hash: String,
}

/// What to append: everything but the chain fields.
#[derive(Debug, Clone)]
pub struct Entry {
    /// See [`Record::kind`].
    pub kind: String,
    /// See [`Record::actor`].
    pub actor: String,
    /// See [`Record::repository`].
    pub repository: String,
    /// See [`Record::digest`].
    pub digest: String,
    /// See [`Record::detail`].
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] BlobStoreError),
    /// A record could not be appended after many tries (heavy contention).
    #[error("audit log append kept racing; gave up after {0} attempts")]
    Contended(usize),
}

/// The first place the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The sequence number of the first record that does not fit.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The hash of a record: sha256 over its previous hash and its JSON without `hash`.
fn hash_of(record: &Record) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    let json = serde_json::to_vec(&unhashed).expect("records always serialize");
    let mut hasher = sha2::Sha256::new();
    hasher.update(record.prev.as_bytes());
    hasher.update(b"\n");
    hasher.update(&json);
    hex::encode(hasher.finalize())
}

/// The audit log over a store.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn BlobStore>,
}

impl AuditLog {
    /// The log kept in `store`.
    pub fn new(store: Arc<dyn BlobStore>) -> AuditLog {
        AuditLog { store }
    }

    async fn read(&self, seq: u64) -> Result<Option<Record>, AuditError> {
        match self.store.get_small(&Key::AuditRecord(seq).to_string(), MAX_RECORD).await? {
            Some(object) => Ok(serde_json::from_slice(&object.bytes).ok()),
            None => Ok(None),
        }
    }

    /// The last record, found from the head hint and then probing forward.
    async fn last(&self) -> Result<Option<Record>, AuditError> {
        let head: Option<Head> = match self.store.get_small(&Key::AuditHead.to_string(), 4096).await? {
            Some(object) => serde_json::from_slice(&object.bytes).ok(),
            None => None,
        };
        let mut seq = head.map_or(0, |h| h.seq);
        let mut last = if seq == 0 { None } else { self.read(seq).await? };
        while let Some(next) = self.read(seq + 1).await? {
            seq += 1;
            last = Some(next);
        }
        Ok(last)
    }

    /// Appends `entry`; returns the stored record.
    pub async fn append(&self, entry: Entry) -> Result<Record, AuditError> {
        const ATTEMPTS: usize = 64;
        for _ in 0..ATTEMPTS {
            let last = self.last().await?;
            let (seq, prev) = match &last {
                Some(record) => (record.seq + 1, record.hash.clone()),
                None => (1, GENESIS.to_owned()),
            };
            let mut record = Record {
                seq,
                time: now_secs(),
                kind: entry.kind.clone(),
                actor: entry.actor.clone(),
                repository: entry.repository.clone(),
                digest: entry.digest.clone(),
                detail: entry.detail.clone(),
                prev,
                hash: String::new(),
            };
            record.hash = hash_of(&record);
            let bytes = Bytes::from(serde_json::to_vec(&record).expect("records always serialize"));
            match self.store.put_small(&Key::AuditRecord(seq).to_string(), bytes, PutCondition::IfAbsent).await {
                Ok(_) => {
                    let head = Head { seq, hash: record.hash.clone() };
                    let head = Bytes::from(serde_json::to_vec(&head).expect("heads always serialize"));
                    // The head is a hint that only moves forward in practice; a lost update is
                    // repaired by the forward probe of the next append.
                    self.store.put_small(&Key::AuditHead.to_string(), head, PutCondition::Always).await?;
                    return Ok(record);
                }
                Err(BlobStoreError::PreconditionFailed(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(AuditError::Contended(ATTEMPTS))
    }

    /// Records after sequence number `after`, at most `limit`, filtered by `keep`.
    pub async fn list(&self, after: u64, limit: usize, keep: impl Fn(&Record) -> bool) -> Result<(Vec<Record>, Option<u64>), AuditError> {
        let mut records = Vec::new();
        let mut cursor = layout::audit_entry(after);
        loop {
            let page = self.store.list(&Prefix::AuditRecords.to_string(), Some(&cursor), 1000, true).await?;
            for name in &page.entries {
                let Ok(seq) = name.parse::<u64>() else { continue };
                if let Some(record) = self.read(seq).await? {
                    if keep(&record) {
                        records.push(record);
                        if records.len() == limit {
                            return Ok((records, Some(seq)));
                        }
                    }
                }
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(name)) => cursor = name.clone(),
                _ => return Ok((records, None)),
            }
        }
    }

    /// Records before sequence number `before` (from the last record when `None`), newest first:
    /// at most `limit` of those `keep` keeps, reading at most `scan` records, each by its key (no
    /// listing). Also returns the sequence number to continue before, when older records remain.
    pub async fn list_back(
        &self,
        before: Option<u64>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<(Vec<Record>, Option<u64>), AuditError> {
        let start = match before {
            Some(before) => before.saturating_sub(1),
            None => self.last().await?.map_or(0, |record| record.seq),
        };
        let mut records = Vec::new();
        let mut seq = start;
        let mut n_read = 0;
        while seq > 0 && n_read < scan && records.len() < limit {
            n_read += 1;
            if let Some(record) = self.read(seq).await? {
                if keep(&record) {
                    records.push(record);
                }
            }
            seq -= 1;
        }
        Ok((records, (seq > 0).then_some(seq + 1)))
    }

    /// Recomputes the whole chain; returns the number of records, or the first break.
    pub async fn verify(&self) -> Result<Result<u64, Broken>, AuditError> {
        let mut expected_prev = GENESIS.to_owned();
        let mut expected_seq = 1;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.list(&Prefix::AuditRecords.to_string(), cursor.as_deref(), 1000, true).await?;
            for name in &page.entries {
                let seq = name.parse::<u64>().unwrap_or(0);
                let broken = |reason: String| Ok(Err(Broken { seq: expected_seq, reason }));
                if seq != expected_seq {
                    return broken(format!("record {expected_seq} is missing (next present is {name})"));
                }
                let object = self.store.get_small(&Key::AuditRecord(seq).to_string(), MAX_RECORD).await?;
                let Some(record) = object.and_then(|o| serde_json::from_slice::<Record>(&o.bytes).ok()) else {
                    return broken(format!("record {seq} is unreadable"));
                };
                if record.seq != seq {
                    return broken(format!("record {seq} says it is record {}", record.seq));
                }
                if record.prev != expected_prev {
                    return broken(format!("record {seq} does not follow record {}: its prev hash differs", seq - 1));
                }
                if hash_of(&record) != record.hash {
                    return broken(format!("record {seq} was altered: its content does not match its hash"));
                }
                expected_prev = record.hash;
                expected_seq += 1;
            }
            match (page.truncated, page.entries.last()) {
                (true, Some(name)) => cursor = Some(name.clone()),
                _ => break,
            }
        }
        let head: Option<Head> = self.store.get_small(&Key::AuditHead.to_string(), 4096).await?.and_then(|o| serde_json::from_slice(&o.bytes).ok());
        if let Some(head) = head {
            if head.seq >= expected_seq {
                return Ok(Err(Broken { seq: expected_seq, reason: format!("records {expected_seq} to {} were removed from the end", head.seq) }));
            }
        }
        Ok(Ok(expected_seq - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            kind: "promotion".into(),
            actor: "ci".into(),
            repository: "prod/app".into(),
            digest: format!("sha256:{n}"),
            detail: serde_json::json!({"n": n}),
        }
    }

    async fn log() -> (AuditLog, Arc<storage::FsBlobStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(storage::FsBlobStore::open(dir.path()).await.unwrap());
        (AuditLog::new(store.clone()), store, dir)
    }

    #[tokio::test]
    async fn chain_detects_edits_and_removals() {
        let (log, store, _dir) = log().await;
        for n in 0..5 {
            log.append(entry(n)).await.unwrap();
        }
        assert_eq!(log.verify().await.unwrap(), Ok(5));
        let (page, next) = log.list(1, 2, |_| true).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(next, Some(3));
        let (page, next) = log.list_back(None, 2, 10, |_| true).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 4]);
        assert_eq!(next, Some(4));
        let (page, next) = log.list_back(Some(4), 10, 2, |r| r.seq != 3).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2], "reads 3 and 2 only");
        assert_eq!(next, Some(2));
        let (page, next) = log.list_back(Some(2), 10, 10, |_| true).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(next, None);

        // Edit record 3 in place.
        let key = Key::AuditRecord(3).to_string();
        let mut record: Record = serde_json::from_slice(&store.get_small(&key, MAX_RECORD).await.unwrap().unwrap().bytes).unwrap();
        record.actor = "mallory".into();
        store.put_small(&key, Bytes::from(serde_json::to_vec(&record).unwrap()), PutCondition::Always).await.unwrap();
        let broken = log.verify().await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 3);
        assert!(broken.reason.contains("altered"), "{broken:?}");
    }

    #[tokio::test]
    async fn removals_are_detected() {
        let (log, store, _dir) = log().await;
        for n in 0..4 {
            log.append(entry(n)).await.unwrap();
        }
        store.delete(&Key::AuditRecord(2).to_string()).await.unwrap();
        assert_eq!(log.verify().await.unwrap().unwrap_err().seq, 2);

        let (log, store, _dir) = self::log().await;
        for n in 0..4 {
            log.append(entry(n)).await.unwrap();
        }
        store.delete(&Key::AuditRecord(4).to_string()).await.unwrap();
        let broken = log.verify().await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("removed from the end"), "{broken:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_keep_one_chain() {
        let (log, _store, _dir) = log().await;
        let tasks: Vec<_> = (0..16).map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.append(entry(n)).await.unwrap().seq })
        }).collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
        assert_eq!(log.verify().await.unwrap(), Ok(16));
    }
}
