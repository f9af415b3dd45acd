//! Test images made in the test, offline: OCI image layout directories (image-spec
//! `image-layout.md`: `oci-layout`, `index.json`, `blobs/sha256/<hex>`) with real gzip-compressed
//! tar layers, for real clients (skopeo, podman) to push from and pull into.
//!
//! Content comes from a seed through a small fixed PRNG, so the same seed gives the same bytes and
//! digests on every run and machine. This module writes layouts only; it talks to no registry and
//! checks nothing about a pulled layout (tests do that with [`blob_paths`] and [`sha256_file`]).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::Digest as _;

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The annotation in `index.json` that names an image in a layout (`oci:<dir>:<tag>`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout on disk.
#[derive(Debug, Clone)]
pub struct ImageLayout {
    /// The layout directory.
    pub path: PathBuf,
    /// The ref name `index.json` gives the top manifest.
    pub tag: String,
    /// `sha256:<hex>` of the top manifest (an image manifest or an image index).
    pub manifest_digest: String,
    /// Every blob in `blobs/sha256/`, in the order written: configs, layers, child manifests, and
    /// last the top manifest itself.
    pub blob_digests: Vec<String>,
}

impl ImageLayout {
    /// `oci:<dir>:<tag>`, the name skopeo and podman give this image.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.path.display(), self.tag)
    }
}

/// Writes an OCI image manifest with an amd64/linux config and `n_layers` gzip tar layers into
/// `dir`, and an `index.json` that names it `tag`.
pub fn multi_layer_image(dir: &Path, tag: &str, n_layers: usize, seed: u64) -> ImageLayout {
    let mut layout = Layout::create(dir);
    let mut rng = Rng::new(seed);
    let manifest = write_image(&mut layout, &mut rng, "amd64", n_layers);
    layout.finish(tag, &manifest, OCI_MANIFEST)
}

/// Writes an OCI image index of two platform images (linux/amd64 and linux/arm64, two layers
/// each) into `dir`, and an `index.json` that names the index `tag`.
pub fn multi_platform_index(dir: &Path, tag: &str, seed: u64) -> ImageLayout {
    let mut layout = Layout::create(dir);
    let mut rng = Rng::new(seed);
    let children: Vec<serde_json::Value> = ["amd64", "arm64"]
        .into_iter()
        .map(|architecture| {
            let child = write_image(&mut layout, &mut rng, architecture, 2);
            let mut descriptor = child.descriptor(OCI_MANIFEST);
            descriptor["platform"] = json!({ "architecture": architecture, "os": "linux" });
            descriptor
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children,
    });
    let index = layout.write_blob(&to_json(&index));
    layout.finish(tag, &index, OCI_INDEX)
}

/// The files in a layout's `blobs/sha256/`, sorted by name.
pub fn blob_paths(layout_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(layout_dir.join("blobs/sha256"))
        .expect("read blobs/sha256 of the layout")
        .map(|entry| entry.expect("read a blob entry").path())
        .collect();
    paths.sort();
    paths
}

/// The file in a layout that holds the blob `digest` (`sha256:<hex>`).
pub fn blob_path(layout_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("expected a sha256 digest, found {digest:?}"));
    layout_dir.join("blobs/sha256").join(hex)
}

/// `sha256:<hex>` of a file's bytes.
pub fn sha256_file(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
}

/// The digest `index.json` of a layout gives the manifest named `tag`.
pub fn index_json_digest(layout_dir: &Path, tag: &str) -> String {
    let path = layout_dir.join("index.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    let index: serde_json::Value = serde_json::from_str(&text).expect("index.json is JSON");
    let manifests = index["manifests"].as_array().expect("index.json has manifests");
    let named = manifests
        .iter()
        .find(|descriptor| descriptor["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("index.json names no manifest {tag:?}: {text}"));
    named["digest"].as_str().expect("descriptor digest").to_owned()
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A written blob.
struct Blob {
    digest: String,
    size: usize,
}

impl Blob {
    fn descriptor(&self, media_type: &str) -> serde_json::Value {
        json!({ "mediaType": media_type, "digest": self.digest, "size": self.size })
    }
}

/// A layout directory being written.
struct Layout {
    path: PathBuf,
    blob_digests: Vec<String>,
}

impl Layout {
    fn create(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("create blobs/sha256");
        Layout { path: dir.to_owned(), blob_digests: Vec::new() }
    }

    /// Writes `bytes` under the name of their digest.
    fn write_blob(&mut self, bytes: &[u8]) -> Blob {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        fs::write(self.path.join("blobs/sha256").join(&hex), bytes).expect("write blob");
        let digest = format!("sha256:{hex}");
        self.blob_digests.push(digest.clone());
        Blob { digest, size: bytes.len() }
    }

    /// Writes `oci-layout` and an `index.json` naming `top` as `tag`.
    fn finish(self, tag: &str, top: &Blob, media_type: &str) -> ImageLayout {
        fs::write(self.path.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
        let mut descriptor = top.descriptor(media_type);
        descriptor["annotations"] = json!({ REF_NAME: tag });
        let index = json!({ "schemaVersion": 2, "manifests": [descriptor] });
        fs::write(self.path.join("index.json"), to_json(&index)).expect("write index.json");
        ImageLayout {
            path: self.path,
            tag: tag.to_owned(),
            manifest_digest: top.digest.clone(),
            blob_digests: self.blob_digests,
        }
    }
}

/// Writes the layers, config and manifest of one linux image; returns the manifest blob.
fn write_image(layout: &mut Layout, rng: &mut Rng, architecture: &str, n_layers: usize) -> Blob {
    let mut layers = Vec::with_capacity(n_layers);
    let mut diff_ids = Vec::with_capacity(n_layers);
    for layer_index in 0..n_layers {
        let tar = layer_tar(rng, architecture, layer_index);
        // image-spec config.md: diff_ids are digests of the uncompressed layer tars.
        diff_ids.push(format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar))));
        layers.push(layout.write_blob(&gzip(&tar)).descriptor(OCI_LAYER_GZIP));
    }
    let history: Vec<serde_json::Value> = (0..n_layers)
        .map(|layer_index| json!({ "created": CREATED, "created_by": format!("portcullis test layer {layer_index}") }))
        .collect();
    let config = json!({
        "created": CREATED,
        "architecture": architecture,
        "os": "linux",
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let config = layout.write_blob(&to_json(&config));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(OCI_CONFIG),
        "layers": layers,
    });
    layout.write_blob(&to_json(&manifest))
}

/// A fixed creation time, so configs do not change between runs.
const CREATED: &str = "2024-01-01T00:00:00Z";

/// An uncompressed tar of a directory and three files of 1–4 KiB of pseudo-random bytes.
fn layer_tar(rng: &mut Rng, architecture: &str, layer_index: usize) -> Vec<u8> {
    let dir_name = format!("layer{layer_index}/");
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir_header = tar_header(tar::EntryType::Directory, 0o755, 0);
    builder.append_data(&mut dir_header, &dir_name, std::io::empty()).expect("append directory");
    for file_index in 0..3 {
        let size = 1024 + (rng.next() % 3072) as usize;
        let mut data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        // A readable first line says where the file came from, in case a test has to look.
        let label = format!("{architecture} layer {layer_index} file {file_index}\n");
        data[..label.len()].copy_from_slice(label.as_bytes());
        let mut header = tar_header(tar::EntryType::Regular, 0o644, size as u64);
        let name = format!("{dir_name}file{file_index}.bin");
        builder.append_data(&mut header, name, data.as_slice()).expect("append file");
    }
    builder.into_inner().expect("finish tar")
}

/// A header with owner, group and time fixed, so the tar bytes depend on content alone.
fn tar_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_704_067_200); // CREATED
    header
}

/// gzip with flate2's defaults: no file name and mtime 0 in the gzip header, so it is repeatable.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("finish gzip")
}

fn to_json(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON in memory")
}

/// splitmix64: tiny, fixed forever, and good enough for filler bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
