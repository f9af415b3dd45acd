//! One run of every workload against both registries (`portcullis-bench measure`).
//!
//! Each workload runs against both servers in turn (which one goes first alternates with the run
//! number), with fresh pseudo-random content for every push so no cache or deduplication helps.
//! Both servers' peak memory is reset before a workload and read after it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;

use crate::collection::{self, Content};
use crate::evidence::Key;
use crate::gates;
use crate::images::{self, Skopeo};
use crate::load;
use crate::memory;
use crate::registry::{Registry, MANIFEST_ACCEPT};
use crate::results::{Better, RunResults, CEILING, DISTRIBUTION, PORTCULLIS, PORTCULLIS_GATED};

/// `portcullis-bench measure` arguments; `scripts/bench` passes them.
#[derive(Debug, clap::Args)]
pub(crate) struct MeasureArgs {
    /// Run number (from 1): seeds content and picks which server goes first.
    #[arg(long, default_value_t = 1)]
    run: u32,
    /// portcullis's base URL, `http://127.0.0.1:PORT`.
    #[arg(long)]
    portcullis: String,
    /// portcullis's process id.
    #[arg(long)]
    portcullis_pid: u32,
    /// Distribution's base URL.
    #[arg(long)]
    distribution: String,
    /// Distribution's process id.
    #[arg(long)]
    distribution_pid: u32,
    /// The cosign key portcullis's configuration trusts as `ci` (from `keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Directory for image layouts, pulls and ceiling files.
    #[arg(long)]
    scratch: PathBuf,
    /// Where to write the run's JSON.
    #[arg(long)]
    out: PathBuf,
    /// `fs` or `s3`, for the table's caption.
    #[arg(long, default_value = "fs")]
    storage: String,
    /// Tiny sizes and short load windows: checks that everything works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Workload groups to run, comma-separated: `blobs` (with the machine ceilings), `skopeo`,
    /// `manifests` (with cold verdicts and promotions), `parallel`, `evidence` (hostile evidence,
    /// portcullis only), `log` (the request log), `proxy` (pulls through each proxy), `admission`
    /// (the webhooks' latency, portcullis only), `console` (the web console's pages), `gc` (garbage
    /// collection of deleted manifests' content), `uploads` (against the uploads reference), `conns` (idle keep-alive connections), `tls` (both
    /// registries behind TLS), `scale` (many repositories and tags).
    /// `scripts/bench` runs each group on freshly started
    /// servers, so the disk never holds more than one group's data.
    #[arg(long, value_delimiter = ',', default_value = "blobs,skopeo,manifests,parallel,evidence,log,proxy,admission,console,gc,uploads,conns,tls,scale")]
    groups: Vec<Group>,
    /// Size of each of the concurrent uploads of the memory workload, MiB (the 64 of them must
    /// fit on disk at once; `scripts/bench` lowers it when they would not).
    #[arg(long, default_value_t = 1024)]
    parallel_upload_mib: usize,
    /// With `--storage s3`: the bucket both servers store in, on the store `PORTCULLIS_TEST_S3_*`
    /// names. The blob group then also measures the store itself with a plain S3 client.
    #[arg(long)]
    s3_bucket: Option<String>,
    /// The key prefix of this run in `--s3-bucket`; the store's ceilings are measured below it.
    #[arg(long, default_value = "")]
    s3_prefix: String,
    /// A second portcullis on the same store, with `redirect_blobs`: the blob group also measures
    /// the download through it (a 307 to a presigned URL, followed).
    #[arg(long, requires = "portcullis_redirect_pid")]
    portcullis_redirect: Option<String>,
    /// Its process id.
    #[arg(long)]
    portcullis_redirect_pid: Option<u32>,
    /// A second Distribution on the same store, with its redirects on.
    #[arg(long, requires = "distribution_redirect_pid")]
    distribution_redirect: Option<String>,
    /// Its process id.
    #[arg(long)]
    distribution_redirect_pid: Option<u32>,
    /// portcullis's log file (its stderr), for the `log` group.
    #[arg(long)]
    portcullis_log: Option<PathBuf>,
    /// Distribution's log file, for the `log` group.
    #[arg(long)]
    distribution_log: Option<PathBuf>,
    /// A second portcullis, started like the first but with `RUST_LOG=warn` (no request log),
    /// for the `log` group.
    #[arg(long)]
    quiet_portcullis: Option<String>,
    /// Its process id.
    #[arg(long)]
    quiet_portcullis_pid: Option<u32>,
    /// For the `proxy` group: the upstream (a Distribution) both registries proxy; `--portcullis`
    /// then names a portcullis with it as `[[upstreams]]` "up", `--distribution` a Distribution in
    /// its proxy mode.
    #[arg(long, requires = "upstream_log")]
    upstream: Option<String>,
    /// The upstream's process id.
    #[arg(long)]
    upstream_pid: Option<u32>,
    /// The upstream's access log.
    #[arg(long)]
    upstream_log: Option<PathBuf>,
    /// A second portcullis on the same store with TLS and `[admission]`, for the `admission`
    /// group: `https://127.0.0.1:PORT`.
    #[arg(long)]
    admission_portcullis: Option<String>,
    /// Directory with `ca.crt`, `client.crt` and `client.key` for it.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// For the `gc` group: the portcullis binary, which runs `portcullis gc` beside the server;
    /// for the `scale` group, the one it starts on the store it fills.
    #[arg(long)]
    portcullis_bin: Option<PathBuf>,
    /// For the `gc` group: the server's configuration, for `portcullis gc`.
    #[arg(long)]
    portcullis_config: Option<PathBuf>,
    /// For the `gc` group: Distribution's configuration, for `garbage-collect`.
    #[arg(long)]
    distribution_config: Option<PathBuf>,
    /// For the `gc` group: a second Distribution on the same store in read-only mode, which serves
    /// the reads while `garbage-collect` runs (the first one is stopped for it).
    #[arg(long, requires = "distribution_readonly_pid")]
    distribution_readonly: Option<String>,
    /// Its process id.
    #[arg(long)]
    distribution_readonly_pid: Option<u32>,
    /// For the `gc` group on the filesystem: portcullis's data directory, measured with du.
    #[arg(long)]
    portcullis_data: Option<PathBuf>,
    /// For the `gc` group on the filesystem: Distribution's root directory, measured with du.
    #[arg(long)]
    distribution_data: Option<PathBuf>,
    /// For the `uploads` group: the uploads reference (`serve-uploads`), `http://127.0.0.1:PORT`.
    #[arg(long, requires = "reference_pid")]
    reference: Option<String>,
    /// Its process id.
    #[arg(long)]
    reference_pid: Option<u32>,
    /// For the `tls` group: portcullis with `[server.tls]` on a store of its own, `https://127.0.0.1:PORT`
    /// (its certificate signed by `ca.crt` of `--tls-dir`).
    #[arg(long, requires = "tls_portcullis_pid")]
    tls_portcullis: Option<String>,
    /// Its process id.
    #[arg(long)]
    tls_portcullis_pid: Option<u32>,
    /// For the `tls` group: Distribution with its own TLS (`http.tls`), on a store of its own.
    #[arg(long, requires = "tls_distribution_pid")]
    tls_distribution: Option<String>,
    /// Its process id.
    #[arg(long)]
    tls_distribution_pid: Option<u32>,
    /// For the `scale` group: a portcullis configuration whose `storage.data_dir` is `--scale-data`
    /// (with `--portcullis-bin`, the group starts that server itself, on the store it fills).
    #[arg(long, requires = "scale_data")]
    scale_config: Option<PathBuf>,
    /// For the `scale` group: the data directory to fill, empty.
    #[arg(long)]
    scale_data: Option<PathBuf>,
    /// For the `scale` group: repositories written in the store layout (with ten times as many
    /// tags, a tenth of the repositories' number in one of them, at most 10,000); the side by
    /// side through the API has a hundredth of them (at least 10).
    #[arg(long, default_value_t = 100_000)]
    scale_repos: usize,
    /// For the `gc` group: manifests pushed (10 blobs each; default 10,000, the size issue #18
    /// names; fewer where pushing them to Distribution would take too long).
    #[arg(long)]
    gc_manifests: Option<usize>,
    /// For the `manifests` group: a `manifest-ceiling` server, given the image's manifest and
    /// driven beside the registries as the manifest rows' reference.
    #[arg(long, requires = "manifest_ceiling_pid")]
    manifest_ceiling: Option<String>,
    /// Its process id.
    #[arg(long)]
    manifest_ceiling_pid: Option<u32>,
}

/// A group of workloads that runs on one start of the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Group {
    /// Machine ceilings, blob uploads and the download.
    Blobs,
    /// skopeo pushes and pulls.
    Skopeo,
    /// Manifest load, cold verdicts, promotions.
    Manifests,
    /// Concurrent uploads, for memory.
    Parallel,
    /// Junk referrers on the pull path, and concurrent verdicts of heavy evidence, for memory.
    Evidence,
    /// The request log: bytes per request, and throughput with it on and off.
    Log,
    /// Pulls through portcullis's proxy and Distribution's, cold, warm and 16 at once.
    Proxy,
    /// The admission webhooks' latency.
    Admission,
    /// The web console's pages with many repositories.
    Console,
    /// Garbage collection of deleted manifests' content, side by side.
    Gc,
    /// Uploads against the uploads reference, with CPU per GiB (issue #20 goal 2).
    Uploads,
    /// Idle keep-alive connections: memory per connection, manifest load beside them (goal 5).
    Conns,
    /// Both registries behind TLS, HTTP/1.1 and HTTP/2 (goal 3).
    Tls,
    /// Many repositories and tags: index rebuild, catalog paging, tag listing (goal 4).
    Scale,
}

/// Sizes and durations of one run.
struct Sizes {
    blob: usize,
    chunk: usize,
    small_layers: usize,
    small_layer: usize,
    big_layer: usize,
    parallel_uploads: usize,
    parallel_upload: usize,
    concurrencies: Vec<usize>,
    warmup: Duration,
    window: Duration,
    cold_verdicts: usize,
    promotions: usize,
    promotion_layers: usize,
    junk_referrers: usize,
    /// Referrers per image, layers per referrer, bytes of the one envelope they all name.
    heavy: (usize, usize, usize),
    heavy_verdicts: usize,
    /// Containers per admission review, and reviews timed per webhook.
    admission: (usize, usize),
    /// Repositories the console's pages are timed with, and timed requests per page.
    console: (usize, usize),
    /// What the gc group pushes (half of it is then deleted).
    gc: Content,
    /// Idle keep-alive connections of the conns group.
    idle_connections: usize,
    /// The scale group's store written in the layout, the one pushed through the API, and the
    /// timed requests per read.
    scale: (crate::scale::Shape, crate::scale::Shape, usize),
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
/// Connections of the manifest load that runs while the collectors do.
const GC_LOAD: usize = 4;

impl Sizes {
    fn new(args: &MeasureArgs) -> Sizes {
        if args.smoke {
            return Sizes {
                blob: 8 * MIB,
                chunk: MIB,
                small_layers: 3,
                small_layer: 256 * KIB,
                big_layer: 4 * MIB,
                parallel_uploads: 4,
                parallel_upload: MIB,
                concurrencies: vec![1, 16, 64],
                warmup: Duration::from_millis(20),
                window: Duration::from_millis(100),
                cold_verdicts: 3,
                promotions: 3,
                promotion_layers: 20,
                junk_referrers: 20,
                heavy: (4, 4, 64 * KIB),
                heavy_verdicts: 4,
                admission: (20, 5),
                console: (200, 3),
                gc: Content { manifests: 10, layers: 3, layer_size: 4 * KIB },
                idle_connections: 20,
                scale: (scale_shape(args.scale_repos.min(200)), scale_api_shape(args.scale_repos.min(200)), 3),
            };
        }
        Sizes {
            blob: GIB,
            chunk: 16 * MIB,
            small_layers: 20,
            small_layer: 5 * MIB,
            big_layer: GIB,
            parallel_uploads: 64,
            parallel_upload: args.parallel_upload_mib * MIB,
            concurrencies: vec![1, 16, 64],
            warmup: Duration::from_millis(250),
            window: Duration::from_millis(1500),
            cold_verdicts: 100,
            promotions: 20,
            promotion_layers: 20,
            junk_referrers: 1000,
            heavy: (64, 16, 2 * MIB),
            heavy_verdicts: 16,
            admission: (20, 500),
            console: (10_000, 50),
            gc: Content { manifests: args.gc_manifests.unwrap_or(10_000), layers: 9, layer_size: 4 * KIB },
            idle_connections: 2000,
            scale: (scale_shape(args.scale_repos), scale_api_shape(args.scale_repos), 50),
        }
    }

    /// `64 referrers x 16 layers of one 2 MiB envelope`.
    fn heavy_words(&self) -> String {
        let (n_referrers, n_layers, size) = self.heavy;
        format!("{n_referrers} referrers x {n_layers} layers of one {} envelope", human(size))
    }

    fn describe(&self, groups: &[Group]) -> Vec<String> {
        let mut words = Vec::new();
        for group in groups {
            match group {
                Group::Blobs => words.push(format!("blobs {}, chunks {}", human(self.blob), human(self.chunk))),
                Group::Skopeo => words.push(format!("skopeo images {}x{} and 1x{}", self.small_layers, human(self.small_layer), human(self.big_layer))),
                Group::Manifests => {
                    words.push(format!("manifest load {:?} per cell after {:?} warm-up", self.window, self.warmup));
                    words.push(format!("{} cold verdicts, {} promotions of {} layers", self.cold_verdicts, self.promotions, self.promotion_layers));
                }
                Group::Parallel => words.push(format!("{} concurrent uploads of {}", self.parallel_uploads, human(self.parallel_upload))),
                Group::Evidence => {
                    words.push(format!("{} junk referrers", self.junk_referrers));
                    words.push(format!("{} concurrent verdicts of images with {}", self.heavy_verdicts, self.heavy_words()));
                }
                Group::Log => words.push(format!("request log: manifest GET load {:?} per cell after {:?} warm-up", self.window, self.warmup)),
                Group::Proxy => words.push(format!("proxy pulls of a {}x{} image", self.small_layers, human(self.small_layer))),
                Group::Admission => words.push(format!("{} admission reviews of {} containers per webhook", self.admission.1, self.admission.0)),
                Group::Console => words.push(format!("console: {} repositories, {} requests per page, one at a time", self.console.0, self.console.1)),
                Group::Gc => words.push(format!(
                    "gc: {} manifests of a config and {} layers of {} ({} blobs), half deleted; manifest GET by tag at c={GC_LOAD} during collection",
                    self.gc.manifests,
                    self.gc.layers,
                    human(self.gc.layer_size),
                    self.gc.blobs()
                )),
                Group::Conns => words.push(format!("{} idle keep-alive connections beside manifest load {:?} after {:?} warm-up", self.idle_connections, self.window, self.warmup)),
                Group::Tls => words.push(format!("TLS: manifest GET c=64 {:?} after {:?} warm-up, blob {}", self.window, self.warmup, human(self.blob))),
                Group::Scale => words.push(format!("scale: {} samples per read", self.scale.2)),
                Group::Uploads => words.push(format!("uploads against the reference: {}, chunks {}", human(self.blob), human(self.chunk))),
            }
        }
        words
    }
}

/// The scale group's store in the layout: `n_repos` repositories, ten tags each on average, a
/// tenth of `n_repos` (at most 10,000) in the first.
fn scale_shape(n_repos: usize) -> crate::scale::Shape {
    crate::scale::Shape { repos: n_repos, tags: 10 * n_repos, big_tags: (n_repos / 10).clamp(1, 10_000) }
}

/// The scale group's content pushed through the API: a hundredth of the repositories (at least
/// 10), each with `v1` as `console::fill` pushes it (and 20 more tags in one), and a tenth of
/// the big repository's tags.
fn scale_api_shape(n_repos: usize) -> crate::scale::Shape {
    let repos = (n_repos / 100).max(10);
    let big_tags = (scale_shape(n_repos).big_tags / 10).max(5);
    crate::scale::Shape { repos, tags: repos + 20 + big_tags - 1, big_tags }
}

/// `1 GiB`, `16 MiB`, `256 KiB`.
pub(crate) fn human(bytes: usize) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

pub(crate) fn mib_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

/// Runs every workload once and writes the run's JSON.
pub(crate) async fn measure(args: MeasureArgs) -> anyhow::Result<()> {
    let sizes = Sizes::new(&args);
    let run = args.run;
    let portcullis = Registry::new(PORTCULLIS, &args.portcullis, args.portcullis_pid)?;
    let distribution = Registry::new(DISTRIBUTION, &args.distribution, args.distribution_pid)?;
    let key = Key::load(&args.key)?;
    std::fs::create_dir_all(&args.scratch)?;
    // The redirecting twins answer blob GETs with 307s; they are listed under the column of the
    // server they twin.
    let mut redirecting = Vec::new();
    for (name, url, pid) in [
        (PORTCULLIS, &args.portcullis_redirect, args.portcullis_redirect_pid),
        (DISTRIBUTION, &args.distribution_redirect, args.distribution_redirect_pid),
    ] {
        if let (Some(url), Some(pid)) = (url, pid) {
            redirecting.push(Registry::new(name, url, pid)?);
        }
    }
    for registry in [&portcullis, &distribution].into_iter().chain(&redirecting) {
        registry.wait_ready(Duration::from_secs(30)).await?;
    }
    // Alternate who goes first, so neither always meets the page cache the other left behind.
    let both: Vec<&Registry> = if run % 2 == 1 { vec![&portcullis, &distribution] } else { vec![&distribution, &portcullis] };
    let mut results = RunResults::new(run, args.smoke, &args.storage);
    results.sizes = sizes.describe(&args.groups);

    progress(run, "idle memory");
    tokio::time::sleep(Duration::from_millis(if args.smoke { 100 } else { 1000 })).await;
    for registry in &both {
        results.record("rss_idle", "idle memory after start (MiB)", Better::Lower, registry.name, memory::rss_mib(registry.pid)?);
    }

    if args.groups.contains(&Group::Blobs) {
        progress(run, "machine ceilings");
        let data = crate::content::random_bytes(sizes.blob, gates::seed(run, 9, 0));
        results.ceilings = crate::ceilings::measure(&data, &args.scratch)?;
        if let Some(bucket) = &args.s3_bucket {
            progress(run, "the S3 store's own throughput");
            let store = crate::s3::Store::from_env(bucket, &args.s3_prefix)?;
            results.ceilings.extend(store.ceilings(&data, portcullis.client()).await?);
        }
        drop(data);
        blob_workloads(&sizes, run, &both, &redirecting, &mut results).await?;
    }
    if args.groups.contains(&Group::Skopeo) {
        skopeo_workloads(&sizes, run, &both, &args.scratch, &mut results).await?;
    }
    if args.groups.contains(&Group::Manifests) {
        let ceiling = match (&args.manifest_ceiling, args.manifest_ceiling_pid) {
            (Some(url), Some(pid)) => Some(Registry::new(CEILING, url, pid)?),
            _ => None,
        };
        manifest_workloads(&sizes, run, &portcullis, &distribution, ceiling.as_ref(), &key, &mut results).await?;

        progress(run, "cold verdicts");
        reset_peaks(&[&portcullis])?;
        let cold = gates::cold_verdicts(&portcullis, &key, run, sizes.cold_verdicts).await?;
        results.record("verdict_cold_p50", "cold verdict, signature + scan attestation verified: p50 (ms)", Better::Lower, PORTCULLIS, cold.p50_ms);
        results.record("verdict_cold_p99", "cold verdict, signature + scan attestation verified: p99 (ms)", Better::Lower, PORTCULLIS, cold.p99_ms);
        record_peaks(&mut results, "cold_verdicts", "cold verdicts", &[&portcullis])?;

        progress(run, "promotions");
        reset_peaks(&[&portcullis])?;
        let promotions = gates::promotions(&portcullis, &key, run, sizes.promotions, sizes.promotion_layers).await?;
        let label = format!("promotion of a {}-layer image", sizes.promotion_layers);
        results.record("promotion_p50", &format!("{label}: p50 (ms)"), Better::Lower, PORTCULLIS, promotions.p50_ms);
        results.record("promotion_p99", &format!("{label}: p99 (ms)"), Better::Lower, PORTCULLIS, promotions.p99_ms);
        record_peaks(&mut results, "promotions", "promotions", &[&portcullis])?;
    }
    if args.groups.contains(&Group::Parallel) {
        parallel_uploads(&sizes, run, &both, &mut results).await?;
    }
    if args.groups.contains(&Group::Evidence) {
        evidence_workloads(&sizes, run, &portcullis, &key, &mut results).await?;
    }
    if args.groups.contains(&Group::Log) {
        let (Some(url), Some(pid), Some(portcullis_log), Some(distribution_log)) =
            (&args.quiet_portcullis, args.quiet_portcullis_pid, &args.portcullis_log, &args.distribution_log)
        else {
            anyhow::bail!("the log group needs --quiet-portcullis, --quiet-portcullis-pid, --portcullis-log and --distribution-log");
        };
        let quiet = Registry::new(PORTCULLIS, url, pid)?;
        quiet.wait_ready(Duration::from_secs(30)).await?;
        let logs = [(&portcullis, portcullis_log.as_path()), (&distribution, distribution_log.as_path())];
        log_workloads(&sizes, run, &logs, &quiet, &mut results).await?;
    }

    if args.groups.contains(&Group::Proxy) {
        let (Some(url), Some(pid), Some(log)) = (&args.upstream, args.upstream_pid, &args.upstream_log) else {
            anyhow::bail!("the proxy group needs --upstream, --upstream-pid and --upstream-log");
        };
        let upstream = Registry::new(DISTRIBUTION, url, pid)?;
        upstream.wait_ready(Duration::from_secs(30)).await?;
        let image = crate::proxy::Image { n_layers: sizes.small_layers, layer_size: sizes.small_layer, words: format!("{}x{}", sizes.small_layers, human(sizes.small_layer)) };
        crate::proxy::workloads(&image, run, &both, &upstream, log, &args.scratch, &mut results).await?;
    }
    if args.groups.contains(&Group::Admission) {
        let (Some(url), Some(tls_dir)) = (&args.admission_portcullis, &args.tls_dir) else {
            anyhow::bail!("the admission group needs --admission-portcullis and --tls-dir");
        };
        let (n_containers, n_requests) = sizes.admission;
        progress(run, &format!("admission: {n_requests} reviews of {n_containers} containers per webhook"));
        let latencies = crate::admission::webhook_latency(&portcullis, &key, run, url, tls_dir, n_containers, n_requests).await?;
        let what = format!("admission review of {n_containers} containers by tag, cached verdicts");
        for (webhook, latency) in [("mutate", latencies.mutate), ("validate", latencies.validate)] {
            results.record(&format!("admission_{webhook}_p50"), &format!("{what}: {webhook} p50 (ms)"), Better::Lower, PORTCULLIS, latency.p50_ms);
            results.record(&format!("admission_{webhook}_p99"), &format!("{what}: {webhook} p99 (ms)"), Better::Lower, PORTCULLIS, latency.p99_ms);
        }
    }
    if args.groups.contains(&Group::Console) {
        console_pages(&sizes, run, &portcullis, &mut results).await?;
    }
    if args.groups.contains(&Group::Gc) {
        let (Some(bin), Some(portcullis_config), Some(distribution_config), Some(url), Some(pid)) =
            (&args.portcullis_bin, &args.portcullis_config, &args.distribution_config, &args.distribution_readonly, args.distribution_readonly_pid)
        else {
            anyhow::bail!("the gc group needs --portcullis-bin, --portcullis-config, --distribution-config, --distribution-readonly and --distribution-readonly-pid");
        };
        let readonly = Registry::new(DISTRIBUTION, url, pid)?;
        readonly.wait_ready(Duration::from_secs(30)).await?;
        let collectors = Collectors {
            portcullis: (&portcullis, bin, portcullis_config, args.portcullis_data.as_deref()),
            distribution: (&distribution, &readonly, distribution_config, args.distribution_data.as_deref()),
        };
        gc_workloads(&sizes, run, &collectors, &mut results).await?;
    }

    if args.groups.contains(&Group::Uploads) {
        let (Some(url), Some(pid)) = (&args.reference, args.reference_pid) else {
            anyhow::bail!("the uploads group needs --reference and --reference-pid");
        };
        let reference = crate::uploads::reference(url, pid)?;
        reference.wait_ready(Duration::from_secs(30)).await?;
        let mut servers = both.clone();
        // The reference goes first in odd runs and last in even ones, as the servers alternate.
        if run % 2 == 1 { servers.insert(0, &reference) } else { servers.push(&reference) }
        crate::uploads::workloads(sizes.blob, sizes.chunk, run, &servers, &mut results).await?;
    }

    if args.groups.contains(&Group::Conns) {
        crate::conns::workloads(sizes.idle_connections, sizes.warmup, sizes.window, run, &both, &mut results).await?;
    }

    if args.groups.contains(&Group::Tls) {
        let (Some(portcullis_url), Some(portcullis_pid), Some(distribution_url), Some(distribution_pid), Some(tls_dir)) =
            (&args.tls_portcullis, args.tls_portcullis_pid, &args.tls_distribution, args.tls_distribution_pid, &args.tls_dir)
        else {
            anyhow::bail!("the tls group needs --tls-portcullis, --tls-distribution (and their pids) and --tls-dir");
        };
        let ca_file = tls_dir.join("ca.crt");
        let tls_portcullis = crate::tls::twin(PORTCULLIS, portcullis_url, portcullis_pid, &ca_file)?;
        let tls_distribution = crate::tls::twin(DISTRIBUTION, distribution_url, distribution_pid, &ca_file)?;
        for registry in [&tls_portcullis, &tls_distribution] {
            registry.wait_ready(Duration::from_secs(30)).await?;
        }
        let mut pairs = vec![
            crate::tls::Pair { plain: &portcullis, tls: &tls_portcullis },
            crate::tls::Pair { plain: &distribution, tls: &tls_distribution },
        ];
        if run.is_multiple_of(2) {
            pairs.reverse();
        }
        progress(run, "tls: the loopback TLS ceiling");
        let data = crate::content::random_bytes(sizes.blob, gates::seed(run, 92, 0));
        results.ceilings.push(crate::tls::loopback_ceiling(&data, tls_dir)?);
        drop(data);
        crate::tls::workloads(sizes.blob, sizes.warmup, sizes.window, run, &ca_file, &pairs, &mut results).await?;
    }

    if args.groups.contains(&Group::Scale) {
        let (Some(bin), Some(config), Some(data_dir)) = (&args.portcullis_bin, &args.scale_config, &args.scale_data) else {
            anyhow::bail!("the scale group needs --portcullis-bin, --scale-config and --scale-data");
        };
        let start = crate::scale::Start { bin, config, data_dir };
        let (full, small, samples) = &sizes.scale;
        crate::scale::workloads(full, small, *samples, run, &start, &both, &mut results).await?;
    }

    results.save(&args.out)?;
    progress(run, &format!("done: {}", args.out.display()));
    Ok(())
}

pub(crate) fn progress(run: u32, what: &str) {
    eprintln!("==> run {run}: {what}");
}

fn reset_peaks(registries: &[&Registry]) -> anyhow::Result<()> {
    for registry in registries {
        memory::reset_peak(registry.pid)?;
    }
    Ok(())
}

fn record_peaks(results: &mut RunResults, key: &str, what: &str, registries: &[&Registry]) -> anyhow::Result<()> {
    for registry in registries {
        let label = format!("peak memory: {what} (MiB)");
        results.record(&format!("rss_peak_{key}"), &label, Better::Lower, registry.name, memory::peak_mib(registry.pid)?);
    }
    Ok(())
}

/// Monolithic and chunked uploads, and a download of the uploaded blob: from each server, and
/// through its redirecting twin when there is one.
async fn blob_workloads(sizes: &Sizes, run: u32, both: &[&Registry], redirecting: &[Registry], results: &mut RunResults) -> anyhow::Result<()> {
    let size = human(sizes.blob);
    for (index, &registry) in both.iter().enumerate() {
        let repo = format!("bench/blobs-{run}");
        progress(run, &format!("{}: upload {size} monolithic", registry.name));
        let data = crate::content::random_bytes(sizes.blob, gates::seed(run, 10, index));
        let digest = crate::content::sha256(&data);
        reset_peaks(&[registry])?;
        let elapsed = registry.upload_monolithic(&repo, data, &digest).await?;
        results.record("upload_mono", &format!("blob upload, {size} monolithic (MiB/s)"), Better::Higher, registry.name, mib_per_s(sizes.blob, elapsed));
        record_peaks(results, "upload_mono", &format!("blob upload {size} monolithic"), &[registry])?;

        progress(run, &format!("{}: download {size}", registry.name));
        reset_peaks(&[registry])?;
        let elapsed = registry.download(&repo, &digest, sizes.blob as u64).await?;
        results.record("download", &format!("blob download, {size} (MiB/s)"), Better::Higher, registry.name, mib_per_s(sizes.blob, elapsed));
        record_peaks(results, "download", &format!("blob download {size}"), &[registry])?;

        if let Some(twin) = redirecting.iter().find(|twin| twin.name == registry.name) {
            progress(run, &format!("{}: download {size} through a 307 to the store", registry.name));
            reset_peaks(&[twin])?;
            let elapsed = twin.download_redirected(&repo, &digest, sizes.blob as u64).await?;
            let label = format!("blob download, {size}, 307 to a presigned URL, followed (MiB/s)");
            results.record("download_redirect", &label, Better::Higher, twin.name, mib_per_s(sizes.blob, elapsed));
            record_peaks(results, "download_redirect", &format!("blob download {size} redirected"), &[twin])?;
        }

        progress(run, &format!("{}: upload {size} in {} chunks", registry.name, human(sizes.chunk)));
        let data = crate::content::random_bytes(sizes.blob, gates::seed(run, 11, index));
        let digest = crate::content::sha256(&data);
        reset_peaks(&[registry])?;
        let elapsed = registry.upload_chunked(&repo, data, &digest, sizes.chunk).await?;
        let label = format!("blob upload, {size} in {} PATCH chunks (MiB/s)", human(sizes.chunk));
        results.record("upload_chunked", &label, Better::Higher, registry.name, mib_per_s(sizes.blob, elapsed));
        record_peaks(results, "upload_chunked", &format!("blob upload {size} chunked"), &[registry])?;
    }
    Ok(())
}

/// skopeo pushes and pulls of a many-layer image and a one-big-layer image.
async fn skopeo_workloads(sizes: &Sizes, run: u32, both: &[&Registry], scratch: &std::path::Path, results: &mut RunResults) -> anyhow::Result<()> {
    let skopeo = Skopeo::new(scratch)?;
    let images = [
        ("many", sizes.small_layers, sizes.small_layer, format!("{}x{}", sizes.small_layers, human(sizes.small_layer))),
        ("big", 1, sizes.big_layer, format!("1x{}", human(sizes.big_layer))),
    ];
    for (name, n_layers, layer_size, words) in images {
        progress(run, &format!("skopeo: writing a {words} image layout"));
        let layout = scratch.join(format!("layout-{name}"));
        let _ = std::fs::remove_dir_all(&layout);
        images::write_layout(&layout, "v1", n_layers, layer_size, gates::seed(run, 20, n_layers))?;
        let source = format!("oci:{}:v1", layout.display());
        for &registry in both {
            let remote = format!("docker://{}/bench/skopeo-{name}-{run}:v1", registry.host());
            progress(run, &format!("{}: skopeo push {words}", registry.name));
            reset_peaks(&[registry])?;
            let elapsed = skopeo.copy(&source, &remote).await?;
            results.record(&format!("skopeo_push_{name}"), &format!("skopeo push, {words} layers (s)"), Better::Lower, registry.name, elapsed.as_secs_f64());
            record_peaks(results, &format!("skopeo_push_{name}"), &format!("skopeo push {words}"), &[registry])?;

            progress(run, &format!("{}: skopeo pull {words}", registry.name));
            let pulled = scratch.join(format!("pulled-{name}"));
            let _ = std::fs::remove_dir_all(&pulled);
            reset_peaks(&[registry])?;
            let elapsed = skopeo.copy(&remote, &format!("oci:{}:v1", pulled.display())).await?;
            results.record(&format!("skopeo_pull_{name}"), &format!("skopeo pull, {words} layers (s)"), Better::Lower, registry.name, elapsed.as_secs_f64());
            record_peaks(results, &format!("skopeo_pull_{name}"), &format!("skopeo pull {words}"), &[registry])?;
            std::fs::remove_dir_all(&pulled).with_context(|| format!("remove {}", pulled.display()))?;
        }
        std::fs::remove_dir_all(&layout)?;
    }
    Ok(())
}

/// Manifest GET and HEAD, by tag and by digest, at each concurrency: portcullis on an open
/// namespace, portcullis on a gated namespace with a cached passing verdict, Distribution, and
/// the `ceiling` server (when given) answering with the same manifest from memory.
async fn manifest_workloads(sizes: &Sizes, run: u32, portcullis: &Registry, distribution: &Registry, ceiling: Option<&Registry>, key: &Key, results: &mut RunResults) -> anyhow::Result<()> {
    progress(run, "manifests: pushing the image (and its evidence in the gated namespace)");
    // The same image everywhere, so every server answers with the same bytes.
    let seed = gates::seed(run, 30, 0);
    let digest = portcullis.push_image("bench/app", "v1", 5, 1024, seed).await?;
    anyhow::ensure!(distribution.push_image("bench/app", "v1", 5, 1024, seed).await? == digest, "the two registries stored different manifests");
    anyhow::ensure!(gates::signed_image(portcullis, key, "gated/app", "v1", 5, seed).await? == digest, "the gated image differs");
    let mut targets = vec![(portcullis, PORTCULLIS, "bench/app"), (portcullis, PORTCULLIS_GATED, "gated/app"), (distribution, DISTRIBUTION, "bench/app")];
    if let Some(ceiling) = ceiling {
        let res = portcullis.client().get(portcullis.url("/v2/bench/app/manifests/v1")).header("accept", MANIFEST_ACCEPT).send().await?;
        let media_type = res.headers().get(http::header::CONTENT_TYPE).cloned().context("the manifest has no Content-Type")?;
        let bytes = res.bytes().await?;
        let put = ceiling.client().put(ceiling.url("/")).header(http::header::CONTENT_TYPE, media_type).body(bytes).send().await?;
        anyhow::ensure!(put.status() == 201, "the ceiling server took the manifest with {}", put.status());
        targets.push((ceiling, CEILING, "bench/app"));
    }
    // Warm: the gated verdict is computed and cached here, before anything is measured.
    for (registry, _, repo) in &targets {
        let res = registry.client().get(registry.url(&format!("/v2/{repo}/manifests/v1"))).header("accept", MANIFEST_ACCEPT).send().await?;
        anyhow::ensure!(res.status() == 200, "{}: GET {repo}:v1 answered {}", registry.name, res.status());
    }
    reset_peaks(&[portcullis, distribution])?;
    for method in [http::Method::GET, http::Method::HEAD] {
        for (by, reference) in [("tag", "v1"), ("digest", digest.as_str())] {
            for &concurrency in &sizes.concurrencies {
                progress(run, &format!("manifests: {method} by {by}, concurrency {concurrency}"));
                let row = format!("manifest_{}_{by}_c{concurrency}", method.as_str().to_lowercase());
                let what = format!("manifest {method} by {by}, c={concurrency}");
                for (registry, column, repo) in &targets {
                    let spec = load::Spec { method: method.clone(), path: format!("/v2/{repo}/manifests/{reference}"), accept: MANIFEST_ACCEPT.to_owned() };
                    let outcome = load::run(registry.addr, &spec, concurrency, sizes.warmup, sizes.window)
                        .await
                        .with_context(|| format!("{column}: {what}"))?;
                    results.record(&format!("{row}_rps"), &format!("{what} (req/s)"), Better::Higher, column, outcome.requests_per_s);
                    results.record(&format!("{row}_p50"), &format!("{what}: p50 (ms)"), Better::Lower, column, outcome.p50_ms);
                    results.record(&format!("{row}_p99"), &format!("{what}: p99 (ms)"), Better::Lower, column, outcome.p99_ms);
                }
            }
        }
    }
    record_peaks(results, "manifests", "manifest load", &[portcullis, distribution])
}

/// The request log: bytes of log per manifest GET on portcullis and Distribution (each logging
/// at info to a file, as they do by default), and portcullis's manifest GET throughput with its
/// request log on (info) and off (`RUST_LOG=warn`: a second server started alike), measured one
/// after the other in the same run (which of the two goes first alternates with the run).
async fn log_workloads(sizes: &Sizes, run: u32, logs: &[(&Registry, &std::path::Path); 2], quiet: &Registry, results: &mut RunResults) -> anyhow::Result<()> {
    progress(run, "log: pushing the image");
    let seed = gates::seed(run, 50, 0);
    let digest = logs[0].0.push_image("bench/log", "v1", 5, 1024, seed).await?;
    for registry in [logs[1].0, quiet] {
        anyhow::ensure!(registry.push_image("bench/log", "v1", 5, 1024, seed).await? == digest, "{} stored a different manifest", registry.name);
    }
    let spec = load::Spec { method: http::Method::GET, path: "/v2/bench/log/manifests/v1".to_owned(), accept: MANIFEST_ACCEPT.to_owned() };
    let log_size = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.len()).with_context(|| format!("size of {}", path.display()));
    // Log bytes and requests answered, per logging server, over every cell.
    let mut volume = [(0_u64, 0_usize); 2];
    for &concurrency in &sizes.concurrencies {
        progress(run, &format!("log: manifest GET, concurrency {concurrency}"));
        let what = format!("manifest GET by tag, c={concurrency}");
        // None: the quiet portcullis; Some(i): logs[i].
        let order = if run % 2 == 1 { [Some(0), None, Some(1)] } else { [None, Some(0), Some(1)] };
        for target in order {
            let registry = target.map_or(quiet, |index| logs[index].0);
            let before = target.map(|index| log_size(logs[index].1)).transpose()?;
            let outcome = load::run(registry.addr, &spec, concurrency, sizes.warmup, sizes.window).await?;
            match target {
                Some(index) => {
                    volume[index].0 += log_size(logs[index].1)? - before.unwrap_or_default();
                    volume[index].1 += outcome.requests;
                    results.record(&format!("log_info_c{concurrency}_rps"), &format!("{what}, request log at info (req/s)"), Better::Higher, registry.name, outcome.requests_per_s);
                }
                None => results.record(&format!("log_warn_c{concurrency}_rps"), &format!("{what}, log at warn: no request log (req/s)"), Better::Higher, PORTCULLIS, outcome.requests_per_s),
            }
        }
        let rps = |key: &str| results.value(&format!("{key}_c{concurrency}_rps"), PORTCULLIS).unwrap_or(f64::NAN);
        let cost = rps("log_info") / rps("log_warn");
        results.record(&format!("log_cost_c{concurrency}"), &format!("{what}: req/s with the request log / without"), Better::Higher, PORTCULLIS, cost);
    }
    for (index, (registry, _)) in logs.iter().enumerate() {
        let (bytes, requests) = volume[index];
        results.record("log_bytes_per_request", "request log per manifest GET (bytes)", Better::Lower, registry.name, bytes as f64 / requests.max(1) as f64);
    }
    Ok(())
}

/// Many uploads in flight at once, each one `PATCH` of the whole size; the sessions are cancelled
/// afterwards, so the disk holds them only while they run.
async fn parallel_uploads(sizes: &Sizes, run: u32, both: &[&Registry], results: &mut RunResults) -> anyhow::Result<()> {
    let words = format!("{} concurrent uploads of {}", sizes.parallel_uploads, human(sizes.parallel_upload));
    let body = crate::content::random_bytes(sizes.parallel_upload, gates::seed(run, 40, 0));
    for &registry in both {
        progress(run, &format!("{}: {words}", registry.name));
        let repo = format!("bench/parallel-{run}");
        let mut locations = Vec::with_capacity(sizes.parallel_uploads);
        for _ in 0..sizes.parallel_uploads {
            locations.push(registry.start_upload(&repo).await?);
        }
        reset_peaks(&[registry])?;
        let started = std::time::Instant::now();
        let patches = locations.iter().map(|location| registry.patch(location, Bytes::clone(&body), 0));
        let next_locations = futures::future::try_join_all(patches).await?;
        let elapsed = started.elapsed();
        record_peaks(results, "parallel_uploads", &words, &[registry])?;
        let total = sizes.parallel_uploads * sizes.parallel_upload;
        results.record("parallel_uploads", &format!("{words}, aggregate (MiB/s)"), Better::Higher, registry.name, mib_per_s(total, elapsed));
        for location in next_locations {
            registry.cancel_upload(&location).await?;
        }
    }
    Ok(())
}

/// The console's pages with `sizes.console.0` repositories, one request at a time. portcullis only.
async fn console_pages(sizes: &Sizes, run: u32, portcullis: &Registry, results: &mut RunResults) -> anyhow::Result<()> {
    let (n_repos, samples) = sizes.console;
    progress(run, &format!("console: filling {n_repos} repositories"));
    let started = std::time::Instant::now();
    let (tagged, digest) = crate::console::fill(portcullis, n_repos).await?;
    progress(run, &format!("console: filled in {:.1} s; timing pages", started.elapsed().as_secs_f64()));
    for page in crate::console::pages(portcullis, n_repos, &tagged, &digest, samples).await? {
        let row = format!("console_{}", page.key);
        results.record(&format!("{row}_p50"), &format!("{}: p50 (ms)", page.what), Better::Lower, PORTCULLIS, page.latencies.p50_ms);
        results.record(&format!("{row}_p99"), &format!("{}: p99 (ms)", page.what), Better::Lower, PORTCULLIS, page.latencies.p99_ms);
    }
    Ok(())
}

/// Gated pulls with and without a flood of junk referrers (the verdict cached), and concurrent
/// verdicts of images whose referrers name far more evidence than a verdict reads: of one image
/// (they share one computation) and of as many images (they do not). portcullis only.
async fn evidence_workloads(sizes: &Sizes, run: u32, portcullis: &Registry, key: &Key, results: &mut RunResults) -> anyhow::Result<()> {
    let concurrency = 16;
    for n_junk in [0, sizes.junk_referrers] {
        progress(run, &format!("evidence: gated GET by digest, {n_junk} junk referrers, concurrency {concurrency}"));
        let outcome = gates::flooded_pulls(portcullis, key, run, n_junk, concurrency, sizes.warmup, sizes.window).await?;
        let row = format!("flood_{n_junk}_get");
        let what = format!("gated manifest GET by digest, c={concurrency}, {n_junk} junk referrers");
        results.record(&format!("{row}_rps"), &format!("{what} (req/s)"), Better::Higher, PORTCULLIS, outcome.requests_per_s);
        results.record(&format!("{row}_p50"), &format!("{what}: p50 (ms)"), Better::Lower, PORTCULLIS, outcome.p50_ms);
        results.record(&format!("{row}_p99"), &format!("{what}: p99 (ms)"), Better::Lower, PORTCULLIS, outcome.p99_ms);
    }
    for (row, n_images) in [("heavy_one", 1), ("heavy_many", sizes.heavy_verdicts)] {
        let images = if n_images == 1 { "one image".to_owned() } else { format!("{n_images} images") };
        let what = format!("{} concurrent verdicts of {images} with {}", sizes.heavy_verdicts, sizes.heavy_words());
        progress(run, &format!("evidence: {what}"));
        let (peak, elapsed) = gates::heavy_verdicts(portcullis, key, run, n_images, sizes.heavy, sizes.heavy_verdicts).await?;
        results.record(&format!("rss_peak_{row}"), &format!("peak memory: {what} (MiB)"), Better::Lower, PORTCULLIS, peak);
        results.record(&format!("{row}_time"), &format!("{what}: all answered (ms)"), Better::Lower, PORTCULLIS, elapsed.as_secs_f64() * 1000.0);
    }
    Ok(())
}

/// The two sides of the gc group: portcullis (the server, its binary, its configuration, its
/// data directory on the filesystem) and Distribution (the server that takes the pushes, its
/// read-only twin on the same store, its configuration, its root directory).
struct Collectors<'a> {
    portcullis: (&'a Registry, &'a std::path::Path, &'a std::path::Path, Option<&'a std::path::Path>),
    distribution: (&'a Registry, &'a Registry, &'a std::path::Path, Option<&'a std::path::Path>),
}

/// Garbage collection side by side (see `collection`): the same content pushed to both, half the
/// manifests deleted, then `portcullis gc` beside the serving server and Distribution's
/// `garbage-collect` with its registry stopped, each while a manifest GET load runs against the
/// server that serves reads (portcullis itself, Distribution's read-only twin); both checked after.
async fn gc_workloads(sizes: &Sizes, run: u32, sides: &Collectors<'_>, results: &mut RunResults) -> anyhow::Result<()> {
    let content = sizes.gc;
    let (portcullis, portcullis_bin, portcullis_config, portcullis_data) = sides.portcullis;
    let (distribution, readonly, distribution_config, distribution_data) = sides.distribution;
    let order = if run % 2 == 1 { [portcullis, distribution] } else { [distribution, portcullis] };
    let seed = gates::seed(run, 60, 0);
    let mut images = Vec::new();
    for registry in order {
        progress(run, &format!("{}: gc: pushing {} manifests and {} blobs", registry.name, content.manifests, content.blobs()));
        let started = std::time::Instant::now();
        let pushed = collection::fill(registry, content, seed).await?;
        let label = format!("gc content: push {} manifests and {} blobs, {} images at once (s)", content.manifests, content.blobs(), collection::IN_FLIGHT);
        results.record("gc_push", &label, Better::Lower, registry.name, started.elapsed().as_secs_f64());
        anyhow::ensure!(images.is_empty() || images == pushed, "the two registries were given different content");
        images = pushed;
        let started = std::time::Instant::now();
        collection::delete_half(registry, &images).await?;
        let label = format!("gc content: delete {} manifests through the API (s)", content.manifests / 2);
        results.record("gc_delete", &label, Better::Lower, registry.name, started.elapsed().as_secs_f64());
    }
    // Past portcullis's grace (1 s in this group's configuration), so the deleted content is old enough.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (expected_blobs, expected_bytes) = collection::expected_removal(&images);
    let kept = images.first().context("no images pushed")?;
    let spec = load::Spec { method: http::Method::GET, path: format!("/v2/{}/manifests/{}", kept.repo, kept.tag), accept: MANIFEST_ACCEPT.to_owned() };
    let what = format!("manifest GET by tag, c={GC_LOAD}");
    let data_dirs = [(PORTCULLIS, portcullis_data), (DISTRIBUTION, distribution_data)];
    let mut before = Vec::new();
    for (name, dir) in data_dirs {
        if let Some(dir) = dir {
            before.push((name, collection::disk_usage(dir)?));
        }
    }

    for registry in order {
        let collect_portcullis = registry.name == PORTCULLIS;
        // Distribution's reads come from its read-only twin; the registry that took the pushes
        // is stopped, as garbage-collect requires.
        let server = if collect_portcullis { portcullis } else { readonly };
        if !collect_portcullis {
            collection::stop(distribution.pid).await?;
        }
        progress(run, &format!("{}: gc: {what} without collection", registry.name));
        let idle = load::run(server.addr, &spec, GC_LOAD, sizes.warmup, sizes.window).await?;
        progress(run, &format!("{}: gc: collecting while {what} runs", registry.name));
        let (during, collected) = if collect_portcullis {
            load::run_beside(server.addr, &spec, GC_LOAD, collection::portcullis_gc(portcullis_bin, portcullis_config)).await
        } else {
            load::run_beside(server.addr, &spec, GC_LOAD, collection::distribution_gc(distribution_config)).await
        };
        let collected = collected?;
        let during = during.with_context(|| format!("{}: {what} during collection", registry.name))?;
        progress(run, &format!("{}: gc: collected {} blobs in {:.1} s; checking what is left", registry.name, collected.blobs, collected.elapsed.as_secs_f64()));
        collection::verify(server, &images).await?;
        anyhow::ensure!(
            collected.blobs == expected_blobs,
            "{}: the collector removed {} blobs; the deleted manifests had {expected_blobs} (with themselves)",
            registry.name,
            collected.blobs
        );
        if let Some(bytes) = collected.bytes {
            anyhow::ensure!(bytes == expected_bytes, "{}: the collector reclaimed {bytes} bytes; the deleted content is {expected_bytes}", registry.name);
            results.record("gc_reported_mib", "gc: content reclaimed, by the collector's report (MiB)", Better::Higher, registry.name, bytes as f64 / MIB as f64);
        }
        let label = "gc: time to collect (s): portcullis gc while serving; Distribution garbage-collect, its registry stopped";
        results.record("gc_time", label, Better::Lower, registry.name, collected.elapsed.as_secs_f64());
        if let Some(pass) = collected.pass {
            results.record("gc_pass", "gc: the pass alone, by portcullis gc's report (s)", Better::Lower, registry.name, pass.as_secs_f64());
        }
        results.record("gc_blobs", "gc: blobs removed (manifests included), by the collector's report", Better::Higher, registry.name, collected.blobs as f64);
        results.record("gc_rps_idle", &format!("gc: {what}, no collection (req/s)"), Better::Higher, registry.name, idle.requests_per_s);
        results.record("gc_rps_during", &format!("gc: {what}, during collection (req/s)"), Better::Higher, registry.name, during.requests_per_s);
        results.record("gc_p99_during", &format!("gc: {what}, during collection: p99 (ms)"), Better::Lower, registry.name, during.p99_ms);
        results.record("gc_rps_share", &format!("gc: {what}: req/s during collection / without"), Better::Higher, registry.name, during.requests_per_s / idle.requests_per_s);
    }

    for (name, used) in before {
        let dir = data_dirs.iter().find_map(|(side, dir)| dir.filter(|_| *side == name)).context("data directory")?;
        let after = collection::disk_usage(dir)?;
        results.record("gc_du_before", "gc: store on disk before collection (MiB, du)", Better::Lower, name, used as f64 / MIB as f64);
        results.record("gc_du_reclaimed", "gc: store on disk reclaimed (MiB, du before - after)", Better::Higher, name, used.saturating_sub(after) as f64 / MIB as f64);
    }
    Ok(())
}
