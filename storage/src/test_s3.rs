//! The S3 server tests run against (feature `test-support`, for this crate's tests and the
//! registry's): where it is, a fresh bucket (or, on a shared bucket, a fresh prefix) per test, and
//! a plain SDK client to look behind the store.
//!
//! `scripts/s3-server start DIR` starts moto, `scripts/rgw start DIR` Ceph RGW; both print the
//! variables read here:
//! - `PORTCULLIS_TEST_S3_ENDPOINT` (required to run the S3 tests at all), `PORTCULLIS_TEST_S3_REGION`
//!   (default `us-east-1`), `PORTCULLIS_TEST_S3_ACCESS_KEY_ID` and `PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY`
//!   (default: the standard AWS chain);
//! - `PORTCULLIS_TEST_S3_BUCKET`: use this existing bucket with a fresh prefix per test instead of
//!   creating a bucket per test (for AWS S3, where buckets are slow to create and limited in number);
//! - `PORTCULLIS_TEST_S3_CHECKSUM_WHEN_REQUIRED=1`: force `checksum_when_required` (the store's
//!   probe finds out by itself whether the server refuses streaming checksums);
//! - `PORTCULLIS_TEST_S3_CHECKS_SIGNATURES=1`: the server verifies request signatures (Ceph RGW,
//!   started by `scripts/rgw`; moto does not), so tests also expect tampered and expired presigned
//!   URLs to be refused.
//!
//! Without an endpoint the S3 tests return early, unless `CI` or `PORTCULLIS_REQUIRE_S3` is set:
//! then they fail, so that a CI run cannot pass without having exercised the S3 backend.
//!
//! Nothing here deletes the buckets; moto and the throwaway RGW forget them when they stop.

use std::time::Duration;

use crate::s3::{build_client, S3BlobStore, S3Config, MIN_PART_SIZE};

/// The S3 server the tests run against.
#[derive(Debug, Clone)]
pub struct TestS3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The region to sign for.
    pub region: String,
    /// Credentials; `None` means the standard AWS chain.
    pub access_key_id: Option<String>,
    /// Goes with `access_key_id`.
    pub secret_access_key: Option<String>,
    /// An existing bucket to use under fresh prefixes instead of creating buckets.
    pub shared_bucket: Option<String>,
    /// Force `checksum_when_required` on the stores.
    pub checksum_when_required: bool,
    /// The server verifies signatures, so a tampered or expired presigned URL gets 403.
    pub checks_signatures: bool,
}

impl TestS3 {
    /// The server named by the environment; `None` (after saying so) when there is none and none
    /// is required. Panics when one is required and missing.
    pub fn from_env() -> Option<TestS3> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let Some(endpoint) = var("PORTCULLIS_TEST_S3_ENDPOINT") else {
            let required_by = ["CI", "PORTCULLIS_REQUIRE_S3"].into_iter().find(|name| var(name).is_some());
            if let Some(required_by) = required_by {
                panic!(
                    "PORTCULLIS_TEST_S3_ENDPOINT is not set, and {required_by} requires the S3 tests to run; \
                     start a server with `eval \"$(scripts/s3-server start target/s3)\"` first"
                );
            }
            // Straight to the process's stderr, past the test harness's capture: a skipped test must
            // not pass silently.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED (no S3 server): {} needs PORTCULLIS_TEST_S3_ENDPOINT (`eval \"$(scripts/s3-server start target/s3)\"` sets it)",
                std::thread::current().name().unwrap_or("an S3 test")
            );
            return None;
        };
        Some(TestS3 {
            endpoint,
            region: var("PORTCULLIS_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id: var("PORTCULLIS_TEST_S3_ACCESS_KEY_ID"),
            secret_access_key: var("PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY"),
            shared_bucket: var("PORTCULLIS_TEST_S3_BUCKET"),
            checksum_when_required: var("PORTCULLIS_TEST_S3_CHECKSUM_WHEN_REQUIRED").is_some_and(|v| v == "1"),
            checks_signatures: var("PORTCULLIS_TEST_S3_CHECKS_SIGNATURES").is_some_and(|v| v == "1"),
        })
    }

    /// The server for a run that cannot do without one (`PORTCULLIS_TEST_BACKEND=s3`).
    pub fn required() -> TestS3 {
        match std::env::var("PORTCULLIS_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => TestS3::from_env().expect("the endpoint is set"),
            _ => panic!(
                "the S3 backend needs PORTCULLIS_TEST_S3_ENDPOINT; \
                 start a server with `eval \"$(scripts/s3-server start target/s3)\"` first"
            ),
        }
    }

    /// A store configuration on an empty bucket of its own (or an empty prefix of the shared
    /// bucket).
    pub async fn fresh_config(&self) -> S3Config {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (bucket, prefix) = match &self.shared_bucket {
            Some(bucket) => (bucket.clone(), format!("portcullis-test-{unique}")),
            None => {
                let bucket = format!("portcullis-test-{}", &unique[..20]);
                self.client().await.create_bucket().bucket(&bucket).send().await.expect("creating a test bucket");
                (bucket, "registry".to_owned())
            }
        };
        self.config(bucket, prefix)
    }

    /// Settings for `bucket` under `prefix`, with the smallest part size so that tests reach
    /// several parts quickly.
    fn config(&self, bucket: String, prefix: String) -> S3Config {
        S3Config {
            bucket,
            region: self.region.clone(),
            endpoint: Some(self.endpoint.clone()),
            prefix,
            force_path_style: true,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            part_size: MIN_PART_SIZE,
            single_writer: false,
            checksum_when_required: self.checksum_when_required,
            timeout: Duration::from_secs(30),
            max_retries: 2,
        }
    }

    /// A connected store on a fresh bucket.
    pub async fn fresh_store(&self) -> (S3BlobStore, S3Config) {
        let config = self.fresh_config().await;
        let store = S3BlobStore::connect(config.clone()).await.expect("connecting to the test bucket");
        (store, config)
    }

    /// A plain SDK client with the store's own settings, for what the store does not do
    /// (creating buckets, looking behind it).
    pub async fn client(&self) -> aws_sdk_s3::Client {
        let mut config = self.config(String::new(), String::new());
        config.timeout = Duration::from_secs(60);
        build_client(&config).await.expect("an SDK client for the test server")
    }
}

/// All keys of the bucket below `prefix`, through the SDK, bypassing the store.
pub async fn raw_keys(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut request = client.list_objects_v2().bucket(bucket).prefix(prefix);
        if let Some(token) = &continuation {
            request = request.continuation_token(token);
        }
        let page = request.send().await.expect("listing the test bucket");
        keys.extend(page.contents().iter().filter_map(|object| object.key()).map(str::to_owned));
        match page.next_continuation_token() {
            Some(token) if page.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
            _ => return keys,
        }
    }
}

/// The keys of the multipart uploads in progress in `bucket` below `prefix`.
pub async fn multipart_uploads(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = client.list_multipart_uploads().bucket(bucket).prefix(prefix).send().await.expect("listing multipart uploads");
    assert_ne!(listed.is_truncated(), Some(true), "more multipart uploads than one page");
    listed.uploads().iter().filter_map(|upload| upload.key()).map(str::to_owned).collect()
}
