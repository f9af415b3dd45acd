//! Evidence made here with real keys, certificates and SETs: each case changes one thing from a
//! valid signature or attestation and checks the verdict and its reason.

use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::super::{verify, Evidence, EvidenceKind, IdentityMatch, KeyTrust, KeylessTrust, RekorEntry, Rejection, Trust, TrustError, Verified};
use super::testkit::*;

const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";

/// A layer to verify: annotations and the payload or envelope.
struct Layer {
    annotations: Map<String, Value>,
    blob: Vec<u8>,
    attestation: bool,
}

impl Layer {
    fn verify(&self, trust: &Trust, subject: &str) -> Result<Verified, Rejection> {
        let subject: storage::Digest = subject.parse().unwrap();
        let evidence = if self.attestation {
            Evidence::Attestation { annotations: &self.annotations, envelope: &self.blob }
        } else {
            Evidence::SimpleSigning { annotations: &self.annotations, payload: &self.blob }
        };
        verify(trust, &subject, evidence)
    }

    fn reason(&self, trust: &Trust) -> String {
        match self.verify(trust, SUBJECT) {
            Ok(verified) => panic!("expected a rejection, got {verified:?}"),
            Err(rejection) => rejection.reason,
        }
    }
}

fn layer(pairs: &[(&str, &str)], blob: Vec<u8>, attestation: bool) -> Layer {
    Layer { annotations: annotations(pairs), blob, attestation }
}

/// A key-signed simple-signing layer, with an optional Rekor bundle annotation.
fn key_signature(key: &TestKey, digest: &str, bundle: Option<String>) -> Layer {
    let payload = simple_signing(digest);
    let signature = b64(&key.sign(&payload));
    let mut pairs = vec![(SIGNATURE_ANNOTATION, signature.as_str())];
    if let Some(bundle) = &bundle {
        pairs.push((BUNDLE_ANNOTATION, bundle));
    }
    layer(&pairs, payload, false)
}

#[test]
fn key_signatures_and_attestations_of_every_key_type() {
    let rekor = Rekor::new("log");
    let keys = [
        ("P-256", TestKey::p256("release"), TestKey::p256("other")),
        ("P-384", TestKey::p384("release"), TestKey::p384("other")),
        ("Ed25519", TestKey::ed25519("release"), TestKey::ed25519("other")),
        ("RSA", TestKey::rsa(), TestKey::p256("other")),
    ];
    for (label, key, other) in &keys {
        let trust = key_trust(key, None);
        let wrong = key_trust(other, None);

        let signature = key_signature(key, SUBJECT, None);
        let verified = signature.verify(&trust, SUBJECT).unwrap_or_else(|err| panic!("{label}: {err}"));
        assert_eq!((verified.kind, verified.trust_entry.as_str(), verified.identity.as_str()), (EvidenceKind::Signature, "release", "release"), "{label}");
        assert_eq!((verified.rekor, verified.issuer, verified.cert_not_after), (None, None, None), "{label}");
        assert_eq!(signature.reason(&wrong), "signature does not verify with key 'release'", "{label}");

        let (envelope, _) = envelope(&statement(SUBJECT, VULN), &[key]);
        let attestation = layer(&[("predicateType", VULN)], envelope, true);
        let verified = attestation.verify(&trust, SUBJECT).unwrap_or_else(|err| panic!("{label}: {err}"));
        assert_eq!((verified.kind, verified.predicate_type.as_deref()), (EvidenceKind::Attestation, Some(VULN)), "{label}");
        assert_eq!(verified.statement.unwrap()["predicate"]["scanner"]["uri"], "pkg:github/aquasecurity/trivy", "{label}");
        assert_eq!(attestation.reason(&wrong), "signature does not verify with key 'release'", "{label}");

        // With a Rekor entry whose SET verifies, the log index and time are reported.
        let payload = simple_signing(SUBJECT);
        let signature = key.sign(&payload);
        let bundle = rekor.bundle(&hashedrekord(&payload, &signature, &key.public_pem()), LOGGED_AT, 42);
        let logged = layer(&[(SIGNATURE_ANNOTATION, &b64(&signature)), (BUNDLE_ANNOTATION, &bundle)], payload, false);
        let verified = logged.verify(&key_trust(key, Some(&rekor)), SUBJECT).unwrap_or_else(|err| panic!("{label}: {err}"));
        assert_eq!(verified.rekor, Some(RekorEntry { log_index: 42, integrated_time: LOGGED_AT }), "{label}");
    }
}

#[test]
fn key_signature_rekor_material_must_match_and_verify() {
    let key = TestKey::p256("release");
    let rekor = Rekor::new("log");
    let rogue = Rekor::new("rogue");
    let trust = key_trust(&key, Some(&rekor));
    let payload = simple_signing(SUBJECT);
    let signature = key.sign(&payload);
    let with_bundle = |bundle: String| layer(&[(SIGNATURE_ANNOTATION, &b64(&signature)), (BUNDLE_ANNOTATION, &bundle)], payload.clone(), false);
    let body = hashedrekord(&payload, &signature, &key.public_pem());

    let reason = with_bundle(rogue.bundle(&body, LOGGED_AT, 1)).reason(&trust);
    assert_eq!(reason, format!("SET does not verify against any configured Rekor key (log ID {} is not configured)", rogue.log_id_hex()));
    let forged_set = with_bundle(rogue.bundle_as(&body, LOGGED_AT, 1, &rekor.log_id_hex()));
    assert_eq!(forged_set.reason(&trust), "SET does not verify against any configured Rekor key");
    // Without Rekor keys for keys the SET is not checked (and not reported), but the entry
    // must still describe this signature.
    let unchecked = forged_set.verify(&key_trust(&key, None), SUBJECT).unwrap();
    assert_eq!(unchecked.rekor, None);

    let other_signature = key.sign(b"something else");
    let bodies = [
        (hashedrekord(&payload, &other_signature, &key.public_pem()), "Rekor body does not match the signature"),
        (hashedrekord(b"another payload", &signature, &key.public_pem()), "Rekor body does not match the signature: it logs another payload hash"),
        (hashedrekord(&payload, &signature, &TestKey::p256("other").public_pem()), "Rekor body does not match the signature"),
        (dsse_body(&payload, &payload, &signature, &key.public_pem()), "Rekor body does not match the signature: an attestation entry for a signature"),
        (json!({"apiVersion": "0.0.1", "kind": "rekord", "spec": {}}), "Rekor body is unreadable: unsupported Rekor entry kind \"rekord\" version \"0.0.1\""),
    ];
    for (body, reason) in bodies {
        let mismatched = with_bundle(rekor.bundle(&body, LOGGED_AT, 1));
        assert_eq!(mismatched.reason(&trust), reason);
        assert_eq!(mismatched.reason(&key_trust(&key, None)), reason);
    }
    assert!(with_bundle("{not json".into()).reason(&trust).starts_with("Rekor bundle annotation is malformed"));
}

#[test]
fn tampered_copied_and_malformed_signatures() {
    let key = TestKey::p256("release");
    let trust = key_trust(&key, None);
    let payload = simple_signing(SUBJECT);
    let signature = b64(&key.sign(&payload));

    let tampered = String::from_utf8(payload.clone()).unwrap().replace("portcullis tests", "someone else").into_bytes();
    assert_eq!(layer(&[(SIGNATURE_ANNOTATION, &signature)], tampered, false).reason(&trust), "signature does not verify with key 'release'");

    // A valid signature for another image, copied next to this one.
    let copied = key_signature(&key, OTHER, None);
    assert_eq!(copied.reason(&trust), format!("payload is for {OTHER}, not {SUBJECT}"));
    assert!(copied.verify(&trust, OTHER).is_ok());

    assert_eq!(layer(&[], payload.clone(), false).reason(&trust), "annotation dev.cosignproject.cosign/signature is missing");
    assert!(layer(&[(SIGNATURE_ANNOTATION, "not base64!")], payload.clone(), false).reason(&trust).starts_with("annotation dev.cosignproject.cosign/signature is not base64"));
    assert_eq!(layer(&[(SIGNATURE_ANNOTATION, &b64(b"garbage"))], payload, false).reason(&trust), "signature does not verify with key 'release'");
}

/// The pieces of a keyless simple signing, before they are put in annotations.
struct Keyless {
    payload: Vec<u8>,
    signature: Vec<u8>,
    certificate: String,
}

impl Keyless {
    /// A certificate for `cert_key` from `ca`, and a signature by `signing_key` over a payload
    /// for `digest`.
    fn new(ca: &Ca, leaf: &Leaf, cert_key: &TestKey, signing_key: &TestKey, digest: &str) -> Keyless {
        let payload = simple_signing(digest);
        let signature = signing_key.sign(&payload);
        Keyless { certificate: ca.leaf(cert_key, leaf), payload, signature }
    }

    fn valid(ca: &Ca, leaf: &Leaf) -> Keyless {
        let key = TestKey::p256("ephemeral");
        Keyless::new(ca, leaf, &key, &key, SUBJECT)
    }

    /// The body Rekor would log for it.
    fn body(&self) -> Value {
        hashedrekord(&self.payload, &self.signature, &self.certificate)
    }

    fn layer(&self, chain: Option<&str>, bundle: Option<&str>) -> Layer {
        let signature = b64(&self.signature);
        let mut pairs = vec![(SIGNATURE_ANNOTATION, signature.as_str()), (CERTIFICATE_ANNOTATION, self.certificate.as_str())];
        pairs.extend(chain.map(|chain| (CHAIN_ANNOTATION, chain)));
        pairs.extend(bundle.map(|bundle| (BUNDLE_ANNOTATION, bundle)));
        layer(&pairs, self.payload.clone(), false)
    }

    /// With the chain annotation `root` and a SET by `rekor` over its own body.
    fn logged(&self, root: &Ca, rekor: &Rekor) -> Layer {
        self.layer(Some(&root.pem), Some(&rekor.bundle(&self.body(), LOGGED_AT, 7)))
    }
}

fn keyless_trust(subject: IdentityMatch, roots: &[&Ca], rekor: &Rekor) -> Trust {
    Trust::new(Vec::new(), vec![identity("ci", subject, ISSUER, roots, rekor)], Vec::new()).unwrap()
}

#[test]
fn keyless_signatures() {
    let root = Ca::root("fulcio", "trusted");
    let rekor = Rekor::new("log");
    let trust = keyless_trust(IdentityMatch::Exact(WORKFLOW.into()), &[&root], &rekor);
    let valid = Keyless::valid(&root, &Leaf::default());

    let verified = valid.logged(&root, &rekor).verify(&trust, SUBJECT).unwrap();
    assert_eq!(verified.kind, EvidenceKind::Signature);
    assert_eq!((verified.trust_entry.as_str(), verified.identity.as_str(), verified.issuer.as_deref()), ("ci", WORKFLOW, Some(ISSUER)));
    assert_eq!(verified.rekor, Some(RekorEntry { log_index: 7, integrated_time: LOGGED_AT }));
    assert_eq!(verified.cert_not_after, Some(Leaf::default().not_after));
    // The chain annotation is a hint: the configured root is what counts.
    assert!(valid.layer(None, Some(&rekor.bundle(&valid.body(), LOGGED_AT, 7))).verify(&trust, SUBJECT).is_ok());

    let ok = |subject: IdentityMatch, leaf: Leaf| Keyless::valid(&root, &leaf).logged(&root, &rekor).verify(&keyless_trust(subject, &[&root], &rekor), SUBJECT);
    let email = Leaf { san: "email:dev@example.com".into(), ..Leaf::default() };
    assert_eq!(ok(IdentityMatch::Exact("dev@example.com".into()), email).unwrap().identity, "dev@example.com");
    assert!(ok(IdentityMatch::Glob("https://github.com/myorg/*".into()), Leaf::default()).is_ok());
    assert!(ok(IdentityMatch::Regex(r"https://github\.com/myorg/[^/]+/\.github/workflows/release\.yml@refs/heads/main".into()), Leaf::default()).is_ok());
    assert!(ok(IdentityMatch::Exact(WORKFLOW.into()), Leaf { issuer_v1: false, ..Leaf::default() }).is_ok());

    let reason = |subject: IdentityMatch, layer: &Layer| layer.reason(&keyless_trust(subject, &[&root], &rekor));
    let exact = || IdentityMatch::Exact(WORKFLOW.into());
    let logged = |leaf: Leaf| Keyless::valid(&root, &leaf).logged(&root, &rekor);
    assert_eq!(
        reason(IdentityMatch::Glob("https://github.com/otherorg/*".into()), &valid.logged(&root, &rekor)),
        format!("certificate SAN {WORKFLOW} does not match identity 'ci' (https://github.com/otherorg/*)")
    );
    assert_eq!(reason(IdentityMatch::Regex("release".into()), &valid.logged(&root, &rekor)), format!("certificate SAN {WORKFLOW} does not match identity 'ci' (regex:release)"));
    assert_eq!(
        reason(exact(), &logged(Leaf { issuer: Some("https://accounts.google.com".into()), ..Leaf::default() })),
        format!("certificate issuer https://accounts.google.com does not match identity 'ci' ({ISSUER})")
    );
    assert_eq!(reason(exact(), &logged(Leaf { issuer: None, ..Leaf::default() })), format!("certificate issuer (none) does not match identity 'ci' ({ISSUER})"));

    // Validity is judged at the integrated time, with a SET; without one, nothing counts.
    let expired = Leaf { not_before: LOGGED_AT - 900, not_after: LOGGED_AT - 300, ..Leaf::default() };
    assert!(reason(exact(), &logged(expired.clone())).starts_with("certificate expired at integrated time (2027-01-15T08:00:00Z is after 2027-01-15T07:55:00Z)"));
    let early = Leaf { not_before: LOGGED_AT + 1, not_after: LOGGED_AT + 600, ..Leaf::default() };
    assert!(reason(exact(), &logged(early)).starts_with("certificate was not yet valid at integrated time"));
    assert_eq!(reason(exact(), &Keyless::valid(&root, &expired).layer(Some(&root.pem), None)), "keyless signature without a Rekor SET");
    assert_eq!(reason(exact(), &valid.layer(Some(&root.pem), None)), "keyless signature without a Rekor SET");
    // Even a logged time no calendar can show is judged, not trusted.
    let far = valid.layer(None, Some(&rekor.bundle(&valid.body(), i64::MAX, 7)));
    assert!(reason(exact(), &far).starts_with(&format!("certificate expired at integrated time ({} is after", i64::MAX)));

    // SETs by a key that is not configured.
    let rogue = Rekor::new("rogue");
    assert!(reason(exact(), &valid.layer(None, Some(&rogue.bundle(&valid.body(), LOGGED_AT, 7)))).starts_with("SET does not verify against any configured Rekor key (log ID"));
    assert_eq!(
        reason(exact(), &valid.layer(None, Some(&rogue.bundle_as(&valid.body(), LOGGED_AT, 7, &rekor.log_id_hex())))),
        "SET does not verify against any configured Rekor key"
    );

    // A forged keyless signature: valid certificate, chain, identity and SET, but the signature
    // is by another key (sigstore 0.15 accepts this with identity-only constraints).
    let forged = Keyless::new(&root, &Leaf::default(), &TestKey::p256("ephemeral"), &TestKey::p256("attacker"), SUBJECT);
    assert_eq!(reason(exact(), &forged.logged(&root, &rekor)), "signature does not verify with the certificate's key");

    // The log must describe this signature, certificate and payload (its SET is genuine).
    let other_certificate = Keyless::valid(&root, &Leaf { san: "https://github.com/myorg/other".into(), ..Leaf::default() }).certificate;
    let other_signature = TestKey::p256("ephemeral").sign(b"other bytes");
    let mismatches = [
        (hashedrekord(&valid.payload, &valid.signature, &other_certificate), "Rekor body does not match the signature"),
        (hashedrekord(&valid.payload, &other_signature, &valid.certificate), "Rekor body does not match the signature"),
        (hashedrekord(b"other payload", &valid.signature, &valid.certificate), "Rekor body does not match the signature: it logs another payload hash"),
        (hashedrekord(&valid.payload, &valid.signature, &TestKey::p256("ephemeral").public_pem()), "Rekor body does not match the signature"),
    ];
    for (body, expected) in mismatches {
        assert_eq!(reason(exact(), &valid.layer(None, Some(&rekor.bundle(&body, LOGGED_AT, 7)))), expected);
    }

    // Chains: a rogue CA with the same name, intermediates presented or configured.
    let rogue_root = Ca::root("fulcio", "rogue");
    let rogue_signed = Keyless::valid(&rogue_root, &Leaf::default());
    assert_eq!(reason(exact(), &rogue_signed.logged(&root, &rekor)), "certificate does not chain to a configured Fulcio root");
    let intermediate = root.intermediate("fulcio-intermediate");
    let via_intermediate = Keyless::valid(&intermediate, &Leaf::default());
    let bundle = rekor.bundle(&via_intermediate.body(), LOGGED_AT, 7);
    let chain = format!("{}{}", intermediate.pem, root.pem);
    assert!(via_intermediate.layer(Some(&chain), Some(&bundle)).verify(&trust, SUBJECT).is_ok());
    assert_eq!(reason(exact(), &via_intermediate.layer(Some(&root.pem), Some(&bundle))), "certificate does not chain to a configured Fulcio root");
    let intermediate_trust = keyless_trust(exact(), &[&intermediate], &rekor);
    assert!(via_intermediate.layer(None, Some(&bundle)).verify(&intermediate_trust, SUBJECT).is_ok());

    // Two presented intermediates deep; and eight presented CAs sharing one name and key (every
    // one signs every other) are rejected without walking every path.
    let second = intermediate.intermediate("fulcio-intermediate-2");
    let deep = Keyless::valid(&second, &Leaf::default());
    let deep_chain = format!("{}{}", second.pem, intermediate.pem);
    assert!(deep.layer(Some(&deep_chain), Some(&rekor.bundle(&deep.body(), LOGGED_AT, 7))).verify(&trust, SUBJECT).is_ok());
    let clique: Vec<Ca> = (0..8).map(|_| Ca::root("clique", "same key")).collect();
    let cliqued = Keyless::valid(&clique[0], &Leaf::default());
    let clique_chain: String = clique.iter().map(|ca| ca.pem.as_str()).collect();
    let started = std::time::Instant::now();
    assert_eq!(
        reason(exact(), &cliqued.layer(Some(&clique_chain), Some(&rekor.bundle(&cliqued.body(), LOGGED_AT, 7)))),
        "certificate does not chain to a configured Fulcio root"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());

    // Certificates that are not code-signing leaves.
    assert_eq!(reason(exact(), &logged(Leaf { code_signing: false, ..Leaf::default() })), "signing certificate's extended key usage does not include code signing");
    assert_eq!(reason(exact(), &logged(Leaf { is_ca: true, ..Leaf::default() })), "signing certificate is a CA certificate");

    // Garbage in the certificate annotations.
    let garbage = layer(&[(SIGNATURE_ANNOTATION, &b64(&valid.signature)), (CERTIFICATE_ANNOTATION, "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")], valid.payload.clone(), false);
    assert!(garbage.reason(&trust).starts_with("annotation dev.sigstore.cosign/certificate: not a DER X.509 certificate"));
    let two = format!("{}{}", valid.certificate, valid.certificate);
    let doubled = layer(&[(SIGNATURE_ANNOTATION, &b64(&valid.signature)), (CERTIFICATE_ANNOTATION, &two)], valid.payload.clone(), false);
    assert!(doubled.reason(&trust).starts_with("annotation dev.sigstore.cosign/certificate:"));

    // Evidence for another image.
    let copied = Keyless::new(&root, &Leaf::default(), &TestKey::p256("ephemeral"), &TestKey::p256("ephemeral"), OTHER);
    assert_eq!(reason(exact(), &copied.logged(&root, &rekor)), format!("payload is for {OTHER}, not {SUBJECT}"));
}

#[test]
fn keyless_attestations() {
    let root = Ca::root("fulcio", "trusted");
    let rekor = Rekor::new("log");
    let trust = keyless_trust(IdentityMatch::Exact(WORKFLOW.into()), &[&root], &rekor);
    let key = TestKey::p256("ephemeral");
    let certificate = root.leaf(&key, &Leaf::default());
    let attestation = |statement: &[u8], signer: &TestKey, body: &dyn Fn(&[u8], &[u8]) -> Value| {
        let (envelope, signatures) = envelope(statement, &[signer]);
        let bundle = rekor.bundle(&body(&envelope, &signatures[0]), LOGGED_AT, 9);
        layer(&[("predicateType", VULN), (CERTIFICATE_ANNOTATION, &certificate), (BUNDLE_ANNOTATION, &bundle)], envelope, true)
    };
    let ours = statement(SUBJECT, VULN);
    let dsse = |envelope: &[u8], signature: &[u8]| dsse_body(envelope, &ours, signature, &certificate);
    let intoto = |envelope: &[u8], signature: &[u8]| intoto_body(envelope, &ours, signature, &certificate);

    let verified = attestation(&ours, &key, &dsse).verify(&trust, SUBJECT).unwrap();
    assert_eq!((verified.kind, verified.predicate_type.as_deref(), verified.identity.as_str()), (EvidenceKind::Attestation, Some(VULN), WORKFLOW));
    assert_eq!(verified.rekor, Some(RekorEntry { log_index: 9, integrated_time: LOGGED_AT }));
    assert!(attestation(&ours, &key, &intoto).verify(&trust, SUBJECT).is_ok());

    // About another image.
    let theirs = statement(OTHER, VULN);
    let other_dsse = |envelope: &[u8], signature: &[u8]| dsse_body(envelope, &theirs, signature, &certificate);
    assert_eq!(attestation(&theirs, &key, &other_dsse).reason(&trust), format!("attestation subject is {OTHER}, not {SUBJECT}"));
    // Signed by another key than the certificate's.
    assert_eq!(attestation(&ours, &TestKey::p256("attacker"), &dsse).reason(&trust), "signature does not verify with the certificate's key");
    // The log describes another envelope or is a signature entry.
    let other_envelope = |_: &[u8], signature: &[u8]| dsse_body(b"{}", &ours, signature, &certificate);
    assert_eq!(attestation(&ours, &key, &other_envelope).reason(&trust), "Rekor body does not match the signature: it logs another envelope hash");
    let hashed = |envelope: &[u8], signature: &[u8]| hashedrekord(envelope, signature, &certificate);
    assert_eq!(attestation(&ours, &key, &hashed).reason(&trust), "Rekor body does not match the signature: a hashedrekord entry for an attestation");

    // Tampering with the envelope after signing.
    let signed = attestation(&ours, &key, &dsse);
    let mut retyped_json: Value = serde_json::from_slice(&signed.blob).unwrap();
    retyped_json["payloadType"] = "application/json".into();
    let retyped = Layer { blob: retyped_json.to_string().into_bytes(), ..signed };
    assert_eq!(retyped.reason(&trust), "DSSE payload type \"application/json\" is not an in-toto statement");
    let signed = attestation(&ours, &key, &dsse);
    let mut swapped_json: Value = serde_json::from_slice(&signed.blob).unwrap();
    swapped_json["payload"] = b64(&statement(SUBJECT, "https://example.com/other")).into();
    let swapped = Layer { blob: swapped_json.to_string().into_bytes(), ..signed };
    assert_eq!(swapped.reason(&trust), "signature does not verify with the certificate's key");

    // Any one verifying signature of a multi-signature envelope counts.
    let (envelope, signatures) = envelope(&ours, &[&TestKey::p256("someone"), &key]);
    let bundle = rekor.bundle(&dsse_body(&envelope, &ours, &signatures[1], &certificate), LOGGED_AT, 9);
    let multi = layer(&[(CERTIFICATE_ANNOTATION, &certificate), (BUNDLE_ANNOTATION, &bundle)], envelope, true);
    assert!(multi.verify(&trust, SUBJECT).is_ok());
}

#[test]
fn a_certificate_for_a_configured_key_is_key_evidence() {
    // cosign sign --key k --certificate c: the key entry applies, with or without a log entry.
    let root = Ca::root("private-ca", "trusted");
    let rekor = Rekor::new("log");
    let key = TestKey::p256("ephemeral");
    let signed = Keyless::valid(&root, &Leaf::default());
    let trust = key_trust(&key, None);
    let without_log = signed.layer(None, None).verify(&trust, SUBJECT).unwrap();
    assert_eq!((without_log.trust_entry.as_str(), without_log.rekor), ("release", None));
    assert!(signed.logged(&root, &rekor).verify(&trust, SUBJECT).is_ok());
    // Another key does not apply to it at all.
    assert_eq!(signed.layer(None, None).reason(&key_trust(&TestKey::p256("other"), None)), "keyless signature without a Rekor SET");
}

#[test]
fn the_most_specific_failure_is_reported() {
    let root = Ca::root("fulcio", "trusted");
    let other_root = Ca::root("other", "trusted");
    let rekor = Rekor::new("log");
    let signed = Keyless::valid(&root, &Leaf::default()).logged(&root, &rekor);
    let trust_of = |entries: Vec<KeylessTrust>| Trust::new(Vec::new(), entries, Vec::new()).unwrap();

    let chain_fails = identity("prod", IdentityMatch::Exact(WORKFLOW.into()), ISSUER, &[&other_root], &rekor);
    let san_fails = identity("ci", IdentityMatch::Glob("https://github.com/otherorg/*".into()), ISSUER, &[&root], &rekor);
    assert_eq!(
        signed.reason(&trust_of(vec![chain_fails.clone(), san_fails.clone()])),
        format!("certificate SAN {WORKFLOW} does not match identity 'ci' (https://github.com/otherorg/*)")
    );
    let other_san = identity("bot", IdentityMatch::Exact("bot@example.com".into()), ISSUER, &[&root], &rekor);
    assert_eq!(
        signed.reason(&trust_of(vec![san_fails.clone(), other_san])),
        format!("certificate SAN {WORKFLOW} does not match identity 'ci' (https://github.com/otherorg/*); certificate SAN {WORKFLOW} does not match identity 'bot' (bot@example.com)")
    );
    let right = identity("release-ci", IdentityMatch::Exact(WORKFLOW.into()), ISSUER, &[&root], &rekor);
    assert_eq!(signed.verify(&trust_of(vec![chain_fails, san_fails, right]), SUBJECT).unwrap().trust_entry, "release-ci");

    // Keys: each is tried, the first that verifies is the trust entry.
    let key = TestKey::p256("k2");
    let keys = |names: &[(&str, &TestKey)]| {
        Trust::new(names.iter().map(|(name, key)| KeyTrust { name: (*name).into(), public_key_pem: key.public_pem() }).collect(), Vec::new(), Vec::new()).unwrap()
    };
    let signature = key_signature(&key, SUBJECT, None);
    assert_eq!(signature.verify(&keys(&[("k1", &TestKey::p256("k1")), ("k2", &key)]), SUBJECT).unwrap().trust_entry, "k2");
    assert_eq!(
        signature.reason(&keys(&[("k1", &TestKey::p256("k1")), ("k3", &TestKey::ed25519("k3"))])),
        "signature does not verify with key 'k1'; signature does not verify with key 'k3'"
    );

    // Evidence of a kind no entry is configured for.
    assert_eq!(signed.reason(&keys(&[("k1", &key)])), "signed with a certificate, but no keyless identity is configured");
    assert_eq!(signature.reason(&trust_of(vec![identity("ci", IdentityMatch::Exact(WORKFLOW.into()), ISSUER, &[&root], &rekor)])), "signed with a key, but no trust key is configured");
}

/// A Rekor v1 `tlogEntries` item for `body`, with a SET (inclusion promise) but no inclusion
/// proof.
fn tlog_entry(rekor: &Rekor, body: &Value, kind: &str) -> Value {
    let annotation: Value = serde_json::from_str(&rekor.bundle(body, LOGGED_AT, 5)).unwrap();
    json!({
        "logIndex": "5",
        "logId": { "keyId": b64(&hex::decode(rekor.log_id_hex()).unwrap()) },
        "kindVersion": { "kind": kind, "version": "0.0.1" },
        "integratedTime": LOGGED_AT.to_string(),
        "inclusionPromise": { "signedEntryTimestamp": annotation["SignedEntryTimestamp"] },
        "canonicalizedBody": annotation["Payload"]["body"],
    })
}

#[test]
fn key_based_sigstore_bundles() {
    let key = TestKey::p256("release");
    let rekor = Rekor::new("log");
    let trust = key_trust(&key, None);
    let check = |bytes: &[u8], trust: &Trust, subject: &str| verify(trust, &subject.parse().unwrap(), Evidence::Bundle { bytes });

    // A message-signature bundle signs the manifest itself: its digest is the subject.
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let subject = format!("sha256:{}", hex::encode(sha2::Sha256::digest(manifest)));
    let message_bundle = |signer: &TestKey| {
        let signature = signer.sign(manifest);
        let entry = tlog_entry(&rekor, &hashedrekord(manifest, &signature, &signer.public_pem()), "hashedrekord");
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": { "publicKey": { "hint": "release" }, "tlogEntries": [entry] },
            "messageSignature": {
                "messageDigest": { "algorithm": "SHA2_256", "digest": b64(&sha2::Sha256::digest(manifest)) },
                "signature": b64(&signature),
            },
        })
        .to_string()
        .into_bytes()
    };
    let bytes = message_bundle(&key);
    let verified = check(&bytes, &trust, &subject).unwrap();
    assert_eq!((verified.kind, verified.trust_entry.as_str(), verified.predicate_type, verified.rekor), (EvidenceKind::Signature, "release", None, None));
    assert_eq!(check(&bytes, &key_trust(&TestKey::p256("other"), None), &subject).unwrap_err().reason, "signature does not verify with key 'release'");
    assert!(check(&bytes, &trust, SUBJECT).unwrap_err().reason.starts_with("bundle is not about this manifest"));
    // With Rekor keys for keys, a v0.3 bundle's entry needs its inclusion proof.
    let reason = check(&bytes, &key_trust(&key, Some(&rekor)), &subject).unwrap_err().reason;
    assert!(reason.contains("inclusion proof"), "{reason}");

    // A DSSE bundle holding an attestation about the subject.
    let statement = statement(SUBJECT, VULN);
    let (envelope, signatures) = envelope(&statement, &[&key]);
    let envelope: Value = serde_json::from_slice(&envelope).unwrap();
    // Rekor hashes the envelope as Go serializes it.
    let go_form = format!(
        r#"{{"payloadType":"{}","payload":"{}","signatures":[{{"keyid":"","sig":"{}"}}]}}"#,
        envelope["payloadType"].as_str().unwrap(),
        envelope["payload"].as_str().unwrap(),
        b64(&signatures[0])
    );
    let entry = tlog_entry(&rekor, &dsse_body(go_form.as_bytes(), &statement, &signatures[0], &key.public_pem()), "dsse");
    let dsse_bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": { "publicKey": { "hint": "release" }, "tlogEntries": [entry] },
        "dsseEnvelope": envelope,
    })
    .to_string();
    let verified = check(dsse_bundle.as_bytes(), &trust, SUBJECT).unwrap();
    assert_eq!((verified.kind, verified.predicate_type.as_deref()), (EvidenceKind::Attestation, Some(VULN)));
    assert_eq!(check(dsse_bundle.as_bytes(), &trust, OTHER).unwrap_err().reason, format!("attestation subject is {SUBJECT}, not {OTHER}"));
}

#[test]
fn trust_loading_checks_every_entry() {
    let root = Ca::root("fulcio", "trusted");
    let rekor = Rekor::new("log");
    let key = KeyTrust { name: "release".into(), public_key_pem: TestKey::p256("release").public_pem() };
    let ci = identity("ci", IdentityMatch::Exact(WORKFLOW.into()), ISSUER, &[&root], &rekor);
    let load = |keys: Vec<KeyTrust>, keyless: Vec<KeylessTrust>, rekor_keys: Vec<String>| Trust::new(keys, keyless, rekor_keys).map(|trust| trust.revision().to_owned());

    let revision = load(vec![key.clone()], vec![ci.clone()], vec![rekor.pem()]).unwrap();
    assert_eq!(revision.len(), 64);
    assert_eq!(load(vec![key.clone()], vec![ci.clone()], vec![rekor.pem()]).unwrap(), revision);
    let renamed = KeyTrust { name: "release2".into(), ..key.clone() };
    assert_ne!(load(vec![renamed], vec![ci.clone()], vec![rekor.pem()]).unwrap(), revision);
    let glob = KeylessTrust { subject: IdentityMatch::Glob(WORKFLOW.into()), ..ci.clone() };
    assert_ne!(load(vec![key.clone()], vec![glob], vec![rekor.pem()]).unwrap(), revision);
    assert_ne!(load(vec![key.clone()], vec![ci.clone()], Vec::new()).unwrap(), revision);

    let bad_key = KeyTrust { name: "bad".into(), public_key_pem: "not a key".into() };
    assert_eq!(load(vec![bad_key], Vec::new(), Vec::new()).unwrap_err(), TrustError::Key { name: "bad".into(), reason: "no PEM block found".into() });
    assert_eq!(load(vec![key.clone()], vec![KeylessTrust { name: "release".into(), ..ci.clone() }], Vec::new()).unwrap_err(), TrustError::DuplicateName("release".into()));
    assert!(matches!(load(Vec::new(), Vec::new(), vec!["junk".into()]), Err(TrustError::RekorKey(_))));

    let keyless_error = |entry: KeylessTrust| match load(Vec::new(), vec![entry], Vec::new()) {
        Err(TrustError::Keyless { name, reason }) => {
            assert_eq!(name, "ci");
            reason
        }
        other => panic!("expected a keyless error, got {other:?}"),
    };
    assert!(keyless_error(KeylessTrust { subject: IdentityMatch::Regex("(".into()), ..ci.clone() }).starts_with("subject pattern \"(\" is invalid"));
    assert_eq!(keyless_error(KeylessTrust { rekor_keys_pem: Vec::new(), ..ci.clone() }), "no Rekor key (rekor_keys or trusted_root): keyless signatures need one");
    assert_eq!(keyless_error(KeylessTrust { fulcio_roots_pem: Vec::new(), ..ci.clone() }), "no Fulcio root certificate (fulcio_roots or trusted_root)");
    assert!(keyless_error(KeylessTrust { fulcio_roots_pem: vec![rekor.pem()], ..ci.clone() }).starts_with("Fulcio certificate: expected PEM CERTIFICATE"));
    assert!(keyless_error(KeylessTrust { trusted_root_json: Some("{".into()), ..ci.clone() }).starts_with("trusted_root.json is not JSON"));
    assert_eq!(keyless_error(KeylessTrust { issuer: String::new(), ..ci.clone() }), "issuer is empty");
    assert_eq!(TrustError::DuplicateName("x".into()).to_string(), "trust entry name 'x' is used twice");
}
