//! `portcullis admission manifests`: the Kubernetes objects that switch admission on, as one
//! `v1` `List` in JSON (which `kubectl apply -f -` takes as it is): a
//! `MutatingWebhookConfiguration` (pin tags to digests), a `ValidatingWebhookConfiguration`
//! (verify images, and forget deleted workloads), and the `Deployment` and `Service` that run
//! portcullis in the cluster. All `admissionregistration.k8s.io/v1`, `sideEffects: None`,
//! `admissionReviewVersions: [v1]`, `failurePolicy: Fail` (the deletion hook: `Ignore`, so an
//! unreachable registry never blocks a delete).
//!
//! The registry's own namespace and `exempt_namespaces` are left out by the
//! `kubernetes.io/metadata.name` label the API server sets on every namespace, and
//! `exempt_labels` by one `NotIn` expression each: label exemptions are applied by the API
//! server, which knows the namespace's labels (a review does not carry them).

use base64::Engine as _;
use serde_json::{json, Value};

use super::AdmissionConfig;

/// The port portcullis listens on in its pod, and the Service's target.
const CONTAINER_PORT: u16 = 5000;

/// What the objects are made from.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Service's name (also the Deployment's and the webhook configurations').
    pub service: String,
    /// The namespace portcullis runs in; never sent to the webhooks.
    pub namespace: String,
    /// PEM of the CA that signed portcullis's serving certificate (`caBundle`).
    pub ca_bundle_pem: String,
    /// The container image of portcullis.
    pub image: String,
    /// How long the API server waits for an answer, 1 to 30 seconds.
    pub timeout_seconds: u32,
}

/// Why the objects cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(String);

/// The objects, as a `v1` `List`.
pub fn render(options: &Options, admission: Option<&AdmissionConfig>) -> Result<Value, OptionsError> {
    for (what, name) in [("--service", &options.service), ("--namespace", &options.namespace)] {
        if !crate::metadata::admissions::is_dns_label(name) {
            return Err(OptionsError(format!("{what}: {name:?} is not a Kubernetes name (lowercase letters, digits and -, at most 63)")));
        }
    }
    if !(1..=30).contains(&options.timeout_seconds) {
        return Err(OptionsError(format!("--timeout-seconds: the API server accepts 1 to 30, found {}", options.timeout_seconds)));
    }
    if !options.ca_bundle_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(OptionsError("--ca-bundle: expected PEM certificates (-----BEGIN CERTIFICATE-----)".to_owned()));
    }
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(options.ca_bundle_pem.as_bytes());
    let selector = namespace_selector(&options.namespace, admission);
    let client = |path: &str| {
        json!({ "service": { "name": options.service, "namespace": options.namespace, "path": path, "port": 443 }, "caBundle": ca_bundle })
    };
    let webhook = |name: &str, path: &str, operations: &[&str], failure_policy: &str| {
        json!({
            "name": format!("{name}.portcullis.dev"),
            "clientConfig": client(path),
            "rules": rules(operations),
            "namespaceSelector": selector,
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": failure_policy,
            "timeoutSeconds": options.timeout_seconds,
        })
    };
    let mut pin = webhook("pin-digests", "/admission/mutate", &["CREATE", "UPDATE"], "Fail");
    // Another mutating webhook that changes an image after this one gets this one called again.
    pin["reinvocationPolicy"] = json!("IfNeeded");
    let labels = json!({ "app.kubernetes.io/name": "portcullis", "app.kubernetes.io/instance": options.service });
    let items = vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": { "name": options.service, "labels": labels },
            "webhooks": [pin],
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": { "name": options.service, "labels": labels },
            "webhooks": [
                webhook("verify-images", "/admission/validate", &["CREATE", "UPDATE"], "Fail"),
                webhook("forget-workloads", "/admission/validate", &["DELETE"], "Ignore"),
            ],
        }),
        deployment(options, &labels),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": options.service, "namespace": options.namespace, "labels": labels },
            "spec": { "selector": labels, "ports": [{ "name": "https", "port": 443, "targetPort": "https", "protocol": "TCP" }] },
        }),
    ];
    Ok(json!({ "apiVersion": "v1", "kind": "List", "items": items }))
}

/// The kinds whose pod specs admission reads, as webhook rules.
fn rules(operations: &[&str]) -> Value {
    let rule = |group: &str, resources: &[&str]| {
        json!({ "apiGroups": [group], "apiVersions": ["v1"], "operations": operations, "resources": resources, "scope": "Namespaced" })
    };
    json!([
        rule("", &["pods", "pods/ephemeralcontainers", "replicationcontrollers"]),
        rule("apps", &["deployments", "replicasets", "statefulsets", "daemonsets"]),
        rule("batch", &["jobs", "cronjobs"]),
    ])
}

/// Every namespace but the registry's own, the exempt ones, and those with an exempt label.
fn namespace_selector(own: &str, admission: Option<&AdmissionConfig>) -> Value {
    let mut names = vec![own.to_owned()];
    let mut expressions = Vec::new();
    if let Some(admission) = admission {
        names.extend(admission.exempt_namespaces.iter().cloned());
        for (key, value) in &admission.exempt_labels {
            expressions.push(json!({ "key": key, "operator": "NotIn", "values": [value] }));
        }
    }
    names.sort();
    names.dedup();
    expressions.insert(0, json!({ "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": names }));
    json!({ "matchExpressions": expressions })
}

/// portcullis itself: its configuration from the ConfigMap `<service>-config` (`portcullis.toml`,
/// naming `../tls/tls.crt`, `../tls/tls.key` and `../tls/ca.crt`), its certificate and the CA of
/// the API server's client certificate from the Secret `<service>-tls`, data on an `emptyDir`
/// (replace it with a volume claim, or use `backend = "s3"`, for a registry of record).
fn deployment(options: &Options, labels: &Value) -> Value {
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": "https", "scheme": "HTTPS" }, "periodSeconds": 10 });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": options.service, "namespace": options.namespace, "labels": labels },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001 },
                    "containers": [{
                        "name": "portcullis",
                        "image": options.image,
                        "args": ["serve", "--config", "/etc/portcullis/config/portcullis.toml"],
                        "env": [
                            { "name": "PORTCULLIS_LISTEN", "value": format!("0.0.0.0:{CONTAINER_PORT}") },
                            { "name": "PORTCULLIS_DATA_DIR", "value": "/var/lib/portcullis/data" },
                        ],
                        "ports": [{ "name": "https", "containerPort": CONTAINER_PORT, "protocol": "TCP" }],
                        "readinessProbe": probe("/readyz"),
                        "livenessProbe": probe("/healthz"),
                        "volumeMounts": [
                            { "name": "config", "mountPath": "/etc/portcullis/config", "readOnly": true },
                            { "name": "tls", "mountPath": "/etc/portcullis/tls", "readOnly": true },
                            { "name": "data", "mountPath": "/var/lib/portcullis/data" },
                        ],
                        "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
                    }],
                    "volumes": [
                        { "name": "config", "configMap": { "name": format!("{}-config", options.service) } },
                        { "name": "tls", "secret": { "secretName": format!("{}-tls", options.service) } },
                        { "name": "data", "emptyDir": {} },
                    ],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            service: "portcullis".into(),
            namespace: "registry".into(),
            ca_bundle_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            image: "registry.example.com/portcullis:1".into(),
            timeout_seconds: 5,
        }
    }

    #[test]
    fn the_registry_namespace_and_exempt_ones_are_left_out() {
        let admission = AdmissionConfig {
            hosts: vec!["registry.example.com".into()],
            mode: crate::policy::gate::GateMode::Enforce,
            require_digest: false,
            allowed_registries: Vec::new(),
            exempt_namespaces: vec!["kube-system".into(), "registry".into()],
            exempt_labels: [("portcullis.dev/admission".to_owned(), "skip".to_owned())].into(),
            revalidate_every: std::time::Duration::from_secs(3600),
        };
        let list = render(&options(), Some(&admission)).unwrap();
        let mutating = &list["items"][0]["webhooks"][0];
        assert_eq!(
            mutating["namespaceSelector"],
            json!({ "matchExpressions": [
                { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "registry"] },
                { "key": "portcullis.dev/admission", "operator": "NotIn", "values": ["skip"] },
            ]})
        );
        assert_eq!(mutating["clientConfig"]["caBundle"], base64::engine::general_purpose::STANDARD.encode(options().ca_bundle_pem));
        let validating = &list["items"][1]["webhooks"];
        assert_eq!((validating[0]["failurePolicy"].as_str(), validating[1]["failurePolicy"].as_str()), (Some("Fail"), Some("Ignore")));
        let without = render(&options(), None).unwrap();
        assert_eq!(without["items"][0]["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"], json!(["registry"]));
    }

    #[test]
    fn bad_options_are_refused() {
        let check = |edit: fn(&mut Options), expected: &str| {
            let mut options = options();
            edit(&mut options);
            let err = render(&options, None).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        check(|o| o.service = "Portcullis".into(), "--service");
        check(|o| o.namespace = "a/b".into(), "--namespace");
        check(|o| o.timeout_seconds = 31, "1 to 30");
        check(|o| o.ca_bundle_pem = "not pem".into(), "--ca-bundle");
    }
}
