//! Configuration: the TOML file as written and its validated form ([`Config`]).
//!
//! Precedence is flags > environment > file > embedded default. The CLI (clap) folds flags and
//! their `PORTCULLIS_*` variables into [`Overrides`]; [`Config::load`] applies them on top of the
//! file, or of `config/default.toml` (compiled in) when no file is given. Loading is pure: it
//! binds no port and opens no database.
//!
//! Each TOML section has a file here named for it (`server`, `storage`, `registry`, `trust`,
//! `promotion`, `auth`, `namespaces`, `upstreams`, `admission`, `gc`, `scrub`), holding the section as written (serde,
//! `deny_unknown_fields`, its defaults in one `Default` impl or the field type's own) and a short
//! loader that checks it and builds the validated type, which lives with its consumer
//! (`tls::TlsConfig`, `auth::AuthConfig`, `policy::namespaces::Namespace`, ...). Files a section
//! names are read through one `files::Files`, which hashes them into [`Config::revision`].
//! Adding a key takes its field and default in the section's file struct, and its place in the
//! validated type.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

mod admission;
mod auth;
mod files;
mod gc;
mod scrub;
mod namespaces;
mod promotion;
mod registry;
mod server;
mod storage;
mod trust;
mod upstreams;

use crate::admission::AdmissionConfig;
use crate::auth::AuthConfig;
use crate::logging::LogFormat;
use crate::policy::namespaces::Namespace;
use crate::policy::verify::TrustConfig;
use crate::proxy::upstream::UpstreamConfig;
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
    pub signing_key_pem: Option<SecretString>,
    /// Users, tokens and rules; without it the registry is open to everyone.
    pub auth: Option<AuthConfig>,
    /// Registries pulled through (`[[upstreams]]`).
    pub upstreams: Vec<UpstreamConfig>,
    /// Kubernetes admission; without it the webhook endpoints answer 404.
    pub admission: Option<AdmissionConfig>,
    /// Garbage collection (`[gc]`).
    pub gc: crate::gc::GcConfig,
    /// Scrubbing of stored content (`[scrub]`).
    pub scrub: crate::scrub::ScrubConfig,
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

/// The S3 backend (`[storage.s3]`): the store's own settings, and what the registry does with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Storage {
    /// The store's settings; its `Debug` prints no credential.
    pub store: ::storage::S3Config,
    /// Answer blob GETs with a 307 to a presigned URL, so the store serves the bytes.
    pub redirect_blobs: bool,
    /// Lifetime of presigned URLs.
    pub presign_expiry: Duration,
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

/// The TOML file as written: one field per section, each absent section at its defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    server: server::FileServer,
    storage: storage::FileStorage,
    registry: registry::FileRegistry,
    namespaces: Vec<namespaces::FileNamespace>,
    trust: trust::FileTrust,
    promotion: promotion::FilePromotion,
    auth: Option<auth::FileAuth>,
    upstreams: Vec<upstreams::FileUpstream>,
    admission: Option<admission::FileAdmission>,
    gc: gc::FileGc,
    scrub: scrub::FileScrub,
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
        let mut files = files::Files::new(base, text);
        let server = file.server.load(overrides.listen, &mut files).map_err(invalid)?;
        let storage = file.storage.load(overrides.data_dir.clone()).map_err(invalid)?;
        let registry = file.registry.load().map_err(invalid)?;
        let trust = file.trust.load(&mut files).map_err(invalid)?;
        let signing_key_pem = file.promotion.load(&mut files).map_err(invalid)?;
        let auth = file.auth.map(|auth| auth.load(&mut files)).transpose().map_err(invalid)?;
        let namespaces = namespaces::load(file.namespaces, &trust, &mut files).map_err(invalid)?;
        let upstreams = upstreams::load(file.upstreams, &mut files).map_err(invalid)?;
        let admission = file.admission.map(admission::FileAdmission::load).transpose().map_err(invalid)?;
        let gc = file.gc.load().map_err(invalid)?;
        let scrub = file.scrub.load().map_err(invalid)?;
        Ok(Config {
            listen: server.listen,
            tls: server.tls,
            log_format: server.log_format,
            storage: storage.backend,
            index_dir: storage.index_dir,
            registry,
            namespaces,
            trust,
            signing_key_pem,
            auth,
            upstreams,
            admission,
            gc,
            scrub,
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
    fn absent_keys_take_their_defaults() {
        let config = Config::parse("[auth]\n[[namespaces]]\npattern = \"**\"\n[namespaces.gate]\n[namespaces.gate.scan]\n", "t.toml", &Overrides::default()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(config.log_format, LogFormat::Human);
        assert!(config.tls.is_none() && config.signing_key_pem.is_none());
        assert_eq!(config.storage, StorageConfig::Fs { root: PathBuf::from("./data/store") });
        assert_eq!(config.index_dir, PathBuf::from("./data/index"));
        let registry = &config.registry;
        let limits = (registry.delete_enabled, registry.max_manifest_bytes, registry.max_blob_bytes, registry.upload_timeout);
        assert_eq!(limits, (true, 4 << 20, 32 << 30, std::time::Duration::from_secs(86_400)));
        let auth = config.auth.as_ref().unwrap();
        assert_eq!((auth.service.as_str(), auth.issuer.as_str(), auth.challenge, auth.basic), ("portcullis", "portcullis", crate::auth::Challenge::Bearer, true));
        assert_eq!((auth.token_ttl, auth.realm.as_deref()), (std::time::Duration::from_secs(300), None));
        assert_eq!(auth.throttle, crate::auth::ratelimit::ThrottleConfig::default());
        let ns = config.namespace("any").unwrap();
        assert_eq!((ns.tags, ns.promotion_only), (crate::policy::namespaces::TagMode::Mutable, false));
        let gate = ns.gate.as_ref().unwrap();
        assert_eq!(gate.mode, crate::policy::gate::GateMode::Enforce);
        let scan = gate.scan.as_ref().unwrap();
        assert_eq!((scan.rules.max_age_secs, scan.rules.block.as_slice()), (7 * 86_400, &[crate::policy::scan::BlockRule::CriticalWithFix][..]));
    }

    #[test]
    fn debug_prints_no_secret() {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let dir = tempfile::tempdir().unwrap();
        let pem = || p256::ecdsa::SigningKey::random(&mut rand_core::OsRng).to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let (token_key, promotion_key) = (pem(), pem());
        let hash = bcrypt::hash("alice-pw", 4).unwrap();
        std::fs::write(dir.path().join("token.pem"), &token_key).unwrap();
        std::fs::write(dir.path().join("promotion.pem"), &promotion_key).unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
        std::fs::write(dir.path().join("upstream-password"), "dckr_pat_upstream-secret-0123\n").unwrap();
        let text = r#"
            [storage]
            backend = "s3"
            [storage.s3]
            bucket = "b"
            access_key_id = "AKIAEXAMPLEACCESSKEY"
            secret_access_key = "example-secret-access-key/0123456789"
            [promotion]
            signing_key = "promotion.pem"
            [auth]
            signing_key = "token.pem"
            htpasswd = "htpasswd"
            [[upstreams]]
            name = "docker.io"
            url = "https://registry-1.docker.io"
            user = "mirror"
            password_file = "upstream-password"
        "#;
        let config = Config::parse_in(text, "t.toml", dir.path(), &Overrides::default()).unwrap();
        let printed = format!("{config:?}");
        // A PEM's body lines are base64 of the key; none may appear, nor the hash or the S3 keys.
        let pem_lines = |pem: &str| pem.lines().filter(|line| !line.starts_with("-----")).map(str::to_owned).collect::<Vec<_>>();
        let secrets = [pem_lines(&token_key), pem_lines(&promotion_key), vec![hash.clone(), hash[7..].to_owned()]].concat();
        let secrets = [secrets, vec!["AKIAEXAMPLEACCESSKEY".to_owned(), "example-secret-access-key/0123456789".to_owned()]].concat();
        let secrets = [secrets, vec!["dckr_pat_upstream-secret-0123".to_owned()]].concat();
        for secret in &secrets {
            assert!(!printed.contains(secret.as_str()), "Debug of Config prints the secret {secret:?}");
        }
        assert!(printed.contains("promotion") || printed.contains("signing_key"), "the test looks at a real Debug: {printed}");
        assert!(printed.contains("mirror"), "the upstream is printed, its password not: {printed}");
    }

    #[test]
    fn upstream_errors_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "x").unwrap();
        std::fs::write(dir.path().join("not-a-cert.pem"), "hello").unwrap();
        let check = |entries: &str, expected: &str| {
            let err = Config::parse_in(entries, "t.toml", dir.path(), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains(expected), "{entries}: {err}");
        };
        let up = |extra: &str| format!("[[upstreams]]\nname = \"hub\"\nurl = \"https://r.example\"\n{extra}\n");
        check("[[upstreams]]\nname = \"Hub\"\nurl = \"https://r.example\"", "upstreams.name: expected [a-z0-9]");
        check("[[upstreams]]\nname = \"hub\"\nurl = \"http://r.example\"", "plain http is allowed to loopback addresses only");
        check(&up("namespace = \"proxy/hub\""), "expected a repository prefix followed by /**");
        check(&up("user = \"u\""), "user needs password_file or password_env");
        check(&up("password_env = \"X\""), "needs user");
        check(&up("user = \"u\"\npassword_file = \"pw\"\npassword_env = \"X\""), "not both");
        check(&up("user = \"u\"\npassword_file = \"missing\""), "password_file: cannot read");
        check(&up("ca = \"not-a-cert.pem\""), "holds no PEM certificate");
        check(&up("timeout = \"0s\""), "timeout: expected 1s to 10m");
        check(&up("tag_moves = \"ignore\""), "unknown variant `ignore`");
        check(&up("max_bytes = 0"), "max_bytes: expected a positive number");
        check(&format!("{}{}", up(""), up("")), "the name \"hub\" is used twice");
        let two = |a: &str, b: &str| format!("[[upstreams]]\nname = \"a\"\nurl = \"https://a.example\"\n{a}\n[[upstreams]]\nname = \"b\"\nurl = \"https://b.example\"\n{b}\n");
        check(&two("default = true", "default = true"), "are both default");
        check(&two("hosts = [\"docker.io\"]", "hosts = [\"docker.io\"]"), "both serve ns=docker.io");
        check(&two("namespace = \"mirror/**\"", "namespace = \"mirror/b/**\""), "overlap");
        let config = Config::parse_in(&up("hosts = [\"docker.io\"]"), "t.toml", dir.path(), &Overrides::default()).unwrap();
        let hub = &config.upstreams[0];
        assert_eq!((hub.prefix.as_str(), hub.library, hub.default), ("proxy/hub", true, false), "docker.io names get library/");
        let limits = (hub.timeout.as_secs(), hub.tag_ttl.as_secs(), hub.stale_for.as_secs(), hub.tag_moves, hub.max_bytes);
        assert_eq!(limits, (30, 300, 7 * 86_400, crate::proxy::upstream::TagMoves::Follow, None));
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
