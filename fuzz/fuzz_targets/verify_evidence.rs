//! Arbitrary bytes as cosign simple-signing layers, DSSE attestation layers and sigstore bundles,
//! through `policy::verify::verify` with the legacy-tag fixtures' trust: it must return a
//! verdict, never panic, hang or exhaust memory.
//!
//! Input layout: byte 0 picks the evidence kind; bytes 1-2 (little endian) are the length of an
//! annotation section, which is either a JSON object or up to five NUL-separated values for
//! cosign's annotation keys; the rest is the payload, envelope or bundle.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::policy::verify::{self, Evidence, IdentityMatch, KeyTrust, KeylessTrust, Trust};
use serde_json::{Map, Value};

const SUBJECT: &str = "sha256:1f1c694a54145f9e4adc3305437ec2b6a3bbe61dd7be2bed0af8a63d924f4d9f";
const ANNOTATION_KEYS: [&str; 5] = [
    "dev.cosignproject.cosign/signature",
    "dev.sigstore.cosign/certificate",
    "dev.sigstore.cosign/chain",
    "dev.sigstore.cosign/bundle",
    "predicateType",
];

macro_rules! trust_file {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/sigstore/generated/legacy-tag/trust/", $name))
    };
}

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let keys = vec![KeyTrust { name: "cosign".into(), public_key_pem: trust_file!("cosign.pub").into() }];
        let keyless = vec![KeylessTrust {
            name: "ci".into(),
            issuer: "https://issuer.example".into(),
            subject: IdentityMatch::Glob("*".into()),
            fulcio_roots_pem: vec![trust_file!("fulcio-root.pem").into()],
            rekor_keys_pem: Vec::new(),
            trusted_root_json: Some(trust_file!("trusted_root.json").into()),
        }];
        Trust::new(keys, keyless, vec![trust_file!("rekor.pub").into()]).expect("the fixture trust loads")
    })
}

fn annotations(section: &[u8]) -> Map<String, Value> {
    if let Ok(Value::Object(map)) = serde_json::from_slice(section) {
        return map;
    }
    section
        .split(|b| *b == 0)
        .zip(ANNOTATION_KEYS)
        .map(|(value, key)| (key.to_owned(), Value::String(String::from_utf8_lossy(value).into_owned())))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let (section, blob) = match rest {
        [low, high, tail @ ..] => {
            let len = usize::from(u16::from_le_bytes([*low, *high])).min(tail.len());
            tail.split_at(len)
        }
        _ => (&[][..], rest),
    };
    let annotations = annotations(section);
    let subject: storage::Digest = SUBJECT.parse().expect("a valid digest");
    let evidence = match kind % 3 {
        0 => Evidence::SimpleSigning { annotations: &annotations, payload: blob },
        1 => Evidence::Attestation { annotations: &annotations, envelope: blob },
        _ => Evidence::Bundle { bytes: blob },
    };
    let _ = verify::verify(trust(), &subject, evidence);
});
