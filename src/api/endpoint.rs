//! Routing: `(method, path, query)` -> [`Endpoint`], with names of any depth parsed once.
//!
//! Repository names contain `/`, so routes are recognised by their suffix (`.../manifests/<ref>`,
//! `.../blobs/uploads/<id>`, ...) and everything before it must be a valid name. Ids cite the
//! distribution-spec's endpoint table.

use http::Method;
use storage::digest::DigestError;
use storage::Digest;

use crate::auth::rules::Action;
use crate::registry::names::{ImageRef, NameError, Reference, RepoName, Tag, UploadId};

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
        }
    }

    /// What the caller must hold. A mount additionally needs `pull` on its source, or it falls
    /// back to an ordinary upload (see `api::auth::admit`).
    pub fn required(&self) -> Required {
        let one = |name: &RepoName, action: Action| Required::Repository(vec![(name.clone(), action)]);
        match self {
            Endpoint::Health | Endpoint::Ready | Endpoint::Metrics | Endpoint::Token { .. } => Required::Nothing,
            Endpoint::AdmissionHealth => Required::ClientCert,
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
            Endpoint::Promote | Endpoint::Audit { .. } => Required::Login,
            // The public key that verification summaries are checked with; any authenticated
            // caller (an admission controller with its client certificate, say) may read it.
            Endpoint::Keys => Required::Login,
        }
    }

    /// Routes a request. `query` is the raw query string, if any.
    pub fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Endpoint, RouteError> {
        let query = Query::parse(query.unwrap_or(""));
        match path {
            "/healthz" => return only_get(method, Endpoint::Health),
            "/readyz" => return only_get(method, Endpoint::Ready),
            "/metrics" => return only_get(method, Endpoint::Metrics),
            "/admission/healthz" => return only_get(method, Endpoint::AdmissionHealth),
            super::auth::TOKEN_PATH => {
                let scopes = query.all("scope").map(str::to_owned).collect();
                return match *method {
                    // `POST` is the OAuth2 variant: the parameters come as a form in the body.
                    Method::GET => Ok(Endpoint::Token { scopes, form: false }),
                    Method::POST => Ok(Endpoint::Token { scopes, form: true }),
                    _ => Err(RouteError::MethodNotAllowed),
                };
            }
            "/v2" | "/v2/" => return only_get(method, Endpoint::Base),
            "/api/v1/verdict" | "/api/v1/keys" | "/api/v1/promotions" | "/api/v1/audit" => {
                return api_endpoint(method, path, &query);
            }
            "/v2/_catalog" => {
                let last = query.one("last").map(|l| l.parse()).transpose()?;
                return only_get(method, Endpoint::Catalog { n: query.count("n")?, last });
            }
            _ => {}
        }
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name_of = |end: usize| -> Result<RepoName, RouteError> {
            if end == 0 {
                return Err(RouteError::NotFound);
            }
            Ok(segments[..end].join("/").parse()?)
        };
        let head = method == Method::HEAD;
        let get_or_head = method == Method::GET || head;

        // `.../blobs/uploads/` and `.../blobs/uploads/<id>`
        if n >= 3 && segments[n - 3] == "blobs" && segments[n - 2] == "uploads" {
            let name = name_of(n - 3)?;
            let upload_id = segments[n - 1];
            if upload_id.is_empty() {
                if *method != Method::POST {
                    return Err(RouteError::MethodNotAllowed);
                }
                let digest = query.one("digest").map(str::parse).transpose().map_err(NameError::from)?;
                let mount = query.one("mount").map(str::parse).transpose().map_err(NameError::from)?;
                let from = query.one("from").map(str::parse).transpose()?;
                return Ok(Endpoint::StartUpload { name, digest, mount, from });
            }
            // An id the registry cannot have handed out names no session; it is parsed after the
            // method and the digest, which say more.
            let parse_id = || upload_id.parse::<UploadId>();
            return match *method {
                Method::PATCH => Ok(Endpoint::PatchUpload { name, upload_id: parse_id()? }),
                Method::PUT => {
                    let digest = query.one("digest").ok_or_else(|| RouteError::Query("digest is required".to_owned()))?;
                    let digest = digest.parse().map_err(NameError::from)?;
                    Ok(Endpoint::FinishUpload { name, upload_id: parse_id()?, digest })
                }
                Method::GET => Ok(Endpoint::UploadStatus { name, upload_id: parse_id()? }),
                Method::DELETE => Ok(Endpoint::CancelUpload { name, upload_id: parse_id()? }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if n >= 2 && segments[n - 2] == "blobs" && segments[n - 1] == "uploads" && *method == Method::POST {
            // `POST .../blobs/uploads` without the trailing slash: clients send both.
            let name = name_of(n - 2)?;
            let digest = query.one("digest").map(str::parse).transpose().map_err(NameError::from)?;
            let mount = query.one("mount").map(str::parse).transpose().map_err(NameError::from)?;
            let from = query.one("from").map(str::parse).transpose()?;
            return Ok(Endpoint::StartUpload { name, digest, mount, from });
        }
        if n >= 2 && segments[n - 2] == "blobs" {
            let name = name_of(n - 2)?;
            let digest: Digest = segments[n - 1].parse().map_err(NameError::from)?;
            return match *method {
                _ if get_or_head => Ok(Endpoint::GetBlob { name, digest, head }),
                Method::DELETE => Ok(Endpoint::DeleteBlob { name, digest }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if n >= 2 && segments[n - 2] == "manifests" {
            let name = name_of(n - 2)?;
            let reference = segments[n - 1].parse::<Reference>();
            return match *method {
                _ if get_or_head => Ok(Endpoint::GetManifest { name, reference: existing(reference)?, head }),
                Method::PUT => {
                    let tags = query.all("tag").map(str::parse).collect::<Result<Vec<Tag>, _>>()?;
                    Ok(Endpoint::PutManifest { name, reference: reference?, tags })
                }
                Method::DELETE => Ok(Endpoint::DeleteManifest { name, reference: existing(reference)? }),
                _ => Err(RouteError::MethodNotAllowed),
            };
        }
        if n >= 2 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
            let name = name_of(n - 2)?;
            let endpoint = Endpoint::ListTags { name, n: query.count("n")?, last: query.one("last").map(str::to_owned) };
            return only_get(method, endpoint);
        }
        if n >= 2 && segments[n - 2] == "referrers" {
            let name = name_of(n - 2)?;
            let digest: Digest = segments[n - 1].parse().map_err(NameError::from)?;
            let artifact_type = query.one("artifactType").map(str::to_owned);
            return only_get(method, Endpoint::Referrers { name, digest, artifact_type });
        }
        Err(RouteError::NotFound)
    }
}

/// The registry's own API below `/api/v1/`. Its malformed or missing parameters (names
/// included) are `InvalidRequest`: the OCI codes describe `/v2/`, not this API.
fn api_endpoint(method: &Method, path: &str, query: &Query) -> Result<Endpoint, RouteError> {
    if path == "/api/v1/promotions" && *method == Method::POST {
        return Ok(Endpoint::Promote);
    }
    // Everything else is read-only; a wrong method is that, whatever the parameters.
    if *method != Method::GET && *method != Method::HEAD {
        return Err(RouteError::MethodNotAllowed);
    }
    let routed = match path {
        "/api/v1/verdict" => query.one("image").ok_or_else(|| RouteError::Query("image is required".to_owned())).and_then(|image| {
            let target = query.one("target").map(str::parse).transpose()?;
            Ok(Endpoint::Verdict { image: image.parse()?, target })
        }),
        "/api/v1/keys" => Ok(Endpoint::Keys),
        "/api/v1/promotions" => query
            .one("repository")
            .ok_or_else(|| RouteError::Query("repository is required".to_owned()))
            .and_then(|repository| Ok(Endpoint::ListPromotions { repository: repository.parse()? })),
        "/api/v1/audit" => query.count("after").and_then(|after| {
            Ok(Endpoint::Audit {
                kind: query.one("kind").map(str::to_owned),
                repository: query.one("repository").map(str::to_owned),
                after: after.unwrap_or(0) as u64,
                limit: query.count("limit")?,
            })
        }),
        _ => Err(RouteError::NotFound),
    };
    routed.map_err(|err| match err {
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

    fn check(method: Method, path: &str, query: Option<&str>, expected: &str) {
        let got = match Endpoint::parse(&method, path, query) {
            Ok(endpoint) => format!("{endpoint:?}"),
            Err(err) => format!("error: {err:?}"),
        };
        assert!(got.starts_with(expected), "{method} {path}?{query:?}: got {got}, expected {expected}");
    }

    #[test]
    fn routes() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let mount_query = format!("mount={digest}&from=b/c");
        let digest_query = format!("digest={digest}");
        let id = "0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";
        let upload = format!("/v2/a/blobs/uploads/{id}");
        let patch_upload = format!("PatchUpload {{ name: RepoName(\"a\"), upload_id: UploadId(\"{id}\") }}");
        let cases: Vec<(Method, String, Option<&str>, &str)> = vec![
            (Method::GET, "/v2/".into(), None, "Base"),
            (Method::GET, "/v2".into(), None, "Base"),
            (Method::POST, "/v2/".into(), None, "error: MethodNotAllowed"),
            (Method::GET, "/v2/_catalog".into(), Some("n=2&last=a/b"), "Catalog { n: Some(2), last: Some(RepoName(\"a/b\")) }"),
            (Method::GET, format!("/v2/a/b/c/blobs/{digest}"), None, "GetBlob { name: RepoName(\"a/b/c\")"),
            (Method::HEAD, format!("/v2/a/blobs/{digest}"), None, "GetBlob { name: RepoName(\"a\"), digest: sha256:aaaa"),
            (Method::DELETE, format!("/v2/a/blobs/{digest}"), None, "DeleteBlob"),
            (Method::PUT, format!("/v2/a/blobs/{digest}"), None, "error: MethodNotAllowed"),
            (Method::POST, "/v2/build/app/blobs/uploads/".into(), None, "StartUpload { name: RepoName(\"build/app\"), digest: None"),
            (Method::POST, "/v2/build/app/blobs/uploads".into(), None, "StartUpload"),
            (Method::POST, "/v2/a/blobs/uploads/".into(), Some(&mount_query), "StartUpload { name: RepoName(\"a\"), digest: None, mount: Some"),
            (Method::PATCH, upload.clone(), None, &patch_upload),
            (Method::PUT, upload.clone(), Some(&digest_query), "FinishUpload"),
            (Method::PUT, upload.clone(), None, "error: Query"),
            (Method::GET, upload.clone(), None, "UploadStatus"),
            (Method::DELETE, upload.clone(), None, "CancelUpload"),
            (Method::PATCH, "/v2/a/blobs/uploads/u1".into(), None, "error: Name(UploadId(\"u1\"))"),
            (Method::GET, "/v2/a/manifests/v1".into(), None, "GetManifest { name: RepoName(\"a\"), reference: Tag(Tag(\"v1\")), head: false }"),
            (Method::PUT, format!("/v2/a/manifests/{digest}"), Some("tag=x&tag=y"), "PutManifest { name: RepoName(\"a\"), reference: Digest(sha256:aaaa"),
            (Method::DELETE, "/v2/a/manifests/v1".into(), None, "DeleteManifest"),
            (Method::GET, "/v2/a/tags/list".into(), Some("n=10&last=v1"), "ListTags { name: RepoName(\"a\"), n: Some(10), last: Some(\"v1\") }"),
            (Method::GET, format!("/v2/a/referrers/{digest}"), Some("artifactType=application%2Fx"), "Referrers { name: RepoName(\"a\"), digest: sha256:aaaa"),
            // Names that look like route words are still names.
            (Method::GET, "/v2/blobs/manifests/manifests/v1".into(), None, "GetManifest { name: RepoName(\"blobs/manifests\")"),
            // Hostile or malformed names, tags and digests.
            (Method::GET, "/v2/../etc/manifests/v1".into(), None, "error: Name(Name"),
            (Method::GET, "/v2/a//b/manifests/v1".into(), None, "error: Name(Name"),
            (Method::GET, "/v2/A/manifests/v1".into(), None, "error: Name(Name"),
            // A reference that is neither tag nor digest: unknown to reads and deletes, malformed
            // to a push; an unsupported algorithm is that, everywhere.
            (Method::GET, "/v2/a/manifests/..".into(), None, "error: ManifestUnknown(Tag"),
            (Method::HEAD, "/v2/a/manifests/.INVALID_MANIFEST_NAME".into(), None, "error: ManifestUnknown(Tag"),
            (Method::GET, "/v2/a/manifests/sha256:totallywrong".into(), None, "error: ManifestUnknown(Digest(Invalid"),
            (Method::DELETE, "/v2/a/manifests/.INVALID_MANIFEST_NAME".into(), None, "error: ManifestUnknown(Tag"),
            (Method::PUT, "/v2/a/manifests/.INVALID_MANIFEST_NAME".into(), None, "error: Name(Tag"),
            (Method::PUT, "/v2/a/manifests/sha256:baddigeststring".into(), None, "error: Name(Digest(Invalid"),
            (Method::GET, format!("/v2/a/manifests/sha512:{}", "a".repeat(128)), None, "error: Name(Digest(Unsupported"),
            (Method::PATCH, "/v2/a/manifests/..".into(), None, "error: MethodNotAllowed"),
            (Method::GET, "/v2/a/blobs/sha256:zz".into(), None, "error: Name(Digest(Invalid"),
            (Method::GET, "/v2/a/blobs/sha512:aa".into(), None, "error: Name(Digest(Unsupported"),
            (Method::GET, "/v2/manifests/v1".into(), None, "error: NotFound"),
            (Method::GET, "/v2/a/tags/list".into(), Some("n=-1"), "error: Query"),
            (Method::GET, "/v2/a/unknown".into(), None, "error: NotFound"),
            (Method::GET, "/elsewhere".into(), None, "error: NotFound"),
            (Method::GET, "/healthz".into(), None, "Health"),
            (Method::GET, "/api/v1/verdict".into(), Some("image=prod/app:v1"), "Verdict { image: ImageRef { repo: RepoName(\"prod/app\")"),
            // The registry's own API: its parameters are INVALID_REQUEST, names included.
            (Method::GET, "/api/v1/verdict".into(), None, "error: InvalidRequest(\"image is required\")"),
            (Method::GET, "/api/v1/verdict".into(), Some("image=Bad/App:v1"), "error: InvalidRequest(\"invalid repository name"),
            (Method::GET, "/api/v1/verdict".into(), Some("image=a:v1&target=_x"), "error: InvalidRequest"),
            (Method::GET, "/api/v1/promotions".into(), None, "error: InvalidRequest"),
            (Method::GET, "/api/v1/audit".into(), Some("limit=-1"), "error: InvalidRequest(\"limit must be a non-negative integer\")"),
            (Method::PUT, "/api/v1/audit".into(), None, "error: MethodNotAllowed"),
            (Method::POST, "/api/v1/promotions".into(), None, "Promote"),
            (Method::GET, "/api/v1/promotions".into(), Some("repository=prod/app"), "ListPromotions"),
            (Method::GET, "/api/v1/audit".into(), Some("kind=promotion&after=3&limit=5"), "Audit { kind: Some(\"promotion\"), repository: None, after: 3, limit: Some(5) }"),
            (Method::DELETE, "/api/v1/keys".into(), None, "error: MethodNotAllowed"),
            (Method::GET, "/metrics".into(), None, "Metrics"),
            (Method::GET, "/auth/token".into(), Some("service=p&scope=repository:a:pull&scope=registry:catalog:*"), "Token { scopes: [\"repository:a:pull\", \"registry:catalog:*\"], form: false }"),
            (Method::POST, "/auth/token".into(), None, "Token { scopes: [], form: true }"),
            (Method::PUT, "/auth/token".into(), None, "error: MethodNotAllowed"),
            (Method::GET, "/admission/healthz".into(), None, "AdmissionHealth"),
        ];
        for (method, path, query, expected) in cases {
            check(method, &path, query, expected);
        }
    }

    #[test]
    fn required_access() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let check = |method: Method, path: &str, query: Option<&str>, expected: &str| {
            let endpoint = Endpoint::parse(&method, path, query).unwrap();
            let got = match endpoint.required() {
                Required::Repository(needs) => needs.iter().map(|(repo, action)| format!("{action} {repo}")).collect::<Vec<_>>().join(", "),
                other => format!("{other:?}"),
            };
            assert_eq!(got, expected, "{method} {path}");
        };
        check(Method::GET, "/v2/", None, "Login");
        check(Method::GET, "/healthz", None, "Nothing");
        check(Method::GET, "/metrics", None, "Nothing");
        check(Method::GET, "/auth/token", None, "Nothing");
        check(Method::GET, "/admission/healthz", None, "ClientCert");
        check(Method::GET, "/v2/_catalog", None, "Catalog");
        check(Method::GET, "/v2/build/app/manifests/v1", None, "pull build/app");
        check(Method::HEAD, &format!("/v2/build/app/blobs/{digest}"), None, "pull build/app");
        check(Method::GET, "/v2/build/app/tags/list", None, "pull build/app");
        check(Method::GET, &format!("/v2/build/app/referrers/{digest}"), None, "pull build/app");
        check(Method::PUT, "/v2/prod/app/manifests/v1", None, "push prod/app");
        check(Method::POST, "/v2/build/app/blobs/uploads/", Some(&format!("mount={digest}&from=other/app")), "push build/app");
        let upload = "/v2/build/app/blobs/uploads/0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";
        check(Method::PATCH, upload, None, "push build/app");
        check(Method::PUT, upload, Some(&format!("digest={digest}")), "push build/app");
        check(Method::DELETE, upload, None, "push build/app");
        check(Method::DELETE, "/v2/build/app/manifests/v1", None, "delete build/app");
        check(Method::DELETE, &format!("/v2/build/app/blobs/{digest}"), None, "delete build/app");
        check(Method::GET, "/api/v1/verdict", Some("image=build/app:v1&target=prod/app"), "pull build/app");
        check(Method::GET, "/api/v1/promotions", Some("repository=prod/app"), "pull prod/app");
        check(Method::POST, "/api/v1/promotions", None, "Login");
        check(Method::GET, "/api/v1/audit", None, "Login");
        check(Method::GET, "/api/v1/keys", None, "Login");
    }
}
