//! Loading trust: named keys, keyless identities (Fulcio anchors, Rekor keys, CT logs from an
//! optional `trusted_root.json`) and the Rekor keys of key-based signatures, parsed once into the
//! in-memory form both verification paths use.
//!
//! PEM material and a trusted root are merged into one sigstore TrustedRoot per identity, so the
//! legacy path (`legacy`) and the bundle path (`bundle`, through `sigstore-verify`) trust exactly
//! the same certificates and keys.

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;
use sigstore_verify::trust_root::TrustedRoot;

use super::keys::PublicKey;
use super::rekor::RekorKey;
use super::x509::{Anchor, Certificate};
use super::{IdentityMatch, KeyTrust, KeylessTrust, TrustError};

/// Most certificates read from one configured PEM text.
const MAX_CONFIGURED_CERTIFICATES: usize = 32;
/// Compiled size limit of a subject regex.
const MAX_REGEX_BYTES: usize = 1 << 20;
const TRUSTED_ROOT_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.trustedroot+json;version=0.1";

/// Everything [`super::Trust`] holds.
pub(super) struct Material {
    pub(super) keys: Vec<Key>,
    pub(super) keyless: Vec<Identity>,
    /// Rekor keys for the optional log entries of key-based signatures.
    pub(super) rekor_for_keys: Vec<RekorKey>,
    /// Verifies key-based sigstore bundles; holds only `rekor_for_keys`.
    pub(super) key_bundle_verifier: sigstore_verify::Verifier,
    pub(super) revision: String,
}

/// A named public key.
pub(super) struct Key {
    pub(super) name: String,
    pub(super) public_key: PublicKey,
}

/// A named keyless identity, ready to verify with.
pub(super) struct Identity {
    pub(super) name: String,
    pub(super) issuer: String,
    /// As configured, for messages.
    pub(super) subject: IdentityMatch,
    matcher: Matcher,
    pub(super) anchors: Vec<Anchor>,
    pub(super) rekor_keys: Vec<RekorKey>,
    /// Verifies sigstore bundles against the same material.
    pub(super) bundle_verifier: sigstore_verify::Verifier,
    /// Whether the trusted root lists CT logs, so bundle certificates' SCTs can be checked.
    pub(super) verify_sct: bool,
}

enum Matcher {
    Exact(String),
    Pattern(regex::Regex),
}

impl Material {
    pub(super) fn load(keys: Vec<KeyTrust>, keyless: Vec<KeylessTrust>, rekor_keys_for_keys: Vec<String>) -> Result<Material, TrustError> {
        let mut names: Vec<&str> = Vec::new();
        for name in keys.iter().map(|k| k.name.as_str()).chain(keyless.iter().map(|k| k.name.as_str())) {
            if names.contains(&name) {
                return Err(TrustError::DuplicateName(name.to_owned()));
            }
            names.push(name);
        }
        let revision = revision(&keys, &keyless, &rekor_keys_for_keys);

        let loaded_keys = keys
            .iter()
            .map(|key| {
                let public_key = PublicKey::from_pem(&key.public_key_pem).map_err(|reason| TrustError::Key { name: key.name.clone(), reason })?;
                Ok(Key { name: key.name.clone(), public_key })
            })
            .collect::<Result<Vec<_>, TrustError>>()?;

        let mut key_root = json!({ "mediaType": TRUSTED_ROOT_MEDIA_TYPE });
        for pem in &rekor_keys_for_keys {
            add_rekor_key(&mut key_root, pem).map_err(TrustError::RekorKey)?;
        }
        let key_root = TrustedRoot::from_json(&key_root.to_string()).map_err(|err| TrustError::RekorKey(err.to_string()))?;
        let rekor_for_keys = rekor_keys_of(&key_root).map_err(TrustError::RekorKey)?;
        let key_bundle_verifier = sigstore_verify::Verifier::new(&key_root).map_err(|err| TrustError::RekorKey(err.to_string()))?;

        let identities = keyless
            .into_iter()
            .map(|entry| {
                let name = entry.name.clone();
                load_identity(entry).map_err(|reason| TrustError::Keyless { name, reason })
            })
            .collect::<Result<Vec<_>, TrustError>>()?;

        Ok(Material { keys: loaded_keys, keyless: identities, rekor_for_keys, key_bundle_verifier, revision })
    }
}

impl Identity {
    /// Whether a certificate SAN is this identity.
    pub(super) fn subject_matches(&self, san: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(exact) => exact == san,
            Matcher::Pattern(pattern) => pattern.is_match(san),
        }
    }
}

fn load_identity(entry: KeylessTrust) -> Result<Identity, String> {
    if entry.issuer.is_empty() {
        return Err("issuer is empty".to_owned());
    }
    let matcher = match &entry.subject {
        IdentityMatch::Exact(exact) if exact.is_empty() => return Err("subject is empty".to_owned()),
        IdentityMatch::Exact(exact) => Matcher::Exact(exact.clone()),
        IdentityMatch::Glob(glob) => {
            let pattern: Vec<String> = glob.split('*').map(regex::escape).collect();
            Matcher::Pattern(compile(&pattern.join(".*"))?)
        }
        IdentityMatch::Regex(pattern) => Matcher::Pattern(compile(pattern)?),
    };

    let mut root = match &entry.trusted_root_json {
        Some(text) => {
            let value: Value = serde_json::from_str(text).map_err(|err| format!("trusted_root.json is not JSON: {err}"))?;
            if !value.is_object() {
                return Err("trusted_root.json is not a JSON object".to_owned());
            }
            value
        }
        None => json!({ "mediaType": TRUSTED_ROOT_MEDIA_TYPE }),
    };
    for pem in &entry.fulcio_roots_pem {
        for certificate in Certificate::from_pem_chain(pem, MAX_CONFIGURED_CERTIFICATES).map_err(|err| format!("Fulcio certificate: {err}"))? {
            push(&mut root, "certificateAuthorities", json!({
                "subject": {},
                "uri": "",
                "certChain": { "certificates": [{ "rawBytes": base64::engine::general_purpose::STANDARD.encode(&certificate.der) }] },
            }));
        }
    }
    for pem in &entry.rekor_keys_pem {
        add_rekor_key(&mut root, pem)?;
    }
    let root = TrustedRoot::from_json(&root.to_string()).map_err(|err| format!("trusted root: {err}"))?;

    let mut anchors = Vec::new();
    for authority in &root.certificate_authorities {
        for entry in &authority.cert_chain.certificates {
            let certificate = Certificate::from_der(entry.raw_bytes.as_bytes()).map_err(|err| format!("Fulcio certificate: {err}"))?;
            anchors.push(Anchor {
                certificate,
                valid_from: authority.valid_for.map(|range| range.start.as_second()),
                valid_until: authority.valid_for.and_then(|range| range.end).map(|end| end.as_second()),
            });
        }
    }
    if anchors.is_empty() {
        return Err("no Fulcio root certificate (fulcio_roots or trusted_root)".to_owned());
    }
    let rekor_keys = rekor_keys_of(&root)?;
    if rekor_keys.is_empty() {
        return Err("no Rekor key (rekor_keys or trusted_root): keyless signatures need one".to_owned());
    }
    let bundle_verifier = sigstore_verify::Verifier::new(&root).map_err(|err| format!("trusted root: {err}"))?;
    Ok(Identity {
        name: entry.name,
        issuer: entry.issuer,
        subject: entry.subject,
        matcher,
        anchors,
        rekor_keys,
        bundle_verifier,
        verify_sct: !root.ctlogs.is_empty(),
    })
}

/// A regex that must match a whole SAN.
fn compile(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|err| format!("subject pattern {pattern:?} is invalid: {err}"))
}

/// Adds a PEM Rekor key to a trusted-root JSON value, unless a log with its ID is already there.
fn add_rekor_key(root: &mut Value, pem: &str) -> Result<(), String> {
    let public_key = PublicKey::from_pem(pem).map_err(|err| format!("Rekor key: {err}"))?;
    let log_id = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(public_key.spki_der()));
    let present = root["tlogs"].as_array().is_some_and(|logs| logs.iter().any(|log| log["logId"]["keyId"].as_str() == Some(log_id.as_str())));
    if !present {
        push(root, "tlogs", json!({
            "baseUrl": "",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": base64::engine::general_purpose::STANDARD.encode(public_key.spki_der()),
                "keyDetails": public_key.sigstore_key_details(),
            },
            "logId": { "keyId": log_id },
        }));
    }
    Ok(())
}

fn push(root: &mut Value, field: &str, item: Value) {
    if let Some(object) = root.as_object_mut() {
        let list = object.entry(field).or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(Vec::new());
        }
        if let Some(items) = list.as_array_mut() {
            items.push(item);
        }
    }
}

/// The Rekor keys of a trusted root that this verifier can use.
fn rekor_keys_of(root: &TrustedRoot) -> Result<Vec<RekorKey>, String> {
    let mut keys = Vec::new();
    for log in &root.tlogs {
        // Like sigstore clients, skip keys of algorithms we do not support rather than refuse
        // the whole root; the identity still needs at least one usable key.
        let Ok(public_key) = PublicKey::from_spki_der(log.public_key.raw_bytes.as_bytes()) else { continue };
        let log_id = log.log_id.key_id.as_bytes().to_vec();
        keys.push(RekorKey {
            public_key,
            log_id,
            valid_from: log.public_key.valid_for.map(|range| range.start.as_second()),
            valid_until: log.public_key.valid_for.and_then(|range| range.end).map(|end| end.as_second()),
        });
    }
    Ok(keys)
}

/// sha256 over every input, length-prefixed so that no two configurations collide.
fn revision(keys: &[KeyTrust], keyless: &[KeylessTrust], rekor_keys_for_keys: &[String]) -> String {
    let mut hasher = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(b"portcullis trust v1");
    for key in keys {
        field(b"key");
        field(key.name.as_bytes());
        field(key.public_key_pem.as_bytes());
    }
    for entry in keyless {
        field(b"keyless");
        field(entry.name.as_bytes());
        field(entry.issuer.as_bytes());
        let (kind, subject) = match &entry.subject {
            IdentityMatch::Exact(s) => ("exact", s),
            IdentityMatch::Glob(s) => ("glob", s),
            IdentityMatch::Regex(s) => ("regex", s),
        };
        field(kind.as_bytes());
        field(subject.as_bytes());
        for pem in &entry.fulcio_roots_pem {
            field(b"fulcio");
            field(pem.as_bytes());
        }
        for pem in &entry.rekor_keys_pem {
            field(b"rekor");
            field(pem.as_bytes());
        }
        if let Some(root) = &entry.trusted_root_json {
            field(b"trusted_root");
            field(root.as_bytes());
        }
    }
    for pem in rekor_keys_for_keys {
        field(b"rekor for keys");
        field(pem.as_bytes());
    }
    hex::encode(hasher.finalize())
}
