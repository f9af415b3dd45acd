//! The decisions, pure: from a review, the configuration and what the registry said about its own
//! images (their digests and cached verdicts, looked up beforehand), the answer of each webhook.
//! Nothing here reads the store or the network.

use std::collections::HashMap;

use storage::Digest;

use super::image::{ImageDigest, ImageError, ImageName};
use super::review::{Answer, ContainerImage, Review};
use super::AdmissionConfig;
use crate::names::{Reference, RepoName};
use crate::policy::gate::{GateMode, Verdict};

/// One container's image, read.
#[derive(Debug)]
pub struct Classified<'a> {
    /// The container.
    pub container: &'a ContainerImage,
    /// The reference, or why it is not one.
    pub image: Result<ImageName, ImageError>,
    /// Whether its host is one this registry is known by.
    pub ours: bool,
}

/// What the registry knows of one of its images: the repository a pull of it is served from,
/// the digest the reference names now (`None`: not in the registry), whether its namespace is
/// gated, and the verdict of its gate.
#[derive(Debug, Clone)]
pub struct Found {
    /// The repository a runtime's pull is served from: the name as written, or the proxied
    /// repository a mirrored name routes to (`library/alpine` -> `proxy/docker.io/library/alpine`).
    pub repo: RepoName,
    /// The manifest digest the tag points to (or the digest given, when the repository has it).
    pub digest: Option<Digest>,
    /// Whether the repository's namespace has a gate.
    pub gated: bool,
    /// The gate's verdict on `digest` (asked by validation only).
    pub verdict: Option<Verdict>,
}

/// What is looked up: an image of this registry, by repository and reference.
pub type Wanted = (RepoName, Reference);

/// Reads every container's image and whether it is this registry's.
pub fn classify<'a>(config: &AdmissionConfig, review: &'a Review) -> Vec<Classified<'a>> {
    review
        .containers
        .iter()
        .map(|container| {
            let image = ImageName::parse(&container.image);
            let ours = image.as_ref().is_ok_and(|image| config.is_ours(&image.host));
            Classified { container, image, ours }
        })
        .collect()
}

/// The lookup an image of this registry needs: by digest when it has one (which is what a runtime
/// pulls), else by tag (`latest` when none is written). `None` for other images and for digests
/// of an algorithm this registry does not store.
pub fn wanted(classified: &Classified<'_>) -> Option<Wanted> {
    let image = classified.image.as_ref().ok().filter(|_| classified.ours)?;
    let reference = match (&image.digest, &image.tag) {
        (Some(ImageDigest::Sha256(digest)), _) => Reference::Digest(digest.clone()),
        (Some(ImageDigest::Other(_)), _) => return None,
        (None, Some(tag)) => Reference::Tag(tag.clone()),
        (None, None) => Reference::Tag("latest".parse().expect("latest is a tag")),
    };
    Some((image.repo.clone(), reference))
}

/// The mutating webhook: each image of this registry given by tag is pinned to the digest the tag
/// points to now (`repo:tag@sha256:...`, the reference as written with the digest appended);
/// everything else is left as written. It never refuses; an image it cannot pin is a warning.
pub fn mutate(images: &[Classified<'_>], found: &HashMap<Wanted, Found>) -> Answer {
    let mut answer = Answer { allowed: true, message: None, patch: Vec::new(), warnings: Vec::new() };
    for classified in images {
        let Some(wanted) = wanted(classified).filter(|(_, reference)| matches!(reference, Reference::Tag(_))) else { continue };
        let container = classified.container;
        match found.get(&wanted).and_then(|found| found.digest.as_ref()) {
            Some(digest) => answer.patch.push((container.pointer.clone(), format!("{}@{digest}", container.image))),
            None => answer.warnings.push(format!(
                "container {}: {} is not in this registry; left as written",
                container.name, container.image
            )),
        }
    }
    answer
}

/// The validating webhook: refuses, one line per container, an image that is not a valid
/// reference, comes from a registry not in `allowed_registries`, is not given by digest when
/// `require_digest` is on, or is this registry's and fails its namespace's gate (or is missing from
/// a gated namespace). In audit mode, and for a gate in audit mode, a refusal is a warning instead.
pub fn validate(config: &AdmissionConfig, images: &[Classified<'_>], found: &HashMap<Wanted, Found>) -> Answer {
    let mut refusals: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for classified in images {
        let container = classified.container;
        let refuse = |why: String| format!("container {}: {why}", container.name);
        let image = match &classified.image {
            Ok(image) => image,
            Err(err) => {
                refusals.push(refuse(err.to_string()));
                continue;
            }
        };
        if !config.allows_registry(image) {
            refusals.push(refuse(format!(
                "{} comes from {}, which is not an allowed registry ({})",
                container.image,
                image.host,
                config.allowed_list()
            )));
            continue;
        }
        if config.require_digest && image.digest.is_none() {
            refusals.push(refuse(format!("{} is not pinned by digest (require_digest is on)", container.image)));
            continue;
        }
        if !classified.ours {
            continue;
        }
        let Some(wanted) = wanted(classified) else {
            refusals.push(refuse(format!("{}: this registry stores sha256 digests only", container.image)));
            continue;
        };
        let Some(found) = found.get(&wanted) else { continue };
        match (&found.digest, &found.verdict) {
            (None, _) if found.gated => refusals.push(refuse(format!("{} is not in this registry, so nothing in it passed its gate", container.image))),
            (None, _) => warnings.push(refuse(format!("{} is not in this registry", container.image))),
            (Some(_), Some(verdict)) if !verdict.passed => match verdict.mode {
                GateMode::Enforce => refusals.push(refuse(verdict.summary())),
                GateMode::Audit => warnings.push(refuse(format!("{} (the gate is in audit mode)", verdict.summary()))),
            },
            (Some(_), _) => {}
        }
    }
    refusals.dedup();
    match (config.mode, refusals.is_empty()) {
        (_, true) => Answer { allowed: true, message: None, patch: Vec::new(), warnings },
        (GateMode::Audit, false) => {
            warnings.extend(refusals.into_iter().map(|refusal| format!("audit mode, would be refused: {refusal}")));
            Answer { allowed: true, message: None, patch: Vec::new(), warnings }
        }
        (GateMode::Enforce, false) => Answer { allowed: false, message: Some(refusals.join("\n")), patch: Vec::new(), warnings },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::admission::review::Review;

    fn config(edit: impl FnOnce(&mut AdmissionConfig)) -> AdmissionConfig {
        let mut config = AdmissionConfig {
            hosts: vec!["registry.example.com".into(), "registry.example.com:5443".into()],
            mode: GateMode::Enforce,
            require_digest: false,
            allowed_registries: Vec::new(),
            exempt_namespaces: vec!["kube-system".into()],
            exempt_labels: Default::default(),
            revalidate_every: Duration::from_secs(3600),
        };
        edit(&mut config);
        config
    }

    fn review(images: &[&str]) -> Review {
        let containers: Vec<serde_json::Value> =
            images.iter().enumerate().map(|(i, image)| serde_json::json!({ "name": format!("c{i}"), "image": image })).collect();
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": { "uid": "u", "kind": { "kind": "Pod" }, "namespace": "shop", "operation": "CREATE",
                         "object": { "metadata": { "name": "p" }, "spec": { "containers": containers } } }
        });
        Review::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
    }

    /// The verdict of a gate that needs a signature by "ci" (none is there), or of one that
    /// needs nothing, in `mode`.
    fn verdict(passed: bool, mode: GateMode) -> Verdict {
        let signed_by = if passed { Vec::new() } else { vec!["ci".to_owned()] };
        let gate = crate::policy::gate::Gate { mode, signed_by, signed_by_all: Vec::new(), attestations: Vec::new(), sbom: false, scan: None };
        crate::policy::gate::evaluate(&gate, "prod/**", "prod/app@sha256:aa", &[], Vec::new(), "r", 0)
    }

    /// What the registry holds in these tests: prod/app:v1 (passes), prod/bad:v1 (fails),
    /// prod/audited:v1 (fails under a gate in audit mode), build/tool:v1 (ungated).
    fn registry() -> HashMap<Wanted, Found> {
        let digest = |seed: &str| Digest::of(seed.as_bytes());
        let tag = |repo: &str, tag: &str| (repo.parse().unwrap(), Reference::Tag(tag.parse().unwrap()));
        let by_digest = |repo: &str, seed: &str| (repo.parse().unwrap(), Reference::Digest(digest(seed)));
        let repo: RepoName = "prod/app".parse().unwrap();
        let found = |seed: &str, gated: bool, verdict: Option<Verdict>| Found { repo: repo.clone(), digest: Some(digest(seed)), gated, verdict };
        HashMap::from([
            (tag("prod/app", "v1"), found("app", true, Some(verdict(true, GateMode::Enforce)))),
            (by_digest("prod/app", "app"), found("app", true, Some(verdict(true, GateMode::Enforce)))),
            (tag("prod/bad", "v1"), found("bad", true, Some(verdict(false, GateMode::Enforce)))),
            (tag("prod/audited", "v1"), found("audited", true, Some(verdict(false, GateMode::Audit)))),
            (tag("build/tool", "v1"), found("tool", false, None)),
            (tag("prod/app", "v9"), Found { repo: repo.clone(), digest: None, gated: true, verdict: None }),
            (tag("build/tool", "v9"), Found { repo: repo.clone(), digest: None, gated: false, verdict: None }),
        ])
    }

    #[test]
    fn mutation_pins_tags_of_this_registry_only() {
        let app = Digest::of(b"app");
        let tool = Digest::of(b"tool");
        let images = [
            "registry.example.com/prod/app:v1",
            "registry.example.com:5443/build/tool:v1",
            &format!("registry.example.com/prod/app@{app}"),
            &format!("registry.example.com/prod/app:v1@{app}"),
            "docker.io/library/busybox:1.36",
            "registry.example.com:6000/prod/app:v1",
            "registry.example.com/prod/app:v9",
            "REGISTRY.example.com/prod/app:v1",
        ];
        let review = review(&images);
        let answer = mutate(&classify(&config(|_| {}), &review), &registry());
        assert!(answer.allowed && answer.message.is_none());
        assert_eq!(
            answer.patch,
            vec![
                ("/spec/containers/0/image".to_owned(), format!("registry.example.com/prod/app:v1@{app}")),
                ("/spec/containers/1/image".to_owned(), format!("registry.example.com:5443/build/tool:v1@{tool}")),
                ("/spec/containers/7/image".to_owned(), format!("REGISTRY.example.com/prod/app:v1@{app}")),
            ]
        );
        assert_eq!(answer.warnings, vec!["container c6: registry.example.com/prod/app:v9 is not in this registry; left as written"]);
    }

    /// Validation of one image: `None` when admitted without a word, else the start of the
    /// refusal (`Err`) or of the warning (`Ok`).
    fn check(config: &AdmissionConfig, image: &str, expected: Option<Result<&str, &str>>) {
        let review = review(&[image]);
        let answer = validate(config, &classify(config, &review), &registry());
        let got = match (answer.allowed, answer.message, answer.warnings.first()) {
            (true, None, None) => None,
            (true, None, Some(warning)) => Some(Ok(warning.clone())),
            (false, Some(message), _) => Some(Err(message)),
            other => panic!("{image}: inconsistent answer {other:?}"),
        };
        match (got.as_ref(), expected) {
            (None, None) => {}
            (Some(Ok(got)), Some(Ok(start))) | (Some(Err(got)), Some(Err(start))) => assert!(got.starts_with(start), "{image}: {got}"),
            (got, expected) => panic!("{image}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn validation_refuses_what_fails_and_admits_the_rest() {
        let enforce = config(|_| {});
        let upper = format!("registry.example.com/prod/app@sha256:{}", Digest::of(b"app").hex().to_uppercase());
        let app = format!("registry.example.com/prod/app@{}", Digest::of(b"app"));
        let sha512 = format!("registry.example.com/prod/app@sha512:{}", "a".repeat(128));
        let cases: Vec<(&str, Option<Result<&str, &str>>)> = vec![
            ("registry.example.com/prod/app:v1", None),
            (&app, None),
            ("registry.example.com:5443/build/tool:v1", None),
            ("docker.io/library/busybox:1.36", None),
            ("registry.example.com/prod/bad:v1", Some(Err("container c0: prod/app@sha256:aa denied: signature: no signature from trusted identity 'ci'"))),
            ("registry.example.com:443/prod/bad:v1", Some(Err("container c0: prod/app@sha256:aa denied"))),
            ("Registry.Example.COM:443/prod/bad:v1", Some(Err("container c0: prod/app@sha256:aa denied"))),
            ("registry.example.com/prod/audited:v1", Some(Ok("container c0: prod/app@sha256:aa denied: signature: no signature from trusted identity 'ci' (the gate is in audit mode)"))),
            ("registry.example.com/prod/app:v9", Some(Err("container c0: registry.example.com/prod/app:v9 is not in this registry, so nothing in it passed"))),
            ("registry.example.com/build/tool:v9", Some(Ok("container c0: registry.example.com/build/tool:v9 is not in this registry"))),
            (&upper, Some(Err("container c0: \"registry.example.com/prod/app@sha256:"))),
            (&sha512, Some(Err("container c0: registry.example.com/prod/app@sha512:"))),
        ];
        for (image, expected) in cases {
            check(&enforce, image, expected);
        }
        let strict = config(|c| {
            c.require_digest = true;
            c.allowed_registries = vec!["registry.example.com".into(), "ghcr.io/myorg".into()];
        });
        let cases: Vec<(&str, Option<Result<&str, &str>>)> = vec![
            (&app, None),
            ("registry.example.com/prod/app:v1", Some(Err("container c0: registry.example.com/prod/app:v1 is not pinned by digest (require_digest is on)"))),
            ("docker.io/library/busybox:1.36", Some(Err("container c0: docker.io/library/busybox:1.36 comes from docker.io, which is not an allowed registry (registry.example.com, registry.example.com:5443, ghcr.io/myorg)"))),
            ("busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000", Some(Err("container c0: busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000 comes from docker.io"))),
            ("ghcr.io/myorg/tool@sha256:0000000000000000000000000000000000000000000000000000000000000000", None),
            ("registry.example.com:443/prod/app:v1", Some(Err("container c0: registry.example.com:443/prod/app:v1 is not pinned"))),
            ("ghcr.io/myorg-evil/tool@sha256:0000000000000000000000000000000000000000000000000000000000000000", Some(Err("container c0: ghcr.io/myorg-evil/tool"))),
            ("ghcr.io/other/tool@sha256:0000000000000000000000000000000000000000000000000000000000000000", Some(Err("container c0: ghcr.io/other/tool"))),
        ];
        for (image, expected) in cases {
            check(&strict, image, expected);
        }
        let audit = config(|c| c.mode = GateMode::Audit);
        check(&audit, "registry.example.com/prod/bad:v1", Some(Ok("audit mode, would be refused: container c0: prod/app@sha256:aa denied")));
    }

    #[test]
    fn one_line_per_refused_container() {
        let config = config(|_| {});
        let review = review(&["registry.example.com/prod/bad:v1", "registry.example.com/prod/app:v1", "Bad Image"]);
        let answer = validate(&config, &classify(&config, &review), &registry());
        let message = answer.message.unwrap();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 2, "{message}");
        assert!(lines[0].starts_with("container c0: prod/app@sha256:aa denied") && lines[1].starts_with("container c2: \"Bad Image\""), "{message}");
    }
}
