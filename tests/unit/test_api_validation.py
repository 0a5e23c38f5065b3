"""Bad specs are rejected by the models with a message that names the field.

The same rules run as CEL in the CRD (see test_crd.py); pydantic catches whatever
reaches the operator without passing the API server's admission, and its message
becomes the InvalidSpec condition the user reads.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from microservice_operator import api
from microservice_operator.api import MicroServiceSpec
from microservice_operator.status import format_validation_error

PORT = {"containerPort": 5000, "servicePort": 80}
DIGEST = "sha256:" + "a" * 64
IMAGE_REFERENCE = "must be an image reference"
RESERVED = "must not set the operator's own labels"
PERCENT = 'must be a count (0 or more) or a percentage from "0%" to "100%"'


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
    (
        "image with a space",
        spec(image="my app:1"),
        f"image: Value error, {IMAGE_REFERENCE}",
    ),
    ("image with only a tag", spec(image=":v1"), f"image: Value error, {IMAGE_REFERENCE}"),
    (
        "image with only a digest",
        spec(image="@" + DIGEST),
        f"image: Value error, {IMAGE_REFERENCE}",
    ),
    ("image with uppercase name", spec(image="Hello:1"), f"image: Value error, {IMAGE_REFERENCE}"),
    ("image with empty tag", spec(image="hello:"), f"image: Value error, {IMAGE_REFERENCE}"),
    ("image with a scheme", spec(image="https://ghcr.io/a/b:1"), IMAGE_REFERENCE),
    ("image with a short digest", spec(image="hello@sha256:abc"), IMAGE_REFERENCE),
    ("image with trailing newline", spec(image="hello:1\n"), IMAGE_REFERENCE),
    ("image too long", spec(image="a" * 1025), "image: String should have at most 1024"),
    (
        "nodePort on a ClusterIP Service",
        spec(ports=[{**PORT, "nodePort": 30080}]),
        "spec.ports[].nodePort needs spec.service.type NodePort or LoadBalancer",
    ),
    (
        "nodePort on a headless Service",
        spec(ports=[{**PORT, "nodePort": 30080}], service={"type": "None"}),
        "spec.ports[].nodePort needs spec.service.type NodePort or LoadBalancer",
    ),
    (
        "nodePort without servicePort",
        spec(
            ports=[PORT, {"name": "admin", "containerPort": 9000, "nodePort": 30090}],
            service={"type": "NodePort"},
        ),
        "ports.1: Value error, nodePort needs servicePort on the same port",
    ),
    (
        "duplicate servicePort",
        spec(ports=[PORT, {"name": "other", "containerPort": 5001, "servicePort": 80}]),
        "spec.ports[].servicePort must be unique per protocol",
    ),
    (
        "duplicate nodePort",
        spec(
            ports=[
                {**PORT, "nodePort": 30080},
                {"name": "b", "containerPort": 5001, "servicePort": 81, "nodePort": 30080},
            ],
            service={"type": "NodePort"},
        ),
        "spec.ports[].nodePort must be unique per protocol",
    ),
    (
        "httpGetPath without leading slash",
        spec(probes={"readiness": {"httpGetPath": "healthz"}}),
        "probes.readiness.httpGetPath: Value error, must be an absolute URL path",
    ),
    (
        "httpGetPath with a space",
        spec(probes={"liveness": {"httpGetPath": "/health check"}}),
        "probes.liveness.httpGetPath: Value error, must be an absolute URL path",
    ),
    (
        "httpGetPath and execCommand",
        spec(probes={"readiness": {"httpGetPath": "/", "execCommand": ["true"]}}),
        "probes.readiness: Value error, set httpGetPath or execCommand, not both",
    ),
    (
        "empty execCommand",
        spec(probes={"startup": {"execCommand": []}}),
        "probes.startup.execCommand: List should have at least 1 item",
    ),
    (
        "probe port name not among ports",
        spec(probes={"liveness": {"port": "metrics"}}),
        "spec.probes.liveness.port must be a port number or the name of one of spec.ports",
    ),
    (
        "probe port number out of range",
        spec(probes={"readiness": {"port": 70000}}),
        "probes.readiness.port: Value error, must be a port number (1-65535)",
    ),
    (
        "probe with nothing to probe",
        {"image": "worker:1", "service": {"enabled": False}, "probes": {"readiness": {}}},
        "spec.probes.readiness has nothing to probe",
    ),
    *[
        (
            f"reserved pod label {key}",
            spec(podTemplate={"labels": {"team": "cart", key: "x"}}),
            f"podTemplate.labels: Value error, {RESERVED}",
        )
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "mso.dev/track",
            "mso.dev/anything",
        )
    ],
    (
        "reserved Service label",
        spec(service={"labels": {"app.kubernetes.io/managed-by": "me"}}),
        f"service.labels: Value error, {RESERVED}",
    ),
    (
        "bad pod label key",
        spec(podTemplate={"labels": {"bad key": "x"}}),
        "podTemplate.labels: Value error, label keys must be [prefix/]name",
    ),
    (
        "bad pod label value",
        spec(podTemplate={"labels": {"team": "a" * 64}}),
        "podTemplate.labels.team: String should have at most 63 characters",
    ),
    (
        "too many pod labels",
        spec(podTemplate={"labels": {f"l{i}": "x" for i in range(65)}}),
        "podTemplate.labels: Dictionary should have at most 64 items",
    ),
    (
        "a billion replicas",
        spec(replicas=1_000_000_000),
        "replicas: Input should be less than or equal to 10000",
    ),
    (
        "autoscaling.maxReplicas above the bound",
        spec(autoscaling={"maxReplicas": 10_001}),
        "autoscaling.maxReplicas: Input should be less than or equal to 10000",
    ),
    (
        "standby.replicas above the bound",
        spec(failover={"standby": {"replicas": 50_000}}),
        "failover.standby.replicas: Input should be less than or equal to 10000",
    ),
    (
        "minAvailable 150%",
        spec(availability={"minAvailable": "150%"}),
        f"availability.minAvailable: Value error, {PERCENT}",
    ),
    (
        "maxUnavailable not a percentage",
        spec(availability={"maxUnavailable": "half"}),
        f"availability.maxUnavailable: Value error, {PERCENT}",
    ),
    (
        "negative minAvailable",
        spec(availability={"minAvailable": -1}),
        f"availability.minAvailable: Value error, {PERCENT}",
    ),
    (
        "maxSurge 101%",
        spec(strategy={"maxSurge": "101%"}),
        f"strategy.maxSurge: Value error, {PERCENT}",
    ),
    (
        "maxUnavailable as a bare number string",
        spec(strategy={"maxUnavailable": "1"}),
        f"strategy.maxUnavailable: Value error, {PERCENT}",
    ),
    (
        "maxSurge and maxUnavailable both 0",
        spec(strategy={"maxSurge": 0, "maxUnavailable": "0%"}),
        "strategy: Value error, strategy.maxSurge and strategy.maxUnavailable must not both be 0",
    ),
    (
        "env name with =",
        spec(env=[{"name": "A=B", "value": "1"}]),
        "env.0.name: String should match pattern",
    ),
    (
        "env name with a non-ASCII character",
        spec(env=[{"name": "CAFÉ", "value": "1"}]),
        "env.0.name: String should match pattern",
    ),
    (
        "serviceAccountName not an object name",
        spec(podTemplate={"serviceAccountName": "Admin_SA"}),
        "podTemplate.serviceAccountName: String should match pattern",
    ),
    (
        "imagePullSecrets entry not an object name",
        spec(podTemplate={"imagePullSecrets": ["regcred", "my secret"]}),
        "podTemplate.imagePullSecrets.1: String should match pattern",
    ),
    (
        "priorityClassName not an object name",
        spec(podTemplate={"priorityClassName": "High"}),
        "podTemplate.priorityClassName: String should match pattern",
    ),
    (
        "runAsUser 0 with runAsNonRoot",
        spec(securityContext={"runAsUser": 0}),
        "securityContext: Value error, securityContext.runAsUser 0 (root) contradicts runAsNonRoot",
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
        *[
            spec(image=image)
            for image in (
                "nginx",
                "library/nginx:1.27-alpine",
                "ghcr.io/acme/hello:1.2.3",
                "localhost:5000/app:v1",
                "Registry.Example.COM:443/team/app_x/web-1:v1.0_rc.1-debug",
                f"nginx@{DIGEST}",
                f"ghcr.io/acme/hello:1.2.3@{DIGEST}",
                "[fd00::1]:5000/app:1",
                "a" * 128 + ":" + "T" * 128,
            )
        ],
        spec(ports=[{**PORT, "nodePort": 30080}], service={"type": "NodePort"}),
        spec(ports=[{**PORT, "nodePort": 30080}], service={"type": "LoadBalancer"}),
        spec(
            ports=[{"containerPort": 5000, "servicePort": 80, "nodePort": 30080}],
            service={"enabled": False},
        ),
        spec(
            ports=[
                {"name": "dns", "containerPort": 53, "servicePort": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "containerPort": 53, "servicePort": 53, "protocol": "TCP"},
            ]
        ),
        spec(probes={"readiness": {"httpGetPath": "/"}}),
        spec(probes={"readiness": {"httpGetPath": "/healthz?full=1&x=%20"}}),
        spec(
            ports=[PORT, {"name": "admin", "containerPort": 9000}],
            probes={
                "readiness": {"port": "admin", "httpGetPath": "/ready"},
                "liveness": {"port": 9001},
                "startup": {"execCommand": ["/bin/check"]},
            },
        ),
        {
            "image": "worker:1",
            "service": {"enabled": False},
            "probes": {"liveness": {"enabled": False}},
        },
        {
            "image": "worker:1",
            "service": {"enabled": False},
            "probes": {"liveness": {"port": 8080}},
        },
        spec(
            podTemplate={
                "labels": {
                    "team": "cart",
                    "example.com/tier": "web",
                    "app.kubernetes.io/part-of": "shop",
                    "app.kubernetes.io/version": "",
                    "mso.dev.example.com/x": "y",
                },
                "serviceAccountName": "shop.runner",
                "imagePullSecrets": ["regcred"],
                "priorityClassName": "high-priority",
            }
        ),
        spec(service={"labels": {"team": "cart"}}),
        spec(replicas=0),
        spec(replicas=api.MAX_REPLICAS),
        spec(autoscaling={"minReplicas": 1, "maxReplicas": api.MAX_REPLICAS}),
        spec(failover={"standby": {"replicas": api.MAX_REPLICAS}}),
        spec(availability={"minAvailable": "100%"}),
        spec(availability={"maxUnavailable": "0%"}),
        spec(availability={"minAvailable": 0}),
        spec(strategy={"maxSurge": 0, "maxUnavailable": 1}),
        spec(strategy={"maxSurge": "100%", "maxUnavailable": "0%"}),
        spec(env=[{"name": "my.dotted-name", "value": "1"}, {"name": "_X1"}]),
        spec(securityContext={"runAsUser": 0, "runAsNonRoot": False}),
        spec(securityContext={"runAsUser": 1000}),
    ],
)
def test_good_spec_is_accepted(body: dict[str, Any]) -> None:
    MicroServiceSpec.model_validate(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (spec(image="my app:1"), "spec.image: must be an image reference"),
        (
            spec(podTemplate={"labels": {"mso.dev/track": "standby"}}),
            "spec.podTemplate.labels: must not set the operator's own labels",
        ),
        (
            spec(availability={"minAvailable": "150%"}),
            "spec.availability.minAvailable: must be a count (0 or more) or a percentage",
        ),
        (spec(replicas=10**9), "spec.replicas: Input should be less than or equal to 10000"),
        (
            spec(ports=[{**PORT, "nodePort": 30080}]),
            "spec.ports[].nodePort needs spec.service.type NodePort or LoadBalancer",
        ),
        (
            spec(probes={"readiness": {"httpGetPath": "healthz"}}),
            "spec.probes.readiness.httpGetPath: must be an absolute URL path",
        ),
    ],
)
def test_invalid_spec_message_names_the_field(body: dict[str, Any], expected: str) -> None:
    """What the operator writes into Ready=False/InvalidSpec for an object that bypassed
    admission: the field as users write it, and the same words as the CEL rule."""
    with pytest.raises(ValidationError) as info:
        MicroServiceSpec.model_validate(body)
    assert expected in format_validation_error(info.value)


def test_image_pattern_is_anchored_for_cel_and_python() -> None:
    # CEL's matches() finds a match anywhere: every pattern must anchor itself.
    for pattern in (
        api.IMAGE_PATTERN,
        api.HTTP_PATH_PATTERN,
        api.PERCENT_PATTERN,
        api.PORT_NAME_PATTERN,
        api.LABEL_KEY_PATTERN,
        api.LABEL_VALUE_PATTERN,
        api.DNS_SUBDOMAIN_PATTERN,
        api.ENV_NAME_PATTERN,
    ):
        assert pattern.startswith("^") and pattern.endswith("$"), pattern


def test_cel_matches_quotes_the_pattern() -> None:
    assert api.cel_matches("self", "^a\\[b'$") == "self.matches('^a\\\\[b\\'$')"
