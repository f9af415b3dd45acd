//! The pull-through proxy, side by side with Distribution's own proxy mode (`proxy: remoteurl:`),
//! both in front of one upstream Distribution started by `scripts/bench`: a cold skopeo pull of a
//! many-layer image through each proxy against the same pull straight from the upstream, a warm
//! pull through each proxy against a pull of the image pushed to the registry itself, and 16
//! concurrent cold pulls of one image through each, with the upstream's blob fetches per blob
//! counted from its access log (one line per request).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::images::{self, Skopeo};
use crate::registry::{Registry, MANIFEST_ACCEPT};
use crate::results::{Better, RunResults, PORTCULLIS};

/// The repositories portcullis keeps for its upstream `up` (its `[[upstreams]]` namespace).
pub(crate) const PORTCULLIS_PREFIX: &str = "proxy/up/";
/// Clients pulling at once in the concurrent workload.
const CONCURRENT_PULLS: usize = 16;

/// The image of one workload, in words (`20x5 MiB`), and its size.
pub(crate) struct Image {
    pub(crate) n_layers: usize,
    pub(crate) layer_size: usize,
    pub(crate) words: String,
}

/// Runs the proxy workloads through `proxies` (portcullis, Distribution's proxy mode, in the
/// run's order) in front of `upstream`, whose access log is `upstream_log`.
pub(crate) async fn workloads(
    image: &Image,
    run: u32,
    proxies: &[&Registry],
    upstream: &Registry,
    upstream_log: &Path,
    scratch: &Path,
    results: &mut RunResults,
) -> anyhow::Result<()> {
    let skopeo = Skopeo::new(scratch)?;
    let words = &image.words;
    for (index, &proxy) in proxies.iter().enumerate() {
        // Fresh images for each proxy: cold means cold.
        let repo = format!("bench/proxy-{run}-{}", proxy.name);
        let layout = scratch.join(format!("proxy-layout-{index}"));
        let _ = std::fs::remove_dir_all(&layout);
        images::write_layout(&layout, "v1", image.n_layers, image.layer_size, crate::gates::seed(run, 60, index))?;
        let source = format!("oci:{}:v1", layout.display());
        skopeo.copy(&source, &format!("docker://{}/{repo}:v1", upstream.host())).await?;
        let through = |repo: &str| match proxy.name {
            PORTCULLIS => format!("docker://{}/{PORTCULLIS_PREFIX}{repo}:v1", proxy.host()),
            _ => format!("docker://{}/{repo}:v1", proxy.host()),
        };

        progress(run, &format!("{}: skopeo pull {words} straight from the upstream", proxy.name));
        let direct = pull(&skopeo, &format!("docker://{}/{repo}:v1", upstream.host()), scratch).await?;
        progress(run, &format!("{}: skopeo pull {words} through the proxy, cold", proxy.name));
        let cold = pull(&skopeo, &through(&repo), scratch).await?;
        progress(run, &format!("{}: skopeo pull {words} through the proxy, warm", proxy.name));
        let warm = pull(&skopeo, &through(&repo), scratch).await?;
        // The same image pushed to the registry itself; Distribution's proxy mode takes no
        // pushes, and its pushed-image pull is the upstream's (a Distribution).
        let pushed = match proxy.name {
            PORTCULLIS => {
                let target = format!("docker://{}/bench/pushed-{run}:v1", proxy.host());
                skopeo.copy(&source, &target).await?;
                progress(run, &format!("{}: skopeo pull {words} pushed to it", proxy.name));
                pull(&skopeo, &target, scratch).await?
            }
            _ => direct,
        };
        results.record("proxy_direct", &format!("skopeo pull, {words}, straight from the upstream (s)"), Better::Lower, proxy.name, secs(direct));
        results.record("proxy_cold", &format!("skopeo pull, {words}, through the proxy, cold (s)"), Better::Lower, proxy.name, secs(cold));
        results.record("proxy_cold_ratio", "cold pull through the proxy / straight from the upstream (goal: at most 1.2)", Better::Lower, proxy.name, secs(cold) / secs(direct));
        results.record("proxy_warm", &format!("skopeo pull, {words}, through the proxy, warm (s)"), Better::Lower, proxy.name, secs(warm));
        results.record("proxy_pushed", &format!("skopeo pull, {words}, pushed to the registry itself (s)"), Better::Lower, proxy.name, secs(pushed));
        results.record("proxy_warm_ratio", "warm pull through the proxy / pull of the pushed image (goal: 1)", Better::Lower, proxy.name, secs(warm) / secs(pushed));

        // 16 clients pulling one image no proxy has seen, none of whose blobs it has seen either.
        std::fs::remove_dir_all(&layout)?;
        images::write_layout(&layout, "v1", image.n_layers, image.layer_size, crate::gates::seed(run, 61, index))?;
        let concurrent = format!("{repo}-concurrent");
        skopeo.copy(&source, &format!("docker://{}/{concurrent}:v1", upstream.host())).await?;
        std::fs::remove_dir_all(&layout)?;
        let blob_fetches = || count_lines(upstream_log, &format!("\"GET /v2/{concurrent}/blobs/sha256:"));
        let before = blob_fetches()?;
        progress(run, &format!("{}: {CONCURRENT_PULLS} concurrent cold pulls of {words}", proxy.name));
        let proxied = match proxy.name {
            PORTCULLIS => format!("{PORTCULLIS_PREFIX}{concurrent}"),
            _ => concurrent.clone(),
        };
        let started = Instant::now();
        let pulls = (0..CONCURRENT_PULLS).map(|_| pull_http(proxy, &proxied));
        let n_blobs = futures::future::try_join_all(pulls).await?.into_iter().max().unwrap_or(1);
        let elapsed = started.elapsed();
        let fetches = blob_fetches()? - before;
        let label = format!("{CONCURRENT_PULLS} concurrent cold pulls of {words}: all done (s)");
        results.record("proxy_concurrent", &label, Better::Lower, proxy.name, secs(elapsed));
        let label = format!("{CONCURRENT_PULLS} concurrent cold pulls: upstream GETs per blob, from its access log (goal: 1)");
        results.record("proxy_concurrent_fetches", &label, Better::Lower, proxy.name, fetches as f64 / n_blobs as f64);
    }
    Ok(())
}

fn progress(run: u32, what: &str) {
    eprintln!("==> run {run}: {what}");
}

fn secs(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

/// Times a skopeo pull of `source` into a fresh layout (removed afterwards).
async fn pull(skopeo: &Skopeo, source: &str, scratch: &Path) -> anyhow::Result<Duration> {
    let pulled = scratch.join("proxy-pulled");
    let _ = std::fs::remove_dir_all(&pulled);
    let elapsed = skopeo.copy(source, &format!("oci:{}:v1", pulled.display())).await?;
    std::fs::remove_dir_all(&pulled).with_context(|| format!("remove {}", pulled.display()))?;
    Ok(elapsed)
}

/// Pulls `repo:v1` whole over HTTP (the manifest, then each blob in turn, bytes discarded and
/// counted); returns the number of blobs.
async fn pull_http(registry: &Registry, repo: &str) -> anyhow::Result<usize> {
    let res = registry.client().get(registry.url(&format!("/v2/{repo}/manifests/v1"))).header("accept", MANIFEST_ACCEPT).send().await?;
    anyhow::ensure!(res.status() == 200, "{}: GET {repo}:v1: {}", registry.name, res.status());
    let manifest: serde_json::Value = res.json().await?;
    let blobs: Vec<(String, u64)> = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().into_iter().flatten())
        .filter_map(|blob| Some((blob["digest"].as_str()?.to_owned(), blob["size"].as_u64()?)))
        .collect();
    for (digest, size) in &blobs {
        registry.download(repo, digest, *size).await?;
    }
    Ok(blobs.len())
}

/// Lines of `path` that contain `needle`.
fn count_lines(path: &Path, needle: &str) -> anyhow::Result<usize> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(text.lines().filter(|line| line.contains(needle)).count())
}
