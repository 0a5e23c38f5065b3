"""Health history -> failover actions (pure).

The operator must never become the cause of an outage, so every destructive step
(rolling a release back, moving traffic, deleting a pod) is decided here, from
values only: the spec, a :class:`~microservice_operator.health.Health` verdict, the
records kept in status, and ``now``. No I/O and no clock, so each rule is pinned by
a table-driven unit test, and because all memory lives in status the decisions
survive an operator restart unchanged.

A reconcile: observe -> ``target_revision`` -> ``revision_clock`` -> ``assess`` ->
``decide_rollback`` / ``decide_track`` / ``decide_remediation`` -> act, passing the
``state`` each returns to the next. ``format_time``/``parse_time`` are re-exported so
callers use one time format everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from .analysis import Verdict
from .api import (
    Canary,
    CanaryStep,
    Failover,
    FailoverEvent,
    FailoverState,
    QuarantineRecord,
    RevisionRecord,
    Track,
)
from .health import Health, PodObservation, format_precise
from .health import format_time as format_time  # noqa: PLC0414
from .health import parse_time as parse_time  # noqa: PLC0414

RollbackAction = Literal[
    "apply_desired", "record_good", "rollback", "stay_rolled_back", "degraded_no_rollback"
]


def target_revision(
    *,
    desired_revision: str,
    last_known_good: RevisionRecord | None,
    quarantined: QuarantineRecord | None,
) -> str:
    """The revision the primary Deployment should be running before this reconcile's
    rollback decision: the last known good one while the desired one is quarantined.
    Assess health against this revision, so a rolled-back service reports its real
    rollout state instead of the quarantined revision's."""
    if quarantined is None or quarantined.revision != desired_revision or not last_known_good:
        return desired_revision
    return last_known_good.revision


def revision_clock(
    state: FailoverState | None, *, revision: str, previous_revision: str | None, now: datetime
) -> FailoverState:
    """Restart the progress-deadline clock (``revisionSince``) when the revision the
    Deployment should run changes (pass ``status.currentRevision`` as
    ``previous_revision``); otherwise keep it, so the deadline survives restarts."""
    state = state or FailoverState()
    if revision == previous_revision and parse_time(state.revision_since) is not None:
        return state
    return state.model_copy(update={"revision_since": format_precise(now), "attempt_since": None})


# --------------------------------------------------------------------------- rollback


@dataclass(frozen=True)
class RollbackDecision:
    """What to render, and the status records to write (``quarantine`` None clears).

    ``render_from`` None means render the desired spec; otherwise render
    ``render_from.spec``. ``rollback`` happens exactly once per quarantine: the next
    reconcile sees the quarantine and answers ``stay_rolled_back`` (no new Event).
    ``degraded_no_rollback`` repeats while the release stays bad; emit its Event when
    the Degraded condition flips, not on every reconcile.
    """

    action: RollbackAction
    revision: str
    render_from: RevisionRecord | None
    last_known_good: RevisionRecord | None
    quarantine: QuarantineRecord | None
    quarantine_cleared: bool
    reason: str
    message: str

    @property
    def rolled_back(self) -> bool:
        """Whether the Deployment runs the last known good instead of the spec."""
        return self.action in ("rollback", "stay_rolled_back")


def decide_rollback(
    *,
    desired_revision: str,
    desired_image: str,
    desired_spec: Mapping[str, Any],
    generation: int,
    health: Health,
    last_known_good: RevisionRecord | None,
    quarantined: QuarantineRecord | None,
    failover: Failover,
    now: datetime,
    analysis: Verdict | None = None,
) -> RollbackDecision:
    """Roll a bad release back to the last known good, at most once, never in a loop.

    - A quarantine whose revision differs from the desired one is cleared: the spec
      changed, so the new revision gets its chance.
    - The quarantined revision itself is never retried: ``stay_rolled_back``.
    - A desired revision that reached full health with at least one replica becomes
      the last known good (``record_good``; also when its record is stale).
    - An unproven desired revision is bad when a pod of it restarted
      unhealthyThreshold times (CrashLoop), waited on an image or configuration
      error for imageErrorGraceSeconds (ImagePullError, ContainerConfigError), or its
      deadline passed (ProgressDeadlineExceeded), or one of its analysis checks
      failed failureLimit times in a row (AnalysisFailed). Then ``rollback`` if rollback is
      enabled and a last known good of another revision exists, else
      ``degraded_no_rollback``, which keeps applying the spec as written and changes
      nothing else.
    - With ``analysis`` (the verdict of spec.failover.analysis on the desired
      revision), full health is not enough to be proven: every check must also have
      passed successLimit times in a row; until then ``apply_desired`` (Analyzing).
      An inconclusive analysis only waits, whatever the deadline.
    ``health`` must be assessed for ``desired_revision`` unless it is quarantined.
    """
    lkg = last_known_good
    cleared = quarantined is not None and (
        quarantined.revision != desired_revision
        or (lkg is not None and lkg.revision == desired_revision)
    )
    quarantine = None if cleared else quarantined
    note = f" Quarantine of {quarantined.revision} cleared." if cleared and quarantined else ""
    name = f"Revision {desired_revision} ({desired_image})"

    def out(
        action: RollbackAction,
        reason: str,
        message: str,
        render_from: RevisionRecord | None = None,
        *,
        record: RevisionRecord | None = lkg,
        bad: QuarantineRecord | None = quarantine,
    ) -> RollbackDecision:
        revision = render_from.revision if render_from else desired_revision
        return RollbackDecision(
            action, revision, render_from, record, bad, cleared, reason, message + note
        )

    if quarantine is not None:
        if lkg is None:
            msg = f"{name} is quarantined and there is no last known good revision to run."
            return out("degraded_no_rollback", quarantine.reason, msg)
        msg = f"{name} is quarantined ({quarantine.reason}); running last known good revision "
        msg += f"{lkg.revision} ({lkg.image}) until the spec changes."
        if quarantine.message:
            msg += f" Why: {quarantine.message}"
        return out("stay_rolled_back", quarantine.reason, msg, lkg)
    if health.revision != desired_revision:
        raise ValueError(f"health is for revision {health.revision}, not {desired_revision}")
    failed_check = analysis.failed if analysis is not None else None
    if health.fully_healthy and failed_check is None:
        if analysis is not None and not analysis.proven and lkg_differs(lkg, desired_revision):
            return out("apply_desired", "Analyzing", f"{name} is healthy; {analysis.summary}.")
        spec = dict(desired_spec)
        record = RevisionRecord(revision=desired_revision, image=desired_image, spec=spec)
        if health.desired > 0 and record != lkg:
            msg = f"{name} is fully healthy: now the last known good revision."
            return out("record_good", "RolloutComplete", msg, record=record)
        return out("apply_desired", "RolloutComplete", f"{name} is healthy.")
    if lkg is not None and lkg.revision == desired_revision:
        msg = f"{name} is the last known good revision, not rolled back from: {health.summary}."
        return out("apply_desired", "LastKnownGood", msg)
    if health.over_restart_threshold:
        reason = "CrashLoop"
        problem = f"restarted {failover.unhealthy_threshold}+ times: "
        problem += ", ".join(health.over_restart_threshold)
    elif health.image_errors:
        reasons = sorted({r for _, r in health.image_errors})
        pull = any("Image" in r for r in reasons)
        reason = "ImagePullError" if pull else "ContainerConfigError"
        pods = ", ".join(f"{n} ({r})" for n, r in health.image_errors)
        problem = f"{'/'.join(reasons)} for {failover.image_error_grace_seconds}s+: {pods}"
    elif failed_check is not None:
        reason = "AnalysisFailed"
        problem = f"analysis check {failed_check.message}"
    elif health.deadline_exceeded:
        reason = "ProgressDeadlineExceeded"
        problem = f"not healthy within {failover.progress_deadline_seconds}s: {health.summary}"
    else:
        return out("apply_desired", "Progressing", f"{name} is rolling out: {health.summary}.")
    what = f"{name} is bad ({problem})"
    if lkg is None:
        msg = f"{what}; no last known good revision to roll back to, leaving it as is."
        return out("degraded_no_rollback", reason, msg)
    if not failover.rollback:
        msg = f"{what}; rollback is disabled (spec.failover.rollback: false)."
        return out("degraded_no_rollback", reason, msg)
    if reason == "AnalysisFailed" and failed_check is not None and failed_check.detail:
        # Said once (Event, quarantine), so with the value; conditions that repeat
        # while it stays bad (degraded, above) leave the value out.
        what = f"{name} is bad (analysis check {failed_check.detail})"
    msg = f"{what}; rolled back to revision {lkg.revision} ({lkg.image})."
    bad = QuarantineRecord(
        revision=desired_revision,
        image=desired_image,
        reason=reason,
        message=msg,
        time=format_time(now),
        generation=generation,
    )
    return out("rollback", reason, msg, lkg, bad=bad)


def lkg_differs(lkg: RevisionRecord | None, revision: str) -> bool:
    """Whether ``revision`` still has to prove itself (it is not the last known good)."""
    return lkg is None or lkg.revision != revision


# --------------------------------------------------------------------------- traffic


@dataclass(frozen=True)
class TrackDecision:
    """Where the Service should point and how big the standby should be.

    Apply the Service selector before scaling the standby down on failback.
    ``last_failover`` is set only when ``switched``; ``next_check_after`` is the
    seconds until the passing of time alone would change this decision.
    """

    active_track: Track
    standby_replicas: int
    state: FailoverState
    switched: bool
    reason: str
    message: str
    next_check_after: float | None
    last_failover: FailoverEvent | None


def required_standby_ready(needed: int, min_healthy_ratio: float) -> int:
    """Ready standby pods needed before traffic moves: enough to count as healthy
    by the primary's own yardstick, min(needed, ceil(needed * minHealthyRatio)), and
    at least one."""
    # The epsilon keeps 25 * 0.56 == 14.000000000000002 from rounding up to 15.
    return max(1, min(needed, math.ceil(needed * min_healthy_ratio - 1e-9)))


def decide_track(
    *,
    health: Health,
    state: FailoverState | None,
    active_track: str | None,
    standby_configured: bool,
    standby_ready: int,
    standby_replicas_needed: int,
    failover: Failover,
    now: datetime,
    failback_requested: bool = False,
    analysis_failing: str | None = None,
) -> TrackDecision:
    """Move traffic to the warm standby when the primary stays sick, back when it
    stays well, with hysteresis so a flapping primary cannot make traffic flap.

    - Timers: an unhealthy observation (ratio < minHealthyRatio) clears
      ``healthySince`` and starts ``unhealthySince``; a healthy one does the reverse.
      Only continuous spans count.
    - On primary, after failoverAfterSeconds unhealthy: scale the standby to
      ``max(standby.replicas, standby_replicas_needed)`` (pass the primary's desired
      replicas), and switch once the standby has ``required_standby_ready`` ready pods,
      or more ready pods than the primary (something beats nothing).
    - On standby, after failbackAfterSeconds healthy: switch back and scale the standby
      to standby.replicas. Also back, at once, when the standby has no ready pod left
      and the primary has some.
    - ``failback_requested`` (the ``mso.dev/failback`` annotation): back at once,
      without waiting failbackAfterSeconds, if the primary's pods are healthy (a
      human's call: its checks may have no data while it gets no traffic).
    - ``analysis_failing`` (the message of a failing analysis check of the proven
      primary) makes a primary with enough ready pods count as unhealthy too:
      users feel errors and latency, not readiness. An inconclusive analysis does not.
    - Without a standby: primary, timers cleared once, standby_replicas 0. Except
      when the standby was removed from the spec while it carried traffic and still
      has ready pods: traffic stays there until the primary is healthy.
    """
    state = new_state = state or FailoverState()
    current: Track = "standby" if active_track == "standby" else "primary"
    track: Track = "primary"
    wait: float | None = None
    if not standby_configured or failover.standby is None:
        size, msg, reason = 0, "No standby configured.", "NoStandby"
        ratio = f"primary {health.ready}/{health.desired} ready"
        if current == "standby" and standby_ready > 0 and not health.healthy:
            track, reason = "standby", "StandbyRemoved"
            msg = (
                "spec.failover.standby was removed while the standby carries traffic; "
                f"traffic moves back once the primary is healthy ({ratio}, needs "
                f"{failover.min_healthy_ratio:g})."
            )
        elif current == "standby":
            reason, msg = "StandbyRemoved", f"Standby removed; traffic back on the {ratio}."
        if state.unhealthy_since is not None or state.healthy_since is not None:
            new_state = state.model_copy(update={"unhealthy_since": None, "healthy_since": None})
    else:
        base = failover.standby.replicas
        scaled = max(base, standby_replicas_needed)
        well = health.healthy and analysis_failing is None
        healthy_since = (parse_time(state.healthy_since) or now) if well else None
        unhealthy_since = None if well else (parse_time(state.unhealthy_since) or now)
        new_state = state.model_copy(
            update={
                "healthy_since": _keep(state.healthy_since, healthy_since),
                "unhealthy_since": _keep(state.unhealthy_since, unhealthy_since),
            }
        )
        ratio = f"Primary {health.ready}/{health.desired} ready"
        sick = f"{ratio}, below {failover.min_healthy_ratio:g}"
        sick_reason = "PrimaryUnhealthy"
        if health.healthy and analysis_failing is not None:
            ratio = sick = f"Primary failing its analysis: {analysis_failing}"
            sick_reason = "AnalysisFailed"
        if current == "primary" and unhealthy_since is None:
            size, reason, msg = base, "PrimaryHealthy", f"{ratio}."
        elif current == "primary" and unhealthy_since is not None:
            left = failover.failover_after_seconds - (now - unhealthy_since).total_seconds()
            need = required_standby_ready(standby_replicas_needed, failover.min_healthy_ratio)
            if left > 0:
                size, reason, wait = base, sick_reason, left
                msg = f"{sick}; failover in {left:.0f}s."
            elif standby_ready >= need or standby_ready > health.ready:
                track, size, reason = "standby", scaled, sick_reason
                msg = f"{ratio}; traffic moved to the standby ({standby_ready} ready)."
            else:
                size, reason = scaled, "WaitingForStandby"
                msg = f"{ratio}; standby scaled to {scaled}, {standby_ready}/{need} ready."
        else:
            left = None
            if healthy_since is not None:
                left = failover.failback_after_seconds - (now - healthy_since).total_seconds()
            if failback_requested and health.healthy:
                size, reason = base, "FailbackRequested"
                msg = f"{ratio}; traffic back on request (mso.dev/failback)."
            elif left is not None and left <= 0:
                size, reason = base, "PrimaryRecovered"
                msg = f"{ratio}, healthy for {failover.failback_after_seconds}s+; traffic back."
            elif standby_ready == 0 and health.ready > 0:
                size, reason = base, "StandbyUnavailable"
                msg = f"Standby has no ready pod; traffic back on the primary ({ratio})."
            else:
                track, size, reason, wait = "standby", scaled, "FailedOver", left
                msg = f"{ratio}; traffic stays on the standby."
                if left is not None:
                    msg = f"{ratio}; failback in {left:.0f}s if it stays healthy."
    event = FailoverEvent(time=format_time(now), from_track=current, to_track=track, reason=reason)
    switched = track != current
    return TrackDecision(
        track, size, new_state, switched, reason, msg, wait, event if switched else None
    )


def _keep(old: str | None, new: datetime | None) -> str | None:
    """The stored string when it still denotes ``new``, so unchanged timers don't churn."""
    if new is None:
        return None
    return old if parse_time(old) == new else format_precise(new)


# --------------------------------------------------------------------------- remediation


@dataclass(frozen=True)
class RemediationDecision:
    """Pods to delete, longest stuck first, and the updated remediation budget.

    ``state.remediations`` already counts ``pods_to_delete``: write it after the
    deletes (a pod already gone still spent the budget, erring on the safe side).
    """

    pods_to_delete: tuple[str, ...]
    remediations: tuple[str, ...]
    state: FailoverState
    reason: str
    message: str
    next_check_after: float | None


def decide_remediation(
    *,
    health: Health,
    pods: list[PodObservation],
    state: FailoverState | None,
    failover: Failover,
    disruption_allowed: int | None,
    now: datetime,
) -> RemediationDecision:
    """Delete pods stuck NotReady, but never so that the operator causes an outage.

    In order: disabled when podUnhealthySeconds or maxRemediationsPerWindow is 0;
    only scheduled, non-terminating pods NotReady >= podUnhealthySeconds are
    candidates (an unschedulable pod would come back just as stuck); nothing during a
    rollout (the rollback logic owns bad releases); with two or more pods, nothing
    when more than half of max(desired, pods) are not ready (a dependency outage is
    not cured by killing pods); the one pod of a single-replica service only with
    remediateSingleReplica (it serves nothing while stuck, and the budget still
    paces it); nothing when the PodDisruptionBudget allows no disruption
    (``disruption_allowed`` is its status.disruptionsAllowed, None without a PDB);
    at most maxRemediationsPerWindow per remediationWindowSeconds and at most
    ``disruption_allowed``. Candidates are NotReady, so deleting them never lowers
    the ready count below what the budget protects.
    """
    state = state or FailoverState()
    window = timedelta(seconds=failover.remediation_window_seconds)
    kept = [t for t in state.remediations or [] if _age(t, now) < window]
    scheduled = {p.name for p in pods if p.scheduled}
    active = [p for p in pods if p.active]

    def out(
        reason: str, message: str, delete: tuple[str, ...] = (), wait: float | None = None
    ) -> RemediationDecision:
        stamps = (*kept, *(format_precise(now) for _ in delete))
        new = list(stamps) or None
        changed = state.model_copy(update={"remediations": new})
        return RemediationDecision(
            delete, stamps, state if new == state.remediations else changed, reason, message, wait
        )

    limit_s = failover.pod_unhealthy_seconds
    if limit_s == 0 or failover.max_remediations_per_window == 0:
        return out("RemediationDisabled", "Pod remediation is disabled.")
    candidates = [s.name for s in health.stuck if s.name in scheduled]
    names = ", ".join(candidates)
    if not candidates:
        soon = [
            limit_s - (now - p.not_ready_since).total_seconds()
            for p in active
            if not p.ready and p.scheduled and p.not_ready_since is not None
        ]
        return out("NoStuckPods", "No pod is stuck NotReady.", wait=min(soon, default=None))
    if not health.rolled_out:
        msg = f"Not deleting stuck pods ({names}) during a rollout; rollback owns bad releases."
        return out("RolloutInProgress", msg)
    total = max(health.desired, len(active))
    not_ready = total - sum(p.ready for p in active)
    if total == 1 and not failover.remediate_single_replica:
        msg = f"Not deleting stuck pod {names}: remediateSingleReplica is false."
        return out("SingleReplica", msg)
    if total > 1 and not_ready * 2 > total:
        msg = f"{not_ready}/{total} pods not ready at once: likely a dependency outage; "
        return out("DependencyOutage", msg + "deleting pods would not help.")
    if disruption_allowed is not None and disruption_allowed <= 0:
        msg = f"Not deleting stuck pods ({names}): the PodDisruptionBudget allows no disruption."
        return out("DisruptionBudget", msg)
    left = failover.max_remediations_per_window - len(kept)
    if left <= 0:
        wait = min((window - _age(t, now)).total_seconds() for t in kept)
        msg = f"Not deleting stuck pods ({names}): {len(kept)} deleted in the last "
        return out("RateLimited", msg + f"{window.total_seconds():.0f}s already.", wait=wait)
    if disruption_allowed is not None:
        left = min(left, disruption_allowed)
    chosen = tuple(candidates[:left])
    return out("Remediated", f"Deleted {', '.join(chosen)}: NotReady for {limit_s}s+.", chosen)


def _age(stamp: str, now: datetime) -> timedelta:
    """How long ago ``stamp`` was; unparsable stamps are infinitely old (pruned)."""
    t = parse_time(stamp)
    return timedelta.max if t is None else now - t


# --------------------------------------------------------------------------- canary


@dataclass(frozen=True)
class CanaryDecision:
    """Where a canary release stands after this reconcile.

    ``step`` is the index of the current step (``len(steps)``: promoted, the primary
    rolls the revision out); ``replicas`` the canary pods it wants (None once
    promoted); ``advanced`` whether this reconcile moved it on; ``next_check_after``
    the seconds until the pause alone would move it on.
    """

    step: int
    since: datetime
    replicas: int | None
    advanced: bool
    promoted: bool
    message: str
    next_check_after: float | None


def canary_replicas(step: CanaryStep, desired: int) -> int:
    """Pods of one step: its count, or its percentage of ``desired`` rounded up, >= 1."""
    if step.replicas is not None:
        return step.replicas
    return max(1, math.ceil(desired * (step.percent or 0) / 100 - 1e-9))


def decide_canary(
    *,
    canary: Canary,
    step: int,
    since: datetime,
    health: Health,
    analysis: Verdict | None,
    desired: int,
    now: datetime,
) -> CanaryDecision:
    """Advance a canary release whose revision is neither bad nor proven yet.

    A step moves on once all its canary pods are ready (``health`` of the canary
    Deployment at this step's size), every analysis check passed in a row as often as
    its successLimit asks, and its pauseSeconds have passed since then began; at most
    one step per reconcile. Failing checks or pods never advance it: the rollback
    decision (``decide_rollback`` on the same evidence) removes a bad canary. After the
    last step the revision is promoted.
    """
    steps = canary.steps
    if step >= len(steps):
        n = len(steps)
        return CanaryDecision(n, since, None, False, True, "promoted", None)
    current = steps[step]
    size = canary_replicas(current, desired)
    where = f"step {step + 1}/{len(steps)}, {size} canary pod{'s' if size != 1 else ''}"
    ready = health.fully_healthy and health.ready >= size
    if not ready:
        msg = f"{where}: waiting for the canary pods ({health.summary})"
        return CanaryDecision(step, since, size, False, False, msg, None)
    if analysis is not None and not analysis.proven:
        msg = f"{where}: {analysis.summary}"
        return CanaryDecision(step, since, size, False, False, msg, None)
    left = current.pause_seconds - (now - since).total_seconds()
    if left > 0:
        # An instant, not a countdown: the message stays the same until then.
        due = format_time(since + timedelta(seconds=current.pause_seconds))
        msg = f"{where}: healthy; next step at {due}"
        return CanaryDecision(step, since, size, False, False, msg, left)
    nxt = step + 1
    if nxt >= len(steps):
        return CanaryDecision(nxt, now, None, True, True, f"{where}: promoted", None)
    size = canary_replicas(steps[nxt], desired)
    msg = f"step {nxt + 1}/{len(steps)}, {size} canary pod{'s' if size != 1 else ''}: started"
    return CanaryDecision(nxt, now, size, True, False, msg, None)
