//! portcullis's own workloads, which Distribution has no counterpart for: cold verdicts (every
//! signature and scan attestation verified, nothing cached) and promotions of a 20-layer image.

use std::time::{Duration, Instant};

use crate::evidence::{self, Key};
use crate::registry::Registry;

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

/// A seed unique to (run, workload, index), so no two images share a layer.
pub(crate) fn seed(run: u32, workload: u64, index: usize) -> u64 {
    (u64::from(run) << 40) | (workload << 32) | index as u64
}
