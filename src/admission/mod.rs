//! Kubernetes admission: `AdmissionReview` in, answer out, from the registry's own metadata and
//! cached verdicts (no network, nothing downloaded again). The mutating webhook pins each image of
//! this registry given by tag to the digest the tag points to now; the validating webhook refuses
//! what fails the namespace's gate, what is not pinned when `require_digest` is on, and what comes
//! from a registry not allowed, and remembers where each admitted digest runs, so that
//! [`drift`] can notice when one of them turns to failing.
//!
//! `review` reads and writes the wire format, `image` reads references as runtimes do, `decide`
//! holds the decisions (pure), `drift` the re-evaluation of admitted digests, and `manifests` the
//! webhook configuration printed for a cluster. HTTP stays in `api::admission`.
//!
//! Namespaces are exempt by name here (the review names the object's namespace) and by label in
//! the API server, through the `namespaceSelector` of the printed webhook configurations: a review
//! does not carry the namespace's labels.

pub mod decide;
pub mod drift;
pub mod image;
pub mod manifests;
pub mod review;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};

use crate::metadata::admissions::{AdmittedImage, Workload};
use crate::names::Reference;
use crate::policy::gate::GateMode;
use crate::registry::{Registry, RegistryError};
use decide::{Classified, Found, Wanted};
use image::ImageName;
use review::{Answer, Operation, Review, ReviewError};

/// Images of this registry looked up at once for one review.
const LOOKUPS_AT_ONCE: usize = 16;

/// `[admission]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// `host[:port]` names of this registry in image references, lowercased.
    pub hosts: Vec<String>,
    /// Enforce (refuse) or audit (admit with warnings).
    pub mode: GateMode,
    /// Refuse images not given by digest.
    pub require_digest: bool,
    /// `host[:port]` or `host[:port]/path` entries images may come from, besides `hosts`; empty:
    /// any registry.
    pub allowed_registries: Vec<String>,
    /// Namespaces admission leaves alone, by name.
    pub exempt_namespaces: Vec<String>,
    /// Namespaces the API server does not send (by label, in the printed `namespaceSelector`).
    pub exempt_labels: BTreeMap<String, String>,
    /// How often admitted digests are judged again.
    pub revalidate_every: Duration,
}

/// The two webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    /// `POST /admission/mutate`
    Mutate,
    /// `POST /admission/validate`
    Validate,
}

/// Why a review was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The configuration has no `[admission]`.
    #[error("admission is not configured: add an [admission] section")]
    NotConfigured,
    /// The body is not a review this registry answers.
    #[error(transparent)]
    Review(#[from] ReviewError),
    /// The registry could not look something up.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl AdmissionConfig {
    /// Whether `host` (`host[:port]`, lowercase) names this registry.
    pub fn is_ours(&self, host: &str) -> bool {
        // `host:443` is the same registry as `host` to a runtime (https's port): spelling the
        // port must not take an image out of admission's judgement.
        let https_default = |host: &str| host.strip_suffix(":443").unwrap_or(host).to_owned();
        let host = https_default(host);
        self.hosts.iter().any(|ours| https_default(ours) == host)
    }

    /// Whether images may come from `image`'s registry: any when `allowed_registries` is empty;
    /// else this registry's hosts and the entries (a host, or a host and a path prefix).
    pub fn allows_registry(&self, image: &ImageName) -> bool {
        if self.allowed_registries.is_empty() || self.is_ours(&image.host) {
            return true;
        }
        self.allowed_registries.iter().any(|entry| match entry.split_once('/') {
            None => *entry == image.host,
            Some((host, path)) => {
                let repo = image.repo.as_str();
                host == image.host && (repo == path || repo.strip_prefix(path).is_some_and(|rest| rest.starts_with('/')))
            }
        })
    }

    /// The registries images may come from, for messages.
    fn allowed_list(&self) -> String {
        let mut list: Vec<&str> = self.hosts.iter().map(String::as_str).collect();
        for entry in &self.allowed_registries {
            if !list.contains(&entry.as_str()) {
                list.push(entry);
            }
        }
        list.join(", ")
    }

    /// Whether the namespace is exempt by name.
    pub fn exempt(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|exempt| exempt == namespace)
    }
}

/// Answers one review for `webhook`. `cluster` is the name of the client certificate the API
/// server presented; it tells clusters apart in the records of where digests run.
pub async fn answer(registry: &Registry, webhook: Webhook, body: &[u8], cluster: &str) -> Result<String, AdmissionError> {
    let config = registry.config();
    let admission = config.admission.as_ref().ok_or(AdmissionError::NotConfigured)?;
    let review = Review::parse(body)?;
    let allowed = Answer { allowed: true, message: None, patch: Vec::new(), warnings: Vec::new() };
    let answer = match (webhook, review.operation) {
        _ if admission.exempt(&review.namespace) => allowed,
        (Webhook::Validate, Operation::Delete) => {
            if let (Some(workload), false) = (workload_of(&review, cluster), review.dry_run) {
                registry.forget_admission(&workload).await?;
            }
            allowed
        }
        (_, Operation::Delete | Operation::Connect) => allowed,
        (Webhook::Mutate, _) => {
            let images = decide::classify(admission, &review);
            let found = look_up(registry, &images, false).await?;
            decide::mutate(&images, &found)
        }
        (Webhook::Validate, _) => {
            let images = decide::classify(admission, &review);
            let found = look_up(registry, &images, true).await?;
            let answer = decide::validate(admission, &images, &found);
            // A dry run runs nowhere; neither does what was refused.
            if answer.allowed && !review.dry_run {
                remember(registry, &review, cluster, &images, &found).await?;
            }
            answer
        }
    };
    let outcome = match (answer.allowed, answer.warnings.is_empty()) {
        (false, _) => "refused",
        (true, false) => "warned",
        (true, true) => "allowed",
    };
    let label = match webhook {
        Webhook::Mutate => "mutate",
        Webhook::Validate => "validate",
    };
    registry.metrics.admission_reviews.with_label_values(&[label, outcome]).inc();
    Ok(review.answer(&answer))
}

/// What the registry holds for each image of its own in the review: the digest a tag points to
/// (or whether the repository has the digest given) and, when `verdicts`, the gate's verdict.
async fn look_up(registry: &Registry, images: &[Classified<'_>], verdicts: bool) -> Result<HashMap<Wanted, Found>, RegistryError> {
    let wanted: std::collections::HashSet<Wanted> = images.iter().filter_map(decide::wanted).collect();
    futures::stream::iter(wanted)
        .map(|wanted| async move {
            let found = find(registry, &wanted, verdicts).await?;
            Ok::<_, RegistryError>((wanted, found))
        })
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .try_collect()
        .await
}

/// Looks an image up as a runtime's pull would be served, from what is stored: a mirrored name
/// is routed to its proxied repository (as `route_pull` routes the pull), and a proxied tag is
/// read as its last pull left it, never checked upstream (no network: the answer must come
/// within the webhook's budget even when the upstream is down).
async fn find(registry: &Registry, (name, reference): &Wanted, verdicts: bool) -> Result<Found, RegistryError> {
    // A name that cannot be routed is looked up as written; the runtime's pull of it fails alike.
    let repo = registry.route_pull(name, None).await.unwrap_or_else(|_| name.clone());
    let gated = registry.config().namespace(repo.as_str()).is_some_and(|ns| ns.gate.is_some());
    let digest = match reference {
        Reference::Tag(tag) => registry.local_tag(&repo, tag).await?,
        Reference::Digest(digest) => Some(digest.clone()),
    };
    let digest = match (digest, reference) {
        (Some(digest), Reference::Digest(_)) if !registry.has_manifest(&repo, &digest).await? => None,
        (digest, _) => digest,
    };
    let verdict = match &digest {
        Some(digest) if verdicts && gated => registry.verdict(&repo, digest).await?,
        _ => None,
    };
    Ok(Found { repo, digest, gated, verdict })
}

/// The workload a review is about, when its names make one (the API server has named it).
fn workload_of(review: &Review, cluster: &str) -> Option<Workload> {
    let workload = Workload::new(cluster, &review.namespace, &review.kind, &review.name);
    if workload.is_none() {
        tracing::debug!(namespace = %review.namespace, kind = %review.kind, name = %review.name, "admission: no record for an object without a valid name");
    }
    workload
}

/// Records where the admitted digests of this registry run. An object whose controller is a
/// kind admission reads (a ReplicaSet's pods, a Deployment's ReplicaSets, a CronJob's Jobs) is
/// not recorded: its controller was, with the same template.
async fn remember(registry: &Registry, review: &Review, cluster: &str, images: &[Classified<'_>], found: &HashMap<Wanted, Found>) -> Result<(), RegistryError> {
    if review.controller.as_deref().is_some_and(|kind| review::KINDS.contains(&kind)) {
        return Ok(());
    }
    let Some(workload) = workload_of(review, cluster) else { return Ok(()) };
    let mut admitted: Vec<AdmittedImage> = Vec::new();
    for classified in images {
        let Some(wanted) = decide::wanted(classified) else { continue };
        let Some(found) = found.get(&wanted) else { continue };
        let Some(digest) = found.digest.as_ref() else { continue };
        let image = AdmittedImage { image: classified.container.image.clone(), repository: found.repo.to_string(), digest: digest.to_string() };
        if !admitted.contains(&image) {
            admitted.push(image);
        }
    }
    registry.remember_admission(&workload, admitted, now_secs()).await
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
