//! Blob fetches from upstreams: one upstream fetch per blob however many clients ask at once.
//!
//! The fetch runs in a task of its own (a client that leaves does not stop it). It writes the
//! upstream's bytes into a staged upload of the store, as a client upload is written, hashing
//! them as they pass, and streams them to the clients that asked before its first chunk went
//! out; clients that ask later wait for the outcome and read the stored blob. The blob becomes
//! visible (committed under its digest, linked into the repository, recorded as proxied) only
//! when the bytes hash to the digest asked for.
//!
//! A client never receives a body that looks complete when it is not: the last chunk is held
//! back until the digest is checked, and a mismatch, a cut connection, a body longer or shorter
//! than announced, or an upstream slower than [`MIN_RATE`] ends every waiting client's body with
//! an error (with a `Content-Length`, hyper then aborts the connection before it is reached), and
//! stores nothing. A client that stops reading for longer than the upstream's timeout is dropped
//! from the stream (its download fails) rather than holding the others back; each client has at
//! most [`SUBSCRIBER_BUFFER`] chunks (about 1 MiB each) buffered.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use storage::digest::Hasher;
use storage::{ByteStream, Digest};
use tokio::sync::{mpsc, watch, Notify};

use super::{client, ProxyError, Upstream};
use crate::metadata::fence::Fence;
use crate::metadata::layout::Key;
use crate::metadata::{Metadata, ProxiedRecord, UploadRecord};
use crate::names::{RepoName, UploadId};

/// Chunks buffered per streaming client.
pub const SUBSCRIBER_BUFFER: usize = 4;
/// The slowest an upstream may send a blob on average, after a grace of its timeout: a drip
/// feed holds a fetch and its waiting clients only so long.
pub const MIN_RATE: u64 = 64 << 10;

/// The blob fetches running, by upstream, repository upstream and digest.
#[derive(Default)]
pub struct Flights {
    running: Arc<Mutex<HashMap<FlightKey, Arc<Flight>>>>,
    /// Notified whenever a fetched blob is stored (the cache's size cap looks then).
    pub stored: Arc<Notify>,
}

type FlightKey = (String, String, Digest);

/// Where a fetched blob goes.
pub struct Target {
    /// The store.
    pub metadata: Metadata,
    /// The repository it is linked into.
    pub repo: RepoName,
    /// The digest asked for.
    pub digest: Digest,
    /// The largest blob accepted.
    pub max_bytes: u64,
    /// Garbage collection's grace, for its fence (`metadata::fence`).
    pub grace: Duration,
}

/// How a caller wants the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Streamed as it arrives, if the fetch has not started sending (else as `Stored`).
    Stream,
    /// Wait until it is stored (a range request, a promotion, evidence).
    Stored,
}

/// What a fetch gave the caller.
pub enum Fetched {
    /// The bytes as they arrive from the upstream; the body ends with an error unless the
    /// whole blob arrived and matched its digest.
    Streaming {
        /// The size the upstream announced, if it did.
        size: Option<u64>,
        /// The bytes.
        body: ByteStream,
    },
    /// The blob is in the store and linked into the repository now.
    Stored,
}

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlobError {
    /// The upstream failed or misbehaved.
    #[error(transparent)]
    Upstream(#[from] ProxyError),
    /// The store failed while the blob was written.
    #[error("storing the fetched blob failed: {0}")]
    Store(String),
}

/// One running fetch.
struct Flight {
    /// Clients that get the bytes as they arrive; closed (`None`) once the first chunk went out.
    door: Mutex<Option<Vec<mpsc::Sender<Piece>>>>,
    /// The response head: the announced size, or why there is none.
    head: watch::Sender<Option<Result<Option<u64>, BlobError>>>,
    /// The outcome.
    done: watch::Sender<Option<Result<(), BlobError>>>,
}

/// What a streaming client is sent.
#[derive(Clone)]
enum Piece {
    Data(Bytes),
    /// The end of a blob that matched its digest.
    End,
    Failed(String),
}

impl Flights {
    /// Fetches blob `target.digest` of `remote` from `upstream` into `target.repo`, or joins the
    /// fetch of it already running.
    pub async fn fetch(&self, upstream: Arc<Upstream>, remote: String, target: Target, mode: Mode) -> Result<Fetched, BlobError> {
        let key = (upstream.config.name.to_string(), remote.clone(), target.digest.clone());
        let (flight, leader) = {
            let mut running = self.running.lock().expect("flights lock is never poisoned");
            match running.get(&key) {
                Some(flight) => (flight.clone(), false),
                None => {
                    let flight = Arc::new(Flight { door: Mutex::new(Some(Vec::new())), head: watch::channel(None).0, done: watch::channel(None).0 });
                    running.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        let receiver = match mode {
            Mode::Stream => flight.subscribe(),
            Mode::Stored => None,
        };
        // Subscribed before the fetch starts, so the first client gets every byte.
        let mut head = flight.head.subscribe();
        let mut done = flight.done.subscribe();
        if leader {
            let (running, stored) = (self.running.clone(), self.stored.clone());
            tokio::spawn(run(flight.clone(), upstream, remote, target, move |ok| {
                running.lock().expect("flights lock is never poisoned").remove(&key);
                if ok {
                    stored.notify_one();
                }
            }));
        }
        drop(flight);
        match receiver {
            Some(receiver) => {
                let head = wait(&mut head).await?;
                Ok(Fetched::Streaming { size: head, body: subscriber_body(receiver) })
            }
            None => wait(&mut done).await.map(|()| Fetched::Stored),
        }
    }
}

/// Waits until `channel` holds an outcome.
async fn wait<T: Clone>(channel: &mut watch::Receiver<Option<Result<T, BlobError>>>) -> Result<T, BlobError> {
    match channel.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(BlobError::Store("the fetch ended without an outcome".to_owned()))),
        Err(_) => Err(BlobError::Store("the fetch ended without an outcome".to_owned())),
    }
}

impl Flight {
    /// A channel for the bytes as they arrive, if none has gone out yet.
    fn subscribe(&self) -> Option<mpsc::Receiver<Piece>> {
        let mut door = self.door.lock().expect("door lock is never poisoned");
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        door.as_mut()?.push(sender);
        Some(receiver)
    }

    /// Closes the door: the clients that will get the bytes as they arrive.
    fn close(&self) -> Vec<mpsc::Sender<Piece>> {
        self.door.lock().expect("door lock is never poisoned").take().unwrap_or_default()
    }
}

/// Sets the outcome when the fetch task ends, however it ends (a panic included), so no waiter
/// waits forever.
struct Finish<F: FnOnce(bool)> {
    flight: Arc<Flight>,
    outcome: Option<Result<(), BlobError>>,
    on_end: Option<F>,
}

impl<F: FnOnce(bool)> Drop for Finish<F> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| Err(BlobError::Store("the fetch task ended early".to_owned())));
        if let Err(err) = &outcome {
            self.flight.head.send_if_modified(|head| {
                let unset = head.is_none();
                if unset {
                    *head = Some(Err(err.clone()));
                }
                unset
            });
        }
        let ok = outcome.is_ok();
        self.flight.done.send_replace(Some(outcome));
        if let Some(on_end) = self.on_end.take() {
            on_end(ok);
        }
    }
}

/// The fetch task: fetch, store, tell the clients, set the outcome, leave the running set.
async fn run(flight: Arc<Flight>, upstream: Arc<Upstream>, remote: String, target: Target, on_end: impl FnOnce(bool) + Send + 'static) {
    let mut finish = Finish { flight: flight.clone(), outcome: None, on_end: Some(on_end) };
    let live = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let held = Arc::new(Mutex::new(None));
    let stall = upstream.config.timeout;
    let outcome = fetch_into_store(&flight, &upstream, &remote, &target, live.clone(), held.clone()).await;
    let mut live = std::mem::take(&mut *live.lock().await);
    // Clients that joined but got nothing yet (a blob of one chunk) still get all of it.
    live.extend(flight.close());
    match &outcome {
        Ok(()) => {
            let last = held.lock().expect("held lock is never poisoned").take();
            if let Some(last) = last {
                broadcast(&mut live, Piece::Data(last), stall).await;
            }
            broadcast(&mut live, Piece::End, stall).await;
        }
        Err(err) => {
            tracing::warn!(upstream = %upstream.config.name, repo = %target.repo, digest = %target.digest, error = %err, "blob fetch failed; nothing stored");
            broadcast(&mut live, Piece::Failed(err.to_string()), stall).await;
        }
    }
    finish.outcome = Some(outcome);
}

async fn fetch_into_store(
    flight: &Arc<Flight>,
    upstream: &Arc<Upstream>,
    remote: &str,
    target: &Target,
    live: Arc<tokio::sync::Mutex<Vec<mpsc::Sender<Piece>>>>,
    held: Arc<Mutex<Option<Bytes>>>,
) -> Result<(), BlobError> {
    let digest = &target.digest;
    let res = upstream.client.send(client::Method::Get, remote, &format!("blobs/{digest}"), &[], client::Size::Stream).await?;
    let size = res.content_length();
    if let Some(size) = size.filter(|size| *size > target.max_bytes) {
        return Err(upstream.client.invalid(format!("announced {size} bytes for {remote}@{digest}; blobs are at most {} bytes here", target.max_bytes)).into());
    }
    flight.head.send_replace(Some(Ok(size)));
    let upload_id = UploadId::random();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let record = UploadRecord { repo: target.repo.to_string(), started };
    target.metadata.start_upload(&upload_id, &record).await.map_err(|err| BlobError::Store(err.to_string()))?;
    // Collection's fence: the commit keeps content that is stored already, which may be old and
    // about to be collected; then the staged bytes, still there, are committed again.
    let fence = Fence::open(&target.metadata).await.map_err(|err| BlobError::Store(err.to_string()))?;
    let stored = match store(flight, upstream, remote, target, res, size, &upload_id, live, held).await {
        Ok(n_bytes) => link_fenced(target, fence, &upload_id).await.map(|()| n_bytes).map_err(|err| BlobError::Store(err.to_string())),
        Err(err) => Err(err),
    };
    // Committed or not, the session ends: its stage is gone either way.
    if let Err(err) = target.metadata.end_upload(&upload_id).await {
        tracing::warn!(upload = %upload_id, error = %err, "cannot end the staged upload of a blob fetch; the janitor will");
    }
    let n_bytes = stored?;
    upstream.client.count_bytes(n_bytes);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let record = ProxiedRecord { upstream: upstream.config.name.to_string(), size: n_bytes, manifest: false, fetched: now, pulled: now };
    target.metadata.put_proxied(&target.repo, digest, &record).await.map_err(|err| BlobError::Store(err.to_string()))?;
    upstream.cached(digest, n_bytes);
    Ok(())
}

/// Links the committed blob and closes the fence; what a pass removed meanwhile is committed
/// and linked again (that pass is over, and what is written now is younger than any cut-off).
async fn link_fenced(target: &Target, fence: Fence, upload_id: &UploadId) -> Result<(), crate::metadata::MetadataError> {
    target.metadata.link_blob(&target.repo, &target.digest).await?;
    let needed = [Key::Blob(&target.digest).to_string(), Key::BlobLink(&target.repo, &target.digest).to_string()];
    if !fence.close(&target.metadata, target.grace, &needed).await?.is_empty() {
        target.metadata.commit_upload(upload_id, &target.digest).await?;
        target.metadata.link_blob(&target.repo, &target.digest).await?;
    }
    Ok(())
}

/// Streams the upstream's body into the staged upload and to the clients, checks the digest and
/// commits; returns the blob's size.
#[allow(clippy::too_many_arguments)]
async fn store(
    flight: &Arc<Flight>,
    upstream: &Arc<Upstream>,
    remote: &str,
    target: &Target,
    res: reqwest::Response,
    size: Option<u64>,
    upload_id: &UploadId,
    live: Arc<tokio::sync::Mutex<Vec<mpsc::Sender<Piece>>>>,
    held: Arc<Mutex<Option<Bytes>>>,
) -> Result<u64, BlobError> {
    let failure = Arc::new(Mutex::new(None));
    let body = upstream_body(res, upstream.clone(), size, target.max_bytes, failure.clone());
    let hasher = Hasher::new();
    let body = fan_out(hasher.tap(body), flight.clone(), live, held, upstream.config.timeout);
    let appended = target.metadata.append_staged(upload_id, 0, body).await;
    let upstream_failure = failure.lock().expect("failure lock is never poisoned").take();
    let n_bytes = match (appended, upstream_failure) {
        (_, Some(failure)) => return Err(failure.into()),
        (Err(err), None) => return Err(BlobError::Store(err.to_string())),
        (Ok(n_bytes), None) => n_bytes,
    };
    let actual = hasher.digest();
    if actual != target.digest {
        return Err(upstream
            .client
            .invalid(format!("sent {n_bytes} bytes hashing to {actual} for {remote}@{}; nothing was stored", target.digest))
            .into());
    }
    target.metadata.commit_upload(upload_id, &target.digest).await.map_err(|err| BlobError::Store(err.to_string()))?;
    Ok(n_bytes)
}

/// The upstream's body as a byte stream: at most `max` bytes, exactly `size` when announced, and
/// no slower than [`MIN_RATE`] after a grace of the timeout. A failure is put in `failure` (the
/// store sees only an I/O error) and ends the stream.
fn upstream_body(res: reqwest::Response, upstream: Arc<Upstream>, size: Option<u64>, max: u64, failure: Arc<Mutex<Option<ProxyError>>>) -> ByteStream {
    struct Reading {
        res: Option<reqwest::Response>,
        upstream: Arc<Upstream>,
        started: Instant,
        received: u64,
        failure: Arc<Mutex<Option<ProxyError>>>,
    }
    let reading = Reading { res: Some(res), upstream, started: Instant::now(), received: 0, failure };
    // Fused: the hasher's tap polls once more after the end.
    let stream = futures::stream::unfold(reading, move |mut reading| async move {
        let res = reading.res.as_mut()?;
        let outcome = match res.chunk().await {
            Ok(Some(chunk)) => {
                reading.received += chunk.len() as u64;
                let grace = reading.upstream.config.timeout;
                let allowed = grace + Duration::from_secs_f64(reading.received as f64 / MIN_RATE as f64);
                let elapsed = reading.started.elapsed();
                if reading.received > max || size.is_some_and(|size| reading.received > size) {
                    Err(reading.upstream.client.invalid(format!("sent more bytes than {}", size.map_or(format!("the {max} allowed"), |size| format!("the {size} it announced")))))
                } else if elapsed > allowed {
                    Err(reading.upstream.client.unavailable(format!(
                        "sent {} bytes in {}s, slower than {} KiB/s",
                        reading.received,
                        elapsed.as_secs(),
                        MIN_RATE >> 10
                    )))
                } else {
                    Ok(Some(chunk))
                }
            }
            Ok(None) => match size {
                Some(size) if reading.received != size => {
                    Err(reading.upstream.client.unavailable(format!("ended the blob after {} of the {size} bytes it announced", reading.received)))
                }
                _ => Ok(None),
            },
            Err(err) => Err(reading.upstream.client.transport_error(&err)),
        };
        match outcome {
            Ok(Some(chunk)) => Some((Ok(chunk), reading)),
            Ok(None) => None,
            Err(err) => {
                let message = err.to_string();
                *reading.failure.lock().expect("failure lock is never poisoned") = Some(err);
                reading.res = None;
                Some((Err(io::Error::other(message)), reading))
            }
        }
    });
    Box::pin(stream.fuse())
}

/// Passes `body` on to the store, sending each chunk to the streaming clients once the next one
/// has arrived: the last is kept in `held` until the digest is checked.
fn fan_out(
    body: ByteStream,
    flight: Arc<Flight>,
    live: Arc<tokio::sync::Mutex<Vec<mpsc::Sender<Piece>>>>,
    held: Arc<Mutex<Option<Bytes>>>,
    stall: Duration,
) -> ByteStream {
    struct Fan {
        body: ByteStream,
        flight: Arc<Flight>,
        live: Arc<tokio::sync::Mutex<Vec<mpsc::Sender<Piece>>>>,
        held: Arc<Mutex<Option<Bytes>>>,
        stall: Duration,
        opened: bool,
    }
    let fan = Fan { body, flight, live, held, stall, opened: false };
    Box::pin(futures::stream::unfold(fan, |mut fan| async move {
        let item = fan.body.next().await?;
        if let Ok(chunk) = &item {
            let previous = fan.held.lock().expect("held lock is never poisoned").replace(chunk.clone());
            if let Some(previous) = previous {
                let mut live = fan.live.lock().await;
                if !fan.opened {
                    fan.opened = true;
                    live.extend(fan.flight.close());
                }
                broadcast(&mut live, Piece::Data(previous), fan.stall).await;
            }
        }
        Some((item, fan))
    }))
}

/// Sends `piece` to every client, dropping those that left or did not take it within `stall`.
async fn broadcast(clients: &mut Vec<mpsc::Sender<Piece>>, piece: Piece, stall: Duration) {
    let mut kept = Vec::with_capacity(clients.len());
    for client in clients.drain(..) {
        if let Ok(Ok(())) = tokio::time::timeout(stall, client.send(piece.clone())).await {
            kept.push(client);
        }
    }
    *clients = kept;
}

/// A streaming client's body: the chunks, then the end, or an error whenever the blob did not
/// arrive whole and matching.
fn subscriber_body(receiver: mpsc::Receiver<Piece>) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Some(Piece::Data(chunk)) => Some((Ok(chunk), Some(receiver))),
            Some(Piece::End) => None,
            Some(Piece::Failed(message)) => Some((Err(io::Error::other(message)), None)),
            None => Some((Err(io::Error::other("the blob's fetch from the upstream stopped before it was complete")), None)),
        }
    }))
}
