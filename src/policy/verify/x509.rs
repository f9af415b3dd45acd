//! X.509 for keyless signatures: parse a Fulcio leaf certificate (key, validity, SAN, OIDC-issuer
//! extensions) and check that it chains to a configured anchor at a given time.
//!
//! Deliberately small: path building walks issuer names and checks signatures, validity, CA
//! flags and key usage, and refuses unknown critical extensions. It does not check revocation
//! (Fulcio certificates live minutes), name constraints (refused when critical) or SCTs.

use x509_cert::der::asn1::{ObjectIdentifier, Utf8StringRef};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::name::GeneralName;

use super::keys::{self, Hash, PublicKey, Scheme};

const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const CERTIFICATE_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");
const EKU_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const EKU_ANY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
/// Fulcio's OIDC issuer, raw string bytes (deprecated form).
const FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
/// Fulcio's OIDC issuer, a DER UTF8String.
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// Fulcio's SAN otherName for a username identity.
const FULCIO_USERNAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.7");

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Longest path of presented intermediates followed below an anchor.
const MAX_INTERMEDIATES: usize = 4;
/// Most certificates read from a chain annotation.
pub(super) const MAX_CHAIN_CERTIFICATES: usize = 8;
/// Largest certificate accepted.
const MAX_CERTIFICATE_BYTES: usize = 64 << 10;

/// A parsed certificate with what verification needs.
#[derive(Debug, Clone)]
pub(super) struct Certificate {
    /// The DER encoding, as presented.
    pub(super) der: Vec<u8>,
    tbs_der: Vec<u8>,
    signature_algorithm: ObjectIdentifier,
    signature: Vec<u8>,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub(super) not_before: i64,
    /// Seconds since the Unix epoch.
    pub(super) not_after: i64,
    pub(super) public_key: PublicKey,
    is_ca: bool,
    key_usage: Option<KeyUsageBits>,
    extended_key_usage: Option<Vec<ObjectIdentifier>>,
    /// Email, URI and Fulcio username SANs, in order.
    pub(super) sans: Vec<String>,
    /// The Fulcio OIDC issuer (extension .1.8, else .1.1).
    pub(super) oidc_issuer: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct KeyUsageBits {
    digital_signature: bool,
    key_cert_sign: bool,
}

/// A configured trust anchor and the window in which it may vouch for certificates.
#[derive(Debug, Clone)]
pub(super) struct Anchor {
    pub(super) certificate: Certificate,
    /// From a trusted root's `validFor`, seconds since the Unix epoch.
    pub(super) valid_from: Option<i64>,
    pub(super) valid_until: Option<i64>,
}

impl Certificate {
    /// Parses one DER certificate.
    pub(super) fn from_der(der: &[u8]) -> Result<Certificate, String> {
        if der.len() > MAX_CERTIFICATE_BYTES {
            return Err(format!("certificate of {} bytes is too large", der.len()));
        }
        let certificate = x509_cert::Certificate::from_der(der).map_err(|err| format!("not a DER X.509 certificate: {err}"))?;
        let tbs = &certificate.tbs_certificate;
        let encode_err = |err: x509_cert::der::Error| format!("certificate does not re-encode: {err}");
        let spki_der = tbs.subject_public_key_info.to_der().map_err(encode_err)?;
        let public_key = PublicKey::from_spki_der(&spki_der).map_err(|err| format!("certificate key: {err}"))?;
        let signature = certificate.signature.as_bytes().ok_or("certificate signature is not a whole number of bytes")?.to_vec();
        let mut parsed = Certificate {
            der: der.to_vec(),
            tbs_der: tbs.to_der().map_err(encode_err)?,
            signature_algorithm: certificate.signature_algorithm.oid,
            signature,
            subject_der: tbs.subject.to_der().map_err(encode_err)?,
            issuer_der: tbs.issuer.to_der().map_err(encode_err)?,
            not_before: unix_seconds(tbs.validity.not_before),
            not_after: unix_seconds(tbs.validity.not_after),
            public_key,
            is_ca: false,
            key_usage: None,
            extended_key_usage: None,
            sans: Vec::new(),
            oidc_issuer: None,
        };
        let mut seen: Vec<ObjectIdentifier> = Vec::new();
        let mut issuer_v1 = None;
        let mut issuer_v2 = None;
        for extension in tbs.extensions.iter().flatten() {
            let id = extension.extn_id;
            if seen.contains(&id) {
                return Err(format!("certificate has extension {id} twice"));
            }
            seen.push(id);
            let value = extension.extn_value.as_bytes();
            let bad = |err: x509_cert::der::Error| format!("certificate extension {id} is malformed: {err}");
            if id == SUBJECT_ALT_NAME {
                let names = x509_cert::ext::pkix::SubjectAltName::from_der(value).map_err(bad)?;
                for name in names.0 {
                    match name {
                        GeneralName::Rfc822Name(email) => parsed.sans.push(email.to_string()),
                        GeneralName::UniformResourceIdentifier(uri) => parsed.sans.push(uri.to_string()),
                        GeneralName::OtherName(other) if other.type_id == FULCIO_USERNAME => {
                            if let Ok(username) = other.value.decode_as::<Utf8StringRef<'_>>() {
                                parsed.sans.push(username.as_str().to_owned());
                            }
                        }
                        _ => {}
                    }
                }
            } else if id == BASIC_CONSTRAINTS {
                parsed.is_ca = x509_cert::ext::pkix::BasicConstraints::from_der(value).map_err(bad)?.ca;
            } else if id == KEY_USAGE {
                let usage = x509_cert::ext::pkix::KeyUsage::from_der(value).map_err(bad)?;
                parsed.key_usage = Some(KeyUsageBits { digital_signature: usage.digital_signature(), key_cert_sign: usage.key_cert_sign() });
            } else if id == EXTENDED_KEY_USAGE {
                parsed.extended_key_usage = Some(x509_cert::ext::pkix::ExtendedKeyUsage::from_der(value).map_err(bad)?.0);
            } else if id == FULCIO_ISSUER_V2 {
                issuer_v2 = Some(Utf8StringRef::from_der(value).map_err(bad)?.as_str().to_owned());
            } else if id == FULCIO_ISSUER_V1 {
                issuer_v1 = Some(std::str::from_utf8(value).map_err(|_| format!("certificate extension {id} is not UTF-8"))?.to_owned());
            } else if extension.critical && id != CERTIFICATE_POLICIES {
                return Err(format!("certificate has an unsupported critical extension {id}"));
            }
        }
        // Fulcio writes both forms; when both are present they must agree, so that no verifier
        // reading the other one sees a different issuer.
        if let (Some(v1), Some(v2)) = (&issuer_v1, &issuer_v2) {
            if v1 != v2 {
                return Err(format!("certificate OIDC issuer extensions disagree ({v2} and {v1})"));
            }
        }
        parsed.oidc_issuer = issuer_v2.or(issuer_v1);
        Ok(parsed)
    }

    /// Parses PEM text holding one or more certificates (and nothing else).
    pub(super) fn from_pem_chain(text: &str, limit: usize) -> Result<Vec<Certificate>, String> {
        let blocks = keys::pem_blocks(text)?;
        if blocks.len() > limit {
            return Err(format!("{} certificates, at most {limit} are read", blocks.len()));
        }
        blocks
            .iter()
            .map(|block| match block.label.as_str() {
                "CERTIFICATE" => Certificate::from_der(&block.der),
                other => Err(format!("expected PEM CERTIFICATE, found {other}")),
            })
            .collect()
    }

    /// Whether `time` lies in [notBefore, notAfter].
    pub(super) fn valid_at(&self, time: i64) -> bool {
        self.not_before <= time && time <= self.not_after
    }

    /// The first SAN, which is the signer's identity in a Fulcio certificate.
    pub(super) fn identity(&self) -> Option<&str> {
        self.sans.first().map(String::as_str)
    }

    /// Checks what a code-signing leaf must be: not a CA, usable for digital signatures and (when
    /// it names usages) for code signing.
    pub(super) fn check_leaf_profile(&self) -> Result<(), String> {
        if self.is_ca {
            return Err("signing certificate is a CA certificate".to_owned());
        }
        if self.key_usage.is_some_and(|usage| !usage.digital_signature) {
            return Err("signing certificate's key usage does not allow digital signatures".to_owned());
        }
        if let Some(usages) = &self.extended_key_usage {
            if !usages.iter().any(|usage| *usage == EKU_CODE_SIGNING || *usage == EKU_ANY) {
                return Err("signing certificate's extended key usage does not include code signing".to_owned());
            }
        }
        Ok(())
    }

    /// Whether `self` (as an issuer) signed `child`.
    fn signed(&self, child: &Certificate) -> bool {
        if self.subject_der != child.issuer_der {
            return false;
        }
        let scheme = match child.signature_algorithm {
            id if id == ECDSA_SHA256 => Scheme::Ecdsa(Hash::Sha256),
            id if id == ECDSA_SHA384 => Scheme::Ecdsa(Hash::Sha384),
            id if id == ECDSA_SHA512 => Scheme::Ecdsa(Hash::Sha512),
            id if id == RSA_SHA256 => Scheme::RsaPkcs1(Hash::Sha256),
            id if id == RSA_SHA384 => Scheme::RsaPkcs1(Hash::Sha384),
            id if id == RSA_SHA512 => Scheme::RsaPkcs1(Hash::Sha512),
            id if id == ED25519 => Scheme::Ed25519,
            _ => return false,
        };
        self.public_key.verify_scheme(scheme, &child.tbs_der, &child.signature)
    }

    /// Whether `self` may act as a CA at `time`.
    fn usable_as_ca_at(&self, time: i64) -> bool {
        self.is_ca && self.key_usage.is_none_or(|usage| usage.key_cert_sign) && self.valid_at(time)
    }
}

impl Anchor {
    fn usable_at(&self, time: i64) -> bool {
        self.valid_from.is_none_or(|from| from <= time)
            && self.valid_until.is_none_or(|until| time <= until)
            && self.certificate.usable_as_ca_at(time)
    }
}

/// Checks that `leaf` chains, through `presented` intermediates if needed, to one of `anchors`,
/// every certificate on the path being valid at `time`.
///
/// Rather than walking every path (presented certificates that share a name and key would make
/// that exponential), it finds which presented CAs reach an anchor, a level at a time, caching
/// each issuer/child signature check: at most n² + n·anchors checks for n presented certificates.
pub(super) fn chains_to(leaf: &Certificate, presented: &[Certificate], anchors: &[Anchor], time: i64) -> bool {
    let anchors: Vec<&Certificate> = anchors.iter().filter(|anchor| anchor.usable_at(time)).map(|anchor| &anchor.certificate).collect();
    if anchors.iter().any(|anchor| anchor.signed(leaf)) {
        return true;
    }
    let candidates: Vec<&Certificate> =
        presented.iter().filter(|certificate| certificate.der != leaf.der && certificate.usable_as_ca_at(time)).take(MAX_CHAIN_CERTIFICATES).collect();
    let under_anchor: Vec<bool> = candidates.iter().map(|candidate| anchors.iter().any(|anchor| anchor.signed(candidate))).collect();
    let mut signed_by: Vec<Vec<Option<bool>>> = vec![vec![None; candidates.len()]; candidates.len()];
    let mut reaches = under_anchor;
    for _ in 1..MAX_INTERMEDIATES {
        let mut changed = false;
        for child in 0..candidates.len() {
            if reaches[child] {
                continue;
            }
            for issuer in (0..candidates.len()).filter(|&issuer| issuer != child && reaches[issuer]) {
                let signed = *signed_by[issuer][child].get_or_insert_with(|| candidates[issuer].signed(candidates[child]));
                if signed {
                    reaches[child] = true;
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    candidates.iter().zip(&reaches).any(|(candidate, reaches)| *reaches && candidate.signed(leaf))
}

fn unix_seconds(time: x509_cert::time::Time) -> i64 {
    i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_cert(case: &str, annotation: &str) -> String {
        let path = format!("{}/generated/legacy-tag/{case}/manifest.json", super::super::tests::FIXTURES);
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        manifest["layers"][0]["annotations"][annotation].as_str().unwrap().to_owned()
    }

    #[test]
    fn fulcio_style_leaf_parses() {
        let leaf = Certificate::from_pem_chain(&fixture_cert("keyless-sig-email-valid", "dev.sigstore.cosign/certificate"), 1).unwrap();
        let leaf = &leaf[0];
        assert_eq!(leaf.sans, vec!["dev@example.com".to_owned()]);
        assert_eq!(leaf.oidc_issuer.as_deref(), Some("https://issuer.example"));
        assert_eq!(leaf.not_after - leaf.not_before, 600);
        leaf.check_leaf_profile().unwrap();

        let root = &Certificate::from_pem_chain(&fixture_cert("keyless-sig-email-valid", "dev.sigstore.cosign/chain"), 8).unwrap()[0];
        let anchor = Anchor { certificate: root.clone(), valid_from: None, valid_until: None };
        let mid = (leaf.not_before + leaf.not_after) / 2;
        assert!(chains_to(leaf, &[], std::slice::from_ref(&anchor), mid));
        // The root's window must contain the time too.
        let late = Anchor { valid_from: Some(mid + 1), ..anchor.clone() };
        assert!(!chains_to(leaf, &[], &[late], mid));
        // A leaf is no anchor for itself, and a CA does not chain to its own child.
        let leaf_anchor = Anchor { certificate: leaf.clone(), valid_from: None, valid_until: None };
        assert!(!chains_to(leaf, &[], &[leaf_anchor], mid));
        assert!(!chains_to(root, &[], &[], mid));
    }

    #[test]
    fn rogue_ca_with_the_same_name_does_not_chain() {
        let leaf = &Certificate::from_pem_chain(&fixture_cert("keyless-sig-untrusted-ca_fail", "dev.sigstore.cosign/certificate"), 1).unwrap()[0];
        let chain = Certificate::from_pem_chain(&fixture_cert("keyless-sig-untrusted-ca_fail", "dev.sigstore.cosign/chain"), 8).unwrap();
        let anchors: Vec<Anchor> = chain.iter().map(|c| Anchor { certificate: c.clone(), valid_from: None, valid_until: None }).collect();
        assert!(!chains_to(leaf, &chain, &anchors, leaf.not_before + 1));
    }

    #[test]
    fn garbage_certificates_are_errors() {
        for bad in [&b""[..], b"\x30\x00", b"\x30\x82\xff\xff", &[0x30; 100]] {
            assert!(Certificate::from_der(bad).is_err());
        }
        assert!(Certificate::from_pem_chain("-----BEGIN PUBLIC KEY-----\nAAEC\n-----END PUBLIC KEY-----", 8).is_err());
    }
}
