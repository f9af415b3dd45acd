//! Tag rules over real HTTP: immutable and write-once tags refuse moves with a message naming the
//! tag, the rule and the bound digest; identical re-pushes succeed; deletes follow the rules; and
//! create-only binding has exactly one winner under races, within one process and across two.

mod common;

use common::{error_code, sha256, RegistryClient, ServerProcess, TestRegistry, OCI_MANIFEST};

const RULES: &str = r#"
[[namespaces]]
pattern = "prod-like/**"
tags = "immutable"
[[namespaces.tag_rules]]
pattern = "sha256-*.{sig,att,sbom}"
tags = "mutable"

[[namespaces]]
pattern = "once/**"
tags = "write-once"

[[namespaces]]
pattern = "**"
tags = "mutable"
"#;

async fn tag_digest(registry: &TestRegistry, repo: &str, tag: &str) -> Option<String> {
    let res = registry.client.head(registry.url(&format!("/v2/{repo}/manifests/{tag}"))).send().await.unwrap();
    (res.status() == 200).then(|| res.headers()["docker-content-digest"].to_str().unwrap().to_owned())
}

async fn delete(registry: &TestRegistry, repo: &str, reference: &str) -> reqwest::Response {
    registry.client.delete(registry.url(&format!("/v2/{repo}/manifests/{reference}"))).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tag_refuses_moves_and_deletes() {
    let registry = TestRegistry::with_config_text(RULES).await;
    let repo = "prod-like/app";
    let (digest_a, manifest_a) = registry.push_tiny_image(repo, "v1", "a").await;
    let (_, manifest_b) = registry.push_tiny_image(repo, "other", "b").await;
    let digest_b = sha256(&manifest_b);

    let res = registry.put_manifest(repo, "v1", OCI_MANIFEST, &manifest_b).await;
    assert_eq!(res.status(), 403);
    let body = res.text().await.unwrap();
    assert!(body.contains("\"DENIED\""), "{body}");
    for needle in ["prod-like/app:v1", "immutable", "\\\"prod-like/**\\\"", &digest_a, &digest_b] {
        assert!(body.contains(needle), "message lacks {needle}: {body}");
    }
    assert_eq!(tag_digest(&registry, repo, "v1").await.as_deref(), Some(digest_a.as_str()));

    // The identical manifest again is an idempotent success.
    assert_eq!(registry.put_manifest(repo, "v1", OCI_MANIFEST, &manifest_a).await.status(), 201);

    let res = delete(&registry, repo, "v1").await;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "DENIED");
    let res = delete(&registry, repo, &digest_a).await;
    assert_eq!(res.status(), 403, "a manifest with an immutable tag cannot be deleted");
    assert_eq!(tag_digest(&registry, repo, "v1").await.as_deref(), Some(digest_a.as_str()));

    // cosign's evidence tags stay mutable inside the immutable namespace.
    let sig_tag = format!("sha256-{}.sig", &digest_a[7..]);
    assert_eq!(registry.put_manifest(repo, &sig_tag, OCI_MANIFEST, &manifest_a).await.status(), 201);
    assert_eq!(registry.put_manifest(repo, &sig_tag, OCI_MANIFEST, &manifest_b).await.status(), 201);
    assert_eq!(tag_digest(&registry, repo, &sig_tag).await.as_deref(), Some(digest_b.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_tag_push_is_all_or_nothing() {
    let registry = TestRegistry::with_config_text(RULES).await;
    let repo = "prod-like/app";
    registry.push_tiny_image(repo, "taken", "a").await;
    let (digest_b, _) = registry.push_tiny_image(repo, "b", "b").await;
    let (_, manifest_c) = registry.push_tiny_image(repo, "c", "c").await;
    let digest_c = sha256(&manifest_c);
    let res = registry
        .client
        .put(registry.url(&format!("/v2/{repo}/manifests/{digest_c}?tag=fresh&tag=taken")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest_c.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(tag_digest(&registry, repo, "fresh").await, None, "no tag of a refused push may appear");
    assert_ne!(tag_digest(&registry, repo, "taken").await.as_deref(), Some(digest_c.as_str()));
    assert_ne!(digest_b, digest_c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_once_tag_is_burned_after_delete() {
    let registry = TestRegistry::with_config_text(RULES).await;
    let repo = "once/app";
    let (digest_a, manifest_a) = registry.push_tiny_image(repo, "v1", "a").await;
    let (_, manifest_b) = registry.push_tiny_image(repo, "b", "b").await;

    let res = registry.put_manifest(repo, "v1", OCI_MANIFEST, &manifest_b).await;
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("write-once"));

    assert_eq!(delete(&registry, repo, "v1").await.status(), 202);
    assert_eq!(tag_digest(&registry, repo, "v1").await, None);
    let tags: serde_json::Value =
        registry.client.get(registry.url(&format!("/v2/{repo}/tags/list"))).send().await.unwrap().json().await.unwrap();
    assert!(!tags["tags"].as_array().unwrap().iter().any(|t| t == "v1"), "deleted tag still listed: {tags}");

    // Burned: never bound to other content...
    let res = registry.put_manifest(repo, "v1", OCI_MANIFEST, &manifest_b).await;
    assert_eq!(res.status(), 403);
    let body = res.text().await.unwrap();
    assert!(body.contains(&digest_a) && body.contains("deleted"), "{body}");
    // ...but the same content may come back under its name (documented in ARCHITECTURE.md).
    assert_eq!(registry.put_manifest(repo, "v1", OCI_MANIFEST, &manifest_a).await.status(), 201);
    assert_eq!(tag_digest(&registry, repo, "v1").await.as_deref(), Some(digest_a.as_str()));
}


/// PUTs every manifest to `repo:tag` at once through the given base URLs (round robin); returns
/// the statuses and which manifest won.
async fn race(client: &reqwest::Client, base_urls: &[String], repo: &str, tag: &str, manifests: &[Vec<u8>]) -> Vec<u16> {
    let tasks: Vec<_> = manifests
        .iter()
        .enumerate()
        .map(|(i, manifest)| {
            let url = format!("{}/v2/{repo}/manifests/{tag}", base_urls[i % base_urls.len()]);
            let request = client.put(url).header("content-type", OCI_MANIFEST).body(manifest.clone());
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

fn check_one_winner(statuses: &[u16], manifests: &[Vec<u8>], bound: Option<String>) {
    let winners: Vec<usize> = statuses.iter().enumerate().filter(|(_, s)| **s == 201).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "statuses: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 403), "statuses: {statuses:?}");
    assert_eq!(bound, Some(sha256(&manifests[winners[0]])), "the tag must hold the winner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_once_race_in_one_process_has_one_winner() {
    let registry = TestRegistry::with_config_text(RULES).await;
    let manifests = registry.push_distinct_manifests("once/race", 32).await;
    let statuses = race(&registry.client, std::slice::from_ref(&registry.base_url), "once/race", "v1", &manifests).await;
    check_one_winner(&statuses, &manifests, tag_digest(&registry, "once/race", "v1").await);
}

// Filesystem only: two processes over one data directory, where the store's striped file locks
// make create-only writes atomic. The same race over one bucket is in tests/s3.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_once_race_across_two_processes_has_one_winner() {
    if common::s3::backend() != common::s3::Backend::Fs {
        eprintln!("skipping: two processes on one data directory is the filesystem backend's case (tests/s3.rs races over a bucket)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut children = Vec::new();
    for name in ["a", "b"] {
        // One data directory, one index per process: two nodes over one store.
        let text = format!(
            "[storage]\ndata_dir = {:?}\nindex_dir = {:?}\n{RULES}",
            data_dir,
            dir.path().join(format!("index-{name}"))
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        children.push(ServerProcess::spawn(&path));
    }
    let client = reqwest::Client::new();
    let base_urls: Vec<String> = children.iter().map(|c| c.base_url.clone()).collect();

    // Content pushed through A is served by B.
    let manifests = RegistryClient::new(&base_urls[0]).push_distinct_manifests("once/race", 32).await;
    let statuses = race(&client, &base_urls, "once/race", "v1", &manifests).await;
    let res = client.head(format!("{}/v2/once/race/manifests/v1", base_urls[1])).send().await.unwrap();
    let bound = res.headers().get("docker-content-digest").map(|v| v.to_str().unwrap().to_owned());
    check_one_winner(&statuses, &manifests, bound);
}

/// The issue's scenario with a real client: skopeo copies two images to one tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_cannot_move_an_immutable_tag() {
    let registry = TestRegistry::with_config_text(RULES).await;
    let clients = common::clients::Clients::new();
    let layouts = tempfile::tempdir().unwrap();
    let image_a = common::images::multi_layer_image(&layouts.path().join("a"), "v1", 2, 1);
    let image_b = common::images::multi_layer_image(&layouts.path().join("b"), "v1", 2, 2);
    let sandbox = &clients;
    let copy = |layout: &common::images::ImageLayout, dest: String| {
        let source = format!("oci:{}:v1", layout.path.display());
        async move { sandbox.skopeo("copy", &["--preserve-digests", "--dest-tls-verify=false", &source, &dest]).await }
    };
    let tag = |repo: &str| format!("docker://{}/{repo}:v1", registry.host);

    copy(&image_a, tag("prod-like/app")).await.ok();
    let refused = copy(&image_b, tag("prod-like/app")).await;
    assert!(!refused.status.success(), "moving an immutable tag must fail");
    for needle in ["prod-like/app:v1", "immutable", &image_a.manifest_digest] {
        assert!(refused.stderr.contains(needle), "skopeo's error lacks {needle}: {}", refused.stderr);
    }
    assert_eq!(tag_digest(&registry, "prod-like/app", "v1").await.as_deref(), Some(image_a.manifest_digest.as_str()));
    copy(&image_a, tag("prod-like/app")).await.ok();

    let delete = clients.skopeo("delete", &["--tls-verify=false", &tag("prod-like/app")]).await;
    assert!(!delete.status.success(), "deleting an immutable tag's manifest must fail");
    assert_eq!(tag_digest(&registry, "prod-like/app", "v1").await.as_deref(), Some(image_a.manifest_digest.as_str()));

    // Write-once: deletable, then bound again only to the same content.
    copy(&image_a, tag("once/app")).await.ok();
    clients.skopeo("delete", &["--tls-verify=false", &tag("once/app")]).await.ok();
    assert_eq!(tag_digest(&registry, "once/app", "v1").await, None);
    let refused = copy(&image_b, tag("once/app")).await;
    assert!(!refused.status.success() && refused.stderr.contains("write-once"), "{}", refused.stderr);
    copy(&image_a, tag("once/app")).await.ok();
    assert_eq!(tag_digest(&registry, "once/app", "v1").await.as_deref(), Some(image_a.manifest_digest.as_str()));
}
