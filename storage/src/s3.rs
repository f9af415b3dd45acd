//! S3 backend: each key is the object `<prefix><key>` in one bucket of S3 or an S3-compatible server.
//!
//! Small objects map one to one onto `PutObject` / `GetObject`, with `If-None-Match: *` and
//! `If-Match: <etag>` for the conditions; the versions are S3's ETags. [`S3BlobStore::connect`]
//! probes how the server treats those headers, because several replicas over one bucket are only
//! correct if it honours them (see [`S3Config::single_writer`]), and adapts to what it finds
//! ([`ServerFindings`]): Ceph RGW 16 matches `If-Match` only against an ETag without its quotes,
//! and refuses the SDK's streaming uploads with a checksum trailer.
//!
//! Staged uploads keep all their state in the bucket, so that any replica can continue an upload
//! another one started. A stage `<id>` is the objects under `<prefix>~staging/<id>/`:
//! - `state`, JSON: the names and sizes of the stage's data objects, in order;
//! - data objects `part-…` of exactly the part size (8 MiB by default) and at most one `tail-…`
//!   holding the remainder, smaller than a part.
//!
//! An append reads the tail back (less than one part), streams tail and body into new part
//! objects, buffering at most one part, writes the new remainder as a new tail and then replaces
//! `state` with `If-Match`, so of two concurrent appends on different replicas one fails with
//! [`BlobStoreError::PreconditionFailed`] instead of interleaving. Data objects get fresh names on
//! every write, so a losing append never overwrites what the winning state points at. A commit
//! copies the data objects server-side into the final key (`CopyObject` for one object, else a
//! multipart upload of `UploadPartCopy`s), so no byte passes through this process twice. Neither
//! the copy nor `CompleteMultipartUpload` is conditional (RGW 16 ignores conditions on both): the
//! final key is content-addressed, so a second commit of the same bytes is harmless.
//!
//! `~` is outside the key alphabet of [`crate::validate_key`], so no key can collide with the
//! internal objects (`~staging/`, `~probe/`), and it sorts after every key character, so a listing
//! of the store's root meets them last and stops there.
//!
//! What it does not do:
//! - It does not reconcile S3's ETag (an MD5 of the content for single-part objects) with
//!   content history: writing back the very bytes of an earlier version brings back that
//!   version's ETag. The registry's small objects change content with every write.
//! - It does not detect a conditional write that succeeded although its response was lost: the
//!   SDK's retry of it then fails its precondition against our own write.
//! - A staged upload holds at most 10,000 parts (S3's multipart limit), so 78 GiB at the default
//!   part size; a larger part size raises that.
//! - It does not expire staged uploads or multipart uploads by itself: the janitor calls
//!   [`BlobStore::stale_stages`] and [`S3BlobStore::abort_stale_multipart`].
//! - `timeout` bounds connecting and waiting for the first byte of each response; a response body
//!   that stalls halfway is left to the SDK's stalled-stream protection.

#![warn(missing_docs)]

use std::fmt;
use std::io;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use crate::{
    validate_key, validate_prefix, BlobStore, BlobStoreError, ByteStream, ETag, ListPage, MetaPage,
    ObjectMeta, ObjectReader, PutCondition, Result, SmallObject,
};

pub use crate::s3_config::{S3Config, DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE};

/// A [`BlobStore`] on an S3 bucket. Cloning shares the client.
#[derive(Clone)]
pub struct S3BlobStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty or ending in `/`.
    prefix: String,
    part_size: u64,
    /// What the probe of [`S3BlobStore::connect`] found, and so how conditions are sent.
    findings: ServerFindings,
}

/// What [`S3BlobStore::connect`] found out about the server by trying it, and so what the store
/// sends. Logged at start; AWS S3 and moto give `{ if_none_match: true, if_match: Quoted,
/// checksums: Default }`, Ceph RGW 16 gives `Unquoted` and `WhenRequired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFindings {
    /// A second `If-None-Match: *` write of one key fails (create-only writes are honoured).
    pub if_none_match: bool,
    /// How the server treats `If-Match`.
    pub if_match: IfMatch,
    /// Which request checksums the store sends.
    pub checksums: Checksums,
}

/// How a server treats `If-Match: <etag>` on `PutObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// It matches the ETag as S3 returns it, in double quotes (S3's own behaviour).
    Quoted,
    /// It matches only the ETag without its quotes (Ceph RGW 16: a quoted one never matches), so
    /// the store strips them.
    Unquoted,
    /// A write with a stale ETag succeeds: the header is ignored. Accepted only with
    /// [`S3Config::single_writer`]; the store then sends none.
    Ignored,
    /// Neither form matches the current ETag. Accepted only with [`S3Config::single_writer`];
    /// the store then sends none.
    NeverMatches,
}

/// Which request checksums the store's client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksums {
    /// The SDK's default: a checksum with every upload; a streaming upload is sent `aws-chunked`
    /// with a signed checksum trailer.
    Default,
    /// Only where S3 requires one, because the server answered a streaming upload with a
    /// checksum trailer with 400 (Ceph RGW 16, Garage).
    WhenRequired,
    /// Only where S3 requires one, because [`S3Config::checksum_when_required`] says so (not
    /// probed).
    WhenRequiredByConfig,
}

impl S3BlobStore {
    /// Builds the client and probes the bucket, adapting to what the server does (see
    /// [`ServerFindings`], logged once): a create-only write with a streaming body (on a 400,
    /// again without streaming checksums, which are then left off), a second create-only write of
    /// the key that must fail, a compare-and-swap with the current ETag as returned (and, when that
    /// fails, without its quotes) that must succeed, and one with the now stale ETag, in the form
    /// that matched, that must fail.
    ///
    /// Fails when the configuration is invalid, the bucket cannot be reached or written
    /// ([`BlobStoreError::Unavailable`] for connection failures and 5xx answers), or the server
    /// does not honour both conditions in some form and `single_writer` is off.
    pub async fn connect(config: S3Config) -> Result<S3BlobStore> {
        let mut store = S3BlobStore::connect_read_only(config.clone()).await?;
        let findings = store.probe(&config).await?;
        probe_verdict(&config.bucket, findings, config.single_writer)?;
        tracing::info!(
            bucket = config.bucket,
            if_none_match = findings.if_none_match,
            if_match = ?findings.if_match,
            checksums = ?findings.checksums,
            "probed the S3 store"
        );
        store.findings = findings;
        Ok(store)
    }

    /// Builds the client without the probe, which writes: for tools that only read (`portcullis
    /// fsck`, `audit verify`) and must leave the bucket as they found it. Nothing checked that
    /// the server honours conditional writes, so a store opened this way must not write.
    pub async fn connect_read_only(config: S3Config) -> Result<S3BlobStore> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&config.part_size) {
            return Err(invalid_config(format!(
                "s3 part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, found {}",
                config.part_size
            )));
        }
        if config.bucket.is_empty() {
            return Err(invalid_config("s3 bucket must not be empty".to_owned()));
        }
        let prefix = normalized_prefix(&config.prefix)?;
        let client = build_client(&config).await?;
        let checksums = match config.checksum_when_required {
            true => Checksums::WhenRequiredByConfig,
            false => Checksums::Default,
        };
        // Until a probe has found out, conditions are sent as S3 specifies them.
        let findings = ServerFindings { if_none_match: true, if_match: IfMatch::Quoted, checksums };
        Ok(S3BlobStore { client, bucket: config.bucket.clone(), prefix, part_size: config.part_size, findings })
    }

    /// What the probe found out about the server (see [`S3BlobStore::connect`]).
    pub fn findings(&self) -> ServerFindings {
        self.findings
    }

    /// A URL that fetches the object at `key` with a plain GET until `expires` has passed, for
    /// redirecting blob downloads to the bucket. S3 accepts at most 7 days.
    pub async fn presign_get(&self, key: &str, expires: Duration) -> Result<String> {
        let full_key = self.object_key(key)?;
        let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires)
            .map_err(|err| invalid_config(format!("presigned URL expiry {expires:?}: {err}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full_key)
            .presigned(presigning)
            .await
            .map_err(|err| fault("presign GetObject", &full_key, err).into_error())?;
        Ok(request.uri().to_owned())
    }

    /// Aborts the multipart uploads under the prefix that were started more than `older_than`
    /// ago, which a crashed commit can leave behind (S3 bills their parts until aborted).
    /// Returns how many were aborted.
    pub async fn abort_stale_multipart(&self, older_than: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let mut aborted = 0;
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut request = self.client.list_multipart_uploads().bucket(&self.bucket).prefix(&self.prefix);
            if let Some((key_marker, upload_id_marker)) = &markers {
                request = request.key_marker(key_marker).upload_id_marker(upload_id_marker);
            }
            let page = request
                .send()
                .await
                .map_err(|err| fault("ListMultipartUploads", &self.prefix, err).into_error())?;
            for upload in page.uploads() {
                let (Some(key), Some(upload_id), Some(initiated)) =
                    (upload.key(), upload.upload_id(), upload.initiated())
                else {
                    continue;
                };
                let initiated = SystemTime::try_from(*initiated).unwrap_or(now);
                if now.duration_since(initiated).unwrap_or_default() > older_than {
                    self.abort_multipart(key, upload_id).await?;
                    aborted += 1;
                }
            }
            match (page.is_truncated(), page.next_key_marker(), page.next_upload_id_marker()) {
                (Some(true), Some(key_marker), upload_id_marker) => {
                    markers = Some((key_marker.to_owned(), upload_id_marker.unwrap_or_default().to_owned()));
                }
                _ => return Ok(aborted),
            }
        }
    }
}

impl fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Limits and layout

/// Largest object S3 copies in one `CopyObject` or `UploadPartCopy` request (which is why it is
/// also the largest part size).
const MAX_COPY_SIZE: u64 = MAX_PART_SIZE;
/// Most parts of one multipart upload.
const MAX_PARTS: usize = 10_000;
/// Largest state object of a staged upload that we read: 10,000 parts at ~60 bytes each.
const STATE_LIMIT: usize = 1 << 20;
/// Copies of one commit in flight at once.
const COPY_CONCURRENCY: usize = 8;
/// Deletes of one cleanup in flight at once.
const DELETE_CONCURRENCY: usize = 16;
/// Below the prefix: the staged uploads.
const STAGING: &str = "~staging/";
/// Below the prefix: the objects `connect` writes to check conditional writes.
const PROBE: &str = "~probe/";

/// The state object of a staged upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StageState {
    /// Full part objects, in order; each is at least [`MIN_PART_SIZE`].
    parts: Vec<StagedObject>,
    /// The remainder after the parts, smaller than a part; `None` when empty.
    tail: Option<StagedObject>,
    /// A multipart upload a commit started and did not finish, to abort before trying again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit: Option<PendingCommit>,
}

/// A data object of a staged upload, named relative to the stage's directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct StagedObject {
    name: String,
    size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PendingCommit {
    /// Full key of the multipart upload.
    key: String,
    upload_id: String,
}

impl StageState {
    fn size(&self) -> u64 {
        self.objects().map(|object| object.size).sum()
    }

    /// The data objects in the order of their bytes.
    fn objects(&self) -> impl Iterator<Item = &StagedObject> {
        self.parts.iter().chain(self.tail.as_ref())
    }
}

/// Decides whether the store may be used after the probe. Conditional writes are what keeps
/// several replicas (and concurrent requests on one) from overwriting each other's tags and
/// appends; without them only a single writer is safe, and only when the operator says so.
fn probe_verdict(bucket: &str, findings: ServerFindings, single_writer: bool) -> Result<()> {
    let problem = match (findings.if_none_match, findings.if_match) {
        (true, IfMatch::Quoted | IfMatch::Unquoted) => return Ok(()),
        (false, IfMatch::Quoted | IfMatch::Unquoted) => "ignores If-None-Match",
        (true, IfMatch::Ignored) => "ignores If-Match",
        (false, IfMatch::Ignored) => "ignores If-None-Match and If-Match",
        (true, IfMatch::NeverMatches) => "matches If-Match neither with a quoted nor with an unquoted ETag",
        (false, IfMatch::NeverMatches) => {
            "ignores If-None-Match and matches If-Match neither with a quoted nor with an unquoted ETag"
        }
    };
    if single_writer {
        tracing::warn!(bucket, problem, "the S3 store cannot do conditional writes; accepted by single_writer = true");
        return Ok(());
    }
    Err(BlobStoreError::Io(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "the S3 store of bucket {bucket} {problem}, so it cannot do conditional writes and \
             concurrent writers could overwrite each other; set single_writer = true to accept that risk for a single replica"
        ),
    )))
}

/// The precondition headers of one `PutObject`, as sent.
#[derive(Debug, Clone, Copy)]
enum Precondition<'a> {
    None,
    /// `If-None-Match: *`
    IfNoneMatch,
    /// `If-Match: <this>`
    IfMatch(&'a str),
}

/// `etag` without the double quotes S3 puts around it.
fn unquoted(etag: &str) -> &str {
    etag.strip_prefix('"').and_then(|rest| rest.strip_suffix('"')).unwrap_or(etag)
}

fn probe_refused(key: &str, answer: String) -> BlobStoreError {
    BlobStoreError::Io(io::Error::other(format!(
        "s3 PutObject {key}: the store refused a streaming upload ({answer}), also without a checksum trailer"
    )))
}

/// One request of a server-side copy: bytes `range` of source object `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CopyPiece {
    source: usize,
    range: Range<u64>,
}

/// Splits the copy of objects of `sizes`, concatenated, into requests of at most `max_piece`
/// bytes each, one object per request (S3 copies a range of one object per part).
fn copy_pieces(sizes: &[u64], max_piece: u64) -> Vec<CopyPiece> {
    let mut pieces = Vec::new();
    for (source, &size) in sizes.iter().enumerate() {
        let mut start = 0;
        while start < size {
            let end = size.min(start + max_piece);
            pieces.push(CopyPiece { source, range: start..end });
            start = end;
        }
    }
    pieces
}

fn normalized_prefix(prefix: &str) -> Result<String> {
    let prefix = match prefix {
        "" => String::new(),
        p if p.ends_with('/') => p.to_owned(),
        p => format!("{p}/"),
    };
    validate_prefix(&prefix)?;
    Ok(prefix)
}

fn invalid_config(message: String) -> BlobStoreError {
    BlobStoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, message))
}

pub(crate) async fn build_client(config: &S3Config) -> Result<aws_sdk_s3::Client> {
    use aws_sdk_s3::config::{retry::RetryConfig, timeout::TimeoutConfig};
    use aws_smithy_http_client::tls;

    // The SDK's hyper 1 client on rustls with ring (see Cargo.toml), for S3 and for the credential
    // providers of the standard chain alike.
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client)
        .region(aws_sdk_s3::config::Region::new(config.region.clone()));
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "portcullis-config",
            ));
        }
        (None, None) => {}
        _ => {
            return Err(invalid_config(
                "s3 access_key_id and secret_access_key must be given together".to_owned(),
            ))
        }
    }
    let sdk_config = loader.load().await;

    // Standard mode retries throttling, 5xx and connection errors with exponential backoff and
    // jitter, within a retry budget shared by the client.
    let retry = RetryConfig::standard()
        .with_max_attempts(config.max_retries.saturating_add(1))
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(10));
    let timeouts = TimeoutConfig::builder().connect_timeout(config.timeout).read_timeout(config.timeout).build();
    let mut builder = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(config.force_path_style)
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    if config.checksum_when_required {
        builder = builder
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired);
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// What a failed request means for the store.
enum Fault {
    /// 404 for the key (not for the bucket).
    NotFound,
    /// 412, or 409 ConditionalRequestConflict: a concurrent conditional write won.
    Precondition,
    /// 416.
    RangeNotSatisfiable,
    Other(BlobStoreError),
}

impl Fault {
    /// The error, for requests where absence and preconditions are not expected outcomes.
    fn into_error(self) -> BlobStoreError {
        match self {
            Fault::Other(err) => err,
            Fault::NotFound => BlobStoreError::Io(io::Error::new(io::ErrorKind::NotFound, "s3 object not found")),
            Fault::Precondition => BlobStoreError::Io(io::Error::other("s3 precondition failed")),
            Fault::RangeNotSatisfiable => BlobStoreError::Io(io::Error::other("s3 range not satisfiable")),
        }
    }
}

/// Classifies an SDK error. Connection failures, timeouts and 5xx answers (which the SDK has
/// already retried) become [`BlobStoreError::Unavailable`], so the registry answers 503.
fn fault<E>(operation: &str, key: &str, err: SdkError<E>) -> Fault
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unavailable =
        |err: &dyn std::error::Error| Fault::Other(BlobStoreError::Unavailable(format!("s3 {operation} {key}: {}", DisplayErrorContext(err))));
    match &err {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or_default();
            match (status, code) {
                (_, "NoSuchBucket") => unavailable(&err),
                (412, _) | (409, "ConditionalRequestConflict") => Fault::Precondition,
                (404, _) => Fault::NotFound,
                (416, _) => Fault::RangeNotSatisfiable,
                (429 | 500..=599, _) | (_, "SlowDown" | "RequestTimeout" | "InternalError") => unavailable(&err),
                (403, _) => Fault::Other(BlobStoreError::Io(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("s3 {operation} {key}: access denied: {}", DisplayErrorContext(&err)),
                ))),
                _ => Fault::Other(BlobStoreError::Io(io::Error::other(format!(
                    "s3 {operation} {key}: status {status}: {}",
                    DisplayErrorContext(&err)
                )))),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => unavailable(&err),
        _ => Fault::Other(BlobStoreError::Io(io::Error::other(format!(
            "s3 {operation} {key}: {}",
            DisplayErrorContext(&err)
        )))),
    }
}

fn etag_of(operation: &str, key: &str, etag: Option<&str>) -> Result<ETag> {
    match etag {
        Some(etag) => Ok(ETag(etag.to_owned())),
        None => Err(BlobStoreError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("s3 {operation} {key}: the response has no ETag"),
        ))),
    }
}

fn length_of(operation: &str, key: &str, length: Option<i64>) -> Result<u64> {
    match length.map(u64::try_from) {
        Some(Ok(length)) => Ok(length),
        _ => Err(BlobStoreError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("s3 {operation} {key}: the response has no valid Content-Length"),
        ))),
    }
}

/// An object's `Last-Modified`; a response without one (no server seen omits it) counts as
/// written now, so that it looks as young as possible to whoever judges its age.
fn modified_of(last_modified: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    last_modified.and_then(|time| SystemTime::try_from(*time).ok()).unwrap_or_else(SystemTime::now)
}

/// The total size in a `Content-Range: bytes <a>-<b>/<total>` header.
fn total_of_content_range(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/')?.1.parse().ok()
}

/// `body` with its first non-empty chunk already read (and put back in front), or `None` when
/// it has no bytes at all.
async fn first_chunk(mut body: ByteStream) -> Result<Option<ByteStream>> {
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if !chunk.is_empty() {
            return Ok(Some(Box::pin(futures::stream::once(async { Ok(chunk) }).chain(body))));
        }
    }
    Ok(None)
}

fn body_stream(body: aws_sdk_s3::primitives::ByteStream) -> ByteStream {
    Box::pin(futures::stream::try_unfold(body, |mut body| async move {
        match body.try_next().await {
            Ok(Some(chunk)) => Ok(Some((chunk, body))),
            Ok(None) => Ok(None),
            Err(err) => Err(io::Error::other(err)),
        }
    }))
}

// ---------------------------------------------------------------------------------------------
// Requests on full keys

impl S3BlobStore {
    fn object_key(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// `<prefix>~staging/<id>/`, for an id that is a single key segment.
    fn stage_dir(&self, id: &str) -> Result<String> {
        validate_key(id)?;
        if id.contains('/') {
            return Err(BlobStoreError::InvalidKey(id.to_owned()));
        }
        Ok(format!("{}{STAGING}{id}/", self.prefix))
    }

    async fn head(&self, full_key: &str) -> Result<Option<ObjectMeta>> {
        match self.client.head_object().bucket(&self.bucket).key(full_key).send().await {
            Ok(head) => Ok(Some(ObjectMeta {
                size: length_of("HeadObject", full_key, head.content_length())?,
                etag: etag_of("HeadObject", full_key, head.e_tag())?,
                modified: modified_of(head.last_modified()),
            })),
            Err(err) => match fault("HeadObject", full_key, err) {
                Fault::NotFound => Ok(None),
                other => Err(other.into_error()),
            },
        }
    }

    /// Reads a whole object of at most `limit` bytes.
    async fn read_small(&self, full_key: &str, limit: usize) -> Result<Option<SmallObject>> {
        let object = match self.client.get_object().bucket(&self.bucket).key(full_key).send().await {
            Ok(object) => object,
            Err(err) => {
                return match fault("GetObject", full_key, err) {
                    Fault::NotFound => Ok(None),
                    other => Err(other.into_error()),
                }
            }
        };
        let too_large = || BlobStoreError::TooLarge { key: full_key[self.prefix.len()..].to_owned(), limit };
        let length = length_of("GetObject", full_key, object.content_length())?;
        if length > limit as u64 {
            return Err(too_large());
        }
        let etag = etag_of("GetObject", full_key, object.e_tag())?;
        let mut bytes = BytesMut::with_capacity(length as usize);
        let mut body = object.body;
        while let Some(chunk) = body.try_next().await.map_err(|err| BlobStoreError::Io(io::Error::other(err)))? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(SmallObject { bytes: bytes.freeze(), etag }))
    }

    /// Writes `bytes` under `condition`, sending the condition in the form the probe found the
    /// server honours.
    async fn write(&self, full_key: &str, bytes: Bytes, condition: &PutCondition) -> Result<ETag> {
        let precondition = match condition {
            PutCondition::Always => Precondition::None,
            PutCondition::IfAbsent => Precondition::IfNoneMatch,
            PutCondition::IfMatch(etag) => match self.findings.if_match {
                IfMatch::Quoted => Precondition::IfMatch(&etag.0),
                IfMatch::Unquoted => Precondition::IfMatch(unquoted(&etag.0)),
                // Only with single_writer (see `probe_verdict`): a header that is ignored or never
                // matches is left off.
                IfMatch::Ignored | IfMatch::NeverMatches => Precondition::None,
            },
        };
        self.put(full_key, aws_sdk_s3::primitives::ByteStream::from(bytes), precondition).await
    }

    /// One `PutObject` with exactly the precondition headers given.
    async fn put(
        &self,
        full_key: &str,
        body: aws_sdk_s3::primitives::ByteStream,
        precondition: Precondition<'_>,
    ) -> Result<ETag> {
        let request = self.client.put_object().bucket(&self.bucket).key(full_key).body(body);
        let request = match precondition {
            Precondition::None => request,
            Precondition::IfNoneMatch => request.if_none_match("*"),
            Precondition::IfMatch(etag) => request.if_match(etag),
        };
        match request.send().await {
            Ok(put) => etag_of("PutObject", full_key, put.e_tag()),
            // If-Match on an absent key is a 404: the version asked for is not there either.
            Err(err) => match (fault("PutObject", full_key, err), precondition) {
                (Fault::Precondition, _) | (Fault::NotFound, Precondition::IfMatch(_)) => {
                    Err(BlobStoreError::PreconditionFailed(full_key[self.prefix.len()..].to_owned()))
                }
                (other, _) => Err(other.into_error()),
            },
        }
    }

    async fn remove(&self, full_key: &str) -> Result<()> {
        match self.client.delete_object().bucket(&self.bucket).key(full_key).send().await {
            Ok(_) => Ok(()),
            Err(err) => match fault("DeleteObject", full_key, err) {
                Fault::NotFound => Ok(()),
                other => Err(other.into_error()),
            },
        }
    }

    /// Deletes every object whose key starts with `full_prefix`, a page at a time.
    async fn remove_all_under(&self, full_prefix: &str) -> Result<()> {
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(full_prefix)
                .max_keys(1000)
                .send()
                .await
                .map_err(|err| fault("ListObjectsV2", full_prefix, err).into_error())?;
            let keys: Vec<String> = page.contents().iter().filter_map(|o| o.key()).map(str::to_owned).collect();
            if keys.is_empty() {
                return Ok(());
            }
            // Single deletes rather than DeleteObjects: a stage has few objects, and DeleteObjects
            // needs a Content-MD5 or checksum that not every S3-compatible server checks alike.
            futures::stream::iter(keys)
                .map(|key| async move { self.remove(&key).await })
                .buffer_unordered(DELETE_CONCURRENCY)
                .try_collect::<()>()
                .await?;
        }
    }

    async fn abort_multipart(&self, full_key: &str, upload_id: &str) -> Result<()> {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(err) => match fault("AbortMultipartUpload", full_key, err) {
                // NoSuchUpload: completed or aborted already.
                Fault::NotFound => Ok(()),
                other => Err(other.into_error()),
            },
        }
    }

    /// Finds out how the server treats checksums and conditions (see [`S3BlobStore::connect`]),
    /// on an object of its own under `~probe/`, which it removes again. May replace the client.
    async fn probe(&mut self, config: &S3Config) -> Result<ServerFindings> {
        let key = format!("{}{PROBE}{}", self.prefix, uuid::Uuid::new_v4().simple());
        let res = self.probe_key(&key, config).await;
        // The probe object is removed whatever happened; a failure to do so is worth a warning
        // only, the janitor does not look at `~probe/`.
        if let Err(err) = self.remove(&key).await {
            tracing::warn!(key, error = %err, "could not remove the S3 probe object");
        }
        res
    }

    async fn probe_key(&mut self, key: &str, config: &S3Config) -> Result<ServerFindings> {
        let mut checksums = self.findings.checksums;
        // Streaming, as the SDK sends any body it does not hold in memory: with default checksums
        // that is `aws-chunked` with a signed checksum trailer, which some servers refuse.
        // Rebuilt for each attempt, so that the SDK retries it like any other request.
        let streaming = || {
            aws_sdk_s3::primitives::ByteStream::new(aws_sdk_s3::primitives::SdkBody::retryable(|| {
                aws_sdk_s3::primitives::SdkBody::from_body_1_x(http_body_util::Full::new(Bytes::from_static(b"probe 1")))
            }))
        };
        let first = match self.put_streaming_probe(key, streaming()).await? {
            Ok(etag) => etag,
            Err(rejected) if checksums == Checksums::Default => {
                tracing::info!(key, answer = rejected, "the S3 store refused a streaming upload with a checksum trailer; trying without");
                self.client = build_client(&S3Config { checksum_when_required: true, ..config.clone() }).await?;
                checksums = Checksums::WhenRequired;
                match self.put_streaming_probe(key, streaming()).await? {
                    Ok(etag) => etag,
                    Err(rejected) => return Err(probe_refused(key, rejected)),
                }
            }
            Err(rejected) => return Err(probe_refused(key, rejected)),
        };
        let (if_none_match, current) = match self.put(key, Bytes::from_static(b"probe 2").into(), Precondition::IfNoneMatch).await {
            Ok(etag) => (false, etag),
            Err(BlobStoreError::PreconditionFailed(_)) => (true, first),
            Err(err) => return Err(err),
        };
        // The current ETag, as returned and then without quotes: the first form that matches is
        // the server's, and a stale ETag in that form must then fail.
        let mut matched = None;
        for form in [IfMatch::Quoted, IfMatch::Unquoted] {
            let sent = match form {
                IfMatch::Unquoted => unquoted(&current.0),
                _ => current.0.as_str(),
            };
            match self.put(key, Bytes::from_static(b"probe 3").into(), Precondition::IfMatch(sent)).await {
                Ok(_) => {
                    matched = Some(form);
                    break;
                }
                Err(BlobStoreError::PreconditionFailed(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let if_match = match matched {
            None => IfMatch::NeverMatches,
            Some(form) => {
                let stale = match form {
                    IfMatch::Unquoted => unquoted(&current.0),
                    _ => current.0.as_str(),
                };
                match self.put(key, Bytes::from_static(b"probe 4").into(), Precondition::IfMatch(stale)).await {
                    Ok(_) => IfMatch::Ignored,
                    Err(BlobStoreError::PreconditionFailed(_)) => form,
                    Err(err) => return Err(err),
                }
            }
        };
        Ok(ServerFindings { if_none_match, if_match, checksums })
    }

    /// The probe's first, create-only write, with a streaming body: its ETag, or the status line
    /// of a 400 answer (the server refused the request's form).
    async fn put_streaming_probe(
        &self,
        key: &str,
        body: aws_sdk_s3::primitives::ByteStream,
    ) -> Result<std::result::Result<ETag, String>> {
        let res = self.client.put_object().bucket(&self.bucket).key(key).body(body).if_none_match("*").send().await;
        match res {
            Ok(put) => etag_of("PutObject", key, put.e_tag()).map(Ok),
            Err(SdkError::ServiceError(context)) if context.raw().status().as_u16() == 400 => {
                let code = context.err().code().unwrap_or("no error code");
                Ok(Err(format!("400 {code}")))
            }
            Err(err) => Err(fault("PutObject", key, err).into_error()),
        }
    }

    /// Copies `size` bytes of `source` to `target`: in one request up to 5 GiB, above that as a
    /// multipart upload of ranged copies.
    async fn copy(&self, source: &str, size: u64, target: &str) -> Result<()> {
        if size <= MAX_COPY_SIZE {
            self.client
                .copy_object()
                .bucket(&self.bucket)
                .copy_source(self.copy_source(source))
                .key(target)
                .send()
                .await
                .map_err(|err| fault("CopyObject", target, err).into_error())?;
            return Ok(());
        }
        let sources = [(source.to_owned(), size)];
        let upload_id = self.create_multipart(target).await?;
        self.copy_multipart(&sources, target, &upload_id).await
    }

    fn copy_source(&self, full_key: &str) -> String {
        // The keys are made of URL-safe characters only (`[A-Za-z0-9._~/-]`), so no encoding is needed.
        format!("{}/{full_key}", self.bucket)
    }

    async fn create_multipart(&self, target: &str) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(target)
            .send()
            .await
            .map_err(|err| fault("CreateMultipartUpload", target, err).into_error())?;
        match created.upload_id() {
            Some(upload_id) => Ok(upload_id.to_owned()),
            None => Err(BlobStoreError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("s3 CreateMultipartUpload {target}: the response has no upload id"),
            ))),
        }
    }

    /// Fills the multipart upload `upload_id` of `target` with server-side copies of `sources`
    /// (full keys and sizes), in order, and completes it; aborts it on failure.
    async fn copy_multipart(&self, sources: &[(String, u64)], target: &str, upload_id: &str) -> Result<()> {
        let res = self.copy_parts_and_complete(sources, target, upload_id).await;
        if res.is_err() {
            if let Err(err) = self.abort_multipart(target, upload_id).await {
                tracing::warn!(key = target, upload_id, error = %err, "could not abort a failed multipart copy");
            }
        }
        res
    }

    async fn copy_parts_and_complete(&self, sources: &[(String, u64)], target: &str, upload_id: &str) -> Result<()> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

        let sizes: Vec<u64> = sources.iter().map(|(_, size)| *size).collect();
        let pieces = copy_pieces(&sizes, MAX_COPY_SIZE);
        if pieces.len() > MAX_PARTS {
            return Err(BlobStoreError::Io(io::Error::other(format!(
                "s3 copy to {target}: {} parts exceed the multipart limit of {MAX_PARTS}",
                pieces.len()
            ))));
        }
        let parts: Vec<CompletedPart> = futures::stream::iter(pieces.into_iter().enumerate())
            .map(|(index, piece)| async move {
                let part_number = index as i32 + 1;
                let (source, size) = &sources[piece.source];
                let mut request = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(target)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .copy_source(self.copy_source(source));
                if piece.range != (0..*size) {
                    request = request.copy_source_range(format!("bytes={}-{}", piece.range.start, piece.range.end - 1));
                }
                // The SDK sends this bodiless PUT without a Content-Length, which Ceph RGW 16
                // refuses with 411 MissingContentLength.
                let copied = request
                    .customize()
                    .mutate_request(|request| {
                        request.headers_mut().insert("content-length", "0");
                    })
                    .send()
                    .await
                    .map_err(|err| fault("UploadPartCopy", source, err).into_error())?;
                let etag = copied.copy_part_result().and_then(|result| result.e_tag());
                let etag = etag_of("UploadPartCopy", source, etag)?;
                Ok::<_, BlobStoreError>(CompletedPart::builder().part_number(part_number).e_tag(etag.0).build())
            })
            .buffered(COPY_CONCURRENCY)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(target)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|err| fault("CompleteMultipartUpload", target, err).into_error())?;
        Ok(())
    }

    /// The keys below `s3_prefix` (relative to it) that sort after `start_after`, up to `want`,
    /// for the non-delimited [`BlobStore::list`] and [`BlobStore::list_meta`]: each listed object
    /// as `entry` makes it of its relative key and what the listing says of it.
    async fn list_keys<T>(
        &self,
        s3_prefix: &str,
        start_after: Option<&str>,
        want: usize,
        entry: impl Fn(&str, &aws_sdk_s3::types::Object) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut keys = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(s3_prefix)
                .max_keys((want - keys.len()).clamp(1, 1000) as i32);
            request = match (&continuation, start_after) {
                (Some(token), _) => request.continuation_token(token),
                (None, Some(start_after)) => request.start_after(format!("{s3_prefix}{start_after}")),
                (None, None) => request,
            };
            let page = request.send().await.map_err(|err| fault("ListObjectsV2", s3_prefix, err).into_error())?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let relative = &key[s3_prefix.len().min(key.len())..];
                // At the root, `~` entries are the store's own and sort last (see the module doc).
                if self.is_internal(key) {
                    return Ok(keys);
                }
                if !relative.is_empty() {
                    keys.push(entry(relative, object)?);
                }
                if keys.len() >= want {
                    return Ok(keys);
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(token)) => continuation = Some(token.to_owned()),
                _ => return Ok(keys),
            }
        }
    }

    fn is_internal(&self, full_key: &str) -> bool {
        full_key.len() > self.prefix.len() && full_key.as_bytes()[self.prefix.len()] == b'~'
    }

    /// The names directly below `s3_prefix` that sort after `start_after`, in byte order of the
    /// names, up to `want`.
    ///
    /// S3 orders a "directory" `d` by `d/`, our contract by `d`: the two orders differ only where a
    /// directory `d` is a prefix of a name `d-…` or `d.…` (`-` and `.` sort before `/`), which S3
    /// lists first. So before each name S3 returns, the directories among its prefixes that end
    /// before a `-` or `.` are looked up (one small listing each, once) and emitted first.
    async fn list_names(&self, s3_prefix: &str, start_after: Option<&str>, want: usize) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        // The last name emitted, or the cut: everything emitted is greater, so this also drops
        // repeats (a directory emitted early, an object and a directory of one name).
        let mut last: Option<String> = start_after.map(str::to_owned);
        let after = |last: &Option<String>, name: &str| last.as_deref().is_none_or(|last| name > last);
        let mut continuation: Option<String> = None;
        loop {
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(s3_prefix)
                .delimiter("/")
                .max_keys((want - names.len()).clamp(1, 1000) as i32);
            request = match (&continuation, start_after) {
                (Some(token), _) => request.continuation_token(token),
                (None, Some(start_after)) => request.start_after(format!("{s3_prefix}{start_after}")),
                (None, None) => request,
            };
            let page = request.send().await.map_err(|err| fault("ListObjectsV2", s3_prefix, err).into_error())?;
            // Objects and common prefixes come in two lists; merge them in key order.
            let mut entries: Vec<&str> = page.contents().iter().filter_map(|object| object.key()).collect();
            entries.extend(page.common_prefixes().iter().filter_map(|common| common.prefix()));
            entries.sort_unstable();
            for full in entries {
                if self.is_internal(full) {
                    return Ok(names);
                }
                let name = full[s3_prefix.len().min(full.len())..].trim_end_matches('/');
                if name.is_empty() {
                    continue;
                }
                for (position, byte) in name.bytes().enumerate() {
                    let candidate = &name[..position];
                    if position == 0 || !matches!(byte, b'-' | b'.') || !after(&last, candidate) {
                        continue;
                    }
                    if self.is_directory(&format!("{s3_prefix}{candidate}/")).await? {
                        names.push(candidate.to_owned());
                        last = Some(candidate.to_owned());
                        if names.len() >= want {
                            return Ok(names);
                        }
                    }
                }
                if after(&last, name) {
                    names.push(name.to_owned());
                    last = Some(name.to_owned());
                    if names.len() >= want {
                        return Ok(names);
                    }
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(token)) => continuation = Some(token.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    async fn is_directory(&self, full_prefix: &str) -> Result<bool> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(full_prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|err| fault("ListObjectsV2", full_prefix, err).into_error())?;
        Ok(!page.contents().is_empty())
    }

    async fn read_state(&self, dir: &str) -> Result<Option<(StageState, ETag)>> {
        let key = format!("{dir}state");
        let Some(small) = self.read_small(&key, STATE_LIMIT).await? else {
            return Ok(None);
        };
        let state = serde_json::from_slice(&small.bytes).map_err(|err| {
            BlobStoreError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("s3 stage state {key}: {err}")))
        })?;
        Ok(Some((state, small.etag)))
    }

    async fn write_state(&self, dir: &str, state: &StageState, condition: &PutCondition) -> Result<ETag> {
        let json = serde_json::to_vec(state).expect("a stage state always serializes");
        self.write(&format!("{dir}state"), Bytes::from(json), condition).await
    }

    /// Uploads one data object of a stage under a fresh name.
    async fn put_data(&self, dir: &str, kind: &str, index: usize, bytes: Bytes) -> Result<StagedObject> {
        let name = format!("{kind}-{index:05}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let size = bytes.len() as u64;
        self.write(&format!("{dir}{name}"), bytes, &PutCondition::Always).await?;
        Ok(StagedObject { name, size })
    }

    /// Appends `body` after the stage's current tail as new data objects: full parts, and the
    /// remainder as a new tail. Returns them and the number of body bytes; on error, removes
    /// what it wrote.
    async fn write_data(
        &self,
        dir: &str,
        state: &StageState,
        body: &mut ByteStream,
    ) -> Result<(Vec<StagedObject>, Option<StagedObject>, u64)> {
        let part_size = self.part_size as usize;
        let first_index = state.parts.len();
        let mut written: Vec<StagedObject> = Vec::new();
        let res: Result<(Option<StagedObject>, u64)> = async {
            // The one buffer of the append: the old tail, then body bytes, one part at a time.
            let mut buffer = BytesMut::with_capacity(part_size);
            self.read_tail(dir, state.tail.as_ref(), &mut buffer).await?;
            let mut appended = 0u64;
            // A replica with a smaller part size may find a tail of a part or more.
            let mut pending = Bytes::new();
            loop {
                while buffer.len() >= part_size {
                    let index = first_index + written.len();
                    if index >= MAX_PARTS {
                        return Err(BlobStoreError::TooLarge { key: dir.to_owned(), limit: MAX_PARTS * part_size });
                    }
                    let part = buffer.split_to(part_size).freeze();
                    written.push(self.put_data(dir, "part", index, part).await?);
                    // Takes back the part's memory once the request has let go of it.
                    buffer.reserve(part_size);
                }
                if pending.is_empty() {
                    match body.next().await {
                        Some(chunk) => {
                            pending = chunk?;
                            appended += pending.len() as u64;
                        }
                        None => break,
                    }
                }
                let take = pending.len().min(part_size - buffer.len());
                buffer.extend_from_slice(&pending.split_to(take));
            }
            if appended == 0 {
                return Ok((None, 0));
            }
            let tail = match buffer.is_empty() {
                true => None,
                false => Some(self.put_data(dir, "tail", first_index + written.len(), buffer.freeze()).await?),
            };
            Ok((tail, appended))
        }
        .await;
        match res {
            Ok((tail, appended)) => Ok((written, tail, appended)),
            Err(err) => {
                self.remove_objects(dir, &written).await;
                Err(err)
            }
        }
    }

    /// Removes data objects that no state points at (best effort: a leftover is removed with the
    /// stage, by commit, abort or the janitor).
    async fn remove_objects(&self, dir: &str, objects: &[StagedObject]) {
        for object in objects {
            let key = format!("{dir}{}", object.name);
            if let Err(err) = self.remove(&key).await {
                tracing::warn!(key, error = %err, "could not remove an unused staged object");
            }
        }
    }

    /// Reads the stage's current tail (smaller than a part) into `buffer`.
    async fn read_tail(&self, dir: &str, tail: Option<&StagedObject>, buffer: &mut BytesMut) -> Result<()> {
        let Some(tail) = tail else {
            return Ok(());
        };
        let key = format!("{dir}{}", tail.name);
        let wrong = || {
            BlobStoreError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("s3 stage object {key} is missing or not {} bytes long", tail.size),
            ))
        };
        let object = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(object) => object,
            Err(err) => {
                return Err(match fault("GetObject", &key, err) {
                    Fault::NotFound => wrong(),
                    other => other.into_error(),
                })
            }
        };
        let start = buffer.len();
        let mut body = object.body;
        while let Some(chunk) = body.try_next().await.map_err(|err| BlobStoreError::Io(io::Error::other(err)))? {
            if (buffer.len() - start + chunk.len()) as u64 > tail.size {
                return Err(wrong());
            }
            buffer.extend_from_slice(&chunk);
        }
        if (buffer.len() - start) as u64 != tail.size {
            return Err(wrong());
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize> {
        self.abort_stale_multipart(older_than).await
    }

    async fn presigned_get(&self, key: &str, expires: Duration) -> Result<Option<String>> {
        self.presign_get(key, expires).await.map(Some)
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let full_key = self.object_key(key)?;
        self.head(&full_key).await
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<ObjectReader>> {
        let full_key = self.object_key(key)?;
        let unsatisfiable = |range: &Range<u64>, size| BlobStoreError::RangeNotSatisfiable {
            start: range.start,
            end: range.end,
            size,
        };
        let request = self.client.get_object().bucket(&self.bucket).key(&full_key);
        let request = match &range {
            None => request,
            // HTTP cannot ask for zero bytes, and a reversed range is never satisfiable.
            Some(range) if range.start >= range.end => {
                let Some(meta) = self.head(&full_key).await? else {
                    return Ok(None);
                };
                if range.start > range.end || range.end > meta.size {
                    return Err(unsatisfiable(range, meta.size));
                }
                return Ok(Some(ObjectReader { meta, body: Box::pin(futures::stream::empty()) }));
            }
            Some(range) => request.range(format!("bytes={}-{}", range.start, range.end - 1)),
        };
        let object = match request.send().await {
            Ok(object) => object,
            Err(err) => {
                return match (fault("GetObject", &full_key, err), &range) {
                    (Fault::NotFound, _) => Ok(None),
                    (Fault::RangeNotSatisfiable, Some(range)) => match self.head(&full_key).await? {
                        Some(meta) => Err(unsatisfiable(range, meta.size)),
                        None => Ok(None),
                    },
                    (other, _) => Err(other.into_error()),
                }
            }
        };
        let etag = etag_of("GetObject", &full_key, object.e_tag())?;
        let size = match &range {
            None => length_of("GetObject", &full_key, object.content_length())?,
            Some(range) => {
                let total = object.content_range().and_then(total_of_content_range).ok_or_else(|| {
                    BlobStoreError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("s3 GetObject {full_key}: a ranged read without a valid Content-Range"),
                    ))
                })?;
                // S3 shortens a range that runs past the end; the contract refuses it.
                if range.end > total {
                    return Err(unsatisfiable(range, total));
                }
                total
            }
        };
        let modified = modified_of(object.last_modified());
        Ok(Some(ObjectReader { meta: ObjectMeta { size, etag, modified }, body: body_stream(object.body) }))
    }

    async fn get_small(&self, key: &str, limit: usize) -> Result<Option<SmallObject>> {
        let full_key = self.object_key(key)?;
        self.read_small(&full_key, limit).await
    }

    async fn put_small(&self, key: &str, bytes: Bytes, condition: PutCondition) -> Result<ETag> {
        let full_key = self.object_key(key)?;
        self.write(&full_key, bytes, &condition).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full_key = self.object_key(key)?;
        self.remove(&full_key).await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        delimited: bool,
    ) -> Result<ListPage> {
        validate_prefix(prefix)?;
        let s3_prefix = format!("{}{prefix}", self.prefix);
        // One more than asked, to tell whether the page is the last.
        let want = limit.saturating_add(1);
        let mut entries = match delimited {
            true => self.list_names(&s3_prefix, start_after, want).await?,
            false => self.list_keys(&s3_prefix, start_after, want, |key, _| Ok(key.to_owned())).await?,
        };
        let truncated = entries.len() > limit;
        entries.truncate(limit);
        Ok(ListPage { entries, truncated })
    }

    async fn list_meta(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<MetaPage> {
        validate_prefix(prefix)?;
        let s3_prefix = format!("{}{prefix}", self.prefix);
        // The listing carries size, ETag and Last-Modified: no request per key.
        let entry = |key: &str, object: &aws_sdk_s3::types::Object| {
            let full_key = format!("{s3_prefix}{key}");
            let meta = ObjectMeta {
                size: length_of("ListObjectsV2", &full_key, object.size())?,
                etag: etag_of("ListObjectsV2", &full_key, object.e_tag())?,
                modified: modified_of(object.last_modified()),
            };
            Ok((key.to_owned(), meta))
        };
        let mut entries = self.list_keys(&s3_prefix, start_after, limit.saturating_add(1), entry).await?;
        let truncated = entries.len() > limit;
        entries.truncate(limit);
        Ok(MetaPage { entries, truncated })
    }

    async fn stage_create(&self, id: &str) -> Result<()> {
        let dir = self.stage_dir(id)?;
        match self.write_state(&dir, &StageState::default(), &PutCondition::IfAbsent).await {
            Ok(_) => Ok(()),
            Err(BlobStoreError::PreconditionFailed(_)) => {
                Err(BlobStoreError::PreconditionFailed(format!("staged upload {id} exists already")))
            }
            Err(err) => Err(err),
        }
    }

    async fn stage_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64> {
        let dir = self.stage_dir(id)?;
        // An empty body changes nothing, so it is not refused while a commit is pending: a client
        // that retries `PUT ?digest=` after a failed commit sends an empty last chunk, and the
        // commit that follows takes over the pending one.
        let Some(first) = first_chunk(body).await? else {
            let size = self.read_state(&dir).await?.map(|(state, _)| state.size());
            return match size {
                None => Err(BlobStoreError::NotFound(id.to_owned())),
                Some(size) if size != offset => {
                    Err(BlobStoreError::PreconditionFailed(format!("{id} holds {size} bytes, not {offset}")))
                }
                Some(_) => Ok(offset),
            };
        };
        let mut body = first;
        let Some((state, state_etag)) = self.read_state(&dir).await? else {
            return Err(BlobStoreError::NotFound(id.to_owned()));
        };
        let size = state.size();
        if size != offset {
            return Err(BlobStoreError::PreconditionFailed(format!("{id} holds {size} bytes, not {offset}")));
        }
        if state.commit.is_some() {
            return Err(BlobStoreError::PreconditionFailed(format!("{id} is being committed")));
        }
        let (new_parts, new_tail, appended) = self.write_data(&dir, &state, &mut body).await?;
        if appended == 0 {
            return Ok(offset);
        }
        let mut next = state.clone();
        next.parts.extend(new_parts.iter().cloned());
        next.tail = new_tail.clone();
        match self.write_state(&dir, &next, &PutCondition::IfMatch(state_etag)).await {
            Ok(_) => {}
            // Another append, a commit or an abort changed the stage first (an If-Match on a
            // deleted state fails too): ours is not part of it.
            Err(BlobStoreError::PreconditionFailed(_)) => {
                let unused: Vec<StagedObject> = new_parts.into_iter().chain(new_tail).collect();
                self.remove_objects(&dir, &unused).await;
                return Err(BlobStoreError::PreconditionFailed(format!("{id} was changed by a concurrent request")));
            }
            // The state may or may not have been written (a lost response): leave the new
            // objects, which the state may now point at; the stage's cleanup removes strays.
            Err(err) => return Err(err),
        }
        // The old tail's bytes now live in the new parts and tail.
        if let Some(old_tail) = state.tail {
            self.remove_objects(&dir, &[old_tail]).await;
        }
        Ok(offset + appended)
    }

    async fn stage_read(&self, id: &str) -> Result<ByteStream> {
        let dir = self.stage_dir(id)?;
        let Some((state, _)) = self.read_state(&dir).await? else {
            return Err(BlobStoreError::NotFound(id.to_owned()));
        };
        let store = self.clone();
        let objects: Vec<StagedObject> = state.objects().cloned().collect();
        // One object open at a time, in order; each is streamed, not buffered.
        let stream = futures::stream::iter(objects)
            .then(move |object| {
                let (store, key) = (store.clone(), format!("{dir}{}", object.name));
                async move {
                    let found = store.client.get_object().bucket(&store.bucket).key(&key).send().await;
                    match found {
                        Ok(found) => Ok(body_stream(found.body)),
                        Err(err) => Err(io::Error::other(fault("GetObject", &key, err).into_error())),
                    }
                }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    async fn stage_size(&self, id: &str) -> Result<Option<u64>> {
        let dir = self.stage_dir(id)?;
        Ok(self.read_state(&dir).await?.map(|(state, _)| state.size()))
    }

    async fn stage_commit(&self, id: &str, key: &str) -> Result<()> {
        let dir = self.stage_dir(id)?;
        let target = self.object_key(key)?;
        let Some((mut state, state_etag)) = self.read_state(&dir).await? else {
            return Err(BlobStoreError::NotFound(id.to_owned()));
        };
        if let Some(pending) = state.commit.take() {
            // A commit that failed or crashed halfway; its upload holds copies we no longer need.
            self.abort_multipart(&pending.key, &pending.upload_id).await?;
        }
        let sources: Vec<(String, u64)> =
            state.objects().map(|object| (format!("{dir}{}", object.name), object.size)).collect();
        match sources.as_slice() {
            [] => {
                self.write(&target, Bytes::new(), &PutCondition::Always).await?;
            }
            [(source, size)] => self.copy(source, *size, &target).await?,
            _ => {
                let upload_id = self.create_multipart(&target).await?;
                // Recording the upload lets a later commit or abort of this stage abort it, and
                // the If-Match stops an append that slipped in since the state was read.
                state.commit = Some(PendingCommit { key: target.clone(), upload_id: upload_id.clone() });
                if let Err(err) = self.write_state(&dir, &state, &PutCondition::IfMatch(state_etag)).await {
                    if let Err(abort_err) = self.abort_multipart(&target, &upload_id).await {
                        tracing::warn!(key = target, upload_id, error = %abort_err, "could not abort an unused multipart upload");
                    }
                    return Err(match err {
                        BlobStoreError::PreconditionFailed(_) => {
                            BlobStoreError::PreconditionFailed(format!("{id} was changed by a concurrent request"))
                        }
                        other => other,
                    });
                }
                self.copy_multipart(&sources, &target, &upload_id).await?;
            }
        }
        // The object is complete and visible; the stage ends when its state is gone.
        self.remove(&format!("{dir}state")).await?;
        if let Err(err) = self.remove_all_under(&dir).await {
            tracing::warn!(stage = id, error = %err, "could not remove the objects of a committed stage");
        }
        Ok(())
    }

    async fn stage_abort(&self, id: &str) -> Result<()> {
        let dir = self.stage_dir(id)?;
        if let Some((state, _)) = self.read_state(&dir).await? {
            if let Some(pending) = state.commit {
                self.abort_multipart(&pending.key, &pending.upload_id).await?;
            }
        }
        self.remove(&format!("{dir}state")).await?;
        self.remove_all_under(&dir).await
    }

    async fn stale_stages(&self, older_than: Duration) -> Result<Vec<String>> {
        let staging = format!("{}{STAGING}", self.prefix);
        let now = SystemTime::now();
        let mut stale = Vec::new();
        // The stage being scanned: its id, the state's time, and the newest object's time.
        let mut current: Option<(String, Option<SystemTime>, SystemTime)> = None;
        let mut finish = |stage: Option<(String, Option<SystemTime>, SystemTime)>| {
            if let Some((id, state_time, newest)) = stage {
                // A stage is as old as its state; objects without a state (a cleanup cut
                // short) are as old as the newest of them.
                let touched = state_time.unwrap_or(newest);
                if now.duration_since(touched).unwrap_or_default() > older_than {
                    stale.push(id);
                }
            }
        };
        let mut continuation: Option<String> = None;
        loop {
            let mut request = self.client.list_objects_v2().bucket(&self.bucket).prefix(&staging).max_keys(1000);
            if let Some(token) = &continuation {
                request = request.continuation_token(token);
            }
            let page = request.send().await.map_err(|err| fault("ListObjectsV2", &staging, err).into_error())?;
            for object in page.contents() {
                let Some((id, name)) = object.key().and_then(|key| key[staging.len()..].split_once('/')) else {
                    continue;
                };
                let modified = object.last_modified().and_then(|time| SystemTime::try_from(*time).ok()).unwrap_or(now);
                match &mut current {
                    Some((current_id, state_time, newest)) if current_id == id => {
                        if name == "state" {
                            *state_time = Some(modified);
                        }
                        *newest = (*newest).max(modified);
                    }
                    _ => {
                        finish(current.take());
                        let state_time = (name == "state").then_some(modified);
                        current = Some((id.to_owned(), state_time, modified));
                    }
                }
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(token)) => continuation = Some(token.to_owned()),
                _ => break,
            }
        }
        finish(current.take());
        Ok(stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_of_the_probe() {
        use IfMatch::{Ignored, NeverMatches, Quoted, Unquoted};
        let check = |if_none_match: bool, if_match: IfMatch, single_writer: bool, refused: Option<&str>| {
            let findings = ServerFindings { if_none_match, if_match, checksums: Checksums::Default };
            match (probe_verdict("registry", findings, single_writer), refused) {
                (Ok(()), None) => {}
                (Err(err), Some(what)) => {
                    let message = err.to_string();
                    assert!(message.contains(what), "{message}");
                    assert!(message.contains("single_writer = true"), "{message}");
                    assert!(!message.contains('\n'), "one line: {message}");
                }
                (res, refused) => {
                    panic!("{findings:?} single_writer={single_writer}: {res:?}, expected refusal {refused:?}")
                }
            }
        };
        check(true, Quoted, false, None);
        check(true, Unquoted, false, None);
        check(false, Quoted, false, Some("ignores If-None-Match,"));
        check(false, Unquoted, false, Some("ignores If-None-Match,"));
        check(true, Ignored, false, Some("ignores If-Match,"));
        check(false, Ignored, false, Some("ignores If-None-Match and If-Match,"));
        check(true, NeverMatches, false, Some("matches If-Match neither with a quoted nor with an unquoted ETag"));
        check(false, NeverMatches, false, Some("ignores If-None-Match and matches If-Match neither"));
        for if_match in [Quoted, Unquoted, Ignored, NeverMatches] {
            for if_none_match in [true, false] {
                check(if_none_match, if_match, true, None);
            }
        }
    }

    #[test]
    fn etags_without_quotes() {
        for (etag, expected) in [("\"abc\"", "abc"), ("abc", "abc"), ("\"abc-3\"", "abc-3"), ("\"", "\""), ("", "")] {
            assert_eq!(unquoted(etag), expected, "{etag:?}");
        }
    }

    #[test]
    fn pieces_of_a_copy() {
        let check = |sizes: &[u64], max: u64, expected: &[(usize, Range<u64>)]| {
            let pieces: Vec<(usize, Range<u64>)> =
                copy_pieces(sizes, max).into_iter().map(|piece| (piece.source, piece.range)).collect();
            assert_eq!(pieces, expected, "{sizes:?} by {max}");
        };
        check(&[], 10, &[]);
        check(&[10], 10, &[(0, 0..10)]);
        check(&[25], 10, &[(0, 0..10), (0, 10..20), (0, 20..25)]);
        check(&[10, 10, 3], 10, &[(0, 0..10), (1, 0..10), (2, 0..3)]);
        check(&[0, 4], 10, &[(1, 0..4)]);
        // A 12 GiB object at S3's 5 GiB copy limit.
        check(&[12 << 30], MAX_COPY_SIZE, &[(0, 0..5 << 30), (0, 5 << 30..10 << 30), (0, 10 << 30..12 << 30)]);
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalized_prefix("").unwrap(), "");
        assert_eq!(normalized_prefix("registry").unwrap(), "registry/");
        assert_eq!(normalized_prefix("a/b/").unwrap(), "a/b/");
        for bad in ["/", "/a", "a//", "../a", "a b"] {
            assert!(normalized_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_range() {
        assert_eq!(total_of_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_of_content_range("bytes */100"), Some(100));
        assert_eq!(total_of_content_range("bytes 0-9/*"), None);
        assert_eq!(total_of_content_range(""), None);
    }

    #[test]
    fn stage_state() {
        let state = StageState {
            parts: vec![StagedObject { name: "part-00000-a".into(), size: 8 }],
            tail: Some(StagedObject { name: "tail-00001-b".into(), size: 3 }),
            commit: None,
        };
        assert_eq!(state.size(), 11);
        let json = serde_json::to_string(&state).unwrap();
        assert!(!json.contains("commit"), "{json}");
        assert_eq!(serde_json::from_str::<StageState>(&json).unwrap(), state);
        assert_eq!(StageState::default().size(), 0);
    }
}
