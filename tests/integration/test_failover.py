"""Health-based failover against the real control plane.

Bad releases come from the kwok stages: an image tagged ``crashloop`` crash loops,
``unready`` never becomes Ready. Pods of a healthy release are made sick and healed
with the annotation ``mso.dev/test-ready`` ("false" / "true"), which the local
control plane's stages turn into Ready=False / Ready=True.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.helpers import wait_for
from tests.integration.operator_proc import OperatorProcess
from tests.integration.test_reconcile import (
    apply_ms,
    cond,
    deployment,
    get_ms,
    wait_condition,
    wait_quiet,
    wait_ready,
    wait_settled,
)

pytestmark = pytest.mark.integration

TEST_READY = "mso.dev/test-ready"


def hello(name: str = "web", image: str = "hello:1", **failover: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "replicas": 3,
            "ports": [{"containerPort": 5000, "servicePort": 80}],
            "failover": {"progressDeadlineSeconds": 30, "unhealthyThreshold": 2, **failover},
        },
    }


def image_of(api: client.ApiClient, namespace: str, name: str) -> str | None:
    d = deployment(api, namespace, name)
    return d.spec.template.spec.containers[0].image if d else None


def pods(api: client.ApiClient, namespace: str, selector: str) -> list[client.V1Pod]:
    return list(client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items)


def set_ready(api: client.ApiClient, namespace: str, pod_names: list[str], ready: bool) -> None:
    core = client.CoreV1Api(api)
    for name in pod_names:
        core.patch_namespaced_pod(
            name, namespace, {"metadata": {"annotations": {TEST_READY: str(ready).lower()}}}
        )


def all_ready(api: client.ApiClient, namespace: str, selector: str, n: int) -> bool:
    ps = [p for p in pods(api, namespace, selector) if not p.metadata.deletion_timestamp]
    ok = [
        p
        for p in ps
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(ps) == n and len(ok) == n


def events(api: client.ApiClient, namespace: str, name: str, reason: str) -> list[Any]:
    return list(
        client.CoreV1Api(api)
        .list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},reason={reason}"
        )
        .items
    )


def wait_events(
    api: client.ApiClient, namespace: str, name: str, reason: str, timeout: float = 15
) -> list[Any]:
    """The Events of that reason once there is one: an Event is posted after the act
    and the status write it reports, so a test that saw either must wait for it."""
    return wait_for(
        lambda: events(api, namespace, name, reason),
        timeout=timeout,
        message=f"a {reason} Event of {namespace}/{name}",
    )


def test_bad_release_rolls_back_and_stays_rolled_back(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    apply_ms(kubeconfig, namespace, hello())
    v1 = wait_ready(kube_api, namespace, "web")["status"]["currentRevision"]

    apply_ms(kubeconfig, namespace, hello(image="hello:crashloop"))

    ms = wait_condition(kube_api, namespace, "web", "RolledBack", status="True")
    assert ms["status"]["quarantinedRevision"] not in (None, v1)
    assert ms["status"]["lastKnownGoodRevision"] == v1
    wait_for(
        lambda: (
            image_of(kube_api, namespace, "web") == "hello:1"
            and all_ready(kube_api, namespace, "app.kubernetes.io/instance=web", 3)
        ),
        timeout=60,
        message="back on v1 with 3 Ready pods",
    )
    evs = events(kube_api, namespace, "web", "RolledBack")
    assert len(evs) == 1 and evs[0].type == "Warning"
    assert ms["status"]["quarantinedRevision"] in evs[0].message
    assert "hello:crashloop" in evs[0].message
    assert (
        get_ms(kube_api, namespace, "web")["spec"]["image"] == "hello:crashloop"
    )  # spec untouched

    # An operator restart does not re-roll the quarantined revision.
    generation = deployment(kube_api, namespace, "web").metadata.generation  # type: ignore[union-attr]
    operator.restart()
    time.sleep(3)  # observation window after the restart
    assert deployment(kube_api, namespace, "web").metadata.generation == generation  # type: ignore[union-attr]
    assert image_of(kube_api, namespace, "web") == "hello:1"
    assert len(events(kube_api, namespace, "web", "RolledBack")) == 1

    # A new spec change rolls forward and clears the quarantine.
    apply_ms(kubeconfig, namespace, hello(image="hello:3"))
    ms = wait_ready(kube_api, namespace, "web")
    wait_for(
        lambda: image_of(kube_api, namespace, "web") == "hello:3",
        timeout=30,
        message="rolled forward to v3",
    )
    ms = wait_for(
        lambda: (
            (m := get_ms(kube_api, namespace, "web"))
            and "quarantinedRevision" not in m["status"]
            and m["status"].get("lastKnownGoodRevision") == m["status"].get("currentRevision")
            and m
        ),
        timeout=30,
        message="quarantine cleared, v3 last known good",
    )
    assert cond(ms, "RolledBack")["status"] == "False"  # type: ignore[index]


def test_first_bad_release_is_degraded_without_a_loop(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    apply_ms(kubeconfig, namespace, hello(image="hello:crashloop"))

    ms = wait_condition(kube_api, namespace, "web", "Degraded", status="True")
    assert "quarantinedRevision" not in ms["status"]
    assert cond(ms, "RolledBack") is None
    assert image_of(kube_api, namespace, "web") == "hello:crashloop"
    # Once every pod is over the threshold the status stops changing: no write loop,
    # no retries of a release that has nothing to roll back to.
    wait_for(
        lambda: all(
            p in (cond(get_ms(kube_api, namespace, "web"), "Degraded") or {}).get("message", "")
            for p in [
                x.metadata.name for x in pods(kube_api, namespace, "app.kubernetes.io/instance=web")
            ]
        ),
        timeout=90,
        message="all pods reported over the restart threshold",
    )
    wait_settled(kube_api, namespace, "web")
    wait_quiet(kube_api, namespace)
    before = operator.requests()
    time.sleep(5)  # observation window: no write may happen in it
    after = operator.requests()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert not any(v for v in delta.values()), {k: v for k, v in delta.items() if v}


def test_traffic_fails_over_to_the_standby_and_back(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    failover = {
        "minHealthyRatio": 0.6,
        "failoverAfterSeconds": 5,
        "failbackAfterSeconds": 15,
        "podUnhealthySeconds": 0,
        "standby": {"replicas": 1},
    }
    apply_ms(kubeconfig, namespace, hello(**failover))
    wait_ready(kube_api, namespace, "web")
    wait_for(
        lambda: all_ready(
            kube_api, namespace, "app.kubernetes.io/instance=web,mso.dev/track=standby", 1
        ),
        timeout=60,
        message="warm standby ready",
    )
    core = client.CoreV1Api(kube_api)
    selector = lambda: core.read_namespaced_service("web", namespace).spec.selector  # noqa: E731
    on_primary = "app.kubernetes.io/instance=web,mso.dev/track=primary"
    # The fault starts from a healthy primary carrying the traffic. (When a starved
    # controller-manager creates the primary's pods only after failoverAfterSeconds,
    # the standby rightly takes the traffic first, and gives it back once the primary
    # has been healthy for failbackAfterSeconds.)
    wait_for(
        lambda: (
            all_ready(kube_api, namespace, on_primary, 3)
            and selector().get("mso.dev/track") == "primary"
        ),
        timeout=90,
        message="traffic on a healthy primary",
    )
    primary = [p.metadata.name for p in pods(kube_api, namespace, on_primary)]

    set_ready(kube_api, namespace, primary[:2], False)
    sick_at = time.monotonic()
    wait_for(
        lambda: selector().get("mso.dev/track") == "standby",
        # failoverAfterSeconds, then 2 of 3 standby pods Ready (1 is warm: the
        # controller-manager and kwok make the other under load).
        timeout=60,
        message="Service switched to the standby",
    )
    switched_after = time.monotonic() - sick_at
    assert switched_after >= 5 - 1, switched_after  # not before failoverAfterSeconds
    standby = deployment(kube_api, namespace, "web-standby")
    assert standby is not None and standby.spec.replicas == 3  # scaled to carry the load
    # The status is written after the children, by the same reconcile.
    ms = wait_condition(kube_api, namespace, "web", "FailedOver", status="True", timeout=30)
    assert ms["status"]["activeTrack"] == "standby"
    assert wait_events(kube_api, namespace, "web", "FailedOver")

    # A flapping primary does not bring traffic back. Each flap waits until the API
    # server shows it (kwok can lag under load): a flap nobody saw is no flap.
    def primary_ready(n: int) -> bool:
        ps = [p for p in pods(kube_api, namespace, PRIMARY) if not p.metadata.deletion_timestamp]
        return n == sum(
            1
            for p in ps
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )

    for _ in range(3):
        set_ready(kube_api, namespace, primary[:2], True)
        wait_for(lambda: primary_ready(3), timeout=30, message="primary healthy for a moment")
        time.sleep(3)
        assert selector().get("mso.dev/track") == "standby"
        set_ready(kube_api, namespace, primary[:2], False)
        wait_for(lambda: primary_ready(1), timeout=30, message="primary sick again")
        # ... and until the operator saw it too: its healthy timer stops.
        wait_for(
            lambda: (
                not (get_ms(kube_api, namespace, "web")["status"].get("failoverState") or {}).get(
                    "healthySince"
                )
            ),
            timeout=30,
            message="the operator saw the primary sick again",
        )
        time.sleep(2)
        assert selector().get("mso.dev/track") == "standby"

    set_ready(kube_api, namespace, primary[:2], True)
    healed_at = time.monotonic()
    wait_for(
        lambda: selector().get("mso.dev/track") == "primary",
        timeout=60,
        message="traffic back on the primary",
    )
    assert time.monotonic() - healed_at >= 15 - 1
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "web-standby")) and d.spec.replicas == 1,
        timeout=30,
        message="standby scaled back down",
    )
    ms = wait_condition(kube_api, namespace, "web", "FailedOver", status="False", timeout=30)
    assert ms["status"]["activeTrack"] == "primary"


PRIMARY = "app.kubernetes.io/instance=web,mso.dev/track=primary"


def four_pods(kubeconfig: Path, api: client.ApiClient, namespace: str, budget: int) -> list[str]:
    """A Ready 4-replica MicroService with 10s stuck-pod remediation; its pod names."""
    doc = hello(
        podUnhealthySeconds=10, maxRemediationsPerWindow=budget, remediationWindowSeconds=600
    )
    doc["spec"]["replicas"] = 4
    apply_ms(kubeconfig, namespace, doc)
    wait_ready(api, namespace, "web")
    return sorted(p.metadata.name for p in pods(api, namespace, PRIMARY))


def test_no_pod_is_deleted_while_most_pods_are_unhealthy(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    names = four_pods(kubeconfig, kube_api, namespace, budget=5)
    selector = PRIMARY
    # Most pods unhealthy at once: a dependency outage; deleting pods would not help.
    set_ready(kube_api, namespace, names[:3], False)
    time.sleep(16)  # past podUnhealthySeconds: remediation would have acted by now
    assert sorted(p.metadata.name for p in pods(kube_api, namespace, selector)) == names
    assert not events(kube_api, namespace, "web", "PodRemediated")
    # (Healing one pod at a time would leave 2 of 4 stuck, which is remediable, so
    # the scenario ends here; the namespace goes with the test.)


def test_a_stuck_pod_is_replaced_within_the_budget(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    names = four_pods(kubeconfig, kube_api, namespace, budget=1)
    selector = PRIMARY

    def current() -> list[str]:
        return [p.metadata.name for p in pods(kube_api, namespace, selector)]

    # Two stuck pods: one is deleted and replaced; the budget caps it at one per window.
    set_ready(kube_api, namespace, names[:2], False)
    wait_for(
        lambda: names[0] not in current() or names[1] not in current(),
        timeout=40,
        message="a stuck pod deleted",
    )
    time.sleep(14)  # another podUnhealthySeconds: the budget must hold the second one
    assert sum(n in current() for n in names[:2]) == 1, current()
    wait_for(lambda: len(current()) == 4, timeout=30, message="replaced")
    evs = events(kube_api, namespace, "web", "PodRemediated")
    assert len(evs) == 1
    metrics = operator.scrape()
    key = ("mso_pod_remediations_total", (("name", "web"), ("namespace", namespace)))
    assert metrics.get(key) == 1.0, {k: v for k, v in metrics.items() if "remediation" in k[0]}
