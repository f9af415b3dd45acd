//! The built binary: help and version, readable config errors, `serve` on a port it reports,
//! graceful shutdown on SIGTERM, a log fit for a file, `policy explain`.

mod common;

use std::process::Command;

use common::ServerProcess;

fn portcullis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis")).args(args).env_remove("RUST_BACKTRACE").output().expect("run portcullis")
}

#[test]
fn help_and_version() {
    let out = portcullis(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("portcullis {}", env!("CARGO_PKG_VERSION")));
    for args in [&["--help"][..], &["serve", "--help"], &["reindex", "--help"], &["policy", "explain", "--help"]] {
        let out = portcullis(args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn bad_config_exits_non_zero_with_a_readable_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"not an address\"\n").unwrap();
    let out = portcullis(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.listen: expected host:port, found \"not an address\""), "{stderr}");

    let out = portcullis(&["serve", "--config", "/nonexistent/portcullis.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file /nonexistent/portcullis.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::spawn_with(&["--data-dir", dir.path().to_str().unwrap()]);
    let res = reqwest::get(format!("{}/v2/", server.base_url)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["docker-distribution-api-version"], "registry/2.0");
    assert!(dir.path().join("store").is_dir() && dir.path().join("index").is_dir());

    server.signal("TERM");
    let status = tokio::task::spawn_blocking(move || server.process.wait().unwrap()).await.unwrap();
    assert!(status.success(), "a SIGTERM'd server exits cleanly, got {status}");
}

// Issue #14 (7): a log redirected to a file had ANSI colour escapes, and each request wrote its
// span's fields again in front of its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_to_a_file_has_no_colour_and_one_compact_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("portcullis.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = ServerProcess::spawn_logging_to(log, &["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for path in ["/v2/", "/v2/team/app/manifests/v1", "/healthz", "/v2/"] {
        let res = client.get(format!("{}{path}", server.base_url)).send().await.unwrap();
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        sent.push((path, res.status().as_u16(), request_id));
    }
    server.signal("TERM");
    let status = tokio::task::spawn_blocking(move || server.process.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status}");

    let bytes = std::fs::read(&log_path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!bytes.contains(&0x1b), "ANSI escapes in a log written to a file:\n{text}");
    let request_lines: Vec<&str> = text.lines().filter(|line| line.contains("request_id=")).collect();
    assert_eq!(request_lines.len(), sent.len(), "one line per request:\n{text}");
    for (path, status, request_id) in &sent {
        let lines: Vec<&&str> = request_lines.iter().filter(|line| line.contains(request_id.as_str())).collect();
        assert_eq!(lines.len(), 1, "request {request_id}:\n{text}");
        let line = lines[0];
        for field in ["method=GET".to_owned(), format!("path={path}"), format!("status={status}"), "elapsed_ms=".to_owned()] {
            assert!(line.contains(&field), "{field} missing: {line}");
        }
        assert!(!line.contains("request{"), "no span prefix in front of the request line: {line}");
    }
}

#[test]
fn policy_explain() {
    let out = portcullis(&["policy", "explain", "prod/app:v1"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("matches namespace \"prod/**\"") && text.contains("tag v1: immutable"), "{text}");
    let out = portcullis(&["policy", "explain", "Bad/Name"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid repository name"));
}
