//! The shared sigstore fixtures (`../shared/fixtures/sigstore/generated/legacy-tag`: an image and
//! cosign legacy-tag evidence made with a self-made Fulcio CA and Rekor key), pushed through the
//! HTTP API of a registry.

use std::path::{Path, PathBuf};

use super::{RegistryClient, OCI_MANIFEST};

/// The directory of the legacy-tag cases (each with `expected.json`), the `image` and `trust/`.
pub fn legacy_tag_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/sigstore/generated/legacy-tag")
}

/// A case's `expected.json` (or any JSON file).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))).unwrap()
}

/// Pushes every blob file (named `sha256-<hex>`) in `blobs` and then `dir/manifest.json` as `reference`.
pub async fn push_case(api: &RegistryClient, repo: &str, dir: &Path, blobs: &Path, reference: &str) {
    for entry in std::fs::read_dir(blobs).unwrap() {
        let path = entry.unwrap().path();
        if !path.file_name().unwrap().to_string_lossy().starts_with("sha256-") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let digest = api.push_blob(repo, &bytes).await;
        assert_eq!(digest.replace(':', "-"), path.file_name().unwrap().to_str().unwrap(), "blob {} hashes to its name", path.display());
    }
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let res = api.put_manifest(repo, reference, OCI_MANIFEST, &manifest).await;
    assert_eq!(res.status(), 201, "{}: {}", dir.display(), res.text().await.unwrap());
}

/// Pushes the fixtures' image to `repo` by its digest, and the evidence of case `case` under
/// its cosign tag; returns the case's `expected.json`.
pub async fn push_signed_image(api: &RegistryClient, repo: &str, case: &str) -> serde_json::Value {
    let root = legacy_tag_dir();
    let expected = read_json(&root.join(case).join("expected.json"));
    let image = root.join("image");
    push_case(api, repo, &image, &image, expected["subject_digest"].as_str().unwrap()).await;
    push_case(api, repo, &root.join(case), &root.join(case).join("blobs"), expected["tag"].as_str().unwrap()).await;
    expected
}
