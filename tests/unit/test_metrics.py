"""Unit tests of the operator's Prometheus metrics (microservice_operator.metrics).

The exposition is parsed back with prometheus_client's own parser, so the tests see what
a scrape sees. `promtool check metrics` runs when promtool is installed (tools/prometheus.sh
installs it; MSO_REQUIRE_PROMETHEUS=1 turns the skip into a failure, for CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from microservice_operator import metrics as metrics_module
from microservice_operator.metrics import (
    FAILOVER_REASONS,
    KUBE_RESOURCES,
    KUBE_VERBS,
    RECONCILE_ERROR_REASONS,
    REPLICA_STATES,
    ROLLBACK_REASONS,
    OperatorMetrics,
    error_reason,
)

Labels = frozenset[tuple[str, str]]
PER_MICROSERVICE = (
    "mso_microservice_replicas",
    "mso_microservice_healthy_ratio",
    "mso_microservice_ready",
    "mso_microservice_active_track",
    "mso_failovers_total",
    "mso_rollbacks_total",
    "mso_pod_remediations_total",
)


def samples(m: OperatorMetrics) -> dict[tuple[str, Labels], float]:
    """Every sample of the exposition, keyed by (sample name, labels)."""
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: OperatorMetrics, sample: str, /, **labels: str) -> float | None:
    return samples(m).get((sample, frozenset(labels.items())))


def series_of(m: OperatorMetrics, namespace: str, name: str) -> list[tuple[str, Labels]]:
    return [
        key for key in samples(m) if ("namespace", namespace) in key[1] and ("name", name) in key[1]
    ]


def observe(m: OperatorMetrics, namespace: str = "shop", name: str = "cart", **kw: object) -> None:
    args: dict[str, object] = {
        "desired": 3,
        "ready": 2,
        "available": 2,
        "unavailable": 1,
        "updated": 3,
        "healthy_ratio": 2 / 3,
        "ready_flag": True,
        "active_track": "primary",
    }
    args.update(kw)
    m.observe(namespace, name, **args)  # type: ignore[arg-type]


def promtool() -> str | None:
    """Path of promtool, or skip (fail under MSO_REQUIRE_PROMETHEUS=1) when missing."""
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if path:
        return path
    reason = "promtool is not installed: run tools/prometheus.sh (Debian package prometheus)"
    if os.environ.get("MSO_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)
    return None


@pytest.fixture
def m() -> OperatorMetrics:
    return OperatorMetrics()


# ------------------------------------------------------------------ gauges


def test_observe_sets_every_gauge(m: OperatorMetrics) -> None:
    observe(m, active_track="standby", ready_flag=False)

    ms = {"namespace": "shop", "name": "cart"}
    expected = {"desired": 3, "ready": 2, "available": 2, "unavailable": 1, "updated": 3}
    for state, want in expected.items():
        assert value(m, "mso_microservice_replicas", **ms, state=state) == want
    assert value(m, "mso_microservice_healthy_ratio", **ms) == pytest.approx(2 / 3)
    assert value(m, "mso_microservice_ready", **ms) == 0
    assert value(m, "mso_microservice_active_track", **ms, track="standby") == 1
    assert value(m, "mso_microservice_active_track", **ms, track="primary") == 0


def test_observe_follows_changes(m: OperatorMetrics) -> None:
    observe(m, ready=0, ready_flag=False, active_track="standby", healthy_ratio=0.0)
    observe(m, ready=3, ready_flag=True, active_track="primary", healthy_ratio=1.0)

    ms = {"namespace": "shop", "name": "cart"}
    assert value(m, "mso_microservice_replicas", **ms, state="ready") == 3
    assert value(m, "mso_microservice_healthy_ratio", **ms) == 1
    assert value(m, "mso_microservice_ready", **ms) == 1
    assert value(m, "mso_microservice_active_track", **ms, track="primary") == 1
    assert value(m, "mso_microservice_active_track", **ms, track="standby") == 0


def test_observe_counts_missing_status_fields_as_zero(m: OperatorMetrics) -> None:
    # The Deployment status omits zero fields; the handler may pass them through as None.
    observe(m, ready=None, available=None, unavailable=None, updated=None)
    for state in ("ready", "available", "unavailable", "updated"):
        assert (
            value(m, "mso_microservice_replicas", namespace="shop", name="cart", state=state) == 0
        )


def test_observe_rejects_an_unknown_track(m: OperatorMetrics) -> None:
    with pytest.raises(ValueError, match="active_track"):
        observe(m, active_track="canary")
    assert series_of(m, "shop", "cart") == []


def test_microservices_are_kept_apart(m: OperatorMetrics) -> None:
    observe(m, "shop", "cart", desired=3)
    observe(m, "shop", "pay", desired=5)
    observe(m, "blog", "cart", desired=1)
    get = value
    assert get(m, "mso_microservice_replicas", namespace="shop", name="cart", state="desired") == 3
    assert get(m, "mso_microservice_replicas", namespace="shop", name="pay", state="desired") == 5
    assert get(m, "mso_microservice_replicas", namespace="blog", name="cart", state="desired") == 1


# ------------------------------------------------------------------ counters


def test_counters_start_at_zero_on_first_observation(m: OperatorMetrics) -> None:
    # increase() cannot see a series born at 1: the first rollback would never alert.
    observe(m)
    ms = {"namespace": "shop", "name": "cart"}
    for reason in ROLLBACK_REASONS:
        assert value(m, "mso_rollbacks_total", **ms, reason=reason) == 0
    for reason in FAILOVER_REASONS:
        assert value(m, "mso_failovers_total", **ms, reason=reason) == 0
    assert value(m, "mso_pod_remediations_total", **ms) == 0


def test_counters_increment(m: OperatorMetrics) -> None:
    m.failover("shop", "cart", "PrimaryUnhealthy")
    m.failover("shop", "cart", "PrimaryUnhealthy")
    m.failover("shop", "cart", "PrimaryRecovered")
    m.rollback("shop", "cart", "ProgressDeadlineExceeded")
    m.remediation("shop", "cart")
    m.remediation("shop", "cart", count=2)

    ms = {"namespace": "shop", "name": "cart"}
    assert value(m, "mso_failovers_total", **ms, reason="PrimaryUnhealthy") == 2
    assert value(m, "mso_failovers_total", **ms, reason="PrimaryRecovered") == 1
    assert value(m, "mso_rollbacks_total", **ms, reason="ProgressDeadlineExceeded") == 1
    assert value(m, "mso_rollbacks_total", **ms, reason="CrashLoop") == 0
    assert value(m, "mso_pod_remediations_total", **ms) == 3


def test_remediation_count_must_not_be_negative(m: OperatorMetrics) -> None:
    with pytest.raises(ValueError, match="negative"):
        m.remediation("shop", "cart", count=-1)


def test_reasons_are_bounded(m: OperatorMetrics) -> None:
    # Free-form input (an exception message, a typo, a new code path) must not create
    # new series: unknown reasons fold into "Other", known ones match case-insensitively.
    for i in range(50):
        m.rollback("shop", "cart", f"image ghcr.io/acme/cart:{i} crashed")
        m.failover("shop", "cart", f"pod cart-{i} died")
        m.reconcile_error(f"HTTP {i}")
    m.rollback("shop", "cart", "crashloopbackoff")  # an alias
    m.failover("shop", "cart", "primaryrecovered")

    ms = {"namespace": "shop", "name": "cart"}
    assert value(m, "mso_rollbacks_total", **ms, reason="Other") == 50
    assert value(m, "mso_rollbacks_total", **ms, reason="CrashLoop") == 1
    assert value(m, "mso_failovers_total", **ms, reason="Other") == 50
    assert value(m, "mso_failovers_total", **ms, reason="PrimaryRecovered") == 1
    assert value(m, "mso_reconcile_errors_total", reason="Other") == 50
    seen = {
        (name, dict(labels)["reason"]) for name, labels in samples(m) if "reason" in dict(labels)
    }
    allowed = {
        "mso_rollbacks_total": ROLLBACK_REASONS,
        "mso_failovers_total": FAILOVER_REASONS,
        "mso_reconcile_errors_total": RECONCILE_ERROR_REASONS,
    }
    for name, reason in seen:
        assert reason in allowed[name], (name, reason)


def test_only_bounded_label_names(m: OperatorMetrics) -> None:
    observe(m)
    m.failover("shop", "cart", "StandbyRemoved")
    m.kube_request("get", "pods", 200)
    with m.time_reconcile():
        pass
    permitted = {"namespace", "name", "state", "track", "reason", "verb", "resource", "code"}
    permitted |= {"version", "le"}
    for name, labels in samples(m):
        if name.startswith("mso_"):
            assert {k for k, _ in labels} <= permitted, name


# ------------------------------------------------------------------ forget


def test_forget_removes_every_series_of_that_microservice_only(m: OperatorMetrics) -> None:
    for ns, name in (("shop", "cart"), ("shop", "pay"), ("blog", "cart")):
        observe(m, ns, name, active_track="standby")
        m.failover(ns, name, "PrimaryUnhealthy")
        m.rollback(ns, name, "CrashLoop")
        m.remediation(ns, name)
    before = samples(m)
    before_pay = {k: before[k] for k in series_of(m, "shop", "pay")}
    before_blog = {k: before[k] for k in series_of(m, "blog", "cart")}
    assert series_of(m, "shop", "cart")

    m.forget("shop", "cart")

    after = samples(m)
    assert series_of(m, "shop", "cart") == []
    # The others are untouched, value for value.
    assert {k: after[k] for k in before_pay} == before_pay
    assert {k: after[k] for k in before_blog} == before_blog
    # Every per-MicroService metric still exists for the others (nothing was cleared).
    names = {name for name, _ in after}
    assert set(PER_MICROSERVICE) <= names


def test_forget_of_an_unknown_microservice_is_a_no_op(m: OperatorMetrics) -> None:
    observe(m)
    before = samples(m)
    m.forget("shop", "never-seen")
    m.forget("shop", "never-seen")
    assert {k: v for k, v in samples(m).items() if k[0].startswith("mso_microservice")} == {
        k: v for k, v in before.items() if k[0].startswith("mso_microservice")
    }


def test_a_recreated_microservice_starts_from_zero(m: OperatorMetrics) -> None:
    observe(m)
    m.rollback("shop", "cart", "CrashLoop")
    m.forget("shop", "cart")
    observe(m)
    assert value(m, "mso_rollbacks_total", namespace="shop", name="cart", reason="CrashLoop") == 0


def test_tracked_and_retain(m: OperatorMetrics) -> None:
    observe(m, "shop", "cart")
    observe(m, "shop", "pay")
    m.rollback("blog", "post", "Other")  # counted before it was ever observed
    assert m.tracked() == {("shop", "cart"), ("shop", "pay"), ("blog", "post")}

    m.retain([("shop", "pay")])

    assert m.tracked() == {("shop", "pay")}
    assert series_of(m, "shop", "cart") == []
    assert series_of(m, "blog", "post") == []
    assert series_of(m, "shop", "pay")


def test_forget_and_observe_from_many_threads(m: OperatorMetrics) -> None:
    # kopf runs sync handlers in a thread pool: nothing may raise, and after the last
    # forget no series of that MicroService survives.
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(200):
                observe(m, "shop", f"svc-{i % 4}")
                m.rollback("shop", f"svc-{i % 4}", "Other")
                m.forget("shop", f"svc-{i % 4}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert m.tracked() == frozenset()
    assert not any(name in PER_MICROSERVICE for name, _ in samples(m))


# ------------------------------------------------------------------ operator metrics


def test_time_reconcile_observes_durations_also_on_error(m: OperatorMetrics) -> None:
    with m.time_reconcile():
        pass
    with pytest.raises(RuntimeError), m.time_reconcile():
        raise RuntimeError("boom")
    assert value(m, "mso_reconcile_duration_seconds_count") == 2
    assert value(m, "mso_reconcile_duration_seconds_bucket", le="+Inf") == 2
    total = value(m, "mso_reconcile_duration_seconds_sum")
    assert total is not None
    assert 0 <= total < 5


def test_reconcile_errors_all_exist_at_zero(m: OperatorMetrics) -> None:
    for reason in RECONCILE_ERROR_REASONS:
        assert value(m, "mso_reconcile_errors_total", reason=reason) == 0
    m.reconcile_error("Conflict")
    m.reconcile_error("timeout")
    assert value(m, "mso_reconcile_errors_total", reason="Conflict") == 1
    assert value(m, "mso_reconcile_errors_total", reason="Timeout") == 1


class _ApiError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class ValidationError(ValueError):
    """Stands in for pydantic's ValidationError (matched by name)."""


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_ApiError(409), "Conflict"),
        (_ApiError(504), "Timeout"),
        (_ApiError(403), "ApiError"),
        (_ApiError(500), "ApiError"),
        (TimeoutError(), "Timeout"),
        (ConnectionRefusedError(), "ApiError"),
        (ValidationError("bad"), "InvalidSpec"),
        (KeyError("x"), "Other"),
    ],
)
def test_error_reason_classifies_exceptions(exc: BaseException, reason: str) -> None:
    assert error_reason(exc) == reason
    m = OperatorMetrics(runtime=False)
    m.reconcile_error(exc)
    assert value(m, "mso_reconcile_errors_total", reason=reason) == 1


def test_error_reason_knows_pydantic_validation_errors() -> None:
    from pydantic import BaseModel  # noqa: PLC0415 - only this test needs it

    class Spec(BaseModel):
        replicas: int

    with pytest.raises(Exception) as info:  # pydantic's ValidationError
        Spec.model_validate({"replicas": "many"})
    assert error_reason(info.value) == "InvalidSpec"


def test_kube_requests_are_counted_with_bounded_labels(m: OperatorMetrics) -> None:
    m.kube_request("patch", "deployments", 200)
    m.kube_request("patch", "Deployment", "200")  # a kind is folded onto its plural
    m.kube_request("get", "pods", 404)
    m.kube_request("list", "microservices", None)  # no response at all
    m.kube_request("proxy", "secrets", 999)

    def get(verb: str, resource: str, code: str) -> float | None:
        return value(m, "mso_kube_requests_total", verb=verb, resource=resource, code=code)

    assert get("patch", "deployments", "200") == 2
    assert get("get", "pods", "404") == 1
    assert get("list", "microservices", "error") == 1
    assert get("other", "other", "error") == 1
    for name, labels in samples(m):
        if name == "mso_kube_requests_total":
            lab = dict(labels)
            assert lab["verb"] in KUBE_VERBS
            assert lab["resource"] in KUBE_RESOURCES
            assert lab["code"] == "error" or lab["code"].isdigit()


def test_counting_goes_on_past_the_bound_of_the_cached_children(m: OperatorMetrics) -> None:
    """The labelled children are cached by raw arguments, which are unbounded: past the
    cache's bound every request and event is still counted, on its bounded labels."""
    for i in range(1500):
        m.kube_request(f"verb-{i}", "pods", 200)
        m.watch_event("pods", f"TYPE-{i}")
    m.kube_request("get", "pods", 200)
    assert value(m, "mso_kube_requests_total", verb="other", resource="pods", code="200") == 1500
    assert value(m, "mso_kube_requests_total", verb="get", resource="pods", code="200") == 1
    assert value(m, "mso_watch_events_total", resource="pods", type="other") == 1500


def test_analysis_results_by_outcome_and_forgotten_with_the_microservice(
    m: OperatorMetrics,
) -> None:
    m.analysis_result("ns", "shop", "errors", "primary", "Inconclusive", None)
    m.analysis_result("ns", "shop", "errors", "primary", "Failed", 0.2)
    m.analysis_result("ns", "shop", "errors", "primary", "Failed", 0.3)
    labels = {"namespace": "ns", "name": "shop", "check": "errors", "target": "primary"}

    def results(outcome: str) -> float | None:
        return value(m, "mso_analysis_results_total", **labels, outcome=outcome)

    # Every outcome exists from the first result: increase() sees the first failure.
    assert (results("Passed"), results("Failed"), results("Inconclusive")) == (0, 2, 1)
    assert value(m, "mso_analysis_outcome", **labels, outcome="Failed") == 1
    assert value(m, "mso_analysis_outcome", **labels, outcome="Inconclusive") == 0
    assert value(m, "mso_analysis_value", **labels) == 0.3
    m.analysis_result("ns", "shop", "errors", "primary", "Inconclusive", None)
    assert value(m, "mso_analysis_value", **labels) is None  # no stale value
    with pytest.raises(ValueError, match="outcome"):
        m.analysis_result("ns", "shop", "errors", "primary", "Maybe", None)
    m.forget("ns", "shop")
    assert not [n for n, _ in samples(m) if n.startswith("mso_analysis_")]


def test_build_info(m: OperatorMetrics) -> None:
    infos = [(n, dict(labels)) for n, labels in samples(m) if n == "mso_build_info"]
    assert len(infos) == 1
    assert infos[0][1]["version"]
    assert value(m, "mso_build_info", version=infos[0][1]["version"]) == 1


# ------------------------------------------------------------------ registry and exposition


def test_own_registry_not_the_global_default(m: OperatorMetrics) -> None:
    assert m.registry is not prometheus_client.REGISTRY
    assert metrics_module.METRICS.registry is not prometheus_client.REGISTRY
    observe(m)
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "mso_" not in global_text


def test_exposition_holds_only_documented_families(m: OperatorMetrics) -> None:
    observe(m)
    families = {f.name for f in text_string_to_metric_families(m.render().decode())}
    mso = {f for f in families if f.startswith("mso_")}
    assert mso == {
        "mso_microservice_replicas",
        "mso_microservice_healthy_ratio",
        "mso_microservice_ready",
        "mso_microservice_active_track",
        "mso_failovers",
        "mso_rollbacks",
        "mso_pod_remediations",
        "mso_reconcile_duration_seconds",
        "mso_reconcile_errors",
        "mso_reconciles_skipped",
        "mso_kube_requests",
        "mso_watch_events",
        "mso_build_info",
        "mso_analysis_results",
        "mso_analysis_outcome",
        "mso_canary_step",
        "mso_analysis_value",
    }
    assert all(f.startswith(("mso_", "process_", "python_")) for f in families), families
    # No per-series *_created gauges: they would double the series of every counter.
    assert not [f for f in families if f.endswith("_created")]
    assert REPLICA_STATES == ("desired", "ready", "available", "unavailable", "updated")


def test_module_level_render_uses_the_default_instance() -> None:
    # Compare the metric families, not the bytes: process CPU/memory values move
    # between two renders.
    def families(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if line.startswith(b"# HELP")]

    assert families(metrics_module.render()) == families(metrics_module.METRICS.render())


def fully_populated() -> OperatorMetrics:
    m = OperatorMetrics()
    observe(m, "shop", "cart", active_track="standby", ready_flag=False)
    observe(m, "blog", "post")
    m.failover("shop", "cart", "PrimaryUnhealthy")
    m.rollback("shop", "cart", "CrashLoop")
    m.remediation("shop", "cart")
    m.reconcile_error("ApiError")
    m.kube_request("apply", "deployments", 200)
    with m.time_reconcile():
        pass
    return m


def test_promtool_check_metrics_is_clean() -> None:
    tool = promtool()
    assert tool is not None
    result = subprocess.run(
        [tool, "check", "metrics"],
        input=fully_populated().render(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    # promtool prints lint problems even when it exits 0 with some versions.
    assert result.stdout.strip() == b"", result.stdout.decode()


# ------------------------------------------------------------------ serving


@pytest.fixture
def server(m: OperatorMetrics) -> Iterator[metrics_module.MetricsServer]:
    srv = m.serve(0, host="127.0.0.1")
    try:
        yield srv
    finally:
        srv.stop()


def test_serve_answers_metrics_and_stops(
    m: OperatorMetrics, server: metrics_module.MetricsServer
) -> None:
    observe(m, desired=7)
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"

    with urllib.request.urlopen(server.url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        body = resp.read().decode()
    assert 'mso_microservice_replicas{name="cart",namespace="shop",state="desired"} 7.0' in body

    # The exposition follows later updates without restarting the server.
    observe(m, desired=9)
    with urllib.request.urlopen(server.url, timeout=10) as resp:
        assert 'state="desired"} 9.0' in resp.read().decode()

    server.stop()
    server.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=5)


def test_serve_as_context_manager_releases_the_port(m: OperatorMetrics) -> None:
    with m.serve(0, host="127.0.0.1") as srv:
        port = srv.port
        with urllib.request.urlopen(srv.url, timeout=10) as resp:
            assert resp.status == 200
    # The same port can be bound again at once.
    with m.serve(port, host="127.0.0.1") as again:
        assert again.port == port


# ------------------------------------------------------------------ streamed exposition


def many(count: int) -> OperatorMetrics:
    """``count`` MicroServices observed, some with a rollback: more than one
    :data:`metrics_module.BATCH`, so each per-MicroService family comes in pieces
    (no process metrics: they change from one scrape to the next)."""
    m = OperatorMetrics(runtime=False)
    observe(m, "shop", "cart", active_track="standby", ready_flag=False)
    observe(m, "blog", "post")
    m.failover("shop", "cart", "PrimaryUnhealthy")
    for i in range(count):
        observe(m, "fleet", f"svc-{i}", desired=i)
        if i % 7 == 0:
            m.rollback("fleet", f"svc-{i}", "CrashLoop")
    return m


def test_a_family_in_pieces_is_one_family_to_the_parsers() -> None:
    count = 2 * metrics_module.BATCH + 17
    m = many(count)
    text = m.render().decode()
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), "a family's HELP/TYPE repeated"
    assert text.count("# TYPE mso_microservice_replicas gauge") == 1
    got = samples(m)
    assert len([k for k in got if k[0] == "mso_microservice_ready"]) == count + 2  # shop, blog
    assert (
        got[
            (
                "mso_microservice_replicas",
                frozenset(
                    {("namespace", "fleet"), ("name", f"svc-{count - 1}"), ("state", "desired")}
                ),
            )
        ]
        == count - 1
    )
    assert (
        got[
            (
                "mso_rollbacks_total",
                frozenset({("namespace", "fleet"), ("name", "svc-1001"), ("reason", "CrashLoop")}),
            )
        ]
        == 1.0
    )  # 1001 = 7 * 143, in the third piece

    # What the library would write whole, line for line (its own encoder, in pieces).
    whole = prometheus_client.generate_latest(_Whole(m)).decode()
    assert text.splitlines() == whole.splitlines()


class _Whole:
    """The registry's families with each family's pieces joined into one."""

    def __init__(self, m: OperatorMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[prometheus_client.Metric]:
        joined: dict[str, prometheus_client.Metric] = {}
        for metric in self.m.registry.collect():
            if metric.name in joined:
                joined[metric.name].samples.extend(metric.samples)
            else:
                joined[metric.name] = metric
        return iter(joined.values())


def test_openmetrics_pieces_parse_strictly_and_end_once() -> None:
    from prometheus_client.openmetrics.parser import (  # noqa: PLC0415
        text_string_to_metric_families as openmetrics_families,
    )

    m = many(metrics_module.BATCH + 3)
    content_type, pieces = metrics_module.exposition(
        m.registry, "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    text = b"".join(pieces).decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    # The OpenMetrics parser refuses a family that is interrupted or repeated.
    families = list(openmetrics_families(text))
    ready = next(f for f in families if f.name == "mso_microservice_ready")
    assert len(ready.samples) == metrics_module.BATCH + 3 + 2


def test_served_gzipped_and_filtered_by_name(
    m: OperatorMetrics, server: metrics_module.MetricsServer
) -> None:
    import gzip  # noqa: PLC0415

    for i in range(metrics_module.BATCH + 1):
        observe(m, "fleet", f"svc-{i}")
    request = urllib.request.Request(server.url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(resp.read())

    def steady(text: bytes) -> list[bytes]:  # without the runtime's own changing figures
        return [line for line in text.splitlines() if not re.search(rb"process_|python_gc", line)]

    assert steady(body) == steady(m.render())

    url = f"{server.url}?name[]=mso_microservice_ready&name[]=mso_build_info"
    with urllib.request.urlopen(url, timeout=10) as resp:
        families = list(text_string_to_metric_families(resp.read().decode()))
    assert {f.name for f in families} == {"mso_microservice_ready", "mso_build_info"}
    assert len(families[-1].samples + families[0].samples) == metrics_module.BATCH + 2


class _Breaks:
    """A collector that fails after its first family, as a bug half-way would."""

    def collect(self) -> Iterator[prometheus_client.Metric]:
        yield prometheus_client.core.GaugeMetricFamily("mso_test_first", "first", value=1)
        raise RuntimeError("broken collector")


def test_a_scrape_that_fails_half_way_is_a_failed_scrape(
    m: OperatorMetrics, server: metrics_module.MetricsServer
) -> None:
    import http.client  # noqa: PLC0415

    with urllib.request.urlopen(server.url, timeout=10) as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        whole = resp.read()
    assert whole.endswith(b"\n") and b"mso_build_info" in whole

    m.registry.register(_Breaks())  # type: ignore[arg-type]
    with urllib.request.urlopen(server.url, timeout=10) as resp:
        assert resp.status == 200  # sent before the failure
        with pytest.raises(http.client.IncompleteRead):
            resp.read()  # no last chunk: not mistaken for a complete exposition


def test_watch_events_are_counted_by_resource_and_type() -> None:
    m = OperatorMetrics()
    m.watch_event("pods", "MODIFIED")
    m.watch_event("pods", "MODIFIED")
    m.watch_event("Deployment", "ADDED")
    m.watch_event("pods", "SURPRISE")  # never a new series per unknown value
    assert value(m, "mso_watch_events_total", resource="pods", type="MODIFIED") == 2
    assert value(m, "mso_watch_events_total", resource="deployments", type="ADDED") == 1
    assert value(m, "mso_watch_events_total", resource="pods", type="other") == 1
