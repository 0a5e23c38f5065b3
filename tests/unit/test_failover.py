"""Unit tests for failover.py: rollback, traffic and remediation decisions over time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest

from microservice_operator.api import (
    Failover,
    FailoverEvent,
    FailoverState,
    QuarantineRecord,
    RevisionRecord,
    Standby,
)
from microservice_operator.failover import (
    RollbackDecision,
    decide_remediation,
    decide_rollback,
    decide_track,
    required_standby_ready,
    revision_clock,
    target_revision,
)
from microservice_operator.health import (
    DeploymentObservation,
    Health,
    PodObservation,
    assess,
    format_time,
)

T0 = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return format_time(at(seconds))


# --------------------------------------------------------------------------- fixtures

V1, V2, V3 = "rev-1", "rev-2", "rev-3"
SPEC1: dict[str, Any] = {"image": "shop/cart:1", "replicas": 3}
SPEC2: dict[str, Any] = {"image": "shop/cart:crashloop", "replicas": 3}
SPEC3: dict[str, Any] = {"image": "shop/cart:3", "replicas": 3}
LKG1 = RevisionRecord(revision=V1, image="shop/cart:1", spec=SPEC1)
Q2 = QuarantineRecord(
    revision=V2,
    image="shop/cart:crashloop",
    reason="CrashLoop",
    message="bad",
    time=iso(0),
    generation=2,
)


def health(revision: str = V2, **kw: Any) -> Health:
    """A verdict; defaults: a rollout in progress, nothing wrong yet."""
    base = Health(
        revision=revision,
        deployment_found=True,
        desired=3,
        ready=2,
        available=2,
        updated=1,
        unavailable=1,
        ratio=2 / 3,
        healthy=True,
        rolled_out=False,
        fully_healthy=False,
        pods=3,
        unhealthy=1,
        old_revision_pods=2,
        crashlooping=(),
        over_restart_threshold=(),
        stuck=(),
        deadline_at=None,
        deadline_exceeded=False,
        summary="2/3 ready",
    )
    return replace(base, **kw)


GOOD: dict[str, Any] = {
    "rolled_out": True,
    "fully_healthy": True,
    "ready": 3,
    "available": 3,
    "updated": 3,
}
CRASH2: dict[str, Any] = {
    "crashlooping": ("p3",),
    "over_restart_threshold": (),
}  # below the threshold
CRASH3: dict[str, Any] = {
    "crashlooping": ("p3",),
    "over_restart_threshold": ("p3",),
}  # at the threshold
LATE: dict[str, Any] = {"deadline_exceeded": True}


# --------------------------------------------------------------------------- revisions


@pytest.mark.parametrize(
    ("desired", "lkg", "quarantined", "expected"),
    [
        (V2, None, None, V2),
        (V2, LKG1, None, V2),
        (V2, LKG1, Q2, V1),  # quarantined: the Deployment runs the last known good
        (V3, LKG1, Q2, V3),  # the spec moved on
        (V2, None, Q2, V2),  # nothing else to run
    ],
)
def test_target_revision(
    desired: str, lkg: RevisionRecord | None, quarantined: QuarantineRecord | None, expected: str
) -> None:
    got = target_revision(desired_revision=desired, last_known_good=lkg, quarantined=quarantined)
    assert got == expected


@pytest.mark.parametrize(
    ("state", "previous", "expected_since"),
    [
        (None, None, iso(50)),  # first reconcile
        (FailoverState(revision_since=iso(0)), V2, iso(0)),  # same revision: clock keeps going
        (FailoverState(revision_since=iso(0)), V1, iso(50)),  # new revision: restart
        (FailoverState(revision_since="garbage"), V2, iso(50)),
        (FailoverState(), V2, iso(50)),
    ],
)
def test_revision_clock(
    state: FailoverState | None, previous: str | None, expected_since: str
) -> None:
    got = revision_clock(state, revision=V2, previous_revision=previous, now=at(50))
    assert got.revision_since == expected_since


def test_revision_clock_keeps_other_fields() -> None:
    state = FailoverState(revision_since=iso(0), unhealthy_since=iso(1), remediations=[iso(2)])
    got = revision_clock(state, revision=V3, previous_revision=V2, now=at(50))
    assert got == FailoverState(
        revision_since=iso(50), unhealthy_since=iso(1), remediations=[iso(2)]
    )


# --------------------------------------------------------------------------- rollback


def rollback(
    *,
    desired: str = V2,
    spec: dict[str, Any] | None = None,
    h: Health | None = None,
    lkg: RevisionRecord | None = LKG1,
    quarantined: QuarantineRecord | None = None,
    failover: Failover | None = None,
) -> RollbackDecision:
    spec = spec or {V1: SPEC1, V2: SPEC2, V3: SPEC3}[desired]
    return decide_rollback(
        desired_revision=desired,
        desired_image=spec["image"],
        desired_spec=spec,
        generation=7,
        health=h or health(desired),
        last_known_good=lkg,
        quarantined=quarantined,
        failover=failover or Failover(),
        now=at(400),
    )


class RollbackCase(NamedTuple):
    kwargs: dict[str, Any]
    action: str
    reason: str
    revision: str  # what the Deployment runs
    quarantined: str | None  # status.quarantinedRevision afterwards
    lkg: str | None  # status.lastKnownGoodRevision afterwards
    cleared: bool = False


ROLLBACK = {
    "progressing": RollbackCase({}, "apply_desired", "Progressing", V2, None, V1),
    "crash loop below threshold": RollbackCase(
        {"h": health(**CRASH2)}, "apply_desired", "Progressing", V2, None, V1
    ),
    "crash loop at threshold": RollbackCase(
        {"h": health(**CRASH3)}, "rollback", "CrashLoop", V1, V2, V1
    ),
    "deadline exceeded": RollbackCase(
        {"h": health(**LATE)}, "rollback", "ProgressDeadlineExceeded", V1, V2, V1
    ),
    "crash loop named before deadline": RollbackCase(
        {"h": health(**LATE, **CRASH3)}, "rollback", "CrashLoop", V1, V2, V1
    ),
    "first healthy revision": RollbackCase(
        {"h": health(**GOOD), "lkg": None}, "record_good", "RolloutComplete", V2, None, V2
    ),
    "new healthy revision": RollbackCase(
        {"h": health(**GOOD)}, "record_good", "RolloutComplete", V2, None, V2
    ),
    "already recorded": RollbackCase(
        {"desired": V1, "h": health(V1, **GOOD)}, "apply_desired", "RolloutComplete", V1, None, V1
    ),
    "record refreshed after a replicas change": RollbackCase(
        {"desired": V1, "spec": {**SPEC1, "replicas": 5}, "h": health(V1, **GOOD)},
        "record_good",
        "RolloutComplete",
        V1,
        None,
        V1,
    ),
    "scaled to zero proves nothing": RollbackCase(
        {"h": health(**GOOD, desired=0), "lkg": None},
        "apply_desired",
        "RolloutComplete",
        V2,
        None,
        None,
    ),
    "last known good is never rolled back from": RollbackCase(
        {"desired": V1, "h": health(V1, **CRASH3, **LATE)},
        "apply_desired",
        "LastKnownGood",
        V1,
        None,
        V1,
    ),
    "first-ever revision crash loops": RollbackCase(
        {"h": health(**CRASH3), "lkg": None}, "degraded_no_rollback", "CrashLoop", V2, None, None
    ),
    "first-ever revision late": RollbackCase(
        {"h": health(**LATE), "lkg": None},
        "degraded_no_rollback",
        "ProgressDeadlineExceeded",
        V2,
        None,
        None,
    ),
    "rollback disabled": RollbackCase(
        {"h": health(**CRASH3), "failover": Failover(rollback=False)},
        "degraded_no_rollback",
        "CrashLoop",
        V2,
        None,
        V1,
    ),
    "quarantined revision never retried": RollbackCase(
        {"quarantined": Q2, "h": health(V1, **GOOD)}, "stay_rolled_back", "CrashLoop", V1, V2, V1
    ),
    "quarantined, even while the lkg is unwell": RollbackCase(
        {"quarantined": Q2, "h": health(V1, **LATE)}, "stay_rolled_back", "CrashLoop", V1, V2, V1
    ),
    "spec change clears the quarantine": RollbackCase(
        {"desired": V3, "quarantined": Q2}, "apply_desired", "Progressing", V3, None, V1, True
    ),
    "spec change to another bad revision": RollbackCase(
        {"desired": V3, "quarantined": Q2, "h": health(V3, **LATE)},
        "rollback",
        "ProgressDeadlineExceeded",
        V1,
        V3,
        V1,
        True,
    ),
    "spec back to the lkg clears the quarantine": RollbackCase(
        {"desired": V1, "quarantined": Q2, "h": health(V1, **GOOD)},
        "apply_desired",
        "RolloutComplete",
        V1,
        None,
        V1,
        True,
    ),
    "a quarantine of the lkg itself is void (hand-edited status)": RollbackCase(
        {"desired": V1, "quarantined": Q2.model_copy(update={"revision": V1})},
        "apply_desired",
        "LastKnownGood",
        V1,
        None,
        V1,
        True,
    ),
    "quarantine without lkg (hand-edited status)": RollbackCase(
        {"quarantined": Q2, "lkg": None}, "degraded_no_rollback", "CrashLoop", V2, V2, None
    ),
}


@pytest.mark.parametrize("case", ROLLBACK.values(), ids=list(ROLLBACK))
def test_decide_rollback(case: RollbackCase) -> None:
    d = rollback(**case.kwargs)
    assert d.action == case.action, d.message
    assert d.reason == case.reason
    assert d.revision == case.revision
    assert (d.quarantine.revision if d.quarantine else None) == case.quarantined
    assert (d.last_known_good.revision if d.last_known_good else None) == case.lkg
    assert d.quarantine_cleared is case.cleared
    assert d.rolled_back is (case.action in ("rollback", "stay_rolled_back"))
    assert d.render_from == (LKG1 if d.rolled_back else None)


def test_rollback_records_the_quarantine() -> None:
    d = rollback(h=health(**CRASH3))
    assert d.quarantine == QuarantineRecord(
        revision=V2,
        image="shop/cart:crashloop",
        reason="CrashLoop",
        message=d.message,
        time="2026-11-28T02:06:40Z",
        generation=7,
    )
    assert d.message == (
        "Revision rev-2 (shop/cart:crashloop) is bad (restarted 3+ times: p3); "
        "rolled back to revision rev-1 (shop/cart:1)."
    )
    assert d.render_from is not None
    assert d.render_from.spec == SPEC1


def test_record_good_keeps_the_spec_to_render_it_again() -> None:
    d = rollback(h=health(**GOOD))
    assert d.last_known_good == RevisionRecord(revision=V2, image="shop/cart:crashloop", spec=SPEC2)


def test_degraded_message_says_why_nothing_happened() -> None:
    d = rollback(h=health(**CRASH3), lkg=None)
    assert "no last known good revision" in d.message
    d = rollback(h=health(**CRASH3), failover=Failover(rollback=False))
    assert "rollback is disabled" in d.message


def test_rollback_needs_health_of_the_desired_revision() -> None:
    with pytest.raises(ValueError, match="rev-1"):
        rollback(h=health(V1))


def test_rollback_happens_once_and_survives_restart() -> None:
    """Feed each decision's records back in, as status would after a restart."""
    first = rollback(h=health(**CRASH3))
    assert first.action == "rollback"
    for _ in range(3):
        again = rollback(
            h=health(V1, **GOOD), lkg=first.last_known_good, quarantined=first.quarantine
        )
        assert again.action == "stay_rolled_back"
        assert again.quarantine == first.quarantine  # same record: no new time, no new Event
        assert again.last_known_good == LKG1
    forward = rollback(desired=V3, h=health(V3, **GOOD), quarantined=first.quarantine)
    assert (forward.action, forward.quarantine, forward.quarantine_cleared) == (
        "record_good",
        None,
        True,
    )
    assert forward.last_known_good == RevisionRecord(revision=V3, image="shop/cart:3", spec=SPEC3)


# --------------------------------------------------------------------------- traffic

STANDBY = Failover(
    min_healthy_ratio=0.5,
    failover_after_seconds=30,
    failback_after_seconds=120,
    standby=Standby(replicas=1),
)
SICK = health(V1, ready=0, ratio=0.0, healthy=False)
WELL = health(V1, ready=3, ratio=1.0, healthy=True)
PART = health(V1, ready=1, ratio=1 / 3, healthy=False)


def track(
    h: Health,
    state: FailoverState | None,
    active: str | None,
    now: float,
    *,
    standby_ready: int = 0,
    configured: bool = True,
    failover: Failover = STANDBY,
    failback_requested: bool = False,
) -> Any:
    return decide_track(
        health=h,
        state=state,
        active_track=active,
        standby_configured=configured,
        standby_ready=standby_ready,
        standby_replicas_needed=3,
        failover=failover,
        now=at(now),
        failback_requested=failback_requested,
    )


UNHEALTHY_AT_0 = FailoverState(unhealthy_since=iso(0))
HEALTHY_AT_0 = FailoverState(healthy_since=iso(0))


class TrackCase(NamedTuple):
    h: Health
    state: FailoverState | None
    active: str | None
    now: float
    standby_ready: int
    track: str
    standby_replicas: int
    reason: str
    next_check_after: float | None
    state_after: FailoverState


TRACK = {
    "healthy primary": TrackCase(
        WELL, None, None, 0, 1, "primary", 1, "PrimaryHealthy", None, HEALTHY_AT_0
    ),
    "primary turns unhealthy": TrackCase(
        SICK,
        HEALTHY_AT_0,
        "primary",
        10,
        1,
        "primary",
        1,
        "PrimaryUnhealthy",
        30.0,
        FailoverState(unhealthy_since=iso(10)),
    ),
    "unhealthy 29s: not yet": TrackCase(
        SICK,
        UNHEALTHY_AT_0,
        "primary",
        29,
        3,
        "primary",
        1,
        "PrimaryUnhealthy",
        1.0,
        UNHEALTHY_AT_0,
    ),
    "unhealthy 30s: fail over": TrackCase(
        SICK,
        UNHEALTHY_AT_0,
        "primary",
        30,
        2,
        "standby",
        3,
        "PrimaryUnhealthy",
        None,
        UNHEALTHY_AT_0,
    ),
    "standby not ready: scale up first, no switch": TrackCase(
        SICK,
        UNHEALTHY_AT_0,
        "primary",
        30,
        0,
        "primary",
        3,
        "WaitingForStandby",
        None,
        UNHEALTHY_AT_0,
    ),
    "standby 1 of 2, primary has 1 too: wait": TrackCase(
        PART,
        UNHEALTHY_AT_0,
        "primary",
        60,
        1,
        "primary",
        3,
        "WaitingForStandby",
        None,
        UNHEALTHY_AT_0,
    ),
    "standby 1 of 2 beats a dead primary": TrackCase(
        SICK,
        UNHEALTHY_AT_0,
        "primary",
        60,
        1,
        "standby",
        3,
        "PrimaryUnhealthy",
        None,
        UNHEALTHY_AT_0,
    ),
    "primary still sick: stay on standby": TrackCase(
        SICK,
        UNHEALTHY_AT_0,
        "standby",
        500,
        3,
        "standby",
        3,
        "FailedOver",
        None,
        UNHEALTHY_AT_0,
    ),
    "primary healed: failback clock starts": TrackCase(
        WELL,
        UNHEALTHY_AT_0,
        "standby",
        100,
        3,
        "standby",
        3,
        "FailedOver",
        120.0,
        FailoverState(healthy_since=iso(100)),
    ),
    "healthy 119s: not yet": TrackCase(
        WELL, HEALTHY_AT_0, "standby", 119, 3, "standby", 3, "FailedOver", 1.0, HEALTHY_AT_0
    ),
    "healthy 120s: fail back": TrackCase(
        WELL,
        HEALTHY_AT_0,
        "standby",
        120,
        3,
        "primary",
        1,
        "PrimaryRecovered",
        None,
        HEALTHY_AT_0,
    ),
    "a flap resets the healthy clock": TrackCase(
        PART,
        HEALTHY_AT_0,
        "standby",
        110,
        3,
        "standby",
        3,
        "FailedOver",
        None,
        FailoverState(unhealthy_since=iso(110)),
    ),
    "standby lost its pods: back to a partly working primary": TrackCase(
        PART,
        UNHEALTHY_AT_0,
        "standby",
        200,
        0,
        "primary",
        1,
        "StandbyUnavailable",
        None,
        UNHEALTHY_AT_0,
    ),
    "standby lost its pods, primary has none either: stay": TrackCase(
        SICK,
        UNHEALTHY_AT_0,
        "standby",
        200,
        0,
        "standby",
        3,
        "FailedOver",
        None,
        UNHEALTHY_AT_0,
    ),
}


@pytest.mark.parametrize("case", TRACK.values(), ids=list(TRACK))
def test_decide_track(case: TrackCase) -> None:
    d = track(case.h, case.state, case.active, case.now, standby_ready=case.standby_ready)
    assert d.active_track == case.track, d.message
    assert d.standby_replicas == case.standby_replicas
    assert d.reason == case.reason
    assert d.next_check_after == case.next_check_after
    assert d.state == case.state_after
    before = case.active or "primary"
    assert d.switched is (case.track != before)
    if d.switched:
        assert d.last_failover == FailoverEvent(
            time=iso(case.now), from_track=before, to_track=case.track, reason=case.reason
        )
    else:
        assert d.last_failover is None


NO_STANDBY = {
    "healthy": (WELL, None, None, "NoStandby", FailoverState()),
    "unhealthy, no timers": (
        SICK,
        FailoverState(revision_since=iso(0)),
        "primary",
        "NoStandby",
        FailoverState(revision_since=iso(0)),
    ),
    "stale timers cleared once": (
        SICK,
        FailoverState(unhealthy_since=iso(0), revision_since=iso(0)),
        "primary",
        "NoStandby",
        FailoverState(revision_since=iso(0)),
    ),
    "standby removed while active, primary healthy": (
        WELL,
        UNHEALTHY_AT_0,
        "standby",
        "StandbyRemoved",
        FailoverState(),
    ),
}


@pytest.mark.parametrize("configured", [False, True])
def test_removed_standby_keeps_traffic_until_the_primary_is_healthy(configured: bool) -> None:
    failover = STANDBY if not configured else replace_standby(None)
    d = track(
        SICK, UNHEALTHY_AT_0, "standby", 1000, standby_ready=2, configured=False, failover=failover
    )
    assert (d.active_track, d.reason, d.switched) == ("standby", "StandbyRemoved", False)
    assert "once the primary is healthy" in d.message
    # Nothing left to serve from: back at once.
    gone = track(
        SICK, UNHEALTHY_AT_0, "standby", 1000, standby_ready=0, configured=False, failover=failover
    )
    assert (gone.active_track, gone.switched) == ("primary", True)


def test_failback_on_request_skips_the_wait_only_when_the_primary_is_healthy() -> None:
    state = FailoverState(healthy_since=iso(999))  # healthy for 1 s of the 120 s wait
    now_well = track(WELL, state, "standby", 1000, standby_ready=3, failback_requested=True)
    assert (now_well.active_track, now_well.reason) == ("primary", "FailbackRequested")
    assert now_well.switched
    sick = track(SICK, UNHEALTHY_AT_0, "standby", 1000, standby_ready=3, failback_requested=True)
    assert (sick.active_track, sick.switched) == ("standby", False)


@pytest.mark.parametrize(
    ("h", "state", "active", "reason", "state_after"), NO_STANDBY.values(), ids=list(NO_STANDBY)
)
def test_no_standby_always_primary(
    h: Health,
    state: FailoverState | None,
    active: str | None,
    reason: str,
    state_after: FailoverState,
) -> None:
    for configured, failover in ((False, STANDBY), (True, replace_standby(None))):
        d = track(h, state, active, 1000, standby_ready=5, configured=configured, failover=failover)
        assert (d.active_track, d.standby_replicas, d.reason) == ("primary", 0, reason)
        assert d.state == state_after
        assert d.switched is (active == "standby")
        assert d.next_check_after is None


def replace_standby(standby: Standby | None) -> Failover:
    return STANDBY.model_copy(update={"standby": standby})


@pytest.mark.parametrize(("h", "field"), [(SICK, "unhealthy_since"), (WELL, "healthy_since")])
def test_unchanged_timers_are_not_rewritten(h: Health, field: str) -> None:
    stamp = "2026-11-28T02:00:00.000000Z"  # same instant as iso(0), spelled differently
    state = FailoverState(**{field: stamp})
    d = track(h, state, "primary", 10, standby_ready=3)
    assert getattr(d.state, field) == stamp
    assert d.state == state


def run(
    timeline: Sequence[tuple[float, Health]], *, standby_ready: int = 3
) -> list[tuple[float, str]]:
    """Feed observations in order, carrying state and track; return the switches."""
    state: FailoverState | None = None
    active = "primary"
    switches: list[tuple[float, str]] = []
    for now, h in timeline:
        d = track(h, state, active, now, standby_ready=standby_ready)
        state, active = d.state, d.active_track
        if d.switched:
            switches.append((now, active))
    return switches


def test_short_unhealthy_blips_never_fail_over() -> None:
    timeline = [(t, SICK if (t // 10) % 3 == 1 else WELL) for t in range(0, 600, 5)]
    assert run(timeline) == []


def test_flapping_primary_keeps_traffic_on_standby() -> None:
    sick = [(float(t), SICK) for t in range(0, 40, 10)]  # fails over at 30
    flapping = [(float(t), PART if (t // 10) % 2 else WELL) for t in range(40, 600, 10)]
    healed = [(float(t), WELL) for t in range(600, 800, 10)]
    switches = run(sick + flapping + healed)
    # Back only after 120s of continuous health from t=600, never during the flapping.
    assert switches == [(30.0, "standby"), (720.0, "primary")]


def test_unhealthy_clock_restarts_after_failback() -> None:
    timeline = [(0.0, SICK), (30.0, SICK), (40.0, WELL), (160.0, WELL)]
    timeline += [(170.0, SICK), (199.0, SICK), (200.0, SICK)]
    assert run(timeline) == [(30.0, "standby"), (160.0, "primary"), (200.0, "standby")]


@pytest.mark.parametrize(
    ("needed", "ratio", "expected"),
    [
        (3, 0.5, 2),
        (4, 0.5, 2),
        (5, 0.5, 3),
        (10, 0.3, 3),
        (25, 0.56, 14),
        (4, 1.0, 4),
        (1, 0.1, 1),
        (0, 0.5, 1),
    ],
)
def test_required_standby_ready(needed: int, ratio: float, expected: int) -> None:
    assert required_standby_ready(needed, ratio) == expected


# --------------------------------------------------------------------------- remediation

NOW = at(1000)
REMEDIATE = Failover(
    pod_unhealthy_seconds=300, max_remediations_per_window=1, remediation_window_seconds=600
)


def dep(desired: int, **kw: Any) -> DeploymentObservation:
    base = DeploymentObservation(
        name="cart",
        generation=1,
        observed_generation=1,
        desired=desired,
        replicas=desired,
        ready=desired,
        available=desired,
        updated=desired,
        unavailable=0,
        revision=V1,
        available_condition=True,
        progressing_condition=True,
        progress_deadline_exceeded=False,
        progressing_message="",
    )
    return replace(base, **kw)


def pod(name: str, stuck_for: float | None = None, **kw: Any) -> PodObservation:
    """A ready pod, or one NotReady for ``stuck_for`` seconds before NOW."""
    base = PodObservation(
        name=name,
        revision=V1,
        phase="Running",
        ready=stuck_for is None,
        not_ready_since=None if stuck_for is None else NOW - timedelta(seconds=stuck_for),
        deleting=False,
        scheduled=True,
        restarts=0,
        waiting_reason=None,
        created=T0,
    )
    return replace(base, **kw)


def remediate(
    pods: list[PodObservation],
    *,
    desired: int | None = None,
    remediations: list[str] | None = None,
    pdb: int | None = None,
    failover: Failover = REMEDIATE,
    **dep_kw: Any,
) -> Any:
    n = len(pods) if desired is None else desired
    ready = sum(p.ready and p.active for p in pods)
    d = dep(n, ready=ready, available=ready, **dep_kw)
    h = assess(d, pods, failover, NOW, revision=V1, revision_since=T0)
    return decide_remediation(
        health=h,
        pods=pods,
        state=FailoverState(remediations=remediations),
        failover=failover,
        disruption_allowed=pdb,
        now=NOW,
    )


RECENT = format_time(NOW - timedelta(seconds=100))
EXPIRED = format_time(NOW - timedelta(seconds=600))  # exactly one window old
STAMP = format_time(NOW)


BUDGET3 = REMEDIATE.model_copy(update={"max_remediations_per_window": 3})
ONE_STUCK = [pod("a"), pod("b"), pod("c", 999)]
TWO_OF_FIVE = [pod("a"), pod("b"), pod("c"), pod("d", 400), pod("e", 900)]


class RemediationCase(NamedTuple):
    pods: list[PodObservation]
    kwargs: dict[str, Any]
    deleted: tuple[str, ...]
    reason: str
    stamps: tuple[str, ...]


REMEDIATION = {
    "one stuck pod": RemediationCase(
        [pod("a"), pod("b"), pod("c", 300)], {}, ("c",), "Remediated", (STAMP,)
    ),
    "not stuck long enough": RemediationCase(
        [pod("a"), pod("b"), pod("c", 299)], {}, (), "NoStuckPods", ()
    ),
    "disabled by podUnhealthySeconds 0": RemediationCase(
        ONE_STUCK, {"failover": Failover(pod_unhealthy_seconds=0)}, (), "RemediationDisabled", ()
    ),
    "disabled by maxRemediationsPerWindow 0": RemediationCase(
        ONE_STUCK,
        {"failover": Failover(max_remediations_per_window=0)},
        (),
        "RemediationDisabled",
        (),
    ),
    "budget caps deletions, longest stuck first": RemediationCase(
        TWO_OF_FIVE, {}, ("e",), "Remediated", (STAMP,)
    ),
    "bigger budget": RemediationCase(
        TWO_OF_FIVE, {"failover": BUDGET3}, ("e", "d"), "Remediated", (STAMP, STAMP)
    ),
    "budget spent in this window": RemediationCase(
        ONE_STUCK, {"remediations": [RECENT]}, (), "RateLimited", (RECENT,)
    ),
    "window pruning frees the budget": RemediationCase(
        ONE_STUCK, {"remediations": [EXPIRED]}, ("c",), "Remediated", (STAMP,)
    ),
    "window pruning keeps recent stamps": RemediationCase(
        TWO_OF_FIVE,
        {"failover": BUDGET3, "remediations": [EXPIRED, RECENT]},
        ("e", "d"),
        "Remediated",
        (RECENT, STAMP, STAMP),
    ),
    "garbage stamps are pruned": RemediationCase(
        ONE_STUCK, {"remediations": ["nonsense"]}, ("c",), "Remediated", (STAMP,)
    ),
    "more than half unhealthy: dependency outage": RemediationCase(
        [pod("a"), pod("b", 999), pod("c", 999)], {}, (), "DependencyOutage", ()
    ),
    "exactly half unhealthy is not an outage": RemediationCase(
        [pod("a"), pod("b"), pod("c", 999), pod("d", 500)], {}, ("c",), "Remediated", (STAMP,)
    ),
    "missing pods count as unhealthy": RemediationCase(
        [pod("a"), pod("b", 999)], {"desired": 4}, (), "DependencyOutage", ()
    ),
    "a single stuck replica is replaced": RemediationCase(
        [pod("a", 999)], {}, ("a",), "Remediated", (STAMP,)
    ),
    "a single stuck replica is left alone when configured so": RemediationCase(
        [pod("a", 999)],
        {"failover": REMEDIATE.model_copy(update={"remediate_single_replica": False})},
        (),
        "SingleReplica",
        (),
    ),
    "PDB allows no disruption": RemediationCase(ONE_STUCK, {"pdb": 0}, (), "DisruptionBudget", ()),
    "PDB caps below the window budget": RemediationCase(
        TWO_OF_FIVE, {"pdb": 1, "failover": BUDGET3}, ("e",), "Remediated", (STAMP,)
    ),
    "rollout in progress": RemediationCase(
        [pod("a"), pod("b", revision=V2), pod("c", 999)], {}, (), "RolloutInProgress", ()
    ),
    "Deployment not rolled out": RemediationCase(
        ONE_STUCK, {"updated": 2}, (), "RolloutInProgress", ()
    ),
    "unschedulable pods are left alone": RemediationCase(
        [pod("a"), pod("b"), pod("c", 999, scheduled=False, phase="Pending")],
        {},
        (),
        "NoStuckPods",
        (),
    ),
    "terminating pods are left alone": RemediationCase(
        [pod("a"), pod("b"), pod("c", 999, deleting=True)], {}, (), "NoStuckPods", ()
    ),
}


@pytest.mark.parametrize("case", REMEDIATION.values(), ids=list(REMEDIATION))
def test_decide_remediation(case: RemediationCase) -> None:
    d = remediate(case.pods, **case.kwargs)
    assert d.pods_to_delete == case.deleted, d.message
    assert d.reason == case.reason
    assert d.remediations == case.stamps
    assert d.state.remediations == (list(case.stamps) or None)


@pytest.mark.parametrize(
    ("pods", "remediations", "after"),
    [
        ([pod("a"), pod("b"), pod("c", 299)], None, 1.0),  # stuck in one second
        ([pod("a"), pod("b"), pod("c", 100), pod("d", 250)], None, 50.0),
        ([pod("a"), pod("b"), pod("c")], None, None),  # nothing is NotReady
        ([pod("a"), pod("b"), pod("c", 999)], [RECENT], 500.0),  # budget frees up in 500s
        ([pod("a"), pod("b"), pod("c", 999)], None, None),  # acted now
    ],
)
def test_remediation_next_check(
    pods: list[PodObservation], remediations: list[str] | None, after: float | None
) -> None:
    assert remediate(pods, remediations=remediations).next_check_after == after


def test_remediation_state_untouched_when_nothing_changes() -> None:
    state = FailoverState(revision_since=iso(0), remediations=[RECENT])
    pods = [pod("a"), pod("b"), pod("c")]
    h = assess(dep(3), pods, REMEDIATE, NOW, revision=V1, revision_since=T0)
    d = decide_remediation(
        health=h, pods=pods, state=state, failover=REMEDIATE, disruption_allowed=None, now=NOW
    )
    assert d.state is state
    assert d.message == "No pod is stuck NotReady."


def test_remediation_message_names_pods() -> None:
    d = remediate([pod("a"), pod("b"), pod("c", 999)])
    assert d.message == "Deleted c: NotReady for 300s+."
    d = remediate([pod("a"), pod("b", 999), pod("c", 999)])
    assert d.message == (
        "2/3 pods not ready at once: likely a dependency outage; deleting pods would not help."
    )


@pytest.mark.parametrize(
    ("errors", "reason"),
    [
        ((("p3", "ImagePullBackOff"),), "ImagePullError"),
        ((("p3", "CreateContainerConfigError"),), "ContainerConfigError"),
    ],
)
def test_image_and_config_errors_roll_back_before_the_deadline(
    errors: tuple[tuple[str, str], ...], reason: str
) -> None:
    d = rollback(h=health(image_errors=errors))
    assert (d.action, d.reason, d.revision) == ("rollback", reason, V1)
    assert errors[0][1] in d.message and "20s" in d.message  # the waiting reason, the grace
    assert d.quarantine is not None and d.quarantine.reason == reason
