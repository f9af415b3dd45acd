//! DSSE envelopes and the in-toto statements inside them: parsing, the pre-authentication
//! encoding (PAE) that is actually signed, and the subject check that binds a statement to a
//! manifest digest.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::{Failure, Stage};

/// The only payload type accepted: an in-toto statement.
pub(super) const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Statement `_type`s accepted.
const STATEMENT_TYPES: &[&str] = &["https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1"];
/// Most signatures read from one envelope.
const MAX_SIGNATURES: usize = 16;
/// Most subjects looked at in one statement.
const MAX_SUBJECTS: usize = 1024;

/// A parsed DSSE envelope.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    pub(super) payload_type: String,
    /// The decoded payload.
    pub(super) payload: Vec<u8>,
    /// The payload as base64 text, as it appeared.
    payload_base64: String,
    pub(super) signatures: Vec<Signature>,
}

/// One envelope signature.
#[derive(Debug, Clone)]
pub(super) struct Signature {
    keyid: String,
    sig_base64: String,
    pub(super) sig: Vec<u8>,
}

/// An in-toto statement whose subject has been checked.
#[derive(Debug, Clone)]
pub(super) struct Statement {
    pub(super) predicate_type: String,
    pub(super) value: Value,
}

#[derive(Deserialize)]
struct EnvelopeJson {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Deserialize)]
struct SignatureJson {
    #[serde(default)]
    keyid: String,
    sig: String,
}

impl Envelope {
    /// Parses envelope JSON; the payload and signatures must be base64 (standard or URL-safe, as
    /// the DSSE spec allows).
    pub(super) fn parse(bytes: &[u8]) -> Result<Envelope, String> {
        let json: EnvelopeJson = serde_json::from_slice(bytes).map_err(|err| format!("DSSE envelope is malformed: {err}"))?;
        if json.signatures.is_empty() {
            return Err("DSSE envelope has no signatures".to_owned());
        }
        if json.signatures.len() > MAX_SIGNATURES {
            return Err(format!("DSSE envelope has {} signatures, at most {MAX_SIGNATURES} are read", json.signatures.len()));
        }
        let payload = decode_base64(&json.payload).map_err(|err| format!("DSSE payload is not base64: {err}"))?;
        let signatures = json
            .signatures
            .into_iter()
            .map(|signature| {
                let sig = decode_base64(&signature.sig).map_err(|err| format!("DSSE signature is not base64: {err}"))?;
                Ok(Signature { keyid: signature.keyid, sig_base64: signature.sig, sig })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Envelope { payload_type: json.payload_type, payload, payload_base64: json.payload, signatures })
    }

    /// The bytes the signatures sign: `DSSEv1 <len> <type> <len> <payload>`.
    pub(super) fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// The envelope serialized as Go's `encoding/json` writes it (the form Rekor hashes for a
    /// `dsse` entry), with and without empty key IDs.
    pub(super) fn known_serializations(&self) -> Vec<Vec<u8>> {
        let string = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let form = |keep_empty_keyid: bool| {
            let signatures: Vec<String> = self
                .signatures
                .iter()
                .map(|signature| {
                    if signature.keyid.is_empty() && !keep_empty_keyid {
                        format!("{{\"sig\":{}}}", string(&signature.sig_base64))
                    } else {
                        format!("{{\"keyid\":{},\"sig\":{}}}", string(&signature.keyid), string(&signature.sig_base64))
                    }
                })
                .collect();
            format!(
                "{{\"payloadType\":{},\"payload\":{},\"signatures\":[{}]}}",
                string(&self.payload_type),
                string(&self.payload_base64),
                signatures.join(",")
            )
            .into_bytes()
        };
        vec![form(true), form(false)]
    }
}

/// DSSE v1 pre-authentication encoding.
pub(super) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out
}

impl Statement {
    /// Parses an in-toto statement (v0.1 or v1) with a predicate type and subjects.
    pub(super) fn parse(payload: &[u8]) -> Result<Statement, Failure> {
        let value: Value = serde_json::from_slice(payload).map_err(|err| Failure::malformed(format!("in-toto statement is not JSON: {err}")))?;
        let statement_type = value["_type"].as_str().unwrap_or("");
        if !STATEMENT_TYPES.contains(&statement_type) {
            return Err(Failure::malformed(format!("payload is not an in-toto statement (_type {:?})", truncate(statement_type, 80))));
        }
        let predicate_type = value["predicateType"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| Failure::malformed("in-toto statement has no predicateType"))?.to_owned();
        if !value["subject"].is_array() {
            return Err(Failure::malformed("in-toto statement has no subject list"));
        }
        Ok(Statement { predicate_type, value })
    }

    /// Checks that one of the subjects has digest `algorithm:hex`.
    pub(super) fn check_subject(&self, algorithm: &str, hex: &str) -> Result<(), Failure> {
        let subjects = self.value["subject"].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut other = None;
        for entry in subjects.iter().take(MAX_SUBJECTS) {
            match entry["digest"][algorithm].as_str() {
                Some(candidate) if candidate.eq_ignore_ascii_case(hex) => return Ok(()),
                Some(candidate) if other.is_none() => other = Some(format!("{algorithm}:{}", truncate(candidate, 128))),
                _ => {}
            }
        }
        Err(Failure::new(
            Stage::Subject,
            match other {
                Some(other) => format!("attestation subject is {other}, not {algorithm}:{hex}"),
                None => format!("attestation has no {algorithm} subject, so it is not about {algorithm}:{hex}"),
            },
        ))
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
}

/// At most `max` characters of `s`, for messages that quote input.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // secure-systems-lab/dsse protocol.md: PAE("http://example.com/HelloWorld", "hello world").
        assert_eq!(pae("http://example.com/HelloWorld", b"hello world"), b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec());
    }

    #[test]
    fn statements_bind_to_the_subject() {
        let statement = |digest: &str| {
            format!(r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{digest}"}}}}],"predicateType":"p","predicate":{{}}}}"#)
        };
        let ours = "ab".repeat(32);
        let parsed = Statement::parse(statement(&ours).as_bytes()).unwrap();
        assert_eq!(parsed.predicate_type, "p");
        parsed.check_subject("sha256", &ours).unwrap();
        let err = Statement::parse(statement(&"cd".repeat(32)).as_bytes()).unwrap().check_subject("sha256", &ours).unwrap_err();
        assert_eq!(err, Failure::new(Stage::Subject, format!("attestation subject is sha256:{}, not sha256:{ours}", "cd".repeat(32))));
        assert_eq!(parsed.check_subject("sha512", &ours).unwrap_err().stage, Stage::Subject);
        for bad in [&b"[]"[..], b"{}", br#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"p"}"#, b"\xff"] {
            assert_eq!(Statement::parse(bad).unwrap_err().stage, Stage::Malformed);
        }
    }

    #[test]
    fn envelopes_refuse_garbage() {
        for bad in [
            &b""[..],
            b"{}",
            br#"{"payloadType":"t","payload":"e30=","signatures":[]}"#,
            br#"{"payloadType":"t","payload":"@@","signatures":[{"sig":"AA=="}]}"#,
            br#"{"payloadType":"t","payload":"e30=","signatures":[{"sig":"@"}]}"#,
        ] {
            assert!(Envelope::parse(bad).is_err());
        }
        let envelope = Envelope::parse(br#"{"payloadType":"t","payload":"e30=","signatures":[{"sig":"AA=="}]}"#).unwrap();
        assert_eq!(envelope.payload, b"{}");
        assert_eq!(
            envelope.known_serializations()[0],
            br#"{"payloadType":"t","payload":"e30=","signatures":[{"keyid":"","sig":"AA=="}]}"#.to_vec()
        );
    }
}
