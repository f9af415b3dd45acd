//! Promotion: move an artifact from one repository (typically `build/...`) to another
//! (`prod/...`) only if the target namespace's gate passes on the source's evidence.
//!
//! Order of work, so that a failure at any point leaves no target tag and a retry completes:
//! 1. resolve the source once (the record keeps reference and digest), and read it under the
//!    source's gate exactly as a pull by the caller would: promotion is a way of reading;
//! 2. evaluate the target's gate; refuse with the verdict (nothing written);
//! 3. check the target tags can be bound (409 before anything is linked);
//! 4. link blobs, child manifests, the manifest and every evidence manifest with its blobs into
//!    the target (links only: no byte is copied), with referrer links and cosign's legacy tags;
//!    a runnable referrer is left behind and named in the record;
//! 5. sign a verification summary (SLSA VSA) of the verdict and attach it as a referrer (an
//!    ungated target evaluates no policy, so nothing is signed and the record says so);
//! 6. bind the tags, last; store the promotion record; append to the audit log.

use crate::metadata::{Linked, PromotionRecord, PromotionResult};
use crate::names::{ImageRef, Reference, RepoName, Tag};
use crate::policy::gate::Verdict;
use crate::registry::{Registry, RegistryError};

/// What CI asks for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The artifact, by tag or digest.
    pub source: ImageRef,
    /// The repository it goes to.
    pub target: RepoName,
    /// Tags to bind in the target.
    pub tags: Vec<Tag>,
    /// Evaluate and report without writing.
    pub dry_run: bool,
    /// Who asks.
    pub actor: String,
    /// Whether the caller may read the source without its gate (`auth::Principal::may_skip_gate`).
    pub skip_source_gate: bool,
}

/// How a promotion ended when it did not promote.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// The target's gate refused: 403 with the verdict.
    #[error("{}", .0.summary())]
    Denied(Box<Verdict>),
    /// A target tag is bound to other content: 409.
    #[error("{0}")]
    TagConflict(String),
    /// The request asks for something a promotion never does: 400.
    #[error("{0}")]
    InvalidRequest(String),
    /// Anything else.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What a successful (or dry-run) promotion returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The record.
    pub record: PromotionRecord,
    /// Whether an identical promotion had already been done (the record is the earlier one).
    pub already_done: bool,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs a promotion.
pub async fn run(registry: &Registry, request: Request) -> Result<Outcome, PromotionError> {
    // cosign's tags name another digest's evidence; only the registry binds them, while linking
    // that digest's evidence.
    if let Some(tag) = request.tags.iter().find(|tag| tag.cosign_subject().is_some()) {
        return Err(PromotionError::InvalidRequest(format!(
            "tag {tag} is a cosign evidence tag; promotions bind those themselves, with the evidence of the digest it names"
        )));
    }
    let source_repo = &request.source.repo;
    let digest = registry.resolve(source_repo, &request.source.reference).await?;
    registry.manifest(source_repo, &Reference::Digest(digest.clone())).await?;
    if !request.skip_source_gate {
        registry.check_pull(source_repo, &digest, &request.actor).await?;
    }
    let tags: Vec<&Tag> = request.tags.iter().collect();

    let verdict = registry.verdict_for(&request.target, source_repo, &digest).await?;
    let verdict_json = verdict.as_ref().map(|v| serde_json::to_value(v).unwrap_or_default());
    if let Some(verdict) = verdict.as_ref().filter(|v| !v.passed) {
        registry.record_audit("promotion_denied", &request.actor, &request.target, &digest, promotion_detail(&request, verdict_json.clone())).await;
        return Err(PromotionError::Denied(Box::new(verdict.clone())));
    }
    let mut record = PromotionRecord {
        source: request.source.to_string(),
        digest: digest.to_string(),
        target: request.target.to_string(),
        tags: request.tags.iter().map(Tag::to_string).collect(),
        result: PromotionResult::DryRun,
        actor: request.actor.clone(),
        time: now_secs(),
        verdict: verdict_json.clone(),
        vsa: None,
        vsa_skipped: None,
        linked: Linked::default(),
        left_behind: Vec::new(),
    };
    if request.dry_run {
        registry.record_audit("promotion_dry_run", &request.actor, &request.target, &digest, serde_json::to_value(&record).unwrap_or_default()).await;
        return Ok(Outcome { record, already_done: false });
    }
    registry.check_tags_bindable(&request.target, &tags, &digest).await.map_err(tag_conflict)?;
    if let Some(existing) = registry.promotion_record(&request.target, &digest).await? {
        if registry.tags_bound(&request.target, &tags, &digest).await? && tags.iter().all(|t| existing.tags.contains(&t.to_string())) {
            return Ok(Outcome { record: existing, already_done: true });
        }
    }

    let links = registry.link_promotion(source_repo, &request.target, &digest, verdict.as_ref()).await?;
    (record.linked, record.left_behind) = (links.linked, links.left_behind);
    record.vsa = links.vsa.map(|vsa| vsa.to_string());
    if verdict.is_none() {
        record.vsa_skipped = Some(format!("{} is not gated: no policy was evaluated, so no verification summary was signed", request.target));
    }
    fail::fail_point!("promotion-before-tags", |_| Err(PromotionError::Registry(RegistryError::Unavailable("injected failure before tags".to_owned()))));
    registry.bind_promoted_tags(&request.target, &tags, &digest).await.map_err(tag_conflict)?;
    record.result = PromotionResult::Promoted;
    registry.put_promotion_record(&request.target, &digest, &record).await?;
    registry.record_audit("promotion", &request.actor, &request.target, &digest, serde_json::to_value(&record).unwrap_or_default()).await;
    Ok(Outcome { record, already_done: false })
}

fn promotion_detail(request: &Request, verdict: Option<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "source": request.source.to_string(),
        "target": request.target.to_string(),
        "tags": request.tags.iter().map(Tag::to_string).collect::<Vec<_>>(),
        "verdict": verdict,
    })
}

fn tag_conflict(err: RegistryError) -> PromotionError {
    match err {
        RegistryError::Denied(message) => PromotionError::TagConflict(message),
        other => PromotionError::Registry(other),
    }
}
