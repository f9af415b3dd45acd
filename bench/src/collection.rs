//! Garbage collection side by side (group `gc`): the same content pushed to both registries
//! (manifests of one config and a few small layers, every blob their own), half the manifests
//! deleted through the API, then each registry's collector: `portcullis gc` beside the running
//! server, and Distribution's `garbage-collect` with the registry that took the pushes stopped (it
//! must not take writes meanwhile) and a read-only twin on the same store serving reads.
//! Afterwards every kept manifest must answer, a sample be pulled in full with every digest
//! verifying, and a sample of the deleted ones be gone with their blobs; each collector's report
//! must name exactly the deleted blobs. A collector that removes the wrong things fails the run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::registry::{image_manifest, Registry, MANIFEST_ACCEPT, OCI_MANIFEST};

/// Images pushed (and manifests deleted) at once.
pub(crate) const IN_FLIGHT: usize = 32;
/// Repositories the images are spread over.
const REPOS: usize = 100;
/// Kept images pulled in full, and deleted ones looked for, after collection.
const SAMPLE: usize = 100;

/// What is pushed: `manifests` images of one config and `layers` layers of `layer_size` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Content {
    pub(crate) manifests: usize,
    pub(crate) layers: usize,
    pub(crate) layer_size: usize,
}

impl Content {
    /// Blobs pushed: a config and the layers per manifest.
    pub(crate) fn blobs(&self) -> usize {
        self.manifests * (self.layers + 1)
    }
}

/// One pushed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) repo: String,
    pub(crate) tag: String,
    pub(crate) digest: String,
    manifest_len: usize,
    /// Digest and length of the config and each layer.
    blobs: Vec<(String, usize)>,
}

impl Image {
    /// Odd images are deleted, even ones kept.
    fn deleted(index: usize) -> bool {
        index % 2 == 1
    }
}

/// The image `index`: its record, its blobs and its manifest.
fn make_image(content: Content, seed: u64, index: usize) -> anyhow::Result<(Image, Vec<Vec<u8>>, Vec<u8>)> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {}, "rootfs": { "type": "layers", "diff_ids": [] },
        "history": [{ "created_by": format!("portcullis-bench gc seed {seed} image {index}") }],
    }))?;
    let mut blobs = vec![config];
    for layer in 0..content.layers {
        let layer_seed = seed.wrapping_mul(1_000_003).wrapping_add((index * 64 + layer) as u64);
        blobs.push(crate::content::random_bytes(content.layer_size, layer_seed).to_vec());
    }
    let described: Vec<(String, usize)> = blobs.iter().map(|blob| (crate::content::sha256(blob), blob.len())).collect();
    let layers = described[1..]
        .iter()
        .map(|(digest, len)| serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": len }))
        .collect();
    let manifest = image_manifest(&described[0].0, described[0].1, layers)?;
    let image = Image {
        repo: format!("gc/r{:03}", index % REPOS),
        tag: format!("m{index:06}"),
        digest: crate::content::sha256(&manifest),
        manifest_len: manifest.len(),
        blobs: described,
    };
    Ok((image, blobs, manifest))
}

/// Pushes every image of `content` (from `seed`), [`IN_FLIGHT`] at once; returns them in order.
pub(crate) async fn fill(registry: &Registry, content: Content, seed: u64) -> anyhow::Result<Vec<Image>> {
    futures::stream::iter(0..content.manifests)
        .map(|index| async move {
            let (image, blobs, manifest) = make_image(content, seed, index)?;
            for blob in &blobs {
                registry.push_blob(&image.repo, blob).await?;
            }
            registry.put_manifest(&image.repo, &image.tag, OCI_MANIFEST, &manifest).await?;
            Ok(image)
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await
}

/// Deletes the odd images' manifests by digest through the API.
pub(crate) async fn delete_half(registry: &Registry, images: &[Image]) -> anyhow::Result<()> {
    futures::stream::iter(images.iter().enumerate().filter(|(index, _)| Image::deleted(*index)))
        .map(|(_, image)| async move {
            let res = registry.client().delete(registry.url(&format!("/v2/{}/manifests/{}", image.repo, image.digest))).send().await?;
            anyhow::ensure!(res.status() == 202, "{}: DELETE {}@{}: {}", registry.name, image.repo, image.digest, res.status());
            Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

/// The objects a correct collector removes: the deleted images' blobs and manifests (a
/// manifest is a blob too), and their bytes.
pub(crate) fn expected_removal(images: &[Image]) -> (usize, u64) {
    images
        .iter()
        .enumerate()
        .filter(|(index, _)| Image::deleted(*index))
        .fold((0, 0), |(count, bytes), (_, image)| {
            let blob_bytes: usize = image.blobs.iter().map(|(_, len)| len).sum();
            (count + image.blobs.len() + 1, bytes + (blob_bytes + image.manifest_len) as u64)
        })
}

/// Checks `registry` after collection: every kept manifest answers `HEAD` by digest; a sample of
/// kept images pulls in full (manifest by tag, every blob), every digest verifying; a sample of
/// deleted manifests and their blobs answer 404.
pub(crate) async fn verify(registry: &Registry, images: &[Image]) -> anyhow::Result<()> {
    let kept: Vec<&Image> = images.iter().enumerate().filter(|(index, _)| !Image::deleted(*index)).map(|(_, image)| image).collect();
    let deleted: Vec<&Image> = images.iter().enumerate().filter(|(index, _)| Image::deleted(*index)).map(|(_, image)| image).collect();
    futures::stream::iter(&kept)
        .map(|image| async move {
            let path = format!("/v2/{}/manifests/{}", image.repo, image.digest);
            let res = registry.client().head(registry.url(&path)).header(http::header::ACCEPT, MANIFEST_ACCEPT).send().await?;
            anyhow::ensure!(res.status() == 200, "{}: after collection, HEAD {path} of a kept manifest: {}", registry.name, res.status());
            Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    for image in sample(&kept) {
        let path = format!("/v2/{}/manifests/{}", image.repo, image.tag);
        let (status, digest) = get_digest(registry, &path).await?;
        anyhow::ensure!(status == 200 && digest == image.digest, "{}: after collection, GET {path}: {status}, {digest} (pushed {})", registry.name, image.digest);
        for (blob, _) in &image.blobs {
            let path = format!("/v2/{}/blobs/{blob}", image.repo);
            let (status, digest) = get_digest(registry, &path).await?;
            anyhow::ensure!(status == 200 && &digest == blob, "{}: after collection, a kept image's blob: GET {path}: {status}, {digest}", registry.name);
        }
    }
    for image in sample(&deleted) {
        let paths = std::iter::once(format!("/v2/{}/manifests/{}", image.repo, image.digest))
            .chain(image.blobs.iter().map(|(blob, _)| format!("/v2/{}/blobs/{blob}", image.repo)));
        for path in paths {
            let (status, _) = get_digest(registry, &path).await?;
            anyhow::ensure!(status == 404, "{}: after collection, GET {path} of deleted content: {status}, expected 404", registry.name);
        }
    }
    Ok(())
}

/// At most [`SAMPLE`] of `items`, spread evenly.
fn sample<'a>(items: &[&'a Image]) -> Vec<&'a Image> {
    let step = items.len().div_ceil(SAMPLE).max(1);
    items.iter().step_by(step).copied().collect()
}

/// `GET path`: the status and the sha256 of the body.
async fn get_digest(registry: &Registry, path: &str) -> anyhow::Result<(http::StatusCode, String)> {
    let res = registry.client().get(registry.url(path)).header(http::header::ACCEPT, MANIFEST_ACCEPT).send().await?;
    let status = res.status();
    let body = res.bytes().await?;
    Ok((status, crate::content::sha256(&body)))
}

/// Bytes a directory tree takes on disk (allocated blocks, as `du` counts them).
pub(crate) fn disk_usage(root: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.path().symlink_metadata()?;
            total += meta.blocks() * 512;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// What a collector did.
#[derive(Debug, Clone)]
pub(crate) struct Collected {
    /// Wall time of the command.
    pub(crate) elapsed: Duration,
    /// Blobs (manifests included) it removed, by its own report.
    pub(crate) blobs: usize,
    /// Content bytes it reclaimed, by its own report (portcullis's names them).
    pub(crate) bytes: Option<u64>,
    /// The pass's own time, by its report (portcullis's: without opening the store).
    pub(crate) pass: Option<Duration>,
}

/// `portcullis gc --json` of the server configured in `config`, run beside it.
pub(crate) async fn portcullis_gc(bin: &Path, config: &Path) -> anyhow::Result<Collected> {
    #[derive(serde::Deserialize)]
    struct Report {
        removed: Vec<Victim>,
        bytes: u64,
        seconds: f64,
    }
    #[derive(serde::Deserialize)]
    struct Victim {
        kind: String,
    }
    let started = Instant::now();
    let output = tokio::process::Command::new(bin)
        .args(["gc", "--json", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {} gc", bin.display()))?;
    let elapsed = started.elapsed();
    anyhow::ensure!(output.status.success(), "portcullis gc: {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    let report: Report = serde_json::from_slice(&output.stdout).context("portcullis gc --json printed no report")?;
    let blobs = report.removed.iter().filter(|victim| victim.kind == "content").count();
    Ok(Collected { elapsed, blobs, bytes: Some(report.bytes), pass: Some(Duration::from_secs_f64(report.seconds)) })
}

/// Distribution's `garbage-collect` of the store configured in `config` (its registry stopped or
/// read-only, as it requires).
pub(crate) async fn distribution_gc(config: &Path) -> anyhow::Result<Collected> {
    let started = Instant::now();
    let output = tokio::process::Command::new("docker-registry")
        .arg("garbage-collect")
        .arg(config)
        // Its S3 driver panics when AWS_CA_BUNDLE is set (see scripts/bench).
        .env_remove("AWS_CA_BUNDLE")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("run docker-registry garbage-collect")?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(output.status.success(), "docker-registry garbage-collect: {}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    // Its summary, before the list of what it deletes: "N blobs marked, M blobs and K manifests
    // eligible for deletion".
    let summary = stdout.lines().find(|line| line.contains(" blobs marked, ")).context("garbage-collect printed no summary")?;
    let blobs = summary
        .split_once("marked, ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("garbage-collect's summary: {summary:?}"))?;
    Ok(Collected { elapsed, blobs, bytes: None, pass: None })
}

/// Stops the process `pid` (SIGTERM) and waits until it has exited.
pub(crate) async fn stop(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").arg(pid.to_string()).status().context("run kill")?;
    anyhow::ensure!(status.success(), "kill {pid}: {status}");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Its parent (scripts/bench) reaps it later: a zombie has exited.
    while let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if state == Some('Z') {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "process {pid} still runs 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
