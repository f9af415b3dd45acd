//! Routing: `(method, path, query)` -> [`Endpoint`], with names, digests and upload ids parsed
//! once, here.
//!
//! Paths without a repository name are the rows of one table (`fixed_path`). Repository names
//! contain `/`, so the others are recognised by their suffix (`.../manifests/<ref>`,
//! `.../blobs/uploads/<id>`, ...; `split_suffix`) and everything before it must be a valid name.
//! Ids cite the distribution-spec's endpoint table.

use http::Method;
use storage::digest::DigestError;
use storage::Digest;

use crate::admission::Webhook;
use crate::auth::rules::Action;
use crate::names::{ImageRef, NameError, Reference, RepoName, Tag, UploadId};

/// A recognised request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// end-1: `GET /v2/`
    Base,
    /// end-2: `GET`/`HEAD /v2/<name>/blobs/<digest>`
    GetBlob { name: RepoName, digest: Digest, head: bool },
    /// end-10: `DELETE /v2/<name>/blobs/<digest>`
    DeleteBlob { name: RepoName, digest: Digest },
    /// end-4a/4b/11: `POST /v2/<name>/blobs/uploads/` (session, monolithic with `digest`, or mount)
    StartUpload { name: RepoName, digest: Option<Digest>, mount: Option<Digest>, from: Option<RepoName> },
    /// end-5: `PATCH /v2/<name>/blobs/uploads/<id>`
    PatchUpload { name: RepoName, upload_id: UploadId },
    /// end-6: `PUT /v2/<name>/blobs/uploads/<id>?digest=`
    FinishUpload { name: RepoName, upload_id: UploadId, digest: Digest },
    /// end-13: `GET /v2/<name>/blobs/uploads/<id>`
    UploadStatus { name: RepoName, upload_id: UploadId },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`
    CancelUpload { name: RepoName, upload_id: UploadId },
    /// end-3: `GET`/`HEAD /v2/<name>/manifests/<reference>`
    GetManifest { name: RepoName, reference: Reference, head: bool },
    /// end-7: `PUT /v2/<name>/manifests/<reference>` (with `?tag=` repeated, v1.1.1)
    PutManifest { name: RepoName, reference: Reference, tags: Vec<Tag> },
    /// end-9: `DELETE /v2/<name>/manifests/<reference>`
    DeleteManifest { name: RepoName, reference: Reference },
    /// end-8a/8b: `GET /v2/<name>/tags/list?n=&last=`
    ListTags { name: RepoName, n: Option<usize>, last: Option<String> },
    /// end-12a/12b: `GET /v2/<name>/referrers/<digest>?artifactType=`
    Referrers { name: RepoName, digest: Digest, artifact_type: Option<String> },
    /// `GET /v2/_catalog?n=&last=`
    Catalog { n: Option<usize>, last: Option<RepoName> },
    /// `GET /api/v1/verdict?image=REPO[:TAG|@DIGEST][&target=REPO]`: with `target`, the verdict
    /// of the target's gate on the image's evidence (would a promotion pass?).
    Verdict { image: ImageRef, target: Option<RepoName> },
    /// `GET /api/v1/keys`: the registry's public signing key.
    Keys,
    /// `POST /api/v1/promotions`
    Promote,
    /// `GET /api/v1/promotions?repository=`
    ListPromotions { repository: RepoName },
    /// `GET /api/v1/audit?kind=&repository=&after=&limit=`
    Audit { kind: Option<String>, repository: Option<String>, after: u64, limit: Option<usize> },
    /// `GET /healthz`
    Health,
    /// `GET /readyz`
    Ready,
    /// `GET /metrics`
    Metrics,
    /// `GET`/`POST /auth/token?service=&scope=`: the Docker token endpoint.
    Token { scopes: Vec<String>, form: bool },
    /// `GET /admission/healthz`: liveness of the admission endpoints, behind a client certificate.
    AdmissionHealth,
    /// `GET /api/v1/upstreams`: the upstreams, their health and caches.
    Upstreams,
    /// `POST /api/v1/upstreams/<name>/accept?repository=&tag=[&digest=]`: accept the digest a
    /// held upstream tag moved to.
    AcceptUpstreamTag { upstream: String, repository: RepoName, tag: Tag, digest: Option<Digest> },
    /// `POST /admission/mutate`, `POST /admission/validate`: an `AdmissionReview`, behind a client
    /// certificate.
    AdmissionReview { webhook: Webhook },
    /// `GET /api/v1/drift`: admitted digests that fail their gate now.
    Drift,
    /// `/ui/...`: the web console, which checks access page by page (`api::console`).
    Console(super::console::Route),
}

/// What a request needs from its caller before it is dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// Nothing: health, metrics, the token endpoint (which authenticates by itself).
    Nothing,
    /// Any successful authentication (or a registry token): `GET /v2/`, which clients probe.
    Login,
    /// A verified TLS client certificate: the admission endpoints.
    ClientCert,
    /// Authentication; the catalog then lists only what the caller may pull.
    Catalog,
    /// Each of these actions on its repository.
    Repository(Vec<(RepoName, Action)>),
}

/// Why a request was not routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such path.
    #[error("not found")]
    NotFound,
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A name, tag or digest in the path or query is malformed.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A query parameter is malformed.
    #[error("invalid query parameter {0}")]
    Query(String),
    /// A manifest read or delete names a reference that is neither a tag nor a digest.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(NameError),
    /// A parameter of the registry's own API (`/api/v1/`) is missing or malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl Endpoint {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::GetBlob { .. } => "get_blob",
            Endpoint::DeleteBlob { .. } => "delete_blob",
            Endpoint::StartUpload { .. } => "start_upload",
            Endpoint::PatchUpload { .. } => "patch_upload",
            Endpoint::FinishUpload { .. } => "finish_upload",
            Endpoint::UploadStatus { .. } => "upload_status",
            Endpoint::CancelUpload { .. } => "cancel_upload",
            Endpoint::GetManifest { .. } => "get_manifest",
            Endpoint::PutManifest { .. } => "put_manifest",
            Endpoint::DeleteManifest { .. } => "delete_manifest",
            Endpoint::ListTags { .. } => "list_tags",
            Endpoint::Referrers { .. } => "referrers",
            Endpoint::Catalog { .. } => "catalog",
            Endpoint::Verdict { .. } => "verdict",
            Endpoint::Keys => "keys",
            Endpoint::Promote => "promote",
            Endpoint::ListPromotions { .. } => "list_promotions",
            Endpoint::Audit { .. } => "audit",
            Endpoint::Health => "healthz",
            Endpoint::Ready => "readyz",
            Endpoint::Metrics => "metrics",
            Endpoint::Token { .. } => "token",
            Endpoint::AdmissionHealth => "admission_healthz",
            Endpoint::Upstreams => "upstreams",
            Endpoint::AcceptUpstreamTag { .. } => "accept_upstream_tag",
            Endpoint::AdmissionReview { webhook: Webhook::Mutate } => "admission_mutate",
            Endpoint::AdmissionReview { webhook: Webhook::Validate } => "admission_validate",
            Endpoint::Drift => "drift",
            Endpoint::Console(_) => "console",
        }
    }

    /// What the caller must hold. A mount additionally needs `pull` on its source, or it falls
    /// back to an ordinary upload (see `api::auth::admit`).
    pub fn required(&self) -> Required {
        let one = |name: &RepoName, action: Action| Required::Repository(vec![(name.clone(), action)]);
        match self {
            Endpoint::Health | Endpoint::Ready | Endpoint::Metrics | Endpoint::Token { .. } => Required::Nothing,
            // Anyone may open the console; each page shows only what its viewer may pull.
            Endpoint::Console(_) => Required::Nothing,
            Endpoint::AdmissionHealth | Endpoint::AdmissionReview { .. } => Required::ClientCert,
            Endpoint::Base => Required::Login,
            Endpoint::Catalog { .. } => Required::Catalog,
            Endpoint::GetBlob { name, .. }
            | Endpoint::GetManifest { name, .. }
            | Endpoint::ListTags { name, .. }
            | Endpoint::Referrers { name, .. } => one(name, Action::Pull),
            Endpoint::StartUpload { name, .. }
            | Endpoint::PatchUpload { name, .. }
            | Endpoint::FinishUpload { name, .. }
            | Endpoint::UploadStatus { name, .. }
            | Endpoint::CancelUpload { name, .. }
            | Endpoint::PutManifest { name, .. } => one(name, Action::Push),
            Endpoint::DeleteBlob { name, .. } | Endpoint::DeleteManifest { name, .. } => one(name, Action::Delete),
            Endpoint::Verdict { image, .. } => one(&image.repo, Action::Pull),
            Endpoint::ListPromotions { repository } => one(repository, Action::Pull),
            // The repositories are in the body (promotions: `promote` on the target, `pull` on the
            // source) or in the records (audit: `admin` on each record's repository); the
            // handlers check them with `Principal::may`.
            Endpoint::Promote | Endpoint::Audit { .. } | Endpoint::Drift => Required::Login,
            // The public key that verification summaries are checked with; any authenticated
            // caller (an admission controller with its client certificate, say) may read it.
            Endpoint::Keys => Required::Login,
            Endpoint::Upstreams => Required::Login,
            Endpoint::AcceptUpstreamTag { repository, .. } => one(repository, Action::Admin),
        }
    }

    /// The repository of a pull (manifest, blob, tag list, referrers): routed to the repository
    /// kept for an upstream before access is decided (see `proxy::routes`).
    pub fn pull_name_mut(&mut self) -> Option<&mut RepoName> {
        match self {
            Endpoint::GetManifest { name, .. }
            | Endpoint::GetBlob { name, .. }
            | Endpoint::ListTags { name, .. }
            | Endpoint::Referrers { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Routes a request. `query` is the raw query string, if any.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Endpoint, RouteError> {
        if super::console::is_console_path(path) {
            return super::console::route(method, path, query).map(Endpoint::Console);
        }
        let query = Query::parse(query.unwrap_or(""));
        if let Some(routed) = fixed_path(method, path, &query) {
            return routed;
        }
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
        repository_path(method, rest, &query)
    }
}

/// The paths that hold no repository name, one row each; `None` for any other path.
fn fixed_path(method: &Method, path: &str, query: &Query) -> Option<Result<Endpoint, RouteError>> {
    let routed = match path {
        "/v2" | "/v2/" => only_get(method, Endpoint::Base),
        "/v2/_catalog" => catalog(method, query),
        "/healthz" => only_get(method, Endpoint::Health),
        "/readyz" => only_get(method, Endpoint::Ready),
        "/metrics" => only_get(method, Endpoint::Metrics),
        "/admission/healthz" => only_get(method, Endpoint::AdmissionHealth),
        "/admission/mutate" => only_post(method, Endpoint::AdmissionReview { webhook: Webhook::Mutate }),
        "/admission/validate" => only_post(method, Endpoint::AdmissionReview { webhook: Webhook::Validate }),
        "/api/v1/drift" => own_api(method, || Ok(Endpoint::Drift)),
        super::auth::TOKEN_PATH => {
            let scopes = query.all("scope").map(str::to_owned).collect();
            match *method {
                // `POST` is the OAuth2 variant: the parameters come as a form in the body.
                Method::GET => Ok(Endpoint::Token { scopes, form: false }),
                Method::POST => Ok(Endpoint::Token { scopes, form: true }),
                _ => Err(RouteError::MethodNotAllowed),
            }
        }
        "/api/v1/promotions" if *method == Method::POST => Ok(Endpoint::Promote),
        "/api/v1/promotions" => own_api(method, || {
            let repository = query.one("repository").ok_or_else(|| RouteError::Query("repository is required".to_owned()))?;
            Ok(Endpoint::ListPromotions { repository: repository.parse()? })
        }),
        "/api/v1/verdict" => own_api(method, || {
            let image = query.one("image").ok_or_else(|| RouteError::Query("image is required".to_owned()))?;
            let target = query.one("target").map(str::parse).transpose()?;
            Ok(Endpoint::Verdict { image: image.parse()?, target })
        }),
        "/api/v1/keys" => own_api(method, || Ok(Endpoint::Keys)),
        "/api/v1/upstreams" => own_api(method, || Ok(Endpoint::Upstreams)),
        _ if path.starts_with(UPSTREAMS) => upstream_path(method, &path[UPSTREAMS.len()..], query),
        "/api/v1/audit" => own_api(method, || {
            Ok(Endpoint::Audit {
                after: query.count("after")?.unwrap_or(0) as u64,
                kind: query.one("kind").map(str::to_owned),
                repository: query.one("repository").map(str::to_owned),
                limit: query.count("limit")?,
            })
        }),
        _ => return None,
    };
    Some(routed)
}

/// Below it, one upstream's endpoints: `<name>/accept`.
const UPSTREAMS: &str = "/api/v1/upstreams/";

fn upstream_path(method: &Method, rest: &str, query: &Query) -> Result<Endpoint, RouteError> {
    let Some(upstream) = rest.strip_suffix("/accept").filter(|name| !name.is_empty() && !name.contains('/')) else {
        return Err(RouteError::NotFound);
    };
    if *method != Method::POST {
        return Err(RouteError::MethodNotAllowed);
    }
    let param = |key: &'static str| query.one(key).ok_or_else(|| RouteError::InvalidRequest(format!("{key} is required")));
    let invalid = |err: NameError| RouteError::InvalidRequest(err.to_string());
    Ok(Endpoint::AcceptUpstreamTag {
        upstream: upstream.to_owned(),
        repository: param("repository")?.parse().map_err(invalid)?,
        tag: param("tag")?.parse().map_err(invalid)?,
        digest: query.one("digest").map(|d| d.parse::<Digest>().map_err(|err| invalid(err.into()))).transpose()?,
    })
}

/// containerd's `?ns=` on a request to a mirror: the registry host the pull is for.
pub fn namespace_host(query: Option<&str>) -> Option<String> {
    Query::parse(query.unwrap_or("")).one("ns").map(str::to_owned)
}

fn catalog(method: &Method, query: &Query) -> Result<Endpoint, RouteError> {
    let last = query.one("last").map(str::parse).transpose()?;
    only_get(method, Endpoint::Catalog { n: query.count("n")?, last })
}

/// What follows the name in `/v2/<name>/...`.
enum Suffix<'a> {
    /// `blobs/uploads/`
    Uploads,
    /// `blobs/uploads/<id>`
    Upload(&'a str),
    /// `blobs/<digest>`
    Blob(&'a str),
    /// `manifests/<reference>`
    Manifest(&'a str),
    /// `tags/list`
    TagsList,
    /// `referrers/<digest>`
    Referrers(&'a str),
}

/// Splits the segments after `/v2/` into the name and the suffix. Names contain `/` and may
/// contain the route words themselves (`blobs/manifests`), so the suffix is matched from the end
/// and everything before it is the name.
fn split_suffix<'a>(method: &Method, segments: &'a [&'a str]) -> Option<(&'a [&'a str], Suffix<'a>)> {
    let split = match segments {
        [name @ .., "blobs", "uploads", ""] => (name, Suffix::Uploads),
        [name @ .., "blobs", "uploads", upload_id] => (name, Suffix::Upload(upload_id)),
        // Clients POST to `.../blobs/uploads` without the trailing slash too.
        [name @ .., "blobs", "uploads"] if *method == Method::POST => (name, Suffix::Uploads),
        [name @ .., "blobs", digest] => (name, Suffix::Blob(digest)),
        [name @ .., "manifests", reference] => (name, Suffix::Manifest(reference)),
        [name @ .., "tags", "list"] => (name, Suffix::TagsList),
        [name @ .., "referrers", digest] => (name, Suffix::Referrers(digest)),
        _ => return None,
    };
    Some(split)
}

/// `/v2/<name>/<suffix>`, `rest` being what follows `/v2/`. The name is checked first, then the
/// method, then the rest of the path and the query.
fn repository_path(method: &Method, rest: &str, query: &Query) -> Result<Endpoint, RouteError> {
    let segments: Vec<&str> = rest.split('/').collect();
    let (name, suffix) = split_suffix(method, &segments).ok_or(RouteError::NotFound)?;
    if name.is_empty() {
        return Err(RouteError::NotFound);
    }
    let name: RepoName = name.join("/").parse()?;
    let head = *method == Method::HEAD;
    let get_or_head = *method == Method::GET || head;
    let digest = |text: &str| text.parse::<Digest>().map_err(|err| RouteError::Name(err.into()));
    match suffix {
        Suffix::Uploads if *method == Method::POST => Ok(Endpoint::StartUpload {
            name,
            digest: query.one("digest").map(digest).transpose()?,
            mount: query.one("mount").map(digest).transpose()?,
            from: query.one("from").map(str::parse).transpose()?,
        }),
        Suffix::Uploads => Err(RouteError::MethodNotAllowed),
        Suffix::Upload(upload_id) => {
            // An id the registry cannot have handed out names no session; it is parsed after the
            // method and the digest, which say more.
            let upload_id = || upload_id.parse::<UploadId>();
            match *method {
                Method::PATCH => Ok(Endpoint::PatchUpload { name, upload_id: upload_id()? }),
                Method::PUT => {
                    let digest = digest(query.one("digest").ok_or_else(|| RouteError::Query("digest is required".to_owned()))?)?;
                    Ok(Endpoint::FinishUpload { name, upload_id: upload_id()?, digest })
                }
                Method::GET => Ok(Endpoint::UploadStatus { name, upload_id: upload_id()? }),
                Method::DELETE => Ok(Endpoint::CancelUpload { name, upload_id: upload_id()? }),
                _ => Err(RouteError::MethodNotAllowed),
            }
        }
        Suffix::Blob(text) => {
            let digest = digest(text)?;
            match *method {
                _ if get_or_head => Ok(Endpoint::GetBlob { name, digest, head }),
                Method::DELETE => Ok(Endpoint::DeleteBlob { name, digest }),
                _ => Err(RouteError::MethodNotAllowed),
            }
        }
        Suffix::Manifest(text) => {
            let reference = text.parse::<Reference>();
            match *method {
                _ if get_or_head => Ok(Endpoint::GetManifest { name, reference: existing(reference)?, head }),
                Method::PUT => {
                    let tags = query.all("tag").map(str::parse).collect::<Result<Vec<Tag>, _>>()?;
                    Ok(Endpoint::PutManifest { name, reference: reference?, tags })
                }
                Method::DELETE => Ok(Endpoint::DeleteManifest { name, reference: existing(reference)? }),
                _ => Err(RouteError::MethodNotAllowed),
            }
        }
        Suffix::TagsList => {
            let endpoint = Endpoint::ListTags { name, n: query.count("n")?, last: query.one("last").map(str::to_owned) };
            only_get(method, endpoint)
        }
        Suffix::Referrers(text) => {
            let endpoint = Endpoint::Referrers { name, digest: digest(text)?, artifact_type: query.one("artifactType").map(str::to_owned) };
            only_get(method, endpoint)
        }
    }
}

/// A read of the registry's own API below `/api/v1/`. A wrong method is that, whatever the
/// parameters; malformed or missing parameters (names included) are `InvalidRequest`, since the
/// OCI codes describe `/v2/`, not this API.
fn own_api(method: &Method, route: impl FnOnce() -> Result<Endpoint, RouteError>) -> Result<Endpoint, RouteError> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(RouteError::MethodNotAllowed);
    }
    route().map_err(|err| match err {
        RouteError::Query(message) => RouteError::InvalidRequest(message),
        RouteError::Name(err) => RouteError::InvalidRequest(err.to_string()),
        other => other,
    })
}

/// The reference of a read or a delete. One that is neither a tag nor a digest names nothing
/// that can exist, so it is unknown (404 `MANIFEST_UNKNOWN`, as Distribution answers and the
/// conformance suite expects), not a bad request; only a push with it is malformed. A digest of
/// an algorithm the registry does not support stays `UNSUPPORTED`, which says more.
fn existing(reference: Result<Reference, NameError>) -> Result<Reference, RouteError> {
    reference.map_err(|err| match err {
        NameError::Digest(DigestError::Unsupported(_)) => RouteError::Name(err),
        other => RouteError::ManifestUnknown(other),
    })
}

fn only_get(method: &Method, endpoint: Endpoint) -> Result<Endpoint, RouteError> {
    let allowed = *method == Method::GET || (*method == Method::HEAD && !matches!(endpoint, Endpoint::Metrics));
    if allowed {
        Ok(endpoint)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

fn only_post(method: &Method, endpoint: Endpoint) -> Result<Endpoint, RouteError> {
    if *method == Method::POST {
        Ok(endpoint)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

/// Decoded query parameters, in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(form_urlencoded::parse(raw.as_bytes()).into_owned().collect())
    }

    fn one<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.all(key).next()
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn count(&self, key: &str) -> Result<Option<usize>, RouteError> {
        self.one(key)
            .map(|n| n.parse::<usize>().map_err(|_| RouteError::Query(format!("{key} must be a non-negative integer"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";

    /// A request, and the endpoint with its required access, or the error, that it routes to.
    type Case<'a> = (Method, String, Option<&'a str>, Result<(Endpoint, Required), RouteError>);

    fn check(method: Method, path: &str, query: Option<&str>, expected: Result<(Endpoint, Required), RouteError>) {
        let got = Endpoint::parse(&method, path, query).map(|endpoint| {
            let required = endpoint.required();
            (endpoint, required)
        });
        assert_eq!(got, expected, "{method} {path}?{query:?}");
    }

    fn name(name: &str) -> RepoName {
        name.parse().unwrap()
    }

    fn needs(action: Action, repo: &str) -> Required {
        Required::Repository(vec![(name(repo), action)])
    }

    fn invalid(text: &str) -> RouteError {
        RouteError::InvalidRequest(text.to_owned())
    }

    #[test]
    fn routes_and_required_access() {
        use Action::{Delete, Pull, Push};
        use Endpoint as E;
        let hex = "a".repeat(64);
        let digest: Digest = format!("sha256:{hex}").parse().unwrap();
        let id: UploadId = ID.parse().unwrap();
        let upload = format!("/v2/a/blobs/uploads/{ID}");
        let digest_query = format!("digest={digest}");
        let mount_query = format!("mount={digest}&from=other/app");
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let digest_error = |text: &str| NameError::from(text.parse::<Digest>().unwrap_err());
        let tag = |text: &str| Reference::Tag(text.parse().unwrap());
        let cases: Vec<Case<'_>> = vec![
            // Paths without a name.
            (Method::GET, "/v2/".into(), None, Ok((E::Base, Required::Login))),
            (Method::GET, "/v2".into(), None, Ok((E::Base, Required::Login))),
            (Method::POST, "/v2/".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/v2/_catalog".into(), Some("n=2&last=a/b"), Ok((E::Catalog { n: Some(2), last: Some(name("a/b")) }, Required::Catalog))),
            (Method::DELETE, "/v2/_catalog".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/healthz".into(), None, Ok((E::Health, Required::Nothing))),
            (Method::GET, "/readyz".into(), None, Ok((E::Ready, Required::Nothing))),
            (Method::GET, "/metrics".into(), None, Ok((E::Metrics, Required::Nothing))),
            (Method::HEAD, "/metrics".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/admission/healthz".into(), None, Ok((E::AdmissionHealth, Required::ClientCert))),
            (Method::POST, "/admission/mutate".into(), None, Ok((E::AdmissionReview { webhook: Webhook::Mutate }, Required::ClientCert))),
            (Method::POST, "/admission/validate".into(), None, Ok((E::AdmissionReview { webhook: Webhook::Validate }, Required::ClientCert))),
            (Method::GET, "/admission/validate".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::POST, "/admission/other".into(), None, Err(RouteError::NotFound)),
            (Method::GET, "/api/v1/drift".into(), None, Ok((E::Drift, Required::Login))),
            (Method::POST, "/api/v1/drift".into(), None, Err(RouteError::MethodNotAllowed)),
            (
                Method::GET,
                "/auth/token".into(),
                Some("service=p&scope=repository:a:pull&scope=registry:catalog:*"),
                Ok((E::Token { scopes: vec!["repository:a:pull".into(), "registry:catalog:*".into()], form: false }, Required::Nothing)),
            ),
            (Method::POST, "/auth/token".into(), None, Ok((E::Token { scopes: vec![], form: true }, Required::Nothing))),
            (Method::PUT, "/auth/token".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/elsewhere".into(), None, Err(RouteError::NotFound)),
            // The registry's own API: its parameters are INVALID_REQUEST, names included.
            (
                Method::GET,
                "/api/v1/verdict".into(),
                Some("image=build/app:v1&target=prod/app"),
                Ok((E::Verdict { image: "build/app:v1".parse().unwrap(), target: Some(name("prod/app")) }, needs(Pull, "build/app"))),
            ),
            (Method::GET, "/api/v1/verdict".into(), None, Err(invalid("image is required"))),
            (Method::GET, "/api/v1/verdict".into(), Some("image=Bad/App:v1"), Err(invalid("invalid repository name \"Bad/App\""))),
            (Method::GET, "/api/v1/verdict".into(), Some("image=a:v1&target=_x"), Err(invalid("invalid repository name \"_x\""))),
            (Method::POST, "/api/v1/verdict".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/api/v1/keys".into(), None, Ok((E::Keys, Required::Login))),
            (Method::DELETE, "/api/v1/keys".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::POST, "/api/v1/promotions".into(), None, Ok((E::Promote, Required::Login))),
            (
                Method::GET,
                "/api/v1/promotions".into(),
                Some("repository=prod/app"),
                Ok((E::ListPromotions { repository: name("prod/app") }, needs(Pull, "prod/app"))),
            ),
            (Method::GET, "/api/v1/promotions".into(), None, Err(invalid("repository is required"))),
            (
                Method::GET,
                "/api/v1/audit".into(),
                Some("kind=promotion&after=3&limit=5"),
                Ok((E::Audit { kind: Some("promotion".into()), repository: None, after: 3, limit: Some(5) }, Required::Login)),
            ),
            (Method::GET, "/api/v1/audit".into(), None, Ok((E::Audit { kind: None, repository: None, after: 0, limit: None }, Required::Login))),
            (Method::GET, "/api/v1/audit".into(), Some("limit=-1"), Err(invalid("limit must be a non-negative integer"))),
            (Method::PUT, "/api/v1/audit".into(), Some("limit=-1"), Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/api/v1/upstreams".into(), None, Ok((E::Upstreams, Required::Login))),
            (Method::POST, "/api/v1/upstreams".into(), None, Err(RouteError::MethodNotAllowed)),
            (
                Method::POST,
                "/api/v1/upstreams/docker.io/accept".into(),
                Some("repository=proxy/docker.io/library/alpine&tag=3.20"),
                Ok((
                    E::AcceptUpstreamTag { upstream: "docker.io".into(), repository: name("proxy/docker.io/library/alpine"), tag: "3.20".parse().unwrap(), digest: None },
                    needs(Action::Admin, "proxy/docker.io/library/alpine"),
                )),
            ),
            (Method::POST, "/api/v1/upstreams/docker.io/accept".into(), Some("tag=3.20"), Err(invalid("repository is required"))),
            (Method::POST, "/api/v1/upstreams/docker.io/accept".into(), Some("repository=a&tag=..&"), Err(invalid("invalid tag \"..\""))),
            (Method::GET, "/api/v1/upstreams/docker.io/accept".into(), None, Err(RouteError::MethodNotAllowed)),
            (Method::POST, "/api/v1/upstreams/docker.io/other".into(), None, Err(RouteError::NotFound)),
            (Method::POST, "/api/v1/upstreams//accept".into(), None, Err(RouteError::NotFound)),
            // Blobs.
            (Method::GET, format!("/v2/a/b/c/blobs/{digest}"), None, Ok((E::GetBlob { name: name("a/b/c"), digest: digest.clone(), head: false }, needs(Pull, "a/b/c")))),
            (Method::HEAD, format!("/v2/a/blobs/{digest}"), None, Ok((E::GetBlob { name: name("a"), digest: digest.clone(), head: true }, needs(Pull, "a")))),
            (Method::DELETE, format!("/v2/a/blobs/{digest}"), None, Ok((E::DeleteBlob { name: name("a"), digest: digest.clone() }, needs(Delete, "a")))),
            (Method::PUT, format!("/v2/a/blobs/{digest}"), None, Err(RouteError::MethodNotAllowed)),
            (Method::GET, "/v2/a/blobs/sha256:zz".into(), None, Err(RouteError::Name(digest_error("sha256:zz")))),
            (Method::GET, "/v2/a/blobs/sha512:aa".into(), None, Err(RouteError::Name(digest_error("sha512:aa")))),
            // Uploads: the collection, with and without its slash, for sessions, monolithic
            // pushes and mounts.
            (
                Method::POST,
                "/v2/build/app/blobs/uploads/".into(),
                None,
                Ok((E::StartUpload { name: name("build/app"), digest: None, mount: None, from: None }, needs(Push, "build/app"))),
            ),
            (
                Method::POST,
                "/v2/build/app/blobs/uploads".into(),
                Some(&digest_query),
                Ok((E::StartUpload { name: name("build/app"), digest: Some(digest.clone()), mount: None, from: None }, needs(Push, "build/app"))),
            ),
            (
                Method::POST,
                "/v2/build/app/blobs/uploads/".into(),
                Some(&mount_query),
                Ok((
                    E::StartUpload { name: name("build/app"), digest: None, mount: Some(digest.clone()), from: Some(name("other/app")) },
                    needs(Push, "build/app"),
                )),
            ),
            (Method::POST, "/v2/a/blobs/uploads/".into(), Some("digest=sha256:zz"), Err(RouteError::Name(digest_error("sha256:zz")))),
            (Method::GET, "/v2/a/blobs/uploads/".into(), None, Err(RouteError::MethodNotAllowed)),
            // Without its slash the collection is only a POST; otherwise `uploads` is a digest.
            (Method::GET, "/v2/a/blobs/uploads".into(), None, Err(RouteError::Name(digest_error("uploads")))),
            // One session.
            (Method::PATCH, upload.clone(), None, Ok((E::PatchUpload { name: name("a"), upload_id: id.clone() }, needs(Push, "a")))),
            (
                Method::PUT,
                upload.clone(),
                Some(&digest_query),
                Ok((E::FinishUpload { name: name("a"), upload_id: id.clone(), digest: digest.clone() }, needs(Push, "a"))),
            ),
            (Method::PUT, upload.clone(), None, Err(RouteError::Query("digest is required".into()))),
            (Method::GET, upload.clone(), None, Ok((E::UploadStatus { name: name("a"), upload_id: id.clone() }, needs(Push, "a")))),
            (Method::DELETE, upload.clone(), None, Ok((E::CancelUpload { name: name("a"), upload_id: id.clone() }, needs(Push, "a")))),
            (Method::POST, upload.clone(), None, Err(RouteError::MethodNotAllowed)),
            // An id the registry cannot have handed out names no session.
            (Method::PATCH, "/v2/a/blobs/uploads/u1".into(), None, Err(RouteError::Name(NameError::UploadId("u1".into())))),
            (Method::GET, "/v2/a/blobs/uploads/not-a-uuid".into(), None, Err(RouteError::Name(NameError::UploadId("not-a-uuid".into())))),
            (Method::PUT, "/v2/a/blobs/uploads/u1".into(), None, Err(RouteError::Query("digest is required".into()))),
            // Manifests.
            (Method::GET, "/v2/a/manifests/v1".into(), None, Ok((E::GetManifest { name: name("a"), reference: tag("v1"), head: false }, needs(Pull, "a")))),
            (
                Method::HEAD,
                format!("/v2/build/app/manifests/{digest}"),
                None,
                Ok((E::GetManifest { name: name("build/app"), reference: Reference::Digest(digest.clone()), head: true }, needs(Pull, "build/app"))),
            ),
            (
                Method::PUT,
                format!("/v2/prod/app/manifests/{digest}"),
                Some("tag=x&tag=y"),
                Ok((
                    E::PutManifest { name: name("prod/app"), reference: Reference::Digest(digest.clone()), tags: vec!["x".parse().unwrap(), "y".parse().unwrap()] },
                    needs(Push, "prod/app"),
                )),
            ),
            (Method::DELETE, "/v2/build/app/manifests/v1".into(), None, Ok((E::DeleteManifest { name: name("build/app"), reference: tag("v1") }, needs(Delete, "build/app")))),
            (Method::PATCH, "/v2/a/manifests/..".into(), None, Err(RouteError::MethodNotAllowed)),
            // Names that look like route words are still names.
            (
                Method::GET,
                "/v2/blobs/manifests/manifests/v1".into(),
                None,
                Ok((E::GetManifest { name: name("blobs/manifests"), reference: tag("v1"), head: false }, needs(Pull, "blobs/manifests"))),
            ),
            // Hostile or malformed names.
            (Method::GET, "/v2/../etc/manifests/v1".into(), None, Err(RouteError::Name(NameError::Name("../etc".into())))),
            (Method::GET, "/v2/a//b/manifests/v1".into(), None, Err(RouteError::Name(NameError::Name("a//b".into())))),
            (Method::GET, "/v2/A/manifests/v1".into(), None, Err(RouteError::Name(NameError::Name("A".into())))),
            (Method::GET, "/v2/manifests/v1".into(), None, Err(RouteError::NotFound)),
            // A reference that is neither tag nor digest: unknown to reads and deletes, malformed
            // to a push; an unsupported algorithm is that, everywhere.
            (Method::GET, "/v2/a/manifests/..".into(), None, Err(RouteError::ManifestUnknown(NameError::Tag("..".into())))),
            (
                Method::HEAD,
                "/v2/a/manifests/.INVALID_MANIFEST_NAME".into(),
                None,
                Err(RouteError::ManifestUnknown(NameError::Tag(".INVALID_MANIFEST_NAME".into()))),
            ),
            (Method::GET, "/v2/a/manifests/sha256:totallywrong".into(), None, Err(RouteError::ManifestUnknown(digest_error("sha256:totallywrong")))),
            (
                Method::DELETE,
                "/v2/a/manifests/.INVALID_MANIFEST_NAME".into(),
                None,
                Err(RouteError::ManifestUnknown(NameError::Tag(".INVALID_MANIFEST_NAME".into()))),
            ),
            (Method::PUT, "/v2/a/manifests/.INVALID_MANIFEST_NAME".into(), None, Err(RouteError::Name(NameError::Tag(".INVALID_MANIFEST_NAME".into())))),
            (Method::PUT, "/v2/a/manifests/sha256:baddigeststring".into(), None, Err(RouteError::Name(digest_error("sha256:baddigeststring")))),
            (Method::GET, format!("/v2/a/manifests/{sha512}"), None, Err(RouteError::Name(digest_error(&sha512)))),
            // Tags and referrers.
            (
                Method::GET,
                "/v2/a/tags/list".into(),
                Some("n=10&last=v1"),
                Ok((E::ListTags { name: name("a"), n: Some(10), last: Some("v1".into()) }, needs(Pull, "a"))),
            ),
            (Method::GET, "/v2/a/tags/list".into(), Some("n=-1"), Err(RouteError::Query("n must be a non-negative integer".into()))),
            (Method::DELETE, "/v2/a/tags/list".into(), None, Err(RouteError::MethodNotAllowed)),
            (
                Method::GET,
                format!("/v2/a/referrers/{digest}"),
                Some("artifactType=application%2Fx"),
                Ok((E::Referrers { name: name("a"), digest: digest.clone(), artifact_type: Some("application/x".into()) }, needs(Pull, "a"))),
            ),
            (Method::GET, "/v2/a/unknown".into(), None, Err(RouteError::NotFound)),
            (Method::GET, "/v2/a".into(), None, Err(RouteError::NotFound)),
        ];
        for (method, path, query, expected) in cases {
            check(method, &path, query, expected);
        }
    }
}
