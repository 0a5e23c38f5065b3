"""Health that means what users mean, on the local control plane.

Images from the kwok stages: ``:slow`` pods run at once but turn Ready only after
40 s; ``:pullerror`` pods never start (ErrImagePull, then ImagePullBackOff).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.helpers import holds_for, wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.operator_proc import OperatorProcess
from tests.integration.test_failover import all_ready, events, hello, image_of, wait_events
from tests.integration.test_reconcile import apply_ms, cond, get_ms, wait_condition, wait_ready

pytestmark = pytest.mark.integration


def test_an_image_that_cannot_be_pulled_is_rolled_back_after_the_grace(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    grace = 10
    fo = {"progressDeadlineSeconds": 300, "imageErrorGraceSeconds": grace}
    apply_ms(kubeconfig, namespace, hello(**fo))
    wait_ready(kube_api, namespace, "web")

    applied = time.monotonic()
    apply_ms(kubeconfig, namespace, hello(image="hello:pullerror", **fo))
    ms = wait_condition(kube_api, namespace, "web", "RolledBack", status="True", timeout=60)
    latency = time.monotonic() - applied
    # Not before the grace (creationTimestamp has whole seconds, and the clock started
    # once kubectl returned), and long before the 300 s deadline (the upper bound also
    # holds the controller-manager's and kwok's share under load: pods made, pull failed).
    assert grace - 2 <= latency <= grace + 60, latency
    rb = cond(ms, "RolledBack")
    assert rb is not None and rb["reason"] == "ImagePullError"
    assert "ErrImagePull" in rb["message"] or "ImagePullBackOff" in rb["message"]
    evs = wait_events(kube_api, namespace, "web", "RolledBack")
    assert len(evs) == 1 and "hello:pullerror" in evs[0].message
    wait_for(lambda: image_of(kube_api, namespace, "web") == "hello:1", timeout=30)
    wait_for(
        lambda: all_ready(kube_api, namespace, "app.kubernetes.io/instance=web", 3), timeout=60
    )


def test_a_scale_up_of_a_slow_starting_app_is_not_an_outage(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    fo = {
        "podStartupSeconds": 60,
        "failoverAfterSeconds": 5,
        "minHealthyRatio": 0.6,
        "podUnhealthySeconds": 0,
        "standby": {"replicas": 1},
    }
    doc = hello(image="hello:slow", **fo)
    doc["spec"]["replicas"] = 2
    apply_ms(kubeconfig, namespace, doc)
    wait_ready(kube_api, namespace, "web", timeout=120)  # 40 s to start

    kubectl(kubeconfig, "scale", "-n", namespace, "microservices.mso.dev/web", "--replicas=6")
    core = client.CoreV1Api(kube_api)

    def ready_on_primary() -> None:
        ready = cond(get_ms(kube_api, namespace, "web"), "Ready")
        assert ready is not None and ready["status"] == "True", ready
        svc = core.read_namespaced_service("web", namespace)
        assert svc.spec.selector["mso.dev/track"] == "primary"

    # Longer than failoverAfterSeconds, within the start-up allowance.
    holds_for(30, ready_on_primary, interval=1)
    assert not events(kube_api, namespace, "web", "FailedOver")
    wait_for(
        lambda: all_ready(
            kube_api, namespace, "app.kubernetes.io/instance=web,mso.dev/track=primary", 6
        ),
        timeout=90,
        message="6 primary pods Ready",
    )
    assert cond(get_ms(kube_api, namespace, "web"), "Ready")["status"] == "True"  # type: ignore[index]
