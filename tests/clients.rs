//! Real clients against the real server: skopeo and podman push and pull images made in the test
//! (`common::images`) through the in-process registry, and every digest must come back unchanged.
//!
//! The clients run as child processes in a sandbox per test: their policy, auth file, registries
//! configuration, `HOME` and podman's storage all live in a temp dir, so a test neither reads nor
//! writes the machine's container configuration. Only loopback is used: every image name is fully
//! qualified with the test registry's `127.0.0.1:PORT`.
//!
//! skopeo and podman are installed by `scripts/test`; a test that cannot find them fails and says so.
//! These tests check what the clients see; protocol details and error bodies are in `tests/api.rs`.

mod common;

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::Path;

use common::clients::Clients;
use common::images::{self, ImageLayout};
use common::{sha256, TestRegistry};

// ---------------------------------------------------------------------------------------------
// The generated layouts themselves.

#[test]
fn generated_layout_blobs_hash_to_their_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layouts = [
        images::multi_layer_image(&dir.path().join("image"), "v1", 5, 1),
        images::multi_platform_index(&dir.path().join("index"), "multi", 2),
    ];
    for layout in &layouts {
        let on_disk = assert_blobs_hash_to_their_names(&layout.path);
        let listed: BTreeSet<String> = layout.blob_digests.iter().cloned().collect();
        assert_eq!(listed.len(), layout.blob_digests.len(), "blob_digests lists a blob twice: {layout:?}");
        assert_eq!(on_disk, listed, "blobs on disk and blob_digests differ in {}", layout.path.display());
        assert_eq!(images::index_json_digest(&layout.path, &layout.tag), layout.manifest_digest);
        assert!(listed.contains(&layout.manifest_digest), "the top manifest is a blob of the layout");
    }

    // The image: five gzip layers whose uncompressed digests are the config's diff_ids.
    let image = &layouts[0];
    let manifest = read_json(&images::blob_path(&image.path, &image.manifest_digest));
    assert_eq!(manifest["mediaType"], common::OCI_MANIFEST);
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 5);
    let config = read_json(&images::blob_path(&image.path, manifest["config"]["digest"].as_str().expect("config digest")));
    assert_eq!((config["architecture"].as_str(), config["os"].as_str()), (Some("amd64"), Some("linux")));
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|layer| {
            assert_eq!(layer["mediaType"], images::OCI_LAYER_GZIP);
            let path = images::blob_path(&image.path, layer["digest"].as_str().expect("layer digest"));
            let gzipped = std::fs::read(&path).expect("read layer");
            assert_eq!(layer["size"].as_u64(), Some(gzipped.len() as u64), "layer size in the manifest");
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(gzipped.as_slice()).read_to_end(&mut tar).expect("layer is gzip");
            let n_files = tar::Archive::new(tar.as_slice()).entries().expect("layer is a tar").count();
            assert!(n_files >= 2, "a layer holds a directory and files, found {n_files} entries");
            sha256(&tar)
        })
        .collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));

    // The index: two platform images, each with its config and two layers in the layout.
    let index = &layouts[1];
    let index_json = read_json(&images::blob_path(&index.path, &index.manifest_digest));
    assert_eq!(index_json["mediaType"], common::OCI_INDEX);
    let platforms: Vec<String> = index_json["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|child| format!("{}/{}", child["platform"]["os"].as_str().unwrap(), child["platform"]["architecture"].as_str().unwrap()))
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(index.blob_digests.len(), 2 * (1 + 2 + 1) + 1, "per platform: config, 2 layers, manifest; then the index");

    // The same seed gives the same bytes; another seed gives others.
    let again = images::multi_platform_index(&dir.path().join("again"), "multi", 2);
    assert_eq!(again.blob_digests, index.blob_digests);
    let other = images::multi_layer_image(&dir.path().join("other"), "v1", 5, 3);
    assert_ne!(other.manifest_digest, image.manifest_digest);
}

// ---------------------------------------------------------------------------------------------
// skopeo

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_round_trips_a_multi_layer_image() {
    let clients = Clients::new();
    let registry = TestRegistry::start().await;
    let image = images::multi_layer_image(&clients.path("image"), "v1", 5, 11);
    let remote = format!("docker://{}/build/app:v1", registry.host);

    clients.skopeo("copy", &["--preserve-digests", "--dest-tls-verify=false", &image.oci_ref(), &remote]).await.ok();
    let pulled = clients.path("pulled");
    let pulled_ref = format!("oci:{}:v1", pulled.display());
    clients.skopeo("copy", &["--preserve-digests", "--src-tls-verify=false", &remote, &pulled_ref]).await.ok();

    assert_same_content(&image, &pulled, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_all_round_trips_a_multi_platform_index() {
    let clients = Clients::new();
    let registry = TestRegistry::start().await;
    let index = images::multi_platform_index(&clients.path("index"), "multi", 12);
    let remote = format!("docker://{}/build/multi:v1", registry.host);

    let pushed = clients.skopeo("copy", &["--all", "--preserve-digests", "--dest-tls-verify=false", &index.oci_ref(), &remote]).await.ok();
    assert!(pushed.stdout.contains("Copying 2 of 2 images in list"), "skopeo pushed both platforms:\n{}", pushed.stdout);
    let pulled = clients.path("pulled");
    let pulled_ref = format!("oci:{}:v1", pulled.display());
    clients.skopeo("copy", &["--all", "--preserve-digests", "--src-tls-verify=false", &remote, &pulled_ref]).await.ok();

    assert_same_content(&index, &pulled, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_list_tags_lists_the_pushed_tags() {
    let clients = Clients::new();
    let registry = TestRegistry::start().await;
    let image = images::multi_layer_image(&clients.path("image"), "v1", 2, 13);
    for tag in ["v1", "v2"] {
        let remote = format!("docker://{}/build/app:{tag}", registry.host);
        clients.skopeo("copy", &["--dest-tls-verify=false", &image.oci_ref(), &remote]).await.ok();
    }

    let listed = clients.skopeo("list-tags", &["--tls-verify=false", &format!("docker://{}/build/app", registry.host)]).await.ok();
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("list-tags prints JSON");
    let mut tags: Vec<&str> = listed["Tags"].as_array().expect("Tags").iter().map(|tag| tag.as_str().expect("tag")).collect();
    tags.sort_unstable();
    assert_eq!(tags, ["v1", "v2"], "list-tags printed {listed}");
    assert_eq!(listed["Repository"], format!("{}/build/app", registry.host));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_inspect_reports_the_manifest_digest() {
    let clients = Clients::new();
    let registry = TestRegistry::start().await;
    let image = images::multi_layer_image(&clients.path("image"), "v1", 3, 14);
    let remote = format!("docker://{}/build/app:v1", registry.host);
    clients.skopeo("copy", &["--preserve-digests", "--dest-tls-verify=false", &image.oci_ref(), &remote]).await.ok();

    let raw = clients.skopeo("inspect", &["--raw", "--tls-verify=false", &remote]).await.ok();
    assert_eq!(sha256(raw.stdout.as_bytes()), image.manifest_digest, "inspect --raw printed:\n{}", raw.stdout);
    let original = std::fs::read(images::blob_path(&image.path, &image.manifest_digest)).expect("read manifest");
    assert_eq!(raw.stdout.as_bytes(), original.as_slice(), "the manifest comes back byte for byte");

    let inspected = clients.skopeo("inspect", &["--tls-verify=false", &remote]).await.ok();
    let inspected: serde_json::Value = serde_json::from_str(&inspected.stdout).expect("inspect prints JSON");
    assert_eq!(inspected["Digest"], image.manifest_digest.as_str(), "inspect printed {inspected}");
    assert_eq!((inspected["Os"].as_str(), inspected["Architecture"].as_str()), (Some("linux"), Some("amd64")));
    let manifest: serde_json::Value = serde_json::from_slice(&original).expect("manifest is JSON");
    let layer_digests: Vec<&serde_json::Value> = manifest["layers"].as_array().expect("layers").iter().map(|layer| &layer["digest"]).collect();
    assert_eq!(inspected["Layers"], serde_json::json!(layer_digests));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_delete_removes_the_manifest() {
    let clients = Clients::new();
    let registry = TestRegistry::start().await;
    let image = images::multi_layer_image(&clients.path("image"), "v1", 2, 15);
    let by_tag = format!("docker://{}/build/app:v1", registry.host);
    let by_digest = format!("docker://{}/build/app@{}", registry.host, image.manifest_digest);
    clients.skopeo("copy", &["--preserve-digests", "--dest-tls-verify=false", &image.oci_ref(), &by_tag]).await.ok();
    clients.skopeo("inspect", &["--raw", "--tls-verify=false", &by_digest]).await.ok();

    clients.skopeo("delete", &["--tls-verify=false", &by_digest]).await.ok();

    for reference in [&by_digest, &by_tag] {
        let inspected = clients.skopeo("inspect", &["--raw", "--tls-verify=false", reference]).await;
        assert!(!inspected.status.success(), "inspect of {reference} after delete succeeded:\n{}", inspected.stdout);
        assert!(inspected.stderr.contains("manifest unknown"), "inspect of {reference} after delete:\n{}", inspected.stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// podman

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_push_and_pull_round_trip() {
    let clients = Clients::new();
    let registry = TestRegistry::start().await;
    let image = images::multi_layer_image(&clients.path("image"), "v1", 5, 16);
    let manifest = read_json(&images::blob_path(&image.path, &image.manifest_digest));
    let config_digest = manifest["config"]["digest"].as_str().expect("config digest").to_owned();
    let policy = clients.path("policy.json");
    let policy = format!("--signature-policy={}", policy.display());
    let remote = format!("{}/build/podman:v1", registry.host);

    // Load the image from the layout; podman's image ID is the config digest. podman 4.3 names
    // the image after the layout's path, which must then be a valid repository name: a temp dir
    // like `/tmp/.tmpAbC` is not, so podman runs in the sandbox and gets a relative path.
    let layout_ref = format!("oci:image:{}", image.tag);
    let loaded = clients.podman(&["pull", "--quiet", &policy, &layout_ref]).await.ok();
    let image_id = loaded.stdout.trim().to_owned();
    assert_eq!(format!("sha256:{image_id}"), config_digest, "podman loaded the layout's config");

    clients.podman(&["tag", &image_id, &remote]).await.ok();
    let digest_file = clients.path("pushed.digest");
    let digest_file_flag = format!("--digestfile={}", digest_file.display());
    clients.podman(&["push", "--tls-verify=false", &policy, &digest_file_flag, &remote]).await.ok();
    let pushed_digest = std::fs::read_to_string(&digest_file).expect("podman wrote the digest file").trim().to_owned();
    assert!(pushed_digest.starts_with("sha256:"), "digest file holds {pushed_digest:?}");

    // What the registry serves under the tag is what podman pushed.
    let raw = clients.skopeo("inspect", &["--raw", "--tls-verify=false", &format!("docker://{remote}")]).await.ok();
    assert_eq!(sha256(raw.stdout.as_bytes()), pushed_digest, "registry serves:\n{}", raw.stdout);

    clients.podman(&["rmi", "--force", &image_id]).await.ok();
    let left = clients.podman(&["images", "--quiet"]).await.ok();
    assert_eq!(left.stdout.trim(), "", "podman storage is empty before the pull");

    clients.podman(&["pull", "--tls-verify=false", &policy, &remote]).await.ok();
    let inspected = clients.podman(&["image", "inspect", "--format", "{{.Digest}} {{.Id}}", &remote]).await.ok();
    assert_eq!(inspected.stdout.trim(), format!("{pushed_digest} {image_id}"), "pulled image digest and ID");
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Asserts that the layout at `pulled` names `original`'s top manifest `tag` and holds exactly
/// `original`'s blobs, each hashing to its name.
fn assert_same_content(original: &ImageLayout, pulled: &Path, tag: &str) {
    assert_eq!(images::index_json_digest(pulled, tag), original.manifest_digest, "manifest digest after the round trip");
    let pulled_blobs = assert_blobs_hash_to_their_names(pulled);
    let original_blobs: BTreeSet<String> = original.blob_digests.iter().cloned().collect();
    assert_eq!(pulled_blobs, original_blobs, "blobs after the round trip");
}

/// Re-hashes every blob of a layout, asserts each matches its file name, and returns the digests.
fn assert_blobs_hash_to_their_names(layout_dir: &Path) -> BTreeSet<String> {
    images::blob_paths(layout_dir)
        .iter()
        .map(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).expect("blob file name");
            let digest = images::sha256_file(path);
            assert_eq!(digest, format!("sha256:{name}"), "blob {} hashes to another digest", path.display());
            digest
        })
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}
