//! The registry's part of a promotion (the order of work is in `promote.rs`, above the
//! registry): linking an artifact with its children and evidence from one repository into
//! another, attaching the registry's signed verification summary, and the promotion records.

use std::collections::HashSet;

use bytes::Bytes;
use storage::Digest;

use super::manifest::{self, DSSE_ENVELOPE, EMPTY_MEDIA_TYPE};
use super::{Registry, RegistryError, Result};
use crate::metadata::layout::Key;
use crate::metadata::{LeftBehind, Linked, PromotionRecord};
use crate::names::{Reference, RepoName, Tag};
use crate::policy::gate::Verdict;
use crate::signing::IN_TOTO_PAYLOAD_TYPE;

/// The OCI empty descriptor's content, used as the config of artifact manifests.
const EMPTY_JSON: &[u8] = b"{}";
/// The predicate type of the registry's verification summaries.
const VSA_PREDICATE: &str = "https://slsa.dev/verification_summary/v1";
/// The most promotion records of one target listed.
const MAX_PROMOTION_RECORDS: usize = 10_000;

/// What a promotion linked into its target.
#[derive(Debug, Clone)]
pub struct PromotionLinks {
    /// How many blobs, manifests and evidence manifests.
    pub linked: Linked,
    /// Runnable referrers not promoted.
    pub left_behind: Vec<LeftBehind>,
    /// The verification summary attached, if one was signed.
    pub vsa: Option<Digest>,
}

/// The links a promotion wrote in its target, each with the content it names: what its fence
/// looks at again.
#[derive(Default)]
struct Needed {
    pairs: Vec<(String, String)>,
}

impl Needed {
    fn blob(&mut self, repo: &RepoName, digest: &Digest) {
        self.pairs.push((Key::BlobLink(repo, digest).to_string(), Key::Blob(digest).to_string()));
    }

    fn manifest(&mut self, repo: &RepoName, digest: &Digest) {
        self.pairs.push((Key::ManifestLink(repo, digest).to_string(), Key::Blob(digest).to_string()));
    }
}

impl Registry {
    /// Refuses (with `Denied`) when a tag in `repo` cannot be bound to `digest` under its rule.
    pub async fn check_tags_bindable(&self, repo: &RepoName, tags: &[&Tag], digest: &Digest) -> Result<()> {
        for tag in tags {
            self.check_bindable(repo, tag, digest).await?;
        }
        Ok(())
    }

    /// Whether every tag in `repo` already points to `digest`.
    pub async fn tags_bound(&self, repo: &RepoName, tags: &[&Tag], digest: &Digest) -> Result<bool> {
        for tag in tags {
            let bound = self.metadata.tag(repo, tag).await?;
            if bound.is_none_or(|stored| stored.record.digest != digest.to_string()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Binds promoted tags under the target's rules (the last step of a promotion).
    pub async fn bind_promoted_tags(&self, repo: &RepoName, tags: &[&Tag], digest: &Digest) -> Result<()> {
        self.bind_tags(repo, tags, digest).await
    }

    /// Links `digest` from `from` into `to` with its children and evidence ([`Self::link_closure`])
    /// and, for a `verdict`, attaches the signed verification summary ([`Self::attach_vsa`]),
    /// inside a collection fence (see `fence`): a pass that removed any of the content linked (or
    /// the summary's own objects) meanwhile is waited for, and the work is done again; content
    /// of the source that is gone fails the promotion, and the links made to it are undone, so
    /// the target never lists what it cannot serve.
    pub async fn link_promotion(&self, from: &RepoName, to: &RepoName, digest: &Digest, verdict: Option<&Verdict>) -> Result<PromotionLinks> {
        for _ in 0..super::PUSH_ROUNDS {
            let fence = self.open_fence().await?;
            let mut needed = Needed::default();
            let linked = self.link_promotion_once(from, to, digest, verdict, &mut needed).await;
            let links = match linked {
                Ok(links) => links,
                Err(err) => {
                    self.unlink_dangling(&needed).await?;
                    return Err(err);
                }
            };
            let keys: Vec<String> = needed.pairs.iter().flat_map(|(link, content)| [link.clone(), content.clone()]).collect();
            if self.close_fence(fence, &keys).await?.is_empty() {
                return Ok(links);
            }
            // A pass removed some of it and is over: link again (what is written now is younger
            // than any pass's cut-off, and what is gone of the source fails the next round).
        }
        Err(RegistryError::Unavailable("garbage collection removed what this promotion linked, round after round; retry".to_owned()))
    }

    async fn link_promotion_once(&self, from: &RepoName, to: &RepoName, digest: &Digest, verdict: Option<&Verdict>, needed: &mut Needed) -> Result<PromotionLinks> {
        let (linked, left_behind) = self.link_closure(from, to, digest, needed).await?;
        let vsa = match verdict {
            Some(verdict) => Some(self.attach_vsa(to, digest, verdict, needed).await?),
            None => None,
        };
        Ok(PromotionLinks { linked, left_behind, vsa })
    }

    /// Removes the links of `needed` whose content is not stored.
    async fn unlink_dangling(&self, needed: &Needed) -> Result<()> {
        for (link, content) in &needed.pairs {
            if !self.metadata.present(content).await? && self.metadata.present(link).await? {
                self.metadata.delete_key(link).await?;
            }
        }
        Ok(())
    }

    /// Links `digest` from `from` into `to`: its blobs, its child manifests and every evidence
    /// manifest about it or its children (with their blobs, referrer links and cosign tags).
    /// Only what no runtime could run travels as evidence: a runnable referrer (an image with a
    /// `subject`, an index) is left behind and listed, since it would reach the target without
    /// passing the target's gate.
    async fn link_closure(&self, from: &RepoName, to: &RepoName, digest: &Digest, needed: &mut Needed) -> Result<(Linked, Vec<LeftBehind>)> {
        let mut linked = Linked::default();
        let mut left_behind = Vec::new();
        let mut seen = HashSet::new();
        let mut subjects = Vec::new();
        let (n_blobs, n_manifests) = self.link_manifest_tree(from, to, digest, &mut seen, &mut subjects, needed).await?;
        linked.blobs += n_blobs;
        linked.manifests += n_manifests;
        // Evidence about the artifact and each child; evidence about evidence too (a signed SBOM).
        while let Some(subject) = subjects.pop() {
            for (source, evidence) in self.evidence_manifests(from, &subject).await? {
                if self.summary(&evidence).await?.runnable {
                    left_behind.push(LeftBehind { digest: evidence.to_string(), found_as: source.to_string() });
                    continue;
                }
                if !seen.contains(&evidence) {
                    let (n_blobs, n_manifests) = self.link_manifest_tree(from, to, &evidence, &mut seen, &mut subjects, needed).await?;
                    linked.blobs += n_blobs;
                    linked.evidence += n_manifests;
                }
                if let super::evidence::Source::Tag(tag) = &source {
                    self.bind_tags(to, &[tag], &evidence).await?;
                }
            }
        }
        Ok((linked, left_behind))
    }

    /// Links one manifest (children first) and its blobs, queueing each as a subject of evidence.
    /// Returns how many blobs and manifests it linked.
    async fn link_manifest_tree(
        &self,
        from: &RepoName,
        to: &RepoName,
        digest: &Digest,
        seen: &mut HashSet<Digest>,
        subjects: &mut Vec<Digest>,
        needed: &mut Needed,
    ) -> Result<(usize, usize)> {
        let (mut n_blobs, mut n_manifests) = (0, 0);
        let mut stack = vec![(digest.clone(), false)];
        while let Some((current, children_done)) = stack.pop() {
            if !children_done {
                if !seen.insert(current.clone()) {
                    continue;
                }
                let summary = self.summary(&current).await?;
                stack.push((current.clone(), true));
                for child in summary.manifests.iter().filter_map(|c| c.parse::<Digest>().ok()) {
                    stack.push((child, false));
                }
                continue;
            }
            let stored = self.manifest(from, &Reference::Digest(current.clone())).await?;
            let parsed = manifest::parse(Some(&stored.media_type), &stored.bytes).map_err(RegistryError::ManifestInvalid)?;
            // The links are independent of each other, so they are written concurrently: their
            // fsyncs then share journal commits instead of queueing one behind the other. All of
            // them are durable before the manifest that needs them is stored below.
            let links = parsed.blobs.iter().map(|blob| async move {
                // A proxied source may not have fetched every blob yet: nothing is promoted without
                // its bytes.
                if !blob.external && !self.metadata.blob_linked(from, &blob.digest).await? {
                    self.ensure_upstream_blob(from, &blob.digest).await?;
                }
                // Non-distributable layers may be absent; everything required is linked in `from`
                // (unless collected meanwhile: then there is nothing to promote).
                if !self.metadata.blob_linked(from, &blob.digest).await? {
                    return match blob.external {
                        true => Ok::<usize, RegistryError>(0),
                        false => Err(RegistryError::ManifestBlobUnknown(blob.digest.clone())),
                    };
                }
                self.metadata.link_blob(to, &blob.digest).await?;
                Ok(1)
            });
            let counts = futures::future::join_all(links).await;
            // Every link written is listed, whatever failed beside it, so that a failure undoes them.
            for (blob, count) in parsed.blobs.iter().zip(&counts) {
                if matches!(count, Ok(1)) {
                    needed.blob(to, &blob.digest);
                }
            }
            n_blobs += counts.into_iter().sum::<Result<usize>>()?;
            needed.manifest(to, &current);
            self.store_manifest(to, &parsed, &current, stored.bytes).await?;
            n_manifests += 1;
            subjects.push(current);
        }
        Ok((n_blobs, n_manifests))
    }

    /// Signs an in-toto SLSA verification summary of `verdict` for `digest` in `repo` and attaches
    /// it as an OCI 1.1 referrer, and as a layer of cosign's `.att` tag so that
    /// `cosign verify-attestation --key` finds it either way. Returns the referrer's digest.
    /// Only a verdict the registry evaluated is summarised: it vouches for nothing it did not check.
    async fn attach_vsa(&self, repo: &RepoName, digest: &Digest, verdict: &Verdict, needed: &mut Needed) -> Result<Digest> {
        let inputs: Vec<serde_json::Value> = verdict
            .requirements
            .iter()
            .flat_map(|r| r.evidence.iter())
            .map(|fact| serde_json::json!({
                "uri": fact.source, "trustEntry": fact.trust_entry, "identity": fact.identity, "predicateType": fact.predicate_type,
            }))
            .collect();
        let subject = self.manifest(repo, &Reference::Digest(digest.clone())).await?;
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{ "name": repo.as_str(), "digest": { "sha256": digest.hex() } }],
            "predicateType": VSA_PREDICATE,
            "predicate": {
                "verifier": { "id": "https://github.com/portcullis-registry/portcullis", "version": { "portcullis": env!("CARGO_PKG_VERSION") } },
                "timeVerified": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                "resourceUri": format!("oci://{repo}@{digest}"),
                "policy": { "uri": format!("portcullis:namespace/{}", verdict.namespace), "digest": { "sha256": verdict.policy_revision } },
                "verificationResult": if verdict.passed { "PASSED" } else { "FAILED" },
                "verifiedLevels": [],
                "inputAttestations": inputs,
            },
        });
        let statement = serde_json::to_vec(&statement).expect("statements always serialize");
        let envelope = self.signing_key().dsse_envelope(IN_TOTO_PAYLOAD_TYPE, &statement);
        let envelope = Bytes::from(serde_json::to_vec(&envelope).expect("envelopes always serialize"));
        let envelope_digest = self.put_small_blob(repo, envelope.clone(), needed).await?;
        let empty_digest = self.put_small_blob(repo, Bytes::from_static(EMPTY_JSON), needed).await?;
        let layer = serde_json::json!({
            "mediaType": DSSE_ENVELOPE,
            "digest": envelope_digest.to_string(),
            "size": envelope.len(),
            "annotations": { "predicateType": VSA_PREDICATE },
        });
        let referrer = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "artifactType": DSSE_ENVELOPE,
            "config": { "mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest.to_string(), "size": EMPTY_JSON.len() },
            "layers": [layer.clone()],
            "subject": { "mediaType": subject.media_type, "digest": digest.to_string(), "size": subject.bytes.len() },
            "annotations": { "dev.portcullis.verification-summary": "true" },
        });
        let referrer_digest = self.put_internal_manifest(repo, &referrer, needed).await?;

        // cosign's tag scheme: the `.att` manifest gains the VSA layer next to what it held.
        let att_tag = Tag::cosign(digest, "att");
        let mut layers = Vec::new();
        let mut config = serde_json::json!({ "mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest.to_string(), "size": EMPTY_JSON.len() });
        if let Some(current) = self.metadata.tag(repo, &att_tag).await? {
            let current_digest: Digest = current.record.digest.parse().map_err(|_| RegistryError::Internal("bad .att tag".to_owned()))?;
            let existing = self.manifest(repo, &Reference::Digest(current_digest)).await?;
            let doc: serde_json::Value = serde_json::from_slice(&existing.bytes).map_err(|e| RegistryError::Internal(e.to_string()))?;
            layers = doc["layers"].as_array().cloned().unwrap_or_default();
            config = doc["config"].clone();
        }
        layers.push(layer);
        let att = serde_json::json!({ "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": config, "layers": layers });
        let att_digest = self.put_internal_manifest(repo, &att, needed).await?;
        self.bind_tags(repo, &[&att_tag], &att_digest).await?;
        Ok(referrer_digest)
    }

    /// Writes bytes as a blob and links it into `repo`.
    async fn put_small_blob(&self, repo: &RepoName, bytes: Bytes, needed: &mut Needed) -> Result<Digest> {
        let digest = Digest::of(&bytes);
        needed.blob(repo, &digest);
        self.metadata.store_content(&digest, bytes).await?;
        self.metadata.link_blob(repo, &digest).await?;
        Ok(digest)
    }

    /// Stores a manifest the registry wrote itself (bypassing `promotion_only`, which guards
    /// client pushes).
    async fn put_internal_manifest(&self, repo: &RepoName, doc: &serde_json::Value, needed: &mut Needed) -> Result<Digest> {
        let bytes = Bytes::from(serde_json::to_vec(doc).expect("manifests always serialize"));
        let parsed = manifest::parse(Some(manifest::OCI_MANIFEST), &bytes).map_err(RegistryError::Internal)?;
        let digest = Digest::of(&bytes);
        needed.manifest(repo, &digest);
        self.store_manifest(repo, &parsed, &digest, bytes).await?;
        Ok(digest)
    }

    /// The record of the promotion of `digest` into `target`, if there was one.
    pub async fn promotion_record(&self, target: &RepoName, digest: &Digest) -> Result<Option<PromotionRecord>> {
        Ok(self.metadata.promotion_record(target, digest).await?)
    }

    /// Stores the record of a promotion (its last write before the audit log).
    pub async fn put_promotion_record(&self, target: &RepoName, digest: &Digest, record: &PromotionRecord) -> Result<()> {
        Ok(self.metadata.put_promotion_record(target, digest, record).await?)
    }

    /// Promotion records of `target`, newest first, at most `limit`.
    pub async fn promotions(&self, target: &RepoName, limit: usize) -> Result<Vec<PromotionRecord>> {
        let mut records = self.metadata.promotion_records(target, MAX_PROMOTION_RECORDS).await?;
        records.sort_by_key(|record| std::cmp::Reverse(record.time));
        records.truncate(limit);
        Ok(records)
    }
}
