//! Parsing and validation of pushed manifests: the four media types the registry stores, the
//! descriptors they reference, and the `subject` and `artifactType` the Referrers API reports.
//!
//! This checks the bytes alone; whether referenced blobs exist in the repository is the caller's
//! question (it needs the store).
//!
//! It also decides what a container runtime could run (the evidence rule of ARCHITECTURE.md): an
//! index always; an image manifest unless every layer has a type no runtime unpacks into a
//! filesystem (signatures, attestations, sigstore bundles, SBOMs, the empty descriptor). Having a
//! `subject` changes nothing: anyone may attach a `subject` to a runnable image.

use serde_json::Value;
use storage::Digest;

use crate::metadata::ManifestSummary;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Layer of a cosign signature (`.sig` tag scheme).
pub const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer of a cosign attestation (`.att` tag scheme).
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Layer (and artifact type) of a sigstore bundle pushed as a referrer.
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The OCI empty descriptor's media type (config of artifacts, placeholder layer).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Config media types of runnable images: a manifest with one of these and no layers, or only
/// filesystem layers, is an image.
const IMAGE_CONFIGS: [&str; 2] = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// Layer media types no container runtime unpacks into a filesystem. All are JSON documents, and
/// the registry checks at push that the layer's bytes are JSON (see `Registry::classify`), so a
/// tar archive cannot hide behind one of these names.
const INERT_LAYERS: [&str; 8] = [
    COSIGN_SIMPLE_SIGNING,
    DSSE_ENVELOPE,
    EMPTY_MEDIA_TYPE,
    "application/vnd.in-toto+json",
    "application/spdx+json",
    "application/vnd.cyclonedx+json",
    "application/vnd.syft+json",
    "application/sarif+json",
];

fn is_sigstore_bundle(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle") && media_type.ends_with("+json")
}

/// Whether no runtime unpacks a layer of this media type (see [`INERT_LAYERS`]).
fn is_inert_layer(media_type: &str) -> bool {
    INERT_LAYERS.contains(&media_type) || is_sigstore_bundle(media_type)
}

/// A descriptor as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// The content it names.
    pub digest: Digest,
    /// The content's length in bytes.
    pub size: u64,
    /// A non-distributable layer fetched from its `urls`, which need not be in the registry.
    pub external: bool,
}

/// A manifest that parsed and is internally consistent.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// Its media type.
    pub media_type: &'static str,
    /// The `subject` it refers to.
    pub subject: Option<Digest>,
    /// Child manifests (indexes only).
    pub manifests: Vec<Descriptor>,
    /// Config and layers (image manifests only), including non-distributable layers that may be
    /// absent from the registry.
    pub blobs: Vec<Descriptor>,
    /// The artifact type reported by the Referrers API.
    pub artifact_type: Option<String>,
    /// The manifest's top-level annotations.
    pub annotations: Option<Value>,
    /// Layers that make the manifest inert, if their bytes are what their types say: `None` when
    /// a runtime could run the manifest whatever its blobs hold (an index, an image config with
    /// filesystem layers or none, a layer type a runtime unpacks).
    pub inert_layers: Option<Vec<Digest>>,
}

impl ParsedManifest {
    /// Blobs that must exist in the repository: config and layers, but not non-distributable
    /// layers.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.blobs.iter().filter(|blob| !blob.external)
    }

    /// The content-derived summary cached in the index; `runnable` is the caller's verdict on
    /// [`ParsedManifest::inert_layers`].
    pub fn summary(&self, runnable: bool) -> ManifestSummary {
        ManifestSummary {
            media_type: self.media_type.to_owned(),
            subject: self.subject.as_ref().map(Digest::to_string),
            manifests: self.manifests.iter().map(|child| child.digest.to_string()).collect(),
            blobs: self.blobs.iter().map(|blob| blob.digest.to_string()).collect(),
            runnable,
        }
    }

    /// The descriptor of this manifest as an entry of a referrers index.
    pub fn referrer_descriptor(&self, digest: &Digest, size: u64) -> Value {
        let mut descriptor = serde_json::json!({
            "mediaType": self.media_type,
            "digest": digest.to_string(),
            "size": size,
        });
        if let Some(artifact_type) = &self.artifact_type {
            descriptor["artifactType"] = Value::String(artifact_type.clone());
        }
        if let Some(annotations) = &self.annotations {
            descriptor["annotations"] = annotations.clone();
        }
        descriptor
    }
}

/// The media type without parameters (`application/json; charset=utf-8` -> `application/json`).
pub fn bare_media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

fn known_media_type(media_type: &str) -> Option<&'static str> {
    [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].into_iter().find(|known| *known == media_type)
}

/// Parses `bytes` pushed with `content_type`. The error is a human-readable reason.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<ParsedManifest, String> {
    // serde_json refuses nesting deeper than 128 levels, which bounds hostile documents.
    let doc: Value = serde_json::from_slice(bytes).map_err(|err| format!("manifest is not valid JSON: {err}"))?;
    let obj = doc.as_object().ok_or("manifest is not a JSON object")?;
    if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err("schemaVersion must be 2".to_owned());
    }
    let declared = match obj.get("mediaType") {
        Some(Value::String(media_type)) => Some(media_type.as_str()),
        Some(_) => return Err("mediaType must be a string".to_owned()),
        None => None,
    };
    let content_type = content_type.map(bare_media_type).filter(|ct| !ct.is_empty());
    let media_type = match (content_type, declared) {
        (Some(ct), Some(declared)) if ct != declared => {
            return Err(format!("Content-Type {ct} does not match the manifest's mediaType {declared}"));
        }
        (Some(ct), _) => ct,
        (None, Some(declared)) => declared,
        (None, None) => return Err("no Content-Type and no mediaType".to_owned()),
    };
    let media_type = known_media_type(media_type).ok_or_else(|| format!("unsupported manifest media type {media_type}"))?;
    // CVE-2021-41190: a document that parses as both a manifest and an index could be served as
    // either, so one digest would name two different things. Each type refuses the other's fields.
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let foreign = if is_index { ["config", "layers"].as_slice() } else { ["manifests"].as_slice() };
    if let Some(field) = foreign.iter().find(|field| obj.contains_key(**field)) {
        return Err(format!("a {media_type} has no {field:?} field; refusing an ambiguous document"));
    }

    let mut parsed = ParsedManifest {
        media_type,
        subject: None,
        manifests: Vec::new(),
        blobs: Vec::new(),
        artifact_type: obj.get("artifactType").and_then(Value::as_str).map(str::to_owned),
        annotations: obj.get("annotations").filter(|a| a.is_object()).cloned(),
        inert_layers: None,
    };
    if let Some(subject) = obj.get("subject") {
        if media_type != OCI_MANIFEST && media_type != OCI_INDEX {
            return Err("subject is only defined for OCI manifests and indexes".to_owned());
        }
        parsed.subject = Some(descriptor(subject, "subject")?.digest);
    }
    if is_index {
        let children = obj.get("manifests").and_then(Value::as_array).ok_or("index has no manifests array")?;
        for (i, child) in children.iter().enumerate() {
            parsed.manifests.push(descriptor(child, &format!("manifests[{i}]"))?);
        }
        return Ok(parsed);
    }
    let config = descriptor(obj.get("config").ok_or("image manifest has no config")?, "config")?;
    if parsed.artifact_type.is_none() && media_type == OCI_MANIFEST {
        // distribution-spec referrers: without artifactType, the config media type stands in.
        parsed.artifact_type = Some(config.media_type.clone());
    }
    let image_config = IMAGE_CONFIGS.contains(&config.media_type.as_str());
    parsed.blobs.push(config);
    let layers = obj.get("layers").and_then(Value::as_array).ok_or("image manifest has no layers array")?;
    for (i, layer) in layers.iter().enumerate() {
        parsed.blobs.push(descriptor(layer, &format!("layers[{i}]"))?);
    }
    let layers = &parsed.blobs[1..];
    let inert = layers.iter().all(|layer| is_inert_layer(&layer.media_type)) && !(image_config && layers.is_empty());
    if inert {
        parsed.inert_layers = Some(layers.iter().map(|layer| layer.digest.clone()).collect());
    }
    Ok(parsed)
}

fn descriptor(value: &Value, what: &str) -> Result<Descriptor, String> {
    let obj = value.as_object().ok_or_else(|| format!("{what} is not a descriptor object"))?;
    let media_type = obj
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}.mediaType is missing"))?;
    let digest = obj
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}.digest is missing"))?
        .parse::<Digest>()
        .map_err(|err| format!("{what}.digest: {err}"))?;
    let size = obj
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{what}.size must be a non-negative integer"))?;
    let has_urls = obj.get("urls").and_then(Value::as_array).is_some_and(|urls| !urls.is_empty());
    let external = has_urls && (media_type.contains("nondistributable") || media_type.contains("foreign"));
    Ok(Descriptor { media_type: media_type.to_owned(), digest, size, external })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]{extra}}}"#,
            digest('a'),
            digest('b')
        )
    }

    #[test]
    fn image_manifest() {
        let subject = format!(r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}"#, digest('c'));
        let parsed = parse(Some(OCI_MANIFEST), image(&subject).as_bytes()).unwrap();
        assert_eq!(parsed.required_blobs().count(), 2);
        assert!(parsed.inert_layers.is_none(), "a subject does not make an image evidence");
        assert_eq!(parsed.subject.unwrap().to_string(), digest('c'));
        assert_eq!(parsed.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
    }

    #[test]
    fn index() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}]}}"#,
            digest('d')
        );
        let parsed = parse(Some("application/vnd.oci.image.index.v1+json; charset=utf-8"), body.as_bytes()).unwrap();
        assert_eq!(parsed.manifests.len(), 1);
        assert_eq!(parsed.manifests[0].size, 5);
        assert!(parsed.blobs.is_empty());
        assert!(parsed.inert_layers.is_none(), "an index is always runnable");
    }

    #[test]
    fn refusals() {
        let bad_digest = image("").replace(&digest('b'), "sha256:xyz");
        let cases: Vec<(Option<&str>, String, &str)> = vec![
            (Some(OCI_MANIFEST), "{".to_owned(), "not valid JSON"),
            (Some(OCI_MANIFEST), "[]".to_owned(), "not a JSON object"),
            (Some(DOCKER_MANIFEST), image(""), "does not match"),
            (Some("text/plain"), r#"{"schemaVersion":2}"#.to_owned(), "unsupported manifest media type"),
            (None, r#"{"schemaVersion":2}"#.to_owned(), "no Content-Type"),
            (Some(OCI_MANIFEST), image("").replace("\"schemaVersion\":2", "\"schemaVersion\":1"), "schemaVersion"),
            (Some(OCI_MANIFEST), bad_digest, "layers[0].digest"),
            (Some(OCI_MANIFEST), image("").replace(",\"size\":3", ""), "layers[0].size"),
            (Some(OCI_INDEX), format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#), "no manifests array"),
            (None, format!(r#"{{"schemaVersion":2,"config":{{}},"layers":[],"manifests":[]}}"#), "no Content-Type"),
            (Some(OCI_MANIFEST), image("").replace("]}", r#"],"manifests":[]}"#), "ambiguous"),
            (Some(OCI_INDEX), format!(r#"{{"schemaVersion":2,"manifests":[],"layers":[]}}"#), "ambiguous"),
            (Some(DOCKER_LIST), format!(r#"{{"schemaVersion":2,"manifests":[],"config":{{}}}}"#), "ambiguous"),
            (Some(DOCKER_LIST), format!(r#"{{"schemaVersion":2,"manifests":[],"subject":{{"mediaType":"x","digest":"{}","size":1}}}}"#, digest('e')), "subject is only defined"),
        ];
        for (content_type, body, expected) in cases {
            let err = parse(content_type, body.as_bytes()).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    /// Which manifests a runtime could run: (config media type, layer media types, inert?).
    #[test]
    fn runnable_or_inert() {
        let oci_config = "application/vnd.oci.image.config.v1+json";
        let docker_config = "application/vnd.docker.container.image.v1+json";
        let cases: &[(&str, &[&str], bool)] = &[
            (oci_config, &[COSIGN_SIMPLE_SIGNING], true), // cosign's .sig manifests
            (oci_config, &[DSSE_ENVELOPE, DSSE_ENVELOPE], true), // cosign's .att manifests
            (EMPTY_MEDIA_TYPE, &[SIGSTORE_BUNDLE], true),
            (EMPTY_MEDIA_TYPE, &["application/spdx+json"], true),
            (EMPTY_MEDIA_TYPE, &[EMPTY_MEDIA_TYPE], true),
            ("application/vnd.example.sbom", &[], true), // an artifact with no layers
            (docker_config, &[COSIGN_SIMPLE_SIGNING], true),
            (oci_config, &[], false), // an image with no layers still runs
            (docker_config, &[], false),
            (oci_config, &["application/vnd.oci.image.layer.v1.tar+gzip"], false),
            (oci_config, &[COSIGN_SIMPLE_SIGNING, "application/vnd.oci.image.layer.v1.tar"], false),
            (EMPTY_MEDIA_TYPE, &["application/vnd.docker.image.rootfs.diff.tar.gzip"], false),
            (EMPTY_MEDIA_TYPE, &["application/vnd.unknown.layer"], false), // unknown: assume unpacked
            (EMPTY_MEDIA_TYPE, &["application/vnd.dev.sigstore.bundle.v0.3+tar"], false),
        ];
        for (config, layers, inert) in cases {
            let layers: Vec<String> = layers
                .iter()
                .map(|media_type| format!(r#"{{"mediaType":"{media_type}","digest":"{}","size":3}}"#, digest('b')))
                .collect();
            let body = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{config}","digest":"{}","size":2}},"layers":[{}]}}"#,
                digest('a'),
                layers.join(",")
            );
            let parsed = parse(None, body.as_bytes()).unwrap();
            assert_eq!(parsed.inert_layers.is_some(), *inert, "{config} {layers:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(Some(OCI_MANIFEST), body.as_bytes()).is_err());
    }
}
