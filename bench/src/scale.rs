//! Scale rows (issue #20 goal 4, group `scale`): a store of many repositories and tags, written
//! directly in portcullis's filesystem layout (`scale-fill`; pushing a million tags through the
//! API would take hours), then a portcullis started on it, which indexes it itself: the time from
//! its start to its log's "index rebuilt from the store" and its peak memory until then, then
//! `_catalog?n=100` (first page, a page from the middle through `last=`), `tags/list` of the
//! repository with the most tags, and manifest GETs by tag across repositories, one request at
//! a time. The same reads on both registries of the run, filled through the API at a smaller
//! size (`console::fill`), compare them side by side.
//!
//! The layout written is the one `src/metadata/layout.rs` spells (this crate does not depend on
//! portcullis, so it is spelled again here); one image (a config and a 4 KiB layer) is shared by
//! every repository, and every tag points to it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

use crate::gates::Latencies;
use crate::registry::{image_manifest, Registry, MANIFEST_ACCEPT, OCI_MANIFEST};
use crate::results::{Better, RunResults, PORTCULLIS};

/// How many repositories and tags a store holds.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Shape {
    /// Repositories, named as the console group names them (`team-NNN/app-NNNNN`).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) repos: usize,
    /// Tags in all, spread evenly over the repositories but the first.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) tags: usize,
    /// Tags of the first repository.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) big_tags: usize,
}

impl Shape {
    fn words(&self) -> String {
        format!("{} repositories, {} tags ({} in one repository)", self.repos, self.tags, self.big_tags)
    }

    /// Tags of repository `index`: the big one first, the rest shared out, the remainder to the
    /// first ones.
    fn tags_of(&self, index: usize) -> usize {
        if index == 0 {
            return self.big_tags;
        }
        let others = self.repos.saturating_sub(1).max(1);
        let rest = self.tags.saturating_sub(self.big_tags);
        rest / others + usize::from(index - 1 < rest % others)
    }
}

/// Writes a store of `shape` below `data_dir` (portcullis's `storage.data_dir`), which must not
/// hold one yet.
pub(crate) fn fill(data_dir: &Path, shape: &Shape) -> anyhow::Result<()> {
    let objects = data_dir.join("store").join("objects");
    anyhow::ensure!(!objects.exists(), "{} already holds a store", data_dir.display());
    let image = Image::new()?;
    for bytes in [&image.config, &image.layer, &image.manifest] {
        let digest = crate::content::sha256(bytes);
        let hex = hex_of(&digest);
        write(&objects.join("blobs/sha256").join(&hex[..2]).join(hex), bytes)?;
    }
    let manifest_hex = hex_of(&image.manifest_digest);
    write(&objects.join("types/sha256").join(manifest_hex), &serde_json::to_vec(&serde_json::json!({ "mediaType": OCI_MANIFEST }))?)?;
    let pushed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let link = serde_json::to_vec(&serde_json::json!({ "mediaType": OCI_MANIFEST, "size": image.manifest.len(), "pushed": pushed }))?;
    let tag = serde_json::to_vec(&serde_json::json!({ "digest": image.manifest_digest }))?;
    // Two writers: file creation is mostly the kernel's work, and this box has two cores.
    const WRITERS: usize = 2;
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|first| {
                let (objects, image, link, tag) = (&objects, &image, &link, &tag);
                scope.spawn(move || -> anyhow::Result<()> {
                    for index in (first..shape.repos).step_by(WRITERS) {
                        write_repository(objects, &repo_name(index), shape.tags_of(index), image, link, tag)?;
                    }
                    Ok(())
                })
            })
            .collect();
        writers.into_iter().try_for_each(|writer| writer.join().map_err(|_| anyhow::anyhow!("a fill writer panicked"))?)
    })
}

/// The name of repository `index`, as `console::fill` names them.
fn repo_name(index: usize) -> String {
    crate::console::repo_name(index)
}

/// Tag `index` of a repository: `v1`, `v2`, ..., so the first is the one `console::fill` pushes.
fn tag_name(index: usize) -> String {
    format!("v{}", index + 1)
}

/// The shared image.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    config_digest: String,
    layer_digest: String,
    manifest_digest: String,
}

impl Image {
    fn new() -> anyhow::Result<Image> {
        let config = serde_json::to_vec(&serde_json::json!({ "architecture": "amd64", "os": "linux", "config": {}, "rootfs": { "type": "layers", "diff_ids": [] } }))?;
        let layer = crate::content::random_bytes(4096, 23).to_vec();
        let (config_digest, layer_digest) = (crate::content::sha256(&config), crate::content::sha256(&layer));
        let layers = vec![serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len() })];
        let manifest = image_manifest(&config_digest, config.len(), layers)?;
        let manifest_digest = crate::content::sha256(&manifest);
        Ok(Image { config, layer, manifest, config_digest, layer_digest, manifest_digest })
    }
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// One repository: its manifest link, its two blob links, its tags and its catalog entry.
fn write_repository(objects: &Path, name: &str, n_tags: usize, image: &Image, link: &[u8], tag: &[u8]) -> anyhow::Result<()> {
    let repo = objects.join("repositories").join(name);
    write(&repo.join("_manifests/sha256").join(hex_of(&image.manifest_digest)), link)?;
    for digest in [&image.config_digest, &image.layer_digest] {
        write(&repo.join("_blobs/sha256").join(hex_of(digest)), b"")?;
    }
    let tags = repo.join("_tags");
    std::fs::create_dir_all(&tags)?;
    for index in 0..n_tags {
        std::fs::write(tags.join(tag_name(index)), tag)?;
    }
    // layout.rs `catalog_entry`: the name's hex in 200-character segments, then `-`.
    let hex = hex::encode(name);
    let segments: Vec<&str> = hex.as_bytes().chunks(200).map(|c| std::str::from_utf8(c).expect("hex is ASCII")).collect();
    write(&objects.join("catalog").join(segments.join("/")).join("-"), b"")
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().context("object paths have a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// What the scale group needs to start portcullis on a filled store.
pub(crate) struct Start<'a> {
    /// The portcullis binary.
    pub(crate) bin: &'a Path,
    /// A configuration whose `storage.data_dir` is `data_dir`.
    pub(crate) config: &'a Path,
    /// Where the store is filled.
    pub(crate) data_dir: &'a Path,
}

/// Fills a store of `full`, starts portcullis on it and measures it; then fills both registries
/// of the run with `small` through the API and measures them alike.
pub(crate) async fn workloads(full: &Shape, small: &Shape, samples: usize, run: u32, start: &Start<'_>, both: &[&Registry], results: &mut RunResults) -> anyhow::Result<()> {
    crate::workloads::progress(run, &format!("scale: writing {} into {}", full.words(), start.data_dir.display()));
    let started = Instant::now();
    let (data_dir, shape) = (start.data_dir.to_owned(), *full);
    tokio::task::spawn_blocking(move || fill(&data_dir, &shape)).await??;
    crate::workloads::progress(run, &format!("scale: written in {:.1} s; starting portcullis on it", started.elapsed().as_secs_f64()));
    let full_words = format!("{} (written in the store layout)", full.words());
    let server = Server::start(start).await?;
    results.record("scale_ready_s", &format!("scale, {full_words}: start to answering GET /v2/ (s)"), Better::Lower, PORTCULLIS, server.started.elapsed().as_secs_f64());
    let outcome = async {
        let rebuild = server.await_rebuild(Duration::from_secs(3600)).await?;
        results.record("scale_rebuild_s", &format!("scale, {full_words}: start to index rebuilt (s)"), Better::Lower, PORTCULLIS, rebuild.as_secs_f64());
        results.record("scale_rebuild_peak", &format!("scale, {full_words}: peak memory until then (MiB)"), Better::Lower, PORTCULLIS, crate::memory::peak_mib(server.registry.pid)?);
        reads(&server.registry, full, &[], samples, run, ("scale", &full_words), results).await?;
        results.record("scale_rss_after", &format!("scale, {full_words}: memory after the reads (MiB)"), Better::Lower, PORTCULLIS, crate::memory::rss_mib(server.registry.pid)?);
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    outcome?;

    let small_words = format!("{} (pushed through the API, both registries)", small.words());
    for &registry in both {
        crate::workloads::progress(run, &format!("scale: {}: pushing {}", registry.name, small.words()));
        push(registry, small).await?;
        reads(registry, small, &[crate::console::SOURCE], samples, run, ("scale_api", &small_words), results).await?;
    }
    Ok(())
}

/// Pushes `shape` through the API: `console::fill`'s repositories and image, and the first
/// repository's tags.
async fn push(registry: &Registry, shape: &Shape) -> anyhow::Result<()> {
    let (_, digest) = crate::console::fill(registry, shape.repos).await?;
    let manifest = registry.client().get(registry.url(&format!("/v2/{}/manifests/{digest}", repo_name(0)))).header("accept", MANIFEST_ACCEPT).send().await?.bytes().await?;
    for index in 0..shape.big_tags {
        registry.put_manifest(&repo_name(0), &tag_name(index), OCI_MANIFEST, &manifest).await?;
    }
    Ok(())
}

/// Times the reads of a registry holding `shape` and the repositories `more`, `samples` of each
/// after as many untimed, as rows of `(key prefix, words)`; every answer is checked.
async fn reads(registry: &Registry, shape: &Shape, more: &[&str], samples: usize, run: u32, (key, words): (&str, &str), results: &mut RunResults) -> anyhow::Result<()> {
    let mut names: Vec<String> = (0..shape.repos).map(repo_name).chain(more.iter().map(|name| (*name).to_owned())).collect();
    names.sort_unstable();
    let middle = names.len() / 2;
    // Each read with the length and first entry its answer must have.
    let cases = [
        ("catalog_first", "_catalog?n=100, first page".to_owned(), "/v2/_catalog?n=100".to_owned(), names.len().min(100), names.first().cloned()),
        (
            "catalog_middle",
            "_catalog?n=100, a page from the middle (last=)".to_owned(),
            format!("/v2/_catalog?n=100&last={}", names[middle]),
            (names.len() - middle - 1).min(100),
            names.get(middle + 1).cloned(),
        ),
        ("tags_big", format!("tags/list of the repository with {} tags", shape.big_tags), format!("/v2/{}/tags/list", repo_name(0)), shape.big_tags, Some(tag_name(0))),
    ];
    for (case, what, path, expected_len, first) in cases {
        crate::workloads::progress(run, &format!("{key}: {}: {what}", registry.name));
        let mut times = Vec::with_capacity(samples);
        for i in 0..2 * samples {
            let started = Instant::now();
            let res = registry.client().get(registry.url(&path)).send().await?;
            let status = res.status();
            let body: serde_json::Value = res.json().await.with_context(|| format!("{}: GET {path}", registry.name))?;
            let elapsed = started.elapsed();
            let list = body.get("repositories").or_else(|| body.get("tags")).and_then(|list| list.as_array());
            // A catalog page must start where asked; Distribution lists tags in no set order.
            let starts = |list: &Vec<serde_json::Value>| match case {
                "tags_big" => list.iter().any(|v| v.as_str() == first.as_deref()),
                _ => list.first().and_then(|v| v.as_str()) == first.as_deref(),
            };
            let ok = status == 200 && list.is_some_and(|list| list.len() == expected_len && starts(list));
            anyhow::ensure!(ok, "{}: GET {path} answered {status}, not {expected_len} entries from {first:?}", registry.name);
            if i >= samples {
                times.push(elapsed);
            }
        }
        record(results, &format!("{key}_{case}"), &format!("{words}: {what}"), registry.name, Latencies::of(times));
    }
    crate::workloads::progress(run, &format!("{key}: {}: manifest GET by tag across repositories", registry.name));
    let mut times = Vec::with_capacity(samples);
    for i in 0..2 * samples {
        // A different repository each time, spread over the whole catalog.
        let repo = repo_name((i * 7919) % shape.repos);
        let path = format!("/v2/{repo}/manifests/{}", tag_name(0));
        let started = Instant::now();
        let res = registry.client().get(registry.url(&path)).header("accept", MANIFEST_ACCEPT).send().await?;
        let status = res.status();
        res.bytes().await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(status == 200, "{}: GET {path} answered {status}", registry.name);
        if i >= samples {
            times.push(elapsed);
        }
    }
    record(results, &format!("{key}_manifest"), &format!("{words}: manifest GET by tag, a different repository each time"), registry.name, Latencies::of(times));
    Ok(())
}

fn record(results: &mut RunResults, key: &str, what: &str, server: &str, latencies: Latencies) {
    results.record(&format!("{key}_p50"), &format!("{what}: p50 (ms)"), Better::Lower, server, latencies.p50_ms);
    results.record(&format!("{key}_p99"), &format!("{what}: p99 (ms)"), Better::Lower, server, latencies.p99_ms);
}

/// A portcullis this group started, with its log.
struct Server {
    registry: Registry,
    child: tokio::process::Child,
    _stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    log: PathBuf,
    started: Instant,
}

impl Server {
    /// Starts `portcullis serve` with `RUST_LOG=info` (the rebuild is logged at info) and waits for
    /// its first stdout line, which says where it listens.
    async fn start(start: &Start<'_>) -> anyhow::Result<Server> {
        let log = start.config.with_extension("log");
        let started = Instant::now();
        let mut child = tokio::process::Command::new(start.bin)
            .arg("serve")
            .arg("--config")
            .arg(start.config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", start.bin.display()))?;
        let pid = child.id().context("portcullis exited at once")?;
        // Held open until the server stops, so a later line on its stdout is not a broken pipe.
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().context("stdout is piped")?);
        let mut line = String::new();
        stdout.read_line(&mut line).await?;
        let url = line.split_whitespace().find(|word| word.starts_with("http://")).with_context(|| format!("portcullis said {line:?} on start"))?;
        let registry = Registry::new(PORTCULLIS, url, pid)?;
        registry.wait_ready(Duration::from_secs(60)).await?;
        Ok(Server { registry, child, _stdout: stdout, log, started })
    }

    /// Waits for the log line that says the index is rebuilt; the time since start.
    async fn await_rebuild(&self, timeout: Duration) -> anyhow::Result<Duration> {
        loop {
            let text = std::fs::read_to_string(&self.log).with_context(|| format!("read {}", self.log.display()))?;
            if text.contains("index rebuilt from the store") {
                return Ok(self.started.elapsed());
            }
            anyhow::ensure!(!text.contains("index rebuild failed"), "portcullis: index rebuild failed; see {}", self.log.display());
            anyhow::ensure!(self.started.elapsed() < timeout, "portcullis: no index rebuilt after {timeout:?}; see {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
