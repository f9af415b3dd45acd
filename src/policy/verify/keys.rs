//! Public keys and PEM text: ECDSA P-256/P-384, Ed25519 and RSA keys from a DER
//! SubjectPublicKeyInfo, and signature checks with them. Knows nothing of cosign or sigstore.

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use rsa::signature::Verifier as _;
use sha2::Digest as _;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _};

/// id-ecPublicKey (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-Ed25519 (RFC 8410).
const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;
/// Most PEM blocks read from one text.
const MAX_PEM_BLOCKS: usize = 32;

/// A parsed public key with the DER SubjectPublicKeyInfo it came from.
#[derive(Clone)]
pub(super) struct PublicKey {
    spki_der: Vec<u8>,
    key: Key,
}

#[derive(Clone)]
enum Key {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// A digest algorithm named by a signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// A signature scheme: the key kind is implied by the key, this says how it was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    /// ECDSA over the digest, ASN.1 DER signature.
    Ecdsa(Hash),
    /// Pure Ed25519 over the message.
    Ed25519,
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Hash),
    /// RSASSA-PSS with MGF1 of the same digest.
    RsaPss(Hash),
}

/// One `-----BEGIN <label>-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PemBlock {
    pub(super) label: String,
    pub(super) der: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub(super) fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        let spki = x509_cert::spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|err| format!("not a DER public key: {err}"))?;
        let algorithm = spki.algorithm.oid;
        let key = if algorithm == ID_EC_PUBLIC_KEY {
            let curve = spki.algorithm.parameters_oid().map_err(|err| format!("EC key without a named curve: {err}"))?;
            if curve == SECP256R1 {
                Key::P256(p256::ecdsa::VerifyingKey::try_from(spki).map_err(|err| format!("invalid P-256 key: {err}"))?)
            } else if curve == SECP384R1 {
                Key::P384(p384::ecdsa::VerifyingKey::try_from(spki).map_err(|err| format!("invalid P-384 key: {err}"))?)
            } else {
                return Err(format!("unsupported elliptic curve {curve}"));
            }
        } else if algorithm == ID_ED25519 {
            Key::Ed25519(ed25519_dalek::VerifyingKey::try_from(spki).map_err(|err| format!("invalid Ed25519 key: {err}"))?)
        } else if algorithm == RSA_ENCRYPTION {
            let key = rsa::RsaPublicKey::try_from(spki).map_err(|err| format!("invalid RSA key: {err}"))?;
            let bits = rsa::traits::PublicKeyParts::size(&key) * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"));
            }
            Key::Rsa(key)
        } else {
            return Err(format!("unsupported key algorithm {algorithm}"));
        };
        Ok(PublicKey { spki_der: der.to_vec(), key })
    }

    /// Parses PEM text holding exactly one `PUBLIC KEY` (or PKCS#1 `RSA PUBLIC KEY`) block.
    pub(super) fn from_pem(text: &str) -> Result<PublicKey, String> {
        let blocks = pem_blocks(text)?;
        let [block] = blocks.as_slice() else {
            return Err(format!("expected one PEM public key, found {} PEM blocks", blocks.len()));
        };
        match block.label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki_der(&block.der),
            "RSA PUBLIC KEY" => {
                let key = <rsa::RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(&block.der)
                    .map_err(|err| format!("invalid PKCS#1 RSA key: {err}"))?;
                let spki = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key).map_err(|err| format!("invalid PKCS#1 RSA key: {err}"))?;
                PublicKey::from_spki_der(spki.as_bytes())
            }
            other => Err(format!("expected a PEM PUBLIC KEY, found {other}")),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub(super) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// A short name of the key type, for messages.
    pub(super) fn describe(&self) -> &'static str {
        match self.key {
            Key::P256(_) => "ECDSA P-256",
            Key::P384(_) => "ECDSA P-384",
            Key::Ed25519(_) => "Ed25519",
            Key::Rsa(_) => "RSA",
        }
    }

    /// The sigstore `PublicKeyDetails` name of this key, for a generated trusted root.
    pub(super) fn sigstore_key_details(&self) -> &'static str {
        match &self.key {
            Key::P256(_) => "PKIX_ECDSA_P256_SHA_256",
            Key::P384(_) => "PKIX_ECDSA_P384_SHA_384",
            Key::Ed25519(_) => "PKIX_ED25519",
            Key::Rsa(key) => match rsa::traits::PublicKeyParts::size(key) * 8 {
                bits if bits >= 4096 => "PKIX_RSA_PKCS1V15_4096_SHA256",
                bits if bits >= 3072 => "PKIX_RSA_PKCS1V15_3072_SHA256",
                _ => "PKIX_RSA_PKCS1V15_2048_SHA256",
            },
        }
    }

    /// Checks a cosign-style signature, which carries no algorithm: the key decides, as in
    /// cosign's SIGNATURE_SPEC (ECDSA with SHA-256; P-384 keys also with SHA-384; RSA PKCS#1 v1.5
    /// or PSS with SHA-256; pure Ed25519).
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self.key {
            Key::P256(_) => self.verify_scheme(Scheme::Ecdsa(Hash::Sha256), message, signature),
            Key::P384(_) => {
                self.verify_scheme(Scheme::Ecdsa(Hash::Sha384), message, signature)
                    || self.verify_scheme(Scheme::Ecdsa(Hash::Sha256), message, signature)
            }
            Key::Ed25519(_) => self.verify_scheme(Scheme::Ed25519, message, signature),
            Key::Rsa(_) => {
                self.verify_scheme(Scheme::RsaPkcs1(Hash::Sha256), message, signature)
                    || self.verify_scheme(Scheme::RsaPss(Hash::Sha256), message, signature)
            }
        }
    }

    /// Checks a signature made with an explicit scheme (certificate signatures name theirs).
    pub(super) fn verify_scheme(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> bool {
        match (&self.key, scheme) {
            (Key::P256(key), Scheme::Ecdsa(hash)) => match p256::ecdsa::Signature::from_der(signature) {
                Ok(signature) => key.verify_prehash(&digest(hash, message), &signature).is_ok(),
                Err(_) => false,
            },
            (Key::P384(key), Scheme::Ecdsa(hash)) => match p384::ecdsa::Signature::from_der(signature) {
                Ok(signature) => key.verify_prehash(&digest(hash, message), &signature).is_ok(),
                Err(_) => false,
            },
            (Key::Ed25519(key), Scheme::Ed25519) => match ed25519_dalek::Signature::from_slice(signature) {
                Ok(signature) => key.verify_strict(message, &signature).is_ok(),
                Err(_) => false,
            },
            (Key::Rsa(key), Scheme::RsaPkcs1(hash)) => {
                let Ok(signature) = rsa::pkcs1v15::Signature::try_from(signature) else { return false };
                match hash {
                    Hash::Sha256 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone()).verify(message, &signature).is_ok(),
                    Hash::Sha384 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key.clone()).verify(message, &signature).is_ok(),
                    Hash::Sha512 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key.clone()).verify(message, &signature).is_ok(),
                }
            }
            (Key::Rsa(key), Scheme::RsaPss(hash)) => {
                let Ok(signature) = rsa::pss::Signature::try_from(signature) else { return false };
                match hash {
                    Hash::Sha256 => rsa::pss::VerifyingKey::<sha2::Sha256>::new(key.clone()).verify(message, &signature).is_ok(),
                    Hash::Sha384 => rsa::pss::VerifyingKey::<sha2::Sha384>::new(key.clone()).verify(message, &signature).is_ok(),
                    Hash::Sha512 => rsa::pss::VerifyingKey::<sha2::Sha512>::new(key.clone()).verify(message, &signature).is_ok(),
                }
            }
            _ => false,
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, spki sha256:{})", self.describe(), hex::encode(sha2::Sha256::digest(&self.spki_der)))
    }
}

/// The digest of `message` under `hash`.
pub(super) fn digest(hash: Hash, message: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha256 => sha2::Sha256::digest(message).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(message).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(message).to_vec(),
    }
}

/// Splits PEM text into its blocks. Text outside blocks is ignored; CRLF line ends are fine;
/// encapsulated headers (`Proc-Type:`, i.e. encrypted keys) are refused.
pub(super) fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after_begin = &rest[start + BEGIN.len()..];
        let label_end = after_begin.find(DASHES).ok_or("unterminated PEM BEGIN line")?;
        let label = &after_begin[..label_end];
        if label.len() > 64 || label.contains(['\r', '\n']) {
            return Err("malformed PEM BEGIN line".to_owned());
        }
        let body_and_rest = &after_begin[label_end + DASHES.len()..];
        let end_line = format!("-----END {label}-----");
        let body_end = body_and_rest.find(&end_line).ok_or_else(|| format!("PEM block {label} has no END line"))?;
        let body = &body_and_rest[..body_end];
        if body.contains(':') {
            return Err(format!("PEM block {label} has headers (encrypted or legacy PEM is not supported)"));
        }
        let encoded: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|err| format!("PEM block {label} is not base64: {err}"))?;
        blocks.push(PemBlock { label: label.to_owned(), der });
        if blocks.len() > MAX_PEM_BLOCKS {
            return Err(format!("more than {MAX_PEM_BLOCKS} PEM blocks"));
        }
        rest = &body_and_rest[body_end + end_line.len()..];
    }
    if blocks.is_empty() {
        return Err("no PEM block found".to_owned());
    }
    Ok(blocks)
}

/// The DER SubjectPublicKeyInfo of PEM text holding either a public key or a certificate, as
/// Rekor entries carry either.
pub(super) fn spki_of_pem_verifier(text: &str) -> Result<Vec<u8>, String> {
    let blocks = pem_blocks(text)?;
    let [block] = blocks.as_slice() else {
        return Err(format!("expected one PEM block, found {}", blocks.len()));
    };
    match block.label.as_str() {
        "PUBLIC KEY" => Ok(block.der.clone()),
        "CERTIFICATE" => {
            let certificate = x509_cert::Certificate::from_der(&block.der).map_err(|err| format!("invalid certificate: {err}"))?;
            certificate.tbs_certificate.subject_public_key_info.to_der().map_err(|err| format!("invalid certificate key: {err}"))
        }
        other => Err(format!("unexpected PEM block {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_accept_crlf_and_refuse_junk() {
        let crlf = "-----BEGIN PUBLIC KEY-----\r\nAAEC\r\nAw==\r\n-----END PUBLIC KEY-----\r\n";
        assert_eq!(pem_blocks(crlf).unwrap(), vec![PemBlock { label: "PUBLIC KEY".into(), der: vec![0, 1, 2, 3] }]);
        let two = format!("junk{crlf}between\n{crlf}");
        assert_eq!(pem_blocks(&two).unwrap().len(), 2);
        for bad in [
            "",
            "no pem here",
            "-----BEGIN PUBLIC KEY",
            "-----BEGIN PUBLIC KEY-----\nAAEC\n",
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----",
            "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nAAEC\n-----END EC PRIVATE KEY-----",
        ] {
            assert!(pem_blocks(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_refuse_garbage_and_weak_rsa() {
        assert!(PublicKey::from_spki_der(b"\x30\x03\x02\x01\x00").is_err());
        assert!(PublicKey::from_pem("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----").is_err());
        // A 1024-bit RSA key (DER SPKI) is refused as too small.
        let weak = "-----BEGIN PUBLIC KEY-----\nMIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDGE9ImIJW0J2E+Ku6htEI7J3Oh\nVovfQRqOjoUdjsKxVVbkcum8L/6im8cnqiz8MDw7jndiUtvopJ13NFK4sS4KoNHd\n08EX92azkFVIuEEs26OOhUl2RYaDuI+sjxIXfeRzP6LGKnN6vYXJtl7CiPSlk6us\n3ypArmO7dZiVIXirYwIDAQAB\n-----END PUBLIC KEY-----\n";
        let err = PublicKey::from_pem(weak).unwrap_err();
        assert!(err.contains("too small"), "{err}");
    }
}
