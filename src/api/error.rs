//! [`ApiError`], the only error that knows HTTP, and the one error-to-wire map: [`ApiError::wire`]
//! is one `match` that gives each variant its status, its code and its headers, so they cannot
//! drift apart. Bodies are the spec's JSON error form; what a client cannot act on (a broken
//! store, a bug) gets an opaque code and message, and its cause goes to the log instead.

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use super::endpoint::RouteError;
use super::{json_response, Body};
use crate::auth::AuthError;
use crate::promote::PromotionError;
use crate::names::NameError;
use crate::registry::scrub::ContentKind;
use crate::registry::RegistryError;
use storage::digest::DigestError;

/// Codes from the "Error Codes" table of the OCI Distribution Spec (code-1 .. code-14), and the
/// codes of the registry's own API (`/api/v1/`), which that table does not describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// code-1
    BlobUnknown,
    /// code-2
    BlobUploadInvalid,
    /// code-3
    BlobUploadUnknown,
    /// code-4
    DigestInvalid,
    /// code-5
    ManifestBlobUnknown,
    /// code-6
    ManifestInvalid,
    /// code-7
    ManifestUnknown,
    /// code-8
    NameInvalid,
    /// code-9
    NameUnknown,
    /// code-10
    SizeInvalid,
    /// code-11
    Unauthorized,
    /// code-12
    Denied,
    /// code-13
    Unsupported,
    /// code-14
    TooManyRequests,
    /// `/api/v1/`: a body or parameter that is malformed, missing or names nothing valid.
    InvalidRequest,
    /// `/api/v1/promotions`: a target tag is already bound to other content under its rule.
    TagConflict,
    /// An upstream of a proxied repository failed, refused the proxy or misbehaved (502); the
    /// message names the upstream and what it did.
    UpstreamError,
}

/// `errors[0].code` and `errors[0].message` of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A code the client can act on; the message is the error's own text.
    Spec(ErrorCode),
    /// A fixed code and message that say nothing about the cause.
    Opaque {
        /// `errors[0].code`
        code: &'static str,
        /// `errors[0].message`
        message: &'static str,
    },
}

/// No route: nothing to say beyond that.
const NO_ENDPOINT: Code = Code::Opaque { code: "NOT_FOUND", message: "no such endpoint" };
/// The store cannot be reached; the cause is logged.
const STORAGE_UNAVAILABLE: Code = Code::Opaque { code: "UNAVAILABLE", message: "storage is unavailable, retry later" };
/// An identity provider cannot be reached; the cause (its URL, say) is logged.
const AUTH_UNAVAILABLE: Code = Code::Opaque { code: "UNAVAILABLE", message: "authentication is unavailable, retry later" };
/// A bug or a broken store; the cause is logged.
const INTERNAL: Code = Code::Opaque { code: "INTERNAL_ERROR", message: "internal error; see the server log for this request id" };

/// How an error is answered: status, code and the headers that go with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// The status.
    pub status: StatusCode,
    /// The code (and with an opaque code, the message).
    pub code: Code,
    /// Headers the client needs to go on: where an upload stands, when to retry, how to
    /// authenticate.
    pub headers: Vec<(HeaderName, String)>,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Routing failed.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A promotion did not promote.
    #[error(transparent)]
    Promotion(#[from] PromotionError),
    /// Authentication failed, or cannot be done right now.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Credentials are missing, malformed or too narrow for the request, where other ones could
    /// pass (an anonymous caller, a token of another scope).
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is authenticated but the rules do not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// The path needs a TLS client certificate verified by the configured client CA.
    #[error("a verified TLS client certificate is required")]
    ClientCertRequired,
    /// A `Content-Range` on a chunk that is malformed.
    #[error("{0}")]
    ChunkRange(String),
    /// A request body of the registry's own API that does not parse.
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// `err` together with how to authenticate (`WWW-Authenticate`), sent when `err` is a 401.
    /// `api::auth` knows the realm, service and scope of the request; the error does not.
    #[error("{err}")]
    Challenged {
        /// The refusal.
        err: Box<ApiError>,
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
}

impl ErrorCode {
    /// The code as it appears in `errors[].code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::TagConflict => "TAG_CONFLICT",
            ErrorCode::UpstreamError => "UPSTREAM_ERROR",
        }
    }
}

impl Wire {
    fn spec(status: StatusCode, code: ErrorCode) -> Wire {
        Wire { status, code: Code::Spec(code), headers: Vec::new() }
    }

    fn opaque(status: StatusCode, code: Code) -> Wire {
        Wire { status, code, headers: Vec::new() }
    }

    fn with(mut self, name: HeaderName, value: String) -> Wire {
        self.headers.push((name, value));
        self
    }
}

impl ApiError {
    /// How this error is answered. Lower errors reach the client as a spec code only through an
    /// arm of their own; there is no catch-all.
    pub fn wire(&self) -> Wire {
        use ErrorCode as C;
        use RegistryError as R;
        use StatusCode as S;
        match self {
            ApiError::Route(RouteError::NotFound) => Wire::opaque(S::NOT_FOUND, NO_ENDPOINT),
            ApiError::Route(RouteError::MethodNotAllowed) => Wire::spec(S::METHOD_NOT_ALLOWED, C::Unsupported),
            ApiError::Route(RouteError::Name(NameError::Name(_))) => Wire::spec(S::BAD_REQUEST, C::NameInvalid),
            ApiError::Route(RouteError::Name(NameError::Tag(_))) => Wire::spec(S::BAD_REQUEST, C::ManifestInvalid),
            ApiError::Route(RouteError::Name(NameError::Digest(DigestError::Invalid(_)))) => Wire::spec(S::BAD_REQUEST, C::DigestInvalid),
            ApiError::Route(RouteError::Name(NameError::Digest(DigestError::Unsupported(_)))) => Wire::spec(S::BAD_REQUEST, C::Unsupported),
            // No session has such an id, and none ever will.
            ApiError::Route(RouteError::Name(NameError::UploadId(_))) => Wire::spec(S::NOT_FOUND, C::BlobUploadUnknown),
            ApiError::Route(RouteError::Query(_)) => Wire::spec(S::BAD_REQUEST, C::Unsupported),
            ApiError::Route(RouteError::ManifestUnknown(_)) => Wire::spec(S::NOT_FOUND, C::ManifestUnknown),
            ApiError::Route(RouteError::InvalidRequest(_))
            | ApiError::BadRequest(_)
            | ApiError::Promotion(PromotionError::InvalidRequest(_)) => Wire::spec(S::BAD_REQUEST, C::InvalidRequest),
            ApiError::Registry(err) | ApiError::Promotion(PromotionError::Registry(err)) => match err {
                R::BlobUnknown(_) => Wire::spec(S::NOT_FOUND, C::BlobUnknown),
                R::BlobUploadUnknown => Wire::spec(S::NOT_FOUND, C::BlobUploadUnknown),
                R::UploadInvalid(_) => Wire::spec(S::BAD_REQUEST, C::BlobUploadInvalid),
                // The client is told where the upload stands, so it can resume.
                R::RangeInvalid { repo, upload_id, offset } => Wire::spec(S::RANGE_NOT_SATISFIABLE, C::BlobUploadInvalid)
                    .with(header::LOCATION, super::uploads::location(repo, upload_id))
                    .with(header::RANGE, super::uploads::range(*offset)),
                R::BlobTooLarge { .. } => Wire::spec(S::PAYLOAD_TOO_LARGE, C::SizeInvalid),
                R::DigestMismatch { .. } => Wire::spec(S::BAD_REQUEST, C::DigestInvalid),
                R::ManifestInvalid(_) => Wire::spec(S::BAD_REQUEST, C::ManifestInvalid),
                R::SizeInvalid(_) => Wire::spec(S::BAD_REQUEST, C::SizeInvalid),
                R::ManifestTooLarge { .. } => Wire::spec(S::PAYLOAD_TOO_LARGE, C::ManifestInvalid),
                R::ManifestBlobUnknown(_) => Wire::spec(S::BAD_REQUEST, C::ManifestBlobUnknown),
                R::ManifestUnknown(_) => Wire::spec(S::NOT_FOUND, C::ManifestUnknown),
                // Unknown, as far as the client can act: a push of the right bytes heals it.
                R::Quarantined { kind: ContentKind::Blob, .. } => Wire::spec(S::NOT_FOUND, C::BlobUnknown),
                R::Quarantined { kind: ContentKind::Manifest, .. } => Wire::spec(S::NOT_FOUND, C::ManifestUnknown),
                R::NameUnknown(_) => Wire::spec(S::NOT_FOUND, C::NameUnknown),
                R::Denied(_) => Wire::spec(S::FORBIDDEN, C::Denied),
                R::Unsupported(_) => Wire::spec(S::METHOD_NOT_ALLOWED, C::Unsupported),
                R::RangeNotSatisfiable { size } => {
                    Wire::spec(S::RANGE_NOT_SATISFIABLE, C::BlobUnknown).with(header::CONTENT_RANGE, format!("bytes */{size}"))
                }
                R::Unavailable(_) => Wire::opaque(S::SERVICE_UNAVAILABLE, STORAGE_UNAVAILABLE),
                R::Upstream(_) => Wire::spec(S::BAD_GATEWAY, C::UpstreamError),
                R::NoUpstream(_) => Wire::spec(S::NOT_FOUND, C::NameUnknown),
                R::Internal(_) => Wire::opaque(S::INTERNAL_SERVER_ERROR, INTERNAL),
            },
            // The body carries the verdict too (see `response`).
            ApiError::Promotion(PromotionError::Denied(_)) => Wire::spec(S::FORBIDDEN, C::Denied),
            ApiError::Promotion(PromotionError::TagConflict(_)) => Wire::spec(S::CONFLICT, C::TagConflict),
            ApiError::Auth(AuthError::BadCredentials | AuthError::InvalidToken(_)) | ApiError::Unauthorized(_) => {
                Wire::spec(S::UNAUTHORIZED, C::Unauthorized)
            }
            ApiError::Auth(AuthError::Throttled(wait)) => {
                Wire::spec(S::TOO_MANY_REQUESTS, C::TooManyRequests).with(header::RETRY_AFTER, wait.as_secs().max(1).to_string())
            }
            ApiError::Auth(AuthError::Unavailable(_)) => Wire::opaque(S::SERVICE_UNAVAILABLE, AUTH_UNAVAILABLE),
            ApiError::Forbidden(_) | ApiError::ClientCertRequired => Wire::spec(S::FORBIDDEN, C::Denied),
            ApiError::ChunkRange(_) => Wire::spec(S::RANGE_NOT_SATISFIABLE, C::BlobUploadInvalid),
            ApiError::Challenged { err, challenge } => {
                let wire = err.wire();
                // Only a 401 asks the client to authenticate (a throttled login is a 429).
                if wire.status == S::UNAUTHORIZED {
                    wire.with(header::WWW_AUTHENTICATE, challenge.clone())
                } else {
                    wire
                }
            }
        }
    }

    /// Whether the store caused this failure (for the storage error counter).
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            ApiError::Registry(RegistryError::Unavailable(_) | RegistryError::Internal(_))
                | ApiError::Promotion(PromotionError::Registry(RegistryError::Unavailable(_) | RegistryError::Internal(_)))
        )
    }

    /// The answer: [`ApiError::wire`] as a response with the JSON body
    /// `{"errors":[{"code","message","detail"}]}`. A header value that is not one is left out.
    pub fn response(&self) -> Response<Body> {
        let wire = self.wire();
        let (code, message) = match wire.code {
            Code::Spec(code) => (code.as_str(), self.to_string()),
            Code::Opaque { code, message } => (code, message.to_owned()),
        };
        let mut body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        if let ApiError::Promotion(PromotionError::Denied(verdict)) = self {
            // The same structure as GET /api/v1/verdict, so CI can show what failed.
            body["verdict"] = serde_json::to_value(verdict).unwrap_or_default();
            body["errors"][0]["detail"] = body["verdict"].clone();
        }
        let mut response = json_response(wire.status, body.to_string());
        for (name, value) in wire.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;
    use crate::names::{RepoName, UploadId};

    /// The error, its status, `errors[0].code` and the headers it carries besides `Content-Type`
    /// and `Content-Length`.
    type Case<'a> = (ApiError, u16, &'a str, Vec<(&'a str, &'a str)>);

    /// Checks one [`Case`].
    async fn check(err: ApiError, status: u16, code: &str, headers: &[(&str, &str)]) {
        let what = format!("{err:?}");
        let response = err.response();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json", "{what}");
        let mut extra: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(name, _)| **name != header::CONTENT_TYPE && **name != header::CONTENT_LENGTH)
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        extra.sort();
        let mut expected: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        expected.sort();
        assert_eq!(extra, expected, "{what}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{what}");
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("secret"), "internal detail leaked: {text}");
    }

    fn verdict() -> crate::policy::gate::Verdict {
        crate::policy::gate::Verdict {
            image: "build/app@sha256:aa".into(),
            namespace: "prod/**".into(),
            // Any mode; it is read from its configuration spelling to keep this test to the API.
            mode: serde_json::from_value(serde_json::json!("enforce")).unwrap(),
            passed: false,
            requirements: Vec::new(),
            warnings: Vec::new(),
            rejected: Vec::new(),
            evaluated_at: 0,
            expires_at: None,
            policy_revision: "r".into(),
            via_parent: None,
        }
    }

    #[tokio::test]
    async fn every_arm_has_its_status_code_and_headers() {
        let digest = storage::Digest::of(b"");
        let repo: RepoName = "a".parse().unwrap();
        let upload_id: UploadId = "0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11".parse().unwrap();
        let location = "/v2/a/blobs/uploads/0b7d5c7e-3e7e-4a4e-9a36-4b2e0b1d9c11";
        let challenge = "Bearer realm=\"https://r/auth/token\",service=\"p\"";
        let challenged = |err: ApiError| ApiError::Challenged { err: Box::new(err), challenge: challenge.into() };
        let bad_digest = "sha256:zz".parse::<storage::Digest>().unwrap_err();
        let sha512 = format!("sha512:{}", "a".repeat(128)).parse::<storage::Digest>().unwrap_err();
        let cases: Vec<Case<'_>> = vec![
            (RouteError::NotFound.into(), 404, "NOT_FOUND", vec![]),
            (RouteError::MethodNotAllowed.into(), 405, "UNSUPPORTED", vec![]),
            (RouteError::Name(NameError::Name("A".into())).into(), 400, "NAME_INVALID", vec![]),
            (RouteError::Name(NameError::Tag(".x".into())).into(), 400, "MANIFEST_INVALID", vec![]),
            (RouteError::Name(bad_digest.into()).into(), 400, "DIGEST_INVALID", vec![]),
            (RouteError::Name(sha512.into()).into(), 400, "UNSUPPORTED", vec![]),
            (RouteError::Name(NameError::UploadId("u1".into())).into(), 404, "BLOB_UPLOAD_UNKNOWN", vec![]),
            (RouteError::Query("n must be a non-negative integer".into()).into(), 400, "UNSUPPORTED", vec![]),
            // A reference that can never exist is unknown, not malformed (conformance: GET/HEAD).
            (RouteError::ManifestUnknown(NameError::Tag(".INVALID_MANIFEST_NAME".into())).into(), 404, "MANIFEST_UNKNOWN", vec![]),
            // The registry's own API has its own codes.
            (RouteError::InvalidRequest("image is required".into()).into(), 400, "INVALID_REQUEST", vec![]),
            (ApiError::BadRequest("x".into()), 400, "INVALID_REQUEST", vec![]),
            (PromotionError::InvalidRequest("x".into()).into(), 400, "INVALID_REQUEST", vec![]),
            (PromotionError::TagConflict("x".into()).into(), 409, "TAG_CONFLICT", vec![]),
            (PromotionError::Denied(Box::new(verdict())).into(), 403, "DENIED", vec![]),
            (RegistryError::BlobUnknown(digest.clone()).into(), 404, "BLOB_UNKNOWN", vec![]),
            (RegistryError::BlobUploadUnknown.into(), 404, "BLOB_UPLOAD_UNKNOWN", vec![]),
            (RegistryError::UploadInvalid("x".into()).into(), 400, "BLOB_UPLOAD_INVALID", vec![]),
            (
                RegistryError::RangeInvalid { repo: repo.clone(), upload_id, offset: 10 }.into(),
                416,
                "BLOB_UPLOAD_INVALID",
                vec![("location", location), ("range", "0-9")],
            ),
            (RegistryError::BlobTooLarge { limit: 1 }.into(), 413, "SIZE_INVALID", vec![]),
            (RegistryError::DigestMismatch { expected: digest.clone(), actual: digest.clone() }.into(), 400, "DIGEST_INVALID", vec![]),
            (RegistryError::ManifestInvalid("x".into()).into(), 400, "MANIFEST_INVALID", vec![]),
            (RegistryError::SizeInvalid("x".into()).into(), 400, "SIZE_INVALID", vec![]),
            (RegistryError::ManifestTooLarge { limit: 1 }.into(), 413, "MANIFEST_INVALID", vec![]),
            (RegistryError::ManifestBlobUnknown(digest.clone()).into(), 400, "MANIFEST_BLOB_UNKNOWN", vec![]),
            (RegistryError::ManifestUnknown("x".into()).into(), 404, "MANIFEST_UNKNOWN", vec![]),
            (RegistryError::Quarantined { digest: digest.clone(), kind: ContentKind::Blob }.into(), 404, "BLOB_UNKNOWN", vec![]),
            (RegistryError::Quarantined { digest: digest.clone(), kind: ContentKind::Manifest }.into(), 404, "MANIFEST_UNKNOWN", vec![]),
            (RegistryError::NameUnknown(repo).into(), 404, "NAME_UNKNOWN", vec![]),
            (RegistryError::Denied("x".into()).into(), 403, "DENIED", vec![]),
            (RegistryError::Unsupported("x".into()).into(), 405, "UNSUPPORTED", vec![]),
            (RegistryError::RangeNotSatisfiable { size: 5 }.into(), 416, "BLOB_UNKNOWN", vec![("content-range", "bytes */5")]),
            (RegistryError::Unavailable("secret host down".into()).into(), 503, "UNAVAILABLE", vec![]),
            (RegistryError::Internal("secret path /x".into()).into(), 500, "INTERNAL_ERROR", vec![]),
            (RegistryError::Upstream("upstream docker.io refused the proxy".into()).into(), 502, "UPSTREAM_ERROR", vec![]),
            (RegistryError::NoUpstream("no upstream of this registry mirrors ghcr.io".into()).into(), 404, "NAME_UNKNOWN", vec![]),
            // A promotion that fails in the registry fails as the registry does.
            (PromotionError::Registry(RegistryError::Internal("secret".into())).into(), 500, "INTERNAL_ERROR", vec![]),
            (PromotionError::Registry(RegistryError::Denied("x".into())).into(), 403, "DENIED", vec![]),
            (challenged(AuthError::BadCredentials.into()), 401, "UNAUTHORIZED", vec![("www-authenticate", challenge)]),
            (challenged(AuthError::InvalidToken("expired".into()).into()), 401, "UNAUTHORIZED", vec![("www-authenticate", challenge)]),
            (challenged(ApiError::Unauthorized("x".into())), 401, "UNAUTHORIZED", vec![("www-authenticate", challenge)]),
            (challenged(AuthError::Throttled(Duration::from_millis(300)).into()), 429, "TOOMANYREQUESTS", vec![("retry-after", "1")]),
            (AuthError::Throttled(Duration::from_secs(7)).into(), 429, "TOOMANYREQUESTS", vec![("retry-after", "7")]),
            (AuthError::Unavailable("secret jwks url".into()).into(), 503, "UNAVAILABLE", vec![]),
            (ApiError::Forbidden("x".into()), 403, "DENIED", vec![]),
            (ApiError::ClientCertRequired, 403, "DENIED", vec![]),
            (ApiError::ChunkRange("x".into()), 416, "BLOB_UPLOAD_INVALID", vec![]),
        ];
        for (err, status, code, headers) in cases {
            check(err, status, code, &headers).await;
        }
    }

    #[tokio::test]
    async fn a_denied_promotion_carries_its_verdict() {
        let err: ApiError = PromotionError::Denied(Box::new(verdict())).into();
        let bytes = err.response().into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["errors"][0]["message"], verdict().summary());
        assert_eq!(body["verdict"]["namespace"], "prod/**");
        assert_eq!(body["errors"][0]["detail"], body["verdict"]);
    }
}
