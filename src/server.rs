//! Start-up and serving: open the store and index, bind nothing itself (the caller hands over a
//! bound listener), serve HTTP/1.1 and HTTP/2 with hyper, shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    Registry(String),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// A running server.
pub struct Running {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// The registry it serves.
    pub registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

/// Opens the object store the configuration names.
pub async fn open_store(config: &Config) -> Result<Arc<dyn storage::BlobStore>, StartError> {
    let store: Arc<dyn storage::BlobStore> = match &config.storage {
        StorageConfig::Fs { root } => Arc::new(storage::FsBlobStore::open(root).await?),
        StorageConfig::S3(s3) => {
            let settings = storage::S3Config {
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                prefix: s3.prefix.clone(),
                force_path_style: s3.force_path_style,
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.clone(),
                part_size: s3.part_size_mib << 20,
                single_writer: s3.single_writer,
                checksum_when_required: s3.checksum_when_required,
                timeout: Duration::from_secs(s3.timeout_secs),
                max_retries: s3.max_retries,
            };
            Arc::new(storage::S3BlobStore::connect(settings).await?)
        }
    };
    Ok(store)
}

/// Opens storage and the index and builds the registry, without binding anything.
pub async fn open(config: Config) -> Result<Arc<Registry>, StartError> {
    let store = open_store(&config).await?;
    let metadata = Metadata::open(store, &config.index_dir)?;
    let registry = Registry::open(config, metadata, Arc::new(Metrics::new())).await.map_err(StartError::Registry)?;
    Ok(Arc::new(registry))
}

/// Serves `registry` on `listener` until [`Running::shutdown`].
pub async fn start(registry: Arc<Registry>, listener: TcpListener) -> Result<Running, StartError> {
    let local_addr = listener.local_addr()?;
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let background = vec![spawn_reindex_if_needed(registry.clone()), spawn_janitor(registry.clone())];

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
            let service = hyper::service::service_fn(move |req| crate::api::handle(registry.clone(), req));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing anyway");
        }
    });
    Ok(Running { local_addr, registry, shutdown, server, background })
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
        match registry.metadata.index_complete() {
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
