"""Service-level analysis (pure): PromQL templates, outcomes, counters and verdicts.

``spec.failover.analysis`` holds checks: a PromQL template, a threshold and a direction,
an interval and a failure limit. The :mod:`analyzer` runs the queries (the only I/O);
this module decides what a result means, so every rule is a table-driven unit test:

- ``render_query`` fills the placeholders of one check for one track and revision.
- ``measure`` reads Prometheus's answer: one number, or why there is none. No data is
  *inconclusive*, never a failure by default: an unreachable Prometheus, a query error,
  an empty result, more than one series or NaN (0/0, no traffic) say nothing about the
  release, and a failover tool must not roll back because its monitoring broke.
- ``judge`` compares the number with the threshold; ``advance`` keeps the counters of
  consecutive failures and passes per check, track and revision.
- ``verdict`` sums the checks of one revision up for the decisions in :mod:`failover`:
  ``failed`` (a check reached failureLimit: roll back), ``failing`` (a check's last
  result failed: a proven primary is sick), ``proven`` (every check passed successLimit
  times in a row) or none of these (still analysing, or inconclusive).

The counters live in the running operator only. A restarted operator counts afresh,
which can delay a rollback by up to failureLimit intervals but never hasten one:
status, which anyone may write, is a report here, never evidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .api import Analysis, AnalysisCheck, AnalysisResult
from .health import format_time

Outcome = Literal["Passed", "Failed", "Inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("Passed", "Failed", "Inconclusive")

_PLACEHOLDER = re.compile(r"\{\{ *([a-z]+) *\}\}")


def render_query(
    check: AnalysisCheck, *, namespace: str, name: str, track: str, revision: str
) -> str:
    """The check's query for one track and revision of a MicroService."""
    values = {
        "namespace": namespace,
        "name": name,
        "track": track,
        "revision": revision,
        "interval": f"{check.interval_seconds}s",
    }
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), check.query)


@dataclass(frozen=True)
class Measurement:
    """One query's answer: a value, or why there is none (``problem``)."""

    value: float | None
    problem: str = ""


def measure(body: Any) -> Measurement:
    """Read a Prometheus ``/api/v1/query`` answer (the parsed JSON)."""
    if not isinstance(body, Mapping):
        return Measurement(None, "Prometheus answered with something that is not JSON")
    if body.get("status") != "success":
        error = str(body.get("error") or "unknown error")
        return Measurement(None, f"query failed: {body.get('errorType', 'error')}: {error}")
    data = body.get("data")
    data = data if isinstance(data, Mapping) else {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        raw = result[1]
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return Measurement(None, "no data (empty result)")
        if len(result) > 1:
            return Measurement(
                None, f"{len(result)} series; the query must yield one (aggregate with sum or max)"
            )
        sample = result[0] if isinstance(result[0], Mapping) else {}
        value = sample.get("value")
        raw = value[1] if isinstance(value, list) and len(value) == 2 else None
    else:
        return Measurement(None, f"a {kind} result; the query must yield one number")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return Measurement(None, f"not a number: {raw!r}")
    if math.isnan(number):
        return Measurement(None, "no data (NaN, e.g. no requests in the window)")
    return Measurement(number)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def judge(check: AnalysisCheck, m: Measurement) -> tuple[Outcome, str, str]:
    """Outcome, message and detail of one measurement. The message leaves the value
    out, so that it stays the same from one result to the next (it is in status, and
    status is written only when it changes); the detail, for Events, has it."""
    if m.value is None:
        return "Inconclusive", m.problem, m.problem
    above = m.value > check.threshold
    below = m.value < check.threshold
    bad = above if check.fail_when == "Above" else below
    limit = _fmt(check.threshold)
    if bad:
        side = "above" if check.fail_when == "Above" else "below"
        message = f"{check.name} {side} the threshold {limit}"
        return "Failed", message, f"{check.name} = {_fmt(m.value)}, {side} the threshold {limit}"
    side = "at most" if check.fail_when == "Above" else "at least"
    message = f"{check.name} {side} {limit}"
    return "Passed", message, f"{check.name} = {_fmt(m.value)}, {side} {limit}"


@dataclass(frozen=True)
class CheckState:
    """What one check has said about one track and revision, and since when."""

    check: str
    track: str
    revision: str
    outcome: Outcome
    since: datetime
    message: str
    failures: int = 0  # results counted as failures in a row, capped at failureLimit
    passes: int = 0  # passes in a row, capped at successLimit
    value: float | None = None  # the last value (for metrics; not part of the report)
    detail: str = ""  # the message with the value, for Events
    definition: AnalysisCheck | None = None  # the check as it was when measured

    def report(self) -> AnalysisResult:
        """What status shows: stable while the outcome holds (the value is in metrics)."""
        return AnalysisResult(
            check=self.check,
            track=self.track,
            revision=self.revision,
            outcome=self.outcome,
            consecutive_failures=self.failures,
            since=format_time(self.since),
            message=self.message,
        )

    def view(self) -> tuple[Any, ...]:
        """Everything a decision or the report reads: a new view is worth a reconcile."""
        return (
            self.check,
            self.track,
            self.revision,
            self.outcome,
            self.since,
            self.message,
            self.failures,
            self.passes,
            self.definition,
        )


def counts_as_failure(outcome: Outcome, analysis: Analysis) -> bool:
    return outcome == "Failed" or (outcome == "Inconclusive" and analysis.inconclusive_is_failure)


def advance(
    prev: CheckState | None,
    check: AnalysisCheck,
    analysis: Analysis,
    *,
    track: str,
    revision: str,
    measurement: Measurement,
    now: datetime,
) -> CheckState:
    """The state after one more measurement of ``check`` for ``track``/``revision``.

    A failure adds to the failures in a row and ends the passes; a pass the reverse.
    A result without data (inconclusive, unless it counts as a failure) changes
    neither: it says nothing about the release, so it must not wipe out failures
    seen before it (a canary with little traffic would never reach its limit) nor
    passes."""
    outcome, message, detail = judge(check, measurement)
    failed = counts_as_failure(outcome, analysis)
    if prev is not None and (
        (prev.check, prev.track, prev.revision) != (check.name, track, revision)
        or prev.definition != check
    ):
        prev = None
    failures, passes = (prev.failures, prev.passes) if prev is not None else (0, 0)
    if failed:
        failures, passes = min(check.failure_limit, failures + 1), 0
    elif outcome == "Passed":
        failures, passes = 0, min(check.success_limit, passes + 1)
    since = prev.since if prev is not None and prev.outcome == outcome else now
    if failed and outcome == "Failed":
        note = f" ({failures}/{check.failure_limit} in a row)"
    elif failed:
        note = f" (counted as a failure, {failures}/{check.failure_limit} in a row)"
    elif failures:
        note = f" (failures in a row so far: {failures}/{check.failure_limit})"
    else:
        note = ""
    return CheckState(
        check=check.name,
        track=track,
        revision=revision,
        outcome=outcome,
        since=since,
        message=message + note,
        failures=failures,
        passes=passes,
        value=measurement.value,
        detail=detail + note,
        definition=check,
    )


@dataclass(frozen=True)
class Verdict:
    """The checks of one track and revision, summed up."""

    failed: CheckState | None  # reached its failureLimit: the revision is bad
    failing: CheckState | None  # failures in a row, not ended by a pass: the primary is sick
    proven: bool  # every check's latest result passed, successLimit times in a row
    inconclusive: tuple[CheckState, ...]
    waiting: tuple[str, ...]  # checks with no result yet

    @property
    def summary(self) -> str:
        """One line for conditions: stable from one result to the next."""
        if self.failed is not None:
            return self.failed.message
        if self.failing is not None:
            return self.failing.message
        if self.inconclusive:
            first = self.inconclusive[0]
            return f"analysis inconclusive: {first.check}: {first.message}"
        if self.waiting:
            return f"analysis running: waiting for {', '.join(self.waiting)}"
        if self.proven:
            return "analysis passed"
        return "analysis running: not yet passed often enough in a row"


def verdict(
    analysis: Analysis, states: Iterable[CheckState], *, track: str, revision: str
) -> Verdict:
    """Sum up the checks of ``analysis`` for one track and revision. A result measured
    with another definition of its check (the spec changed since) does not count."""
    mine = {s.check: s for s in states if s.track == track and s.revision == revision}
    failed = failing = None
    inconclusive: list[CheckState] = []
    waiting: list[str] = []
    proven = True
    for check in analysis.checks:
        s = mine.get(check.name)
        if s is None or s.definition not in (None, check):
            waiting.append(check.name)
            proven = False
            continue
        if s.failures >= check.failure_limit and failed is None:
            failed = s
        if s.failures > 0 and failing is None:
            failing = s
        if s.outcome == "Inconclusive":
            inconclusive.append(s)
        if s.outcome != "Passed" or s.passes < check.success_limit:
            proven = False
    return Verdict(failed, failing, proven, tuple(inconclusive), tuple(waiting))
