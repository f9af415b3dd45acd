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
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

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

/// A sandbox for skopeo and podman: everything they would read or write under `/etc/containers`,
/// `$HOME` or `/var/lib/containers` lives in one temp dir instead (see the module doc).
///
/// Two files escape it, because skopeo 1.9 and podman 4.3 running as root have no flag to move
/// them: the blob-location cache `/var/lib/containers/cache/blob-info-cache-v1.boltdb` and the
/// lock `/var/cache/containers/short-name-aliases.conf.lock`. The cache only lets a client skip an
/// upload the registry already has; it holds no configuration.
struct Clients {
    dir: tempfile::TempDir,
}

/// A finished client run.
struct Run {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Longest a single client command may take; a hung client fails the test instead of CI.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

impl Clients {
    fn new() -> Clients {
        for tool in ["skopeo", "podman"] {
            assert!(
                find_on_path(tool).is_some(),
                "{tool} is not installed (not found on PATH): run scripts/test, which installs skopeo, podman and umoci"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for sub in ["home", "tmp", "xdg-runtime", "podman/root", "podman/runroot", "podman/tmp", "podman/networks", "podman/volumes"] {
            std::fs::create_dir_all(root.join(sub)).expect("create sandbox dir");
        }
        let write = |name: &str, text: &str| std::fs::write(root.join(name), text).expect("write sandbox file");
        write("policy.json", r#"{"default":[{"type":"insecureAcceptAnything"}]}"#);
        write("auth.json", "{}");
        // Empty: every name is fully qualified, and plain HTTP comes from --tls-verify=false.
        write("registries.conf", "");
        write("containers.conf", "");
        // With CONTAINERS_STORAGE_CONF set, podman insists on finding both roots in the file.
        write(
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.join("podman/root").display(),
                root.join("podman/runroot").display()
            ),
        );
        Clients { dir }
    }

    /// A path inside the sandbox.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `skopeo --policy <sandbox> <subcommand> --authfile <sandbox> <args>`.
    async fn skopeo(&self, subcommand: &str, args: &[&str]) -> Run {
        let policy = self.path("policy.json");
        let authfile = self.path("auth.json");
        let mut command = self.command("skopeo");
        command.arg("--policy").arg(&policy);
        if debug_clients() {
            command.arg("--debug");
        }
        command.arg(subcommand).arg("--authfile").arg(&authfile).args(args);
        run(command, format!("skopeo {subcommand} {}", args.join(" "))).await
    }

    /// Runs `podman <isolation flags> <args>`; callers add per-command flags such as
    /// `--tls-verify=false` and `--signature-policy`.
    async fn podman(&self, args: &[&str]) -> Run {
        let podman = self.path("podman");
        let mut command = self.command("podman");
        command
            .arg("--root")
            .arg(podman.join("root"))
            .arg("--runroot")
            .arg(podman.join("runroot"))
            .arg("--tmpdir")
            .arg(podman.join("tmp"))
            .arg("--network-config-dir")
            .arg(podman.join("networks"))
            .arg("--volumepath")
            .arg(podman.join("volumes"))
            .args(["--storage-driver=vfs", "--cgroup-manager=cgroupfs", "--events-backend=file"]);
        if debug_clients() {
            command.arg("--log-level=debug");
        }
        command.args(args);
        run(command, format!("podman {}", args.join(" "))).await
    }

    /// A command run in the sandbox dir, with a clean environment that points every
    /// containers-* configuration file into the sandbox.
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"))
            .env("XDG_RUNTIME_DIR", self.path("xdg-runtime"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_DATA_HOME", self.path("home/.local/share"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }
}

impl Run {
    /// The run, after asserting it exited 0.
    fn ok(self) -> Run {
        assert!(self.status.success(), "`{}` failed with {}\nstdout:\n{}\nstderr:\n{}", self.what, self.status, self.stdout, self.stderr);
        self
    }
}

async fn run(mut command: tokio::process::Command, what: String) -> Run {
    eprintln!("$ {what}");
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`{what}` did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|err| panic!("`{what}` could not start: {err}"));
    let run = Run {
        what,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if debug_clients() {
        eprintln!("{}", run.stderr);
    }
    run
}

/// `PORTCULLIS_CLIENT_DEBUG=1` runs skopeo with `--debug` and podman with `--log-level=debug`,
/// and prints their stderr: every request and response status they see.
fn debug_clients() -> bool {
    std::env::var_os("PORTCULLIS_CLIENT_DEBUG").is_some_and(|value| !value.is_empty())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

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
