//! The admission webhooks' latency (portcullis only; group `admission`): a Deployment of 20
//! containers, each an image of the gated namespace given by tag (signed, with a clean scan),
//! sent to `POST /admission/mutate` and `POST /admission/validate` as the API server sends it,
//! over TLS with a client certificate, one request at a time on one connection. The verdicts are
//! computed and cached by one request of each before the clock starts, and so is the record of
//! where the digests run, which later reviews of the same Deployment do not write again.
//!
//! The images are pushed to the plain portcullis; the webhook is a second portcullis on the same
//! store with TLS and `[admission]` (`scripts/bench` starts both), whose verdict cache starts cold.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use base64::Engine as _;

use crate::evidence::Key;
use crate::gates::{self, Latencies};
use crate::registry::Registry;

/// The host the webhook's `[admission]` knows the registry by (`scripts/bench` configures it).
const HOST: &str = "registry.bench";

/// p50 and p99 of each webhook.
pub(crate) struct WebhookLatencies {
    pub(crate) mutate: Latencies,
    pub(crate) validate: Latencies,
}

/// Measures `n_requests` reviews of each webhook at `webhook_url` (HTTPS), with the CA, client
/// certificate and key in `tls_dir` (`ca.crt`, `client.crt`, `client.key`), of a Deployment of
/// `n_containers` images pushed to `registry`.
pub(crate) async fn webhook_latency(registry: &Registry, key: &Key, run: u32, webhook_url: &str, tls_dir: &Path, n_containers: usize, n_requests: usize) -> anyhow::Result<WebhookLatencies> {
    let mut images = Vec::with_capacity(n_containers);
    for index in 0..n_containers {
        let repo = format!("gated/admit-{run}-{index}");
        gates::signed_image(registry, key, &repo, "v1", 1, gates::seed(run, 60, index)).await?;
        images.push(format!("{HOST}/{repo}:v1"));
    }
    let review = serde_json::to_vec(&deployment_review(&images))?;
    let client = tls_client(tls_dir)?;
    let mut latencies = Vec::new();
    for (webhook, pinned) in [("mutate", n_containers), ("validate", 0)] {
        let url = format!("{}/admission/{webhook}", webhook_url.trim_end_matches('/'));
        // Verdicts, tags and the admission record, warmed before the clock starts.
        check_answer(webhook, pinned, &post(&client, &url, &review).await?.1)?;
        let mut samples = Vec::with_capacity(n_requests);
        let mut answers = Vec::with_capacity(n_requests);
        for _ in 0..n_requests {
            let (elapsed, answer) = post(&client, &url, &review).await?;
            samples.push(elapsed);
            answers.push(answer);
        }
        for answer in &answers {
            check_answer(webhook, pinned, answer)?;
        }
        latencies.push(Latencies::of(samples));
    }
    Ok(WebhookLatencies { mutate: latencies[0], validate: latencies[1] })
}

/// A client trusting the bench CA and presenting the bench client certificate.
fn tls_client(tls_dir: &Path) -> anyhow::Result<reqwest::Client> {
    let read = |name: &str| std::fs::read(tls_dir.join(name)).with_context(|| format!("read {}", tls_dir.join(name).display()));
    let identity = [read("client.key")?, read("client.crt")?].concat();
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
        .identity(reqwest::Identity::from_pem(&identity)?)
        .no_proxy()
        .build()?)
}

/// Sends one review; the time to the whole answer, and the answer.
async fn post(client: &reqwest::Client, url: &str, review: &[u8]) -> anyhow::Result<(std::time::Duration, serde_json::Value)> {
    let started = Instant::now();
    let res = client.post(url).header("content-type", "application/json").body(review.to_vec()).send().await?;
    let status = res.status();
    let body = res.bytes().await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(status == 200, "{url} answered {status}: {}", String::from_utf8_lossy(&body));
    Ok((elapsed, serde_json::from_slice(&body)?))
}

/// Every image admitted, and with `pinned` > 0, that many images pinned by the patch.
fn check_answer(webhook: &str, pinned: usize, answer: &serde_json::Value) -> anyhow::Result<()> {
    let response = &answer["response"];
    anyhow::ensure!(response["allowed"] == true && response.get("status").is_none(), "{webhook} did not admit: {answer}");
    let ops = match response["patch"].as_str() {
        Some(patch) => serde_json::from_slice::<Vec<serde_json::Value>>(&base64::engine::general_purpose::STANDARD.decode(patch)?)?.len(),
        None => 0,
    };
    anyhow::ensure!(ops == pinned, "{webhook} pinned {ops} images, expected {pinned}: {answer}");
    Ok(())
}

/// A `CREATE` review of a Deployment running `images`, shaped as the API server sends it.
fn deployment_review(images: &[String]) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(index, image)| serde_json::json!({
            "name": format!("c{index}"), "image": image, "imagePullPolicy": "IfNotPresent",
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } },
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        }))
        .collect();
    let gvk = serde_json::json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let gvr = serde_json::json!({ "group": "apps", "version": "v1", "resource": "deployments" });
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c2e1a3b-5d4f-4e6a-9b8c-7d6e5f4a3b2c",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "bench", "namespace": "bench", "operation": "CREATE",
            "userInfo": { "username": "bench", "groups": ["system:authenticated"] },
            "object": {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "bench", "namespace": "bench", "labels": { "app": "bench" } },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": { "app": "bench" } },
                    "template": { "metadata": { "labels": { "app": "bench" } }, "spec": { "containers": containers, "restartPolicy": "Always" } },
                },
            },
            "oldObject": null,
            "dryRun": false,
            "options": { "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1" },
        },
    })
}
