//! `[auth]`: users, groups, OIDC issuers, rules, registry tokens and login throttling. Files
//! named here (htpasswd, token signing key, JWKS) are read and checked at load time, relative to
//! the config file's directory, so a configuration that loads can serve.

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

/// `[auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct FileAuth {
    service: String,
    issuer: String,
    realm: Option<String>,
    challenge: Challenge,
    basic: bool,
    token_ttl_secs: u64,
    signing_key: Option<String>,
    htpasswd: Option<String>,
    groups: BTreeMap<String, Vec<String>>,
    oidc: Vec<FileOidc>,
    rules: Vec<FileRule>,
    throttle: FileThrottle,
}

impl Default for FileAuth {
    fn default() -> Self {
        FileAuth {
            service: "portcullis".to_owned(),
            issuer: "portcullis".to_owned(),
            realm: None,
            challenge: Challenge::default(),
            basic: true,
            token_ttl_secs: 300,
            signing_key: None,
            htpasswd: None,
            groups: BTreeMap::new(),
            oidc: Vec::new(),
            rules: Vec::new(),
            throttle: FileThrottle::default(),
        }
    }
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

fn default_username_claim() -> String {
    "sub".to_owned()
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

/// `[auth.throttle]` as written; its defaults are `ThrottleConfig`'s.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileThrottle {
    failures_per_address: u32,
    failures_per_user: u32,
    window_secs: u64,
}

impl Default for FileThrottle {
    fn default() -> Self {
        let defaults = ThrottleConfig::default();
        FileThrottle { failures_per_address: defaults.per_address, failures_per_user: defaults.per_user, window_secs: defaults.window.as_secs() }
    }
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
