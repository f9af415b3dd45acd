//! The OCI Distribution HTTP API (with `/healthz`, `/readyz`, `/metrics` and the token
//! endpoint): one function per request, `Endpoint::parse` -> `auth::admit` -> handler ->
//! response; errors become the spec's JSON form here. With `server`, the only code that handles
//! HTTP types.

mod admission;
mod audit;
pub mod auth;
mod blobs;
pub mod console;
pub mod endpoint;
pub mod error;
mod gates;
mod manifests;
mod promotions;
mod referrers;
mod tags;
mod uploads;
mod upstreams;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tracing::Instrument;

use crate::auth::Principal;
use crate::registry::body::BodyReadError;
use crate::registry::{Registry, RegistryError};
use endpoint::Endpoint;
use error::ApiError;

/// Response body: bytes from memory or streamed from the store.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// `Docker-Content-Digest`
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `Docker-Distribution-API-Version`
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// `OCI-Subject`
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// `X-Request-Id`
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Answers one request. Never fails: errors are responses.
///
/// Events during the request carry its span (request id, method, path, principal); the request
/// itself is logged once, after the span, as one compact line: a request that logs nothing else
/// costs one short line, not the span's fields twice.
pub async fn handle<B>(registry: Arc<Registry>, req: Request<B>) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let request_id = &uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, path = %path, principal = tracing::field::Empty);
    let (response, principal) = async move {
        let routed = Endpoint::parse(req.method(), req.uri().path(), req.uri().query());
        let is_console = console::is_console_path(req.uri().path());
        let label = routed.as_ref().map_or("unrouted", Endpoint::label);
        let routed = match routed {
            Ok(endpoint) => route_pull(&registry, endpoint, req.uri().query()).await,
            Err(err) => Err(err.into()),
        };
        let method = req.method().clone();
        let (mut parts, body) = req.into_parts();
        // HTTP/2 sends the host as `:authority`, which hyper keeps in the URI only; handlers read
        // `Host` (the console's same-origin check of a posted form: browsers speak HTTP/2 over TLS).
        if let (false, Some(authority)) = (parts.headers.contains_key(header::HOST), parts.uri.authority()) {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let connection = parts.extensions.get::<auth::Connection>().cloned().unwrap_or_default();
        let mut principal = None;
        let result = match routed {
            Ok(endpoint) => match auth::admit(&registry, endpoint, &parts, &connection).await {
                Ok((endpoint, caller)) => {
                    tracing::Span::current().record("principal", caller.name());
                    principal = Some(caller.name().to_owned());
                    let caller = Caller { principal: caller, connection };
                    dispatch(&registry, endpoint, &caller, &parts.headers, body_stream(body)).await
                }
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        };
        let mut response = result.unwrap_or_else(|err| error_response(&registry, &err));
        if is_console {
            console::secure(&mut response);
        }
        // Blobs anyone may push are served from the console's origin, whose CSP allows scripts
        // from 'self': with `nosniff` a browser never runs one as a script or renders it as a page.
        response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        let status = response.status();
        response.headers_mut().insert(REQUEST_ID, HeaderValue::from_str(request_id).expect("hex is a valid header"));
        response.headers_mut().insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        if let Some(len) = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
            if method != http::Method::HEAD {
                registry.metrics.bytes_sent.inc_by(len);
            }
        }
        registry.metrics.requests.with_label_values(&[label, method.as_str(), status.as_str()]).inc();
        registry.metrics.latency.with_label_values(&[label]).observe(started.elapsed().as_secs_f64());
        (response, principal)
    }
    .instrument(span)
    .await;
    tracing::info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        principal = %principal.as_deref().unwrap_or("-"),
        request_id = %request_id,
        "request"
    );
    Ok(response)
}

/// Who sent a request, and over what.
struct Caller {
    /// The authenticated caller ([`Principal::open`] when auth is off); its name is the actor.
    principal: Principal,
    /// The connection it came on.
    connection: auth::Connection,
}

async fn dispatch(
    registry: &Registry,
    endpoint: Endpoint,
    caller: &Caller,
    headers: &HeaderMap,
    body: storage::ByteStream,
) -> Result<Response<Body>, ApiError> {
    match endpoint {
        Endpoint::Base => Ok(json_response(StatusCode::OK, "{}".to_owned())),
        Endpoint::Health => Ok(text_response(StatusCode::OK, "ok\n")),
        Endpoint::Ready => match registry.ready().await {
            Ok(_) => Ok(text_response(StatusCode::OK, "ready\n")),
            Err(err) => {
                tracing::warn!(error = %err, "store not reachable");
                Ok(text_response(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n"))
            }
        },
        Endpoint::Metrics => {
            let mut response = text_response(StatusCode::OK, &registry.metrics.render());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            Ok(response)
        }
        Endpoint::GetBlob { name, digest, head } => blobs::get(registry, &name, &digest, head, headers).await,
        Endpoint::DeleteBlob { name, digest } => blobs::delete(registry, &name, &digest, caller.principal.name()).await,
        Endpoint::StartUpload { name, digest, mount, from } => {
            uploads::start(registry, &name, digest.as_ref(), mount.as_ref(), from.as_ref(), body).await
        }
        Endpoint::PatchUpload { name, upload_id } => uploads::patch(registry, &name, &upload_id, headers, body).await,
        Endpoint::FinishUpload { name, upload_id, digest } => {
            uploads::finish(registry, &name, &upload_id, &digest, headers, body).await
        }
        Endpoint::UploadStatus { name, upload_id } => uploads::status(registry, &name, &upload_id).await,
        Endpoint::CancelUpload { name, upload_id } => uploads::cancel(registry, &name, &upload_id).await,
        Endpoint::GetManifest { name, reference, head } => {
            manifests::get(registry, &name, &reference, head, headers, &caller.principal).await
        }
        Endpoint::PutManifest { name, reference, tags } => {
            manifests::put(registry, &name, &reference, &tags, headers, body).await
        }
        Endpoint::DeleteManifest { name, reference } => {
            manifests::delete(registry, &name, &reference, caller.principal.name()).await
        }
        Endpoint::ListTags { name, n, last } => tags::list(registry, &name, n, last.as_deref()).await,
        Endpoint::Catalog { n, last } => tags::catalog(registry, &caller.principal, n, last.as_ref()).await,
        Endpoint::Token { scopes, form } => auth::token(registry, form, &scopes, headers, body, &caller.connection).await,
        Endpoint::AdmissionHealth => Ok(text_response(StatusCode::OK, "ok\n")),
        Endpoint::AdmissionReview { webhook } => admission::review(registry, webhook, body, &caller.connection).await,
        Endpoint::Drift => admission::drift(registry, &caller.principal).await,
        Endpoint::Referrers { name, digest, artifact_type } => {
            referrers::list(registry, &name, &digest, artifact_type.as_deref()).await
        }
        Endpoint::Verdict { image, target } => gates::verdict(registry, &image, target.as_ref()).await,
        Endpoint::Keys => Ok(promotions::keys(registry)),
        Endpoint::Promote => promotions::promote(registry, body, &caller.principal).await,
        Endpoint::ListPromotions { repository } => promotions::list(registry, &repository).await,
        Endpoint::Audit { kind, repository, after, limit } => {
            audit::list(registry, &caller.principal, kind.as_deref(), repository.as_deref(), after, limit).await
        }
        Endpoint::Upstreams => Ok(upstreams::list(registry)),
        Endpoint::AcceptUpstreamTag { upstream, repository, tag, digest } => {
            upstreams::accept(registry, &upstream, &repository, &tag, digest.as_ref(), caller.principal.name()).await
        }
        Endpoint::Console(route) => console::handle(registry, route, caller, headers, body).await,
    }
}

/// A pull of a repository that mirrors an upstream goes to the repository kept for it
/// (containerd's `?ns=`, Docker Hub's `library/`, the default upstream of dockerd's mirrors),
/// before access is decided: rules name the repositories as they are kept.
async fn route_pull(registry: &Registry, mut endpoint: Endpoint, query: Option<&str>) -> Result<Endpoint, ApiError> {
    if let Some(name) = endpoint.pull_name_mut() {
        *name = registry.route_pull(name, endpoint::namespace_host(query).as_deref()).await?;
    }
    Ok(endpoint)
}

fn error_response(registry: &Registry, err: &ApiError) -> Response<Body> {
    let response = err.response();
    if response.status().is_server_error() {
        // Logged once, with the full cause, inside the request span; the body says nothing internal.
        tracing::error!(error = %err, "request failed");
        if err.is_storage_failure() {
            registry.metrics.storage_errors.inc();
        }
    }
    response
}

/// Adapts a request body to the store's byte stream; its errors carry [`BodyReadError`].
fn body_stream<B>(body: B) -> storage::ByteStream
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let stream = http_body_util::BodyDataStream::new(body)
        .map_err(|err| io::Error::other(BodyReadError(err.to_string())));
    Box::pin(stream)
}

/// Reads a whole request body of at most `limit` bytes (for manifests, never blobs). A larger
/// body gives `None`, after reading and discarding up to `limit` more bytes so that an ordinary
/// client is still reading when the error arrives; beyond that the connection is dropped.
async fn read_bounded(mut body: storage::ByteStream, limit: usize) -> Result<Option<Bytes>, io::Error> {
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = body.try_next().await? {
        if buf.len() + chunk.len() > limit {
            let mut discarded = buf.len() + chunk.len();
            while discarded <= 2 * limit {
                match body.try_next().await? {
                    Some(chunk) => discarded += chunk.len(),
                    None => break,
                }
            }
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn stream_body(stream: storage::ByteStream) -> Body {
    StreamBody::new(stream.map_ok(http_body::Frame::data)).boxed_unsync()
}

fn json_response(status: StatusCode, json: String) -> Response<Body> {
    let len = json.len();
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

fn text_response(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(full(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}

/// A response with no body and the given headers.
fn empty_response(status: StatusCode, headers: &[(HeaderName, String)]) -> Result<Response<Body>, ApiError> {
    let mut response = Response::new(empty());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    set_headers(&mut response, headers)?;
    Ok(response)
}

/// Sets `headers` on `response`. Some values come from the store (a manifest's media type), so
/// one that is not a valid header value is an internal error, answered with a 500, not a panic.
fn set_headers(response: &mut Response<Body>, headers: &[(HeaderName, String)]) -> Result<(), ApiError> {
    for (name, value) in headers {
        let value = HeaderValue::from_str(value)
            .map_err(|_| RegistryError::Internal(format!("response header {name}: {value:?} is not a valid header value")))?;
        response.headers_mut().insert(name.clone(), value);
    }
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_value_that_is_not_one_is_an_internal_error() {
        let mut response = Response::new(empty());
        let damaged = "application/vnd.oci.image.manifest.v1+json\nX-Injected: 1".to_owned();
        let err = set_headers(&mut response, &[(header::CONTENT_TYPE, damaged)]).unwrap_err();
        let wire = err.wire();
        assert_eq!(wire.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(matches!(wire.code, error::Code::Opaque { code: "INTERNAL_ERROR", .. }));
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
    }
}
