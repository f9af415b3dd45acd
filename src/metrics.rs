//! Prometheus metrics: one registry of counters, gauges and histograms, rendered at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry as PromRegistry,
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
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = PromRegistry::new_custom(Some("portcullis".to_owned()), None)
            .expect("a static prefix is a valid metrics namespace");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by endpoint, method and status"),
            &["endpoint", "method", "status"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time to the response head, by endpoint").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
            ]),
            &["endpoint"],
        )
        .expect("static metric definition");
        let bytes_received = IntCounter::new("blob_bytes_received_total", "Blob bytes received").expect("static metric definition");
        let bytes_sent = IntCounter::new("http_bytes_sent_total", "Response body bytes sent").expect("static metric definition");
        let upload_sessions = IntGauge::new("upload_sessions_open", "Upload sessions held by this process").expect("static metric definition");
        let storage_errors = IntCounter::new("storage_errors_total", "Requests failed by the object store").expect("static metric definition");
        let verdicts_computed = IntCounter::new("verdicts_computed_total", "Verdicts computed rather than answered from the cache")
            .expect("static metric definition");
        let evidence_bytes_read = IntCounter::new("evidence_bytes_read_total", "Evidence bytes read from the store for verdicts")
            .expect("static metric definition");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(bytes_received.clone()),
            Box::new(bytes_sent.clone()),
            Box::new(upload_sessions.clone()),
            Box::new(storage_errors.clone()),
            Box::new(verdicts_computed.clone()),
            Box::new(evidence_bytes_read.clone()),
        ] {
            registry.register(collector).expect("each metric is registered once");
        }
        Metrics {
            registry,
            requests,
            latency,
            bytes_received,
            bytes_sent,
            upload_sessions,
            storage_errors,
            verdicts_computed,
            evidence_bytes_read,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
