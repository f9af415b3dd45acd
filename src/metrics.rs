//! Prometheus metrics: one registry of counters, gauges and histograms, rendered at `/metrics`.
//! A new metric is one field and one line in [`Metrics::new`]: each is made and registered by
//! the same call, so none can be defined and forgotten.

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry as PromRegistry,
    TextEncoder,
};

/// The metrics of one server.
pub struct Metrics {
    registry: PromRegistry,
    /// Requests by endpoint, method and status.
    pub requests: IntCounterVec,
    /// Request latency by endpoint, until the response head is sent.
    pub latency: HistogramVec,
    /// Blob bytes received in uploads.
    pub bytes_received: IntCounter,
    /// Body bytes sent, as announced by `Content-Length`.
    pub bytes_sent: IntCounter,
    /// Upload sessions this process holds state for.
    pub upload_sessions: IntGauge,
    /// Storage operations that failed (5xx answers caused by the store).
    pub storage_errors: IntCounter,
    /// Verdicts computed (not answered from the cache), each reading and verifying evidence.
    pub verdicts_computed: IntCounter,
    /// Evidence bytes read from the store while computing verdicts.
    pub evidence_bytes_read: IntCounter,
    /// Configuration reloads by outcome (`applied`, `refused`).
    pub config_reloads: IntCounterVec,
    /// Proxied pulls answered from the cache, by upstream and kind (`manifest`, `tag`, `blob`).
    pub proxy_hits: IntCounterVec,
    /// Proxied pulls that needed the upstream, by upstream and kind.
    pub proxy_misses: IntCounterVec,
    /// Time to an upstream's response head, by upstream.
    pub proxy_upstream_latency: HistogramVec,
    /// Bytes fetched from upstreams (manifests and blobs), by upstream.
    pub proxy_upstream_bytes: IntCounterVec,
    /// Failed upstream requests by upstream and kind (`unavailable`, `refused`, `invalid`).
    pub proxy_upstream_errors: IntCounterVec,
    /// Tags served from the cache while their upstream was failing, by upstream.
    pub proxy_stale_serves: IntCounterVec,
    /// Upstream tags seen moving to another digest, by upstream and action (`follow`, `hold`).
    pub proxy_tag_moves: IntCounterVec,
    /// Bytes of proxied content cached, by upstream (as this process counts it).
    pub proxy_cache_bytes: IntGaugeVec,
    /// Bytes evicted from the cache by the size cap, by upstream.
    pub proxy_evicted_bytes: IntCounterVec,
    /// Admission reviews answered, by webhook (`mutate`, `validate`) and outcome (`allowed`,
    /// `warned`, `refused`).
    pub admission_reviews: IntCounterVec,
    /// Admitted digests failing their gate now (drift rows).
    pub admission_drift_digests: IntGauge,
    /// Admitted digests seen turning to failing.
    pub admission_drift_detected: IntCounter,
    /// Garbage-collection passes by outcome (`done`, `failed`).
    pub gc_passes: IntCounterVec,
    /// Objects removed by garbage collection, by kind (tags, links, content; upload sessions the
    /// janitor purged as `upload_session`).
    pub gc_removed_objects: IntCounterVec,
    /// Content bytes reclaimed by garbage collection.
    pub gc_removed_bytes: IntCounter,
    /// Duration of garbage-collection passes.
    pub gc_pass_duration: prometheus::Histogram,
    /// Scrub passes by outcome (`done`, `failed`).
    pub scrub_passes: IntCounterVec,
    /// Objects scrub hashed.
    pub scrub_checked_objects: IntCounter,
    /// Bytes scrub hashed.
    pub scrub_checked_bytes: IntCounter,
    /// Content found not to match its digest (by scrub or a manifest read), by kind (`blob`,
    /// `manifest`).
    pub scrub_corrupt: IntCounterVec,
    /// Duration of scrub passes.
    pub scrub_pass_duration: prometheus::Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = PromRegistry::new_custom(Some("portcullis".to_owned()), None)
            .expect("a static prefix is a valid metrics namespace");
        let latency_buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];
        Metrics {
            requests: register(&registry, IntCounterVec::new(Opts::new("http_requests_total", "HTTP requests by endpoint, method and status"), &["endpoint", "method", "status"])),
            latency: register(&registry, HistogramVec::new(HistogramOpts::new("http_request_duration_seconds", "Time to the response head, by endpoint").buckets(latency_buckets.clone()), &["endpoint"])),
            bytes_received: register(&registry, IntCounter::new("blob_bytes_received_total", "Blob bytes received")),
            bytes_sent: register(&registry, IntCounter::new("http_bytes_sent_total", "Response body bytes sent")),
            upload_sessions: register(&registry, IntGauge::new("upload_sessions_open", "Upload sessions held by this process")),
            storage_errors: register(&registry, IntCounter::new("storage_errors_total", "Requests failed by the object store")),
            verdicts_computed: register(&registry, IntCounter::new("verdicts_computed_total", "Verdicts computed rather than answered from the cache")),
            evidence_bytes_read: register(&registry, IntCounter::new("evidence_bytes_read_total", "Evidence bytes read from the store for verdicts")),
            config_reloads: register(&registry, IntCounterVec::new(Opts::new("config_reloads_total", "Configuration reloads (SIGHUP) by outcome"), &["outcome"])),
            proxy_hits: register(&registry, IntCounterVec::new(Opts::new("proxy_hits_total", "Proxied pulls answered from the cache"), &["upstream", "kind"])),
            proxy_misses: register(&registry, IntCounterVec::new(Opts::new("proxy_misses_total", "Proxied pulls that needed the upstream"), &["upstream", "kind"])),
            proxy_upstream_latency: register(&registry, HistogramVec::new(HistogramOpts::new("proxy_upstream_duration_seconds", "Time to an upstream's response head").buckets(latency_buckets.clone()), &["upstream"])),
            proxy_upstream_bytes: register(&registry, IntCounterVec::new(Opts::new("proxy_upstream_bytes_total", "Bytes fetched from upstreams"), &["upstream"])),
            proxy_upstream_errors: register(&registry, IntCounterVec::new(Opts::new("proxy_upstream_errors_total", "Failed upstream requests"), &["upstream", "kind"])),
            proxy_stale_serves: register(&registry, IntCounterVec::new(Opts::new("proxy_stale_serves_total", "Tags served from the cache while the upstream failed"), &["upstream"])),
            proxy_tag_moves: register(&registry, IntCounterVec::new(Opts::new("proxy_tag_moves_total", "Upstream tags that moved to another digest"), &["upstream", "action"])),
            proxy_cache_bytes: register(&registry, IntGaugeVec::new(Opts::new("proxy_cache_bytes", "Bytes of proxied content cached"), &["upstream"])),
            proxy_evicted_bytes: register(&registry, IntCounterVec::new(Opts::new("proxy_evicted_bytes_total", "Bytes evicted by the cache size cap"), &["upstream"])),
            admission_reviews: register(&registry, IntCounterVec::new(Opts::new("admission_reviews_total", "Admission reviews answered, by webhook and outcome"), &["webhook", "outcome"])),
            admission_drift_digests: register(&registry, IntGauge::new("admission_drift_digests", "Admitted digests whose verdict fails now")),
            admission_drift_detected: register(&registry, IntCounter::new("admission_drift_detected_total", "Admitted digests seen turning to failing")),
            gc_passes: register(&registry, IntCounterVec::new(Opts::new("gc_passes_total", "Garbage-collection passes by outcome"), &["outcome"])),
            gc_removed_objects: register(&registry, IntCounterVec::new(Opts::new("gc_removed_objects_total", "Objects removed by garbage collection, by kind"), &["kind"])),
            gc_removed_bytes: register(&registry, IntCounter::new("gc_removed_bytes_total", "Content bytes reclaimed by garbage collection")),
            gc_pass_duration: register(&registry, prometheus::Histogram::with_opts(HistogramOpts::new("gc_pass_duration_seconds", "Duration of garbage-collection passes").buckets(vec![0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0]))),
            scrub_passes: register(&registry, IntCounterVec::new(Opts::new("scrub_passes_total", "Scrub passes by outcome"), &["outcome"])),
            scrub_checked_objects: register(&registry, IntCounter::new("scrub_checked_objects_total", "Stored objects scrub hashed")),
            scrub_checked_bytes: register(&registry, IntCounter::new("scrub_checked_bytes_total", "Stored bytes scrub hashed")),
            scrub_corrupt: register(&registry, IntCounterVec::new(Opts::new("scrub_corrupt_total", "Stored content found not to match its digest, by kind"), &["kind"])),
            scrub_pass_duration: register(&registry, prometheus::Histogram::with_opts(HistogramOpts::new("scrub_pass_duration_seconds", "Duration of scrub passes").buckets(vec![1.0, 10.0, 60.0, 600.0, 3600.0, 21600.0, 86400.0]))),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Registers a metric made from a static definition.
fn register<M: Collector + Clone + 'static>(registry: &PromRegistry, metric: prometheus::Result<M>) -> M {
    let metric = metric.expect("static metric definition");
    registry.register(Box::new(metric.clone())).expect("each metric is registered once");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
