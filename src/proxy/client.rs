//! HTTP to one upstream registry: the only place portcullis sends requests to another registry.
//!
//! Every request is bounded: connecting and each read by the upstream's `timeout`, small answers
//! (manifests, tokens, error bodies, evidence) also as a whole, and read only up to a size
//! limit; blob bodies are streamed by the caller, which bounds their size and their rate.
//!
//! Authentication follows the upstream's `WWW-Authenticate` challenge: Basic with the configured
//! credentials, or a token from the realm of a Bearer challenge (sent the credentials when there
//! are some, anonymous otherwise), cached per repository scope until shortly before it expires.
//! The challenge is remembered, so later requests authenticate before they are refused.
//!
//! Redirects: at most [`MAX_REDIRECTS`] are followed (registries send blob GETs to their object
//! store or CDN, on other hosts), only to https URLs (to loopback http URLs only when the
//! upstream itself is a loopback http URL), and credentials are never sent to another host
//! (reqwest drops `Authorization` when a redirect changes host or port). A token realm is
//! held to the same rule, since it is sent the credentials. Neither may lead further into the
//! network than the upstream stands ([`reach`]: a public upstream cannot send the proxy to a
//! private, loopback or link-local address, by IP literal or by a name that resolves there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use secrecy::{ExposeSecret as _, SecretString};

use super::auth::{self, Challenge, Tokens};
use super::reach::{OutOfReach, Reach, Resolver};
use super::upstream::UpstreamConfig;
use super::{ProxyError, Status};
use crate::metrics::Metrics;

/// Redirects followed per request.
pub(super) const MAX_REDIRECTS: usize = 3;
/// Largest error body read from an upstream, for the message it holds.
const MAX_ERROR_BODY: usize = 4 << 10;
/// Longest piece of upstream text quoted in an error message.
const MAX_QUOTED: usize = 200;

/// A request method the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// Fetch.
    Get,
    /// Ask (tags: Docker Hub does not count HEADs against its rate limit).
    Head,
}

/// How long a request may take as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Size {
    /// A small answer (manifest, token, listing): the whole exchange within the timeout.
    Small,
    /// A blob: each read within the timeout; the caller bounds the total.
    Stream,
}

/// The HTTP client of one upstream, with its credentials and tokens.
pub(super) struct Client {
    http: reqwest::Client,
    config: Arc<UpstreamConfig>,
    password: Option<SecretString>,
    tokens: Tokens,
    reach: Arc<Reach>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

impl Client {
    /// A client for `config`, sending `password` (already resolved) with its user.
    pub(super) fn new(config: Arc<UpstreamConfig>, password: Option<SecretString>, status: Arc<Status>, metrics: Arc<Metrics>) -> Result<Client, String> {
        let allow_loopback_http = config.url.is_plain_http();
        let reach = Reach::new(config.url.url());
        let redirect_reach = reach.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match redirect_allowed(attempt.url(), allow_loopback_http).and_then(|()| redirect_reach.check_url(attempt.url())) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            }
        });
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .redirect(policy)
            .dns_resolver(Arc::new(Resolver(reach.clone())))
            // An upstream is reached directly: no proxy from the environment reroutes it.
            .no_proxy()
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        builder = match &config.ca_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|err| format!("ca: {err}"))?;
                certs.into_iter().fold(builder.tls_built_in_root_certs(false), reqwest::ClientBuilder::add_root_certificate)
            }
            // The system's roots only.
            None => builder.tls_built_in_webpki_certs(false).tls_built_in_native_certs(true),
        };
        let http = builder.build().map_err(|err| format!("cannot build an HTTP client: {err}"))?;
        Ok(Client { http, config, password, tokens: Tokens::default(), reach, status, metrics })
    }

    /// `GET`/`HEAD /v2/<repo>/<path>` on the upstream, authenticated as it asks; the response when
    /// it is a success, else the upstream's refusal as a [`ProxyError`] that names the upstream.
    pub(super) async fn send(&self, method: Method, repo: &str, path: &str, accept: &[&str], size: Size) -> Result<reqwest::Response, ProxyError> {
        let outcome = self.send_authenticated(method, repo, path, accept, size).await;
        // Failures were counted where they were made (`failure`).
        if matches!(outcome, Ok(_) | Err(ProxyError::NotFound { .. })) {
            self.status.succeeded();
        }
        outcome
    }

    async fn send_authenticated(&self, method: Method, repo: &str, path: &str, accept: &[&str], size: Size) -> Result<reqwest::Response, ProxyError> {
        let scope = format!("repository:{repo}:pull");
        let url = self
            .config
            .url
            .url()
            .join(&format!("v2/{repo}/{path}"))
            .map_err(|err| self.invalid(format!("cannot make a URL of {repo}/{path}: {err}")))?;
        let what = format!("{repo}/{path}");
        let mut authorization = match self.tokens.challenge() {
            Some(challenge) => self.authorization(&challenge, &scope, false).await?,
            None => None,
        };
        for retried in [false, true] {
            let res = self.request(method, url.clone(), accept, authorization.as_ref(), size).await?;
            if res.status() != reqwest::StatusCode::UNAUTHORIZED {
                return self.check(res, &what).await;
            }
            let challenge = res.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(auth::parse_challenge);
            let detail = error_detail(res).await;
            let Some(challenge) = challenge.filter(|_| !retried) else {
                return Err(self.refused(format!("answered 401 Unauthorized for {what} {}{detail}", self.as_whom())));
            };
            self.tokens.forget(&scope);
            authorization = self.authorization(&challenge, &scope, true).await?;
            // Remembered only once it worked: a challenge that cannot be met is not tried first
            // on every later request.
            self.tokens.set_challenge(challenge);
        }
        unreachable!("the second 401 returns above")
    }

    /// The `Authorization` value for `challenge` and `scope`: a cached token, a new one, or the
    /// Basic credentials. `None` means anonymous. After a refusal (`refused`), Basic without
    /// credentials is an error: nothing else could pass.
    async fn authorization(&self, challenge: &Challenge, scope: &str, refused: bool) -> Result<Option<SecretString>, ProxyError> {
        match challenge {
            Challenge::Basic => match self.basic() {
                Some(basic) => Ok(Some(basic)),
                None if refused => Err(self.refused("asks for Basic credentials, and none are configured (user, password_file)".to_owned())),
                None => Ok(None),
            },
            Challenge::Bearer { realm, service } => {
                if let Some(token) = self.tokens.get(scope) {
                    return Ok(Some(format!("Bearer {}", token.expose_secret()).into()));
                }
                let issued = self.fetch_token(realm, service.as_deref(), scope).await?;
                self.tokens.put(scope, &issued);
                Ok(Some(format!("Bearer {}", issued.token.expose_secret()).into()))
            }
        }
    }

    /// The Docker token flow: `GET <realm>?service=&scope=`, with the credentials when there are.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<auth::IssuedToken, ProxyError> {
        let mut url = reqwest::Url::parse(realm).map_err(|err| self.invalid(format!("names a token realm that is no URL ({}): {err}", quote(realm))))?;
        redirect_allowed(&url, self.config.url.is_plain_http())
            .and_then(|()| self.reach.check_url(&url))
            .map_err(|why| self.invalid(format!("names a token realm that is refused: {why}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let res = self.request(Method::Get, url, &[], self.basic().as_ref(), Size::Small).await?;
        let status = res.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let detail = error_detail(res).await;
            return Err(self.refused(format!("its token endpoint answered {status} {}{detail}", self.as_whom())));
        }
        let res = self.check(res, "its token endpoint").await?;
        let bytes = self.read_small(res, auth::MAX_TOKEN_RESPONSE, "token response").await?;
        auth::parse_token_response(&bytes).map_err(|err| self.invalid(err))
    }

    /// `Basic <base64(user:password)>`, when credentials are configured.
    fn basic(&self) -> Option<SecretString> {
        use base64::Engine as _;
        let credentials = self.config.credentials.as_ref()?;
        let password = self.password.as_ref().map_or("", |p| p.expose_secret());
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", credentials.user));
        Some(format!("Basic {encoded}").into())
    }

    /// Who the proxy is to the upstream, for messages: `as user "x"` or `anonymously`.
    fn as_whom(&self) -> String {
        match &self.config.credentials {
            Some(credentials) => format!("to the credentials of user {}", quote(&credentials.user)),
            None => "to an anonymous request (no user configured)".to_owned(),
        }
    }

    async fn request(
        &self,
        method: Method,
        url: reqwest::Url,
        accept: &[&str],
        authorization: Option<&SecretString>,
        size: Size,
    ) -> Result<reqwest::Response, ProxyError> {
        let mut request = match method {
            Method::Get => self.http.get(url),
            Method::Head => self.http.head(url),
        };
        if !accept.is_empty() {
            request = request.header(reqwest::header::ACCEPT, accept.join(", "));
        }
        if let Some(authorization) = authorization {
            let mut value = reqwest::header::HeaderValue::from_str(authorization.expose_secret())
                .map_err(|_| self.invalid("gave a token that cannot be sent in a header".to_owned()))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if size == Size::Small {
            request = request.timeout(self.config.timeout);
        }
        let started = Instant::now();
        let sent = request.send().await;
        self.metrics.proxy_upstream_latency.with_label_values(&[self.config.name.as_str()]).observe(started.elapsed().as_secs_f64());
        sent.map_err(|err| self.transport_error(&err))
    }

    /// A success passes; anything else becomes the error it means, with the upstream's message.
    async fn check(&self, res: reqwest::Response, what: &str) -> Result<reqwest::Response, ProxyError> {
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let detail = error_detail(res).await;
        let message = format!("answered {status} for {what}{detail}");
        Err(match status.as_u16() {
            404 => ProxyError::NotFound { upstream: self.config.name.to_string(), detail: message },
            401 | 403 => self.refused(message),
            429 | 500..=599 => self.unavailable(message),
            _ => self.invalid(message),
        })
    }

    /// Reads a small answer whole, refusing one over `limit` bytes (by its `Content-Length`, or
    /// as it arrives).
    pub(super) async fn read_small(&self, mut res: reqwest::Response, limit: usize, what: &str) -> Result<Bytes, ProxyError> {
        if res.content_length().is_some_and(|len| len > limit as u64) {
            return Err(self.invalid(format!("announced a {what} of {} bytes; at most {limit} are read", res.content_length().unwrap_or_default())));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = res.chunk().await.map_err(|err| self.transport_error(&err))? {
            if buf.len() + chunk.len() > limit {
                return Err(self.invalid(format!("sent a {what} of more than {limit} bytes")));
            }
            buf.extend_from_slice(&chunk);
        }
        self.metrics.proxy_upstream_bytes.with_label_values(&[self.config.name.as_str()]).inc_by(buf.len() as u64);
        Ok(buf.freeze())
    }

    /// A failure to send or to read: unreachable, timed out, or a refused redirect.
    pub(super) fn transport_error(&self, err: &reqwest::Error) -> ProxyError {
        if err.is_redirect() {
            return self.invalid(format!("redirected where the proxy does not follow: {}", source_chain(err)));
        }
        if OutOfReach::caused(err) {
            return self.invalid(format!("sent the proxy where it does not go: {}", source_chain(err)));
        }
        let detail = if err.is_timeout() {
            format!("timed out after {}", humantime::format_duration(self.config.timeout))
        } else if err.is_connect() {
            format!("cannot be reached at {}: {}", self.config.url, source_chain(err))
        } else {
            format!("failed: {}", source_chain(err))
        };
        self.unavailable(detail)
    }

    /// The upstream is down, slow or overloaded.
    pub(super) fn unavailable(&self, detail: String) -> ProxyError {
        self.failure(ProxyError::Unavailable { upstream: self.config.name.to_string(), detail })
    }

    /// The upstream refused the proxy's access.
    fn refused(&self, detail: String) -> ProxyError {
        self.failure(ProxyError::Refused { upstream: self.config.name.to_string(), detail })
    }

    /// The upstream answered something that cannot be right.
    pub(super) fn invalid(&self, detail: String) -> ProxyError {
        self.failure(ProxyError::Invalid { upstream: self.config.name.to_string(), detail })
    }

    /// Every failure is made here once: it is the upstream's last error, and counted.
    fn failure(&self, err: ProxyError) -> ProxyError {
        self.status.failed(&err);
        self.metrics.proxy_upstream_errors.with_label_values(&[self.config.name.as_str(), err.kind()]).inc();
        err
    }

    /// Sets the gauge of the bytes cached from the upstream.
    pub(super) fn cache_gauge(&self, bytes: u64) {
        self.metrics.proxy_cache_bytes.with_label_values(&[self.config.name.as_str()]).set(bytes as i64);
    }

    /// Counts bytes fetched from the upstream.
    pub(super) fn count_bytes(&self, n: u64) {
        self.metrics.proxy_upstream_bytes.with_label_values(&[self.config.name.as_str()]).inc_by(n);
    }
}

/// Whether a redirect (or a token realm) may go to `url`: https, or loopback http when the
/// upstream itself is loopback http.
fn redirect_allowed(url: &reqwest::Url, allow_loopback_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_loopback_http && super::upstream::is_loopback_host(url.host_str().unwrap_or_default()) => Ok(()),
        scheme => Err(format!("{scheme}:// URLs to {} are not followed (https only)", url.host_str().unwrap_or("no host"))),
    }
}

/// The error's chain of causes, without URLs (which may carry presigned signatures).
fn source_chain(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(cause) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.is_empty() {
        text = "no further detail".to_owned();
    }
    quote_plain(&text)
}

/// `: "<message>"` from an upstream's error body (the OCI error form's first message, or the
/// start of the text), bounded and made printable; empty when there is none.
async fn error_detail(mut res: reqwest::Response) -> String {
    let mut buf = BytesMut::new();
    while buf.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(Duration::from_secs(5), res.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk[..chunk.len().min(MAX_ERROR_BODY - buf.len())]),
            _ => break,
        }
    }
    let text = match serde_json::from_slice::<serde_json::Value>(&buf) {
        Ok(json) => {
            let error = &json["errors"][0];
            match (error["code"].as_str(), error["message"].as_str()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => String::new(),
            }
        }
        Err(_) => String::from_utf8_lossy(&buf).into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {}", quote(text))
    }
}

/// `text`, quoted, printable and at most [`MAX_QUOTED`] characters: upstream text goes into
/// messages and logs, where a hostile upstream must not inject lines.
pub(super) fn quote(text: &str) -> String {
    format!("\"{}\"", quote_plain(text))
}

fn quote_plain(text: &str) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_QUOTED).collect();
    if text.chars().count() > MAX_QUOTED {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_and_realms() {
        let check = |url: &str, loopback_upstream: bool, ok: bool| {
            let parsed = reqwest::Url::parse(url).unwrap();
            assert_eq!(redirect_allowed(&parsed, loopback_upstream).is_ok(), ok, "{url} (loopback upstream: {loopback_upstream})");
        };
        check("https://production.cloudflare.docker.com/registry-v2/x", false, true);
        check("https://auth.docker.io/token", false, true);
        check("http://169.254.169.254/latest/meta-data/", false, false);
        check("http://169.254.169.254/latest/meta-data/", true, false);
        check("http://127.0.0.1:9000/bucket/blob", true, true);
        check("http://127.0.0.1:9000/bucket/blob", false, false);
        check("file:///etc/passwd", true, false);
    }

    #[test]
    fn quoted_upstream_text_is_bounded_and_printable() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\r\nInjected: 1"), "\"a  Injected: 1\"");
        let long = quote(&"x".repeat(500));
        assert_eq!(long.chars().count(), MAX_QUOTED + 3);
    }
}
