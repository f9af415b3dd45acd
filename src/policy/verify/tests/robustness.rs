//! Bad input never panics and never passes: pseudo-random evidence, hostile shapes (deep
//! nesting, huge values, PEM and base64 junk), and a few thousand mutations of the fixtures,
//! through the public `verify` entry point. `fuzz/` runs the same entry point under libFuzzer.
//!
//! A mutation may still verify when it only touches what no signature covers (whitespace in a
//! bundle's JSON, the chain hint); then it must verify exactly as the original did.

use serde_json::{Map, Value};

use super::super::{verify, Evidence, IdentityMatch, KeyTrust, KeylessTrust, Trust, Verified, MAX_ANNOTATIONS, MAX_ENVELOPE_BYTES, MAX_PAYLOAD_BYTES};
use super::fixtures::{read, read_text, LegacyCase};

const LEGACY_SUBJECT: &str = "sha256:1f1c694a54145f9e4adc3305437ec2b6a3bbe61dd7be2bed0af8a63d924f4d9f";
const ANNOTATION_KEYS: &[&str] = &[
    "dev.cosignproject.cosign/signature",
    "dev.sigstore.cosign/certificate",
    "dev.sigstore.cosign/chain",
    "dev.sigstore.cosign/bundle",
    "predicateType",
];

/// xorshift64*: deterministic, so a failure names the iteration that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One to three edits: bit flips, structural characters, insertions, deletions, truncation,
/// duplication.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    const STRUCTURAL: &[u8] = b"{}[]\":,\\ \n-=+/0Aa\x00\xff";
    let mut out = input.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(out.len());
        match rng.below(7) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.below(8),
            1 if !out.is_empty() => out[at] = STRUCTURAL[rng.below(STRUCTURAL.len())],
            2 => {
                let len = 1 + rng.below(8);
                let insert = rng.bytes(len);
                out.splice(at..at, insert);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            4 => out.truncate(at),
            5 if !out.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.push(STRUCTURAL[rng.below(STRUCTURAL.len())]),
        }
    }
    out
}

/// A piece of evidence to mutate, its trust and what it verifies to unmutated.
struct Seed {
    name: String,
    trust: Trust,
    kind: Kind,
    annotations: Map<String, Value>,
    blob: Vec<u8>,
    subject: storage::Digest,
    original: Option<Verified>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    SimpleSigning,
    Attestation,
    Bundle,
}

impl Seed {
    fn run(&self, annotations: &Map<String, Value>, blob: &[u8]) -> Result<Verified, super::super::Rejection> {
        let evidence = match self.kind {
            Kind::SimpleSigning => Evidence::SimpleSigning { annotations, payload: blob },
            Kind::Attestation => Evidence::Attestation { annotations, envelope: blob },
            Kind::Bundle => Evidence::Bundle { bytes: blob },
        };
        verify(&self.trust, &self.subject, evidence)
    }
}

fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for name in LegacyCase::names() {
        let case = LegacyCase::load(&name);
        let kind = if case.media_type.contains("dsse") { Kind::Attestation } else { Kind::SimpleSigning };
        let trust = case.trust();
        let original = case.verify(&trust, LEGACY_SUBJECT).ok();
        seeds.push(Seed { name, trust, kind, annotations: case.annotations, blob: case.blob, subject: LEGACY_SUBJECT.parse().unwrap(), original });
    }
    let real = [
        ("cosign-v3-referrer-signature", "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172", "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0", "https://token.actions.githubusercontent.com"),
        ("cosign-referrer-attestation-custom-predicate", "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4", "cody@soyland.com", "https://github.com/login/oauth"),
    ];
    for (case, subject, san, issuer) in real {
        let keyless = KeylessTrust {
            name: "ci".into(),
            issuer: issuer.into(),
            subject: IdentityMatch::Exact(san.into()),
            fulcio_roots_pem: Vec::new(),
            rekor_keys_pem: Vec::new(),
            trusted_root_json: Some(read_text(&format!("real/{case}/trusted_root.json"))),
        };
        let trust = Trust::new(Vec::new(), vec![keyless], Vec::new()).unwrap();
        let mut seed = Seed {
            name: case.into(),
            trust,
            kind: Kind::Bundle,
            annotations: Map::new(),
            blob: read(&format!("real/{case}/bundle.sigstore.json")),
            subject: subject.parse().unwrap(),
            original: None,
        };
        seed.original = Some(seed.run(&Map::new(), &seed.blob).unwrap());
        seeds.push(seed);
    }
    seeds
}

/// A trust with every kind of entry, for inputs that belong to no fixture.
fn broad_trust() -> Trust {
    let keys = vec![KeyTrust { name: "cosign".into(), public_key_pem: read_text("generated/legacy-tag/trust/cosign.pub") }];
    let keyless = vec![KeylessTrust {
        name: "ci".into(),
        issuer: "https://issuer.example".into(),
        subject: IdentityMatch::Glob("*".into()),
        fulcio_roots_pem: Vec::new(),
        rekor_keys_pem: Vec::new(),
        trusted_root_json: Some(read_text("generated/legacy-tag/trust/trusted_root.json")),
    }];
    Trust::new(keys, keyless, vec![read_text("generated/legacy-tag/trust/rekor.pub")]).unwrap()
}

#[test]
fn mutated_fixtures_never_panic_and_never_pass_differently() {
    let seeds = seeds();
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut passed = 0;
    for iteration in 0..2500 {
        let seed = &seeds[rng.below(seeds.len())];
        let mut annotations = seed.annotations.clone();
        let mut blob = seed.blob.clone();
        let keys: Vec<String> = annotations.keys().cloned().collect();
        let blob_mutated = seed.kind == Kind::Bundle || keys.is_empty() || rng.below(3) == 0;
        if blob_mutated {
            blob = mutate(&mut rng, &blob);
        } else {
            let key = &keys[rng.below(keys.len())];
            let value = annotations[key].as_str().unwrap_or_default().as_bytes().to_vec();
            let mutated = String::from_utf8_lossy(&mutate(&mut rng, &value)).into_owned();
            annotations.insert(key.clone(), Value::String(mutated));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| seed.run(&annotations, &blob)))
            .unwrap_or_else(|_| panic!("iteration {iteration} ({}) panicked", seed.name));
        if let Ok(verified) = result {
            passed += 1;
            assert_eq!(seed.original.as_ref(), Some(&verified), "iteration {iteration} ({}): a mutation passed differently", seed.name);
            // Payloads are signed byte for byte, and envelopes are hashed into the log entry.
            assert!(!(blob_mutated && seed.kind != Kind::Bundle), "iteration {iteration} ({}): a mutated payload passed", seed.name);
        }
    }
    // Most mutations break something; a few (chain hints, JSON whitespace) do not.
    assert!(passed < 2500 / 4, "{passed} of 2500 mutations passed");
}

#[test]
fn random_evidence_never_panics_and_never_passes() {
    let trust = broad_trust();
    let subject: storage::Digest = LEGACY_SUBJECT.parse().unwrap();
    let mut rng = Rng(0x5EED_CAFE_F00D_0002);
    // Random bytes, and random bytes dressed as JSON or PEM, in every position.
    let dress = |rng: &mut Rng| -> Vec<u8> {
        let len = rng.below(300);
        let raw = rng.bytes(len);
        match rng.below(5) {
            0 => raw,
            1 => format!("{{\"Payload\":{},\"SignedEntryTimestamp\":\"{}\"}}", String::from_utf8_lossy(&raw), super::testkit::b64(&raw)).into_bytes(),
            2 => super::testkit::pem("CERTIFICATE", &raw).into_bytes(),
            3 => format!("{{\"payloadType\":\"application/vnd.in-toto+json\",\"payload\":\"{}\",\"signatures\":[{{\"sig\":\"{}\"}}]}}", super::testkit::b64(&raw), super::testkit::b64(&raw[..raw.len() / 2])).into_bytes(),
            _ => super::testkit::b64(&raw).into_bytes(),
        }
    };
    for iteration in 0..1500 {
        let mut annotations = Map::new();
        for _ in 0..rng.below(6) {
            let key = ANNOTATION_KEYS[rng.below(ANNOTATION_KEYS.len())];
            annotations.insert(key.to_owned(), Value::String(String::from_utf8_lossy(&dress(&mut rng)).into_owned()));
        }
        let blob = dress(&mut rng);
        let evidence = match rng.below(3) {
            0 => Evidence::SimpleSigning { annotations: &annotations, payload: &blob },
            1 => Evidence::Attestation { annotations: &annotations, envelope: &blob },
            _ => Evidence::Bundle { bytes: &blob },
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify(&trust, &subject, evidence)))
            .unwrap_or_else(|_| panic!("iteration {iteration} panicked"));
        assert!(result.is_err(), "iteration {iteration} passed: {result:?}");
    }
}

#[test]
fn hostile_shapes_are_rejected_with_a_reason() {
    let trust = broad_trust();
    let subject: storage::Digest = LEGACY_SUBJECT.parse().unwrap();
    let deep_array = "[".repeat(100_000);
    let deep_object = "{\"a\":".repeat(50_000);
    let huge_number = format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":1{}}}}}}}", "0".repeat(100_000));
    let mut many = Map::new();
    for i in 0..=MAX_ANNOTATIONS {
        many.insert(format!("k{i}"), Value::String("v".into()));
    }
    let pem_bomb = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".repeat(5_000);
    let unterminated = "-----BEGIN CERTIFICATE-----\n".repeat(5_000);
    let mut nested_value = Value::String("x".into());
    for _ in 0..100 {
        nested_value = Value::Array(vec![nested_value]);
    }

    let blobs: Vec<Vec<u8>> = vec![
        Vec::new(),
        deep_array.clone().into_bytes(),
        deep_object.into_bytes(),
        huge_number.into_bytes(),
        vec![0xff; 1000],
        b"\xef\xbb\xbf{}".to_vec(),
        vec![b' '; MAX_PAYLOAD_BYTES + 1],
        vec![b'{'; MAX_ENVELOPE_BYTES + 1],
        b"null".to_vec(),
        b"1e999999".to_vec(),
    ];
    let annotation_sets: Vec<Map<String, Value>> = vec![
        Map::new(),
        many,
        super::testkit::annotations(&[(ANNOTATION_KEYS[0], "MEUCIQ=="), (ANNOTATION_KEYS[1], &pem_bomb)]),
        super::testkit::annotations(&[(ANNOTATION_KEYS[0], "MEUCIQ=="), (ANNOTATION_KEYS[1], &unterminated)]),
        super::testkit::annotations(&[(ANNOTATION_KEYS[0], "MEUCIQ=="), (ANNOTATION_KEYS[3], &deep_array)]),
        super::testkit::annotations(&[(ANNOTATION_KEYS[0], &"A".repeat(1 << 20))]),
        [(ANNOTATION_KEYS[1].to_owned(), nested_value)].into_iter().collect(),
    ];
    for (i, blob) in blobs.iter().enumerate() {
        for (j, annotations) in annotation_sets.iter().enumerate() {
            for evidence in [
                Evidence::SimpleSigning { annotations, payload: blob },
                Evidence::Attestation { annotations, envelope: blob },
                Evidence::Bundle { bytes: blob },
            ] {
                let rejection = verify(&trust, &subject, evidence).expect_err("hostile input must not verify");
                assert!(!rejection.reason.is_empty(), "blob {i}, annotations {j}");
                assert!(rejection.reason.len() < 4096, "blob {i}, annotations {j}: reason of {} bytes", rejection.reason.len());
            }
        }
    }
    // A valid signature with hostile extra annotations still verifies: only cosign's are read.
    let case = LegacyCase::load("key-sig-valid");
    let mut annotations = case.annotations.clone();
    annotations.insert("org.example/deep".into(), Value::String(deep_array));
    assert!(verify(&case.trust(), &subject, case.evidence(&annotations, &case.blob)).is_ok());
}
