"""Bad specs are rejected by the models with a message that names the field.

The same rules run as CEL in the CRD (see test_crd.py); pydantic catches whatever
reaches the operator without passing the API server's admission, and its message
becomes the InvalidSpec condition the user reads.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from microservice_operator.api import MicroServiceSpec

PORT = {"containerPort": 5000, "servicePort": 80}


def spec(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"image": "hello-flask:1.0", "ports": [PORT]}
    body.update(fields)
    return body


def messages(exc: ValidationError) -> list[str]:
    """Each error as "<field path>: <message>", the way a user should read it."""
    return [f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()]


BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("missing image", {"ports": [PORT]}, "image: Field required"),
    ("empty image", spec(image=""), "image: String should have at least 1 character"),
    (
        "containerPort 0",
        spec(ports=[{"containerPort": 0, "servicePort": 80}]),
        "ports.0.containerPort: Input should be greater than or equal to 1",
    ),
    (
        "containerPort too big",
        spec(ports=[{"containerPort": 70000, "servicePort": 80}]),
        "ports.0.containerPort: Input should be less than or equal to 65535",
    ),
    (
        "minReplicas > maxReplicas",
        spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
    ),
    (
        "both minAvailable and maxUnavailable",
        spec(availability={"minAvailable": 1, "maxUnavailable": 1}),
        "availability: set exactly one of minAvailable or maxUnavailable",
    ),
    (
        "neither minAvailable nor maxUnavailable",
        spec(availability={}),
        "availability: set exactly one of minAvailable or maxUnavailable",
    ),
    (
        "service enabled without servicePort",
        spec(ports=[{"containerPort": 5000}]),
        "a port with servicePort is required when spec.service is enabled",
    ),
    (
        "service enabled without ports",
        {"image": "hello-flask:1.0"},
        "a port with servicePort is required when spec.service is enabled",
    ),
    (
        "duplicate port names",
        spec(ports=[PORT, {"containerPort": 9090}]),
        "spec.ports[].name must be unique",
    ),
    ("unknown field", spec(replica=3), "replica: Extra inputs are not permitted"),
    (
        "unknown nested field",
        spec(service={"typ": "LoadBalancer"}),
        "service.typ: Extra inputs are not permitted",
    ),
    (
        "bad port name",
        spec(ports=[{"name": "HTTP_1", "containerPort": 5000, "servicePort": 80}]),
        "ports.0.name: String should match pattern",
    ),
    (
        "port name too long",
        spec(ports=[{"name": "a" * 16, "containerPort": 5000, "servicePort": 80}]),
        "ports.0.name: String should have at most 15 characters",
    ),
    (
        "minHealthyRatio 1.5",
        spec(failover={"minHealthyRatio": 1.5}),
        "failover.minHealthyRatio: Input should be less than or equal to 1",
    ),
    (
        "minHealthyRatio 0",
        spec(failover={"minHealthyRatio": 0}),
        "failover.minHealthyRatio: Input should be greater than 0",
    ),
    (
        "env with value and valueFrom",
        spec(env=[{"name": "TOKEN", "value": "x", "valueFrom": {"secretKeyRef": {}}}]),
        "env.0: Value error, env TOKEN: set value or valueFrom, not both",
    ),
    (
        "negative replicas",
        spec(replicas=-1),
        "replicas: Input should be greater than or equal to 0",
    ),
    (
        "bad service type",
        spec(service={"type": "External"}),
        "service.type: Input should be 'ClusterIP', 'NodePort', 'LoadBalancer' or 'None'",
    ),
    (
        "bad protocol",
        spec(ports=[{"containerPort": 53, "servicePort": 53, "protocol": "tcp"}]),
        "ports.0.protocol: Input should be 'TCP', 'UDP' or 'SCTP'",
    ),
    (
        "nodePort out of range",
        spec(ports=[{"containerPort": 5000, "servicePort": 80, "nodePort": 80}]),
        "ports.0.nodePort: Input should be greater than or equal to 30000",
    ),
    (
        "progressDeadlineSeconds too small",
        spec(failover={"progressDeadlineSeconds": 1}),
        "failover.progressDeadlineSeconds: Input should be greater than or equal to 10",
    ),
    (
        "too many ports",
        spec(
            ports=[
                {"name": f"p{i}", "containerPort": 1000 + i, "servicePort": 80} for i in range(65)
            ]
        ),
        "ports: List should have at most 64 items",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in BAD_SPECS], ids=[n for n, _, _ in BAD_SPECS]
)
def test_bad_spec_is_rejected_naming_the_field(body: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        MicroServiceSpec.model_validate(body)
    found = messages(info.value)
    assert any(expected in m for m in found), found


@pytest.mark.parametrize(
    "body",
    [
        spec(),
        {"image": "worker:1", "service": {"enabled": False}},
        spec(availability={"maxUnavailable": "25%"}),
        spec(autoscaling={"minReplicas": 3, "maxReplicas": 3}),
        spec(env=[{"name": "EMPTY"}, {"name": "FROM", "valueFrom": {"fieldRef": {}}}]),
        spec(ports=[PORT, {"name": "metrics", "containerPort": 9090}]),
        spec(failover={"minHealthyRatio": 1}),
    ],
)
def test_good_spec_is_accepted(body: dict[str, Any]) -> None:
    MicroServiceSpec.model_validate(body)
