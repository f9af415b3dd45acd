//! The HTTP side of the web console (`/ui/`): its routes, the login form and the session cookie,
//! the stylesheet and script as files, and the headers every console response carries. The
//! pages themselves are `console`'s, which knows no HTTP.
//!
//! A session is a short-lived token in a cookie (`auth::Auth::issue_session`: signed, for the
//! console's own audience) that is `HttpOnly`, `SameSite=Strict`, `Secure` over TLS and scoped
//! to `/ui`; nothing secret travels in a URL. Login and logout are `POST`s that must come from
//! the console's own origin. Without `[auth]` the console is open, like the API.
//!
//! Errors are HTML pages with the status `ApiError::wire` gives the same error on the API.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::endpoint::RouteError;
use super::error::ApiError;
use super::{full, read_bounded, Body, Caller};
use crate::auth::{AuthError, Principal};
use crate::console::{self, AuditQuery, ConsoleError, RepositoriesQuery, Viewer};
use crate::names::RepoName;
use crate::registry::Registry;

/// The console's root; every console path is below it.
pub const ROOT: &str = "/ui";
/// Where the login form posts.
pub const LOGIN_PATH: &str = "/ui/login";
/// The session cookie's name.
const SESSION_COOKIE: &str = "portcullis_session";
/// Largest login form.
const MAX_LOGIN_FORM: usize = 16 << 10;
/// Scripts, styles and images only from the registry itself, none inline; no frames, no plugins,
/// forms only to the console.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A console request, routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /ui/`: to the repositories.
    Home,
    /// `GET /ui/repositories?q=&match=contains&after=`
    Repositories(RepositoriesQuery),
    /// `GET /ui/r/<name>?after=`
    Repository { name: RepoName, after: Option<String> },
    /// `GET /ui/r/<name>/@<digest>`
    Image { name: RepoName, digest: storage::Digest },
    /// `GET /ui/promotions?before=`
    Promotions { before: Option<u64> },
    /// `GET /ui/audit?kind=&repository=&actor=&before=`
    Audit(AuditQuery),
    /// `GET /ui/login?next=`
    LoginForm { next: String },
    /// `POST /ui/login`
    Login,
    /// `POST /ui/logout`
    Logout,
    /// `GET /ui/static/console.css`
    Stylesheet,
    /// `GET /ui/static/console.js`
    Script,
    /// `GET /ui/static/favicon.svg`
    Icon,
    /// Any other path below `/ui/`, or a malformed name or digest in one: a 404 page.
    NotFound,
}

/// Whether `path` is the console's.
pub fn is_console_path(path: &str) -> bool {
    path == ROOT || path.strip_prefix(ROOT).is_some_and(|rest| rest.starts_with('/'))
}

/// Routes a console path (see [`is_console_path`]).
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Route, RouteError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
    let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let number = |key: &str| param(key).parse::<u64>().ok();
    let route = match path {
        "/ui" | "/ui/" => Route::Home,
        "/ui/repositories" => Route::Repositories(RepositoriesQuery {
            q: param("q"),
            contains: param("match") == "contains",
            after: param("after").parse().ok(),
        }),
        "/ui/promotions" => Route::Promotions { before: number("before") },
        "/ui/audit" => Route::Audit(AuditQuery {
            kind: param("kind"),
            repository: param("repository"),
            actor: param("actor"),
            before: number("before"),
        }),
        LOGIN_PATH if *method == Method::POST => return Ok(Route::Login),
        LOGIN_PATH => Route::LoginForm { next: param("next") },
        "/ui/logout" if *method == Method::POST => return Ok(Route::Logout),
        "/ui/logout" => return Err(RouteError::MethodNotAllowed),
        "/ui/static/console.css" => Route::Stylesheet,
        "/ui/static/console.js" => Route::Script,
        "/ui/static/favicon.svg" => Route::Icon,
        _ => match path.strip_prefix("/ui/r/") {
            Some(rest) => repository_route(rest, param("after")),
            None => Route::NotFound,
        },
    };
    match *method {
        Method::GET | Method::HEAD => Ok(route),
        _ => Err(RouteError::MethodNotAllowed),
    }
}

/// `<name>` or `<name>/@<digest>`: a digest cannot be part of a name (`@` is not in the name
/// alphabet), so the last `/@` splits them.
fn repository_route(rest: &str, after: String) -> Route {
    match rest.rsplit_once("/@") {
        Some((name, digest)) => match (name.parse(), digest.parse()) {
            (Ok(name), Ok(digest)) => Route::Image { name, digest },
            _ => Route::NotFound,
        },
        None => match rest.trim_end_matches('/').parse() {
            Ok(name) => Route::Repository { name, after: (!after.is_empty()).then_some(after) },
            Err(_) => Route::NotFound,
        },
    }
}

/// Sets the headers every console response carries, whatever made it: the CSP, no framing, no
/// sniffing, no referrer leaving the registry, no caching of pages that depend on who asks.
pub fn secure(response: &mut Response<Body>) {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
}

/// Answers a console request. Never an error: failures are HTML pages.
pub(super) async fn handle(
    registry: &Registry,
    route: Route,
    caller: &Caller,
    headers: &HeaderMap,
    body: storage::ByteStream,
) -> Result<Response<Body>, ApiError> {
    let viewer = viewer(registry, &caller.principal, headers);
    let page = match route {
        Route::Home => return Ok(redirect("/ui/repositories", None)),
        Route::Stylesheet => return Ok(asset("text/css; charset=utf-8", console::STYLESHEET)),
        Route::Script => return Ok(asset("text/javascript; charset=utf-8", console::SCRIPT)),
        Route::Icon => return Ok(asset("image/svg+xml", console::ICON)),
        Route::Login => return login(registry, &viewer, caller, headers, body).await,
        Route::Logout => return Ok(logout(caller, headers)),
        Route::LoginForm { next } => console::login(&viewer, &next_page(&next), None),
        Route::Repositories(query) => console::repositories(registry, &viewer, &query).await,
        Route::Repository { name, after } => console::repository(registry, &viewer, &name, after.as_deref()).await,
        Route::Image { name, digest } => console::image(registry, &viewer, &name, &digest).await,
        Route::Promotions { before } => console::promotions(registry, &viewer, before).await,
        Route::Audit(query) => console::audit(registry, &viewer, &query).await,
        Route::NotFound => Err(ConsoleError::NotFound),
    };
    Ok(match page {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(err) => error_page(&viewer, err),
    })
}

/// Who the pages are for: everyone is the open principal without `[auth]`; otherwise the
/// credentials of the request when it has any (Basic, a token, a client certificate), else the
/// session cookie's user, else anonymous.
fn viewer(registry: &Registry, principal: &Principal, headers: &HeaderMap) -> Viewer {
    let Some(auth) = registry.auth() else {
        return Viewer { principal: Principal::open(), auth: false };
    };
    if !principal.is_unauthenticated() {
        return Viewer { principal: principal.clone(), auth: true };
    }
    let session = cookie(headers, SESSION_COOKIE).and_then(|value| match auth.verify_session(value) {
        Ok(principal) => Some(principal),
        Err(err) => {
            tracing::debug!(reason = %err, "console session refused");
            None
        }
    });
    Viewer { principal: session.unwrap_or_else(|| auth.anonymous()), auth: true }
}

/// `POST /ui/login`: checks the user and password as the API does (throttled alike), and on
/// success sets the session cookie and goes on to the `next` page.
async fn login(
    registry: &Registry,
    viewer: &Viewer,
    caller: &Caller,
    headers: &HeaderMap,
    body: storage::ByteStream,
) -> Result<Response<Body>, ApiError> {
    if !same_origin(headers) {
        return Ok(error_page(viewer, ConsoleError::BadRequest("the login form must be sent from this registry's console".to_owned())));
    }
    let Some(auth) = registry.auth() else {
        return Ok(redirect("/ui/repositories", None));
    };
    let form = read_bounded(body, MAX_LOGIN_FORM)
        .await
        .map_err(|_| ApiError::BadRequest("unreadable login form".to_owned()))?
        .ok_or_else(|| ApiError::BadRequest("login form too large".to_owned()))?;
    let (mut user, mut password, mut next) = (String::new(), String::new(), String::new());
    for (key, value) in form_urlencoded::parse(&form) {
        match key.as_ref() {
            "username" => user = value.into_owned(),
            "password" => password = value.into_owned(),
            "next" => next = value.into_owned(),
            _ => {}
        }
    }
    let next = next_page(&next);
    let refused = |err: AuthError| {
        let status = ApiError::Auth(err.clone()).wire().status;
        let message = match err {
            AuthError::BadCredentials => "Wrong user name or password.".to_owned(),
            other => other.to_string(),
        };
        let html = console::login(viewer, &next, Some(&message)).unwrap_or_else(|_| message.clone());
        html_response(status, html)
    };
    let principal = match auth.login(&user, &password, caller.connection.peer.ip()).await {
        Ok(principal) => principal,
        Err(err) => return Ok(refused(err)),
    };
    let Some(session) = auth.issue_session(&principal) else {
        return Ok(refused(AuthError::BadCredentials));
    };
    tracing::info!(principal = principal.name(), "console login");
    let max_age = crate::auth::SESSION_TTL.as_secs();
    Ok(redirect(&next, Some(session_cookie(&session, max_age, caller.connection.tls))))
}

/// `POST /ui/logout`: the cookie is replaced by an expired one.
fn logout(caller: &Caller, headers: &HeaderMap) -> Response<Body> {
    if !same_origin(headers) {
        return redirect("/ui/repositories", None);
    }
    redirect("/ui/login", Some(session_cookie("", 0, caller.connection.tls)))
}

fn session_cookie(value: &str, max_age: u64, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path={ROOT}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// The value of cookie `name`, if the request carries it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether a form was posted from this registry: browsers send `Origin` with every `POST`, and
/// it must name the host the request was sent to. (The session cookie is `SameSite=Strict`, so
/// no other site can post as a signed-in user; this also stops another site from signing a
/// visitor in as someone else.)
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()), host) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").is_some_and(|(_, origin_host)| origin_host == host),
        (Some(_), None) => false,
    }
}

/// Where to go after the login: a console page, never another site (`//host`, `/\host`).
fn next_page(next: &str) -> String {
    let safe = next.starts_with("/ui/") && !next.contains("//") && !next.contains('\\') && !next.chars().any(char::is_control);
    if safe { next.to_owned() } else { "/ui/repositories".to_owned() }
}

fn error_page(viewer: &Viewer, err: ConsoleError) -> Response<Body> {
    let api_error = match err {
        ConsoleError::NotFound => ApiError::Route(RouteError::NotFound),
        ConsoleError::BadRequest(message) => ApiError::BadRequest(message),
        ConsoleError::Registry(err) => ApiError::Registry(err),
        ConsoleError::Render(err) => ApiError::Registry(crate::registry::RegistryError::Internal(format!("console template: {err}"))),
    };
    let status = api_error.wire().status;
    let (title, message) = if status == StatusCode::NOT_FOUND {
        let hint = if viewer.auth && viewer.principal.is_unauthenticated() { " Sign in to see more." } else { "" };
        ("Not found".to_owned(), format!("There is nothing here, or nothing you may see.{hint}"))
    } else if status.is_server_error() {
        // Logged once, inside the request span; the page says nothing internal.
        tracing::error!(error = %api_error, "console page failed");
        ("Something went wrong".to_owned(), "The registry could not answer; the cause is in its log.".to_owned())
    } else {
        ("Cannot show this".to_owned(), api_error.to_string())
    };
    let html = console::error(viewer, &title, &message).unwrap_or(message);
    html_response(status, html)
}

fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut response = Response::new(full(html.clone()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(html.len()));
    response
}

fn asset(content_type: &'static str, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A `303 See Other` to `location` (a console path), setting `cookie` when given.
fn redirect(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut response = Response::new(super::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    // Both are built from console paths and a token (base64url and dots): valid header values.
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if let Some(cookie) = cookie.and_then(|cookie| HeaderValue::from_str(&cookie).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, query: Option<&str>, expected: Result<Route, RouteError>) {
        assert_eq!(route(&method, path, query), expected, "{method} {path}?{query:?}");
    }

    #[test]
    fn routes() {
        let digest: storage::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let name = |text: &str| text.parse::<RepoName>().unwrap();
        check(Method::GET, "/ui", None, Ok(Route::Home));
        check(Method::GET, "/ui/", None, Ok(Route::Home));
        check(
            Method::GET,
            "/ui/repositories",
            Some("q=prod%2F&match=contains&after=a/b"),
            Ok(Route::Repositories(RepositoriesQuery { q: "prod/".into(), contains: true, after: Some(name("a/b")) })),
        );
        check(Method::GET, "/ui/repositories", Some("after=..%2Fx"), Ok(Route::Repositories(RepositoriesQuery::default())));
        check(Method::GET, "/ui/r/prod/app", Some("after=v1"), Ok(Route::Repository { name: name("prod/app"), after: Some("v1".into()) }));
        check(Method::GET, &format!("/ui/r/prod/app/@{digest}"), None, Ok(Route::Image { name: name("prod/app"), digest: digest.clone() }));
        check(Method::GET, "/ui/r/prod/app/@sha256:zz", None, Ok(Route::NotFound));
        check(Method::GET, "/ui/r/../etc", None, Ok(Route::NotFound));
        check(Method::GET, "/ui/r/Prod", None, Ok(Route::NotFound));
        check(Method::GET, "/ui/promotions", Some("before=7"), Ok(Route::Promotions { before: Some(7) }));
        check(Method::GET, "/ui/audit", Some("kind=pull_denied&before=x"), Ok(Route::Audit(AuditQuery { kind: "pull_denied".into(), ..AuditQuery::default() })));
        check(Method::GET, "/ui/login", Some("next=/ui/audit"), Ok(Route::LoginForm { next: "/ui/audit".into() }));
        check(Method::POST, "/ui/login", None, Ok(Route::Login));
        check(Method::POST, "/ui/logout", None, Ok(Route::Logout));
        check(Method::GET, "/ui/logout", None, Err(RouteError::MethodNotAllowed));
        check(Method::POST, "/ui/repositories", None, Err(RouteError::MethodNotAllowed));
        check(Method::GET, "/ui/static/console.css", None, Ok(Route::Stylesheet));
        check(Method::GET, "/ui/elsewhere", None, Ok(Route::NotFound));
        assert!(is_console_path("/ui") && is_console_path("/ui/x") && !is_console_path("/uix") && !is_console_path("/v2/ui"));
    }

    #[test]
    fn login_never_leads_elsewhere() {
        for (next, expected) in [
            ("/ui/audit?kind=x", "/ui/audit?kind=x"),
            ("", "/ui/repositories"),
            ("https://evil.example/", "/ui/repositories"),
            ("//evil.example/ui/", "/ui/repositories"),
            ("/ui//evil.example", "/ui/repositories"),
            ("/ui/\\evil", "/ui/repositories"),
            ("/v2/_catalog", "/ui/repositories"),
        ] {
            assert_eq!(next_page(next), expected, "{next}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:5000"));
        assert!(same_origin(&headers), "no Origin: not a cross-site browser post");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:5000"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b; portcullis_session=tok.en; c=d"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("tok.en"));
    }
}
