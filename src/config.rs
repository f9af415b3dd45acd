//! Configuration: the TOML file as written ([`FileConfig`]) and its validated form ([`Config`]).
//!
//! Precedence is flags > environment > file > embedded default. The CLI (clap) folds flags and
//! their `PORTCULLIS_*` variables into [`Overrides`]; [`Config::load`] applies them on top of the
//! file, or of `config/default.toml` (compiled in) when no file is given. Loading is pure: it
//! binds no port and opens no database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod auth;
mod files;
mod gate;

use crate::auth::AuthConfig;
use crate::logging::LogFormat;
use crate::policy::namespaces::{Namespace, TagMode, TagRule};
use crate::policy::verify::TrustConfig;
use crate::registry::RegistryConfig;
use crate::tls::TlsConfig;

/// The embedded default configuration, `config/default.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// The validated configuration everything downstream takes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS on the listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// Log output format.
    pub log_format: LogFormat,
    /// Where blobs and metadata live.
    pub storage: StorageConfig,
    /// Directory of the node-local index (sled).
    pub index_dir: PathBuf,
    /// Registry behaviour and limits.
    pub registry: RegistryConfig,
    /// Namespace rules; the first match applies.
    pub namespaces: Vec<Namespace>,
    /// Trusted signers.
    pub trust: TrustConfig,
    /// PKCS#8 PEM of the key that signs verification summaries; generated and kept in the store
    /// when absent.
    pub signing_key_pem: Option<String>,
    /// Users, tokens and rules; without it the registry is open to everyone.
    pub auth: Option<AuthConfig>,
    /// sha256 of the configuration text and every file it names: changes when policy or trust does.
    pub revision: String,
    /// Where the configuration came from, for the start-up message.
    pub source: String,
}

/// The object store backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// Local directory.
    Fs {
        /// Root of the store.
        root: PathBuf,
    },
    /// An S3-compatible bucket.
    S3(S3Storage),
}

/// Settings of the S3 backend (`[storage.s3]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Storage {
    /// Bucket name.
    pub bucket: String,
    /// Region; any value for most S3-compatible stores.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint URL for S3-compatible stores; AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most self-hosted stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// Access key; the standard AWS chain (environment, profile, instance role) when absent.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret key, with `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Size of the parts uploads are cut into, in MiB (5 to 5120).
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    /// Accept a store that ignores conditional writes: safe only with a single replica.
    #[serde(default)]
    pub single_writer: bool,
    /// Send checksums only when required (for stores that reject the SDK's streaming checksums).
    #[serde(default)]
    pub checksum_when_required: bool,
    /// Answer blob GETs with a 307 to a presigned URL, so the store serves the bytes.
    #[serde(default)]
    pub redirect_blobs: bool,
    /// Lifetime of presigned URLs, in seconds.
    #[serde(default = "default_presign_expiry_secs")]
    pub presign_expiry_secs: u64,
    /// Per-request timeout, in seconds.
    #[serde(default = "default_s3_timeout_secs")]
    pub timeout_secs: u64,
    /// Retries on throttling, 5xx and connection errors.
    #[serde(default = "default_s3_retries")]
    pub max_retries: u32,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_part_size_mib() -> u64 {
    8
}
fn default_presign_expiry_secs() -> u64 {
    300
}
fn default_s3_timeout_secs() -> u64 {
    30
}
fn default_s3_retries() -> u32 {
    3
}

/// Values from flags or the environment that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen` / `PORTCULLIS_LISTEN`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir` / `PORTCULLIS_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys.
    #[error("invalid config {source_name}: {message}")]
    Parse {
        /// File name or "embedded default".
        source_name: String,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config {source_name}: {message}")]
    Invalid {
        /// File name or "embedded default".
        source_name: String,
        /// What is wrong.
        message: String,
    },
}

/// The TOML file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    storage: FileStorage,
    #[serde(default)]
    registry: FileRegistry,
    #[serde(default)]
    namespaces: Vec<FileNamespace>,
    #[serde(default)]
    trust: gate::FileTrust,
    #[serde(default)]
    promotion: FilePromotion,
    #[serde(default)]
    auth: Option<auth::FileAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePromotion {
    /// PKCS#8 PEM file of the VSA signing key.
    #[serde(default)]
    signing_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_log_format")]
    log_format: LogFormat,
    #[serde(default)]
    tls: Option<auth::FileTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStorage {
    #[serde(default = "default_backend")]
    backend: String,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    index_dir: Option<PathBuf>,
    #[serde(default)]
    s3: Option<S3Storage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRegistry {
    #[serde(default = "default_true")]
    delete_enabled: bool,
    #[serde(default = "default_max_manifest_bytes")]
    max_manifest_bytes: usize,
    #[serde(default = "default_max_blob_bytes")]
    max_blob_bytes: u64,
    #[serde(default = "default_upload_timeout_secs")]
    upload_timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    pattern: String,
    #[serde(default = "default_tag_mode")]
    tags: TagMode,
    #[serde(default)]
    promotion_only: bool,
    #[serde(default)]
    tag_rules: Vec<FileTagRule>,
    #[serde(default)]
    gate: Option<gate::FileGate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTagRule {
    pattern: String,
    tags: TagMode,
}

fn default_listen() -> String {
    "127.0.0.1:5000".to_owned()
}
fn default_log_format() -> LogFormat {
    LogFormat::Human
}
fn default_backend() -> String {
    "fs".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_true() -> bool {
    true
}
fn default_max_manifest_bytes() -> usize {
    4 << 20
}
fn default_max_blob_bytes() -> u64 {
    32 << 30
}
fn default_upload_timeout_secs() -> u64 {
    24 * 3600
}
fn default_tag_mode() -> TagMode {
    TagMode::Mutable
}

impl Default for FileServer {
    fn default() -> Self {
        FileServer { listen: default_listen(), log_format: default_log_format(), tls: None }
    }
}
impl Default for FileStorage {
    fn default() -> Self {
        FileStorage { backend: default_backend(), data_dir: default_data_dir(), index_dir: None, s3: None }
    }
}
impl Default for FileRegistry {
    fn default() -> Self {
        FileRegistry {
            delete_enabled: true,
            max_manifest_bytes: default_max_manifest_bytes(),
            max_blob_bytes: default_max_blob_bytes(),
            upload_timeout_secs: default_upload_timeout_secs(),
        }
    }
}

impl Config {
    /// Loads `path` (or the embedded default) and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (text, source_name) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                (text, path.display().to_string())
            }
            None => (EMBEDDED_DEFAULT.to_owned(), "embedded default".to_owned()),
        };
        let base = path.and_then(Path::parent).unwrap_or(Path::new("."));
        Config::parse_in(&text, &source_name, base, overrides)
    }

    /// The embedded default with its data directory moved to `data_dir` (used by tests).
    pub fn embedded_default(data_dir: &Path) -> Config {
        let overrides = Overrides { data_dir: Some(data_dir.to_owned()), ..Overrides::default() };
        Config::parse(EMBEDDED_DEFAULT, "embedded default", &overrides)
            .expect("the embedded default config is valid: a test loads it")
    }

    /// Parses and validates TOML text; files it names are relative to the working directory.
    pub fn parse(text: &str, source_name: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::parse_in(text, source_name, Path::new("."), overrides)
    }

    /// Parses and validates TOML text; files it names are relative to `base`.
    pub fn parse_in(text: &str, source_name: &str, base: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text)
            .map_err(|err| ConfigError::Parse { source_name: source_name.to_owned(), message: err.to_string() })?;
        let invalid = |message: String| ConfigError::Invalid { source_name: source_name.to_owned(), message };

        let listen = match overrides.listen {
            Some(listen) => listen,
            None => file
                .server
                .listen
                .parse()
                .map_err(|_| invalid(format!("server.listen: expected host:port, found {:?}", file.server.listen)))?,
        };
        let data_dir = overrides.data_dir.clone().unwrap_or(file.storage.data_dir);
        let storage = match (file.storage.backend.as_str(), file.storage.s3) {
            ("fs", _) => StorageConfig::Fs { root: data_dir.join("store") },
            ("s3", Some(s3)) => {
                if !(5..=5120).contains(&s3.part_size_mib) {
                    return Err(invalid(format!("storage.s3.part_size_mib: expected 5 to 5120, found {}", s3.part_size_mib)));
                }
                StorageConfig::S3(s3)
            }
            ("s3", None) => return Err(invalid("storage.backend = \"s3\" needs a [storage.s3] section".to_owned())),
            (other, _) => return Err(invalid(format!("storage.backend: expected \"fs\" or \"s3\", found {other:?}"))),
        };
        if file.registry.max_manifest_bytes == 0 || file.registry.max_manifest_bytes > 64 << 20 {
            return Err(invalid("registry.max_manifest_bytes: expected 1 to 67108864".to_owned()));
        }
        let mut files = files::Files::new(base, text);
        let trust = file.trust.load(&mut files).map_err(invalid)?;
        let signing_key_pem = file.promotion.signing_key.as_deref().map(|path| files.read(path, "promotion.signing_key")).transpose().map_err(invalid)?;
        let tls = file.server.tls.map(|tls| tls.load(&mut files)).transpose().map_err(invalid)?;
        let auth = file.auth.map(|auth| auth.load(&mut files)).transpose().map_err(invalid)?;
        let namespaces = file
            .namespaces
            .into_iter()
            .map(|ns| {
                let gate = ns.gate.map(|g| g.load(&mut files, &trust, &ns.pattern)).transpose().map_err(invalid)?;
                let tag_rules = ns
                    .tag_rules
                    .into_iter()
                    .map(|rule| {
                        let pattern = rule.pattern.clone();
                        TagRule::new(rule.pattern, rule.tags).map_err(|err| invalid(format!("namespaces.tag_rules.pattern {pattern:?}: {err}")))
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()?;
                let pattern = ns.pattern.clone();
                Namespace::new(ns.pattern, ns.tags, tag_rules, ns.promotion_only, gate)
                    .map_err(|err| invalid(format!("namespaces.pattern {pattern:?}: {err}")))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;

        Ok(Config {
            listen,
            tls,
            log_format: file.server.log_format,
            storage,
            index_dir: file.storage.index_dir.unwrap_or_else(|| data_dir.join("index")),
            registry: RegistryConfig {
                delete_enabled: file.registry.delete_enabled,
                max_manifest_bytes: file.registry.max_manifest_bytes,
                max_blob_bytes: file.registry.max_blob_bytes,
                upload_timeout: Duration::from_secs(file.registry.upload_timeout_secs),
            },
            namespaces,
            trust,
            signing_key_pem,
            auth,
            revision: files.revision(),
            source: source_name.to_owned(),
        })
    }

    /// The namespace rule for a repository: the first whose pattern matches, if any.
    pub fn namespace(&self, repo: &str) -> Option<&Namespace> {
        crate::policy::namespaces::first_match(&self.namespaces, repo).map(|(_, ns)| ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n_files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                Config::load(Some(&path), &Overrides::default()).unwrap_or_else(|err| panic!("{err}"));
                n_files += 1;
            }
        }
        assert!(n_files >= 1);
    }

    #[test]
    fn embedded_default_namespaces() {
        let config = Config::embedded_default(Path::new("/tmp/x"));
        let check = |repo: &str, pattern: &str, promotion_only: bool| {
            let ns = config.namespace(repo).unwrap();
            assert_eq!((ns.pattern.as_str(), ns.promotion_only), (pattern, promotion_only), "{repo}");
        };
        check("build/app", "build/**", false);
        check("build/team/app", "build/**", false);
        check("prod/app", "prod/**", true);
        check("prod", "prod/**", true);
        check("production/app", "**", false);
        check("app", "**", false);
        assert_eq!(config.storage, StorageConfig::Fs { root: PathBuf::from("/tmp/x/store") });
        assert_eq!(config.listen, "127.0.0.1:5000".parse().unwrap());
    }

    #[test]
    fn errors_are_readable() {
        let overrides = Overrides::default();
        let err = Config::parse("[server]\nlisten = \"nope\"", "t.toml", &overrides).unwrap_err();
        assert_eq!(err.to_string(), "invalid config t.toml: server.listen: expected host:port, found \"nope\"");
        let err = Config::parse("[bogus]\n", "t.toml", &overrides).unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err = Config::parse("[storage]\nbackend = \"tape\"", "t.toml", &overrides).unwrap_err();
        assert!(err.to_string().contains("expected \"fs\" or \"s3\""), "{err}");
        let err = Config::parse("[storage]\nbackend = \"s3\"", "t.toml", &overrides).unwrap_err();
        assert!(err.to_string().contains("needs a [storage.s3] section"), "{err}");
    }

    #[test]
    fn access_errors_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sha1.htpasswd"), "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
        let check = |text: &str, expected: &str| {
            let err = Config::parse_in(text, "t.toml", dir.path(), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        };
        check("[auth]\nhtpasswd = \"sha1.htpasswd\"", "only bcrypt hashes");
        check("[auth]\nhtpasswd = \"missing\"", "auth.htpasswd: cannot read");
        check("[auth]\nchallenge = \"digest\"", "unknown variant `digest`");
        check("[auth]\nchallenge = \"basic\"\nbasic = false", "needs auth.basic = true");
        check("[[auth.rules]]\nsubjects = [\"group:ops\"]\nrepositories = [\"**\"]\nactions = [\"pull\"]", "group \"ops\" is not defined");
        check("[[auth.rules]]\nsubjects = [\"role:ci\"]\nrepositories = [\"**\"]\nactions = [\"pull\"]", "role \"ci\" is not defined");
        check("[[auth.rules]]\nsubjects = [\"anonymous\"]\nrepositories = [\"**\"]\nactions = [\"write\"]", "expected one of pull");
        check("[[auth.oidc]]\nname = \"gh\"\nissuer = \"i\"\naudience = [\"a\"]", "needs exactly one of jwks_file and jwks_url");
        check("[[auth.oidc]]\nname = \"gh\"\nissuer = \"i\"\naudience = [\"a\"]\njwks_url = \"http://example.com/jwks\"", "must be https");
        check("[auth]\nsigning_key = \"sha1.htpasswd\"", "auth.signing_key: expected a PKCS#8 PEM private key");
        check("[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"required\"", "client_auth needs server.tls.client_ca");
        check("[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"", "server.tls.cert: cannot read");
        let open = Config::parse(EMBEDDED_DEFAULT, "embedded default", &Overrides::default()).unwrap();
        assert!(open.auth.is_none() && open.tls.is_none(), "the default stays open and plain");
    }

    #[test]
    fn overrides_win() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:6000".parse().unwrap()),
            data_dir: Some(PathBuf::from("/srv/p")),
        };
        let config = Config::parse(EMBEDDED_DEFAULT, "embedded default", &overrides).unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.index_dir, PathBuf::from("/srv/p/index"));
    }
}
