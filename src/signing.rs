//! The registry's own signing key, for the verification summaries (SLSA VSA) it attaches to
//! promoted images: ECDSA P-256 over SHA-256, the algorithm cosign uses for its keys.
//!
//! The key comes from the configuration, or is generated at first start and kept in the store
//! (`Metadata::create_signing_key_pem`: create-only, so replicas starting together agree on one
//! key). DSSE envelopes are signed over the pre-authentication encoding (PAE) of the DSSE spec.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};

use crate::metadata::{Metadata, MetadataError};

/// The in-toto statement payload type of DSSE envelopes.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The registry's signing key.
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    public_pem: String,
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] MetadataError),
    /// The PEM is not a PKCS#8 P-256 private key.
    #[error("signing key is not a PKCS#8 ECDSA P-256 private key: {0}")]
    Key(String),
}

impl SigningKey {
    /// Loads the key from `pem` (PKCS#8), or from the store, generating it there when absent.
    pub async fn load(configured_pem: Option<&str>, metadata: &Metadata) -> Result<SigningKey, SigningError> {
        if let Some(pem) = configured_pem {
            return SigningKey::from_pem(pem);
        }
        if let Some(pem) = metadata.signing_key_pem().await? {
            return SigningKey::from_pem(&pem);
        }
        let generated = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = generated.to_pkcs8_pem(LineEnding::LF).map_err(|err| SigningError::Key(err.to_string()))?;
        // Another replica may have generated one first: then theirs is the key.
        SigningKey::from_pem(&metadata.create_signing_key_pem(&pem).await?)
    }

    fn from_pem(pem: &str) -> Result<SigningKey, SigningError> {
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(|err| SigningError::Key(err.to_string()))?;
        let public_pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|err| SigningError::Key(err.to_string()))?;
        Ok(SigningKey { key, public_pem })
    }

    /// The public key, PEM (SubjectPublicKeyInfo), as `cosign.pub` files hold it.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// A DSSE envelope over `payload` of `payload_type`, signed with this key.
    pub fn dsse_envelope(&self, payload_type: &str, payload: &[u8]) -> serde_json::Value {
        let signature: p256::ecdsa::DerSignature = self.key.sign(&pae(payload_type, payload));
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "payloadType": payload_type,
            "payload": b64.encode(payload),
            "signatures": [{ "keyid": "", "sig": b64.encode(signature.as_bytes()) }],
        })
    }
}

/// DSSE pre-authentication encoding: `DSSEv1 <len> <type> <len> <body>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey;

    #[tokio::test]
    async fn generated_once_and_signatures_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(storage::FsBlobStore::open(&dir.path().join("store")).await.unwrap());
        let metadata = Metadata::open(store, &dir.path().join("index")).unwrap();
        let first = SigningKey::load(None, &metadata).await.unwrap();
        let again = SigningKey::load(None, &metadata).await.unwrap();
        assert_eq!(first.public_pem(), again.public_pem(), "the stored key is reused");

        let envelope = first.dsse_envelope(IN_TOTO_PAYLOAD_TYPE, b"{\"x\":1}");
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
        let sig = b64.decode(envelope["signatures"][0]["sig"].as_str().unwrap()).unwrap();
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(first.public_pem()).unwrap();
        let sig = p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap();
        key.verify(&pae(IN_TOTO_PAYLOAD_TYPE, &payload), &sig).unwrap();
        assert!(key.verify(&pae(IN_TOTO_PAYLOAD_TYPE, b"{\"x\":2}"), &sig).is_err());
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab".to_vec());
    }
}
