"""A real Prometheus scrapes metrics.serve(): the helper works, and what operators'
dashboards and alerts rely on holds end to end (no Kubernetes needed).

- values set with OperatorMetrics.observe reach PromQL, and follow changes;
- the MicroService's `namespace` label survives a target that carries its own
  `namespace` (honor_labels, as the ServiceMonitor configures);
- forget() makes the series disappear from Prometheus (stale at the next scrape);
- the shipped rules load, and MicroServiceRolledBack fires on the first rollback;
- `promtool check metrics` on a live scrape is clean.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from microservice_operator.metrics import MetricsServer, OperatorMetrics
from tests.integration.helpers import wait_for
from tests.integration.prometheus import (
    JOB,
    RULES,
    Prometheus,
    check_metrics,
    labels_of,
    scrape,
)

READY = 'mso_microservice_replicas{namespace="shop",name="cart",state="ready"}'


def observe(m: OperatorMetrics, name: str, *, ready: int, track: str = "primary") -> None:
    m.observe(
        "shop",
        name,
        desired=3,
        ready=ready,
        available=ready,
        unavailable=3 - ready,
        updated=3,
        healthy_ratio=ready / 3,
        ready_flag=ready >= 2,
        active_track=track,
    )


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def server(metrics: OperatorMetrics) -> Iterator[MetricsServer]:
    with metrics.serve(0, host="127.0.0.1") as srv:
        yield srv


@pytest.fixture
def prom(server: MetricsServer) -> Iterator[Prometheus]:
    # The namespace target label is what Kubernetes service discovery attaches.
    with Prometheus(
        [f"127.0.0.1:{server.port}"],
        target_labels={"namespace": "mso-system"},
        rule_files=[RULES],
    ) as p:
        p.wait_for_targets()
        yield p


def test_scraped_values_follow_observations_and_forget(
    metrics: OperatorMetrics, prom: Prometheus
) -> None:
    observe(metrics, "cart", ready=3)
    observe(metrics, "pay", ready=3)
    prom.wait_for_value(READY, 3)
    assert prom.values('mso_microservice_replicas{namespace="shop",name="cart"}', "state") == {
        ("desired",): 3,
        ("ready",): 3,
        ("available",): 3,
        ("unavailable",): 0,
        ("updated",): 3,
    }
    # honor_labels: per-MicroService series keep their namespace, and the operator's
    # own series get the target's.
    # Polled: one scrape slower than its 1 s timeout reads as down (and stale) until the next.
    prom.wait_for_query(f'up{{job="{JOB}"}} == 1', bool)
    (build,) = prom.wait_for_query("mso_build_info", lambda r: len(r) == 1)
    assert labels_of(build)["namespace"] == "mso-system"
    assert not prom.query("{exported_namespace!=''}")

    observe(metrics, "cart", ready=1, track="standby")
    prom.wait_for_value(READY, 1)
    prom.wait_for_value(
        'mso_microservice_active_track{namespace="shop",name="cart",track="standby"}', 1
    )

    metrics.forget("shop", "cart")
    prom.wait_for_absent('{namespace="shop",name="cart"}')
    # The other MicroService is still there.
    assert prom.values('mso_microservice_ready{namespace="shop"}', "name") == {("pay",): 1}


def test_rules_load_and_first_rollback_alerts(metrics: OperatorMetrics, prom: Prometheus) -> None:
    groups = prom.rule_groups()
    assert {g["name"] for g in groups} == {
        "microservice-operator.microservices",
        "microservice-operator.operator",
    }
    assert all(r["health"] != "err" for g in groups for r in g["rules"]), groups

    observe(metrics, "cart", ready=3)
    # The counter must be scraped at 0 before the rollback, or increase() sees nothing.
    prom.wait_for_value('mso_rollbacks_total{namespace="shop",name="cart",reason="CrashLoop"}', 0)
    metrics.rollback("shop", "cart", "CrashLoop")

    expected = {
        "alertname": "MicroServiceRolledBack",
        "namespace": "shop",
        "name": "cart",
        "reason": "CrashLoop",
        "severity": "warning",
    }
    wait_for(
        lambda: any(a["labels"] == expected and a["state"] == "firing" for a in prom.alerts()),
        timeout=30,
        message="MicroServiceRolledBack to fire",
    )


def test_promtool_check_metrics_on_a_live_scrape(
    metrics: OperatorMetrics, server: MetricsServer
) -> None:
    observe(metrics, "cart", ready=2)
    metrics.failover("shop", "cart", "PrimaryUnhealthy")
    metrics.rollback("shop", "cart", "ProgressDeadlineExceeded")
    metrics.remediation("shop", "cart")
    metrics.reconcile_error("ApiError")
    metrics.kube_request("apply", "deployments", 200)
    with metrics.time_reconcile():
        pass
    assert check_metrics(scrape(server.url)) == ""
