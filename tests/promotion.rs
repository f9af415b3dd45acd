//! Promotion end to end: images pushed to `build/` with skopeo, signed and attested with real
//! keys, promoted into the gated `prod/` through the API and the CLI, pulled back with skopeo;
//! the registry's verification summary checked with an independent verifier; the audit log.

mod common;

use base64::Engine as _;
use common::clients::Clients;
use common::cosign::{self, Key, Scheme, VULN};
use common::TestRegistry;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey;

const VSA: &str = "https://slsa.dev/verification_summary/v1";

struct Setup {
    registry: TestRegistry,
    ci: Key,
    config_path: std::path::PathBuf,
    clients: Clients,
    _dir: tempfile::TempDir,
}

/// The embedded default's namespaces and gate, with the "ci" key in a temp dir.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    std::fs::write(dir.path().join("cosign.pub"), ci.public_pem()).unwrap();
    let text = portcullis::config::EMBEDDED_DEFAULT.replace("public_key = \"trust/cosign.pub\"", &format!("public_key = {:?}", dir.path().join("cosign.pub")));
    assert_ne!(text, portcullis::config::EMBEDDED_DEFAULT, "the default names trust/cosign.pub");
    let config_path = dir.path().join("portcullis.toml");
    std::fs::write(&config_path, &text).unwrap();
    let registry = TestRegistry::with_config_text(&text).await;
    Setup { registry, ci, config_path, clients: Clients::new(), _dir: dir }
}

impl Setup {
    /// skopeo copies a generated layout to `build/<repo>:v1`; returns its digest.
    async fn push_layout(&self, layout: &common::images::ImageLayout, repo: &str) -> String {
        let source = format!("oci:{}:{}", layout.path.display(), layout.tag);
        let dest = format!("docker://{}/{repo}:v1", self.registry.host);
        self.clients.skopeo("copy", &["--all", "--preserve-digests", "--dest-tls-verify=false", &source, &dest]).await.ok();
        layout.manifest_digest.clone()
    }

    async fn promote(&self, body: serde_json::Value) -> (u16, serde_json::Value) {
        let res = self.registry.client.post(self.registry.url("/api/v1/promotions")).json(&body).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        self.registry.client.get(self.registry.url(path)).send().await.unwrap().json().await.unwrap()
    }
}

/// The `source` of every piece of evidence a verdict's requirements used.
fn evidence_sources(verdict: &serde_json::Value) -> Vec<String> {
    let requirements = verdict["requirements"].as_array().unwrap().iter();
    requirements.flat_map(|r| r["evidence"].as_array().unwrap().iter().map(|fact| fact["source"].as_str().unwrap().to_owned())).collect()
}

/// Verifies a DSSE envelope with the PEM key, independently of the registry's code; returns the statement.
fn verify_dsse(envelope: &serde_json::Value, public_pem: &str) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload_type = envelope["payloadType"].as_str().unwrap();
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let sig = b64.decode(envelope["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    let mut pae = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    pae.extend_from_slice(&payload);
    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(public_pem).unwrap();
    key.verify(&pae, &p256::ecdsa::DerSignature::try_from(sig.as_slice()).unwrap()).expect("the VSA signature verifies");
    serde_json::from_slice(&payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_image_and_index_with_their_evidence() {
    let setup = setup().await;
    let layouts = tempfile::tempdir().unwrap();
    let image = common::images::multi_layer_image(&layouts.path().join("image"), "v1", 4, 11);
    let digest = setup.push_layout(&image, "build/app").await;
    // Evidence as OCI 1.1 referrers, the way cosign 2.x with referrers mode attaches it.
    cosign::sign_with(&setup.registry, "build/app", &digest, &setup.ci, Scheme::Referrer).await;
    let scan = cosign::trivy_predicate(&cosign::time_ago(600), &[("CVE-2026-0100", "HIGH", Some("2.0"))]);
    cosign::attest_with(&setup.registry, "build/app", &digest, &setup.ci, &[(VULN, scan)], Scheme::Referrer).await;
    let build_referrers = setup.get_json(&format!("/v2/build/app/referrers/{digest}")).await;
    assert_eq!(build_referrers["manifests"].as_array().unwrap().len(), 2);

    let (status, body) = setup.promote(serde_json::json!({"source": "build/app:v1", "target": "prod/app", "tags": ["v2.1"]})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["promotion"]["digest"], digest);
    assert_eq!(body["promotion"]["source"], "build/app:v1");
    // The verdict names each piece of evidence by how it is attached, and its layer.
    let referrers: Vec<String> = build_referrers["manifests"].as_array().unwrap().iter().map(|d| format!("referrer {} layer 0", d["digest"].as_str().unwrap())).collect();
    let sources = evidence_sources(&body["promotion"]["verdict"]);
    assert!(!sources.is_empty() && sources.iter().all(|s| referrers.contains(s)), "{sources:?} from {referrers:?}");

    // Pull from prod with skopeo, by tag and by digest: the digest is unchanged.
    for reference in [":v2.1".to_owned(), format!("@{digest}")] {
        let pulled = tempfile::tempdir().unwrap();
        let src = format!("docker://{}/prod/app{reference}", setup.registry.host);
        let dest = format!("oci:{}:pulled", pulled.path().display());
        setup.clients.skopeo("copy", &["--src-tls-verify=false", &src, &dest]).await.ok();
        assert_eq!(common::images::index_json_digest(pulled.path(), "pulled"), digest, "{reference}");
    }

    // Signature, scan and the registry's verification summary are referrers in prod.
    let prod_referrers = setup.get_json(&format!("/v2/prod/app/referrers/{digest}")).await;
    let listed: Vec<&str> = prod_referrers["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    for evidence in build_referrers["manifests"].as_array().unwrap() {
        assert!(listed.contains(&evidence["digest"].as_str().unwrap()), "{evidence} in {prod_referrers}");
    }
    let vsa_digest = body["promotion"]["vsa"].as_str().unwrap();
    assert!(listed.contains(&vsa_digest), "the VSA is a referrer: {prod_referrers}");

    // The VSA verifies against the registry's published key.
    let keys = setup.get_json("/api/v1/keys").await;
    let public_pem = keys["keys"][0]["public_key_pem"].as_str().unwrap();
    let vsa_manifest = setup.get_json(&format!("/v2/prod/app/manifests/{vsa_digest}")).await;
    assert_eq!(vsa_manifest["layers"][0]["annotations"]["predicateType"], VSA);
    let envelope_digest = vsa_manifest["layers"][0]["digest"].as_str().unwrap();
    let envelope = setup.get_json(&format!("/v2/prod/app/blobs/{envelope_digest}")).await;
    let statement = verify_dsse(&envelope, public_pem);
    assert_eq!(statement["predicateType"], VSA);
    assert_eq!(statement["subject"][0]["digest"]["sha256"], digest.trim_start_matches("sha256:"));
    assert_eq!(statement["predicate"]["verificationResult"], "PASSED");
    assert_eq!(statement["predicate"]["resourceUri"], format!("oci://prod/app@{digest}"));

    // A multi-platform index, with evidence in cosign's tag scheme.
    let index = common::images::multi_platform_index(&layouts.path().join("index"), "v1", 12);
    let index_digest = setup.push_layout(&index, "build/multi").await;
    cosign::sign(&setup.registry, "build/multi", &index_digest, &setup.ci).await;
    cosign::attest(&setup.registry, "build/multi", &index_digest, &setup.ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &[]))]).await;
    let (status, body) = setup.promote(serde_json::json!({"source": format!("build/multi@{index_digest}"), "target": "prod/multi", "tags": ["1.0"]})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["promotion"]["linked"]["manifests"], 3, "the index and its two children: {body}");
    let pulled = tempfile::tempdir().unwrap();
    let src = format!("docker://{}/prod/multi:1.0", setup.registry.host);
    let dest = format!("oci:{}:pulled", pulled.path().display());
    setup.clients.skopeo("copy", &["--all", "--preserve-digests", "--src-tls-verify=false", &src, &dest]).await.ok();
    assert_eq!(common::images::index_json_digest(pulled.path(), "pulled"), index_digest);
    let sig_tag = format!("sha256-{}.sig", &index_digest[7..]);
    let res = setup.registry.client.head(setup.registry.url(&format!("/v2/prod/multi/manifests/{sig_tag}"))).send().await.unwrap();
    assert_eq!(res.status(), 200, "cosign's .sig tag came along");

    let listed = setup.get_json("/api/v1/promotions?repository=prod/app").await;
    assert_eq!(listed["promotions"][0]["digest"], digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_conflicts_and_idempotence() {
    let setup = setup().await;
    let registry = &setup.registry;

    // Unsigned: 403 with the verdict; nothing appears in prod.
    let (unsigned, _) = registry.push_tiny_image("build/unsigned", "v1", "u").await;
    let (status, body) = setup.promote(serde_json::json!({"source": "build/unsigned:v1", "target": "prod/unsigned", "tags": ["v1"]})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("no signature from trusted identity 'ci'"), "{body}");
    assert_eq!(body["verdict"]["passed"], false);
    let res = registry.client.head(registry.url(&format!("/v2/prod/unsigned/manifests/{unsigned}"))).send().await.unwrap();
    assert_eq!(res.status(), 404);

    // Two signed images; the first takes prod/app:v1.
    let mut digests = Vec::new();
    for seed in ["a", "b"] {
        let repo = format!("build/app-{seed}");
        let (digest, _) = registry.push_tiny_image(&repo, "v1", seed).await;
        cosign::sign(registry, &repo, &digest, &setup.ci).await;
        cosign::attest(registry, &repo, &digest, &setup.ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &[]))]).await;
        digests.push(digest);
    }
    let promote_a = serde_json::json!({"source": "build/app-a:v1", "target": "prod/app", "tags": ["v1"]});
    let (status, dry_run) = setup.promote(serde_json::json!({"source": "build/app-a:v1", "target": "prod/app", "tags": ["v1"], "dry_run": true})).await;
    assert_eq!((status, &dry_run["promotion"]["result"]), (200, &serde_json::json!("dry_run")), "{dry_run}");
    let res = registry.client.head(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.status(), 404, "a dry run writes nothing");
    let (status, first) = setup.promote(promote_a.clone()).await;
    let hex = digests[0].trim_start_matches("sha256:");
    let tags = [format!("tag sha256-{hex}.sig layer 0"), format!("tag sha256-{hex}.att layer 0")];
    assert_eq!(evidence_sources(&first["promotion"]["verdict"]).into_iter().collect::<std::collections::BTreeSet<_>>(), tags.into_iter().collect(), "{first}");
    assert_eq!((status, &first["promotion"]["result"]), (201, &serde_json::json!("promoted")), "{first}");
    let (status, again) = setup.promote(promote_a).await;
    assert_eq!((status, &again["already_done"]), (200, &serde_json::json!(true)), "{again}");
    assert_eq!(again["promotion"]["result"], "promoted", "the stored record reads back: {again}");
    assert_eq!(again["promotion"]["time"], first["promotion"]["time"], "the existing record comes back");

    let (status, body) = setup.promote(serde_json::json!({"source": "build/app-b:v1", "target": "prod/app", "tags": ["v1"]})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errors"][0]["code"], "TAG_CONFLICT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains(&digests[0]), "{body}");
    let res = registry.client.head(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.headers()["docker-content-digest"], digests[0].as_str());

    // Content reaches prod only through promotion.
    let (_, manifest) = registry.push_tiny_image("build/direct", "v1", "d").await;
    let res = registry.put_manifest("prod/direct", "v1", common::OCI_MANIFEST, &manifest).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("only through promotion"));
}

// Regression: #13 (item 14). The registry's own API answered malformed requests with the OCI
// code UNSUPPORTED ("the operation is unsupported"); they are INVALID_REQUEST now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_api_errors_have_their_own_codes() {
    let registry = TestRegistry::start().await;
    registry.push_tiny_image("build/app", "v1", "codes").await;
    let promotion = |body: &str| registry.client.post(registry.url("/api/v1/promotions")).body(body.to_owned());
    let get = |path: &str| registry.client.get(registry.url(path));
    let huge = format!(r#"{{"source":"build/app:v1","target":"prod/app","tags":["{}"]}}"#, "v".repeat(64 << 10));
    let cases = [
        ("body is not JSON", promotion("{\"source\":"), 400, "INVALID_REQUEST"),
        ("unknown field", promotion(r#"{"source":"build/app:v1","target":"prod/app","force":true}"#), 400, "INVALID_REQUEST"),
        ("no target", promotion(r#"{"source":"build/app:v1"}"#), 400, "INVALID_REQUEST"),
        ("bad source name", promotion(r#"{"source":"Build/App:v1","target":"prod/app"}"#), 400, "INVALID_REQUEST"),
        ("bad target name", promotion(r#"{"source":"build/app:v1","target":"prod/_app"}"#), 400, "INVALID_REQUEST"),
        ("bad tag", promotion(r#"{"source":"build/app:v1","target":"prod/app","tags":["-v1"]}"#), 400, "INVALID_REQUEST"),
        ("body over 64 KiB", promotion(&huge), 400, "INVALID_REQUEST"),
        ("source that is not there", promotion(r#"{"source":"build/app:v9","target":"prod/app"}"#), 404, "MANIFEST_UNKNOWN"),
        ("listing without a repository", get("/api/v1/promotions"), 400, "INVALID_REQUEST"),
        ("listing of a bad name", get("/api/v1/promotions?repository=Prod"), 400, "INVALID_REQUEST"),
        ("verdict without an image", get("/api/v1/verdict"), 400, "INVALID_REQUEST"),
        ("verdict of a bad image", get("/api/v1/verdict?image=build/app:-v1"), 400, "INVALID_REQUEST"),
        ("verdict for a bad target", get("/api/v1/verdict?image=build/app:v1&target=Prod"), 400, "INVALID_REQUEST"),
        ("audit page of a bad size", get("/api/v1/audit?limit=many"), 400, "INVALID_REQUEST"),
        ("wrong method", registry.client.put(registry.url("/api/v1/promotions")), 405, "UNSUPPORTED"),
    ];
    for (what, request, status, code) in cases {
        let res = request.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{what}");
        assert_eq!(res.headers()["content-type"], "application/json", "{what}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{what}: {body}");
    }
    let res = registry.client.head(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.status(), 404, "nothing was promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_promote_and_audit_verify() {
    let setup = setup().await;
    let registry = &setup.registry;
    let (digest, _) = registry.push_tiny_image("build/cli", "v1", "cli").await;
    cosign::sign(registry, "build/cli", &digest, &setup.ci).await;
    cosign::attest(registry, "build/cli", &digest, &setup.ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &[]))]).await;
    registry.push_tiny_image("build/cli-unsigned", "v1", "x").await;

    let run = |args: Vec<String>| {
        common::portcullis_async(args)
    };
    let promote = |source: &str, tag: &str| {
        let args = ["promote", "--registry", &registry.base_url, source, "prod/cli", "--tag", tag].map(str::to_owned).to_vec();
        run(args)
    };
    let out = promote("build/cli:v1", "v1").await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("({digest}) promoted to prod/cli")));
    let out = promote("build/cli-unsigned:v1", "v2").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("denied"));
    let out = promote("build/absent:v1", "v3").await;
    assert_eq!(out.status.code(), Some(2));

    // Every decision is in the audit log, and an edited record is found.
    let audit = setup.get_json("/api/v1/audit?repository=prod/cli").await;
    let kinds: Vec<&str> = audit["records"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["promotion", "promotion_denied"], "{audit}");
    let verify = || {
        let args = ["audit", "verify", "--config", setup.config_path.to_str().unwrap(), "--data-dir", registry.data_dir.to_str().unwrap()];
        run(args.map(str::to_owned).to_vec())
    };
    let out = verify().await;
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact: 2 records"));

    let record = registry.data_dir.join("store/objects/audit/records/00000000000000000001");
    let text = std::fs::read_to_string(&record).unwrap().replace("\"actor\":\"anonymous\"", "\"actor\":\"mallory\"");
    std::fs::write(&record, text).unwrap();
    let out = verify().await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN at record 1"), "{}", String::from_utf8_lossy(&out.stdout));
}
