//! Evidence discovery: every signature, attestation and sigstore bundle attached to a manifest in
//! its repository, through the OCI 1.1 Referrers API links and cosign's legacy tags
//! (`sha256-<hex>.sig`, `sha256-<hex>.att`). Reads bounded bytes; verifies nothing (that is
//! `policy::verify`).

use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::Digest as _;
use storage::Digest;

use super::manifest::{COSIGN_SIMPLE_SIGNING, DSSE_ENVELOPE};
use super::names::{Reference, RepoName, Tag};
use super::{Registry, Result};

/// At most this many evidence manifests are read per subject.
const MAX_EVIDENCE_MANIFESTS: usize = 64;
/// At most this many layers of one evidence manifest are read.
const MAX_LAYERS: usize = 16;
/// Largest simple-signing payload read.
const MAX_PAYLOAD: usize = 1 << 20;
/// Largest DSSE envelope or sigstore bundle read.
const MAX_ENVELOPE: usize = 4 << 20;

/// The bytes of one piece of evidence, by format.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A cosign simple-signing layer: its annotations and payload.
    SimpleSigning {
        /// The layer's annotations (signature, certificate, chain, bundle).
        annotations: Map<String, Value>,
        /// The signed payload.
        payload: Bytes,
    },
    /// A cosign DSSE attestation layer: its annotations and envelope.
    Attestation {
        /// The layer's annotations (predicateType, certificate, chain, bundle).
        annotations: Map<String, Value>,
        /// The DSSE envelope.
        envelope: Bytes,
    },
    /// A sigstore bundle.
    Bundle {
        /// The bundle JSON.
        bytes: Bytes,
    },
}

/// One piece of evidence found for a subject.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where it was found, for explanations: `referrer sha256:… layer 0`, `tag sha256-….sig layer 1`.
    pub source: String,
    /// A key identifying these exact bytes and annotations, for the verification cache.
    pub cache_key: String,
    /// The bytes.
    pub payload: Payload,
}

/// Evidence of one subject, with an id of the set of evidence manifests it came from.
#[derive(Debug, Clone)]
pub struct EvidenceSet {
    /// Every piece found.
    pub found: Vec<Found>,
    /// sha256 over the sorted evidence manifest digests: changes when evidence is added or removed.
    pub id: String,
    /// Evidence that could not even be read (missing blob, oversized), with the reason.
    pub unreadable: Vec<(String, String)>,
}

/// The id of a set of evidence manifests: sha256 over their sorted digests. Evidence manifests
/// are content-addressed, so the same id means the same evidence bytes.
pub fn evidence_set_id(manifests: &[(String, Digest)]) -> String {
    let mut ids: Vec<String> = manifests.iter().map(|(_, digest)| digest.to_string()).collect();
    ids.sort();
    hex::encode(sha2::Sha256::digest(ids.join("\n").as_bytes()))
}

impl Registry {
    /// The manifests that carry evidence about `subject` in `repo`: referrers and legacy tags.
    pub async fn evidence_manifests(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<(String, Digest)>> {
        let mut manifests = Vec::new();
        for digest in self.metadata.referrer_digests(repo, subject, MAX_EVIDENCE_MANIFESTS).await? {
            manifests.push((format!("referrer {digest}"), digest));
        }
        for suffix in ["sig", "att"] {
            let tag: Tag = format!("sha256-{}.{suffix}", subject.hex()).parse().expect("a digest tag is a valid tag");
            if let Some(stored) = self.metadata.tag(repo, &tag).await? {
                if let Ok(digest) = stored.record.digest.parse::<Digest>() {
                    manifests.push((format!("tag {tag}"), digest));
                }
            }
        }
        manifests.truncate(MAX_EVIDENCE_MANIFESTS);
        Ok(manifests)
    }

    /// Reads every piece of evidence about `subject` in `repo`.
    pub async fn evidence(&self, repo: &RepoName, subject: &Digest) -> Result<EvidenceSet> {
        let manifests = self.evidence_manifests(repo, subject).await?;
        let id = evidence_set_id(&manifests);
        Ok(self.read_evidence(repo, manifests, id).await)
    }

    /// Reads the evidence in `manifests` (from [`Registry::evidence_manifests`]), whose set id is `id`.
    pub async fn read_evidence(&self, repo: &RepoName, manifests: Vec<(String, Digest)>, id: String) -> EvidenceSet {
        let mut set = EvidenceSet { found: Vec::new(), id, unreadable: Vec::new() };
        for (source, digest) in manifests {
            if let Err(reason) = self.read_evidence_manifest(repo, &source, &digest, &mut set).await {
                set.unreadable.push((source, reason));
            }
        }
        set
    }

    async fn read_evidence_manifest(&self, repo: &RepoName, source: &str, digest: &Digest, set: &mut EvidenceSet) -> Result<(), String> {
        let manifest = self.manifest(repo, &Reference::Digest(digest.clone())).await.map_err(|err| err.to_string())?;
        let doc: Value = serde_json::from_slice(&manifest.bytes).map_err(|err| format!("manifest is not JSON: {err}"))?;
        let layers = doc["layers"].as_array().cloned().unwrap_or_default();
        for (index, layer) in layers.iter().take(MAX_LAYERS).enumerate() {
            let media_type = layer["mediaType"].as_str().unwrap_or("");
            let limit = if media_type == COSIGN_SIMPLE_SIGNING { MAX_PAYLOAD } else { MAX_ENVELOPE };
            let is_bundle = media_type.starts_with("application/vnd.dev.sigstore.bundle");
            if media_type != COSIGN_SIMPLE_SIGNING && media_type != DSSE_ENVELOPE && !is_bundle {
                continue;
            }
            let layer_source = format!("{source} layer {index}");
            let blob = match layer["digest"].as_str().map(str::parse::<Digest>) {
                Some(Ok(blob)) => blob,
                _ => {
                    set.unreadable.push((layer_source, "layer digest is missing or malformed".to_owned()));
                    continue;
                }
            };
            let bytes = match self.read_linked_blob(repo, &blob, limit).await {
                Ok(bytes) => bytes,
                Err(reason) => {
                    set.unreadable.push((layer_source, reason));
                    continue;
                }
            };
            let annotations = layer["annotations"].as_object().cloned().unwrap_or_default();
            let mut key = sha2::Sha256::new();
            key.update(blob.hex().as_bytes());
            key.update(serde_json::to_vec(&annotations).unwrap_or_default());
            let cache_key = hex::encode(key.finalize());
            let payload = match media_type {
                COSIGN_SIMPLE_SIGNING => Payload::SimpleSigning { annotations, payload: bytes },
                DSSE_ENVELOPE => Payload::Attestation { annotations, envelope: bytes },
                _ => Payload::Bundle { bytes },
            };
            set.found.push(Found { source: layer_source, cache_key, payload });
        }
        Ok(())
    }

    async fn read_linked_blob(&self, repo: &RepoName, blob: &Digest, limit: usize) -> Result<Bytes, String> {
        if !self.metadata.blob_linked(repo, blob).await.map_err(|err| err.to_string())? {
            return Err(format!("blob {blob} is not in the repository"));
        }
        match self.store().get_small(&blob.blob_key(), limit).await {
            Ok(Some(object)) => Ok(object.bytes),
            Ok(None) => Err(format!("blob {blob} is missing from the store")),
            Err(err) => Err(err.to_string()),
        }
    }
}
