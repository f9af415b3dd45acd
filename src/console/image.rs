//! The image page: one manifest in one repository. What it is (media type, size, when stored,
//! annotations, subject), what it holds (the platforms of an index, the config and layers of an
//! image), what is attached to it (referrers, each with the identity its signature verified as),
//! and its verdict with every requirement, the evidence each used, warnings, rejected evidence
//! and expiry. A denied image shows the one line a client's pull is refused with,
//! `Verdict::summary()`, the same string.
//!
//! When the gate refuses the manifest to this viewer, its content (the document, and the layer
//! and child digests in it) is withheld: blobs are not gated, so the digests would let a client
//! fetch what the gate stops. The verdict and the evidence, which a client may always read, stay.

use askama::Template;
use serde_json::Value;
use storage::Digest;

use super::format;
use super::repository::Badge;
use super::{ConsoleError, Nav, Viewer};
use crate::auth::rules::Action;
use crate::names::{Reference, RepoName};
use crate::policy::gate::{GateMode, Verdict};
use crate::registry::{Registry, RegistryError};

/// The most characters of the manifest document shown; a longer one is cut (its size is given).
const MAX_DOCUMENT: usize = 64 << 10;
/// The most referrers listed.
const REFERRERS: usize = 200;

struct Entry {
    key: String,
    value: String,
}

struct Platform {
    platform: String,
    digest: String,
    short_digest: String,
    href: String,
    media_type: String,
    size: String,
}

struct Layer {
    media_type: String,
    digest: String,
    short_digest: String,
    size: String,
}

struct Referrer {
    artifact_type: String,
    digest: String,
    short_digest: String,
    href: String,
    size: String,
    /// Who signed it, as verified (`trust entry: identity`), or why it did not count.
    identity: Vec<String>,
}

struct Fact {
    kind: String,
    trust_entry: String,
    identity: String,
    predicate_type: String,
    source: String,
    rekor: String,
}

struct Requirement {
    name: String,
    passed: bool,
    detail: String,
    evidence: Vec<Fact>,
}

struct Rejected {
    source: String,
    reason: String,
}

struct VerdictView {
    badge: Badge,
    namespace: String,
    mode: String,
    /// The line a refused pull carries, for a failing verdict.
    denial: Option<String>,
    requirements: Vec<Requirement>,
    warnings: Vec<String>,
    rejected: Vec<Rejected>,
    evaluated: String,
    expires: String,
    via_parent: Option<String>,
}

#[derive(Template)]
#[template(path = "image.html")]
struct ImagePage {
    nav: Nav,
    repo: String,
    repo_href: String,
    digest: String,
    media_type: String,
    artifact_type: String,
    size: String,
    pushed: String,
    runnable: bool,
    subject: Option<(String, String)>,
    annotations: Vec<Entry>,
    /// Why the content is not shown, when it is not.
    withheld: Option<String>,
    platforms: Vec<Platform>,
    config: Option<Layer>,
    layers: Vec<Layer>,
    total_size: String,
    document: String,
    document_cut: bool,
    referrers: Vec<Referrer>,
    verdict: Option<VerdictView>,
}

/// The page of `digest` in `repo`.
pub async fn image(registry: &Registry, viewer: &Viewer, repo: &RepoName, digest: &Digest) -> Result<String, ConsoleError> {
    if !viewer.principal.may(Action::Pull, repo.as_str()) {
        return Err(ConsoleError::NotFound);
    }
    let stored = match registry.manifest(repo, &Reference::Digest(digest.clone())).await {
        Ok(stored) => stored,
        Err(RegistryError::ManifestUnknown(_)) => return Err(ConsoleError::NotFound),
        Err(err) => return Err(err.into()),
    };
    let link = registry.manifest_link(repo, digest).await?;
    let summary = registry.summary(digest).await?;
    let verdict = if summary.runnable { registry.verdict(repo, digest).await? } else { None };
    let doc: Value = serde_json::from_slice(&stored.bytes).unwrap_or(Value::Null);
    let refused = verdict.as_ref().is_some_and(|v| !v.passed && v.mode == GateMode::Enforce)
        && !viewer.principal.may_skip_gate(repo.as_str(), registry.promotion_only(repo));
    let withheld = refused.then(|| {
        "Its gate refuses this manifest to pulls, so its content is not shown either: the layer digests would let a client fetch what the gate stops.".to_owned()
    });
    let repo_name = repo.to_string();
    let (platforms, config, layers, total_size, document, document_cut) = if refused {
        (Vec::new(), None, Vec::new(), String::new(), String::new(), false)
    } else {
        let layers: Vec<Layer> = descriptors(&doc, "layers").iter().map(layer).collect();
        let total: u64 = descriptors(&doc, "layers").iter().filter_map(|d| d["size"].as_u64()).sum();
        let mut document = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let cut = document.len() > MAX_DOCUMENT;
        if cut {
            let mut end = MAX_DOCUMENT;
            while !document.is_char_boundary(end) {
                end -= 1;
            }
            document.truncate(end);
        }
        let platforms = descriptors(&doc, "manifests").iter().map(|d| platform(&repo_name, d)).collect();
        let config = doc.get("config").map(layer);
        (platforms, config, layers, format::size(total), document, cut)
    };
    let referrers = referrers(registry, repo, digest, verdict.as_ref()).await?;
    let page = ImagePage {
        nav: Nav::new(viewer, "repositories"),
        repo_href: format::repository_href(&repo_name),
        repo: repo_name.clone(),
        digest: digest.to_string(),
        media_type: stored.media_type,
        artifact_type: doc["artifactType"].as_str().unwrap_or_default().to_owned(),
        size: format::size(stored.bytes.len() as u64),
        pushed: link.and_then(|link| link.pushed).map_or_else(|| "-".to_owned(), format::time),
        runnable: summary.runnable,
        subject: summary.subject.map(|subject| (format::image_href(&repo_name, &subject), subject)),
        annotations: entries(&doc["annotations"]),
        withheld,
        platforms,
        config,
        layers,
        total_size,
        document,
        document_cut,
        referrers,
        verdict: verdict.map(|verdict| verdict_view(&verdict, summary.runnable)),
    };
    Ok(page.render()?)
}

fn descriptors<'a>(doc: &'a Value, field: &str) -> &'a [Value] {
    doc[field].as_array().map_or(&[], Vec::as_slice)
}

/// A JSON value as text: strings as they are, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An object's members as key and value, in the document's order.
fn entries(object: &Value) -> Vec<Entry> {
    object.as_object().map_or_else(Vec::new, |members| {
        members.iter().map(|(key, value)| Entry { key: key.clone(), value: text(value) }).collect()
    })
}

fn layer(descriptor: &Value) -> Layer {
    let digest = text(&descriptor["digest"]);
    Layer {
        media_type: text(&descriptor["mediaType"]),
        short_digest: format::short_digest(&digest),
        digest,
        size: descriptor["size"].as_u64().map_or_else(String::new, format::size),
    }
}

fn platform(repo: &str, descriptor: &Value) -> Platform {
    let digest = text(&descriptor["digest"]);
    let p = &descriptor["platform"];
    let mut platform = [&p["os"], &p["architecture"], &p["variant"]].iter().map(|v| text(v)).filter(|s| !s.is_empty()).collect::<Vec<_>>().join("/");
    if platform.is_empty() {
        platform = "(no platform)".to_owned();
    }
    Platform {
        platform,
        href: format::image_href(repo, &digest),
        short_digest: format::short_digest(&digest),
        digest,
        media_type: text(&descriptor["mediaType"]),
        size: descriptor["size"].as_u64().map_or_else(String::new, format::size),
    }
}

/// The referrers of `digest`, each with the identities its evidence verified as (from the
/// verdict's facts, found by the referrer's digest) or why it was rejected.
async fn referrers(registry: &Registry, repo: &RepoName, digest: &Digest, verdict: Option<&Verdict>) -> Result<Vec<Referrer>, ConsoleError> {
    let listed = registry.referrers(repo, digest, None).await?;
    let repo_name = repo.to_string();
    let rows = listed.descriptors.iter().take(REFERRERS).map(|descriptor| {
        let digest = text(&descriptor["digest"]);
        let mut identity = Vec::new();
        if let Some(verdict) = verdict {
            for fact in verdict.requirements.iter().flat_map(|r| r.evidence.iter()).filter(|f| f.source.contains(&digest)) {
                let line = format!("{}: {}", fact.trust_entry, fact.identity);
                if !identity.contains(&line) {
                    identity.push(line);
                }
            }
            for rejected in verdict.rejected.iter().filter(|r| r.source.contains(&digest)) {
                identity.push(format!("rejected: {}", rejected.reason));
            }
        }
        let annotations = &descriptor["annotations"];
        if annotations["dev.portcullis.verification-summary"] == "true" {
            identity.push("portcullis: the registry's verification summary (GET /api/v1/keys)".to_owned());
        }
        Referrer {
            artifact_type: text(&descriptor["artifactType"]),
            short_digest: format::short_digest(&digest),
            href: format::image_href(&repo_name, &digest),
            size: descriptor["size"].as_u64().map_or_else(String::new, format::size),
            digest,
            identity,
        }
    });
    Ok(rows.collect())
}

fn verdict_view(verdict: &Verdict, runnable: bool) -> VerdictView {
    VerdictView {
        badge: Badge::of(Some(verdict), runnable),
        namespace: verdict.namespace.clone(),
        mode: format::gate_mode(verdict.mode).to_owned(),
        denial: (!verdict.passed).then(|| verdict.summary()),
        requirements: verdict
            .requirements
            .iter()
            .map(|r| Requirement {
                name: r.name.clone(),
                passed: r.passed,
                detail: r.detail.clone(),
                evidence: r
                    .evidence
                    .iter()
                    .map(|fact| Fact {
                        kind: serde_json::to_value(fact.kind).map(|v| text(&v)).unwrap_or_default(),
                        trust_entry: fact.trust_entry.clone(),
                        identity: fact.identity.clone(),
                        predicate_type: fact.predicate_type.clone().unwrap_or_default(),
                        source: fact.source.clone(),
                        rekor: match (fact.rekor_log_index, fact.rekor_time) {
                            (Some(index), Some(time)) => format!("Rekor #{index} at {}", format::time(time)),
                            (Some(index), None) => format!("Rekor #{index}"),
                            _ => String::new(),
                        },
                    })
                    .collect(),
            })
            .collect(),
        warnings: verdict.warnings.clone(),
        rejected: verdict.rejected.iter().map(|r| Rejected { source: r.source.clone(), reason: r.reason.clone() }).collect(),
        evaluated: format::time(verdict.evaluated_at),
        expires: verdict.expires_at.map_or_else(|| "does not expire".to_owned(), format::time),
        via_parent: verdict.via_parent.clone(),
    }
}
