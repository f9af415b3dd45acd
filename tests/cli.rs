//! The built binary: help and version, readable config errors, `serve` on a port it reports,
//! graceful shutdown on SIGTERM, a log fit for a file, `policy explain`, `fsck`.

mod common;

use common::{portcullis, sha256, RegistryClient, ServerProcess};
use storage::BlobStore as _;

#[test]
fn help_and_version() {
    let out = portcullis(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("portcullis {}", env!("CARGO_PKG_VERSION")));
    for args in [&["--help"][..], &["serve", "--help"], &["reindex", "--help"], &["fsck", "--help"], &["policy", "explain", "--help"]] {
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

// Regression: #13 (item 13). `fsck` names each damaged metadata object by key and exits 1, 0 when
// the store is sound, 2 when there is none; it writes nothing, and runs beside a live server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_names_damaged_metadata_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let server = ServerProcess::spawn_with(&["--data-dir", &data_dir]);
    let client = RegistryClient::new(&server.base_url);
    let (app, _) = client.push_tiny_image("team/app", "v1", "app").await;
    let (other, _) = client.push_tiny_image("team/other", "v1", "other").await;
    let fsck = |data_dir: String| tokio::task::spawn_blocking(move || portcullis(&["fsck", "--data-dir", &data_dir]));

    let out = fsck(data_dir.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("fsck: ") && stdout.trim_end().ends_with("objects checked, no problems"), "{stdout}");

    // Damage, written through the store as a broken disk or a careless operator would leave it.
    let store = storage::FsBlobStore::open_existing(dir.path().join("store")).await.unwrap();
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_owned();
    let damage = [
        ("repositories/team/app/_tags/v1".to_owned(), r#"{"digest":"sha2"#.to_owned(), "EOF while parsing"),
        (format!("repositories/team/other/_manifests/sha256/{}", hex(&other)), r#"{"mediaType":"text/plain\r\nX-Injected: 1","size":1}"#.to_owned(), "is not a media type"),
        (
            "repositories/team/app/_tags/v2".to_owned(),
            format!(r#"{{"digest":"{}"}}"#, sha256(b"nothing")),
            "points to repositories/team/app/_manifests/sha256/",
        ),
        (format!("repositories/team/app/_referrers/sha256/{}/{}", hex(&app), hex(&other)), "{}".to_owned(), "not a descriptor"),
        ("repositories/team/app/_notes/x".to_owned(), "x".to_owned(), "not a key the registry writes"),
        (format!("promotions/prod/app/_records/{}", hex(&app)), "{".to_owned(), "not a promotion record"),
        ("audit/records/00000000000000000001".to_owned(), "{".to_owned(), "record 1 is unreadable"),
    ];
    for (key, bytes, _) in &damage {
        store.put_small(key, bytes.clone().into(), storage::PutCondition::Always).await.unwrap();
    }
    let before = tree(&dir.path().join("store"));
    let out = fsck(data_dir.clone()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), damage.len() + 1, "one line per damaged object and a summary: {stdout}");
    for (key, _, problem) in &damage {
        assert!(lines.iter().any(|line| line.starts_with(&format!("{key}: ")) && line.contains(problem)), "{key}: {problem} in {stdout}");
    }
    assert!(lines.last().unwrap().ends_with(&format!("objects checked, {} damaged", damage.len())), "{stdout}");
    assert!(tree(&dir.path().join("store")) == before, "fsck wrote to the store");
    // The server it ran beside still serves.
    assert_eq!(reqwest::get(format!("{}/v2/", server.base_url)).await.unwrap().status(), 200);

    // No store: an error, and nothing is created.
    let absent = dir.path().join("absent").to_str().unwrap().to_owned();
    let out = fsck(absent.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!std::path::Path::new(&absent).exists());
}

/// Every directory and file below `root`, with the files' bytes, in order.
fn tree(root: &std::path::Path) -> Vec<(std::path::PathBuf, Option<Vec<u8>>)> {
    let mut entries = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                entries.push((path.clone(), None));
                pending.push(path);
            } else {
                entries.push((path.clone(), Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    entries.sort();
    entries
}
