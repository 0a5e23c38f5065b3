"""Standby cover, replica hand-back, upgrades and the operations verbs, on the local
control plane (issue: health that means what users mean, items 3 to 8)."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from microservice_operator import render
from microservice_operator.api import MicroServiceSpec
from tests.integration.helpers import holds_for, wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.operator_proc import OperatorProcess
from tests.integration.test_failover import (
    all_ready,
    deployment,
    events,
    hello,
    image_of,
    pods,
    set_ready,
)
from tests.integration.test_reconcile import apply_ms, cond, get_ms, wait_condition, wait_ready

pytestmark = pytest.mark.integration

PRIMARY = "app.kubernetes.io/instance=web,mso.dev/track=primary"
STANDBY = "app.kubernetes.io/instance=web,mso.dev/track=standby"


def annotate(kubeconfig: Path, namespace: str, name: str, *pairs: str) -> None:
    kubectl(kubeconfig, "annotate", "--overwrite", "-n", namespace, f"ms/{name}", *pairs)


def fail_primary(kube_api: client.ApiClient, namespace: str) -> None:
    """Make every primary pod NotReady (the kwok stage honours mso.dev/test-ready)."""
    names = [p.metadata.name for p in pods(kube_api, namespace, PRIMARY)]
    set_ready(kube_api, namespace, names, False)


def heal_primary(kube_api: client.ApiClient, namespace: str) -> None:
    names = [p.metadata.name for p in pods(kube_api, namespace, PRIMARY)]
    set_ready(kube_api, namespace, names, True)


def service_track(kube_api: client.ApiClient, namespace: str) -> str:
    svc = client.CoreV1Api(kube_api).read_namespaced_service("web", namespace)
    return str(svc.spec.selector["mso.dev/track"])


def evict(kube_api: client.ApiClient, namespace: str, pod: str) -> int:
    """Evict a pod as `kubectl drain` does; the HTTP status (201 evicted, 429 refused)."""
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
    try:
        client.CoreV1Api(kube_api).create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as exc:
        return int(exc.status)
    return 201


def test_standby_is_protected_and_autoscaled_while_it_carries_traffic(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    doc = hello(failoverAfterSeconds=2, podUnhealthySeconds=0, standby={"replicas": 1})
    del doc["spec"]["replicas"]
    doc["spec"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 6}
    doc["spec"]["availability"] = {"minAvailable": 2}
    apply_ms(kubeconfig, namespace, doc)
    wait_ready(kube_api, namespace, "web", timeout=90)
    wait_for(lambda: all_ready(kube_api, namespace, PRIMARY, 3), timeout=90, message="HPA: 3")
    # The fault starts from a healthy primary carrying the traffic. A starved
    # controller-manager can create the primary's pods after failoverAfterSeconds (2 s
    # here, and seen: 3.5 s): the standby then rightly took the traffic first. Hand it
    # back, as an operator of the cluster would.
    if service_track(kube_api, namespace) != "primary":
        annotate(kubeconfig, namespace, "web", "mso.dev/failback=now")
    wait_for(
        lambda: service_track(kube_api, namespace) == "primary",
        timeout=60,
        message="traffic on the healthy primary",
    )
    policy = client.PolicyV1Api(kube_api)

    def idle_budget() -> client.V1PodDisruptionBudgetSpec:
        return policy.read_namespaced_pod_disruption_budget("web-standby", namespace).spec

    # idle: warm, but no obstacle to maintenance (written with the failback, if any)
    wait_for(lambda: idle_budget().max_unavailable == 1, timeout=30, message="idle budget")
    assert idle_budget().min_available is None

    fail_primary(kube_api, namespace)
    wait_condition(kube_api, namespace, "web", "FailedOver", status="True", timeout=90)
    hpa = client.AutoscalingV2Api(kube_api).read_namespaced_horizontal_pod_autoscaler(
        "web", namespace
    )
    assert hpa.spec.scale_target_ref.name == "web-standby"
    wait_for(lambda: all_ready(kube_api, namespace, STANDBY, 3), timeout=60)

    def budget_counts() -> bool:
        pdb = policy.read_namespaced_pod_disruption_budget("web-standby", namespace)
        return bool(
            pdb.spec.min_available == 2
            and pdb.status.current_healthy == 3
            and pdb.status.observed_generation == pdb.metadata.generation
        )

    wait_for(budget_counts, timeout=60, message="the standby's budget counts its 3 pods")

    # A drain evicts every pod of the node at once (kubectl drain: one request per pod,
    # concurrently). The budget lets one go; the API server holds the others and
    # retries them every 0.5 s (up to 10 s), so each goes once a replacement is Ready.
    # kwok makes replacements Ready at once, so whether any eviction is refused (429)
    # depends on the disruption controller's pace: not asserted. What the budget
    # promises is: never fewer than minAvailable serving, checked all along.
    def serving() -> int:
        return sum(
            1
            for p in pods(kube_api, namespace, STANDBY)
            if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )

    names = [p.metadata.name for p in pods(kube_api, namespace, STANDBY)]
    lowest = [serving()]
    failed: list[BaseException] = []
    draining = threading.Event()

    def watch_serving() -> None:
        try:
            while not draining.wait(0.05):
                lowest.append(serving())
        except BaseException as exc:  # reported below, not lost in the thread
            failed.append(exc)

    watcher = threading.Thread(target=watch_serving, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(names)) as pool:
            codes = list(pool.map(lambda n: evict(kube_api, namespace, n), names))
    finally:
        draining.set()
        watcher.join()
    assert not failed, failed
    assert set(codes) <= {201, 429}, codes
    assert min(lowest) >= 2, (codes, lowest)
    assert service_track(kube_api, namespace) == "standby"

    # Failback: the HPA follows traffic back to the primary.
    heal_primary(kube_api, namespace)
    wait_for(lambda: all_ready(kube_api, namespace, PRIMARY, 3), timeout=60)
    annotate(kubeconfig, namespace, "web", "mso.dev/failback=now")
    wait_condition(kube_api, namespace, "web", "FailedOver", status="False", timeout=60)
    assert service_track(kube_api, namespace) == "primary"
    wait_for(
        lambda: (
            client.AutoscalingV2Api(kube_api)
            .read_namespaced_horizontal_pod_autoscaler("web", namespace)
            .spec.scale_target_ref.name
            == "web"
        ),
        timeout=30,
    )


def test_turning_autoscaling_off_keeps_the_replicas_it_reached(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    doc = hello()
    del doc["spec"]["replicas"]
    doc["spec"]["autoscaling"] = {"minReplicas": 8, "maxReplicas": 10}
    apply_ms(kubeconfig, namespace, doc)
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "web")) is not None and d.spec.replicas == 8,
        timeout=90,
        message="the HPA scaled to its minimum of 8",
    )
    wait_ready(kube_api, namespace, "web", timeout=90)
    off = copy.deepcopy(doc)
    del off["spec"]["autoscaling"]
    apply_ms(kubeconfig, namespace, off)
    hpas = client.AutoscalingV2Api(kube_api)
    wait_for(
        lambda: not hpas.list_namespaced_horizontal_pod_autoscaler(namespace).items,
        timeout=30,
        message="the HPA deleted",
    )

    def still_eight() -> None:
        d = deployment(kube_api, namespace, "web")
        assert d is not None and d.spec.replicas == 8, d and d.spec.replicas

    holds_for(10, still_eight, interval=0.5)
    assert cond(get_ms(kube_api, namespace, "web"), "Ready")["status"] == "True"  # type: ignore[index]
    # An explicit count still wins.
    kubectl(kubeconfig, "scale", "-n", namespace, "ms/web", "--replicas=2")
    wait_for(lambda: deployment(kube_api, namespace, "web").spec.replicas == 2, timeout=30)  # type: ignore[union-attr]


def test_removing_the_standby_while_failed_over_waits_for_a_healthy_primary(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    doc = hello(failoverAfterSeconds=2, podUnhealthySeconds=0, standby={"replicas": 2})
    apply_ms(kubeconfig, namespace, doc)
    wait_ready(kube_api, namespace, "web", timeout=90)
    fail_primary(kube_api, namespace)
    wait_condition(kube_api, namespace, "web", "FailedOver", status="True", timeout=90)

    removed = copy.deepcopy(doc)
    del removed["spec"]["failover"]["standby"]
    apply_ms(kubeconfig, namespace, removed)
    wait_for(
        lambda: (
            (c := cond(get_ms(kube_api, namespace, "web"), "FailedOver")) is not None
            and c["reason"] == "StandbyRemoved"
        ),
        timeout=30,
        message="FailedOver says the standby was removed",
    )

    def stays_on_standby() -> None:
        assert service_track(kube_api, namespace) == "standby"
        assert deployment(kube_api, namespace, "web-standby") is not None

    holds_for(8, stays_on_standby, interval=0.5)
    heal_primary(kube_api, namespace)
    wait_for(lambda: service_track(kube_api, namespace) == "primary", timeout=60)
    wait_for(lambda: deployment(kube_api, namespace, "web-standby") is None, timeout=30)
    wait_ready(kube_api, namespace, "web", timeout=60)


def test_pause_resume_and_retry_a_quarantined_revision(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    apply_ms(kubeconfig, namespace, hello())
    wait_ready(kube_api, namespace, "web")
    # Paused: a new release is not rolled out.
    annotate(kubeconfig, namespace, "web", "mso.dev/paused=true")
    wait_condition(kube_api, namespace, "web", "Paused", status="True", timeout=30)
    apply_ms(kubeconfig, namespace, hello(image="hello:crashloop"))
    holds_for(5, lambda: image_of(kube_api, namespace, "web") == "hello:1" or pytest.fail("rolled"))
    # Resumed: it rolls out, crash-loops and is rolled back and quarantined.
    kubectl(kubeconfig, "annotate", "-n", namespace, "ms/web", "mso.dev/paused-")
    wait_condition(kube_api, namespace, "web", "RolledBack", status="True", timeout=120)
    wait_for(lambda: image_of(kube_api, namespace, "web") == "hello:1", timeout=30)
    bad = get_ms(kube_api, namespace, "web")["status"]["quarantinedRevision"]
    assert bad == render.revision(
        MicroServiceSpec.model_validate(hello(image="hello:crashloop")["spec"])
    )
    # Retry: the quarantine is lifted, the revision rolls out again (and fails again).
    annotate(kubeconfig, namespace, "web", f"mso.dev/retry={bad}")
    wait_for(
        lambda: events(kube_api, namespace, "web", "QuarantineLifted"), timeout=30, message="lifted"
    )
    wait_for(
        lambda: (
            "mso.dev/retry"
            not in (get_ms(kube_api, namespace, "web")["metadata"].get("annotations") or {})
        ),
        timeout=30,
        message="the handled request annotation removed",
    )
    wait_for(lambda: image_of(kube_api, namespace, "web") == "hello:crashloop", timeout=30)
    wait_for(lambda: len(events(kube_api, namespace, "web", "RolledBack")) >= 2, timeout=120)
    wait_for(
        lambda: all_ready(kube_api, namespace, PRIMARY, 3), timeout=60, message="back on hello:1"
    )


# --------------------------------------------------------------------------- upgrade


def _as_operator_01(kube_api: client.ApiClient, namespace: str, name: str) -> None:
    """Rewrite what the operator wrote for ``name`` as operator 0.1 had it: revisions
    named by 0.1's template hash on the Deployment (so on its pods) and on the
    ControllerRevisions, and no rendering fingerprint."""
    ms = get_ms(kube_api, namespace, name)
    apps = client.AppsV1Api(kube_api)
    names = {}
    for cr in apps.list_namespaced_controller_revision(
        namespace, label_selector=f"app.kubernetes.io/instance={name}"
    ).items:
        data = dict(cr.data)
        spec = data.get("spec")
        if spec is None:  # a quarantine: 0.1 named it by the spec it was made from
            spec = ms["spec"]
        legacy = render.legacy_revision(MicroServiceSpec.model_validate(spec), name)
        names[data["revision"]] = legacy
        role = "good" if "spec" in data else "bad"
        body = client.V1ControllerRevision(
            metadata=client.V1ObjectMeta(
                name=f"{name}-{role}-{legacy}",
                labels={**cr.metadata.labels, "mso.dev/revision": legacy},
                owner_references=cr.metadata.owner_references,
            ),
            data={**data, "revision": legacy},
            revision=cr.revision,
        )
        apps.create_namespaced_controller_revision(namespace, body)
        apps.delete_namespaced_controller_revision(cr.metadata.name, namespace)
    dep = deployment(kube_api, namespace, name)
    assert dep is not None
    running = dep.spec.template.metadata.annotations["mso.dev/revision"]
    patch = [
        {"op": "remove", "path": "/metadata/annotations/mso.dev~1template-hash"},
        {
            "op": "replace",
            "path": "/spec/template/metadata/annotations/mso.dev~1revision",
            "value": names.get(running, running),
        },
    ]
    apps.patch_namespaced_deployment(name, namespace, patch)


def test_operator_upgrade_restarts_no_pod_and_keeps_the_quarantine(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    # "bad": rolled back from a crash-looping release; "good": plain.
    for name in ("bad", "good"):
        apply_ms(kubeconfig, namespace, hello(name=name))
    for name in ("bad", "good"):
        wait_ready(kube_api, namespace, name)
    apply_ms(kubeconfig, namespace, hello(name="bad", image="hello:crashloop"))
    wait_condition(kube_api, namespace, "bad", "RolledBack", status="True", timeout=120)
    for name in ("bad", "good"):
        wait_for(lambda n=name: image_of(kube_api, namespace, n) == "hello:1", timeout=30)
        wait_ready(kube_api, namespace, name, timeout=90)
    quarantined = get_ms(kube_api, namespace, "bad")["status"]["quarantinedRevision"]

    # The cluster as operator 0.1 left it when it was stopped for the upgrade (the
    # pods roll once to carry 0.1's names).
    operator.stop()
    try:
        for name in ("bad", "good"):
            _as_operator_01(kube_api, namespace, name)
        ours = render.revision(MicroServiceSpec.model_validate(hello()["spec"]))
        for name in ("bad", "good"):
            selector = f"app.kubernetes.io/instance={name}"
            wait_for(
                lambda s=selector: (
                    all_ready(kube_api, namespace, s, 3)
                    and all(
                        p.metadata.annotations["mso.dev/revision"] != ours
                        for p in pods(kube_api, namespace, s)
                        if not p.metadata.deletion_timestamp  # leaving; kwok may lag
                    )
                ),
                timeout=90,
                message=f"{name}'s pods carry 0.1's revision",
            )
        gen = {n: rollout(kube_api, namespace, n) for n in ("bad", "good")}

        def template(name: str) -> object:
            dep = deployment(kube_api, namespace, name)
            assert dep is not None
            return kube_api.sanitize_for_serialization(dep.spec.template)

        # The upgrade, with rendering changes held back: no pod changes at all.
        operator.env_overrides["MSO_TEMPLATE_REFRESHES_PER_MINUTE"] = "0"
        operator.start()

        def unchanged(names: tuple[str, ...] = ("bad", "good")) -> None:
            for n in names:
                assert rollout(kube_api, namespace, n) == gen[n]
            status = get_ms(kube_api, namespace, "bad")["status"]
            assert status["quarantinedRevision"] == quarantined
            assert image_of(kube_api, namespace, "bad") == "hello:1"

        wait_for(
            lambda: f"bad-bad-{quarantined}" in records(kube_api, namespace, "bad"),
            timeout=30,
            message="the quarantine re-keyed to this version's revision name",
        )
        holds_for(10, unchanged, interval=0.5)
        for name in ("bad", "good"):
            assert cond(get_ms(kube_api, namespace, name), "Ready")["status"] == "True"  # type: ignore[index]

        # At one rendering change per minute: one Deployment now, the other later.
        templates = {n: template(n) for n in ("bad", "good")}
        operator.stop()
        operator.env_overrides["MSO_TEMPLATE_REFRESHES_PER_MINUTE"] = "1"
        operator.start()

        def refreshed() -> list[str]:
            # The pod templates as the operator wrote them: the deployment controller's
            # rollout number can be tens of seconds behind on a loaded machine.
            return [n for n in ("bad", "good") if template(n) != templates[n]]

        first = wait_for(refreshed, timeout=30, message="one rendering change rolled out")
        assert len(first) == 1
        other = "good" if first == ["bad"] else "bad"
        holds_for(15, lambda: unchanged((other,)), interval=0.5)
        assert events(kube_api, namespace, first[0], "TemplateRefreshed")
    finally:
        operator.stop()
        operator.env_overrides.pop("MSO_TEMPLATE_REFRESHES_PER_MINUTE", None)
        operator.start()


def rollout(kube_api: client.ApiClient, namespace: str, name: str) -> tuple[str, frozenset[str]]:
    """The Deployment's rollout number (it grows with every new pod template, unlike
    generation, which annotation changes bump too) and the UIDs of its pods."""
    dep = deployment(kube_api, namespace, name)
    assert dep is not None
    uids = frozenset(
        p.metadata.uid for p in pods(kube_api, namespace, f"app.kubernetes.io/instance={name}")
    )
    return dep.metadata.annotations["deployment.kubernetes.io/revision"], uids


def records(kube_api: client.ApiClient, namespace: str, name: str) -> set[str]:
    apps = client.AppsV1Api(kube_api)
    return {
        cr.metadata.name
        for cr in apps.list_namespaced_controller_revision(
            namespace, label_selector=f"app.kubernetes.io/instance={name}"
        ).items
    }


@pytest.mark.parametrize("remediate", [True, False])
def test_a_stuck_single_replica_is_replaced_only_when_configured(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    remediate: bool,
) -> None:
    doc = hello(podUnhealthySeconds=3, remediateSingleReplica=remediate)
    doc["spec"]["replicas"] = 1
    apply_ms(kubeconfig, namespace, doc)
    wait_ready(kube_api, namespace, "web")
    (stuck,) = [p.metadata.name for p in pods(kube_api, namespace, PRIMARY)]
    set_ready(kube_api, namespace, [stuck], False)

    def gone() -> bool:
        names = [p.metadata.name for p in pods(kube_api, namespace, PRIMARY)]
        return stuck not in names or any(
            p.metadata.deletion_timestamp for p in pods(kube_api, namespace, PRIMARY)
        )

    if remediate:
        wait_for(gone, timeout=30, message="the stuck pod deleted")
        # The Event is posted after the deletion it reports (and the status write).
        wait_for(
            lambda: events(kube_api, namespace, "web", "PodRemediated"),
            timeout=15,
            message="the PodRemediated Event",
        )
        wait_ready(kube_api, namespace, "web", timeout=60)
    else:
        holds_for(8, lambda: not gone() or pytest.fail("deleted"), interval=0.5)
        assert not events(kube_api, namespace, "web", "PodRemediated")
