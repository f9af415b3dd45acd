//! Rekor material of cosign's legacy layout: the `dev.sigstore.cosign/bundle` annotation, its
//! SignedEntryTimestamp (SET), and the logged entry body (`hashedrekord` 0.0.1, `dsse` 0.0.1,
//! `intoto` 0.0.2), which must describe the signature actually presented (CVE-2022-36056 class).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::Digest as _;

use super::keys::{self, PublicKey};

/// Largest decoded Rekor entry body accepted.
const MAX_BODY_BYTES: usize = 128 << 10;
/// Most signatures read from a logged DSSE or in-toto entry.
const MAX_LOGGED_SIGNATURES: usize = 16;

/// A Rekor public key with its log ID and the window in which it signed.
#[derive(Debug, Clone)]
pub(super) struct RekorKey {
    pub(super) public_key: PublicKey,
    /// sha256 of the DER public key, as Rekor names its log.
    pub(super) log_id: Vec<u8>,
    pub(super) valid_from: Option<i64>,
    pub(super) valid_until: Option<i64>,
}

/// The `dev.sigstore.cosign/bundle` annotation, parsed.
#[derive(Debug, Clone)]
pub(super) struct LegacyBundle {
    set: Vec<u8>,
    body_base64: String,
    body: Vec<u8>,
    pub(super) integrated_time: i64,
    pub(super) log_index: i64,
    log_id_hex: String,
}

/// A logged entry body: what Rekor recorded about the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LoggedEntry {
    /// `hashedrekord` 0.0.1: the artifact hash, the signature and its verifier.
    HashedRekord { artifact_sha256: Vec<u8>, signature: LoggedSignature },
    /// `dsse` 0.0.1: payload and envelope hashes and every signature with its verifier.
    Dsse { payload_sha256: Vec<u8>, envelope_sha256: Vec<u8>, signatures: Vec<LoggedSignature> },
    /// `intoto` 0.0.2: the payload hash, payload type and every signature with its verifier.
    Intoto { payload_sha256: Vec<u8>, payload_type: String, signatures: Vec<LoggedSignature> },
}

/// A logged signature and the key or certificate it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LoggedSignature {
    signature: Vec<u8>,
    verifier_spki: Vec<u8>,
    /// The DER certificate when the verifier was one.
    verifier_certificate: Option<Vec<u8>>,
}

/// Who signed the presented evidence.
#[derive(Debug, Clone, Copy)]
pub(super) enum Signer<'a> {
    /// A certificate, by its DER: the log must name the same certificate.
    Certificate(&'a [u8]),
    /// A public key, by its DER SubjectPublicKeyInfo: the log may name it or a certificate for it.
    Key(&'a [u8]),
}

/// What the evidence presents, to compare with the log.
#[derive(Debug, Clone, Copy)]
pub(super) enum Presented<'a> {
    /// A simple-signing payload and its signature.
    Blob { payload: &'a [u8], signature: &'a [u8], signer: Signer<'a> },
    /// A DSSE envelope: its bytes, type, decoded payload and the signature that verified.
    Envelope { envelope: &'a [u8], envelope_forms: &'a [Vec<u8>], payload_type: &'a str, payload: &'a [u8], signature: &'a [u8], signer: Signer<'a> },
}

#[derive(Deserialize)]
struct BundleAnnotation {
    #[serde(rename = "SignedEntryTimestamp")]
    set: String,
    #[serde(rename = "Payload")]
    payload: BundlePayload,
}

#[derive(Deserialize)]
struct BundlePayload {
    body: Value,
    #[serde(rename = "integratedTime")]
    integrated_time: i64,
    #[serde(rename = "logIndex")]
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

impl LegacyBundle {
    /// Parses the annotation text.
    pub(super) fn parse(text: &str) -> Result<LegacyBundle, String> {
        let annotation: BundleAnnotation = serde_json::from_str(text).map_err(|err| format!("Rekor bundle annotation is malformed: {err}"))?;
        let set = base64::engine::general_purpose::STANDARD
            .decode(annotation.set.as_bytes())
            .map_err(|err| format!("Rekor SET is not base64: {err}"))?;
        let Value::String(body_base64) = annotation.payload.body else {
            return Err("Rekor bundle body is not a base64 string".to_owned());
        };
        let body = base64::engine::general_purpose::STANDARD
            .decode(body_base64.as_bytes())
            .map_err(|err| format!("Rekor bundle body is not base64: {err}"))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(format!("Rekor entry body of {} bytes is too large", body.len()));
        }
        let log_id_hex = annotation.payload.log_id;
        if log_id_hex.len() != 64 || !log_id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("Rekor bundle logID is not a sha256 hex string".to_owned());
        }
        if annotation.payload.integrated_time <= 0 || annotation.payload.log_index < 0 {
            return Err("Rekor bundle has a negative integratedTime or logIndex".to_owned());
        }
        Ok(LegacyBundle {
            set,
            body_base64,
            body,
            integrated_time: annotation.payload.integrated_time,
            log_index: annotation.payload.log_index,
            log_id_hex,
        })
    }

    /// Checks the SET with the configured Rekor key that has this entry's log ID and was valid
    /// at its integrated time.
    pub(super) fn verify_set(&self, keys: &[RekorKey]) -> Result<(), String> {
        // The SET signs the RFC 8785 canonical JSON of these four fields (cosign
        // pkg/cosign/tlog.go VerifySET); keys sort as body, integratedTime, logID, logIndex.
        let signed = serde_json::json!({
            "body": self.body_base64,
            "integratedTime": self.integrated_time,
            "logID": self.log_id_hex,
            "logIndex": self.log_index,
        });
        let canonical = serde_json_canonicalizer::to_vec(&signed).map_err(|err| format!("cannot canonicalize the SET payload: {err}"))?;
        let log_id = hex::decode(self.log_id_hex.to_ascii_lowercase()).map_err(|_| "Rekor bundle logID is not hex".to_owned())?;
        let mut known_log = false;
        for key in keys.iter().filter(|key| key.log_id == log_id) {
            known_log = true;
            let in_window = key.valid_from.is_none_or(|from| from <= self.integrated_time)
                && key.valid_until.is_none_or(|until| self.integrated_time <= until);
            if in_window && key.public_key.verify(&canonical, &self.set) {
                return Ok(());
            }
        }
        if known_log {
            Err("SET does not verify against any configured Rekor key".to_owned())
        } else {
            Err(format!("SET does not verify against any configured Rekor key (log ID {} is not configured)", self.log_id_hex))
        }
    }

    /// Parses the logged entry body.
    pub(super) fn entry(&self) -> Result<LoggedEntry, String> {
        parse_body(&self.body)
    }
}

/// Parses a Rekor entry body (canonical JSON).
fn parse_body(body: &[u8]) -> Result<LoggedEntry, String> {
    let value: Value = serde_json::from_slice(body).map_err(|err| format!("Rekor entry body is not JSON: {err}"))?;
    let kind = value["kind"].as_str().unwrap_or("");
    let api_version = value["apiVersion"].as_str().unwrap_or("");
    let spec = &value["spec"];
    match (kind, api_version) {
        ("hashedrekord", "0.0.1") => {
            let artifact_sha256 = sha256_field(&spec["data"]["hash"], "data.hash")?;
            let signature = base64_field(&spec["signature"]["content"], "signature.content")?;
            let verifier = base64_field(&spec["signature"]["publicKey"]["content"], "signature.publicKey.content")?;
            Ok(LoggedEntry::HashedRekord { artifact_sha256, signature: logged_signature(signature, &verifier)? })
        }
        ("dsse", "0.0.1") => {
            let payload_sha256 = sha256_field(&spec["payloadHash"], "payloadHash")?;
            let envelope_sha256 = sha256_field(&spec["envelopeHash"], "envelopeHash")?;
            let signatures = signatures_field(&spec["signatures"], |entry| {
                let signature = base64_field(&entry["signature"], "signatures[].signature")?;
                let verifier = base64_field(&entry["verifier"], "signatures[].verifier")?;
                logged_signature(signature, &verifier)
            })?;
            Ok(LoggedEntry::Dsse { payload_sha256, envelope_sha256, signatures })
        }
        ("intoto", "0.0.2") => {
            let content = &spec["content"];
            let payload_sha256 = sha256_field(&content["payloadHash"], "content.payloadHash")?;
            let payload_type = content["envelope"]["payloadType"].as_str().ok_or("Rekor intoto entry has no payloadType")?.to_owned();
            let signatures = signatures_field(&content["envelope"]["signatures"], |entry| {
                // intoto 0.0.2 stores the DSSE signature base64-encoded once more.
                let once = base64_field(&entry["sig"], "envelope.signatures[].sig")?;
                let signature = base64::engine::general_purpose::STANDARD
                    .decode(&once)
                    .map_err(|err| format!("Rekor intoto signature is not double base64: {err}"))?;
                let verifier = base64_field(&entry["publicKey"], "envelope.signatures[].publicKey")?;
                logged_signature(signature, &verifier)
            })?;
            Ok(LoggedEntry::Intoto { payload_sha256, payload_type, signatures })
        }
        _ => Err(format!("unsupported Rekor entry kind {kind:?} version {api_version:?}")),
    }
}

impl LoggedEntry {
    /// Checks that the log describes exactly what is presented: same payload hash, same
    /// signature, same certificate (or key).
    pub(super) fn matches(&self, presented: &Presented<'_>) -> Result<(), String> {
        match (self, presented) {
            (LoggedEntry::HashedRekord { artifact_sha256, signature }, Presented::Blob { payload, signature: presented_signature, signer }) => {
                if artifact_sha256.as_slice() != sha2::Sha256::digest(payload).as_slice() {
                    return Err("Rekor body does not match the signature: it logs another payload hash".to_owned());
                }
                if !signature.matches(presented_signature, *signer) {
                    return Err("Rekor body does not match the signature".to_owned());
                }
                Ok(())
            }
            (
                LoggedEntry::Dsse { payload_sha256, envelope_sha256, signatures },
                Presented::Envelope { envelope, envelope_forms, payload, signature, signer, .. },
            ) => {
                if payload_sha256.as_slice() != sha2::Sha256::digest(payload).as_slice() {
                    return Err("Rekor body does not match the signature: it logs another payload hash".to_owned());
                }
                // The envelope hash depends on how the envelope was serialized when logged;
                // accept the bytes presented or a known re-serialization of the same envelope.
                let envelope_known = std::iter::once(*envelope)
                    .chain(envelope_forms.iter().map(Vec::as_slice))
                    .any(|form| sha2::Sha256::digest(form).as_slice() == envelope_sha256.as_slice());
                if !envelope_known {
                    return Err("Rekor body does not match the signature: it logs another envelope hash".to_owned());
                }
                if !signatures.iter().any(|logged| logged.matches(signature, *signer)) {
                    return Err("Rekor body does not match the signature".to_owned());
                }
                Ok(())
            }
            (
                LoggedEntry::Intoto { payload_sha256, payload_type, signatures },
                Presented::Envelope { payload, payload_type: presented_type, signature, signer, .. },
            ) => {
                if payload_sha256.as_slice() != sha2::Sha256::digest(payload).as_slice() {
                    return Err("Rekor body does not match the signature: it logs another payload hash".to_owned());
                }
                if payload_type != presented_type {
                    return Err("Rekor body does not match the signature: it logs another payload type".to_owned());
                }
                if !signatures.iter().any(|logged| logged.matches(signature, *signer)) {
                    return Err("Rekor body does not match the signature".to_owned());
                }
                Ok(())
            }
            (LoggedEntry::HashedRekord { .. }, Presented::Envelope { .. }) => {
                Err("Rekor body does not match the signature: a hashedrekord entry for an attestation".to_owned())
            }
            (_, Presented::Blob { .. }) => Err("Rekor body does not match the signature: an attestation entry for a signature".to_owned()),
        }
    }
}

impl LoggedSignature {
    fn matches(&self, signature: &[u8], signer: Signer<'_>) -> bool {
        self.signature == signature
            && match signer {
                Signer::Certificate(der) => self.verifier_certificate.as_deref() == Some(der),
                Signer::Key(spki) => self.verifier_spki == spki,
            }
    }
}

fn logged_signature(signature: Vec<u8>, verifier_pem: &[u8]) -> Result<LoggedSignature, String> {
    let text = std::str::from_utf8(verifier_pem).map_err(|_| "Rekor entry verifier is not PEM text".to_owned())?;
    let verifier_spki = keys::spki_of_pem_verifier(text).map_err(|err| format!("Rekor entry verifier: {err}"))?;
    let blocks = keys::pem_blocks(text)?;
    let verifier_certificate = blocks.into_iter().find(|block| block.label == "CERTIFICATE").map(|block| block.der);
    Ok(LoggedSignature { signature, verifier_spki, verifier_certificate })
}

fn signatures_field(value: &Value, parse: impl Fn(&Value) -> Result<LoggedSignature, String>) -> Result<Vec<LoggedSignature>, String> {
    let entries = value.as_array().ok_or("Rekor entry has no signatures")?;
    if entries.is_empty() || entries.len() > MAX_LOGGED_SIGNATURES {
        return Err(format!("Rekor entry has {} signatures", entries.len()));
    }
    entries.iter().map(parse).collect()
}

fn sha256_field(value: &Value, name: &str) -> Result<Vec<u8>, String> {
    if value["algorithm"].as_str() != Some("sha256") {
        return Err(format!("Rekor entry {name} is not a sha256 hash"));
    }
    let hex_value = value["value"].as_str().ok_or_else(|| format!("Rekor entry {name} has no value"))?;
    let bytes = hex::decode(hex_value).map_err(|_| format!("Rekor entry {name} is not hex"))?;
    if bytes.len() != 32 {
        return Err(format!("Rekor entry {name} is not a sha256 hash"));
    }
    Ok(bytes)
}

fn base64_field(value: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = value.as_str().ok_or_else(|| format!("Rekor entry has no {name}"))?;
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|err| format!("Rekor entry {name} is not base64: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_annotations_refuse_garbage() {
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"SignedEntryTimestamp":"!!","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"00"}}"#,
            r#"{"SignedEntryTimestamp":"AA==","Payload":{"body":{},"integratedTime":1,"logIndex":1,"logID":"00"}}"#,
            r#"{"SignedEntryTimestamp":"AA==","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"zz"}}"#,
            r#"{"SignedEntryTimestamp":"AA==","Payload":{"body":"e30=","integratedTime":-1,"logIndex":1,"logID":"0000000000000000000000000000000000000000000000000000000000000000"}}"#,
        ] {
            assert!(LegacyBundle::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_refuse_unknown_kinds_and_bad_fields() {
        for bad in [
            r#"{}"#,
            r#"{"kind":"rekord","apiVersion":"0.0.1","spec":{}}"#,
            r#"{"kind":"hashedrekord","apiVersion":"0.0.1","spec":{"data":{"hash":{"algorithm":"sha1","value":"00"}}}}"#,
            r#"{"kind":"dsse","apiVersion":"0.0.1","spec":{"payloadHash":{"algorithm":"sha256","value":"00"}}}"#,
            r#"{"kind":"intoto","apiVersion":"0.0.2","spec":{"content":{}}}"#,
        ] {
            assert!(parse_body(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
