//! The S3 side of the harness: which backend a test run uses, where the S3 server is, a fresh
//! bucket per registry, and a plain SDK client to look behind the store (staging objects,
//! multipart uploads).
//!
//! `scripts/s3-server start DIR` starts moto and prints the variables read here, the same ones
//! `storage/tests/common/mod.rs` reads:
//! - `PORTCULLIS_TEST_S3_ENDPOINT` (required for anything on S3), `PORTCULLIS_TEST_S3_REGION`
//!   (default `us-east-1`), `PORTCULLIS_TEST_S3_ACCESS_KEY_ID` and `PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY`
//!   (default: the standard AWS chain);
//! - `PORTCULLIS_TEST_S3_BUCKET`: use this existing bucket with a fresh prefix per registry instead
//!   of creating a bucket each time (for AWS S3);
//! - `PORTCULLIS_TEST_S3_CHECKSUM_WHEN_REQUIRED=1`: for servers that refuse streaming checksums.
//!
//! `PORTCULLIS_TEST_BACKEND=s3` runs every [`super::TestRegistry`] on S3 (`scripts/test` runs the
//! API, client and tag-rule suites a second time so). Nothing here deletes buckets; moto forgets
//! them when it stops.

use std::time::Duration;

use portcullis::config::S3Storage;

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

/// The S3 server the tests run against.
#[derive(Debug, Clone)]
pub struct TestS3 {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub shared_bucket: Option<String>,
    pub checksum_when_required: bool,
}

impl TestS3 {
    /// The server named by the environment; `None` (after saying so) when there is none and none
    /// is required. Panics when `CI` or `PORTCULLIS_REQUIRE_S3` is set and there is none, so that a
    /// CI run cannot pass without having exercised S3.
    pub fn from_env() -> Option<TestS3> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let Some(endpoint) = var("PORTCULLIS_TEST_S3_ENDPOINT") else {
            if let Some(required_by) = ["CI", "PORTCULLIS_REQUIRE_S3"].into_iter().find(|name| var(name).is_some()) {
                panic!(
                    "PORTCULLIS_TEST_S3_ENDPOINT is not set, and {required_by} requires the S3 tests to run; \
                     start a server with `eval \"$(scripts/s3-server start target/s3)\"` first"
                );
            }
            eprintln!("skipping: PORTCULLIS_TEST_S3_ENDPOINT is not set (`eval \"$(scripts/s3-server start target/s3)\"` sets it)");
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

    /// The server for a run with `PORTCULLIS_TEST_BACKEND=s3`, which cannot do without one.
    pub fn required() -> TestS3 {
        match std::env::var("PORTCULLIS_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => TestS3::from_env().expect("the endpoint is set"),
            _ => panic!(
                "PORTCULLIS_TEST_BACKEND=s3 needs PORTCULLIS_TEST_S3_ENDPOINT; \
                 start a server with `eval \"$(scripts/s3-server start target/s3)\"` first"
            ),
        }
    }

    /// `[storage.s3]` settings on an empty bucket of its own (or an empty prefix of the shared
    /// bucket), with the smallest part size so that tests reach several parts quickly.
    pub async fn fresh_storage(&self) -> S3Storage {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let (bucket, prefix) = match &self.shared_bucket {
            Some(bucket) => (bucket.clone(), format!("portcullis-test-{unique}")),
            None => {
                let bucket = format!("portcullis-test-{}", &unique[..20]);
                self.client().await.create_bucket().bucket(&bucket).send().await.expect("creating a test bucket");
                (bucket, "registry".to_owned())
            }
        };
        S3Storage {
            bucket,
            region: self.region.clone(),
            endpoint: Some(self.endpoint.clone()),
            prefix,
            force_path_style: true,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            part_size_mib: 5,
            single_writer: false,
            checksum_when_required: self.checksum_when_required,
            redirect_blobs: false,
            presign_expiry_secs: 300,
            timeout_secs: 30,
            max_retries: 2,
        }
    }

    /// A plain SDK client, for what the registry does not do (creating buckets, looking behind it).
    pub async fn client(&self) -> aws_sdk_s3::Client {
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
            .timeout_config(aws_sdk_s3::config::timeout::TimeoutConfig::builder().operation_timeout(Duration::from_secs(60)).build())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

/// The `[storage]` section of a TOML configuration for `s3`, for child processes.
pub fn storage_toml(s3: &S3Storage) -> String {
    let quoted = |value: &str| serde_json::Value::from(value).to_string();
    let mut text = format!(
        "[storage.s3]\nbucket = {}\nregion = {}\nprefix = {}\nforce_path_style = {}\npart_size_mib = {}\n\
         single_writer = {}\nchecksum_when_required = {}\nredirect_blobs = {}\npresign_expiry_secs = {}\n\
         timeout_secs = {}\nmax_retries = {}\n",
        quoted(&s3.bucket),
        quoted(&s3.region),
        quoted(&s3.prefix),
        s3.force_path_style,
        s3.part_size_mib,
        s3.single_writer,
        s3.checksum_when_required,
        s3.redirect_blobs,
        s3.presign_expiry_secs,
        s3.timeout_secs,
        s3.max_retries,
    );
    for (key, value) in [("endpoint", &s3.endpoint), ("access_key_id", &s3.access_key_id), ("secret_access_key", &s3.secret_access_key)] {
        if let Some(value) = value {
            text.push_str(&format!("{key} = {}\n", quoted(value)));
        }
    }
    text
}

/// Every key of `bucket` below `prefix`, through the SDK, bypassing the store.
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
