//! `[server]` and `[server.tls]`: where to listen, how to log, and TLS on the listener. The
//! certificate, key and client CA are read and checked at load time, relative to the config
//! file's directory, so a configuration that loads can serve; they are read again on reload
//! (SIGHUP) to pick up a renewed certificate.

use std::net::SocketAddr;

use serde::Deserialize;

use super::files::Files;
use crate::logging::LogFormat;
use crate::tls::{ClientAuth, TlsConfig};

/// `[server]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileServer {
    listen: String,
    log_format: LogFormat,
    tls: Option<FileTls>,
}

impl Default for FileServer {
    fn default() -> Self {
        FileServer { listen: "127.0.0.1:5000".to_owned(), log_format: LogFormat::Human, tls: None }
    }
}

/// `[server.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: String,
    key: String,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    client_auth: Option<ClientAuth>,
    #[serde(default = "default_client_cert_paths")]
    client_cert_paths: Vec<String>,
}

fn default_client_cert_paths() -> Vec<String> {
    vec!["/admission/".to_owned()]
}

/// `[server]`, validated.
pub(super) struct Server {
    pub(super) listen: SocketAddr,
    pub(super) log_format: LogFormat,
    pub(super) tls: Option<TlsConfig>,
}

impl FileServer {
    /// `listen` is the address from a flag or the environment, which wins over the file's.
    pub(super) fn load(self, listen: Option<SocketAddr>, files: &mut Files) -> Result<Server, String> {
        let listen = match listen {
            Some(listen) => listen,
            None => self.listen.parse().map_err(|_| format!("server.listen: expected host:port, found {:?}", self.listen))?,
        };
        let tls = self.tls.map(|tls| tls.load(files)).transpose()?;
        Ok(Server { listen, log_format: self.log_format, tls })
    }
}

impl FileTls {
    fn load(self, files: &mut Files) -> Result<TlsConfig, String> {
        let client_auth = match (self.client_auth, &self.client_ca) {
            (Some(ClientAuth::Optional | ClientAuth::Required), None) => {
                return Err("server.tls.client_auth needs server.tls.client_ca".to_owned());
            }
            (Some(mode), _) => mode,
            (None, Some(_)) => ClientAuth::Optional,
            (None, None) => ClientAuth::None,
        };
        if let Some(prefix) = self.client_cert_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("server.tls.client_cert_paths: expected paths starting with /, found {prefix:?}"));
        }
        let tls = TlsConfig {
            cert: files.resolve(&self.cert),
            key: files.resolve(&self.key),
            client_ca: self.client_ca.as_deref().map(|path| files.resolve(path)),
            client_auth,
            client_cert_paths: self.client_cert_paths,
        };
        // Read through `files` too, so the revision changes with a renewed certificate.
        files.read(&self.cert, "server.tls.cert")?;
        crate::tls::load_server_config(&tls).map_err(|err| format!("server.tls: {err}"))?;
        Ok(tls)
    }
}
