//! Evidence cannot be buried or made expensive: junk referrers do not hide a subject's real
//! evidence, and reading evidence has a byte budget per verdict, reads each blob once, and is done
//! once for concurrent requests of the same verdict. The real server, evidence in cosign's format
//! made with real keys.

mod common;

use futures::StreamExt as _;

use common::cosign::{self, Key, Scheme, DSSE, VULN};
use common::{sha256, RegistryClient, TestRegistry, OCI_MANIFEST};

const MIB: usize = 1 << 20;

struct Setup {
    registry: TestRegistry,
    ci: Key,
    _dir: tempfile::TempDir,
}

/// `prod/**` is promotion-only and needs a signature and a clean scan by "ci", as in the embedded
/// default; `gated/**` needs a signature by "ci"; `build/**` is open.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    std::fs::write(dir.path().join("ci.pub"), ci.public_pem()).unwrap();
    let text = format!(
        r#"
[[trust.keys]]
name = "ci"
public_key = "{dir}/ci.pub"

[[namespaces]]
pattern = "build/**"
tags = "mutable"

[[namespaces]]
pattern = "prod/**"
tags = "immutable"
promotion_only = true
[namespaces.gate]
mode = "enforce"
signed_by = ["ci"]
[namespaces.gate.scan]
max_age = "7d"
block = ["critical-with-fix"]
signed_by = ["ci"]
[[namespaces.tag_rules]]
pattern = "sha256-*.{{sig,att,sbom}}"
tags = "mutable"

[[namespaces]]
pattern = "gated/**"
tags = "mutable"
[namespaces.gate]
mode = "enforce"
signed_by = ["ci"]

[[namespaces]]
pattern = "**"
"#,
        dir = dir.path().display()
    );
    let registry = TestRegistry::with_config_text(&text).await;
    Setup { registry, ci, _dir: dir }
}

/// A blob as a descriptor's digest and size.
struct Pushed {
    digest: String,
    size: usize,
}

async fn push(api: &RegistryClient, repo: &str, bytes: &[u8]) -> Pushed {
    Pushed { digest: api.push_blob(repo, bytes).await, size: bytes.len() }
}

/// An image manifest of `artifact_type` whose `subject` is `subject` and whose layers are `layers`
/// (media type, blob, annotations), with the empty-JSON config cosign gives its referrers.
fn referrer(artifact_type: &str, config: &Pushed, layers: &[(&str, &Pushed, serde_json::Value)], subject: &Pushed) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(media_type, blob, annotations)| {
            serde_json::json!({ "mediaType": media_type, "digest": blob.digest, "size": blob.size, "annotations": annotations })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": config.digest, "size": config.size },
        "layers": layers,
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.size },
    }))
    .unwrap()
}

/// Pushes `manifests` by digest, eight at a time.
async fn push_manifests(api: &RegistryClient, repo: &str, manifests: Vec<Vec<u8>>) {
    let pushes = futures::stream::iter(manifests).map(|manifest| async move {
        let res = api.put_manifest(repo, &sha256(&manifest), OCI_MANIFEST, &manifest).await;
        assert_eq!(res.status(), 201, "push a referrer: {}", res.text().await.unwrap_or_default());
    });
    pushes.buffer_unordered(8).collect::<Vec<()>>().await;
}

async fn verdict(api: &RegistryClient, image: &str) -> serde_json::Value {
    let res = api.client.get(api.url("/api/v1/verdict")).query(&[("image", image)]).send().await.unwrap();
    assert_eq!(res.status(), 200, "verdict of {image}");
    let body: serde_json::Value = res.json().await.unwrap();
    body["verdict"].clone()
}

fn mentions(list: &serde_json::Value, words: &str) -> bool {
    list.as_array().unwrap().iter().any(|item| item.to_string().contains(words))
}

/// A counter's value in the `/metrics` text.
async fn counter(api: &RegistryClient, name: &str) -> f64 {
    let text = api.client.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|line| line.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("no {name} in /metrics"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

// Regression: #13 (item 10). 64 junk referrers used to fill the evidence window, so the `.sig`
// and `.att` tags were dropped and the promotion was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_junk_referrers_hide_no_evidence() {
    let Setup { registry, ci, .. } = setup().await;
    let (digest, manifest) = registry.push_tiny_image("build/app", "v1", "flooded").await;
    let subject = Pushed { digest: digest.clone(), size: manifest.len() };
    // The signature in cosign's tag scheme, the scan as an OCI 1.1 referrer among the junk.
    cosign::sign(&registry, "build/app", &digest, &ci).await;
    let scan = cosign::trivy_predicate(&cosign::time_ago(60), &[]);
    cosign::attest_with(&registry, "build/app", &digest, &ci, &[(VULN, scan)], Scheme::Referrer).await;

    // Junk whose layers claim to be DSSE envelopes, under artifact types that carry no evidence.
    let config = push(&registry, "build/app", b"{}").await;
    let blob = push(&registry, "build/app", b"not an envelope").await;
    let junk: Vec<Vec<u8>> = (0..1000)
        .map(|n| {
            let artifact_type = if n % 2 == 0 { "application/vnd.example.junk" } else { "application/vnd.oci.image.config.v1+json" };
            referrer(artifact_type, &config, &[(DSSE, &blob, serde_json::json!({ "n": n.to_string() }))], &subject)
        })
        .collect();
    push_manifests(&registry, "build/app", junk).await;

    let res = registry.client.post(registry.url("/api/v1/promotions")).json(&serde_json::json!({"source": "build/app:v1", "target": "prod/app", "tags": ["v1"]})).send().await.unwrap();
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 201, "the flooded image still promotes: {body}");
    let promoted = &body["promotion"]["verdict"];
    assert_eq!(promoted["passed"], true, "{promoted}");
    assert!(mentions(&promoted["warnings"], "referrer flood: 1001 referrers"), "the flood is reported: {promoted}");
    assert!(mentions(&promoted["warnings"], "1000 of them are not of an evidence type"), "{promoted}");
    assert!(!mentions(&promoted["rejected"], "not an envelope"), "junk is not read at all: {promoted}");

    let pulled = registry.client.get(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap();
    assert_eq!(pulled.status(), 200, "the promoted image is pullable from prod");
    assert_eq!(sha256(&pulled.bytes().await.unwrap()), digest);
    assert_eq!(verdict(&registry, "prod/app:v1").await["passed"], true);
}

// Regression: #13 (item 11). Referrers of 16 layers naming one big blob made one verdict read the
// blob once per layer (2 GiB for 64 referrers of a 2 MiB blob), and every concurrent request
// computed the verdict again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_reading_is_budgeted_read_once_and_shared() {
    let Setup { registry, ci, .. } = setup().await;
    let (digest, manifest) = registry.push_tiny_image("gated/app", "v1", "heavy").await;
    let subject = Pushed { digest: digest.clone(), size: manifest.len() };
    cosign::sign(&registry, "gated/app", &digest, &ci).await;

    // 16 attestation referrers of 16 layers, every layer naming the same 1 MiB blob; each layer's
    // annotations differ, so no two pieces of evidence are the same to the verifier.
    let config = push(&registry, "gated/app", b"{}").await;
    let big = push(&registry, "gated/app", &vec![b'x'; MIB]).await;
    let referrers: Vec<Vec<u8>> = (0..16)
        .map(|n| {
            let layers: Vec<(&str, &Pushed, serde_json::Value)> =
                (0..16).map(|layer| (DSSE, &big, serde_json::json!({ "predicateType": VULN, "piece": format!("{n}/{layer}") }))).collect();
            referrer(DSSE, &config, &layers, &subject)
        })
        .collect();
    push_manifests(&registry, "gated/app", referrers).await;

    // One verdict, the first this registry computes: the signature (read first, from its tag)
    // counts; the budget stops the rest.
    let image = format!("gated/app@{digest}");
    let first = verdict(&registry, &image).await;
    assert_eq!(first["passed"], true, "{first}");
    assert!(mentions(&first["warnings"], "evidence budget of 16 MiB"), "the budget is reported: {first}");
    assert!(mentions(&first["rejected"], "over the evidence budget"), "{first}");
    let read = counter(&registry, "portcullis_evidence_bytes_read_total").await;
    assert!(read >= MIB as f64, "the big blob was read: {read} bytes");
    assert!(read < 2.0 * MIB as f64, "the big blob was read once, not once per layer: {read} bytes");

    // New evidence (another junk referrer) makes the cached verdict stale; 16 requests at once
    // then compute it once between them.
    let layers = [(DSSE, &big, serde_json::json!({ "predicateType": VULN, "piece": "late" }))];
    push_manifests(&registry, "gated/app", vec![referrer(DSSE, &config, &layers, &subject)]).await;
    let computed_before = counter(&registry, "portcullis_verdicts_computed_total").await;
    let verdicts = futures::future::join_all((0..16).map(|_| verdict(&registry, &image))).await;
    for concurrent in &verdicts {
        assert_eq!(concurrent["passed"], true, "{concurrent}");
        assert_eq!(concurrent["evaluated_at"], verdicts[0]["evaluated_at"], "one verdict for all: {concurrent}");
    }
    let computed = counter(&registry, "portcullis_verdicts_computed_total").await - computed_before;
    assert_eq!(computed, 1.0, "16 concurrent requests for one verdict compute it once");
}
