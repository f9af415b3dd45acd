//! A promotion that fails between linking and tagging leaves no target tag, and a retry
//! completes it. Needs the `failpoints` feature (scripts/test enables it); its own test binary,
//! because fail points are process-wide.

#![cfg(feature = "failpoints")]

mod common;

use common::cosign::{self, Key, VULN};
use common::TestRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_before_tags_leaves_no_tag_and_a_retry_completes() {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    std::fs::write(dir.path().join("cosign.pub"), ci.public_pem()).unwrap();
    let text = portcullis::config::EMBEDDED_DEFAULT.replace("public_key = \"trust/cosign.pub\"", &format!("public_key = {:?}", dir.path().join("cosign.pub")));
    let registry = TestRegistry::with_config_text(&text).await;
    let (digest, _) = registry.push_tiny_image("build/app", "v1", "f").await;
    cosign::sign(&registry, "build/app", &digest, &ci).await;
    cosign::attest(&registry, "build/app", &digest, &ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &[]))]).await;
    let body = serde_json::json!({"source": "build/app:v1", "target": "prod/app", "tags": ["v1"]});
    let promote = || registry.client.post(registry.url("/api/v1/promotions")).json(&body).send();

    let scenario = fail::FailScenario::setup();
    fail::cfg("promotion-before-tags", "return").unwrap();
    let res = promote().await.unwrap();
    assert_eq!(res.status(), 503, "the injected failure surfaces: {}", res.text().await.unwrap());
    let tag = registry.client.head(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap();
    assert_eq!(tag.status(), 404, "no target tag after a failure midway");
    let listed: serde_json::Value = registry.client.get(registry.url("/api/v1/promotions?repository=prod/app")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["promotions"].as_array().unwrap().len(), 0, "no record of an unfinished promotion");

    fail::remove("promotion-before-tags");
    scenario.teardown();
    let res = promote().await.unwrap();
    assert_eq!(res.status(), 201, "the retry completes: {}", res.text().await.unwrap());
    let tag = registry.client.head(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap();
    assert_eq!(tag.headers()["docker-content-digest"], digest.as_str());
}
