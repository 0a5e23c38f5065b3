"""Canary releases (spec.strategy.canary): the step decision, the rendering, and a
whole release through the planner, from the first step to promotion or quarantine."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from tests.unit.test_failover import GOOD, health
from tests.unit.test_plan import NOW, converged, live_of, pod, ready_deployment, with_history

from microservice_operator import plan, render
from microservice_operator.analysis import Measurement, advance, verdict
from microservice_operator.api import Analysis, AnalysisCheck, Canary, CanaryStep, MicroServiceSpec
from microservice_operator.failover import canary_replicas, decide_canary

CANARY = Canary(steps=[CanaryStep(replicas=1, pause_seconds=30), CanaryStep(percent=50)])


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- the decision


def test_a_step_is_a_count_or_a_share_of_the_desired_replicas_rounded_up() -> None:
    assert canary_replicas(CanaryStep(replicas=2), 10) == 2
    assert canary_replicas(CanaryStep(percent=25), 10) == 3
    assert canary_replicas(CanaryStep(percent=10), 3) == 1
    assert canary_replicas(CanaryStep(percent=100), 4) == 4
    with pytest.raises(ValidationError, match="exactly one of replicas or percent"):
        CanaryStep(replicas=1, percent=10)
    with pytest.raises(ValidationError, match="exactly one of replicas or percent"):
        CanaryStep()


def test_steps_advance_after_their_pause_once_healthy_and_passing() -> None:
    ready1 = health("r2", **{**GOOD, "ready": 1, "desired": 1})

    def decide(step: int, t: float, **kw: Any) -> Any:
        args: dict[str, Any] = {"health": ready1, "analysis": None} | kw
        return decide_canary(canary=CANARY, step=step, since=at(0), desired=4, now=at(t), **args)

    d = decide(0, 10)
    assert (d.step, d.replicas, d.advanced, d.next_check_after) == (0, 1, False, 20)
    d = decide(0, 31)
    assert (d.step, d.replicas, d.advanced, d.since) == (1, 2, True, at(31))  # 50 % of 4
    d = decide(0, 99, health=health("r2"))  # not all canary pods ready: waits
    assert (d.step, d.advanced) == (0, False) and "waiting for the canary pods" in d.message
    d = decide(1, 99, health=health("r2", **{**GOOD, "ready": 2, "desired": 2}))
    assert (d.promoted, d.replicas) == (True, None)

    check = AnalysisCheck(name="errors", query="x", threshold=0.1)
    spec = Analysis(checks=[check])

    def checks(*values: float | None) -> Any:
        state = None
        for v in values:
            m = Measurement(v, "no data")
            state = advance(
                state, check, spec, track="primary", revision="r2", measurement=m, now=NOW
            )
        return verdict(spec, [state] if state else [], track="primary", revision="r2")

    assert decide(0, 99, analysis=checks()).step == 0  # no result yet
    assert decide(0, 99, analysis=checks(None)).step == 0  # inconclusive: waits
    assert decide(0, 99, analysis=checks(0.5)).step == 0  # failing: never advances
    assert decide(0, 99, analysis=checks(0.5, 0.0)).step == 1


def test_the_canary_deployment_selects_only_its_pods_and_the_service_selects_both() -> None:
    spec = MicroServiceSpec.model_validate(
        {"image": "hello:2", "ports": [{"containerPort": 5000, "servicePort": 80}]}
    )
    owner = render.Owner("shop", "ns", "uid-1")
    children = render.build_children(owner, spec, canary_replicas=2)
    canary, primary, svc = children["canary"], children["deployment"], children["service"]
    assert canary is not None and primary is not None and svc is not None
    assert canary["metadata"]["name"] == "shop-canary"
    assert canary["spec"]["replicas"] == 2
    labels = canary["spec"]["template"]["metadata"]["labels"]
    selector = canary["spec"]["selector"]["matchLabels"]
    assert selector == {**primary["spec"]["selector"]["matchLabels"], "mso.dev/canary": "true"}
    assert selector.items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()  # it gets traffic too
    assert "mso.dev/canary" not in primary["spec"]["template"]["metadata"]["labels"]
    assert render.build_children(owner, spec)["canary"] is None


# --------------------------------------------------------------------------- a release


V1 = {
    "image": "hello:1",
    "replicas": 4,
    "ports": [{"containerPort": 5000, "servicePort": 80}],
    "strategy": {
        "canary": {
            "steps": [{"replicas": 1, "pauseSeconds": 30}, {"percent": 50, "pauseSeconds": 0}]
        }
    },
}


def canary_pod(name: str, revision: str, *, restarts: int = 0) -> dict[str, Any]:
    p = pod(name, revision, restarts=restarts, ready=restarts == 0)
    p["metadata"]["labels"]["mso.dev/canary"] = "true"
    return p


def applied(p: plan.Plan, name: str) -> dict[str, Any] | None:
    return next((m for m in p.applies if m["metadata"]["name"] == name), None)


def test_a_good_release_goes_through_every_step_and_is_promoted() -> None:
    obj, observed = converged(V1)
    v1 = obj["status"]["lastKnownGoodRevision"]
    obj["spec"] = {**V1, "image": "hello:2"}
    obj["metadata"]["generation"] = 2

    p = plan.plan(obj, observed, at(0))
    v2 = p.status["desiredRevision"]
    canary = applied(p, "shop-canary")
    assert canary is not None and canary["spec"]["replicas"] == 1
    assert applied(p, "shop") is None  # the stable pods keep running v1
    assert p.status["canary"]["step"] == "1/2"
    assert p.status["currentRevision"] == v1
    prog = next(c for c in p.status["conditions"] if c["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("True", "Canary")
    assert p.status["phase"] == "Progressing"
    assert p.gauges is not None and p.gauges.canary_step == 1

    obj["status"] = p.status
    observed = replace(
        observed, canary=ready_deployment(canary, 1), pods=(*observed.pods, canary_pod("c1", v2))
    )
    p = plan.plan(obj, observed, at(10))
    assert p.status["canary"]["step"] == "1/2" and p.requeue_after == pytest.approx(20.05)
    p = plan.plan(obj, observed, at(31))
    assert [e.reason for e in p.events] == ["CanaryStep"]
    canary = applied(p, "shop-canary")
    assert canary is not None and canary["spec"]["replicas"] == 2  # 50 % of 4
    assert p.status["canary"]["step"] == "2/2"

    obj["status"] = p.status
    observed = replace(
        observed,
        canary=ready_deployment(canary, 2),
        pods=(*observed.pods, canary_pod("c2", v2)),
    )
    p = plan.plan(obj, observed, at(35))  # the last step has no pause: promoted
    assert [e.reason for e in p.events] == ["CanaryPromoted"]
    primary = applied(p, "shop")
    assert (
        primary is not None
        and primary["spec"]["template"]["metadata"]["labels"]["mso.dev/revision"] == v2
    )
    assert ("Deployment", "shop-canary", "uid-shop-canary") in p.deletes
    assert "canary" not in p.status or p.status["canary"] is None

    # Rolled out and healthy on the primary: proven, and the canary state is gone.
    obj["status"] = p.status
    rolled = ready_deployment(primary, 4)
    rolled["metadata"]["resourceVersion"] = "20"
    observed = replace(
        observed, deployment=rolled, canary=None, pods=tuple(pod(f"p{i}", v2) for i in range(4))
    )
    p = plan.plan(obj, observed, at(40))
    assert p.status["lastKnownGoodRevision"] == v2
    obj["status"] = p.status
    p = plan.plan(obj, with_history(observed, p), at(41))
    assert p.status["failoverState"].get("canaryRevision") is None


def crash_looping_canary(
    spec: dict[str, Any],
) -> tuple[dict[str, Any], plan.Observed, str, str]:
    """A MicroService proven on hello:1, now released as hello:crashloop, whose one
    canary pod restarted 5 times: (the object, what is observed, v1, v2)."""
    obj, observed = converged(spec)
    v1 = obj["status"]["lastKnownGoodRevision"]
    obj["spec"] = {**spec, "image": "hello:crashloop"}
    obj["metadata"]["generation"] = 2
    p = plan.plan(obj, observed, at(0))
    v2 = p.status["desiredRevision"]
    canary = applied(p, "shop-canary")
    assert canary is not None
    obj["status"] = p.status
    observed = replace(
        observed,
        canary=live_of(canary, replicas=1, observedGeneration=1),
        pods=(*observed.pods, canary_pod("c1", v2, restarts=5)),
    )
    return obj, observed, v1, v2


def test_a_crash_looping_canary_is_removed_and_quarantined_the_stable_pods_untouched() -> None:
    obj, observed, v1, v2 = crash_looping_canary(V1)
    p = plan.plan(obj, observed, at(20))
    assert [e.reason for e in p.events] == ["RolledBack"]
    assert p.status["quarantinedRevision"] == v2
    assert p.status["quarantine"]["reason"] == "CrashLoop"
    assert ("Deployment", "shop-canary", "uid-shop-canary") in p.deletes
    assert applied(p, "shop") is None  # still v1, as it was all along
    assert p.status["currentRevision"] == v1
    assert p.rollbacks == ["CrashLoop"]
    assert p.status["failoverState"].get("canaryStep") is None  # the canary is over


def test_the_first_release_has_nothing_to_canary_against() -> None:
    p = plan.plan(
        {
            "apiVersion": "mso.dev/v1alpha1",
            "kind": "MicroService",
            "metadata": {"name": "shop", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": copy.deepcopy(V1),
        },
        plan.Observed(),
        NOW,
    )
    assert applied(p, "shop-canary") is None and applied(p, "shop") is not None


def test_with_rollback_off_a_bad_canary_stays_at_its_step_and_is_never_promoted() -> None:
    obj, observed, v1, _ = crash_looping_canary({**V1, "failover": {"rollback": False}})
    for t in (20, 200):
        p = plan.plan(obj, observed, at(t))
        assert not [d for d in p.deletes if d[1] == "shop-canary"]
        assert applied(p, "shop") is None  # never promoted
        assert p.status["currentRevision"] == v1
        assert p.status["canary"]["step"] == "1/2"
        degraded = next(c for c in p.status["conditions"] if c["type"] == "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "CrashLoop")
        obj["status"] = p.status


def at_the_first_step(spec: dict[str, Any]) -> tuple[dict[str, Any], plan.Observed, str]:
    """A converged MicroService of ``spec`` given hello:2 at second 0, its canary at the
    first step with one Ready pod: (MicroService, observed, the new revision)."""
    obj, observed = converged(spec)
    obj["spec"] = {**spec, "image": "hello:2"}
    obj["metadata"]["generation"] = 2
    p = plan.plan(obj, observed, at(0))
    v2 = p.status["desiredRevision"]
    canary = applied(p, "shop-canary")
    assert canary is not None
    obj["status"] = p.status
    observed = replace(
        observed, canary=ready_deployment(canary, 1), pods=(*observed.pods, canary_pod("c1", v2))
    )
    return obj, observed, v2


def test_a_canary_longer_than_the_progress_deadline_is_promoted_not_rolled_back() -> None:
    """The steps (2 x 200 s) outlast progressDeadlineSeconds (300 s): the primary's
    deadline for the promoted revision starts at the promotion."""
    spec = {
        **V1,
        "strategy": {"canary": {"steps": [{"replicas": 1, "pauseSeconds": 200}, {"replicas": 2}]}},
    }
    spec["strategy"]["canary"]["steps"][1]["pauseSeconds"] = 200
    obj, observed, v2 = at_the_first_step(spec)
    p = plan.plan(obj, observed, at(201))
    canary = applied(p, "shop-canary")
    assert canary is not None and p.status["canary"]["step"] == "2/2"
    obj["status"] = p.status
    observed = replace(
        observed,
        canary=ready_deployment(canary, 2),
        pods=(*observed.pods, canary_pod("c2", v2)),
    )
    p = plan.plan(obj, observed, at(402))
    assert [e.reason for e in p.events] == ["CanaryPromoted"]
    assert not p.rollbacks
    obj["status"] = p.status
    p = plan.plan(obj, observed, at(500))  # rolling out on the primary, 98 s after
    assert not p.rollbacks and "quarantinedRevision" not in p.status
    p = plan.plan(obj, observed, at(703))  # 301 s after the promotion: now it is late
    assert p.rollbacks == ["ProgressDeadlineExceeded"]


def test_a_wiped_status_mid_canary_starts_the_steps_again_and_never_promotes() -> None:
    """The step is kept in status.failoverState, which anyone who may patch status can
    wipe: the canary then starts again at step 1 (slower, never sooner), and the
    stable pods keep the last known good, which lives in a ControllerRevision."""
    obj, observed, _ = at_the_first_step(V1)
    v1 = obj["status"]["lastKnownGoodRevision"]  # not promoted: still the first release
    p = plan.plan(obj, observed, at(31))
    assert p.status["canary"]["step"] == "2/2"
    obj["status"] = {}  # wiped
    p = plan.plan(obj, observed, at(32))
    assert p.status["canary"]["step"] == "1/2"
    assert applied(p, "shop") is None  # not promoted: the primary stays on v1
    assert p.status["lastKnownGoodRevision"] == v1
    assert not p.rollbacks
