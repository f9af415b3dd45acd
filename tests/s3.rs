//! The registry on S3, where it differs from the filesystem: several processes over one bucket,
//! an S3 server that goes away in the middle of a push, and blob downloads redirected to the bucket
//! (followed by skopeo and podman; on a server that checks signatures, tampered and expired URLs
//! are refused).
//! (The whole API, client and tag-rule suites also run on S3: `PORTCULLIS_TEST_BACKEND=s3`.)
//!
//! Every test returns early without `PORTCULLIS_TEST_S3_ENDPOINT`, and fails instead under `CI` or
//! `PORTCULLIS_REQUIRE_S3` (see `tests/common/s3.rs`). Each test has a bucket of its own.
//!
//! The fault test puts [`FaultProxy`] (`tests/common/fault_proxy.rs`) between the registry and the S3
//! server: "the S3 server stops" is the proxy dropping every connection and every new one, while
//! the server keeps its data, as a network partition or a restarting load balancer would.
//! Large bodies come from a generator ([`generated`]) and are never held whole in memory.

mod common;

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use common::clients::Clients;
use common::fault_proxy::FaultProxy;
use common::s3::{fresh_storage, storage_toml};
use storage::test_s3::{multipart_uploads, raw_keys, TestS3};
use common::{error_code, images, sha256, tiny_manifest, with_query, RegistryClient, ServerProcess, TestRegistry, OCI_MANIFEST};
use futures::{Stream, StreamExt};
use portcullis::config::StorageConfig;
use sha2::Digest as _;

const MIB: u64 = 1 << 20;

const NAMESPACES: &str = r#"
[[namespaces]]
pattern = "once/**"
tags = "write-once"

[[namespaces]]
pattern = "**"
tags = "mutable"
"#;

// ---------------------------------------------------------------------------------------------
// Two processes over one bucket

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_one_bucket() {
    let Some(s3) = TestS3::from_env() else { return };
    let storage = fresh_storage(&s3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    // One bucket and prefix, one index per process: two replicas behind a load balancer.
    let nodes: Vec<ServerProcess> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let text = format!(
                "[storage]\nbackend = \"s3\"\ndata_dir = {:?}\n{}{NAMESPACES}",
                dir.path().join(name),
                storage_toml(&storage)
            );
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).expect("write config");
            ServerProcess::spawn(&path)
        })
        .collect();
    let (a, b) = (RegistryClient::new(&nodes[0].base_url), RegistryClient::new(&nodes[1].base_url));

    // Pushed through A, pulled through B: the manifest by tag, and every blob, byte for byte.
    let repo = "build/app";
    let (manifest_digest, manifest) = a.push_tiny_image(repo, "v1", "two nodes").await;
    let big = patterned(12 * MIB as usize, 1);
    let big_digest = a.push_chunked(repo, &big, 5 * MIB as usize).await;
    let res = get(&b, &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["docker-content-digest"], manifest_digest.as_str());
    assert_eq!(res.bytes().await.expect("manifest body"), manifest);
    for (digest, bytes) in [(big_digest.clone(), big.clone()), (sha256(b"layer of two nodes"), b"layer of two nodes".to_vec())] {
        let res = get(&b, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(res.status(), 200, "{digest} through B");
        assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
        let served = res.bytes().await.expect("blob body");
        assert!(served == bytes, "B serves other bytes for {digest}");
    }

    // A chunked upload started on A (POST + PATCH) and finished on B (PATCH + PUT ?digest=): B
    // has no running hash and rebuilds it from the bytes staged in the bucket.
    let data = patterned(11 * MIB as usize + 123, 2);
    let digest = sha256(&data);
    let location = a.start_upload(repo).await;
    let first = 6 * MIB as usize;
    let location = a.patch_chunk(&location, 0, data[..first].to_vec()).await;
    let second = 10 * MIB as usize;
    let location = b.patch_chunk(&location, first as u64, data[first..second].to_vec()).await;
    let res = b
        .client
        .put(b.url(&with_query(&location, &format!("digest={digest}"))))
        .header("content-range", format!("{second}-{}", data.len() - 1))
        .body(data[second..].to_vec())
        .send()
        .await
        .expect("PUT through B");
    assert_eq!(res.status(), 201, "finish on B: {}", res.text().await.unwrap_or_default());
    for node in [&a, &b] {
        let res = get(node, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(res.status(), 200);
        assert!(res.bytes().await.expect("blob body") == data, "the blob finished on B differs");
    }

    // 16 create-only writes of one write-once tag, half through A and half through B, each with
    // other content: exactly one wins, and both nodes serve the winner.
    let race_repo = "once/race";
    let manifests = a.push_distinct_manifests(race_repo, 16).await;
    let tasks: Vec<_> = manifests
        .iter()
        .enumerate()
        .map(|(i, manifest)| {
            let node = [&a, &b][i % 2];
            let request = node
                .client
                .put(node.url(&format!("/v2/{race_repo}/manifests/v1")))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone());
            tokio::spawn(async move { request.send().await.expect("racing PUT").status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("racing task"));
    }
    let winners: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i] == 201).collect();
    assert_eq!(winners.len(), 1, "statuses: {statuses:?}");
    assert!(statuses.iter().all(|status| *status == 201 || *status == 403), "statuses: {statuses:?}");
    let winner = &manifests[winners[0]];
    for node in [&a, &b] {
        let res = get(node, &format!("/v2/{race_repo}/manifests/v1")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["docker-content-digest"], sha256(winner).as_str());
        assert!(res.bytes().await.expect("manifest body") == *winner);
    }
}

// ---------------------------------------------------------------------------------------------
// The S3 server goes away in the middle of a push

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_survives_the_s3_server_going_away() {
    let Some(s3) = TestS3::from_env() else { return };
    let mut storage = fresh_storage(&s3).await;
    let (bucket, prefix) = (storage.store.bucket.clone(), format!("{}/", storage.store.prefix));
    let upstream: SocketAddr = s3.endpoint.strip_prefix("http://").and_then(|addr| addr.parse().ok()).expect("an http://IP:PORT endpoint");
    let proxy = FaultProxy::start(upstream).await;
    // Through the proxy, failing fast once it is cut.
    storage.store.endpoint = Some(proxy.endpoint());
    storage.store.timeout = std::time::Duration::from_secs(5);
    storage.store.max_retries = 1;
    let registry = TestRegistry::with_config(|config| config.storage = StorageConfig::S3(storage)).await;
    let behind = s3.client().await;

    const SIZE: u64 = 200 * MIB;
    const CHUNK: u64 = 20 * MIB;
    const SEED: u64 = 200;
    let repo = "build/big";
    let digest = generated_digest(SEED, SIZE).await;
    let config_blob = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = registry.push_blob(repo, config_blob).await;
    let manifest = tiny_manifest(&config_digest, config_blob.len(), &digest, SIZE as usize, None);
    let blob_path = format!("/v2/{repo}/blobs/{digest}");

    // Attempt 1: chunked, and the S3 server goes away after 100 MiB have reached it.
    let failed_location = registry.start_upload(repo).await;
    let failed_id = failed_location.rsplit('/').next().expect("upload id").to_owned();
    proxy.cut_after_bytes(100 * MIB);
    let (mut offset, mut location) = (0, failed_location.clone());
    let failure = loop {
        assert!(offset < SIZE, "the whole push went through although the S3 server went away");
        let end = (offset + CHUNK).min(SIZE);
        match try_patch(&registry, &location, offset..end, SEED).await {
            Ok(next) => (offset, location) = (end, next),
            Err(failure) => break failure,
        }
    };
    assert!(!proxy.is_up(), "the push failed before the S3 server went away: {failure:?}");
    assert!(offset >= 80 * MIB, "failed at {offset}, before the cut: {failure:?}");
    failure.assert_unavailable("the PATCH in flight");

    // While S3 is away, the registry says so: 503 UNAVAILABLE, for uploads and reads alike.
    let res = registry.client.post(registry.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.expect("POST");
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "UNAVAILABLE");
    let res = registry.client.get(registry.url(&blob_path)).send().await.expect("GET blob");
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "UNAVAILABLE");

    // Back again: nothing of the failed attempt is visible, and no tag points anywhere.
    proxy.restore();
    let res = registry.client.head(registry.url(&blob_path)).send().await.expect("HEAD blob");
    assert_eq!(res.status(), 404, "a partial blob is visible");
    let res = registry.client.head(registry.url(&format!("/v2/{repo}/manifests/v1"))).send().await.expect("HEAD tag");
    assert_eq!(res.status(), 404, "a tag dangles");
    let failed_staging = format!("{prefix}~staging/{failed_id}/");
    assert!(!raw_keys(&behind, &bucket, &failed_staging).await.is_empty(), "the failed attempt left nothing for the janitor");

    // Attempt 2, from scratch. Its commit (a multipart copy in the bucket) is cut as well, at
    // its first part copy; retrying the PUT finishes the same upload.
    let mut location = registry.start_upload(repo).await;
    let mut offset = 0;
    while offset < SIZE {
        let end = (offset + CHUNK).min(SIZE);
        location = try_patch(&registry, &location, offset..end, SEED).await.unwrap_or_else(|failure| panic!("PATCH {offset}: {failure:?}"));
        offset = end;
    }
    let finish = with_query(&location, &format!("digest={digest}"));
    proxy.cut_on(b"x-id=UploadPartCopy");
    let failure = try_request(registry.client.put(registry.url(&finish))).await.expect_err("the commit went through a cut");
    assert!(!proxy.is_up(), "the commit failed before the S3 server went away: {failure:?}");
    failure.assert_unavailable("the commit");
    proxy.restore();
    let res = registry.client.head(registry.url(&blob_path)).send().await.expect("HEAD blob");
    assert_eq!(res.status(), 404, "a blob whose commit failed is visible");
    let res = registry.client.put(registry.url(&finish)).send().await.expect("PUT again");
    assert_eq!(res.status(), 201, "the retried commit: {}", res.text().await.unwrap_or_default());
    let res = registry.put_manifest(repo, "v1", OCI_MANIFEST, manifest.as_bytes()).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap_or_default());

    // The pull: the tag, and the blob's bytes hash to its digest.
    let res = registry.client.head(registry.url(&format!("/v2/{repo}/manifests/v1"))).send().await.expect("HEAD tag");
    assert_eq!(res.headers()["docker-content-digest"], sha256(manifest.as_bytes()).as_str());
    let res = registry.client.get(registry.url(&blob_path)).send().await.expect("GET blob");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], SIZE.to_string().as_str());
    let (n_bytes, pulled) = hash_stream(res.bytes_stream()).await;
    assert_eq!((n_bytes, pulled), (SIZE, digest.clone()), "the pulled blob");

    // The janitor (with every session overdue) removes what the failed attempt left in the bucket.
    let mut config = (*registry.registry().config()).clone();
    config.registry.upload_timeout = Duration::ZERO;
    registry.reload(config).expect("reload with upload_timeout 0");
    let n_expired = registry.registry().expire_uploads().await.expect("janitor");
    assert!(n_expired >= 1, "the janitor found nothing to remove");
    assert_eq!(raw_keys(&behind, &bucket, &format!("{prefix}~staging/")).await, Vec::<String>::new(), "staging objects left");
    assert_eq!(multipart_uploads(&behind, &bucket, &prefix).await, Vec::<String>::new(), "multipart uploads left");
    assert_eq!(registry.stored_keys("uploads/").await, Vec::<String>::new(), "upload sessions left");
    let mut blobs = registry.stored_keys("blobs/").await;
    blobs.sort();
    let mut expected: Vec<String> = [&config_digest, &digest, &sha256(manifest.as_bytes())]
        .iter()
        .map(|digest| common::blob_key(digest).trim_start_matches("blobs/").to_owned())
        .collect();
    expected.sort();
    assert_eq!(blobs, expected, "stored blobs");
}

// ---------------------------------------------------------------------------------------------
// Blob downloads redirected to the bucket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_get_redirects_to_a_presigned_url() {
    let Some(s3) = TestS3::from_env() else { return };
    let mut storage = fresh_storage(&s3).await;
    storage.redirect_blobs = true;
    let registry = TestRegistry::with_config(|config| config.storage = StorageConfig::S3(storage)).await;
    let repo = "build/app";
    let bytes = patterned(3 * MIB as usize + 7, 3);
    let digest = registry.push_blob(repo, &bytes).await;
    let path = format!("/v2/{repo}/blobs/{digest}");

    // The registry's client follows no redirects: the 307 itself, then the URL by hand.
    let res = get(&registry, &path).await;
    assert_eq!(res.status(), 307);
    assert_eq!(res.headers()["docker-content-digest"], digest.as_str());
    let location = res.headers()["location"].to_str().expect("ASCII Location").to_owned();
    assert!(location.starts_with(&format!("{}/", s3.endpoint)), "Location {location} is not on the S3 server");
    assert!(location.contains("X-Amz-Signature="), "Location {location} is not presigned");
    let fetched = reqwest::Client::new().get(&location).send().await.expect("GET the presigned URL");
    assert_eq!(fetched.status(), 200);
    assert!(fetched.bytes().await.expect("presigned body") == bytes, "the presigned URL serves other bytes");

    // HEAD is answered by the registry; unknown blobs are not redirected.
    let res = registry.client.head(registry.url(&path)).send().await.expect("HEAD");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], bytes.len().to_string().as_str());
    let res = get(&registry, &format!("/v2/{repo}/blobs/{}", sha256(b"never pushed"))).await;
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "BLOB_UNKNOWN");
    let res = get(&registry, &format!("/v2/build/other/blobs/{digest}")).await;
    assert_eq!(res.status(), 404, "a blob of another repository is redirected");

    // skopeo pulls an image through the redirects: every blob it fetched came from the bucket.
    let clients = Clients::new();
    let image = images::multi_layer_image(&clients.path("image"), "v1", 3, 21);
    let remote = format!("docker://{}/build/skopeo:v1", registry.host);
    clients.skopeo("copy", &["--preserve-digests", "--dest-tls-verify=false", &image.oci_ref(), &remote]).await.ok();
    let before = blob_gets(&registry).await;
    let pulled = clients.path("pulled");
    let pulled_ref = format!("oci:{}:v1", pulled.display());
    clients.skopeo("copy", &["--preserve-digests", "--src-tls-verify=false", &remote, &pulled_ref]).await.ok();
    let after = blob_gets(&registry).await;
    assert_eq!(images::index_json_digest(&pulled, "v1"), image.manifest_digest);
    let pulled_blobs: Vec<String> = images::blob_paths(&pulled).iter().map(|path| images::sha256_file(path)).collect();
    let mut expected = image.blob_digests.clone();
    expected.sort();
    assert_eq!(pulled_blobs, expected, "blobs after the round trip");
    // Config and three layers: four blob GETs, all answered with a redirect.
    assert!(after.redirected - before.redirected >= 4, "blob GETs: before {before:?}, after {after:?}");
    assert_eq!(after.served, before.served, "the registry served blob bytes itself: before {before:?}, after {after:?}");

    // podman too.
    let policy = format!("--signature-policy={}", clients.path("policy.json").display());
    let remote = remote.trim_start_matches("docker://");
    clients.podman(&["pull", "--tls-verify=false", &policy, remote]).await.ok();
    let after_podman = blob_gets(&registry).await;
    let inspected = clients.podman(&["image", "inspect", "--format", "{{.Digest}}", remote]).await.ok();
    assert_eq!(inspected.stdout.trim(), image.manifest_digest, "the image podman pulled");
    assert!(after_podman.redirected - after.redirected >= 4, "blob GETs: before {after:?}, after {after_podman:?}");
    assert_eq!(after_podman.served, after.served, "the registry served blob bytes to podman: before {after:?}, after {after_podman:?}");
}

/// The URLs blob GETs are redirected to are signed for one object and a limited time: a server
/// that verifies signatures (Ceph RGW; `PORTCULLIS_TEST_S3_CHECKS_SIGNATURES=1`) serves the URL
/// as given and refuses it with its signature changed, pointed at another object, or expired.
/// moto checks no signature, so there the test returns early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_expired_presigned_urls_are_refused() {
    let Some(s3) = TestS3::from_env() else { return };
    if !s3.checks_signatures {
        eprintln!("skipping: the S3 server checks no signatures (PORTCULLIS_TEST_S3_CHECKS_SIGNATURES is not 1)");
        return;
    }
    let mut storage = fresh_storage(&s3).await;
    storage.redirect_blobs = true;
    let registry = TestRegistry::with_config(|config| config.storage = StorageConfig::S3(storage)).await;
    let repo = "build/app";
    let (bytes, other_bytes) = (patterned(MIB as usize, 4), patterned(MIB as usize, 5));
    let digest = registry.push_blob(repo, &bytes).await;
    let other = registry.push_blob(repo, &other_bytes).await;
    let location = redirect_location(&registry, repo, &digest).await;
    let other_location = redirect_location(&registry, repo, &other).await;
    // The status, the body, and the start of the body as text for messages (an error document).
    let fetch = |url: String| async move {
        let res = reqwest::Client::new().get(&url).send().await.unwrap_or_else(|err| panic!("GET {url}: {err}"));
        let status = res.status().as_u16();
        let body = res.bytes().await.expect("response body");
        let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
        (status, body, text)
    };

    let (status, body, text) = fetch(location.clone()).await;
    assert_eq!(status, 200, "the URL as given: {text}");
    assert!(body == bytes, "the URL as given serves other bytes");

    // The signature with its last hex digit changed.
    let (head, signature) = location.split_once("X-Amz-Signature=").expect("a signature");
    let (signature, tail) = signature.split_at(signature.find('&').unwrap_or(signature.len()));
    let last = if signature.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{head}X-Amz-Signature={}{last}{tail}", &signature[..signature.len() - 1]);
    let refusals = [
        ("signature changed", tampered),
        // The signed query of one blob on the path of another.
        ("another object", format!("{}?{}", path_of(&other_location), query_of(&location))),
    ];
    for (what, url) in refusals {
        let (status, _, text) = fetch(url).await;
        assert_eq!(status, 403, "{what}: {text}");
        assert!(text.contains("<Code>SignatureDoesNotMatch</Code>"), "{what}: {text}");
    }

    // Expired: the same presigning as the registry's redirects, for one second.
    let expiring = registry.store().await.presigned_get(&common::blob_key(&digest), Duration::from_secs(1)).await.expect("presign");
    let expiring = expiring.expect("the S3 store presigns");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _, text) = fetch(expiring).await;
    assert_eq!(status, 403, "expired: {text}");
    assert!(text.contains("<Code>AccessDenied</Code>"), "expired: {text}");
}

/// The `Location` of the redirect a blob GET answers with.
async fn redirect_location(registry: &RegistryClient, repo: &str, digest: &str) -> String {
    let res = get(registry, &format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(res.status(), 307, "blob GET of {digest}");
    res.headers()["location"].to_str().expect("ASCII Location").to_owned()
}

fn path_of(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

fn query_of(url: &str) -> &str {
    url.split_once('?').map_or("", |(_, query)| query)
}

/// Blob GETs the registry answered so far, from its metrics.
#[derive(Debug, Clone, Copy)]
struct BlobGets {
    redirected: u64,
    served: u64,
}

async fn blob_gets(registry: &TestRegistry) -> BlobGets {
    let text = get(registry, "/metrics").await.text().await.expect("metrics");
    let count = |status: &str| {
        let sample = format!("portcullis_http_requests_total{{endpoint=\"get_blob\",method=\"GET\",status=\"{status}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&sample)?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    BlobGets { redirected: count("307"), served: count("200") + count("206") }
}

// ---------------------------------------------------------------------------------------------
// Requests

async fn get(registry: &RegistryClient, path: &str) -> reqwest::Response {
    registry.client.get(registry.url(path)).send().await.unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// How a request failed: an error response, or no response at all.
#[derive(Debug)]
enum Failure {
    Status { status: u16, body: String },
    Transport(String),
}

impl Failure {
    /// A failure because the store is away: 503 `UNAVAILABLE` where the registry could answer,
    /// or a connection the registry closed while the request body was still on its way.
    fn assert_unavailable(&self, what: &str) {
        match self {
            Failure::Status { status: 503, body } => {
                let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: 503 body {body:?}"));
                assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{what}: {body}");
            }
            Failure::Transport(err) => eprintln!("{what}: the registry closed the connection mid-body ({err})"),
            other => panic!("{what}: expected 503 UNAVAILABLE, got {other:?}"),
        }
    }
}

async fn try_request(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
    match request.send().await {
        Ok(res) if res.status().is_success() => Ok(res),
        Ok(res) => Err(Failure::Status { status: res.status().as_u16(), body: res.text().await.unwrap_or_default() }),
        Err(err) => Err(Failure::Transport(format!("{err:?}"))),
    }
}

/// PATCHes bytes `range` of the generated content `seed`, streamed; returns the next `Location`.
async fn try_patch(registry: &RegistryClient, location: &str, range: Range<u64>, seed: u64) -> Result<String, Failure> {
    let request = registry
        .client
        .patch(registry.url(location))
        .header("content-range", format!("{}-{}", range.start, range.end - 1))
        .body(reqwest::Body::wrap_stream(generated(seed, range)));
    let res = try_request(request).await?;
    assert_eq!(res.status(), 202);
    Ok(registry.location_path(&res))
}

// ---------------------------------------------------------------------------------------------
// Generated content

/// Size of the blocks the generator makes its bytes in.
const BLOCK: u64 = 64 << 10;

/// Bytes `range` of the generated content `seed`, one block at a time. Block `i` depends on
/// `seed` and `i` only, so any range can be produced without the bytes before it.
fn generated(seed: u64, range: Range<u64>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let first_block = range.start / BLOCK;
    let last_block = range.end.div_ceil(BLOCK);
    futures::stream::iter(first_block..last_block).map(move |index| {
        let block = block(seed, index);
        let start = range.start.max(index * BLOCK) - index * BLOCK;
        let end = range.end.min((index + 1) * BLOCK) - index * BLOCK;
        Ok(Bytes::from(block).slice(start as usize..end as usize))
    })
}

fn block(seed: u64, index: u64) -> Vec<u8> {
    let mut state = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9)) | 1;
    let mut bytes = Vec::with_capacity(BLOCK as usize);
    while bytes.len() < BLOCK as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes
}

/// `sha256:<hex>` of the first `size` generated bytes of `seed`.
async fn generated_digest(seed: u64, size: u64) -> String {
    hash_stream(generated(seed, 0..size)).await.1
}

/// Bytes in `stream` and their digest.
async fn hash_stream<E: std::fmt::Debug>(stream: impl Stream<Item = Result<Bytes, E>>) -> (u64, String) {
    let mut stream = std::pin::pin!(stream);
    let mut hasher = sha2::Sha256::new();
    let mut n_bytes = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk of the stream");
        n_bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (n_bytes, format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// `len` bytes of generated content `seed`, in memory (for small blobs).
fn patterned(len: usize, seed: u64) -> Vec<u8> {
    (0..(len as u64).div_ceil(BLOCK)).flat_map(|index| block(seed, index)).take(len).collect()
}
