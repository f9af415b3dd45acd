//! Closed-loop request load: `concurrency` workers, each with its own keep-alive connection
//! (hyper's client connection, no pool; plain HTTP/1.1, or TLS with HTTP/2 or HTTP/1.1 as ALPN
//! settles it), each sending the next request as soon as the
//! previous response has been read to its end, for a fixed window or for as long as another piece
//! of work runs beside it. Requests that start during the warm-up are not counted; every counted
//! latency is kept, so p50 and p99 are exact.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

/// One request, sent again and again.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// `GET` or `HEAD`.
    pub(crate) method: http::Method,
    /// Path and query.
    pub(crate) path: String,
    /// `Accept` header.
    pub(crate) accept: String,
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Completed requests per second in the measured window.
    pub(crate) requests_per_s: f64,
    /// Median latency, milliseconds.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub(crate) p99_ms: f64,
    /// Every request answered, warm-up included (what the server logged).
    pub(crate) requests: usize,
}

/// How workers reach the server.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Plain TCP, HTTP/1.1.
    Plain,
    /// TLS with this client configuration; its ALPN protocols decide HTTP/2 or HTTP/1.1, and the
    /// server must pick the first.
    Tls(Arc<rustls::ClientConfig>),
}

/// Runs `spec` against `addr` with `concurrency` workers for `warmup + duration`.
pub(crate) async fn run(addr: SocketAddr, spec: &Spec, concurrency: usize, warmup: Duration, duration: Duration) -> anyhow::Result<Outcome> {
    run_over(addr, &Transport::Plain, spec, concurrency, warmup, duration).await
}

/// [`run`] over `transport`.
pub(crate) async fn run_over(addr: SocketAddr, transport: &Transport, spec: &Spec, concurrency: usize, warmup: Duration, duration: Duration) -> anyhow::Result<Outcome> {
    let measure_from = Instant::now() + warmup;
    let deadline = measure_from + duration;
    drive(addr, transport, spec, concurrency, measure_from, End::At(deadline), deadline).await
}

/// Runs `spec` against `addr` with `concurrency` workers while `work` runs (from its start to
/// its end, no warm-up), and returns what each gave.
pub(crate) async fn run_beside<T>(addr: SocketAddr, spec: &Spec, concurrency: usize, work: impl Future<Output = T>) -> (anyhow::Result<Outcome>, T) {
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load = drive(addr, &Transport::Plain, spec, concurrency, started, End::When(done.clone()), started);
    let work = async {
        let output = work.await;
        done.store(true, Ordering::Relaxed);
        output
    };
    tokio::join!(load, work)
}

/// When the workers stop starting requests.
#[derive(Clone)]
enum End {
    /// At this instant.
    At(Instant),
    /// When this flag is set.
    When(Arc<AtomicBool>),
}

impl End {
    fn reached(&self) -> bool {
        match self {
            End::At(deadline) => Instant::now() >= *deadline,
            End::When(done) => done.load(Ordering::Relaxed),
        }
    }
}

/// The workers of a run measuring from `measure_from` until `end`; the window ends with the
/// last worker's last request, and not before `earliest_end`.
async fn drive(addr: SocketAddr, transport: &Transport, spec: &Spec, concurrency: usize, measure_from: Instant, end: End, earliest_end: Instant) -> anyhow::Result<Outcome> {
    let spec = Arc::new(spec.clone());
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let spec = spec.clone();
        let end = end.clone();
        let transport = transport.clone();
        workers.push(tokio::spawn(async move { worker(addr, &transport, &spec, measure_from, &end).await }));
    }
    let mut latencies_us: Vec<u32> = Vec::new();
    let mut finished = earliest_end;
    let mut requests = 0;
    for worker in workers {
        let (latencies, worker_requests, worker_finished) = worker.await.context("load worker panicked")??;
        latencies_us.extend(latencies);
        requests += worker_requests;
        finished = finished.max(worker_finished);
    }
    latencies_us.sort_unstable();
    // Workers finish the request they are in at the end, so the window ends with the last one.
    let window = finished.duration_since(measure_from);
    Ok(Outcome {
        requests_per_s: latencies_us.len() as f64 / window.as_secs_f64(),
        p50_ms: percentile(&latencies_us, 0.50),
        p99_ms: percentile(&latencies_us, 0.99),
        requests,
    })
}

/// The `q` quantile of sorted microseconds, in milliseconds (nearest rank).
fn percentile(sorted_us: &[u32], q: f64) -> f64 {
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

/// One connection's loop; returns the latencies of requests that started in the measured window,
/// how many requests it sent in all, and when its last request finished. A worker measures at
/// least one request, however slow the server: with a slow store (moto) a request may take
/// longer than the whole window.
async fn worker(addr: SocketAddr, transport: &Transport, spec: &Spec, measure_from: Instant, end: &End) -> anyhow::Result<(Vec<u32>, usize, Instant)> {
    let (mut sender, connection) = connect(addr, transport).await?;
    let host = addr.to_string();
    // HTTP/2 names the target in pseudo-headers, taken from an absolute URI.
    let uri = match sender {
        Sender::Http1(_) => spec.path.clone(),
        Sender::Http2(_) => format!("https://{host}{}", spec.path),
    };
    let mut latencies = Vec::new();
    let mut requests = 0;
    loop {
        let started = Instant::now();
        if end.reached() && !latencies.is_empty() {
            break;
        }
        let request = http::Request::builder()
            .method(spec.method.clone())
            .uri(uri.as_str())
            .header(http::header::HOST, host.as_str())
            .header(http::header::ACCEPT, spec.accept.as_str())
            .body(Empty::new())?;
        let response = sender.send(request).await.with_context(|| format!("{} {}", spec.method, spec.path))?;
        let status = response.status();
        // Read the body to its end: the request is done when the client has the manifest.
        response.into_body().collect().await?;
        anyhow::ensure!(status == http::StatusCode::OK, "{} {} answered {status}", spec.method, spec.path);
        requests += 1;
        if started >= measure_from || end.reached() {
            latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
    }
    let finished = Instant::now();
    drop(sender);
    let _ = connection.await;
    Ok((latencies, requests, finished))
}

/// A client connection, by protocol.
pub(crate) enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Sends `request` when the connection is ready for it.
    pub(crate) async fn send(&mut self, request: http::Request<Empty<Bytes>>) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        Ok(match self {
            Sender::Http1(sender) => {
                sender.ready().await.context("connection closed")?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await.context("connection closed")?;
                sender.send_request(request).await?
            }
        })
    }
}

/// Connects to `addr` over `transport`; the sender, and the task driving the connection.
pub(crate) async fn connect(addr: SocketAddr, transport: &Transport) -> anyhow::Result<(Sender, tokio::task::JoinHandle<()>)> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let Transport::Tls(config) = transport else {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        return Ok((Sender::Http1(sender), tokio::spawn(async move {
            let _ = connection.await;
        })));
    };
    let server_name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(config.clone()).connect(server_name, stream).await.with_context(|| format!("TLS handshake with {addr}"))?;
    let wanted = config.alpn_protocols.first().map(Vec::as_slice);
    let chosen = stream.get_ref().1.alpn_protocol();
    anyhow::ensure!(chosen == wanted, "{addr} chose ALPN {:?}, asked for {:?}", chosen.map(String::from_utf8_lossy), wanted.map(String::from_utf8_lossy));
    if chosen == Some(b"h2".as_slice()) {
        let (sender, connection) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream)).await?;
        return Ok((Sender::Http2(sender), tokio::spawn(async move {
            let _ = connection.await;
        })));
    }
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    Ok((Sender::Http1(sender), tokio::spawn(async move {
            let _ = connection.await;
        })))
}
