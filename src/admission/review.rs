//! `AdmissionReview` (`admission.k8s.io/v1`) as the API server sends and expects it: the request
//! read into typed structs of just the fields admission uses (everything else in the object is
//! skipped, not held), and the answer written back.
//!
//! The pod spec sits at a different place in each kind of object; [`pod_spec_path`] says where,
//! and [`Review::containers`] lists every container of `containers`, `initContainers` and
//! `ephemeralContainers` with the JSON pointer of its `image`, which is what a patch replaces.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The most containers a review may hold (each image of this registry in it is looked up).
const MAX_CONTAINERS: usize = 1000;

/// The API version this registry answers (and the only one its webhook configuration asks for).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// A request as received.
#[derive(Debug)]
pub struct Review {
    /// The request's `uid`, which the answer must carry.
    pub uid: String,
    /// The object's kind (`Pod`, `Deployment`, ...).
    pub kind: String,
    /// The namespace of the object.
    pub namespace: String,
    /// The object's name (empty for a `generateName` object before the API server names it).
    pub name: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: Operation,
    /// Whether nothing will be persisted (`kubectl apply --dry-run=server`).
    pub dry_run: bool,
    /// Every container of the pod spec the object holds, in order; empty when it holds none.
    pub containers: Vec<ContainerImage>,
    /// The kind of the object's controller (`ownerReferences[].controller`), when it has one.
    pub controller: Option<String>,
}

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// A new object.
    Create,
    /// A changed object.
    Update,
    /// An object going away.
    Delete,
    /// `exec`, `attach`, port forwarding: no object to judge.
    Connect,
}

/// One container's image and where it is in the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub list: &'static str,
    /// The container's name.
    pub name: String,
    /// The image as written.
    pub image: String,
    /// JSON pointer to the `image` field (`/spec/template/spec/containers/0/image`).
    pub pointer: String,
}

/// Why a request body is not an `AdmissionReview` this registry answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON of the expected shape.
    #[error("not an AdmissionReview: {0}")]
    Malformed(String),
    /// Another API version.
    #[error("AdmissionReview {0:?} is not answered here; the webhook configuration must ask for admission.k8s.io/v1")]
    Version(String),
}

/// The answer's `response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Whether the object is admitted.
    pub allowed: bool,
    /// Why not, one line per refused image.
    pub message: Option<String>,
    /// Replacements of image fields: (JSON pointer, new value).
    pub patch: Vec<(String, String)>,
    /// Shown to the user by kubectl; the admission goes on.
    pub warnings: Vec<String>,
}

/// Where the pod spec is in an object of `kind`; `None` for kinds that hold none.
pub fn pod_spec_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// The kinds whose pod spec admission reads.
pub const KINDS: [&str; 8] = ["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController"];

impl Review {
    /// Reads a request body.
    pub fn parse(body: &[u8]) -> Result<Review, ReviewError> {
        let wire: WireReview = serde_json::from_slice(body).map_err(|err| {
            // Say so when it is another version of the review, whose request may differ.
            match serde_json::from_slice::<Envelope>(body) {
                Ok(envelope) if envelope.api_version != API_VERSION => ReviewError::Version(envelope.api_version),
                _ => ReviewError::Malformed(err.to_string()),
            }
        })?;
        if wire.api_version != API_VERSION || wire.kind != "AdmissionReview" {
            return Err(ReviewError::Version(format!("{} {}", wire.api_version, wire.kind)));
        }
        let request = wire.request.ok_or_else(|| ReviewError::Malformed("no request".to_owned()))?;
        if request.uid.is_empty() {
            return Err(ReviewError::Malformed("request.uid is empty".to_owned()));
        }
        let object = request.object.unwrap_or_default();
        let controller = object.metadata.owner_references.iter().find(|owner| owner.controller == Some(true)).map(|owner| owner.kind.clone());
        let name = match request.name.filter(|name| !name.is_empty()) {
            Some(name) => name,
            None => object.metadata.name.unwrap_or_default(),
        };
        let containers = match pod_spec_path(&request.kind.kind) {
            Some(path) => object.spec.map(|spec| spec.containers(&request.kind.kind, path)).unwrap_or_default(),
            None => Vec::new(),
        };
        if containers.len() > MAX_CONTAINERS {
            return Err(ReviewError::Malformed(format!("{} containers; at most {MAX_CONTAINERS} are judged", containers.len())));
        }
        Ok(Review {
            uid: request.uid,
            kind: request.kind.kind,
            namespace: request.namespace.unwrap_or_default(),
            name,
            operation: request.operation,
            dry_run: request.dry_run.unwrap_or(false),
            containers,
            controller,
        })
    }

    /// The answer as JSON: an `AdmissionReview` with the request's `uid`.
    pub fn answer(&self, answer: &Answer) -> String {
        let patch = (!answer.patch.is_empty()).then(|| {
            let ops: Vec<Replace<'_>> = answer.patch.iter().map(|(path, value)| Replace { op: "replace", path, value }).collect();
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).expect("a patch always serializes"))
        });
        let response = WireResponse {
            uid: &self.uid,
            allowed: answer.allowed,
            status: answer.message.as_deref().map(|message| WireStatus { code: 403, message }),
            patch_type: patch.is_some().then_some("JSONPatch"),
            patch,
            warnings: &answer.warnings,
        };
        let review = WireAnswer { api_version: API_VERSION, kind: "AdmissionReview", response };
        serde_json::to_string(&review).expect("an answer always serializes")
    }
}

// --- the request as sent: only the fields admission reads ---------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireReview {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<WireRequest>,
}

/// The review's type alone.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[serde(default)]
    api_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    uid: String,
    kind: GroupVersionKind,
    name: Option<String>,
    namespace: Option<String>,
    operation: Operation,
    dry_run: Option<bool>,
    object: Option<WireObject>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    kind: String,
}

#[derive(Default, Deserialize)]
struct WireObject {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<Spec>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    name: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    owner_references: Vec<OwnerReference>,
}

#[derive(Deserialize)]
struct OwnerReference {
    kind: String,
    controller: Option<bool>,
}

/// Every spec on the way to a pod spec: a pod's own, a workload's (`template`), a CronJob's
/// (`jobTemplate`). Which applies is decided by the kind, not by what happens to be there.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, deserialize_with = "null_as_empty")]
    containers: Vec<Container>,
    #[serde(default, deserialize_with = "null_as_empty")]
    init_containers: Vec<Container>,
    #[serde(default, deserialize_with = "null_as_empty")]
    ephemeral_containers: Vec<Container>,
    template: Option<Box<Template>>,
    job_template: Option<Box<JobTemplate>>,
}

#[derive(Deserialize)]
struct Template {
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct JobTemplate {
    spec: Option<JobSpec>,
}

#[derive(Deserialize)]
struct JobSpec {
    template: Option<Template>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    name: String,
    image: Option<String>,
}

/// `null` where a list may be: the same as no list.
fn null_as_empty<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl Spec {
    /// The containers of the pod spec of an object of `kind`, at `path`.
    fn containers(self, kind: &str, path: &str) -> Vec<ContainerImage> {
        let pod = match kind {
            "Pod" => Some(self),
            "CronJob" => self.job_template.and_then(|t| t.spec).and_then(|s| s.template).and_then(|t| t.spec),
            _ => self.template.and_then(|t| t.spec),
        };
        let Some(pod) = pod else { return Vec::new() };
        let lists = [("containers", pod.containers), ("initContainers", pod.init_containers), ("ephemeralContainers", pod.ephemeral_containers)];
        let mut found = Vec::new();
        for (list, containers) in lists {
            for (index, container) in containers.into_iter().enumerate() {
                // A container without an image is refused by the API server's own validation.
                let Some(image) = container.image else { continue };
                found.push(ContainerImage { list, name: container.name, image, pointer: format!("{path}/{list}/{index}/image") });
            }
        }
        found
    }
}

// --- the answer ---------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireAnswer<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<WireStatus<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct WireStatus<'a> {
    code: u16,
    message: &'a str,
}

/// One RFC 6902 operation: admission only ever replaces an image string.
#[derive(Serialize)]
struct Replace<'a> {
    op: &'a str,
    path: &'a str,
    value: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(kind: &str, object: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": "", "version": "v1", "kind": kind },
                "resource": { "group": "", "version": "v1", "resource": "x" },
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": { "username": "admin" },
                "object": object,
                "oldObject": null,
                "dryRun": false,
            }
        })
    }

    /// The containers found in an object of `kind`, as (pointer, image).
    fn check(kind: &str, object: serde_json::Value, expected: &[(String, &str)]) {
        let body = serde_json::to_vec(&review(kind, object)).unwrap();
        let parsed = Review::parse(&body).unwrap();
        let got: Vec<(String, &str)> = parsed.containers.iter().map(|c| (c.pointer.clone(), c.image.as_str())).collect();
        assert_eq!(got, expected, "{kind}");
    }

    #[test]
    fn containers_of_every_kind() {
        let pod = serde_json::json!({
            "containers": [{ "name": "a", "image": "a:1" }, { "name": "b", "image": "b:1" }],
            "initContainers": [{ "name": "i", "image": "i:1" }],
            "ephemeralContainers": [{ "name": "e", "image": "e:1", "targetContainerName": "a" }],
            "volumes": [{ "name": "v", "emptyDir": {} }],
        });
        let all = |prefix: &str| -> Vec<(String, &str)> {
            [("containers/0", "a:1"), ("containers/1", "b:1"), ("initContainers/0", "i:1"), ("ephemeralContainers/0", "e:1")]
                .into_iter()
                .map(|(at, image)| (format!("{prefix}/{at}/image"), image))
                .collect()
        };
        for kind in ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"] {
            let object = serde_json::json!({ "metadata": { "name": "w" }, "spec": { "replicas": 2, "template": { "spec": pod.clone() } } });
            check(kind, object, &all("/spec/template/spec"));
        }
        check("Pod", serde_json::json!({ "metadata": { "name": "p" }, "spec": pod.clone() }), &all("/spec"));
        let cron = serde_json::json!({ "spec": { "schedule": "* * * * *", "jobTemplate": { "spec": { "template": { "spec": pod.clone() } } } } });
        check("CronJob", cron, &all("/spec/jobTemplate/spec/template/spec"));
        // Lists that are null, a spec without a template, kinds without pods.
        let null_list = serde_json::json!({ "spec": { "containers": [{ "name": "a", "image": "a:1" }], "initContainers": null } });
        check("Pod", null_list, &[("/spec/containers/0/image".to_owned(), "a:1")]);
        check("Deployment", serde_json::json!({ "spec": { "replicas": 1 } }), &[]);
        check("ConfigMap", serde_json::json!({ "data": { "spec": "x" } }), &[]);
        // A kind is read where its kind keeps the pod spec, not wherever one happens to be.
        check("Pod", serde_json::json!({ "spec": { "template": { "spec": pod } } }), &[]);
    }

    #[test]
    fn requests_it_does_not_answer() {
        let check = |body: &str, expected: &str| {
            let err = Review::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        };
        check("{", "not an AdmissionReview");
        check(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#, "is not answered here");
        check(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request");
        check(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":{"kind":"Pod"},"operation":"CREATE"}}"#, "uid is empty");
        check(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"operation":"PATCH"}}"#, "unknown variant");
        let many = vec![serde_json::json!({ "name": "c", "image": "a:1" }); 1001];
        let body = serde_json::json!({ "apiVersion": API_VERSION, "kind": "AdmissionReview",
            "request": { "uid": "u", "kind": { "kind": "Pod" }, "operation": "CREATE", "object": { "spec": { "containers": many } } } });
        check(&body.to_string(), "1001 containers; at most 1000 are judged");
    }

    #[test]
    fn answers_carry_the_uid_and_a_base64_patch() {
        let body = serde_json::to_vec(&review("Pod", serde_json::json!({ "spec": { "containers": [] } }))).unwrap();
        let parsed = Review::parse(&body).unwrap();
        let answer = Answer { allowed: true, message: None, patch: vec![("/spec/containers/0/image".into(), "r/a:1@sha256:00".into())], warnings: vec!["w".into()] };
        let json: serde_json::Value = serde_json::from_str(&parsed.answer(&answer)).unwrap();
        assert_eq!(json["apiVersion"], API_VERSION);
        assert_eq!(json["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD.decode(json["response"]["patch"].as_str().unwrap()).unwrap();
        assert_eq!(String::from_utf8(patch).unwrap(), r#"[{"op":"replace","path":"/spec/containers/0/image","value":"r/a:1@sha256:00"}]"#);
        assert_eq!(json["response"]["warnings"], serde_json::json!(["w"]));
        let refused = Answer { allowed: false, message: Some("no".into()), patch: Vec::new(), warnings: Vec::new() };
        let json: serde_json::Value = serde_json::from_str(&parsed.answer(&refused)).unwrap();
        assert_eq!(json["response"], serde_json::json!({ "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": false, "status": { "code": 403, "message": "no" } }));
    }
}
