//! [`S3Config`]: where the S3 backend keeps objects and how it talks to the server. Plain data,
//! compiled with or without the `s3` feature, so that a registry built without the AWS SDK still
//! reads and reports an S3 configuration (and refuses to start with it). Its `Debug` prints no
//! credential.

use std::fmt;
use std::time::Duration;

/// Default size of the part objects of a staged upload: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Smallest allowed part size: S3 refuses multipart parts below 5 MiB (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest allowed part size: S3 copies at most 5 GiB in one request.
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// Where the S3 backend stores objects and how it talks to the server.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket, which must exist.
    pub bucket: String,
    /// The bucket's region, e.g. `us-east-1` (any value for most S3-compatible servers).
    pub region: String,
    /// Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:9000`; `None` for AWS S3.
    pub endpoint: Option<String>,
    /// Prepended to every key; a `/` is added when it is non-empty and lacks one.
    pub prefix: String,
    /// Address the bucket as `<endpoint>/<bucket>/<key>` instead of `<bucket>.<endpoint>/<key>`;
    /// most self-hosted servers need this.
    pub force_path_style: bool,
    /// Access key; with `secret_access_key`, used instead of the standard AWS credential chain.
    pub access_key_id: Option<String>,
    /// Secret key; `None` (with `access_key_id` `None`) means the standard AWS credential chain
    /// (environment, profile, web identity, ECS, instance metadata).
    pub secret_access_key: Option<String>,
    /// Size of the part objects of staged uploads, between [`MIN_PART_SIZE`] and
    /// [`MAX_PART_SIZE`]; an append buffers at most one part in memory.
    pub part_size: u64,
    /// Accept a server that ignores conditional writes. Only safe with a single replica: tag
    /// updates and appends from two writers could then overwrite each other unnoticed.
    pub single_writer: bool,
    /// Send request checksums only where S3 requires them, and no streaming checksum trailers;
    /// needed by servers such as Ceph RGW 16 and Garage, which refuse the SDK's default uploads.
    pub checksum_when_required: bool,
    /// Limit on connecting, and on waiting for the first byte of a response (request body included).
    pub timeout: Duration,
    /// Retries, with exponential backoff, of throttled requests, 5xx answers and connection
    /// failures before the store reports [`crate::BlobStoreError::Unavailable`].
    pub max_retries: u32,
}


impl S3Config {
    /// A configuration for `bucket` in `region` with the defaults: no prefix, AWS's endpoint and
    /// virtual-hosted addressing, the standard credential chain, 8 MiB parts, conditional writes
    /// required, default checksums, a 30 s timeout and 3 retries.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            region: region.into(),
            endpoint: None,
            prefix: String::new(),
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: DEFAULT_PART_SIZE,
            single_writer: false,
            checksum_when_required: false,
            timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<redacted>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("part_size", &self.part_size)
            .field("single_writer", &self.single_writer)
            .field("checksum_when_required", &self.checksum_when_required)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}
