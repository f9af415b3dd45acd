//! Start-up and serving: open the store and index, bind nothing itself (the caller hands over a
//! bound listener), terminate TLS (rustls, see `tls`) when configured, serve HTTP/1.1 and HTTP/2
//! with hyper behind the login-throttling tower layer, reload, shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::auth::{ApiService, Connection, LoginThrottleLayer};
use crate::config::{Config, StorageConfig};
use crate::metadata::Metadata;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// How long a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the janitor looks for abandoned upload sessions.
const JANITOR_PERIOD: Duration = Duration::from_secs(600);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the proxy caches are counted and held to their caps when nothing new is stored.
const CACHE_PERIOD: Duration = Duration::from_secs(600);
/// How long the cache keeper lets stores gather before a pass, so a pull's blobs make one pass.
const CACHE_SETTLE: Duration = Duration::from_secs(1);
/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The object store could not be opened.
    #[error("cannot open storage: {0}")]
    Storage(#[from] storage::BlobStoreError),
    /// The metadata index could not be opened.
    #[error("cannot open index: {0}")]
    Metadata(#[from] crate::metadata::MetadataError),
    /// Trust or the signing key could not be loaded.
    #[error("{0}")]
    Registry(#[from] crate::registry::ConfigureError),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The TLS certificate, key or client CA could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The configuration names S3, and this build has no S3 backend.
    #[error("storage.backend = \"s3\", but this build of portcullis has no S3 backend (it was built without the `s3` feature)")]
    NoS3Backend,
}

/// Why a reload was refused, or applied without the new certificate.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration could not be read or is invalid; the one in force stays.
    #[error(transparent)]
    Load(#[from] crate::config::ConfigError),
    /// The registry refused the configuration; the one in force stays.
    #[error(transparent)]
    Config(#[from] crate::registry::ConfigureError),
    /// The configuration is in force, but the certificate and key could not be read again.
    #[error("configuration reloaded, but the certificate was not: {0}")]
    Certificate(#[from] crate::tls::TlsError),
}

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The registry it serves.
    pub registry: Arc<Registry>,
    /// Reloads configuration and certificate (what SIGHUP does).
    pub reloader: Reloader,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// Applies a new configuration to a running server: policy, trust and access rules, and the TLS
/// certificate and key read again from their files.
#[derive(Clone)]
pub struct Reloader {
    registry: Arc<Registry>,
    certs: Option<Arc<crate::tls::CertStore>>,
}

impl Reloader {
    /// Applies `config`, or refuses it whole and keeps the one in force.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        self.reload_from(Ok(config)).map(|_| ())
    }

    /// Applies a configuration as loaded (SIGHUP), counting the outcome in
    /// `portcullis_config_reloads_total`; returns the revision now in force.
    pub fn reload_from(&self, loaded: Result<Config, crate::config::ConfigError>) -> Result<String, ReloadError> {
        let applied = loaded.map_err(ReloadError::from).and_then(|config| {
            let (tls, revision) = (config.tls.clone(), config.revision.clone());
            self.registry.reload(config)?;
            if let (Some(certs), Some(tls)) = (&self.certs, &tls) {
                certs.reload(tls)?;
            }
            Ok(revision)
        });
        let outcome = match &applied {
            Ok(_) | Err(ReloadError::Certificate(_)) => "applied",
            Err(_) => "refused",
        };
        self.registry.metrics.config_reloads.with_label_values(&[outcome]).inc();
        applied
    }
}

/// Opens the object store the configuration names.
pub async fn open_store(config: &Config) -> Result<Arc<dyn storage::BlobStore>, StartError> {
    let store: Arc<dyn storage::BlobStore> = match &config.storage {
        StorageConfig::Fs { root } => Arc::new(storage::FsBlobStore::open(root).await?),
        StorageConfig::S3(s3) => connect_s3(s3, false).await?,
    };
    Ok(store)
}

/// Opens the object store the configuration names without writing to it, for tools that only
/// read beside a running server (`fsck`, `audit verify`): no directory is created, no S3 probe
/// object written. It must not be written through.
pub async fn open_store_read_only(config: &Config) -> Result<Arc<dyn storage::BlobStore>, StartError> {
    let store: Arc<dyn storage::BlobStore> = match &config.storage {
        StorageConfig::Fs { root } => Arc::new(storage::FsBlobStore::open_existing(root).await?),
        StorageConfig::S3(s3) => connect_s3(s3, true).await?,
    };
    Ok(store)
}

/// The S3 backend: probed for conditional writes (or, `read_only`, not probed: the probe writes).
#[cfg(feature = "s3")]
async fn connect_s3(s3: &crate::config::S3Storage, read_only: bool) -> Result<Arc<dyn storage::BlobStore>, StartError> {
    let store = match read_only {
        false => storage::S3BlobStore::connect(s3.store.clone()).await?,
        true => storage::S3BlobStore::connect_read_only(s3.store.clone()).await?,
    };
    Ok(Arc::new(store))
}

/// A build without the `s3` feature (the fuzz targets) has the filesystem backend only.
#[cfg(not(feature = "s3"))]
async fn connect_s3(_: &crate::config::S3Storage, _: bool) -> Result<Arc<dyn storage::BlobStore>, StartError> {
    Err(StartError::NoS3Backend)
}

/// Opens storage and the index and builds the registry, without binding anything.
pub async fn open(config: Config) -> Result<Arc<Registry>, StartError> {
    let store = open_store(&config).await?;
    let metadata = Metadata::open(store, &config.index_dir)?;
    let registry = Registry::open(config, metadata, Arc::new(Metrics::new())).await?;
    Ok(Arc::new(registry))
}

/// Serves `registry` on `listener` until [`Running::shutdown`], with TLS when the configuration
/// has `[server.tls]`.
pub async fn start(registry: Arc<Registry>, listener: TcpListener) -> Result<Running, StartError> {
    let local_addr = listener.local_addr()?;
    let tls = registry.config().tls.as_ref().map(crate::tls::Tls::new).transpose()?;
    let reloader = Reloader { registry: registry.clone(), certs: tls.as_ref().map(crate::tls::Tls::certs) };
    let acceptor = tls.as_ref().map(|tls| tls.acceptor().clone());
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let background = vec![
        spawn_reindex_if_needed(registry.clone()),
        spawn_janitor(registry.clone()),
        spawn_cache_keeper(registry.clone()),
        tokio::spawn(crate::admission::drift::run(registry.clone())),
        tokio::spawn(crate::gc::schedule(registry.clone())),
        tokio::spawn(crate::scrub::schedule(registry.clone())),
    ];

    let serving = registry.clone();
    let server = tokio::spawn(async move {
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown_rx.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let registry = serving.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            // The handshake runs in the connection's task, so a slow client cannot stall accepts.
            tokio::spawn(async move {
                let Some(acceptor) = acceptor else {
                    let connection = Connection { peer, tls: false, client_cert: None };
                    return serve_connection(builder, watcher, stream, connection, registry).await;
                };
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        // With a client CA, rustls only completes the handshake when a presented
                        // certificate verified, so presence means verified.
                        let client_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|leaf| crate::tls::client_name(leaf).unwrap_or_default().into());
                        let connection = Connection { peer, tls: true, client_cert };
                        serve_connection(builder, watcher, stream, connection, registry).await;
                    }
                    Ok(Err(err)) => tracing::debug!(peer = %peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing anyway");
        }
    });
    Ok(Running { local_addr, registry, reloader, shutdown, server, background })
}

/// Serves HTTP/1.1 or HTTP/2 on one connection; every request carries its [`Connection`].
async fn serve_connection<I>(
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    connection: Connection,
    registry: Arc<Registry>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stack = tower::Layer::layer(&LoginThrottleLayer::new(registry.clone()), ApiService::new(registry));
    let stack = hyper_util::service::TowerToHyperService::new(stack);
    let peer = connection.peer;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(connection.clone());
        hyper::service::Service::call(&stack, req)
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    if let Err(err) = watcher.watch(conn).await {
        tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
    }
}

impl Running {
    /// Stops accepting, waits for requests in flight, stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
    }
}

fn spawn_reindex_if_needed(registry: Arc<Registry>) -> JoinHandle<()> {
    tokio::spawn(async move {
        match registry.index_complete() {
            Ok(true) => return,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the index state; rebuilding it"),
        }
        match registry.reindex().await {
            Ok(n_manifests) => tracing::info!(n_manifests, "index rebuilt from the store"),
            Err(err) => tracing::error!(error = %err, "index rebuild failed; it is retried at the next start"),
        }
    })
}

/// Counts the proxy caches at start, then holds them to their size caps whenever content from an
/// upstream was stored (and every [`CACHE_PERIOD`]).
fn spawn_cache_keeper(registry: Arc<Registry>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(err) = registry.enforce_cache_caps().await {
                tracing::warn!(error = %err, "proxy cache pass failed");
            }
            tokio::select! {
                _ = registry.proxied_content_stored() => tokio::time::sleep(CACHE_SETTLE).await,
                _ = tokio::time::sleep(CACHE_PERIOD) => {}
            }
        }
    })
}

fn spawn_janitor(registry: Arc<Registry>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(JANITOR_PERIOD);
        loop {
            ticks.tick().await;
            match registry.expire_uploads().await {
                Ok(0) => {}
                Ok(n_expired) => tracing::info!(n_expired, "removed abandoned upload sessions"),
                Err(err) => tracing::warn!(error = %err, "upload janitor failed"),
            }
        }
    })
}
