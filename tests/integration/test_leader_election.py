"""Two operator replicas with leader election: one reconciles, the other takes over.

The session operator (no leader election) is stopped for the duration, so every write
seen here comes from one of the two replicas under test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.operator_proc import OperatorProcess
from tests.integration.test_reconcile import apply_ms, deployment, sample, wait_ready

pytestmark = pytest.mark.integration


def writes(op: OperatorProcess) -> float:
    return sum(v for (verb, res), v in op.requests().items() if res not in ("leases", "other"))


@pytest.fixture
def replicas(
    kubeconfig: Path, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    operator.stop()
    args = ("--leader-election", "--leader-election-namespace", namespace)
    ops = []
    for ident in ("replica-a", "replica-b"):
        log_dir = tmp_path / ident
        log_dir.mkdir()
        op = OperatorProcess(str(kubeconfig), log_dir, *args)
        op.env_overrides = {"POD_NAME": ident}
        ops.append(op)
    a, b = ops
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()
        operator.start()


def holder(api: client.ApiClient, namespace: str) -> str:
    """The Lease's holder; "" while there is none, the Lease itself included (the
    replicas are started, not yet campaigning)."""
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            "microservice-operator", namespace
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def test_only_the_leader_reconciles_and_a_standby_takes_over(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    replicas: tuple[OperatorProcess, OperatorProcess],
) -> None:
    a, b = replicas
    first = wait_for(lambda: holder(kube_api, namespace), timeout=30, message="a Lease holder")
    leader, standby = (a, b) if first == "replica-a" else (b, a)
    apply_ms(kubeconfig, namespace, sample("hello.yaml"))
    wait_ready(kube_api, namespace, "hello")
    assert writes(leader) > 0
    assert writes(standby) == 0, standby.requests()

    # The leader goes away cleanly: it releases the Lease and the standby takes over.
    leader.stop()
    expected = "replica-b" if standby is b else "replica-a"
    wait_for(
        lambda: holder(kube_api, namespace) == expected,
        timeout=30,
        message="the standby holds the Lease",
    )
    kubectl(kubeconfig, "scale", "ms/hello", "--replicas=2", "-n", namespace)
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "hello")) and d.spec.replicas == 2,
        timeout=30,
        message="the new leader reconciled",
    )
    assert writes(standby) > 0
