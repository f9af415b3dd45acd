//! Images for skopeo: OCI image layouts on disk (image-spec `image-layout.md`) whose layers are
//! gzip streams of pseudo-random bytes in stored deflate blocks. They are real gzip, so skopeo
//! pushes them as they are (it compresses layers it sees as uncompressed, which would measure
//! gzip instead of the registry), and they cost little more than their size to write.
//! skopeo runs sandboxed: its policy, auth file and registries configuration live in the scratch
//! directory, as in `tests/common/clients.rs`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::Digest as _;

use crate::registry::{image_manifest, OCI_MANIFEST};

const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const WRITE_CHUNK: usize = 1 << 20;

/// Writes an image of `n_layers` layers of `layer_size` bytes (before gzip) into `dir`, named `tag`.
pub(crate) fn write_layout(dir: &Path, tag: &str, n_layers: usize, layer_size: usize, seed: u64) -> anyhow::Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for index in 0..n_layers {
        let (digest, size, diff_id) = write_layer(&blobs, layer_size, seed.wrapping_mul(1000).wrapping_add(index as u64))?;
        layers.push(serde_json::json!({ "mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size }));
        diff_ids.push(diff_id);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))?;
    let config_digest = write_blob(&blobs, &config)?;
    let manifest = image_manifest(&config_digest, config.len(), layers)?;
    let manifest_digest = write_blob(&blobs, &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> anyhow::Result<String> {
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    std::fs::write(blobs.join(&hex), bytes)?;
    Ok(format!("sha256:{hex}"))
}

/// Writes one gzip layer; returns its digest, its size, and the digest of its uncompressed bytes.
fn write_layer(blobs: &Path, size: usize, seed: u64) -> anyhow::Result<(String, u64, String)> {
    let temp = blobs.join(format!("tmp-{seed}"));
    let file = HashingWriter { inner: std::io::BufWriter::new(std::fs::File::create(&temp)?), hasher: sha2::Sha256::new(), written: 0 };
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::none());
    let mut diff_id = sha2::Sha256::new();
    let mut chunk = vec![0u8; WRITE_CHUNK.min(size.max(1))];
    let mut left = size;
    let mut chunk_seed = seed;
    while left > 0 {
        let n = left.min(chunk.len());
        crate::content::fill(&mut chunk[..n], chunk_seed);
        chunk_seed = chunk_seed.wrapping_add(0x1_0000_0000);
        diff_id.update(&chunk[..n]);
        encoder.write_all(&chunk[..n])?;
        left -= n;
    }
    let mut file = encoder.finish()?;
    file.inner.flush()?;
    let hex = hex::encode(file.hasher.finalize());
    std::fs::rename(&temp, blobs.join(&hex))?;
    Ok((format!("sha256:{hex}"), file.written, format!("sha256:{}", hex::encode(diff_id.finalize()))))
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    written: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// skopeo in a sandbox of its own.
pub(crate) struct Skopeo {
    dir: PathBuf,
}

impl Skopeo {
    /// A sandbox below `scratch`.
    pub(crate) fn new(scratch: &Path) -> anyhow::Result<Skopeo> {
        let dir = scratch.join("skopeo");
        for sub in ["home", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
        std::fs::write(dir.join("auth.json"), "{}")?;
        std::fs::write(dir.join("registries.conf"), "")?;
        Ok(Skopeo { dir })
    }

    /// Times `skopeo copy SOURCE DEST` with plain HTTP on the registry side.
    pub(crate) async fn copy(&self, source: &str, dest: &str) -> anyhow::Result<Duration> {
        let mut command = tokio::process::Command::new("skopeo");
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("HOME", self.dir.join("home"))
            .env("TMPDIR", self.dir.join("tmp"))
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .arg("--policy")
            .arg(self.dir.join("policy.json"))
            .args(["copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg("--authfile")
            .arg(self.dir.join("auth.json"))
            .args([source, dest])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let output = tokio::time::timeout(Duration::from_secs(600), command.output())
            .await
            .with_context(|| format!("skopeo copy {source} {dest} took over 10 minutes"))?
            .context("run skopeo")?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            output.status.success(),
            "skopeo copy {source} {dest} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(elapsed)
    }
}
