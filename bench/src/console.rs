//! The web console's page latency with many repositories (portcullis only: Distribution has no
//! console). Fills the registry with `n_repos` repositories of one small image each (the blobs
//! mounted from one source repository, so the fill is cheap), one of them with [`TAGS`] tags,
//! then times each console page, one request at a time.

use std::time::Instant;

use futures::StreamExt as _;

use crate::gates::Latencies;
use crate::registry::{image_manifest, Registry, OCI_MANIFEST};

/// Tags of the repository whose page is timed.
const TAGS: usize = 20;
/// Repositories filled at once.
const FILL_CONCURRENCY: usize = 16;
/// The repository `fill` pushes the blobs to, which every other mounts them from.
pub(crate) const SOURCE: &str = "console-base/app";
/// Requests before the timed ones, per page.
const WARMUP: usize = 5;

/// One timed page: what the table calls it, and its path.
pub(crate) struct Page {
    pub(crate) key: &'static str,
    pub(crate) what: String,
    pub(crate) latencies: Latencies,
}

/// The name of repository `index` of `n_repos`: 100 namespaces of repositories.
pub(crate) fn repo_name(index: usize) -> String {
    format!("team-{:03}/app-{index:05}", index % 100)
}

/// Fills the registry with `n_repos` repositories; returns the one with [`TAGS`] tags and the
/// digest they point to.
pub(crate) async fn fill(registry: &Registry, n_repos: usize) -> anyhow::Result<(String, String)> {
    let source = SOURCE;
    let config = serde_json::to_vec(&serde_json::json!({ "architecture": "amd64", "os": "linux", "config": {} }))?;
    let config_digest = registry.push_blob(source, &config).await?;
    let layer = crate::content::random_bytes(4096, 19);
    let layer_digest = registry.push_blob(source, &layer).await?;
    let layers = vec![serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len() })];
    let manifest = image_manifest(&config_digest, config.len(), layers)?;
    let digests = [config_digest.as_str(), layer_digest.as_str()];
    let fills = futures::stream::iter(0..n_repos).map(|index| {
        let manifest = &manifest;
        async move {
            let repo = repo_name(index);
            for digest in digests {
                let res = registry
                    .client()
                    .post(registry.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={source}")))
                    .header(http::header::CONTENT_LENGTH, 0)
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 201, "mount {digest} into {repo}: {}", res.status());
            }
            registry.put_manifest(&repo, "v1", OCI_MANIFEST, manifest).await
        }
    });
    let mut fills = fills.buffer_unordered(FILL_CONCURRENCY);
    let mut digest = String::new();
    while let Some(pushed) = fills.next().await {
        digest = pushed?;
    }
    let tagged = repo_name(n_repos / 2);
    for tag in 0..TAGS {
        registry.put_manifest(&tagged, &format!("t{tag:02}"), OCI_MANIFEST, &manifest).await?;
    }
    Ok((tagged, digest))
}

/// Times every console page `samples` times after a warm-up.
pub(crate) async fn pages(registry: &Registry, n_repos: usize, tagged: &str, digest: &str, samples: usize) -> anyhow::Result<Vec<Page>> {
    let middle = repo_name(n_repos / 2);
    let last_namespace = format!("team-{:03}/", (n_repos.max(1) - 1) % 100);
    let rare = format!("app-{:05}", n_repos - 1);
    let cases: Vec<(&'static str, String, String)> = vec![
        ("repositories_first", "repositories, first page".to_owned(), "/ui/repositories".to_owned()),
        ("repositories_middle", "repositories, a page from the middle".to_owned(), format!("/ui/repositories?after={middle}")),
        ("repositories_prefix", format!("repositories, prefix search {last_namespace}"), format!("/ui/repositories?q={last_namespace}")),
        ("repositories_contains", format!("repositories, substring search {rare} (reads 2,000 names)"), format!("/ui/repositories?q={rare}&match=contains")),
        ("repository", format!("repository with {TAGS} tags"), format!("/ui/r/{tagged}")),
        ("image", "image".to_owned(), format!("/ui/r/{tagged}/@{digest}")),
        ("promotions", "promotions".to_owned(), "/ui/promotions".to_owned()),
        ("audit", "audit".to_owned(), "/ui/audit".to_owned()),
        ("upstreams", "upstreams (tag moves read from up to 1,000 audit records)".to_owned(), "/ui/upstreams".to_owned()),
        ("drift", "drift".to_owned(), "/ui/drift".to_owned()),
    ];
    let mut pages = Vec::new();
    for (key, what, path) in cases {
        let mut times = Vec::with_capacity(samples);
        for i in 0..WARMUP + samples {
            let started = Instant::now();
            let res = registry.client().get(registry.url(&path)).send().await?;
            let status = res.status();
            let body = res.text().await?;
            let elapsed = started.elapsed();
            // A fast wrong answer is not a result.
            anyhow::ensure!(status == 200 && body.contains("</html>"), "GET {path}: {status}");
            if i >= WARMUP {
                times.push(elapsed);
            }
        }
        pages.push(Page { key, what: format!("console page: {what}, {n_repos} repositories"), latencies: Latencies::of(times) });
    }
    Ok(pages)
}
