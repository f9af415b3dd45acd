//! Scrub (#18): a blob or manifest whose stored bytes were damaged behind the registry's back (on
//! disk, or in the bucket through the S3 SDK) is found by a pass (`portcullis scrub` or the
//! library), quarantined, named in the report, the metrics and the audit log, and refused to
//! every read (GET, HEAD, ranges, S3 redirects, a skopeo pull) until its right bytes are pushed
//! again; an intact store reports nothing; one scrubber runs at a time; the pace bounds a pass.

mod common;

use common::clients::Clients;
use common::{sha256, tiny_manifest, RegistryClient, TestRegistry, OCI_MANIFEST};
use portcullis::config::StorageConfig;

const REPO: &str = "team/app";

/// A registry whose scrubber runs only when asked, with blob redirects on S3.
async fn registry() -> TestRegistry {
    TestRegistry::with_config(|config| {
        config.scrub.every = None;
        if let StorageConfig::S3(s3) = &mut config.storage {
            s3.redirect_blobs = true;
        }
    })
    .await
}

/// An image: its config, one layer of `layer` bytes, the manifest tagged `tag`.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(seed: &str, layer_bytes: usize) -> Image {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#).into_bytes();
        let layer: Vec<u8> = (0..layer_bytes).map(|i| (i * 7 + seed.len()) as u8).collect();
        let manifest = tiny_manifest(&sha256(&config), config.len(), &sha256(&layer), layer.len(), None).into_bytes();
        Image { config, layer, manifest }
    }

    async fn push(&self, api: &RegistryClient, tag: &str) {
        api.push_blob(REPO, &self.config).await;
        api.push_blob(REPO, &self.layer).await;
        let res = api.put_manifest(REPO, tag, OCI_MANIFEST, &self.manifest).await;
        assert_eq!(res.status(), 201, "push {REPO}:{tag}");
    }

    fn layer_digest(&self) -> String {
        sha256(&self.layer)
    }

    fn manifest_digest(&self) -> String {
        sha256(&self.manifest)
    }
}

/// Overwrites the stored bytes of `digest` behind the registry's back, with as many bytes, one
/// flipped: in the directory on the filesystem backend, through the S3 SDK on S3.
async fn damage(registry: &TestRegistry, digest: &str) {
    let key = common::blob_key(digest);
    let store = registry.store().await;
    let mut bytes = store.get_small(&key, 64 << 20).await.unwrap().expect("stored").bytes.to_vec();
    bytes[0] ^= 0xff;
    match &registry.config.storage {
        StorageConfig::Fs { root } => std::fs::write(root.join("objects").join(&key), &bytes).unwrap(),
        StorageConfig::S3(s3) => {
            let client = common::s3::TestS3::required().client().await;
            let raw_key = format!("{}/{key}", s3.store.prefix);
            client.put_object().bucket(&s3.store.bucket).key(raw_key).body(bytes.into()).send().await.expect("put behind the registry");
        }
    }
    assert_ne!(sha256(&store.get_small(&key, 64 << 20).await.unwrap().unwrap().bytes), digest, "damaged");
}

/// A configuration file for `portcullis scrub` on the registry's store.
fn config_file(registry: &TestRegistry) -> std::path::PathBuf {
    let storage = match &registry.config.storage {
        StorageConfig::Fs { root } => format!("[storage]\nbackend = \"fs\"\ndata_dir = {:?}\n", root.parent().unwrap().display().to_string()),
        StorageConfig::S3(s3) => format!("[storage]\nbackend = \"s3\"\ndata_dir = {:?}\n{}", registry.data_dir.join("cli").display().to_string(), common::s3::storage_toml(s3)),
    };
    let path = registry.data_dir.join("scrub.toml");
    std::fs::write(&path, format!("{storage}[scrub]\nevery = \"never\"\nbytes_per_second = 1073741824\n")).unwrap();
    path
}

/// Runs `portcullis scrub --report` (with `--json` when asked): exit code and stdout.
async fn scrub_command(registry: &TestRegistry, json: bool) -> (i32, String) {
    let config = config_file(registry);
    let mut args = vec!["scrub".to_owned(), "--report".to_owned(), "--config".to_owned(), config.display().to_string()];
    if json {
        args.push("--json".to_owned());
    }
    let output = common::portcullis_async(args).await;
    let code = output.status.code().expect("exited");
    assert!(code == 0 || code == 1, "scrub failed: {}", String::from_utf8_lossy(&output.stderr));
    (code, String::from_utf8(output.stdout).unwrap())
}

async fn pass(registry: &TestRegistry) -> portcullis::scrub::Report {
    portcullis::scrub::run(registry.registry()).await.expect("scrub pass")
}

/// Status and OCI error code (and message) of a request; the code is empty for a success.
async fn answer(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    let error = &body["errors"][0];
    (status, error["code"].as_str().unwrap_or_default().to_owned(), error["message"].as_str().unwrap_or_default().to_owned())
}

async fn skopeo_pull(registry: &TestRegistry, reference: &str) -> common::clients::Run {
    let clients = Clients::new();
    let remote = format!("docker://{}/{REPO}{reference}", registry.host);
    let local = format!("oci:{}:copy", clients.path("copy").display());
    clients.skopeo("copy", &["--src-tls-verify=false", &remote, &local]).await
}

async fn audit(registry: &TestRegistry) -> Vec<serde_json::Value> {
    let res = registry.client.get(registry.url("/api/v1/audit?kind=scrub_corrupt")).send().await.unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    body["records"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_intact_store_reports_nothing() {
    let registry = registry().await;
    let image = Image::new("intact", 100_000);
    image.push(&registry, "v1").await;
    let report = pass(&registry).await;
    assert_eq!(report.found.objects, 3, "config, layer and manifest hashed");
    assert_eq!(report.found.bytes, (image.config.len() + image.layer.len() + image.manifest.len()) as u64);
    assert!(!report.anything_corrupt(), "{report:?}");
    let (code, text) = scrub_command(&registry, false).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("scrub: 3 objects") && text.contains("0 corrupt found, 0 quarantined"), "{text}");
    assert!(audit(&registry).await.is_empty());
    assert!(registry.stored_keys("quarantine/").await.is_empty());
}

#[tokio::test]
async fn a_corrupt_blob_is_quarantined_refused_and_healed_by_a_push() {
    let registry = registry().await;
    let image = Image::new("blob", 300_000);
    image.push(&registry, "v1").await;
    let layer = image.layer_digest();
    let blob_path = format!("/v2/{REPO}/blobs/{layer}");
    let redirects = matches!(&registry.config.storage, StorageConfig::S3(_));
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirect.get(registry.url(&blob_path)).send().await.unwrap();
    assert_eq!(res.status(), if redirects { 307 } else { 200 }, "served before the damage");
    damage(&registry, &layer).await;

    // The CLI, beside the running server, finds it and names it.
    let (code, json) = scrub_command(&registry, true).await;
    assert_eq!(code, 1, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let corrupt = report["corrupt"].as_array().unwrap();
    assert_eq!(corrupt.len(), 1, "{json}");
    assert_eq!(corrupt[0]["digest"], layer.as_str());
    assert_eq!(corrupt[0]["kind"], "blob");
    assert_eq!(corrupt[0]["size"], image.layer.len() as u64);
    assert_eq!(corrupt[0]["repositories"], serde_json::json!([REPO]));
    assert_eq!(corrupt[0]["quarantined"], true);
    assert_eq!(report["quarantined"][0]["digest"], layer.as_str());
    assert!(!registry.has_object(&common::blob_key(&layer)).await, "moved out of blobs/");
    let hex = layer.trim_start_matches("sha256:");
    assert!(registry.has_object(&format!("quarantine/sha256/{hex}")).await, "kept in the quarantine");
    let records = audit(&registry).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0]["digest"].as_str(), records[0]["repository"].as_str()), (Some(layer.as_str()), Some(REPO)));
    assert_eq!(records[0]["detail"]["found_by"], "scrub");

    // Every read refuses it: GET, HEAD, a range, a redirect; the image does not pull.
    let (status, code, message) = answer(no_redirect.get(registry.url(&blob_path)).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (404, "BLOB_UNKNOWN"), "{message}");
    assert!(message.contains("quarantined"), "{message}");
    let res = registry.client.head(registry.url(&blob_path)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = registry.client.get(registry.url(&blob_path)).header("range", "bytes=0-99").send().await.unwrap();
    assert_eq!(answer(res).await.0, 404);
    let run = skopeo_pull(&registry, ":v1").await;
    assert!(!run.status.success(), "skopeo pulled an image with a quarantined layer:\n{}", run.stderr);
    // A second run lists it as still quarantined.
    let (code, text) = scrub_command(&registry, false).await;
    assert_eq!(code, 1);
    assert!(text.contains(&format!("quarantined blob {layer}")), "{text}");

    // The right bytes pushed again are served again, and the next pass drops the copy.
    assert_eq!(registry.push_blob(REPO, &image.layer).await, layer);
    let res = no_redirect.get(registry.url(&blob_path)).send().await.unwrap();
    assert_eq!(res.status(), if redirects { 307 } else { 200 }, "served again");
    let res = match redirects {
        true => reqwest::get(res.headers()["location"].to_str().unwrap()).await.unwrap(),
        false => res,
    };
    assert_eq!(sha256(&res.bytes().await.unwrap()), layer);
    skopeo_pull(&registry, ":v1").await.ok();
    let report = pass(&registry).await;
    assert_eq!(report.found.healed, vec![layer.clone()]);
    assert!(!report.anything_corrupt(), "{report:?}");
    assert!(registry.stored_keys("quarantine/").await.is_empty());
}

#[tokio::test]
async fn a_corrupt_manifest_is_quarantined_by_a_pass_or_a_read_and_refused() {
    let registry = registry().await;
    let found_by_pass = Image::new("found by a pass", 1000);
    let found_by_read = Image::new("found by a read", 1000);
    found_by_pass.push(&registry, "v1").await;
    found_by_read.push(&registry, "v2").await;

    // A pass finds the first.
    let digest = found_by_pass.manifest_digest();
    damage(&registry, &digest).await;
    let report = pass(&registry).await;
    assert_eq!(report.found.corrupt.len(), 1, "{report:?}");
    assert_eq!((report.found.corrupt[0].digest.clone(), report.found.corrupt[0].kind.as_str()), (digest.clone(), "manifest"));
    for reference in ["v1", digest.as_str()] {
        let path = format!("/v2/{REPO}/manifests/{reference}");
        let res = registry.client.get(registry.url(&path)).header("accept", OCI_MANIFEST).send().await.unwrap();
        let (status, code, message) = answer(res).await;
        assert_eq!((status, code.as_str()), (404, "MANIFEST_UNKNOWN"), "{reference}: {message}");
        assert!(message.contains("quarantined"), "{message}");
        let res = registry.client.head(registry.url(&path)).header("accept", OCI_MANIFEST).send().await.unwrap();
        assert_eq!(res.status(), 404, "HEAD {reference}");
    }
    let run = skopeo_pull(&registry, ":v1").await;
    assert!(!run.status.success(), "skopeo pulled a quarantined manifest:\n{}", run.stderr);
    let metrics = registry.client.get(registry.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("portcullis_scrub_corrupt_total{kind=\"manifest\"} 1"), "{metrics}");
    assert!(metrics.contains("portcullis_scrub_passes_total{outcome=\"done\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("portcullis_scrub_checked_objects_total {}", report.found.objects)), "{metrics}");
    assert!(metrics.contains(&format!("portcullis_scrub_checked_bytes_total {}", report.found.bytes)), "{metrics}");
    assert!(metrics.contains("portcullis_scrub_pass_duration_seconds_count 1"), "{metrics}");

    // A read verifies a manifest before serving it: the second is refused without a pass.
    let read_digest = found_by_read.manifest_digest();
    damage(&registry, &read_digest).await;
    let res = registry.client.get(registry.url(&format!("/v2/{REPO}/manifests/v2"))).header("accept", OCI_MANIFEST).send().await.unwrap();
    let (status, code, message) = answer(res).await;
    assert_eq!((status, code.as_str()), (404, "MANIFEST_UNKNOWN"), "{message}");
    let records = audit(&registry).await;
    let found: Vec<(&str, &str)> = records.iter().map(|r| (r["digest"].as_str().unwrap(), r["detail"]["found_by"].as_str().unwrap())).collect();
    assert_eq!(found, vec![(digest.as_str(), "scrub"), (read_digest.as_str(), "read")]);
    let report = pass(&registry).await;
    assert!(report.found.corrupt.is_empty(), "already quarantined: {report:?}");
    assert_eq!(report.found.quarantined.len(), 2, "{report:?}");

    // Pushing the manifest again heals it.
    found_by_pass.push(&registry, "v1").await;
    let res = registry.client.get(registry.url(&format!("/v2/{REPO}/manifests/v1"))).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(sha256(&res.bytes().await.unwrap()), digest);
    skopeo_pull(&registry, ":v1").await.ok();
    let report = pass(&registry).await;
    assert_eq!(report.found.healed, vec![digest.clone()]);
    assert_eq!(report.found.quarantined.len(), 1, "the other waits for its push: {report:?}");
    assert!(report.found.forgotten.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_quarantined_copy_nothing_links_any_more_is_forgotten() {
    let registry = registry().await;
    let orphan = registry.push_blob(REPO, b"a blob no manifest names").await;
    damage(&registry, &orphan).await;
    let report = pass(&registry).await;
    assert_eq!(report.found.corrupt.len(), 1, "{report:?}");
    assert_eq!(report.found.quarantined.len(), 1, "still linked in {REPO}: {report:?}");
    let res = registry.client.delete(registry.url(&format!("/v2/{REPO}/blobs/{orphan}"))).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let report = pass(&registry).await;
    assert_eq!(report.found.forgotten, vec![orphan.clone()], "{report:?}");
    assert!(!report.anything_corrupt(), "{report:?}");
    assert!(registry.stored_keys("quarantine/").await.is_empty());
}

#[tokio::test]
async fn one_scrubber_runs_at_a_time() {
    let registry = registry().await;
    Image::new("lease", 1000).push(&registry, "v1").await;
    let lease = registry.registry().take_lease("scrub", "another replica", std::time::Duration::from_secs(60)).await.unwrap().expect("free");
    let waiting = tokio::spawn({
        let registry = registry.registry().clone();
        async move { portcullis::scrub::run(&registry).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a pass ran while another replica held the lease");
    registry.registry().release_lease("scrub", &lease).await.unwrap();
    let report = waiting.await.unwrap().expect("scrub pass");
    assert!(report.waited_for_lease && report.found.objects == 3, "{report:?}");
    assert!(!registry.has_object("leases/scrub").await, "the lease is given up");
}

// The pace is counted: a pass of B bytes at P bytes a tick waits for at least B / P - 1 ticks.
#[tokio::test]
async fn the_pace_bounds_a_pass() {
    let registry = TestRegistry::with_config(|config| {
        config.scrub.every = None;
        config.scrub.bytes_per_second = 1 << 20;
    })
    .await;
    Image::new("pace", 1 << 20).push(&registry, "v1").await;
    let report = pass(&registry).await;
    assert_eq!(report.bytes_per_tick, (1 << 20) / 10, "a tenth of the rate per tick of 100 ms");
    assert!(report.found.bytes > 1 << 20);
    assert!(report.ticks >= report.found.bytes / report.bytes_per_tick - 1, "{} bytes in {} ticks of {}", report.found.bytes, report.ticks, report.bytes_per_tick);
}

#[tokio::test]
async fn the_server_scrubs_on_its_schedule() {
    let registry = TestRegistry::with_config(|config| config.scrub.every = Some(std::time::Duration::from_millis(200))).await;
    let image = Image::new("scheduled", 10_000);
    image.push(&registry, "v1").await;
    let layer = image.layer_digest();
    damage(&registry, &layer).await;
    // Passes run back to back in the server; wait (bounded) for one to quarantine the layer.
    let blob_path = format!("/v2/{REPO}/blobs/{layer}");
    let started = std::time::Instant::now();
    loop {
        let (status, code, message) = answer(registry.client.head(registry.url(&blob_path)).send().await.unwrap()).await;
        if status == 404 {
            let (status, code, message) = answer(registry.client.get(registry.url(&blob_path)).send().await.unwrap()).await;
            assert_eq!((status, code.as_str()), (404, "BLOB_UNKNOWN"), "{message}");
            assert!(message.contains("quarantined"), "{message}");
            break;
        }
        assert_eq!(status, 200, "{code} {message}");
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no scheduled pass found the damage");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let metrics = registry.client.get(registry.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("portcullis_scrub_corrupt_total{kind=\"blob\"} 1"), "{metrics}");
}
