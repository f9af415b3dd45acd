//! Evidence made in the test with real cryptography: signing keys of every supported kind, a
//! Fulcio-style CA (with an optional intermediate) issuing leaf certificates with SAN and
//! OIDC-issuer extensions, a Rekor key that signs SETs over chosen entry bodies, and cosign's
//! simple-signing and DSSE layers with their annotations.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::super::dsse;
use super::super::{IdentityMatch, KeyTrust, KeylessTrust, Trust};

/// The manifest the generated evidence is about.
pub(super) const SUBJECT: &str = "sha256:abababababababababababababababababababababababababababababababab";
/// Another manifest.
pub(super) const OTHER: &str = "sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
/// When the generated Rekor entries were integrated.
pub(super) const LOGGED_AT: i64 = 1_800_000_000;
pub(super) const ISSUER: &str = "https://token.actions.githubusercontent.com";
pub(super) const WORKFLOW: &str = "https://github.com/myorg/app/.github/workflows/release.yml@refs/heads/main";
pub(super) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub(super) const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub(super) const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
pub(super) const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// A throwaway 2048-bit RSA test key (PKCS#8 DER, base64), made with `openssl genpkey`: RSA key
/// generation is too slow in unoptimised test builds.
const RSA_TEST_KEY_PKCS8: &str = include_str!("rsa-test-key.pkcs8.b64");

/// A signing key of any supported kind.
#[derive(Clone)]
pub(super) enum TestKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

impl TestKey {
    /// A P-256 key derived from `seed` (deterministic, so failures reproduce).
    pub(super) fn p256(seed: &str) -> TestKey {
        TestKey::P256(p256::ecdsa::SigningKey::from_slice(&sha2::Sha256::digest(seed.as_bytes())).expect("a sha256 is a valid P-256 scalar"))
    }

    pub(super) fn p384(seed: &str) -> TestKey {
        TestKey::P384(p384::ecdsa::SigningKey::from_slice(&sha2::Sha384::digest(seed.as_bytes())).expect("a sha384 is a valid P-384 scalar"))
    }

    pub(super) fn ed25519(seed: &str) -> TestKey {
        TestKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&sha2::Sha256::digest(seed.as_bytes()).into()))
    }

    pub(super) fn rsa() -> TestKey {
        let der = base64::engine::general_purpose::STANDARD.decode(RSA_TEST_KEY_PKCS8.split_whitespace().collect::<String>()).unwrap();
        TestKey::Rsa(rsa::pkcs8::DecodePrivateKey::from_pkcs8_der(&der).unwrap())
    }

    /// A cosign-style signature: DER ECDSA (SHA-256 for P-256, SHA-384 for P-384), pure Ed25519,
    /// RSA PKCS#1 v1.5 with SHA-256.
    pub(super) fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            TestKey::P256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message);
                signature.to_der().as_bytes().to_vec()
            }
            TestKey::P384(key) => {
                let signature: p384::ecdsa::Signature = key.sign(message);
                signature.to_der().as_bytes().to_vec()
            }
            TestKey::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            TestKey::Rsa(key) => {
                let signature: rsa::pkcs1v15::Signature = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone()).sign(message);
                rsa::signature::SignatureEncoding::to_vec(&signature)
            }
        }
    }

    pub(super) fn spki_der(&self) -> Vec<u8> {
        match self {
            TestKey::P256(key) => key.verifying_key().to_public_key_der().unwrap().into_vec(),
            TestKey::P384(key) => key.verifying_key().to_public_key_der().unwrap().into_vec(),
            TestKey::Ed25519(key) => key.verifying_key().to_public_key_der().unwrap().into_vec(),
            TestKey::Rsa(key) => rsa::pkcs8::EncodePublicKey::to_public_key_der(&key.to_public_key()).unwrap().into_vec(),
        }
    }

    pub(super) fn public_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der())
    }

    /// The same key for rcgen, to put it in a certificate (P-256 only).
    fn rcgen_key(&self) -> rcgen::KeyPair {
        match self {
            TestKey::P256(key) => {
                let der = p256::SecretKey::from(key.as_nonzero_scalar()).to_pkcs8_der().unwrap();
                rcgen::KeyPair::try_from(der.as_bytes()).unwrap()
            }
            _ => panic!("test certificates carry P-256 keys"),
        }
    }
}

/// PEM text of one block.
pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = encoded.as_bytes().chunks(64).map(|chunk| std::str::from_utf8(chunk).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A certificate authority that can issue intermediates and leaves.
pub(super) struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub(super) pem: String,
}

/// What goes into a leaf certificate.
#[derive(Clone)]
pub(super) struct Leaf {
    /// `email:...` or a URI.
    pub(super) san: String,
    /// Written to extension .1.8 (UTF8String) and, when `issuer_v1` is set, to .1.1 as well.
    pub(super) issuer: Option<String>,
    pub(super) issuer_v1: bool,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
    pub(super) code_signing: bool,
    pub(super) is_ca: bool,
}

impl Default for Leaf {
    fn default() -> Leaf {
        Leaf {
            san: WORKFLOW.to_owned(),
            issuer: Some(ISSUER.to_owned()),
            issuer_v1: true,
            not_before: LOGGED_AT - 300,
            not_after: LOGGED_AT + 300,
            code_signing: true,
            is_ca: false,
        }
    }
}

fn set_validity(params: &mut rcgen::CertificateParams, not_before: i64, not_after: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + std::time::Duration::from_secs(u64::try_from(not_before).unwrap());
    params.not_after = epoch + std::time::Duration::from_secs(u64::try_from(not_after).unwrap());
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "portcullis-test");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    set_validity(&mut params, LOGGED_AT - 86_400 * 365, LOGGED_AT + 86_400 * 365);
    params
}

impl Ca {
    /// A self-signed root; `seed` picks its key, so two roots may share a name but not a key.
    pub(super) fn root(name: &str, seed: &str) -> Ca {
        let key = TestKey::p256(&format!("ca {name} {seed}")).rcgen_key();
        let issuer = rcgen::CertifiedIssuer::self_signed(ca_params(name), key).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// An intermediate CA under this one.
    pub(super) fn intermediate(&self, name: &str) -> Ca {
        let key = TestKey::p256(&format!("ca {name}")).rcgen_key();
        let issuer = rcgen::CertifiedIssuer::signed_by(ca_params(name), key, &self.issuer).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A leaf certificate for `key`, as PEM.
    pub(super) fn leaf(&self, key: &TestKey, leaf: &Leaf) -> String {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![match leaf.san.strip_prefix("email:") {
            Some(email) => rcgen::SanType::Rfc822Name(email.try_into().unwrap()),
            None => rcgen::SanType::URI(leaf.san.as_str().try_into().unwrap()),
        }];
        params.is_ca = if leaf.is_ca { rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained) } else { rcgen::IsCa::ExplicitNoCa };
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![if leaf.code_signing { rcgen::ExtendedKeyUsagePurpose::CodeSigning } else { rcgen::ExtendedKeyUsagePurpose::ServerAuth }];
        if let Some(issuer) = &leaf.issuer {
            // 1.3.6.1.4.1.57264.1.8: a DER UTF8String; .1.1: the raw string.
            let mut utf8 = vec![0x0c, u8::try_from(issuer.len()).unwrap()];
            utf8.extend_from_slice(issuer.as_bytes());
            params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], utf8));
            if leaf.issuer_v1 {
                params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 1], issuer.as_bytes().to_vec()));
            }
        }
        set_validity(&mut params, leaf.not_before, leaf.not_after);
        params.signed_by(&key.rcgen_key(), &self.issuer).unwrap().pem()
    }
}

/// A Rekor log: its key signs SETs.
pub(super) struct Rekor {
    pub(super) key: TestKey,
}

impl Rekor {
    pub(super) fn new(seed: &str) -> Rekor {
        Rekor { key: TestKey::p256(&format!("rekor {seed}")) }
    }

    pub(super) fn pem(&self) -> String {
        self.key.public_pem()
    }

    pub(super) fn log_id_hex(&self) -> String {
        hex::encode(sha2::Sha256::digest(self.key.spki_der()))
    }

    /// The `dev.sigstore.cosign/bundle` annotation for `body`, with a SET by this log.
    pub(super) fn bundle(&self, body: &Value, integrated_time: i64, log_index: i64) -> String {
        self.bundle_as(body, integrated_time, log_index, &self.log_id_hex())
    }

    /// The same, claiming another log's ID.
    pub(super) fn bundle_as(&self, body: &Value, integrated_time: i64, log_index: i64, log_id_hex: &str) -> String {
        let body = b64(body.to_string().as_bytes());
        let signed = json!({ "body": body, "integratedTime": integrated_time, "logID": log_id_hex, "logIndex": log_index });
        let set = self.key.sign(&serde_json_canonicalizer::to_vec(&signed).unwrap());
        json!({
            "SignedEntryTimestamp": b64(&set),
            "Payload": { "body": body, "integratedTime": integrated_time, "logIndex": log_index, "logID": log_id_hex },
        })
        .to_string()
    }
}

/// A `hashedrekord` 0.0.1 body.
pub(super) fn hashedrekord(payload: &[u8], signature: &[u8], verifier_pem: &str) -> Value {
    json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": { "hash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(payload)) } },
            "signature": { "content": b64(signature), "publicKey": { "content": b64(verifier_pem.as_bytes()) } },
        },
    })
}

/// A `dsse` 0.0.1 body for an envelope.
pub(super) fn dsse_body(envelope: &[u8], payload: &[u8], signature: &[u8], verifier_pem: &str) -> Value {
    json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "envelopeHash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(envelope)) },
            "payloadHash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(payload)) },
            "signatures": [{ "signature": b64(signature), "verifier": b64(verifier_pem.as_bytes()) }],
        },
    })
}

/// An `intoto` 0.0.2 body (signature base64-encoded twice, as Rekor stores it).
pub(super) fn intoto_body(envelope: &[u8], payload: &[u8], signature: &[u8], verifier_pem: &str) -> Value {
    json!({
        "apiVersion": "0.0.2",
        "kind": "intoto",
        "spec": { "content": {
            "envelope": {
                "payloadType": dsse::IN_TOTO_PAYLOAD_TYPE,
                "signatures": [{ "sig": b64(b64(signature).as_bytes()), "publicKey": b64(verifier_pem.as_bytes()) }],
            },
            "hash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(envelope)) },
            "payloadHash": { "algorithm": "sha256", "value": hex::encode(sha2::Sha256::digest(payload)) },
        } },
    })
}

/// A cosign simple-signing payload for `digest`.
pub(super) fn simple_signing(digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": { "docker-reference": "registry.test/team/app" },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": { "creator": "portcullis tests" },
    })
    .to_string()
    .into_bytes()
}

/// An in-toto v1 statement about `digest`.
pub(super) fn statement(digest: &str, predicate_type: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": "registry.test/team/app", "digest": { "sha256": hex } }],
        "predicateType": predicate_type,
        "predicate": { "scanner": { "uri": "pkg:github/aquasecurity/trivy" } },
    })
    .to_string()
    .into_bytes()
}

/// A DSSE envelope of an in-toto statement signed by each key (over the PAE).
pub(super) fn envelope(statement: &[u8], keys: &[&TestKey]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let pae = dsse::pae(dsse::IN_TOTO_PAYLOAD_TYPE, statement);
    let signatures: Vec<Vec<u8>> = keys.iter().map(|key| key.sign(&pae)).collect();
    let envelope = json!({
        "payloadType": dsse::IN_TOTO_PAYLOAD_TYPE,
        "payload": b64(statement),
        "signatures": signatures.iter().map(|sig| json!({ "keyid": "", "sig": b64(sig) })).collect::<Vec<_>>(),
    });
    (envelope.to_string().into_bytes(), signatures)
}

/// Layer annotations from pairs.
pub(super) fn annotations(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), Value::String((*value).to_owned()))).collect()
}

/// A trust with one key named 'release'.
pub(super) fn key_trust(key: &TestKey, rekor: Option<&Rekor>) -> Trust {
    Trust::new(vec![KeyTrust { name: "release".into(), public_key_pem: key.public_pem() }], Vec::new(), rekor.map(Rekor::pem).into_iter().collect()).unwrap()
}

/// A keyless identity named `name` trusting `root` and `rekor`.
pub(super) fn identity(name: &str, subject: IdentityMatch, issuer: &str, roots: &[&Ca], rekor: &Rekor) -> KeylessTrust {
    KeylessTrust {
        name: name.into(),
        issuer: issuer.into(),
        subject,
        fulcio_roots_pem: roots.iter().map(|ca| ca.pem.clone()).collect(),
        rekor_keys_pem: vec![rekor.pem()],
        trusted_root_json: None,
    }
}
