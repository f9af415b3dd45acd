//! Evidence made the way cosign makes it, with real keys: simple-signing signatures under the
//! `sha256-<hex>.sig` tag, DSSE in-toto attestations under `sha256-<hex>.att` (cosign's legacy tag
//! scheme, `cosign sign --key` / `cosign attest --key` with `--tlog-upload=false`), pushed through
//! the registry's HTTP API. Scan predicates are shaped after Trivy's and Grype's JSON output.

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePublicKey, LineEnding};

use super::{RegistryClient, OCI_MANIFEST};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer media type of DSSE envelopes, and the artifact type of attestation referrers.
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// The artifact type cosign gives a signature referrer (`--registry-referrers-mode=oci-1-1`).
const SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// A cosign key pair.
pub struct Key {
    signing: p256::ecdsa::SigningKey,
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Key {
        Key { signing: p256::ecdsa::SigningKey::random(&mut rand_core::OsRng) }
    }

    /// The public key as `cosign.pub` holds it.
    pub fn public_pem(&self) -> String {
        self.signing.verifying_key().to_public_key_pem(LineEnding::LF).expect("PEM")
    }

    fn sign(&self, bytes: &[u8]) -> String {
        let signature: p256::ecdsa::DerSignature = self.signing.sign(bytes);
        base64::engine::general_purpose::STANDARD.encode(signature.as_bytes())
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The simple-signing payload cosign signs for `digest`.
pub fn simple_signing_payload(repo_ref: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": { "docker-reference": repo_ref },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

/// DSSE pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope of an in-toto statement about `digest`, signed by `key`.
pub fn attestation_envelope(key: &Key, repo: &str, digest: &str, predicate_type: &str, predicate: serde_json::Value) -> Vec<u8> {
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": repo, "digest": { "sha256": digest.trim_start_matches("sha256:") } }],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap();
    let payload_type = "application/vnd.in-toto+json";
    serde_json::to_vec(&serde_json::json!({
        "payloadType": payload_type,
        "payload": b64(&statement),
        "signatures": [{ "keyid": "", "sig": key.sign(&pae(payload_type, &statement)) }],
    }))
    .unwrap()
}

/// How evidence is attached: cosign's legacy tag scheme, or an OCI 1.1 referrer of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `sha256-<hex>.sig` / `.att` tags.
    Tag,
    /// A manifest whose `subject` is the signed manifest, listed by the Referrers API.
    Referrer,
}

async fn push_evidence_manifest(registry: &RegistryClient, repo: &str, digest: &str, suffix: &str, scheme: Scheme, layers: Vec<serde_json::Value>) {
    let config = br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = registry.push_blob(repo, config).await;
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": layers,
    });
    let reference = match scheme {
        Scheme::Tag => format!("sha256-{}.{suffix}", digest.trim_start_matches("sha256:")),
        Scheme::Referrer => {
            let subject = registry.client.head(registry.url(&format!("/v2/{repo}/manifests/{digest}"))).send().await.unwrap();
            let media_type = subject.headers()["content-type"].to_str().unwrap().to_owned();
            let size: u64 = subject.headers()["content-length"].to_str().unwrap().parse().unwrap();
            manifest["subject"] = serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size });
            manifest["artifactType"] = serde_json::json!(if suffix == "sig" { SIGNATURE_ARTIFACT } else { DSSE });
            super::sha256(&serde_json::to_vec(&manifest).unwrap())
        }
    };
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let res = registry.put_manifest(repo, &reference, OCI_MANIFEST, &bytes).await;
    assert_eq!(res.status(), 201, "push {reference}: {}", res.text().await.unwrap_or_default());
}

/// `cosign sign --key`: pushes a `.sig` manifest whose one layer signs `digest`.
pub async fn sign(registry: &RegistryClient, repo: &str, digest: &str, key: &Key) {
    sign_with(registry, repo, digest, key, Scheme::Tag).await;
}

/// Signs `digest` with the given attachment scheme.
pub async fn sign_with(registry: &RegistryClient, repo: &str, digest: &str, key: &Key, scheme: Scheme) {
    let payload = simple_signing_payload(repo, digest);
    push_signature(registry, repo, digest, key, &payload, scheme).await;
}

/// Pushes a `.sig` manifest signing an arbitrary payload (for forged and mismatched cases).
pub async fn sign_payload(registry: &RegistryClient, repo: &str, digest: &str, key: &Key, payload: &[u8]) {
    push_signature(registry, repo, digest, key, payload, Scheme::Tag).await;
}

async fn push_signature(registry: &RegistryClient, repo: &str, digest: &str, key: &Key, payload: &[u8], scheme: Scheme) {
    let payload_digest = registry.push_blob(repo, payload).await;
    let layer = serde_json::json!({
        "mediaType": SIMPLE_SIGNING,
        "digest": payload_digest,
        "size": payload.len(),
        "annotations": { "dev.cosignproject.cosign/signature": key.sign(payload) },
    });
    push_evidence_manifest(registry, repo, digest, "sig", scheme, vec![layer]).await;
}

/// `cosign attest --key`: pushes a `.att` manifest with one DSSE layer per predicate (cosign
/// appends layers to the same tag).
pub async fn attest(registry: &RegistryClient, repo: &str, digest: &str, key: &Key, predicates: &[(&str, serde_json::Value)]) {
    attest_with(registry, repo, digest, key, predicates, Scheme::Tag).await;
}

/// Attests `digest` with the given attachment scheme.
pub async fn attest_with(registry: &RegistryClient, repo: &str, digest: &str, key: &Key, predicates: &[(&str, serde_json::Value)], scheme: Scheme) {
    let mut layers = Vec::new();
    for (predicate_type, predicate) in predicates {
        let envelope = attestation_envelope(key, repo, digest, predicate_type, predicate.clone());
        let envelope_digest = registry.push_blob(repo, &envelope).await;
        layers.push(serde_json::json!({
            "mediaType": DSSE,
            "digest": envelope_digest,
            "size": envelope.len(),
            "annotations": { "predicateType": predicate_type },
        }));
    }
    push_evidence_manifest(registry, repo, digest, "att", scheme, layers).await;
}

/// cosign's vulnerability predicate type.
pub const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";

/// One finding: (id, severity, fixed version).
pub type Finding<'a> = (&'a str, &'a str, Option<&'a str>);

/// cosign's vuln predicate carrying a Trivy JSON report (as `trivy image --format cosign-vuln` writes it).
pub fn trivy_predicate(finished: &str, findings: &[Finding<'_>]) -> serde_json::Value {
    let vulnerabilities: Vec<serde_json::Value> = findings
        .iter()
        .map(|(id, severity, fixed)| {
            let mut vuln = serde_json::json!({
                "VulnerabilityID": id, "PkgName": "openssl", "InstalledVersion": "3.0.2", "Severity": severity,
                "Title": format!("{id} in openssl"),
            });
            if let Some(fixed) = fixed {
                vuln["FixedVersion"] = serde_json::Value::String(fixed.to_string());
            }
            vuln
        })
        .collect();
    serde_json::json!({
        "invocation": { "parameters": null, "uri": "", "event_id": "", "builder.id": "" },
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.50.0",
            "version": "0.50.0",
            "db": { "uri": "", "version": "" },
            "result": {
                "SchemaVersion": 2,
                "CreatedAt": finished,
                "ArtifactName": "app",
                "ArtifactType": "container_image",
                "Results": [{ "Target": "app (debian 12.4)", "Class": "os-pkgs", "Type": "debian", "Vulnerabilities": vulnerabilities }],
            },
        },
        "metadata": { "scanStartedOn": finished, "scanFinishedOn": finished },
    })
}

/// A Grype JSON report (as `grype -o json` writes it), for the in-toto predicate itself.
pub fn grype_predicate(finished: &str, findings: &[Finding<'_>]) -> serde_json::Value {
    let matches: Vec<serde_json::Value> = findings
        .iter()
        .map(|(id, severity, fixed)| serde_json::json!({
            "vulnerability": {
                "id": id, "dataSource": format!("https://nvd.nist.gov/vuln/detail/{id}"), "severity": severity,
                "fix": { "versions": fixed.map(|f| vec![f]).unwrap_or_default(), "state": if fixed.is_some() { "fixed" } else { "not-fixed" } },
            },
            "artifact": { "name": "curl", "version": "7.88.1", "type": "deb" },
        }))
        .collect();
    serde_json::json!({
        "matches": matches,
        "source": { "type": "image", "target": { "userInput": "app" } },
        "descriptor": { "name": "grype", "version": "0.74.0", "timestamp": finished },
    })
}

/// RFC 3339 time `seconds_ago` before now.
pub fn time_ago(seconds_ago: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now() - std::time::Duration::from_secs(seconds_ago)).to_string()
}
