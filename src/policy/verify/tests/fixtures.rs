//! The shared sigstore fixtures: every generated legacy-tag case verifies or fails as its
//! `expected.json` says, and the real bundles as their PROVENANCE.md says.

use serde_json::{Map, Value};

use super::super::bundle::{self, Subject};
use super::super::{verify, Evidence, EvidenceKind, IdentityMatch, KeyTrust, KeylessTrust, RekorEntry, Rejection, Trust, Verified};
use super::FIXTURES;

/// The image every legacy-tag case is about (`image/manifest.json`).
const LEGACY_SUBJECT: &str = "sha256:1f1c694a54145f9e4adc3305437ec2b6a3bbe61dd7be2bed0af8a63d924f4d9f";
const OTHER_SUBJECT: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

pub(super) fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).unwrap_or_else(|err| panic!("fixture {path}: {err}"))
}

pub(super) fn read_text(path: &str) -> String {
    String::from_utf8(read(path)).expect("fixture text is UTF-8")
}

fn digest(text: &str) -> storage::Digest {
    text.parse().expect("a valid digest")
}

/// One legacy-tag case: its expectation and its (single) evidence layer.
pub(super) struct LegacyCase {
    pub(super) name: String,
    pub(super) expected: Value,
    pub(super) media_type: String,
    pub(super) annotations: Map<String, Value>,
    pub(super) blob: Vec<u8>,
}

impl LegacyCase {
    pub(super) fn load(name: &str) -> LegacyCase {
        let dir = format!("generated/legacy-tag/{name}");
        let manifest: Value = serde_json::from_slice(&read(&format!("{dir}/manifest.json"))).unwrap();
        let expected: Value = serde_json::from_slice(&read(&format!("{dir}/expected.json"))).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{name}: one evidence layer");
        let layer = &layers[0];
        let blob_digest = layer["digest"].as_str().unwrap().replace(':', "-");
        LegacyCase {
            name: name.to_owned(),
            media_type: layer["mediaType"].as_str().unwrap().to_owned(),
            annotations: layer["annotations"].as_object().cloned().unwrap_or_default(),
            blob: read(&format!("{dir}/blobs/{blob_digest}")),
            expected,
        }
    }

    /// Every case directory, by name.
    pub(super) fn names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("{FIXTURES}/generated/legacy-tag"))
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.path().join("expected.json").exists())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub(super) fn evidence<'a>(&'a self, annotations: &'a Map<String, Value>, blob: &'a [u8]) -> Evidence<'a> {
        match self.media_type.as_str() {
            "application/vnd.dev.cosign.simplesigning.v1+json" => Evidence::SimpleSigning { annotations, payload: blob },
            "application/vnd.dsse.envelope.v1+json" => Evidence::Attestation { annotations, envelope: blob },
            other => panic!("{}: unexpected layer media type {other}", self.name),
        }
    }

    pub(super) fn verify(&self, trust: &Trust, subject: &str) -> Result<Verified, Rejection> {
        verify(trust, &digest(subject), self.evidence(&self.annotations, &self.blob))
    }

    /// The Trust of `expected.json`'s `verify_with`.
    pub(super) fn trust(&self) -> Trust {
        trust_from(&self.expected["verify_with"])
    }
}

/// Keys are named 'cosign', keyless identities 'ci'.
fn trust_from(verify_with: &Value) -> Trust {
    let file = |field: &str| verify_with[field].as_str().map(|path| read_text(&format!("generated/legacy-tag/{path}")));
    let keys: Vec<KeyTrust> = file("public_key").map(|pem| KeyTrust { name: "cosign".into(), public_key_pem: pem }).into_iter().collect();
    let keyless: Vec<KeylessTrust> = verify_with["identity"]
        .as_str()
        .map(|identity| KeylessTrust {
            name: "ci".into(),
            issuer: verify_with["issuer"].as_str().unwrap().to_owned(),
            subject: IdentityMatch::Exact(identity.to_owned()),
            fulcio_roots_pem: Vec::new(),
            rekor_keys_pem: Vec::new(),
            trusted_root_json: file("trusted_root"),
        })
        .into_iter()
        .collect();
    Trust::new(keys, keyless, file("rekor_public_key").into_iter().collect()).unwrap()
}

/// What each case must yield: for a pass, (trust entry, identity, Rekor log index); for a
/// failure, the reason.
enum Expect {
    Pass { entry: &'static str, identity: &'static str, log_index: Option<i64> },
    Fail(&'static str),
}

fn expectation(name: &str) -> Expect {
    match name {
        "key-att-sbom-spdx-valid" => Expect::Pass { entry: "cosign", identity: "cosign", log_index: Some(1011) },
        "key-att-tampered-payload_fail" => Expect::Fail("signature does not verify with key 'cosign'"),
        "key-att-vuln-valid" => Expect::Pass { entry: "cosign", identity: "cosign", log_index: Some(1008) },
        "key-att-wrong-subject_fail" => Expect::Fail("attestation subject is sha256:"),
        // cosign --tlog-upload=false: the log entry is optional for keys.
        "key-sig-no-tlog" => Expect::Pass { entry: "cosign", identity: "cosign", log_index: None },
        "key-sig-valid" => Expect::Pass { entry: "cosign", identity: "cosign", log_index: Some(1000) },
        "keyless-att-vuln-valid" => Expect::Pass { entry: "ci", identity: "dev@example.com", log_index: Some(1009) },
        "keyless-sig-bad-set_fail" => Expect::Fail("SET does not verify against any configured Rekor key"),
        "keyless-sig-email-valid" => Expect::Pass { entry: "ci", identity: "dev@example.com", log_index: Some(1001) },
        "keyless-sig-forged_fail" => Expect::Fail("signature does not verify with the certificate's key"),
        "keyless-sig-untrusted-ca_fail" => Expect::Fail("certificate does not chain to a configured Fulcio root"),
        "keyless-sig-uri-valid" => {
            Expect::Pass { entry: "ci", identity: "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main", log_index: Some(1002) }
        }
        "keyless-sig-wrong-digest_fail" => Expect::Fail("payload is for sha256:"),
        other => panic!("legacy-tag case {other} has no expectation here: add one"),
    }
}

#[test]
fn legacy_tag_cases_verify_as_expected_json_says() {
    let names = LegacyCase::names();
    assert_eq!(names.len(), 13, "{names:?}");
    for name in names {
        let case = LegacyCase::load(&name);
        assert_eq!(case.expected["subject_digest"].as_str(), Some(LEGACY_SUBJECT), "{name}");
        let expect_pass = case.expected["expect"].as_str().unwrap().starts_with("pass");
        let result = case.verify(&case.trust(), LEGACY_SUBJECT);
        match (expectation(&name), result) {
            (Expect::Pass { entry, identity, log_index }, Ok(verified)) => {
                assert!(expect_pass, "{name}: expected.json says fail");
                assert_eq!(verified.trust_entry, entry, "{name}");
                assert_eq!(verified.identity, identity, "{name}");
                assert_eq!(verified.rekor.map(|r| r.log_index), log_index, "{name}");
                if let Some(rekor) = verified.rekor {
                    assert_eq!(rekor.integrated_time, 1_795_708_001, "{name}");
                }
                let is_attestation = case.media_type.contains("dsse");
                assert_eq!(verified.kind, if is_attestation { EvidenceKind::Attestation } else { EvidenceKind::Signature }, "{name}");
                assert_eq!(verified.predicate_type.as_deref(), case.expected["predicate_type"].as_str(), "{name}");
                assert_eq!(verified.statement.is_some(), is_attestation, "{name}");
                assert_eq!(verified.issuer.is_some(), entry == "ci", "{name}");
                assert_eq!(verified.cert_not_after.is_some(), entry == "ci", "{name}");
            }
            (Expect::Fail(reason), Err(rejection)) => {
                assert!(!expect_pass, "{name}: expected.json says pass");
                assert!(rejection.reason.starts_with(reason), "{name}: {rejection}");
            }
            (_, result) => panic!("{name}: unexpected {result:?}"),
        }
    }
}

#[test]
fn legacy_tag_cases_with_other_trust_or_subject() {
    // key-sig-valid: "with trust/other.pub expect FAIL".
    let case = LegacyCase::load("key-sig-valid");
    let other = Trust::new(vec![KeyTrust { name: "other".into(), public_key_pem: read_text("generated/legacy-tag/trust/other.pub") }], Vec::new(), Vec::new()).unwrap();
    assert_eq!(case.verify(&other, LEGACY_SUBJECT).unwrap_err().reason, "signature does not verify with key 'other'");

    // A Rekor key for keys that is not the log's: the SET cannot be checked, so it does not count.
    let wrong_rekor = Trust::new(
        vec![KeyTrust { name: "cosign".into(), public_key_pem: read_text("generated/legacy-tag/trust/cosign.pub") }],
        Vec::new(),
        vec![read_text("generated/legacy-tag/trust/other.pub")],
    )
    .unwrap();
    let reason = case.verify(&wrong_rekor, LEGACY_SUBJECT).unwrap_err().reason;
    assert!(reason.starts_with("SET does not verify against any configured Rekor key (log ID 810d9b88"), "{reason}");

    // keyless-sig-email-valid: "FAIL for any other issuer".
    let case = LegacyCase::load("keyless-sig-email-valid");
    let mut verify_with = case.expected["verify_with"].clone();
    verify_with["issuer"] = case.expected["expect_fail_with"]["issuer"].clone();
    assert_eq!(
        case.verify(&trust_from(&verify_with), LEGACY_SUBJECT).unwrap_err().reason,
        "certificate issuer https://issuer.example does not match identity 'ci' (https://accounts.google.com)"
    );
    let mut verify_with = case.expected["verify_with"].clone();
    verify_with["identity"] = "ops@example.com".into();
    assert_eq!(
        case.verify(&trust_from(&verify_with), LEGACY_SUBJECT).unwrap_err().reason,
        "certificate SAN dev@example.com does not match identity 'ci' (ops@example.com)"
    );

    // The same material given as PEM files instead of trusted_root.json trusts the same.
    let pem_trust = Trust::new(
        Vec::new(),
        vec![KeylessTrust {
            name: "ci".into(),
            issuer: "https://issuer.example".into(),
            subject: IdentityMatch::Glob("*@example.com".into()),
            fulcio_roots_pem: vec![read_text("generated/legacy-tag/trust/fulcio-root.pem")],
            rekor_keys_pem: vec![read_text("generated/legacy-tag/trust/rekor.pub")],
            trusted_root_json: None,
        }],
        Vec::new(),
    )
    .unwrap();
    assert_eq!(case.verify(&pem_trust, LEGACY_SUBJECT).unwrap().identity, "dev@example.com");
    let untrusted = LegacyCase::load("keyless-sig-untrusted-ca_fail");
    assert_eq!(untrusted.verify(&pem_trust, LEGACY_SUBJECT).unwrap_err().reason, "certificate does not chain to a configured Fulcio root");

    // Every passing case is about its image only.
    for name in LegacyCase::names().iter().filter(|name| !name.ends_with("_fail")) {
        let case = LegacyCase::load(name);
        let reason = case.verify(&case.trust(), OTHER_SUBJECT).unwrap_err().reason;
        assert!(reason.starts_with("payload is for ") || reason.starts_with("attestation subject is "), "{name}: {reason}");
        assert!(reason.ends_with(&format!("not {OTHER_SUBJECT}")), "{name}: {reason}");
    }
}

fn real_trust(case: &str, subject: IdentityMatch, issuer: &str) -> Trust {
    let keyless = KeylessTrust {
        name: "ci".into(),
        issuer: issuer.into(),
        subject,
        fulcio_roots_pem: Vec::new(),
        rekor_keys_pem: Vec::new(),
        trusted_root_json: Some(read_text(&format!("real/{case}/trusted_root.json"))),
    };
    Trust::new(Vec::new(), vec![keyless], Vec::new()).unwrap()
}

const KUBEWARDEN_SAN: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";
const KUBEWARDEN_SUBJECT: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const GITHUB_ACTIONS: &str = "https://token.actions.githubusercontent.com";

#[test]
fn real_cosign_v3_signature_bundle() {
    let bytes = read("real/cosign-v3-referrer-signature/bundle.sigstore.json");
    let check = |subject: IdentityMatch, issuer: &str, digest_text: &str| {
        let trust = real_trust("cosign-v3-referrer-signature", subject, issuer);
        verify(&trust, &digest(digest_text), Evidence::Bundle { bytes: &bytes })
    };
    let verified = check(IdentityMatch::Exact(KUBEWARDEN_SAN.into()), GITHUB_ACTIONS, KUBEWARDEN_SUBJECT).unwrap();
    assert_eq!(verified.kind, EvidenceKind::Signature);
    assert_eq!(verified.predicate_type.as_deref(), Some("https://sigstore.dev/cosign/sign/v1"));
    assert_eq!(verified.trust_entry, "ci");
    assert_eq!(verified.identity, KUBEWARDEN_SAN);
    assert_eq!(verified.issuer.as_deref(), Some(GITHUB_ACTIONS));
    assert_eq!(verified.rekor, Some(RekorEntry { log_index: 1_261_105_807, integrated_time: 1_775_719_409 }));
    assert!(verified.cert_not_after.is_some_and(|t| t > 1_775_719_409));

    for pattern in [IdentityMatch::Glob("https://github.com/kubewarden/*".into()), IdentityMatch::Regex(r"https://github\.com/kubewarden/[a-z-]+/\.github/workflows/release\.yml@refs/tags/v.*".into())] {
        assert!(check(pattern, GITHUB_ACTIONS, KUBEWARDEN_SUBJECT).is_ok());
    }
    assert_eq!(
        check(IdentityMatch::Glob("https://github.com/myorg/*".into()), GITHUB_ACTIONS, KUBEWARDEN_SUBJECT).unwrap_err().reason,
        format!("certificate SAN {KUBEWARDEN_SAN} does not match identity 'ci' (https://github.com/myorg/*)")
    );
    // A regex must match the whole SAN.
    assert!(check(IdentityMatch::Regex("kubewarden".into()), GITHUB_ACTIONS, KUBEWARDEN_SUBJECT).is_err());
    assert_eq!(
        check(IdentityMatch::Exact(KUBEWARDEN_SAN.into()), "https://accounts.google.com", KUBEWARDEN_SUBJECT).unwrap_err().reason,
        format!("certificate issuer {GITHUB_ACTIONS} does not match identity 'ci' (https://accounts.google.com)")
    );
    assert_eq!(
        check(IdentityMatch::Exact(KUBEWARDEN_SAN.into()), GITHUB_ACTIONS, OTHER_SUBJECT).unwrap_err().reason,
        format!("attestation subject is {KUBEWARDEN_SUBJECT}, not {OTHER_SUBJECT}")
    );
    // Another instance's trusted root (the generated one) does not vouch for it.
    let generated = Trust::new(
        Vec::new(),
        vec![KeylessTrust {
            name: "ci".into(),
            issuer: GITHUB_ACTIONS.into(),
            subject: IdentityMatch::Exact(KUBEWARDEN_SAN.into()),
            fulcio_roots_pem: Vec::new(),
            rekor_keys_pem: Vec::new(),
            trusted_root_json: Some(read_text("generated/legacy-tag/trust/trusted_root.json")),
        }],
        Vec::new(),
    )
    .unwrap();
    assert!(verify(&generated, &digest(KUBEWARDEN_SUBJECT), Evidence::Bundle { bytes: &bytes }).is_err());
}

#[test]
fn real_cosign_attestation_bundle_with_custom_predicate() {
    let case = "cosign-referrer-attestation-custom-predicate";
    let bytes = read(&format!("real/{case}/bundle.sigstore.json"));
    let subject = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
    let trust = real_trust(case, IdentityMatch::Exact("cody@soyland.com".into()), "https://github.com/login/oauth");
    let verified = verify(&trust, &digest(subject), Evidence::Bundle { bytes: &bytes }).unwrap();
    assert_eq!(verified.kind, EvidenceKind::Attestation);
    assert_eq!(verified.predicate_type.as_deref(), Some("https://cosign.sigstore.dev/attestation/v1"));
    assert_eq!(verified.statement.as_ref().unwrap()["predicate"]["Data"], "{\"foo\": \"bar\"}\n");
    assert_eq!(verified.identity, "cody@soyland.com");
    assert_eq!(verified.rekor.map(|r| r.log_index), Some(175_508_996));

    assert!(verify(&trust, &digest(OTHER_SUBJECT), Evidence::Bundle { bytes: &bytes }).unwrap_err().reason.starts_with("attestation subject is"));
    let other_issuer = real_trust(case, IdentityMatch::Exact("cody@soyland.com".into()), GITHUB_ACTIONS);
    assert!(verify(&other_issuer, &digest(subject), Evidence::Bundle { bytes: &bytes }).unwrap_err().reason.starts_with("certificate issuer"));
}

#[test]
fn real_npm_provenance_bundle_has_a_sha512_subject() {
    let case = "npm-slsa-provenance-sha512-subject";
    let bytes = read(&format!("real/{case}/bundle.sigstore.json"));
    let trust = real_trust(case, IdentityMatch::Exact("https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main".into()), GITHUB_ACTIONS);
    // Manifests are named by sha256, so through the public API it is never about one.
    let reason = verify(&trust, &digest(OTHER_SUBJECT), Evidence::Bundle { bytes: &bytes }).unwrap_err().reason;
    assert!(reason.starts_with("attestation has no sha256 subject"), "{reason}");
    // As a sha512 artifact it verifies, and only for its own digest.
    let sha512 = "849a897e81bf7b8a8541a6ae40bd3473a27a16b1cb0462ad905bd6dc96d34881053a12eb4a375233f81677fc9439f628fe0b0445e8535c60b5559597fbd5f80e";
    let verified = bundle::verify_bundle_about(&trust.material, Subject::Sha512(sha512), &bytes).unwrap();
    assert_eq!(verified.predicate_type.as_deref(), Some("https://slsa.dev/provenance/v1"));
    assert_eq!(verified.kind, EvidenceKind::Attestation);
    let wrong = "00".repeat(64);
    assert!(bundle::verify_bundle_about(&trust.material, Subject::Sha512(&wrong), &bytes).unwrap_err().reason.starts_with("attestation subject is sha512:849a"));
}

#[test]
fn real_vuln_envelope_parses_but_its_signer_is_unknown() {
    let envelope = read("real/cosign-vuln-predicate-examples/vuln-dsse-envelope.json");
    let trust = Trust::new(vec![KeyTrust { name: "cosign".into(), public_key_pem: read_text("generated/legacy-tag/trust/cosign.pub") }], Vec::new(), Vec::new()).unwrap();
    let annotations = Map::new();
    let subject = digest("sha256:3c19aa980a9c5709a2c96c2d0779febf6e5e453b92b172ce84cb85fdaf695373");
    let evidence = Evidence::Attestation { annotations: &annotations, envelope: &envelope };
    assert_eq!(verify(&trust, &subject, evidence).unwrap_err().reason, "signature does not verify with key 'cosign'");
    assert!(verify(&trust, &digest(OTHER_SUBJECT), evidence).unwrap_err().reason.starts_with("attestation subject is sha256:3c19aa98"));
    // Nor is it a sigstore bundle.
    assert!(verify(&trust, &subject, Evidence::Bundle { bytes: &envelope }).unwrap_err().reason.starts_with("sigstore bundle is malformed"));
}
