//! Verdicts: discover a manifest's evidence, verify it against the trust in force, evaluate the
//! namespace's gate, and cache the outcome by (manifest digest, policy revision, evidence set).
//! Verification results are cached by (evidence bytes, trust revision). Both caches are bounded
//! and node-local; a reload changes the revisions, so stale entries are never used.
//!
//! A verdict that is not cached is computed once however many requests want it at the same time
//! (they wait for the one computation), and at most [`MAX_COMPUTING`] verdicts are computed at
//! once, so the evidence held in memory stays under `MAX_COMPUTING` x `evidence::EVIDENCE_BUDGET`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use storage::Digest;

use super::evidence::{Attached, Found, Payload};
use crate::names::RepoName;
use super::{Registry, RegistryError, Result};
use crate::config::Config;
use crate::policy::gate::{self, Fact, Gate, GateMode, Rejected, Verdict};
use crate::policy::verify::{self, TrustConfig};

/// Entries kept per cache before it is emptied and refilled.
const CACHE_LIMIT: usize = 10_000;
/// Referrer kinds remembered before that cache is emptied: more than the referrers of several
/// flooded subjects, at about 50 bytes an entry.
const REFERRER_KINDS_LIMIT: usize = 65_536;
/// How many parent indexes are consulted for a child manifest.
const MAX_PARENTS: usize = 16;
/// Verdicts computed at once; more wait. Computing is mostly parsing and verifying evidence, work
/// for a core each; and each computation holds up to its budget of evidence plus what parsing it
/// takes (measured in BENCHMARKS.md), so this is what bounds the memory verdicts use.
const MAX_COMPUTING: usize = 2;

/// The trust in force, built from the configuration's trust material.
pub struct LoadedTrust {
    /// The verifier's trust.
    pub trust: verify::Trust,
}

/// A verdict's cache key: (manifest digest, config revision and gated repository, evidence set id).
type VerdictKey = (Digest, String, String);

/// Node-local caches of verification results, verdicts and referrer kinds, and the verdicts
/// being computed.
pub struct Caches {
    verified: Mutex<HashMap<(String, String), Result<Fact, String>>>,
    /// Shared, so a pull that finds its verdict here copies nothing.
    verdicts: Mutex<HashMap<VerdictKey, Arc<Verdict>>>,
    /// Whether a referrer (by digest) can carry evidence, as its link says.
    referrer_kinds: Mutex<HashMap<[u8; 32], bool>>,
    /// The verdicts being computed; a request for one of them waits for its cell.
    computing: Mutex<HashMap<VerdictKey, Arc<tokio::sync::OnceCell<Arc<Verdict>>>>>,
    /// Permits to compute a verdict.
    slots: tokio::sync::Semaphore,
}

impl Default for Caches {
    fn default() -> Caches {
        Caches {
            verified: Mutex::default(),
            verdicts: Mutex::default(),
            referrer_kinds: Mutex::default(),
            computing: Mutex::default(),
            slots: tokio::sync::Semaphore::new(MAX_COMPUTING),
        }
    }
}

impl Caches {
    /// Whether the referrer `digest` can carry evidence, when known.
    pub(super) fn referrer_kind(&self, digest: &Digest) -> Option<bool> {
        let key = digest_bytes(digest)?;
        self.referrer_kinds.lock().expect("cache lock is never poisoned").get(&key).copied()
    }

    /// Remembers whether the referrer `digest` can carry evidence.
    pub(super) fn remember_referrer_kind(&self, digest: &Digest, carries_evidence: bool) {
        if let Some(key) = digest_bytes(digest) {
            insert_bounded(&self.referrer_kinds, REFERRER_KINDS_LIMIT, key, carries_evidence);
        }
    }
}

fn digest_bytes(digest: &Digest) -> Option<[u8; 32]> {
    let mut bytes = [0; 32];
    hex::decode_to_slice(digest.hex(), &mut bytes).ok()?;
    Some(bytes)
}

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, limit: usize, key: K, value: V) {
    let mut map = map.lock().expect("cache lock is never poisoned");
    if map.len() >= limit {
        map.clear();
    }
    map.insert(key, value);
}

/// One verdict to compute: `gated`'s gate on `digest`, judged on the evidence `evidence_repo` holds.
#[derive(Clone, Copy)]
struct Judging<'a> {
    config: &'a Config,
    gate: &'a Gate,
    pattern: &'a str,
    gated: &'a RepoName,
    evidence_repo: &'a RepoName,
    digest: &'a Digest,
}

/// A request's share in a verdict being computed. When the last request holding it goes (done,
/// or cancelled with nobody else waiting), the entry leaves `Caches::computing`: a computed
/// verdict is in the verdict cache by then.
struct Computing<'a> {
    caches: &'a Caches,
    key: &'a VerdictKey,
    cell: Option<Arc<tokio::sync::OnceCell<Arc<Verdict>>>>,
}

impl<'a> Computing<'a> {
    fn join(caches: &'a Caches, key: &'a VerdictKey) -> Computing<'a> {
        let mut computing = caches.computing.lock().expect("cache lock is never poisoned");
        if computing.len() >= CACHE_LIMIT {
            // Only cells left by cancelled requests can pile up; dropping them loses no verdict.
            computing.retain(|_, cell| Arc::strong_count(cell) > 1);
        }
        let cell = computing.entry(key.clone()).or_default().clone();
        Computing { caches, key, cell: Some(cell) }
    }

    fn cell(&self) -> &tokio::sync::OnceCell<Arc<Verdict>> {
        self.cell.as_ref().expect("the cell is held until drop")
    }
}

impl Drop for Computing<'_> {
    fn drop(&mut self) {
        // Clones and drops of the cells happen under this lock, so the count is exact.
        let mut computing = self.caches.computing.lock().expect("cache lock is never poisoned");
        let Some(cell) = self.cell.take() else { return };
        let last = Arc::strong_count(&cell) == 2;
        if computing.get(self.key).is_some_and(|held| Arc::ptr_eq(held, &cell)) && (last || cell.initialized()) {
            computing.remove(self.key);
        }
        drop(cell);
    }
}

/// Builds the verifier's trust from the configuration's trust material.
pub fn load_trust(config: &TrustConfig) -> std::result::Result<LoadedTrust, verify::TrustError> {
    let mut keys = Vec::new();
    for key in &config.keys {
        match &key.public_key_pem {
            Some(pem) => keys.push(verify::KeyTrust { name: key.name.clone(), public_key_pem: pem.clone() }),
            None => tracing::warn!(
                key = %key.name,
                path = %key.path,
                "trust key file not found: nothing verifies against this key until it exists (then reload with SIGHUP)"
            ),
        }
    }
    let keyless = config
        .keyless
        .iter()
        .map(|entry| verify::KeylessTrust {
            name: entry.name.clone(),
            issuer: entry.issuer.clone(),
            subject: identity_match(&entry.subject),
            fulcio_roots_pem: entry.fulcio_roots_pem.clone(),
            rekor_keys_pem: entry.rekor_keys_pem.clone(),
            trusted_root_json: entry.trusted_root_json.clone(),
        })
        .collect();
    let trust = verify::Trust::new(keys, keyless, config.rekor_keys_pem.clone())?;
    Ok(LoadedTrust { trust })
}

/// `regex:<pattern>` is a regular expression, a subject with `*` a glob, anything else exact.
fn identity_match(subject: &str) -> verify::IdentityMatch {
    match subject.strip_prefix("regex:") {
        Some(pattern) => verify::IdentityMatch::Regex(pattern.to_owned()),
        None if subject.contains('*') => verify::IdentityMatch::Glob(subject.to_owned()),
        None => verify::IdentityMatch::Exact(subject.to_owned()),
    }
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn fact_of(verified: verify::Verified, source: &str) -> Fact {
    let predicate = verified.statement.as_ref().and_then(|statement| statement.get("predicate")).cloned();
    Fact {
        kind: verified.kind,
        trust_entry: verified.trust_entry,
        identity: verified.identity,
        predicate_type: verified.predicate_type,
        rekor_log_index: verified.rekor.as_ref().map(|r| r.log_index),
        rekor_time: verified.rekor.as_ref().map(|r| r.integrated_time),
        source: source.to_owned(),
        predicate,
    }
}

impl Registry {
    fn verify_found(&self, trust: &LoadedTrust, subject: &Digest, found: &Found) -> Result<Fact, String> {
        let key = (format!("{subject}/{}", found.cache_key), trust.trust.revision().to_owned());
        if let Some(cached) = self.caches.verified.lock().expect("cache lock is never poisoned").get(&key) {
            return cached.clone();
        }
        let evidence = match &found.payload {
            Payload::SimpleSigning { annotations, payload } => verify::Evidence::SimpleSigning { annotations, payload },
            Payload::Attestation { annotations, envelope } => verify::Evidence::Attestation { annotations, envelope },
            Payload::Bundle { bytes } => verify::Evidence::Bundle { bytes },
        };
        let outcome = verify::verify(&trust.trust, subject, evidence)
            .map(|verified| fact_of(verified, &found.source.to_string()))
            .map_err(|rejection| rejection.to_string());
        insert_bounded(&self.caches.verified, CACHE_LIMIT, key, outcome.clone());
        outcome
    }

    /// The verdict for `digest` in `repo` under its namespace's gate; `None` when the namespace
    /// has no gate. A child manifest that fails on its own passes through a parent index in the
    /// same repository that passes.
    pub async fn verdict(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Verdict>> {
        Ok(self.judge(repo, digest).await?.map(Arc::unwrap_or_clone))
    }

    /// [`Registry::verdict`], shared with the verdict cache.
    async fn judge(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Arc<Verdict>>> {
        let config = self.config();
        let Some(verdict) = self.own_verdict(&config, repo, repo, digest).await? else {
            return Ok(None);
        };
        if verdict.passed {
            return Ok(Some(verdict));
        }
        for parent in self.metadata.parents(repo, digest, MAX_PARENTS).await? {
            if let Some(parent_verdict) = self.own_verdict(&config, repo, repo, &parent).await?.filter(|v| v.passed) {
                let mut passed = Arc::unwrap_or_clone(parent_verdict);
                passed.image = format!("{repo}@{digest}");
                passed.via_parent = Some(parent.to_string());
                return Ok(Some(Arc::new(passed)));
            }
        }
        Ok(Some(verdict))
    }

    /// The verdict of `gated`'s namespace on `digest` with the evidence `evidence_repo` holds
    /// about it: a promotion judges the source's evidence by the target's gate.
    pub async fn verdict_for(&self, gated: &RepoName, evidence_repo: &RepoName, digest: &Digest) -> Result<Option<Verdict>> {
        Ok(self.own_verdict(&self.config(), gated, evidence_repo, digest).await?.map(Arc::unwrap_or_clone))
    }

    async fn own_verdict(&self, config: &Config, gated: &RepoName, evidence_repo: &RepoName, digest: &Digest) -> Result<Option<Arc<Verdict>>> {
        let Some(ns) = config.namespace(gated.as_str()) else { return Ok(None) };
        let Some(gate) = &ns.gate else { return Ok(None) };
        // What is attached is enough for the cache key; evidence is selected and read only on a
        // miss, so a pull with a cached verdict reads two tags and a listing (from the read cache
        // while fresh), not the evidence.
        let attached = self.attached(evidence_repo, digest).await?;
        let key = (digest.clone(), format!("{}/{gated}", config.revision), attached.id.clone());
        if let Some(cached) = self.cached_verdict(&key) {
            return Ok(Some(cached));
        }
        let judging = Judging { config, gate, pattern: &ns.pattern, gated, evidence_repo, digest };
        let computing = Computing::join(&self.caches, &key);
        let verdict = computing.cell().get_or_try_init(|| self.compute_verdict(&judging, &attached, &key)).await?;
        Ok(Some(verdict.clone()))
    }

    fn cached_verdict(&self, key: &VerdictKey) -> Option<Arc<Verdict>> {
        let verdicts = self.caches.verdicts.lock().expect("cache lock is never poisoned");
        verdicts.get(key).filter(|cached| cached.fresh_at(now_secs())).cloned()
    }

    /// Selects, reads and verifies the evidence `attached` to the judged digest, evaluates the
    /// gate, and caches the verdict under `key`.
    async fn compute_verdict(&self, judging: &Judging<'_>, attached: &Attached, key: &VerdictKey) -> Result<Arc<Verdict>> {
        let Judging { config, gate, pattern, gated, evidence_repo, digest } = *judging;
        let _slot = self.caches.slots.acquire().await.expect("the verdict slots are never closed");
        // A computation that finished while this one waited for its cell or its slot left its
        // verdict here.
        if let Some(cached) = self.cached_verdict(key) {
            return Ok(cached);
        }
        self.metrics.verdicts_computed.inc();
        let selection = self.select_evidence(evidence_repo, digest, attached).await?;
        let set = self.read_evidence(evidence_repo, &selection.manifests).await;
        let trust = self.trust();
        let mut facts = Vec::new();
        let mut rejected: Vec<Rejected> = set.unreadable.into_iter().map(|(source, reason)| Rejected { source, reason }).collect();
        for found in &set.found {
            match self.verify_found(&trust, digest, found) {
                Ok(fact) => facts.push(fact),
                Err(reason) => rejected.push(Rejected { source: found.source.to_string(), reason }),
            }
        }
        let mut verdict = gate::evaluate(gate, pattern, &format!("{gated}@{digest}"), &facts, rejected, &config.revision, now_secs());
        verdict.warnings.extend(selection.warnings);
        verdict.warnings.extend(set.warnings);
        let verdict = Arc::new(verdict);
        insert_bounded(&self.caches.verdicts, CACHE_LIMIT, key.clone(), verdict.clone());
        Ok(verdict)
    }

    /// Whether `digest` may leave the registry through a pull in `repo`. What no runtime could run
    /// (signatures, attestations, SBOMs) is always served, so that clients can verify it; anything
    /// runnable needs a passing verdict of its own or of a parent index, `subject` or not. In
    /// audit mode a failing verdict is recorded, not enforced.
    pub async fn check_pull(&self, repo: &RepoName, digest: &Digest, actor: &str) -> Result<()> {
        if self.config().namespace(repo.as_str()).is_none_or(|ns| ns.gate.is_none()) {
            return Ok(());
        }
        if !self.summary(digest).await?.runnable {
            return Ok(());
        }
        let Some(verdict) = self.judge(repo, digest).await? else { return Ok(()) };
        if verdict.passed {
            return Ok(());
        }
        let kind = match verdict.mode {
            GateMode::Enforce => "pull_denied",
            GateMode::Audit => "pull_audit",
        };
        self.record_audit(kind, actor, repo, digest, serde_json::to_value(&*verdict).unwrap_or_default()).await;
        match verdict.mode {
            GateMode::Enforce => Err(RegistryError::Denied(verdict.summary())),
            GateMode::Audit => {
                tracing::warn!(repo = %repo, digest = %digest, verdict = %verdict.summary(), "audit mode: serving a manifest the gate would deny");
                Ok(())
            }
        }
    }
}
