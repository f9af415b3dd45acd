//! The manifest ceiling of `scripts/bench` (issue #20): a minimal hyper server answering every GET
//! and HEAD with the same manifest bytes and headers from memory, driven by the same load driver
//! in the same run as the registries, so their manifest rows read as shares of what this machine
//! and driver can do at all. It has no routing, access control, logging or store: a `PUT` to any
//! path sets the manifest it serves (the body, at most 4 MiB, and its `Content-Type`).
//!
//! Binds `127.0.0.1:0` and prints `manifest-ceiling listening on http://ADDR` as its first line.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use sha2::Digest as _;

/// The largest manifest it takes, as portcullis's default `max_manifest_bytes`.
const MAX_MANIFEST: usize = 4 << 20;

/// What every GET and HEAD is answered with.
struct Manifest {
    bytes: Bytes,
    media_type: HeaderValue,
    digest: HeaderValue,
    etag: HeaderValue,
}

type Served = Arc<RwLock<Option<Manifest>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("manifest-ceiling listening on http://{}", listener.local_addr()?);
    let served: Served = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let served = served.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(served.clone(), request));
            // A client that goes away mid-request is not the server's problem.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(served: Served, request: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode| Ok(Response::builder().status(status).body(Full::default()).expect("a status alone is a valid response"));
    if request.method() == Method::PUT {
        let media_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let Ok(body) = Limited::new(request.into_body(), MAX_MANIFEST).collect().await else { return reply(StatusCode::PAYLOAD_TOO_LARGE) };
        let bytes = body.to_bytes();
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        let (Some(media_type), Ok(digest_value), Ok(etag)) = (media_type, HeaderValue::from_str(&digest), HeaderValue::from_str(&format!("\"{digest}\""))) else {
            return reply(StatusCode::BAD_REQUEST);
        };
        *served.write().expect("never poisoned") = Some(Manifest { bytes, media_type, digest: digest_value, etag });
        return reply(StatusCode::CREATED);
    }
    let head = request.method() == Method::HEAD;
    let guard = served.read().expect("never poisoned");
    let Some(manifest) = guard.as_ref() else { return reply(StatusCode::NOT_FOUND) };
    let body = if head { Bytes::new() } else { manifest.bytes.clone() };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, manifest.media_type.clone());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(manifest.bytes.len()));
    headers.insert("docker-content-digest", manifest.digest.clone());
    headers.insert(header::ETAG, manifest.etag.clone());
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}
