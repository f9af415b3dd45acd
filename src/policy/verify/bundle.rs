//! Sigstore bundles (v0.1–v0.3 JSON), as cosign 2.4+/3 and GitHub's attestation tooling push them
//! as OCI 1.1 referrers, verified offline by `sigstore-verify` against the same trust material as
//! the legacy path.
//!
//! The artifact is the manifest digest: a DSSE bundle's statement must name it as a subject, a
//! message-signature bundle must sign it. `sigstore-verify` checks the certificate chain at the
//! verified times, SCTs when the trusted root has CT logs, the Rekor SET, inclusion proof and
//! checkpoint, the signature, and that the log entry describes this bundle; this module adds the
//! identity match (exact, glob or regex) and the explanations.

use sigstore_verify::types::{ArtifactDigest, Bundle, DerPublicKey, DigestBytes, HashAlgorithm, SignatureContent};
use sigstore_verify::{CertificateError, PublicKeyVerificationPolicy, TransparencyLogError, VerificationPolicy, VerificationResult};

use super::dsse::{self, Statement};
use super::trust::{Identity, Material};
use super::{EvidenceKind, Failure, Failures, RekorEntry, Stage, Verified, MAX_ENVELOPE_BYTES};

/// The predicate type of cosign 3's image signature statement: a signature, not an attestation.
const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// A digest a bundle can be about: the manifest's sha256 or, for non-image subjects, sha512.
#[derive(Debug, Clone, Copy)]
pub(super) enum Subject<'a> {
    Sha256(&'a str),
    #[cfg_attr(not(test), allow(dead_code))]
    Sha512(&'a str),
}

/// Verifies a bundle about the manifest `subject`.
pub(super) fn verify_bundle(material: &Material, subject: &storage::Digest, bytes: &[u8]) -> Result<Verified, Failure> {
    verify_bundle_about(material, Subject::Sha256(subject.hex()), bytes)
}

/// Verifies a bundle about any supported digest.
pub(super) fn verify_bundle_about(material: &Material, subject: Subject<'_>, bytes: &[u8]) -> Result<Verified, Failure> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(Failure::malformed(format!("sigstore bundle of {} bytes is larger than {MAX_ENVELOPE_BYTES}", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Failure::malformed("sigstore bundle is not UTF-8"))?;
    let bundle = Bundle::from_json(text).map_err(|err| Failure::malformed(format!("sigstore bundle is malformed: {}", dsse::truncate(&err.to_string(), 300))))?;
    let (algorithm_name, algorithm, hex) = match subject {
        Subject::Sha256(hex) => ("sha256", HashAlgorithm::Sha2256, hex),
        Subject::Sha512(hex) => ("sha512", HashAlgorithm::Sha2512, hex),
    };
    let digest_bytes = hex::decode(hex).map_err(|_| Failure::malformed("subject digest is not hex"))?;
    let artifact = ArtifactDigest::new(algorithm, DigestBytes::new(digest_bytes)).map_err(|err| Failure::malformed(format!("subject digest: {err}")))?;

    // Read the statement first: a bundle about another artifact fails the same way for every
    // trust entry, and the predicate type decides what kind of evidence this is.
    let (kind, statement) = match &bundle.content {
        SignatureContent::DsseEnvelope(envelope) => {
            if envelope.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
                return Err(Failure::malformed(format!("DSSE payload type {:?} is not an in-toto statement", dsse::truncate(&envelope.payload_type, 80))));
            }
            let statement = Statement::parse(envelope.payload.as_bytes())?;
            statement.check_subject(algorithm_name, hex)?;
            let kind = if statement.predicate_type == COSIGN_SIGN_PREDICATE { EvidenceKind::Signature } else { EvidenceKind::Attestation };
            (kind, Some(statement))
        }
        SignatureContent::MessageSignature(_) => (EvidenceKind::Signature, None),
        _ => return Err(Failure::malformed("sigstore bundle holds neither a message signature nor a DSSE envelope")),
    };

    let has_tlog = !bundle.verification_material.tlog_entries.is_empty();
    let mut failures = Failures::default();
    let verified = if bundle.signing_certificate().is_some() {
        material.keyless.iter().find_map(|identity| match verify_keyless(identity, &bundle, &artifact) {
            Ok(outcome) => Some(outcome),
            Err(failure) => {
                failures.push(failure);
                None
            }
        })
    } else {
        material.keys.iter().find_map(|key| {
            let mut policy = PublicKeyVerificationPolicy::new(DerPublicKey::new(key.public_key.spki_der().to_vec()));
            // As for legacy signatures, a log entry is optional for keys; when present it must
            // be consistent with the bundle, and it is checked against Rekor keys when configured.
            let check_tlog = has_tlog && !material.rekor_for_keys.is_empty();
            if !check_tlog {
                policy = policy.skip_tlog_unsafe();
            }
            match material.key_bundle_verifier.verify(artifact.clone(), &bundle, &policy) {
                Ok(result) => Some(Outcome {
                    trust_entry: key.name.clone(),
                    identity: key.name.clone(),
                    issuer: None,
                    rekor: if check_tlog && result.tlog_verified() { rekor_entry(&bundle, &result) } else { None },
                    cert_not_after: None,
                }),
                Err(err) => {
                    failures.push(explain(err, &format!("key '{}'", key.name)));
                    None
                }
            }
        })
    };
    let Some(outcome) = verified else {
        let none = if bundle.signing_certificate().is_some() { "signed with a certificate, but no keyless identity is configured" } else { "signed with a key, but no trust key is configured" };
        return Err(failures.into_failure(|| Failure::new(Stage::Signature, none)));
    };
    let (predicate_type, statement) = match statement {
        Some(statement) => (Some(statement.predicate_type), Some(statement.value)),
        None => (None, None),
    };
    Ok(Verified {
        kind,
        predicate_type,
        statement,
        trust_entry: outcome.trust_entry,
        identity: outcome.identity,
        issuer: outcome.issuer,
        rekor: outcome.rekor,
        cert_not_after: outcome.cert_not_after,
    })
}

struct Outcome {
    trust_entry: String,
    identity: String,
    issuer: Option<String>,
    rekor: Option<RekorEntry>,
    cert_not_after: Option<i64>,
}

fn verify_keyless(identity: &Identity, bundle: &Bundle, artifact: &ArtifactDigest) -> Result<Outcome, Failure> {
    let mut policy = VerificationPolicy::any_identity().require_issuer(identity.issuer.clone());
    if !identity.verify_sct {
        // A trusted root without CT logs (a private Fulcio, GitHub's instance) cannot check SCTs;
        // chain, Rekor and signature checks still apply.
        policy = policy.skip_sct();
    }
    let result = identity.bundle_verifier.verify(artifact.clone(), bundle, &policy).map_err(|err| explain_keyless(err, identity))?;
    // Fail closed should a relaxed policy ever slip in: keyless evidence counts only with a
    // verified chain and a verified transparency-log entry.
    if !result.certificate_verified() || !result.tlog_verified() {
        return Err(Failure::new(Stage::Trust, "certificate or Rekor entry was not verified"));
    }
    let san = result.identity().map(|san| san.as_str().to_owned());
    let Some(san) = san.filter(|san| identity.subject_matches(san)) else {
        let shown = result.identity().map(|san| dsse::truncate(san.as_str(), 200)).unwrap_or_else(|| "(none)".to_owned());
        return Err(Failure::new(Stage::Identity, format!("certificate SAN {shown} does not match identity '{}' ({})", identity.name, identity.subject)));
    };
    let rekor = rekor_entry(bundle, &result);
    if rekor.is_none() {
        return Err(Failure::new(Stage::Transparency, "keyless signature without a verified Rekor entry"));
    }
    Ok(Outcome {
        trust_entry: identity.name.clone(),
        identity: san,
        issuer: result.issuer().map(str::to_owned),
        rekor,
        cert_not_after: result.certificate().map(|certificate| certificate.not_after.as_second()),
    })
}

/// The first log entry, with the integrated time `sigstore-verify` authenticated.
fn rekor_entry(bundle: &Bundle, result: &VerificationResult) -> Option<RekorEntry> {
    let entry = bundle.verification_material.tlog_entries.first()?;
    let integrated_time = result.integrated_time().or(entry.integrated_time)?.as_second();
    Some(RekorEntry { log_index: entry.log_index.as_i64(), integrated_time })
}

fn explain_keyless(err: sigstore_verify::Error, identity: &Identity) -> Failure {
    match err {
        sigstore_verify::Error::IssuerMismatch { expected, actual } => Failure::new(
            Stage::Identity,
            format!("certificate issuer {} does not match identity '{}' ({expected})", actual.map(|a| dsse::truncate(&a, 200)).unwrap_or_else(|| "(none)".to_owned()), identity.name),
        ),
        other => explain(other, "the certificate's key"),
    }
}

/// Maps a `sigstore-verify` error to the stage it failed at and a reason in this module's words.
fn explain(err: sigstore_verify::Error, signer: &str) -> Failure {
    use sigstore_verify::Error;
    let detail = dsse::truncate(&err.to_string(), 300);
    match err {
        Error::SignatureInvalid(_) => Failure::new(Stage::Signature, format!("signature does not verify with {signer}")),
        Error::ArtifactMismatch(_) => Failure::new(Stage::Subject, format!("bundle is not about this manifest: {detail}")),
        Error::IdentityMismatch { .. } | Error::IssuerMismatch { .. } => Failure::new(Stage::Identity, detail),
        Error::Certificate(CertificateError::Expired { .. }) => Failure::new(Stage::Trust, format!("certificate expired at integrated time: {detail}")),
        Error::Certificate(CertificateError::NotYetValid { .. }) => Failure::new(Stage::Trust, format!("certificate was not yet valid at integrated time: {detail}")),
        Error::Certificate(CertificateError::ChainInvalid(_) | CertificateError::NoValidAuthority { .. }) => {
            Failure::new(Stage::Trust, "certificate does not chain to a configured Fulcio root")
        }
        Error::Certificate(CertificateError::Malformed(_)) => Failure::malformed(detail),
        Error::Certificate(_) => Failure::new(Stage::Trust, detail),
        Error::TransparencyLog(TransparencyLogError::EntryMismatch(_)) => Failure::new(Stage::Transparency, format!("Rekor body does not match the signature: {detail}")),
        Error::TransparencyLog(TransparencyLogError::UnknownLog { .. } | TransparencyLogError::InclusionPromise(_)) => {
            Failure::new(Stage::Trust, format!("SET does not verify against any configured Rekor key: {detail}"))
        }
        Error::TransparencyLog(TransparencyLogError::InclusionProof(_) | TransparencyLogError::Checkpoint(_)) => {
            Failure::new(Stage::Trust, format!("Rekor inclusion proof does not verify against any configured Rekor key: {detail}"))
        }
        Error::TransparencyLog(_) | Error::Timestamp(_) | Error::Bundle(_) => Failure::new(Stage::Transparency, detail),
        _ => Failure::malformed(format!("sigstore bundle: {detail}")),
    }
}
