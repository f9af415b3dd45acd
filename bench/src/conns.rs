//! Idle keep-alive connections (issue #20 goal 5, group `conns`): many clients that connected,
//! made a request and stay connected doing nothing, as a fleet of nodes pulling now and then does.
//! For each server: resident memory before and after opening them (memory per connection), and
//! the manifest load at c=64 beside them against the same load without them (measured before
//! and after, the mean taken). Every idle connection must still answer afterwards, or the run says
//! how many the server closed.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};

use crate::load;
use crate::memory;
use crate::registry::{Registry, MANIFEST_ACCEPT};
use crate::results::{Better, RunResults};

/// Concurrency of the manifest load beside the idle connections.
const LOAD: usize = 64;
/// Connections opened at once while filling.
const OPENING: usize = 64;

/// Measures `n_idle` idle connections on each of `servers`, with the manifest load for `window`
/// after `warmup`.
pub(crate) async fn workloads(n_idle: usize, warmup: Duration, window: Duration, run: u32, servers: &[&Registry], results: &mut RunResults) -> anyhow::Result<()> {
    let seed = crate::gates::seed(run, 80, 0);
    let what = format!("{n_idle} idle keep-alive connections");
    for &server in servers {
        server.push_image("bench/conns", "v1", 5, 1024, seed).await?;
        let spec = load::Spec { method: http::Method::GET, path: "/v2/bench/conns/manifests/v1".to_owned(), accept: MANIFEST_ACCEPT.to_owned() };
        crate::workloads::progress(run, &format!("conns: {}: manifest load at c={LOAD} without idle connections", server.name));
        let before = load::run(server.addr, &spec, LOAD, warmup, window).await?;
        // Let the load's connections go before the memory is read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_before = memory::rss_mib(server.pid)?;
        crate::workloads::progress(run, &format!("conns: {}: opening {what}", server.name));
        let idle = open(server.addr, n_idle).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = memory::rss_mib(server.pid)?;
        crate::workloads::progress(run, &format!("conns: {}: manifest load at c={LOAD} beside them", server.name));
        let beside = load::run(server.addr, &spec, LOAD, warmup, window).await?;
        let open_after = still_open(server.addr, idle).await;
        crate::workloads::progress(run, &format!("conns: {}: manifest load at c={LOAD} after closing them", server.name));
        let after = load::run(server.addr, &spec, LOAD, warmup, window).await?;

        let without = (before.requests_per_s + after.requests_per_s) / 2.0;
        results.record("conns_rss_growth", &format!("memory: growth with {what} (MiB)"), Better::Lower, server.name, rss_after - rss_before);
        let per_connection = (rss_after - rss_before) * 1024.0 / n_idle as f64;
        results.record("conns_kib_per_connection", "memory per idle keep-alive connection (KiB)", Better::Lower, server.name, per_connection);
        results.record("conns_rps_without", &format!("manifest GET by tag, c={LOAD}, no idle connections (req/s; mean of before and after)"), Better::Higher, server.name, without);
        results.record("conns_rps_beside", &format!("manifest GET by tag, c={LOAD}, beside {what} (req/s)"), Better::Higher, server.name, beside.requests_per_s);
        results.record("conns_p99_beside", &format!("manifest GET by tag, c={LOAD}, beside {what}: p99 (ms)"), Better::Lower, server.name, beside.p99_ms);
        results.record("conns_rps_share", &format!("manifest GET by tag, c={LOAD}: req/s beside {what} / without"), Better::Higher, server.name, beside.requests_per_s / without);
        results.record("conns_still_open", &format!("idle connections still answering after the load (of {n_idle})"), Better::Higher, server.name, open_after as f64);
    }
    Ok(())
}

/// An idle connection: its sender, and the task driving it.
type Idle = (load::Sender, tokio::task::JoinHandle<()>);

/// Opens `n` connections to `addr`, each after one `GET /v2/`, so every one is a keep-alive
/// connection the server has served and holds.
async fn open(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Idle>> {
    let mut idle = Vec::with_capacity(n);
    while idle.len() < n {
        let batch = (n - idle.len()).min(OPENING);
        let opened = futures::future::try_join_all((0..batch).map(|_| async move {
            let (mut sender, task) = load::connect(addr, &load::Transport::Plain).await?;
            anyhow::ensure!(base(&mut sender, addr).await? == http::StatusCode::OK, "GET /v2/ on {addr} did not answer 200");
            Ok((sender, task))
        }))
        .await?;
        idle.extend(opened);
    }
    Ok(idle)
}

/// `GET /v2/` on the connection; its status.
async fn base(sender: &mut load::Sender, addr: SocketAddr) -> anyhow::Result<http::StatusCode> {
    let request = http::Request::get("/v2/").header(http::header::HOST, addr.to_string()).body(Empty::new())?;
    let response = sender.send(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// How many of `idle` (to `addr`) still answer a `GET /v2/`; closes them all.
async fn still_open(addr: SocketAddr, idle: Vec<Idle>) -> usize {
    let mut answering = 0;
    for (mut sender, task) in idle {
        if matches!(base(&mut sender, addr).await, Ok(status) if status == http::StatusCode::OK) {
            answering += 1;
        }
        drop(sender);
        let _ = task.await;
    }
    answering
}
