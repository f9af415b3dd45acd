//! The web console (`/ui/`) against a populated registry, over TLS with the test PKI: gated and
//! ungated images, an index, a denial with rejected evidence, a promotion, hostile annotations, a
//! proxied repository whose upstream tag moved (held), an upstream that answers with markup, and
//! a drift row made by Kubernetes admission (a webhook review over mutual TLS, then a scan with a
//! hostile finding). HTTP checks here (headers, escaping, access by list and by URL, sessions, the
//! denial line against the API and a refused pull, looking at a proxied repository asks its
//! upstream nothing), then `tests/console_browser.py` drives the same registry in headless Chromium
//! (Playwright): every page without console errors, JavaScript on and off, screenshots under
//! `target/console-screenshots/`.

mod common;

use base64::Engine as _;
use common::cosign::{self, Key, Scheme, VULN};
use common::pki::TestPki;
use common::{RegistryClient, TestRegistry, OCI_INDEX, OCI_MANIFEST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Annotations that would run script if the console did not escape them.
const HOSTILE: &[(&str, &str)] = &[
    ("org.opencontainers.image.description", "<script>window.__xss = 1</script>"),
    ("org.example.attr", "\"><img src=x onerror=\"window.__xss = 2\">"),
    ("org.example.<b>key</b>", "javascript:window.__xss = 3"),
];
/// The tag grammar allows no markup; this is as odd as a tag gets.
const ODD_TAG: &str = "_-.x-onerror.alert";
/// What the hostile upstream answers every request with (the proxy keeps it as the last error).
const HOSTILE_UPSTREAM: &str = "<img src=x onerror=\"window.__xss = 5\">";
/// A vulnerability ID in a signed scan, which the drift row's reason quotes.
const HOSTILE_FINDING: &str = "CVE-<script>window.__xss=4</script>";
/// The proxied repository whose upstream tag moves (held).
const PROXIED: &str = "proxy/up/team/app";

struct Populated {
    registry: TestRegistry,
    pki: TestPki,
    admin: RegistryClient,
    dev: RegistryClient,
    /// No credentials (trusting the test CA).
    anonymous: RegistryClient,
    /// The upstream of `proxy/up/**`.
    upstream: TestRegistry,
    /// `proxy/up/team/app:v1` as first pulled, and where the tag moved to upstream (held).
    proxied_old: String,
    proxied_new: String,
    /// `staging/web@` this runs in a cluster and fails its gate now.
    drifted: String,
    /// `prod/app@` this passed and was promoted.
    promoted: String,
    /// `staging/app@` this is denied (no trusted signature; one by an unknown key).
    denied: String,
    /// The denied image's layer digest, which must not be shown to those the gate refuses.
    denied_layer: String,
    /// `build/multi@` this index of two platforms.
    index: String,
    /// `build/hostile@` this image with hostile annotations.
    hostile: String,
    _dir: tempfile::TempDir,
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// An HTTPS client of `registry` trusting the test CA, sending `headers` with every request.
fn https(registry: &TestRegistry, pki: &TestPki, headers: reqwest::header::HeaderMap) -> RegistryClient {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    registry.with_client(client)
}

fn client_as(registry: &TestRegistry, pki: &TestPki, user: &str, password: &str) -> RegistryClient {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, basic(user, password).parse().unwrap());
    https(registry, pki, headers)
}

/// An upstream that answers every request `500` with [`HOSTILE_UPSTREAM`] as its body; its URL.
async fn hostile_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{HOSTILE_UPSTREAM}",
                    HOSTILE_UPSTREAM.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

/// Sum of the upstream's counted manifest requests (any method, any status).
async fn upstream_manifest_requests(upstream: &TestRegistry) -> f64 {
    let text = upstream.client.get(upstream.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("portcullis_http_requests_total{") && line.contains("manifest"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Audit records of `kind`, as `client` may read them.
async fn audit_records(client: &RegistryClient, kind: &str) -> Vec<serde_json::Value> {
    let body: serde_json::Value = client.client.get(client.url(&format!("/api/v1/audit?kind={kind}"))).send().await.unwrap().json().await.unwrap();
    body["records"].as_array().cloned().unwrap_or_default()
}

/// A Pod running `image`, as the API server sends its creation to the validating webhook.
fn pod_review(image: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "7d1c7a52-0b8e-4c55-9c1e-3f1f0e2b9a10",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:ci:deployer"},
            "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "web", "namespace": "shop"},
                       "spec": {"containers": [{"name": "web", "image": image}]}},
            "dryRun": false
        }
    }))
    .unwrap()
}

/// A registry over TLS with auth (`admin` may do everything, `dev` may pull and push `build/**`
/// and pull `staging/**`, never `prod/**` nor `proxy/**`), a gated `staging/**` clients push to
/// (a signature and a clean scan by "ci"), a gated, promotion-only `prod/**`, two upstreams
/// (`up`, a portcullis holding moved tags, and `evil`, hostile), `[admission]`, and content in
/// each.
async fn populated() -> Populated {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "console");
    let upstream = TestRegistry::start().await;
    let (proxied_old, _) = upstream.push_tiny_image("team/app", "v1", "proxied-old").await;
    let evil = hostile_upstream().await;
    let ci = Key::generate();
    std::fs::write(dir.path().join("cosign.pub"), ci.public_pem()).unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("admin:{hash}\ndev:{hash}\n")).unwrap();
    // The embedded default (build/, a gated promotion-only prod/, the rest), trusting the test's
    // key, with users and a gated staging/ that clients push to.
    let auth = format!(
        r#"
        [auth]
        htpasswd = {htpasswd:?}
        [auth.groups]
        admins = ["admin"]
        [[auth.rules]]
        subjects = ["group:admins"]
        repositories = ["**"]
        actions = ["admin"]
        [[auth.rules]]
        subjects = ["user:dev"]
        repositories = ["build/**"]
        actions = ["pull", "push"]
        [[auth.rules]]
        subjects = ["user:dev"]
        repositories = ["staging/**"]
        actions = ["pull"]
        "#,
        htpasswd = dir.path().join("htpasswd"),
    );
    let staging = "[[namespaces]]\npattern = \"staging/**\"\n[namespaces.gate]\nmode = \"enforce\"\nsigned_by = [\"ci\"]\n\
                   [namespaces.gate.scan]\nmax_age = \"7d\"\nblock = [\"critical-with-fix\"]\nsigned_by = [\"ci\"]\n\n";
    let default = portcullis::config::EMBEDDED_DEFAULT
        .replace("public_key = \"trust/cosign.pub\"", &format!("public_key = {:?}", dir.path().join("cosign.pub")))
        .replace("[[namespaces]]\npattern = \"**\"", &format!("{staging}[[namespaces]]\npattern = \"**\""));
    assert!(default.contains("staging/**") && default.contains("cosign.pub\"\n"), "the default changed shape");
    let upstreams = format!(
        "[[upstreams]]\nname = \"up\"\nurl = \"{}\"\ntag_ttl = \"0s\"\ntag_moves = \"hold\"\n\
         [[upstreams]]\nname = \"evil\"\nurl = \"{evil}\"\ntimeout = \"5s\"\n",
        upstream.base_url
    );
    let admission = "[admission]\nhosts = [\"registry.example.com\"]\n";
    let text = format!("{tls}\n{auth}\n{upstreams}\n{default}\n{admission}", tls = pki.server_tls_toml());
    let registry = TestRegistry::with_config_text(&text).await;
    let admin = client_as(&registry, &pki, "admin", "pw");
    let dev = client_as(&registry, &pki, "dev", "pw");
    let anonymous = https(&registry, &pki, reqwest::header::HeaderMap::new());

    // Signed and scanned in build, promoted into prod.
    let (built, _) = admin.push_tiny_image("build/app", "v1", "app").await;
    cosign::sign_with(&admin, "build/app", &built, &ci, Scheme::Referrer).await;
    let scan = cosign::trivy_predicate(&cosign::time_ago(600), &[("CVE-2026-0100", "HIGH", Some("2.0"))]);
    cosign::attest_with(&admin, "build/app", &built, &ci, &[(VULN, scan)], Scheme::Referrer).await;
    let res = admin.client.post(admin.url("/api/v1/promotions")).json(&serde_json::json!({"source": "build/app:v1", "target": "prod/app", "tags": ["1.0"]})).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // Pushed to gated staging, signed only by a key the registry does not trust: denied, with
    // the signature listed as rejected evidence.
    let config = br#"{"architecture":"amd64","os":"linux","seed":"denied"}"#;
    let config_digest = admin.push_blob("staging/app", config).await;
    let layer = b"layer of the denied image";
    let denied_layer = admin.push_blob("staging/app", layer).await;
    let manifest = common::tiny_manifest(&config_digest, config.len(), &denied_layer, layer.len(), None);
    let res = admin.put_manifest("staging/app", "v1", OCI_MANIFEST, manifest.as_bytes()).await;
    assert_eq!(res.status(), 201);
    let denied = common::sha256(manifest.as_bytes());
    cosign::sign_with(&admin, "staging/app", &denied, &Key::generate(), Scheme::Referrer).await;
    // A refused pull: an audit record.
    let res = dev.client.get(dev.url(&format!("/v2/staging/app/manifests/{denied}"))).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(res.status(), 403);

    // An index of two platforms, ungated.
    let mut children = Vec::new();
    for (arch, seed) in [("amd64", "multi-amd64"), ("arm64", "multi-arm64")] {
        let (digest, bytes) = admin.push_tiny_image("build/multi", &format!("{arch}-only"), seed).await;
        children.push(serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": bytes.len(), "platform": {"os": "linux", "architecture": arch}}));
    }
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})).unwrap();
    let res = admin.put_manifest("build/multi", "v1", OCI_INDEX, &index).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let index = common::sha256(&index);

    // Hostile annotations, under the oddest tag the grammar allows.
    let config = br#"{"architecture":"amd64","os":"linux","seed":"hostile"}"#;
    let config_digest = admin.push_blob("build/hostile", config).await;
    let layer_digest = admin.push_blob("build/hostile", b"hostile layer").await;
    let annotations: serde_json::Map<String, serde_json::Value> = HOSTILE.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let hostile = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": 13}],
        "annotations": annotations,
    }))
    .unwrap();
    let res = admin.put_manifest("build/hostile", ODD_TAG, OCI_MANIFEST, &hostile).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let hostile = common::sha256(&hostile);

    // Pulled through `up`: a held tag move comes later (the test looks at the console first).
    let res = admin.client.get(admin.url(&format!("/v2/{PROXIED}/manifests/v1"))).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let (proxied_new, _) = upstream.push_tiny_image("team/app", "v1", "proxied-new").await;
    // Through `evil`: its answer becomes the upstream's last error.
    let res = admin.client.get(admin.url("/v2/proxy/evil/team/x/manifests/v1")).send().await.unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());

    // Drift: staging/web passes (signed, scanned clean), a Pod is admitted with it, then a scan
    // with a critical finding that has a fix arrives.
    let (drifted, _) = admin.push_tiny_image("staging/web", "v1", "web").await;
    cosign::sign_with(&admin, "staging/web", &drifted, &ci, Scheme::Referrer).await;
    let clean = cosign::trivy_predicate(&cosign::time_ago(600), &[]);
    cosign::attest_with(&admin, "staging/web", &drifted, &ci, &[(VULN, clean)], Scheme::Referrer).await;
    let webhook = registry.with_client(pki.client(true));
    let res = webhook.client.post(webhook.url("/admission/validate")).body(pod_review(&format!("registry.example.com/staging/web@{drifted}"))).send().await.unwrap();
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let blocking = cosign::trivy_predicate(&cosign::time_ago(60), &[(HOSTILE_FINDING, "CRITICAL", Some("3.0.14"))]);
    cosign::attest_with(&admin, "staging/web", &drifted, &ci, &[(VULN, blocking)], Scheme::Referrer).await;
    for _ in 0..600 {
        let rows: serde_json::Value = admin.client.get(admin.url("/api/v1/drift")).send().await.unwrap().json().await.unwrap();
        if rows["drift"].as_array().is_some_and(|rows| !rows.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    Populated {
        promoted: built,
        denied,
        denied_layer,
        index,
        hostile,
        registry,
        pki,
        admin,
        dev,
        anonymous,
        upstream,
        proxied_old,
        proxied_new,
        drifted,
        _dir: dir,
    }
}

async fn get(client: &RegistryClient, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let res = client.client.get(client.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

fn assert_secure(headers: &reqwest::header::HeaderMap, what: &str) {
    let csp = headers.get("content-security-policy").map(|v| v.to_str().unwrap()).unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{what}: CSP {csp:?}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: CSP {csp:?}");
    assert_eq!(headers.get("x-frame-options").map(|v| v.to_str().unwrap()), Some("DENY"), "{what}");
    assert_eq!(headers.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{what}");
    assert!(headers.get("referrer-policy").is_some(), "{what}: Referrer-Policy");
}

/// Logs in through the form (as `anonymous`, a client without credentials).
async fn login(anonymous: &RegistryClient, user: &str, password: &str) -> reqwest::Response {
    anonymous
        .client
        .post(anonymous.url("/ui/login"))
        .header("origin", anonymous.base_url.clone())
        .form(&[("username", user), ("password", password), ("next", "/ui/audit")])
        .send()
        .await
        .unwrap()
}

/// A client that sends `cookie` (the session) and nothing else.
fn with_cookie(setup: &Populated, cookie: &str) -> RegistryClient {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookie.parse().unwrap());
    https(&setup.registry, &setup.pki, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_access_escaping_sessions_and_a_real_browser() {
    let setup = populated().await;
    let anonymous = &setup.anonymous;
    let promoted_page = format!("/ui/r/prod/app/@{}", setup.promoted);
    let denied_page = format!("/ui/r/staging/app/@{}", setup.denied);

    // Every console answer carries the security headers: pages, assets, a 404, a 405, a redirect.
    for (client, path) in [
        (&setup.admin, "/ui/repositories"),
        (&setup.admin, promoted_page.as_str()),
        (&setup.admin, "/ui/static/console.css"),
        (&setup.admin, "/ui/static/console.js"),
        (anonymous, "/ui/r/prod/app"),
        (anonymous, "/ui/logout"),
        (anonymous, "/ui/"),
        (anonymous, "/ui/login"),
    ] {
        let (_, headers, _) = get(client, path).await;
        assert_secure(&headers, path);
    }

    // Looking is not pulling: the pages of a proxied repository ask its upstream nothing, so the
    // tag that moved upstream is neither checked nor alarmed by them, and a digest not fetched
    // yet is not fetched to be shown.
    let asked = upstream_manifest_requests(&setup.upstream).await;
    let (status, _, page) = get(&setup.admin, &format!("/ui/r/{PROXIED}")).await;
    assert_eq!(status, 200);
    assert!(page.contains(&setup.proxied_old) && !page.contains(&setup.proxied_new), "{page}");
    let (status, _, _) = get(&setup.admin, &format!("/ui/r/{PROXIED}/@{}", setup.proxied_old)).await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&setup.admin, &format!("/ui/r/{PROXIED}/@{}", setup.proxied_new)).await;
    assert_eq!(status, 404, "not here yet, and not fetched to be shown");
    assert_eq!(upstream_manifest_requests(&setup.upstream).await, asked, "a console page asked the upstream");
    assert!(audit_records(&setup.admin, "upstream_tag_moved").await.is_empty(), "a console page checked the tag upstream");
    // A client's pull does: the move is held (the old digest served, with a warning) and alarmed.
    let res = setup.admin.client.get(setup.admin.url(&format!("/v2/{PROXIED}/manifests/v1"))).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(res.headers()["docker-content-digest"].to_str().unwrap(), setup.proxied_old);
    assert!(res.headers()["warning"].to_str().unwrap().contains("held"));
    assert_eq!(audit_records(&setup.admin, "upstream_tag_moved").await.len(), 1);

    // The upstreams page: each upstream's health, last error (the hostile one's as text), cache,
    // and the held move with the request that accepts it. Tag moves are audit records: only for
    // those with admin on the repository, as on the API; the page needs a signed-in viewer, as
    // GET /api/v1/upstreams does.
    let (status, headers, page) = get(&setup.admin, "/ui/upstreams").await;
    assert_eq!(status, 200);
    assert_secure(&headers, "/ui/upstreams");
    assert!(page.contains(&setup.upstream.base_url) && page.contains("badge health-up") && page.contains("badge health-down"), "{page}");
    assert!(page.contains(&html_escape(HOSTILE_UPSTREAM)) && !page.contains(HOSTILE_UPSTREAM), "the upstream's error as text: {page}");
    let accept = format!("tag=v1&#38;digest={}", setup.proxied_new.replace(':', "%3A"));
    assert!(page.contains(">held</span>") && page.contains(&accept), "the held move: {page}");
    let (status, _, page) = get(&setup.dev, "/ui/upstreams").await;
    assert_eq!(status, 200);
    assert!(page.contains("badge health-up") && !page.contains(PROXIED), "dev holds no admin on proxy/**: {page}");

    // The drift page: the row of staging/web with the reason a pull gets (the hostile finding as
    // text) and the workload; drift rows name clusters' workloads: admin only, as on the API.
    let drift: serde_json::Value = get(&setup.admin, "/api/v1/drift").await.2.parse().unwrap();
    let reason = drift["drift"][0]["summary"].as_str().unwrap_or_else(|| panic!("a drift row: {drift}"));
    assert!(reason.contains(HOSTILE_FINDING), "{reason}");
    let (status, headers, page) = get(&setup.admin, "/ui/drift").await;
    assert_eq!(status, 200);
    assert_secure(&headers, "/ui/drift");
    assert!(page.contains(&format!("<span class=\"reason\">{}</span>", html_escape(reason))), "{page}");
    assert!(!page.contains(HOSTILE_FINDING) && page.contains(&setup.drifted) && page.contains("shop/Pod web"), "{page}");
    let (status, _, page) = get(&setup.dev, "/ui/drift").await;
    assert_eq!(status, 200);
    assert!(!page.contains(&setup.drifted), "dev holds no admin on staging/**: {page}");
    for path in ["/ui/upstreams", "/ui/drift"] {
        let (status, _, page) = get(anonymous, path).await;
        assert_eq!(status, 404, "anonymous GET {path}");
        assert!(!page.contains("health-") && !page.contains(&setup.drifted), "{path}: {page}");
    }

    // What each viewer sees, by list and by URL. A repository one may not pull is a 404, like one
    // that does not exist; so is an image in it.
    let (status, _, admin_list) = get(&setup.admin, "/ui/repositories").await;
    assert_eq!(status, 200);
    for repo in ["build/app", "build/multi", "build/hostile", "prod/app", "staging/app"] {
        assert!(admin_list.contains(&format!("href=\"/ui/r/{repo}\"")), "admin sees {repo}");
    }
    let (_, _, dev_list) = get(&setup.dev, "/ui/repositories").await;
    assert!(dev_list.contains("href=\"/ui/r/build/app\"") && dev_list.contains("href=\"/ui/r/staging/app\""));
    assert!(!dev_list.contains("/ui/r/prod/app"), "dev may not pull prod: {dev_list}");
    for path in ["/ui/r/prod/app".to_owned(), promoted_page.clone(), "/ui/r/prod/nothing".to_owned()] {
        let (status, _, body) = get(&setup.dev, &path).await;
        assert_eq!(status, 404, "dev GET {path}");
        assert!(!body.contains(&setup.promoted), "{path} names nothing of prod");
        let (status, _, _) = get(anonymous, &path).await;
        assert_eq!(status, 404, "anonymous GET {path}");
    }
    let (_, _, anonymous_list) = get(anonymous, "/ui/repositories").await;
    assert!(!anonymous_list.contains("/ui/r/"), "anonymous may pull nothing here");
    assert!(!anonymous_list.contains("/ui/drift") && admin_list.contains("href=\"/ui/drift\""), "operator pages linked to signed-in viewers");
    let (_, _, dev_promotions) = get(&setup.dev, "/ui/promotions").await;
    assert!(!dev_promotions.contains("prod/app"), "promotions into prod are prod's");
    let (_, _, admin_promotions) = get(&setup.admin, "/ui/promotions").await;
    assert!(admin_promotions.contains("build/app:v1") && admin_promotions.contains("prod/app"), "{admin_promotions}");
    let (_, _, dev_audit) = get(&setup.dev, "/ui/audit").await;
    assert!(!dev_audit.contains("<td>pull_denied</td>"), "audit records need admin");
    let (_, _, admin_audit) = get(&setup.admin, "/ui/audit?kind=pull_denied").await;
    assert!(admin_audit.contains("<td>pull_denied</td>") && admin_audit.contains("verifies"), "{admin_audit}");
    assert!(!admin_audit.contains("<td>promotion</td>"), "filtered by kind");

    // The denial line is the API's summary and a refused pull's message, character for character.
    let (_, _, page) = get(&setup.dev, &denied_page).await;
    let api: serde_json::Value = get(&setup.dev, &format!("/api/v1/verdict?image=staging/app@{}", setup.denied)).await.2.parse().unwrap();
    let summary = api["summary"].as_str().unwrap();
    assert!(summary.contains("denied") && summary.contains("rejected evidence"), "{summary}");
    let pull = setup.dev.client.get(setup.dev.url(&format!("/v2/staging/app/manifests/{}", setup.denied))).send().await.unwrap();
    let pull: serde_json::Value = pull.json().await.unwrap();
    assert_eq!(pull["errors"][0]["message"].as_str(), Some(summary), "the client's reason");
    assert!(page.contains(&format!("<p class=\"denial denied\" id=\"denial\">{}</p>", html_escape(summary))), "{page}");
    // Its content is withheld from a viewer the gate refuses, and shown to one it does not.
    assert!(!page.contains(&setup.denied_layer), "the denied image's layer digest must not reach dev");
    assert!(page.contains("class=\"withheld\""));
    let (_, _, admin_page) = get(&setup.admin, &denied_page).await;
    assert!(admin_page.contains(&setup.denied_layer), "admin reads past gates, as on the API");

    // Hostile annotations come out as text.
    let (status, _, page) = get(&setup.admin, &format!("/ui/r/build/hostile/@{}", setup.hostile)).await;
    assert_eq!(status, 200);
    for (key, value) in HOSTILE {
        assert!(page.contains(&html_escape(value)) && page.contains(&html_escape(key)), "{value} escaped");
        for text in [key, value].into_iter().filter(|text| text.contains(['<', '>', '"'])) {
            assert!(!page.contains(text), "{text} raw");
        }
    }
    let (_, _, page) = get(&setup.admin, "/ui/r/build/hostile").await;
    assert!(page.contains(ODD_TAG));

    // Sessions: a wrong password is a 401 page; a right one sets a session cookie that is
    // HttpOnly, SameSite=Strict, scoped to /ui, and Secure (this registry speaks TLS).
    let res = login(anonymous, "dev", "wrong").await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none());
    let res = login(anonymous, "dev", "pw").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/ui/audit");
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=3600", "Secure"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let session = with_cookie(&setup, &cookie);
    let (_, _, list) = get(&session, "/ui/repositories").await;
    assert!(list.contains("/ui/r/build/app") && !list.contains("/ui/r/prod/app") && list.contains(">dev<"), "{list}");
    // The session is no registry token, and a form from another site signs nobody in.
    let token = cookie.split_once('=').unwrap().1;
    let res = anonymous.client.get(anonymous.url("/v2/build/app/tags/list")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = anonymous
        .client
        .post(anonymous.url("/ui/login"))
        .header("origin", "https://elsewhere.example")
        .form(&[("username", "dev"), ("password", "pw")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("set-cookie").is_none());
    let res = session.client.post(session.url("/ui/logout")).header("origin", anonymous.base_url.clone()).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert!(res.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));

    browser(&setup, summary).await;
}

/// The console of a registry without `[auth]` (the embedded default) is open, like its API.
#[tokio::test]
async fn console_without_auth_is_open() {
    let registry = TestRegistry::start().await;
    let (digest, _) = registry.push_tiny_image("build/open", "v1", "open").await;
    let (status, headers, page) = get(&registry, "/ui/repositories").await;
    assert_eq!(status, 200);
    assert_secure(&headers, "open");
    assert!(page.contains("/ui/r/build/open") && page.contains("open registry"), "{page}");
    let (status, _, page) = get(&registry, "/ui/r/build/open").await;
    assert_eq!(status, 200);
    assert!(page.contains("v1") && page.contains("not gated"), "{page}");
    // Looking is not pulling: the image page records no pull for retention's `not_pulled`; a
    // manifest GET does (it is written in the background: once a GET made after the look has
    // its record, a record of the look would be there too).
    let (status, _, _) = get(&registry, &format!("/ui/r/build/open/@{digest}")).await;
    assert_eq!(status, 200);
    let pulled = |digest: &str| format!("repositories/build/open/_pulled/sha256/{}", digest.trim_start_matches("sha256:"));
    let (other, _) = registry.push_tiny_image("build/open", "v2", "other").await;
    let (status, _, _) = get(&registry, "/v2/build/open/manifests/v2").await;
    assert_eq!(status, 200);
    let mut waited = 0;
    while !registry.has_object(&pulled(&other)).await {
        assert!(waited < 100, "a GET records its pull");
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!registry.has_object(&pulled(&digest)).await, "the console counted as a pull");
    // A pushed blob is served from the console's origin: never as something a browser would run.
    let script = registry.push_blob("build/open", b"alert(document.cookie)").await;
    let (status, headers, _) = get(&registry, &format!("/v2/build/open/blobs/{script}")).await;
    assert_eq!(status, 200);
    assert_eq!((headers["content-type"].to_str().unwrap(), headers.get("x-content-type-options").map(|v| v.to_str().unwrap())), ("application/octet-stream", Some("nosniff")));
    let res = registry.client.post(registry.url("/ui/login")).form(&[("username", "x"), ("password", "y")]).send().await.unwrap();
    assert_eq!(res.status(), 303, "nothing to sign in to");
    assert!(res.headers().get("set-cookie").is_none());
}

/// The repositories page is paged (50 a page, a "Next page" link that continues where the page
/// ended) and searched, by prefix or anywhere in the name.
#[tokio::test]
async fn the_repository_list_is_paged_and_searched() {
    let registry = TestRegistry::start().await;
    for n in 0..60 {
        registry.push_tiny_image(&format!("paged/r{n:02}"), "v1", &format!("paged {n}")).await;
    }
    registry.push_tiny_image("other/r07-tool", "v1", "other").await;
    let listed = |page: &str| -> Vec<String> {
        page.split("href=\"/ui/r/").skip(1).map(|rest| rest.split('"').next().unwrap().to_owned()).collect()
    };
    let next = |page: &str| -> Option<String> {
        let (before, _) = page.split_once("\" rel=\"next\"")?;
        Some(before.rsplit_once("href=\"").unwrap().1.replace("&#38;", "&"))
    };
    let (status, _, first) = get(&registry, "/ui/repositories?q=paged/").await;
    assert_eq!(status, 200);
    let expected: Vec<String> = (0..60).map(|n| format!("paged/r{n:02}")).collect();
    assert_eq!(listed(&first), expected[..50], "the first 50, in name order");
    let more = next(&first).expect("a next page link");
    let (status, _, second) = get(&registry, &more).await;
    assert_eq!(status, 200, "{more}");
    assert_eq!(listed(&second), expected[50..], "{more}: the rest");
    assert!(next(&second).is_none(), "no link past the end");
    // Anywhere in the name.
    let (_, _, found) = get(&registry, "/ui/repositories?q=r07&match=contains").await;
    assert_eq!(listed(&found), ["other/r07-tool", "paged/r07"]);
    // A prefix matches the start only.
    let (_, _, found) = get(&registry, "/ui/repositories?q=r07").await;
    assert!(listed(&found).is_empty(), "{found}");
}

/// HTML-escaped as askama escapes it.
fn html_escape(text: &str) -> String {
    text.replace('&', "&#38;").replace('<', "&#60;").replace('>', "&#62;").replace('"', "&#34;").replace('\'', "&#39;")
}

/// Runs `tests/console_browser.py` (Playwright driving Debian's Chromium) against the registry.
/// `scripts/test` installs both; without them, this says SKIPPED loudly, and fails under CI.
async fn browser(setup: &Populated, summary: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".test-tools/browser/bin/python");
    let chromium = std::env::var("PORTCULLIS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !python.exists() || !std::path::Path::new(&chromium).exists() {
        assert!(std::env::var_os("CI").is_none(), "the browser test needs {} and {chromium} (scripts/test installs them)", python.display());
        eprintln!("SKIPPED (no browser): the console's browser test needs Playwright in .test-tools/browser and Chromium at {chromium}; a full scripts/test run installs both");
        return;
    }
    let out = root.join("target/console-screenshots");
    let plan = serde_json::json!({
        "base_url": setup.registry.base_url,
        "ca": setup.pki.dir.join("ca.crt"),
        "chromium": chromium,
        "out": out,
        "admin": ["admin", "pw"],
        "dev": ["dev", "pw"],
        "promoted": setup.promoted,
        "denied": setup.denied,
        "denied_layer": setup.denied_layer,
        "index": setup.index,
        "hostile": setup.hostile,
        "summary": summary,
        "proxied": PROXIED,
        "proxied_old": setup.proxied_old,
        "drifted": setup.drifted,
        "hostile_upstream": HOSTILE_UPSTREAM,
        "hostile_finding": HOSTILE_FINDING,
    });
    let output = tokio::process::Command::new(&python)
        .arg(root.join("tests/console_browser.py"))
        .arg(plan.to_string())
        .output()
        .await
        .expect("run the browser test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
}
