//! Garbage collection (#18): what a pass removes and keeps, that a dry run lists exactly what the
//! pass then removes (and each pass is an audit record), retention by count, pattern and pull
//! time, what retention never touches (immutable and write-once tags, referrers of kept
//! manifests, promoted content, proxied repositories) and evidence going with its subject, that
//! pushes and promotions racing passes on two replicas never lose what they were accepted with
//! (filesystem and S3), nor the proxy's links, that a collector killed with its pass claimed is
//! finished by the next, that two collectors started at once take turns, and that abandoned
//! uploads are purged and counted.

mod common;

use std::time::Duration;

use common::{sha256, tiny_manifest, RegistryClient, TestRegistry, OCI_MANIFEST};
use portcullis::config::Config;

/// `build/**` drops untagged manifests at once, `prod/**` is promotion-only; no pass runs by
/// itself; a 2 s grace.
const CONFIG: &str = r#"
[gc]
every = "never"
grace = "2s"
lease = "3s"
[[namespaces]]
pattern = "build/**"
[namespaces.retention]
untagged = "0s"
[[namespaces]]
pattern = "keep/**"
tags = "immutable"
[[namespaces]]
pattern = "prod/**"
promotion_only = true
[[namespaces]]
pattern = "**"
"#;

fn config(dir: &std::path::Path, text: &str) -> Config {
    let overrides = portcullis::config::Overrides { data_dir: Some(dir.to_owned()), ..Default::default() };
    Config::parse(text, "gc test", &overrides).expect("valid config")
}

/// Pushes an image of a config unique to `seed` and the layers `layers`; returns the manifest
/// digest, or the error code the push got.
async fn push_image(api: &RegistryClient, repo: &str, tag: &str, seed: &str, layer: &str) -> Result<String, String> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
    let config_digest = api.push_blob(repo, config.as_bytes()).await;
    let layer_digest = api.push_blob(repo, layer.as_bytes()).await;
    let manifest = tiny_manifest(&config_digest, config.len(), &layer_digest, layer.len(), None);
    let res = api.put_manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes()).await;
    match res.status().as_u16() {
        201 => Ok(sha256(manifest.as_bytes())),
        _ => Err(common::error_code(res).await),
    }
}

/// Every manifest type the registry stores, for `Accept`.
const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Pulls `repo:reference` and everything it names (the children of an index, config and layers),
/// checking every digest; returns the manifest digest.
async fn pull_whole(api: &RegistryClient, repo: &str, reference: &str) -> String {
    let mut queue = vec![reference.to_owned()];
    let mut top = None;
    while let Some(reference) = queue.pop() {
        let res = api.client.get(api.url(&format!("/v2/{repo}/manifests/{reference}"))).header("accept", ACCEPT_ALL).send().await.unwrap();
        assert_eq!(res.status(), 200, "{repo}:{reference}");
        let bytes = res.bytes().await.unwrap();
        if reference.starts_with("sha256:") {
            assert_eq!(sha256(&bytes), reference, "{repo}@{reference} verifies");
        }
        top.get_or_insert_with(|| sha256(&bytes));
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        queue.extend(manifest["manifests"].as_array().into_iter().flatten().map(|child| child["digest"].as_str().unwrap().to_owned()));
        let blobs = manifest["config"].as_object().into_iter().chain(manifest["layers"].as_array().into_iter().flatten().filter_map(|layer| layer.as_object()));
        for blob in blobs {
            let blob = blob["digest"].as_str().unwrap();
            let res = api.client.get(api.url(&format!("/v2/{repo}/blobs/{blob}"))).send().await.unwrap();
            assert_eq!(res.status(), 200, "{repo}:{reference} blob {blob}");
            assert_eq!(sha256(&res.bytes().await.unwrap()), blob, "{repo}:{reference} blob {blob} verifies");
        }
    }
    top.expect("one manifest pulled")
}

async fn tags(api: &RegistryClient, repo: &str) -> Vec<String> {
    let res = api.client.get(api.url(&format!("/v2/{repo}/tags/list?n=10000"))).send().await.unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    body["tags"].as_array().map(|tags| tags.iter().map(|t| t.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

async fn pass(registry: &TestRegistry, dry_run: bool) -> portcullis::gc::Report {
    portcullis::gc::run(registry.registry(), &portcullis::gc::Options { dry_run }).await.expect("gc pass")
}

fn keys(report: &portcullis::gc::Report) -> Vec<String> {
    let mut keys: Vec<String> = report.removed.iter().map(|victim| victim.key.clone()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_pass_removes_what_nothing_keeps_and_the_dry_run_said_so() {
    // A grace longer than the suite's: these pushes must all still be young at the first pass,
    // and on a loaded machine against moto they have taken over 2 s.
    let registry = TestRegistry::with_config_text(&CONFIG.replace(r#"grace = "2s""#, r#"grace = "6s""#)).await;
    let old = push_image(&registry, "build/app", "v1", "old", "old layer").await.unwrap();
    let new = push_image(&registry, "build/app", "v1", "new", "new layer").await.unwrap();
    let orphan = registry.push_blob("build/app", b"never referenced").await;
    // Never touched: an immutable namespace, even untagged content there.
    let kept = push_image(&registry, "keep/app", "v1", "kept", "kept layer").await.unwrap();
    registry.push_blob("keep/app", b"unreferenced in a protected namespace").await;
    // Young content is never removed.
    assert!(pass(&registry, false).await.removed.is_empty(), "everything is younger than the grace");
    tokio::time::sleep(Duration::from_millis(6100)).await;

    let dry = pass(&registry, true).await;
    let old_config = sha256(br#"{"architecture":"amd64","os":"linux","seed":"old"}"#);
    let old_layer = sha256(b"old layer");
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
    let mut expected = vec![
        format!("repositories/build/app/_manifests/sha256/{}", hex(&old)),
        format!("repositories/build/app/_blobs/sha256/{}", hex(&old_config)),
        format!("repositories/build/app/_blobs/sha256/{}", hex(&old_layer)),
        format!("repositories/build/app/_blobs/sha256/{}", hex(&orphan)),
        common::blob_key(&old),
        common::blob_key(&old_config),
        common::blob_key(&old_layer),
        common::blob_key(&orphan),
    ];
    expected.sort();
    assert_eq!(keys(&dry), expected, "the dry run lists the old image and the orphan");
    assert!(registry.has_object(&common::blob_key(&old)).await, "a dry run removes nothing");
    let bytes = (br#"{"architecture":"amd64","os":"linux","seed":"old"}"#.len() + b"old layer".len() + b"never referenced".len()) as u64;
    let real = pass(&registry, false).await;
    assert_eq!(keys(&real), expected, "the pass removes exactly what the dry run listed");
    assert!(real.bytes > bytes, "bytes reclaimed count the manifest too: {}", real.bytes);
    for key in &expected {
        assert!(!registry.has_object(key).await, "{key} removed");
    }
    assert_eq!(pull_whole(&registry, "build/app", "v1").await, new);
    assert_eq!(pull_whole(&registry, "keep/app", "v1").await, kept);
    let res = registry.client.get(registry.url(&format!("/v2/build/app/blobs/{old_layer}"))).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(!registry.has_object("gc/sweep").await && registry.stored_keys("gc/doomed/").await.is_empty(), "a finished pass leaves no state");
    let metrics = registry.client.get(registry.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("portcullis_gc_passes_total{outcome=\"done\"} 2"), "{metrics}");
    assert!(metrics.contains(&format!("portcullis_gc_removed_bytes_total {}", real.bytes)), "{metrics}");
    assert!(metrics.contains("portcullis_gc_removed_objects_total{kind=\"content\"} 4"), "{metrics}");
    assert!(pass(&registry, true).await.removed.is_empty(), "nothing left to remove");
    // One audit record per pass (not for dry runs): its id, and what it removed.
    let audit: serde_json::Value = registry.client.get(registry.url("/api/v1/audit?kind=gc_pass")).send().await.unwrap().json().await.unwrap();
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{audit}");
    let last = &records[1]["detail"];
    assert_eq!(last["pass"].as_str(), real.pass.as_deref(), "{last}");
    assert_eq!((last["objects"].as_u64(), last["bytes"].as_u64()), (Some(8), Some(real.bytes)), "{last}");
    assert_eq!(last["removed"], serde_json::json!({ "manifest": 1, "blob_link": 3, "content": 4 }), "{last}");
    assert_eq!(records[0]["detail"]["objects"], 0);
    assert_eq!(records[1]["actor"], "gc");
}

#[tokio::test]
async fn abandoned_uploads_are_purged_and_counted_with_collection() {
    let registry = TestRegistry::with_config_text(&CONFIG.replace("[gc]", "[registry]\nupload_timeout_secs = 1\n[gc]")).await;
    registry.start_upload("build/app").await;
    let location = registry.start_upload("build/app").await;
    registry.patch_chunk(&location, 0, b"some bytes".to_vec()).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(registry.registry().expire_uploads().await.unwrap(), 2);
    assert!(registry.stored_keys("uploads/").await.is_empty());
    let metrics = registry.client.get(registry.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("portcullis_gc_removed_objects_total{kind=\"upload_session\"} 2"), "{metrics}");
}

#[tokio::test]
async fn retention_keeps_the_last_tags_and_never_touches_the_rest() {
    let text = CONFIG.replace("untagged = \"0s\"", "untagged = \"0s\"\nkeep_last = 2\nkeep_tags = [\"release-*\"]");
    let registry = TestRegistry::with_config_text(&text).await;
    let mut pushed = Vec::new();
    for (i, tag) in ["release-1", "v1", "v2", "v3"].iter().enumerate() {
        pushed.push(push_image(&registry, "build/app", tag, tag, &format!("layer {i}")).await.unwrap());
        // Push times are seconds on S3: one second apart orders them.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = pass(&registry, false).await;
    assert!(report.removed.iter().any(|v| v.key == "repositories/build/app/_tags/v1"), "{:?}", keys(&report));
    let mut left = tags(&registry, "build/app").await;
    left.sort();
    assert_eq!(left, ["release-1", "v2", "v3"], "the newest two and the pattern's");
    for tag in &left {
        pull_whole(&registry, "build/app", tag).await;
    }
    let res = registry.client.get(registry.url(&format!("/v2/build/app/manifests/{}", pushed[1]))).send().await.unwrap();
    assert_eq!(res.status(), 404, "v1's manifest went with its tag (untagged = 0s)");
}

/// Pushes images sharing a layer on `replicas` in a loop (tags moving, so manifests fall
/// untagged), while passes run back to back on the first; then every tag pulls whole.
async fn race(replicas: &[TestRegistry]) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pushers = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for worker in 0..2 {
            let api = replica.api.clone();
            let stop = stop.clone();
            pushers.push(tokio::spawn(async move {
                let (mut accepted, mut refused) = (0, 0);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let tag = format!("t{}", i % 3);
                    match push_image(&api, "build/race", &tag, &format!("{r}-{worker}-{i}"), "the shared layer").await {
                        Ok(_) => accepted += 1,
                        // A blob pushed longer than the grace ago may be collected before its
                        // manifest arrives: the push is refused, never accepted half.
                        Err(code) => {
                            assert_eq!(code, "MANIFEST_BLOB_UNKNOWN");
                            refused += 1;
                        }
                    }
                    i += 1;
                }
                (accepted, refused)
            }));
        }
    }
    let mut removed = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        removed += pass(&replicas[0], false).await.objects;
        // Every tagged manifest is whole at any moment.
        for tag in tags(&replicas[0], "build/race").await {
            let res = replicas[0].client.get(replicas[0].url(&format!("/v2/build/race/manifests/{tag}"))).header("accept", OCI_MANIFEST).send().await.unwrap();
            if res.status() == 200 {
                let manifest: serde_json::Value = res.json().await.unwrap();
                for blob in [&manifest["config"], &manifest["layers"][0]] {
                    let digest = blob["digest"].as_str().unwrap();
                    let res = replicas[0].client.head(replicas[0].url(&format!("/v2/build/race/blobs/{digest}"))).send().await.unwrap();
                    assert_eq!(res.status(), 200, "{tag} names {digest}, which must be there");
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut accepted, mut refused) = (0, 0);
    for pusher in pushers {
        let (a, r) = pusher.await.unwrap();
        accepted += a;
        refused += r;
    }
    removed += pass(&replicas[0], false).await.objects;
    eprintln!("race: {accepted} pushes accepted, {refused} refused, {removed} objects removed");
    assert!(accepted > 10 && removed > 0, "the race raced: {accepted} accepted, {removed} removed");
    for tag in tags(&replicas[1 % replicas.len()], "build/race").await {
        pull_whole(&replicas[1 % replicas.len()], "build/race", &tag).await;
        // And a real client copies it whole.
        let clients = common::clients::Clients::new();
        let remote = format!("docker://{}/build/race:{tag}", replicas[0].host);
        let local = format!("oci:{}:{tag}", clients.path("copy").display());
        clients.skopeo("copy", &["--src-tls-verify=false", &remote, &local]).await.ok();
    }
}

#[tokio::test]
async fn pushes_racing_passes_on_one_filesystem_store_lose_nothing() {
    let first = TestRegistry::with_config_text(&CONFIG.replace("[gc]", "[storage]\nbackend = \"fs\"\n[gc]")).await;
    let shared = first.config.storage.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut second_config = config(dir.path(), CONFIG);
    second_config.storage = shared;
    let second = TestRegistry::with_config(|config| *config = second_config).await;
    race(&[first, second]).await;
}

#[tokio::test]
async fn pushes_racing_passes_on_two_replicas_over_one_bucket_lose_nothing() {
    let Some(s3) = common::s3::TestS3::from_env() else { return };
    let storage = portcullis::config::StorageConfig::S3(common::s3::fresh_storage(&s3).await);
    let replicas = [storage.clone(), storage].map(|storage| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), CONFIG);
        config.storage = storage;
        (config, dir)
    });
    let mut running = Vec::new();
    for (config, _dir) in &replicas {
        let config = config.clone();
        running.push(TestRegistry::with_config(|c| *c = config).await);
    }
    race(&running).await;
}

/// A config file for `portcullis gc` child processes on `data_dir`'s filesystem store.
fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("gc.toml");
    std::fs::write(&path, format!("[storage]\nbackend = \"fs\"\ndata_dir = {:?}\n{CONFIG}", dir.join("data").display().to_string())).unwrap();
    path
}

fn gc_command(config: &std::path::Path, failpoints: Option<&str>) -> std::process::Command {
    let mut command = common::portcullis_command();
    command.args(["gc", "--json", "--config"]).arg(config);
    if let Some(failpoints) = failpoints {
        command.env("FAILPOINTS", failpoints);
    }
    command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    command
}

/// A registry on `dir/data` with an old image untagged by a newer one: something to collect.
async fn with_garbage(dir: &std::path::Path) -> (TestRegistry, String) {
    let mut config = config(&dir.join("data"), &format!("[storage]\nbackend = \"fs\"\n{CONFIG}"));
    config.index_dir = dir.join("index");
    let registry = TestRegistry::with_config(|c| *c = config).await;
    for i in 0..5 {
        push_image(&registry, "build/app", "v1", &format!("old {i}"), &format!("old layer {i}")).await.unwrap();
    }
    let new = push_image(&registry, "build/app", "v1", "new", "new layer").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    (registry, new)
}

fn report_of(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "gc failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

#[tokio::test]
async fn a_collector_killed_mid_pass_is_finished_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, new) = with_garbage(dir.path()).await;
    let expected = keys(&pass(&registry, true).await);
    assert!(expected.len() >= 20, "{expected:?}");
    let path = config_file(dir.path());
    let mut child = gc_command(&path, Some("gc-claimed=sleep(60000)")).spawn().unwrap();
    // Wait for the claim, then kill -9.
    let started = std::time::Instant::now();
    loop {
        let sweep = registry.store().await.get_small("gc/sweep", 65536).await.unwrap();
        if sweep.is_some_and(|object| String::from_utf8_lossy(&object.bytes).contains("\"claimed\":true")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the pass never claimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing tagged misses anything, and pushes go on.
    assert_eq!(pull_whole(&registry, "build/app", "v1").await, new);
    push_image(&registry, "build/app", "v2", "during", "during layer").await.unwrap();
    // The next collector waits out the dead one's lease, finishes its pass, then runs its own.
    let report = report_of(&gc_command(&path, None).output().unwrap());
    assert_eq!(report["resumed"], true, "{report}");
    let mut removed: Vec<String> = report["removed"].as_array().unwrap().iter().map(|v| v["key"].as_str().unwrap().to_owned()).collect();
    removed.sort();
    assert_eq!(removed, expected, "the finished pass removed what the killed one had claimed");
    assert_eq!(pull_whole(&registry, "build/app", "v1").await, new);
    pull_whole(&registry, "build/app", "v2").await;
    assert!(!registry.has_object("gc/sweep").await && registry.stored_keys("gc/doomed/").await.is_empty());
}

#[tokio::test]
async fn two_collectors_started_at_once_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, new) = with_garbage(dir.path()).await;
    let expected = keys(&pass(&registry, true).await);
    let path = config_file(dir.path());
    // Each pass holds the lease at least 2 s after claiming, so the two overlap.
    let children = [gc_command(&path, Some("gc-claimed=sleep(2000)")).spawn().unwrap(), gc_command(&path, Some("gc-claimed=sleep(2000)")).spawn().unwrap()];
    let reports: Vec<serde_json::Value> = children.into_iter().map(|child| report_of(&child.wait_with_output().unwrap())).collect();
    let waited: Vec<bool> = reports.iter().map(|report| report["waited_for_lease"] == true).collect();
    assert_eq!(waited.iter().filter(|w| **w).count(), 1, "one works, the other waits: {reports:?}");
    let worker = reports.iter().find(|report| report["waited_for_lease"] == false).unwrap();
    let waiter = reports.iter().find(|report| report["waited_for_lease"] == true).unwrap();
    let mut removed: Vec<String> = worker["removed"].as_array().unwrap().iter().map(|v| v["key"].as_str().unwrap().to_owned()).collect();
    removed.sort();
    assert_eq!(removed, expected);
    assert_eq!(waiter["objects"], 0, "nothing left for the second: {waiter}");
    assert_eq!(pull_whole(&registry, "build/app", "v1").await, new);
}

/// Waits until `key` is stored (a pull record is written in the background after the response).
async fn stored_soon(registry: &TestRegistry, key: &str) {
    for _ in 0..100 {
        if registry.has_object(key).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{key} was never written");
}

fn pulled_key(repo: &str, digest: &str) -> String {
    format!("repositories/{repo}/_pulled/sha256/{}", digest.trim_start_matches("sha256:"))
}

#[tokio::test]
async fn tags_not_pulled_for_an_age_go_and_pulled_ones_stay() {
    let text = CONFIG.replace("untagged = \"0s\"", "untagged = \"0s\"\nnot_pulled = \"1s\"");
    let registry = TestRegistry::with_config_text(&text).await;
    let by_tag = push_image(&registry, "build/app", "by-tag", "by-tag", "layer by tag").await.unwrap();
    let by_digest = push_image(&registry, "build/app", "by-digest", "by-digest", "layer by digest").await.unwrap();
    let looked_at = push_image(&registry, "build/app", "looked-at", "looked-at", "layer looked at").await.unwrap();
    let never = push_image(&registry, "build/app", "never", "never", "layer never").await.unwrap();
    // Older than the grace and the age (push times are whole seconds on S3).
    tokio::time::sleep(Duration::from_millis(4100)).await;
    // A GET by tag counts, and so does a GET by digest (a client that resolved the tag with HEAD).
    // A HEAD alone does not: looking is not pulling.
    pull_whole(&registry, "build/app", "by-tag").await;
    pull_whole(&registry, "build/app", &by_digest).await;
    let res = registry.client.head(registry.url("/v2/build/app/manifests/looked-at")).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(res.status(), 200);
    stored_soon(&registry, &pulled_key("build/app", &by_tag)).await;
    stored_soon(&registry, &pulled_key("build/app", &by_digest)).await;
    assert!(!registry.has_object(&pulled_key("build/app", &looked_at)).await, "a HEAD records no pull");

    let report = pass(&registry, false).await;
    let removed = keys(&report);
    for (tag, digest) in [("looked-at", &looked_at), ("never", &never)] {
        assert!(removed.contains(&format!("repositories/build/app/_tags/{tag}")), "{tag} goes: {removed:?}");
        assert!(removed.contains(&common::blob_key(digest)), "and its manifest with it (untagged = 0s): {removed:?}");
    }
    let mut left = tags(&registry, "build/app").await;
    left.sort();
    assert_eq!(left, ["by-digest", "by-tag"], "the tags pulled within the age stay");
    assert_eq!(pull_whole(&registry, "build/app", "by-tag").await, by_tag);
    assert_eq!(pull_whole(&registry, "build/app", "by-digest").await, by_digest);
    let res = registry.client.get(registry.url(&format!("/v2/build/app/manifests/{never}"))).send().await.unwrap();
    assert_eq!(res.status(), 404);

    // Unpulled for the age again, they go too, with their pull records.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let removed = keys(&pass(&registry, false).await);
    assert!(removed.contains(&pulled_key("build/app", &by_tag)), "{removed:?}");
    assert!(tags(&registry, "build/app").await.is_empty());
    assert!(registry.stored_keys("repositories/build/app/_pulled/").await.is_empty(), "no pull record outlives its manifest");
}

/// Retention that would remove every mutable tag and every untagged manifest, and what it must
/// never touch: immutable and write-once tags with what they reference (an index's children,
/// blobs), the referrers of kept manifests (signatures, attestations, SBOMs), and anything
/// promoted (tags, evidence, the verification summary), even into a namespace with the same
/// rules; while evidence whose subject goes goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_touches_what_it_must_keep() {
    let dir = tempfile::tempdir().unwrap();
    let ci = common::cosign::Key::generate();
    std::fs::write(dir.path().join("ci.pub"), ci.public_pem()).unwrap();
    let rules = "[namespaces.retention]\nuntagged = \"0s\"\nkeep_last = 0\nnot_pulled = \"0s\"\n";
    let text = format!(
        r#"
[gc]
every = "never"
grace = "2s"
lease = "3s"
[[trust.keys]]
name = "ci"
public_key = {key:?}
[[namespaces]]
pattern = "build/**"
[[namespaces.tag_rules]]
pattern = "release-*"
tags = "immutable"
[[namespaces.tag_rules]]
pattern = "once-*"
tags = "write-once"
{rules}
[[namespaces]]
pattern = "stage/**"
[namespaces.gate]
signed_by = ["ci"]
{rules}
[[namespaces]]
pattern = "**"
"#,
        key = dir.path().join("ci.pub").display().to_string()
    );
    let registry = TestRegistry::with_config_text(&text).await;
    let clients = common::clients::Clients::new();
    // An index under an immutable tag, pushed with skopeo.
    let index = common::images::multi_platform_index(&dir.path().join("index"), "v1", 31);
    let source = format!("oci:{}:v1", index.path.display());
    let dest = format!("docker://{}/build/app:release-1", registry.host);
    clients.skopeo("copy", &["--all", "--preserve-digests", "--dest-tls-verify=false", &source, &dest]).await.ok();
    // An image under a write-once tag.
    let once = push_image(&registry, "build/app", "once-1", "once", "once layer").await.unwrap();
    // An image under an immutable tag with a signature (cosign's tag scheme), an attestation and
    // an SBOM (referrers).
    let signed = push_image(&registry, "build/app", "release-2", "signed", "signed layer").await.unwrap();
    common::cosign::sign(&registry, "build/app", &signed, &ci).await;
    let scan = common::cosign::trivy_predicate(&common::cosign::time_ago(60), &[]);
    common::cosign::attest_with(&registry, "build/app", &signed, &ci, &[(common::cosign::VULN, scan)], common::cosign::Scheme::Referrer).await;
    let sbom = ("https://spdx.dev/Document", serde_json::json!({ "spdxVersion": "SPDX-2.3" }));
    common::cosign::attest_with(&registry, "build/app", &signed, &ci, &[sbom], common::cosign::Scheme::Referrer).await;
    // An image under a mutable tag, signed both ways, promoted into stage/ (gated: a
    // verification summary is signed) under a mutable tag.
    let promoted = push_image(&registry, "build/app", "v1", "promoted", "promoted layer").await.unwrap();
    common::cosign::sign(&registry, "build/app", &promoted, &ci).await;
    common::cosign::sign_with(&registry, "build/app", &promoted, &ci, common::cosign::Scheme::Referrer).await;
    let res = registry.client.post(registry.url("/api/v1/promotions")).json(&serde_json::json!({"source": "build/app:v1", "target": "stage/app", "tags": ["v1"]})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let promotion: serde_json::Value = res.json().await.unwrap();
    let vsa = promotion["promotion"]["vsa"].as_str().expect("a verification summary").to_owned();
    let referrers = |repo: &str, subject: &str| {
        let url = registry.url(&format!("/v2/{repo}/referrers/{subject}"));
        let client = registry.client.clone();
        async move {
            let body: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
            let mut digests: Vec<String> = body["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_owned()).collect();
            digests.sort();
            digests
        }
    };
    let signed_referrers = referrers("build/app", &signed).await;
    let build_referrers = referrers("build/app", &promoted).await;
    let stage_referrers = referrers("stage/app", &promoted).await;
    assert_eq!((signed_referrers.len(), build_referrers.len(), stage_referrers.len()), (2, 1, 2), "the signature and the summary in stage/");
    let sig_tag = |digest: &str| format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    let sig_of_promoted = registry.client.head(registry.url(&format!("/v2/build/app/manifests/{}", sig_tag(&promoted)))).send().await.unwrap();
    let sig_of_promoted = sig_of_promoted.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(3100)).await;

    let report = pass(&registry, false).await;
    let removed = keys(&report);
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
    // The mutable tag in build/ went, and its image with it, and its evidence with its subject:
    // the referrer with its link, cosign's tag and its manifest.
    for key in [
        "repositories/build/app/_tags/v1".to_owned(),
        format!("repositories/build/app/_manifests/sha256/{}", hex(&promoted)),
        format!("repositories/build/app/_tags/{}", sig_tag(&promoted)),
        format!("repositories/build/app/_manifests/sha256/{}", hex(&sig_of_promoted)),
        format!("repositories/build/app/_referrers/sha256/{}/{}", hex(&promoted), hex(&build_referrers[0])),
        format!("repositories/build/app/_manifests/sha256/{}", hex(&build_referrers[0])),
    ] {
        assert!(removed.contains(&key), "{key} goes: {removed:?}");
    }
    for digest in [&promoted, &sig_of_promoted, &build_referrers[0]] {
        let res = registry.client.get(registry.url(&format!("/v2/build/app/manifests/{digest}"))).send().await.unwrap();
        assert_eq!(res.status(), 404, "{digest} left build/app");
    }
    // Nothing else of build/ and nothing of stage/ went.
    for key in &removed {
        assert!(!key.contains("stage/app"), "{key} of the promoted image");
        for kept in [&index.manifest_digest, &once, &signed, &signed_referrers[0], &signed_referrers[1], &vsa] {
            assert!(!key.contains(&hex(kept)), "{key} is {kept}'s");
        }
    }
    assert!(report.removed.iter().all(|victim| victim.kind != portcullis::registry::collect::VictimKind::Content || !victim.key.contains(&hex(&promoted))), "the promoted content stays");
    // Everything kept pulls whole, every digest verifying.
    assert_eq!(pull_whole(&registry, "build/app", "release-1").await, index.manifest_digest);
    assert_eq!(pull_whole(&registry, "build/app", "once-1").await, once);
    assert_eq!(pull_whole(&registry, "build/app", "release-2").await, signed);
    pull_whole(&registry, "build/app", &sig_tag(&signed)).await;
    assert_eq!(referrers("build/app", &signed).await, signed_referrers);
    for referrer in &signed_referrers {
        pull_whole(&registry, "build/app", referrer).await;
    }
    let mut tags_left = tags(&registry, "stage/app").await;
    tags_left.sort();
    assert_eq!(tags_left, ["sha256-".to_owned() + &hex(&promoted) + ".att", sig_tag(&promoted), "v1".to_owned()], "promoted tags stay");
    assert_eq!(pull_whole(&registry, "stage/app", "v1").await, promoted);
    assert_eq!(referrers("stage/app", &promoted).await, stage_referrers);
    for referrer in &stage_referrers {
        pull_whole(&registry, "stage/app", referrer).await;
    }
    pull_whole(&registry, "stage/app", &sig_tag(&promoted)).await;
    assert!(stage_referrers.contains(&vsa));
    // And skopeo copies the index whole.
    let copy = format!("oci:{}:copy", clients.path("copy").display());
    let src = format!("docker://{}/build/app:release-1", registry.host);
    clients.skopeo("copy", &["--all", "--preserve-digests", "--src-tls-verify=false", &src, &copy]).await.ok();
}

/// Promotes images of `build/race` that fell untagged more than the grace ago (so collection is
/// about to remove them) into `prod/race` on every replica, while passes run back to back on the
/// first; then every promotion that was accepted pulls whole from the other replica. A promotion
/// links content without copying it: unfenced, a pass that marked before the links were written
/// deletes the content under them.
async fn promotion_race(replicas: &[TestRegistry]) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushed: std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>> = Default::default();
    let pusher = {
        let (api, stop, pushed) = (replicas[0].api.clone(), stop.clone(), pushed.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each push moves the tag: the image before falls untagged.
                let digest = push_image(&api, "build/race", "latest", &format!("image {i}"), &format!("layer {i}")).await.unwrap();
                pushed.lock().unwrap().push((digest, std::time::Instant::now()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Promotions accepted and refused so far, so that the race runs until it raced.
    let counts: std::sync::Arc<[std::sync::atomic::AtomicUsize; 2]> = Default::default();
    let mut promoters = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        let (api, stop, pushed, counts) = (replica.api.clone(), stop.clone(), pushed.clone(), counts.clone());
        promoters.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // The newest image untagged for longer than the grace and the cut-off's rounding
                // (3 s), that nobody took yet: a pass marks it, claims it and deletes it within
                // the next seconds.
                let next = take_ripe(&pushed);
                let Some(digest) = next else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let tag = format!("r{r}-{}", &digest[7..19]);
                let body = serde_json::json!({"source": format!("build/race@{digest}"), "target": "prod/race", "tags": [tag]});
                let res = api.client.post(api.url("/api/v1/promotions")).json(&body).send().await.unwrap();
                let outcome = match res.status().as_u16() {
                    201 => {
                        accepted.push((tag, digest));
                        0
                    }
                    // Collected before or while it was linked: refused, never accepted half.
                    400 | 404 | 503 => {
                        refused += 1;
                        1
                    }
                    status => panic!("promotion of {digest}: {status} {}", res.text().await.unwrap_or_default()),
                };
                counts[outcome].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (accepted, refused)
        }));
    }
    let mut removed = 0;
    let started = std::time::Instant::now();
    // At least 20 s, and on until promotions were both accepted and refused (a slow or busy
    // store), for at most 3 minutes.
    let raced = || counts[0].load(std::sync::atomic::Ordering::Relaxed) >= 5 && counts[1].load(std::sync::atomic::Ordering::Relaxed) > 0;
    while started.elapsed() < Duration::from_secs(20) || (!raced() && started.elapsed() < Duration::from_secs(180)) {
        removed += pass(&replicas[0], false).await.objects;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pusher.await.unwrap();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for promoter in promoters {
        let (a, r) = promoter.await.unwrap();
        accepted.extend(a);
        refused += r;
    }
    removed += pass(&replicas[0], false).await.objects;
    eprintln!("promotion race: {} promotions accepted, {refused} refused, {removed} objects removed", accepted.len());
    assert!(accepted.len() >= 5 && refused > 0 && removed > 0, "the race raced: {} accepted, {refused} refused, {removed} removed", accepted.len());
    let other = &replicas[1 % replicas.len()];
    for (tag, digest) in &accepted {
        assert_eq!(pull_whole(other, "prod/race", tag).await, *digest, "prod/race:{tag}");
    }
    let clients = common::clients::Clients::new();
    let (tag, _) = &accepted[0];
    let remote = format!("docker://{}/prod/race:{tag}", other.host);
    let local = format!("oci:{}:{tag}", clients.path("copy").display());
    clients.skopeo("copy", &["--src-tls-verify=false", &remote, &local]).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_racing_passes_on_one_filesystem_store_lose_nothing() {
    let first = TestRegistry::with_config_text(&CONFIG.replace("[gc]", "[storage]\nbackend = \"fs\"\n[gc]")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut second_config = config(dir.path(), CONFIG);
    second_config.storage = first.config.storage.clone();
    let second = TestRegistry::with_config(|config| *config = second_config).await;
    promotion_race(&[first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_racing_passes_on_two_replicas_over_one_bucket_lose_nothing() {
    let Some(s3) = common::s3::TestS3::from_env() else { return };
    let storage = portcullis::config::StorageConfig::S3(common::s3::fresh_storage(&s3).await);
    let mut running = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), CONFIG);
        config.storage = storage.clone();
        running.push(TestRegistry::with_config(|c| *c = config).await);
        dirs.push(dir);
    }
    promotion_race(&running).await;
}

#[tokio::test]
async fn proxied_content_is_left_to_the_proxy() {
    let mut upstream = TestRegistry::start().await;
    let (tagged, _) = upstream.push_tiny_image("team/app", "v1", "proxied tagged").await;
    let (untagged, _) = upstream.push_tiny_image("team/app", "v2", "proxied by digest").await;
    let text = format!(
        "[gc]\nevery = \"never\"\ngrace = \"2s\"\nlease = \"3s\"\n[[upstreams]]\nname = \"up\"\nurl = \"{}\"\n[[namespaces]]\npattern = \"**\"\n[namespaces.retention]\nuntagged = \"0s\"\nkeep_last = 0\nnot_pulled = \"0s\"\n",
        upstream.base_url
    );
    let proxy = TestRegistry::with_config_text(&text).await;
    assert_eq!(pull_whole(&proxy, "proxy/up/team/app", "v1").await, tagged);
    assert_eq!(pull_whole(&proxy, "proxy/up/team/app", &untagged).await, untagged);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let report = pass(&proxy, false).await;
    assert!(report.removed.is_empty(), "retention does not apply to proxied content: {:?}", keys(&report));
    // Served from the store, the upstream gone.
    upstream.stop().await;
    assert_eq!(pull_whole(&proxy, "proxy/up/team/app", &tagged).await, tagged);
    assert_eq!(pull_whole(&proxy, "proxy/up/team/app", &untagged).await, untagged);
}

/// The proxy links content stored already (for another repository) once the upstream confirms
/// its repository has it; that content may be about to be collected. Blobs pushed to
/// `build/junk` and never referenced fall old while an upstream serves images with the same bytes
/// as layers; two clients pull those layers through the proxy while passes run back to back.
/// Then, the upstream gone, every layer pulled through is served whole from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_links_racing_passes_lose_nothing() {
    let mut upstream = TestRegistry::start().await;
    let text = CONFIG.replace("[[namespaces]]\npattern = \"**\"", &format!("[[upstreams]]\nname = \"up\"\nurl = \"{}\"\n[[namespaces]]\npattern = \"**\"", upstream.base_url));
    let proxy = TestRegistry::with_config_text(&text).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pushed: std::sync::Arc<std::sync::Mutex<Vec<(String, std::time::Instant)>>> = Default::default();
    let pusher = {
        let (local, remote, stop, pushed) = (proxy.api.clone(), upstream.api.clone(), stop.clone(), pushed.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let layer = format!("junk {i}");
                let digest = local.push_blob("build/junk", layer.as_bytes()).await;
                assert_eq!(remote.push_blob("team/app", layer.as_bytes()).await, digest);
                pushed.lock().unwrap().push((digest, std::time::Instant::now()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut pullers = Vec::new();
    for _ in 0..2 {
        let (api, stop, pushed) = (proxy.api.clone(), stop.clone(), pushed.clone());
        pullers.push(tokio::spawn(async move {
            let mut pulled = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // As the promotion race: the newest blob old enough for a pass to collect.
                let next = take_ripe(&pushed);
                let Some(digest) = next else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let res = api.client.get(api.url(&format!("/v2/proxy/up/team/app/blobs/{digest}"))).send().await.unwrap();
                assert_eq!(res.status(), 200, "{digest}");
                assert_eq!(sha256(&res.bytes().await.unwrap()), digest);
                pulled.push(digest);
            }
            pulled
        }));
    }
    let mut removed = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        removed += pass(&proxy, false).await.objects;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pusher.await.unwrap();
    let mut pulled = Vec::new();
    for puller in pullers {
        pulled.extend(puller.await.unwrap());
    }
    removed += pass(&proxy, false).await.objects;
    eprintln!("proxy race: {} layers pulled through, {removed} objects removed", pulled.len());
    assert!(pulled.len() >= 5 && removed > 0, "the race raced: {} pulled, {removed} removed", pulled.len());
    upstream.stop().await;
    for digest in &pulled {
        let res = proxy.client.get(proxy.url(&format!("/v2/proxy/up/team/app/blobs/{digest}"))).send().await.unwrap();
        assert_eq!(res.status(), 200, "{digest} is stored");
        assert_eq!(sha256(&res.bytes().await.unwrap()), *digest);
    }
}

/// The newest digest pushed between 3 and 10 s ago that nobody took yet (older ones are dropped):
/// old enough for a pass with the tests' 2 s grace to collect it, so a race with it is real.
fn take_ripe(pushed: &std::sync::Mutex<Vec<(String, std::time::Instant)>>) -> Option<String> {
    let mut pushed = pushed.lock().unwrap();
    pushed.retain(|(_, at)| at.elapsed() < Duration::from_secs(10));
    let found = pushed.iter().rposition(|(_, at)| at.elapsed() > Duration::from_secs(3));
    found.map(|at| pushed.remove(at).0)
}
