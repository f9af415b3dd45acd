//! The S3 test environment shared by `conformance.rs` and `s3.rs`: where the server is, and a
//! fresh bucket (or, on a shared bucket, a fresh prefix) per test.
//!
//! `scripts/s3-server start DIR` starts moto and prints the variables read here:
//! - `PORTCULLIS_TEST_S3_ENDPOINT` (required to run the S3 tests at all), `PORTCULLIS_TEST_S3_REGION`
//!   (default `us-east-1`), `PORTCULLIS_TEST_S3_ACCESS_KEY_ID` and `PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY`
//!   (default: the standard AWS chain);
//! - `PORTCULLIS_TEST_S3_BUCKET`: use this existing bucket with a fresh prefix per test instead of
//!   creating a bucket per test (for AWS S3, where buckets are slow to create and limited in number);
//! - `PORTCULLIS_TEST_S3_CHECKSUM_WHEN_REQUIRED=1`: for servers that refuse streaming checksums.
//!
//! Without an endpoint the S3 tests return early, unless `CI` or `PORTCULLIS_REQUIRE_S3` is set:
//! then they fail, so that a CI run cannot pass without having exercised the S3 backend.
//!
//! Nothing here deletes the buckets; moto forgets them when it stops.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::time::Duration;

use portcullis_storage::s3::{S3BlobStore, S3Config};

/// The S3 server the tests run against.
#[derive(Debug, Clone)]
pub(crate) struct TestS3 {
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) shared_bucket: Option<String>,
    pub(crate) checksum_when_required: bool,
}

impl TestS3 {
    /// The server named by the environment; `None` (after saying so) when there is none and none
    /// is required. Panics when one is required and missing.
    pub(crate) fn from_env() -> Option<TestS3> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let Some(endpoint) = var("PORTCULLIS_TEST_S3_ENDPOINT") else {
            let required_by = ["CI", "PORTCULLIS_REQUIRE_S3"].into_iter().find(|name| var(name).is_some());
            if let Some(required_by) = required_by {
                panic!(
                    "PORTCULLIS_TEST_S3_ENDPOINT is not set, and {required_by} requires the S3 tests to run; \
                     start a server with `eval \"$(scripts/s3-server start target/s3)\"` first"
                );
            }
            eprintln!(
                "skipping: PORTCULLIS_TEST_S3_ENDPOINT is not set (`eval \"$(scripts/s3-server start target/s3)\"` sets it)"
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
        })
    }

    /// A store configuration on an empty bucket of its own (or an empty prefix of the shared
    /// bucket), with the smallest part size so that tests reach several parts quickly.
    pub(crate) async fn fresh_config(&self) -> S3Config {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (bucket, prefix) = match &self.shared_bucket {
            Some(bucket) => (bucket.clone(), format!("portcullis-test-{unique}")),
            None => {
                let bucket = format!("portcullis-test-{}", &unique[..20]);
                self.client().await.create_bucket().bucket(&bucket).send().await.expect("creating a test bucket");
                (bucket, "registry".to_owned())
            }
        };
        S3Config {
            bucket,
            region: self.region.clone(),
            endpoint: Some(self.endpoint.clone()),
            prefix,
            force_path_style: true,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            part_size: portcullis_storage::s3::MIN_PART_SIZE,
            single_writer: false,
            checksum_when_required: self.checksum_when_required,
            timeout: Duration::from_secs(30),
            max_retries: 2,
        }
    }

    /// A connected store on a fresh bucket.
    pub(crate) async fn fresh_store(&self) -> (S3BlobStore, S3Config) {
        let config = self.fresh_config().await;
        let store = S3BlobStore::connect(config.clone()).await.expect("connecting to the test bucket");
        (store, config)
    }

    /// A plain SDK client, for what the store does not do (creating buckets, looking behind it).
    pub(crate) async fn client(&self) -> aws_sdk_s3::Client {
        use aws_smithy_http_client::tls;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client)
            .region(aws_sdk_s3::config::Region::new(self.region.clone()));
        if let (Some(access_key_id), Some(secret_access_key)) = (&self.access_key_id, &self.secret_access_key) {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "portcullis-tests",
            ));
        }
        let sdk_config = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

/// All keys of the bucket below `prefix`, through the SDK, bypassing the store.
pub(crate) async fn raw_keys(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
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
