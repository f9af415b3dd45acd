//! TLS for the listener with rustls: certificate and key from PEM files, TLS 1.2 and 1.3 only,
//! HTTP/2 and HTTP/1.1 by ALPN, the certificate swapped in place on reload (SIGHUP) without
//! dropping connections, and optional client-certificate verification against a configured CA.
//!
//! Knows no HTTP: `server` accepts connections through [`Tls::acceptor`] and tells the request
//! path whether the client presented a verified certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[server.tls]`, validated: the files exist and parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates.
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
    /// Path prefixes that need a verified client certificate (`/admission/` by default).
    pub client_cert_paths: Vec<String>,
}

/// Whether the TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Never asked for.
    None,
    /// Asked for and verified when presented; paths in `client_cert_paths` require one.
    Optional,
    /// Every connection must present a valid client certificate.
    Required,
}

/// Why the listener's TLS could not be set up from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be opened.
    #[error("cannot read certificate {}: {source}", .path.display())]
    ReadCertificate { path: PathBuf, source: rustls_pki_types::pem::Error },
    /// The certificate file is not a PEM chain.
    #[error("certificate {}: {source}", .path.display())]
    Certificate { path: PathBuf, source: rustls_pki_types::pem::Error },
    /// The certificate file holds no certificate.
    #[error("{} holds no certificate", .path.display())]
    NoCertificate { path: PathBuf },
    /// The key file cannot be read or holds no private key.
    #[error("private key {}: {source}", .path.display())]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    /// The key does not fit the certificate, or is of a kind rustls cannot use.
    #[error("certificate {} and key {}: {source}", .cert.display(), .key.display())]
    Pair { cert: PathBuf, key: PathBuf, source: rustls::Error },
    /// The protocol versions are not supported by the crypto provider.
    #[error("{0}")]
    Protocol(#[source] rustls::Error),
    /// The client CA file cannot be opened.
    #[error("cannot read client CA {}: {source}", .path.display())]
    ReadClientCa { path: PathBuf, source: rustls_pki_types::pem::Error },
    /// The client CA file holds something that is not a usable CA certificate.
    #[error("client CA {}: {source}", .path.display())]
    ClientCa { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
}

/// The TLS side of the listener.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Arc<CertStore>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// The current certificate and key, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    current: arc_swap::ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl TlsConfig {
    /// Whether requests to `path` need a verified client certificate.
    pub fn needs_client_cert(&self, path: &str) -> bool {
        self.client_cert_paths.iter().any(|prefix| path.starts_with(prefix.as_str()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificate chain and key, and checks that they belong together.
fn load_certified_key(config: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let path = || config.cert.clone();
    let certs = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|source| TlsError::ReadCertificate { path: path(), source })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certificate { path: path(), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path() });
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|source| TlsError::Key { path: config.key.clone(), source })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|source| TlsError::Pair { cert: path(), key: config.key.clone(), source })
}

/// The roots of the client CA file.
fn client_roots(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let invalid = |source: Box<dyn std::error::Error + Send + Sync>| TlsError::ClientCa { path: ca.to_owned(), source };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|source| TlsError::ReadClientCa { path: ca.to_owned(), source })? {
        let cert = cert.map_err(|err| invalid(err.into()))?;
        roots.add(cert).map_err(|err| invalid(err.into()))?;
    }
    Ok(roots)
}

/// A rustls server configuration for `config`, and the store its certificate comes from.
fn build(config: &TlsConfig) -> Result<(rustls::ServerConfig, Arc<CertStore>), TlsError> {
    let certs = Arc::new(CertStore { current: arc_swap::ArcSwap::from_pointee(load_certified_key(config)?) });
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Protocol)?;
    let builder = match (config.client_auth, &config.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots(ca)?), provider());
            let verifier = if mode == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
            let verifier = verifier.build().map_err(|err| TlsError::ClientCa { path: ca.clone(), source: err.into() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server_config = builder.with_cert_resolver(certs.clone());
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((server_config, certs))
}

/// Checks that `config` yields a working server configuration (used when loading the config).
pub fn load_server_config(config: &TlsConfig) -> Result<(), TlsError> {
    build(config).map(|_| ())
}

impl Tls {
    /// The listener's TLS from `config`.
    pub fn new(config: &TlsConfig) -> Result<Tls, TlsError> {
        let (server_config, certs) = build(config)?;
        Ok(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_config)), certs })
    }

    /// Accepts TLS connections.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// The certificate store, for reloading.
    pub fn certs(&self) -> Arc<CertStore> {
        self.certs.clone()
    }
}

/// The name a verified client certificate authenticates as: its subject's common name, or the
/// whole subject (RFC 4514) when it has none.
pub fn client_name(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode as _;
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let subject = &certificate.tbs_certificate.subject;
    for rdn in subject.0.iter() {
        for attribute in rdn.0.iter() {
            if attribute.oid == x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3") {
                let value = attribute.value.decode_as::<String>().ok()
                    .or_else(|| attribute.value.decode_as::<x509_cert::der::asn1::PrintableStringRef<'_>>().ok().map(|s| s.to_string()))?;
                return Some(value);
            }
        }
    }
    Some(subject.to_string()).filter(|name| !name.is_empty())
}

impl CertStore {
    /// Reads the certificate and key again; on error the current pair stays.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let fresh = load_certified_key(config)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }
}
