//! [`ApiError`]: the only error that knows HTTP. One `match` gives each variant its status and
//! OCI error code, so the two cannot drift apart; bodies are the spec's JSON error form.

use http::{header, StatusCode};

use super::endpoint::RouteError;
use crate::registry::names::NameError;
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
        }
    }
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
    /// A header is malformed.
    #[error("invalid header {0}")]
    BadHeader(&'static str),
    /// A `Content-Range` on a chunk that is malformed.
    #[error("{0}")]
    ChunkRange(String),
    /// A request body of the registry's own API that does not parse.
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// A promotion the target's gate refused; the body carries the verdict.
    #[error("{}", .0.summary())]
    PromotionDenied(Box<crate::policy::gate::Verdict>),
    /// A promotion whose target tag is bound to other content.
    #[error("{0}")]
    Conflict(String),
    /// Credentials are missing or wrong; `challenge` (`WWW-Authenticate`) says how to authenticate.
    #[error("{message}")]
    Unauthorized {
        /// What is wrong, for the client.
        message: String,
        /// The `WWW-Authenticate` value.
        challenge: String,
    },
    /// The caller is authenticated but the rules do not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins from this address or for this user.
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    TooManyRequests {
        /// Seconds until the block ends.
        retry_after_secs: u64,
    },
    /// The path needs a TLS client certificate verified by the configured client CA.
    #[error("a verified TLS client certificate is required")]
    ClientCertRequired,
    /// Authentication needs a service that cannot be reached (an OIDC issuer's JWKS).
    #[error("{0}")]
    AuthUnavailable(String),
    /// A chunk that does not start where the upload ends; the client is told where it stands.
    #[error("chunk out of order: the upload holds {offset} bytes")]
    OutOfOrder {
        /// `Location` of the upload session.
        location: String,
        /// Bytes the upload holds.
        offset: u64,
    },
}

impl ApiError {
    /// Status and (for everything but internal failures) the OCI code.
    pub fn status_and_code(&self) -> (StatusCode, Option<ErrorCode>) {
        use RegistryError as R;
        match self {
            ApiError::Route(RouteError::NotFound) => (StatusCode::NOT_FOUND, None),
            ApiError::Route(RouteError::MethodNotAllowed) => (StatusCode::METHOD_NOT_ALLOWED, Some(ErrorCode::Unsupported)),
            ApiError::Route(RouteError::Name(NameError::Name(_))) => (StatusCode::BAD_REQUEST, Some(ErrorCode::NameInvalid)),
            ApiError::Route(RouteError::Name(NameError::Tag(_))) => (StatusCode::BAD_REQUEST, Some(ErrorCode::ManifestInvalid)),
            ApiError::Route(RouteError::Name(NameError::Digest(DigestError::Invalid(_)))) => {
                (StatusCode::BAD_REQUEST, Some(ErrorCode::DigestInvalid))
            }
            ApiError::Route(RouteError::Name(NameError::Digest(DigestError::Unsupported(_)))) => {
                (StatusCode::BAD_REQUEST, Some(ErrorCode::Unsupported))
            }
            ApiError::Route(RouteError::Query(_)) => (StatusCode::BAD_REQUEST, Some(ErrorCode::Unsupported)),
            ApiError::Route(RouteError::ManifestUnknown(_)) => (StatusCode::NOT_FOUND, Some(ErrorCode::ManifestUnknown)),
            ApiError::Route(RouteError::InvalidRequest(_)) | ApiError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, Some(ErrorCode::InvalidRequest))
            }
            ApiError::BadHeader(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::BlobUploadInvalid)),
            ApiError::PromotionDenied(_) => (StatusCode::FORBIDDEN, Some(ErrorCode::Denied)),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, Some(ErrorCode::TagConflict)),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, Some(ErrorCode::Unauthorized)),
            ApiError::Forbidden(_) | ApiError::ClientCertRequired => (StatusCode::FORBIDDEN, Some(ErrorCode::Denied)),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, Some(ErrorCode::TooManyRequests)),
            ApiError::AuthUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            ApiError::ChunkRange(_) | ApiError::OutOfOrder { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, Some(ErrorCode::BlobUploadInvalid))
            }
            ApiError::Registry(err) => match err {
                R::BlobUnknown(_) => (StatusCode::NOT_FOUND, Some(ErrorCode::BlobUnknown)),
                R::BlobUploadUnknown => (StatusCode::NOT_FOUND, Some(ErrorCode::BlobUploadUnknown)),
                R::UploadInvalid(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::BlobUploadInvalid)),
                R::RangeInvalid { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, Some(ErrorCode::BlobUploadInvalid)),
                R::BlobTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Some(ErrorCode::SizeInvalid)),
                R::DigestMismatch { .. } | R::DigestInvalid(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::DigestInvalid)),
                R::ManifestInvalid(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::ManifestInvalid)),
                R::SizeInvalid(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::SizeInvalid)),
                R::ManifestTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Some(ErrorCode::ManifestInvalid)),
                R::ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, Some(ErrorCode::ManifestBlobUnknown)),
                R::ManifestUnknown(_) => (StatusCode::NOT_FOUND, Some(ErrorCode::ManifestUnknown)),
                R::NameUnknown(_) => (StatusCode::NOT_FOUND, Some(ErrorCode::NameUnknown)),
                R::Denied(_) => (StatusCode::FORBIDDEN, Some(ErrorCode::Denied)),
                R::Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, Some(ErrorCode::Unsupported)),
                R::RangeNotSatisfiable { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, Some(ErrorCode::BlobUnknown)),
                R::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
                R::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
            },
        }
    }

    /// Whether the store caused this failure (for the storage error counter).
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, ApiError::Registry(RegistryError::Unavailable(_) | RegistryError::Internal(_)))
    }

    /// The JSON body, `{"errors":[{"code","message","detail"}]}`. Internal errors reveal nothing.
    pub fn body(&self) -> String {
        let (status, code) = self.status_and_code();
        let (code, message) = match code {
            Some(code) => (code.as_str(), self.to_string()),
            None if matches!(self, ApiError::AuthUnavailable(_)) => ("UNAVAILABLE", "authentication is unavailable, retry later".to_owned()),
            None if status == StatusCode::SERVICE_UNAVAILABLE => ("UNAVAILABLE", "storage is unavailable, retry later".to_owned()),
            None if status == StatusCode::NOT_FOUND => ("NOT_FOUND", "no such endpoint".to_owned()),
            None => ("INTERNAL_ERROR", "internal error; see the server log for this request id".to_owned()),
        };
        let mut body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        if let ApiError::PromotionDenied(verdict) = self {
            // The same structure as GET /api/v1/verdict, so CI can show what failed.
            body["verdict"] = serde_json::to_value(verdict).unwrap_or_default();
            body["errors"][0]["detail"] = body["verdict"].clone();
        }
        body.to_string()
    }

    /// Extra headers: `Content-Range` for an unsatisfiable blob range, the upload's position for
    /// a chunk out of order.
    pub fn headers(&self) -> Vec<(header::HeaderName, String)> {
        match self {
            ApiError::OutOfOrder { location, offset } => {
                vec![(header::LOCATION, location.clone()), (header::RANGE, format!("0-{}", offset.saturating_sub(1)))]
            }
            ApiError::Registry(RegistryError::RangeNotSatisfiable { size }) => {
                vec![(header::CONTENT_RANGE, format!("bytes */{size}"))]
            }
            ApiError::Unauthorized { challenge, .. } => vec![(header::WWW_AUTHENTICATE, challenge.clone())],
            ApiError::TooManyRequests { retry_after_secs } => vec![(header::RETRY_AFTER, retry_after_secs.to_string())],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_status() {
        let digest = storage::Digest::of(b"");
        let repo: crate::registry::names::RepoName = "a".parse().unwrap();
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (RegistryError::BlobUnknown(digest.clone()).into(), 404, "BLOB_UNKNOWN"),
            (RegistryError::UploadInvalid("x".into()).into(), 400, "BLOB_UPLOAD_INVALID"),
            (RegistryError::BlobUploadUnknown.into(), 404, "BLOB_UPLOAD_UNKNOWN"),
            (RegistryError::DigestMismatch { expected: digest.clone(), actual: digest.clone() }.into(), 400, "DIGEST_INVALID"),
            (RegistryError::ManifestBlobUnknown(digest.clone()).into(), 400, "MANIFEST_BLOB_UNKNOWN"),
            (RegistryError::ManifestInvalid("x".into()).into(), 400, "MANIFEST_INVALID"),
            (RegistryError::ManifestTooLarge { limit: 1 }.into(), 413, "MANIFEST_INVALID"),
            (RegistryError::SizeInvalid("x".into()).into(), 400, "SIZE_INVALID"),
            (RegistryError::ManifestUnknown("x".into()).into(), 404, "MANIFEST_UNKNOWN"),
            (RouteError::Name(NameError::Name("A".into())).into(), 400, "NAME_INVALID"),
            (RegistryError::NameUnknown(repo).into(), 404, "NAME_UNKNOWN"),
            (RegistryError::BlobTooLarge { limit: 1 }.into(), 413, "SIZE_INVALID"),
            (RegistryError::Denied("x".into()).into(), 403, "DENIED"),
            (RegistryError::Unsupported("x".into()).into(), 405, "UNSUPPORTED"),
            (RegistryError::RangeInvalid { offset: 3 }.into(), 416, "BLOB_UPLOAD_INVALID"),
            (RegistryError::Unavailable("down".into()).into(), 503, "UNAVAILABLE"),
            (RegistryError::Internal("secret path /x".into()).into(), 500, "INTERNAL_ERROR"),
            (ApiError::Unauthorized { message: "x".into(), challenge: "Basic realm=\"p\"".into() }, 401, "UNAUTHORIZED"),
            (ApiError::Forbidden("x".into()), 403, "DENIED"),
            (ApiError::ClientCertRequired, 403, "DENIED"),
            (ApiError::TooManyRequests { retry_after_secs: 3 }, 429, "TOOMANYREQUESTS"),
            (ApiError::AuthUnavailable("secret jwks url".into()), 503, "UNAVAILABLE"),
            // A reference that can never exist is unknown, not malformed (conformance: GET/HEAD).
            (RouteError::ManifestUnknown(NameError::Tag(".INVALID_MANIFEST_NAME".into())).into(), 404, "MANIFEST_UNKNOWN"),
            // The registry's own API has its own codes.
            (ApiError::BadRequest("x".into()), 400, "INVALID_REQUEST"),
            (RouteError::InvalidRequest("image is required".into()).into(), 400, "INVALID_REQUEST"),
            (ApiError::Conflict("x".into()), 409, "TAG_CONFLICT"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_and_code().0.as_u16(), status, "{err}");
            let body: serde_json::Value = serde_json::from_str(&err.body()).unwrap();
            assert_eq!(body["errors"][0]["code"], code, "{err}");
            assert!(!err.body().contains("secret"), "internal detail leaked: {}", err.body());
        }
    }
}
