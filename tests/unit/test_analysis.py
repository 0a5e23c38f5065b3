"""Unit tests for analysis.py and the decisions it feeds: templates, Prometheus answers,
counters, verdicts, rollback, failover, and what the plan reports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from tests.unit.test_failover import GOOD, LATE, LKG1, SPEC2, V2, health
from tests.unit.test_plan import converged, ms, with_history

from microservice_operator import analysis, plan
from microservice_operator.analysis import CheckState, Measurement, advance, measure, verdict
from microservice_operator.api import (
    Analysis,
    AnalysisCheck,
    Failover,
    FailoverState,
    MicroServiceSpec,
    RevisionRecord,
    Standby,
)
from microservice_operator.failover import decide_rollback, decide_track

T0 = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)
ERRORS = AnalysisCheck(
    name="error-ratio",
    query='sum(rate(http_requests_total{namespace="{{ namespace }}",revision="{{revision}}",'
    'code="500"}[{{ interval }}])) / sum(rate(http_requests_total{track="{{ track }}"}[1m]))',
    threshold=0.05,
    interval_seconds=10,
    failure_limit=3,
)
SUCCESS = AnalysisCheck(
    name="success-rate", query="x", threshold=0.9, fail_when="Below", success_limit=2
)
ANALYSIS = Analysis(checks=[ERRORS])
BOTH = Analysis(checks=[ERRORS, SUCCESS])


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1.0, v]} for v in values]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def run(
    check: AnalysisCheck,
    values: list[float | None],
    spec: Analysis = ANALYSIS,
    revision: str = V2,
) -> CheckState:
    state: CheckState | None = None
    for i, v in enumerate(values):
        m = Measurement(v, "" if v is not None else "no data (empty result)")
        t = T0 + timedelta(seconds=10 * i)
        state = advance(
            state, check, spec, track="primary", revision=revision, measurement=m, now=t
        )
    assert state is not None
    return state


# --------------------------------------------------------------------------- the pure parts


def test_placeholders_are_filled_for_one_track_and_revision() -> None:
    q = analysis.render_query(ERRORS, namespace="shop", name="cart", track="primary", revision="r1")
    assert 'namespace="shop"' in q and 'revision="r1"' in q and "[10s]" in q
    assert 'track="primary"' in q and "{{" not in q


@pytest.mark.parametrize(
    "query",
    ["up{job='{{ pod }}'}", "{{namespace", "x{{{ name }}}", "{{ NAME }}"],
)
def test_unknown_placeholders_are_refused_naming_the_field(query: str) -> None:
    with pytest.raises(ValidationError, match="placeholders are"):
        MicroServiceSpec.model_validate(
            {
                "image": "shop/cart:1",
                "failover": {
                    "analysis": {"checks": [{"name": "c", "query": query, "threshold": 1}]}
                },
            }
        )


def test_check_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="must be unique"):
        Analysis(checks=[ERRORS, ERRORS])


@pytest.mark.parametrize(
    ("body", "value", "problem"),
    [
        (vector("0.25"), 0.25, ""),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, 3.0, ""),
        (vector("+Inf"), float("inf"), ""),  # a latency beyond the last bucket is data
        (vector(), None, "no data"),
        (vector("NaN"), None, "NaN"),
        (vector("1", "2"), None, "2 series"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, None, "parse"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, None, "matrix"),
        ("<html>", None, "not JSON"),
    ],
)
def test_prometheus_answers_are_a_value_or_inconclusive(
    body: Any, value: float | None, problem: str
) -> None:
    m = measure(body)
    assert m.value == value
    assert problem in m.problem


def test_thresholds_in_both_directions() -> None:
    assert analysis.judge(ERRORS, Measurement(0.2))[0] == "Failed"
    assert analysis.judge(ERRORS, Measurement(0.05))[0] == "Passed"  # at the threshold
    assert analysis.judge(SUCCESS, Measurement(0.5))[0] == "Failed"
    assert analysis.judge(SUCCESS, Measurement(0.95))[0] == "Passed"
    _, message, detail = analysis.judge(ERRORS, Measurement(0.2))
    assert message == "error-ratio above the threshold 0.05"  # the same at every result
    assert detail == "error-ratio = 0.2, above the threshold 0.05"  # for Events


def test_failures_count_in_a_row_and_a_pass_resets_them() -> None:
    assert run(ERRORS, [0.2, 0.2]).failures == 2
    assert run(ERRORS, [0.2, 0.2, 0.0]).failures == 0
    assert run(ERRORS, [0.2, 0.2, 0.2, 0.2, 0.2]).failures == 3  # capped at the limit
    # No data says nothing: it neither counts nor ends the run (a canary with little
    # traffic still reaches its limit).
    assert run(ERRORS, [0.2, None, 0.2]).failures == 2
    kept = run(ERRORS, [0.2, 0.2, None])
    assert (kept.outcome, kept.failures) == ("Inconclusive", 2)
    assert "failures in a row so far: 2/3" in kept.message
    assert run(ERRORS, [0.0, None]).passes == 1
    # The message is the same from one failing result to the next once at the limit.
    assert run(ERRORS, [0.2] * 3).view() == replace(run(ERRORS, [0.4] * 3)).view()
    state = run(ERRORS, [0.0, 0.2, 0.3])
    assert (state.outcome, state.since) == ("Failed", T0 + timedelta(seconds=10))
    assert "2/3 in a row" in state.message


def test_inconclusive_counts_as_failure_only_when_asked() -> None:
    strict = Analysis(checks=[ERRORS], inconclusive_is_failure=True)
    assert run(ERRORS, [None, None, None]).failures == 0
    assert run(ERRORS, [None, None, None], spec=strict).failures == 3


def test_a_new_revision_starts_counting_afresh() -> None:
    state = run(ERRORS, [0.2, 0.2])
    m = Measurement(0.2)
    again = advance(state, ERRORS, ANALYSIS, track="primary", revision="r9", measurement=m, now=T0)
    assert again.failures == 1


def test_verdict_failed_failing_proven_inconclusive_waiting() -> None:
    def of(states: list[CheckState], spec: Analysis = BOTH) -> analysis.Verdict:
        return verdict(spec, states, track="primary", revision=V2)

    v = of([])
    assert (v.failed, v.proven, v.waiting) == (None, False, ("error-ratio", "success-rate"))
    v = of([run(ERRORS, [0.2, 0.2]), run(SUCCESS, [0.99, 0.99])])
    assert v.failed is None and v.failing is not None and not v.proven
    v = of([run(ERRORS, [0.2, 0.2, 0.2]), run(SUCCESS, [0.99, 0.99])])
    assert v.failed is not None and v.failed.check == "error-ratio"
    v = of([run(ERRORS, [0.0]), run(SUCCESS, [0.99])])
    assert not v.proven  # success-rate needs two passes in a row
    v = of([run(ERRORS, [0.0]), run(SUCCESS, [0.99, 0.99])])
    assert v.proven and v.summary == "analysis passed"
    v = of([run(ERRORS, [None]), run(SUCCESS, [0.99, 0.99])])
    assert v.inconclusive and not v.proven and "inconclusive" in v.summary
    other = of([run(ERRORS, [0.2, 0.2, 0.2], revision="r9")])
    assert other.failed is None  # another revision's results say nothing about this one


# --------------------------------------------------------------------------- decisions


def test_a_healthy_release_is_proven_only_once_its_checks_pass() -> None:
    spec = Failover(analysis=ANALYSIS)

    def decide(v: analysis.Verdict | None, **h: Any) -> Any:
        return decide_rollback(
            desired_revision=V2,
            desired_image=SPEC2["image"],
            desired_spec=SPEC2,
            generation=3,
            health=health(V2, **h),
            last_known_good=LKG1,
            quarantined=None,
            failover=spec,
            now=T0,
            analysis=v,
        )

    waiting = verdict(ANALYSIS, [], track="primary", revision=V2)
    assert (decide(waiting, **GOOD).action, decide(waiting, **GOOD).reason) == (
        "apply_desired",
        "Analyzing",
    )
    passed = verdict(ANALYSIS, [run(ERRORS, [0.01])], track="primary", revision=V2)
    assert decide(passed, **GOOD).action == "record_good"
    two = verdict(ANALYSIS, [run(ERRORS, [0.2, 0.2])], track="primary", revision=V2)
    assert decide(two, **GOOD).action == "apply_desired"  # never before the limit
    three = verdict(ANALYSIS, [run(ERRORS, [0.2, 0.2, 0.2])], track="primary", revision=V2)
    d = decide(three, **GOOD)
    assert (d.action, d.reason) == ("rollback", "AnalysisFailed")
    assert d.quarantine is not None and "error-ratio = 0.2" in d.quarantine.message
    assert "above the threshold 0.05" in d.message
    # Inconclusive never rolls back, not even past the deadline once healthy.
    unsure = verdict(ANALYSIS, [run(ERRORS, [None] * 9)], track="primary", revision=V2)
    assert decide(unsure, **GOOD, **LATE).action == "apply_desired"
    # An unhealthy release still meets its deadline as before.
    assert decide(unsure, **LATE).reason == "ProgressDeadlineExceeded"


STANDBY = Failover(standby=Standby(replicas=1), analysis=ANALYSIS, failover_after_seconds=30)


def test_a_primary_failing_its_checks_fails_over_after_failover_after_seconds() -> None:
    ok = health(V2, **GOOD)
    failing = "error-ratio = 0.2, above the threshold 0.05"

    def track(state: FailoverState | None, active: str, t: float, why: str | None) -> Any:
        return decide_track(
            health=ok,
            state=state,
            active_track=active,
            standby_configured=True,
            standby_ready=2,
            standby_replicas_needed=3,
            failover=STANDBY,
            now=T0 + timedelta(seconds=t),
            analysis_failing=why,
        )

    d = track(None, "primary", 0, failing)
    assert (d.active_track, d.reason) == ("primary", "AnalysisFailed")
    assert "failover in 30s" in d.message
    d = track(d.state, "primary", 20, failing)
    assert d.active_track == "primary"
    d = track(d.state, "primary", 31, failing)
    assert (d.active_track, d.reason) == ("standby", "AnalysisFailed")
    back = decide_track(
        health=ok,
        state=d.state,
        active_track="standby",
        standby_configured=True,
        standby_ready=3,
        standby_replicas_needed=3,
        failover=STANDBY,
        now=T0 + timedelta(seconds=40),
        analysis_failing=None,
    )
    assert back.active_track == "standby"  # healthy again: failback after 120 s
    later = decide_track(
        health=ok,
        state=back.state,
        active_track="standby",
        standby_configured=True,
        standby_ready=3,
        standby_replicas_needed=3,
        failover=STANDBY,
        now=T0 + timedelta(seconds=161),
        analysis_failing=None,
    )
    assert (later.active_track, later.reason) == ("primary", "PrimaryRecovered")


# --------------------------------------------------------------------------- the plan


def spec_with(analysis_spec: dict[str, Any], standby: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "shop/cart:2",
        "replicas": 1,
        "ports": [{"containerPort": 8080, "servicePort": 80}],
        "failover": {"analysis": analysis_spec},
    }
    if standby:
        spec["failover"]["standby"] = {"replicas": 1}
    return spec


def test_the_plan_asks_for_the_new_revision_and_reports_the_condition() -> None:
    spec = spec_with({"checks": [ERRORS.dump()]})
    first = plan.plan(ms(spec), plan.Observed(), T0)
    desired = first.status["desiredRevision"]
    assert first.analysis_targets == (("release", "primary", desired),)
    assert first.analysis_spec is not None and first.analysis_spec.checks[0].name == "error-ratio"
    cond = next(c for c in first.status["conditions"] if c["type"] == "Analysis")
    assert (cond["status"], cond["reason"]) == ("Unknown", "Analyzing")
    failing = run(ERRORS, [0.2], revision=desired)
    again = plan.plan(ms(spec), plan.Observed(analysis=(failing,)), T0)
    cond = next(c for c in again.status["conditions"] if c["type"] == "Analysis")
    assert (cond["status"], cond["reason"]) == ("False", "Failed")
    assert again.status["analysis"][0]["outcome"] == "Failed"
    assert again.status["analysis"][0]["consecutiveFailures"] == 1
    # Without analysis: no targets, no condition.
    plain = {k: v for k, v in spec.items() if k != "failover"}
    assert plan.plan(ms(plain), plan.Observed(), T0).analysis_targets == ()


def test_a_proven_primary_is_analysed_only_with_a_standby() -> None:
    for standby, wanted in ((False, 0), (True, 1)):
        spec = spec_with({"checks": [ERRORS.dump()]}, standby=standby)
        obj, observed = converged(spec)
        rev = obj["status"]["desiredRevision"]
        assert "lastKnownGoodRevision" not in obj["status"]  # healthy, but not yet analysed
        observed = replace(observed, analysis=(run(ERRORS, [0.0], revision=rev),))
        p = plan.plan(obj, observed, T0)
        assert p.status["lastKnownGoodRevision"] == rev
        obj["status"] = p.status
        p = plan.plan(obj, with_history(observed, p), T0)
        assert len(p.analysis_targets) == wanted, (standby, p.analysis_targets)
        if wanted:
            assert p.analysis_targets == (("primary", "primary", rev),)


def test_removing_the_analysis_drops_its_condition_and_report() -> None:
    spec = spec_with({"checks": [ERRORS.dump()]})
    obj = ms(spec)
    obj["status"] = plan.plan(obj, plan.Observed(), T0).status
    plain = {k: v for k, v in spec.items() if k != "failover"}
    obj["spec"] = plain
    p = plan.plan(obj, plan.Observed(), T0)
    assert not [c for c in p.status["conditions"] if c["type"] == "Analysis"]
    assert "analysis" not in p.status or p.status["analysis"] is None


def test_record_is_unaffected_by_analysis_when_lkg_is_the_desired_revision() -> None:
    spec = Failover(analysis=ANALYSIS)
    lkg = RevisionRecord(revision=V2, image=SPEC2["image"], spec=SPEC2)
    waiting = verdict(ANALYSIS, [], track="primary", revision=V2)
    d = decide_rollback(
        desired_revision=V2,
        desired_image=SPEC2["image"],
        desired_spec=SPEC2,
        generation=3,
        health=health(V2, **GOOD),
        last_known_good=lkg,
        quarantined=None,
        failover=spec,
        now=T0,
        analysis=waiting,
    )
    assert d.action == "apply_desired" and d.reason == "RolloutComplete"
    assert LKG1.revision != V2


def test_the_example_with_analysis_and_canary_is_valid() -> None:
    """examples/hello/microservice-slo.yaml, which the README walks through."""
    path = Path(__file__).resolve().parents[2] / "examples/hello/microservice-slo.yaml"
    spec = MicroServiceSpec.model_validate(yaml.safe_load(path.read_text())["spec"])
    assert spec.failover.analysis is not None and spec.strategy and spec.strategy.canary
    q = analysis.render_query(
        spec.failover.analysis.checks[0],
        namespace="ns",
        name="hello",
        track="primary",
        revision="r1",
    )
    assert 'revision="r1"' in q and "{{" not in q


def test_status_analysis_is_a_report_never_evidence() -> None:
    """A status.analysis saying the release failed (written by anyone who may patch
    status) rolls nothing back: only the running analyzer's results count."""
    obj, observed = converged(spec_with({"checks": [ERRORS.dump()]}))
    rev = obj["status"]["desiredRevision"]
    passed = replace(observed, analysis=(run(ERRORS, [0.0], revision=rev),))
    p = plan.plan(obj, passed, T0)
    obj["status"] = p.status
    observed = with_history(passed, p)
    obj["spec"] = {**obj["spec"], "image": "shop/cart:3"}
    obj["metadata"]["generation"] = 2
    p = plan.plan(obj, replace(observed, analysis=()), T0)
    new = p.status["desiredRevision"]
    forged = {
        "check": "error-ratio",
        "track": "primary",
        "revision": new,
        "outcome": "Failed",
        "consecutiveFailures": 3,
        "since": "2026-11-30T05:00:00Z",
        "message": "error-ratio = 1, above the threshold 0.05 (3/3 in a row)",
    }
    obj["status"] = {**p.status, "analysis": [forged]}
    p = plan.plan(obj, replace(observed, analysis=()), T0 + timedelta(seconds=5))
    assert not p.rollbacks and "quarantinedRevision" not in p.status
    cond = next(c for c in p.status["conditions"] if c["type"] == "Analysis")
    assert (cond["status"], cond["reason"]) == ("Unknown", "Analyzing")


def test_results_measured_with_an_older_definition_of_a_check_do_not_count() -> None:
    """Lowering failureLimit from 5 to 3 with 3 failures on record rolls nothing back:
    those were counted against the old definition."""
    lenient = ERRORS.model_copy(update={"failure_limit": 5})
    old = run(lenient, [0.2, 0.2, 0.2], spec=Analysis(checks=[lenient]))
    v = verdict(ANALYSIS, [old], track="primary", revision=V2)
    assert v.failed is None and v.waiting == ("error-ratio",)
