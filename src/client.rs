//! The CLI's client side: `portcullis check`, `portcullis promote` and `portcullis upstreams`
//! talk to a running registry over its HTTP API and print for people (or JSON for scripts). Exit codes: 0 pass / promoted,
//! 1 denied, 2 error.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};

/// Exit code: the image passes, or was promoted.
pub const EXIT_OK: i32 = 0;
/// Exit code: denied by the gate, or a tag conflict.
pub const EXIT_DENIED: i32 = 1;
/// Exit code: anything else went wrong.
pub const EXIT_ERROR: i32 = 2;

/// How the client authenticates: Basic credentials (the password may be a CI's OIDC token) and a
/// private CA to trust.
#[derive(Debug, Default)]
pub struct Access {
    user: Option<String>,
    password: Option<SecretString>,
    ca_cert: Option<PathBuf>,
}

impl Access {
    /// `user` and `ca_cert` from flags; the password from `PORTCULLIS_PASSWORD` through `env`.
    pub fn new(user: Option<String>, ca_cert: Option<PathBuf>, env: impl Fn(&str) -> Option<String>) -> Access {
        Access { user, password: env("PORTCULLIS_PASSWORD").map(SecretString::from), ca_cert }
    }
}

fn client(access: &Access) -> Result<reqwest::Client, i32> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(600));
    if let Some(path) = &access.ca_cert {
        let pem = std::fs::read(path).map_err(|err| fail(&format!("cannot read {}: {err}", path.display())))?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|err| fail(&format!("{}: {err}", path.display())))?;
        builder = builder.add_root_certificate(ca);
    }
    if let Some(user) = &access.user {
        use base64::Engine as _;
        let password = access.password.as_ref().map_or("", ExposeSecret::expose_secret);
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| fail("the user name or password holds characters a header cannot carry"))?;
        value.set_sensitive(true);
        builder = builder.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]));
    }
    builder.build().map_err(|err| fail(&format!("cannot build an HTTP client: {err}")))
}

fn say(text: &str) {
    // Broken pipes (`| head`) are not worth a panic.
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn fail(text: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "error: {text}");
    EXIT_ERROR
}

/// Prints a verdict's requirements, warnings and rejected evidence.
fn print_verdict(verdict: &serde_json::Value) {
    for requirement in verdict["requirements"].as_array().into_iter().flatten() {
        let mark = if requirement["passed"].as_bool() == Some(true) { "pass" } else { "FAIL" };
        say(&format!("  [{mark}] {}: {}", requirement["name"].as_str().unwrap_or("?"), requirement["detail"].as_str().unwrap_or("")));
    }
    for warning in verdict["warnings"].as_array().into_iter().flatten() {
        say(&format!("  warning: {}", warning.as_str().unwrap_or("")));
    }
    for rejected in verdict["rejected"].as_array().into_iter().flatten() {
        say(&format!("  rejected evidence {}: {}", rejected["source"].as_str().unwrap_or("?"), rejected["reason"].as_str().unwrap_or("")));
    }
}

/// The status and JSON body of an answer, or the exit code of a failure to get one.
async fn read_answer(registry: &str, res: reqwest::Result<reqwest::Response>) -> Result<(reqwest::StatusCode, serde_json::Value), i32> {
    let res = res.map_err(|err| fail(&format!("cannot reach {registry}: {err}")))?;
    let status = res.status();
    let body = res.json().await.map_err(|err| fail(&format!("unreadable answer ({status}): {err}")))?;
    Ok((status, body))
}

fn error_message(body: &serde_json::Value) -> String {
    body["errors"][0]["message"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_string())
}

/// `portcullis check --registry URL IMAGE [--target REPO]`.
pub async fn check(registry: &str, access: &Access, image: &str, target: Option<&str>, json: bool) -> i32 {
    let url = format!("{}/api/v1/verdict", registry.trim_end_matches('/'));
    let mut query = vec![("image", image)];
    query.extend(target.map(|target| ("target", target)));
    let client = match client(access) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let (status, body) = match read_answer(registry, client.get(url).query(&query).send().await).await {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if !status.is_success() {
        return fail(&error_message(&body));
    }
    if json {
        say(&body.to_string());
    } else if body["gated"].as_bool() != Some(true) {
        say(&format!("{image} ({}) is in an ungated namespace: pulls and promotions need no evidence", body["digest"].as_str().unwrap_or("?")));
    } else {
        let verdict = &body["verdict"];
        let passed = verdict["passed"].as_bool() == Some(true);
        say(&format!("{} {}", verdict["image"].as_str().unwrap_or(image), if passed { "passes" } else { "would be denied" }));
        print_verdict(verdict);
    }
    match body["verdict"]["passed"].as_bool() {
        Some(false) => EXIT_DENIED,
        _ => EXIT_OK,
    }
}

/// `portcullis promote --registry URL SOURCE TARGET --tag T...`.
pub async fn promote(registry: &str, access: &Access, source: &str, target: &str, tags: &[String], dry_run: bool, json: bool) -> i32 {
    let url = format!("{}/api/v1/promotions", registry.trim_end_matches('/'));
    let request = serde_json::json!({ "source": source, "target": target, "tags": tags, "dry_run": dry_run });
    let started = Instant::now();
    let client = match client(access) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let sending = client.post(url).json(&request).send();
    tokio::pin!(sending);
    // Linking is server-side and needs no byte copy, but a large artifact with many referrers
    // can take a while: say so once a second instead of looking hung.
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let res = loop {
        tokio::select! {
            res = &mut sending => break res,
            _ = ticks.tick() => {
                let _ = writeln!(std::io::stderr(), "promoting {source} -> {target} ... {}s", started.elapsed().as_secs());
            }
        }
    };
    let (status, body) = match read_answer(registry, res).await {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if json {
        say(&body.to_string());
    }
    match status.as_u16() {
        200 | 201 => {
            if !json {
                let promotion = &body["promotion"];
                let what = match (promotion["result"].as_str(), body["already_done"].as_bool()) {
                    (Some("dry_run"), _) => "would be promoted (dry run, nothing written)",
                    (_, Some(true)) => "was already promoted",
                    _ => "promoted",
                };
                say(&format!("{source} ({}) {what} to {target} with tags {:?}", promotion["digest"].as_str().unwrap_or("?"), tags));
                let linked = &promotion["linked"];
                say(&format!("  linked {} blobs, {} manifests, {} evidence manifests; verification summary {}",
                    linked["blobs"], linked["manifests"], linked["evidence"], promotion["vsa"].as_str().unwrap_or("none (ungated target)")));
                if !promotion["verdict"].is_null() {
                    print_verdict(&promotion["verdict"]);
                }
            }
            EXIT_OK
        }
        403 | 409 => {
            if !json {
                say(&format!("denied: {}", error_message(&body)));
                if !body["verdict"].is_null() {
                    print_verdict(&body["verdict"]);
                }
            }
            EXIT_DENIED
        }
        _ => fail(&format!("{status}: {}", error_message(&body))),
    }
}

/// `portcullis upstreams --registry URL`: one line per upstream (name, health, URL, namespace,
/// cache size and cap, last error). Exit 0 when every upstream answered last, 1 when one is down.
pub async fn upstreams(registry: &str, access: &Access, json: bool) -> i32 {
    let url = format!("{}/api/v1/upstreams", registry.trim_end_matches('/'));
    let client = match client(access) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let (status, body) = match read_answer(registry, client.get(url).send().await).await {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if !status.is_success() {
        return fail(&error_message(&body));
    }
    let upstreams = body["upstreams"].as_array().cloned().unwrap_or_default();
    if json {
        say(&body.to_string());
    } else if upstreams.is_empty() {
        say("no upstreams configured");
    }
    for upstream in upstreams.iter().filter(|_| !json) {
        let cap = upstream["max_bytes"].as_u64().map(|max| format!(" of {}", crate::human::size(max))).unwrap_or_default();
        let counted = if upstream["cache_counted"].as_bool() == Some(true) { "" } else { " (counting)" };
        let error = match upstream["last_error"].as_array().map(Vec::as_slice) {
            Some([time, message]) => format!("last error {}: {}", time.as_str().unwrap_or("?"), message.as_str().unwrap_or("?")),
            _ => "no errors".to_owned(),
        };
        say(&format!(
            "{}  {}  {}  {}  cache {} in {} objects{cap}{counted}  {error}",
            upstream["name"].as_str().unwrap_or("?"),
            upstream["health"].as_str().unwrap_or("?"),
            upstream["url"].as_str().unwrap_or("?"),
            upstream["namespace"].as_str().unwrap_or("?"),
            crate::human::size(upstream["cache_bytes"].as_u64().unwrap_or(0)),
            upstream["cache_objects"].as_u64().unwrap_or(0),
        ));
    }
    if upstreams.iter().any(|upstream| upstream["health"] == "down") {
        EXIT_DENIED
    } else {
        EXIT_OK
    }
}

