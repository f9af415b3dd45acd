//! Authenticating to an upstream as registry clients do: the `WWW-Authenticate` challenge of a
//! 401 says how (`Basic`, or `Bearer` with the realm of a token endpoint, the Docker token
//! flow), token responses are parsed within bounds, and tokens are cached per scope until
//! shortly before they expire. No I/O here: `client` sends the requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::SecretString;

/// How an upstream asked to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    /// `Basic realm="..."`: send the credentials with every request.
    Basic,
    /// `Bearer realm="...",service="..."`: get a token from `realm` and send it.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` to ask the token for, if the challenge named one.
        service: Option<String>,
    },
}

/// A token as the token endpoint gave it.
pub(super) struct IssuedToken {
    /// The bearer token.
    pub(super) token: SecretString,
    /// How long it is valid.
    pub(super) lifetime: Duration,
}

/// Largest token response read: a JWT with a generous scope list fits many times over.
pub(super) const MAX_TOKEN_RESPONSE: usize = 64 << 10;
/// Lifetime of a token whose response names none (the Docker token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest a token is cached, whatever it says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Tokens are dropped this long before they expire, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Most tokens cached per upstream (one per repository pulled through); beyond, expired ones go,
/// then all.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Parses a `WWW-Authenticate` value. `None` when it is neither a Basic nor a well-formed Bearer
/// challenge.
pub(super) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest)?;
    let param = |name: &str| params.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.clone());
    Some(Challenge::Bearer { realm: param("realm")?, service: param("service") })
}

/// `key=value` and `key="quoted, value"` pairs separated by commas (RFC 7235 auth-params).
fn parse_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(params);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = if chars.next_if_eq(&'"').is_some() {
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            value
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',' && !c.is_whitespace())).collect()
        };
        params.push((key, value));
    }
}

/// Parses a token endpoint's answer (`{"token": ..., "expires_in": ...}`; `access_token` is the
/// OAuth2 spelling of the same).
pub(super) fn parse_token_response(bytes: &[u8]) -> Result<IssuedToken, String> {
    #[derive(serde::Deserialize)]
    struct Response {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let response: Response = serde_json::from_slice(bytes).map_err(|err| format!("the token response is not the expected JSON: {err}"))?;
    let token = response.token.filter(|t| !t.is_empty()).or(response.access_token).filter(|t| !t.is_empty());
    let token = token.ok_or("the token response holds no token")?;
    // It goes into an Authorization header: visible ASCII only.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token holds characters a header cannot carry".to_owned());
    }
    let lifetime = response.expires_in.map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs).min(MAX_TOKEN_LIFETIME);
    Ok(IssuedToken { token: token.into(), lifetime })
}

/// What an upstream said about authentication, and the tokens it gave, by scope.
#[derive(Default)]
pub(super) struct Tokens {
    /// The last challenge seen, so later requests authenticate before they are refused.
    challenge: Mutex<Option<Challenge>>,
    cached: Mutex<HashMap<String, (SecretString, Instant)>>,
}

impl Tokens {
    /// The challenge the upstream answered last, if any.
    pub(super) fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().expect("token lock is never poisoned").clone()
    }

    /// Remembers the upstream's challenge.
    pub(super) fn set_challenge(&self, challenge: Challenge) {
        *self.challenge.lock().expect("token lock is never poisoned") = Some(challenge);
    }

    /// A cached token for `scope` that is still valid.
    pub(super) fn get(&self, scope: &str) -> Option<SecretString> {
        let cached = self.cached.lock().expect("token lock is never poisoned");
        cached.get(scope).filter(|(_, valid_until)| Instant::now() < *valid_until).map(|(token, _)| token.clone())
    }

    /// Caches `issued` for `scope` until shortly before it expires.
    pub(super) fn put(&self, scope: &str, issued: &IssuedToken) {
        let valid_until = Instant::now() + issued.lifetime.saturating_sub(EXPIRY_MARGIN);
        let mut cached = self.cached.lock().expect("token lock is never poisoned");
        if cached.len() >= MAX_CACHED_TOKENS {
            let now = Instant::now();
            cached.retain(|_, (_, until)| now < *until);
            if cached.len() >= MAX_CACHED_TOKENS {
                cached.clear();
            }
        }
        cached.insert(scope.to_owned(), (issued.token.clone(), valid_until));
    }

    /// Forgets the token for `scope` (the upstream refused it).
    pub(super) fn forget(&self, scope: &str) {
        self.cached.lock().expect("token lock is never poisoned").remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn challenges() {
        let bearer = |realm: &str, service: Option<&str>| Some(Challenge::Bearer { realm: realm.into(), service: service.map(Into::into) });
        let cases = [
            (r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#, bearer("https://auth.docker.io/token", Some("registry.docker.io"))),
            (r#"bearer realm="https://r/t", scope="repository:a:pull,push""#, bearer("https://r/t", None)),
            (r#"Bearer service="s", realm="https://r/t""#, bearer("https://r/t", Some("s"))),
            (r#"Bearer realm=https://r/t,service=s"#, bearer("https://r/t", Some("s"))),
            (r#"Bearer realm="https://r/\"q\"""#, bearer(r#"https://r/"q""#, None)),
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            ("basic", Some(Challenge::Basic)),
            (r#"Bearer service="s""#, None),
            (r#"Bearer realm="unterminated"#, None),
            (r#"Bearer =x"#, None),
            ("Digest realm=\"x\"", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_challenge(value), expected, "{value}");
        }
    }

    #[test]
    fn token_responses() {
        let check = |json: &str, expected: Result<(&str, u64), &str>| match (parse_token_response(json.as_bytes()), expected) {
            (Ok(issued), Ok((token, secs))) => {
                assert_eq!((issued.token.expose_secret(), issued.lifetime.as_secs()), (token, secs), "{json}");
            }
            (Err(err), Err(part)) => assert!(err.contains(part), "{json}: {err}"),
            (Ok(_), Err(part)) => panic!("{json}: accepted, expected an error with {part:?}"),
            (Err(err), Ok(_)) => panic!("{json}: {err}"),
        };
        check(r#"{"token":"t1","expires_in":300}"#, Ok(("t1", 300)));
        check(r#"{"access_token":"t2"}"#, Ok(("t2", 60)));
        check(r#"{"token":"","access_token":"t3","expires_in":1}"#, Ok(("t3", 1)));
        check(r#"{"token":"t4","expires_in":99999999}"#, Ok(("t4", 3600)));
        check(r#"{"expires_in":300}"#, Err("holds no token"));
        check(r#"{"token":"a\r\nX-Injected: 1"}"#, Err("characters a header cannot carry"));
        check("<html>", Err("not the expected JSON"));
    }

    #[test]
    fn tokens_expire_before_they_do_upstream() {
        let tokens = Tokens::default();
        tokens.put("repository:a:pull", &IssuedToken { token: "t".to_owned().into(), lifetime: Duration::from_secs(300) });
        assert_eq!(tokens.get("repository:a:pull").map(|t| t.expose_secret().to_owned()).as_deref(), Some("t"));
        assert!(tokens.get("repository:b:pull").is_none());
        // A token that lives less than the margin is never used.
        tokens.put("repository:c:pull", &IssuedToken { token: "t".to_owned().into(), lifetime: Duration::from_secs(5) });
        assert!(tokens.get("repository:c:pull").is_none());
        tokens.forget("repository:a:pull");
        assert!(tokens.get("repository:a:pull").is_none());
    }
}
