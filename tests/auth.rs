//! Access control end to end, over TLS with a CA made in the test: skopeo and podman log in and
//! push and pull with Basic auth and through the Docker token flow; reqwest drives the protocol
//! edges (challenges, forged and expired tokens, OIDC claim rules, mounts, the catalog,
//! throttling, client certificates, certificate reload).
//!
//! Everything runs on 127.0.0.1; skopeo and podman are sandboxed (`common::clients`).

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::clients::Clients;
use common::pki::{SigningKey, TestPki};
use common::{images, sha256, RegistryClient, TestRegistry};

const GITHUB: &str = "https://token.actions.githubusercontent.com";

/// Users, keys and certificates for one test, in one temp dir.
struct Setup {
    dir: tempfile::TempDir,
    pki: TestPki,
    /// The registry's token signing key (`auth.signing_key`).
    registry_key: SigningKey,
    /// The fake CI issuer's key, published in `jwks.json`.
    issuer_key: SigningKey,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::new(&dir.path().join("pki"), "one");
        let registry_key = SigningKey::generate();
        let issuer_key = SigningKey::generate();
        std::fs::write(dir.path().join("token.key"), registry_key.pkcs8_pem()).expect("write token key");
        std::fs::write(dir.path().join("jwks.json"), issuer_key.jwks("ci-key")).expect("write jwks");
        // bcrypt cost 4 keeps the tests fast; production hashes use `htpasswd -B` (cost 5+).
        let line = |user: &str, password: &str| format!("{user}:{}\n", bcrypt::hash(password, 4).expect("bcrypt"));
        let htpasswd =
            [line("alice", "alice-pw"), line("bob", "bob-pw"), line("reader", "reader-pw"), line("release", "release-pw")].concat();
        std::fs::write(dir.path().join("htpasswd"), htpasswd).expect("write htpasswd");
        Setup { dir, pki, registry_key, issuer_key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The test configuration: TLS with optional client certificates, `challenge` ("bearer" or
    /// "basic"), and `extra` TOML appended inside `[auth]` (before the rules).
    fn config(&self, challenge: &str, extra: &str) -> String {
        format!(
            r#"
{tls}
[auth]
challenge = "{challenge}"
signing_key = "{token_key}"
htpasswd = "{htpasswd}"
{extra}

[auth.groups]
admins = ["bob"]
readers = ["reader"]
release = ["release"]

[[auth.oidc]]
name = "github"
issuer = "{GITHUB}"
audience = ["portcullis"]
jwks_file = "{jwks}"
[[auth.oidc.roles]]
role = "myrepo-main"
claims = {{ repository = "myorg/myrepo", ref = "refs/heads/main" }}
[[auth.oidc.roles]]
role = "myrepo-any-branch"
claims = {{ repository = "myorg/myrepo" }}

[[auth.rules]]
subjects = ["user:alice"]
repositories = ["build/**"]
actions = ["pull", "push"]

[[auth.rules]]
subjects = ["group:readers"]
repositories = ["build/**"]
actions = ["pull"]

[[auth.rules]]
subjects = ["group:admins"]
repositories = ["**"]
actions = ["admin"]

[[auth.rules]]
subjects = ["anonymous"]
repositories = ["public/**"]
actions = ["pull"]

[[auth.rules]]
subjects = ["group:release"]
repositories = ["build/**"]
actions = ["pull"]

[[auth.rules]]
subjects = ["group:release"]
repositories = ["prod/**"]
actions = ["pull", "promote"]

[[auth.rules]]
subjects = ["cert:admission-controller"]
repositories = ["build/**"]
actions = ["pull"]

[[auth.rules]]
subjects = ["role:myrepo-main"]
repositories = ["build/myorg/myrepo/**"]
actions = ["pull", "push"]

[[auth.rules]]
subjects = ["role:myrepo-any-branch"]
repositories = ["build/myorg/myrepo/**"]
actions = ["pull"]
"#,
            tls = self.pki.server_tls_toml(),
            token_key = self.path("token.key").display(),
            htpasswd = self.path("htpasswd").display(),
            jwks = self.path("jwks.json").display(),
        )
    }

    async fn start(&self, challenge: &str, extra: &str) -> TestRegistry {
        TestRegistry::with_config_text(&self.config(challenge, extra)).await
    }

    /// A client of `registry` over TLS that sends `authorization` with every request.
    fn client(&self, registry: &TestRegistry, authorization: Option<String>) -> RegistryClient {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(reqwest::header::AUTHORIZATION, value.parse().expect("header value"));
        }
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).expect("CA"))
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .expect("client");
        registry.with_client(client)
    }

    /// A CI token from the configured issuer with `claims` on top of valid defaults.
    fn oidc_token(&self, claims: serde_json::Value) -> String {
        let mut all = serde_json::json!({
            "iss": GITHUB, "aud": "portcullis", "exp": now() + 300, "iat": now(), "nbf": now(),
            "sub": "repo:myorg/myrepo:ref:refs/heads/main",
            "repository": "myorg/myrepo", "ref": "refs/heads/main",
        });
        for (key, value) in claims.as_object().expect("claims object") {
            all[key] = value.clone();
        }
        self.issuer_key.sign(Some("ci-key"), &all)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Asks the token endpoint for `scopes` with `authorization`; returns status and JSON body.
async fn token(api: &RegistryClient, authorization: Option<&str>, scopes: &[&str]) -> (u16, serde_json::Value) {
    let query: Vec<(&str, &str)> = std::iter::once(("service", "portcullis")).chain(scopes.iter().map(|s| ("scope", *s))).collect();
    let mut request = api.client.get(api.url("/auth/token")).query(&query);
    if let Some(value) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let res = request.send().await.expect("token request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

async fn bearer(api: &RegistryClient, authorization: Option<&str>, scopes: &[&str]) -> String {
    let (status, body) = token(api, authorization, scopes).await;
    assert_eq!(status, 200, "token endpoint: {body}");
    format!("Bearer {}", body["token"].as_str().expect("token"))
}

/// The claims of a JWT, unverified (to look at what was granted).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.trim_start_matches("Bearer ").split('.').nth(1).expect("payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

fn challenge(res: &reqwest::Response) -> String {
    res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Starts a monolithic blob push and returns the response (201 when allowed).
async fn post_blob(api: &RegistryClient, repo: &str, bytes: &[u8]) -> reqwest::Response {
    let url = api.url(&format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(bytes)));
    api.client.post(url).body(bytes.to_vec()).send().await.expect("post blob")
}

async fn get_manifest(api: &RegistryClient, repo: &str, reference: &str) -> reqwest::Response {
    api.client
        .get(api.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", common::OCI_MANIFEST)
        .send()
        .await
        .expect("get manifest")
}

// ---------------------------------------------------------------------------------------------
// The protocol, with reqwest

#[tokio::test]
async fn without_an_auth_section_everything_stays_open() {
    let registry = TestRegistry::start().await;
    registry.push_tiny_image("build/app", "v1", "open").await;
    let res = registry.client.get(registry.url("/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = registry.client.get(registry.url("/auth/token")).send().await.unwrap();
    assert_eq!(res.status(), 404, "no token endpoint without [auth]");
    let catalog: serde_json::Value = registry.client.get(registry.url("/v2/_catalog")).send().await.unwrap().json().await.unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["build/app"]));
}

#[tokio::test]
async fn anonymous_requests_get_a_bearer_challenge_naming_the_scope() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let anonymous = setup.client(&registry, None);
    let realm = format!("https://{}/auth/token", registry.host);

    let res = anonymous.client.get(anonymous.url("/v2/")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(challenge(&res), format!("Bearer realm=\"{realm}\",service=\"portcullis\""));
    assert_eq!(common::error_code(res).await, "UNAUTHORIZED");

    let res = get_manifest(&anonymous, "build/app", "v1").await;
    assert_eq!(res.status(), 401);
    assert_eq!(challenge(&res), format!("Bearer realm=\"{realm}\",service=\"portcullis\",scope=\"repository:build/app:pull\""));

    let res = post_blob(&anonymous, "build/app", b"x").await;
    assert_eq!(challenge(&res), format!("Bearer realm=\"{realm}\",service=\"portcullis\",scope=\"repository:build/app:pull,push\""));

    // Health stays open for probes.
    assert_eq!(anonymous.client.get(anonymous.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_wrong_password_gets_unauthorized() {
    let setup = Setup::new();
    let registry = setup.start("basic", "").await;
    for (user, password) in [("alice", "wrong"), ("alice", ""), ("nobody", "alice-pw")] {
        let client = setup.client(&registry, Some(basic(user, password)));
        let res = client.client.get(client.url("/v2/")).send().await.unwrap();
        assert_eq!(res.status(), 401, "{user}:{password}");
        assert_eq!(challenge(&res), "Basic realm=\"portcullis\"");
        assert_eq!(common::error_code(res).await, "UNAUTHORIZED");
        let (status, body) = token(&client, Some(&basic(user, password)), &["repository:build/app:pull"]).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (401, Some("UNAUTHORIZED")), "{body}");
    }
    let alice = setup.client(&registry, Some(basic("alice", "alice-pw")));
    assert_eq!(alice.client.get(alice.url("/v2/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn basic_auth_on_the_api_follows_the_rules() {
    let setup = Setup::new();
    let registry = setup.start("basic", "").await;
    let alice = setup.client(&registry, Some(basic("alice", "alice-pw")));
    let reader = setup.client(&registry, Some(basic("reader", "reader-pw")));
    let bob = setup.client(&registry, Some(basic("bob", "bob-pw")));
    let anonymous = setup.client(&registry, None);

    alice.push_tiny_image("build/app", "v1", "basic").await;
    assert_eq!(get_manifest(&reader, "build/app", "v1").await.status(), 200);
    let res = post_blob(&reader, "build/app", b"reader push").await;
    assert_eq!(res.status(), 403, "a reader may not push");
    assert_eq!(common::error_code(res).await, "DENIED");
    let res = post_blob(&alice, "prod/app", b"alice to prod").await;
    assert_eq!(res.status(), 403, "alice may not push outside build/");
    let res = alice.client.delete(alice.url("/v2/build/app/manifests/v1")).send().await.unwrap();
    assert_eq!(res.status(), 403, "push does not include delete");

    // Anonymous pull is configured per namespace: public/ yes, build/ no.
    bob.push_tiny_image("public/base", "v1", "public").await;
    assert_eq!(get_manifest(&anonymous, "public/base", "v1").await.status(), 200);
    let res = get_manifest(&anonymous, "build/app", "v1").await;
    assert_eq!(res.status(), 401);
    assert_eq!(challenge(&res), "Basic realm=\"portcullis\"");
    assert_eq!(post_blob(&anonymous, "public/base", b"anonymous push").await.status(), 401);
}

#[tokio::test]
async fn a_token_for_build_app_pull_is_refused_for_push_and_for_prod_app() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let api = setup.client(&registry, None);
    let bob = setup.client(&registry, Some(bearer(&api, Some(&basic("bob", "bob-pw")), &["repository:build/app:pull,push", "repository:prod/app:pull,push"]).await));
    bob.push_tiny_image("build/app", "v1", "scoped").await;

    // alice holds pull and push on build/**, but asks for pull on build/app only.
    let pull_only = bearer(&api, Some(&basic("alice", "alice-pw")), &["repository:build/app:pull"]).await;
    assert_eq!(claims_of(&pull_only)["access"], serde_json::json!([{"type": "repository", "name": "build/app", "actions": ["pull"]}]));
    let alice = setup.client(&registry, Some(pull_only));
    assert_eq!(get_manifest(&alice, "build/app", "v1").await.status(), 200);

    let res = post_blob(&alice, "build/app", b"pushed with a pull token").await;
    assert_eq!(res.status(), 401);
    assert!(challenge(&res).ends_with(",scope=\"repository:build/app:pull,push\",error=\"insufficient_scope\""), "{}", challenge(&res));
    assert_eq!(common::error_code(res).await, "UNAUTHORIZED");
    let res = get_manifest(&alice, "prod/app", "v1").await;
    assert_eq!(res.status(), 401, "the token says nothing about prod/app");
    assert!(challenge(&res).contains("error=\"insufficient_scope\""));
    let res = get_manifest(&alice, "build/other", "v1").await;
    assert_eq!(res.status(), 401, "nor about another repository of build/");

    // What may not be had is left out of the token, not refused: alice asks for prod/app.
    let (status, body) = token(&api, Some(&basic("alice", "alice-pw")), &["repository:prod/app:pull,push", "repository:build/app:pull,push,delete"]).await;
    assert_eq!(status, 200);
    assert_eq!(claims_of(body["token"].as_str().unwrap())["access"], serde_json::json!([{"type": "repository", "name": "build/app", "actions": ["pull", "push"]}]));
    assert!(body["expires_in"].as_u64().unwrap() <= 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["access_token"], body["token"]);

    // The OAuth2 form variant issues the same.
    let form = [("grant_type", "password"), ("username", "alice"), ("password", "alice-pw"), ("service", "portcullis"), ("scope", "repository:build/app:pull")];
    let res = api.client.post(api.url("/auth/token")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["sub"], "alice");
}

#[tokio::test]
async fn expired_resigned_and_algorithm_swapped_tokens_are_refused() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let api = setup.client(&registry, None);
    let bob = setup.client(&registry, Some(bearer(&api, Some(&basic("bob", "bob-pw")), &["repository:build/app:pull,push"]).await));
    bob.push_tiny_image("build/app", "v1", "forged").await;

    let genuine = bearer(&api, Some(&basic("alice", "alice-pw")), &["repository:build/app:pull"]).await;
    let genuine = genuine.trim_start_matches("Bearer ").to_owned();
    let claims = claims_of(&genuine);
    let alive = setup.client(&registry, Some(format!("Bearer {genuine}")));
    assert_eq!(get_manifest(&alive, "build/app", "v1").await.status(), 200, "the genuine token works");

    let mut expired = claims.clone();
    expired["exp"] = serde_json::json!(now() - 60);
    expired["nbf"] = serde_json::json!(now() - 400);
    expired["iat"] = serde_json::json!(now() - 400);
    let mut widened = claims.clone();
    widened["access"] = serde_json::json!([{"type": "repository", "name": "build/app", "actions": ["pull", "push"]}]);
    let mut other_audience = claims.clone();
    other_audience["aud"] = serde_json::json!("another-registry");

    let (header_b64, payload_b64) = {
        let mut parts = genuine.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let hs256 = |secret: &[u8]| {
        let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let signature = ring::hmac::sign(&key, format!("{header}.{payload_b64}").as_bytes());
        format!("{header}.{payload_b64}.{}", b64url(signature.as_ref()))
    };
    let stranger = SigningKey::generate();
    let forged: Vec<(&str, String)> = vec![
        ("expired, signed with the registry's own key", setup.registry_key.sign(None, &expired)),
        ("re-signed by another key", stranger.sign(None, &claims)),
        ("widened scope re-signed by another key", stranger.sign(None, &widened)),
        ("widened scope with the original signature", format!("{header_b64}.{}.{}", b64url(widened.to_string().as_bytes()), genuine.rsplit('.').next().unwrap())),
        ("for another audience", setup.registry_key.sign(None, &other_audience)),
        ("alg none", format!("{}.{payload_b64}.", b64url(br#"{"alg":"none","typ":"JWT"}"#))),
        ("alg none without the dot", format!("{}.{payload_b64}", b64url(br#"{"alg":"none"}"#))),
        ("HS256 keyed with the public key PEM", hs256(setup.registry_key.public_pem().as_bytes())),
        ("HS256 keyed with the raw public key", hs256(setup.registry_key.key.public_key_raw())),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (what, token) in forged {
        let client = setup.client(&registry, Some(format!("Bearer {token}")));
        let res = get_manifest(&client, "build/app", "v1").await;
        assert_eq!(res.status(), 401, "{what}");
        assert!(challenge(&res).contains("error=\"invalid_token\""), "{what}: {}", challenge(&res));
        assert_eq!(common::error_code(res).await, "UNAUTHORIZED", "{what}");
    }
}

#[tokio::test]
async fn oidc_tokens_from_the_wrong_repository_or_branch_get_no_push() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let api = setup.client(&registry, None);
    let scope = "repository:build/myorg/myrepo/app:pull,push";
    let granted = |token: &str| claims_of(token)["access"].clone();

    // Main branch of the right repository: push, by token exchange (OIDC token as bearer)...
    let main = setup.oidc_token(serde_json::json!({}));
    let exchanged = bearer(&api, Some(&format!("Bearer {main}")), &[scope]).await;
    assert_eq!(granted(&exchanged), serde_json::json!([{"type": "repository", "name": "build/myorg/myrepo/app", "actions": ["pull", "push"]}]));
    let ci = setup.client(&registry, Some(exchanged.clone()));
    ci.push_tiny_image("build/myorg/myrepo/app", "v1", "ci").await;
    assert_eq!(claims_of(&exchanged)["sub"], "github:repo:myorg/myrepo:ref:refs/heads/main");

    // ... and as the password of Basic auth.
    let as_password = bearer(&api, Some(&basic("ci", &main)), &[scope]).await;
    assert_eq!(granted(&as_password), granted(&exchanged));

    // Another branch of the same repository: pull only.
    let branch = setup.oidc_token(serde_json::json!({"ref": "refs/heads/feature", "sub": "repo:myorg/myrepo:ref:refs/heads/feature"}));
    let token = bearer(&api, Some(&format!("Bearer {branch}")), &[scope]).await;
    assert_eq!(granted(&token), serde_json::json!([{"type": "repository", "name": "build/myorg/myrepo/app", "actions": ["pull"]}]));
    let res = post_blob(&setup.client(&registry, Some(token)), "build/myorg/myrepo/app", b"from a branch").await;
    assert_eq!(res.status(), 401);

    // Another repository: nothing.
    let other = setup.oidc_token(serde_json::json!({"repository": "myorg/other", "sub": "repo:myorg/other:ref:refs/heads/main"}));
    let token = bearer(&api, Some(&format!("Bearer {other}")), &[scope]).await;
    assert_eq!(granted(&token), serde_json::json!([]));
    let res = post_blob(&setup.client(&registry, Some(token)), "build/myorg/myrepo/app", b"from elsewhere").await;
    assert_eq!(res.status(), 401);

    // Tokens that are not valid CI tokens are refused outright.
    let stranger = SigningKey::generate();
    let mut valid = claims_of(&main);
    valid["exp"] = serde_json::json!(now() + 300);
    let mut expired = valid.clone();
    expired["exp"] = serde_json::json!(now() - 120);
    let mut wrong_audience = valid.clone();
    wrong_audience["aud"] = serde_json::json!("someone-else");
    let mut wrong_issuer = valid.clone();
    wrong_issuer["iss"] = serde_json::json!("https://evil.example");
    let payload = b64url(valid.to_string().as_bytes());
    let refused = vec![
        ("signed by another key", stranger.sign(Some("ci-key"), &valid)),
        ("expired", setup.issuer_key.sign(Some("ci-key"), &expired)),
        ("for another audience", setup.issuer_key.sign(Some("ci-key"), &wrong_audience)),
        ("from another issuer", setup.issuer_key.sign(Some("ci-key"), &wrong_issuer)),
        ("alg none", format!("{}.{payload}.", b64url(br#"{"alg":"none","kid":"ci-key"}"#))),
    ];
    for (what, token) in refused {
        let (status, body) = token_response(&api, &format!("Bearer {token}"), scope).await;
        assert_eq!(status, 401, "{what}: {body}");
        let res = setup.client(&registry, Some(basic("ci", &token))).client.get(api.url("/v2/")).send().await.unwrap();
        assert_eq!(res.status(), 401, "{what} as a password");
    }
}

#[tokio::test]
async fn oidc_keys_from_a_jwks_url_are_fetched_once_and_cached() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let setup = Setup::new();
    // The issuer's JWKS endpoint: plain HTTP on loopback, counting fetches.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/.well-known/jwks", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = setup.issuer_key.jwks("ci-key");
    let counter = fetches.clone();
    let jwks_server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let response = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}", jwks.len());
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    let config = setup.config("bearer", "").replace(
        &format!("jwks_file = \"{}\"", setup.path("jwks.json").display()),
        &format!("jwks_url = \"{jwks_url}\""),
    );
    assert!(config.contains("jwks_url"), "the config names the URL");
    let registry = TestRegistry::with_config_text(&config).await;
    let api = setup.client(&registry, None);
    assert_eq!(fetches.load(Ordering::SeqCst), 0, "nothing is fetched before a token arrives");

    let scope = "repository:build/myorg/myrepo/app:pull,push";
    for _ in 0..3 {
        let token = bearer(&api, Some(&format!("Bearer {}", setup.oidc_token(serde_json::json!({})))), &[scope]).await;
        assert_eq!(claims_of(&token)["access"][0]["actions"], serde_json::json!(["pull", "push"]));
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the JWKS is fetched once and cached");

    // A key id the cached set lacks may mean rotation, but refetches are rate-limited.
    let mut claims = claims_of(&setup.oidc_token(serde_json::json!({})));
    claims["exp"] = serde_json::json!(now() + 300);
    let unknown_kid = setup.issuer_key.sign(Some("rotated"), &claims);
    let (status, _) = token(&api, Some(&format!("Bearer {unknown_kid}")), &[scope]).await;
    assert_eq!(status, 401);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "no refetch within a minute of the last");
    jwks_server.abort();
}

#[tokio::test]
async fn a_reload_applies_new_users_and_rules_and_keeps_failure_counts() {
    let setup = Setup::new();
    let throttle = "\n[auth.throttle]\nfailures_per_address = 100\nfailures_per_user = 2\nwindow_secs = 600\n";
    let with_throttle = |text: String| text.replace("\n[auth.groups]", &format!("{throttle}\n[auth.groups]"));
    let registry = TestRegistry::with_config_text(&with_throttle(setup.config("basic", ""))).await;
    let api = setup.client(&registry, None);
    let status_of = |user: &str, password: &str| {
        let request = api.client.get(api.url("/v2/")).header("authorization", basic(user, password));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status_of("carol", "carol-pw").await, 401, "carol does not exist yet");
    assert_eq!(status_of("alice", "wrong").await, 401);
    assert_eq!(status_of("alice", "wrong").await, 401);
    assert_eq!(status_of("alice", "alice-pw").await, 429, "alice is blocked");

    let mut htpasswd = std::fs::read_to_string(setup.path("htpasswd")).unwrap();
    htpasswd.push_str(&format!("carol:{}\n", bcrypt::hash("carol-pw", 4).unwrap()));
    std::fs::write(setup.path("htpasswd"), htpasswd).unwrap();
    let overrides = portcullis::config::Overrides { data_dir: Some(registry.data_dir.clone()), ..Default::default() };
    let config = portcullis::config::Config::parse(&with_throttle(setup.config("basic", "")), "reloaded", &overrides).unwrap();
    registry.reload(config).expect("reload");

    assert_eq!(status_of("carol", "carol-pw").await, 200, "the new user logs in");
    assert_eq!(status_of("alice", "alice-pw").await, 429, "a reload does not lift a block");
    // Turning TLS off needs a restart: refused whole.
    let plain = portcullis::config::Config::parse("[auth]\n", "plain", &overrides).unwrap();
    let err = registry.reload(plain).unwrap_err();
    assert!(err.contains("needs a restart"), "{err}");
    assert_eq!(status_of("carol", "carol-pw").await, 200, "the configuration in force stays");
}

async fn token_response(api: &RegistryClient, authorization: &str, scope: &str) -> (u16, serde_json::Value) {
    token(api, Some(authorization), &[scope]).await
}

#[tokio::test]
async fn a_mount_from_a_repository_the_caller_cannot_pull_is_refused() {
    let setup = Setup::new();
    let registry = setup.start("basic", "").await;
    let bob = setup.client(&registry, Some(basic("bob", "bob-pw")));
    let alice = setup.client(&registry, Some(basic("alice", "alice-pw")));
    let secret = b"secret layer";
    let digest = bob.push_blob("secret/app", secret).await;
    let shared = b"shared layer";
    let shared_digest = bob.push_blob("build/base", shared).await;

    let mount = |from: &str, digest: &str| alice.url(&format!("/v2/build/app/blobs/uploads/?mount={digest}&from={from}"));
    let res = alice.client.post(mount("secret/app", &digest)).send().await.unwrap();
    assert_eq!(res.status(), 202, "not mounted: an ordinary upload session instead");
    assert!(res.headers()["location"].to_str().unwrap().starts_with("/v2/build/app/blobs/uploads/"));
    let res = alice.client.head(alice.url(&format!("/v2/build/app/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(res.status(), 404, "the secret blob did not reach build/app");

    let res = alice.client.post(mount("build/base", &shared_digest)).send().await.unwrap();
    assert_eq!(res.status(), 201, "a mount from a repository alice may pull works");
    let res = alice.client.head(alice.url(&format!("/v2/build/app/blobs/{shared_digest}"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_catalog_lists_only_what_the_caller_may_pull() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let api = setup.client(&registry, None);
    let all = ["build/app", "prod/app", "public/base", "secret/x"];
    let bob_token = bearer(&api, Some(&basic("bob", "bob-pw")), &all.map(|r| format!("repository:{r}:push,pull")).iter().map(String::as_str).collect::<Vec<_>>()).await;
    let bob = setup.client(&registry, Some(bob_token));
    for repo in all {
        bob.push_tiny_image(repo, "v1", repo).await;
    }
    let catalog = |client: RegistryClient| async move {
        let res = client.client.get(client.url("/v2/_catalog")).send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json::<serde_json::Value>().await.unwrap())
    };

    let (status, _) = catalog(api.clone()).await;
    assert_eq!(status, 401, "anonymous callers are asked to authenticate");
    let alice = setup.client(&registry, Some(bearer(&api, Some(&basic("alice", "alice-pw")), &["registry:catalog:*"]).await));
    assert_eq!(catalog(alice).await.1["repositories"], serde_json::json!(["build/app", "public/base"]));
    let bob = setup.client(&registry, Some(bearer(&api, Some(&basic("bob", "bob-pw")), &["registry:catalog:*"]).await));
    assert_eq!(catalog(bob.clone()).await.1["repositories"], serde_json::json!(all));
    let anonymous = setup.client(&registry, Some(bearer(&api, None, &["registry:catalog:*"]).await));
    assert_eq!(catalog(anonymous).await.1["repositories"], serde_json::json!(["public/base"]));

    // Pagination still works when entries are filtered out.
    let alice = setup.client(&registry, Some(bearer(&api, Some(&basic("alice", "alice-pw")), &["registry:catalog:*"]).await));
    let res = alice.client.get(alice.url("/v2/_catalog?n=1")).send().await.unwrap();
    assert!(res.headers().contains_key("link"));
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["repositories"], serde_json::json!(["build/app"]));
    let res = alice.client.get(alice.url("/v2/_catalog?n=1&last=build/app")).send().await.unwrap();
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["repositories"], serde_json::json!(["public/base"]));
}

#[tokio::test]
async fn login_brute_force_is_throttled() {
    let setup = Setup::new();
    let throttle = "[auth.throttle]\nfailures_per_address = 6\nfailures_per_user = 3\nwindow_secs = 600\n";
    let registry = TestRegistry::with_config_text(&setup.config("basic", "").replace("\n[auth.groups]", &format!("\n{throttle}\n[auth.groups]"))).await;
    let api = setup.client(&registry, None);
    let try_login = |user: &str, password: &str| {
        let client = api.client.clone();
        let url = api.url("/v2/");
        let value = basic(user, password);
        async move { client.get(url).header("authorization", value).send().await.unwrap() }
    };

    for attempt in 0..3 {
        assert_eq!(try_login("alice", &format!("guess{attempt}")).await.status(), 401);
    }
    let res = try_login("alice", "alice-pw").await;
    assert_eq!(res.status(), 429, "alice is blocked, even with her password");
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(common::error_code(res).await, "TOOMANYREQUESTS");
    let (status, _) = token(&api, Some(&basic("alice", "alice-pw")), &[]).await;
    assert_eq!(status, 429, "the token endpoint too");
    assert_eq!(try_login("bob", "bob-pw").await.status(), 200, "other users are not blocked");

    for attempt in 0..3 {
        assert_eq!(try_login("bob", &format!("guess{attempt}")).await.status(), 401);
    }
    // Six failures from this address: now every login from it waits, for any user.
    let res = try_login("reader", "reader-pw").await;
    assert_eq!(res.status(), 429, "the address is blocked");
    let (status, _) = token(&api, None, &[]).await;
    assert_eq!(status, 429, "including anonymous token requests from the address");
    // Requests without credentials are not logins, and still served.
    assert_eq!(api.client.get(api.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn secrets_never_appear_in_logs() {
    let logs = capture_logs();
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let api = setup.client(&registry, None);
    let password = "alice-pw";
    let wrong = "wrong-Pa55word-for-the-log-test";
    token(&api, Some(&basic("alice", wrong)), &["repository:build/app:pull"]).await;
    let issued = bearer(&api, Some(&basic("alice", password)), &["repository:build/app:pull"]).await;
    let alice = setup.client(&registry, Some(basic("alice", wrong)));
    alice.client.get(alice.url("/v2/")).send().await.unwrap();
    let with_token = setup.client(&registry, Some(issued.clone()));
    get_manifest(&with_token, "build/app", "v1").await;
    let oidc = setup.oidc_token(serde_json::json!({}));
    token(&api, Some(&format!("Bearer {oidc}")), &[]).await;
    drop(registry);

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("failed login"), "the capture works: {text}");
    let token_only = issued.trim_start_matches("Bearer ");
    let signature = token_only.rsplit('.').next().unwrap();
    let htpasswd = std::fs::read_to_string(setup.path("htpasswd")).unwrap();
    let hash = htpasswd.lines().next().unwrap().split_once(':').unwrap().1;
    for secret in [password, wrong, signature, oidc.rsplit('.').next().unwrap(), hash, &basic("alice", wrong)[6..]] {
        assert!(!text.contains(secret), "a secret appears in the logs: {secret}");
    }
}

/// Captures every log line of this test binary from now on (the subscriber is process-wide).
fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        logs
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn promotion_needs_promote_on_the_target_and_records_the_caller() {
    let setup = Setup::new();
    let namespaces = "\n[[namespaces]]\npattern = \"prod/**\"\ntags = \"immutable\"\npromotion_only = true\n\n[[namespaces]]\npattern = \"**\"\ntags = \"mutable\"\n";
    let registry = TestRegistry::with_config_text(&format!("{}{namespaces}", setup.config("basic", ""))).await;
    let bob = setup.client(&registry, Some(basic("bob", "bob-pw")));
    let (digest, _) = bob.push_tiny_image("build/app", "v1", "promoted").await;
    let request = serde_json::json!({"source": "build/app:v1", "target": "prod/app", "tags": ["v1"]});
    let promote = |client: RegistryClient| {
        let request = request.clone();
        async move { client.client.post(client.url("/api/v1/promotions")).json(&request).send().await.unwrap() }
    };

    let res = promote(setup.client(&registry, None)).await;
    assert_eq!(res.status(), 401, "anonymous callers are asked to log in");
    let res = promote(setup.client(&registry, Some(basic("alice", "alice-pw")))).await;
    assert_eq!(res.status(), 403, "alice may push to build/ but not promote into prod/");
    assert_eq!(common::error_code(res).await, "DENIED");
    let res = promote(setup.client(&registry, Some(basic("release", "release-pw")))).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    let release = setup.client(&registry, Some(basic("release", "release-pw")));
    let listed: serde_json::Value =
        release.client.get(release.url("/api/v1/promotions?repository=prod/app")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["promotions"][0]["actor"], "release", "{listed}");
    assert_eq!(listed["promotions"][0]["digest"], digest.as_str());
    assert_eq!(get_manifest(&release, "prod/app", "v1").await.status(), 200);

    // The audit log shows each caller only the repositories it administers.
    let audit = |client: RegistryClient| async move {
        client.client.get(client.url("/api/v1/audit")).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    assert_eq!(audit(release.clone()).await["records"], serde_json::json!([]));
    let records = audit(bob.clone()).await;
    let promotion = records["records"].as_array().unwrap().iter().find(|r| r["kind"] == "promotion").expect("a promotion record");
    assert_eq!(promotion["actor"], "release");

    // The CLI logs in with --user and PORTCULLIS_PASSWORD, over TLS with --ca-cert.
    let ca = setup.pki.dir.join("ca.crt");
    let cli = |password: Option<&str>, args: &[&str]| {
        let mut command = common::portcullis_command();
        command.args(args).args(["--registry", &registry.base_url, "--ca-cert", ca.to_str().unwrap(), "--user", "release"]);
        command.env_remove("PORTCULLIS_PASSWORD");
        if let Some(password) = password {
            command.env("PORTCULLIS_PASSWORD", password);
        }
        command
    };
    let run = |mut command: std::process::Command| async move {
        tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
    };
    let promoted = run(cli(Some("release-pw"), &["promote", "build/app:v1", "prod/other", "--tag", "v1"])).await;
    assert_eq!(promoted.status.code(), Some(0), "{}", String::from_utf8_lossy(&promoted.stderr));
    let refused = run(cli(None, &["promote", "build/app:v1", "prod/third", "--tag", "v1"])).await;
    assert_eq!(refused.status.code(), Some(2), "no password: {}", String::from_utf8_lossy(&refused.stdout));
    let checked = run(cli(Some("release-pw"), &["check", "prod/other:v1"])).await;
    assert_eq!(checked.status.code(), Some(0), "{}", String::from_utf8_lossy(&checked.stderr));
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_negotiates_http2_by_alpn_and_speaks_tls_1_2_and_1_3() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    assert!(registry.base_url.starts_with("https://"));
    let ca = reqwest::Certificate::from_pem(setup.pki.ca_pem.as_bytes()).unwrap();
    let client = |version: reqwest::tls::Version| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap()
    };
    for version in [reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_3] {
        let res = client(version).get(registry.url("/healthz")).send().await.unwrap();
        assert_eq!((res.status().as_u16(), res.version()), (200, reqwest::Version::HTTP_2), "{version:?}");
    }
    let http1 = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).add_root_certificate(ca).http1_only().build().unwrap();
    assert_eq!(http1.get(registry.url("/healthz")).send().await.unwrap().version(), reqwest::Version::HTTP_11);

    // A client that does not trust the test CA does not get through.
    let untrusting = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).build().unwrap();
    assert!(untrusting.get(registry.url("/healthz")).send().await.is_err());
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", registry.host)).send().await;
    assert!(plain.map(|res| res.status() != 200).unwrap_or(true));
}

#[tokio::test]
async fn the_certificate_is_reloaded_in_place() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let first = setup.pki.client(false);
    assert_eq!(first.get(registry.url("/healthz")).send().await.unwrap().status(), 200);

    // Renew with a certificate from another CA in the same files, as a renewal job would.
    let renewed_ca = TestPki::new(&setup.path("pki-renewed"), "two");
    std::fs::copy(&renewed_ca.server_cert, &setup.pki.server_cert).unwrap();
    std::fs::copy(&renewed_ca.server_key, &setup.pki.server_key).unwrap();
    let config = portcullis::config::Config::parse(
        &setup.config("bearer", ""),
        "reloaded",
        &portcullis::config::Overrides { data_dir: Some(registry.data_dir.clone()), ..Default::default() },
    )
    .unwrap();
    registry.reload(config).expect("reload");

    let second = renewed_ca.client(false);
    assert_eq!(second.get(registry.url("/healthz")).send().await.unwrap().status(), 200, "new connections get the new certificate");
    let fresh_first = setup.pki.client(false);
    assert!(fresh_first.get(registry.url("/healthz")).send().await.is_err(), "the old CA no longer verifies");

    // A configuration whose certificate does not load is refused whole; the current one stays.
    std::fs::write(&setup.pki.server_key, "not a key").unwrap();
    let broken = portcullis::config::Config::parse(&setup.config("bearer", ""), "broken", &Default::default());
    assert!(broken.is_err(), "an unreadable key is a config error");
    assert_eq!(second.get(registry.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn admission_endpoints_refuse_clients_without_a_valid_certificate() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let without = setup.pki.client(false);
    let with = setup.pki.client(true);

    let res = without.get(registry.url("/admission/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(common::error_code(res).await, "DENIED");
    assert_eq!(with.get(registry.url("/admission/healthz")).send().await.unwrap().status(), 200);
    // Other paths do not need one (client_auth = "optional").
    assert_eq!(without.get(registry.url("/healthz")).send().await.unwrap().status(), 200);

    // A certificate from another CA does not pass the handshake.
    let stranger = TestPki::new(&setup.path("pki-stranger"), "stranger");
    let forged = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(setup.pki.ca_pem.as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{}{}", stranger.client_key_pem, stranger.client_cert_pem).as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(forged.get(registry.url("/admission/healthz")).send().await.is_err());

    // client_auth = "required": no certificate, no connection at all.
    let required = setup.config("bearer", "").replace("client_auth = \"optional\"", "client_auth = \"required\"");
    let strict = TestRegistry::with_config_text(&required).await;
    assert!(without.get(strict.url("/healthz")).send().await.is_err());
    assert_eq!(with.get(strict.url("/admission/healthz")).send().await.unwrap().status(), 200);

    // Without TLS at all, the admission endpoints are closed.
    let plain = TestRegistry::start().await;
    assert_eq!(plain.client.get(plain.url("/admission/healthz")).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn a_client_certificate_authenticates_in_cluster_pulls() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let bob = setup.client(&registry, Some(basic("bob", "bob-pw")));
    bob.push_tiny_image("build/app", "v1", "in-cluster").await;
    let with_cert = registry.with_client(setup.pki.client(true));
    let without = registry.with_client(setup.pki.client(false));

    assert_eq!(get_manifest(&with_cert, "build/app", "v1").await.status(), 200, "cert:admission-controller may pull build/");
    assert_eq!(get_manifest(&without, "build/app", "v1").await.status(), 401);
    let res = post_blob(&with_cert, "build/app", b"pushed by a certificate").await;
    assert_eq!(res.status(), 403, "authenticated by its certificate, but without push");
    assert_eq!(common::error_code(res).await, "DENIED");

    // At the token endpoint too: the token is the certificate's.
    let issued = bearer(&with_cert, None, &["repository:build/app:pull,push"]).await;
    let claims = claims_of(&issued);
    assert_eq!((claims["sub"].as_str(), claims["kind"].as_str()), (Some("cert:admission-controller"), Some("cert")));
    assert_eq!(claims["access"], serde_json::json!([{"type": "repository", "name": "build/app", "actions": ["pull"]}]));
    let token_holder = setup.client(&registry, Some(issued));
    assert_eq!(get_manifest(&token_holder, "build/app", "v1").await.status(), 200);

    // Credentials in the request take precedence over the certificate.
    let alice_with_cert = setup.pki.client(true);
    let res = alice_with_cert
        .post(registry.url(&format!("/v2/build/app/blobs/uploads/?digest={}", sha256(b"alice"))))
        .header("authorization", basic("alice", "alice-pw"))
        .body(b"alice".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_server() {
    let setup = Setup::new();
    let config_path = setup.path("portcullis.toml");
    let config = format!("{}\n[storage]\ndata_dir = \"{}\"\n", setup.config("bearer", ""), setup.path("data").display());
    std::fs::write(&config_path, config).unwrap();
    let server = common::ServerProcess::spawn(&config_path);
    assert!(server.base_url.starts_with("https://"), "{}", server.base_url);
    let healthz = format!("{}/healthz", server.base_url);
    assert_eq!(setup.pki.client(false).get(&healthz).send().await.unwrap().status(), 200);

    let renewed = TestPki::new(&setup.path("pki-renewed"), "renewed");
    std::fs::copy(&renewed.server_cert, &setup.pki.server_cert).unwrap();
    std::fs::copy(&renewed.server_key, &setup.pki.server_key).unwrap();
    server.signal("HUP");
    // The signal is handled asynchronously and says nothing back: try new connections until
    // one presents the renewed certificate (bounded; each attempt is a fresh handshake).
    let mut reloaded = false;
    for _ in 0..100 {
        if renewed.client(false).get(&healthz).send().await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the renewed certificate was not served within 10 s of SIGHUP");
    assert!(setup.pki.client(false).get(&healthz).send().await.is_err(), "the old certificate is gone");
}

// ---------------------------------------------------------------------------------------------
// skopeo and podman, with a test CA in --cert-dir

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_logs_in_and_copies_with_basic_auth_over_tls() {
    let setup = Setup::new();
    let registry = setup.start("basic", "").await;
    let clients = Clients::new();
    let cert_dir = setup.pki.cert_dir(&clients.path("certs"), false);
    let cert_dir = cert_dir.to_str().unwrap();
    let image = images::multi_layer_image(&clients.path("image"), "v1", 3, 31);
    let remote = format!("docker://{}/build/app:v1", registry.host);

    let refused = clients.skopeo("login", &["--cert-dir", cert_dir, "-u", "alice", "-p", "wrong", &registry.host]).await;
    assert!(!refused.status.success(), "login with a wrong password succeeded");
    assert!(refused_access(&refused.stderr), "{}", refused.stderr);

    clients.skopeo("login", &["--cert-dir", cert_dir, "-u", "alice", "-p", "alice-pw", &registry.host]).await.ok();
    clients.skopeo("copy", &["--preserve-digests", "--dest-cert-dir", cert_dir, &image.oci_ref(), &remote]).await.ok();
    let pulled = clients.path("pulled");
    clients.skopeo("copy", &["--src-cert-dir", cert_dir, &remote, &format!("oci:{}:v1", pulled.display())]).await.ok();
    assert_eq!(images::index_json_digest(&pulled, "v1"), image.manifest_digest);

    // alice may not push to prod/.
    let denied = clients.skopeo("copy", &["--dest-cert-dir", cert_dir, &image.oci_ref(), &format!("docker://{}/prod/app:v1", registry.host)]).await;
    assert!(!denied.status.success(), "alice pushed to prod/");
    assert!(refused_access(&denied.stderr), "{}", denied.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_through_the_token_flow_over_tls() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    let clients = Clients::new();
    let cert_dir = setup.pki.cert_dir(&clients.path("certs"), false);
    let cert_dir = cert_dir.to_str().unwrap();
    let image = images::multi_layer_image(&clients.path("image"), "v1", 3, 32);
    let remote = format!("docker://{}/build/app:v1", registry.host);

    let anonymous = clients.skopeo("copy", &["--dest-cert-dir", cert_dir, &image.oci_ref(), &remote]).await;
    assert!(!anonymous.status.success(), "an anonymous push succeeded");
    assert!(refused_access(&anonymous.stderr), "{}", anonymous.stderr);

    let wrong = clients.skopeo("login", &["--cert-dir", cert_dir, "-u", "alice", "-p", "wrong", &registry.host]).await;
    assert!(!wrong.status.success(), "login with a wrong password through the token flow succeeded");

    clients.skopeo("copy", &["--preserve-digests", "--dest-cert-dir", cert_dir, "--dest-creds", "alice:alice-pw", &image.oci_ref(), &remote]).await.ok();
    clients.skopeo("login", &["--cert-dir", cert_dir, "-u", "reader", "-p", "reader-pw", &registry.host]).await.ok();
    let raw = clients.skopeo("inspect", &["--raw", "--cert-dir", cert_dir, &remote]).await.ok();
    assert_eq!(sha256(raw.stdout.as_bytes()), image.manifest_digest);
    let pulled = clients.path("pulled");
    clients.skopeo("copy", &["--src-cert-dir", cert_dir, &remote, &format!("oci:{}:v1", pulled.display())]).await.ok();
    assert_eq!(images::index_json_digest(&pulled, "v1"), image.manifest_digest);

    // The reader's token has no push.
    let denied = clients.skopeo("copy", &["--dest-cert-dir", cert_dir, &image.oci_ref(), &format!("docker://{}/build/other:v1", registry.host)]).await;
    assert!(!denied.status.success(), "a reader pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_logs_in_pushes_and_pulls_through_the_token_flow_over_tls() {
    let setup = Setup::new();
    let registry = setup.start("bearer", "").await;
    podman_round_trip(&setup, &registry, 33).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_logs_in_pushes_and_pulls_with_basic_auth_over_tls() {
    let setup = Setup::new();
    let registry = setup.start("basic", "").await;
    podman_round_trip(&setup, &registry, 34).await;
}

/// Whether a client's error output says that the registry refused access (clients word it
/// differently: `unauthorized`, `invalid username/password`, `denied`, or the bare status).
fn refused_access(stderr: &str) -> bool {
    let stderr = stderr.to_lowercase();
    ["unauthorized", "invalid username/password", "denied", "401", "403"].iter().any(|word| stderr.contains(word))
}

async fn podman_round_trip(setup: &Setup, registry: &TestRegistry, seed: u64) {
    let clients = Clients::new();
    let cert_dir = setup.pki.cert_dir(&clients.path("certs"), false);
    let cert_dir = cert_dir.to_str().unwrap();
    let policy = format!("--signature-policy={}", clients.path("policy.json").display());
    let image = images::multi_layer_image(&clients.path("image"), "v1", 2, seed);
    let remote = format!("{}/build/podman:v1", registry.host);

    let wrong = clients.podman(&["login", "--cert-dir", cert_dir, "-u", "alice", "-p", "wrong", &registry.host]).await;
    assert!(!wrong.status.success(), "podman login with a wrong password succeeded");
    clients.podman(&["login", "--cert-dir", cert_dir, "-u", "alice", "-p", "alice-pw", &registry.host]).await.ok();

    let loaded = clients.podman(&["pull", "--quiet", &policy, &format!("oci:image:{}", image.tag)]).await.ok();
    let image_id = loaded.stdout.trim().to_owned();
    clients.podman(&["tag", &image_id, &remote]).await.ok();
    let digest_file = clients.path("pushed.digest");
    clients.podman(&["push", "--cert-dir", cert_dir, &policy, &format!("--digestfile={}", digest_file.display()), &remote]).await.ok();
    let pushed_digest = std::fs::read_to_string(&digest_file).expect("digest file").trim().to_owned();

    clients.podman(&["rmi", "--force", &image_id]).await.ok();
    clients.podman(&["pull", "--cert-dir", cert_dir, &policy, &remote]).await.ok();
    let inspected = clients.podman(&["image", "inspect", "--format", "{{.Digest}}", &remote]).await.ok();
    assert_eq!(inspected.stdout.trim(), pushed_digest);

    let prod = format!("docker://{}/prod/podman:v1", registry.host);
    let denied = clients.podman(&["push", "--cert-dir", cert_dir, &policy, &remote, &prod]).await;
    assert!(!denied.status.success(), "alice pushed to prod/ with podman");
}

/// The gate is for consumers: who may push (docker HEADs what it just pushed) reads a gated
/// manifest without evidence; a pull-only reader gets the gate's denial, on GET and HEAD alike.
#[tokio::test]
async fn pushers_read_past_the_gate_and_readers_do_not() {
    let setup = Setup::new();
    let gated = "\n[[trust.keys]]\nname = \"ci\"\npublic_key = \"absent-ci.pub\"\noptional = true\n\n[[namespaces]]\npattern = \"build/**\"\n[namespaces.gate]\nsigned_by = [\"ci\"]\n";
    let registry = TestRegistry::with_config_text(&format!("{}{gated}", setup.config("basic", ""))).await;
    let alice = setup.client(&registry, Some(basic("alice", "alice-pw")));
    let reader = setup.client(&registry, Some(basic("reader", "reader-pw")));
    alice.push_tiny_image("build/gated", "v1", "gated").await;

    assert_eq!(get_manifest(&alice, "build/gated", "v1").await.status(), 200, "push holder skips the gate");
    let res = get_manifest(&reader, "build/gated", "v1").await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("no signature from trusted identity 'ci'"));
    let head = reader.client.head(reader.url("/v2/build/gated/manifests/v1")).send().await.unwrap();
    assert_eq!(head.status(), 403, "HEAD gives the reader the same answer as GET");
}
