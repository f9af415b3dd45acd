//! A registry under test, and the OCI Distribution calls the workloads make on it (reqwest):
//! upload sessions, monolithic and chunked uploads, blob downloads, manifest pushes.
//! Only what both portcullis and Distribution 2.8 speak: `POST` then `PUT ?digest=` (Distribution
//! 2.8 ignores `POST ?digest=`), and every `Location` followed as given (Distribution's carry a
//! `_state` query that changes with each chunk).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use http::header;

/// OCI image manifest media type.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An OCI image manifest of a config and layer descriptors.
pub(crate) fn image_manifest(config_digest: &str, config_len: usize, layers: Vec<serde_json::Value>) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_len },
        "layers": layers,
    }))?)
}
/// What containerd and skopeo send as `Accept` for manifests.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// One registry under test.
#[derive(Clone)]
pub(crate) struct Registry {
    /// `portcullis` or `distribution`.
    pub(crate) name: &'static str,
    /// `http://127.0.0.1:PORT`
    pub(crate) base_url: String,
    /// `127.0.0.1:PORT`
    pub(crate) addr: SocketAddr,
    /// The server's process id, for its memory.
    pub(crate) pid: u32,
    client: reqwest::Client,
}

impl Registry {
    /// A registry at `base_url` served by process `pid`.
    pub(crate) fn new(name: &'static str, base_url: &str, pid: u32) -> anyhow::Result<Registry> {
        Registry::with_client(name, base_url, pid, Registry::client_builder().build()?)
    }

    /// A registry at `base_url` (`http://` or `https://`) reached through `client`, which should
    /// start from [`Registry::client_builder`].
    pub(crate) fn with_client(name: &'static str, base_url: &str, pid: u32, client: reqwest::Client) -> anyhow::Result<Registry> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let authority = base_url.strip_prefix("http://").or_else(|| base_url.strip_prefix("https://"));
        let authority = authority.with_context(|| format!("{base_url}: expected http(s)://HOST:PORT"))?;
        let addr = authority.parse().with_context(|| format!("{base_url}: expected an IP address and port"))?;
        Ok(Registry { name, base_url, addr, pid, client })
    }

    /// How every workload's client is built: no proxy, redirects not followed, a pool as large
    /// as the most concurrent workload.
    pub(crate) fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).pool_max_idle_per_host(128)
    }

    /// `127.0.0.1:PORT`, as skopeo names the registry.
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The HTTP client.
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// An absolute URL for `location`, which may be a path or already absolute.
    pub(crate) fn url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base_url)
        }
    }

    /// Waits until `GET /v2/` answers 200.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.client.get(self.url("/v2/")).send().await {
                Ok(res) if res.status() == 200 => return Ok(()),
                _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(res) => anyhow::bail!("{}: GET /v2/ answers {}", self.name, res.status()),
                Err(err) => anyhow::bail!("{}: GET /v2/: {err}", self.name),
            }
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/`; returns the session's `Location`.
    pub(crate) async fn start_upload(&self, repo: &str) -> anyhow::Result<String> {
        let res = self.client.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))).header(header::CONTENT_LENGTH, 0).send().await?;
        anyhow::ensure!(res.status() == 202, "{}: start upload in {repo}: {}", self.name, res.status());
        location_of(&res)
    }

    /// Uploads `body` as one `PUT ?digest=` after the `POST` (end-4a then end-6).
    pub(crate) async fn upload_monolithic(&self, repo: &str, body: Bytes, digest: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let location = self.start_upload(repo).await?;
        let len = body.len();
        let res = self
            .client
            .put(with_query(&self.url(&location), &format!("digest={digest}")))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(res.status() == 201, "{}: monolithic upload: {} {}", self.name, res.status(), res.text().await.unwrap_or_default());
        Ok(started.elapsed())
    }

    /// Uploads `body` in `PATCH` chunks of `chunk` bytes, then an empty `PUT ?digest=` (end-5, end-6).
    pub(crate) async fn upload_chunked(&self, repo: &str, body: Bytes, digest: &str, chunk: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut location = self.start_upload(repo).await?;
        let mut offset = 0;
        while offset < body.len() {
            let end = (offset + chunk).min(body.len());
            location = self.patch(&location, body.slice(offset..end), offset).await?;
            offset = end;
        }
        let res = self
            .client
            .put(with_query(&self.url(&location), &format!("digest={digest}")))
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await?;
        anyhow::ensure!(res.status() == 201, "{}: finish chunked upload: {} {}", self.name, res.status(), res.text().await.unwrap_or_default());
        Ok(started.elapsed())
    }

    /// One `PATCH` of `chunk` at `offset`; returns the next `Location`.
    pub(crate) async fn patch(&self, location: &str, chunk: Bytes, offset: usize) -> anyhow::Result<String> {
        let len = chunk.len();
        let res = self
            .client
            .patch(self.url(location))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_RANGE, format!("{offset}-{}", offset + len - 1))
            .header(header::CONTENT_LENGTH, len)
            .body(chunk)
            .send()
            .await?;
        anyhow::ensure!(res.status() == 202, "{}: PATCH at {offset}: {} {}", self.name, res.status(), res.text().await.unwrap_or_default());
        location_of(&res)
    }

    /// `DELETE` of an upload session.
    pub(crate) async fn cancel_upload(&self, location: &str) -> anyhow::Result<()> {
        let res = self.client.delete(self.url(location)).send().await?;
        anyhow::ensure!(res.status().is_success(), "{}: cancel upload: {}", self.name, res.status());
        Ok(())
    }

    /// Downloads a blob, discarding the bytes; checks the length. Returns the time to the last byte.
    pub(crate) async fn download(&self, repo: &str, digest: &str, expected_len: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let res = self.client.get(self.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await?;
        anyhow::ensure!(res.status() == 200, "{}: GET blob: {}", self.name, res.status());
        let received = drain(res).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(received == expected_len, "{}: blob download gave {received} of {expected_len} bytes", self.name);
        Ok(elapsed)
    }

    /// Downloads a blob from where the registry redirects its GET (which must be a 307),
    /// discarding the bytes; checks the length. Returns the time from the first request to the
    /// last byte.
    pub(crate) async fn download_redirected(&self, repo: &str, digest: &str, expected_len: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let res = self.client.get(self.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await?;
        anyhow::ensure!(res.status() == 307, "{}: GET blob: {}, expected a 307", self.name, res.status());
        let location = location_of(&res)?;
        let res = self.client.get(&location).send().await?;
        anyhow::ensure!(res.status() == 200, "{}: GET of the presigned URL: {}", self.name, res.status());
        let received = drain(res).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(received == expected_len, "{}: redirected download gave {received} of {expected_len} bytes", self.name);
        Ok(elapsed)
    }

    /// Pushes a small blob (POST, then PUT with the bytes); returns its digest.
    pub(crate) async fn push_blob(&self, repo: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let digest = crate::content::sha256(bytes);
        self.upload_monolithic(repo, Bytes::copy_from_slice(bytes), &digest).await?;
        Ok(digest)
    }

    /// Pushes a manifest under `reference` (tag or digest); returns its digest.
    pub(crate) async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let res = self
            .client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        anyhow::ensure!(res.status() == 201, "{}: push manifest {repo}:{reference}: {} {}", self.name, res.status(), res.text().await.unwrap_or_default());
        Ok(crate::content::sha256(bytes))
    }

    /// Pushes an OCI image of `n_layers` layers of `layer_size` pseudo-random bytes (from `seed`)
    /// under `tag`; returns the manifest digest.
    pub(crate) async fn push_image(&self, repo: &str, tag: &str, n_layers: usize, layer_size: usize, seed: u64) -> anyhow::Result<String> {
        let mut layers = Vec::with_capacity(n_layers);
        for index in 0..n_layers {
            let layer = crate::content::random_bytes(layer_size, seed.wrapping_mul(1000).wrapping_add(index as u64));
            let digest = self.push_blob(repo, &layer).await?;
            layers.push(serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": layer.len() }));
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {}, "rootfs": { "type": "layers", "diff_ids": [] },
            "history": [{ "created_by": format!("portcullis-bench seed {seed}") }],
        }))?;
        let config_digest = self.push_blob(repo, &config).await?;
        let manifest = image_manifest(&config_digest, config.len(), layers)?;
        self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await
    }
}

/// Reads a response body to its end; returns its length.
async fn drain(res: reqwest::Response) -> anyhow::Result<u64> {
    let mut received = 0u64;
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk?.len() as u64;
    }
    Ok(received)
}

/// `url` with `query` appended (`?` or `&`).
fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') {
        format!("{url}&{query}")
    } else {
        format!("{url}?{query}")
    }
}

fn location_of(res: &reqwest::Response) -> anyhow::Result<String> {
    let value = res.headers().get(header::LOCATION).context("response has no Location")?;
    Ok(value.to_str().context("Location is not text")?.to_owned())
}
