//! Evidence in cosign's format, made with a real key, for the gated-namespace workloads:
//! `cosign sign --key` (a simple-signing layer under the `sha256-<hex>.sig` tag) and `cosign attest
//! --key --type vuln` (a DSSE envelope of an in-toto statement under `sha256-<hex>.att`) carrying a
//! Trivy report with no findings. And what an attacker with push rights attaches to such an image:
//! junk referrers, and referrers whose layers all name one big envelope that does not verify.
//!
//! The same formats as `tests/common/cosign.rs`, cut to what a passing verdict needs and copied
//! rather than shared: that module pushes through the test harness's client, this one through the
//! driver's, and neither crate should depend on the other's test code.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use futures::StreamExt as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};

use crate::registry::{image_manifest, Registry, MANIFEST_ACCEPT, OCI_MANIFEST};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
/// cosign's vulnerability predicate type.
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
/// The config of artifact manifests (OCI 1.1), and its content.
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";

/// Writes `cosign.key` (PKCS#8 PEM, unencrypted) and `cosign.pub` into `dir`.
pub(crate) fn keygen(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|err| anyhow::anyhow!("encode key: {err}"))?;
    let public = key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|err| anyhow::anyhow!("encode public key: {err}"))?;
    std::fs::write(dir.join("cosign.key"), private.as_bytes())?;
    std::fs::write(dir.join("cosign.pub"), public)?;
    Ok(())
}

/// A cosign signing key.
pub(crate) struct Key(p256::ecdsa::SigningKey);

impl Key {
    /// Reads a key written by [`keygen`].
    pub(crate) fn load(path: &Path) -> anyhow::Result<Key> {
        let pem = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        Ok(Key(key))
    }

    fn sign(&self, bytes: &[u8]) -> String {
        let signature: p256::ecdsa::DerSignature = self.0.sign(bytes);
        b64(signature.as_bytes())
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Signs `digest` in `repo` and attests a fresh, clean Trivy scan of it, both with `key`.
pub(crate) async fn sign_and_attest(registry: &Registry, repo: &str, digest: &str, key: &Key) -> anyhow::Result<()> {
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repo },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))?;
    let payload_digest = registry.push_blob(repo, &payload).await?;
    let signature = serde_json::json!({
        "mediaType": SIMPLE_SIGNING, "digest": payload_digest, "size": payload.len(),
        "annotations": { "dev.cosignproject.cosign/signature": key.sign(&payload) },
    });
    push_evidence(registry, repo, digest, "sig", signature).await?;

    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": repo, "digest": { "sha256": digest.trim_start_matches("sha256:") } }],
        "predicateType": VULN,
        "predicate": trivy_predicate(&now),
    }))?;
    let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), statement.len()).into_bytes();
    pae.extend_from_slice(&statement);
    let envelope = serde_json::to_vec(&serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": b64(&statement),
        "signatures": [{ "keyid": "", "sig": key.sign(&pae) }],
    }))?;
    let envelope_digest = registry.push_blob(repo, &envelope).await?;
    let attestation = serde_json::json!({
        "mediaType": DSSE, "digest": envelope_digest, "size": envelope.len(),
        "annotations": { "predicateType": VULN },
    });
    push_evidence(registry, repo, digest, "att", attestation).await
}

/// Pushes a cosign evidence manifest with one layer under `sha256-<hex>.<suffix>`.
async fn push_evidence(registry: &Registry, repo: &str, digest: &str, suffix: &str, layer: serde_json::Value) -> anyhow::Result<()> {
    let config = br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = registry.push_blob(repo, config).await?;
    let manifest = image_manifest(&config_digest, config.len(), vec![layer])?;
    let tag = format!("sha256-{}.{suffix}", digest.trim_start_matches("sha256:"));
    registry.put_manifest(repo, &tag, OCI_MANIFEST, &manifest).await?;
    Ok(())
}

/// cosign's vuln predicate around a Trivy JSON report with no vulnerabilities, finished at `now`.
fn trivy_predicate(now: &str) -> serde_json::Value {
    serde_json::json!({
        "invocation": { "parameters": null, "uri": "", "event_id": "", "builder.id": "" },
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.50.0",
            "version": "0.50.0",
            "db": { "uri": "", "version": "" },
            "result": {
                "SchemaVersion": 2, "CreatedAt": now, "ArtifactName": "app", "ArtifactType": "container_image",
                "Results": [{ "Target": "app (debian 12.4)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": [] }],
            },
        },
        "metadata": { "scanStartedOn": now, "scanFinishedOn": now },
    })
}

/// Pushes `n` referrers of `digest` in `repo` under an artifact type that carries no evidence,
/// each a distinct manifest of one small layer.
pub(crate) async fn push_junk_referrers(registry: &Registry, repo: &str, digest: &str, n: usize) -> anyhow::Result<()> {
    let subject = subject_descriptor(registry, repo, digest).await?;
    let layer = registry.push_blob(repo, b"junk").await?;
    let manifests = (0..n).map(|index| {
        let layers = vec![serde_json::json!({ "mediaType": "application/octet-stream", "digest": layer, "size": 4, "annotations": { "n": index.to_string() } })];
        (layers, "application/vnd.example.junk")
    });
    push_referrers(registry, repo, &subject, manifests.collect()).await
}

/// Pushes `n` attestation referrers of `digest` in `repo`, each of `n_layers` DSSE layers naming
/// the same envelope of about `size` bytes: the most evidence bytes and layers a verdict can be
/// asked to read. The envelope's statement is about `digest`, with a predicate of many small
/// values (the most memory a JSON parser needs per byte), and its signature does not verify, so
/// the verifier decodes and parses all of it before rejecting it.
pub(crate) async fn push_heavy_referrers(registry: &Registry, repo: &str, digest: &str, n: usize, n_layers: usize, size: usize) -> anyhow::Result<()> {
    let subject = subject_descriptor(registry, repo, digest).await?;
    let padding = "0,".repeat(size * 3 / 8);
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"{repo}","digest":{{"sha256":"{}"}}}}],"predicateType":"{VULN}","predicate":{{"padding":[{padding}0]}}}}"#,
        digest.trim_start_matches("sha256:")
    );
    let envelope = serde_json::to_vec(&serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": b64(statement.as_bytes()),
        "signatures": [{ "keyid": "", "sig": b64(&[1; 72]) }],
    }))?;
    let envelope_digest = registry.push_blob(repo, &envelope).await?;
    let manifests = (0..n).map(|index| {
        let layers = (0..n_layers)
            .map(|layer| {
                serde_json::json!({
                    "mediaType": DSSE, "digest": envelope_digest, "size": envelope.len(),
                    "annotations": { "predicateType": VULN, "piece": format!("{index}/{layer}") },
                })
            })
            .collect();
        (layers, DSSE)
    });
    push_referrers(registry, repo, &subject, manifests.collect()).await
}

/// The descriptor of manifest `digest` in `repo`, as a `subject` names it.
async fn subject_descriptor(registry: &Registry, repo: &str, digest: &str) -> anyhow::Result<serde_json::Value> {
    let res = registry.client().head(registry.url(&format!("/v2/{repo}/manifests/{digest}"))).header("accept", MANIFEST_ACCEPT).send().await?;
    anyhow::ensure!(res.status() == 200, "HEAD {repo}@{digest} answered {}", res.status());
    let size = res.content_length().context("HEAD of a manifest has no Content-Length")?;
    Ok(serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size }))
}

/// Pushes artifact manifests of (layers, artifact type) with `subject`, by digest, eight at a time.
async fn push_referrers(registry: &Registry, repo: &str, subject: &serde_json::Value, manifests: Vec<(Vec<serde_json::Value>, &str)>) -> anyhow::Result<()> {
    let config = registry.push_blob(repo, EMPTY_JSON).await?;
    let pushes = manifests.into_iter().map(|(layers, artifact_type)| {
        let config = config.clone();
        async move {
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": { "mediaType": EMPTY, "digest": config, "size": EMPTY_JSON.len() },
                "layers": layers,
                "subject": subject,
            }))?;
            registry.put_manifest(repo, &crate::content::sha256(&manifest), OCI_MANIFEST, &manifest).await
        }
    });
    let pushed: Vec<anyhow::Result<String>> = futures::stream::iter(pushes).buffer_unordered(8).collect().await;
    pushed.into_iter().try_for_each(|result| result.map(drop))
}
