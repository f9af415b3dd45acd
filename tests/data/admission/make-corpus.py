#!/usr/bin/env python3
"""Writes the AdmissionReview corpus of tests/admission.rs into this directory.

Each file is a request as the API server sends it to a webhook (admission.k8s.io/v1): the
request's kind, resource and requestKind/requestResource, the user, the object (and on UPDATE the
old object), dryRun and the operation's options. The digests are those of the tiny images the test
pushes (common::RegistryClient::push_tiny_image with seeds "app", "bad" and "tool"); the test checks
that they still are.

Run it again after changing it: python3 tests/data/admission/make-corpus.py
"""

import copy
import json
import pathlib
import uuid

HERE = pathlib.Path(__file__).resolve().parent
APP = "sha256:244d50a4c3565aabd5ddd05485bcad2ffb6a0d65275e288fb25d9ad1520689e8"
BAD = "sha256:1a9582cb6ba1477c4278f324fbc2c2122461a4fb3774967e055f01f808d959f0"
TOOL = "sha256:43ac492873dd31ea3ff19eb3d76f35939daa2a6cb7d233327af24334ec11da86"

RESOURCES = {
    "Pod": ("", "pods"),
    "ReplicationController": ("", "replicationcontrollers"),
    "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"),
    "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
}

USER = {
    "username": "system:serviceaccount:ci:deployer",
    "uid": "0f9a3c5e-2d8b-4b1e-9c7a-5e6f7a8b9c0d",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"],
}
CONTROLLER = {
    "username": "system:serviceaccount:kube-system:replicaset-controller",
    "uid": "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
}


def container(name, image, **extra):
    base = {
        "name": name,
        "image": image,
        "resources": {"limits": {"memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    base.update(extra)
    return base


def pod_spec(containers, init=None, ephemeral=None):
    spec = {
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default",
        "securityContext": {},
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
    }
    if init:
        spec["initContainers"] = init
    if ephemeral:
        spec["ephemeralContainers"] = ephemeral
    return spec


def template(labels, spec):
    return {"metadata": {"labels": labels, "creationTimestamp": None}, "spec": spec}


def metadata(name, namespace, labels=None, owner=None, uid=None):
    meta = {
        "name": name,
        "namespace": namespace,
        "labels": labels or {"app": name},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        "managedFields": [{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-27T09:14:03Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
        }],
    }
    if uid:
        meta["uid"] = uid
        meta["resourceVersion"] = "48211"
        meta["creationTimestamp"] = "2026-11-27T09:14:03Z"
    if owner:
        kind, owner_name = owner
        group = RESOURCES[kind][0]
        meta["ownerReferences"] = [{
            "apiVersion": f"{group}/v1" if group else "v1",
            "kind": kind,
            "name": owner_name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, owner_name)),
            "controller": True,
            "blockOwnerDeletion": True,
        }]
    return meta


def review(kind, name, namespace, operation, obj, old=None, dry_run=False, sub_resource=None, user=USER):
    group, resource = RESOURCES[kind]
    gvk = {"group": group, "version": "v1", "kind": kind}
    gvr = {"group": group, "version": "v1", "resource": resource}
    option_kind = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions"}[operation]
    options = {"kind": option_kind, "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"}
    if dry_run:
        options["dryRun"] = ["All"]
    api_version = f"{group}/v1" if group else "v1"
    obj = {"kind": kind, "apiVersion": api_version, **obj}
    request = {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{kind}/{namespace}/{name}/{operation}/{sub_resource}")),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": user,
        "object": obj,
        "oldObject": None if old is None else {"kind": kind, "apiVersion": api_version, **old},
        "dryRun": dry_run,
        "options": options,
    }
    if sub_resource:
        request["subResource"] = sub_resource
        request["requestSubResource"] = sub_resource
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def workload(name, namespace, spec_fields, pod, labels=None, owner=None, uid=None):
    labels = labels or {"app": name}
    spec = {"selector": {"matchLabels": labels}, "template": template(labels, pod)}
    spec.update(spec_fields)
    return {"metadata": metadata(name, namespace, labels, owner, uid), "spec": spec, "status": {}}


def write(file_name, body):
    (HERE / file_name).write_text(json.dumps(body, indent=2) + "\n")


def main():
    # A pod with a sidecar from Docker Hub and an init container named with a port in the host.
    pod = {
        "metadata": metadata("web-debug", "shop"),
        "spec": pod_spec(
            [container("app", "registry.example.com/prod/app:v1"), container("sidecar", "docker.io/library/busybox:1.36")],
            init=[container("migrate", "registry.example.com:5443/build/tool:v1")],
        ),
        "status": {},
    }
    write("pod-create.json", review("Pod", "web-debug", "shop", "CREATE", pod))

    # kubectl debug: the ephemeralcontainers subresource of a running pod that a ReplicaSet owns.
    running_spec = pod_spec([container("app", f"registry.example.com/prod/app@{APP}")])
    running = {
        "metadata": metadata("web-7d4b9c-x2x9z", "shop", {"app": "web"}, ("ReplicaSet", "web-7d4b9c"), uid="3b1f0a9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
        "spec": running_spec,
        "status": {"phase": "Running"},
    }
    debugged = copy.deepcopy(running)
    debugged["spec"]["ephemeralContainers"] = [{
        "name": "debugger-x7k2p",
        "image": "registry.example.com/build/tool:v1",
        "targetContainerName": "app",
        "stdin": True,
        "tty": True,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }]
    write("pod-ephemeral-update.json", review("Pod", "web-7d4b9c-x2x9z", "shop", "UPDATE", debugged, old=running, sub_resource="ephemeralcontainers"))

    # A Deployment given by tag and digest, with an init container by tag.
    web_pod = pod_spec([container("app", f"registry.example.com/prod/app:v1@{APP}")], init=[container("init", "registry.example.com/build/tool:v1")])
    deployment = workload("web", "shop", {"replicas": 3, "strategy": {"type": "RollingUpdate"}, "revisionHistoryLimit": 10}, web_pod)
    write("deployment-create.json", review("Deployment", "web", "shop", "CREATE", deployment))

    # The same Deployment updated to an image that does not pass prod's gate.
    old = copy.deepcopy(deployment)
    old["metadata"] = metadata("web", "shop", uid="9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a")
    old["spec"]["template"]["spec"]["initContainers"][0]["image"] = f"registry.example.com/build/tool:v1@{TOOL}"
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/prod/bad:v1"
    write("deployment-update.json", review("Deployment", "web", "shop", "UPDATE", new, old=old))

    # The ReplicaSet the Deployment controller makes.
    rs_pod = pod_spec([container("app", "registry.example.com/prod/app:v1")])
    rs = workload("web-7d4b9c", "shop", {"replicas": 3}, rs_pod, labels={"app": "web", "pod-template-hash": "7d4b9c"}, owner=("Deployment", "web"))
    write("replicaset-create.json", review("ReplicaSet", "web-7d4b9c", "shop", "CREATE", rs, user=CONTROLLER))

    # A StatefulSet whose digest is written in uppercase, which no runtime accepts.
    upper = "sha256:" + APP.split(":")[1].upper()
    db_pod = pod_spec([container("db", f"registry.example.com/prod/app@{upper}")])
    db = workload("db", "shop", {"replicas": 1, "serviceName": "db", "podManagementPolicy": "OrderedReady"}, db_pod)
    write("statefulset-create.json", review("StatefulSet", "db", "shop", "CREATE", db))

    # A DaemonSet from a registry that is not allowed.
    agent_pod = pod_spec([container("agent", "ghcr.io/acme/agent:2.1")])
    agent = workload("node-agent", "monitoring", {"updateStrategy": {"type": "RollingUpdate"}}, agent_pod)
    write("daemonset-create.json", review("DaemonSet", "node-agent", "monitoring", "CREATE", agent))

    # The same kind of object in an exempt namespace.
    proxy_pod = pod_spec([container("kube-proxy", "ghcr.io/acme/proxy:1.31")])
    proxy = workload("kube-proxy", "kube-system", {"updateStrategy": {"type": "RollingUpdate"}}, proxy_pod)
    write("daemonset-kube-system-create.json", review("DaemonSet", "kube-proxy", "kube-system", "CREATE", proxy))

    # kubectl apply --dry-run=server of a Job.
    job_pod = pod_spec([container("migrate", "registry.example.com/prod/app:v1")], init=[container("wait", f"registry.example.com/build/tool@{TOOL}")])
    job_pod["restartPolicy"] = "Never"
    job = workload("migrate", "shop", {"backoffLimit": 2, "completions": 1, "parallelism": 1}, job_pod)
    del job["spec"]["selector"]
    write("job-create-dryrun.json", review("Job", "migrate", "shop", "CREATE", job, dry_run=True))

    # A CronJob: the pod spec is under jobTemplate.
    report_pod = pod_spec([container("report", "registry.example.com:5443/prod/app:v1")], init=[container("fetch", "busybox:1.36")])
    report_pod["restartPolicy"] = "OnFailure"
    cron = {
        "metadata": metadata("nightly-report", "shop"),
        "spec": {
            "schedule": "0 3 * * *",
            "concurrencyPolicy": "Forbid",
            "suspend": False,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"creationTimestamp": None}, "spec": {"template": template({"app": "nightly-report"}, report_pod)}},
        },
        "status": {},
    }
    write("cronjob-create.json", review("CronJob", "nightly-report", "shop", "CREATE", cron))

    # A ReplicationController pinned to the digest of an image that fails prod's gate.
    legacy_pod = pod_spec([container("legacy", f"registry.example.com/prod/bad@{BAD}")])
    legacy = {"metadata": metadata("legacy", "shop"), "spec": {"replicas": 1, "selector": {"app": "legacy"}, "template": template({"app": "legacy"}, legacy_pod)}, "status": {}}
    write("replicationcontroller-create.json", review("ReplicationController", "legacy", "shop", "CREATE", legacy))


if __name__ == "__main__":
    main()
