#!/usr/bin/env python3
"""Reads the output of `portcullis admission manifests` (a v1 List in JSON) on stdin and checks
each object with the Kubernetes Python client's model classes: it must deserialize into the model
of its kind (required fields present, each of the right type) and serialize back to exactly what
was printed (no field the schema does not know, nothing misspelt or misplaced).

Used by tests/admission.rs with the client scripts/test installs into .test-tools/kubernetes.
"""

import json
import sys

from kubernetes.client import ApiClient

MODELS = {
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): "V1MutatingWebhookConfiguration",
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): "V1ValidatingWebhookConfiguration",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
}


def main():
    document = json.load(sys.stdin)
    if (document.get("apiVersion"), document.get("kind")) != ("v1", "List"):
        sys.exit(f"expected a v1 List, found {document.get('apiVersion')} {document.get('kind')}")
    client = ApiClient()
    for item in document["items"]:
        key = (item.get("apiVersion"), item.get("kind"))
        model_name = MODELS.get(key)
        if model_name is None:
            sys.exit(f"no model for {key}")
        # The client's own deserializer, as it reads objects from the API server; models check
        # their required fields as they are built.
        model = client._ApiClient__deserialize(item, model_name)
        back = client.sanitize_for_serialization(model)
        if back != item:
            sys.exit(f"{key[1]} does not round-trip through {model_name}:\nprinted: {json.dumps(item, sort_keys=True)}\nmodel:   {json.dumps(back, sort_keys=True)}")
    print(f"{len(document['items'])} objects are valid Kubernetes objects")


if __name__ == "__main__":
    main()
