//! Evidence discovery: the signatures, attestations and sigstore bundles attached to a manifest in
//! its repository, through cosign's tags (`sha256-<hex>.sig`, `sha256-<hex>.att`) and OCI 1.1
//! referrers, and the reading of their bytes within bounds. Verifies nothing (that is
//! `policy::verify`).
//!
//! Junk cannot hide evidence: cosign's tags are always read, and first; referrers are filtered by
//! artifact type before any count limit, so only types that can carry evidence compete for the
//! [`MAX_EVIDENCE_REFERRERS`] places, and a flood is reported in the verdict. Junk cannot make a
//! verdict expensive: the evidence read for one verdict stays within [`EVIDENCE_BUDGET`], and each
//! blob is read from the store once however many layers name it.
//!
//! Discovery comes in two steps because a gated pull asks for it on every request: [`Attached`]
//! is what two tag reads and one referrer listing tell (its id keys the verdict cache, so a cached
//! verdict costs nothing more), and [`Registry::select_evidence`] and [`Registry::read_evidence`]
//! run only when no verdict is cached for that id.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Digest as _;
use storage::{BlobStoreError, Digest};

use super::manifest::{COSIGN_SIMPLE_SIGNING, DSSE_ENVELOPE, OCI_MANIFEST};
use crate::metadata::MetadataError;
use crate::names::{RepoName, Tag};
use super::{Registry, Result};

/// Evidence bytes read for one verdict: evidence manifests, and layers counted each time one is
/// used (each use is verified) although its blob is read from the store once. 16 MiB holds a
/// signature, a scan, provenance and an SBOM attestation of the largest size read (4 MiB) with room
/// to spare; beyond it, evidence is rejected as over the budget.
pub const EVIDENCE_BUDGET: usize = 16 << 20;
/// Referrer links listed per subject. A gated pull lists them on every request, so this bounds
/// what a flood costs each pull; evidence referrers past them are not seen (the verdict says so,
/// and cosign's tags are read regardless).
const MAX_REFERRER_LINKS: usize = 10_000;
/// Referrers of an evidence type read per subject, after its cosign tags. More referrers than
/// this, of any type, are reported as a flood.
const MAX_EVIDENCE_REFERRERS: usize = 64;
/// Referrers of other types (SBOMs and the like) that a promotion carries along.
const MAX_OTHER_REFERRERS: usize = 64;
/// Referrer links whose descriptors are read at once to learn their kind.
const KIND_READS_AT_ONCE: usize = 16;
/// Largest evidence manifest read: cosign's are a few KiB a layer, certificates included.
const MAX_EVIDENCE_MANIFEST: usize = 1 << 20;
/// At most this many layers of one evidence manifest are read.
const MAX_LAYERS: usize = 16;
/// Largest simple-signing payload read.
const MAX_PAYLOAD: usize = 1 << 20;
/// Largest DSSE envelope or sigstore bundle read.
const MAX_ENVELOPE: usize = 4 << 20;

/// Artifact types (prefixes) of the referrers that can carry evidence the verifier reads; a
/// referrer of any other type is never read as evidence, and does not count against the limits.
const EVIDENCE_ARTIFACT_TYPES: &[&str] = &[
    // sigstore bundles of every version (cosign 3, sigstore-go).
    "application/vnd.dev.sigstore.bundle",
    // cosign's referrer types (`application/vnd.dev.cosign.artifact.sig.v1+json`, `...att...`).
    "application/vnd.dev.cosign.",
    // DSSE envelopes: in-toto attestations, the registry's own verification summary.
    "application/vnd.dsse.envelope",
    // in-toto statements and DSSE-wrapped provenance.
    "application/vnd.in-toto",
];

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

/// How an evidence manifest is attached to its subject. Shown in verdicts and promotion records
/// as `tag sha256-<hex>.sig` or `referrer sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// cosign's tag for the subject's evidence.
    Tag(Tag),
    /// An OCI 1.1 referrer of the subject.
    Referrer(Digest),
}

/// Where one piece of evidence was found: a layer of an evidence manifest. Shown as
/// `<source> layer <index>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLayer {
    /// The evidence manifest.
    pub source: Source,
    /// The layer's index in it.
    pub layer: usize,
}

/// One piece of evidence found for a subject.
#[derive(Debug, Clone)]
pub struct Found {
    /// Where it was found, for explanations.
    pub source: SourceLayer,
    /// A key identifying these exact bytes and annotations, for the verification cache.
    pub cache_key: String,
    /// The bytes.
    pub payload: Payload,
}

/// The evidence read for one verdict.
#[derive(Debug, Clone, Default)]
pub struct EvidenceSet {
    /// Every piece found.
    pub found: Vec<Found>,
    /// Evidence that could not be read (missing blob, oversized, over the budget), with the reason.
    pub unreadable: Vec<(String, String)>,
    /// What the verdict should say about evidence left unread.
    pub warnings: Vec<String>,
}

/// What is attached to a subject as two tag reads and one listing tell: the part of discovery a
/// gated pull does on every request.
#[derive(Debug, Clone)]
pub struct Attached {
    /// cosign's tags that exist, with the digests they hold.
    tags: Vec<(Tag, Digest)>,
    /// The referrer links' names (digest hex), in listing order; parsed only when evidence is
    /// selected, since a flood makes them many.
    referrers: Vec<String>,
    /// More referrer links exist than were listed.
    truncated: bool,
    /// sha256 over all of the above. Manifests are content-addressed, and which of them are read
    /// as evidence depends on their content alone, so the same id means the same evidence.
    pub id: String,
}

/// The evidence manifests chosen from what is attached, and what was left out.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// cosign's tags first, then referrers of an evidence type.
    pub manifests: Vec<(Source, Digest)>,
    /// Referrers of other types, the first [`MAX_OTHER_REFERRERS`]; never read as evidence.
    pub others: Vec<Digest>,
    /// What the verdict should say about referrers left out.
    pub warnings: Vec<String>,
}

/// Whether a referrer with this descriptor (as its link holds it) can carry evidence: an image
/// manifest whose artifact type is a signature, attestation or sigstore bundle type.
pub fn carries_evidence(descriptor: &Value) -> bool {
    descriptor["mediaType"].as_str() == Some(OCI_MANIFEST)
        && descriptor["artifactType"]
            .as_str()
            .is_some_and(|artifact_type| EVIDENCE_ARTIFACT_TYPES.iter().any(|prefix| artifact_type.starts_with(prefix)))
}

impl Attached {
    fn new(tags: Vec<(Tag, Digest)>, referrers: Vec<String>, truncated: bool) -> Attached {
        let mut id = sha2::Sha256::new();
        for (tag, digest) in &tags {
            id.update("tag ");
            id.update(tag.as_str());
            id.update(digest.hex());
        }
        for hex in &referrers {
            id.update("referrer");
            id.update(hex);
        }
        id.update(if truncated { "truncated" } else { "complete" });
        Attached { tags, referrers, truncated, id: hex::encode(id.finalize()) }
    }
}

impl Registry {
    /// What is attached to `subject` in `repo`: its cosign tags and its referrer links, read
    /// through the read cache (a change made here is seen at once, another replica's within
    /// `metadata::cache::TTL`).
    pub async fn attached(&self, repo: &RepoName, subject: &Digest) -> Result<Attached> {
        let mut tags = Vec::new();
        for suffix in ["sig", "att"] {
            let tag = Tag::cosign(subject, suffix);
            if let Some(stored) = self.cached.tag(repo, &tag).await? {
                if let Ok(digest) = stored.record.digest.parse::<Digest>() {
                    tags.push((tag, digest));
                }
            }
        }
        let mut referrers = self.cached.referrer_hexes(repo, subject, MAX_REFERRER_LINKS + 1).await?;
        let truncated = referrers.len() > MAX_REFERRER_LINKS;
        referrers.truncate(MAX_REFERRER_LINKS);
        Ok(Attached::new(tags, referrers, truncated))
    }

    /// Chooses the evidence manifests among what is `attached` to `subject` in `repo`: every
    /// cosign tag, then the first [`MAX_EVIDENCE_REFERRERS`] referrers of an evidence type. A
    /// referrer's type is read from its link once per node and remembered.
    pub async fn select_evidence(&self, repo: &RepoName, subject: &Digest, attached: &Attached) -> Result<Selection> {
        let tags = attached.tags.iter().map(|(tag, digest)| (Source::Tag(tag.clone()), digest.clone()));
        let mut selection = Selection { manifests: tags.collect(), ..Selection::default() };
        // The store validates its keys, not that they are digests; a stray name is no referrer.
        let referrers: Vec<Digest> = attached.referrers.iter().filter_map(|hex| format!("sha256:{hex}").parse().ok()).collect();
        // Kinds not known yet are read from the links, several at a time (each is a request on S3).
        let reads: Vec<_> = referrers.iter().map(|referrer| self.referrer_carries_evidence(repo, subject, referrer)).collect();
        let kinds: Vec<bool> = futures::stream::iter(reads).buffered(KIND_READS_AT_ONCE).try_collect().await?;
        let (mut n_evidence, mut n_other) = (0, 0);
        for (referrer, carries_evidence) in referrers.into_iter().zip(kinds) {
            if carries_evidence {
                n_evidence += 1;
                if n_evidence <= MAX_EVIDENCE_REFERRERS {
                    selection.manifests.push((Source::Referrer(referrer.clone()), referrer));
                }
            } else {
                n_other += 1;
                if selection.others.len() < MAX_OTHER_REFERRERS {
                    selection.others.push(referrer);
                }
            }
        }
        if attached.referrers.len() > MAX_EVIDENCE_REFERRERS || attached.truncated {
            let total = if attached.truncated { format!("more than {MAX_REFERRER_LINKS}") } else { attached.referrers.len().to_string() };
            let mut warning = format!("referrer flood: {total} referrers of {subject}; {n_other} of them are not of an evidence type and were not read");
            if n_evidence > MAX_EVIDENCE_REFERRERS {
                let skipped = n_evidence - MAX_EVIDENCE_REFERRERS;
                warning.push_str(&format!("; {skipped} evidence referrers past the first {MAX_EVIDENCE_REFERRERS} were not read"));
            }
            if attached.truncated {
                warning.push_str(&format!("; referrers past the first {MAX_REFERRER_LINKS} were not listed (cosign tags always are)"));
            }
            selection.warnings.push(warning);
        }
        Ok(selection)
    }

    /// The manifests attached to `subject` in `repo` that a promotion carries: its cosign tags,
    /// its evidence referrers as a verdict selects them, and the first [`MAX_OTHER_REFERRERS`]
    /// referrers of other types.
    pub async fn evidence_manifests(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<(Source, Digest)>> {
        let attached = self.attached(repo, subject).await?;
        let selection = self.select_evidence(repo, subject, &attached).await?;
        let others = selection.others.into_iter().map(|digest| (Source::Referrer(digest.clone()), digest));
        Ok(selection.manifests.into_iter().chain(others).collect())
    }

    /// Reads the evidence in `manifests` (from [`Registry::select_evidence`]) in order, within
    /// [`EVIDENCE_BUDGET`], reading each blob from the store at most once.
    pub async fn read_evidence(&self, repo: &RepoName, manifests: &[(Source, Digest)]) -> EvidenceSet {
        let mut reader = Reader { registry: self, repo, left: EVIDENCE_BUDGET, blobs: HashMap::new(), over_budget: 0 };
        let mut set = EvidenceSet::default();
        let mut seen = HashSet::new();
        for (source, digest) in manifests {
            // A manifest both tagged and a referrer is read once.
            if seen.insert(digest) {
                reader.read_manifest(source, digest, &mut set).await;
            }
        }
        if reader.over_budget > 0 {
            set.warnings.push(format!(
                "the evidence budget of {} MiB per verdict ran out: {} pieces of evidence were not read (cosign tags are read first)",
                EVIDENCE_BUDGET >> 20,
                reader.over_budget
            ));
        }
        set
    }

    /// Whether the referrer's link says it can carry evidence; remembered per digest, since a
    /// referrer's descriptor follows from its content. A link deleted meanwhile carries nothing.
    async fn referrer_carries_evidence(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<bool> {
        if let Some(known) = self.caches.referrer_kind(referrer) {
            return Ok(known);
        }
        let Some(descriptor) = self.metadata.referrer(repo, subject, referrer).await? else {
            return Ok(false);
        };
        let carries = carries_evidence(&descriptor);
        self.caches.remember_referrer_kind(referrer, carries);
        Ok(carries)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Tag(tag) => write!(f, "tag {tag}"),
            Source::Referrer(digest) => write!(f, "referrer {digest}"),
        }
    }
}

impl fmt::Display for SourceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layer {}", self.source, self.layer)
    }
}

/// Bytes read, or why not.
type Read = std::result::Result<Bytes, Unread>;

/// Why a piece of evidence was not read.
enum Unread {
    /// It did not fit in what is left of the budget.
    OverBudget,
    /// It is missing, malformed or larger than its kind may be.
    Failed(String),
}

impl fmt::Display for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unread::OverBudget => write!(f, "over the evidence budget of {} MiB per verdict", EVIDENCE_BUDGET >> 20),
            Unread::Failed(reason) => f.write_str(reason),
        }
    }
}

/// The evidence reading of one verdict: what is left of the budget, and every blob read so far.
struct Reader<'a> {
    registry: &'a Registry,
    repo: &'a RepoName,
    left: usize,
    blobs: HashMap<Digest, std::result::Result<Bytes, String>>,
    over_budget: usize,
}

/// The part of an evidence manifest that is read: its first [`MAX_LAYERS`] layers.
#[derive(Deserialize)]
struct EvidenceManifest {
    #[serde(default, deserialize_with = "first_layers")]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    annotations: Value,
}

/// The first [`MAX_LAYERS`] layers; the others are skipped without being kept.
fn first_layers<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Vec<Layer>, D::Error> {
    struct First;
    impl<'de> serde::de::Visitor<'de> for First {
        type Value = Vec<Layer>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of layer descriptors")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<Layer>, A::Error> {
            let mut layers = Vec::new();
            while layers.len() < MAX_LAYERS {
                match seq.next_element()? {
                    Some(layer) => layers.push(layer),
                    None => return Ok(layers),
                }
            }
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(layers)
        }
    }
    deserializer.deserialize_seq(First)
}

impl Reader<'_> {
    /// Reads one evidence manifest and the evidence layers it names into `set`.
    async fn read_manifest(&mut self, source: &Source, digest: &Digest, set: &mut EvidenceSet) {
        let manifest = match self.manifest_bytes(digest).await {
            Ok(bytes) => bytes,
            Err(unread) => return self.unread(source.to_string(), unread, set),
        };
        let manifest: EvidenceManifest = match serde_json::from_slice(&manifest) {
            Ok(manifest) => manifest,
            Err(err) => return set.unreadable.push((source.to_string(), format!("manifest is not an image manifest: {err}"))),
        };
        for (index, layer) in manifest.layers.into_iter().enumerate() {
            let media_type = layer.media_type.as_str();
            let is_bundle = media_type.starts_with("application/vnd.dev.sigstore.bundle");
            if media_type != COSIGN_SIMPLE_SIGNING && media_type != DSSE_ENVELOPE && !is_bundle {
                continue;
            }
            let layer_source = SourceLayer { source: source.clone(), layer: index };
            let Ok(blob) = layer.digest.parse::<Digest>() else {
                set.unreadable.push((layer_source.to_string(), "layer digest is missing or malformed".to_owned()));
                continue;
            };
            let limit = if media_type == COSIGN_SIMPLE_SIGNING { MAX_PAYLOAD } else { MAX_ENVELOPE };
            let bytes = match self.blob(&blob, limit).await {
                Ok(bytes) => bytes,
                Err(unread) => {
                    self.unread(layer_source.to_string(), unread, set);
                    continue;
                }
            };
            let annotations = match layer.annotations {
                Value::Object(annotations) => annotations,
                _ => Map::new(),
            };
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
    }

    /// Records a piece not read: each failure with its reason; of the pieces over the budget only
    /// the first, the others are counted (a flood would otherwise fill the verdict).
    fn unread(&mut self, source: String, unread: Unread, set: &mut EvidenceSet) {
        if matches!(unread, Unread::OverBudget) {
            self.over_budget += 1;
            if self.over_budget > 1 {
                return;
            }
        }
        set.unreadable.push((source, unread.to_string()));
    }

    async fn manifest_bytes(&mut self, digest: &Digest) -> Read {
        let link = self.registry.metadata.manifest_link(self.repo, digest).await.map_err(|err| Unread::Failed(err.to_string()))?;
        let link = link.ok_or_else(|| Unread::Failed(format!("manifest {digest} is not in the repository")))?;
        if link.size > MAX_EVIDENCE_MANIFEST as u64 {
            return Err(Unread::Failed(format!("evidence manifest of {} bytes is larger than {MAX_EVIDENCE_MANIFEST}", link.size)));
        }
        self.read(digest, MAX_EVIDENCE_MANIFEST).await
    }

    /// A blob linked in the repository, from the store the first time, from memory after.
    async fn blob(&mut self, blob: &Digest, limit: usize) -> Read {
        if let Some(read) = self.blobs.get(blob) {
            let bytes = read.clone().map_err(Unread::Failed)?;
            if bytes.len() > limit {
                return Err(Unread::Failed(format!("blob {blob} is larger than {limit} bytes")));
            }
            return self.charge(bytes);
        }
        let linked = self.registry.metadata.blob_linked(self.repo, blob).await.map_err(|err| Unread::Failed(err.to_string()))?;
        let read = if linked { self.read(blob, limit).await } else { Err(Unread::Failed(format!("blob {blob} is not in the repository"))) };
        // Being over the budget is not a property of the blob, so it is not remembered.
        match &read {
            Ok(bytes) => {
                self.blobs.insert(blob.clone(), Ok(bytes.clone()));
            }
            Err(Unread::Failed(reason)) => {
                self.blobs.insert(blob.clone(), Err(reason.clone()));
            }
            Err(Unread::OverBudget) => {}
        }
        read
    }

    /// Reads an object of at most `limit` bytes, and of at most what is left of the budget.
    async fn read(&mut self, digest: &Digest, limit: usize) -> Read {
        let allowed = limit.min(self.left);
        let read = self.registry.metadata.read_content(digest, allowed).await;
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(Unread::Failed(format!("{digest} is missing from the store"))),
            Err(MetadataError::Store(BlobStoreError::TooLarge { .. })) if allowed < limit => return Err(Unread::OverBudget),
            Err(err) => return Err(Unread::Failed(err.to_string())),
        };
        self.registry.metrics.evidence_bytes_read.inc_by(bytes.len() as u64);
        self.charge(bytes)
    }

    fn charge(&mut self, bytes: Bytes) -> Read {
        if bytes.len() > self.left {
            return Err(Unread::OverBudget);
        }
        self.left -= bytes.len();
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_referrers_carry_evidence() {
        fn check(media_type: &str, artifact_type: Option<&str>, expected: bool) {
            let mut descriptor = serde_json::json!({ "mediaType": media_type, "digest": "sha256:00", "size": 1 });
            if let Some(artifact_type) = artifact_type {
                descriptor["artifactType"] = Value::String(artifact_type.to_owned());
            }
            assert_eq!(carries_evidence(&descriptor), expected, "{descriptor}");
        }
        check(OCI_MANIFEST, Some("application/vnd.dev.sigstore.bundle.v0.3+json"), true);
        check(OCI_MANIFEST, Some("application/vnd.dev.sigstore.bundle+json;version=0.2"), true);
        check(OCI_MANIFEST, Some("application/vnd.dev.cosign.artifact.sig.v1+json"), true);
        check(OCI_MANIFEST, Some("application/vnd.dev.cosign.simplesigning.v1+json"), true);
        check(OCI_MANIFEST, Some(DSSE_ENVELOPE), true);
        check(OCI_MANIFEST, Some("application/vnd.in-toto+json"), true);
        // Images, SBOM documents, notary signatures and anything unknown are not read as evidence.
        check(OCI_MANIFEST, Some("application/vnd.oci.image.config.v1+json"), false);
        check(OCI_MANIFEST, Some("application/spdx+json"), false);
        check(OCI_MANIFEST, Some("application/vnd.cncf.notary.signature"), false);
        check(OCI_MANIFEST, None, false);
        // An index has no layers to read.
        check("application/vnd.oci.image.index.v1+json", Some("application/vnd.dev.sigstore.bundle.v0.3+json"), false);
    }

    #[test]
    fn sources_read_as_before() {
        let subject = storage::Digest::of(b"subject");
        let hex = subject.hex();
        let tag = SourceLayer { source: Source::Tag(Tag::cosign(&subject, "sig")), layer: 1 };
        assert_eq!(tag.source.to_string(), format!("tag sha256-{hex}.sig"));
        assert_eq!(tag.to_string(), format!("tag sha256-{hex}.sig layer 1"));
        let referrer = SourceLayer { source: Source::Referrer(subject.clone()), layer: 0 };
        assert_eq!(referrer.to_string(), format!("referrer sha256:{hex} layer 0"));
    }

    #[test]
    fn only_the_first_layers_are_kept() {
        let layer = r#"{"mediaType":"m","digest":"d","annotations":{"a":"b"}}"#;
        let doc = format!(r#"{{"schemaVersion":2,"layers":[{}],"config":{{}}}}"#, vec![layer; 40].join(","));
        let manifest: EvidenceManifest = serde_json::from_str(&doc).unwrap();
        assert_eq!(manifest.layers.len(), MAX_LAYERS);
        assert_eq!(manifest.layers[0].annotations["a"], "b");
        let none: EvidenceManifest = serde_json::from_str(r#"{"manifests":[]}"#).unwrap();
        assert!(none.layers.is_empty());
    }
}
