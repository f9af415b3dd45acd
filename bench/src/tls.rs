//! TLS rows (issue #20 goal 3, group `tls`): portcullis with its rustls listener and Distribution
//! with its own TLS (`http.tls`), each a second server of the run beside the plain one, over
//! HTTP/1.1 and HTTP/2 (ALPN; every connection is checked to have the protocol asked for): the
//! manifest load at c=64 (`load.rs` over TLS), a 1 GiB monolithic upload and its download
//! (reqwest with rustls). The same rows on the plain servers give what TLS costs each.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls_pki_types::pem::PemObject as _;

use crate::load::{self, Transport};
use crate::registry::{Registry, MANIFEST_ACCEPT};
use crate::results::{Better, Ceiling, RunResults};

/// Concurrency of the manifest load.
const LOAD: usize = 64;

/// One server of the group: the plain one, and its TLS twin with the CA that signed its
/// certificate.
pub(crate) struct Pair<'a> {
    pub(crate) plain: &'a Registry,
    pub(crate) tls: &'a Registry,
}

/// The TLS twin of `name` at `url` (`https://127.0.0.1:PORT`), its certificate signed by the CA
/// in `ca_file`.
pub(crate) fn twin(name: &'static str, url: &str, pid: u32, ca_file: &Path) -> anyhow::Result<Registry> {
    Registry::with_client(name, url, pid, https_client(ca_file, Protocol::Http1)?)
}

/// Measures every row over plain HTTP, TLS with HTTP/1.1 and TLS with HTTP/2 on each pair.
pub(crate) async fn workloads(blob: usize, warmup: Duration, window: Duration, run: u32, ca_file: &Path, pairs: &[Pair<'_>], results: &mut RunResults) -> anyhow::Result<()> {
    let seed = crate::gates::seed(run, 90, 0);
    let size = crate::workloads::human(blob);
    for pair in pairs {
        let name = pair.plain.name;
        for registry in [pair.plain, pair.tls] {
            registry.push_image("bench/tls", "v1", 5, 1024, seed).await?;
        }
        let spec = load::Spec { method: http::Method::GET, path: "/v2/bench/tls/manifests/v1".to_owned(), accept: MANIFEST_ACCEPT.to_owned() };
        let ways = [(None, "plain HTTP/1.1"), (Some(Protocol::Http1), "TLS, HTTP/1.1"), (Some(Protocol::Http2), "TLS, HTTP/2")];
        for (index, (protocol, words)) in ways.into_iter().enumerate() {
            let key = protocol.map_or("plain", Protocol::key);
            let (registry, transport) = match protocol {
                None => (pair.plain.clone(), Transport::Plain),
                Some(protocol) => {
                    let client = https_client(ca_file, protocol)?;
                    let registry = Registry::with_client(name, &pair.tls.base_url, pair.tls.pid, client)?;
                    check_version(&registry, protocol).await?;
                    (registry, Transport::Tls(Arc::new(tls_config(ca_file, protocol)?)))
                }
            };
            crate::workloads::progress(run, &format!("tls: {name}: manifest GET at c={LOAD}, {words}"));
            let outcome = load::run_over(registry.addr, &transport, &spec, LOAD, warmup, window).await?;
            results.record(&format!("tls_manifest_{key}_rps"), &format!("manifest GET by tag, c={LOAD}, {words} (req/s)"), Better::Higher, name, outcome.requests_per_s);

            crate::workloads::progress(run, &format!("tls: {name}: upload and download {size}, {words}"));
            let data = crate::content::random_bytes(blob, crate::gates::seed(run, 91, index));
            let digest = crate::content::sha256(&data);
            let elapsed = registry.upload_monolithic("bench/tls", data, &digest).await?;
            results.record(&format!("tls_upload_{key}"), &format!("blob upload, {size} monolithic, {words} (MiB/s)"), Better::Higher, name, crate::workloads::mib_per_s(blob, elapsed));
            let cpu_before = crate::cpu::seconds(registry.pid)?;
            let elapsed = registry.download("bench/tls", &digest, blob as u64).await?;
            let cpu = crate::cpu::seconds(registry.pid)? - cpu_before;
            results.record(&format!("tls_download_{key}"), &format!("blob download, {size}, {words} (MiB/s)"), Better::Higher, name, crate::workloads::mib_per_s(blob, elapsed));
            let gib = blob as f64 / f64::from(1 << 30);
            results.record(&format!("tls_download_{key}_cpu"), &format!("blob download, {size}, {words}: server CPU (s/GiB)"), Better::Lower, name, cpu / gib);
        }
        for protocol in [Protocol::Http1, Protocol::Http2] {
            let key = protocol.key();
            let share = results.value(&format!("tls_download_{key}"), name).unwrap_or(f64::NAN) / results.value("tls_download_plain", name).unwrap_or(f64::NAN);
            let label = format!("blob download, {size}: TLS {} / plain", protocol.words());
            results.record(&format!("tls_download_share_{key}"), &label, Better::Higher, name, share);
        }
    }
    Ok(())
}

/// What rustls itself moves through loopback: `data` from a writer to a reader that discards it,
/// TLS at both ends with the bench certificate (as the servers negotiate it: TLS 1.3, the same
/// cipher suite), each end on a thread of its own. The bound of any download over TLS here.
pub(crate) fn loopback_ceiling(data: &[u8], tls_dir: &Path) -> anyhow::Result<Ceiling> {
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(tls_dir.join("server.crt"))?.collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(tls_dir.join("server.key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_no_client_auth().with_single_cert(certs, key)?;
    // The writer never reads: a session ticket left unread in its socket would turn its close
    // into a reset, which the reader would see before the last bytes.
    server_config.send_tls13_tickets = 0;
    let server_config = Arc::new(server_config);
    let client_config = Arc::new(tls_config(&tls_dir.join("ca.crt"), Protocol::Http1)?);
    let server = move |tcp| -> std::io::Result<_> {
        let connection = rustls::ServerConnection::new(server_config).map_err(std::io::Error::other)?;
        Ok(rustls::StreamOwned::new(connection, tcp))
    };
    let client = |tcp| -> std::io::Result<_> {
        let name = rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let connection = rustls::ClientConnection::new(client_config, name).map_err(std::io::Error::other)?;
        Ok(ClosingWriter(rustls::StreamOwned::new(connection, tcp)))
    };
    let elapsed = crate::ceilings::loopback_copy_through(data, server, client)?;
    let mib_per_s = data.len() as f64 / f64::from(1 << 20) / elapsed.as_secs_f64();
    Ok(Ceiling { key: "loopback_tls".to_owned(), label: "loopback TLS copy (rustls at both ends, 1 MiB writes)".to_owned(), mib_per_s })
}

/// A TLS client stream whose `flush` also ends the session (`close_notify`), so the reader sees
/// a clean end.
struct ClosingWriter(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>);

impl std::io::Write for ClosingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.conn.send_close_notify();
        self.0.flush()
    }
}

/// The protocol asked for by ALPN.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    fn key(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }

    fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => b"http/1.1",
            Protocol::Http2 => b"h2",
        }
    }
}

/// A rustls client configuration trusting the CA in `ca_file`, offering only `protocol`.
fn tls_config(ca_file: &Path, protocol: Protocol) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file).with_context(|| format!("read {}", ca_file.display()))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![protocol.alpn().to_vec()];
    Ok(config)
}

/// A reqwest client over [`tls_config`].
fn https_client(ca_file: &Path, protocol: Protocol) -> anyhow::Result<reqwest::Client> {
    let builder = Registry::client_builder().use_preconfigured_tls(tls_config(ca_file, protocol)?);
    Ok(match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder,
    }
    .build()?)
}

/// Checks that `registry`'s client speaks `protocol` with it.
async fn check_version(registry: &Registry, protocol: Protocol) -> anyhow::Result<()> {
    let res = registry.client().get(registry.url("/v2/")).send().await?;
    let expected = match protocol {
        Protocol::Http1 => http::Version::HTTP_11,
        Protocol::Http2 => http::Version::HTTP_2,
    };
    anyhow::ensure!(res.version() == expected, "{}: GET /v2/ over {:?}, expected {expected:?}", registry.name, res.version());
    Ok(())
}
