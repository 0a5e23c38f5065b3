"""Bad MicroServices are refused by the real API server at `kubectl apply`, naming the field.

The rules are generated into the CRD (OpenAPI bounds and patterns, CEL) from api.py;
the same rules run in the pydantic models, so each case also checks that an object
which bypassed admission gets the same field and words in its InvalidSpec condition.
No operator is needed: admission alone decides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from microservice_operator import api
from microservice_operator.status import format_validation_error
from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import REPO, kubectl

PORT = {"containerPort": 5000, "servicePort": 80}
DIGEST = "sha256:" + "0123456789abcdef" * 4
PERCENT = 'must be a count (0 or more) or a percentage from "0%" to "100%"'
RESERVED = "must not set the operator's own labels"


def spec(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"image": "hello-flask:1.0", "ports": [PORT]}
    body.update(fields)
    return body


def manifest(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": body,
    }


# (id, spec, the field the message must name, words the API server and the model share)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("image-space", spec(image="my app:1"), "spec.image", "must be an image reference"),
    ("image-only-tag", spec(image=":v1"), "spec.image", "must be an image reference"),
    ("image-uppercase", spec(image="Hello/World:1"), "spec.image", "must be an image reference"),
    (
        "image-short-digest",
        spec(image="hello@sha256:abc"),
        "spec.image",
        "must be an image reference",
    ),
    (
        "nodeport-on-clusterip",
        spec(ports=[{**PORT, "nodePort": 30080}]),
        "spec.ports",
        "nodePort needs spec.service.type NodePort or LoadBalancer",
    ),
    (
        "nodeport-on-headless",
        spec(ports=[{**PORT, "nodePort": 30080}], service={"type": "None"}),
        "spec.ports",
        "nodePort needs spec.service.type NodePort or LoadBalancer",
    ),
    (
        "nodeport-without-serviceport",
        spec(
            ports=[PORT, {"name": "admin", "containerPort": 9000, "nodePort": 30090}],
            service={"type": "NodePort"},
        ),
        "spec.ports[1]",
        "nodePort needs servicePort on the same port",
    ),
    (
        "duplicate-serviceport",
        spec(ports=[PORT, {"name": "other", "containerPort": 5001, "servicePort": 80}]),
        "spec.ports",
        "servicePort must be unique per protocol",
    ),
    (
        "httpgetpath-relative",
        spec(probes={"readiness": {"httpGetPath": "healthz"}}),
        "spec.probes.readiness.httpGetPath",
        "must be an absolute URL path",
    ),
    (
        "httpgetpath-and-exec",
        spec(probes={"liveness": {"httpGetPath": "/", "execCommand": ["true"]}}),
        "spec.probes.liveness",
        "set httpGetPath or execCommand, not both",
    ),
    (
        "probe-port-unknown-name",
        spec(probes={"liveness": {"port": "metrics"}}),
        "spec.probes.liveness.port",
        "must be a port number or the name of one of spec.ports",
    ),
    (
        "probe-nothing-to-probe",
        {"image": "worker:1", "service": {"enabled": False}, "probes": {"readiness": {}}},
        "spec.probes.readiness",
        "has nothing to probe",
    ),
    *[
        (
            f"reserved-label-{key.replace('/', '-').replace('.', '-')}",
            spec(podTemplate={"labels": {"team": "cart", key: "x"}}),
            "spec.podTemplate.labels",
            RESERVED,
        )
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "mso.dev/track",
            "mso.dev/revision",
        )
    ],
    (
        "reserved-service-label",
        spec(service={"labels": {"app.kubernetes.io/instance": "other"}}),
        "spec.service.labels",
        RESERVED,
    ),
    (
        "label-key-syntax",
        spec(podTemplate={"labels": {"bad key": "x"}}),
        "spec.podTemplate.labels",
        "label keys must be [prefix/]name",
    ),
    (
        "label-value-too-long",
        spec(podTemplate={"labels": {"team": "a" * 64}}),
        "spec.podTemplate.labels.team",
        "63",
    ),
    (
        "replicas-a-billion",
        spec(replicas=1_000_000_000),
        "spec.replicas",
        "less than or equal to 10000",
    ),
    (
        "autoscaling-maxreplicas-bound",
        spec(autoscaling={"maxReplicas": 10_001}),
        "spec.autoscaling.maxReplicas",
        "less than or equal to 10000",
    ),
    (
        "standby-replicas-bound",
        spec(failover={"standby": {"replicas": 50_000}}),
        "spec.failover.standby.replicas",
        "less than or equal to 10000",
    ),
    (
        "minavailable-150-percent",
        spec(availability={"minAvailable": "150%"}),
        "spec.availability.minAvailable",
        PERCENT,
    ),
    (
        "maxunavailable-negative",
        spec(availability={"maxUnavailable": -1}),
        "spec.availability.maxUnavailable",
        PERCENT,
    ),
    (
        "maxsurge-not-a-percentage",
        spec(strategy={"maxSurge": "lots"}),
        "spec.strategy.maxSurge",
        PERCENT,
    ),
    (
        "strategy-maxunavailable-101-percent",
        spec(strategy={"maxUnavailable": "101%"}),
        "spec.strategy.maxUnavailable",
        PERCENT,
    ),
    (
        "strategy-both-zero",
        spec(strategy={"maxSurge": 0, "maxUnavailable": "0%"}),
        "spec.strategy",
        "maxSurge and strategy.maxUnavailable must not both be 0",
    ),
    (
        "env-name-with-equals",
        spec(env=[{"name": "A=B", "value": "1"}]),
        "spec.env[0].name",
        "should match",
    ),
    (
        "serviceaccountname-format",
        spec(podTemplate={"serviceAccountName": "Admin_SA"}),
        "spec.podTemplate.serviceAccountName",
        "should match",
    ),
    (
        "imagepullsecret-format",
        spec(podTemplate={"imagePullSecrets": ["regcred", "my secret"]}),
        "spec.podTemplate.imagePullSecrets[1]",
        "should match",
    ),
    (
        "root-with-runasnonroot",
        spec(securityContext={"runAsUser": 0}),
        "spec.securityContext",
        "runAsUser 0 (root) contradicts runAsNonRoot",
    ),
]

GOOD: list[tuple[str, dict[str, Any]]] = [
    ("plain", spec()),
    ("image-registry-port", spec(image="localhost:5000/team/app_x:v1.0-rc.1")),
    ("image-digest", spec(image=f"ghcr.io/acme/hello:1.2.3@{DIGEST}")),
    ("image-ipv6-registry", spec(image="[fd00::1]:5000/app:1")),
    ("image-uppercase-registry", spec(image="Registry.Example.com/app")),
    ("nodeport", spec(ports=[{**PORT, "nodePort": 30080}], service={"type": "NodePort"})),
    (
        "nodeport-service-off",
        spec(ports=[{**PORT, "nodePort": 30080}], service={"enabled": False}),
    ),
    (
        "same-serviceport-two-protocols",
        spec(
            ports=[
                {"name": "dns", "containerPort": 53, "servicePort": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "containerPort": 53, "servicePort": 53},
            ]
        ),
    ),
    (
        "probes",
        spec(
            ports=[PORT, {"name": "admin", "containerPort": 9000}],
            probes={
                "readiness": {"httpGetPath": "/ready?full=1", "port": "admin"},
                "liveness": {"port": 9001},
                "startup": {"execCommand": ["/bin/check"]},
            },
        ),
    ),
    (
        "worker-probe-off",
        {
            "image": "worker:1",
            "service": {"enabled": False},
            "probes": {"liveness": {"enabled": False}},
        },
    ),
    (
        "labels-and-names",
        spec(
            podTemplate={
                "labels": {"team": "cart", "app.kubernetes.io/part-of": "shop", "empty": ""},
                "serviceAccountName": "shop.runner",
                "imagePullSecrets": ["regcred"],
                "priorityClassName": "high-priority",
            },
            service={"labels": {"team": "cart"}},
        ),
    ),
    ("replicas-at-bound", spec(replicas=api.MAX_REPLICAS)),
    ("replicas-zero", spec(replicas=0)),
    ("autoscaling-at-bound", spec(autoscaling={"maxReplicas": api.MAX_REPLICAS})),
    ("standby-at-bound", spec(failover={"standby": {"replicas": api.MAX_REPLICAS}})),
    ("minavailable-100-percent", spec(availability={"minAvailable": "100%"})),
    ("maxunavailable-zero", spec(availability={"maxUnavailable": 0})),
    ("strategy-surge-only", spec(strategy={"maxSurge": 1, "maxUnavailable": 0})),
    ("strategy-percent", spec(strategy={"maxSurge": "100%", "maxUnavailable": "0%"})),
    ("env-relaxed-name", spec(env=[{"name": "my.dotted-name", "value": "1"}])),
    ("root-by-consent", spec(securityContext={"runAsUser": 0, "runAsNonRoot": False})),
]


def apply(kubeconfig: Path, namespace: str, name: str, body: dict[str, Any]) -> tuple[bool, str]:
    """`kubectl apply` one MicroService: (admitted, kubectl's output)."""
    out = kubectl(
        kubeconfig,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(manifest(name, body)),
        check=False,
    )
    return "configured" in out or "created" in out, out


def exists(kube_api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.mark.parametrize(("body", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_microservice_is_refused_naming_the_field(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    crd: Path,
    body: dict[str, Any],
    field: str,
    words: str,
) -> None:
    admitted, out = apply(kubeconfig, namespace, "bad", body)
    assert not admitted, out
    assert "is invalid" in out, out
    assert field in out.split("is invalid:", 1)[1], out
    assert words in out, out
    assert not exists(kube_api, namespace, "bad")

    # The operator's own check (for objects that bypassed admission) agrees.
    with pytest.raises(ValidationError) as info:
        api.MicroServiceSpec.model_validate(body)
    invalid_spec = format_validation_error(info.value)
    assert field in invalid_spec, invalid_spec
    assert words in invalid_spec, invalid_spec


@pytest.mark.parametrize("body", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_microservice_is_admitted(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    crd: Path,
    body: dict[str, Any],
) -> None:
    api.MicroServiceSpec.model_validate(body)
    admitted, out = apply(kubeconfig, namespace, "good", body)
    assert admitted, out
    assert exists(kube_api, namespace, "good")


def test_update_to_a_bad_spec_is_refused(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, crd: Path
) -> None:
    """Admission also guards updates: `kubectl scale` and edits of a live object."""
    admitted, out = apply(kubeconfig, namespace, "live", spec(replicas=2))
    assert admitted, out
    out = kubectl(
        kubeconfig, "scale", "-n", namespace, "ms/live", "--replicas=1000000000", check=False
    )
    assert "spec.replicas" in out and "less than or equal to 10000" in out, out
    admitted, out = apply(
        kubeconfig, namespace, "live", spec(replicas=2, podTemplate={"labels": {"mso.dev/x": "v"}})
    )
    assert not admitted and "spec.podTemplate.labels" in out and RESERVED in out, out
    obj = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        api.GROUP, api.VERSION, namespace, api.PLURAL, "live"
    )
    assert obj["spec"]["replicas"] == 2
    assert "podTemplate" not in obj["spec"]


POLICY = REPO / "manifests" / "samples" / "policy" / "replica-limit.yaml"


def test_sample_policy_limits_replicas_per_namespace(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, crd: Path
) -> None:
    """The sample ValidatingAdmissionPolicy: a lower, per-namespace bound where the
    namespace's label asks for one; nothing changes elsewhere."""
    kubectl(kubeconfig, "apply", "-f", str(POLICY))
    try:
        kubectl(kubeconfig, "label", "namespace", namespace, "mso.dev/max-replicas=5")

        def refused() -> str | None:
            admitted, out = apply(kubeconfig, namespace, "big", spec(replicas=6))
            if admitted:
                kubectl(kubeconfig, "delete", "-n", namespace, "ms/big", "--wait=false")
                return None
            return out

        out = wait_for(refused, timeout=30, interval=0.5, message="the policy to take effect")
        assert "spec.replicas: at most 5 replicas in this namespace" in out, out
        for name, body, field in (
            ("hpa", spec(autoscaling={"maxReplicas": 6}), "spec.autoscaling.maxReplicas"),
            (
                "standby",
                spec(failover={"standby": {"replicas": 6}}),
                "spec.failover.standby.replicas",
            ),
        ):
            admitted, out = apply(kubeconfig, namespace, name, body)
            assert not admitted and f"{field}: at most 5" in out, out
        admitted, out = apply(kubeconfig, namespace, "small", spec(replicas=5))
        assert admitted, out
        out = kubectl(kubeconfig, "scale", "-n", namespace, "ms/small", "--replicas=6", check=False)
        assert "at most 5 replicas" in out, out

        kubectl(
            kubeconfig, "label", "--overwrite", "namespace", namespace, "mso.dev/max-replicas=x"
        )

        # The policy reads namespaces from the API server's cache: wait for the label.
        def refused_as_nan() -> str | None:
            admitted, out = apply(kubeconfig, namespace, "small", spec(replicas=4))
            return None if admitted else out

        out = wait_for(refused_as_nan, timeout=30, interval=0.5, message="the new label seen")
        assert "mso.dev/max-replicas must be a number" in out, out

        # Without the label only the CRD's sanity bound applies.
        kubectl(kubeconfig, "label", "namespace", namespace, "mso.dev/max-replicas-")
        wait_for(
            lambda: apply(kubeconfig, namespace, "big", spec(replicas=6))[0],
            timeout=30,
            interval=0.5,
            message="the limit to go with the label",
        )
    finally:
        kubectl(kubeconfig, "delete", "--ignore-not-found", "-f", str(POLICY), check=False)
