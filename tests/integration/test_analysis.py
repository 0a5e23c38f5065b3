"""SLO analysis against a real Prometheus, on the real control plane.

A synthetic exporter (tests/integration/slo_exporter.py) serves request counters and a
latency histogram per namespace, name, track and revision, with the error ratio the
test sets; a real Prometheus scrapes it every second; the operator, started with
``--prometheus-url``, queries that Prometheus with the MicroService's checks. Each
test runs its own operator on a namespace the session's operator does not select.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.fixtures import fresh_namespace
from tests.integration.helpers import holds_for, wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.operator_proc import OperatorProcess
from tests.integration.prometheus import Prometheus
from tests.integration.slo_exporter import SloExporter
from tests.integration.test_failover import events, wait_events
from tests.integration.test_reconcile import apply_ms, cond, deployment, get_ms, wait_condition

pytestmark = pytest.mark.integration

INTERVAL = 2
LIMIT = 3
SELECT = 'namespace="{{ namespace }}",name="{{ name }}",revision="{{ revision }}"'
ERROR_RATIO = {
    "name": "error-ratio",
    "query": f'sum(rate(http_requests_total{{{SELECT},code="500"}}[5s]))'
    f" / sum(rate(http_requests_total{{{SELECT}}}[5s]))",
    "threshold": 0.05,
    "intervalSeconds": INTERVAL,
    "failureLimit": LIMIT,
}
P99 = {
    "name": "p99-latency",
    "query": "histogram_quantile(0.99, sum by (le) "
    f"(rate(http_request_duration_seconds_bucket{{{SELECT}}}[5s])))",
    "threshold": 0.5,
    "intervalSeconds": INTERVAL,
    "failureLimit": LIMIT,
}


@pytest.fixture(scope="module")
def exporter() -> Iterator[SloExporter]:
    with SloExporter() as e:
        yield e


@pytest.fixture
def prom(exporter: SloExporter) -> Iterator[Prometheus]:
    with Prometheus([exporter.address], interval="1s") as p:
        p.wait_for_targets()
        yield p


@pytest.fixture
def own_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A namespace only this test's operator watches (no test-worker label)."""
    labels = {"app.kubernetes.io/managed-by": "pytest"}
    with fresh_namespace(kube_api, f"slo-{uuid.uuid4().hex[:8]}", labels) as name:
        yield name


@pytest.fixture
def slo_operator(
    kubeconfig: Path, crd: Path, own_namespace: str, prom: Prometheus, tmp_path: Path
) -> Iterator[OperatorProcess]:
    op = OperatorProcess(
        str(kubeconfig), tmp_path, "--namespace", own_namespace, "--prometheus-url", prom.url
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()


def web(image: str, **failover: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {"name": "web"},
        "spec": {
            "image": image,
            "replicas": 2,
            "ports": [{"containerPort": 5000, "servicePort": 80}],
            "failover": {
                "progressDeadlineSeconds": 300,
                "analysis": {"checks": [ERROR_RATIO, P99]},
                **failover,
            },
        },
    }


def desired_revision(api: client.ApiClient, ns: str, image: str) -> str:
    """The revision the spec with ``image`` asks for, once the operator reported it."""

    def found() -> str | None:
        ms = get_ms(api, ns, "web")
        status = ms.get("status") or {}
        if (
            ms["spec"]["image"] != image
            or status.get("observedGeneration") != ms["metadata"]["generation"]
        ):
            return None
        rev: str | None = status.get("desiredRevision")
        return rev

    return wait_for(found, timeout=30, message=f"desired revision of {image}")


def proven(api: client.ApiClient, ns: str, revision: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (ms := get_ms(api, ns, "web"))
            and (ms.get("status") or {}).get("lastKnownGoodRevision") == revision
            and ms
        ),
        timeout=timeout,
        message=f"revision {revision} proven",
    )


def release_v1(
    kubeconfig: Path, api: client.ApiClient, ns: str, exporter: SloExporter, **failover: Any
) -> str:
    """hello:1, serving well, proven by its checks."""
    apply_ms(kubeconfig, ns, web("hello:1", **failover))
    v1 = desired_revision(api, ns, "hello:1")
    exporter.set(ns, "web", "primary", v1, rps=20, error_ratio=0.0, latency_seconds=0.02)
    ms = proven(api, ns, v1)
    assert cond(ms, "Analysis")["status"] == "True"  # type: ignore[index]
    return v1


def test_a_release_failing_its_error_ratio_is_rolled_back_after_the_limit_never_before(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    own_namespace: str,
    exporter: SloExporter,
    slo_operator: OperatorProcess,
) -> None:
    ns = own_namespace
    # Until its checks pass, a healthy first release is analysed, not proven.
    apply_ms(kubeconfig, ns, web("hello:1"))
    v1 = desired_revision(kube_api, ns, "hello:1")
    ms = wait_condition(kube_api, ns, "web", "Progressing", reason="Analyzing", timeout=60)
    assert "lastKnownGoodRevision" not in ms["status"]
    exporter.set(ns, "web", "primary", v1, rps=20, error_ratio=0.0, latency_seconds=0.02)
    ms = proven(kube_api, ns, v1)
    assert cond(ms, "Progressing")["reason"] == "RolloutComplete"  # type: ignore[index]
    assert wait_events(kube_api, ns, "web", "RevisionHealthy")

    # v2 answers every readiness probe but fails 40 % of its requests.
    apply_ms(kubeconfig, ns, web("hello:2"))
    v2 = desired_revision(kube_api, ns, "hello:2")
    exporter.set(ns, "web", "primary", v2, rps=20, error_ratio=0.4, latency_seconds=0.02)
    first_failure: dict[str, Any] = {}

    def rolled_back() -> dict[str, Any] | None:
        ms = get_ms(kube_api, ns, "web")
        for a in ms["status"].get("analysis") or []:
            if a["revision"] == v2 and a["outcome"] == "Failed" and not first_failure:
                first_failure.update(a)
        c = cond(ms, "RolledBack")
        return ms if c is not None and c["status"] == "True" else None

    ms = wait_for(rolled_back, timeout=60, interval=0.2, message="v2 rolled back")
    q = ms["status"]["quarantine"]
    assert (q["revision"], q["reason"]) == (v2, "AnalysisFailed")
    # The measured ratio, as Prometheus computed it: the exporter counts whole requests
    # (20 per second, the fraction carried), so an early rate() window of ~50 requests
    # can read 20/51 = 0.392 instead of 0.4, and one with a scrape missed under load
    # (~20 requests) 8/21 = 0.381 or 4/11 = 0.364: still eight times the threshold.
    measured = re.search(r"error-ratio = ([0-9.]+)", q["message"])
    assert measured is not None and float(measured.group(1)) == pytest.approx(0.4, abs=0.05), q
    assert "above the threshold 0.05" in q["message"]
    assert f"{LIMIT}/{LIMIT} in a row" in q["message"]  # after the limit, never before
    assert first_failure, "the failing check was reported before the rollback"
    assert first_failure["consecutiveFailures"] < LIMIT
    dep = deployment(kube_api, ns, "web")
    assert dep is not None and dep.spec.template.spec.containers[0].image == "hello:1"
    rolled = wait_events(kube_api, ns, "web", "RolledBack")
    assert rolled and "error-ratio" in rolled[0].message
    metrics = slo_operator.scrape()
    assert (
        sum(
            v
            for (n, labels), v in metrics.items()
            if n == "mso_rollbacks_total" and dict(labels).get("reason") == "AnalysisFailed"
        )
        == 1
    )


def test_prometheus_down_mid_rollout_is_inconclusive_and_never_a_rollback(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    own_namespace: str,
    exporter: SloExporter,
    prom: Prometheus,
    slo_operator: OperatorProcess,
) -> None:
    ns = own_namespace
    release_v1(kubeconfig, kube_api, ns, exporter)
    prom.stop(keep_workdir=True)
    apply_ms(kubeconfig, ns, web("hello:2"))
    v2 = desired_revision(kube_api, ns, "hello:2")
    exporter.set(ns, "web", "primary", v2, rps=20, error_ratio=0.4, latency_seconds=0.02)
    ms = wait_condition(kube_api, ns, "web", "Analysis", reason="Inconclusive", timeout=30)
    c = cond(ms, "Analysis")
    assert c is not None and c["status"] == "Unknown" and "unreachable" in c["message"], c

    def not_rolled_back() -> bool:
        ms = get_ms(kube_api, ns, "web")
        dep = deployment(kube_api, ns, "web")
        assert dep is not None and dep.spec.template.spec.containers[0].image == "hello:2"
        return cond(ms, "RolledBack") is None and "lastKnownGoodRevision" in ms["status"]

    # Rolled out (under a loaded control plane that takes a while), the release waits
    # for its analysis; then, many times the failure limit: missing data is not failure.
    wait_condition(kube_api, ns, "web", "Progressing", reason="Analyzing", timeout=90)
    holds_for(INTERVAL * LIMIT * 3, not_rolled_back)
    ms = get_ms(kube_api, ns, "web")
    assert ms["status"]["lastKnownGoodRevision"] != v2  # not proven either
    assert cond(ms, "Progressing")["reason"] == "Analyzing"  # type: ignore[index]
    inconclusive = sum(
        v
        for (n, labels), v in slo_operator.scrape().items()
        if n == "mso_analysis_results_total" and dict(labels).get("outcome") == "Inconclusive"
    )
    assert inconclusive >= LIMIT

    # Prometheus back: the bad release is now seen failing, and rolled back.
    prom.start(port=prom.port)
    ms = wait_condition(kube_api, ns, "web", "RolledBack", status="True", timeout=60)
    assert ms["status"]["quarantine"]["reason"] == "AnalysisFailed"


def test_a_primary_breaching_its_slo_fails_over_to_the_standby_and_back(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    own_namespace: str,
    exporter: SloExporter,
    slo_operator: OperatorProcess,
) -> None:
    ns = own_namespace
    failover = {
        "failoverAfterSeconds": 4,
        "failbackAfterSeconds": 6,
        "podUnhealthySeconds": 0,
        "standby": {"replicas": 2},
    }
    v1 = release_v1(kubeconfig, kube_api, ns, exporter, **failover)
    core = client.CoreV1Api(kube_api)

    def track() -> str:
        return str(core.read_namespaced_service("web", ns).spec.selector.get("mso.dev/track"))

    wait_for(
        lambda: (d := deployment(kube_api, ns, "web-standby")) and d.status.ready_replicas == 2,
        timeout=60,
        message="warm standby ready",
    )
    # Under load the first release's pods can be slower than failoverAfterSeconds and
    # traffic goes to the standby meanwhile (something beats nothing): start on the
    # primary.
    wait_for(lambda: track() == "primary", timeout=60, message="traffic on the primary")
    wait_condition(kube_api, ns, "web", "FailedOver", status="False", timeout=30)
    # Every pod stays Ready; only the users see the errors.
    exporter.set(ns, "web", "primary", v1, error_ratio=0.3)
    breached = time.monotonic()
    wait_for(lambda: track() == "standby", timeout=40, message="traffic on the standby")
    assert time.monotonic() - breached >= 4 - 1  # not before failoverAfterSeconds
    # The reconcile that moved the Service writes status just after: wait for it.
    ms = wait_condition(kube_api, ns, "web", "FailedOver", status="True", timeout=15)
    c = cond(ms, "FailedOver")
    assert c is not None, ms
    assert "failing its analysis: error-ratio above the threshold 0.05" in c["message"], c
    # (Under load the first release may have failed over while starting, too.)
    switched = wait_for(
        lambda: [e for e in events(kube_api, ns, "web", "FailedOver") if "analysis" in e.message],
        timeout=15,
        message="the FailedOver Event",
    )
    assert any("failing its analysis" in e.message for e in switched), switched
    assert ms["status"].get("lastKnownGoodRevision") == v1  # a proven release: no rollback
    assert cond(ms, "RolledBack") is None

    exporter.set(ns, "web", "primary", v1, error_ratio=0.0)
    healed = time.monotonic()
    wait_for(lambda: track() == "primary", timeout=60, message="traffic back on the primary")
    assert time.monotonic() - healed >= 6 - 1  # failbackAfterSeconds of passing checks
    ms = wait_condition(kube_api, ns, "web", "FailedOver", status="False", timeout=30)
    assert cond(ms, "Analysis")["status"] == "True"  # type: ignore[index]
    failovers = {
        dict(labels).get("reason"): v
        for (n, labels), v in slo_operator.scrape().items()
        if n == "mso_failovers_total"
    }
    assert failovers.get("AnalysisFailed") == 1


CANARY = {"steps": [{"replicas": 1, "pauseSeconds": 3}, {"percent": 100, "pauseSeconds": 3}]}


def with_canary(image: str) -> dict[str, Any]:
    ms = web(image)
    ms["spec"]["strategy"] = {"canary": CANARY}
    return ms


def test_a_good_canary_is_promoted_through_every_step(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    own_namespace: str,
    exporter: SloExporter,
    slo_operator: OperatorProcess,
) -> None:
    ns = own_namespace
    apply_ms(kubeconfig, ns, with_canary("hello:1"))
    v1 = desired_revision(kube_api, ns, "hello:1")
    exporter.set(ns, "web", "primary", v1, rps=20, error_ratio=0.0, latency_seconds=0.02)
    proven(kube_api, ns, v1)  # the first release has nothing to canary against
    assert deployment(kube_api, ns, "web-canary") is None

    apply_ms(kubeconfig, ns, with_canary("hello:2"))
    v2 = desired_revision(kube_api, ns, "hello:2")
    exporter.set(ns, "web", "primary", v2, rps=20, error_ratio=0.0, latency_seconds=0.02)
    steps: dict[str, int] = {}  # step -> canary replicas seen
    images: set[str] = set()

    def promoted() -> bool:
        ms = get_ms(kube_api, ns, "web")
        canary = ms["status"].get("canary")
        if canary:
            steps[canary["step"]] = canary["replicas"]
        dep = deployment(kube_api, ns, "web")
        assert dep is not None
        images.add(dep.spec.template.spec.containers[0].image)
        return bool(ms["status"].get("lastKnownGoodRevision") == v2)

    wait_for(
        lambda: promoted() or "1/2" in steps, timeout=60, interval=0.2, message="canary step 1/2"
    )
    # kubectl takes seconds on a loaded machine: step 2 may have begun meanwhile.
    listed = kubectl_get_ms(kubeconfig, ns)
    assert "CANARY" in listed and ("1/2" in listed or "2/2" in listed), listed
    assert images == {"hello:1"}  # the stable pods keep the last known good meanwhile
    wait_for(promoted, timeout=120, interval=0.2, message="v2 promoted and proven")
    # Each step seen had its size (polling may miss a step; the Events do not).
    assert "1/2" in steps and steps == {k: v for k, v in {"1/2": 1, "2/2": 2}.items() if k in steps}
    wait_events(kube_api, ns, "web", "CanaryPromoted")
    evs = events_all(kube_api, ns)
    reasons = [e.reason for e in evs]
    assert "CanaryStep" in reasons and "CanaryPromoted" in reasons
    started = [e.message for e in evs if e.reason == "CanaryStep" and "2/2" in e.message]
    assert any("step 2/2, 2 canary pods" in m for m in started), started
    wait_for(
        lambda: deployment(kube_api, ns, "web-canary") is None,
        timeout=30,
        message="canary Deployment removed",
    )
    dep = deployment(kube_api, ns, "web")
    assert dep is not None and dep.spec.template.spec.containers[0].image == "hello:2"
    ms = get_ms(kube_api, ns, "web")
    assert ms["status"].get("canary") is None and cond(ms, "RolledBack") is None


def test_a_canary_failing_its_checks_is_removed_and_quarantined(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    own_namespace: str,
    exporter: SloExporter,
    slo_operator: OperatorProcess,
) -> None:
    ns = own_namespace
    apply_ms(kubeconfig, ns, with_canary("hello:1"))
    v1 = desired_revision(kube_api, ns, "hello:1")
    exporter.set(ns, "web", "primary", v1, rps=20, error_ratio=0.0, latency_seconds=0.02)
    proven(kube_api, ns, v1)
    apply_ms(kubeconfig, ns, with_canary("hello:2"))
    v2 = desired_revision(kube_api, ns, "hello:2")
    exporter.set(ns, "web", "primary", v2, rps=20, error_ratio=0.4, latency_seconds=0.02)
    wait_for(
        lambda: deployment(kube_api, ns, "web-canary") is not None,
        timeout=30,
        message="canary Deployment created",
    )
    ms = wait_condition(kube_api, ns, "web", "RolledBack", status="True", timeout=60)
    q = ms["status"]["quarantine"]
    assert (q["revision"], q["reason"]) == (v2, "AnalysisFailed"), q
    assert ms["status"].get("canary") is None
    assert (ms["status"]["failoverState"] or {}).get("canaryStep") is None
    wait_for(
        lambda: deployment(kube_api, ns, "web-canary") is None,
        timeout=30,
        message="canary removed",
    )
    dep = deployment(kube_api, ns, "web")
    assert dep is not None and dep.spec.template.spec.containers[0].image == "hello:1"
    assert dep.metadata.generation == 1  # the stable Deployment was never touched


def kubectl_get_ms(kubeconfig: Path, ns: str) -> str:
    return kubectl(kubeconfig, "get", "ms", "-n", ns)


def events_all(api: client.ApiClient, ns: str) -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_event(ns).items)


def test_an_operator_restart_mid_analysis_only_delays_the_rollback(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    own_namespace: str,
    exporter: SloExporter,
    slo_operator: OperatorProcess,
) -> None:
    """The failure counts live in the running operator: a restart starts them afresh
    (status, which anyone may patch, is not evidence), so it can delay a rollback but
    never hasten it."""
    ns = own_namespace
    release_v1(kubeconfig, kube_api, ns, exporter)
    apply_ms(kubeconfig, ns, web("hello:2"))
    v2 = desired_revision(kube_api, ns, "hello:2")
    exporter.set(ns, "web", "primary", v2, rps=20, error_ratio=0.4, latency_seconds=0.02)

    def failures() -> int:
        ms = get_ms(kube_api, ns, "web")
        found = [
            a["consecutiveFailures"]
            for a in ms["status"].get("analysis") or []
            if a["revision"] == v2 and a["check"] == "error-ratio"
        ]
        return max(found, default=0)

    wait_for(lambda: failures() == LIMIT - 1, timeout=60, interval=0.1, message="2 failures")
    # Killed, not stopped: a graceful stop lets a reconcile in flight finish, and the
    # next check is due INTERVAL after the last, so the old process could roll back.
    slo_operator.kill()
    restarted = time.monotonic()
    slo_operator.start()
    ms = wait_condition(kube_api, ns, "web", "RolledBack", status="True", timeout=60)
    # LIMIT failures counted by the new process, the first one interval after it saw v2.
    assert time.monotonic() - restarted >= LIMIT * INTERVAL - 1
    assert f"{LIMIT}/{LIMIT} in a row" in ms["status"]["quarantine"]["message"]
