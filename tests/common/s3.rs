//! The S3 side of the harness: which backend a test run uses, and registry settings on a fresh
//! bucket of the S3 test server. The server itself, its SDK client and the listings behind the
//! store come from `storage::test_s3` (feature `test-support`).
//!
//! `scripts/s3-server start DIR` starts moto, `scripts/rgw start DIR` Ceph RGW; both print the
//! variables `storage::test_s3` reads:
//! - `PORTCULLIS_TEST_S3_ENDPOINT` (required for anything on S3), `PORTCULLIS_TEST_S3_REGION`
//!   (default `us-east-1`), `PORTCULLIS_TEST_S3_ACCESS_KEY_ID` and `PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY`
//!   (default: the standard AWS chain);
//! - `PORTCULLIS_TEST_S3_BUCKET`: use this existing bucket with a fresh prefix per registry instead
//!   of creating a bucket each time (for AWS S3);
//! - `PORTCULLIS_TEST_S3_CHECKSUM_WHEN_REQUIRED=1`: force `checksum_when_required`;
//! - `PORTCULLIS_TEST_S3_CHECKS_SIGNATURES=1`: the server verifies signatures (RGW, not moto).
//!
//! `PORTCULLIS_TEST_BACKEND=s3` runs every [`super::TestRegistry`] on S3 (`scripts/test` runs the
//! API, client and tag-rule suites again so, on moto and on RGW). Nothing here deletes buckets;
//! the servers forget them when they stop.

use portcullis::config::S3Storage;
pub use storage::test_s3::TestS3;

/// The storage backend the registries of a test run use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A directory in the registry's temp dir (the default).
    Fs,
    /// A fresh bucket on the S3 server of the `PORTCULLIS_TEST_S3_*` variables.
    S3,
}

/// The backend named by `PORTCULLIS_TEST_BACKEND` (`fs` or `s3`; unset or empty means `fs`).
pub fn backend() -> Backend {
    match std::env::var("PORTCULLIS_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("fs") => Backend::Fs,
        Ok("s3") => Backend::S3,
        Ok(other) => panic!("PORTCULLIS_TEST_BACKEND: expected \"fs\" or \"s3\", found {other:?}"),
    }
}

/// `[storage.s3]` settings on an empty bucket of its own (or an empty prefix of the shared
/// bucket), with the smallest part size so that tests reach several parts quickly.
pub async fn fresh_storage(s3: &TestS3) -> S3Storage {
    S3Storage { store: s3.fresh_config().await, redirect_blobs: false, presign_expiry: std::time::Duration::from_secs(300) }
}

/// The `[storage]` section of a TOML configuration for `s3`, for child processes.
pub fn storage_toml(s3: &S3Storage) -> String {
    let quoted = |value: &str| serde_json::Value::from(value).to_string();
    let mut text = format!(
        "[storage.s3]\nbucket = {}\nregion = {}\nprefix = {}\nforce_path_style = {}\npart_size_mib = {}\n\
         single_writer = {}\nchecksum_when_required = {}\nredirect_blobs = {}\npresign_expiry_secs = {}\n\
         timeout_secs = {}\nmax_retries = {}\n",
        quoted(&s3.store.bucket),
        quoted(&s3.store.region),
        quoted(&s3.store.prefix),
        s3.store.force_path_style,
        s3.store.part_size >> 20,
        s3.store.single_writer,
        s3.store.checksum_when_required,
        s3.redirect_blobs,
        s3.presign_expiry.as_secs(),
        s3.store.timeout.as_secs(),
        s3.store.max_retries,
    );
    let store = &s3.store;
    for (key, value) in [("endpoint", &store.endpoint), ("access_key_id", &store.access_key_id), ("secret_access_key", &store.secret_access_key)] {
        if let Some(value) = value {
            text.push_str(&format!("{key} = {}\n", quoted(value)));
        }
    }
    text
}
