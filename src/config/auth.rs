//! The access sections of the configuration: `[auth]` (users, OIDC issuers, rules, tokens,
//! throttling) and `[server.tls]` (certificate, key, client certificates). Files named here are
//! read and checked at load time, relative to the config file's directory, so a configuration
//! that loads can serve; TLS files are read again on reload (SIGHUP) to pick up a renewed
//! certificate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::files::Files;
use crate::auth::htpasswd::Htpasswd;
use crate::auth::oidc::{JwksSource, Keys, Provider, RoleRule};
use crate::auth::ratelimit::ThrottleConfig;
use crate::auth::rules::{Rule, Rules, Subject};
use crate::auth::token::TokenKey;
use crate::auth::{AuthConfig, Challenge};
use crate::tls::{ClientAuth, TlsConfig};

/// `[auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    #[serde(default = "default_service")]
    service: String,
    #[serde(default = "default_service")]
    issuer: String,
    #[serde(default)]
    realm: Option<String>,
    #[serde(default = "default_challenge")]
    challenge: Challenge,
    #[serde(default = "default_true")]
    basic: bool,
    #[serde(default = "default_token_ttl_secs")]
    token_ttl_secs: u64,
    #[serde(default)]
    signing_key: Option<String>,
    #[serde(default)]
    htpasswd: Option<String>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    oidc: Vec<FileOidc>,
    #[serde(default)]
    rules: Vec<FileRule>,
    #[serde(default)]
    throttle: FileThrottle,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOidc {
    name: String,
    issuer: String,
    audience: Vec<String>,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default = "default_username_claim")]
    username_claim: String,
    #[serde(default)]
    roles: Vec<FileRole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRole {
    role: String,
    claims: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    subjects: Vec<String>,
    repositories: Vec<String>,
    actions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileThrottle {
    #[serde(default = "default_per_address")]
    failures_per_address: u32,
    #[serde(default = "default_per_user")]
    failures_per_user: u32,
    #[serde(default = "default_window_secs")]
    window_secs: u64,
}

impl Default for FileThrottle {
    fn default() -> Self {
        FileThrottle { failures_per_address: default_per_address(), failures_per_user: default_per_user(), window_secs: default_window_secs() }
    }
}

fn default_service() -> String {
    "portcullis".to_owned()
}
fn default_challenge() -> Challenge {
    Challenge::Bearer
}
fn default_true() -> bool {
    true
}
fn default_token_ttl_secs() -> u64 {
    300
}
fn default_username_claim() -> String {
    "sub".to_owned()
}
fn default_per_address() -> u32 {
    ThrottleConfig::default().per_address
}
fn default_per_user() -> u32 {
    ThrottleConfig::default().per_user
}
fn default_window_secs() -> u64 {
    ThrottleConfig::default().window.as_secs()
}

impl FileAuth {
    pub(super) fn load(self, files: &mut Files) -> Result<AuthConfig, String> {
        if self.service.is_empty() || self.issuer.is_empty() {
            return Err("auth.service and auth.issuer must not be empty".to_owned());
        }
        if self.challenge == Challenge::Basic && !self.basic {
            return Err("auth.challenge = \"basic\" needs auth.basic = true".to_owned());
        }
        if !(1..=86_400).contains(&self.token_ttl_secs) {
            return Err(format!("auth.token_ttl_secs: expected 1 to 86400, found {}", self.token_ttl_secs));
        }
        if let Some(realm) = &self.realm {
            if !(realm.starts_with("https://") || realm.starts_with("http://")) || realm.contains('"') {
                return Err(format!("auth.realm: expected an http(s) URL, found {realm:?}"));
            }
        }
        let signing_key = self
            .signing_key
            .as_deref()
            .map(|path| files.read(path, "auth.signing_key").and_then(|pem| TokenKey::from_pem(&pem).map_err(|err| format!("auth.signing_key: {err}"))))
            .transpose()?;
        let htpasswd = self
            .htpasswd
            .as_deref()
            .map(|path| files.read(path, "auth.htpasswd").and_then(|text| Htpasswd::parse(&text).map_err(|err| format!("auth.htpasswd {path}: {err}"))))
            .transpose()?
            .map(Arc::new);

        let mut oidc = Vec::new();
        for provider in self.oidc {
            let what = format!("auth.oidc {:?}", provider.name);
            if provider.name.is_empty() || provider.name.contains(':') {
                return Err(format!("{what}: a name must be non-empty and without ':'"));
            }
            if provider.audience.is_empty() {
                return Err(format!("{what}: needs at least one audience"));
            }
            let jwks = match (provider.jwks_file, provider.jwks_url) {
                (Some(path), None) => {
                    let text = files.read(&path, &what)?;
                    JwksSource::Static(Keys::parse(&text).map_err(|err| format!("{what}: {path}: {err}"))?)
                }
                (None, Some(url)) if url.starts_with("https://") || is_loopback_http(&url) => JwksSource::Url(url),
                (None, Some(url)) => return Err(format!("{what}: jwks_url must be https (or http on loopback), found {url:?}")),
                _ => return Err(format!("{what}: needs exactly one of jwks_file and jwks_url")),
            };
            let roles = provider
                .roles
                .iter()
                .map(|role| {
                    let claims: Vec<(String, String)> = role.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    RoleRule::new(&role.role, &claims).map_err(|err| format!("{what}: {err}"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            oidc.push(Provider {
                name: provider.name,
                issuer: provider.issuer,
                audiences: provider.audience,
                jwks,
                username_claim: provider.username_claim,
                roles,
            });
        }

        let role_names: Vec<&str> = oidc.iter().flat_map(|p| p.roles.iter().map(|r| r.role.as_str())).collect();
        let mut rules = Vec::new();
        for (n, rule) in self.rules.iter().enumerate() {
            let what = format!("auth.rules[{n}]");
            for subject in &rule.subjects {
                match subject.parse::<Subject>().map_err(|err| format!("{what}: {err}"))? {
                    Subject::Group(group) if !self.groups.contains_key(&group) => {
                        return Err(format!("{what}: group {group:?} is not defined in [auth.groups]"));
                    }
                    Subject::Role(role) if !role_names.contains(&role.as_str()) => {
                        return Err(format!("{what}: role {role:?} is not defined by any [[auth.oidc.roles]]"));
                    }
                    _ => {}
                }
            }
            rules.push(Rule::new(&rule.subjects, &rule.repositories, &rule.actions).map_err(|err| format!("{what}: {err}"))?);
        }
        if self.throttle.failures_per_address == 0 || self.throttle.failures_per_user == 0 || self.throttle.window_secs == 0 {
            return Err("auth.throttle: limits and window must be positive".to_owned());
        }
        Ok(AuthConfig {
            service: self.service,
            issuer: self.issuer,
            realm: self.realm,
            challenge: self.challenge,
            basic: self.basic,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            signing_key,
            htpasswd,
            groups: self.groups,
            oidc,
            rules: Rules::new(rules),
            throttle: ThrottleConfig {
                per_address: self.throttle.failures_per_address,
                per_user: self.throttle.failures_per_user,
                window: Duration::from_secs(self.throttle.window_secs),
            },
        })
    }
}

fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]"].iter().any(|p| url.starts_with(p))
}

/// `[server.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
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

impl FileTls {
    pub(super) fn load(self, files: &mut Files) -> Result<TlsConfig, String> {
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
