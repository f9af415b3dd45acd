//! The read-only web console: HTML pages about what is in the registry, what passed its gates,
//! what was promoted and what the audit log holds, rendered from templates compiled into the
//! binary (askama, checked when the crate compiles; HTML-escaped by default).
//!
//! Knows no HTTP and holds no state: each page is a function of the registry, read through the
//! `Registry` methods the API uses, and of the viewer's [`Principal`], and returns the page's
//! HTML. `api::console` routes `/ui/` requests, keeps sessions, sets headers and serves
//! [`STYLESHEET`] and [`SCRIPT`].
//!
//! A viewer sees only what they may pull: lists leave out what `Principal::may_list` (catalog)
//! or `Principal::may` (promotions; `admin` for audit records, as in the API) refuses, and a
//! page about a repository they may not pull is [`ConsoleError::NotFound`], exactly like one that
//! does not exist. The content of a manifest that its gate refuses to serve to this viewer is
//! withheld too: its layer and child digests would let a client fetch what the gate stops.
//!
//! Every listing is bounded per request (see each page's module): nothing reads the whole
//! catalog, tag list or audit log to answer one page.

mod activity;
mod format;
mod image;
mod repositories;
mod repository;

use askama::Template;

use crate::auth::Principal;
use crate::registry::RegistryError;

pub use activity::{audit, promotions, AuditQuery};
pub use image::image;
pub use repositories::{repositories, RepositoriesQuery};
pub use repository::repository;

/// The console's stylesheet, served by `api::console` as a file (the CSP allows no inline style).
pub const STYLESHEET: &str = include_str!("static/console.css");
/// The console's only script, served as a file (the CSP allows no inline script): copy buttons.
/// Every page works without it.
pub const SCRIPT: &str = include_str!("static/console.js");
/// The console's icon, served as a file (browsers ask for one; without it every page logs a 404).
pub const ICON: &str = include_str!("static/favicon.svg");

/// Why a page cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Nothing there, or nothing this viewer may see (the two are not told apart).
    #[error("not found")]
    NotFound,
    /// A query parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A template failed to render.
    #[error("rendering: {0}")]
    Render(#[from] askama::Error),
}

/// Who is looking, as the page header shows it.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The principal the pages are filtered for.
    pub principal: Principal,
    /// Whether the registry has `[auth]` (else everyone is the open principal and there is no
    /// login).
    pub auth: bool,
}

impl Viewer {
    /// The name shown as signed in, if the viewer signed in.
    fn signed_in(&self) -> Option<&str> {
        (self.auth && !self.principal.is_unauthenticated()).then(|| self.principal.name())
    }
}

/// The header every page shares.
struct Nav {
    /// Which section is current: `repositories`, `promotions`, `audit` or empty.
    section: &'static str,
    /// The signed-in user's name.
    user: Option<String>,
    /// Whether there is a login at all.
    auth: bool,
}

impl Nav {
    fn new(viewer: &Viewer, section: &'static str) -> Nav {
        Nav { section, user: viewer.signed_in().map(str::to_owned), auth: viewer.auth }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    nav: Nav,
    next: &'a str,
    message: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Nav,
    title: &'a str,
    message: &'a str,
}

/// The login form; `next` is where to go after it (a console path), `message` why it is shown
/// again.
pub fn login(viewer: &Viewer, next: &str, message: Option<&str>) -> Result<String, ConsoleError> {
    Ok(LoginPage { nav: Nav::new(viewer, ""), next, message }.render()?)
}

/// A page that says what went wrong, in words fit for the viewer.
pub fn error(viewer: &Viewer, title: &str, message: &str) -> Result<String, ConsoleError> {
    Ok(ErrorPage { nav: Nav::new(viewer, ""), title, message }.render()?)
}
