//! The read cache of the pull path (`metadata::cache`) against the real server: a change of
//! evidence, tags, manifests, trust or policy takes effect on the next pull of the replica that
//! made it, and on another replica sharing the store within the cache's TTL (1 s). Each test pulls
//! first, so what it changes is cached when it changes it. Runs on the run's backend (the
//! filesystem, or S3 with `PORTCULLIS_TEST_BACKEND=s3`; `scripts/test` runs both).

mod common;

use std::time::{Duration, Instant};

use common::cosign::{self, Key, Scheme, VULN};
use common::{RegistryClient, TestRegistry};
use portcullis::config::{Config, Overrides};

/// How long a replica may take to see another's change: the documented bound with room for a
/// loaded machine.
const OTHER_REPLICA_BOUND: Duration = Duration::from_secs(3);

struct Setup {
    registry: TestRegistry,
    ci: Key,
    dir: tempfile::TempDir,
}

/// `gated/**` needs a signature by `signer` and a passing scan signed by it; the rest is open.
fn config_text(dir: &std::path::Path, signer: &str) -> String {
    format!(
        r#"
[[trust.keys]]
name = "ci"
public_key = "{dir}/ci.pub"

[[trust.keys]]
name = "other"
public_key = "{dir}/other.pub"

[[namespaces]]
pattern = "gated/**"
tags = "mutable"
[namespaces.gate]
mode = "enforce"
signed_by = ["{signer}"]
[namespaces.gate.scan]
max_age = "7d"
block = ["critical-with-fix"]
signed_by = ["{signer}"]

[[namespaces]]
pattern = "**"
tags = "mutable"
"#,
        dir = dir.display()
    )
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    std::fs::write(dir.path().join("ci.pub"), ci.public_pem()).unwrap();
    std::fs::write(dir.path().join("other.pub"), Key::generate().public_pem()).unwrap();
    let registry = TestRegistry::with_config_text(&config_text(dir.path(), "ci")).await;
    Setup { registry, ci, dir }
}

/// A second replica of `first`: the same configuration and store, its own index (and cache).
async fn replica(first: &TestRegistry) -> TestRegistry {
    let shared = first.config.clone();
    TestRegistry::with_config(|config| {
        let index_dir = config.index_dir.clone();
        *config = shared;
        config.index_dir = index_dir;
    })
    .await
}

/// Pushes `repo:v1`, signs it and attests a clean scan an hour old: it passes.
async fn passing_image(api: &RegistryClient, repo: &str, ci: &Key) -> String {
    let (digest, _) = api.push_tiny_image(repo, "v1", repo).await;
    cosign::sign(api, repo, &digest, ci).await;
    cosign::attest(api, repo, &digest, ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(3600), &[]))]).await;
    digest
}

/// Attests a newer scan with a critical finding that has a fix, which the gate blocks.
async fn attach_failing_scan(api: &RegistryClient, repo: &str, digest: &str, ci: &Key, scheme: Scheme) {
    let findings = [("CVE-2026-0004", "CRITICAL", Some("3.0.13"))];
    cosign::attest_with(api, repo, digest, ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &findings))], scheme).await;
}

/// The status of a GET and of a HEAD of the manifest, which must agree, and the digest served.
async fn pull(api: &RegistryClient, repo: &str, reference: &str) -> (u16, Option<String>) {
    let url = api.url(&format!("/v2/{repo}/manifests/{reference}"));
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let get = api.client.get(&url).header("accept", accept).send().await.unwrap();
    let head = api.client.head(&url).header("accept", accept).send().await.unwrap();
    assert_eq!(get.status(), head.status(), "GET and HEAD of {repo}:{reference} disagree");
    let digest = get.headers().get("docker-content-digest").map(|value| value.to_str().unwrap().to_owned());
    (get.status().as_u16(), digest)
}

/// Pulls a few times, so that everything the pull reads is cached (and the verdict with it).
async fn pull_cached(api: &RegistryClient, repo: &str, reference: &str) -> (u16, Option<String>) {
    let first = pull(api, repo, reference).await;
    for _ in 0..3 {
        assert_eq!(pull(api, repo, reference).await, first, "{repo}:{reference} is stable while nothing changes");
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scan_denies_the_next_pull_on_the_same_replica() {
    let Setup { registry, ci, .. } = setup().await;
    // Attached as a referrer (the listing) and as cosign's `.att` tag (a tag read).
    for (repo, scheme) in [("gated/referrer", Scheme::Referrer), ("gated/tag", Scheme::Tag)] {
        let digest = passing_image(&registry, repo, &ci).await;
        assert_eq!(pull_cached(&registry, repo, "v1").await.0, 200, "{repo} passes");
        attach_failing_scan(&registry, repo, &digest, &ci, scheme).await;
        assert_eq!(pull(&registry, repo, "v1").await.0, 403, "{repo}: the new scan denies at once");
        assert_eq!(pull(&registry, repo, &digest).await.0, 403, "{repo}: by digest too");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_sees_the_denial_within_the_bound() {
    let Setup { registry, ci, .. } = setup().await;
    let second = replica(&registry).await;
    for (repo, scheme) in [("gated/referrer", Scheme::Referrer), ("gated/tag", Scheme::Tag)] {
        let digest = passing_image(&registry, repo, &ci).await;
        assert_eq!(pull_cached(&second, repo, "v1").await.0, 200, "{repo} passes on the second replica before the change");
        attach_failing_scan(&registry, repo, &digest, &ci, scheme).await;
        let changed = Instant::now();
        let mut status = pull(&second, repo, "v1").await.0;
        while status == 200 && changed.elapsed() < OTHER_REPLICA_BOUND {
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = pull(&second, repo, "v1").await.0;
        }
        assert_eq!(status, 403, "{repo}: the second replica denies within {OTHER_REPLICA_BOUND:?} (after {:?})", changed.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_served_at_once() {
    let Setup { registry, .. } = setup().await;
    let (old, _) = registry.push_tiny_image("open/app", "v1", "old").await;
    assert_eq!(pull_cached(&registry, "open/app", "v1").await, (200, Some(old.clone())));
    let (new, _) = registry.push_tiny_image("open/app", "v1", "new").await;
    assert_ne!(old, new);
    assert_eq!(pull(&registry, "open/app", "v1").await, (200, Some(new)), "the tag's new digest at once");
    assert_eq!(pull(&registry, "open/app", &old).await, (200, Some(old)), "the old revision stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_manifest_is_gone_at_once() {
    let Setup { registry, .. } = setup().await;
    let (digest, _) = registry.push_tiny_image("open/app", "v1", "a").await;
    assert_eq!(pull_cached(&registry, "open/app", &digest).await.0, 200);
    assert_eq!(pull_cached(&registry, "open/app", "v1").await.0, 200);
    let res = registry.client.delete(registry.url(&format!("/v2/open/app/manifests/{digest}"))).send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(pull(&registry, "open/app", &digest).await.0, 404, "by digest");
    assert_eq!(pull(&registry, "open/app", "v1").await.0, 404, "by the tag deleted with it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_policy_or_trust_takes_effect_at_once() {
    let Setup { registry, ci, dir } = setup().await;
    passing_image(&registry, "gated/app", &ci).await;
    assert_eq!(pull_cached(&registry, "gated/app", "v1").await.0, 200);
    let reload = |text: String| {
        let overrides = Overrides { data_dir: Some(registry.data_dir.clone()), ..Default::default() };
        let mut config = Config::parse(&text, "test config", &overrides).unwrap();
        config.storage = registry.config.storage.clone();
        registry.reload(config).unwrap();
    };

    // Policy: the gate wants another signer.
    reload(config_text(dir.path(), "other"));
    assert_eq!(pull(&registry, "gated/app", "v1").await.0, 403, "the new policy at once");
    reload(config_text(dir.path(), "ci"));
    assert_eq!(pull_cached(&registry, "gated/app", "v1").await.0, 200, "and back");

    // Trust: the same configuration text, but "ci" is another key now.
    std::fs::write(dir.path().join("ci.pub"), Key::generate().public_pem()).unwrap();
    reload(config_text(dir.path(), "ci"));
    assert_eq!(pull(&registry, "gated/app", "v1").await.0, 403, "the new trust at once");
}
