//! Registry tokens: short-lived JWTs (ES256) issued by the token endpoint and verified on every
//! request. A token carries who it was issued to and exactly the scope granted; verification
//! checks the signature with the registry's key only, with ES256 only (so `alg: none` and HS256
//! keyed with the public key are refused), and checks issuer, audience, expiry and not-before.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::rules::Action;

/// Seconds of clock skew tolerated between replicas.
const LEEWAY_SECS: u64 = 5;

/// One granted scope: `repository:NAME:ACTIONS` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaim {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The registry (`auth.issuer`).
    pub iss: String,
    /// The principal's name; empty for anonymous tokens.
    pub sub: String,
    /// The service (`auth.service`).
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// What the token grants.
    pub access: Vec<AccessClaim>,
    /// `user`, `oidc` or `anonymous`.
    pub kind: String,
    /// Groups of the user when the token was issued.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Roles of the OIDC identity when the token was issued.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The registry's token signing key (ECDSA P-256).
#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key, an uncompressed P-256 point.
    public: Vec<u8>,
    /// Key id: the first 16 hex digits of sha256 of the public key.
    kid: String,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// Why a token was refused. The variants are for logs and tests; clients see `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past `exp` (or before `nbf`).
    #[error("token expired")]
    Expired,
    /// Not signed by this registry's key, or not with ES256.
    #[error("token signature or algorithm invalid")]
    Signature,
    /// Issued for another service or by another issuer.
    #[error("token issued for another audience or by another issuer")]
    Audience,
    /// Not a token at all.
    #[error("malformed token")]
    Malformed,
}

impl TokenKey {
    /// A new random key (tokens die with the process; fine for one replica).
    pub fn generate() -> TokenKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generating a P-256 key only fails without a system random source");
        TokenKey::from_pkcs8(pkcs8.as_ref()).expect("ring's own PKCS#8 output parses")
    }

    /// A key from PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`, P-256).
    pub fn from_pem(pem: &str) -> Result<TokenKey, String> {
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|err| format!("expected a PKCS#8 PEM private key (BEGIN PRIVATE KEY): {err}"))?;
        TokenKey::from_pkcs8(der.secret_pkcs8_der())
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|err| format!("expected an ECDSA P-256 private key: {err}"))?;
        let public = pair.public_key().as_ref();
        let kid = hex::encode(&sha2::Sha256::digest(public)[..8]);
        Ok(TokenKey {
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding: DecodingKey::from_ec_der(public),
            public: public.to_vec(),
            kid,
        })
    }

    /// The public key (an uncompressed P-256 point), for services that verify registry tokens.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("ES256 signing of serialisable claims cannot fail")
    }

    /// Verifies a token issued by `issuer` for `audience` and returns its claims.
    pub fn verify(&self, token: &str, issuer: &str, audience: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.algorithms = vec![Algorithm::ES256];
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => Ok(data.claims),
            Err(err) => {
                use jsonwebtoken::errors::ErrorKind as K;
                Err(match err.kind() {
                    K::ExpiredSignature | K::ImmatureSignature => TokenError::Expired,
                    K::InvalidSignature | K::InvalidAlgorithm | K::InvalidAlgorithmName | K::InvalidKeyFormat => {
                        TokenError::Signature
                    }
                    K::InvalidAudience | K::InvalidIssuer => TokenError::Audience,
                    _ => TokenError::Malformed,
                })
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The claims of a new token valid for `ttl` from now.
#[allow(clippy::too_many_arguments)]
pub fn claims(
    issuer: &str,
    audience: &str,
    subject: &str,
    kind: &str,
    groups: &[String],
    roles: &[String],
    access: Vec<AccessClaim>,
    ttl: Duration,
) -> Claims {
    let now = now_secs();
    Claims {
        iss: issuer.to_owned(),
        sub: subject.to_owned(),
        aud: audience.to_owned(),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        access,
        kind: kind.to_owned(),
        groups: groups.to_vec(),
        roles: roles.to_vec(),
    }
}

/// A requested scope, `repository:build/app:pull,push` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Actions on a repository; `*` asks for every action the caller holds.
    Repository {
        /// The repository name (not validated here).
        name: String,
        /// Requested actions; unknown names are dropped.
        actions: Vec<Action>,
        /// `*` was asked.
        all: bool,
    },
    /// The catalog.
    Catalog,
}

impl Scope {
    /// Parses one scope; `None` for scopes this registry does not grant.
    pub fn parse(text: &str) -> Option<Scope> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // `repository(plugin):name:pull` names a resource class; the class does not matter here.
        let kind = kind.split('(').next().unwrap_or(kind);
        match kind {
            "registry" if name == "catalog" => Some(Scope::Catalog),
            "repository" if !name.is_empty() => {
                let all = actions.split(',').any(|a| a == "*");
                let actions = actions.split(',').filter_map(|a| a.parse().ok()).collect();
                Some(Scope::Repository { name: name.to_owned(), actions, all })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &TokenKey, ttl: Duration) -> String {
        let access = vec![AccessClaim { kind: "repository".into(), name: "build/app".into(), actions: vec!["pull".into()] }];
        key.sign(&claims("portcullis", "registry", "alice", "user", &[], &[], access, ttl))
    }

    #[test]
    fn verifies_only_its_own_fresh_tokens() {
        let key = TokenKey::generate();
        let token = sample(&key, Duration::from_secs(60));
        let verified = key.verify(&token, "portcullis", "registry").unwrap();
        assert_eq!(verified.sub, "alice");
        assert_eq!(verified.access[0].name, "build/app");

        assert_eq!(key.verify(&token, "portcullis", "other"), Err(TokenError::Audience));
        assert_eq!(key.verify(&token, "someone-else", "registry"), Err(TokenError::Audience));
        let other = TokenKey::generate();
        assert_eq!(other.verify(&token, "portcullis", "registry"), Err(TokenError::Signature));
        assert_eq!(key.verify("not.a.token", "portcullis", "registry"), Err(TokenError::Malformed));

        let mut expired = claims("portcullis", "registry", "alice", "user", &[], &[], vec![], Duration::ZERO);
        expired.exp -= 3600;
        expired.nbf -= 3600;
        assert_eq!(key.verify(&key.sign(&expired), "portcullis", "registry"), Err(TokenError::Expired));
    }

    #[test]
    fn algorithm_swaps_are_refused() {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let key = TokenKey::generate();
        let token = sample(&key, Duration::from_secs(60));
        let payload = token.split('.').nth(1).unwrap();

        let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(key.verify(&none, "portcullis", "registry").is_err());

        // HS256 "signed" with the public key, the classic confusion attack.
        let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.public);
        let signature = ring::hmac::sign(&hmac, format!("{header}.{payload}").as_bytes());
        let hs256 = format!("{header}.{payload}.{}", b64(signature.as_ref()));
        assert_eq!(key.verify(&hs256, "portcullis", "registry"), Err(TokenError::Signature));
    }

    #[test]
    fn scopes() {
        let repo = |name: &str, actions: &[Action], all: bool| Scope::Repository { name: name.into(), actions: actions.to_vec(), all };
        let cases: Vec<(&str, Option<Scope>)> = vec![
            ("repository:build/app:pull", Some(repo("build/app", &[Action::Pull], false))),
            ("repository:build/app:pull,push", Some(repo("build/app", &[Action::Pull, Action::Push], false))),
            ("repository(plugin):a:pull", Some(repo("a", &[Action::Pull], false))),
            ("repository:a:*", Some(repo("a", &[], true))),
            ("repository:a:pull,bogus", Some(repo("a", &[Action::Pull], false))),
            ("registry:catalog:*", Some(Scope::Catalog)),
            ("registry:other:*", None),
            ("repository::pull", None),
            ("nonsense", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Scope::parse(text), expected, "{text}");
        }
    }
}
