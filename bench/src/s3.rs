//! The object store under `scripts/bench --s3`, seen with a plain S3 client (aws-sdk-s3, the
//! SDK portcullis itself uses, with no registry in between): the bucket of a run, and the store's
//! own throughput on the same bytes as the blob rows, which is the ceiling of every S3 row.
//!
//! The store is the one `PORTCULLIS_TEST_S3_*` names (`scripts/s3-server` for moto and
//! `scripts/rgw` for Ceph RGW print these), path-style, and with request checksums only where S3
//! requires them: RGW 16 refuses the SDK's streaming checksums, and checksums are not what is
//! measured. Each ceiling is one pass over 1 GiB (the blob rows' size):
//! - `PutObject` of all of it in one request;
//! - `PutObject`s of 8 MiB, one after another: what portcullis does while a blob arrives (its
//!   staged parts are 8 MiB by default);
//! - a multipart upload of server-side `UploadPartCopy`s of those parts, 8 in flight: what
//!   portcullis's commit does;
//! - `GetObject` of that copy (laid out in the store as portcullis's blobs are), read to the end
//!   by the HTTP client the download rows use, from a presigned URL; the better of two reads.
//!
//! Everything it writes is under the run's prefix and deleted again before it returns.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};

use crate::results::Ceiling;

const MIB: f64 = (1 << 20) as f64;
/// The part size of portcullis's staged uploads (`part_size_mib`, default 8).
const PART: usize = 8 << 20;
/// Copies in flight in a commit, as in portcullis's S3 backend.
const COPY_CONCURRENCY: usize = 8;

/// One bucket and prefix of the store under test.
pub(crate) struct Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty or ending in `/`.
    prefix: String,
}

impl Store {
    /// The store the environment names, on `bucket` below `prefix`.
    pub(crate) fn from_env(bucket: &str, prefix: &str) -> anyhow::Result<Store> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let endpoint = var("PORTCULLIS_TEST_S3_ENDPOINT").context("PORTCULLIS_TEST_S3_ENDPOINT is not set")?;
        let region = var("PORTCULLIS_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned());
        let access_key = var("PORTCULLIS_TEST_S3_ACCESS_KEY_ID").context("PORTCULLIS_TEST_S3_ACCESS_KEY_ID is not set")?;
        let secret_key = var("PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY").context("PORTCULLIS_TEST_S3_SECRET_ACCESS_KEY is not set")?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .http_client(http_client)
            .region(aws_sdk_s3::config::Region::new(region))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "portcullis-bench"))
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .timeout_config(aws_sdk_s3::config::timeout::TimeoutConfig::builder().connect_timeout(Duration::from_secs(10)).build())
            .build();
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            trimmed => format!("{trimmed}/"),
        };
        Ok(Store { client: aws_sdk_s3::Client::from_conf(config), bucket: bucket.to_owned(), prefix })
    }

    /// Creates the bucket.
    pub(crate) async fn create_bucket(&self) -> anyhow::Result<()> {
        self.client.create_bucket().bucket(&self.bucket).send().await.with_context(|| format!("create bucket {}", self.bucket))?;
        Ok(())
    }

    /// Measures the store's ceilings over `data` (see the module doc), downloading with `http`,
    /// then deletes what it wrote.
    pub(crate) async fn ceilings(&self, data: &Bytes, http: &reqwest::Client) -> anyhow::Result<Vec<Ceiling>> {
        let size = data.len() as f64 / MIB;
        let mut ceilings = Vec::new();
        let mut push = |key: &str, label: &str, elapsed: Duration| {
            ceilings.push(Ceiling { key: key.to_owned(), label: label.to_owned(), mib_per_s: size / elapsed.as_secs_f64() });
        };
        let whole = format!("{}ceiling/whole", self.prefix);
        let started = Instant::now();
        self.client.put_object().bucket(&self.bucket).key(&whole).body(data.clone().into()).send().await.context("PutObject, one request")?;
        push("s3_put", "S3 PutObject, one request (plain SDK client)", started.elapsed());

        let parts: Vec<(String, usize)> =
            (0..data.len().div_ceil(PART)).map(|index| (format!("{}ceiling/part-{index:05}", self.prefix), (data.len() - index * PART).min(PART))).collect();
        let started = Instant::now();
        for (index, (key, _)) in parts.iter().enumerate() {
            let body = data.slice(index * PART..(index * PART + PART).min(data.len()));
            self.client.put_object().bucket(&self.bucket).key(key).body(body.into()).send().await.with_context(|| format!("PutObject {key}"))?;
        }
        push("s3_put_parts", "S3 PutObjects of 8 MiB, one at a time (as portcullis stages a blob)", started.elapsed());

        let copied = format!("{}ceiling/copied", self.prefix);
        let started = Instant::now();
        self.copy_parts(&parts, &copied).await?;
        push("s3_copy", "S3 multipart UploadPartCopy of the 8 MiB parts, 8 in flight (as portcullis commits)", started.elapsed());

        let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600))?;
        let url = self.client.get_object().bucket(&self.bucket).key(&copied).presigned(presigning).await.context("presign GetObject")?;
        // Twice, keeping the faster: one 1 GiB read from RGW varies by a third between tries here.
        let mut best = Duration::MAX;
        for _ in 0..2 {
            let started = Instant::now();
            let res = http.get(url.uri()).send().await.context("GetObject")?;
            anyhow::ensure!(res.status() == 200, "GetObject of a presigned URL: {}", res.status());
            let mut body = res.bytes_stream();
            let mut received = 0usize;
            while let Some(chunk) = body.next().await {
                received += chunk.context("GetObject body")?.len();
            }
            best = best.min(started.elapsed());
            anyhow::ensure!(received == data.len(), "GetObject gave {received} of {} bytes", data.len());
        }
        push("s3_get", "S3 GetObject of the copy, read to the end (presigned, the download rows' HTTP client; best of 2)", best);

        for key in parts.iter().map(|(key, _)| key).chain([&whole, &copied]) {
            self.client.delete_object().bucket(&self.bucket).key(key).send().await.with_context(|| format!("DeleteObject {key}"))?;
        }
        Ok(ceilings)
    }

    async fn copy_parts(&self, parts: &[(String, usize)], target: &str) -> anyhow::Result<()> {
        let created = self.client.create_multipart_upload().bucket(&self.bucket).key(target).send().await.context("CreateMultipartUpload")?;
        let upload_id = created.upload_id().context("no upload id")?.to_owned();
        let completed: Vec<CompletedPart> = futures::stream::iter(parts.iter().enumerate())
            .map(|(index, (source, _))| {
                let upload_id = upload_id.clone();
                async move {
                    let part_number = index as i32 + 1;
                    let copied = self
                        .client
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(target)
                        .upload_id(upload_id)
                        .part_number(part_number)
                        .copy_source(format!("{}/{source}", self.bucket))
                        .customize()
                        // Ceph RGW 16 refuses a bodiless PUT without Content-Length (411).
                        .mutate_request(|request| {
                            request.headers_mut().insert("content-length", "0");
                        })
                        .send()
                        .await
                        .with_context(|| format!("UploadPartCopy {source}"))?;
                    let etag = copied.copy_part_result().and_then(|result| result.e_tag()).context("UploadPartCopy: no ETag")?;
                    anyhow::Ok(CompletedPart::builder().part_number(part_number).e_tag(etag).build())
                }
            })
            .buffered(COPY_CONCURRENCY)
            .try_collect()
            .await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(target)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .context("CompleteMultipartUpload")?;
        Ok(())
    }
}
