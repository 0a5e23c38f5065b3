"""Unit tests for health.py: parsing raw API objects and the health verdict."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from microservice_operator import health
from microservice_operator.api import Failover
from microservice_operator.health import (
    DeploymentObservation,
    PodObservation,
    StuckPod,
    assess,
    format_time,
    observe_deployment,
    observe_pod,
    observe_pods,
    parse_time,
)

T0 = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
REV = "rev-b"
OLD = "rev-a"


def ts(seconds_before_now: float) -> str:
    return format_time(NOW - timedelta(seconds=seconds_before_now))


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T02:33:30Z", datetime(2026, 11, 28, 2, 33, 30, tzinfo=UTC)),
        ("2026-11-28T02:33:30+00:00", datetime(2026, 11, 28, 2, 33, 30, tzinfo=UTC)),
        ("2026-11-28T03:33:30+01:00", datetime(2026, 11, 28, 2, 33, 30, tzinfo=UTC)),
        (
            "2026-11-28T02:33:30.123456Z",
            datetime(2026, 11, 28, 2, 33, 30, 123456, tzinfo=UTC),
        ),
        ("2026-11-28T02:33:30", datetime(2026, 11, 28, 2, 33, 30, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1700000000, None),
    ],
)
def test_parse_time(text: object, expected: datetime | None) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 11, 28, 2, 33, 30, tzinfo=UTC), "2026-11-28T02:33:30Z"),
        (datetime(2026, 11, 28, 2, 33, 30, 999999, tzinfo=UTC), "2026-11-28T02:33:30Z"),
        (
            datetime(2026, 11, 28, 4, 33, 30, tzinfo=timezone(timedelta(hours=2))),
            "2026-11-28T02:33:30Z",
        ),
    ],
)
def test_format_time(value: datetime, expected: str) -> None:
    assert format_time(value) == expected
    assert parse_time(format_time(value)) == value.replace(microsecond=0)


def test_format_time_rejects_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 11, 28, 2, 33, 30))


# --------------------------------------------------------------------------- observe


def deployment_obj(**status: Any) -> dict[str, Any]:
    """A Deployment as the API server returns it mid-rollout past its deadline."""
    base: dict[str, Any] = {
        "observedGeneration": 4,
        "replicas": 4,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "updatedReplicas": 1,
        "unavailableReplicas": 2,
        "conditions": [
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "lastTransitionTime": ts(100),
            },
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "cart-7d9f" has timed out progressing.',
                "lastUpdateTime": ts(10),
                "lastTransitionTime": ts(10),
            },
        ],
    }
    base.update(status)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "cart",
            "namespace": "shop",
            "generation": 4,
            "annotations": {"deployment.kubernetes.io/revision": "3", "mso.dev/revision": REV},
        },
        "spec": {
            "replicas": 3,
            "progressDeadlineSeconds": 300,
            "template": {
                "metadata": {"annotations": {"mso.dev/revision": REV}, "labels": {"a": "b"}},
                "spec": {"containers": [{"name": "app", "image": "shop/cart:2"}]},
            },
        },
        "status": base,
    }


def test_observe_deployment_mid_rollout() -> None:
    d = observe_deployment(deployment_obj())
    assert d == DeploymentObservation(
        name="cart",
        generation=4,
        observed_generation=4,
        desired=3,
        replicas=4,
        ready=2,
        available=2,
        updated=1,
        unavailable=2,
        revision=REV,
        available_condition=False,
        progressing_condition=False,
        progress_deadline_exceeded=True,
        progressing_message='ReplicaSet "cart-7d9f" has timed out progressing.',
    )
    assert d.generation_observed


def test_observe_deployment_defaults_and_fallbacks() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "cart", "generation": 2, "annotations": {"mso.dev/revision": OLD}},
        "spec": {"template": {"metadata": {}}},
    }
    d = observe_deployment(obj)
    assert d is not None
    assert (d.desired, d.replicas, d.ready, d.available, d.updated) == (1, 0, 0, 0, 0)
    assert d.revision == OLD  # from the Deployment's own annotation
    assert d.observed_generation == 0
    assert not d.generation_observed
    assert d.progressing_condition is None
    assert d.progress_deadline_exceeded is False
    assert observe_deployment(None) is None


def test_observe_deployment_progressing_true_is_not_deadline() -> None:
    obj = deployment_obj(
        conditions=[{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
    )
    d = observe_deployment(obj)
    assert d is not None
    assert d.progressing_condition is True
    assert d.progress_deadline_exceeded is False
    assert d.available_condition is None


KWOK_CRASHLOOP_POD: dict[str, Any] = {
    # As kwok's pod-crashloop / pod-crashloop-restart stages leave it.
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "cart-7d9f-x2k4q",
        "namespace": "shop",
        "uid": "0b7c",
        "creationTimestamp": "2026-11-28T02:05:00Z",
        "annotations": {"mso.dev/revision": REV},
        "labels": {"mso.dev/track": "primary"},
    },
    "spec": {
        "nodeName": "kwok-node-0",
        "containers": [{"name": "app", "image": "shop/cart:crashloop"}],
    },
    "status": {
        "phase": "Running",
        "conditions": [
            {
                "type": "PodReadyToStartContainers",
                "status": "True",
                "lastTransitionTime": "2026-11-28T02:05:01Z",
            },
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-28T02:05:01Z"},
            {
                "type": "Ready",
                "status": "False",
                "reason": "ContainersNotReady",
                "message": "containers with unready status: [app ]",
                "lastTransitionTime": "2026-11-28T02:05:01Z",
            },
            {
                "type": "ContainersReady",
                "status": "False",
                "reason": "ContainersNotReady",
                "lastTransitionTime": "2026-11-28T02:05:01Z",
            },
        ],
        "containerStatuses": [
            {
                "image": "shop/cart:crashloop",
                "name": "app",
                "ready": False,
                "started": False,
                "restartCount": 4,
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 10s restarting failed container=app",
                    }
                },
            }
        ],
        "hostIP": "10.0.0.1",
        "podIP": "10.0.0.2",
        "startTime": "2026-11-28T02:05:01Z",
    },
}


def pod_obj(
    name: str,
    *,
    ready: bool = True,
    revision: str | None = REV,
    phase: str = "Running",
    since: str | None = "2026-11-28T02:01:00Z",
    node: str | None = "kwok-node-0",
    deleting: bool = False,
    restarts: int = 0,
    waiting: str | None = None,
    init_waiting: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": "2026-11-28T02:00:30Z"}
    if revision is not None:
        meta["annotations"] = {"mso.dev/revision": revision}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-28T02:09:00Z"
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [
            {"name": "app", "ready": ready, "restartCount": restarts, "state": state}
        ],
    }
    if since is not None:
        status["conditions"] = [
            {"type": "Ready", "status": str(ready), "lastTransitionTime": since}
        ]
    if init_waiting:
        status["initContainerStatuses"] = [
            {"name": "init", "restartCount": 7, "state": {"waiting": {"reason": init_waiting}}}
        ]
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


def test_observe_kwok_crashloop_pod() -> None:
    assert observe_pod(KWOK_CRASHLOOP_POD) == PodObservation(
        name="cart-7d9f-x2k4q",
        revision=REV,
        phase="Running",
        ready=False,
        not_ready_since=datetime(2026, 11, 28, 2, 5, 1, tzinfo=UTC),
        deleting=False,
        scheduled=True,
        restarts=4,
        waiting_reason="CrashLoopBackOff",
        created=datetime(2026, 11, 28, 2, 5, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("obj", "field", "expected"),
    [
        (pod_obj("a"), "ready", True),
        (pod_obj("a"), "not_ready_since", None),
        (pod_obj("a", ready=False), "not_ready_since", datetime(2026, 11, 28, 2, 1, tzinfo=UTC)),
        # No conditions yet (just created, unscheduled): NotReady since creation.
        (
            pod_obj("a", ready=False, since=None, node=None, phase="Pending"),
            "not_ready_since",
            datetime(2026, 11, 28, 2, 0, 30, tzinfo=UTC),
        ),
        (pod_obj("a", ready=False, since=None, node=None), "scheduled", False),
        (pod_obj("a", deleting=True), "deleting", True),
        (pod_obj("a", revision=None), "revision", None),
        (
            pod_obj("a", ready=False, waiting="ImagePullBackOff"),
            "waiting_reason",
            "ImagePullBackOff",
        ),
        (
            pod_obj("a", ready=False, waiting="ContainerCreating"),
            "waiting_reason",
            "ContainerCreating",
        ),
        # A crash-looping init container is what keeps the pod down.
        (
            pod_obj("a", ready=False, waiting="PodInitializing", init_waiting="CrashLoopBackOff"),
            "waiting_reason",
            "CrashLoopBackOff",
        ),
        (pod_obj("a", ready=False, restarts=2, init_waiting="CrashLoopBackOff"), "restarts", 7),
        (
            pod_obj("a", ready=False, waiting="CreateContainerConfigError"),
            "waiting_reason",
            "CreateContainerConfigError",
        ),
    ],
)
def test_observe_pod_fields(obj: dict[str, Any], field: str, expected: object) -> None:
    assert getattr(observe_pod(obj), field) == expected


def test_observe_pod_tolerates_sparse_objects() -> None:
    p = observe_pod({"metadata": {"name": "x"}, "status": {"containerStatuses": None}})
    assert (p.phase, p.ready, p.restarts, p.waiting_reason, p.not_ready_since) == (
        "Pending",
        False,
        0,
        None,
        None,
    )


def test_observe_pods_sorted_by_name() -> None:
    pods = observe_pods([pod_obj("c"), pod_obj("a"), KWOK_CRASHLOOP_POD])
    assert [p.name for p in pods] == ["a", "c", "cart-7d9f-x2k4q"]


def test_evicted_and_terminating_pods_are_not_active() -> None:
    evicted, deleting, running = observe_pods(
        [pod_obj("a", phase="Failed", ready=False), pod_obj("b", deleting=True), pod_obj("c")]
    )
    assert (evicted.active, deleting.active, running.active) == (False, False, True)


# --------------------------------------------------------------------------- assess

FAILOVER = Failover(progress_deadline_seconds=300, unhealthy_threshold=3, pod_unhealthy_seconds=120)


def dep(**kw: Any) -> DeploymentObservation:
    base = DeploymentObservation(
        name="cart",
        generation=4,
        observed_generation=4,
        desired=3,
        replicas=3,
        ready=3,
        available=3,
        updated=3,
        unavailable=0,
        revision=REV,
        available_condition=True,
        progressing_condition=True,
        progress_deadline_exceeded=False,
        progressing_message="",
    )
    return replace(base, **kw)


def pod(name: str, **kw: Any) -> PodObservation:
    base = PodObservation(
        name=name,
        revision=REV,
        phase="Running",
        ready=True,
        not_ready_since=None,
        deleting=False,
        scheduled=True,
        restarts=0,
        waiting_reason=None,
        created=T0,
    )
    return replace(base, **kw)


def sick(name: str, seconds: float, **kw: Any) -> PodObservation:
    """A pod NotReady for ``seconds`` before NOW."""
    return pod(name, ready=False, not_ready_since=NOW - timedelta(seconds=seconds), **kw)


HEALTHY_PODS = [pod("p1"), pod("p2"), pod("p3")]


def test_assess_fully_healthy() -> None:
    h = assess(dep(), HEALTHY_PODS, FAILOVER, NOW, revision=REV, revision_since=T0)
    assert (h.desired, h.ready, h.available, h.updated, h.ratio) == (3, 3, 3, 3, 1.0)
    assert (h.healthy, h.rolled_out, h.fully_healthy, h.deadline_exceeded) == (
        True,
        True,
        True,
        False,
    )
    assert (h.pods, h.unhealthy, h.old_revision_pods) == (3, 0, 0)
    assert h.deadline_at == T0 + timedelta(seconds=300)
    assert h.summary == "3/3 ready"


def test_assess_crashloop_summary() -> None:
    pods = [pod("p1"), pod("p2"), sick("p3", 30, waiting_reason="CrashLoopBackOff", restarts=1)]
    h = assess(dep(ready=2, available=2), pods, FAILOVER, NOW, revision=REV, revision_since=NOW)
    assert h.summary == "2/3 ready; 1 pod CrashLoopBackOff"
    assert h.crashlooping == ("p3",)
    assert h.over_restart_threshold == ()
    assert h.ratio == pytest.approx(2 / 3)
    assert h.rolled_out and not h.fully_healthy


@pytest.mark.parametrize(
    ("restarts", "waiting", "crashlooping", "over"),
    [
        (2, "CrashLoopBackOff", ("p3",), ()),  # below the threshold
        (3, "CrashLoopBackOff", ("p3",), ("p3",)),  # at the threshold
        (5, None, ("p3",), ("p3",)),  # restarted a lot, running right now
        (0, "ImagePullBackOff", ("p3",), ()),
        (0, "ErrImagePull", ("p3",), ()),
        (0, "ContainerCreating", (), ()),
    ],
)
def test_assess_crashloop_threshold(
    restarts: int, waiting: str | None, crashlooping: tuple[str, ...], over: tuple[str, ...]
) -> None:
    pods = [pod("p1"), pod("p2"), sick("p3", 5, restarts=restarts, waiting_reason=waiting)]
    h = assess(dep(ready=2), pods, FAILOVER, NOW, revision=REV, revision_since=NOW)
    assert h.crashlooping == crashlooping
    assert h.over_restart_threshold == over


def test_assess_ignores_crashloops_of_other_revisions() -> None:
    pods = [pod("p1"), pod("old", revision=OLD, restarts=9, waiting_reason="CrashLoopBackOff")]
    h = assess(dep(desired=1, replicas=2), pods, FAILOVER, NOW, revision=REV, revision_since=NOW)
    assert h.crashlooping == ()
    assert h.over_restart_threshold == ()
    assert h.old_revision_pods == 1
    assert not h.rolled_out


@pytest.mark.parametrize(
    ("since_offset", "deployment", "expected"),
    [
        (-300, dep(ready=2), True),  # deadline exactly reached
        (-299, dep(ready=2), False),  # one second left
        (-301, dep(ready=2), True),
        (-600, dep(), False),  # fully healthy: no deadline
        (None, dep(ready=2), False),  # clock unknown
        # The Deployment controller says so for this revision and generation.
        (-10, dep(ready=2, progressing_condition=False, progress_deadline_exceeded=True), True),
        # ... but not when its status is about an older generation.
        (
            -10,
            dep(ready=2, observed_generation=3, progress_deadline_exceeded=True),
            False,
        ),
        # ... nor when the Deployment still runs another revision.
        (-10, dep(ready=2, revision=OLD, progress_deadline_exceeded=True), False),
    ],
)
def test_assess_deadline(
    since_offset: int | None, deployment: DeploymentObservation, expected: bool
) -> None:
    since = None if since_offset is None else NOW + timedelta(seconds=since_offset)
    pods = [pod("p1"), pod("p2"), sick("p3", 60)]
    h = assess(deployment, pods, FAILOVER, NOW, revision=REV, revision_since=since)
    assert h.deadline_exceeded is expected
    assert ("progress deadline exceeded" in h.summary) is expected


@pytest.mark.parametrize(
    ("deployment", "pods", "rolled_out", "fully_healthy"),
    [
        (dep(), HEALTHY_PODS, True, True),
        (dep(updated=2), HEALTHY_PODS, False, False),
        (dep(replicas=4), HEALTHY_PODS, False, False),  # surplus old pod still counted
        (dep(observed_generation=3), HEALTHY_PODS, False, False),
        (dep(revision=OLD), HEALTHY_PODS, False, False),
        (dep(), [*HEALTHY_PODS, pod("old", revision=OLD)], False, False),
        # An old pod on its way out does not hold the rollout back.
        (dep(), [*HEALTHY_PODS, pod("old", revision=OLD, deleting=True)], True, True),
        (dep(ready=2), HEALTHY_PODS, True, False),
        (dep(available=2), HEALTHY_PODS, True, False),
    ],
)
def test_assess_rollout_progress(
    deployment: DeploymentObservation,
    pods: list[PodObservation],
    rolled_out: bool,
    fully_healthy: bool,
) -> None:
    h = assess(deployment, pods, FAILOVER, NOW, revision=REV, revision_since=NOW)
    assert (h.rolled_out, h.fully_healthy) == (rolled_out, fully_healthy)


@pytest.mark.parametrize(
    ("desired", "ready", "ratio", "healthy"),
    [
        (2, 1, 0.5, True),  # exactly minHealthyRatio counts as healthy
        (3, 1, 1 / 3, False),
        (4, 0, 0.0, False),
        (0, 0, 1.0, True),
        (2, 3, 1.0, True),  # surge pods do not push the ratio above 1
    ],
)
def test_assess_ratio(desired: int, ready: int, ratio: float, healthy: bool) -> None:
    pods = [pod(f"p{i}", ready=i < ready) for i in range(max(desired, ready))]
    h = assess(
        dep(desired=desired, ready=ready), pods, Failover(), NOW, revision=REV, revision_since=NOW
    )
    assert h.ratio == pytest.approx(ratio)
    assert h.healthy is healthy


def test_pods_within_their_startup_allowance_do_not_count_against_the_ratio() -> None:
    """A scale-up from 2 to 10 of an app that takes a minute to start: 2 ready, 6
    starting (created 10 s ago), 2 not created yet. Healthy; and once the allowance is
    over, the pods still not ready count."""
    fo = Failover(podStartupSeconds=60)
    young = NOW - timedelta(seconds=10)
    pods = [pod("a"), pod("b")] + [pod(f"n{i}", ready=False, created=young) for i in range(6)]
    h = assess(dep(desired=10, ready=2), pods, fo, NOW, revision=REV, revision_since=T0)
    assert (h.starting, h.ratio, h.healthy) == (8, 1.0, True)
    assert h.next_check_at == young + timedelta(seconds=60)
    later = NOW + timedelta(seconds=55)
    pods += [pod(f"m{i}", ready=False, created=later) for i in range(2)]
    h = assess(
        dep(desired=10, ready=2),
        pods,
        fo,
        later + timedelta(seconds=10),
        revision=REV,
        revision_since=T0,
    )
    assert h.starting == 2 and h.ratio == pytest.approx(2 / 8) and not h.healthy
    assert "2 pods starting" in h.summary


def test_pods_that_turned_ready_before_the_deployment_counted_them_are_healthy() -> None:
    """A slow app's pods turned Ready 40 s after they were created; the deployment
    controller, behind on a loaded machine, still says 0 ready. They are no longer
    starting, and they are ready: healthy, not 0/2 (which failed a healthy primary
    over to its standby). Pods that are not ready yet still count against it."""
    fo = Failover(podStartupSeconds=60)
    created = NOW - timedelta(seconds=45)
    pods = [pod("a", created=created), pod("b", created=created)]
    h = assess(dep(desired=2, ready=0), pods, fo, NOW, revision=REV, revision_since=T0)
    assert (h.starting, h.ratio, h.healthy) == (0, 1.0, True)
    assert h.ready == 0 and not h.fully_healthy  # proving a revision waits for the Deployment
    old = NOW - timedelta(seconds=90)
    pods = [pod("a", created=created), pod("b", ready=False, created=old)]
    h = assess(dep(desired=2, ready=0), pods, fo, NOW, revision=REV, revision_since=T0)
    assert h.ratio == 0.5 and h.healthy is (fo.min_healthy_ratio <= 0.5)


@pytest.mark.parametrize(
    ("reason", "age", "flagged"),
    [
        ("ErrImagePull", 25, True),
        ("ImagePullBackOff", 25, True),
        ("CreateContainerConfigError", 25, True),
        ("ImagePullBackOff", 5, False),  # still within the grace
        ("ContainerCreating", 25, False),  # a slow pull is not an error
    ],
)
def test_image_and_config_errors_past_the_grace(reason: str, age: int, flagged: bool) -> None:
    fo = Failover(imageErrorGraceSeconds=20)
    p = pod("x", ready=False, waiting_reason=reason, created=NOW - timedelta(seconds=age))
    h = assess(dep(desired=1, ready=0), [p], fo, NOW, revision=REV, revision_since=NOW)
    assert h.image_errors == ((("x", reason),) if flagged else ())


def test_assess_scaled_to_zero_is_fully_healthy() -> None:
    d = dep(desired=0, replicas=0, ready=0, available=0, updated=0)
    h = assess(d, [], FAILOVER, NOW, revision=REV, revision_since=NOW - timedelta(hours=1))
    assert (h.ratio, h.fully_healthy, h.deadline_exceeded) == (1.0, True, False)


def test_assess_without_deployment() -> None:
    h = assess(None, [pod("p1")], FAILOVER, NOW, revision=REV, revision_since=NOW)
    assert (h.deployment_found, h.desired, h.ready, h.ratio) == (False, 0, 1, 1.0)
    assert not h.rolled_out
    assert h.summary == "Deployment not found"


@pytest.mark.parametrize(
    ("pods", "pod_unhealthy_seconds", "stuck"),
    [
        ([sick("p1", 120)], 120, (StuckPod("p1", NOW - timedelta(seconds=120), REV),)),  # exact
        ([sick("p1", 119)], 120, ()),
        ([sick("p1", 500)], 0, ()),  # 0 disables
        ([sick("p1", 500, deleting=True)], 120, ()),
        ([sick("p1", 500, phase="Failed")], 120, ()),
        (
            [sick("a", 200), sick("b", 900, revision=OLD), sick("c", 200), pod("d")],
            120,
            (
                StuckPod("b", NOW - timedelta(seconds=900), OLD),
                StuckPod("a", NOW - timedelta(seconds=200), REV),
                StuckPod("c", NOW - timedelta(seconds=200), REV),
            ),
        ),
    ],
)
def test_assess_stuck_pods(
    pods: list[PodObservation], pod_unhealthy_seconds: int, stuck: tuple[StuckPod, ...]
) -> None:
    failover = Failover(pod_unhealthy_seconds=pod_unhealthy_seconds)
    h = assess(dep(ready=0), pods, failover, NOW, revision=REV, revision_since=NOW)
    assert h.stuck == stuck


def test_assess_counts_unhealthy_active_pods_only() -> None:
    pods = [pod("a"), sick("b", 1), sick("c", 1), sick("d", 1, deleting=True)]
    h = assess(dep(ready=1), pods, FAILOVER, NOW, revision=REV, revision_since=NOW)
    assert (h.pods, h.unhealthy) == (3, 2)


def test_assess_from_raw_objects() -> None:
    """End to end from API dicts: the kwok crash-looping pod of a new revision."""
    d = observe_deployment(
        deployment_obj(readyReplicas=2, availableReplicas=2, updatedReplicas=1, replicas=3)
    )
    pods = observe_pods(
        [pod_obj("old-1", revision=OLD), pod_obj("old-2", revision=OLD), KWOK_CRASHLOOP_POD]
    )
    h = assess(d, pods, FAILOVER, NOW, revision=REV, revision_since=T0 + timedelta(minutes=5))
    assert h.over_restart_threshold == ("cart-7d9f-x2k4q",)
    assert h.stuck == (
        StuckPod("cart-7d9f-x2k4q", datetime(2026, 11, 28, 2, 5, 1, tzinfo=UTC), REV),
    )
    assert h.deadline_exceeded  # the Deployment reports ProgressDeadlineExceeded
    assert h.summary == (
        "2/3 ready; 1 pod CrashLoopBackOff; 1 pod stuck NotReady; "
        "rollout in progress (1/3 updated, 2 pods of another revision left); "
        "progress deadline exceeded"
    )


def test_failover_timers_keep_sub_second_precision() -> None:
    t = datetime(2026, 11, 28, 2, 0, 50, 750000, tzinfo=UTC)
    assert health.format_precise(t) == "2026-11-28T02:00:50.750Z"
    assert health.parse_time(health.format_precise(t)) == t
    assert health.format_precise(t.replace(microsecond=0)) == "2026-11-28T02:00:50Z"


def test_pods_that_turned_not_ready_count_before_the_deployment_does() -> None:
    """Two of three pods of a healthy primary turned NotReady; the deployment
    controller, behind on a loaded machine, still says 3 ready. The pods are the
    fresher evidence: 1/3, unhealthy (the primary must fail over after
    failoverAfterSeconds, not when the controller catches up)."""
    old = NOW - timedelta(minutes=10)
    pods = [pod("a", created=old), pod("b", ready=False, created=old)]
    pods.append(pod("c", ready=False, created=old))
    h = assess(dep(desired=3, ready=3), pods, Failover(), NOW, revision=REV, revision_since=T0)
    assert h.ratio == pytest.approx(1 / 3) and not h.healthy
    # A pod the cache has not seen yet (fewer pods than the Deployment has): the
    # Deployment's count stands as a floor.
    h = assess(dep(desired=3, ready=3), pods[:2], Failover(), NOW, revision=REV, revision_since=T0)
    assert h.ratio == 1.0
