//! Verdicts: discover a manifest's evidence, verify it against the trust in force, evaluate the
//! namespace's gate, and cache the outcome by (manifest digest, policy revision, evidence set).
//! Verification results are cached by (evidence bytes, trust revision). Both caches are bounded
//! and node-local; a reload changes the revisions, so stale entries are never used.

use std::collections::HashMap;
use std::sync::Mutex;

use storage::Digest;

use super::evidence::{Found, Payload};
use super::names::RepoName;
use super::{Registry, RegistryError, Result};
use crate::config::Config;
use crate::policy::gate::{self, Fact, GateMode, Rejected, Verdict};
use crate::policy::verify::{self, TrustConfig};

/// Entries kept per cache before it is emptied and refilled.
const CACHE_LIMIT: usize = 10_000;
/// How many parent indexes are consulted for a child manifest.
const MAX_PARENTS: usize = 16;

/// The trust in force, built from the configuration's trust material.
pub struct LoadedTrust {
    /// The verifier's trust.
    pub trust: verify::Trust,
}

/// Node-local caches of verification results and verdicts.
#[derive(Default)]
pub struct Caches {
    verified: Mutex<HashMap<(String, String), Result<Fact, String>>>,
    verdicts: Mutex<HashMap<(Digest, String, String), Verdict>>,
}

fn insert_bounded<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut map = map.lock().expect("cache lock is never poisoned");
    if map.len() >= CACHE_LIMIT {
        map.clear();
    }
    map.insert(key, value);
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

fn now_secs() -> i64 {
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
            .map(|verified| fact_of(verified, &found.source))
            .map_err(|rejection| rejection.to_string());
        insert_bounded(&self.caches.verified, key, outcome.clone());
        outcome
    }

    /// The verdict for `digest` in `repo` under its namespace's gate; `None` when the namespace
    /// has no gate. A child manifest that fails on its own passes through a parent index in the
    /// same repository that passes.
    pub async fn verdict(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Verdict>> {
        let config = self.config();
        let Some(verdict) = self.own_verdict(&config, repo, repo, digest).await? else {
            return Ok(None);
        };
        if verdict.passed {
            return Ok(Some(verdict));
        }
        for parent in self.metadata.parents(repo, digest, MAX_PARENTS).await? {
            if let Some(parent_verdict) = self.own_verdict(&config, repo, repo, &parent).await?.filter(|v| v.passed) {
                let mut passed = parent_verdict;
                passed.image = format!("{repo}@{digest}");
                passed.via_parent = Some(parent.to_string());
                return Ok(Some(passed));
            }
        }
        Ok(Some(verdict))
    }

    /// The verdict of `gated`'s namespace on `digest` with the evidence `evidence_repo` holds
    /// about it: a promotion judges the source's evidence by the target's gate.
    pub async fn verdict_for(&self, gated: &RepoName, evidence_repo: &RepoName, digest: &Digest) -> Result<Option<Verdict>> {
        self.own_verdict(&self.config(), gated, evidence_repo, digest).await
    }

    async fn own_verdict(&self, config: &Config, gated: &RepoName, evidence_repo: &RepoName, digest: &Digest) -> Result<Option<Verdict>> {
        let Some(ns) = config.namespace(gated.as_str()) else { return Ok(None) };
        let Some(gate) = &ns.gate else { return Ok(None) };
        // The set of evidence manifests is enough for the cache key; their layers are read only
        // on a miss, so a pull with a cached verdict reads two tags and a listing, not the evidence.
        let manifests = self.evidence_manifests(evidence_repo, digest).await?;
        let set_id = super::evidence::evidence_set_id(&manifests);
        let repo = gated;
        let now = now_secs();
        let key = (digest.clone(), format!("{}/{gated}", config.revision), set_id.clone());
        if let Some(cached) = self.caches.verdicts.lock().expect("cache lock is never poisoned").get(&key) {
            if cached.fresh_at(now) {
                return Ok(Some(cached.clone()));
            }
        }
        let set = self.read_evidence(evidence_repo, manifests, set_id).await;
        let trust = self.trust();
        let mut facts = Vec::new();
        let mut rejected: Vec<Rejected> = set.unreadable.into_iter().map(|(source, reason)| Rejected { source, reason }).collect();
        for found in &set.found {
            match self.verify_found(&trust, digest, found) {
                Ok(fact) => facts.push(fact),
                Err(reason) => rejected.push(Rejected { source: found.source.clone(), reason }),
            }
        }
        let verdict = gate::evaluate(gate, &ns.pattern, &format!("{repo}@{digest}"), &facts, rejected, &config.revision, now);
        insert_bounded(&self.caches.verdicts, key, verdict.clone());
        Ok(Some(verdict))
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
        let Some(verdict) = self.verdict(repo, digest).await? else { return Ok(()) };
        if verdict.passed {
            return Ok(());
        }
        let kind = match verdict.mode {
            GateMode::Enforce => "pull_denied",
            GateMode::Audit => "pull_audit",
        };
        self.record_audit(kind, actor, repo, digest, serde_json::to_value(&verdict).unwrap_or_default()).await;
        match verdict.mode {
            GateMode::Enforce => Err(RegistryError::Denied(verdict.summary())),
            GateMode::Audit => {
                tracing::warn!(repo = %repo, digest = %digest, verdict = %verdict.summary(), "audit mode: serving a manifest the gate would deny");
                Ok(())
            }
        }
    }
}
