//! The pull-through proxy against real upstream registries on loopback: a second portcullis
//! (open, and with the Docker token flow) and CNCF Distribution (htpasswd and TLS from a test CA),
//! with faults put between them by a cuttable TCP proxy, and a hostile upstream written here that
//! lies about its bytes, sends too much or too slowly, and redirects where it should not. Real
//! clients pulling through the proxy are in `tests/proxy_clients.rs`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::clients::Clients;
use common::cosign::{self, Key};
use common::distribution::{self, Distribution};
use common::fault_proxy::FaultProxy;
use common::pki::TestPki;
use common::{sha256, RegistryClient, TestRegistry, OCI_MANIFEST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A registry with one `[[upstreams]]` entry (`name`, `url`, and `extra` keys) and `toml` after
/// it (trust, namespaces), before the catch-all namespace.
async fn proxy_registry(name: &str, url: &str, extra: &str, toml: &str) -> TestRegistry {
    let text = format!("[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n{toml}\n[[namespaces]]\npattern = \"**\"\ntags = \"mutable\"\n");
    TestRegistry::with_config_text(&text).await
}

/// GET `path`: status, headers and body.
async fn get(api: &RegistryClient, path: &str) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let res = api.client.get(api.url(path)).send().await.unwrap_or_else(|err| panic!("GET {path}: {err}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.unwrap_or_else(|err| panic!("GET {path} body: {err}"));
    (status, headers, body)
}

/// GET `path`, expecting an error: its status, code and message.
async fn get_error(api: &RegistryClient, path: &str) -> (u16, String, String) {
    let (status, _, body) = get(api, path).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("GET {path}: {status} {body:?}"));
    let error = &body["errors"][0];
    (status, error["code"].as_str().unwrap_or_default().to_owned(), error["message"].as_str().unwrap_or_default().to_owned())
}

/// Pulls `repo:reference` whole through `api` (manifest, then every blob it names), checking each
/// blob's digest; returns the manifest's digest.
async fn pull_image(api: &RegistryClient, repo: &str, reference: &str) -> String {
    let (status, headers, body) = get(api, &format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(status, 200, "{repo}:{reference}: {}", String::from_utf8_lossy(&body));
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("manifest JSON");
    let blobs = std::iter::once(&doc["config"]).chain(doc["layers"].as_array().into_iter().flatten());
    for blob in blobs {
        let digest = blob["digest"].as_str().expect("blob digest");
        let (status, _, bytes) = get(api, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(status, 200, "{repo} blob {digest}");
        assert_eq!(sha256(&bytes), digest, "{repo} blob");
    }
    let digest = headers["docker-content-digest"].to_str().unwrap().to_owned();
    assert_eq!(digest, sha256(&body));
    digest
}

/// `n` bytes that look random, from `seed`.
fn noise(seed: &str, n: usize) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(n + 32);
    let mut block = sha2::Sha256::digest(seed.as_bytes());
    while out.len() < n {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(block);
    }
    out.truncate(n);
    out
}

/// Pushes an image with a config from `seed` and these layers; returns its digest and manifest.
async fn push_image(api: &RegistryClient, repo: &str, tag: &str, seed: &str, layers: &[&[u8]]) -> (String, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
    let config_digest = api.push_blob(repo, config.as_bytes()).await;
    let mut descriptors = Vec::new();
    for layer in layers {
        let digest = api.push_blob(repo, layer).await;
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": layer.len()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors,
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let res = api.put_manifest(repo, tag, OCI_MANIFEST, &bytes).await;
    assert_eq!(res.status(), 201, "push {repo}:{tag}: {}", res.text().await.unwrap_or_default());
    (sha256(&bytes), bytes)
}

/// A sample of `/metrics` whose line starts with `prefix` (name and labels), 0 when absent.
async fn metric(api: &RegistryClient, prefix: &str) -> f64 {
    let text = api.client.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Audit records of `kind`.
async fn audit(api: &RegistryClient, kind: &str) -> Vec<serde_json::Value> {
    let res = api.client.get(api.url(&format!("/api/v1/audit?kind={kind}"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    body["records"].as_array().cloned().unwrap_or_default()
}

/// Makes the proxy's record of `repo:tag` say it was last checked long ago.
async fn age_tag_check(proxy: &TestRegistry, repo: &str, tag: &str) {
    let key = format!("repositories/{repo}/_upstream_tags/{tag}");
    let store = proxy.store().await;
    let stored = store.get_small(&key, 64 << 10).await.unwrap().expect("the tag's upstream record");
    let mut record: serde_json::Value = serde_json::from_slice(&stored.bytes).unwrap();
    record["checked"] = 0.into();
    store.put_small(&key, serde_json::to_vec(&record).unwrap().into(), storage::PutCondition::Always).await.unwrap();
}

/// Upstream GETs of `endpoint` (`get_blob`, `get_manifest`) a portcullis upstream answered.
async fn upstream_gets(upstream: &RegistryClient, endpoint: &str) -> f64 {
    metric(upstream, &format!("portcullis_http_requests_total{{endpoint=\"{endpoint}\",method=\"GET\",status=\"200\"}}")).await
}

// ---------------------------------------------------------------------------------------------
// Pulls

#[tokio::test]
async fn pulls_through_a_portcullis_upstream() {
    let upstream = TestRegistry::start().await;
    let (digest, manifest) = upstream.push_tiny_image("team/app", "v1", "smoke").await;
    let proxy = proxy_registry("up", &upstream.base_url, "", "").await;

    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    let (fetched_manifests, fetched_blobs) = (upstream_gets(&upstream, "get_manifest").await, upstream_gets(&upstream, "get_blob").await);
    assert_eq!(fetched_blobs, 2.0, "config and layer, once each");
    // Again, by tag and by digest: from the cache (the tag is within its tag_ttl).
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    let (status, _, body) = get(&proxy, &format!("/v2/proxy/up/team/app/manifests/{digest}")).await;
    assert_eq!((status, body.as_ref()), (200, manifest.as_slice()));
    assert_eq!(upstream_gets(&upstream, "get_manifest").await, fetched_manifests, "no manifest fetched again");
    assert_eq!(upstream_gets(&upstream, "get_blob").await, fetched_blobs, "no blob fetched again");
    assert_eq!(metric(&proxy, "portcullis_proxy_hits_total{kind=\"blob\",upstream=\"up\"}").await, 2.0);
    assert_eq!(metric(&proxy, "portcullis_proxy_misses_total{kind=\"blob\",upstream=\"up\"}").await, 2.0);
    assert!(metric(&proxy, "portcullis_proxy_upstream_bytes_total{upstream=\"up\"}").await > 0.0);
    // Past tag_ttl the tag is checked with a HEAD (Docker Hub does not count those), not fetched.
    let heads = || metric(&upstream, "portcullis_http_requests_total{endpoint=\"get_manifest\",method=\"HEAD\",status=\"200\"}");
    let heads_before = heads().await;
    age_tag_check(&proxy, "proxy/up/team/app", "v1").await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    assert_eq!(heads().await, heads_before + 1.0, "one HEAD for the due check");
    assert_eq!(upstream_gets(&upstream, "get_manifest").await, fetched_manifests, "the unchanged tag is not fetched");

    // Stored exactly as pushed content is, with records of where it came from.
    let hex = digest.strip_prefix("sha256:").unwrap();
    for key in [
        common::blob_key(&digest),
        format!("repositories/proxy/up/team/app/_manifests/sha256/{hex}"),
        "repositories/proxy/up/team/app/_tags/v1".to_owned(),
        "repositories/proxy/up/team/app/_upstream_tags/v1".to_owned(),
        format!("repositories/proxy/up/team/app/_proxied/sha256/{hex}"),
    ] {
        assert!(proxy.has_object(&key).await, "{key}");
    }
    // Tags other than evidence tags mirror the upstream: a client cannot push them.
    let res = proxy.put_manifest("proxy/up/team/app", "mine", OCI_MANIFEST, &manifest).await;
    assert_eq!(res.status(), 403);
    let text = res.text().await.unwrap();
    assert!(text.contains("mirror upstream up"), "{text}");
    // Unknown upstream content is unknown here too.
    assert_eq!(get_error(&proxy, "/v2/proxy/up/team/app/manifests/nope").await.1, "MANIFEST_UNKNOWN");
    // Asked once per tag_ttl, present or not: retries of a missing tag (a typo in a pod spec, on
    // every node) cost the upstream's rate limit one GET.
    let missing = || metric(&upstream, "portcullis_http_requests_total{endpoint=\"get_manifest\",method=\"GET\",status=\"404\"}");
    let asked = missing().await;
    for _ in 0..3 {
        assert_eq!(get_error(&proxy, "/v2/proxy/up/team/app/manifests/nope").await.1, "MANIFEST_UNKNOWN");
    }
    assert_eq!(missing().await, asked, "a missing tag is not asked about again within tag_ttl");
    assert_eq!(get_error(&proxy, "/v2/proxy/up/team/none/manifests/v1").await.1, "MANIFEST_UNKNOWN");
    let missing = sha256(b"missing");
    assert_eq!(get_error(&proxy, &format!("/v2/proxy/up/team/app/blobs/{missing}")).await.1, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn ns_and_library_and_the_default_upstream_route_pulls() {
    let upstream = TestRegistry::start().await;
    let (alpine, _) = upstream.push_tiny_image("library/alpine", "3", "alpine").await;
    let (other, _) = upstream.push_tiny_image("org/tool", "1", "tool").await;
    let proxy = proxy_registry("hub", &upstream.base_url, "namespace = \"proxy/docker.io/**\"\nhosts = [\"docker.io\"]\ndefault = true", "").await;
    let (local, _) = proxy.push_tiny_image("mine/app", "1", "local").await;

    let digest = |headers: &reqwest::header::HeaderMap| headers["docker-content-digest"].to_str().unwrap().to_owned();
    // containerd: ?ns= on every request; a one-component name gains library/ as on Docker Hub.
    for path in ["/v2/library/alpine/manifests/3?ns=docker.io", "/v2/proxy/docker.io/alpine/manifests/3", "/v2/proxy/docker.io/library/alpine/manifests/3"] {
        let (status, headers, _) = get(&proxy, path).await;
        assert_eq!((status, digest(&headers)), (200, alpine.clone()), "{path}");
    }
    let (status, _, _) = get(&proxy, &format!("/v2/org/tool/manifests/{other}?ns=docker.io")).await;
    assert_eq!(status, 200);
    // dockerd's mirrors send no ns=: names that do not exist here go to the default upstream.
    let (status, headers, _) = get(&proxy, "/v2/library/alpine/manifests/3").await;
    assert_eq!((status, digest(&headers)), (200, alpine.clone()));
    let (status, headers, _) = get(&proxy, "/v2/mine/app/manifests/1").await;
    assert_eq!((status, digest(&headers)), (200, local), "a repository of this registry stays its own");
    // A host no upstream mirrors is refused, not answered with this registry's own content.
    let (status, code, message) = get_error(&proxy, "/v2/mine/app/manifests/1?ns=ghcr.io").await;
    assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"));
    assert!(message.contains("ghcr.io"), "{message}");
    // Everything landed in one repository, with library/.
    assert!(proxy.has_object("repositories/proxy/docker.io/library/alpine/_tags/3").await);
    assert!(!proxy.has_object("repositories/proxy/docker.io/alpine/_tags/3").await);
}

// ---------------------------------------------------------------------------------------------
// Upstream authentication and TLS

/// A portcullis upstream with `[auth]`: the Docker token flow (Bearer challenge), user `puller`.
async fn token_upstream(dir: &std::path::Path) -> TestRegistry {
    let hash = bcrypt::hash("puller-secret", 4).unwrap();
    std::fs::write(dir.join("htpasswd"), format!("puller:{hash}\n")).unwrap();
    let text = format!(
        "[auth]\nhtpasswd = \"{}\"\nchallenge = \"bearer\"\n[[auth.rules]]\nsubjects = [\"user:puller\"]\nrepositories = [\"**\"]\nactions = [\"pull\", \"push\"]\n[[namespaces]]\npattern = \"**\"\n",
        dir.join("htpasswd").display()
    );
    TestRegistry::with_config_text(&text).await
}

/// `api` with Basic credentials on every request.
fn with_basic(api: &RegistryClient, user: &str, password: &str) -> RegistryClient {
    use base64::Engine as _;
    let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value.parse().unwrap())]);
    let client = reqwest::Client::builder().default_headers(headers).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    RegistryClient { base_url: api.base_url.clone(), client }
}

#[tokio::test]
async fn the_token_flow_of_a_portcullis_upstream_and_wrong_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = token_upstream(dir.path()).await;
    let pusher = with_basic(&upstream, "puller", "puller-secret");
    let (digest, _) = pusher.push_tiny_image("team/app", "v1", "token").await;
    std::fs::write(dir.path().join("right"), "puller-secret\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-password").unwrap();
    let config = |file: &str| format!("user = \"puller\"\npassword_file = \"{}\"", dir.path().join(file).display());

    let proxy = proxy_registry("up", &upstream.base_url, &config("right"), "").await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    // One token per repository scope, cached: the second pull asks for none.
    let tokens = metric(&upstream, "portcullis_http_requests_total{endpoint=\"token\",method=\"GET\",status=\"200\"}").await;
    let (status, _, _) = get(&proxy, &format!("/v2/proxy/up/team/app/manifests/{digest}")).await;
    assert_eq!(status, 200);
    age_tag_check(&proxy, "proxy/up/team/app", "v1").await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    assert_eq!(metric(&upstream, "portcullis_http_requests_total{endpoint=\"token\",method=\"GET\",status=\"200\"}").await, tokens);

    // Wrong credentials: a 502 that names the upstream and what it said.
    let wrong = proxy_registry("up", &upstream.base_url, &config("wrong"), "").await;
    let (status, code, message) = get_error(&wrong, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!((status, code.as_str()), (502, "UPSTREAM_ERROR"), "{message}");
    assert!(message.contains("upstream up refused the proxy") && message.contains("401") && message.contains("user \"puller\""), "{message}");
    // The password from the environment (a server process of its own, so no test sets a
    // variable of the test process); an unset variable stops the start with its name.
    let config_path = dir.path().join("env.toml");
    let text = format!("[storage]\ndata_dir = \"{}\"\n[[upstreams]]\nname = \"up\"\nurl = \"{}\"\nuser = \"puller\"\npassword_env = \"PORTCULLIS_TEST_UPSTREAM_PASSWORD\"\n", dir.path().join("env-data").display(), upstream.base_url);
    std::fs::write(&config_path, text).unwrap();
    let server = common::ServerProcess::spawn_with_env(&["--config", config_path.to_str().unwrap()], "PORTCULLIS_TEST_UPSTREAM_PASSWORD", "puller-secret");
    assert_eq!(pull_image(&RegistryClient::new(&server.base_url), "proxy/up/team/app", "v1").await, digest);
    drop(server);
    let unset = common::portcullis_async(vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--config".into(), config_path.to_str().unwrap().into()]).await;
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(!unset.status.success() && stderr.contains("password_env PORTCULLIS_TEST_UPSTREAM_PASSWORD is not set"), "{stderr}");

    // No credentials at all: the upstream's refusal, named.
    let anonymous = proxy_registry("up", &upstream.base_url, "", "").await;
    let (status, _, message) = get_error(&anonymous, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!(status, 502, "{message}");
    assert!(message.contains("upstream up") && message.contains("anonymous"), "{message}");
    // The password never shows, in answers or in the upstream listing.
    let listing = wrong.client.get(wrong.url("/api/v1/upstreams")).send().await.unwrap().text().await.unwrap();
    assert!(listing.contains("\"health\":\"down\"") && listing.contains("401"), "{listing}");
    assert!(!listing.contains("not-the-password") && !message.contains("puller-secret"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_with_htpasswd_and_tls_as_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&dir.path().join("pki"), "distribution");
    let upstream = Distribution::start(distribution::Options {
        htpasswd: vec![("mirror".into(), "mirror-pass".into())],
        tls: Some((pki.server_cert.clone(), pki.server_key.clone())),
        ..Default::default()
    })
    .await;
    // Push one image in Docker's format and one in OCI's, with skopeo.
    let clients = Clients::new();
    let cert_dir = pki.cert_dir(&dir.path().join("certs"), false);
    let host = upstream.base_url.strip_prefix("https://").unwrap().to_owned();
    let layout = common::images::multi_layer_image(&dir.path().join("image"), "v1", 2, 7);
    let mut digests = HashMap::new();
    for (tag, format) in [("docker", "v2s2"), ("oci", "oci")] {
        let digest_file = dir.path().join(format!("{tag}.digest"));
        clients
            .skopeo(
                "copy",
                &[
                    "--dest-cert-dir",
                    cert_dir.to_str().unwrap(),
                    "--dest-creds",
                    "mirror:mirror-pass",
                    "--format",
                    format,
                    "--digestfile",
                    digest_file.to_str().unwrap(),
                    &layout.oci_ref(),
                    &format!("docker://{host}/team/app:{tag}"),
                ],
            )
            .await
            .ok();
        digests.insert(tag, std::fs::read_to_string(&digest_file).unwrap().trim().to_owned());
    }
    std::fs::write(dir.path().join("password"), "mirror-pass").unwrap();
    let ca = dir.path().join("pki/ca.crt");
    let extra = format!("user = \"mirror\"\npassword_file = \"{}\"\nca = \"{}\"", dir.path().join("password").display(), ca.display());
    let proxy = proxy_registry("dist", &upstream.base_url, &extra, "").await;
    for (tag, digest) in &digests {
        let (status, headers, body) = get(&proxy, &format!("/v2/proxy/dist/team/app/manifests/{tag}")).await;
        assert_eq!(status, 200, "{tag}: {}", String::from_utf8_lossy(&body));
        assert_eq!(headers["docker-content-digest"].to_str().unwrap(), digest, "{tag}: the digest is the upstream's");
        let media_type = if *tag == "docker" { "application/vnd.docker.distribution.manifest.v2+json" } else { OCI_MANIFEST };
        assert_eq!(headers["content-type"], media_type, "{tag}: the type is the upstream's");
        assert_eq!(pull_image(&proxy, "proxy/dist/team/app", tag).await, *digest);
    }
    // skopeo through the proxy: the same digests.
    for (tag, digest) in &digests {
        let out = dir.path().join(format!("pulled-{tag}"));
        let source = format!("docker://{}/proxy/dist/team/app:{tag}", proxy.host);
        clients.skopeo("copy", &["--src-tls-verify=false", "--preserve-digests", &source, &format!("oci:{}:x", out.display())]).await.ok();
        assert_eq!(common::images::index_json_digest(&out, "x"), *digest);
    }

    // Wrong password: Basic refused, named.
    std::fs::write(dir.path().join("password"), "wrong").unwrap();
    let wrong = proxy_registry("dist", &upstream.base_url, &extra, "").await;
    let (status, code, message) = get_error(&wrong, "/v2/proxy/dist/team/app/manifests/oci").await;
    assert_eq!((status, code.as_str()), (502, "UPSTREAM_ERROR"));
    assert!(message.contains("upstream dist refused the proxy") && message.contains("401"), "{message}");
    // Without the CA, its certificate is not trusted (system roots only): unavailable, named.
    let untrusted = proxy_registry("dist", &upstream.base_url, "user = \"mirror\"\npassword_env = \"HOME\"", "").await;
    let (status, _, message) = get_error(&untrusted, "/v2/proxy/dist/team/app/manifests/oci").await;
    assert_eq!(status, 502);
    assert!(message.contains("upstream dist is unavailable") && message.to_lowercase().contains("certificate"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Faults: the upstream stopped, cut mid-blob

/// A portcullis upstream behind a cuttable proxy, holding `team/app:v1`, and a proxy registry for
/// it with `extra` settings.
struct Cuttable {
    upstream: TestRegistry,
    front: FaultProxy,
    proxy: TestRegistry,
    digest: String,
    manifest: Vec<u8>,
}

async fn cuttable(extra: &str, layer: &[u8]) -> Cuttable {
    let upstream = TestRegistry::start().await;
    let (digest, manifest) = push_image(&upstream, "team/app", "v1", "cut", &[layer]).await;
    let front = FaultProxy::start(upstream.host.parse().unwrap()).await;
    let proxy = proxy_registry("up", &front.endpoint(), &format!("timeout = \"5s\"\n{extra}"), "").await;
    Cuttable { upstream, front, proxy, digest, manifest }
}

#[tokio::test]
async fn a_stopped_upstream_serves_stale_tags_and_cached_digests() {
    let Cuttable { front, proxy, digest, manifest, upstream } = cuttable("tag_ttl = \"0s\"", b"layer").await;
    upstream.push_tiny_image("team/app", "uncached", "u").await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);

    front.cut_now();
    // By tag: the digest last seen, with a warning, counted.
    let (status, headers, body) = get(&proxy, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!((status, body.as_ref()), (200, manifest.as_slice()));
    let warning = headers["warning"].to_str().unwrap();
    assert!(warning.starts_with("110 portcullis \"stale: upstream up is unavailable"), "{warning}");
    assert!(metric(&proxy, "portcullis_proxy_stale_serves_total{upstream=\"up\"}").await >= 1.0);
    // By digest, and the blobs: never need the upstream.
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", &digest).await, digest);
    // What was never cached cannot be served: the upstream's failure, named.
    let (status, code, message) = get_error(&proxy, "/v2/proxy/up/team/app/manifests/uncached").await;
    assert_eq!((status, code.as_str()), (502, "UPSTREAM_ERROR"));
    assert!(message.contains("upstream up is unavailable"), "{message}");
    let listing: serde_json::Value = proxy.client.get(proxy.url("/api/v1/upstreams")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listing["upstreams"][0]["health"], "down", "{listing}");

    // Back up: fresh again, no warning.
    front.restore();
    let (status, headers, _) = get(&proxy, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!(status, 200);
    assert!(headers.get("warning").is_none());

    // With stale_for = 0s nothing is served stale.
    let strict = proxy_registry("up", &front.endpoint(), "tag_ttl = \"0s\"\nstale_for = \"0s\"\ntimeout = \"5s\"", "").await;
    assert_eq!(pull_image(&strict, "proxy/up/team/app", "v1").await, digest);
    front.cut_now();
    let (status, _, message) = get_error(&strict, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!(status, 502);
    assert!(message.contains("longer than stale_for"), "{message}");
}

#[tokio::test]
async fn a_failed_check_counts_as_a_check() {
    let Cuttable { front, proxy, digest, upstream: _upstream, .. } = cuttable("tag_ttl = \"1h\"", b"layer").await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    age_tag_check(&proxy, "proxy/up/team/app", "v1").await;
    front.cut_now();
    let before = front.accepted();
    let (status, headers, _) = get(&proxy, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!(status, 200);
    assert!(headers["warning"].to_str().unwrap().contains("stale"));
    let after_check = front.accepted();
    assert!(after_check > before, "the due check tried the upstream");
    // Within tag_ttl of the failed check: served stale, without trying the upstream again.
    for _ in 0..3 {
        let (status, headers, _) = get(&proxy, "/v2/proxy/up/team/app/manifests/v1").await;
        assert_eq!(status, 200);
        assert!(headers["warning"].to_str().unwrap().contains("stale"));
    }
    assert_eq!(front.accepted(), after_check, "no connection to a failing upstream within tag_ttl");
}

#[tokio::test]
async fn an_upstream_killed_mid_blob_fails_the_download_and_stores_nothing() {
    let layer = noise("mid-blob", 3 << 20);
    let layer_digest = sha256(&layer);
    let Cuttable { front, proxy, digest, upstream: _upstream, .. } = cuttable("", &layer).await;
    let (status, _, body) = get(&proxy, &format!("/v2/proxy/up/team/app/manifests/{digest}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    front.cut_after_bytes_back(1 << 20);
    let res = proxy.client.get(proxy.url(&format!("/v2/proxy/up/team/app/blobs/{layer_digest}"))).send().await.unwrap();
    assert_eq!(res.status(), 200, "the download started before the cut");
    assert_eq!(res.content_length(), Some(layer.len() as u64));
    let body = res.bytes().await;
    assert!(body.is_err(), "the client sees the download fail, not a short body: got {} bytes", body.map(|b| b.len()).unwrap_or_default());
    // Nothing stored: no blob, no link, no staged bytes left once the fetch has ended.
    for _ in 0..100 {
        if proxy.staged_uploads().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.staged_uploads().await.is_empty());
    assert!(!proxy.has_object(&common::blob_key(&layer_digest)).await);
    assert!(!proxy.has_object(&format!("repositories/proxy/up/team/app/_blobs/sha256/{}", &layer_digest[7..])).await);

    // The upstream back: the retry gets the whole blob.
    front.restore();
    let (status, _, bytes) = get(&proxy, &format!("/v2/proxy/up/team/app/blobs/{layer_digest}")).await;
    assert_eq!((status, sha256(&bytes)), (200, layer_digest.clone()));
    assert!(proxy.has_object(&common::blob_key(&layer_digest)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_fetch_each_blob_once() {
    let upstream = TestRegistry::start().await;
    let layer = noise("shared", 4 << 20);
    let layer_digest = sha256(&layer);
    let (digest, _) = push_image(&upstream, "team/app", "v1", "c", &[&layer]).await;
    let proxy = Arc::new(proxy_registry("up", &upstream.base_url, "", "").await);
    let pulls = (0..16).map(|_| {
        let proxy = proxy.clone();
        let path = format!("/v2/proxy/up/team/app/blobs/{layer_digest}");
        let manifest = format!("/v2/proxy/up/team/app/manifests/{digest}");
        tokio::spawn(async move {
            assert_eq!(get(&proxy, &manifest).await.0, 200);
            let (status, _, bytes) = get(&proxy, &path).await;
            (status, sha256(&bytes))
        })
    });
    for pull in futures::future::join_all(pulls).await {
        assert_eq!(pull.unwrap(), (200, layer_digest.clone()));
    }
    assert_eq!(upstream_gets(&upstream, "get_blob").await, 1.0, "one upstream fetch for 16 clients");
    assert_eq!(upstream_gets(&upstream, "get_manifest").await, 1.0, "one manifest fetch for 16 clients");
}

// ---------------------------------------------------------------------------------------------
// Tag moves

#[tokio::test]
async fn a_moved_upstream_tag_is_an_alarm_followed_or_held() {
    let upstream = TestRegistry::start().await;
    let (old, _) = upstream.push_tiny_image("team/app", "v1", "old").await;
    let follow = proxy_registry("up", &upstream.base_url, "tag_ttl = \"0s\"", "").await;
    let hold = proxy_registry("up", &upstream.base_url, "tag_ttl = \"0s\"\ntag_moves = \"hold\"", "").await;
    for proxy in [&follow, &hold] {
        assert_eq!(pull_image(proxy, "proxy/up/team/app", "v1").await, old);
        assert!(audit(proxy, "upstream_tag_moved").await.is_empty(), "a first pull is no move");
    }
    let (new, _) = upstream.push_tiny_image("team/app", "v1", "new").await;

    // follow: the new digest, and the alarm.
    assert_eq!(pull_image(&follow, "proxy/up/team/app", "v1").await, new);
    let moves = audit(&follow, "upstream_tag_moved").await;
    assert_eq!(moves.len(), 1, "{moves:?}");
    let detail = &moves[0]["detail"];
    assert_eq!((detail["upstream"].as_str(), detail["tag"].as_str(), detail["action"].as_str()), (Some("up"), Some("v1"), Some("follow")));
    assert_eq!((detail["old"].as_str(), detail["new"].as_str()), (Some(old.as_str()), Some(new.as_str())));
    assert_eq!(moves[0]["repository"], "proxy/up/team/app");
    assert_eq!(metric(&follow, "portcullis_proxy_tag_moves_total{action=\"follow\",upstream=\"up\"}").await, 1.0);

    // hold: the old digest, with a warning, until an admin accepts; one alarm however many pulls.
    for _ in 0..2 {
        let (status, headers, body) = get(&hold, "/v2/proxy/up/team/app/manifests/v1").await;
        assert_eq!((status, sha256(&body)), (200, old.clone()));
        assert!(headers["warning"].to_str().unwrap().contains(&format!("held: upstream up moved team/app:v1 to {new}")));
    }
    assert_eq!(audit(&hold, "upstream_tag_moved").await.len(), 1);
    assert_eq!(metric(&hold, "portcullis_proxy_tag_moves_total{action=\"hold\",upstream=\"up\"}").await, 1.0);
    // The new manifest is already here by digest (an accept works with the upstream down).
    assert_eq!(get(&hold, &format!("/v2/proxy/up/team/app/manifests/{new}")).await.0, 200);
    let accept = |query: String| hold.client.post(hold.url(&format!("/api/v1/upstreams/up/accept?{query}"))).send();
    let res = accept(format!("repository=proxy/up/team/app&tag=v1&digest={old}")).await.unwrap();
    assert_eq!(res.status(), 403, "the wrong digest is not accepted");
    let res = accept("repository=proxy/up/team/app&tag=v1".into()).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["digest"], new.as_str());
    assert_eq!(pull_image(&hold, "proxy/up/team/app", "v1").await, new);
    let accepted = audit(&hold, "upstream_tag_accepted").await;
    assert_eq!((accepted.len(), accepted[0]["detail"]["old"].as_str()), (1, Some(old.as_str())));
    let res = accept("repository=proxy/up/team/app&tag=v1".into()).await.unwrap();
    assert_eq!(res.status(), 403, "nothing is held any more");
}

// ---------------------------------------------------------------------------------------------
// A hostile upstream

/// One canned answer of [`Hostile`].
#[derive(Clone)]
struct Answer {
    /// The status; 0 answers nothing at all (the connection stays open, silent).
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the body a byte at a time, this far apart.
    drip: Option<Duration>,
}

impl Answer {
    fn ok(content_type: &str, body: Vec<u8>) -> Answer {
        Answer { status: 200, headers: vec![("Content-Type".into(), content_type.into())], body, drip: None }
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that answers each path (query ignored) with a canned answer,
/// however wrong, and 404 otherwise: an upstream that lies.
struct Hostile {
    addr: std::net::SocketAddr,
    answers: Arc<std::sync::Mutex<HashMap<String, Answer>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    async fn start(answers: HashMap<String, Answer>) -> Hostile {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers = Arc::new(std::sync::Mutex::new(answers));
        let shared = answers.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head);
                    let mut words = head.split_whitespace();
                    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
                    let path = target.split('?').next().unwrap_or_default();
                    let answer = answers.lock().unwrap().get(path).cloned();
                    let answer = answer.unwrap_or(Answer { status: 404, headers: vec![], body: b"{}".to_vec(), drip: None });
                    if answer.status == 0 {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let mut out = format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", answer.status, answer.body.len());
                    for (name, value) in &answer.headers {
                        out += &format!("{name}: {value}\r\n");
                    }
                    out += "\r\n";
                    if socket.write_all(out.as_bytes()).await.is_err() || method == "HEAD" {
                        return;
                    }
                    match answer.drip {
                        None => drop(socket.write_all(&answer.body).await),
                        Some(pause) => {
                            for byte in &answer.body {
                                if socket.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(pause).await;
                            }
                        }
                    }
                });
            }
        });
        Hostile { addr, answers: shared, task }
    }

    /// Answers `path` with `answer` from now on.
    fn answer(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.to_owned(), answer);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_hostile_upstream_is_refused_and_nothing_is_stored() {
    let good = noise("good", 3 << 20);
    let lie = noise("lie", 3 << 20);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = sha256(&config);
    let manifest = common::tiny_manifest(&config_digest, config.len(), &sha256(&good), good.len(), None).into_bytes();
    let digest = sha256(&manifest);
    let huge = sha256(b"huge");
    let slow = b"slow blob".to_vec();
    let redirected = sha256(b"redirected");
    let other_manifest = common::tiny_manifest(&config_digest, config.len(), &sha256(b"x"), 1, None).into_bytes();
    let mut answers = HashMap::new();
    let mut add = |path: String, answer: Answer| answers.insert(path, answer);
    add("/v2/".into(), Answer::ok("application/json", b"{}".to_vec()));
    add("/v2/team/app/manifests/v1".into(), Answer::ok(OCI_MANIFEST, manifest.clone()));
    add(format!("/v2/team/app/manifests/{digest}"), Answer::ok(OCI_MANIFEST, manifest.clone()));
    add(format!("/v2/team/app/blobs/{config_digest}"), Answer::ok("application/octet-stream", config.clone()));
    // The layer: the right length, the wrong bytes.
    add(format!("/v2/team/app/blobs/{}", sha256(&good)), Answer::ok("application/octet-stream", lie));
    // A manifest by digest whose bytes are another manifest's.
    let claimed = sha256(b"claimed manifest");
    add(format!("/v2/team/app/manifests/{claimed}"), Answer::ok(OCI_MANIFEST, other_manifest.clone()));
    // A tag whose Docker-Content-Digest is not its body's.
    let mut lying = Answer::ok(OCI_MANIFEST, other_manifest);
    lying.headers.push(("Docker-Content-Digest".into(), digest.clone()));
    add("/v2/team/app/manifests/lying".into(), lying);
    // A manifest larger than max_manifest_bytes.
    add("/v2/team/app/manifests/big".into(), Answer::ok(OCI_MANIFEST, vec![b' '; 100 << 10]));
    // A blob announced larger than max_blob_bytes.
    add(format!("/v2/team/app/blobs/{huge}"), Answer::ok("application/octet-stream", vec![0; 5 << 20]));
    // A blob sent a byte at a time.
    let mut dripping = Answer::ok("application/octet-stream", slow.clone());
    dripping.drip = Some(Duration::from_millis(400));
    add(format!("/v2/team/app/blobs/{}", sha256(&slow)), dripping);
    // A redirect to a cloud metadata address.
    let redirect = Answer { status: 307, headers: vec![("Location".into(), "http://169.254.169.254/latest/meta-data/".into())], body: vec![], drip: None };
    add(format!("/v2/team/app/blobs/{redirected}"), redirect);
    // A redirect to the upstream's own storage (here: the same loopback server), followed.
    let stored = noise("stored elsewhere", 1 << 20);
    let stored_digest = sha256(&stored);
    add(format!("/storage/{stored_digest}"), Answer::ok("application/octet-stream", stored.clone()));
    let to_storage = Answer { status: 307, headers: vec![("Location".into(), format!("/storage/{stored_digest}"))], body: vec![], drip: None };
    add(format!("/v2/team/app/blobs/{stored_digest}"), to_storage);
    // A token realm on another (plain http) host.
    let challenge = Answer {
        status: 401,
        headers: vec![("WWW-Authenticate".into(), "Bearer realm=\"http://10.0.0.1/token\",service=\"x\"".into())],
        body: vec![b'x'; 1 << 20],
        drip: None,
    };
    add("/v2/team/realm/manifests/v1".into(), challenge);
    let hostile = Hostile::start(answers).await;
    let text = format!(
        "[registry]\nmax_manifest_bytes = 65536\nmax_blob_bytes = 4194304\n[[upstreams]]\nname = \"liar\"\nurl = \"{}\"\ntimeout = \"1s\"\n[[namespaces]]\npattern = \"**\"\n",
        hostile.url()
    );
    let proxy = TestRegistry::with_config_text(&text).await;

    // The manifest is fine; its layer is not what it claims.
    assert_eq!(get(&proxy, "/v2/proxy/liar/team/app/manifests/v1").await.0, 200);
    let res = proxy.client.get(proxy.url(&format!("/v2/proxy/liar/team/app/blobs/{}", sha256(&good)))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err(), "the download fails: no complete-looking body of wrong bytes");
    let refused = |path: String, expected: &'static str| {
        let proxy = &proxy;
        async move {
            let (status, code, message) = get_error(proxy, &path).await;
            assert_eq!((status, code.as_str()), (502, "UPSTREAM_ERROR"), "{path}: {message}");
            assert!(message.contains("upstream liar") && message.contains(expected), "{path}: {message}");
        }
    };
    refused(format!("/v2/proxy/liar/team/app/manifests/{claimed}"), "hashing to").await;
    refused("/v2/proxy/liar/team/app/manifests/lying".into(), "announced").await;
    refused("/v2/proxy/liar/team/app/manifests/big".into(), "at most 65536").await;
    refused(format!("/v2/proxy/liar/team/app/blobs/{huge}"), "blobs are at most 4194304 bytes").await;
    refused(format!("/v2/proxy/liar/team/app/blobs/{redirected}"), "https only").await;
    refused("/v2/proxy/liar/team/realm/manifests/v1".into(), "token realm that is refused").await;
    let res = proxy.client.get(proxy.url(&format!("/v2/proxy/liar/team/app/blobs/{}", sha256(&slow)))).send().await.unwrap();
    assert_eq!(res.status(), 200, "the drip starts");
    assert!(res.bytes().await.is_err(), "a drip feed is cut off");
    let (status, _, bytes) = get(&proxy, &format!("/v2/proxy/liar/team/app/blobs/{stored_digest}")).await;
    assert_eq!((status, sha256(&bytes)), (200, stored_digest.clone()), "a redirect to the upstream's storage is followed");

    // Nothing of it stored: no bad blob, no stage left over.
    for _ in 0..100 {
        if proxy.staged_uploads().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.staged_uploads().await.is_empty());
    for stored in [sha256(&good), huge, sha256(&slow), claimed] {
        assert!(!proxy.has_object(&common::blob_key(&stored)).await, "{stored}");
    }
    assert!(metric(&proxy, "portcullis_proxy_upstream_errors_total{kind=\"invalid\",upstream=\"liar\"}").await >= 5.0);
}

/// A blob stored for a private repository is not handed to a proxied repository because its
/// upstream says (`HEAD` 200) that it has it: the upstream must serve the bytes, checked against
/// the digest, before this registry links them there. Otherwise an upstream that answers `HEAD`
/// 200 for every digest would let anyone who may pull the proxy namespace read any blob.
#[tokio::test]
async fn an_upstream_cannot_claim_a_blob_it_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let secret = noise("private layer", 64 << 10);
    let secret_digest = sha256(&secret);
    let mut answers = HashMap::new();
    answers.insert("/v2/".to_owned(), Answer::ok("application/json", b"{}".to_vec()));
    // "I have it": a HEAD with the right size, then anything but the bytes on a GET.
    let mut claim = Answer::ok("application/octet-stream", vec![0; secret.len()]);
    claim.headers.push(("Docker-Content-Digest".into(), secret_digest.clone()));
    answers.insert(format!("/v2/team/app/blobs/{secret_digest}"), claim);
    let hostile = Hostile::start(answers).await;
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("owner:{hash}\noutsider:{hash}\n")).unwrap();
    let text = format!(
        r#"
[[upstreams]]
name = "liar"
url = "{url}"
timeout = "2s"
[auth]
htpasswd = "{dir}/htpasswd"
challenge = "basic"
[[auth.rules]]
subjects = ["user:owner"]
repositories = ["**"]
actions = ["pull", "push"]
[[auth.rules]]
subjects = ["user:outsider"]
repositories = ["proxy/**"]
actions = ["pull"]
[[namespaces]]
pattern = "**"
"#,
        url = hostile.url(),
        dir = dir.path().display()
    );
    let proxy = TestRegistry::with_config_text(&text).await;
    let owner = with_basic(&proxy, "owner", "pw");
    let outsider = with_basic(&proxy, "outsider", "pw");
    push_image(&owner, "private/app", "v1", "private", &[&secret]).await;
    let (status, _, _) = get(&outsider, &format!("/v2/private/app/blobs/{secret_digest}")).await;
    assert!(status == 401 || status == 403, "the outsider may not pull private/app: {status}");

    let path = format!("/v2/proxy/liar/team/app/blobs/{secret_digest}");
    let head = outsider.client.head(outsider.url(&path)).send().await.unwrap();
    assert!(head.status() == 200 || head.status() == 404, "a HEAD reports what the upstream says: {}", head.status());
    let res = outsider.client.get(outsider.url(&path)).send().await.unwrap();
    let status = res.status().as_u16();
    let body = res.bytes().await;
    assert!(body.as_ref().map_or(true, |bytes| sha256(bytes) != secret_digest), "the private blob reached the outsider ({status})");
    assert!(!proxy.has_object(&format!("repositories/proxy/liar/team/app/_blobs/sha256/{}", &secret_digest[7..])).await, "linked on the upstream's word");

    // An upstream that does serve the bytes has the blob: linked (the stored copy is kept, one).
    hostile.answer(&format!("/v2/team/honest/blobs/{secret_digest}"), Answer::ok("application/octet-stream", secret.clone()));
    let (status, _, bytes) = get(&outsider, &format!("/v2/proxy/liar/team/honest/blobs/{secret_digest}")).await;
    assert_eq!((status, sha256(&bytes)), (200, secret_digest.clone()));
    assert!(proxy.has_object(&format!("repositories/proxy/liar/team/honest/_blobs/sha256/{}", &secret_digest[7..])).await);
}

/// An upstream that answers a tag check with 429 (rate limited), a 5xx, or not within its
/// timeout is failing: the tag is served stale, with the warning, and counted.
#[tokio::test]
async fn an_upstream_answering_429_5xx_or_too_slowly_serves_stale() {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = noise("stale", 1 << 10);
    let manifest = common::tiny_manifest(&sha256(&config), config.len(), &sha256(&layer), layer.len(), None).into_bytes();
    let digest = sha256(&manifest);
    let mut answers = HashMap::new();
    answers.insert("/v2/".to_owned(), Answer::ok("application/json", b"{}".to_vec()));
    let mut tagged = Answer::ok(OCI_MANIFEST, manifest.clone());
    tagged.headers.push(("Docker-Content-Digest".into(), digest.clone()));
    answers.insert("/v2/team/app/manifests/v1".to_owned(), tagged.clone());
    answers.insert(format!("/v2/team/app/manifests/{digest}"), tagged);
    answers.insert(format!("/v2/team/app/blobs/{}", sha256(&config)), Answer::ok("application/octet-stream", config.clone()));
    answers.insert(format!("/v2/team/app/blobs/{}", sha256(&layer)), Answer::ok("application/octet-stream", layer.clone()));
    let hostile = Hostile::start(answers).await;
    let text = format!("[[upstreams]]\nname = \"liar\"\nurl = \"{}\"\ntimeout = \"1s\"\n[[namespaces]]\npattern = \"**\"\n", hostile.url());
    let proxy = TestRegistry::with_config_text(&text).await;
    assert_eq!(pull_image(&proxy, "proxy/liar/team/app", "v1").await, digest);

    let faults = [(429, "429 Too Many Requests"), (503, "503 Service Unavailable"), (0, "timed out after 1s")];
    for (n, (status, said)) in faults.into_iter().enumerate() {
        hostile.answer("/v2/team/app/manifests/v1", Answer { status, headers: vec![], body: vec![], drip: None });
        age_tag_check(&proxy, "proxy/liar/team/app", "v1").await;
        let (got, headers, body) = get(&proxy, "/v2/proxy/liar/team/app/manifests/v1").await;
        assert_eq!((got, sha256(&body)), (200, digest.clone()), "{status}");
        let warning = headers.get("warning").map(|w| w.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(warning.starts_with("110 portcullis \"stale: upstream liar is unavailable") && warning.contains(said), "{status}: {warning}");
        assert_eq!(metric(&proxy, "portcullis_proxy_stale_serves_total{upstream=\"liar\"}").await, (n + 1) as f64);
    }
}

/// An upstream may not point the proxy further into the network than it stands itself: a token
/// realm or a redirect to a link-local (cloud metadata) or private address is refused before a
/// connection is made, even over https, and named in the error.
#[tokio::test]
async fn a_hostile_upstream_cannot_send_the_proxy_into_the_network() {
    let mut answers = HashMap::new();
    answers.insert("/v2/".to_owned(), Answer::ok("application/json", b"{}".to_vec()));
    let challenge = |realm: &str| Answer {
        status: 401,
        headers: vec![("WWW-Authenticate".into(), format!("Bearer realm=\"{realm}\",service=\"x\""))],
        body: vec![],
        drip: None,
    };
    let redirect = |to: &str| Answer { status: 307, headers: vec![("Location".into(), to.to_owned())], body: vec![], drip: None };
    let realms = [("metadata", "https://169.254.169.254/token"), ("lan", "https://10.0.0.1/token"), ("mapped", "https://[::ffff:a9fe:a9fe]/token")];
    for (repo, realm) in realms {
        answers.insert(format!("/v2/team/{repo}/manifests/v1"), challenge(realm));
    }
    let redirects = [
        (sha256(b"to metadata"), "https://169.254.169.254/latest/meta-data/"),
        (sha256(b"to the lan"), "https://192.168.1.1/admin"),
        (sha256(b"to nowhere"), "https://0.0.0.0/"),
    ];
    for (digest, to) in &redirects {
        answers.insert(format!("/v2/team/app/blobs/{digest}"), redirect(to));
    }
    let hostile = Hostile::start(answers).await;
    let text = format!("[[upstreams]]\nname = \"liar\"\nurl = \"{}\"\ntimeout = \"2s\"\n[[namespaces]]\npattern = \"**\"\n", hostile.url());
    let proxy = TestRegistry::with_config_text(&text).await;
    let paths = realms
        .iter()
        .map(|(repo, _)| format!("/v2/proxy/liar/team/{repo}/manifests/v1"))
        .chain(redirects.iter().map(|(digest, _)| format!("/v2/proxy/liar/team/app/blobs/{digest}")));
    for path in paths {
        let (status, code, message) = get_error(&proxy, &path).await;
        assert_eq!((status, code.as_str()), (502, "UPSTREAM_ERROR"), "{path}: {message}");
        assert!(message.contains("upstream liar") && message.contains("may not send the proxy"), "{path}: {message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Gates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_judge_proxied_images_on_evidence_from_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Key::generate();
    let ci = Key::generate();
    std::fs::write(dir.path().join("publisher.pub"), publisher.public_pem()).unwrap();
    std::fs::write(dir.path().join("ci.pub"), ci.public_pem()).unwrap();
    let upstream = TestRegistry::start().await;
    let (signed, _) = upstream.push_tiny_image("team/signed", "v1", "signed").await;
    cosign::sign(&upstream, "team/signed", &signed, &publisher).await;
    let (unsigned, _) = upstream.push_tiny_image("team/unsigned", "v1", "unsigned").await;
    let (referred, _) = upstream.push_tiny_image("team/referred", "v1", "referred").await;
    cosign::sign_with(&upstream, "team/referred", &referred, &publisher, cosign::Scheme::Referrer).await;

    let hash = bcrypt::hash("ci-pw", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("ci:{hash}\n")).unwrap();
    let toml = format!(
        r#"
[[trust.keys]]
name = "publisher"
public_key = "{dir}/publisher.pub"
[[trust.keys]]
name = "ci"
public_key = "{dir}/ci.pub"
[auth]
htpasswd = "{dir}/htpasswd"
challenge = "basic"
[[auth.rules]]
subjects = ["anonymous"]
repositories = ["**"]
actions = ["pull"]
[[auth.rules]]
subjects = ["user:ci"]
repositories = ["**"]
actions = ["pull", "push", "scanner", "promote"]
[[namespaces]]
pattern = "proxy/up/**"
[namespaces.gate]
signed_by = ["publisher"]
[[namespaces]]
pattern = "prod/**"
tags = "immutable"
promotion_only = true
[namespaces.gate]
signed_by = ["ci"]
"#,
        dir = dir.path().display()
    );
    let proxy = proxy_registry("up", &upstream.base_url, "", &toml).await;

    // The publisher's signature, fetched with the image (cosign's tag, and the Referrers API).
    assert_eq!(pull_image(&proxy, "proxy/up/team/signed", "v1").await, signed);
    assert!(proxy.has_object(&format!("repositories/proxy/up/team/signed/_tags/sha256-{}.sig", &signed[7..])).await);
    assert_eq!(pull_image(&proxy, "proxy/up/team/referred", "v1").await, referred);
    // No signature: never served, by tag or digest.
    let (status, code, message) = get_error(&proxy, "/v2/proxy/up/team/unsigned/manifests/v1").await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(message.contains("no signature from trusted identity 'publisher'"), "{message}");
    assert_eq!(get_error(&proxy, &format!("/v2/proxy/up/team/unsigned/manifests/{unsigned}")).await.0, 403);

    // Our CI vets it: signs it in the proxied repository (an evidence tag may be pushed there)
    // and promotes it; prod's gate passes on our signature.
    let ci_client = with_basic(&proxy, "ci", "ci-pw");
    cosign::sign(&ci_client, "proxy/up/team/unsigned", &unsigned, &ci).await;
    let res = ci_client
        .client
        .post(ci_client.url("/api/v1/promotions"))
        .json(&serde_json::json!({"source": format!("proxy/up/team/unsigned@{unsigned}"), "target": "prod/unsigned", "tags": ["v1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(pull_image(&proxy, "prod/unsigned", "v1").await, unsigned);
    // Still refused where only the publisher's signature counts.
    assert_eq!(get_error(&proxy, "/v2/proxy/up/team/unsigned/manifests/v1").await.0, 403);
}

/// A proxied namespace may require the publisher's keyless identity (a GitHub Actions workflow
/// certified by Fulcio, the signature in Rekor): the upstream's evidence is fetched with the
/// image and verified offline; a valid signature by another identity does not count.
#[tokio::test]
async fn a_proxied_image_passes_on_the_publishers_keyless_identity() {
    let upstream = TestRegistry::start().await;
    let workflow = common::sigstore::push_signed_image(&upstream, "team/released", "keyless-sig-uri-valid").await;
    let other = common::sigstore::push_signed_image(&upstream, "team/other", "keyless-sig-email-valid").await;
    let with = &workflow["verify_with"];
    let toml = format!(
        "[[trust.keyless]]\nname = \"publisher\"\nissuer = {:?}\nsubject = {:?}\ntrusted_root = {:?}\n[[namespaces]]\npattern = \"proxy/up/**\"\n[namespaces.gate]\nsigned_by = [\"publisher\"]\n",
        with["issuer"].as_str().unwrap(),
        with["identity"].as_str().unwrap(),
        common::sigstore::legacy_tag_dir().join(with["trusted_root"].as_str().unwrap()),
    );
    let proxy = proxy_registry("up", &upstream.base_url, "", &toml).await;
    let subject = workflow["subject_digest"].as_str().unwrap();
    assert_eq!(pull_image(&proxy, "proxy/up/team/released", subject).await, subject);
    assert!(proxy.has_object(&format!("repositories/proxy/up/team/released/_tags/{}", workflow["tag"].as_str().unwrap())).await, "the evidence is cached");
    let (status, code, message) = get_error(&proxy, &format!("/v2/proxy/up/team/other/manifests/{}", other["subject_digest"].as_str().unwrap())).await;
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(message.contains("no signature from trusted identity 'publisher'"), "{message}");
}

/// A gated mirror refuses an image that fails its gate however the pull names it: through
/// containerd's `?ns=`, dockerd's default upstream, with or without `library/`, by tag, by digest,
/// GET or HEAD. Routing comes before access and the gate, so every spelling is judged as the
/// repository it is served from.
#[tokio::test]
async fn a_gated_mirror_refuses_by_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Key::generate();
    std::fs::write(dir.path().join("publisher.pub"), publisher.public_pem()).unwrap();
    let upstream = TestRegistry::start().await;
    let (unsigned, _) = upstream.push_tiny_image("library/alpine", "3", "unsigned alpine").await;
    let toml = format!(
        "[[trust.keys]]\nname = \"publisher\"\npublic_key = \"{}/publisher.pub\"\n[[namespaces]]\npattern = \"proxy/docker.io/**\"\n[namespaces.gate]\nsigned_by = [\"publisher\"]\n",
        dir.path().display()
    );
    let extra = "namespace = \"proxy/docker.io/**\"\nhosts = [\"docker.io\"]\ndefault = true";
    let proxy = proxy_registry("hub", &upstream.base_url, extra, &toml).await;
    for name in ["library/alpine", "alpine", "proxy/docker.io/alpine", "proxy/docker.io/library/alpine"] {
        // (containerd sends `?ns=` with the name as the upstream spells it, never with the prefix.)
        let queries: &[&str] = if name.starts_with("proxy/") { &[""] } else { &["", "?ns=docker.io"] };
        for query in queries {
            for reference in ["3", unsigned.as_str()] {
                let path = format!("/v2/{name}/manifests/{reference}{query}");
                let (status, code, message) = get_error(&proxy, &path).await;
                assert_eq!((status, code.as_str()), (403, "DENIED"), "GET {path}: {message}");
                assert!(message.contains("no signature from trusted identity 'publisher'"), "{path}: {message}");
                let head = proxy.client.head(proxy.url(&path)).send().await.unwrap();
                assert_eq!(head.status(), 403, "HEAD {path}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The size cap

#[tokio::test]
async fn the_size_cap_evicts_the_least_recently_pulled_and_keeps_what_is_shared_or_promoted() {
    let upstream = TestRegistry::start().await;
    let (base, only_a, only_b, only_c, only_d) = (noise("base", 200_000), noise("a", 100_000), noise("b", 100_000), noise("c", 100_000), noise("d", 300_000));
    let (a, _) = push_image(&upstream, "team/app", "a", "a", &[&base, &only_a]).await;
    let (b, _) = push_image(&upstream, "team/app", "b", "b", &[&base, &only_b]).await;
    let (c, _) = push_image(&upstream, "team/c", "c", "c", &[&only_c]).await;
    let (d, _) = push_image(&upstream, "team/d", "d", "d", &[&only_d]).await;
    let proxy = proxy_registry("up", &upstream.base_url, "max_bytes = 450000", "[gc]\nevery = \"never\"\ngrace = \"1s\"").await;
    let registry = proxy.registry().clone();
    let stored = |bytes: &[u8]| {
        let key = common::blob_key(&sha256(bytes));
        let proxy = &proxy;
        async move { proxy.has_object(&key).await }
    };

    pull_image(&proxy, "proxy/up/team/app", "a").await;
    // A is promoted: its bytes are linked into prod/a too.
    let res = proxy.client.post(proxy.url("/api/v1/promotions")).json(&serde_json::json!({"source": format!("proxy/up/team/app@{a}"), "target": "prod/a", "tags": ["v1"]})).send().await.unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    pull_image(&proxy, "proxy/up/team/app", "b").await;
    registry.enforce_cache_caps().await.unwrap();
    assert!(stored(&only_a).await && stored(&only_b).await, "under the cap nothing goes");

    // C brings the cache over the cap: A, pulled least recently, goes from the cache.
    pull_image(&proxy, "proxy/up/team/c", "c").await;
    registry.enforce_cache_caps().await.unwrap();
    let hex = |digest: &str| digest[7..].to_owned();
    assert!(!proxy.has_object(&format!("repositories/proxy/up/team/app/_manifests/sha256/{}", hex(&a))).await);
    assert!(!proxy.has_object("repositories/proxy/up/team/app/_tags/a").await);
    assert!(stored(&only_a).await, "promoted content keeps its bytes");
    assert!(stored(&base).await, "a blob a kept manifest (B) references stays");
    assert!(proxy.has_object(&format!("repositories/proxy/up/team/app/_blobs/sha256/{}", hex(&sha256(&base)))).await);
    assert_eq!(pull_image(&proxy, "prod/a", "v1").await, a, "the promoted image is whole");
    let fetched = upstream_gets(&upstream, "get_blob").await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "b").await, b);
    assert_eq!(upstream_gets(&upstream, "get_blob").await, fetched, "B is still cached");

    // D needs room: B and C, least recently pulled, go; B's own layer is deleted, the shared
    // base stays for prod/a.
    pull_image(&proxy, "proxy/up/team/c", "c").await;
    pull_image(&proxy, "proxy/up/team/d", "d").await;
    registry.enforce_cache_caps().await.unwrap();
    // Eviction unlinks; the bytes are the collector's, whose protocol keeps them for a push of
    // the same bytes racing it (eviction once deleted them itself, outside that protocol).
    assert!(stored(&only_b).await, "eviction deletes no bytes");
    // Past the grace (1 s, judged to the second).
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    portcullis::gc::run(&registry, &portcullis::gc::Options { dry_run: false }).await.unwrap();
    assert!(!stored(&only_b).await, "evicted content no repository links is collected");
    assert!(stored(&base).await && stored(&only_a).await, "prod/a keeps its bytes");
    assert!(stored(&only_d).await);
    assert!(metric(&proxy, "portcullis_proxy_evicted_bytes_total{upstream=\"up\"}").await >= 100_000.0);
    let listing: serde_json::Value = proxy.client.get(proxy.url("/api/v1/upstreams")).send().await.unwrap().json().await.unwrap();
    assert!(listing["upstreams"][0]["cache_bytes"].as_u64().unwrap() <= 450_000, "{listing}");
    // Evicted content comes back from the upstream when pulled again.
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "b").await, b);
    assert_eq!(pull_image(&proxy, "proxy/up/team/c", "c").await, c);
    assert_eq!(pull_image(&proxy, "proxy/up/team/d", "d").await, d);
}

// ---------------------------------------------------------------------------------------------
// The CLI and metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portcullis_upstreams_lists_health_cache_and_errors() {
    let upstream = TestRegistry::start().await;
    let (digest, _) = upstream.push_tiny_image("team/app", "v1", "cli").await;
    let text = format!(
        "[[upstreams]]\nname = \"up\"\nurl = \"{}\"\nmax_bytes = 1000000\n[[upstreams]]\nname = \"gone\"\nurl = \"http://127.0.0.1:1\"\ntimeout = \"2s\"\n[[namespaces]]\npattern = \"**\"\n",
        upstream.base_url
    );
    let proxy = TestRegistry::with_config_text(&text).await;
    assert_eq!(pull_image(&proxy, "proxy/up/team/app", "v1").await, digest);
    assert_eq!(get_error(&proxy, "/v2/proxy/gone/x/manifests/v1").await.0, 502);
    proxy.registry().enforce_cache_caps().await.unwrap();

    let out = common::portcullis_async(vec!["upstreams".into(), "--registry".into(), proxy.base_url.clone()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one upstream is down: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = |name: &str| stdout.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no line for {name}: {stdout}")).to_owned();
    let up = line("up ");
    assert!(up.contains("up") && up.contains(&upstream.base_url) && up.contains("proxy/up/**") && up.contains("3 objects") && up.contains("of 976.6 KiB"), "{up}");
    let gone = line("gone ");
    assert!(gone.contains("down") && gone.contains("cannot be reached"), "{stdout}");
    let json = common::portcullis_async(vec!["upstreams".into(), "--registry".into(), proxy.base_url.clone(), "--json".into()]).await;
    let listing: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(listing["upstreams"][0]["cache_objects"], 3);

    for name in [
        "portcullis_proxy_hits_total",
        "portcullis_proxy_misses_total",
        "portcullis_proxy_upstream_duration_seconds_bucket",
        "portcullis_proxy_upstream_bytes_total",
        "portcullis_proxy_upstream_errors_total",
        "portcullis_proxy_cache_bytes",
    ] {
        let text = proxy.client.get(proxy.url("/metrics")).send().await.unwrap().text().await.unwrap();
        // Errors are the unreachable upstream's; the rest the working one's.
        let upstream = if name.contains("errors") { "gone" } else { "up" };
        let counted = text.lines().filter(|line| line.starts_with(&format!("{name}{{"))).any(|line| line.contains(&format!("upstream=\"{upstream}\"")) && !line.ends_with(" 0"));
        assert!(counted, "{name}: {text}");
    }
}
