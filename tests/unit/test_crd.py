"""The committed CRD is generated from api.py and is a valid structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from microservice_operator import api, crd

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "crds" / crd.CRD_FILE

# Keys allowed in a structural schema node (apiextensions.k8s.io/v1 JSONSchemaProps
# minus $ref/definitions/nullable-style unions we never need).
ALLOWED_KEYS = {
    "type",
    "description",
    "properties",
    "items",
    "additionalProperties",
    "required",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
    "format",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}
INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def schema() -> dict[str, Any]:
    version = crd.render_crd()["spec"]["versions"][0]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path (``.spec.ports[].name``)."""
    out = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        out.extend(nodes(sub, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        out.extend(nodes(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        out.extend(nodes(node["additionalProperties"], f"{path}.*"))
    return out


def properties(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Nodes that are named fields (what ``kubectl explain`` lists)."""
    return [
        (p, n) for p, n in nodes(node, path) if p and not p.endswith("[]") and not p.endswith(".*")
    ]


def test_committed_crd_is_up_to_date() -> None:
    assert COMMITTED.exists(), "run `make crds`"
    assert COMMITTED.read_text() == crd.crd_yaml(), (
        "crds/ is stale: run `make crds` (python -m microservice_operator.crd) and commit"
    )


def test_crd_yaml_round_trips() -> None:
    assert yaml.safe_load(crd.crd_yaml()) == crd.render_crd()


def test_main_writes_file(tmp_path: Path) -> None:
    assert crd.main([str(tmp_path)]) == 0
    assert (tmp_path / crd.CRD_FILE).read_text() == crd.crd_yaml()


def test_metadata_is_only_typed() -> None:
    """The API server rejects a CRD that says anything about metadata but its type."""
    assert schema()["properties"]["metadata"] == {"type": "object"}


def test_names_and_version() -> None:
    c = crd.render_crd()
    assert c["metadata"]["name"] == "microservices.mso.dev"
    spec = c["spec"]
    assert spec["group"] == "mso.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "MicroService",
        "listKind": "MicroServiceList",
        "plural": "microservices",
        "singular": "microservice",
        "shortNames": ["ms"],
        "categories": ["all"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {
        col["name"]: (col["type"], col["jsonPath"]) for col in version["additionalPrinterColumns"]
    }
    assert columns == {
        "Ready": ("string", ".status.ready"),
        "Image": ("string", ".spec.image"),
        "Phase": ("string", ".status.phase"),
        "Track": ("string", ".status.activeTrack"),
        "Canary": ("string", ".status.canary.step"),
        "Age": ("date", ".metadata.creationTimestamp"),
    }


def test_schema_is_structural() -> None:
    for path, node in nodes(schema()):
        assert set(node) <= ALLOWED_KEYS, f"{path}: {set(node) - ALLOWED_KEYS}"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
            assert node["anyOf"] == INT_OR_STRING, path
            assert "type" not in node, path
            continue
        assert "type" in node, f"{path}: no type"
        assert node["type"] != "null", path
        if node["type"] == "object":
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields") is True
                or path == ".metadata"
            ), f"{path}: object without properties would be pruned empty"
            assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), path
        for name in node.get("required", []):
            assert name in node["properties"], f"{path}: required {name} undefined"


def test_no_refs_titles_or_nulls_anywhere() -> None:
    text = crd.crd_yaml()
    for word in ("$ref", "$defs", "title:", "type: 'null'", "type: null", "nullable"):
        assert word not in text


def test_every_field_has_a_description() -> None:
    # metadata is the one exception: the API server rejects any description there.
    missing = [p for p, n in properties(schema()) if not n.get("description") and p != ".metadata"]
    assert not missing, missing


def test_defaults_validate_against_their_schema() -> None:
    def check(value: Any, node: dict[str, Any], path: str) -> None:
        if node.get("x-kubernetes-int-or-string"):
            assert isinstance(value, int | str), path
            return
        expected = {
            "string": str,
            "integer": int,
            "number": int | float,
            "boolean": bool,
            "object": dict,
            "array": list,
        }[node["type"]]
        assert isinstance(value, expected), path
        if "enum" in node:
            assert value in node["enum"], path
        if isinstance(value, dict):
            for name in node.get("required", []):
                assert name in value, f"{path}: default lacks required {name}"
            for k, v in value.items():
                sub = node.get("properties", {}).get(k) or node.get("additionalProperties")
                assert isinstance(sub, dict), f"{path}.{k} unknown in default"
                check(v, sub, f"{path}.{k}")
        if isinstance(value, list):
            for v in value:
                check(v, node["items"], f"{path}[]")

    found = 0
    for path, node in nodes(schema()):
        if "default" in node:
            found += 1
            check(node["default"], node, path)
    assert found > 10


def test_object_defaults_let_nested_defaults_apply() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    for name in ("service", "securityContext", "failover"):
        assert spec[name]["default"] == {}, name
    assert spec["securityContext"]["properties"]["dropCapabilities"]["default"] == ["ALL"]
    assert spec["failover"]["properties"]["progressDeadlineSeconds"]["default"] == 300
    # No default for replicas: unset means "keep the Deployment's count" (1 when new),
    # which a default written into every object could not express.
    assert "default" not in spec["replicas"]
    assert "default" not in spec["autoscaling"]  # optional: no HPA unless asked


def test_api_server_defaults_match_pydantic_defaults() -> None:
    """Defaulting {image} the way the API server would gives pydantic's defaults."""

    def apply(node: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
        out = dict(value)
        for name, sub in node.get("properties", {}).items():
            if name not in out and "default" in sub:
                out[name] = sub["default"]
            if isinstance(out.get(name), dict) and "properties" in sub:
                out[name] = apply(sub, out[name])
        return out

    spec_schema = schema()["properties"]["spec"]
    defaulted = apply(spec_schema, {"image": "x", "service": {"enabled": False}})
    model = api.MicroServiceSpec.model_validate({"image": "x", "service": {"enabled": False}})
    assert defaulted == model.dump()


def test_enums_bounds_and_patterns() -> None:
    props = schema()["properties"]["spec"]["properties"]
    port = props["ports"]["items"]["properties"]
    assert port["protocol"]["enum"] == ["TCP", "UDP", "SCTP"]
    assert (port["containerPort"]["minimum"], port["containerPort"]["maximum"]) == (1, 65535)
    assert port["name"]["maxLength"] == 15
    assert port["name"]["pattern"].startswith("^[a-z0-9]")
    assert props["ports"]["maxItems"] == 64
    assert props["service"]["properties"]["type"]["enum"] == [
        "ClusterIP",
        "NodePort",
        "LoadBalancer",
        "None",
    ]
    ratio = props["failover"]["properties"]["minHealthyRatio"]
    assert (ratio["minimum"], ratio["exclusiveMinimum"], ratio["maximum"]) == (0, True, 1)


def test_free_form_objects_preserve_unknown_fields() -> None:
    props = schema()["properties"]
    spec = props["spec"]["properties"]
    assert spec["podTemplate"]["properties"]["affinity"]["x-kubernetes-preserve-unknown-fields"]
    assert spec["autoscaling"]["properties"]["behavior"]["x-kubernetes-preserve-unknown-fields"]
    # Status reports the last known good by reference only: no pod spec a tenant
    # could forge (the record is a ControllerRevision).
    assert "spec" not in props["status"]["properties"]["lastKnownGood"]["properties"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("spec", "servicePort is required"),
        ("spec", "name must be unique"),
        ("spec.autoscaling", "minReplicas must be less than or equal"),
        ("spec.availability", "exactly one of minAvailable or maxUnavailable"),
        ("", "metadata.name must be a DNS-1035 label"),
        ("spec", "nodePort needs spec.service.type NodePort or LoadBalancer"),
        ("spec", "servicePort must be unique per protocol"),
        ("spec", "spec.probes.liveness.port must be a port number or the name"),
        ("spec", "spec.probes.readiness has nothing to probe"),
        ("spec.image", "must be an image reference"),
        ("spec.podTemplate.labels", "must not set the operator's own labels"),
        ("spec.service.labels", "must not set the operator's own labels"),
        ("spec.availability.minAvailable", "percentage from"),
        ("spec.strategy.maxSurge", "percentage from"),
        ("spec.strategy", "must not both be 0"),
        ("spec.securityContext", "contradicts runAsNonRoot"),
        ("spec.probes.readiness.httpGetPath", "must be an absolute URL path"),
        ("spec.probes.readiness.port", "must be a port number"),
    ],
)
def test_cel_rules_present(path: str, message: str) -> None:
    node = schema()
    for part in filter(None, path.split(".")):
        node = node["properties"][part]
    messages = [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    assert any(message in m for m in messages), messages


def test_cel_lists_are_bounded() -> None:
    """The API server estimates CEL cost from maxItems; unbounded lists are rejected."""
    spec = schema()["properties"]["spec"]
    rules = " ".join(r["rule"] for r in spec["x-kubernetes-validations"])
    for name, node in spec["properties"].items():
        if node.get("type") == "array" and f"self.{name}" in rules:
            assert "maxItems" in node, name


def test_cel_over_collections_and_strings_is_bounded() -> None:
    """A CEL rule on a node iterates it or matches it: the API server's cost estimate
    needs maxItems / maxProperties / maxLength there (or refuses the CRD)."""
    for path, node in nodes(schema()):
        rules = " ".join(r["rule"] for r in node.get("x-kubernetes-validations", []))
        if not rules or not path:
            continue
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
        if node.get("type") == "string" and "matches(" in rules:
            assert "maxLength" in node, path


def test_replica_counts_have_a_sanity_bound() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    for node in (
        spec["replicas"],
        spec["autoscaling"]["properties"]["minReplicas"],
        spec["autoscaling"]["properties"]["maxReplicas"],
        spec["failover"]["properties"]["standby"]["properties"]["replicas"],
    ):
        assert node["maximum"] == api.MAX_REPLICAS
        assert "sanity bound" in node["description"]
