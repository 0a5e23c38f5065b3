"""kube-apiserver and etcd killed and restarted while the operator works.

The operator must ride it out: informers resume (or relist) once the API is back,
workers retry with backoff, and with leader election a leader that cannot renew
exits and a follower takes over, so high availability survives the outage.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client

from tests.faults.cluster import (
    apply_all,
    children_report,
    convergence_report,
    decision_events,
    get_ms,
    images,
    is_ready,
    microservice,
    not_ready,
    quarantine_records,
    resync_stuck_pods,
)
from tests.faults.supervise import Fleet
from tests.integration.fixtures import LOCALCLUSTER
from tests.integration.helpers import wait_for

RESULTS = Path(__file__).resolve().parents[2] / ".localcluster" / "fault-results"
API_ERRORS: tuple[type[BaseException], ...] = (Exception,)  # refused, reset, 5xx
N = 20


def localcluster(*args: str) -> float:
    """Run localcluster.py; returns the seconds it took."""
    t = time.monotonic()
    subprocess.run([sys.executable, str(LOCALCLUSTER), *args], check=True, timeout=300)
    return time.monotonic() - t


def control_plane_recovered(api: client.ApiClient, namespace: str, name: str) -> float:
    """Seconds until a plain Deployment (no operator involved) has a Ready pod: the
    floor. After an API server restart the cluster's own controllers (and kwok) take
    their time to resume their watches, and no operator can be faster than them."""
    t = time.monotonic()
    apps = client.AppsV1Api(api)
    labels = {"app": name}
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="app:v1")]),
            ),
        ),
    )

    def create() -> bool:
        try:
            apps.create_namespaced_deployment(namespace, body)
        except client.ApiException as exc:
            if exc.status != 409:  # made by an earlier try whose answer was lost
                raise
        return True

    wait_for(
        create,
        timeout=60,
        interval=1,
        message="the API server accepts writes",
        ignore=API_ERRORS,
    )
    wait_for(
        lambda: (apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0) > 0,
        timeout=240,
        interval=1,
        message=f"plain Deployment {name} Ready (control plane recovered)",
        ignore=API_ERRORS,
    )
    return time.monotonic() - t


def all_ready(api: client.ApiClient, namespace: str, image: str) -> bool:
    try:
        return not not_ready(api, namespace) and set(images(api, namespace).values()) == {image}
    except API_ERRORS:
        return False


def record(name: str, figures: dict[str, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


def test_operator_converges_after_apiserver_and_etcd_restarts(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    op = fleet.add("standalone", "--namespace", namespace)
    op.start()
    fleet.supervise()
    names = [f"cp-{i:02d}" for i in range(N)]
    # The default deadline: the control plane itself needs ~95 s to create pods again
    # after an API server restart (measured as the floor below).
    fo = {"progressDeadlineSeconds": 300}
    figures: dict[str, float] = {}

    def outage(component: str, label: str, image: str) -> None:
        """Apply the fleet on ``image``, kill ``component`` for 5 s, bring it back, and
        time the operator's convergence after the control plane's own recovery."""
        apply_all(kubeconfig, namespace, [microservice(n, image, **fo) for n in names])
        localcluster("kill", component)
        time.sleep(5)  # the outage: the operator's requests fail meanwhile
        figures[f"{label}_up_s"] = localcluster("up")
        figures[f"{label}_floor_s"] = control_plane_recovered(kube_api, namespace, f"floor-{label}")
        t = time.monotonic()
        resynced = 0

        def converged() -> bool:
            nonlocal resynced
            if all_ready(kube_api, namespace, image):
                return True
            # kwok drops or backs off (up to 32 min) a pod status patch that failed in the
            # outage, where a kubelet would send it again on its next sync: play that part.
            with contextlib.suppress(*API_ERRORS):
                resynced += resync_stuck_pods(kube_api, namespace, image, stale_after=15)
            return False

        try:
            wait_for(
                converged,
                timeout=120,
                interval=1,
                message=f"all Ready on {image} after the {component} restart",
            )
        except AssertionError as exc:
            report = convergence_report(kube_api, namespace, image)
            raise AssertionError(f"{exc}\n{report}") from None
        figures[f"{label}_pods_resynced"] = resynced
        figures[f"{label}_converged_after_floor_s"] = time.monotonic() - t

    outage("kube-apiserver", "apiserver", "app:v1")
    outage("etcd", "etcd", "app:v2")

    assert decision_events(kube_api, namespace) == []
    assert quarantine_records(kube_api, namespace) == []
    assert children_report(kube_api, namespace) == {"missing": [], "duplicate": [], "orphan": []}
    figures["operator_restarts"] = fleet.restarts
    record("control-plane", figures)


def test_ha_survives_an_apiserver_outage_and_then_a_leader_kill(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    """The reported failure: after a 25 s API server outage the leader never renewed
    again and, once it was killed, the other replica never took over."""
    args = ("--namespace", namespace, "--leader-election", "--leader-election-namespace", namespace)
    a = fleet.add("ha-a", *args)
    b = fleet.add("ha-b", *args)
    a.start()
    b.start()
    fleet.supervise()
    coord = client.CoordinationV1Api(kube_api)

    def holder() -> str:
        try:
            return str(
                coord.read_namespaced_lease("microservice-operator", namespace).spec.holder_identity
                or ""
            )
        except API_ERRORS:
            return ""

    wait_for(lambda: holder() in ("ha-a", "ha-b"), timeout=40, message="a leader")
    localcluster("kill", "kube-apiserver")
    time.sleep(25)
    localcluster("up")
    control_plane_recovered(kube_api, namespace, "floor")
    first = wait_for(holder, timeout=60, message="a leader after the outage")
    leader = a if first == "ha-a" else b
    renewed = datetime.datetime.now(datetime.UTC)

    def renewed_since() -> bool:
        try:
            lease = coord.read_namespaced_lease("microservice-operator", namespace)
        except API_ERRORS:
            return False
        return bool(lease.spec.renew_time and lease.spec.renew_time > renewed)

    wait_for(renewed_since, timeout=20, message="the Lease renewed again after the outage")
    apply_all(kubeconfig, namespace, [microservice("after-outage", "app:v1")])
    wait_for(
        lambda: is_ready(get_ms(kube_api, namespace, "after-outage")),
        timeout=60,
        message="reconciled after the outage",
        ignore=API_ERRORS,
    )

    # Kill the leader for good: the other must take over.
    fleet.replicas.remove(leader)  # the supervisor must not restart it
    leader.kill()
    t = time.monotonic()
    apply_all(kubeconfig, namespace, [microservice("after-kill", "app:v1")])
    wait_for(
        lambda: is_ready(get_ms(kube_api, namespace, "after-kill")),
        timeout=60,
        message="the other replica took over and reconciled",
        ignore=API_ERRORS,
    )
    assert holder() != first
    record("ha-outage", {"takeover_to_ready_s": time.monotonic() - t})
