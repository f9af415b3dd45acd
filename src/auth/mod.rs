//! Who is calling and what they may do: [`Auth`] turns credentials (an htpasswd password, an OIDC
//! token, a registry token) into a [`Principal`], and a principal answers
//! [`Principal::may`]`(action, repository)` from the configured rules.
//!
//! Knows no HTTP: headers, challenges, the token endpoint and the throttling layer are in
//! `api::auth`, which calls this module. Without an `[auth]` section there is no [`Auth`] and every
//! request runs as [`Principal::open`], which may do everything (the registry is open).
//!
//! Secrets (passwords, tokens, password hashes, the signing key) are never logged and never
//! `Debug`-printed; password hashes are compared by bcrypt in constant time and tokens are
//! verified by signature, never compared.

pub mod htpasswd;
pub mod oidc;
pub mod ratelimit;
pub mod rules;
pub mod token;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use htpasswd::Htpasswd;
use oidc::Provider;
use ratelimit::ThrottleConfig;
use rules::{Action, Actions, Identity, Rules};
use token::{AccessClaim, Scope, TokenKey};

/// The name of callers who did not authenticate (and of everyone when auth is off).
pub const ANONYMOUS: &str = "anonymous";

/// `[auth]`, validated: every file read, every rule compiled.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The service name: `aud` of registry tokens and `service` in challenges.
    pub service: String,
    /// `iss` of registry tokens.
    pub issuer: String,
    /// The token endpoint's URL as clients reach it; derived from each request when absent.
    pub realm: Option<String>,
    /// The challenge of a 401.
    pub challenge: Challenge,
    /// Whether Basic credentials are accepted on the registry API itself.
    pub basic: bool,
    /// Lifetime of registry tokens.
    pub token_ttl: Duration,
    /// The token signing key; generated at start when absent (tokens then die with the process,
    /// and replicas cannot verify each other's tokens).
    pub signing_key: Option<TokenKey>,
    /// People and robot accounts.
    pub htpasswd: Option<Arc<Htpasswd>>,
    /// Group name -> members.
    pub groups: BTreeMap<String, Vec<String>>,
    /// OIDC issuers.
    pub oidc: Vec<Provider>,
    /// Authorisation rules.
    pub rules: Rules,
    /// Failed-login throttling.
    pub throttle: ThrottleConfig,
}

/// Which challenge a 401 carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Challenge {
    /// `Bearer realm=...,service=...,scope=...`: clients fetch a token from the token endpoint
    /// (the default).
    #[default]
    Bearer,
    /// `Basic realm=...`: clients send user and password with every request.
    Basic,
}

/// How a principal authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// No `[auth]` section: the registry is open and everyone may do everything.
    Open,
    /// No credentials.
    Anonymous,
    /// A user of the htpasswd file.
    User,
    /// An OIDC identity (CI).
    Oidc,
    /// A TLS client certificate verified by the configured client CA (in-cluster pulls).
    Certificate,
}

impl PrincipalKind {
    fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Open | PrincipalKind::Anonymous => "anonymous",
            PrincipalKind::User => "user",
            PrincipalKind::Oidc => "oidc",
            PrincipalKind::Certificate => "cert",
        }
    }
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    kind: PrincipalKind,
    identity: Identity,
    access: Access,
}

#[derive(Debug, Clone)]
enum Access {
    Everything,
    Rules { rules: Arc<Rules>, token: Option<Arc<TokenScope>> },
}

/// What a registry token grants: exactly the scope issued, further limited by today's rules.
#[derive(Debug, Default)]
struct TokenScope {
    repositories: Vec<(String, Actions)>,
    catalog: bool,
}

impl Principal {
    /// The principal of every request when auth is off.
    pub fn open() -> Principal {
        Principal { name: ANONYMOUS.to_owned(), kind: PrincipalKind::Open, identity: Identity::default(), access: Access::Everything }
    }

    /// The name to record as the actor (audit, promotions): the user, `PROVIDER:SUBJECT` for OIDC,
    /// `cert:NAME` for a client certificate, or `anonymous`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it authenticated.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// Whether the caller presented nothing: neither credentials nor a registry token.
    pub fn is_unauthenticated(&self) -> bool {
        self.kind == PrincipalKind::Anonymous && !self.holds_token()
    }

    /// Whether the caller came with a registry token.
    pub fn holds_token(&self) -> bool {
        matches!(&self.access, Access::Rules { token: Some(_), .. })
    }

    /// Whether the caller may do `action` to `repo`: the rules allow it and, for a token, the
    /// token's scope includes it. Without `[auth]` ([`Principal::open`]) the answer is always yes;
    /// to decide whether a gate may be skipped, ask [`Principal::may_skip_gate`] instead.
    pub fn may(&self, action: Action, repo: &str) -> bool {
        match &self.access {
            Access::Everything => true,
            Access::Rules { rules, token } => {
                let in_scope = token.as_ref().is_none_or(|scope| {
                    scope.repositories.iter().any(|(name, actions)| name == repo && actions.allows(action))
                });
                in_scope && rules.allows(&self.identity, action, repo)
            }
        }
    }

    /// Whether the caller may read gated manifests of `repo` without the gate: an authenticated
    /// caller holding `push` there (clients HEAD what they push) or `scanner` (it scans what the
    /// gate waits for). In a promotion-only namespace nobody pushes, so there only `scanner`
    /// counts. Never for anonymous callers, nor for anyone when auth is off, where `may` says yes
    /// to everything and gates must still hold.
    pub fn may_skip_gate(&self, repo: &str, promotion_only: bool) -> bool {
        match self.kind {
            PrincipalKind::Open | PrincipalKind::Anonymous => false,
            PrincipalKind::User | PrincipalKind::Oidc | PrincipalKind::Certificate => {
                (!promotion_only && self.may(Action::Push, repo)) || self.may(Action::Scanner, repo)
            }
        }
    }

    /// Whether `repo` appears in this caller's catalog: it may pull it and, with a token, the
    /// token was issued for the catalog (or for that repository).
    pub fn may_list(&self, repo: &str) -> bool {
        match &self.access {
            Access::Rules { rules, token: Some(scope) } if scope.catalog => rules.allows(&self.identity, Action::Pull, repo),
            _ => self.may(Action::Pull, repo),
        }
    }
}

/// How long a console session lasts: the cookie is a signed token with this lifetime, so a
/// session ends by itself soon after its user stops using it or loses access.
pub const SESSION_TTL: Duration = Duration::from_secs(3600);

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong user, password or OIDC token.
    #[error("authentication failed: wrong user name, password or token")]
    BadCredentials,
    /// Too many failed logins from this address or for this user.
    #[error("too many failed logins; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// A registry token that is expired, forged or for another service.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// An OIDC issuer's keys cannot be fetched.
    #[error("{0}")]
    Unavailable(String),
}

/// A token issued by the token endpoint.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Issue time, seconds since the epoch.
    pub issued_at: u64,
    /// What it grants.
    pub access: Vec<AccessClaim>,
}

impl AuthConfig {
    /// The groups `user` belongs to.
    pub fn groups_of(&self, user: &str) -> Vec<String> {
        self.groups.iter().filter(|(_, members)| members.iter().any(|m| m == user)).map(|(group, _)| group.clone()).collect()
    }
}

/// Authentication and authorisation for one configuration; rebuilt on reload, keeping the
/// failure counts, fetched JWKS and a generated signing key.
#[derive(Debug)]
pub struct Auth {
    config: Arc<AuthConfig>,
    rules: Arc<Rules>,
    key: TokenKey,
    key_generated: bool,
    oidc: Arc<oidc::Verifier>,
    limiter: Arc<ratelimit::LoginLimiter>,
}

impl Auth {
    /// Auth for `config`; `previous` (on reload) hands over state that must survive.
    pub fn new(config: Arc<AuthConfig>, previous: Option<&Auth>) -> Auth {
        let (key, key_generated) = match (&config.signing_key, previous) {
            (Some(key), _) => (key.clone(), false),
            (None, Some(previous)) if previous.key_generated => (previous.key.clone(), true),
            (None, _) => (TokenKey::generate(), true),
        };
        Auth {
            rules: Arc::new(config.rules.clone()),
            key,
            key_generated,
            oidc: previous.map(|p| p.oidc.clone()).unwrap_or_default(),
            limiter: previous.map(|p| p.limiter.clone()).unwrap_or_default(),
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// A caller without credentials.
    pub fn anonymous(&self) -> Principal {
        Principal {
            name: ANONYMOUS.to_owned(),
            kind: PrincipalKind::Anonymous,
            identity: Identity::default(),
            access: Access::Rules { rules: self.rules.clone(), token: None },
        }
    }

    /// The caller presenting the verified client certificate named `name`.
    pub fn certificate(&self, name: &str) -> Principal {
        let identity = Identity { cert: Some(name.to_owned()), ..Identity::default() };
        self.principal(format!("cert:{name}"), PrincipalKind::Certificate, identity, None)
    }

    /// How long `address` is still blocked after too many failed logins, if it is.
    pub fn address_blocked(&self, address: IpAddr) -> Option<Duration> {
        self.limiter.address_blocked(&self.config.throttle, address, Instant::now())
    }

    /// Logs in with a user name and password; the password may be an OIDC token of a configured
    /// issuer (then the user name is ignored). Failures count towards throttling.
    pub async fn login(&self, user: &str, password: &str, client: IpAddr) -> Result<Principal, AuthError> {
        let now = Instant::now();
        let throttle = &self.config.throttle;
        if let Some(wait) = self.limiter.address_blocked(throttle, client, now).or_else(|| self.limiter.user_blocked(throttle, user, now)) {
            return Err(AuthError::Throttled(wait));
        }
        let result = if !self.config.oidc.is_empty() && oidc::looks_like_jwt(password) {
            self.verify_oidc(password).await
        } else {
            self.verify_password(user, password).await
        };
        if matches!(result, Err(AuthError::BadCredentials)) {
            self.limiter.record_failure(throttle, client, Some(user), Instant::now());
            tracing::info!(user, client = %client, "failed login");
        }
        result
    }

    /// Logs in with an OIDC token alone (token exchange).
    pub async fn login_oidc(&self, oidc_token: &str, client: IpAddr) -> Result<Principal, AuthError> {
        if let Some(wait) = self.address_blocked(client) {
            return Err(AuthError::Throttled(wait));
        }
        let result = self.verify_oidc(oidc_token).await;
        if matches!(result, Err(AuthError::BadCredentials)) {
            self.limiter.record_failure(&self.config.throttle, client, None, Instant::now());
            tracing::info!(client = %client, "failed OIDC login");
        }
        result
    }

    async fn verify_password(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        let Some(htpasswd) = self.config.htpasswd.clone() else {
            return Err(AuthError::BadCredentials);
        };
        let (user_owned, password) = (user.to_owned(), password.to_owned());
        // bcrypt takes tens of milliseconds on purpose: keep it off the async worker threads.
        let verified = tokio::task::spawn_blocking(move || htpasswd.verify(&user_owned, &password)).await.unwrap_or(false);
        if !verified {
            return Err(AuthError::BadCredentials);
        }
        let identity = Identity { user: Some(user.to_owned()), groups: self.config.groups_of(user), ..Identity::default() };
        Ok(self.principal(user.to_owned(), PrincipalKind::User, identity, None))
    }

    async fn verify_oidc(&self, oidc_token: &str) -> Result<Principal, AuthError> {
        match self.oidc.verify(&self.config.oidc, oidc_token).await {
            Ok(verified) => {
                let identity = Identity { user: Some(verified.name.clone()), roles: verified.roles, ..Identity::default() };
                Ok(self.principal(verified.name, PrincipalKind::Oidc, identity, None))
            }
            Err(oidc::OidcError::JwksUnavailable(url)) => Err(AuthError::Unavailable(format!("cannot fetch the JWKS at {url}"))),
            Err(err) => {
                tracing::info!(reason = %err, "OIDC token refused");
                Err(AuthError::BadCredentials)
            }
        }
    }

    fn principal(&self, name: String, kind: PrincipalKind, identity: Identity, token: Option<Arc<TokenScope>>) -> Principal {
        Principal { name, kind, identity, access: Access::Rules { rules: self.rules.clone(), token } }
    }

    /// The principal of a registry token, if the token is valid.
    pub fn verify_token(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self
            .key
            .verify(token, &self.config.issuer, &self.config.service)
            .map_err(|err| AuthError::InvalidToken(err.to_string()))?;
        let mut scope = TokenScope::default();
        for access in &claims.access {
            match access.kind.as_str() {
                "registry" if access.name == "catalog" => scope.catalog = true,
                "repository" => {
                    let actions: Vec<Action> = access.actions.iter().filter_map(|a| a.parse().ok()).collect();
                    scope.repositories.push((access.name.clone(), Actions::of(&actions)));
                }
                _ => {}
            }
        }
        let kind = match claims.kind.as_str() {
            "user" if !claims.sub.is_empty() => PrincipalKind::User,
            "oidc" if !claims.sub.is_empty() => PrincipalKind::Oidc,
            "cert" if claims.sub.starts_with("cert:") => PrincipalKind::Certificate,
            _ => PrincipalKind::Anonymous,
        };
        let (name, user, cert) = match kind {
            PrincipalKind::User | PrincipalKind::Oidc => (claims.sub.clone(), Some(claims.sub), None),
            PrincipalKind::Certificate => (claims.sub.clone(), None, claims.sub.strip_prefix("cert:").map(str::to_owned)),
            PrincipalKind::Open | PrincipalKind::Anonymous => (ANONYMOUS.to_owned(), None, None),
        };
        let identity = Identity { user, groups: claims.groups, roles: claims.roles, cert };
        Ok(self.principal(name, kind, identity, Some(Arc::new(scope))))
    }

    /// A console session for `principal` (a logged-in user or OIDC identity): a token signed with
    /// the registry's key for the console's own audience, so that it is never accepted as a
    /// registry token, nor a registry token as a session. It names who logged in, not what they
    /// may do: [`Auth::verify_session`] applies the rules in force at each request.
    pub fn issue_session(&self, principal: &Principal) -> Option<String> {
        let kind = match principal.kind {
            PrincipalKind::User | PrincipalKind::Oidc => principal.kind.as_str(),
            PrincipalKind::Open | PrincipalKind::Anonymous | PrincipalKind::Certificate => return None,
        };
        let claims = token::claims(
            &self.config.issuer,
            &self.session_audience(),
            &principal.name,
            kind,
            &[],
            &principal.identity.roles,
            Vec::new(),
            SESSION_TTL,
        );
        Some(self.key.sign(&claims))
    }

    /// The principal of a console session, with the rules in force now: a user's groups are read
    /// from today's configuration, and a user no longer in the htpasswd file has no session.
    pub fn verify_session(&self, session: &str) -> Result<Principal, AuthError> {
        let claims = self
            .key
            .verify(session, &self.config.issuer, &self.session_audience())
            .map_err(|err| AuthError::InvalidToken(err.to_string()))?;
        match claims.kind.as_str() {
            "user" if self.config.htpasswd.as_ref().is_some_and(|file| file.has_user(&claims.sub)) => {
                let identity = Identity { user: Some(claims.sub.clone()), groups: self.config.groups_of(&claims.sub), ..Identity::default() };
                Ok(self.principal(claims.sub, PrincipalKind::User, identity, None))
            }
            "oidc" if !claims.sub.is_empty() => {
                let identity = Identity { user: Some(claims.sub.clone()), roles: claims.roles, ..Identity::default() };
                Ok(self.principal(claims.sub, PrincipalKind::Oidc, identity, None))
            }
            _ => Err(AuthError::InvalidToken("the session names no current user".to_owned())),
        }
    }

    fn session_audience(&self) -> String {
        format!("{}#console", self.config.service)
    }

    /// Issues a token for `principal` with the part of `scopes` it is allowed now. Scopes it may
    /// not have are left out, as the Docker token protocol asks; a token may grant nothing.
    pub fn issue(&self, principal: &Principal, scopes: &[Scope]) -> IssuedToken {
        let mut access: Vec<AccessClaim> = Vec::new();
        for scope in scopes {
            match scope {
                Scope::Catalog => access.push(AccessClaim { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }),
                Scope::Repository { name, actions, all } => {
                    let wanted: Vec<Action> = if *all { Action::ALL.to_vec() } else { actions.clone() };
                    let granted: Vec<String> =
                        wanted.into_iter().filter(|a| principal.may(*a, name)).map(|a| a.as_str().to_owned()).collect();
                    if granted.is_empty() {
                        continue;
                    }
                    match access.iter_mut().find(|a| a.kind == "repository" && a.name == *name) {
                        Some(existing) => {
                            for action in granted {
                                if !existing.actions.contains(&action) {
                                    existing.actions.push(action);
                                }
                            }
                        }
                        None => access.push(AccessClaim { kind: "repository".into(), name: name.clone(), actions: granted }),
                    }
                }
            }
        }
        let subject = match principal.kind {
            PrincipalKind::User | PrincipalKind::Oidc | PrincipalKind::Certificate => principal.name.as_str(),
            PrincipalKind::Open | PrincipalKind::Anonymous => "",
        };
        let claims = token::claims(
            &self.config.issuer,
            &self.config.service,
            subject,
            principal.kind.as_str(),
            &principal.identity.groups,
            &principal.identity.roles,
            access.clone(),
            self.config.token_ttl,
        );
        IssuedToken { token: self.key.sign(&claims), expires_in: self.config.token_ttl.as_secs(), issued_at: claims.iat, access }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\nbob:{hash}\n")).unwrap();
        let text = r#"
            [auth]
            htpasswd = "htpasswd"
            [auth.groups]
            admins = ["bob"]
            [[auth.rules]]
            subjects = ["user:alice"]
            repositories = ["build/**"]
            actions = ["pull", "push"]
            [[auth.rules]]
            subjects = ["group:admins"]
            repositories = ["**"]
            actions = ["admin"]
            [[auth.rules]]
            subjects = ["anonymous"]
            repositories = ["public/**"]
            actions = ["pull"]
            "#;
        let config = crate::config::Config::parse_in(text, "test", dir.path(), &Default::default()).unwrap();
        Auth::new(Arc::new(config.auth.unwrap()), None)
    }

    #[tokio::test]
    async fn login_and_tokens() {
        let auth = auth();
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let alice = auth.login("alice", "pw", here).await.unwrap();
        assert_eq!(alice.name(), "alice");
        assert!(alice.may(Action::Push, "build/app"));
        assert!(!alice.may(Action::Push, "prod/app"));
        assert!(alice.may(Action::Pull, "public/base"));
        assert_eq!(auth.login("alice", "wrong", here).await.unwrap_err(), AuthError::BadCredentials);
        assert_eq!(auth.login("nobody", "pw", here).await.unwrap_err(), AuthError::BadCredentials);

        let scopes = [
            Scope::parse("repository:build/app:pull,push,delete").unwrap(),
            Scope::parse("repository:prod/app:pull").unwrap(),
        ];
        let issued = auth.issue(&alice, &scopes);
        assert_eq!(issued.access.len(), 1, "{:?}", issued.access);
        assert_eq!(issued.access[0].actions, vec!["pull", "push"]);
        let bearer = auth.verify_token(&issued.token).unwrap();
        assert_eq!(bearer.name(), "alice");
        assert!(bearer.may(Action::Push, "build/app"));
        assert!(!bearer.may(Action::Push, "build/other"), "outside the token's scope");
        assert!(!bearer.may(Action::Pull, "public/base"), "outside the token's scope");

        let anonymous = auth.verify_token(&auth.issue(&auth.anonymous(), &[Scope::parse("repository:public/base:pull,push").unwrap()]).token).unwrap();
        assert_eq!(anonymous.name(), ANONYMOUS);
        assert!(anonymous.may(Action::Pull, "public/base"));
        assert!(!anonymous.may(Action::Push, "public/base"));
        assert!(!anonymous.is_unauthenticated());
        assert!(auth.anonymous().is_unauthenticated());

        let bob = auth.login("bob", "pw", here).await.unwrap();
        let catalog = auth.verify_token(&auth.issue(&bob, &[Scope::Catalog]).token).unwrap();
        assert!(catalog.may_list("prod/anything"));
        assert!(!catalog.may(Action::Pull, "prod/anything"), "catalog scope lists, it does not pull");
    }

    #[tokio::test]
    async fn console_sessions_are_not_registry_tokens() {
        let auth = auth();
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let alice = auth.login("alice", "pw", here).await.unwrap();
        let session = auth.issue_session(&alice).unwrap();
        let again = auth.verify_session(&session).unwrap();
        assert_eq!(again.name(), "alice");
        assert!(again.may(Action::Push, "build/app"), "the rules apply, not a scope");
        assert!(!again.may(Action::Pull, "prod/app"));
        assert!(matches!(auth.verify_token(&session), Err(AuthError::InvalidToken(_))), "a session is no registry token");
        let token = auth.issue(&alice, &[Scope::parse("repository:build/app:pull").unwrap()]).token;
        assert!(matches!(auth.verify_session(&token), Err(AuthError::InvalidToken(_))), "a registry token is no session");
        assert!(auth.issue_session(&auth.anonymous()).is_none());
        let mut forged = session.clone();
        forged.push('x');
        assert!(auth.verify_session(&forged).is_err());
    }

    #[tokio::test]
    async fn failed_logins_are_throttled() {
        let auth = auth();
        let here: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..auth.config().throttle.per_user {
            assert_eq!(auth.login("alice", "wrong", here).await.unwrap_err(), AuthError::BadCredentials);
        }
        assert!(matches!(auth.login("alice", "pw", here).await, Err(AuthError::Throttled(_))), "even the right password waits");
        let elsewhere: IpAddr = "127.0.0.10".parse().unwrap();
        assert!(matches!(auth.login("alice", "pw", elsewhere).await, Err(AuthError::Throttled(_))), "per user, from any address");
        assert!(auth.login("bob", "pw", elsewhere).await.is_ok());
    }

    #[test]
    fn open_principal_may_everything_but_skip_gates() {
        let open = Principal::open();
        assert_eq!(open.name(), ANONYMOUS);
        for action in Action::ALL {
            assert!(open.may(action, "prod/app"));
        }
        assert!(!open.may_skip_gate("prod/app", false), "without auth, gates hold for everyone");
    }

    #[tokio::test]
    async fn who_skips_gates() {
        let auth = auth();
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let alice = auth.login("alice", "pw", here).await.unwrap();
        assert!(alice.may_skip_gate("build/app", false), "push holder");
        // Regression: #13 (7). Where nobody pushes, pushing is no reason to skip the gate.
        assert!(!alice.may_skip_gate("build/app", true), "push holder in a promotion-only namespace");
        assert!(!alice.may_skip_gate("public/base", false), "pull only");
        let bob = auth.login("bob", "pw", here).await.unwrap();
        assert!(bob.may_skip_gate("prod/app", true), "admin implies scanner");
        assert!(!auth.anonymous().may_skip_gate("public/base", false));
        let pull_token = auth.verify_token(&auth.issue(&alice, &[Scope::parse("repository:build/app:pull").unwrap()]).token).unwrap();
        assert!(!pull_token.may_skip_gate("build/app", false), "a pull-only token does not carry push");
    }
}
