//! A TCP proxy on 127.0.0.1 that can be cut, put between a registry and what it talks to (an S3
//! server, an upstream registry): "the server stops" is the proxy dropping every connection and
//! every new one, while the server keeps its data, as a network partition or a restarting load
//! balancer would. It can cut itself: after a number of bytes sent upstream or back, or when a
//! byte pattern passes upstream (the bytes that trigger the cut are not forwarded). It forwards
//! to a TCP address or a unix socket (so a server that cannot be handed a bound port, such as
//! Distribution, listens on a socket and the proxy gives it a port without a race). It counts the
//! connections it accepted, cut or not. At most [`MAX_CONNECTIONS`] connections at once, each with two fixed
//! buffers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the proxy forwards to.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: tokio::task::JoinHandle<()>,
}

const MAX_CONNECTIONS: usize = 64;
const PROXY_BUFFER: usize = 64 << 10;

struct ProxyShared {
    target: Target,
    up: AtomicBool,
    /// Bumped by every cut; connections end when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    /// Bytes forwarded upstream so far.
    forwarded: AtomicU64,
    /// Bytes forwarded back so far.
    returned: AtomicU64,
    /// Connections accepted (and, while cut, closed at once).
    accepted: AtomicU64,
    trigger: Mutex<Option<Trigger>>,
    connections: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Clone)]
enum Trigger {
    /// Cut when the bytes forwarded upstream would exceed this total.
    AfterBytes(u64),
    /// Cut when the bytes forwarded back would exceed this total.
    AfterBytesBack(u64),
    /// Cut when this pattern passes upstream.
    Pattern(&'static [u8]),
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        FaultProxy::to(Target::Tcp(upstream)).await
    }

    pub async fn to(target: Target) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(ProxyShared {
            target,
            up: AtomicBool::new(true),
            cuts: tokio::sync::watch::Sender::new(0),
            forwarded: AtomicU64::new(0),
            returned: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            trigger: Mutex::new(None),
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                accepting.accepted.fetch_add(1, Ordering::SeqCst);
                if !accepting.up.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(permit) = accepting.connections.clone().try_acquire_owned() else { continue };
                tokio::spawn(relay(accepting.clone(), socket, permit));
            }
        });
        FaultProxy { addr, shared, accept }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, cut or not: how often something tried to get through.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        *self.shared.trigger.lock().expect("trigger lock") = None;
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Cuts now: open connections are dropped, new ones closed.
    pub fn cut_now(&self) {
        self.shared.cut();
    }

    /// Cuts once `bytes` more have gone upstream.
    pub fn cut_after_bytes(&self, bytes: u64) {
        let at = self.shared.forwarded.load(Ordering::SeqCst) + bytes;
        *self.shared.trigger.lock().expect("trigger lock") = Some(Trigger::AfterBytes(at));
    }

    /// Cuts once `bytes` more have come back from upstream.
    pub fn cut_after_bytes_back(&self, bytes: u64) {
        let at = self.shared.returned.load(Ordering::SeqCst) + bytes;
        *self.shared.trigger.lock().expect("trigger lock") = Some(Trigger::AfterBytesBack(at));
    }

    /// Cuts when `pattern` goes upstream.
    pub fn cut_on(&self, pattern: &'static [u8]) {
        *self.shared.trigger.lock().expect("trigger lock") = Some(Trigger::Pattern(pattern));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.cut();
    }
}

impl ProxyShared {
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Whether `chunk`, about to go upstream after `seen` (the connection's last bytes), trips
    /// the trigger; counts it as forwarded when not.
    fn trips(&self, seen: &[u8], chunk: &[u8]) -> bool {
        let trigger = self.trigger.lock().expect("trigger lock").clone();
        let tripped = match trigger {
            None | Some(Trigger::AfterBytesBack(_)) => false,
            Some(Trigger::AfterBytes(at)) => self.forwarded.load(Ordering::SeqCst) + chunk.len() as u64 > at,
            Some(Trigger::Pattern(pattern)) => {
                let mut window = seen.to_vec();
                window.extend_from_slice(chunk);
                window.windows(pattern.len()).any(|candidate| candidate == pattern)
            }
        };
        if !tripped {
            self.forwarded.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        tripped
    }

    /// How much of `n` bytes coming back may pass before a cut (all of them when no cut is due).
    fn passes_back(&self, n: usize) -> usize {
        let trigger = self.trigger.lock().expect("trigger lock").clone();
        let returned = self.returned.load(Ordering::SeqCst);
        let allowed = match trigger {
            Some(Trigger::AfterBytesBack(at)) => (at.saturating_sub(returned) as usize).min(n),
            _ => n,
        };
        self.returned.fetch_add(allowed as u64, Ordering::SeqCst);
        allowed
    }
}

/// Relays one connection until either side closes it or the proxy is cut.
async fn relay(shared: Arc<ProxyShared>, client: tokio::net::TcpStream, _permit: tokio::sync::OwnedSemaphorePermit) {
    let mut cuts = shared.cuts.subscribe();
    // A cut between the accept and the subscription above would go unnoticed otherwise.
    if !shared.up.load(Ordering::SeqCst) {
        return;
    }
    let connect = async {
        match &shared.target {
            Target::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.map(|s| {
                let (read, write) = s.into_split();
                (Box::new(read) as Box<dyn AsyncRead + Send + Unpin>, Box::new(write) as Box<dyn AsyncWrite + Send + Unpin>)
            }),
            Target::Unix(path) => tokio::net::UnixStream::connect(path).await.map(|s| {
                let (read, write) = s.into_split();
                (Box::new(read) as Box<dyn AsyncRead + Send + Unpin>, Box::new(write) as Box<dyn AsyncWrite + Send + Unpin>)
            }),
        }
    };
    let Ok(Ok((mut server_read, mut server_write))) = tokio::time::timeout(Duration::from_secs(5), connect).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let upward = async {
        let mut buffer = vec![0u8; PROXY_BUFFER];
        // The last bytes sent, so that a pattern split between two reads is still found.
        let mut seen: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if shared.trips(&seen, &buffer[..n]) {
                shared.cut();
                break;
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            seen = buffer[n.saturating_sub(64)..n].to_vec();
        }
        let _ = server_write.shutdown().await;
    };
    let downward = async {
        let mut buffer = vec![0u8; PROXY_BUFFER];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let allowed = shared.passes_back(n);
            if allowed > 0 && client_write.write_all(&buffer[..allowed]).await.is_err() {
                break;
            }
            if allowed < n {
                let _ = client_write.flush().await;
                shared.cut();
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(upward, downward) } => {}
        _ = cuts.changed() => {}
    }
}
