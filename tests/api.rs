//! The OCI Distribution API (spec v1.1) over real HTTP against the in-process server: every
//! endpoint, every error code the spec defines for it, and the headers clients rely on. reqwest
//! drives ordinary requests; a raw `TcpStream` sends what reqwest would tidy up (`..` and `%2e%2e`
//! paths) or what a broken client does (hang up mid-body).

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{blob_key, sha256, tiny_manifest, with_query, TestRegistry, OCI_INDEX, OCI_MANIFEST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

// ---------------------------------------------------------------------------------------------
// The one request/expectation helper, and small readers of its reply.

/// A request to send.
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<reqwest::Body>,
}

impl Req {
    fn new(method: &'static str, path: impl Into<String>) -> Req {
        Req { method, path: path.into(), headers: Vec::new(), body: None }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<reqwest::Body>) -> Req {
        self.body = Some(body.into());
        self
    }
}

fn get(path: impl Into<String>) -> Req {
    Req::new("GET", path)
}

fn head(path: impl Into<String>) -> Req {
    Req::new("HEAD", path)
}

/// A response, fully read.
struct Reply {
    what: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// A header that must be present.
    fn header(&self, name: &str) -> &str {
        self.opt_header(name).unwrap_or_else(|| panic!("{}: no {name} header in {:?}", self.what, self.headers))
    }

    fn opt_header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("header is ASCII"))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| panic!("{}: body is not JSON ({err}): {}", self.what, self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Location`, as a path on this server (the spec allows absolute and relative forms).
    fn location(&self, reg: &TestRegistry) -> String {
        let location = self.header("location");
        let path = location.strip_prefix(&reg.base_url).unwrap_or(location).to_owned();
        assert!(path.starts_with("/v2/"), "{}: Location {location:?} is not a /v2/ path", self.what);
        path
    }
}

/// Sends `req` and checks the outcome: `status`, the API version header every response carries,
/// and for errors (`codes` not empty) a JSON body whose `errors[0].code` is one of `codes`.
async fn check(reg: &TestRegistry, req: Req, status: u16, codes: &[&str]) -> Reply {
    let what = format!("{} {}", req.method, req.path);
    let mut builder = reg.client.request(req.method.parse().expect("method"), reg.url(&req.path));
    for (name, value) in &req.headers {
        builder = builder.header(*name, value);
    }
    if let Some(body) = req.body {
        builder = builder.body(body);
    }
    let res = builder.send().await.unwrap_or_else(|err| panic!("{what}: {err}"));
    let reply = Reply {
        what: what.clone(),
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.bytes().await.unwrap_or_else(|err| panic!("{what}: reading body: {err}")).to_vec(),
    };
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(reply.header("docker-distribution-api-version"), "registry/2.0", "{what}");
    if !codes.is_empty() {
        assert_eq!(reply.header("content-type"), "application/json", "{what}: errors are JSON");
        if req.method == "HEAD" {
            assert!(reply.body.is_empty(), "{what}: HEAD has no body");
        } else {
            let code = reply.json()["errors"][0]["code"].as_str().map(str::to_owned);
            assert!(
                code.as_deref().is_some_and(|code| codes.contains(&code)),
                "{what}: errors[0].code is {code:?}, expected one of {codes:?}: {}",
                reply.text()
            );
        }
    }
    reply
}

/// A row of a table of requests and their expected outcome.
struct Case {
    what: &'static str,
    req: Req,
    status: u16,
    codes: &'static [&'static str],
}

fn case(what: &'static str, req: Req, status: u16, codes: &'static [&'static str]) -> Case {
    Case { what, req, status, codes }
}

async fn check_all(reg: &TestRegistry, cases: Vec<Case>) -> Vec<Reply> {
    let mut replies = Vec::new();
    for Case { what, req, status, codes } in cases {
        let mut reply = check(reg, req, status, codes).await;
        reply.what = format!("{what} ({})", reply.what);
        replies.push(reply);
    }
    replies
}

/// Sends bytes exactly as written over a fresh connection (reqwest would resolve `..` and
/// `%2e%2e` before sending) and reads the whole response: status and body. The body is written
/// while the response is read, so a server that answers before reading it all is still heard.
async fn raw(reg: &TestRegistry, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(&reg.host).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reg.host,
        body.len()
    );
    let request = [head.into_bytes(), body.to_vec()].concat();
    // A server that refuses early may close before taking every byte: write errors are expected then.
    let sending = tokio::spawn(async move {
        let written = writer.write_all(&request).await;
        // Dropping the half would shut down writing, which the server takes for a client gone.
        writer.forget();
        written
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no response in 10 s"));
    // A reset after the response (the unread body) is not an error of the response.
    assert!(read.is_ok() || !out.is_empty(), "{method} {target}: {read:?}");
    sending.abort();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// Waits (up to 10 s) until `condition` holds: for effects of a client hanging up, which the
/// server only notices when it next reads.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sample's value in the `/metrics` text, by its full name with labels.
async fn metric(reg: &TestRegistry, sample: &str) -> Option<f64> {
    let text = check(reg, get("/metrics"), 200, &[]).await.text();
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Requests answered so far for an endpoint label, whatever their method and status.
async fn requests(reg: &TestRegistry, endpoint: &str) -> f64 {
    let text = check(reg, get("/metrics"), 200, &[]).await.text();
    let prefix = format!("portcullis_http_requests_total{{endpoint=\"{endpoint}\",");
    text.lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Checks that `repo` serves `bytes` under `digest`, with the spec's headers.
async fn assert_blob(reg: &TestRegistry, repo: &str, digest: &str, bytes: &[u8]) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let reply = check(reg, head(&path), 200, &[]).await;
    assert_eq!(reply.header("content-length"), bytes.len().to_string());
    assert_eq!(reply.header("docker-content-digest"), digest);
    assert!(reply.body.is_empty());
    let reply = check(reg, get(&path), 200, &[]).await;
    assert_eq!(reply.header("content-length"), bytes.len().to_string());
    assert_eq!(reply.header("docker-content-digest"), digest);
    assert!(reply.body == bytes, "{path}: served bytes differ from the pushed ones");
}

/// Checks that `repo` does not serve `digest`.
async fn assert_no_blob(reg: &TestRegistry, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    check(reg, head(&path), 404, &["BLOB_UNKNOWN"]).await;
    check(reg, get(&path), 404, &["BLOB_UNKNOWN"]).await;
}

/// Checks that `reference` in `repo` serves exactly `bytes` as `media_type`, by GET and HEAD.
async fn assert_manifest(reg: &TestRegistry, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    for method in ["GET", "HEAD"] {
        let reply = check(reg, Req::new(method, &path), 200, &[]).await;
        assert_eq!(reply.header("content-type"), media_type, "{method} {path}");
        assert_eq!(reply.header("docker-content-digest"), sha256(bytes), "{method} {path}");
        assert_eq!(reply.header("content-length"), bytes.len().to_string(), "{method} {path}");
        if method == "GET" {
            assert!(reply.body == bytes, "{path}: served bytes differ from the pushed ones");
        } else {
            assert!(reply.body.is_empty(), "HEAD {path} has a body");
        }
    }
}

async fn tags_of(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let reply = check(reg, get(format!("/v2/{repo}/tags/list")), 200, &[]).await;
    let body = reply.json();
    assert_eq!(body["name"], repo);
    strings(&body["tags"])
}

async fn catalog(reg: &TestRegistry) -> Vec<String> {
    strings(&check(reg, get("/v2/_catalog"), 200, &[]).await.json()["repositories"])
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().map(|v| v.as_str().expect("string").to_owned()).collect()).unwrap_or_default()
}

/// Follows `Link: <...>; rel="next"` from `first` to the end; returns every entry of `key` and
/// the number of pages. Each link must lead on from `link_prefix`, with `n` kept.
async fn paginate(reg: &TestRegistry, first: &str, key: &str, link_prefix: &str, n: usize) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let reply = check(reg, get(&path), 200, &[]).await;
        let entries = strings(&reply.json()[key]);
        assert!(entries.len() <= n, "{path}: {} entries for n={n}", entries.len());
        pages += 1;
        seen.extend(entries);
        if let Some(link) = reply.opt_header("link") {
            let (target, rel) = link
                .strip_prefix('<')
                .and_then(|rest| rest.split_once('>'))
                .unwrap_or_else(|| panic!("{path}: malformed Link {link:?}"));
            assert_eq!(rel, "; rel=\"next\"", "{path}: Link {link:?}");
            assert!(target.starts_with(link_prefix), "{path}: Link {link:?} does not start with {link_prefix}");
            assert!(target.contains(&format!("n={n}")) && target.contains("last="), "{path}: Link {link:?}");
            next = Some(target.to_owned());
        }
        assert!(pages < 100, "{first}: pagination does not end");
    }
    (seen, pages)
}

/// A blob's bytes and the descriptor JSON for it.
fn descriptor(media_type: &str, bytes: &[u8]) -> String {
    format!(r#"{{"mediaType":"{media_type}","digest":"{}","size":{}}}"#, sha256(bytes), bytes.len())
}

/// An index (OCI or Docker list) of the given child manifests.
fn index_of(media_type: &str, children: &[(&str, &[u8])]) -> String {
    let manifests: Vec<String> = children
        .iter()
        .map(|(child_type, bytes)| {
            format!(
                r#"{{"mediaType":"{child_type}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}"#,
                sha256(bytes),
                bytes.len()
            )
        })
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#, manifests.join(","))
}

/// An OCI image manifest over blobs already pushed, built from the harness's `tiny_manifest`.
fn oci_image(config: &[u8], layer: &[u8]) -> String {
    tiny_manifest(&sha256(config), config.len(), &sha256(layer), layer.len(), None)
}

// ---------------------------------------------------------------------------------------------
// Base, health and metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_health_readiness_and_metrics() {
    let reg = TestRegistry::start().await;
    let base = check(&reg, get("/v2/"), 200, &[]).await;
    assert_eq!(base.header("content-type"), "application/json");
    assert_eq!(base.body, b"{}");
    check(&reg, head("/v2/"), 200, &[]).await;
    assert_eq!(check(&reg, get("/healthz"), 200, &[]).await.text(), "ok\n");
    check(&reg, get("/readyz"), 200, &[]).await;

    let digest = reg.push_blob("team/metrics", b"counted").await;
    check(&reg, get(format!("/v2/team/metrics/blobs/{digest}")), 200, &[]).await;
    let _open = reg.start_upload("team/metrics").await;

    let reply = check(&reg, get("/metrics"), 200, &[]).await;
    assert!(reply.header("content-type").starts_with("text/plain"), "{}", reply.header("content-type"));
    let text = reply.text();
    assert!(text.contains("# TYPE portcullis_http_requests_total counter"), "{text}");
    let sample = r#"portcullis_http_requests_total{endpoint="get_blob",method="GET",status="200"}"#;
    assert_eq!(metric(&reg, sample).await, Some(1.0), "{text}");
    assert_eq!(metric(&reg, "portcullis_upload_sessions_open").await, Some(1.0), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Blobs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_reads_ranges_isolation_and_delete() {
    let reg = TestRegistry::start().await;
    let data: Vec<u8> = (0..100u8).collect();
    let digest = reg.push_blob("team/a", &data).await;
    assert_blob(&reg, "team/a", &digest, &data).await;
    let path = format!("/v2/team/a/blobs/{digest}");

    // Single ranges: 206 with Content-Range and exactly those bytes.
    for (range, start, end) in [("bytes=0-9", 0, 10), ("bytes=-5", 95, 100), ("bytes=10-", 10, 100), ("bytes=99-99", 99, 100)] {
        let reply = check(&reg, get(&path).header("range", range), 206, &[]).await;
        assert_eq!(reply.header("content-range"), format!("bytes {start}-{}/100", end - 1), "{range}");
        assert_eq!(reply.header("content-length"), (end - start).to_string(), "{range}");
        assert_eq!(reply.body, &data[start..end], "{range}");
    }
    for range in ["bytes=100-", "bytes=200-300", "bytes=50-40"] {
        let reply = check(&reg, get(&path).header("range", range), 416, &[]).await;
        assert_eq!(reply.header("content-range"), "bytes */100", "{range}");
    }

    let unknown = sha256(b"never pushed");
    assert_no_blob(&reg, "team/a", &unknown).await;

    // Blobs are visible per repository, stored once.
    assert_no_blob(&reg, "team/b", &digest).await;
    reg.push_blob("team/b", &data).await;
    assert_blob(&reg, "team/b", &digest, &data).await;
    assert!(reg.has_object(&blob_key(&digest)).await);
    let hex = &digest["sha256:".len()..];
    assert_eq!(reg.stored_keys("blobs/").await, [format!("sha256/{}/{hex}", &hex[..2])]);

    // DELETE removes it from that repository only.
    let reply = check(&reg, Req::new("DELETE", &path), 202, &[]).await;
    assert_eq!(reply.opt_header("docker-content-digest"), Some(digest.as_str()));
    assert_no_blob(&reg, "team/a", &digest).await;
    check(&reg, Req::new("DELETE", &path), 404, &["BLOB_UNKNOWN"]).await;
    assert_blob(&reg, "team/b", &digest, &data).await;
}

// ---------------------------------------------------------------------------------------------
// Uploads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_with_and_without_a_final_chunk() {
    let reg = TestRegistry::start().await;
    let repo = "team/chunks";
    for final_chunk in [true, false] {
        let data: Vec<u8> = (0..30u8).map(|b| b + u8::from(final_chunk) * 100).collect();
        let digest = sha256(&data);
        let location = reg.start_upload(repo).await;
        let id = location.rsplit('/').next().expect("id").to_owned();
        for (start, end) in [(0, 10), (10, 20)] {
            let req = Req::new("PATCH", &location)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{start}-{}", end - 1))
                .body(data[start..end].to_vec());
            let reply = check(&reg, req, 202, &[]).await;
            assert_eq!(reply.location(&reg), location);
            assert_eq!(reply.header("range"), format!("0-{}", end - 1));
            assert_eq!(reply.header("docker-upload-uuid"), id);
        }
        let status = check(&reg, get(&location), 204, &[]).await;
        assert_eq!(status.header("range"), "0-19");
        assert_eq!(status.location(&reg), location);
        assert_eq!(status.header("docker-upload-uuid"), id);
        if final_chunk {
            let req = Req::new("PUT", with_query(&location, &format!("digest={digest}")))
                .header("content-range", "20-29")
                .body(data[20..].to_vec());
            let reply = check(&reg, req, 201, &[]).await;
            assert_eq!(reply.location(&reg), format!("/v2/{repo}/blobs/{digest}"));
            assert_eq!(reply.header("docker-content-digest"), digest);
        } else {
            let req = Req::new("PATCH", &location).header("content-range", "20-29").body(data[20..].to_vec());
            assert_eq!(check(&reg, req, 202, &[]).await.header("range"), "0-29");
            reg.finish_upload(repo, &location, &digest, Vec::new()).await;
        }
        assert_blob(&reg, repo, &digest, &data).await;
        // A finished session is gone.
        check(&reg, get(&location), 404, &["BLOB_UPLOAD_UNKNOWN"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monolithic_upload_in_one_post() {
    let reg = TestRegistry::start().await;
    let data = b"monolithic blob".to_vec();
    let digest = sha256(&data);
    let reply = check(&reg, Req::new("POST", format!("/v2/team/mono/blobs/uploads/?digest={digest}")).body(data.clone()), 201, &[]).await;
    assert_eq!(reply.location(&reg), format!("/v2/team/mono/blobs/{digest}"));
    assert_eq!(reply.header("docker-content-digest"), digest);
    assert_blob(&reg, "team/mono", &digest, &data).await;
    // Without the trailing slash too (clients send both).
    let other = b"no slash".to_vec();
    check(&reg, Req::new("POST", format!("/v2/team/mono/blobs/uploads?digest={}", sha256(&other))).body(other.clone()), 201, &[]).await;
    assert_blob(&reg, "team/mono", &sha256(&other), &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_out_of_order_are_416_and_the_upload_goes_on() {
    let reg = TestRegistry::start().await;
    let repo = "team/order";
    let data: Vec<u8> = (0..20u8).collect();
    let location = reg.start_upload(repo).await;
    let first = Req::new("PATCH", &location).header("content-range", "0-9").body(data[..10].to_vec());
    check(&reg, first, 202, &[]).await;

    let bad = |range: &str, body: Vec<u8>| Req::new("PATCH", &location).header("content-range", range.to_owned()).body(body);
    let replies = check_all(
        &reg,
        vec![
            case("gap", bad("15-24", vec![1; 10]), 416, &["BLOB_UPLOAD_INVALID"]),
            case("overlap", bad("5-14", vec![1; 10]), 416, &["BLOB_UPLOAD_INVALID"]),
            case("restart from zero", bad("0-9", data[..10].to_vec()), 416, &["BLOB_UPLOAD_INVALID"]),
            case(
                "final chunk with a gap",
                Req::new("PUT", with_query(&location, &format!("digest={}", sha256(&data)))).header("content-range", "12-19").body(data[12..].to_vec()),
                416,
                &["BLOB_UPLOAD_INVALID"],
            ),
        ],
    )
    .await;
    for reply in &replies {
        // The client is told where the upload stands, so it can resume.
        assert_eq!(reply.location(&reg), location, "{}", reply.what);
        assert_eq!(reply.header("range"), "0-9", "{}", reply.what);
    }
    // Content-Range announcing 10 bytes on a 5-byte body.
    check(&reg, bad("10-19", vec![1; 5]), 416, &["BLOB_UPLOAD_INVALID"]).await;

    // None of that changed the upload.
    assert_eq!(check(&reg, get(&location), 204, &[]).await.header("range"), "0-9");
    let next = Req::new("PATCH", &location).header("content-range", "10-19").body(data[10..].to_vec());
    assert_eq!(check(&reg, next, 202, &[]).await.header("range"), "0-19");
    reg.finish_upload(repo, &location, &sha256(&data), Vec::new()).await;
    assert_blob(&reg, repo, &sha256(&data), &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_without_content_range() {
    let reg = TestRegistry::start().await;
    let repo = "team/stream";
    let parts: Vec<Vec<u8>> = vec![vec![1; 1000], vec![2; 70_000], vec![3; 5]];
    let data: Vec<u8> = parts.concat();
    let location = reg.start_upload(repo).await;
    // Chunked transfer encoding: no Content-Length, no Content-Range.
    let stream = futures::stream::iter(parts.into_iter().map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from(p))));
    let reply = check(&reg, Req::new("PATCH", &location).body(reqwest::Body::wrap_stream(stream)), 202, &[]).await;
    assert_eq!(reply.header("range"), format!("0-{}", data.len() - 1));
    // An ordinary body without Content-Range appends too.
    let tail = b"tail".to_vec();
    let reply = check(&reg, Req::new("PATCH", &location).body(tail.clone()), 202, &[]).await;
    assert_eq!(reply.header("range"), format!("0-{}", data.len() + tail.len() - 1));
    let whole = [data, tail].concat();
    reg.finish_upload(repo, &location, &sha256(&whole), Vec::new()).await;
    assert_blob(&reg, repo, &sha256(&whole), &whole).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_errors() {
    let reg = TestRegistry::start().await;
    let up = reg.start_upload("team/up").await;
    let other = reg.start_upload("team/other").await;
    let other_id = other.rsplit('/').next().expect("id").to_owned();
    let foreign = format!("/v2/team/up/blobs/uploads/{other_id}");
    let random = format!("/v2/team/up/blobs/uploads/{}", uuid::Uuid::new_v4());
    let sha512 = format!("sha512:{}", "ab".repeat(64));
    let some = sha256(b"some");
    check_all(
        &reg,
        vec![
            case("unknown upload id", get(&random), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("unknown upload id, PATCH", Req::new("PATCH", &random).body(b"x".to_vec()), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("not an upload id", get("/v2/team/up/blobs/uploads/not-a-uuid"), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("id of another repository, GET", get(&foreign), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("id of another repository, PATCH", Req::new("PATCH", &foreign).body(b"x".to_vec()), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("id of another repository, PUT", Req::new("PUT", format!("{foreign}?digest={some}")).body(b"some".to_vec()), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("id of another repository, DELETE", Req::new("DELETE", &foreign), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("sha512 on POST", Req::new("POST", format!("/v2/team/up/blobs/uploads/?digest={sha512}")).body(b"x".to_vec()), 400, &["UNSUPPORTED", "DIGEST_INVALID"]),
            case("sha512 on PUT", Req::new("PUT", with_query(&up, &format!("digest={sha512}"))), 400, &["UNSUPPORTED", "DIGEST_INVALID"]),
            case("malformed digest on POST", Req::new("POST", "/v2/team/up/blobs/uploads/?digest=sha256:zz").body(b"x".to_vec()), 400, &["DIGEST_INVALID"]),
            case("malformed digest on PUT", Req::new("PUT", with_query(&up, "digest=sha256:zz")), 400, &["DIGEST_INVALID"]),
            case("PUT without digest", Req::new("PUT", &up), 400, &["DIGEST_INVALID", "UNSUPPORTED", "BLOB_UPLOAD_INVALID"]),
            case(
                "monolithic POST with the wrong digest",
                Req::new("POST", format!("/v2/team/up/blobs/uploads/?digest={some}")).body(b"other".to_vec()),
                400,
                &["DIGEST_INVALID"],
            ),
        ],
    )
    .await;
    assert_no_blob(&reg, "team/up", &some).await;
    assert_no_blob(&reg, "team/up", &sha256(b"other")).await;
    // The other repository's session was not touched by any of that.
    check(&reg, get(&other), 204, &[]).await;
    // Nor was this one.
    assert_eq!(check(&reg, get(&up), 204, &[]).await.header("range"), "0-0");

    // A chunked upload finished with the wrong digest stores nothing.
    let data = b"chunked content".to_vec();
    check(&reg, Req::new("PATCH", &up).header("content-range", "0-14").body(data.clone()), 202, &[]).await;
    let wrong = sha256(b"something else");
    check(&reg, Req::new("PUT", with_query(&up, &format!("digest={wrong}"))), 400, &["DIGEST_INVALID"]).await;
    assert_no_blob(&reg, "team/up", &wrong).await;
    assert_no_blob(&reg, "team/up", &sha256(&data)).await;
    assert!(!reg.has_object(&blob_key(&sha256(&data))).await);

    // Cancel: 204, then the session is unknown to every method.
    let location = reg.start_upload("team/up").await;
    check(&reg, Req::new("PATCH", &location).body(b"abc".to_vec()), 202, &[]).await;
    check(&reg, Req::new("DELETE", &location), 204, &[]).await;
    check_all(
        &reg,
        vec![
            case("status after cancel", get(&location), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("PATCH after cancel", Req::new("PATCH", &location).body(b"d".to_vec()), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("PUT after cancel", Req::new("PUT", with_query(&location, &format!("digest={}", sha256(b"abc")))), 404, &["BLOB_UPLOAD_UNKNOWN"]),
            case("DELETE after cancel", Req::new("DELETE", &location), 404, &["BLOB_UPLOAD_UNKNOWN"]),
        ],
    )
    .await;
    assert_no_blob(&reg, "team/up", &sha256(b"abc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_mount() {
    let reg = TestRegistry::start().await;
    let data = b"shared base layer".to_vec();
    let digest = reg.push_blob("team/src", &data).await;

    let reply = check(&reg, Req::new("POST", format!("/v2/team/dst/blobs/uploads/?mount={digest}&from=team/src")), 201, &[]).await;
    assert_eq!(reply.location(&reg), format!("/v2/team/dst/blobs/{digest}"));
    assert_eq!(reply.header("docker-content-digest"), digest);
    assert_blob(&reg, "team/dst", &digest, &data).await;
    assert_blob(&reg, "team/src", &digest, &data).await;

    // From a repository that lacks the blob: an ordinary session instead, and nothing mounted.
    let reply = check(&reg, Req::new("POST", format!("/v2/team/dst2/blobs/uploads/?mount={digest}&from=team/empty")), 202, &[]).await;
    let location = reply.location(&reg);
    assert!(location.starts_with("/v2/team/dst2/blobs/uploads/"), "{location}");
    assert_eq!(reply.header("range"), "0-0");
    assert!(reply.opt_header("docker-upload-uuid").is_some());
    assert_no_blob(&reg, "team/dst2", &digest).await;
    reg.finish_upload("team/dst2", &location, &digest, data.clone()).await;
    assert_blob(&reg, "team/dst2", &digest, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hanging_up_mid_upload_leaves_nothing_visible() {
    let reg = TestRegistry::start().await;
    let data = vec![7u8; 1 << 20];
    let digest = sha256(&data);

    // Monolithic POST: headers announce 1 MiB, 64 KiB arrive, then the connection closes.
    let mut stream = tokio::net::TcpStream::connect(&reg.host).await.expect("connect");
    let head = format!(
        "POST /v2/team/drop/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        reg.host,
        data.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&data[..64 << 10]).await.expect("write part of the body");
    stream.flush().await.expect("flush");
    drop(stream);

    // The server keeps serving, and once it has given up on the broken request nothing of it
    // is visible or left behind.
    check(&reg, get("/v2/"), 200, &[]).await;
    let r = &reg;
    eventually("the broken POST to be answered", move || async move {
        requests(r, "start_upload").await >= 1.0
    })
    .await;
    assert_no_blob(&reg, "team/drop", &digest).await;
    assert!(!reg.has_object(&blob_key(&digest)).await);
    assert_eq!(metric(&reg, "portcullis_upload_sessions_open").await, Some(0.0), "the broken upload's session is still open");
    assert_eq!(reg.staged_uploads().await, Vec::<String>::new(), "staged bytes left behind");

    // A chunked session survives a chunk that broke off: the offset is where it was.
    let location = reg.start_upload("team/drop").await;
    check(&reg, Req::new("PATCH", &location).header("content-range", "0-9").body(data[..10].to_vec()), 202, &[]).await;
    let mut stream = tokio::net::TcpStream::connect(&reg.host).await.expect("connect");
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: 10-{}\r\nContent-Length: {}\r\n\r\n",
        reg.host,
        data.len() - 1,
        data.len() - 10
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&data[10..64 << 10]).await.expect("write part of the body");
    stream.flush().await.expect("flush");
    drop(stream);
    eventually("the broken PATCH to be answered", move || async move {
        requests(r, "patch_upload").await >= 2.0
    })
    .await;
    assert_eq!(check(&reg, get(&location), 204, &[]).await.header("range"), "0-9");
    let rest = Req::new("PATCH", &location).header("content-range", format!("10-{}", data.len() - 1)).body(data[10..].to_vec());
    assert_eq!(check(&reg, rest, 202, &[]).await.header("range"), format!("0-{}", data.len() - 1));
    reg.finish_upload("team/drop", &location, &digest, Vec::new()).await;
    assert_blob(&reg, "team/drop", &digest, &data).await;
}

// ---------------------------------------------------------------------------------------------
// Manifests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_push_pull_head() {
    let reg = TestRegistry::start().await;
    let repo = "team/app";
    let (config, layer) = (br#"{"os":"linux"}"#.as_slice(), b"layer bytes".as_slice());
    reg.push_blob(repo, config).await;
    reg.push_blob(repo, layer).await;
    let manifest = oci_image(config, layer);
    let digest = sha256(manifest.as_bytes());

    let reply = check(&reg, Req::new("PUT", format!("/v2/{repo}/manifests/v1")).header("content-type", OCI_MANIFEST).body(manifest.clone()), 201, &[]).await;
    assert_eq!(reply.location(&reg), format!("/v2/{repo}/manifests/{digest}"));
    assert_eq!(reply.header("docker-content-digest"), digest);
    assert_eq!(reply.header("content-length"), "0");
    assert!(reply.opt_header("oci-subject").is_none(), "no subject, no OCI-Subject");
    assert_manifest(&reg, repo, "v1", OCI_MANIFEST, manifest.as_bytes()).await;
    assert_manifest(&reg, repo, &digest, OCI_MANIFEST, manifest.as_bytes()).await;

    // Re-pushing the same bytes is idempotent; pushing by digest is allowed too.
    check(&reg, Req::new("PUT", format!("/v2/{repo}/manifests/{digest}")).header("content-type", OCI_MANIFEST).body(manifest.clone()), 201, &[]).await;
    assert_manifest(&reg, repo, "v1", OCI_MANIFEST, manifest.as_bytes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_media_types_and_accept() {
    let reg = TestRegistry::start().await;
    let repo = "team/types";
    let (oci_config, oci_layer) = (br#"{"os":"linux","kind":"oci"}"#.as_slice(), b"oci layer".as_slice());
    let (docker_config, docker_layer) = (br#"{"os":"linux","kind":"docker"}"#.as_slice(), b"docker layer".as_slice());
    for blob in [oci_config, oci_layer, docker_config, docker_layer] {
        reg.push_blob(repo, blob).await;
    }
    let oci = oci_image(oci_config, oci_layer);
    let docker = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{},"layers":[{}]}}"#,
        descriptor(DOCKER_CONFIG, docker_config),
        descriptor(DOCKER_LAYER, docker_layer)
    );
    let index = index_of(OCI_INDEX, &[(OCI_MANIFEST, oci.as_bytes()), (DOCKER_MANIFEST, docker.as_bytes())]);
    let list = index_of(DOCKER_LIST, &[(DOCKER_MANIFEST, docker.as_bytes())]);
    // Children first: an index may only reference manifests the repository has.
    let pushes = [("oci", OCI_MANIFEST, &oci), ("docker", DOCKER_MANIFEST, &docker), ("index", OCI_INDEX, &index), ("list", DOCKER_LIST, &list)];
    for (tag, media_type, bytes) in pushes {
        let reply = check(&reg, Req::new("PUT", format!("/v2/{repo}/manifests/{tag}")).header("content-type", media_type).body(bytes.clone()), 201, &[]).await;
        assert_eq!(reply.header("docker-content-digest"), sha256(bytes.as_bytes()), "{tag}");
    }
    for (tag, media_type, bytes) in pushes {
        assert_manifest(&reg, repo, tag, media_type, bytes.as_bytes()).await;
        assert_manifest(&reg, repo, &sha256(bytes.as_bytes()), media_type, bytes.as_bytes()).await;
    }

    // Accept negotiation: an index is not served to a client that only takes image manifests.
    let images_only = format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}");
    let path = format!("/v2/{repo}/manifests/index");
    check_all(
        &reg,
        vec![
            case("image types only", get(&path).header("accept", images_only.clone()), 404, &["MANIFEST_UNKNOWN"]),
            case("image types only, HEAD", head(&path).header("accept", images_only.clone()), 404, &["MANIFEST_UNKNOWN"]),
            case("index listed", get(&path).header("accept", format!("{images_only}, {OCI_INDEX}")), 200, &[]),
            case("index with a q value", get(&path).header("accept", format!("{OCI_INDEX};q=0.9")), 200, &[]),
            case("wildcard", get(&path).header("accept", "*/*"), 200, &[]),
            case("image to an image client", get(format!("/v2/{repo}/manifests/oci")).header("accept", images_only.clone()), 200, &[]),
            case("list to an OCI-only client", get(format!("/v2/{repo}/manifests/list")).header("accept", OCI_INDEX), 404, &["MANIFEST_UNKNOWN"]),
        ],
    )
    .await;
    let reply = check(&reg, get(&path).header("accept", OCI_INDEX), 200, &[]).await;
    assert_eq!(reply.header("content-type"), OCI_INDEX);
    assert!(reply.body == index.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_errors() {
    let reg = TestRegistry::start().await;
    let repo = "team/bad";
    let (config, layer) = (br#"{"os":"linux"}"#.as_slice(), b"present layer".as_slice());
    reg.push_blob(repo, config).await;
    reg.push_blob(repo, layer).await;
    let good = oci_image(config, layer);
    let absent = b"absent blob".as_slice();
    let put = |reference: &str, media_type: &str, body: Vec<u8>| {
        Req::new("PUT", format!("/v2/{repo}/manifests/{reference}")).header("content-type", media_type.to_owned()).body(body)
    };
    let put_stream = |body: reqwest::Body| Req::new("PUT", format!("/v2/{repo}/manifests/t")).header("content-type", OCI_MANIFEST).body(body);
    // 4 MiB + 1 byte without Content-Length: the limit is found while reading. Sent as 4 MiB and
    // then 1 byte, so the server has read the body when it answers.
    let limit = 4 * 1024 * 1024;
    let parts = [bytes::Bytes::from(vec![b' '; limit]), bytes::Bytes::from_static(b" ")];
    let too_large = reqwest::Body::wrap_stream(futures::stream::iter(parts.map(Ok::<_, std::io::Error>)));
    check_all(
        &reg,
        vec![
            case("absent layer", put("t", OCI_MANIFEST, oci_image(config, absent).into_bytes()), 400, &["MANIFEST_BLOB_UNKNOWN"]),
            case("absent config", put("t", OCI_MANIFEST, oci_image(absent, layer).into_bytes()), 400, &["MANIFEST_BLOB_UNKNOWN"]),
            case("index with an absent child", put("t", OCI_INDEX, index_of(OCI_INDEX, &[(OCI_MANIFEST, good.as_bytes())]).into_bytes()), 400, &["MANIFEST_BLOB_UNKNOWN"]),
            case("list with an absent child", put("t", DOCKER_LIST, index_of(DOCKER_LIST, &[(DOCKER_MANIFEST, absent)]).into_bytes()), 400, &["MANIFEST_BLOB_UNKNOWN"]),
            case("invalid JSON", put("t", OCI_MANIFEST, br#"{"schemaVersion":2,"#.to_vec()), 400, &["MANIFEST_INVALID"]),
            case("Content-Type differs from mediaType", put("t", DOCKER_MANIFEST, good.clone().into_bytes()), 400, &["MANIFEST_INVALID"]),
            case("schemaVersion 1", put("t", OCI_MANIFEST, good.replace("\"schemaVersion\":2", "\"schemaVersion\":1").into_bytes()), 400, &["MANIFEST_INVALID"]),
            case("digest reference that the body does not match", put(&sha256(b"other"), OCI_MANIFEST, good.clone().into_bytes()), 400, &["DIGEST_INVALID"]),
            case("4 MiB + 1 byte, streamed", put_stream(too_large), 413, &["MANIFEST_INVALID"]),
            case("invalid tag", put("-t", OCI_MANIFEST, good.clone().into_bytes()), 400, &["MANIFEST_INVALID", "NAME_INVALID", "TAG_INVALID"]),
            case("unknown tag", get(format!("/v2/{repo}/manifests/nope")), 404, &["MANIFEST_UNKNOWN"]),
            case("unknown tag, HEAD", head(format!("/v2/{repo}/manifests/nope")), 404, &["MANIFEST_UNKNOWN"]),
            case("unknown digest", get(format!("/v2/{repo}/manifests/{}", sha256(b"nope"))), 404, &["MANIFEST_UNKNOWN"]),
            case("unknown tag in an unknown repository", get("/v2/team/nothing/manifests/v1"), 404, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]),
            case("malformed digest", get(format!("/v2/{repo}/manifests/sha256:zz")), 404, &["MANIFEST_UNKNOWN"]),
        ],
    )
    .await;
    // 4 MiB + 1 byte announced by Content-Length: refused before the body is read.
    let (status, body) = raw(&reg, "PUT", &format!("/v2/{repo}/manifests/t"), &vec![b' '; limit + 1]).await;
    assert_eq!(status, 413, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("413 body is not JSON: {body}"));
    assert_eq!(json["errors"][0]["code"], "MANIFEST_INVALID");
    // None of them left a tag behind.
    check(&reg, get(format!("/v2/{repo}/manifests/t")), 404, &["MANIFEST_UNKNOWN"]).await;
    assert!(tags_of(&reg, repo).await.is_empty());
}

// Regression: #13 (item 12). The OCI conformance suite (v1.1.1, `setup.go`) reads the reference
// `.INVALID_MANIFEST_NAME` and expects 404 from "HEAD request to nonexistent manifest" and from
// "GET nonexistent manifest" (pull and push workflows), and 400 or 404 with an OCI body from a
// GET of `sha256:totallywrong`; the new suite pushes `sha256:baddigeststring` and expects 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_that_cannot_exist_are_unknown_to_reads_and_malformed_to_pushes() {
    let reg = TestRegistry::start().await;
    let repo = "team/conformance";
    let (manifest_digest, manifest) = reg.push_tiny_image(repo, "v1", "conformance").await;
    let put = |reference: &str| {
        Req::new("PUT", format!("/v2/{repo}/manifests/{reference}")).header("content-type", OCI_MANIFEST).body(manifest.clone())
    };
    check_all(
        &reg,
        vec![
            case("conformance: HEAD nonexistent manifest", head(format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME")), 404, &["MANIFEST_UNKNOWN"]),
            case("conformance: GET nonexistent manifest", get(format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME")), 404, &["MANIFEST_UNKNOWN"]),
            case(
                "conformance: 400 response body should contain OCI-conforming JSON message",
                get(format!("/v2/{repo}/manifests/sha256:totallywrong")).header("content-type", OCI_MANIFEST).body(b"blablabla".to_vec()),
                404,
                &["MANIFEST_UNKNOWN"],
            ),
            case("nonexistent manifest in an unknown repository", get("/v2/team/nothing/manifests/.INVALID_MANIFEST_NAME"), 404, &["MANIFEST_UNKNOWN"]),
            // Distribution answers 404 to a delete of a reference its router cannot match.
            case("DELETE nonexistent manifest", Req::new("DELETE", format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME")), 404, &["MANIFEST_UNKNOWN"]),
            case("DELETE malformed digest", Req::new("DELETE", format!("/v2/{repo}/manifests/sha256:zz")), 404, &["MANIFEST_UNKNOWN"]),
            case("PUT to a reference that is not a tag", put(".INVALID_MANIFEST_NAME"), 400, &["MANIFEST_INVALID"]),
            case("conformance: PUT to a bad digest", put("sha256:baddigeststring"), 400, &["DIGEST_INVALID"]),
            case("GET of an unsupported digest algorithm", get(format!("/v2/{repo}/manifests/sha512:{}", "a".repeat(128))), 400, &["UNSUPPORTED"]),
        ],
    )
    .await;
    // None of them touched what is there.
    assert_manifest(&reg, repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(tags_of(&reg, repo).await, ["v1"]);
    check(&reg, head(format!("/v2/{repo}/manifests/{manifest_digest}")), 200, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_tags_query_and_deletes() {
    let reg = TestRegistry::start().await;
    let repo = "team/tags";
    let (config, layer) = (br#"{"os":"linux"}"#.as_slice(), b"tagged layer".as_slice());
    reg.push_blob(repo, config).await;
    reg.push_blob(repo, layer).await;
    let manifest = oci_image(config, layer);
    let digest = sha256(manifest.as_bytes());
    let by_digest = |query: &str| {
        Req::new("PUT", format!("/v2/{repo}/manifests/{digest}?{query}")).header("content-type", OCI_MANIFEST).body(manifest.clone())
    };

    // `?tag=` repeated: every tag is created.
    check(&reg, by_digest("tag=a&tag=b"), 201, &[]).await;
    for tag in ["a", "b"] {
        assert_manifest(&reg, repo, tag, OCI_MANIFEST, manifest.as_bytes()).await;
    }
    assert_eq!(tags_of(&reg, repo).await, ["a", "b"]);
    // One invalid tag: none is created.
    check(&reg, by_digest("tag=c&tag=-bad"), 400, &["MANIFEST_INVALID", "NAME_INVALID", "TAG_INVALID"]).await;
    check(&reg, get(format!("/v2/{repo}/manifests/c")), 404, &["MANIFEST_UNKNOWN"]).await;
    assert_eq!(tags_of(&reg, repo).await, ["a", "b"]);

    // DELETE by tag removes the tag only.
    check(&reg, Req::new("DELETE", format!("/v2/{repo}/manifests/a")), 202, &[]).await;
    check(&reg, get(format!("/v2/{repo}/manifests/a")), 404, &["MANIFEST_UNKNOWN"]).await;
    check(&reg, Req::new("DELETE", format!("/v2/{repo}/manifests/a")), 404, &["MANIFEST_UNKNOWN"]).await;
    assert_manifest(&reg, repo, "b", OCI_MANIFEST, manifest.as_bytes()).await;
    assert_manifest(&reg, repo, &digest, OCI_MANIFEST, manifest.as_bytes()).await;
    assert_eq!(tags_of(&reg, repo).await, ["b"]);

    // DELETE by digest removes the manifest and every tag pointing to it.
    check(&reg, Req::new("DELETE", format!("/v2/{repo}/manifests/{digest}")), 202, &[]).await;
    check(&reg, get(format!("/v2/{repo}/manifests/{digest}")), 404, &["MANIFEST_UNKNOWN"]).await;
    check(&reg, head(format!("/v2/{repo}/manifests/{digest}")), 404, &["MANIFEST_UNKNOWN"]).await;
    check(&reg, get(format!("/v2/{repo}/manifests/b")), 404, &["MANIFEST_UNKNOWN"]).await;
    check(&reg, Req::new("DELETE", format!("/v2/{repo}/manifests/{digest}")), 404, &["MANIFEST_UNKNOWN"]).await;
    assert!(tags_of(&reg, repo).await.is_empty());
    // The blobs stay: deleting a manifest is not deleting its layers.
    assert_blob(&reg, repo, &sha256(layer), layer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_only_namespace_refuses_pushes() {
    let reg = TestRegistry::start().await;
    let (config, layer) = (br#"{"os":"linux"}"#.as_slice(), b"prod layer".as_slice());
    reg.push_blob("build/app", config).await;
    reg.push_blob("build/app", layer).await;
    let manifest = oci_image(config, layer);
    let digest = sha256(manifest.as_bytes());
    // Regression: #13 (4). `prod/**` covers the repository `prod` itself.
    for repo in ["prod/app", "prod"] {
        for reference in ["v1".to_owned(), format!("{digest}?tag=v1")] {
            let req = Req::new("PUT", format!("/v2/{repo}/manifests/{reference}")).header("content-type", OCI_MANIFEST).body(manifest.clone());
            let reply = check(&reg, req, 403, &["DENIED"]).await;
            let message = reply.json()["errors"][0]["message"].as_str().unwrap_or_default().to_owned();
            assert!(message.contains("promotion"), "message does not mention promotion: {message}");
        }
        // Regression: #13 (4). Blobs arrive only through promotion too: no upload, no mount.
        let layer_digest = sha256(layer);
        let uploads = [
            Req::new("POST", format!("/v2/{repo}/blobs/uploads/?digest={layer_digest}")).body(layer.to_vec()),
            Req::new("POST", format!("/v2/{repo}/blobs/uploads/")),
            Req::new("POST", format!("/v2/{repo}/blobs/uploads/?mount={layer_digest}&from=build/app")),
        ];
        for req in uploads {
            check(&reg, req, 403, &["DENIED"]).await;
        }
        check(&reg, get(format!("/v2/{repo}/manifests/v1")), 404, &["MANIFEST_UNKNOWN"]).await;
        check(&reg, get(format!("/v2/{repo}/manifests/{digest}")), 404, &["MANIFEST_UNKNOWN"]).await;
        check(&reg, head(format!("/v2/{repo}/blobs/{layer_digest}")), 404, &["BLOB_UNKNOWN"]).await;
        assert!(reg.stored_keys(&format!("repositories/{repo}/")).await.is_empty(), "{repo}: nothing is linked");
    }
}

// Regression: #13 (9). Descriptor sizes are checked against what they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_sizes_must_match_the_content() {
    let reg = TestRegistry::start().await;
    let repo = "sizes/app";
    let (config, layer) = (br#"{"os":"linux"}"#.as_slice(), b"sized layer".as_slice());
    reg.push_blob(repo, config).await;
    reg.push_blob(repo, layer).await;
    let wrong_layer = tiny_manifest(&sha256(config), config.len(), &sha256(layer), layer.len() + 1, None);
    let wrong_config = tiny_manifest(&sha256(config), config.len() - 1, &sha256(layer), layer.len(), None);
    for manifest in [wrong_layer, wrong_config] {
        let req = Req::new("PUT", format!("/v2/{repo}/manifests/v1")).header("content-type", OCI_MANIFEST).body(manifest);
        check(&reg, req, 400, &["SIZE_INVALID"]).await;
    }
    let child = oci_image(config, layer);
    let req = Req::new("PUT", format!("/v2/{repo}/manifests/child")).header("content-type", OCI_MANIFEST).body(child.clone());
    check(&reg, req, 201, &[]).await;
    let index = |size: usize, media_type: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{media_type}","digest":"{}","size":{size}}}]}}"#,
            sha256(child.as_bytes())
        )
    };
    for body in [index(child.len() + 7, OCI_MANIFEST), index(child.len(), DOCKER_MANIFEST)] {
        let req = Req::new("PUT", format!("/v2/{repo}/manifests/list")).header("content-type", OCI_INDEX).body(body);
        check(&reg, req, 400, &["MANIFEST_INVALID"]).await;
    }
    let req = Req::new("PUT", format!("/v2/{repo}/manifests/list")).header("content-type", OCI_INDEX).body(index(child.len(), OCI_MANIFEST));
    check(&reg, req, 201, &[]).await;
    check(&reg, get(format!("/v2/{repo}/manifests/v1")), 404, &["MANIFEST_UNKNOWN"]).await;
}

// ---------------------------------------------------------------------------------------------
// Names.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_create_nothing() {
    let reg = TestRegistry::start().await;
    // A unique, valid name component: if any request escaped, a file or directory by this name
    // would appear somewhere above the store.
    let marker = format!("escape{}", uuid::Uuid::new_v4().simple());
    let up = "../".repeat(8);
    let encoded_up = "%2e%2e/".repeat(8);
    let digest = sha256(b"payload");
    let long = format!("team/{}", "a".repeat(251));
    assert_eq!(long.len(), 256);
    // (method, request target, status, code): 400 NAME_INVALID wherever a name is recognised.
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("POST", format!("/v2/{up}{marker}/blobs/uploads/?digest={digest}"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/team/{up}{marker}/blobs/uploads/"), 400, "NAME_INVALID"),
        ("PUT", format!("/v2/{up}{marker}/manifests/v1"), 400, "NAME_INVALID"),
        ("GET", format!("/v2/team/{up}{marker}/tags/list"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/{encoded_up}{marker}/blobs/uploads/?digest={digest}"), 400, "NAME_INVALID"),
        ("PUT", format!("/v2/%2E%2E/%2E%2E/{marker}/manifests/v1"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/team/%2e%2e/%2e%2e/{marker}/blobs/uploads/"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/team%2f..%2f{marker}/blobs/uploads/"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/./{marker}/blobs/uploads/"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/team//{marker}/blobs/uploads/"), 400, "NAME_INVALID"),
        ("POST", format!("/v2/Team/{}/blobs/uploads/", marker.to_uppercase()), 400, "NAME_INVALID"),
        ("POST", format!("/v2/{long}/blobs/uploads/?digest={digest}"), 400, "NAME_INVALID"),
        ("GET", format!("/v2/team/{marker}/blobs/sha256:..%2f..%2f{marker}"), 400, "DIGEST_INVALID"),
        // An upload id is never a path: this one cannot even be a session.
        ("PATCH", format!("/v2/team/{marker}/blobs/uploads/..%2f..%2f{marker}"), 404, "BLOB_UPLOAD_UNKNOWN"),
        ("PATCH", format!("/v2/team/{marker}/blobs/uploads/%2e%2e"), 404, "BLOB_UPLOAD_UNKNOWN"),
    ];
    for (method, target, status, code) in &cases {
        let (got, body) = raw(&reg, method, target, b"payload").await;
        assert_eq!(got, *status, "{method} {target}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{method} {target}: {body}"));
        assert_eq!(json["errors"][0]["code"], *code, "{method} {target}: {body}");
    }
    assert!(catalog(&reg).await.is_empty(), "a hostile request created a repository");
    // Nothing escaped into the file system (where the filesystem store lives, and the index on
    // either backend), nor into the store's keys.
    for dir in reg.data_dir.join("store/objects/repositories").ancestors().take(8) {
        assert!(!dir.join(&marker).exists(), "{} exists", dir.join(&marker).display());
    }
    let stored = reg.stored_keys("").await;
    assert!(stored.iter().all(|f| !f.contains(&marker) && !f.contains(&marker.to_uppercase())), "{stored:?}");
    assert!(!reg.has_object(&blob_key(&digest)).await, "a refused push stored its blob");
}

// ---------------------------------------------------------------------------------------------
// Listings.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_order_and_pagination() {
    let reg = TestRegistry::start().await;
    let repo = "team/list";
    let (digest, manifest) = reg.push_tiny_image(repo, "v1", "list").await;
    let more = ["b", "a", "c10", "c2", "V2", "_x", "1.0", "latest", "a-b", "a.b"];
    let query: Vec<String> = more.iter().map(|t| format!("tag={t}")).collect();
    let req = Req::new("PUT", format!("/v2/{repo}/manifests/{digest}?{}", query.join("&"))).header("content-type", OCI_MANIFEST).body(manifest);
    check(&reg, req, 201, &[]).await;
    let mut expected: Vec<String> = more.iter().map(|t| t.to_string()).chain(["v1".to_owned()]).collect();
    expected.sort();
    assert_eq!(tags_of(&reg, repo).await, expected, "tags in lexical order");

    for n in [1, 2, 3, expected.len(), 100] {
        let first = format!("/v2/{repo}/tags/list?n={n}");
        let (seen, pages) = paginate(&reg, &first, "tags", &format!("/v2/{repo}/tags/list?"), n).await;
        assert_eq!(seen, expected, "n={n}: every tag once, in order");
        assert_eq!(pages, expected.len().div_ceil(n).max(1), "n={n}: no empty last page");
    }
    let after: Vec<String> = expected.iter().filter(|t| t.as_str() > "c10").cloned().collect();
    let reply = check(&reg, get(format!("/v2/{repo}/tags/list?last=c10")), 200, &[]).await;
    assert_eq!(strings(&reply.json()["tags"]), after);

    check(&reg, get("/v2/team/unknown/tags/list"), 404, &["NAME_UNKNOWN"]).await;
}

/// Repositories whose names are prefixes of one another, followed by `-`, `.`, `/` and `_`.
const CATALOG_REPOS: [&str; 8] = ["zz/top", "cat/b", "cat/a/b", "cat/a", "cat/a-b", "cat/a.b", "cat/a_b", "lone"];

async fn push_catalog_repos(reg: &TestRegistry) -> Vec<String> {
    for repo in CATALOG_REPOS {
        reg.push_blob(repo, format!("blob of {repo}").as_bytes()).await;
    }
    let mut expected: Vec<String> = CATALOG_REPOS.iter().map(|r| r.to_string()).collect();
    expected.sort();
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_pagination() {
    let reg = TestRegistry::start().await;
    let expected = push_catalog_repos(&reg).await;
    let listed = catalog(&reg).await;
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected, "every repository once");
    for n in [1, 2, 3, 100] {
        let (seen, pages) = paginate(&reg, &format!("/v2/_catalog?n={n}"), "repositories", "/v2/_catalog?", n).await;
        assert_eq!(seen, listed, "n={n}: the pages add up to the full listing");
        assert_eq!(pages, listed.len().div_ceil(n).max(1), "n={n}: no empty last page");
    }
}

// The Docker Registry API, which `/v2/_catalog` follows, promises lexical order and "values
// lexically after last": `cat/a` before `cat/a-b` and `cat/a.b`, which `/`-separated store keys
// would not give (the catalog's keys are hex, see `metadata`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_is_in_lexical_order() {
    let reg = TestRegistry::start().await;
    let expected = push_catalog_repos(&reg).await;
    assert_eq!(catalog(&reg).await, expected, "catalog in lexical order");
    let after: Vec<String> = expected.iter().filter(|r| r.as_str() > "cat/a").cloned().collect();
    let reply = check(&reg, get("/v2/_catalog?last=cat/a"), 200, &[]).await;
    assert_eq!(strings(&reply.json()["repositories"]), after, "catalog after cat/a");
}

// ---------------------------------------------------------------------------------------------
// Referrers.

/// An artifact manifest (OCI image manifest with one layer) whose subject is `subject`.
fn artifact(config: &str, artifact_type: Option<&str>, layer: &[u8], subject: (&str, usize), annotations: Option<&str>) -> String {
    let artifact_type = artifact_type.map(|t| format!(r#""artifactType":"{t}","#)).unwrap_or_default();
    let annotations = annotations.map(|a| format!(r#","annotations":{a}"#)).unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",{artifact_type}"config":{config},"layers":[{}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{}}}{annotations}}}"#,
        descriptor("application/octet-stream", layer),
        subject.0,
        subject.1
    )
}

/// The referrers list of `subject` (with `query`), checked to be an OCI index; its descriptors
/// sorted by digest.
async fn referrers(reg: &TestRegistry, repo: &str, subject: &str, query: &str) -> (Reply, Vec<serde_json::Value>) {
    let reply = check(reg, get(format!("/v2/{repo}/referrers/{subject}{query}")), 200, &[]).await;
    assert_eq!(reply.header("content-type"), OCI_INDEX);
    let body = reply.json();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    let mut manifests = body["manifests"].as_array().unwrap_or_else(|| panic!("no manifests array: {body}")).clone();
    manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    (reply, manifests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_list_filter_and_delete() {
    let reg = TestRegistry::start().await;
    let repo = "team/ref";
    let (image, image_bytes) = reg.push_tiny_image(repo, "v1", "ref").await;
    let subject = (image.as_str(), image_bytes.len());
    reg.push_blob(repo, b"{}").await;
    reg.push_blob(repo, b"sbom").await;
    reg.push_blob(repo, b"signature").await;
    reg.push_blob(repo, b"sig config").await;
    let annotations = r#"{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}"#;
    let sbom = artifact(&descriptor(OCI_EMPTY, b"{}"), Some("application/vnd.example.sbom"), b"sbom", subject, Some(annotations));
    let sig_type = "application/vnd.example.signature.config.v1+json";
    let sig = artifact(&descriptor(sig_type, b"sig config"), None, b"signature", subject, None);
    for bytes in [&sbom, &sig] {
        let req = Req::new("PUT", format!("/v2/{repo}/manifests/{}", sha256(bytes.as_bytes()))).header("content-type", OCI_MANIFEST).body(bytes.clone());
        let reply = check(&reg, req, 201, &[]).await;
        assert_eq!(reply.header("oci-subject"), image);
    }
    let entry = |bytes: &str, artifact_type: &str, annotations: Option<&str>| {
        let mut entry = serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": sha256(bytes.as_bytes()),
            "size": bytes.len(),
            "artifactType": artifact_type,
        });
        if let Some(annotations) = annotations {
            entry["annotations"] = serde_json::from_str(annotations).expect("annotations JSON");
        }
        entry
    };
    let sbom_entry = entry(&sbom, "application/vnd.example.sbom", Some(annotations));
    let sig_entry = entry(&sig, sig_type, None);
    let mut both = vec![sbom_entry.clone(), sig_entry.clone()];
    both.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));

    let (reply, listed) = referrers(&reg, repo, &image, "").await;
    assert_eq!(listed, both);
    assert!(reply.opt_header("oci-filters-applied").is_none(), "no filter asked, none reported");

    let (reply, listed) = referrers(&reg, repo, &image, "?artifactType=application/vnd.example.sbom").await;
    assert_eq!(listed, std::slice::from_ref(&sbom_entry));
    assert_eq!(reply.header("oci-filters-applied"), "artifactType");
    let (reply, listed) = referrers(&reg, repo, &image, &format!("?artifactType={}", sig_type.replace('/', "%2F").replace('+', "%2B"))).await;
    assert_eq!(listed, [sig_entry]);
    assert_eq!(reply.header("oci-filters-applied"), "artifactType");
    let (_, listed) = referrers(&reg, repo, &image, "?artifactType=application/none").await;
    assert!(listed.is_empty());

    // No referrers: an empty index, never 404 (also in a repository that does not exist).
    let lonely = sha256(b"no referrers");
    assert!(referrers(&reg, repo, &lonely, "").await.1.is_empty());
    assert!(referrers(&reg, "team/never", &lonely, "").await.1.is_empty());
    check(&reg, get(format!("/v2/{repo}/referrers/sha256:zz")), 400, &["DIGEST_INVALID"]).await;

    // A subject that is not (yet) in the repository is accepted.
    let orphan_subject = sha256(b"pushed later");
    let orphan = artifact(&descriptor(OCI_EMPTY, b"{}"), Some("application/vnd.example.sbom"), b"sbom", (&orphan_subject, 12), None);
    let req = Req::new("PUT", format!("/v2/{repo}/manifests/orphan")).header("content-type", OCI_MANIFEST).body(orphan.clone());
    assert_eq!(check(&reg, req, 201, &[]).await.header("oci-subject"), orphan_subject);
    assert_eq!(referrers(&reg, repo, &orphan_subject, "").await.1.len(), 1);

    // Deleting a referrer removes it from the list.
    check(&reg, Req::new("DELETE", format!("/v2/{repo}/manifests/{}", sha256(sig.as_bytes()))), 202, &[]).await;
    assert_eq!(referrers(&reg, repo, &image, "").await.1, [sbom_entry]);
}

// ---------------------------------------------------------------------------------------------
// Routing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_paths() {
    let reg = TestRegistry::start().await;
    let digest = sha256(b"x");
    check_all(
        &reg,
        vec![
            case("POST /v2/", Req::new("POST", "/v2/"), 405, &["UNSUPPORTED"]),
            case("PUT a blob", Req::new("PUT", format!("/v2/team/app/blobs/{digest}")).body(b"x".to_vec()), 405, &["UNSUPPORTED"]),
            case("POST a blob", Req::new("POST", format!("/v2/team/app/blobs/{digest}")), 405, &["UNSUPPORTED"]),
            case("PATCH a manifest", Req::new("PATCH", "/v2/team/app/manifests/v1"), 405, &["UNSUPPORTED"]),
            case("POST a manifest", Req::new("POST", "/v2/team/app/manifests/v1"), 405, &["UNSUPPORTED"]),
            case("DELETE tags list", Req::new("DELETE", "/v2/team/app/tags/list"), 405, &["UNSUPPORTED"]),
            case("DELETE the catalog", Req::new("DELETE", "/v2/_catalog"), 405, &["UNSUPPORTED"]),
            case("PUT referrers", Req::new("PUT", format!("/v2/team/app/referrers/{digest}")), 405, &["UNSUPPORTED"]),
            case("GET the uploads collection", get("/v2/team/app/blobs/uploads/"), 405, &["UNSUPPORTED"]),
            case("POST an upload", Req::new("POST", format!("/v2/team/app/blobs/uploads/{}", uuid::Uuid::new_v4())), 405, &["UNSUPPORTED"]),
            case("POST /metrics", Req::new("POST", "/metrics"), 405, &["UNSUPPORTED"]),
            case("unknown route under a name", get("/v2/team/app/nothing/here"), 404, &[]),
            case("outside /v2", get("/elsewhere"), 404, &[]),
            case("a name and nothing else", get("/v2/team/app"), 404, &[]),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Concurrency.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_pushes_of_one_blob_and_of_many() {
    let reg = TestRegistry::start().await;
    let repo = "team/parallel";
    let same = vec![42u8; 256 << 10];
    let digest = sha256(&same);
    let push = |bytes: Vec<u8>| {
        let reg = &reg;
        async move {
            let digest = sha256(&bytes);
            let location = reg.start_upload(repo).await;
            reg.finish_upload(repo, &location, &digest, bytes).await;
        }
    };
    futures::future::join_all((0..16).map(|_| push(same.clone()))).await;
    assert_blob(&reg, repo, &digest, &same).await;
    let hex = &digest["sha256:".len()..];
    assert_eq!(reg.stored_keys("blobs/").await, [format!("sha256/{}/{hex}", &hex[..2])], "stored once");
    assert!(reg.has_object(&blob_key(&digest)).await);

    let many: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 100_000 + usize::from(i)]).collect();
    futures::future::join_all(many.iter().map(|bytes| push(bytes.clone()))).await;
    for bytes in &many {
        assert_blob(&reg, repo, &sha256(bytes), bytes).await;
    }
    assert_eq!(reg.stored_keys("blobs/").await.len(), 17);
    assert_eq!(reg.staged_uploads().await, Vec::<String>::new(), "no staged bytes left");
    assert_eq!(metric(&reg, "portcullis_upload_sessions_open").await, Some(0.0));
}

// ---------------------------------------------------------------------------------------------
// Restart.

/// What the restart test pushed.
struct Pushed {
    manifest: Vec<u8>,
    digest: String,
    referrer: String,
    loose: (String, Vec<u8>),
}

async fn assert_still_there(reg: &TestRegistry, pushed: &Pushed) {
    let repo = "team/keep";
    for reference in ["v1", "v2", pushed.digest.as_str()] {
        assert_manifest(reg, repo, reference, OCI_MANIFEST, &pushed.manifest).await;
    }
    assert_blob(reg, repo, &pushed.loose.0, &pushed.loose.1).await;
    assert_blob(reg, repo, &sha256(b"layer of keep"), b"layer of keep").await;
    assert_eq!(tags_of(reg, repo).await, ["v1", "v2"]);
    assert_eq!(catalog(reg).await, [repo]);
    let (_, listed) = referrers(reg, repo, &pushed.digest, "").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], pushed.referrer.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_even_without_the_index() {
    let mut reg = TestRegistry::start().await;
    let repo = "team/keep";
    let (digest, manifest) = reg.push_tiny_image(repo, "v1", "keep").await;
    let req = Req::new("PUT", format!("/v2/{repo}/manifests/{digest}?tag=v2")).header("content-type", OCI_MANIFEST).body(manifest.clone());
    check(&reg, req, 201, &[]).await;
    reg.push_blob(repo, b"{}").await;
    reg.push_blob(repo, b"evidence").await;
    let referrer = artifact(&descriptor(OCI_EMPTY, b"{}"), Some("application/vnd.example.sbom"), b"evidence", (&digest, manifest.len()), None);
    assert_eq!(reg.put_manifest(repo, &sha256(referrer.as_bytes()), OCI_MANIFEST, referrer.as_bytes()).await.status(), 201);
    let loose = b"a loose blob".to_vec();
    let pushed = Pushed { digest, manifest, referrer: sha256(referrer.as_bytes()), loose: (reg.push_blob(repo, &loose).await, loose) };
    assert_still_there(&reg, &pushed).await;

    reg = reg.restart().await;
    assert_still_there(&reg, &pushed).await;

    // The index is only a cache: without it, the same data serves the same answers.
    reg.stop().await;
    std::fs::remove_dir_all(reg.data_dir.join("index")).expect("remove the index");
    reg = reg.restart().await;
    assert_still_there(&reg, &pushed).await;
    // Deleting the referrer needs its summary, which the empty index must recompute.
    check(&reg, Req::new("DELETE", format!("/v2/{repo}/manifests/{}", pushed.referrer)), 202, &[]).await;
    assert!(referrers(&reg, repo, &pushed.digest, "").await.1.is_empty());
}

// Regression: #13 (item 13). A manifest link whose stored media type was not a header value made
// the request task panic, and the client saw its connection drop. Now every damaged metadata
// object is a clean 500 with an opaque body, the server goes on serving, and `fsck` names each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_metadata_is_a_clean_500_and_fsck_names_it() {
    let reg = TestRegistry::start().await;
    let store = reg.store().await;
    let (healthy_digest, healthy) = reg.push_tiny_image("team/healthy", "v1", "healthy").await;
    let upload = reg.start_upload("team/healthy").await;
    let upload_id = upload.rsplit('/').next().expect("upload id").to_owned();
    let clean = portcullis::fsck::run(store.clone(), |finding| panic!("a healthy store has no findings: {finding:?}")).await.unwrap();
    assert_eq!(clean.problems, 0);

    // (what, the object to damage in its own repository and its bytes, the request that reads it
    // given the repository and the manifest's digest)
    type Read = fn(&str, &str) -> Req;
    let link_type = |media_type: &str| format!(r#"{{"mediaType":"{media_type}","size":3}}"#);
    let cases: Vec<(&str, &str, String, Read)> = vec![
        ("a link whose media type would inject a header", "_manifests", link_type(r"application/vnd.oci.image.manifest.v1+json\r\nX-Injected: 1"), |repo, _| get(format!("/v2/{repo}/manifests/v1"))),
        ("a link whose media type is not ASCII, HEAD", "_manifests", link_type("application/vnd.oci.image.manifest.v1+json\u{e9}"), |repo, digest| head(format!("/v2/{repo}/manifests/{digest}"))),
        ("a truncated link", "_manifests", r#"{"mediaType":"application/vnd.oci"#.into(), |repo, digest| get(format!("/v2/{repo}/manifests/{digest}"))),
        ("a truncated tag", "_tags", r#"{"digest":"sha256:"#.into(), |repo, _| get(format!("/v2/{repo}/manifests/v1"))),
        ("a tag whose digest does not parse", "_tags", r#"{"digest":"sha256:not-a-digest"}"#.into(), |repo, _| head(format!("/v2/{repo}/manifests/v1"))),
        ("a referrer link that is no descriptor", "_referrers", "[1,2]".into(), |repo, digest| get(format!("/v2/{repo}/referrers/{digest}"))),
    ];
    let mut damaged = Vec::new();
    for (i, (what, kind, bytes, request)) in cases.into_iter().enumerate() {
        let repo = format!("team/damaged-{i}");
        let (digest, _) = reg.push_tiny_image(&repo, "v1", &repo).await;
        let hex = digest.trim_start_matches("sha256:");
        let key = match kind {
            "_manifests" => format!("repositories/{repo}/_manifests/sha256/{hex}"),
            "_tags" => format!("repositories/{repo}/_tags/v1"),
            _ => format!("repositories/{repo}/_referrers/sha256/{hex}/{}", sha256(b"referrer").trim_start_matches("sha256:")),
        };
        store.put_small(&key, bytes::Bytes::from(bytes), storage::PutCondition::Always).await.expect("damage the store");
        let reply = check(&reg, request(&repo, &digest), 500, &["INTERNAL_ERROR"]).await;
        if !reply.body.is_empty() {
            assert_eq!(
                reply.json(),
                serde_json::json!({"errors": [{"code": "INTERNAL_ERROR", "message": "internal error; see the server log for this request id", "detail": null}]}),
                "{what}: the body says nothing of the cause"
            );
        }
        assert!(reply.opt_header("x-injected").is_none(), "{what}");
        damaged.push(key);
    }
    // A truncated upload session.
    let session_key = format!("uploads/{upload_id}");
    store.put_small(&session_key, bytes::Bytes::from_static(br#"{"repo":"#), storage::PutCondition::Always).await.unwrap();
    check(&reg, get(&upload), 500, &["INTERNAL_ERROR"]).await;
    damaged.push(session_key);

    // The server goes on serving what is sound.
    check(&reg, get("/v2/"), 200, &[]).await;
    assert_manifest(&reg, "team/healthy", "v1", OCI_MANIFEST, &healthy).await;
    assert_manifest(&reg, "team/healthy", &healthy_digest, OCI_MANIFEST, &healthy).await;

    // fsck names exactly the damaged objects, and changes nothing.
    let before = stored_objects(&reg).await;
    let mut findings = Vec::new();
    let summary = portcullis::fsck::run(store.clone(), |finding| findings.push(finding)).await.unwrap();
    let mut keys: Vec<String> = findings.iter().map(|finding| finding.key.clone()).collect();
    damaged.sort();
    keys.sort();
    assert_eq!(keys, damaged, "{findings:#?}");
    assert_eq!(summary.problems, findings.len() as u64);
    assert!(summary.checked > findings.len() as u64, "{summary:?}");
    assert_eq!(stored_objects(&reg).await, before, "fsck only reads");
}

/// Every key in the store with its bytes.
async fn stored_objects(reg: &TestRegistry) -> Vec<(String, Vec<u8>)> {
    let store = reg.store().await;
    let mut objects = Vec::new();
    for key in reg.stored_keys("").await {
        let object = store.get_small(&key, 1 << 20).await.expect("read").expect("listed");
        objects.push((key, object.bytes.to_vec()));
    }
    objects
}
