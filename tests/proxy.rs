//! The pull-through proxy against real upstream registries on loopback: a second portcullis
//! (open, and with the Docker token flow) and CNCF Distribution (htpasswd and TLS from a test CA),
//! with faults put between them by a cuttable TCP proxy, and a hostile upstream written here that
//! lies about its bytes. Real clients pulling through the proxy are in `tests/proxy_clients.rs`.

mod common;

use common::{sha256, TestRegistry};

/// A registry with one `[[upstreams]]` entry (`name`, `url`, and `extra` keys) and `namespaces`
/// before the catch-all.
async fn proxy_registry(name: &str, url: &str, extra: &str, namespaces: &str) -> TestRegistry {
    let text = format!(
        "[[upstreams]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n{namespaces}\n[[namespaces]]\npattern = \"**\"\ntags = \"mutable\"\n"
    );
    TestRegistry::with_config_text(&text).await
}

/// GET `path` on `registry`, returning status, headers and body.
async fn get(registry: &TestRegistry, path: &str) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let res = registry.client.get(registry.url(path)).send().await.unwrap_or_else(|err| panic!("GET {path}: {err}"));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.bytes().await.unwrap_or_else(|err| panic!("GET {path} body: {err}"));
    (status, headers, body)
}

#[tokio::test]
async fn pulls_through_a_portcullis_upstream() {
    let upstream = TestRegistry::start().await;
    let (digest, manifest) = upstream.push_tiny_image("team/app", "v1", "smoke").await;
    let proxy = proxy_registry("up", &upstream.base_url, "", "").await;

    let (status, headers, body) = get(&proxy, "/v2/proxy/up/team/app/manifests/v1").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["docker-content-digest"], digest.as_str());
    assert_eq!(body.as_ref(), manifest.as_slice());
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for blob in [&doc["config"], &doc["layers"][0]] {
        let blob_digest = blob["digest"].as_str().unwrap();
        let (status, _, bytes) = get(&proxy, &format!("/v2/proxy/up/team/app/blobs/{blob_digest}")).await;
        assert_eq!(status, 200);
        assert_eq!(sha256(&bytes), blob_digest);
    }
    let (status, _, body) = get(&proxy, &format!("/v2/proxy/up/team/app/manifests/{digest}")).await;
    assert_eq!((status, body.as_ref()), (200, manifest.as_slice()));
}
