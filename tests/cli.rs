//! The built binary: help and version, readable config errors, `serve` on a port it reports,
//! graceful shutdown on SIGTERM, `policy explain`.

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
