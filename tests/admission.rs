//! Kubernetes admission end to end: the corpus of `AdmissionReview` requests in
//! `tests/data/admission/` (one per kind, as the API server sends them) posted over mutual TLS to a
//! real server; each answer checked for its `uid`, `allowed`, `status.message`, and a JSON patch
//! that, applied with a JSON-patch library, yields the expected object. Drift end to end: admit an
//! image, attach a scan with a blocking finding (or reload without the signer's key), and see the
//! drift row, the audit record and the metrics. The printed webhook manifests are checked with the
//! Kubernetes Python client's model classes.

mod common;

use base64::Engine as _;
use common::cosign::{self, Key, VULN};
use common::pki::TestPki;
use common::{RegistryClient, TestRegistry};

/// The digests of the images the corpus names (`push_tiny_image` with seeds "app", "bad", "tool").
const APP: &str = "sha256:244d50a4c3565aabd5ddd05485bcad2ffb6a0d65275e288fb25d9ad1520689e8";
const BAD: &str = "sha256:1a9582cb6ba1477c4278f324fbc2c2122461a4fb3774967e055f01f808d959f0";
const TOOL: &str = "sha256:43ac492873dd31ea3ff19eb3d76f35939daa2a6cb7d233327af24334ec11da86";
/// The name of the test client certificate: the cluster in admission records.
const CLUSTER: &str = "admission-controller";

/// A TLS registry with `[admission]`, its key material, and the images the corpus names.
struct Setup {
    dir: tempfile::TempDir,
    pki: TestPki,
    ci: Key,
    registry: TestRegistry,
    /// HTTPS access trusting the test CA, without a client certificate.
    api: RegistryClient,
    /// HTTPS access with the client certificate, as the API server calls webhooks.
    webhook: RegistryClient,
}

/// The configuration: TLS with optional client certificates, `prod/**` gated (a signature and a
/// clean scan by "ci"), `build/**` not, and `[admission]` with `admission` appended.
fn config_text(dir: &std::path::Path, pki: &TestPki, admission: &str) -> String {
    format!(
        r#"
{tls}
[[trust.keys]]
name = "ci"
public_key = "{dir}/ci.pub"

[[namespaces]]
pattern = "prod/**"
[namespaces.gate]
signed_by = ["ci"]
[namespaces.gate.scan]
max_age = "7d"
block = ["critical-with-fix"]
signed_by = ["ci"]

[[namespaces]]
pattern = "**"

[admission]
hosts = ["registry.example.com", "registry.example.com:5443"]
allowed_registries = ["docker.io/library"]
exempt_namespaces = ["kube-system"]
{admission}
"#,
        tls = pki.server_tls_toml(),
        dir = dir.display(),
    )
}

impl Setup {
    async fn new() -> Setup {
        Setup::with("").await
    }

    /// [`Setup::new`] with `extra` after the `[admission]` keys.
    async fn with(extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::new(&dir.path().join("pki"), "admission");
        let ci = Key::generate();
        std::fs::write(dir.path().join("ci.pub"), ci.public_pem()).unwrap();
        let registry = TestRegistry::with_config_text(&config_text(dir.path(), &pki, extra)).await;
        let api = registry.with_client(pki.client(false));
        let webhook = registry.with_client(pki.client(true));
        let setup = Setup { dir, pki, ci, registry, api, webhook };
        setup.push_images().await;
        setup
    }

    /// prod/app:v1 signed with a clean scan, prod/bad:v1 unsigned, build/tool:v1 (ungated).
    async fn push_images(&self) {
        let (app, _) = self.api.push_tiny_image("prod/app", "v1", "app").await;
        let (bad, _) = self.api.push_tiny_image("prod/bad", "v1", "bad").await;
        let (tool, _) = self.api.push_tiny_image("build/tool", "v1", "tool").await;
        assert_eq!((app.as_str(), bad.as_str(), tool.as_str()), (APP, BAD, TOOL), "the corpus names these digests (tests/data/admission/make-corpus.py)");
        cosign::sign(&self.api, "prod/app", APP, &self.ci).await;
        cosign::attest(&self.api, "prod/app", APP, &self.ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(3600), &[]))]).await;
    }

    /// Applies `[admission]` with `admission` appended, as SIGHUP does.
    fn reload(&self, admission: &str) {
        let overrides = portcullis::config::Overrides { data_dir: Some(self.registry.data_dir.clone()), ..Default::default() };
        let mut config = portcullis::config::Config::parse(&config_text(self.dir.path(), &self.pki, admission), "reloaded", &overrides).unwrap();
        config.storage = self.registry.config.storage.clone();
        self.registry.reload(config).unwrap();
    }

    /// Posts `body` to `/admission/<webhook>` with the client certificate; the answer's response.
    async fn review(&self, webhook: &str, body: &[u8]) -> serde_json::Value {
        let res = self.webhook.client.post(self.webhook.url(&format!("/admission/{webhook}"))).body(body.to_vec()).send().await.unwrap();
        assert_eq!(res.status(), 200, "{webhook}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let answer: serde_json::Value = res.json().await.unwrap();
        assert_eq!((answer["apiVersion"].as_str(), answer["kind"].as_str()), (Some("admission.k8s.io/v1"), Some("AdmissionReview")));
        answer["response"].clone()
    }

    /// What a pull of `image` is refused with: the verdict's one line.
    async fn denied_pull(&self, repo: &str, reference: &str) -> String {
        let res = self.api.client.get(self.api.url(&format!("/v2/{repo}/manifests/{reference}"))).send().await.unwrap();
        assert_eq!(res.status(), 403, "{repo}:{reference} is refused");
        let body: serde_json::Value = res.json().await.unwrap();
        body["errors"][0]["message"].as_str().unwrap().to_owned()
    }

    async fn drift(&self) -> Vec<serde_json::Value> {
        let res = self.api.client.get(self.api.url("/api/v1/drift")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        body["drift"].as_array().unwrap().clone()
    }

    /// Waits (up to a minute) for the drift check to list a row.
    async fn drift_appears(&self) -> Vec<serde_json::Value> {
        for _ in 0..600 {
            let rows = self.drift().await;
            if !rows.is_empty() {
                return rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no drift row within a minute");
    }

    async fn metrics(&self) -> String {
        self.api.client.get(self.api.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

fn corpus(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission").join(file);
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The answer of the validating webhook: admitted, or refused with these lines.
enum Validated<'a> {
    Admitted,
    Refused(Vec<&'a str>),
}

#[tokio::test]
async fn the_corpus_is_pinned_and_judged() {
    let setup = Setup::new().await;
    let bad_by_tag = setup.denied_pull("prod/bad", "v1").await;
    let bad_by_digest = setup.denied_pull("prod/bad", BAD).await;
    assert!(bad_by_tag.starts_with(&format!("prod/bad@{BAD} denied: signature: no signature from trusted identity 'ci'")), "{bad_by_tag}");
    let refused_bad = format!("container app: {bad_by_tag}");
    let refused_legacy = format!("container legacy: {bad_by_digest}");
    let upper = format!("registry.example.com/prod/app@sha256:{}", APP.trim_start_matches("sha256:").to_uppercase());
    let refused_upper = format!("container db: {upper:?} is not a valid image reference: the digest is not sha256 with 64 lowercase hex digits (or sha512 with 128)");
    let refused_ghcr = "container agent: ghcr.io/acme/agent:2.1 comes from ghcr.io, which is not an allowed registry (registry.example.com, registry.example.com:5443, docker.io/library)";
    // (file, the image fields the mutating webhook pins and to which digest, the validating answer)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Validated<'a>);
    let cases: Vec<Case<'_>> = vec![
        ("pod-create.json", vec![("/spec/containers/0/image", APP), ("/spec/initContainers/0/image", TOOL)], Validated::Admitted),
        ("pod-ephemeral-update.json", vec![("/spec/ephemeralContainers/0/image", TOOL)], Validated::Admitted),
        ("deployment-create.json", vec![("/spec/template/spec/initContainers/0/image", TOOL)], Validated::Admitted),
        ("deployment-update.json", vec![("/spec/template/spec/containers/0/image", BAD)], Validated::Refused(vec![&refused_bad])),
        ("replicaset-create.json", vec![("/spec/template/spec/containers/0/image", APP)], Validated::Admitted),
        ("statefulset-create.json", vec![], Validated::Refused(vec![&refused_upper])),
        ("daemonset-create.json", vec![], Validated::Refused(vec![refused_ghcr])),
        ("daemonset-kube-system-create.json", vec![], Validated::Admitted),
        ("job-create-dryrun.json", vec![("/spec/template/spec/containers/0/image", APP)], Validated::Admitted),
        ("cronjob-create.json", vec![("/spec/jobTemplate/spec/template/spec/containers/0/image", APP)], Validated::Admitted),
        ("replicationcontroller-create.json", vec![], Validated::Refused(vec![&refused_legacy])),
    ];
    for (file, pins, validated) in &cases {
        let body = corpus(file);
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let uid = review["request"]["uid"].as_str().unwrap();

        let mutated = setup.review("mutate", &body).await;
        assert_eq!((mutated["uid"].as_str(), mutated["allowed"].as_bool()), (Some(uid), Some(true)), "{file}: mutate");
        let object = &review["request"]["object"];
        let mut expected = object.clone();
        for (pointer, digest) in pins {
            let image = expected.pointer_mut(pointer).unwrap_or_else(|| panic!("{file}: {pointer}"));
            *image = format!("{}@{digest}", image.as_str().unwrap()).into();
        }
        match mutated.get("patch") {
            None => assert!(pins.is_empty() && mutated.get("patchType").is_none(), "{file}: no patch in {mutated}"),
            Some(patch) => {
                assert_eq!(mutated["patchType"], "JSONPatch", "{file}");
                let patch = base64::engine::general_purpose::STANDARD.decode(patch.as_str().unwrap()).unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
                let mut patched = object.clone();
                json_patch::patch(&mut patched, &patch).unwrap_or_else(|err| panic!("{file}: the patch does not apply: {err}"));
                assert_eq!(patched, expected, "{file}: the patched object is the object with its images pinned, nothing else");
            }
        }

        let validated_answer = setup.review("validate", &body).await;
        assert_eq!(validated_answer["uid"].as_str(), Some(uid), "{file}: validate");
        match validated {
            Validated::Admitted => {
                assert_eq!(validated_answer["allowed"], true, "{file}: {validated_answer}");
                assert!(validated_answer.get("status").is_none(), "{file}: {validated_answer}");
            }
            Validated::Refused(lines) => {
                assert_eq!(validated_answer["allowed"], false, "{file}: {validated_answer}");
                assert_eq!(validated_answer["status"]["code"], 403, "{file}");
                let message = validated_answer["status"]["message"].as_str().unwrap();
                assert_eq!(message.lines().collect::<Vec<_>>(), *lines, "{file}");
            }
        }
    }

    // Remembered: the workloads admitted outside dry runs and not made by a controller that was
    // admitted itself; nothing refused or exempt.
    let cluster = hex::encode(CLUSTER);
    let expected: Vec<String> = ["shop/CronJob/nightly-report", "shop/Deployment/web", "shop/Pod/web-debug"]
        .iter()
        .map(|workload| format!("{cluster}/{workload}"))
        .collect();
    assert_eq!(setup.registry.stored_keys("admissions/").await, expected);
    let metrics = setup.metrics().await;
    for line in [
        r#"portcullis_admission_reviews_total{outcome="allowed",webhook="mutate"} 11"#,
        r#"portcullis_admission_reviews_total{outcome="allowed",webhook="validate"} 7"#,
        r#"portcullis_admission_reviews_total{outcome="refused",webhook="validate"} 4"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn audit_mode_admits_with_warnings_and_require_digest_refuses_tags() {
    let setup = Setup::new().await;
    let refusal = format!("container app: {}", setup.denied_pull("prod/bad", "v1").await);

    setup.reload("mode = \"audit\"");
    let answer = setup.review("validate", &corpus("deployment-update.json")).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(answer.get("status").is_none());
    assert_eq!(answer["warnings"], serde_json::json!([format!("audit mode, would be refused: {refusal}")]));

    setup.reload("require_digest = true");
    let answer = setup.review("validate", &corpus("pod-create.json")).await;
    assert_eq!(answer["allowed"], false);
    let message = answer["status"]["message"].as_str().unwrap();
    assert_eq!(
        message.lines().collect::<Vec<_>>(),
        [
            "container app: registry.example.com/prod/app:v1 is not pinned by digest (require_digest is on)",
            "container sidecar: docker.io/library/busybox:1.36 is not pinned by digest (require_digest is on)",
            "container migrate: registry.example.com:5443/build/tool:v1 is not pinned by digest (require_digest is on)",
        ]
    );
    // What the mutating webhook pinned passes.
    let mut review: serde_json::Value = serde_json::from_slice(&corpus("pod-create.json")).unwrap();
    review["request"]["object"]["spec"]["containers"][1]["image"] = format!("docker.io/library/busybox@{TOOL}").into();
    let pinned = setup.review("mutate", &serde_json::to_vec(&review).unwrap()).await;
    let patch = base64::engine::general_purpose::STANDARD.decode(pinned["patch"].as_str().unwrap()).unwrap();
    json_patch::patch(&mut review["request"]["object"], &serde_json::from_slice::<json_patch::Patch>(&patch).unwrap()).unwrap();
    let answer = setup.review("validate", &serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[tokio::test]
async fn webhooks_need_a_client_certificate_and_a_review() {
    let setup = Setup::new().await;
    let body = corpus("pod-create.json");
    // No client certificate: refused before anything is read.
    let res = setup.api.client.post(setup.api.url("/admission/validate")).body(body.clone()).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(common::error_code(res).await, "DENIED");
    let post = |path: &str, body: Vec<u8>| setup.webhook.client.post(setup.webhook.url(path)).body(body).send();
    let res = post("/admission/mutate", b"{\"kind\":".to_vec()).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(common::error_code(res).await, "INVALID_REQUEST");
    let v1beta1 = String::from_utf8(body.clone()).unwrap().replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
    let res = post("/admission/mutate", v1beta1.into_bytes()).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("admission.k8s.io/v1beta1"), "{body}");
    // A body over the bound is refused, not read whole.
    let res = post("/admission/validate", vec![b' '; 5 << 20]).await.unwrap();
    assert_eq!(res.status(), 400);
    let res = setup.webhook.client.get(setup.webhook.url("/admission/validate")).send().await.unwrap();
    assert_eq!(res.status(), 405);

    // Without [admission] the webhooks are not there.
    let text = config_text(setup.dir.path(), &setup.pki, "");
    let text = &text[..text.find("[admission]").unwrap()];
    let plain = TestRegistry::with_config_text(text).await;
    let res = plain.with_client(setup.pki.client(true)).client.post(plain.url("/admission/mutate")).body(corpus("pod-create.json")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

/// A Pod of `image`, as the API server sends its creation.
fn pod_of(image: &str) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(&corpus("pod-create.json")).unwrap();
    let spec = &mut review["request"]["object"]["spec"];
    spec["containers"] = serde_json::json!([{ "name": "app", "image": image }]);
    spec["initContainers"] = serde_json::json!([]);
    serde_json::to_vec(&review).unwrap()
}

/// An outsider's spellings of a refused image: each is refused, with the gate's reason where the
/// image is this registry's, in any container list; what a runtime reads as an allowed registry
/// is admitted however it is spelled.
#[tokio::test]
async fn no_spelling_of_an_image_gets_it_past_validation() {
    let setup = Setup::new().await;
    let denial = setup.denied_pull("prod/bad", "v1").await;
    let upper_hex = BAD.trim_start_matches("sha256:").to_uppercase();
    let cases: Vec<(String, &str, &str)> = vec![
        // (image, container list, what the refusal says)
        ("registry.example.com/prod/bad:v1".into(), "ephemeralContainers", denial.as_str()),
        ("registry.example.com/prod/bad:v1".into(), "initContainers", denial.as_str()),
        ("registry.example.com:443/prod/bad:v1".into(), "containers", denial.as_str()),
        ("REGISTRY.Example.COM/prod/bad:v1".into(), "containers", denial.as_str()),
        ("Registry.Example.Com:443/prod/bad:v1".into(), "ephemeralContainers", denial.as_str()),
        (format!("registry.example.com/prod/bad:v1@{APP}"), "containers", "is not in this registry, so nothing in it passed its gate"),
        (format!("registry.example.com/prod/app:v1@{BAD}"), "containers", "is not in this registry, so nothing in it passed its gate"),
        (format!("registry.example.com/prod/bad@sha256:{upper_hex}"), "containers", "the digest is not sha256"),
        ("registry.example.com/prod//bad:v1".into(), "containers", "the repository path"),
        ("registry.example.com/Prod/bad:v1".into(), "containers", "the repository path"),
        ("r\u{e9}gistry.example.com/prod/bad:v1".into(), "containers", "the registry host"),
        ("registry.example.com./prod/bad:v1".into(), "containers", "the registry host"),
        ("xn--rgistry-bva.example.com/prod/bad:v1".into(), "containers", "which is not an allowed registry"),
        ("registry.example.com:5444/prod/bad:v1".into(), "containers", "which is not an allowed registry"),
        ("index.docker.io/evil/busybox:1".into(), "containers", "which is not an allowed registry"),
    ];
    for (image, list, reason) in &cases {
        let mut review: serde_json::Value = serde_json::from_slice(&pod_of("registry.example.com/prod/app:v1")).unwrap();
        review["request"]["object"]["spec"][*list] = serde_json::json!([{ "name": "x", "image": image }]);
        let answer = setup.review("validate", &serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(answer["allowed"], false, "{image} in {list}: {answer}");
        let message = answer["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("container x: ") && message.contains(reason), "{image} in {list}: {message}");
    }
    // Docker Hub by its legacy name is Docker Hub, and its official images are below library/.
    for image in ["index.docker.io/busybox:1.36", "docker.io/busybox:1.36", "busybox:1.36"] {
        let answer = setup.review("validate", &pod_of(image)).await;
        assert_eq!(answer["allowed"], true, "{image}: {answer}");
    }
}

/// Images this registry mirrors are judged as a runtime's pull will be served: a mirrored name
/// (dockerd's default upstream) is looked up in the proxied repository it routes to, and a
/// proxied tag is read as the last pull left it, without asking the upstream: admission needs
/// no network, and answers while the upstream is down.
#[tokio::test]
async fn mirrored_images_are_judged_as_stored_without_asking_the_upstream() {
    let upstream = TestRegistry::start().await;
    let (digest, _) = upstream.push_tiny_image("team/app", "v1", "mirrored").await;
    let extra = format!("\n[[upstreams]]\nname = \"up\"\nurl = \"{}\"\ndefault = true\ntag_ttl = \"0s\"\n", upstream.base_url);
    let setup = Setup::with(&extra).await;
    let res = setup.api.client.get(setup.api.url("/v2/proxy/up/team/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.status(), 200, "pulled once through the proxy");
    let upstream_requests = |upstream: &TestRegistry| {
        let client = upstream.client.clone();
        let url = upstream.url("/metrics");
        async move {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            text.lines()
                .filter(|line| line.starts_with("portcullis_http_requests_total{") && line.contains("manifest"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    let before = upstream_requests(&upstream).await;
    for image in ["registry.example.com/proxy/up/team/app:v1", "registry.example.com/team/app:v1"] {
        let answer = setup.review("mutate", &pod_of(image)).await;
        let patch = base64::engine::general_purpose::STANDARD.decode(answer["patch"].as_str().unwrap_or_else(|| panic!("{image}: {answer}"))).unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(patch[0]["value"], format!("{image}@{digest}"), "{image}: pinned to the digest the tag was last seen at");
        let answer = setup.review("validate", &pod_of(image)).await;
        assert_eq!((answer["allowed"].as_bool(), answer.get("warnings")), (Some(true), None), "{image}: {answer}");
    }
    assert_eq!(upstream_requests(&upstream).await, before, "admission asked the upstream nothing");
    let rows: serde_json::Value = setup.api.client.get(setup.api.url("/api/v1/drift")).send().await.unwrap().json().await.unwrap();
    assert_eq!(rows["drift"], serde_json::json!([]));
}

/// Admits the Deployment of the corpus (and a dry run of a Job that uses the same image).
async fn admit(setup: &Setup) {
    for file in ["deployment-create.json", "job-create-dryrun.json"] {
        let answer = setup.review("validate", &corpus(file)).await;
        assert_eq!(answer["allowed"], true, "{file}: {answer}");
    }
    assert!(setup.drift().await.is_empty());
}

/// The drift row of prod/app: the Deployment runs it; the dry-run Job runs nowhere.
fn check_row(rows: &[serde_json::Value], expected_summary_part: &str) -> String {
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((row["repository"].as_str(), row["digest"].as_str()), (Some("prod/app"), Some(APP)));
    assert_eq!(row["workloads"], serde_json::json!([{ "cluster": CLUSTER, "namespace": "shop", "kind": "Deployment", "name": "web" }]));
    let summary = row["summary"].as_str().unwrap().to_owned();
    assert!(summary.starts_with(&format!("prod/app@{APP} denied: ")) && summary.contains(expected_summary_part), "{summary}");
    summary
}

#[tokio::test]
async fn a_blocking_scan_attached_after_admission_is_drift() {
    let setup = Setup::new().await;
    admit(&setup).await;

    // A new scan finds a critical vulnerability with a fix: the image fails prod's gate now.
    let findings = [("CVE-2026-0042", "CRITICAL", Some("3.0.14"))];
    cosign::attest(&setup.api, "prod/app", APP, &setup.ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(0), &findings))]).await;
    let rows = setup.drift_appears().await;
    let summary = check_row(&rows, "CVE-2026-0042 (Critical in openssl, fixed in 3.0.14)");
    assert_eq!(summary, setup.denied_pull("prod/app", "v1").await, "the row says what a pull is refused with");

    // The row is written first (create-only, so one replica wins), then the record and the gauge:
    // wait for the pass to end.
    let mut audit = serde_json::Value::Null;
    for _ in 0..600 {
        let res = setup.api.client.get(setup.api.url("/api/v1/audit?kind=admission_drift")).send().await.unwrap();
        audit = res.json().await.unwrap();
        if !audit["records"].as_array().unwrap().is_empty() && setup.metrics().await.lines().any(|l| l == "portcullis_admission_drift_digests 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{audit}");
    assert_eq!((records[0]["repository"].as_str(), records[0]["digest"].as_str()), (Some("prod/app"), Some(APP)));
    assert_eq!(records[0]["detail"]["summary"], summary.as_str());
    assert_eq!(records[0]["detail"]["workloads"], rows[0]["workloads"]);
    let metrics = setup.metrics().await;
    assert!(metrics.lines().any(|l| l == "portcullis_admission_drift_digests 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "portcullis_admission_drift_detected_total 1"), "{metrics}");

    // What drifted is not admitted again.
    let answer = setup.review("validate", &corpus("deployment-create.json")).await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["status"]["message"].as_str(), Some(format!("container app: {summary}").as_str()));

    // A fixed image, scanned clean again: the row goes.
    cosign::attest(&setup.api, "prod/app", APP, &setup.ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(0), &[]))]).await;
    for _ in 0..600 {
        if setup.drift().await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(setup.drift().await.is_empty(), "the row goes when the digest passes again");
    let audit: serde_json::Value = setup.api.client.get(setup.api.url("/api/v1/audit?kind=admission_drift")).send().await.unwrap().json().await.unwrap();
    assert_eq!(audit["records"].as_array().unwrap().len(), 1, "one drift, one record");
}

#[tokio::test]
async fn a_signer_removed_from_trust_on_reload_is_drift() {
    let setup = Setup::new().await;
    admit(&setup).await;
    // "ci" now names another key: the image's signature and scan no longer verify.
    std::fs::write(setup.dir.path().join("ci.pub"), Key::generate().public_pem()).unwrap();
    setup.reload("");
    let rows = setup.drift_appears().await;
    check_row(&rows, "signature: no signature from trusted identity 'ci'");
}

/// A pass that created a drift row and stopped before its audit record (killed, or the append
/// failed) leaves the row unaudited: the next pass writes the record, once.
#[tokio::test]
async fn a_drift_row_left_without_its_record_is_recorded_by_the_next_pass() {
    let setup = Setup::new().await;
    // Let the passes that setting up prompted end (nothing prompts another until the reload).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    // What the stopped pass left: the row of prod/bad (unsigned: it fails), created, not yet
    // audited; then where it runs (the row first: a pass that saw the record without the row
    // would make a row of its own).
    let workload = serde_json::json!({ "cluster": CLUSTER, "namespace": "shop", "kind": "Deployment", "name": "legacy" });
    let row = serde_json::json!({
        "repository": "prod/bad", "digest": BAD, "since": 0, "summary": "left by a stopped pass",
        "workloads": [workload], "audited": false,
    });
    let admitted = serde_json::json!({
        "workload": workload, "since": 0,
        "images": [{ "image": "registry.example.com/prod/bad:v1", "repository": "prod/bad", "digest": BAD }],
    });
    let row_key = format!("drift/prod/bad/_digests/{}", BAD.trim_start_matches("sha256:"));
    let store = setup.registry.store().await;
    for (key, value) in [(row_key.clone(), row), (format!("admissions/{}/shop/Deployment/legacy", hex::encode(CLUSTER)), admitted)] {
        store.put_small(&key, serde_json::to_vec(&value).unwrap().into(), storage::PutCondition::Always).await.unwrap();
    }
    setup.reload("");
    let stored = || async { store.get_small(&row_key, 64 << 10).await.unwrap().map(|got| serde_json::from_slice::<serde_json::Value>(&got.bytes).unwrap()) };
    let audit = || async {
        let audit: serde_json::Value = setup.api.client.get(setup.api.url("/api/v1/audit?kind=admission_drift")).send().await.unwrap().json().await.unwrap();
        audit["records"].as_array().unwrap().clone()
    };
    for _ in 0..600 {
        if !audit().await.is_empty() && stored().await.is_some_and(|row| row["audited"] == true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let records = audit().await;
    assert_eq!(records.len(), 1, "the drift is recorded: {records:?}");
    assert_eq!((records[0]["repository"].as_str(), records[0]["digest"].as_str()), (Some("prod/bad"), Some(BAD)));
    assert!(records[0]["detail"]["summary"].as_str().unwrap().contains("no signature from trusted identity 'ci'"), "{:?}", records[0]);
    assert_eq!(stored().await.map(|row| row["audited"].clone()), Some(serde_json::Value::Bool(true)), "marked, so no later pass writes it again");
}

/// Nothing happens, time passes: the scan an admitted image was judged on expires (`max_age`),
/// and the periodic check (`revalidate_every`, its minimum of one minute here) finds the
/// digest failing without any reload or new evidence to prompt it.
#[tokio::test]
async fn a_scan_that_expires_is_drift_at_the_next_periodic_check() {
    let setup = Setup::with("revalidate_every = \"1m\"").await;
    let (digest, _) = setup.api.push_tiny_image("prod/expiring", "v1", "expiring").await;
    cosign::sign(&setup.api, "prod/expiring", &digest, &setup.ci).await;
    // Valid for a few more seconds: 7 days (the gate's max_age) less 5 s.
    let scan = cosign::trivy_predicate(&cosign::time_ago(7 * 86_400 - 5), &[]);
    cosign::attest(&setup.api, "prod/expiring", &digest, &setup.ci, &[(VULN, scan)]).await;
    let answer = setup.review("validate", &pod_of("registry.example.com/prod/expiring:v1")).await;
    assert_eq!(answer["allowed"], true, "passes while the scan is fresh: {answer}");
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    while rows.is_empty() && started.elapsed() < std::time::Duration::from_secs(180) {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        rows = setup.drift().await;
    }
    assert_eq!(rows.len(), 1, "no drift row within three minutes");
    assert_eq!((rows[0]["repository"].as_str(), rows[0]["digest"].as_str()), (Some("prod/expiring"), Some(digest.as_str())));
    let summary = rows[0]["summary"].as_str().unwrap();
    assert!(summary.contains("scan") && summary.contains("older than"), "{summary}");
    let refused = setup.denied_pull("prod/expiring", "v1").await;
    assert!(refused.contains("older than the allowed 604800s"), "a pull is refused for the same reason: {refused}");
}

/// The Kubernetes Python client's interpreter, installed by scripts/test into .test-tools/; when
/// it is missing the check is skipped with a notice (under CI it fails instead).
fn kubernetes_python() -> Option<std::path::PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-tools/kubernetes/bin/python");
    let works = std::process::Command::new(&python).args(["-c", "import kubernetes"]).output().is_ok_and(|out| out.status.success());
    if works {
        return Some(python);
    }
    assert!(std::env::var_os("CI").is_none(), "the kubernetes Python client is not installed in .test-tools/kubernetes (scripts/test installs it)");
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: the kubernetes Python client is not installed (scripts/test installs it into .test-tools/)");
    None
}

#[test]
fn the_printed_manifests_are_valid_kubernetes_objects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "cluster");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, "[admission]\nhosts = [\"registry.example.com\"]\nexempt_namespaces = [\"kube-system\", \"cert-manager\"]\nexempt_labels = { \"portcullis.dev/admission\" = \"skip\" }\n").unwrap();
    let ca = pki.dir.join("ca.crt");
    let args = ["admission", "manifests", "--service", "portcullis", "--namespace", "registry", "--ca-bundle", ca.to_str().unwrap(), "--config", config.to_str().unwrap()];
    let out = common::portcullis(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((list["apiVersion"].as_str(), list["kind"].as_str()), (Some("v1"), Some("List")));
    let kinds: Vec<&str> = list["items"].as_array().unwrap().iter().map(|item| item["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Deployment", "Service"]);
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&pki.ca_pem);
    let webhooks: Vec<&serde_json::Value> = list["items"].as_array().unwrap()[..2].iter().flat_map(|config| config["webhooks"].as_array().unwrap()).collect();
    assert_eq!(webhooks.len(), 3);
    for webhook in &webhooks {
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(webhook["admissionReviewVersions"], serde_json::json!(["v1"]));
        assert_eq!(webhook["timeoutSeconds"], 5);
        assert_eq!(webhook["clientConfig"]["caBundle"], ca_bundle.as_str());
        assert_eq!(webhook["clientConfig"]["service"]["namespace"], "registry");
        assert_eq!(
            webhook["namespaceSelector"]["matchExpressions"],
            serde_json::json!([
                { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["cert-manager", "kube-system", "registry"] },
                { "key": "portcullis.dev/admission", "operator": "NotIn", "values": ["skip"] },
            ])
        );
    }
    let policies: Vec<&str> = webhooks.iter().map(|webhook| webhook["failurePolicy"].as_str().unwrap()).collect();
    assert_eq!(policies, ["Fail", "Fail", "Ignore"], "admission fails closed; forgetting a deleted workload never blocks the delete");

    let Some(python) = kubernetes_python() else { return };
    let checker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/admission/check-manifests.py");
    let mut child = std::process::Command::new(python)
        .arg(checker)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let checked = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success(), "{report}");
    assert_eq!(report.trim(), "4 objects are valid Kubernetes objects");
}

/// Garbage collection never takes an image from under a cluster: with retention that removes
/// every tag and every untagged manifest of `prod/`, the digest the admitted Deployment runs
/// stays whole (with its signature and scan), while an image no workload runs goes.
#[tokio::test]
async fn collection_keeps_what_admitted_workloads_run() {
    let setup = Setup::new().await;
    admit(&setup).await;
    let gc = "\n[gc]\nevery = \"never\"\ngrace = \"2s\"\nlease = \"3s\"\n";
    let text = config_text(setup.dir.path(), &setup.pki, gc).replace("pattern = \"prod/**\"\n", "pattern = \"prod/**\"\n[namespaces.retention]\nuntagged = \"0s\"\nkeep_last = 0\n");
    let overrides = portcullis::config::Overrides { data_dir: Some(setup.registry.data_dir.clone()), ..Default::default() };
    let mut config = portcullis::config::Config::parse(&text, "with retention", &overrides).unwrap();
    config.storage = setup.registry.config.storage.clone();
    setup.registry.reload(config).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;

    let report = portcullis::gc::run(setup.registry.registry(), &portcullis::gc::Options::default()).await.unwrap();
    let removed: Vec<&str> = report.removed.iter().map(|victim| victim.key.as_str()).collect();
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
    assert!(removed.contains(&"repositories/prod/app/_tags/v1"), "retention removed the tag: {removed:?}");
    assert!(removed.contains(&format!("repositories/prod/bad/_manifests/sha256/{}", hex(BAD)).as_str()), "what nothing runs goes: {removed:?}");
    assert!(!removed.iter().any(|key| key.contains(&hex(APP))), "nothing of the admitted digest goes: {removed:?}");
    // The admitted digest pulls whole, gate and all, every digest verifying.
    let res = setup.api.client.get(setup.api.url(&format!("/v2/prod/app/manifests/{APP}"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let manifest: serde_json::Value = res.json().await.unwrap();
    for blob in [&manifest["config"], &manifest["layers"][0]] {
        let digest = blob["digest"].as_str().unwrap();
        let bytes = setup.api.client.get(setup.api.url(&format!("/v2/prod/app/blobs/{digest}"))).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(common::sha256(&bytes), digest);
    }
    let res = setup.api.client.get(setup.api.url(&format!("/v2/prod/bad/manifests/{BAD}"))).send().await.unwrap();
    assert_eq!(res.status(), 404);
}
