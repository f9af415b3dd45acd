//! The uploads reference (issue #20, goal 2): `portcullis-bench serve-uploads`, a server that
//! does nothing but what an upload must: it takes the same HTTP upload flow the driver sends
//! (`POST`, then `PUT ?digest=` with the bytes, or `PATCH` chunks and an empty `PUT ?digest=`),
//! hashes every byte with `sha2`, writes it to a file, fsyncs it, renames it into place, fsyncs
//! the directory, and answers the statuses portcullis answers. No names, links, tags or index.
//!
//! Each stage has its own thread, as in portcullis: receiving on the runtime, hashing on one
//! blocking thread and writing on another, fed 1 MiB batches of the body; every 64 MiB an `fdatasync` on a thread of its own starts writing what has arrived, so
//! the fsync at the end finds little left (portcullis's filesystem store does the same). That is
//! what this box and this client can do at best, so group `uploads` reports portcullis (and
//! Distribution) as a share of it, with the CPU seconds per GiB of each server and of the client.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::Digest as _;

use crate::registry::Registry;
use crate::results::{Better, RunResults, REFERENCE};

/// Bytes gathered from the body before they are handed to the hasher and the writer.
const BATCH: usize = 1 << 20;
/// Batches in flight between receiving and each of the two threads.
const IN_FLIGHT: usize = 4;
/// Bytes written between the starts of two writebacks.
const WRITEBACK_STEP: usize = 64 << 20;

/// Serves the upload flow on a free loopback port, keeping files below `dir`; prints
/// `listening on http://ADDR` as its first stdout line (as portcullis does) and runs until killed.
pub(crate) async fn serve(dir: PathBuf) -> anyhow::Result<()> {
    for sub in ["uploads", "blobs"] {
        std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {}", dir.join(sub).display()))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    let state = Arc::new(State { dir, sessions: Mutex::new(HashMap::new()), next_id: Mutex::new(0) });
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&state, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Monolithic and chunked uploads of `blob` bytes (chunks of `chunk`) to each of `servers`
/// (the reference first or last, alternating with the run), timed from the `POST` to the `201`;
/// records MiB/s and the CPU seconds per GiB of the server and of this client.
pub(crate) async fn workloads(blob: usize, chunk: usize, run: u32, servers: &[&Registry], results: &mut RunResults) -> anyhow::Result<()> {
    let size = crate::workloads::human(blob);
    let chunk_words = crate::workloads::human(chunk);
    let gib = blob as f64 / f64::from(1 << 30);
    for (index, &server) in servers.iter().enumerate() {
        for (key, what) in [("mono", format!("{size} monolithic")), ("chunked", format!("{size} in {chunk_words} PATCH chunks"))] {
            crate::workloads::progress(run, &format!("uploads: {}: {what}", server.name));
            let data = crate::content::random_bytes(blob, crate::gates::seed(run, 70, 2 * index + usize::from(key == "chunked")));
            let digest = crate::content::sha256(&data);
            let repo = format!("bench/uploads-{run}");
            let (server_before, client_before) = (crate::cpu::seconds(server.pid)?, crate::cpu::seconds(std::process::id())?);
            let elapsed = match key {
                "mono" => server.upload_monolithic(&repo, data, &digest).await?,
                _ => server.upload_chunked(&repo, data, &digest, chunk).await?,
            };
            let server_cpu = crate::cpu::seconds(server.pid)? - server_before;
            let client_cpu = crate::cpu::seconds(std::process::id())? - client_before;
            results.record(&format!("uploads_{key}"), &format!("upload {what} (MiB/s)"), Better::Higher, server.name, crate::workloads::mib_per_s(blob, elapsed));
            results.record(&format!("uploads_{key}_server_cpu"), &format!("upload {what}: server CPU (s/GiB)"), Better::Lower, server.name, server_cpu / gib);
            results.record(&format!("uploads_{key}_client_cpu"), &format!("upload {what}: client CPU (s/GiB)"), Better::Lower, server.name, client_cpu / gib);
        }
    }
    Ok(())
}

/// The reference server, named [`REFERENCE`] in the tables.
pub(crate) fn reference(url: &str, pid: u32) -> anyhow::Result<Registry> {
    Registry::new(REFERENCE, url, pid)
}

struct State {
    dir: PathBuf,
    sessions: Mutex<HashMap<u64, Session>>,
    next_id: Mutex<u64>,
}

/// An upload in progress: its file, and the hash of what it holds.
struct Session {
    file: std::fs::File,
    path: PathBuf,
    hasher: sha2::Sha256,
}

/// What a request asks for, from its method and path.
enum Route {
    Base,
    Start(String),
    Session(String, u64),
}

fn route(path: &str) -> Option<Route> {
    if path == "/v2/" {
        return Some(Route::Base);
    }
    let rest = path.strip_prefix("/v2/")?;
    let (repo, tail) = rest.split_once("/blobs/uploads/")?;
    if tail.is_empty() {
        return Some(Route::Start(repo.to_owned()));
    }
    Some(Route::Session(repo.to_owned(), tail.parse().ok()?))
}

async fn answer(state: &State, request: http::Request<Incoming>) -> http::Response<Empty<Bytes>> {
    let (status, location) = match handle(state, request).await {
        Ok(answer) => answer,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "serve-uploads: {err:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        }
    };
    let mut response = http::Response::builder().status(status).header(http::header::CONTENT_LENGTH, 0);
    if let Some(location) = location {
        response = response.header(http::header::LOCATION, location);
    }
    response.body(Empty::new()).expect("status and headers are valid")
}

async fn handle(state: &State, request: http::Request<Incoming>) -> anyhow::Result<(StatusCode, Option<String>)> {
    let method = request.method().clone();
    let digest = request.uri().query().and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("digest="))).map(str::to_owned);
    let Some(route) = route(request.uri().path()) else { return Ok((StatusCode::NOT_FOUND, None)) };
    match (method, route) {
        (Method::GET, Route::Base) => Ok((StatusCode::OK, None)),
        (Method::POST, Route::Start(repo)) => {
            let id = {
                let mut next = state.next_id.lock().expect("id lock");
                *next += 1;
                *next
            };
            let path = state.dir.join("uploads").join(id.to_string());
            let file = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
            state.sessions.lock().expect("session lock").insert(id, Session { file, path, hasher: sha2::Sha256::new() });
            Ok((StatusCode::ACCEPTED, Some(format!("/v2/{repo}/blobs/uploads/{id}"))))
        }
        (method @ (Method::PATCH | Method::PUT | Method::DELETE), Route::Session(repo, id)) => {
            let Some(session) = state.sessions.lock().expect("session lock").remove(&id) else {
                return Ok((StatusCode::NOT_FOUND, None));
            };
            if method == Method::DELETE {
                std::fs::remove_file(&session.path)?;
                return Ok((StatusCode::NO_CONTENT, None));
            }
            let session = receive(session, request.into_body()).await?;
            if method == Method::PATCH {
                state.sessions.lock().expect("session lock").insert(id, session);
                return Ok((StatusCode::ACCEPTED, Some(format!("/v2/{repo}/blobs/uploads/{id}"))));
            }
            let Some(expected) = digest else { return Ok((StatusCode::BAD_REQUEST, None)) };
            let dir = state.dir.join("blobs");
            let committed = tokio::task::spawn_blocking(move || commit(session, &expected, &dir)).await??;
            Ok(match committed {
                Some(digest) => (StatusCode::CREATED, Some(format!("/v2/{repo}/blobs/{digest}"))),
                None => (StatusCode::BAD_REQUEST, None),
            })
        }
        _ => Ok((StatusCode::METHOD_NOT_ALLOWED, None)),
    }
}

/// Appends a request body to the session: batches go to the hashing and the writing thread as
/// they fill, so the three stages overlap.
async fn receive(session: Session, mut body: Incoming) -> anyhow::Result<Session> {
    let Session { file, path, mut hasher } = session;
    let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Arc<Vec<Bytes>>>(IN_FLIGHT);
    let (write_tx, mut write_rx) = tokio::sync::mpsc::channel::<Arc<Vec<Bytes>>>(IN_FLIGHT);
    let hashing = tokio::task::spawn_blocking(move || {
        while let Some(batch) = hash_rx.blocking_recv() {
            batch.iter().for_each(|bytes| hasher.update(bytes));
        }
        hasher
    });
    let writing = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let mut written = 0;
        let mut writeback: Option<std::thread::JoinHandle<std::io::Result<()>>> = None;
        while let Some(batch) = write_rx.blocking_recv() {
            // hyper hands over what each read of the socket brought, up to hundreds of KiB, so
            // a write per piece costs few calls.
            for bytes in batch.iter() {
                (&file).write_all(bytes)?;
            }
            written += batch.iter().map(Bytes::len).sum::<usize>();
            if written >= WRITEBACK_STEP && writeback.as_ref().is_none_or(|task| task.is_finished()) {
                written = 0;
                if let Some(task) = writeback.take() {
                    task.join().map_err(|_| std::io::Error::other("writeback panicked"))??;
                }
                let file = file.try_clone()?;
                writeback = Some(std::thread::spawn(move || file.sync_data()));
            }
        }
        if let Some(task) = writeback {
            task.join().map_err(|_| std::io::Error::other("writeback panicked"))??;
        }
        Ok(file)
    });
    let mut batch = Vec::new();
    let mut batch_len = 0;
    let mut received = Ok(());
    loop {
        let frame = match body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                received = Err(anyhow::Error::from(err).context("receive the body"));
                break;
            }
            None => break,
        };
        let Ok(data) = frame.into_data() else { continue };
        batch_len += data.len();
        batch.push(data);
        if batch_len >= BATCH {
            let full = Arc::new(std::mem::take(&mut batch));
            batch_len = 0;
            // A closed channel means its thread failed: joining it below says why.
            if hash_tx.send(full.clone()).await.is_err() || write_tx.send(full).await.is_err() {
                break;
            }
        }
    }
    if !batch.is_empty() {
        let rest = Arc::new(batch);
        let _ = hash_tx.send(rest.clone()).await;
        let _ = write_tx.send(rest).await;
    }
    drop((hash_tx, write_tx));
    let hasher = hashing.await?;
    let file = writing.await?.with_context(|| format!("write {}", path.display()))?;
    received?;
    Ok(Session { file, path, hasher })
}

/// Makes the upload durable under its digest if it hashes to `expected`: fsync, rename, fsync of
/// the directory. Returns the digest, or `None` (and removes the file) when it does not match.
fn commit(session: Session, expected: &str, dir: &Path) -> anyhow::Result<Option<String>> {
    let actual = format!("sha256:{}", hex::encode(session.hasher.finalize()));
    if actual != expected {
        std::fs::remove_file(&session.path)?;
        return Ok(None);
    }
    session.file.sync_all()?;
    let target = dir.join(actual.trim_start_matches("sha256:"));
    std::fs::rename(&session.path, &target)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(Some(actual))
}
