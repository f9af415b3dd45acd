//! Tidy: the absences ARCHITECTURE.md states, checked on the source text (as rust-analyzer's
//! `xtask/src/tidy.rs` does), so that a change that breaks one fails the suite instead of
//! quietly making the document untrue. Reads files only; starts nothing.

use std::path::{Path, PathBuf};

/// Every tracked Rust file of the workspace, with its path relative to the root.
fn rust_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "storage/src", "storage/tests", "bench/src", "tests", "fuzz/fuzz_targets"] {
        collect(root, &root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} files: is the tree where the test expects it?", files.len());
    files
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.map(|entry| entry.expect("readable directory").path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).expect("a Rust file is UTF-8");
            let relative = path.strip_prefix(root).expect("below the root").to_string_lossy().replace('\\', "/");
            files.push((relative, text));
        }
    }
}

/// The lines of `text` that are code outside tests: before a `#[cfg(test)]` module, not comments.
/// Files of test code (`tests/` directories, the storage crate's test support) have none.
fn production_lines<'a>(path: &str, text: &'a str) -> Vec<(usize, &'a str)> {
    let test_file = path.starts_with("tests/") || path.contains("/tests/") || path.ends_with("test_s3.rs") || path.starts_with("fuzz/");
    if test_file {
        return Vec::new();
    }
    text.lines()
        .enumerate()
        .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(n, line)| (n + 1, line))
        .collect()
}

#[test]
fn every_file_says_what_it_is_for() {
    let missing: Vec<String> = rust_files().into_iter().filter(|(_, text)| !text.starts_with("//!")).map(|(path, _)| path).collect();
    assert!(missing.is_empty(), "files without a `//!` first line saying what they are for: {missing:?}");
}

/// (what is used, a regular expression finding it, where ARCHITECTURE.md allows it: path prefixes).
/// The HTTP rules are about the registry crate: the storage crate's S3 client, the bench driver
/// and the tests speak HTTP as clients.
const PLACES: &[(&str, &str, &[&str])] = &[
    ("sled", r"\bsled::|\buse sled\b", &["src/metadata/index.rs"]),
    ("the AWS SDK", r"\baws_(sdk_s3|config|smithy\w*|types)::", &["storage/src/s3.rs", "storage/src/test_s3.rs", "storage/tests/", "tests/", "bench/"]),
    ("sigstore's crates", r"\bsigstore_\w+::", &["src/policy/verify/", "fuzz/"]),
    (
        "incoming-HTTP types (hyper, http, http-body, tower)",
        r"\b(hyper|hyper_util|http_body|http_body_util|tower)::|\bhttp::",
        &["src/api/", "src/server.rs", "src/proxy/", "storage/", "tests/", "bench/"],
    ),
    ("an HTTP client (reqwest)", r"\breqwest::", &["src/client.rs", "src/auth/oidc.rs", "src/proxy/", "storage/", "tests/", "bench/"]),
];

#[test]
fn dependencies_stay_where_architecture_says() {
    let mut found = Vec::new();
    for (what, pattern, allowed) in PLACES {
        let regex = regex::Regex::new(pattern).expect("a valid pattern");
        for (path, text) in rust_files() {
            if allowed.iter().any(|place| path.starts_with(place)) {
                continue;
            }
            for (n, line) in text.lines().enumerate() {
                if !line.trim_start().starts_with("//") && regex.is_match(line) {
                    found.push(format!("{path}:{}: {what}, allowed only in {allowed:?}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "ARCHITECTURE.md's absences no longer hold:\n{}", found.join("\n"));
}

/// `config` depends downward only; `names` is a leaf.
#[test]
fn layers_depend_downward() {
    let rules: &[(&str, &str, &str)] = &[
        ("src/tls.rs", "crate::config", "tls never imports config"),
        ("src/auth/", "crate::config", "auth never imports config"),
        ("src/policy/", "crate::config", "policy never imports config"),
        ("src/names.rs", "crate::", "names is a leaf"),
        ("src/metadata/", "crate::registry", "metadata never imports registry"),
        ("src/registry/", "crate::promote", "registry never imports promote"),
    ];
    let mut found = Vec::new();
    for (path, text) in rust_files() {
        for (place, import, rule) in rules {
            if !path.starts_with(place) {
                continue;
            }
            for (n, line) in production_lines(&path, &text) {
                if line.contains(import) {
                    found.push(format!("{path}:{n}: {rule}: {}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    let manifest = |crate_dir: &str| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_dir).join("Cargo.toml")).expect("Cargo.toml");
    let storage = manifest("storage");
    assert!(!storage.lines().any(|l| l.trim_start().starts_with("portcullis =")), "storage cannot depend on portcullis");
    let bench = manifest("bench");
    assert!(
        !bench.lines().any(|l| l.trim_start().starts_with("portcullis") && l.contains("path")),
        "bench talks to both registries over HTTP only"
    );
}

/// Expectations that hold by construction, each about data the code produced itself.
const PROVEN: &[&str] = &["hex is a valid header", "latest is a tag", "ring's own PKCS#8 output parses", "hex is ASCII", "the text format is UTF-8"];

/// No `.unwrap()` outside tests, and no `.expect()` on what is parsed from the store or the
/// network: those are errors (a damaged object is a logged 500, see ARCHITECTURE.md), not panics.
#[test]
fn no_panics_on_data_from_outside() {
    let parsing = regex::Regex::new(r"from_slice|from_str|\bparse\b|to_str\(\)|from_utf8|HeaderValue::from|get_small|decode\(").expect("a valid pattern");
    let mut found = Vec::new();
    for (path, text) in rust_files() {
        if !(path.starts_with("src/") || path.starts_with("storage/src/")) {
            continue;
        }
        for (n, line) in production_lines(&path, &text) {
            let unwraps = line.contains(".unwrap()");
            let expects_parsed = line.contains(".expect(") && parsing.is_match(line) && !PROVEN.iter().any(|proof| line.contains(proof));
            if unwraps || expects_parsed {
                found.push(format!("{path}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "return an error instead (or, for data the code made itself, add the expectation to PROVEN):\n{}", found.join("\n"));
}
