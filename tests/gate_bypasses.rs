//! The gate bypasses of issue #13, replayed as the attacks that found them: a build pusher (or a
//! reader) trying to make a gated namespace serve something runnable that did not pass its own
//! gate, or to take away what a promoted image needs. Real keys in cosign's format, the shipped
//! default's `prod/**` rules, skopeo where a client's view matters.

mod common;

use common::clients::Clients;
use common::cosign::{self, Key, VULN};
use common::{sha256, tiny_manifest, RegistryClient, TestRegistry, OCI_INDEX, OCI_MANIFEST};

/// A gated namespace that takes pushes (prod/** takes only promotions), for the serving rule.
const GATED: &str = r#"
[[namespaces]]
pattern = "gated/**"
tags = "mutable"
[namespaces.gate]
mode = "enforce"
signed_by = ["ci"]

"#;

struct Setup {
    registry: TestRegistry,
    ci: Key,
    _dir: tempfile::TempDir,
}

/// The embedded default, trusting a "ci" key made here, with `gated/**` before its last rule and
/// `extra` TOML at the end.
fn config_text(dir: &std::path::Path, ci: &Key, extra: &str) -> String {
    std::fs::write(dir.join("ci.pub"), ci.public_pem()).unwrap();
    let default = portcullis::config::EMBEDDED_DEFAULT;
    let text = default
        .replace("public_key = \"trust/cosign.pub\"", &format!("public_key = {:?}", dir.join("ci.pub")))
        .replace("# Everything else: ordinary mutable tags.", &format!("{GATED}# Everything else: ordinary mutable tags."));
    assert_eq!(text.matches("ci.pub").count() + text.matches("gated/**").count(), 2, "the default changed shape");
    format!("{text}\n{extra}")
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    let registry = TestRegistry::with_config_text(&config_text(dir.path(), &ci, "")).await;
    Setup { registry, ci, _dir: dir }
}

/// Pushes a tiny image to `repo:tag`, signed by `key` with a passing scan; returns its digest.
async fn signed_image(api: &RegistryClient, repo: &str, tag: &str, key: &Key) -> String {
    let (digest, _) = api.push_tiny_image(repo, tag, &format!("{repo}:{tag}")).await;
    cosign::sign(api, repo, &digest, key).await;
    let scan = cosign::trivy_predicate(&cosign::time_ago(60), &[]);
    cosign::attest(api, repo, &digest, key, &[(VULN, scan)]).await;
    digest
}

/// The size and media type a HEAD reports for `digest`, to describe it as a `subject`.
async fn descriptor_of(api: &RegistryClient, repo: &str, digest: &str) -> (String, usize) {
    let res = api.client.head(api.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
    assert_eq!(res.status(), 200, "HEAD {repo}@{digest}");
    let size = res.headers()["content-length"].to_str().unwrap().parse().unwrap();
    (res.headers()["content-type"].to_str().unwrap().to_owned(), size)
}

/// Pushes an ordinary, unsigned, runnable image whose `subject` is `subject`; returns its digest
/// and size.
async fn runnable_referrer(api: &RegistryClient, repo: &str, subject: &str, seed: &str) -> (String, usize) {
    let (_, subject_size) = descriptor_of(api, repo, subject).await;
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
    let layer = format!("attacker's filesystem {seed}");
    let config_digest = api.push_blob(repo, config.as_bytes()).await;
    let layer_digest = api.push_blob(repo, layer.as_bytes()).await;
    let manifest = tiny_manifest(&config_digest, config.len(), &layer_digest, layer.len(), Some((subject, subject_size)));
    (push_by_digest(api, repo, OCI_MANIFEST, manifest.as_bytes()).await, manifest.len())
}

/// Pushes an index listing `children` (digest, size) with `subject`; returns its digest.
async fn index_referrer(api: &RegistryClient, repo: &str, children: &[(String, usize)], subject: &str) -> String {
    let (subject_type, subject_size) = descriptor_of(api, repo, subject).await;
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, size)| serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": { "os": "linux", "architecture": "amd64" } }))
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
        "subject": { "mediaType": subject_type, "digest": subject, "size": subject_size },
    });
    push_by_digest(api, repo, OCI_INDEX, &serde_json::to_vec(&index).unwrap()).await
}

async fn push_by_digest(api: &RegistryClient, repo: &str, media_type: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let res = api.put_manifest(repo, &digest, media_type, bytes).await;
    assert_eq!(res.status(), 201, "push {repo}@{digest}: {}", res.text().await.unwrap_or_default());
    digest
}

async fn status_of(api: &RegistryClient, method: reqwest::Method, path: &str) -> (u16, String) {
    let res = api.client.request(method, api.url(path)).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

async fn promote(api: &RegistryClient, body: serde_json::Value) -> (u16, serde_json::Value) {
    let res = api.client.post(api.url("/api/v1/promotions")).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

/// skopeo copies `image` from the registry into an OCI layout in `dir`.
async fn skopeo_copy(clients: &Clients, host: &str, image: &str, dir: &std::path::Path) -> common::clients::Run {
    let src = format!("docker://{host}/{image}");
    let dest = format!("oci:{}:pulled", dir.display());
    clients.skopeo("copy", &["--src-tls-verify=false", &src, &dest]).await
}

// Regression: #13 (1). A `subject` does not make a manifest evidence: served in a gated namespace
// only if no runtime could run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runnable_manifest_with_a_subject_is_gated() {
    let Setup { registry, ci, .. } = setup().await;
    let repo = "gated/app";
    let signed = signed_image(&registry, repo, "v1", &ci).await;
    let (image, image_size) = runnable_referrer(&registry, repo, &signed, "image").await;
    let index = index_referrer(&registry, repo, &[(image.clone(), image_size)], &signed).await;

    for (what, digest) in [("image", &image), ("index", &index)] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let (status, body) = status_of(&registry, method.clone(), &format!("/v2/{repo}/manifests/{digest}")).await;
            assert_eq!(status, 403, "{method} {what} with a subject: {body}");
            if method == reqwest::Method::GET {
                assert!(body.contains("DENIED") && body.contains("signature"), "{body}");
            }
        }
    }
    // An evidence-typed layer that holds a gzip stream (a tar a runtime could unpack) is not evidence.
    let disguised = disguised_signature(&registry, repo, &signed).await;
    let (status, body) = status_of(&registry, reqwest::Method::GET, &format!("/v2/{repo}/manifests/{disguised}")).await;
    assert_eq!(status, 403, "a tarball typed as a signature: {body}");
    // Real evidence stays pullable, so clients can verify it.
    let sig_tag = format!("sha256-{}.sig", signed.trim_start_matches("sha256:"));
    let (status, body) = status_of(&registry, reqwest::Method::GET, &format!("/v2/{repo}/manifests/{sig_tag}")).await;
    assert_eq!(status, 200, "the signature itself: {body}");
    let (status, _) = status_of(&registry, reqwest::Method::GET, &format!("/v2/{repo}/manifests/{signed}")).await;
    assert_eq!(status, 200, "the signed image");

    let clients = Clients::new();
    let pulled = tempfile::tempdir().unwrap();
    let run = skopeo_copy(&clients, &registry.host, &format!("{repo}@{image}"), pulled.path()).await;
    assert!(!run.status.success(), "skopeo pulled the unsigned referrer: {}", run.stderr);
}

/// A signature-shaped manifest about `subject` whose one "simple-signing" layer is a gzip stream.
async fn disguised_signature(api: &RegistryClient, repo: &str, subject: &str) -> String {
    let (subject_type, subject_size) = descriptor_of(api, repo, subject).await;
    let gzip_magic = [0x1f_u8, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4b, 0x04, 0x00];
    let layer_digest = api.push_blob(repo, &gzip_magic).await;
    let config = br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = api.push_blob(repo, config).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": layer_digest, "size": gzip_magic.len() }],
        "subject": { "mediaType": subject_type, "digest": subject, "size": subject_size },
    });
    push_by_digest(api, repo, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap()).await
}

// Regression: #13 (1). Promotion carries only what no runtime could run: a runnable referrer of
// the promoted image stays behind, named in the record, and prod never serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_leaves_runnable_referrers_behind() {
    let Setup { registry, ci, .. } = setup().await;
    let signed = signed_image(&registry, "build/app", "v1", &ci).await;
    let (image, image_size) = runnable_referrer(&registry, "build/app", &signed, "image").await;
    let index = index_referrer(&registry, "build/app", &[(image.clone(), image_size)], &signed).await;

    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v1", "target": "prod/app", "tags": ["v1"] })).await;
    assert_eq!(status, 201, "{body}");
    let left: Vec<&str> = body["promotion"]["left_behind"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert!(left.contains(&image.as_str()) && left.contains(&index.as_str()), "{body}");
    for left in body["promotion"]["left_behind"].as_array().unwrap() {
        assert_eq!(left["found_as"], format!("referrer {}", left["digest"].as_str().unwrap()), "{body}");
    }
    for digest in [&image, &index] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let (status, body) = status_of(&registry, method.clone(), &format!("/v2/prod/app/manifests/{digest}")).await;
            assert_eq!(status, 404, "{method} prod/app@{digest}: {body}");
        }
    }
    let referrers: serde_json::Value =
        registry.client.get(registry.url(&format!("/v2/prod/app/referrers/{signed}"))).send().await.unwrap().json().await.unwrap();
    let listed: Vec<&str> = referrers["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap()).collect();
    assert!(!listed.contains(&image.as_str()) && !listed.contains(&index.as_str()), "{referrers}");

    let clients = Clients::new();
    let pulled = tempfile::tempdir().unwrap();
    let run = skopeo_copy(&clients, &registry.host, &format!("prod/app@{image}"), pulled.path()).await;
    assert!(!run.status.success(), "skopeo pulled the left-behind referrer from prod");
    skopeo_copy(&clients, &registry.host, "prod/app:v1", pulled.path()).await.ok();
}

// Regression: #13 (2). One digest, one media type: an ambiguous document is refused, and bytes
// stored as one type are never stored as another, in any repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_digest_has_one_media_type() {
    let registry = TestRegistry::start().await;
    let api: &RegistryClient = &registry;
    let config = api.push_blob("build/a", br#"{"os":"linux"}"#).await;
    let layer = api.push_blob("build/a", b"layer").await;
    let child = tiny_manifest(&config, 14, &layer, 5, None);
    let child_digest = push_by_digest(api, "build/a", OCI_MANIFEST, child.as_bytes()).await;
    // config, layers and manifests, no mediaType: both a manifest and an index.
    let ambiguous = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":14}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":5}}],"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child_digest}","size":{}}}]}}"#,
        child.len()
    );
    for media_type in [OCI_MANIFEST, OCI_INDEX] {
        let res = api.put_manifest("build/a", "v1", media_type, ambiguous.as_bytes()).await;
        assert_eq!(res.status(), 400, "ambiguous document as {media_type}");
        assert_eq!(common::error_code(res).await, "MANIFEST_INVALID");
    }
    // A body mediaType must agree with Content-Type.
    let res = api.put_manifest("build/a", "v1", "application/vnd.docker.distribution.manifest.v2+json", child.as_bytes()).await;
    assert_eq!((res.status().as_u16(), common::error_code(res).await.as_str()), (400, "MANIFEST_INVALID"));
    // No mediaType in the body: the first push decides the type, forever and everywhere.
    let untyped = child.replacen(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "", 1);
    assert!(!untyped.contains(OCI_MANIFEST), "{untyped}");
    let untyped_digest = push_by_digest(api, "build/a", OCI_MANIFEST, untyped.as_bytes()).await;
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    api.push_blob("build/b", br#"{"os":"linux"}"#).await;
    api.push_blob("build/b", b"layer").await;
    for repo in ["build/a", "build/b"] {
        let res = api.put_manifest(repo, "v2", docker, untyped.as_bytes()).await;
        assert_eq!(res.status(), 400, "re-typing {untyped_digest} in {repo}");
        assert_eq!(common::error_code(res).await, "MANIFEST_INVALID");
    }
    let res = api.client.get(api.url(&format!("/v2/build/a/manifests/{untyped_digest}"))).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], OCI_MANIFEST);
}

// Regression: #13 (3). A protected namespace keeps what its promoted images need, and every
// delete anywhere is an audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_namespaces_keep_their_content() {
    let Setup { registry, ci, .. } = setup().await;
    let signed = signed_image(&registry, "build/app", "v1", &ci).await;
    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v1", "target": "prod/app", "tags": ["v1"] })).await;
    assert_eq!(status, 201, "{body}");
    let hex = signed.trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        registry.client.get(registry.url("/v2/prod/app/manifests/v1")).send().await.unwrap().json().await.unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let vsa = body["promotion"]["vsa"].as_str().unwrap();
    for path in [
        format!("/v2/prod/app/manifests/sha256-{hex}.sig"),
        format!("/v2/prod/app/manifests/sha256-{hex}.att"),
        format!("/v2/prod/app/manifests/{vsa}"),
        format!("/v2/prod/app/blobs/{layer}"),
    ] {
        let (status, body) = status_of(&registry, reqwest::Method::DELETE, &path).await;
        assert_eq!(status, 403, "DELETE {path}: {body}");
        assert!(body.contains("DENIED") && body.contains("prod/**"), "DELETE {path}: {body}");
    }
    let (status, body) = status_of(&registry, reqwest::Method::GET, "/v2/prod/app/manifests/v1").await;
    assert_eq!(status, 200, "the promoted image still passes its gate: {body}");
    let (status, _) = status_of(&registry, reqwest::Method::GET, &format!("/v2/prod/app/blobs/{layer}")).await;
    assert_eq!(status, 200);

    // Deletes where they are allowed are recorded: who, what, digest.
    for path in ["/v2/build/app/manifests/v1".to_owned(), format!("/v2/build/app/blobs/{layer}"), format!("/v2/build/app/manifests/{signed}")] {
        let (status, body) = status_of(&registry, reqwest::Method::DELETE, &path).await;
        assert_eq!(status, 202, "DELETE {path}: {body}");
    }
    let audit: serde_json::Value =
        registry.client.get(registry.url("/api/v1/audit?repository=build/app")).send().await.unwrap().json().await.unwrap();
    let records = audit["records"].as_array().unwrap_or_else(|| panic!("{audit}"));
    for (kind, digest) in [("delete_tag", signed.as_str()), ("delete_blob", layer), ("delete_manifest", signed.as_str())] {
        assert!(
            records.iter().any(|r| r["kind"] == kind && r["digest"] == digest && r["actor"].is_string()),
            "no {kind} record for {digest}: {audit}"
        );
    }
}

// Regression: #13 (5). cosign's tag names belong to the digests they name: the promotion API
// refuses them as targets, and look-alikes are ordinary immutable prod tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_tag_names_are_not_promotion_tags() {
    let Setup { registry, ci, .. } = setup().await;
    let victim = signed_image(&registry, "build/app", "v1", &ci).await;
    let attacker = signed_image(&registry, "build/app", "v2", &ci).await;
    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v1", "target": "prod/app", "tags": ["v1"] })).await;
    assert_eq!(status, 201, "{body}");
    let victim_sig = format!("sha256-{}.sig", victim.trim_start_matches("sha256:"));
    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v2", "target": "prod/app", "tags": [victim_sig] })).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (400, Some("INVALID_REQUEST")), "{body}");
    let res = registry.client.get(registry.url(&format!("/v2/prod/app/manifests/{victim_sig}"))).send().await.unwrap();
    let sig: serde_json::Value = res.json().await.unwrap();
    assert_eq!(sig["layers"].as_array().unwrap().len(), 1, "the victim's signature tag is unchanged: {sig}");

    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v2", "target": "prod/app", "tags": ["sha256-x.sig"] })).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v1", "target": "prod/app", "tags": ["sha256-x.sig"] })).await;
    assert_eq!((status, body["errors"][0]["code"].as_str()), (409, Some("TAG_CONFLICT")), "a look-alike prod tag does not move: {body}");
    let res = registry.client.head(registry.url("/v2/prod/app/manifests/sha256-x.sig")).send().await.unwrap();
    assert_eq!(res.headers()["docker-content-digest"], attacker.as_str());
}

// Regression: #13 (6). A promotion reads its source under the source's gate, as a pull would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_reads_its_source_through_the_gate() {
    let Setup { registry, .. } = setup().await;
    let (unsigned, _) = registry.push_tiny_image("gated/app", "v1", "unsigned").await;
    let (status, _) = status_of(&registry, reqwest::Method::GET, "/v2/gated/app/manifests/v1").await;
    assert_eq!(status, 403, "gated/ refuses the unsigned image");
    for source in ["gated/app:v1".to_owned(), format!("gated/app@{unsigned}")] {
        let (status, body) = promote(&registry, serde_json::json!({ "source": source, "target": "open/app", "tags": ["v1"] })).await;
        assert_eq!(status, 403, "{source} promoted out of its gate: {body}");
        assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    }
    let (status, _) = status_of(&registry, reqwest::Method::GET, &format!("/v2/open/app/manifests/{unsigned}")).await;
    assert_eq!(status, 404, "nothing was linked into open/app");
}

// Regression: #13 (8). The registry signs a verification summary only of a policy it evaluated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_verification_summary_without_a_policy() {
    let registry = TestRegistry::start().await;
    let (digest, _) = registry.push_tiny_image("build/app", "v1", "unsigned").await;
    let (status, body) = promote(&registry, serde_json::json!({ "source": "build/app:v1", "target": "open/app", "tags": ["v1"] })).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["promotion"]["vsa"].is_null(), "{body}");
    assert!(body["promotion"]["vsa_skipped"].as_str().is_some_and(|why| why.contains("not gated")), "{body}");
    let referrers: serde_json::Value =
        registry.client.get(registry.url(&format!("/v2/open/app/referrers/{digest}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 0, "{referrers}");
    let (status, _) = status_of(&registry, reqwest::Method::GET, &format!("/v2/open/app/manifests/sha256-{}.att", digest.trim_start_matches("sha256:"))).await;
    assert_eq!(status, 404);
}

// Regression: #13 (7). In a promotion-only namespace nobody pushes, so push rights do not skip
// its gate there; the scanner's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rights_skip_no_gate_where_nobody_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    let line = |user: &str| format!("{user}:{}\n", bcrypt::hash(format!("{user}-pw"), 4).unwrap());
    std::fs::write(dir.path().join("htpasswd"), [line("builder"), line("scanner"), line("admin")].concat()).unwrap();
    let auth = format!(
        r#"
[auth]
challenge = "basic"
basic = true
htpasswd = {:?}
[[auth.rules]]
subjects = ["user:builder"]
repositories = ["build/**", "prod/**"]
actions = ["pull", "push"]
[[auth.rules]]
subjects = ["user:scanner"]
repositories = ["prod/**"]
actions = ["scanner"]
[[auth.rules]]
subjects = ["user:admin"]
repositories = ["**"]
actions = ["admin"]
"#,
        dir.path().join("htpasswd")
    );
    let text = config_text(dir.path(), &ci, &auth);
    let registry = TestRegistry::with_config_text(&text).await;
    let as_user = |user: &'static str| {
        let client = registry.client.clone();
        let url = registry.url("/v2/prod/app/manifests/v1");
        async move { client.get(url).basic_auth(user, Some(format!("{user}-pw"))).send().await.unwrap().status().as_u16() }
    };
    // Promote a passing image, then tighten the gate (an SBOM is now required): prod/app:v1 fails.
    let builder = RegistryClient { base_url: registry.base_url.clone(), client: basic_client("builder") };
    let admin = RegistryClient { base_url: registry.base_url.clone(), client: basic_client("admin") };
    signed_image(&builder, "build/app", "v1", &ci).await;
    let (status, body) = promote(&admin, serde_json::json!({ "source": "build/app:v1", "target": "prod/app", "tags": ["v1"] })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(as_user("builder").await, 200);
    let tightened = text.replace("signed_by = [\"ci\"]\n[namespaces.gate.scan]", "signed_by = [\"ci\"]\nsbom = true\n[namespaces.gate.scan]");
    assert_ne!(tightened, text);
    let overrides = portcullis::config::Overrides { data_dir: Some(registry.data_dir.clone()), ..Default::default() };
    let mut config = portcullis::config::Config::parse(&tightened, "tightened", &overrides).unwrap();
    config.storage = registry.config.storage.clone();
    registry.reload(config).unwrap();

    assert_eq!(as_user("builder").await, 403, "push rights on a promotion-only namespace");
    assert_eq!(as_user("scanner").await, 200, "the scanner reads what the gate waits for");
}

/// A client that sends `user`'s Basic credentials on every request.
fn basic_client(user: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{user}:{user}-pw"));
    headers.insert(reqwest::header::AUTHORIZATION, format!("Basic {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}
