//! The shared sigstore fixtures, pushed into the registry through its HTTP API and judged by a
//! gate, end to end: each legacy-tag case (`sha256-<hex>.sig` / `.att`, generated with a
//! self-made Fulcio CA and Rekor key) passes or fails exactly as its `expected.json` says.

mod common;

use std::path::PathBuf;

use common::sigstore::{legacy_tag_dir, push_case, read_json};
use common::TestRegistry;

/// The configuration trusting what the case's `verify_with` names, as entry "t", and gating
/// `demo/**` on a signature (or, for attestation cases, an attestation of its predicate type) by "t".
fn config_for(expected: &serde_json::Value) -> String {
    let with = &expected["verify_with"];
    let file = |name: &str| format!("{:?}", legacy_tag_dir().join(name));
    let mut text = String::new();
    if let Some(key) = with["public_key"].as_str() {
        if let Some(rekor) = with["rekor_public_key"].as_str() {
            text.push_str(&format!("[trust]\nrekor_keys = [{}]\n", file(rekor)));
        }
        text.push_str(&format!("[[trust.keys]]\nname = \"t\"\npublic_key = {}\n", file(key)));
    } else {
        text.push_str(&format!(
            "[[trust.keyless]]\nname = \"t\"\nissuer = {:?}\nsubject = {:?}\ntrusted_root = {}\n",
            with["issuer"].as_str().unwrap(),
            with["identity"].as_str().unwrap(),
            file(with["trusted_root"].as_str().unwrap())
        ));
    }
    text.push_str("[[namespaces]]\npattern = \"demo/**\"\n[namespaces.gate]\nmode = \"enforce\"\n");
    match expected["predicate_type"].as_str() {
        Some(predicate_type) => text.push_str(&format!("attestations = [{{ predicate_type = {predicate_type:?}, signed_by = [\"t\"] }}]\n")),
        None => text.push_str("signed_by = [\"t\"]\n"),
    }
    text.push_str("[[namespaces]]\npattern = \"**\"\n");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_tag_cases_verify_as_expected() {
    let root = legacy_tag_dir();
    let mut n_cases = 0;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("expected.json").is_file()).collect();
    cases.sort();
    for case in cases {
        let expected = read_json(&case.join("expected.json"));
        let registry = TestRegistry::with_config_text(&config_for(&expected)).await;
        let subject = expected["subject_digest"].as_str().unwrap();

        // The signed image, then the evidence under its cosign tag.
        let image = root.join("image");
        push_case(&registry, "demo/app", &image, &image, subject).await;
        push_case(&registry, "demo/app", &case, &case.join("blobs"), expected["tag"].as_str().unwrap()).await;

        let res = registry.client.get(registry.url("/api/v1/verdict")).query(&[("image", format!("demo/app@{subject}"))]).send().await.unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        let should_pass = expected["expect"].as_str().unwrap().starts_with("pass");
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(body["verdict"]["passed"].as_bool(), Some(should_pass), "{name}: {}", body["verdict"]);
        if !should_pass {
            assert!(!body["verdict"]["rejected"].as_array().unwrap().is_empty(), "{name}: a failing case names its rejected evidence");
        }
        let pull = registry.client.get(registry.url(&format!("/v2/demo/app/manifests/{subject}"))).send().await.unwrap();
        assert_eq!(pull.status().as_u16(), if should_pass { 200 } else { 403 }, "{name}");
        n_cases += 1;
    }
    assert_eq!(n_cases, 13, "every legacy-tag case ran");
}
