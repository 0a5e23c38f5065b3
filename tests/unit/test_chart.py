"""The Helm chart (charts/microservice-operator), checked without a cluster.

The chart is a second way to install what `kubectl apply -k manifests/` installs,
so it is held to the kustomize rendering itself: with the default values it renders
the base's objects (minus the Namespace: Helm installs into an existing or
`--create-namespace` namespace), with `watchNamespaces` the namespaced overlay's,
with two replicas the HA overlay's and with the monitoring toggles the monitoring
component's, equal field by field once Helm's own labels and annotations are
ignored. So the RBAC rules, the operator's args, env, probes, ports and security
contexts, and the CRD cannot drift apart.

helm is built from the Go module proxy by tools/helm.sh (cached outside the clone).
Without Go (and no cached helm) these tests skip; CI has Go, so there they run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_manifests import BASE, CRD_SOURCE, MANIFESTS, NAMESPACE, POD_LABELS, ROOT, render
from tests.helmtool import build_helm

CHART = ROOT / "charts" / "microservice-operator"
CRD_CHART_COPY = CHART / "files" / "microservices.mso.dev.yaml"
RULES_SOURCE = MANIFESTS / "prometheus" / "rules.yaml"
RULES_CHART_COPY = CHART / "files" / "prometheus-rules.yaml"

# With this release name and namespace the chart's objects carry the base's names.
RELEASE = "microservice-operator"
# Labels Helm charts add by convention and the kustomize manifests do not have.
HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}
HELM_ANNOTATIONS = {"helm.sh/resource-policy"}
RBAC_KINDS = {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}


# --------------------------------------------------------------------- tools


class Helm:
    """helm with its own config/cache/data directories and no cluster behind it."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            # helm template and lint never need a cluster; make sure none is reached.
            "KUBECONFIG": str(home / "no-such-kubeconfig"),
        }
        self.home = home
        self._renders: dict[str, tuple[dict[str, Any], ...]] = {}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
        )
        if check:
            assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    def values_file(self, values: dict[str, Any]) -> str:
        path = self.home / f"values-{len(list(self.home.glob('values-*')))}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    def template(
        self,
        values: dict[str, Any] | None = None,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
    ) -> list[dict[str, Any]]:
        """The objects `helm install` would create (a fresh copy each call)."""
        key = json.dumps([values, release, namespace], sort_keys=True)
        if key not in self._renders:
            args = ["template", release, str(CHART), "--namespace", namespace]
            if values:
                args += ["--values", self.values_file(values)]
            out = self.run(*args).stdout
            self._renders[key] = tuple(d for d in yaml.safe_load_all(out) if d)
        return copy.deepcopy(list(self._renders[key]))

    def template_error(self, values: dict[str, Any]) -> str:
        args = ["template", RELEASE, str(CHART), "--values", self.values_file(values)]
        proc = self.run(*args, check=False)
        assert proc.returncode != 0, f"helm accepted {values}"
        return proc.stderr


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    yield Helm(build_helm(), tmp_path_factory.mktemp("helm"))


def kustomize_with_monitoring(tmp_path: Path) -> list[dict[str, Any]]:
    """The base plus the monitoring component, as manifests/monitoring/README.md says."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(BASE, overlay)],
                "components": [os.path.relpath(MANIFESTS / "monitoring", overlay)],
            }
        )
    )
    return render(overlay)


# ------------------------------------------------------------------ comparison


def key(doc: dict[str, Any]) -> tuple[str, str | None, str]:
    return doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]


def keys(docs: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    return {key(d) for d in docs}


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}"
    return found[0]


def without_helm_metadata(node: Any) -> Any:
    """A copy without what Helm adds: its labels wherever labels or selectors are
    (every map that has app.kubernetes.io/name) and its annotations; env sorted by
    name (kustomize prepends patched env entries, the chart appends them)."""
    if isinstance(node, list):
        return [without_helm_metadata(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: without_helm_metadata(v) for k, v in node.items()}
    if "app.kubernetes.io/name" in out:
        out = {k: v for k, v in out.items() if k not in HELM_LABELS}
    meta = out.get("metadata")
    if isinstance(meta, dict) and "annotations" in meta:
        annotations = {k: v for k, v in meta["annotations"].items() if k not in HELM_ANNOTATIONS}
        if annotations:
            meta["annotations"] = annotations
        else:
            del meta["annotations"]
    if isinstance(out.get("env"), list):
        out["env"] = sorted(out["env"], key=lambda e: e["name"])
    return out


def assert_same_objects(chart: list[dict[str, Any]], kust: list[dict[str, Any]]) -> None:
    """The chart renders exactly the kustomize objects but the Namespace, field by field."""
    chart, kust = copy.deepcopy(chart), [d for d in kust if d["kind"] != "Namespace"]
    assert keys(chart) == keys(kust)
    by_key = {key(d): d for d in kust}
    for doc in chart:
        expected = by_key[key(doc)]
        # Every kustomize label is there, with its value (Helm's come on top, and
        # app.kubernetes.io/part-of, which kustomize gives the base's objects only).
        labels = doc["metadata"].pop("labels", {})
        assert labels.items() >= expected["metadata"].pop("labels", {}).items(), key(doc)
        assert labels["app.kubernetes.io/part-of"] == "microservice-operator", key(doc)
        assert without_helm_metadata(doc) == without_helm_metadata(expected), key(doc)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# ------------------------------------------------------------------ the chart itself


def test_helm_lint(helm: Helm) -> None:
    proc = helm.run("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "values",
    [
        {"replicas": 2},
        {"watchNamespaces": ["default", "shop"]},
        {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        {"crds": {"install": False}, "rbac": {"create": False}},
    ],
    ids=["ha", "namespaced", "monitoring", "bare"],
)
def test_helm_lint_with_toggles(helm: Helm, values: dict[str, Any]) -> None:
    proc = helm.run("lint", "--strict", str(CHART), "--values", helm.values_file(values))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


def test_app_version_is_the_project_version(helm: Helm) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version
    c = container(helm.template())
    assert c["image"] == f"microservice-operator:{version}"
    assert c["imagePullPolicy"] == "IfNotPresent"


def test_crd_copy_matches_generated_crd() -> None:
    assert CRD_CHART_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        "charts/microservice-operator/files/ is stale: cp crds/microservices.mso.dev.yaml "
        "charts/microservice-operator/files/microservices.mso.dev.yaml"
    )


def test_rules_copy_matches_the_plain_rules_file() -> None:
    assert RULES_CHART_COPY.read_bytes() == RULES_SOURCE.read_bytes(), (
        "charts/microservice-operator/files/ is stale: cp manifests/prometheus/rules.yaml "
        "charts/microservice-operator/files/prometheus-rules.yaml"
    )


def test_no_crds_directory() -> None:
    """The CRD is a template (upgraded by `helm upgrade`), not in crds/ (install-only)."""
    assert not (CHART / "crds").exists()


# ------------------------------------------------------------------ same as kustomize


def test_default_values_render_the_kustomize_base(helm: Helm) -> None:
    assert_same_objects(helm.template(), render(BASE))


def test_default_render_is_exactly_the_base_workload(helm: Helm) -> None:
    """The important parts spelled out (assert_same_objects already covers them)."""
    chart, base = helm.template(), render(BASE)
    c, b = container(chart), container(base)
    for field in ("env", "ports", "livenessProbe", "readinessProbe", "securityContext"):
        assert c[field] == b[field], field
    assert "args" not in c and "args" not in b
    chart_pod = one(chart, "Deployment")["spec"]["template"]["spec"]
    base_pod = one(base, "Deployment")["spec"]["template"]["spec"]
    assert chart_pod["securityContext"] == base_pod["securityContext"]
    for kind in RBAC_KINDS:
        for doc in (d for d in chart if d["kind"] == kind):
            theirs = one(base, kind, doc["metadata"]["name"])
            for field in ("rules", "roleRef", "subjects"):
                assert doc.get(field) == theirs.get(field), (kind, field)
    crd = one(chart, "CustomResourceDefinition")
    source = yaml.safe_load(CRD_SOURCE.read_text())
    assert crd["metadata"]["labels"].items() >= source["metadata"]["labels"].items()
    assert {k: v for k, v in crd.items() if k != "metadata"} == {
        k: v for k, v in source.items() if k != "metadata"
    }
    assert crd["metadata"]["name"] == source["metadata"]["name"]


def test_watch_namespaces_render_the_namespaced_overlay(helm: Helm) -> None:
    overlay = render(MANIFESTS / "overlays" / "namespaced")
    watched = env_of(overlay)["MSO_NAMESPACES"].split(",")
    assert_same_objects(helm.template({"watchNamespaces": watched}), overlay)


def test_a_namespace_selector_is_passed_and_may_read_namespaces(helm: Helm) -> None:
    docs = helm.template({"namespaceSelector": "team=payments"})
    assert env_of(docs)["MSO_NAMESPACE_SELECTOR"] == "team=payments"
    plain = helm.template()
    assert keys(docs) - keys(plain) == {
        ("ClusterRole", None, "microservice-operator-namespaces"),
        ("ClusterRoleBinding", None, "microservice-operator-namespaces"),
    }
    assert "exclude each other" in helm.template_error(
        {"namespaceSelector": "team=payments", "watchNamespaces": ["shop"]}
    )


def test_two_replicas_render_the_ha_overlay(helm: Helm) -> None:
    assert_same_objects(helm.template({"replicas": 2}), render(MANIFESTS / "overlays" / "ha"))


def test_monitoring_toggles_render_the_monitoring_component(helm: Helm, tmp_path: Path) -> None:
    chart = helm.template(
        {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
    )
    assert_same_objects(chart, kustomize_with_monitoring(tmp_path))


# ------------------------------------------------------------------ values toggles


def test_crds_install_false_drops_only_the_crd(helm: Helm) -> None:
    with_crd = helm.template()
    without = helm.template({"crds": {"install": False}})
    assert keys(with_crd) - keys(without) == {
        ("CustomResourceDefinition", None, "microservices.mso.dev")
    }
    assert keys(without) < keys(with_crd)


def test_crd_is_kept_on_uninstall(helm: Helm) -> None:
    """Deleting the CRD deletes every MicroService: Helm must never do it."""
    crd = one(helm.template(), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_rbac_create_false_drops_all_rbac(helm: Helm) -> None:
    docs = helm.template({"rbac": {"create": False}, "replicas": 2, "watchNamespaces": ["a"]})
    assert not [d for d in docs if d["kind"] in RBAC_KINDS]


def test_default_is_cluster_wide_single_replica(helm: Helm) -> None:
    docs = helm.template()
    env = env_of(docs)
    assert "MSO_NAMESPACES" not in env
    assert "MSO_LEADER_ELECTION" not in env
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert not [d for d in docs if d["kind"] in {"Role", "RoleBinding", "PodDisruptionBudget"}]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"} == {
        "microservice-operator-framework",
        "microservice-operator-application",
    }


def test_watch_namespaces_bind_the_application_role_per_namespace(helm: Helm) -> None:
    docs = helm.template({"watchNamespaces": ["shop", "billing"]})
    assert env_of(docs)["MSO_NAMESPACES"] == "shop,billing"
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["billing", "shop"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "microservice-operator-application",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "microservice-operator", "namespace": NAMESPACE}
        ]
    cluster_bound = {d["roleRef"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert cluster_bound == {
        "microservice-operator-framework",
        "microservice-operator-namespaces",
    }
    for role in cluster_bound:
        for rule in one(docs, "ClusterRole", role)["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, (role, rule)


@pytest.mark.parametrize(
    "values",
    [{"replicas": 2}, {"replicas": 3}, {"leaderElection": {"enabled": True}}],
    ids=["replicas=2", "replicas=3", "enabled"],
)
def test_leader_election(helm: Helm, values: dict[str, Any]) -> None:
    docs = helm.template(values)
    env = env_of(docs)
    assert env["MSO_LEADER_ELECTION"] == "true"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The operator's default Lease name is the full name here: no override needed.
    assert "MSO_LEADER_ELECTION_ID" not in env
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == values.get("replicas", 1)
    assert spec["strategy"]["type"] == "RollingUpdate"
    role = one(docs, "Role", "microservice-operator-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert [r["resourceNames"] for r in named] == [["microservice-operator"]]
    one(docs, "RoleBinding", "microservice-operator-leader-election")
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert len(pdbs) == (1 if values.get("replicas", 1) > 1 else 0)


def test_lease_name_follows_the_release(helm: Helm) -> None:
    docs = helm.template({"replicas": 2}, release="ops", namespace="ops-system")
    env = env_of(docs)
    assert env["MSO_LEADER_ELECTION_ID"] == "ops-microservice-operator"
    role = one(docs, "Role", "ops-microservice-operator-leader-election")
    assert role["metadata"]["namespace"] == "ops-system"
    assert [r["resourceNames"] for r in role["rules"] if r.get("resourceNames")] == [
        ["ops-microservice-operator"]
    ]
    custom = env_of(helm.template({"replicas": 2, "leaderElection": {"leaseName": "mso"}}))
    assert custom["MSO_LEADER_ELECTION_ID"] == "mso"


def test_another_release_collides_with_nothing_of_the_base(helm: Helm) -> None:
    """A second install (other release name) shares no cluster-scoped name but the CRD's."""
    base = {key(d) for d in render(BASE) if "namespace" not in d["metadata"]}
    other = helm.template({"crds": {"install": False}}, release="team-a", namespace="team-a")
    for doc in other:
        assert key(doc) not in base, key(doc)
        assert doc["metadata"]["name"].startswith("team-a-microservice-operator")
        if doc["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            assert doc["subjects"][0]["namespace"] == "team-a"
    selector = one(other, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector == {**POD_LABELS, "app.kubernetes.io/instance": "team-a"}
    assert one(other, "Service")["spec"]["selector"] == selector


def test_service_monitor_selects_the_metrics_service(helm: Helm) -> None:
    docs = helm.template({"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "microservice-operator",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "metrics",
    }
    assert service["metadata"]["labels"].items() >= selector.items()
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["honorLabels"] is True
    # The job name the alerts expect (jobLabel's value on the Service).
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "microservice-operator"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert "PrometheusRule" not in {d["kind"] for d in docs}


def test_service_monitor_in_another_namespace_selects_the_release_namespace(helm: Helm) -> None:
    docs = helm.template({"serviceMonitor": {"enabled": True, "namespace": "monitoring"}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_prometheus_rule_carries_the_shipped_alerts(helm: Helm) -> None:
    docs = helm.template({"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}})
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_SOURCE.read_text())["groups"]
    # The alerts' own templates reach Prometheus unevaluated.
    assert "{{ $labels.namespace }}" in json.dumps(rule["spec"])
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert "ServiceMonitor" not in {d["kind"] for d in docs}


def test_operator_settings_become_env(helm: Helm) -> None:
    docs = helm.template(
        {
            "operator": {
                "logLevel": "debug",
                "logFormat": "json",
                "workers": 4,
                "templateRefreshesPerMinute": 0,
                "metricsPort": 9090,
                "healthPort": 9091,
                "extraArgs": ["--log-level=DEBUG"],
                "extraEnv": [{"name": "EXTRA", "value": "1"}],
            },
            "metricsService": {"port": 9100},
        }
    )
    env = env_of(docs)
    assert env["MSO_LOG_LEVEL"] == "DEBUG"
    assert env["MSO_LOG_FORMAT"] == "json"
    assert env["MSO_WORKERS"] == "4"
    assert env["MSO_TEMPLATE_REFRESHES_PER_MINUTE"] == "0"
    assert env["MSO_METRICS_PORT"] == "9090"
    assert env["MSO_HEALTH_PORT"] == "9091"
    assert env["EXTRA"] == "1"
    c = container(docs)
    assert c["args"] == ["--log-level=DEBUG"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 9091}
    (port,) = one(docs, "Service")["spec"]["ports"]
    assert port == {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}


def test_image_settings(helm: Helm) -> None:
    c = container(helm.template({"image": {"repository": "reg.example/mso", "tag": "9.9.9"}}))
    assert c["image"] == "reg.example/mso:9.9.9"
    digest = "sha256:" + "a" * 64
    c = container(helm.template({"image": {"digest": digest, "pullPolicy": "Always"}}))
    assert c["image"] == f"microservice-operator@{digest}"
    assert c["imagePullPolicy"] == "Always"


def test_resources_and_security_contexts_are_values(helm: Helm) -> None:
    docs = helm.template(
        {
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
            "podSecurityContext": {"runAsNonRoot": True, "fsGroup": 2000},
            "securityContext": {"readOnlyRootFilesystem": True},
        }
    )
    c = container(docs)
    # Helm merges maps with the defaults: the limits stay unless set to null.
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 2000
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_existing_service_account(helm: Helm) -> None:
    docs = helm.template({"serviceAccount": {"create": False, "name": "mso-sa"}})
    assert "ServiceAccount" not in {d["kind"] for d in docs}
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mso-sa"
    for doc in docs:
        if doc["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            assert doc["subjects"][0]["name"] == "mso-sa"
    assert "serviceAccount.name is required" in helm.template_error(
        {"serviceAccount": {"create": False}}
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces", id="ns"),
        pytest.param({"watchNamespaces": ["a", "a"]}, "watchNamespaces", id="duplicate-ns"),
        pytest.param({"replicas": -1}, "replicas", id="replicas"),
        pytest.param({"operator": {"logLevel": "chatty"}}, "logLevel", id="log-level"),
        pytest.param({"operator": {"logFormat": "xml"}}, "logFormat", id="log-format"),
        pytest.param({"operator": {"workers": 0}}, "workers", id="workers"),
        pytest.param({"operator": {"metricsPort": 0}}, "metricsPort", id="port"),
        pytest.param({"replica": 2}, "replica", id="typo"),
        pytest.param({"podDisruptionBudget": {"enabled": "maybe"}}, "enabled", id="pdb"),
    ],
)
def test_invalid_values_are_refused(helm: Helm, values: dict[str, Any], message: str) -> None:
    assert message in helm.template_error(values)
