//! The HTTP side of access control, the one adapter between `auth` and HTTP: reading
//! `Authorization`, writing `WWW-Authenticate` challenges, the Docker token endpoint, the
//! client-certificate check, and the tower layer that throttles failed logins per address.
//!
//! Every request passes [`admit`] before dispatch: `Endpoint::required` says which (repository,
//! action) pairs it needs, and the caller's [`Principal`] must hold them all.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};

use super::endpoint::{Endpoint, Required};
use super::error::ApiError;
use super::{json_response, read_bounded, Body};
use crate::auth::rules::Action;
use crate::auth::token::Scope;
use crate::auth::{Auth, AuthError, Principal};
use crate::auth::Challenge;
use crate::registry::Registry;

/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/auth/token";
/// Largest token request body (a form with a user name, password or OIDC token, and scopes).
const MAX_TOKEN_FORM: usize = 64 << 10;

/// What the listener knows about the connection a request arrived on; the server puts it in the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The name (subject common name) of the client certificate that the configured client CA
    /// verified; `None` when the client presented none.
    pub client_cert: Option<Arc<str>>,
}

impl Default for Connection {
    fn default() -> Self {
        Connection { peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), tls: false, client_cert: None }
    }
}

impl Connection {
    /// Whether the client presented a verified certificate.
    pub fn has_client_cert(&self) -> bool {
        self.client_cert.is_some()
    }
}

/// Credentials of a request. Never logged: no `Debug`.
enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Credentials::None) };
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, rest) = value.split_once(' ').ok_or(())?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| ())?;
        let decoded = String::from_utf8(decoded).map_err(|_| ())?;
        let (user, password) = decoded.split_once(':').ok_or(())?;
        Ok(Credentials::Basic { user: user.to_owned(), password: password.to_owned() })
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(Credentials::Bearer(rest.to_owned()))
    } else {
        Err(())
    }
}

/// Where and how a client should authenticate, for `WWW-Authenticate`.
struct ChallengeFor<'a> {
    auth: &'a Auth,
    realm: String,
}

impl<'a> ChallengeFor<'a> {
    fn new(auth: &'a Auth, headers: &HeaderMap, uri: &http::Uri, conn: &Connection) -> ChallengeFor<'a> {
        let realm = auth.config().realm.clone().unwrap_or_else(|| {
            let host = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
                .filter(|host| !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
                .unwrap_or_else(|| "localhost".to_owned());
            format!("{}://{host}{TOKEN_PATH}", if conn.tls { "https" } else { "http" })
        });
        ChallengeFor { auth, realm }
    }

    fn header(&self, scope: Option<&str>, error: Option<&str>) -> String {
        let service = &self.auth.config().service;
        match self.auth.config().challenge {
            Challenge::Basic => format!("Basic realm=\"{service}\""),
            Challenge::Bearer => {
                let mut value = format!("Bearer realm=\"{}\",service=\"{service}\"", self.realm);
                if let Some(scope) = scope {
                    value.push_str(&format!(",scope=\"{scope}\""));
                }
                if let Some(error) = error {
                    value.push_str(&format!(",error=\"{error}\""));
                }
                value
            }
        }
    }

    fn unauthorized(&self, message: impl Into<String>, scope: Option<&str>, error: Option<&str>) -> ApiError {
        ApiError::Challenged { err: Box::new(ApiError::Unauthorized(message.into())), challenge: self.header(scope, error) }
    }

    /// A failed login or token check, with the challenge for `scope`. A rejected registry token
    /// is named as such (RFC 6750 `error="invalid_token"`), so the client fetches a new one.
    fn refused(&self, err: AuthError, scope: Option<&str>) -> ApiError {
        let error = matches!(err, AuthError::InvalidToken(_)).then_some("invalid_token");
        ApiError::Challenged { err: Box::new(err.into()), challenge: self.header(scope, error) }
    }
}

/// The Docker scope string for needing `action` on `repo` (push asks for pull too, as clients do).
fn scope_for(repo: &str, action: Action) -> String {
    match action {
        Action::Push => format!("repository:{repo}:pull,push"),
        other => format!("repository:{repo}:{other}"),
    }
}

/// Decides whether a request may proceed, and as whom. May rewrite the endpoint: a
/// cross-repository mount from a repository the caller cannot pull becomes an ordinary upload
/// (the spec's fallback), so nothing is learnt about the source.
pub(super) async fn admit(
    registry: &Registry,
    endpoint: Endpoint,
    parts: &http::request::Parts,
    conn: &Connection,
) -> Result<(Endpoint, Principal), ApiError> {
    let required = endpoint.required();
    let config = registry.config();
    let needs_cert = required == Required::ClientCert
        || config.tls.as_ref().is_some_and(|tls| tls.needs_client_cert(parts.uri.path()));
    if needs_cert && !conn.has_client_cert() {
        return Err(ApiError::ClientCertRequired);
    }
    let Some(auth) = registry.auth() else {
        return Ok((endpoint, Principal::open()));
    };
    let challenge = ChallengeFor::new(&auth, &parts.headers, &parts.uri, conn);
    let first_scope = match &required {
        Required::Repository(needs) => needs.first().map(|(repo, action)| scope_for(repo.as_str(), *action)),
        Required::Catalog => Some("registry:catalog:*".to_owned()),
        _ => None,
    };
    let principal = if matches!(endpoint, Endpoint::Token { .. }) {
        // The token endpoint authenticates by itself, with its own error form.
        auth.anonymous()
    } else {
        match credentials(&parts.headers) {
            Ok(Credentials::None) => match &conn.client_cert {
                // A verified client certificate authenticates (in-cluster pulls); credentials
                // in the request, when present, take precedence.
                Some(name) => auth.certificate(name),
                None => auth.anonymous(),
            },
            Ok(Credentials::Basic { user, password }) => {
                if !auth.config().basic {
                    return Err(challenge.unauthorized("basic authentication is not accepted here; use a token", first_scope.as_deref(), None));
                }
                auth.login(&user, &password, conn.peer.ip()).await.map_err(|err| challenge.refused(err, first_scope.as_deref()))?
            }
            Ok(Credentials::Bearer(token)) => {
                auth.verify_token(&token).map_err(|err| challenge.refused(err, first_scope.as_deref()))?
            }
            Err(()) => return Err(challenge.unauthorized("malformed Authorization header", first_scope.as_deref(), None)),
        }
    };

    let refuse = |principal: &Principal, scope: &str, what: String| -> ApiError {
        if principal.is_unauthenticated() {
            challenge.unauthorized(format!("authentication required to {what}"), Some(scope), None)
        } else if principal.holds_token() {
            challenge.unauthorized(format!("the token does not allow to {what}"), Some(scope), Some("insufficient_scope"))
        } else {
            ApiError::Forbidden(format!("{} may not {what}", principal.name()))
        }
    };
    match &required {
        Required::Nothing | Required::ClientCert => {}
        Required::Login => {
            if principal.is_unauthenticated() {
                return Err(challenge.unauthorized("authentication required", None, None));
            }
        }
        Required::Catalog => {
            if principal.is_unauthenticated() {
                return Err(challenge.unauthorized("authentication required", first_scope.as_deref(), None));
            }
        }
        Required::Repository(needs) => {
            for (repo, action) in needs {
                if !principal.may(*action, repo.as_str()) {
                    return Err(refuse(&principal, &scope_for(repo.as_str(), *action), format!("{action} {repo}")));
                }
            }
        }
    }
    let endpoint = match endpoint {
        Endpoint::StartUpload { name, digest, mount: Some(_), from: Some(from) } if !principal.may(Action::Pull, from.as_str()) => {
            tracing::info!(from = %from, "mount refused: the caller may not pull the source; falling back to an upload");
            Endpoint::StartUpload { name, digest, mount: None, from: None }
        }
        other => other,
    };
    Ok((endpoint, principal))
}

/// The token endpoint: authenticates with Basic credentials (user and password, or an OIDC token
/// as the password), a bearer OIDC token, a `grant_type=password` form, or nothing (anonymous),
/// and answers with a registry token holding the requested scopes the caller may have.
pub(super) async fn token(
    registry: &Registry,
    form: bool,
    query_scopes: &[String],
    headers: &HeaderMap,
    body: storage::ByteStream,
    conn: &Connection,
) -> Result<Response<Body>, ApiError> {
    let Some(auth) = registry.auth() else {
        return Err(ApiError::Route(super::endpoint::RouteError::NotFound));
    };
    let mut scopes: Vec<String> = query_scopes.to_vec();
    let mut form_login: Option<(String, String)> = None;
    if form {
        let form = read_bounded(body, MAX_TOKEN_FORM)
            .await
            .map_err(|_| ApiError::BadRequest("unreadable token request".to_owned()))?
            .ok_or_else(|| ApiError::BadRequest("token request too large".to_owned()))?;
        let mut grant_type = None;
        let (mut username, mut password) = (None, None);
        for (key, value) in form_urlencoded::parse(&form) {
            match key.as_ref() {
                "scope" => scopes.extend(value.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
                "grant_type" => grant_type = Some(value.into_owned()),
                "username" => username = Some(value.into_owned()),
                "password" => password = Some(value.into_owned()),
                _ => {}
            }
        }
        match grant_type.as_deref() {
            Some("password") => form_login = Some((username.unwrap_or_default(), password.unwrap_or_default())),
            None => {}
            Some(_) => return Err(ApiError::BadRequest("unsupported grant_type; use password".to_owned())),
        }
    }
    // The token endpoint is where clients send credentials, so it asks for them plainly.
    let challenge = format!("Basic realm=\"{}\"", auth.config().service);
    let refused = |err: AuthError| ApiError::Challenged { err: Box::new(err.into()), challenge: challenge.clone() };
    let client = conn.peer.ip();
    let principal = match (form_login, credentials(headers)) {
        (Some((user, password)), _) => auth.login(&user, &password, client).await.map_err(refused)?,
        (None, Ok(Credentials::Basic { user, password })) => auth.login(&user, &password, client).await.map_err(refused)?,
        (None, Ok(Credentials::Bearer(oidc_token))) => auth.login_oidc(&oidc_token, client).await.map_err(refused)?,
        (None, Ok(Credentials::None)) => match &conn.client_cert {
            Some(name) => auth.certificate(name),
            None => auth.anonymous(),
        },
        (None, Err(())) => return Err(refused(AuthError::BadCredentials)),
    };
    let scopes: Vec<Scope> = scopes.iter().flat_map(|s| s.split(' ')).filter_map(Scope::parse).collect();
    let issued = auth.issue(&principal, &scopes);
    tracing::info!(principal = principal.name(), granted = ?issued.access, "token issued");
    let issued_at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(issued.issued_at);
    let body = serde_json::json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": humantime::format_rfc3339_seconds(issued_at).to_string(),
    });
    let mut response = json_response(StatusCode::OK, body.to_string());
    response.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A tower layer that refuses requests carrying credentials (Basic, any request to the token
/// endpoint, the console's login form) from an address blocked after too many failed logins, before they are read or
/// checked. Blocks per user happen in `auth::Auth::login`, which knows the user name.
#[derive(Clone)]
pub struct LoginThrottleLayer {
    registry: Arc<Registry>,
}

impl LoginThrottleLayer {
    /// The layer over `registry`'s auth (read per request, so reloads apply).
    pub fn new(registry: Arc<Registry>) -> LoginThrottleLayer {
        LoginThrottleLayer { registry }
    }
}

impl<S> tower::Layer<S> for LoginThrottleLayer {
    type Service = LoginThrottle<S>;

    fn layer(&self, inner: S) -> LoginThrottle<S> {
        LoginThrottle { inner, registry: self.registry.clone() }
    }
}

/// See [`LoginThrottleLayer`].
#[derive(Clone)]
pub struct LoginThrottle<S> {
    inner: S,
    registry: Arc<Registry>,
}

type BoxResponse = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S, B> tower::Service<Request<B>> for LoginThrottle<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> BoxResponse {
        if let Some(auth) = self.registry.auth() {
            let presents_credentials = req.uri().path() == TOKEN_PATH
                || (req.uri().path() == super::console::LOGIN_PATH && req.method() == http::Method::POST)
                || req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
            let peer = req.extensions().get::<Connection>().map(|c| c.peer.ip());
            if let (true, Some(peer)) = (presents_credentials, peer) {
                if let Some(wait) = auth.address_blocked(peer) {
                    tracing::info!(client = %peer, path = req.uri().path(), "login throttled");
                    let err = ApiError::from(AuthError::Throttled(wait));
                    return Box::pin(std::future::ready(Ok(super::error_response(&self.registry, &err))));
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// The API as a tower service, for stacking layers in `server`.
#[derive(Clone)]
pub struct ApiService {
    registry: Arc<Registry>,
}

impl ApiService {
    /// The API over `registry`.
    pub fn new(registry: Arc<Registry>) -> ApiService {
        ApiService { registry }
    }
}

impl<B> tower::Service<Request<B>> for ApiService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxResponse;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> BoxResponse {
        Box::pin(super::handle(self.registry.clone(), req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers() {
        let parse = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            match credentials(&headers) {
                Ok(Credentials::None) => "none".to_owned(),
                Ok(Credentials::Basic { user, password }) => format!("basic {user} {password}"),
                Ok(Credentials::Bearer(token)) => format!("bearer {token}"),
                Err(()) => "error".to_owned(),
            }
        };
        assert_eq!(parse("Basic YWxpY2U6cHc6d2l0aDpjb2xvbnM="), "basic alice pw:with:colons");
        assert_eq!(parse("basic YWxpY2U6cHc="), "basic alice pw");
        assert_eq!(parse("Bearer abc.def.ghi"), "bearer abc.def.ghi");
        assert_eq!(parse("Basic !!!"), "error");
        assert_eq!(parse("Basic YWxpY2U="), "error", "no colon");
        assert_eq!(parse("Digest x"), "error");
        assert_eq!(parse("Bearer "), "error");
        assert_eq!(scope_for("build/app", Action::Push), "repository:build/app:pull,push");
        assert_eq!(scope_for("build/app", Action::Delete), "repository:build/app:delete");
    }
}
