//! The README's walkthrough, step by step, on the embedded default configuration, with the
//! test's own cosign-format key and evidence in place of the cosign and Trivy binaries, so the
//! walkthrough cannot rot.

mod common;

use common::clients::Clients;
use common::cosign::{self, Key, VULN};
use common::{portcullis, RegistryClient, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_walkthrough() {
    // 1. Trust the CI key: the embedded default reads ./trust/cosign.pub as "ci".
    let workdir = tempfile::tempdir().unwrap();
    let key = Key::generate();
    std::fs::create_dir(workdir.path().join("trust")).unwrap();
    std::fs::write(workdir.path().join("trust/cosign.pub"), key.public_pem()).unwrap();
    let server = ServerProcess::spawn_in(workdir.path(), &[]);
    let host = server.base_url.trim_start_matches("http://").to_owned();
    assert!(workdir.path().join("data/store").is_dir(), "the embedded default stores under ./data");

    // 2. CI pushes to build/ with skopeo.
    let clients = Clients::new();
    let layouts = tempfile::tempdir().unwrap();
    let image = common::images::multi_layer_image(&layouts.path().join("app"), "v1", 3, 21);
    let source = format!("oci:{}:v1", image.path.display());
    clients.skopeo("copy", &["--dest-tls-verify=false", &source, &format!("docker://{host}/build/app:v1")]).await.ok();
    let inspected = clients.skopeo("inspect", &["--tls-verify=false", "--format", "{{.Digest}}", &format!("docker://{host}/build/app:v1")]).await.ok();
    let digest = inspected.stdout.trim().to_owned();
    assert_eq!(digest, image.manifest_digest);

    // 3. Sign, scan and attest (cosign sign / trivy --format cosign-vuln / cosign attest --type vuln).
    let api = RegistryClient::new(&server.base_url);
    let check = || portcullis(&["check", "--registry", &server.base_url, "--target", "prod/app", &format!("build/app@{digest}")]);
    assert_eq!(check().status.code(), Some(1), "unsigned: it would not pass");
    cosign::sign(&api, "build/app", &digest, &key).await;
    cosign::attest(&api, "build/app", &digest, &key, &[(VULN, cosign::trivy_predicate(&cosign::time_ago(60), &[]))]).await;

    // 4. Would it pass prod? Then promote.
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let out = portcullis(&["promote", "--registry", &server.base_url, &format!("build/app@{digest}"), "prod/app", "--tag", "v1"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // 5. Clusters pull from prod by digest.
    let pulled = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:v1", pulled.path().display());
    clients.skopeo("copy", &["--src-tls-verify=false", &format!("docker://{host}/prod/app@{digest}"), &dest]).await.ok();
    assert_eq!(common::images::index_json_digest(pulled.path(), "v1"), digest);
}
