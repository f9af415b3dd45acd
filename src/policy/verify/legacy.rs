//! cosign's legacy tag layout, verified in-house: simple-signing layers of `sha256-<hex>.sig` and
//! DSSE layers of `sha256-<hex>.att` (cosign specs/SIGNATURE_SPEC.md, specs/ATTESTATION_SPEC.md),
//! with their certificate, chain and Rekor bundle annotations.
//!
//! Order of checks: what the payload is about (entry-independent), then the signature with the
//! key or certificate, then the logged Rekor body against what is presented, then per trust
//! entry the SET, the certificate's validity at the integrated time, its chain, and its identity.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::dsse::{self, Envelope, Statement};
use super::keys::PublicKey;
use super::rekor::{LegacyBundle, Presented, Signer};
use super::trust::Material;
use super::x509::{self, Certificate};
use super::{EvidenceKind, Failure, Failures, RekorEntry, Stage, Verified, MAX_ANNOTATIONS, MAX_ANNOTATION_BYTES, MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES};

const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
/// `critical.type` of a cosign simple-signing payload.
const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// Verifies one simple-signing layer.
pub(super) fn verify_simple_signing(material: &Material, subject: &storage::Digest, annotations: &Map<String, Value>, payload: &[u8]) -> Result<Verified, Failure> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Failure::malformed(format!("simple-signing payload of {} bytes is larger than {MAX_PAYLOAD_BYTES}", payload.len())));
    }
    let notes = Notes::read(annotations)?;
    let signed_digest = simple_signing_digest(payload)?;
    if !signed_digest.eq_ignore_ascii_case(&subject.to_string()) {
        return Err(Failure::new(Stage::Subject, format!("payload is for {}, not {subject}", dsse::truncate(&signed_digest, 80))));
    }
    let encoded = notes.signature.ok_or_else(|| Failure::malformed(format!("annotation {SIGNATURE_ANNOTATION} is missing")))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|err| Failure::malformed(format!("annotation {SIGNATURE_ANNOTATION} is not base64: {err}")))?;
    let content = Content::Blob { payload, signature };
    let outcome = verify_content(material, &content, &notes)?;
    Ok(outcome.into_verified(EvidenceKind::Signature, None))
}

/// Verifies one DSSE attestation layer.
pub(super) fn verify_attestation(material: &Material, subject: &storage::Digest, annotations: &Map<String, Value>, envelope: &[u8]) -> Result<Verified, Failure> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(Failure::malformed(format!("DSSE envelope of {} bytes is larger than {MAX_ENVELOPE_BYTES}", envelope.len())));
    }
    let notes = Notes::read(annotations)?;
    let parsed = Envelope::parse(envelope).map_err(Failure::malformed)?;
    if parsed.payload_type != dsse::IN_TOTO_PAYLOAD_TYPE {
        return Err(Failure::malformed(format!("DSSE payload type {:?} is not an in-toto statement", dsse::truncate(&parsed.payload_type, 80))));
    }
    // The layer's `predicateType` annotation is unsigned; the signed statement's is reported.
    let statement = Statement::parse(&parsed.payload)?;
    statement.check_subject("sha256", subject.hex())?;
    let content = Content::Envelope { bytes: envelope, pae: parsed.pae(), forms: parsed.known_serializations(), envelope: parsed };
    let outcome = verify_content(material, &content, &notes)?;
    Ok(outcome.into_verified(EvidenceKind::Attestation, Some(statement)))
}

/// The annotations this layout uses; blank ones count as absent.
struct Notes<'a> {
    signature: Option<&'a str>,
    certificate: Option<&'a str>,
    chain: Option<&'a str>,
    bundle: Option<&'a str>,
}

impl<'a> Notes<'a> {
    fn read(annotations: &'a Map<String, Value>) -> Result<Notes<'a>, Failure> {
        if annotations.len() > MAX_ANNOTATIONS {
            return Err(Failure::malformed(format!("{} annotations, at most {MAX_ANNOTATIONS} are read", annotations.len())));
        }
        let get = |key: &str| match annotations.get(key) {
            None => Ok(None),
            Some(Value::String(text)) if text.len() > MAX_ANNOTATION_BYTES => Err(Failure::malformed(format!("annotation {key} is larger than {MAX_ANNOTATION_BYTES} bytes"))),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(Failure::malformed(format!("annotation {key} is not a string"))),
        };
        Ok(Notes { signature: get(SIGNATURE_ANNOTATION)?, certificate: get(CERTIFICATE_ANNOTATION)?, chain: get(CHAIN_ANNOTATION)?, bundle: get(BUNDLE_ANNOTATION)? })
    }
}

/// What was signed and how it is presented.
enum Content<'a> {
    /// A simple-signing payload and the signature annotation.
    Blob { payload: &'a [u8], signature: Vec<u8> },
    /// A DSSE envelope: its bytes, parsed form, PAE and known re-serializations.
    Envelope { bytes: &'a [u8], envelope: Envelope, pae: Vec<u8>, forms: Vec<Vec<u8>> },
}

impl Content<'_> {
    /// The signature that verifies with `key`, if any.
    fn signature_by(&self, key: &PublicKey) -> Option<&[u8]> {
        match self {
            Content::Blob { payload, signature } => key.verify(payload, signature).then_some(signature.as_slice()),
            Content::Envelope { envelope, pae, .. } => envelope.signatures.iter().map(|s| s.sig.as_slice()).find(|sig| key.verify(pae, sig)),
        }
    }

    fn presented<'b>(&'b self, signature: &'b [u8], signer: Signer<'b>) -> Presented<'b> {
        match self {
            Content::Blob { payload, .. } => Presented::Blob { payload, signature, signer },
            Content::Envelope { bytes, envelope, forms, .. } => Presented::Envelope {
                envelope: bytes,
                envelope_forms: forms,
                payload_type: &envelope.payload_type,
                payload: &envelope.payload,
                signature,
                signer,
            },
        }
    }
}

/// Which trust entry verified the content, and what was learned on the way.
struct Outcome {
    trust_entry: String,
    identity: String,
    issuer: Option<String>,
    rekor: Option<RekorEntry>,
    cert_not_after: Option<i64>,
}

impl Outcome {
    fn into_verified(self, kind: EvidenceKind, statement: Option<Statement>) -> Verified {
        let (predicate_type, statement) = match statement {
            Some(statement) => (Some(statement.predicate_type), Some(statement.value)),
            None => (None, None),
        };
        Verified {
            kind,
            predicate_type,
            statement,
            trust_entry: self.trust_entry,
            identity: self.identity,
            issuer: self.issuer,
            rekor: self.rekor,
            cert_not_after: self.cert_not_after,
        }
    }
}

/// A certificate makes the evidence keyless; without one, configured keys apply.
fn verify_content(material: &Material, content: &Content<'_>, notes: &Notes<'_>) -> Result<Outcome, Failure> {
    let bundle = notes.bundle.map(LegacyBundle::parse).transpose().map_err(Failure::malformed)?;
    match notes.certificate {
        Some(pem) => verify_keyless(material, content, pem, notes.chain, bundle.as_ref()),
        None => {
            let mut failures = Failures::default();
            match verify_with_keys(material, content, bundle.as_ref(), None, &mut failures) {
                Some(outcome) => Ok(outcome),
                None => Err(failures.into_failure(|| Failure::new(Stage::Signature, "signed with a key, but no trust key is configured"))),
            }
        }
    }
}

/// Tries each configured key (only the one whose SPKI is `only_spki`, when given).
fn verify_with_keys(material: &Material, content: &Content<'_>, bundle: Option<&LegacyBundle>, only_spki: Option<&[u8]>, failures: &mut Failures) -> Option<Outcome> {
    for key in material.keys.iter().filter(|key| only_spki.is_none_or(|spki| key.public_key.spki_der() == spki)) {
        let Some(signature) = content.signature_by(&key.public_key) else {
            failures.push(Failure::new(Stage::Signature, format!("signature does not verify with key '{}'", key.name)));
            continue;
        };
        // cosign `--tlog-upload=false` signs without a log entry: the Rekor bundle is optional
        // for keys, but one that is present must describe this signature, and its SET must
        // verify when Rekor keys for keys are configured.
        let rekor = match bundle {
            None => None,
            Some(bundle) => {
                let checked = bundle
                    .entry()
                    .map_err(|err| Failure::new(Stage::Transparency, format!("Rekor body is unreadable: {err}")))
                    .and_then(|entry| entry.matches(&content.presented(signature, Signer::Key(key.public_key.spki_der()))).map_err(|err| Failure::new(Stage::Transparency, err)));
                if let Err(failure) = checked {
                    failures.push(failure);
                    continue;
                }
                if material.rekor_for_keys.is_empty() {
                    None
                } else if let Err(err) = bundle.verify_set(&material.rekor_for_keys) {
                    failures.push(Failure::new(Stage::Trust, err));
                    continue;
                } else {
                    Some(RekorEntry { log_index: bundle.log_index, integrated_time: bundle.integrated_time })
                }
            }
        };
        return Some(Outcome { trust_entry: key.name.clone(), identity: key.name.clone(), issuer: None, rekor, cert_not_after: None });
    }
    None
}

fn verify_keyless(material: &Material, content: &Content<'_>, certificate_pem: &str, chain_pem: Option<&str>, bundle: Option<&LegacyBundle>) -> Result<Outcome, Failure> {
    let leaf = match Certificate::from_pem_chain(certificate_pem, 1) {
        Ok(mut certificates) if certificates.len() == 1 => certificates.remove(0),
        Ok(_) => return Err(Failure::malformed(format!("annotation {CERTIFICATE_ANNOTATION} must hold one certificate"))),
        Err(err) => return Err(Failure::malformed(format!("annotation {CERTIFICATE_ANNOTATION}: {err}"))),
    };
    let chain = match chain_pem {
        Some(pem) => Certificate::from_pem_chain(pem, x509::MAX_CHAIN_CERTIFICATES).map_err(|err| Failure::malformed(format!("annotation {CHAIN_ANNOTATION}: {err}")))?,
        None => Vec::new(),
    };
    let signature = content.signature_by(&leaf.public_key).ok_or_else(|| Failure::new(Stage::Signature, "signature does not verify with the certificate's key"))?;
    let mut failures = Failures::default();
    match bundle {
        None => failures.push(Failure::new(Stage::Transparency, "keyless signature without a Rekor SET")),
        Some(bundle) => {
            let logged = bundle
                .entry()
                .map_err(|err| Failure::new(Stage::Transparency, format!("Rekor body is unreadable: {err}")))
                .and_then(|entry| entry.matches(&content.presented(signature, Signer::Certificate(&leaf.der))).map_err(|err| Failure::new(Stage::Transparency, err)))
                .and_then(|()| leaf.check_leaf_profile().map_err(|err| Failure::new(Stage::Trust, err)));
            match logged {
                Err(failure) => failures.push(failure),
                Ok(()) => {
                    if let Some(outcome) = verify_identities(material, &leaf, &chain, bundle, &mut failures) {
                        return Ok(outcome);
                    }
                }
            }
        }
    }
    // A certificate for a configured key (cosign sign --key with --certificate) is key evidence.
    if let Some(outcome) = verify_with_keys(material, content, bundle, Some(leaf.public_key.spki_der()), &mut failures) {
        return Ok(outcome);
    }
    Err(failures.into_failure(|| Failure::new(Stage::Trust, "signed with a certificate, but no keyless identity is configured")))
}

/// Tries each keyless identity on a leaf whose signature and log entry already check out.
fn verify_identities(material: &Material, leaf: &Certificate, chain: &[Certificate], bundle: &LegacyBundle, failures: &mut Failures) -> Option<Outcome> {
    let time = bundle.integrated_time;
    for identity in &material.keyless {
        // The integrated time is only evidence once its SET verifies with this identity's Rekor.
        if let Err(err) = bundle.verify_set(&identity.rekor_keys) {
            failures.push(Failure::new(Stage::Trust, err));
            continue;
        }
        if time > leaf.not_after {
            failures.push(Failure::new(Stage::Trust, format!("certificate expired at integrated time ({} is after {})", rfc3339(time), rfc3339(leaf.not_after))));
            continue;
        }
        if time < leaf.not_before {
            failures.push(Failure::new(Stage::Trust, format!("certificate was not yet valid at integrated time ({} is before {})", rfc3339(time), rfc3339(leaf.not_before))));
            continue;
        }
        if !x509::chains_to(leaf, chain, &identity.anchors, time) {
            failures.push(Failure::new(Stage::Trust, "certificate does not chain to a configured Fulcio root"));
            continue;
        }
        let issuer = leaf.oidc_issuer.as_deref().unwrap_or("");
        if issuer != identity.issuer {
            let shown = if issuer.is_empty() { "(none)".to_owned() } else { dsse::truncate(issuer, 200) };
            failures.push(Failure::new(Stage::Identity, format!("certificate issuer {shown} does not match identity '{}' ({})", identity.name, identity.issuer)));
            continue;
        }
        let Some(san) = leaf.sans.iter().find(|san| identity.subject_matches(san)) else {
            let shown = leaf.identity().map(|san| dsse::truncate(san, 200)).unwrap_or_else(|| "(none)".to_owned());
            failures.push(Failure::new(Stage::Identity, format!("certificate SAN {shown} does not match identity '{}' ({})", identity.name, identity.subject)));
            continue;
        };
        return Some(Outcome {
            trust_entry: identity.name.clone(),
            identity: san.clone(),
            issuer: Some(identity.issuer.clone()),
            rekor: Some(RekorEntry { log_index: bundle.log_index, integrated_time: time }),
            cert_not_after: Some(leaf.not_after),
        });
    }
    None
}

/// The `critical.image.docker-manifest-digest` of a simple-signing payload.
///
/// cosign reads the payload with Go's case-insensitive field matching (the spec's own example
/// writes `Docker-manifest-digest`), so keys match regardless of case; two keys that differ only
/// in case are refused as ambiguous.
fn simple_signing_digest(payload: &[u8]) -> Result<String, Failure> {
    let value: Value = serde_json::from_slice(payload).map_err(|err| Failure::malformed(format!("simple-signing payload is not JSON: {err}")))?;
    let critical = field(&value, "critical")?.ok_or_else(|| Failure::malformed("simple-signing payload has no critical section"))?;
    let kind = field(critical, "type")?.and_then(Value::as_str).unwrap_or("");
    if kind != COSIGN_SIGNATURE_TYPE {
        return Err(Failure::malformed(format!("simple-signing payload type {:?} is not {COSIGN_SIGNATURE_TYPE:?}", dsse::truncate(kind, 80))));
    }
    let image = field(critical, "image")?.ok_or_else(|| Failure::malformed("simple-signing payload has no critical.image"))?;
    let digest = field(image, "docker-manifest-digest")?
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::malformed("simple-signing payload has no docker-manifest-digest"))?;
    Ok(digest.to_owned())
}

fn field<'a>(value: &'a Value, name: &str) -> Result<Option<&'a Value>, Failure> {
    let Some(object) = value.as_object() else { return Ok(None) };
    let mut found = None;
    for (key, item) in object {
        if key.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(Failure::malformed(format!("simple-signing payload has field {name} twice")));
            }
            found = Some(item);
        }
    }
    Ok(found)
}

/// Seconds since the epoch as RFC 3339, or as a number outside years 1970-9999.
fn rfc3339(seconds: i64) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    match u64::try_from(seconds).ok().filter(|s| *s < YEAR_10000).and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(s))) {
        Some(time) => humantime::format_rfc3339_seconds(time).to_string(),
        None => seconds.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_signing_payloads() {
        let ok = br#"{"critical":{"identity":{"docker-reference":"r"},"image":{"Docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#;
        assert_eq!(simple_signing_digest(ok).unwrap(), "sha256:ab");
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"critical":{"image":{"docker-manifest-digest":"sha256:ab"},"type":"other"}}"#,
            br#"{"critical":{"image":{},"type":"cosign container image signature"}}"#,
            br#"{"critical":{"image":{"docker-manifest-digest":1},"type":"cosign container image signature"}}"#,
            br#"{"critical":{"image":{"docker-manifest-digest":"sha256:ab","Docker-Manifest-Digest":"sha256:cd"},"type":"cosign container image signature"}}"#,
        ] {
            assert_eq!(simple_signing_digest(bad).unwrap_err().stage, Stage::Malformed, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn times_format_without_panicking() {
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        for odd in [-1, 253_402_300_800, i64::MAX, i64::MIN] {
            assert_eq!(rfc3339(odd), odd.to_string());
        }
    }

    #[test]
    fn annotations_are_bounded_and_typed() {
        let mut many = Map::new();
        for i in 0..=MAX_ANNOTATIONS {
            many.insert(format!("k{i}"), Value::String(String::new()));
        }
        assert!(Notes::read(&many).is_err());
        let mut typed = Map::new();
        typed.insert(SIGNATURE_ANNOTATION.to_owned(), Value::Bool(true));
        assert!(Notes::read(&typed).is_err());
        let mut huge = Map::new();
        huge.insert(BUNDLE_ANNOTATION.to_owned(), Value::String("x".repeat(MAX_ANNOTATION_BYTES + 1)));
        assert!(Notes::read(&huge).is_err());
        let mut blank = Map::new();
        blank.insert(CERTIFICATE_ANNOTATION.to_owned(), Value::String(" ".to_owned()));
        assert!(Notes::read(&blank).unwrap().certificate.is_none());
    }
}
