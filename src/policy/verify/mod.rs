//! Evidence verification: decides whether one signature, attestation or sigstore bundle about a
//! manifest digest verifies against the configured [`Trust`], and says why not when it does not.
//!
//! Three formats arrive here, already read from the registry by evidence discovery:
//! - cosign simple-signing layers (`.sig` tags and referrers of that shape), verified in-house in
//!   `legacy` on RustCrypto primitives: signature, payload digest, certificate chain, Rekor SET
//!   and logged body, identity;
//! - cosign DSSE attestation layers (`.att` tags), the same way, with the in-toto subject;
//! - sigstore bundles v0.1–v0.3 (OCI 1.1 referrers), verified by `sigstore-verify` in `bundle`.
//!
//! Pure and synchronous: no network, no clock (certificates are judged at the Rekor integrated
//! time), no I/O beyond what the caller hands in. Every input is bounded in size and nesting, and
//! malformed input is a [`Rejection`], never a panic and never a pass.
//!
//! It does not decide what evidence a namespace needs: that is `policy::gate`. It does not check
//! signed certificate timestamps (SCTs) on the legacy path (bundles have theirs checked when the
//! trusted root lists CT logs), and an RFC 3161 timestamp never stands in for Rekor: a keyless
//! signature counts only with a Rekor entry verified against a configured Rekor key.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

mod bundle;
mod dsse;
mod keys;
mod legacy;
mod rekor;
mod trust;
mod x509;

#[cfg(test)]
mod tests;

/// Largest simple-signing payload accepted.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Largest DSSE envelope or sigstore bundle accepted.
pub const MAX_ENVELOPE_BYTES: usize = 4 << 20;
/// Most annotations on one evidence layer.
pub const MAX_ANNOTATIONS: usize = 64;
/// Largest single annotation value read (a certificate, a chain or a Rekor bundle).
pub const MAX_ANNOTATION_BYTES: usize = 256 << 10;

/// What a piece of verified evidence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    /// A signature over the manifest digest.
    Signature,
    /// An in-toto attestation about the manifest digest.
    Attestation,
}

/// The configured trust: named public keys and keyless identities, parsed and ready.
///
/// Immutable; cloning shares it. Build it once per configuration revision.
#[derive(Clone)]
pub struct Trust {
    material: Arc<trust::Material>,
}

/// Trust material as configured: every named key and keyless identity with its PEM text, read
/// but not yet parsed (`registry::verdicts::load_trust` builds the [`Trust`] from it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    /// Named public keys.
    pub keys: Vec<KeyEntry>,
    /// Named keyless identities.
    pub keyless: Vec<KeylessEntry>,
    /// PEM of Rekor keys for key-based signatures.
    pub rekor_keys_pem: Vec<String>,
}

/// A named public key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// Name used by `signed_by`.
    pub name: String,
    /// PEM text; `None` for an optional key whose file is absent.
    pub public_key_pem: Option<String>,
    /// The file it was read from, for messages.
    pub path: String,
}

/// A named keyless (Fulcio) identity, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessEntry {
    /// Name used by `signed_by`.
    pub name: String,
    /// OIDC issuer, exact.
    pub issuer: String,
    /// Certificate subject (SAN): exact, a glob with `*`, or `regex:<pattern>`.
    pub subject: String,
    /// PEM of Fulcio roots and intermediates.
    pub fulcio_roots_pem: Vec<String>,
    /// PEM of Rekor keys.
    pub rekor_keys_pem: Vec<String>,
    /// A sigstore `trusted_root.json`, as text.
    pub trusted_root_json: Option<String>,
}

/// A named public key (`[[trust.keys]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTrust {
    /// The name gates refer to.
    pub name: String,
    /// PEM `PUBLIC KEY` (cosign's `cosign.pub`): ECDSA P-256/P-384, Ed25519 or RSA.
    pub public_key_pem: String,
}

/// A named keyless identity (`[[trust.keyless]]`): who may sign, certified by which Fulcio, logged
/// in which Rekor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeylessTrust {
    /// The name gates refer to.
    pub name: String,
    /// The OIDC issuer, exactly (Fulcio extension 1.3.6.1.4.1.57264.1.8, or .1.1 in older certificates).
    pub issuer: String,
    /// The certificate's subject alternative name (email or URI).
    pub subject: IdentityMatch,
    /// PEM text of Fulcio roots and intermediates; each certificate is a trust anchor.
    pub fulcio_roots_pem: Vec<String>,
    /// PEM text of Rekor public keys.
    pub rekor_keys_pem: Vec<String>,
    /// A sigstore `trusted_root.json`; its Fulcio CAs, Rekor keys and CT logs are added to the above.
    pub trusted_root_json: Option<String>,
}

/// How a keyless identity's SAN must look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMatch {
    /// Exactly this string.
    Exact(String),
    /// `*` matches any run of characters, `/` included; everything else is literal.
    Glob(String),
    /// A regular expression (Rust `regex` syntax) that must match the whole SAN.
    Regex(String),
}

/// Why trust material could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// A `[[trust.keys]]` entry is unusable.
    #[error("trust key '{name}': {reason}")]
    Key { name: String, reason: String },
    /// A `[[trust.keyless]]` entry is unusable.
    #[error("trust keyless identity '{name}': {reason}")]
    Keyless { name: String, reason: String },
    /// A Rekor key for key-based signatures is unusable.
    #[error("rekor key for key-based signatures: {0}")]
    RekorKey(String),
    /// Two entries share a name, so `signed_by` would be ambiguous.
    #[error("trust entry name '{0}' is used twice")]
    DuplicateName(String),
}

/// One piece of evidence, as discovery found it.
#[derive(Debug, Clone, Copy)]
pub enum Evidence<'a> {
    /// One layer of a cosign `.sig` manifest (or of a referrer of the same shape): its annotations
    /// and the payload blob bytes.
    SimpleSigning { annotations: &'a Map<String, Value>, payload: &'a [u8] },
    /// One layer of a cosign `.att` manifest: its annotations and the DSSE envelope bytes.
    Attestation { annotations: &'a Map<String, Value>, envelope: &'a [u8] },
    /// A sigstore bundle (v0.1–v0.3 JSON) pushed as a referrer layer.
    Bundle { bytes: &'a [u8] },
}

/// Evidence that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// A signature over the manifest digest, or an attestation about it.
    pub kind: EvidenceKind,
    /// The in-toto predicate type (attestations, and bundles holding a statement).
    pub predicate_type: Option<String>,
    /// The verified in-toto statement, for scan and SBOM rules.
    pub statement: Option<Value>,
    /// The name of the trust entry it verified against.
    pub trust_entry: String,
    /// Who signed: the key name, or the certificate's SAN.
    pub identity: String,
    /// The certificate's OIDC issuer (keyless only).
    pub issuer: Option<String>,
    /// The Rekor entry whose SET or inclusion proof verified, if any.
    pub rekor: Option<RekorEntry>,
    /// When the signing certificate expired, seconds since the Unix epoch (keyless only).
    pub cert_not_after: Option<i64>,
}

/// A verified Rekor transparency-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekorEntry {
    /// The entry's log index.
    pub log_index: i64,
    /// When Rekor integrated it, seconds since the Unix epoch.
    pub integrated_time: i64,
}

/// Why a piece of evidence does not count. `Display` is the human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// The most specific failure, e.g. "signature does not verify with key 'release'".
    pub reason: String,
}

/// Verifies `evidence` about the manifest `subject` against `trust`.
///
/// Every trust entry that could apply is tried and the first that verifies is returned. When none
/// does, the rejection names the failure that got furthest (ties are joined), so a gate can say
/// "certificate SAN … does not match identity 'ci'" rather than "no".
pub fn verify(trust: &Trust, subject: &storage::Digest, evidence: Evidence<'_>) -> Result<Verified, Rejection> {
    match evidence {
        Evidence::SimpleSigning { annotations, payload } => legacy::verify_simple_signing(&trust.material, subject, annotations, payload),
        Evidence::Attestation { annotations, envelope } => legacy::verify_attestation(&trust.material, subject, annotations, envelope),
        Evidence::Bundle { bytes } => bundle::verify_bundle(&trust.material, subject, bytes),
    }
    .map_err(|failure| Rejection { reason: failure.to_string() })
}

impl Trust {
    /// Parses and checks every key, certificate, Rekor key and trusted root.
    ///
    /// `rekor_keys_for_keys` are the Rekor keys used for the (optional) transparency-log entries of
    /// key-based signatures.
    pub fn new(keys: Vec<KeyTrust>, keyless: Vec<KeylessTrust>, rekor_keys_for_keys: Vec<String>) -> Result<Trust, TrustError> {
        let material = trust::Material::load(keys, keyless, rekor_keys_for_keys)?;
        Ok(Trust { material: Arc::new(material) })
    }

    /// sha256 over all trust material, for caches keyed on "what we trust".
    pub fn revision(&self) -> &str {
        &self.material.revision
    }

    /// The names of the configured entries, keys first.
    pub fn entry_names(&self) -> Vec<&str> {
        self.material.keys.iter().map(|k| k.name.as_str()).chain(self.material.keyless.iter().map(|k| k.name.as_str())).collect()
    }
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust").field("entries", &self.entry_names()).field("revision", &self.revision()).finish()
    }
}

impl fmt::Display for IdentityMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityMatch::Exact(s) | IdentityMatch::Glob(s) => f.write_str(s),
            IdentityMatch::Regex(s) => write!(f, "regex:{s}"),
        }
    }
}

/// How far a verification attempt got before it failed; the furthest failure is the most specific
/// reason. Ordered: a later stage means more checks passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// The evidence cannot be read at all.
    Malformed,
    /// The signed content is about another artifact.
    Subject,
    /// The signature does not verify with the key or certificate.
    Signature,
    /// Transparency-log material is missing or does not describe this signature.
    Transparency,
    /// The material does not verify against the configured trust: Rekor key, Fulcio chain,
    /// certificate validity at the integrated time.
    Trust,
    /// Everything verifies but the signer is not the configured identity.
    Identity,
}

/// A failed attempt: its stage and the human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    stage: Stage,
    reason: String,
}

impl Failure {
    fn new(stage: Stage, reason: impl Into<String>) -> Failure {
        Failure { stage, reason: reason.into() }
    }

    fn malformed(reason: impl Into<String>) -> Failure {
        Failure::new(Stage::Malformed, reason)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Collects the failures of every trust entry tried and keeps the furthest.
#[derive(Debug, Default)]
struct Failures {
    furthest: Vec<Failure>,
}

impl Failures {
    fn push(&mut self, failure: Failure) {
        match self.furthest.first().map(|f| f.stage) {
            Some(stage) if stage > failure.stage => {}
            Some(stage) if stage == failure.stage => {
                if !self.furthest.contains(&failure) {
                    self.furthest.push(failure);
                }
            }
            _ => self.furthest = vec![failure],
        }
    }

    /// The combined failure, or `none` when nothing was tried.
    fn into_failure(self, none: impl FnOnce() -> Failure) -> Failure {
        let Some(stage) = self.furthest.first().map(|f| f.stage) else { return none() };
        let reasons: Vec<String> = self.furthest.into_iter().map(|f| f.reason).collect();
        Failure::new(stage, reasons.join("; "))
    }
}
