//! Gates end to end: manifests in a gated namespace leave the registry only with a verified
//! signature from a trusted key and a passing, signed, fresh scan. Pulls with skopeo, evidence
//! made with real keys in cosign's format, scan reports in Trivy's and Grype's JSON.

mod common;

use common::clients::Clients;
use common::cosign::{self, Key, VULN};
use common::{RegistryClient, TestRegistry};

struct Setup {
    registry: TestRegistry,
    ci: Key,
    _dir: tempfile::TempDir,
}

/// A registry whose `gated/**` needs a signature from "ci" and a passing scan signed by "ci";
/// `audited/**` has the same signature rule in audit mode.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ci = Key::generate();
    let other = Key::generate();
    std::fs::write(dir.path().join("ci.pub"), ci.public_pem()).unwrap();
    std::fs::write(dir.path().join("other.pub"), other.public_pem()).unwrap();
    // CISA KEV format; CVE-2026-0009 is HIGH without a fix, blocked only because it is exploited.
    std::fs::write(
        dir.path().join("kev.json"),
        r#"{"title":"CISA Catalog of Known Exploited Vulnerabilities","catalogVersion":"2026.11.26","count":1,
            "vulnerabilities":[{"cveID":"CVE-2026-0009","vendorProject":"OpenSSL","product":"OpenSSL","dateAdded":"2026-11-01"}]}"#,
    )
    .unwrap();
    let text = format!(
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
signed_by = ["ci"]
[namespaces.gate.scan]
max_age = "7d"
block = ["critical-with-fix", "known-exploited"]
known_exploited = "{dir}/kev.json"
signed_by = ["ci"]
[[namespaces.gate.scan.allowlist]]
id = "CVE-2026-0002"
reason = "the vulnerable function is not reachable"
expires = "2099-01-01"
[[namespaces.gate.scan.allowlist]]
id = "CVE-2026-0003"
reason = "was accepted until a fix shipped"
expires = "2020-01-01"

[[namespaces]]
pattern = "audited/**"
[namespaces.gate]
mode = "audit"
signed_by = ["ci"]

[[namespaces]]
pattern = "**"
"#,
        dir = dir.path().display()
    );
    let registry = TestRegistry::with_config_text(&text).await;
    Setup { registry, ci, _dir: dir }
}

/// Pushes a tiny image, signs it with `key` and attests a Trivy scan with `findings`, `age` seconds old.
async fn signed_image(api: &RegistryClient, repo: &str, key: &Key, findings: &[cosign::Finding<'_>], age: u64) -> String {
    let (digest, _) = api.push_tiny_image(repo, "v1", repo).await;
    cosign::sign(api, repo, &digest, key).await;
    cosign::attest(api, repo, &digest, key, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(age), findings))]).await;
    digest
}

async fn inspect(clients: &Clients, registry: &TestRegistry, image: &str) -> common::clients::Run {
    clients.skopeo("inspect", &["--raw", "--tls-verify=false", &format!("docker://{}/{image}", registry.host)]).await
}

async fn verdict(registry: &TestRegistry, image: &str) -> serde_json::Value {
    let res = registry.client.get(registry.url("/api/v1/verdict")).query(&[("image", image)]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// GET and HEAD of the manifest answer the same status.
async fn pull_status(registry: &TestRegistry, repo: &str, reference: &str) -> u16 {
    let url = registry.url(&format!("/v2/{repo}/manifests/{reference}"));
    let get = registry.client.get(&url).send().await.unwrap().status().as_u16();
    let head = registry.client.head(&url).send().await.unwrap().status().as_u16();
    assert_eq!(get, head, "GET and HEAD of {repo}:{reference} disagree");
    get
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_badly_signed_images_are_denied_with_reasons() {
    let Setup { registry, ci, .. } = setup().await;
    let clients = Clients::new();

    // A push by a pushing client is not broken by the gate.
    let (unsigned, _) = registry.push_tiny_image("gated/unsigned", "v1", "u").await;
    let denied = inspect(&clients, &registry, "gated/unsigned:v1").await;
    assert!(!denied.status.success());
    assert!(
        denied.stderr.contains(&format!("gated/unsigned@{unsigned} denied: signature: no signature from trusted identity 'ci'")),
        "skopeo shows the reason: {}",
        denied.stderr
    );
    assert_eq!(pull_status(&registry, "gated/unsigned", "v1").await, 403);
    assert_eq!(pull_status(&registry, "gated/unsigned", &unsigned).await, 403, "by digest too");

    let wrong_key = Key::generate();
    let digest = signed_image(&registry, "gated/wrong-key", &wrong_key, &[], 60).await;
    let verdict = verdict(&registry, &format!("gated/wrong-key@{digest}")).await;
    assert_eq!(verdict["verdict"]["passed"], false);
    assert!(!verdict["verdict"]["rejected"].as_array().unwrap().is_empty(), "the bad signature is listed as rejected: {verdict}");
    assert_eq!(pull_status(&registry, "gated/wrong-key", "v1").await, 403);

    // A signature by a trusted key over another image's digest does not count.
    let (target, _) = registry.push_tiny_image("gated/copied", "v1", "c").await;
    let other_payload = cosign::simple_signing_payload("gated/copied", &unsigned);
    cosign::sign_payload(&registry, "gated/copied", &target, &ci, &other_payload).await;
    assert_eq!(pull_status(&registry, "gated/copied", "v1").await, 403);

    // Evidence stays pullable so clients can verify it.
    let sig_tag = format!("sha256-{}.sig", &target[7..]);
    assert_eq!(pull_status(&registry, "gated/copied", &sig_tag).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_rules_decide() {
    let Setup { registry, ci, .. } = setup().await;
    let clients = Clients::new();
    let day = 86_400;

    let clean = signed_image(&registry, "gated/clean", &ci, &[("CVE-2026-0001", "LOW", Some("1.1"))], 3600).await;
    let pulled = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:v1", pulled.path().display());
    let src = format!("docker://{}/gated/clean:v1", registry.host);
    clients.skopeo("copy", &["--preserve-digests", "--src-tls-verify=false", &src, &dest]).await.ok();
    assert_eq!(common::images::index_json_digest(pulled.path(), "v1"), clean, "the pulled digest is the pushed one");
    assert_eq!(pull_status(&registry, "gated/clean", &clean).await, 200);

    // (repository, findings, scan age in seconds, expected pass detail or failing CVE)
    type Case<'a> = (&'a str, Vec<cosign::Finding<'a>>, u64, Result<&'a str, &'a str>);
    let cases: [Case<'_>; 5] = [
        ("gated/critical-fix", vec![("CVE-2026-0004", "CRITICAL", Some("3.0.13"))], 3600, Err("CVE-2026-0004")),
        ("gated/allowlisted", vec![("CVE-2026-0002", "CRITICAL", Some("3.0.13"))], 3600, Ok("allowlisted until")),
        ("gated/allow-expired", vec![("CVE-2026-0003", "CRITICAL", Some("3.0.13"))], 3600, Err("CVE-2026-0003")),
        ("gated/stale-scan", vec![], 8 * day, Err("counts as missing")),
        ("gated/kev", vec![("CVE-2026-0009", "HIGH", None)], 3600, Err("known-exploited")),
    ];
    for (repo, findings, age, expected) in cases {
        let digest = signed_image(&registry, repo, &ci, &findings, age).await;
        let body = verdict(&registry, &format!("{repo}@{digest}")).await;
        let text = body["verdict"].to_string();
        match expected {
            Ok(warning) => {
                assert_eq!(body["verdict"]["passed"], true, "{repo}: {text}");
                assert!(text.contains(warning), "{repo} warns: {text}");
                assert_eq!(pull_status(&registry, repo, "v1").await, 200, "{repo}");
            }
            Err(reason) => {
                assert_eq!(body["verdict"]["passed"], false, "{repo}: {text}");
                let denied = inspect(&clients, &registry, &format!("{repo}:v1")).await;
                assert!(!denied.status.success(), "{repo}");
                assert!(denied.stderr.contains(reason), "{repo}: skopeo's error names {reason}: {}", denied.stderr);
            }
        }
    }

    // Grype's JSON as the predicate is read too.
    let (digest, _) = registry.push_tiny_image("gated/grype", "v1", "g").await;
    cosign::sign(&registry, "gated/grype", &digest, &ci).await;
    let report = cosign::grype_predicate(&cosign::time_ago(60), &[("CVE-2026-0010", "Critical", Some("8.0"))]);
    cosign::attest(&registry, "gated/grype", &digest, &ci, &[(VULN, report)]).await;
    let body = verdict(&registry, "gated/grype:v1").await;
    assert!(body["verdict"].to_string().contains("CVE-2026-0010"), "{body}");
    assert_eq!(pull_status(&registry, "gated/grype", "v1").await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_index_lets_its_platforms_through() {
    let Setup { registry, ci, .. } = setup().await;
    let clients = Clients::new();
    let layouts = tempfile::tempdir().unwrap();
    let index = common::images::multi_platform_index(&layouts.path().join("index"), "v1", 7);
    let source = format!("oci:{}:v1", index.path.display());
    let dest = format!("docker://{}/gated/multi:v1", registry.host);
    clients.skopeo("copy", &["--all", "--preserve-digests", "--dest-tls-verify=false", &source, &dest]).await.ok();
    cosign::sign(&registry, "gated/multi", &index.manifest_digest, &ci).await;
    cosign::attest(&registry, "gated/multi", &index.manifest_digest, &ci, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &[]))]).await;

    // skopeo resolves the index, then fetches the linux/amd64 child by digest: both must pass.
    let pulled = tempfile::tempdir().unwrap();
    let out = format!("oci:{}:v1", pulled.path().display());
    clients
        .skopeo("copy", &["--override-arch=arm64", "--src-tls-verify=false", &format!("docker://{}/gated/multi:v1", registry.host), &out])
        .await
        .ok();
    let child = common::images::index_json_digest(pulled.path(), "v1");
    assert_ne!(child, index.manifest_digest, "a single platform was pulled");
    let body = verdict(&registry, &format!("gated/multi@{child}")).await;
    assert_eq!(body["verdict"]["via_parent"], index.manifest_digest, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_mode_serves_and_records() {
    let Setup { registry, .. } = setup().await;
    let (digest, _) = registry.push_tiny_image("audited/app", "v1", "a").await;
    assert_eq!(pull_status(&registry, "audited/app", "v1").await, 200);
    let res = registry.client.get(registry.url("/api/v1/audit")).query(&[("kind", "pull_audit")]).send().await.unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    let records = body["records"].as_array().unwrap();
    assert!(!records.is_empty(), "{body}");
    assert_eq!(records[0]["repository"], "audited/app");
    assert_eq!(records[0]["digest"], digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_command_exit_codes() {
    let Setup { registry, ci, .. } = setup().await;
    let passing = signed_image(&registry, "gated/ok", &ci, &[], 60).await;
    registry.push_tiny_image("gated/bad", "v1", "b").await;
    let check = |image: String| {
        let base_url = registry.base_url.clone();
        async move {
            common::portcullis_async(vec!["check".to_owned(), "--registry".to_owned(), base_url, image]).await
        }
    };
    let pass = check(format!("gated/ok@{passing}")).await;
    assert_eq!(pass.status.code(), Some(0), "{}", String::from_utf8_lossy(&pass.stdout));
    assert!(String::from_utf8_lossy(&pass.stdout).contains("passes"));
    let fail = check("gated/bad:v1".to_owned()).await;
    assert_eq!(fail.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&fail.stdout).contains("[FAIL] signature: no signature from trusted identity 'ci'"));
    let missing = check("gated/absent:v1".to_owned()).await;
    assert_eq!(missing.status.code(), Some(2));
}

/// Waits until the server has counted `n` reloads with `outcome` (`portcullis_config_reloads_total`).
async fn wait_for_reloads(api: &RegistryClient, outcome: &str, n: u64) {
    let line = format!("portcullis_config_reloads_total{{outcome=\"{outcome}\"}} {n}");
    for _ in 0..200 {
        let metrics = api.client.get(api.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the server did not count {n} {outcome} reload(s) within 5 s");
}

/// SIGHUP swaps policy without a restart; a configuration that fails validation is refused and
/// the one in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_policy_and_refuses_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let gated = format!(
        "[storage]\ndata_dir = {:?}\n[[namespaces]]\npattern = \"gated/**\"\n[namespaces.gate]\nsigned_by = [\"ci\"]\n[[trust.keys]]\nname = \"ci\"\npublic_key = \"ci.pub\"\noptional = true\n[[namespaces]]\npattern = \"**\"\n",
        dir.path().join("data")
    );
    let open = format!("[storage]\ndata_dir = {:?}\n[[namespaces]]\npattern = \"**\"\n", dir.path().join("data"));
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, &gated).unwrap();
    let mut server = common::ServerProcess::spawn(&config);
    let api = RegistryClient::new(&server.base_url);
    api.push_tiny_image("gated/app", "v1", "r").await;
    let status = |api: RegistryClient| async move {
        api.client.get(api.url("/v2/gated/app/manifests/v1")).send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(api.clone()).await, 403);

    std::fs::write(&config, &open).unwrap();
    server.signal("HUP");
    wait_for_reloads(&api, "applied", 1).await;
    assert_eq!(status(api.clone()).await, 200, "the ungated policy is in force after SIGHUP");

    // A broken file is refused; the open policy stays in force.
    std::fs::write(&config, "[namespaces\n").unwrap();
    server.signal("HUP");
    wait_for_reloads(&api, "refused", 1).await;
    assert_eq!(status(api.clone()).await, 200);
    assert!(server.process.try_wait().unwrap().is_none(), "a refused reload does not stop the server");
}
