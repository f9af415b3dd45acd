//! The one test harness: a real portcullis server in-process on an ephemeral loopback port, with
//! its data in a temp dir, and small helpers to talk to it over real HTTP.
//!
//! The store is a directory in the temp dir, or with `PORTCULLIS_TEST_BACKEND=s3` a fresh bucket
//! on the S3 server of the `PORTCULLIS_TEST_S3_*` variables (see [`s3`]); the index stays in the
//! temp dir either way. Tests that look at what is stored do so through the store
//! ([`TestRegistry::stored_keys`] and friends), so that they hold on both backends.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of the harness

pub mod clients;
pub mod cosign;
pub mod daemons;
pub mod distribution;
pub mod fault_proxy;
pub mod images;
pub mod pki;
pub mod s3;
pub mod sigstore;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis::config::{Config, StorageConfig};
use sha2::Digest as _;

/// A running registry and the temp dir holding its data. Dereferences to its [`RegistryClient`].
pub struct TestRegistry {
    /// HTTP access to it.
    pub api: RegistryClient,
    /// `127.0.0.1:PORT`
    pub host: String,
    /// The data directory: the index, and the store on the filesystem backend.
    pub data_dir: PathBuf,
    /// The configuration it runs with.
    pub config: Config,
    running: Option<portcullis::server::Running>,
    /// The harness's own handle on the store, opened when first asked for.
    store: tokio::sync::OnceCell<Arc<dyn storage::BlobStore>>,
    dir: tempfile::TempDir,
}

/// Plain HTTP access to a registry (in-process or a child process).
#[derive(Clone)]
pub struct RegistryClient {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    pub client: reqwest::Client,
}

impl std::ops::Deref for TestRegistry {
    type Target = RegistryClient;

    fn deref(&self) -> &RegistryClient {
        &self.api
    }
}

impl TestRegistry {
    /// The embedded default configuration with data in a temp dir.
    pub async fn start() -> TestRegistry {
        TestRegistry::with_config(|_| {}).await
    }

    /// The embedded default on the run's backend, edited by `edit` (which may choose the storage).
    pub async fn with_config(edit: impl FnOnce(&mut Config)) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::embedded_default(dir.path());
        config.storage = run_storage(config.storage).await;
        edit(&mut config);
        TestRegistry::launch(config, dir).await
    }

    /// A registry running the TOML configuration `text`, with its data in a temp dir. A text that
    /// names no backend runs on the run's backend.
    pub async fn with_config_text(text: &str) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let overrides = portcullis::config::Overrides { data_dir: Some(dir.path().to_owned()), ..Default::default() };
        let mut config = Config::parse(text, "test config", &overrides).expect("valid test config");
        config.storage = run_storage(config.storage).await;
        TestRegistry::launch(config, dir).await
    }

    async fn launch(config: Config, dir: tempfile::TempDir) -> TestRegistry {
        // Bind first and hand the bound listener over: no port race, no sleep.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let registry = portcullis::server::open(config.clone()).await.expect("open registry");
        let running = portcullis::server::start(registry, listener).await.expect("start server");
        let host = running.local_addr.to_string();
        // With `[server.tls]` the base URL is https; its client must then trust the test CA
        // (`RegistryClient::with_client`).
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        TestRegistry {
            api: RegistryClient::new(&format!("{scheme}://{host}")),
            host,
            data_dir: dir.path().to_owned(),
            config,
            running: Some(running),
            store: tokio::sync::OnceCell::new(),
            dir,
        }
    }

    /// Stops the server (waiting for it to release the index) and starts it again on the same data.
    pub async fn restart(mut self) -> TestRegistry {
        self.stop().await;
        let TestRegistry { config, dir, .. } = self;
        TestRegistry::launch(config, dir).await
    }

    /// Stops the server; the data stays.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Applies a new configuration to the running server, as SIGHUP does.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        self.running.as_ref().expect("server running").reloader.reload(config).map_err(|err| err.to_string())
    }

    /// A client for this registry that uses `client` (e.g. one trusting the test CA).
    pub fn with_client(&self, client: reqwest::Client) -> RegistryClient {
        RegistryClient { base_url: self.api.base_url.clone(), client }
    }

    /// The running registry (for what has no HTTP API, such as the upload janitor).
    pub fn registry(&self) -> &Arc<portcullis::registry::Registry> {
        &self.running.as_ref().expect("the registry is running").registry
    }

    /// The object store the registry runs on, opened by the harness from the same configuration
    /// (the registry hands out no store: everything in it is behind its methods).
    pub async fn store(&self) -> Arc<dyn storage::BlobStore> {
        let open = || async { portcullis::server::open_store(&self.config).await.expect("open the store") };
        self.store.get_or_init(open).await.clone()
    }

    /// Every key in the store below `prefix` (empty, or ending in `/`), relative to it, in order:
    /// what the registry stored, on either backend. Staged uploads are not keys.
    pub async fn stored_keys(&self, prefix: &str) -> Vec<String> {
        let store = self.store().await;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let page = store.list(prefix, keys.last().map(String::as_str), 1000, false).await.expect("list the store");
            keys.extend(page.entries);
            if !page.truncated {
                return keys;
            }
        }
    }

    /// Whether the store holds an object under `key`.
    pub async fn has_object(&self, key: &str) -> bool {
        self.store().await.stat(key).await.expect("stat in the store").is_some()
    }

    /// The ids of the staged uploads the store holds (bytes of open or abandoned sessions).
    pub async fn staged_uploads(&self) -> Vec<String> {
        let mut ids = self.store().await.stale_stages(Duration::ZERO).await.expect("list staged uploads");
        ids.sort();
        ids
    }
}

/// The storage of a test registry: on the S3 backend (`PORTCULLIS_TEST_BACKEND=s3`) a fresh
/// bucket in place of the filesystem default; a configuration that chose S3 itself keeps it.
async fn run_storage(configured: StorageConfig) -> StorageConfig {
    match (s3::backend(), configured) {
        (s3::Backend::S3, StorageConfig::Fs { .. }) => StorageConfig::S3(s3::fresh_storage(&s3::TestS3::required()).await),
        (_, configured) => configured,
    }
}

/// The store key of a blob's bytes: `blobs/sha256/<2 hex>/<hex>`.
pub fn blob_key(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    format!("blobs/sha256/{}/{hex}", &hex[..2])
}

impl RegistryClient {
    /// A client for the registry at `base_url`; it does not follow redirects.
    pub fn new(base_url: &str) -> RegistryClient {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        RegistryClient { base_url: base_url.to_owned(), client }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Pushes a blob monolithically; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let res = self
            .client
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("push blob");
        assert_eq!(res.status(), 201, "push blob: {}", res.text().await.unwrap_or_default());
        digest
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("put manifest")
    }

    /// Pushes a tiny OCI image (config + one layer, content from `seed`) under `tag`; returns
    /// the manifest digest and bytes.
    pub async fn push_tiny_image(&self, repo: &str, tag: &str, seed: &str) -> (String, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer of {seed}");
        let config_digest = self.push_blob(repo, config.as_bytes()).await;
        let layer_digest = self.push_blob(repo, layer.as_bytes()).await;
        let manifest = tiny_manifest(&config_digest, config.len(), &layer_digest, layer.len(), None);
        let res = self.put_manifest(repo, tag, OCI_MANIFEST, manifest.as_bytes()).await;
        assert_eq!(res.status(), 201, "push manifest: {}", res.text().await.unwrap_or_default());
        (sha256(manifest.as_bytes()), manifest.into_bytes())
    }

    /// Opens an upload session and checks the spec's answer (202, `Range: 0-0`, the session id in
    /// `Docker-Upload-UUID`); returns its `Location` as a path.
    pub async fn start_upload(&self, repo: &str) -> String {
        let res = self.client.post(self.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.expect("POST upload");
        assert_eq!(res.status(), 202, "POST upload: {}", res.text().await.unwrap_or_default());
        let location = self.location_path(&res);
        assert!(location.starts_with(&format!("/v2/{repo}/blobs/uploads/")), "{location}");
        let header = |name: &str| res.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_owned());
        assert_eq!(header("range").as_deref(), Some("0-0"));
        assert_eq!(header("content-length").as_deref(), Some("0"));
        assert_eq!(header("docker-upload-uuid").as_deref(), location.rsplit('/').next());
        assert_eq!(header("docker-distribution-api-version").as_deref(), Some("registry/2.0"));
        location
    }

    /// PATCHes `chunk` at `offset` of the upload at `location`; returns the next `Location`.
    pub async fn patch_chunk(&self, location: &str, offset: u64, chunk: Vec<u8>) -> String {
        let end = offset + chunk.len() as u64 - 1;
        let res = self
            .client
            .patch(self.url(location))
            .header("content-range", format!("{offset}-{end}"))
            .body(chunk)
            .send()
            .await
            .expect("PATCH");
        assert_eq!(res.status(), 202, "PATCH {offset}-{end}: {}", res.text().await.unwrap_or_default());
        self.location_path(&res)
    }

    /// Finishes the upload at `location` with `PUT ?digest=` carrying `last_chunk`, and checks the
    /// 201 with the blob's `Location` and `Docker-Content-Digest`.
    pub async fn finish_upload(&self, repo: &str, location: &str, digest: &str, last_chunk: Vec<u8>) {
        let url = self.url(&with_query(location, &format!("digest={digest}")));
        let res = self.client.put(url).body(last_chunk).send().await.expect("PUT ?digest=");
        assert_eq!(res.status(), 201, "PUT ?digest=: {}", res.text().await.unwrap_or_default());
        assert_eq!(self.location_path(&res), format!("/v2/{repo}/blobs/{digest}"));
        assert_eq!(res.headers()["docker-content-digest"], digest);
    }

    /// Pushes `data` in chunks of `chunk_size` (POST, PATCHes, PUT); returns its digest.
    pub async fn push_chunked(&self, repo: &str, data: &[u8], chunk_size: usize) -> String {
        let digest = sha256(data);
        let mut location = self.start_upload(repo).await;
        for (n, chunk) in data.chunks(chunk_size).enumerate() {
            location = self.patch_chunk(&location, (n * chunk_size) as u64, chunk.to_vec()).await;
        }
        self.finish_upload(repo, &location, &digest, Vec::new()).await;
        digest
    }

    /// The `Location` of a response, as a path on this registry (absolute and relative forms).
    pub fn location_path(&self, res: &reqwest::Response) -> String {
        let location = res.headers()["location"].to_str().expect("ASCII Location");
        location.strip_prefix(&self.base_url).unwrap_or(location).to_owned()
    }

    /// Pushes `n` different tiny images (untagged, sharing one layer) to `repo`; returns their
    /// manifests.
    pub async fn push_distinct_manifests(&self, repo: &str, n: usize) -> Vec<Vec<u8>> {
        let layer_digest = self.push_blob(repo, b"shared layer").await;
        let mut manifests = Vec::new();
        for i in 0..n {
            let config = format!(r#"{{"seed":{i}}}"#);
            let config_digest = self.push_blob(repo, config.as_bytes()).await;
            let manifest = tiny_manifest(&config_digest, config.len(), &layer_digest, 12, None);
            let res = self.put_manifest(repo, &sha256(manifest.as_bytes()), OCI_MANIFEST, manifest.as_bytes()).await;
            assert_eq!(res.status(), 201);
            manifests.push(manifest.into_bytes());
        }
        manifests
    }
}

/// `location` with one more query parameter.
pub fn with_query(location: &str, param: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{param}")
}

/// The built `portcullis` binary, ready for arguments and environment.
pub fn portcullis_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.env_remove("RUST_BACKTRACE");
    command
}

/// Runs the built binary with `args` and waits for it.
pub fn portcullis(args: &[&str]) -> std::process::Output {
    portcullis_command().args(args).output().expect("run portcullis")
}

/// [`portcullis`] from async code: waits on the blocking pool, so the in-process server it talks
/// to keeps running.
pub async fn portcullis_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || portcullis_command().args(args).output().expect("run portcullis")).await.expect("join")
}

/// A `portcullis serve` child process on an ephemeral port, for tests where separate processes
/// matter (two nodes on one store, signals, the CLI). Killed on drop.
pub struct ServerProcess {
    pub process: std::process::Child,
    pub base_url: String,
}

impl ServerProcess {
    /// Starts `portcullis serve --listen 127.0.0.1:0 --config <config_path>`.
    pub fn spawn(config_path: &std::path::Path) -> ServerProcess {
        ServerProcess::spawn_with(&["--config", config_path.to_str().expect("UTF-8 path")])
    }

    /// Starts `portcullis serve --listen 127.0.0.1:0 <args>` and waits for its listen line.
    pub fn spawn_with(args: &[&str]) -> ServerProcess {
        ServerProcess::spawn_in(std::path::Path::new("."), args)
    }

    /// Like [`ServerProcess::spawn_with`], in working directory `dir` (where the embedded
    /// default finds `trust/cosign.pub`).
    pub fn spawn_in(dir: &std::path::Path, args: &[&str]) -> ServerProcess {
        ServerProcess::start(dir, args, std::process::Stdio::null())
    }

    /// Like [`ServerProcess::spawn_with`], with the server's log (its stderr) written to `log`, at
    /// the default level and without `NO_COLOR`, as an operator's redirect would.
    pub fn spawn_logging_to(log: std::fs::File, args: &[&str]) -> ServerProcess {
        ServerProcess::start(std::path::Path::new("."), args, log.into())
    }

    /// Like [`ServerProcess::spawn_with`], with the variable `name` set to `value` in its
    /// environment (how secrets reach a server without a file).
    pub fn spawn_with_env(args: &[&str], name: &str, value: &str) -> ServerProcess {
        ServerProcess::start_with(portcullis_command().env(name, value), std::path::Path::new("."), args, std::process::Stdio::null())
    }

    fn start(dir: &std::path::Path, args: &[&str], stderr: std::process::Stdio) -> ServerProcess {
        ServerProcess::start_with(&mut portcullis_command(), dir, args, stderr)
    }

    fn start_with(command: &mut std::process::Command, dir: &std::path::Path, args: &[&str], stderr: std::process::Stdio) -> ServerProcess {
        use std::io::BufRead;
        let mut process = command
            .current_dir(dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start portcullis");
        // The first stdout line says where it listens.
        let mut line = String::new();
        std::io::BufReader::new(process.stdout.take().expect("piped stdout")).read_line(&mut line).expect("read listen line");
        let base_url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no listen line: {line:?}"))
            .to_owned();
        ServerProcess { process, base_url }
    }

    /// Sends `signal` (e.g. "TERM", "HUP") to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.process.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An OCI image manifest for one config and one layer, with an optional subject descriptor.
pub fn tiny_manifest(config: &str, config_size: usize, layer: &str, layer_size: usize, subject: Option<(&str, usize)>) -> String {
    let subject = subject
        .map(|(digest, size)| format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{digest}","size":{size}}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":{layer_size}}}]{subject}}}"#
    )
}

/// The OCI error code of a response body.
pub async fn error_code(res: reqwest::Response) -> String {
    let body: serde_json::Value = res.json().await.expect("error body is JSON");
    body["errors"][0]["code"].as_str().expect("errors[0].code").to_owned()
}
