"""A real Prometheus scrapes the real operator running against the real control plane.

What a platform team's dashboards and alerts read must follow the cluster: desired
and ready replicas of a MicroService, the drop when its pods go unready, the
rollback counter, and no series left once the MicroService is deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.operator_proc import OperatorProcess
from tests.integration.prometheus import RULES, Prometheus, check_metrics, scrape
from tests.integration.test_failover import hello, pods, set_ready
from tests.integration.test_reconcile import apply_ms, wait_ready

pytestmark = pytest.mark.integration


@pytest.fixture
def prometheus(operator: OperatorProcess) -> Iterator[Prometheus]:
    with Prometheus([f"127.0.0.1:{operator.metrics_port}"], rule_files=[RULES]) as prom:
        prom.wait_for_targets()
        yield prom


def series(namespace: str, state: str) -> str:
    return f'mso_microservice_replicas{{namespace="{namespace}",name="web",state="{state}"}}'


def test_prometheus_sees_replica_health_follow_the_cluster(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    prometheus: Prometheus,
    local_cluster: Any,
) -> None:
    apply_ms(kubeconfig, namespace, hello(podUnhealthySeconds=0))
    wait_ready(kube_api, namespace, "web")
    prometheus.wait_for_value(series(namespace, "desired"), 3)
    prometheus.wait_for_value(series(namespace, "ready"), 3)
    prometheus.wait_for_value(f'mso_microservice_ready{{namespace="{namespace}",name="web"}}', 1)

    # The exposition the operator serves is clean for promtool.
    assert check_metrics(scrape(operator.metrics_url)) == ""

    # Two of three pods go unready: ready drops, the ratio and Ready flag follow.
    names = [p.metadata.name for p in pods(kube_api, namespace, "app.kubernetes.io/instance=web")]
    set_ready(kube_api, namespace, names[:2], False)
    prometheus.wait_for_value(series(namespace, "ready"), 1)
    prometheus.wait_for_value(series(namespace, "unavailable"), 2)
    prometheus.wait_for_value(f'mso_microservice_ready{{namespace="{namespace}",name="web"}}', 0)
    ratio = prometheus.values(
        f'mso_microservice_healthy_ratio{{namespace="{namespace}",name="web"}}'
    )
    assert list(ratio.values()) == [pytest.approx(1 / 3, rel=0.01)]
    set_ready(kube_api, namespace, names[:2], True)
    prometheus.wait_for_value(series(namespace, "ready"), 3)

    # Deleting the MicroService removes all of its series.
    kubectl(kubeconfig, "delete", "ms", "web", "-n", namespace, "--wait=true")
    prometheus.wait_for_absent(f'{{namespace="{namespace}",name="web"}}')


def test_a_rollback_is_counted_and_alerts(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    prometheus: Prometheus,
    local_cluster: Any,
) -> None:
    apply_ms(kubeconfig, namespace, hello())
    wait_ready(kube_api, namespace, "web")
    rollbacks = f'mso_rollbacks_total{{namespace="{namespace}",name="web",reason="CrashLoop"}}'
    prometheus.wait_for_value(rollbacks, 0)
    apply_ms(kubeconfig, namespace, hello(image="hello:crashloop"))
    prometheus.wait_for_value(rollbacks, 1, timeout=60)

    def firing() -> bool:
        return any(
            a["labels"].get("alertname") == "MicroServiceRolledBack"
            and a["labels"].get("namespace") == namespace
            for a in prometheus.alerts()
        )

    wait_for(firing, timeout=60, message="MicroServiceRolledBack alert")
