//! OIDC identities for CI: a JWT from a configured issuer (e.g. GitHub Actions), verified against
//! the issuer's JWKS (a file, or a URL fetched and cached), whose claims are matched by claim
//! rules to roles.
//!
//! Only asymmetric algorithms are accepted, and only the one the key is for: a JWKS holding a
//! symmetric (`oct`) key is refused at load time, `alg: none` does not parse, and a header
//! algorithm of another family than the key's is refused. The token's `iss` is read before the
//! signature is checked only to pick the provider; everything else comes from verified claims.

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Seconds of clock skew tolerated with the issuer.
const LEEWAY_SECS: u64 = 30;
/// A JWKS fetched from a URL is refreshed this often, and at most this often when a token names
/// a key id it does not hold (keys rotate).
const JWKS_REFRESH: Duration = Duration::from_secs(3600);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// A configured OIDC issuer.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Name, used in principal names (`NAME:SUBJECT`).
    pub name: String,
    /// `iss`, exact.
    pub issuer: String,
    /// Accepted `aud` values; one must match.
    pub audiences: Vec<String>,
    /// Where the keys come from.
    pub jwks: JwksSource,
    /// Claim whose value names the principal (default `sub`).
    pub username_claim: String,
    /// Claim rules: each maps matching tokens to a role.
    pub roles: Vec<RoleRule>,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Loaded with the configuration.
    Static(Keys),
    /// Fetched over HTTPS at run time, cached.
    Url(String),
}

/// Verification keys of a JWKS.
#[derive(Clone, Default)]
pub struct Keys(Vec<VerificationKey>);

#[derive(Clone)]
struct VerificationKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|k| (&k.kid, &k.algorithms))).finish()
    }
}

/// A claim rule: every listed claim matches its glob -> the role.
#[derive(Debug, Clone)]
pub struct RoleRule {
    /// The role granted.
    pub role: String,
    claims: Vec<(String, String, globset::GlobMatcher)>,
}

impl RoleRule {
    /// A rule granting `role` when every `(claim, glob)` matches (globs: `*`, `?`, `{a,b}`;
    /// `*` crosses `/`, so `myorg/*` matches `myorg/app`).
    pub fn new(role: &str, claims: &[(String, String)]) -> Result<RoleRule, String> {
        if claims.is_empty() {
            return Err(format!("role {role:?}: a claim rule needs at least one claim"));
        }
        let claims = claims
            .iter()
            .map(|(claim, pattern)| {
                let glob = globset::Glob::new(pattern).map_err(|err| format!("role {role:?}, claim {claim}: {err}"))?;
                Ok((claim.clone(), pattern.clone(), glob.compile_matcher()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RoleRule { role: role.to_owned(), claims })
    }

    fn matches(&self, claims: &serde_json::Map<String, serde_json::Value>) -> bool {
        self.claims.iter().all(|(claim, _, glob)| match claims.get(claim) {
            Some(serde_json::Value::String(value)) => glob.is_match(value),
            Some(value @ (serde_json::Value::Bool(_) | serde_json::Value::Number(_))) => glob.is_match(value.to_string()),
            _ => false,
        })
    }
}

impl Keys {
    /// Parses a JWKS document. Keys that are not for signatures are skipped; a symmetric key is
    /// an error, since it would let anyone who reads the JWKS sign tokens.
    pub fn parse(json: &str) -> Result<Keys, String> {
        let doc: serde_json::Value = serde_json::from_str(json).map_err(|err| format!("JWKS is not JSON: {err}"))?;
        let entries = doc["keys"].as_array().ok_or("JWKS has no \"keys\" array")?;
        let mut keys = Vec::new();
        for entry in entries {
            if entry["kty"] == "oct" {
                return Err("JWKS holds a symmetric (oct) key; only public keys are accepted".to_owned());
            }
            if entry.get("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else { continue };
            let algorithms = algorithms_for(&jwk)?;
            if algorithms.is_empty() {
                continue;
            }
            let key = DecodingKey::from_jwk(&jwk).map_err(|err| format!("JWKS key {:?}: {err}", jwk.common.key_id))?;
            keys.push(VerificationKey { kid: jwk.common.key_id.clone(), key, algorithms });
        }
        if keys.is_empty() {
            return Err("JWKS holds no usable signature key".to_owned());
        }
        Ok(Keys(keys))
    }

    fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerificationKey> + 'a {
        self.0.iter().filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
    }

    fn has_kid(&self, kid: Option<&str>) -> bool {
        self.candidates(kid).next().is_some()
    }
}

/// The asymmetric algorithms a JWK may verify.
fn algorithms_for(jwk: &Jwk) -> Result<Vec<Algorithm>, String> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err("JWKS holds a symmetric key".to_owned()),
    };
    let named = match jwk.common.key_algorithm {
        None => return Ok(by_type),
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return Ok(vec![]),
    };
    Ok(by_type.into_iter().filter(|alg| *alg == named).collect())
}

/// A verified OIDC identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// `PROVIDER:USERNAME`
    pub name: String,
    /// Roles whose claim rules matched.
    pub roles: Vec<String>,
}

/// Why an OIDC token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT, or its `iss` is not a configured provider.
    #[error("not a token of a configured OIDC issuer")]
    UnknownIssuer,
    /// Signature, algorithm, audience, expiry or claims wrong.
    #[error("OIDC token refused: {0}")]
    Invalid(String),
    /// The issuer's JWKS could not be fetched.
    #[error("cannot fetch the JWKS of {0}")]
    JwksUnavailable(String),
}

/// Whether `text` looks like a JWT (three base64url parts, a JSON header), so that a password
/// can be told apart from an OIDC token presented as a password.
pub fn looks_like_jwt(text: &str) -> bool {
    let mut parts = text.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| header.get("alg").is_some())
}

/// The claimed issuer of a JWT, unverified: only for choosing which provider verifies it.
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["iss"].as_str().map(str::to_owned)
}

/// Verifies OIDC tokens for the configured providers; caches JWKS fetched from URLs.
#[derive(Debug, Default)]
pub struct Verifier {
    fetched: tokio::sync::Mutex<std::collections::HashMap<String, (Keys, Instant)>>,
}

impl Verifier {
    /// Verifies `token` against the provider whose issuer it names.
    pub async fn verify(&self, providers: &[Provider], token: &str) -> Result<OidcIdentity, OidcError> {
        let issuer = claimed_issuer(token).ok_or(OidcError::UnknownIssuer)?;
        let provider = providers.iter().find(|p| p.issuer == issuer).ok_or(OidcError::UnknownIssuer)?;
        let header = jsonwebtoken::decode_header(token).map_err(|err| OidcError::Invalid(format!("header: {err}")))?;
        let kid = header.kid.as_deref();
        let keys = match &provider.jwks {
            JwksSource::Static(keys) => keys.clone(),
            JwksSource::Url(url) => self.keys_from(url, kid).await?,
        };
        let mut last_error = format!("no key {} in the JWKS", kid.unwrap_or("(no kid)"));
        for candidate in keys.candidates(kid) {
            if !candidate.algorithms.contains(&header.alg) {
                last_error = format!("algorithm {:?} does not fit the key", header.alg);
                continue;
            }
            let mut validation = Validation::new(header.alg);
            validation.algorithms = vec![header.alg];
            validation.leeway = LEEWAY_SECS;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.set_issuer(&[&provider.issuer]);
            validation.set_audience(&provider.audiences);
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &candidate.key, &validation) {
                Ok(data) => return identity(provider, &data.claims),
                Err(err) => last_error = err.to_string(),
            }
        }
        Err(OidcError::Invalid(last_error))
    }

    async fn keys_from(&self, url: &str, kid: Option<&str>) -> Result<Keys, OidcError> {
        let mut fetched = self.fetched.lock().await;
        if let Some((keys, at)) = fetched.get(url) {
            let fresh = at.elapsed() < JWKS_REFRESH;
            let may_refetch = at.elapsed() >= JWKS_MIN_REFETCH;
            if fresh && (keys.has_kid(kid) || !may_refetch) {
                return Ok(keys.clone());
            }
        }
        match fetch_jwks(url).await {
            Ok(keys) => {
                fetched.insert(url.to_owned(), (keys.clone(), Instant::now()));
                Ok(keys)
            }
            Err(err) => {
                tracing::warn!(url, error = %err, "JWKS fetch failed");
                // A stale set is better than none while the issuer is unreachable.
                fetched.get(url).map(|(keys, _)| keys.clone()).ok_or_else(|| OidcError::JwksUnavailable(url.to_owned()))
            }
        }
    }
}

async fn fetch_jwks(url: &str) -> Result<Keys, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|err| err.to_string())?;
    let response = client.get(url).send().await.map_err(|err| err.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let bytes = response.bytes().await.map_err(|err| err.to_string())?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    Keys::parse(&String::from_utf8_lossy(&bytes))
}

fn identity(provider: &Provider, claims: &serde_json::Map<String, serde_json::Value>) -> Result<OidcIdentity, OidcError> {
    let username = claims
        .get(&provider.username_claim)
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OidcError::Invalid(format!("claim {} missing", provider.username_claim)))?;
    let mut roles: Vec<String> = provider.roles.iter().filter(|rule| rule.matches(claims)).map(|rule| rule.role.clone()).collect();
    roles.sort();
    roles.dedup();
    Ok(OidcIdentity { name: format!("{}:{username}", provider.name), roles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_rules() {
        let rule = RoleRule::new(
            "release",
            &[("repository".into(), "myorg/myrepo".into()), ("ref".into(), "refs/heads/main".into())],
        )
        .unwrap();
        let claims = |json: serde_json::Value| json.as_object().unwrap().clone();
        assert!(rule.matches(&claims(serde_json::json!({"repository": "myorg/myrepo", "ref": "refs/heads/main"}))));
        assert!(!rule.matches(&claims(serde_json::json!({"repository": "myorg/other", "ref": "refs/heads/main"}))));
        assert!(!rule.matches(&claims(serde_json::json!({"repository": "myorg/myrepo", "ref": "refs/heads/feature"}))));
        assert!(!rule.matches(&claims(serde_json::json!({"repository": "myorg/myrepo"}))));
        let any_repo = RoleRule::new("org", &[("repository".into(), "myorg/*".into())]).unwrap();
        assert!(any_repo.matches(&claims(serde_json::json!({"repository": "myorg/a"}))));
        assert!(!any_repo.matches(&claims(serde_json::json!({"repository": "other/a"}))));
        assert!(RoleRule::new("empty", &[]).is_err());
    }

    #[test]
    fn jwks_without_symmetric_keys() {
        let err = Keys::parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap_err();
        assert!(err.contains("symmetric"), "{err}");
        assert!(Keys::parse(r#"{"keys":[]}"#).is_err());
        assert!(Keys::parse("nope").is_err());
        let ec = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let keys = Keys::parse(ec).unwrap();
        assert!(keys.has_kid(Some("k1")));
        assert!(!keys.has_kid(Some("k2")));
        assert_eq!(keys.0[0].algorithms, vec![Algorithm::ES256]);
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.e30.sig"));
        assert!(!looks_like_jwt("correct horse battery staple"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.e30"));
    }
}
