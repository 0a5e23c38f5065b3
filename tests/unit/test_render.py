"""Unit tests of the pure manifest builders, plus golden manifests of the samples.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from microservice_operator import render
from microservice_operator.api import MicroServiceSpec
from microservice_operator.render import Owner

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
OWNER = Owner(name="shop", namespace="prod", uid="11111111-2222-3333-4444-555555555555")


def make(**fields: Any) -> MicroServiceSpec:
    """A valid spec (image plus an exposed port) with ``fields`` (wire names) on top."""
    body: dict[str, Any] = {
        "image": "ghcr.io/acme/shop:1.0",
        "ports": [{"containerPort": 8080, "servicePort": 80}],
    }
    body.update(fields)
    return MicroServiceSpec.model_validate(body)


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = manifest["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def walk(value: Any) -> list[Any]:
    """Every value nested in ``value``, for "nothing empty or null" checks."""
    out = [value]
    if isinstance(value, dict):
        for v in value.values():
            out.extend(walk(v))
    elif isinstance(value, list):
        for v in value:
            out.extend(walk(v))
    return out


# --------------------------------------------------------------------------- labels


def test_labels_and_selectors() -> None:
    assert render.common_labels("shop") == {
        "app.kubernetes.io/name": "shop",
        "app.kubernetes.io/instance": "shop",
        "app.kubernetes.io/managed-by": "microservice-operator",
    }
    assert render.selector_labels("shop", "standby") == {
        "app.kubernetes.io/instance": "shop",
        "mso.dev/track": "standby",
    }
    assert render.selector_string("shop") == "app.kubernetes.io/instance=shop,mso.dev/track=primary"
    assert render.selector_string("shop", "standby").endswith("mso.dev/track=standby")


def test_owner_reference() -> None:
    assert render.owner_reference(OWNER) == {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "name": "shop",
        "uid": OWNER.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_every_child_has_envelope_and_nothing_empty() -> None:
    spec = make(
        autoscaling={"maxReplicas": 4},
        availability={"maxUnavailable": 1},
        failover={"standby": {}},
    )
    children = render.build_children(OWNER, spec, canary_replicas=1)
    assert set(children) == set(render.CHILD_KINDS)
    for key, child in children.items():
        assert child is not None, key
        assert (child["apiVersion"], child["kind"]) == render.CHILD_KINDS[key]
        meta = child["metadata"]
        assert meta["name"] == render.child_name("shop", key)
        assert meta["namespace"] == "prod"
        assert meta["ownerReferences"] == [render.owner_reference(OWNER)]
        assert render.common_labels("shop").items() <= meta["labels"].items()
        for value in walk(child):
            assert value is not None, key
            assert value not in ({}, [], ""), key


# --------------------------------------------------------------------------- deployment


def test_deployment_basics() -> None:
    dep = render.build_deployment(OWNER, make(replicas=3), replicas=3)
    assert dep["metadata"]["name"] == "shop"
    assert dep["metadata"]["labels"]["mso.dev/track"] == "primary"
    spec = dep["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": render.selector_labels("shop", "primary")}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    assert spec["progressDeadlineSeconds"] == 300
    assert spec["revisionHistoryLimit"] == 5
    labels = spec["template"]["metadata"]["labels"]
    assert render.selector_labels("shop", "primary").items() <= labels.items()
    c = container(dep)
    assert c["name"] == "app"
    assert c["image"] == "ghcr.io/acme/shop:1.0"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert "imagePullPolicy" not in c


def test_strategy_and_deadline_from_spec() -> None:
    spec = make(
        strategy={"maxSurge": 1, "maxUnavailable": 0}, failover={"progressDeadlineSeconds": 90}
    )
    dep = render.build_deployment(OWNER, spec, replicas=1)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert dep["spec"]["progressDeadlineSeconds"] == 90


def test_secure_defaults() -> None:
    dep = render.build_deployment(OWNER, make(), replicas=1)
    assert dep["spec"]["template"]["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(dep)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": False,
        "capabilities": {"drop": ["ALL"]},
    }


def test_security_overrides() -> None:
    spec = make(
        securityContext={
            "runAsNonRoot": False,
            "runAsUser": 1000,
            "fsGroup": 2000,
            "readOnlyRootFilesystem": True,
            "dropCapabilities": [],
            "addCapabilities": ["NET_BIND_SERVICE"],
            "seccompProfile": "Unconfined",
        }
    )
    dep = render.build_deployment(OWNER, spec, replicas=1)
    assert dep["spec"]["template"]["spec"]["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 1000,
        "fsGroup": 2000,
        "seccompProfile": {"type": "Unconfined"},
    }
    assert container(dep)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"add": ["NET_BIND_SERVICE"]},
    }


def test_container_fields() -> None:
    spec = make(
        imagePullPolicy="Always",
        command=["gunicorn"],
        args=["-b", "0.0.0.0:8080", "app:app"],
        env=[
            {"name": "MODE", "value": "prod"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}}],
        resources={"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}},
    )
    c = container(render.build_deployment(OWNER, spec, replicas=1))
    assert c["imagePullPolicy"] == "Always"
    assert c["command"] == ["gunicorn"]
    assert c["args"] == ["-b", "0.0.0.0:8080", "app:app"]
    assert c["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    assert c["envFrom"] == [{"configMapRef": {"name": "cfg"}}]
    assert c["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "128Mi"}}


def test_rendering_does_not_alias_spec_objects() -> None:
    spec = make(envFrom=[{"configMapRef": {"name": "cfg"}}])
    c = container(render.build_deployment(OWNER, spec, replicas=1))
    c["envFrom"][0]["configMapRef"]["name"] = "changed"
    assert spec.env_from == [{"configMapRef": {"name": "cfg"}}]


# --------------------------------------------------------------------------- probes


def test_default_probes_from_first_port() -> None:
    spec = make(
        ports=[
            {"name": "web", "containerPort": 8080, "servicePort": 80},
            {"name": "metrics", "containerPort": 9090},
        ]
    )
    c = container(render.build_deployment(OWNER, spec, replicas=1))
    assert c["readinessProbe"] == {"tcpSocket": {"port": "web"}, "periodSeconds": 5}
    assert c["livenessProbe"] == {"tcpSocket": {"port": "web"}, "initialDelaySeconds": 10}
    assert "startupProbe" not in c


def test_no_ports_no_default_probes() -> None:
    spec = MicroServiceSpec.model_validate({"image": "worker:1", "service": {"enabled": False}})
    c = container(render.build_deployment(OWNER, spec, replicas=1))
    for key in ("readinessProbe", "livenessProbe", "startupProbe", "ports"):
        assert key not in c


def test_probe_overrides() -> None:
    spec = make(
        probes={
            "readiness": {"httpGetPath": "/healthz", "periodSeconds": 2, "failureThreshold": 4},
            "liveness": {"execCommand": ["/bin/check"], "timeoutSeconds": 3},
            "startup": {"port": 9000, "failureThreshold": 30},
        }
    )
    c = container(render.build_deployment(OWNER, spec, replicas=1))
    assert c["readinessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "http"},
        "periodSeconds": 2,
        "failureThreshold": 4,
    }
    assert c["livenessProbe"] == {
        "exec": {"command": ["/bin/check"]},
        "initialDelaySeconds": 10,
        "timeoutSeconds": 3,
    }
    assert c["startupProbe"] == {"tcpSocket": {"port": 9000}, "failureThreshold": 30}


def test_probe_disabled() -> None:
    spec = make(probes={"liveness": {"enabled": False}})
    c = container(render.build_deployment(OWNER, spec, replicas=1))
    assert "livenessProbe" not in c
    assert "readinessProbe" in c


# --------------------------------------------------------------------------- pod template


def test_pod_template_settings() -> None:
    spec = make(
        podTemplate={
            "labels": {"team": "cart"},  # reserved labels are refused: test_api_validation
            "annotations": {"prometheus.io/scrape": "true"},
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"podAntiAffinity": {}},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {
                    "maxSkew": 2,
                    "topologyKey": "host",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"custom": "yes"}},
                },
            ],
            "serviceAccountName": "shop",
            "imagePullSecrets": ["regcred"],
            "priorityClassName": "high",
            "terminationGracePeriodSeconds": 45,
        }
    )
    template = render.build_deployment(OWNER, spec, replicas=1)["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert labels["team"] == "cart"
    assert labels["mso.dev/track"] == "primary"
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["mso.dev/revision"] == render.revision(spec)
    pod = template["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["affinity"] == {"podAntiAffinity": {}}
    spread = pod["topologySpreadConstraints"]
    assert spread[0]["labelSelector"] == {"matchLabels": render.selector_labels("shop", "primary")}
    assert spread[1]["labelSelector"] == {"matchLabels": {"custom": "yes"}}
    assert pod["serviceAccountName"] == "shop"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "high"
    assert pod["terminationGracePeriodSeconds"] == 45


def test_pod_template_public_matches_deployment() -> None:
    spec = make(failover={"standby": {"nodeSelector": {"zone": "b"}}})
    for track in ("primary", "standby"):
        dep = render.build_deployment(OWNER, spec, track=track, replicas=1)
        assert dep["spec"]["template"] == render.pod_template(spec, "shop", track)


# --------------------------------------------------------------------------- replicas


def test_replicas_omitted_under_autoscaling() -> None:
    spec = make(replicas=7, autoscaling={"maxReplicas": 5})
    assert render.desired_replicas(spec) is None
    dep = render.build_children(OWNER, spec)["deployment"]
    assert dep is not None
    assert "replicas" not in dep["spec"]
    assert render.desired_replicas(make(replicas=7)) == 7
    dep = render.build_children(OWNER, make(replicas=0))["deployment"]
    assert dep is not None
    assert dep["spec"]["replicas"] == 0


# --------------------------------------------------------------------------- standby


def test_standby_deployment_and_overrides() -> None:
    spec = make(
        replicas=3,
        podTemplate={
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "primary-only", "operator": "Exists"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "host"}],
        },
        failover={
            "standby": {
                "replicas": 2,
                "nodeSelector": {"zone": "b"},
                "affinity": {"nodeAffinity": {"x": 1}},
            }
        },
    )
    children = render.build_children(OWNER, spec)
    standby = children["standby"]
    assert standby is not None
    assert standby["metadata"]["name"] == "shop-standby"
    assert standby["metadata"]["labels"]["mso.dev/track"] == "standby"
    assert standby["spec"]["replicas"] == 2
    assert standby["spec"]["selector"] == {"matchLabels": render.selector_labels("shop", "standby")}
    pod = standby["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"zone": "b"}  # replaced
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}  # added
    assert pod["tolerations"] == [{"key": "primary-only", "operator": "Exists"}]  # inherited
    spread = pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    assert spread == render.selector_labels("shop", "standby")
    # Same revision as the primary: the standby runs the same release.
    primary = children["deployment"]
    assert primary is not None
    ann = "mso.dev/revision"
    assert (
        standby["spec"]["template"]["metadata"]["annotations"][ann]
        == primary["spec"]["template"]["metadata"]["annotations"][ann]
    )
    assert primary["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "a"}


def test_standby_replicas_override_and_absence() -> None:
    spec = make(failover={"standby": {"replicas": 1}})
    standby = render.build_children(OWNER, spec, standby_replicas=4)["standby"]
    assert standby is not None
    assert standby["spec"]["replicas"] == 4
    assert render.build_children(OWNER, make())["standby"] is None


def test_service_follows_active_track() -> None:
    spec = make(failover={"standby": {}})
    svc = render.build_children(OWNER, spec, active_track="standby")["service"]
    assert svc is not None
    assert svc["spec"]["selector"] == render.selector_labels("shop", "standby")
    # Without a standby, traffic never goes to a track that does not exist.
    svc = render.build_children(OWNER, make(), active_track="standby")["service"]
    assert svc is not None
    assert svc["spec"]["selector"] == render.selector_labels("shop", "primary")


def test_rollback_renders_template_from_source_spec() -> None:
    good = make(image="shop:1", strategy={"maxSurge": 1})
    bad = make(image="shop:2", strategy={"maxSurge": 3}, failover={"progressDeadlineSeconds": 60})
    dep = render.build_deployment(OWNER, bad, replicas=2, source_spec=good)
    assert container(dep)["image"] == "shop:1"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["mso.dev/revision"] == render.revision(good)
    assert dep["spec"]["template"] == render.pod_template(good, "shop")
    # Deployment-level settings follow the current spec.
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 3
    assert dep["spec"]["progressDeadlineSeconds"] == 60


# --------------------------------------------------------------------------- revision


def test_revision_is_stable_and_short() -> None:
    rev = render.revision(make())
    assert rev == render.revision(make())
    assert len(rev) == 10
    assert int(rev, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"image": "ghcr.io/acme/shop:1.1"},
        {"env": [{"name": "A", "value": "1"}]},
        {"args": ["--debug"]},
        {"resources": {"requests": {"cpu": "200m"}}},
        {"probes": {"readiness": {"httpGetPath": "/ready"}}},
        {"securityContext": {"readOnlyRootFilesystem": True}},
        {"podTemplate": {"annotations": {"restartedAt": "now"}}},
        {"ports": [{"containerPort": 8081, "servicePort": 80}]},
    ],
)
def test_revision_changes_with_template(change: dict[str, Any]) -> None:
    assert render.revision(make(**change)) != render.revision(make())


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 9},
        {"autoscaling": {"maxReplicas": 10}},
        {"service": {"type": "LoadBalancer", "annotations": {"a": "b"}}},
        {"ports": [{"containerPort": 8080, "servicePort": 8000}]},
        {"availability": {"minAvailable": 1}},
        {"strategy": {"maxSurge": 2}},
        {"failover": {"progressDeadlineSeconds": 30, "standby": {"nodeSelector": {"z": "b"}}}},
    ],
)
def test_revision_ignores_non_template_fields(change: dict[str, Any]) -> None:
    assert render.revision(make(**change)) == render.revision(make())


# --------------------------------------------------------------------------- service


def test_service_basics() -> None:
    spec = make(
        ports=[
            {"name": "web", "containerPort": 5000, "servicePort": 80},
            {"name": "metrics", "containerPort": 9090},
            {"name": "dns", "containerPort": 5353, "servicePort": 53, "protocol": "UDP"},
        ],
        service={"annotations": {"lb": "internal"}, "labels": {"team": "x"}},
    )
    svc = render.build_service(OWNER, spec)
    assert svc is not None
    assert svc["metadata"]["annotations"] == {"lb": "internal"}
    assert svc["metadata"]["labels"]["team"] == "x"
    assert svc["spec"] == {
        "type": "ClusterIP",
        "selector": render.selector_labels("shop", "primary"),
        "ports": [
            {"name": "web", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
        ],
    }


def test_service_headless() -> None:
    svc = render.build_service(OWNER, make(service={"type": "None"}))
    assert svc is not None
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize(
    ("type_", "expected"), [("NodePort", True), ("LoadBalancer", True)]
)  # nodePort with ClusterIP is refused: test_api_validation
def test_service_node_port(type_: str, expected: bool) -> None:
    spec = make(
        ports=[{"containerPort": 5000, "servicePort": 80, "nodePort": 30080}],
        service={"type": type_},
    )
    svc = render.build_service(OWNER, spec)
    assert svc is not None
    assert svc["spec"]["type"] == type_
    assert ("nodePort" in svc["spec"]["ports"][0]) is expected


def test_service_disabled() -> None:
    spec = MicroServiceSpec.model_validate(
        {"image": "worker:1", "ports": [{"containerPort": 1}], "service": {"enabled": False}}
    )
    assert render.build_service(OWNER, spec) is None
    assert render.build_children(OWNER, spec)["service"] is None


# --------------------------------------------------------------------------- hpa / pdb


def test_hpa_defaults_to_cpu_80() -> None:
    hpa = render.build_hpa(OWNER, make(autoscaling={"maxReplicas": 5}))
    assert hpa is not None
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
        "minReplicas": 1,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ],
    }


def test_hpa_memory_only_and_behavior() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    spec = make(
        autoscaling={
            "minReplicas": 2,
            "maxReplicas": 6,
            "targetMemoryUtilizationPercentage": 70,
            "behavior": behavior,
        }
    )
    hpa = render.build_hpa(OWNER, spec)
    assert hpa is not None
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["memory"]
    assert hpa["spec"]["behavior"] == behavior
    assert hpa["spec"]["minReplicas"] == 2


def test_hpa_cpu_and_memory() -> None:
    spec = make(
        autoscaling={
            "maxReplicas": 6,
            "targetCPUUtilizationPercentage": 50,
            "targetMemoryUtilizationPercentage": 70,
        }
    )
    hpa = render.build_hpa(OWNER, spec)
    assert hpa is not None
    targets = {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
        for m in hpa["spec"]["metrics"]
    }
    assert targets == {"cpu": 50, "memory": 70}


def test_no_hpa_no_pdb_by_default() -> None:
    children = render.build_children(OWNER, make())
    assert children["hpa"] is None
    assert children["pdb"] is None


@pytest.mark.parametrize(
    ("availability", "expected"),
    [
        ({"minAvailable": 2}, {"minAvailable": 2}),
        ({"maxUnavailable": "25%"}, {"maxUnavailable": "25%"}),
    ],
)
def test_pdb_exclusive(availability: dict[str, Any], expected: dict[str, Any]) -> None:
    pdb = render.build_pdb(OWNER, make(availability=availability))
    assert pdb is not None
    assert pdb["spec"] == {
        "selector": {
            "matchLabels": render.selector_labels("shop", "primary"),
            # A canary's pods (track primary too) do not use up the stable pods' budget.
            "matchExpressions": [{"key": "mso.dev/canary", "operator": "DoesNotExist"}],
        },
        **expected,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


# --------------------------------------------------------------------------- golden


def _rendered_sample(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    owner = Owner(
        name=doc["metadata"]["name"],
        namespace="default",
        uid="00000000-0000-0000-0000-000000000001",
    )
    spec = MicroServiceSpec.model_validate(doc["spec"])
    children: dict[str, Any] = {str(k): v for k, v in render.build_children(owner, spec).items()}
    return children


def test_samples_exist() -> None:
    names = {p.name for p in SAMPLES}
    assert {"hello.yaml", "hello-autoscaled.yaml"} <= names


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_golden(sample: Path) -> None:
    rendered = _rendered_sample(sample)
    golden = GOLDEN / sample.name
    text = yaml.safe_dump(rendered, sort_keys=False, width=100)
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}; run with UPDATE_GOLDEN=1"
    assert yaml.safe_load(golden.read_text()) == rendered, (
        f"{golden.name} is stale; review and regenerate with UPDATE_GOLDEN=1"
    )


def test_hello_sample_is_the_classic_setup() -> None:
    children = _rendered_sample(REPO / "manifests" / "samples" / "hello.yaml")
    dep, svc = children["deployment"], children["service"]
    assert dep["spec"]["replicas"] == 3
    assert container(dep)["ports"][0]["containerPort"] == 5000
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    example = yaml.safe_load((REPO / "examples" / "hello" / "microservice.yaml").read_text())
    sample = yaml.safe_load((REPO / "manifests" / "samples" / "hello.yaml").read_text())
    assert example == sample
