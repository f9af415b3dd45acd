//! portcullis's own workloads, which Distribution has no counterpart for: cold verdicts (every
//! signature and scan attestation verified, nothing cached), promotions of a 20-layer image, and
//! what hostile evidence costs: pulls of an image flooded with junk referrers, and concurrent
//! verdicts of images whose referrers name far more evidence than a verdict reads.

use std::time::{Duration, Instant};

use crate::evidence::{self, Key};
use crate::load;
use crate::memory;
use crate::registry::{Registry, MANIFEST_ACCEPT};

/// p50 and p99 of a set of latencies, milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latencies {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Latencies {
    /// Nearest-rank p50 and p99 of `samples`.
    pub(crate) fn of(mut samples: Vec<Duration>) -> Latencies {
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1].as_secs_f64() * 1000.0
        };
        Latencies { p50_ms: at(0.50), p99_ms: at(0.99) }
    }
}

/// Pushes a small image to `repo:tag`, signs it and attests a clean scan; returns its digest.
pub(crate) async fn signed_image(registry: &Registry, key: &Key, repo: &str, tag: &str, n_layers: usize, seed: u64) -> anyhow::Result<String> {
    let digest = registry.push_image(repo, tag, n_layers, 1024, seed).await?;
    evidence::sign_and_attest(registry, repo, &digest, key).await?;
    Ok(digest)
}

/// Times `GET /api/v1/verdict` on `n` images pushed, signed and attested just before, each with
/// its own digest and evidence, so that every verdict verifies a signature and an attestation.
pub(crate) async fn cold_verdicts(registry: &Registry, key: &Key, run: u32, n: usize) -> anyhow::Result<Latencies> {
    let mut images = Vec::with_capacity(n);
    for index in 0..n {
        let repo = format!("gated/cold-{run}-{index}");
        signed_image(registry, key, &repo, "v1", 1, seed(run, 1, index)).await?;
        images.push(repo);
    }
    let mut samples = Vec::with_capacity(n);
    for repo in &images {
        let started = Instant::now();
        let res = registry.client().get(registry.url(&format!("/api/v1/verdict?image={repo}:v1"))).send().await?;
        let status = res.status();
        let body: serde_json::Value = res.json().await?;
        samples.push(started.elapsed());
        anyhow::ensure!(status == 200, "verdict of {repo}:v1 answered {status}: {body}");
        anyhow::ensure!(body["verdict"]["passed"] == true, "verdict of {repo}:v1 did not pass: {body}");
    }
    Ok(Latencies::of(samples))
}

/// Times `n` promotions from `build/` to `prod/`, each of its own signed and attested image of
/// `n_layers` layers.
pub(crate) async fn promotions(registry: &Registry, key: &Key, run: u32, n: usize, n_layers: usize) -> anyhow::Result<Latencies> {
    let mut sources = Vec::with_capacity(n);
    for index in 0..n {
        let repo = format!("build/promo-{run}-{index}");
        let digest = signed_image(registry, key, &repo, "v1", n_layers, seed(run, 2, index)).await?;
        sources.push((repo, digest, format!("prod/promo-{run}-{index}")));
    }
    let mut samples = Vec::with_capacity(n);
    for (source, digest, target) in &sources {
        let request = serde_json::json!({ "source": format!("{source}@{digest}"), "target": target, "tags": ["v1"] });
        let started = Instant::now();
        let res = registry.client().post(registry.url("/api/v1/promotions")).json(&request).send().await?;
        let status = res.status();
        let body = res.text().await?;
        samples.push(started.elapsed());
        anyhow::ensure!(status == 201, "promotion of {source}@{digest} to {target} answered {status}: {body}");
    }
    Ok(Latencies::of(samples))
}

/// Closed-loop manifest GETs by digest, cached verdict, of a signed and attested image in the gated
/// namespace with `n_junk` junk referrers: what a flood adds to every pull.
pub(crate) async fn flooded_pulls(registry: &Registry, key: &Key, run: u32, n_junk: usize, concurrency: usize, warmup: Duration, window: Duration) -> anyhow::Result<load::Outcome> {
    let repo = format!("gated/flood-{run}-{n_junk}");
    let digest = signed_image(registry, key, &repo, "v1", 1, seed(run, 50, n_junk)).await?;
    evidence::push_junk_referrers(registry, &repo, &digest, n_junk).await?;
    let spec = load::Spec { method: http::Method::GET, path: format!("/v2/{repo}/manifests/{digest}"), accept: MANIFEST_ACCEPT.to_owned() };
    // The verdict is computed and cached here, before the clock starts.
    let res = registry.client().get(registry.url(&spec.path)).header("accept", MANIFEST_ACCEPT).send().await?;
    anyhow::ensure!(res.status() == 200, "GET {repo}@{digest} with {n_junk} junk referrers answered {}", res.status());
    load::run(registry.addr, &spec, concurrency, warmup, window).await
}

/// Peak memory (MiB, `VmHWM`) and wall time of `concurrency` verdict requests sent at once,
/// spread over `n_images` signed and attested images, each with `n_referrers` attestation
/// referrers of `n_layers` layers naming one envelope of `size` bytes. Every verdict must pass:
/// the image's own evidence is read before the junk.
pub(crate) async fn heavy_verdicts(registry: &Registry, key: &Key, run: u32, n_images: usize, heavy: (usize, usize, usize), concurrency: usize) -> anyhow::Result<(f64, Duration)> {
    let (n_referrers, n_layers, size) = heavy;
    let mut images = Vec::with_capacity(n_images);
    for index in 0..n_images {
        let repo = format!("gated/heavy-{run}-{n_images}-{index}");
        let digest = signed_image(registry, key, &repo, "v1", 1, seed(run, 51 + n_images as u64, index)).await?;
        evidence::push_heavy_referrers(registry, &repo, &digest, n_referrers, n_layers, size).await?;
        images.push(format!("{repo}@{digest}"));
    }
    memory::reset_peak(registry.pid)?;
    let started = Instant::now();
    let requests = (0..concurrency).map(|index| {
        let image = &images[index % images.len()];
        async move {
            let res = registry.client().get(registry.url("/api/v1/verdict")).query(&[("image", image)]).send().await?;
            let status = res.status();
            let body: serde_json::Value = res.json().await?;
            anyhow::ensure!(status == 200, "verdict of {image} answered {status}: {body}");
            anyhow::ensure!(body["verdict"]["passed"] == true, "verdict of {image} did not pass: {body}");
            Ok(())
        }
    });
    futures::future::try_join_all(requests).await?;
    Ok((memory::peak_mib(registry.pid)?, started.elapsed()))
}

/// A seed unique to (run, workload, index), so no two images share a layer.
pub(crate) fn seed(run: u32, workload: u64, index: usize) -> u64 {
    (u64::from(run) << 40) | (workload << 32) | index as u64
}
