"""Reconcile planning: (MicroService, observed children, now) -> what to do.

This is the pure heart of a reconcile. It parses the spec, runs the health and
failover decisions, renders the children and compares them with what the cluster
holds, and returns a :class:`Plan`: the writes needed (none in steady state), the
new status, Events and metric updates. The controller only executes plans, so every
behaviour here is unit-testable with plain dicts and a fixed clock.

Inputs are the cluster's, not status's: the last known good and the quarantine come
from ControllerRevisions (:mod:`history`), the active track from the live Service's
selector, the running revision from the Deployment's template. Status contributes
only timers, and a timer that is lost or forged can delay a decision but never
render a pod. A plan says when it is ``destructive`` (a rollback, a traffic switch,
a standby scale-down, a pod deletion), so the controller can confirm it against the
live cluster before acting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from . import analysis, conditions, failover, health, history, render
from .api import (
    Analysis,
    Canary,
    CanaryStatus,
    FailoverState,
    MicroServiceSpec,
    MicroServiceStatus,
    RevisionRef,
)
from .diff import (
    controlled_by,
    extract,
    merge_patch,
    needs_apply,
    owned_fields,
    owns_replicas,
    with_hash,
)
from .lru import LRU
from .settings import FIELD_MANAGER
from .status import build_status, format_validation_error, parse_status

__all__ = ["Observed", "Plan", "merge_patch", "plan", "plan_error", "plan_invalid"]

TRACK_LABEL = "mso.dev/track"

CHILD_KINDS = {key: kind for key, (_, kind) in render.CHILD_KINDS.items()}

# Operations verbs: annotations any client may set (``kubectl mso`` sets them).
PAUSED_ANNOTATION = "mso.dev/paused"
"""``"true"``: reconciling is paused; nothing is written but the Paused condition."""
RETRY_ANNOTATION = "mso.dev/retry"
"""A quarantined revision to try again; the operator removes it once done."""
FAILBACK_ANNOTATION = "mso.dev/failback"
"""Any value: move traffic back to the primary now if it is healthy; removed once done."""


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for one MicroService (from the watch caches)."""

    deployment: dict[str, Any] | None = None
    standby: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    hpa: dict[str, Any] | None = None
    pdb: dict[str, Any] | None = None
    standby_pdb: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()
    revisions: tuple[dict[str, Any], ...] = ()  # ControllerRevisions (history records)
    live: bool = False  # read from the API server just now, not from the caches
    # What the analysis checks said lately (the running analyzer's memory, not status).
    analysis: tuple[analysis.CheckState, ...] = ()

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The observed child of a kind and name, if this observation has it."""
        for obj in (
            self.deployment,
            self.standby,
            self.canary,
            self.service,
            self.hpa,
            self.pdb,
            self.standby_pdb,
        ):
            meta = (obj or {}).get("metadata", {})
            if obj is not None and obj.get("kind") == kind and meta.get("name") == name:
                return obj
        return None

    def child(self, key: str) -> dict[str, Any] | None:
        """The live child stored under a render key."""
        value: dict[str, Any] | None = getattr(self, key.replace("-", "_"))
        return value


@dataclass(frozen=True)
class EventSpec:
    """A Kubernetes Event to record on the MicroService."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Gauges:
    """Replica-health figures for the metrics."""

    desired: int
    ready: int
    available: int
    unavailable: int
    updated: int
    healthy_ratio: float
    ready_flag: bool
    active_track: str
    canary_step: int = 0  # 1-based step of a canary release in progress; 0: none


@dataclass
class Plan:
    """Everything one reconcile should do, in order: handoff, applies, deletes, status."""

    history_applies: list[dict[str, Any]] = field(default_factory=list)
    history_deletes: list[tuple[str, str]] = field(default_factory=list)  # name, uid
    applies: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)  # Deployments for the HPA
    # New autoscaled Deployments: replicas to hand the HPA right after the create, so
    # a service starts at minReplicas instead of 1 until the HPA's first sync.
    seeds: dict[str, int] = field(default_factory=dict)
    deletes: list[tuple[str, str, str]] = field(default_factory=list)  # kind, name, uid
    pod_deletes: list[tuple[str, str]] = field(default_factory=list)  # name, uid
    status: dict[str, Any] = field(default_factory=dict)
    status_changed: bool = False
    events: list[EventSpec] = field(default_factory=list)
    rollbacks: list[str] = field(default_factory=list)
    failovers: list[str] = field(default_factory=list)
    remediations: int = 0
    gauges: Gauges | None = None
    requeue_after: float | None = None
    invalid: bool = False
    destructive: list[str] = field(default_factory=list)  # what needs live confirmation
    observed: Observed | None = None  # what it was planned from
    handled_annotations: list[tuple[str, str]] = field(default_factory=list)  # to remove
    stale_templates: list[str] = field(default_factory=list)  # rendering changes (paced)
    # The checks (spec.failover.analysis) and the (track, revision) pairs they should
    # query next; empty: none.
    analysis_spec: Analysis | None = None
    analysis_targets: tuple[tuple[str, str, str], ...] = ()  # (role, track, revision)

    @property
    def is_noop(self) -> bool:
        """Nothing to write, record or count: the MicroService is as it should be."""
        return (
            self.writes == 0
            and not self.status_changed
            and not self.events
            and not (self.rollbacks or self.failovers or self.remediations)
        )

    @property
    def writes(self) -> int:
        """Number of writes to children this plan makes."""
        return (
            len(self.applies)
            + len(self.deletes)
            + len(self.pod_deletes)
            + len(self.history_applies)
            + len(self.history_deletes)
            + len(self.handoffs)
            + len(self.seeds)
            + len(self.handled_annotations)
        )


# ----------------------------------------------------------------------------- helpers


def rfc3339(now: datetime) -> str:
    """Kubernetes' time format (second precision, Z)."""
    return failover.format_time(now)


def track_of(obj: dict[str, Any]) -> str:
    """The track (primary/standby) a pod belongs to, from its label."""
    return str((obj.get("metadata", {}).get("labels") or {}).get(TRACK_LABEL, "primary"))


def is_canary(obj: dict[str, Any]) -> bool:
    """Whether a pod belongs to a canary release (it also carries track primary)."""
    return (obj.get("metadata", {}).get("labels") or {}).get(render.CANARY_LABEL) == "true"


def _parse_time(value: str | None) -> datetime | None:
    return failover.parse_time(value) if value else None


# ----------------------------------------------------------------------------- planning


def _meta(ms: dict[str, Any]) -> tuple[str, str, str, int]:
    meta = ms["metadata"]
    return meta["namespace"], meta["name"], meta.get("uid", ""), int(meta.get("generation", 1))


def _finish_status(plan: Plan, old_raw: dict[str, Any] | None, status: MicroServiceStatus) -> None:
    new = status.dump()
    plan.status = new
    plan.status_changed = new != (old_raw or {})


def plan_invalid(ms: dict[str, Any], error: str, now: datetime) -> Plan:
    """An invalid spec: say so in status and once as a Warning Event; touch no child."""
    _, _, _, generation = _meta(ms)
    old = parse_status(ms.get("status"))
    ts = rfc3339(now)
    prev = old.conditions
    conds = [
        conditions.make(prev, "Ready", False, "InvalidSpec", error, generation=generation, now=ts),
        conditions.make(
            prev, "Reconciling", False, "InvalidSpec", "", generation=generation, now=ts
        ),
        conditions.make(prev, "Stalled", True, "InvalidSpec", error, generation=generation, now=ts),
    ]
    status = old.model_copy(
        update={
            "phase": "Invalid",
            "conditions": conditions.merge(prev, conds),
        }
    )
    plan = Plan(invalid=True)
    old_ready = conditions.find(prev, "Ready")
    if old_ready is None or old_ready.reason != "InvalidSpec" or old_ready.message != error:
        plan.events.append(EventSpec("Warning", "InvalidSpec", error))
    _finish_status(plan, ms.get("status"), status)
    return plan


def plan_paused(ms: dict[str, Any], now: datetime) -> Plan:
    """Reconciling paused (``mso.dev/paused: "true"``): no child, record or timer is
    touched; status only says so. Timers stay as they were, so resuming never acts on
    time that passed while paused."""
    _, _, _, generation = _meta(ms)
    old = parse_status(ms.get("status"))
    ts = rfc3339(now)
    prev = old.conditions
    message = (
        f"Reconciling is paused ({PAUSED_ANNOTATION}); nothing is changed or failed over "
        f"until the annotation is removed (kubectl mso resume)"
    )
    conds = [
        conditions.make(prev, "Paused", True, "Paused", message, generation=generation, now=ts),
        conditions.make(prev, "Reconciling", False, "Paused", "", generation=generation, now=ts),
    ]
    status = old.model_copy(update={"conditions": conditions.merge(prev, conds)})
    plan = Plan()
    if not conditions.is_true(prev, "Paused"):
        plan.events.append(EventSpec("Normal", "Paused", message))
    _finish_status(plan, ms.get("status"), status)
    return plan


def plan_error(ms: dict[str, Any], plan: Plan, reason: str, message: str, now: datetime) -> Plan:
    """The status to write after a write failed: the stored status with Ready=False and
    the server's message.

    Built from the stored status, not from the failed plan: its decisions (a traffic
    switch, remediation stamps) did not all happen, so they are not reported; the next
    successful reconcile decides again and then emits their Events and counters. A
    quarantine is not lost: its ControllerRevision was written before any child.
    observedGeneration stays, so tools waiting on it keep waiting.
    """
    _, _, _, generation = _meta(ms)
    old = parse_status(ms.get("status"))
    ts = rfc3339(now)
    prev = old.conditions
    conds = [
        conditions.make(prev, "Ready", False, reason, message, generation=generation, now=ts),
        conditions.make(prev, "Stalled", True, reason, message, generation=generation, now=ts),
    ]
    status = old.model_copy(update={"conditions": conditions.merge(prev, conds)})
    out = Plan(invalid=plan.invalid, gauges=plan.gauges)
    old_ready = conditions.find(prev, "Ready")
    if old_ready is None or old_ready.reason != reason or old_ready.message != message:
        out.events.append(EventSpec("Warning", reason, message))
    _finish_status(out, ms.get("status"), status)
    return out


def live_track(service: dict[str, Any] | None) -> str | None:
    """The track the live Service sends traffic to, from its selector (None if unknown)."""
    if service is None:
        return None
    selector = (service.get("spec") or {}).get("selector") or {}
    track = selector.get(TRACK_LABEL)
    return track if track in ("primary", "standby") else None


def timers_written_by_others(ms: dict[str, Any]) -> str | None:
    """The field manager other than the operator that owns failover timers in status
    (someone patched microservices/status), or None."""
    for entry in ms.get("metadata", {}).get("managedFields") or []:
        if entry.get("subresource") != "status" or entry.get("manager") == FIELD_MANAGER:
            continue
        owned = ((entry.get("fieldsV1") or {}).get("f:status")) or {}
        if "f:failoverState" in owned:
            return str(entry.get("manager") or "another client")
    return None


def spec_changed_at(ms: dict[str, Any]) -> datetime | None:
    """When the MicroService itself (not its status) was last written, from its
    managedFields: the earliest a new revision's clock can honestly have started."""
    times = [
        failover.parse_time(e.get("time"))
        for e in ms.get("metadata", {}).get("managedFields") or []
        # The operator's own writes (removing a handled request annotation) are not
        # the user's: they must not restart a clock.
        if not e.get("subresource") and e.get("manager") != FIELD_MANAGER
    ]
    known = [t for t in times if t is not None]
    return max(known) if known else None


@dataclass
class _Reconcile:
    """One reconcile's inputs and running state, shared by the phases of :func:`plan`."""

    ms: dict[str, Any]
    observed: Observed
    now: datetime
    spec: MicroServiceSpec
    old: MicroServiceStatus
    owner: render.Owner
    generation: int
    records: history.History
    state: FailoverState
    result: Plan = field(default_factory=Plan)
    aliases: dict[str, str] = field(default_factory=dict)  # operator 0.1 revision -> ours
    revision: str = ""  # the spec's revision, as this version names it
    refresh: bool = True  # roll out rendering changes of unchanged revisions now
    standby_replicas: int | None = None  # what the standby is rendered with (None: HPA)
    # Analysis verdicts: on the release proving itself, and on the proven primary.
    rollout_verdict: analysis.Verdict | None = None
    primary_verdict: analysis.Verdict | None = None

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.ms.get("metadata", {}).get("annotations") or {})

    @property
    def name(self) -> str:
        return self.owner.name

    @property
    def primary_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.observed.pods if track_of(p) == "primary" and not is_canary(p)]

    @property
    def canary_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.observed.pods if is_canary(p)]


@dataclass(frozen=True)
class _Revision:
    """The outcome of the revision phase."""

    desired: str
    running: str | None
    decision: failover.RollbackDecision
    rolled_back: bool
    source_spec: MicroServiceSpec | None
    assessed: health.Health
    pods: list[health.PodObservation]
    revision_since: datetime | None = None  # when the judged revision was asked for
    canary: failover.CanaryDecision | None = None  # a canary release held at a step
    canary_health: health.Health | None = None


def plan(ms: dict[str, Any], observed: Observed, now: datetime, *, refresh: bool = True) -> Plan:
    """Decide one reconcile of ``ms`` given what the cluster holds, at time ``now``:
    which revision runs, where traffic goes, which stuck pods go, which children
    differ from what the cluster holds, and the status that reports it.

    ``refresh=False`` keeps the live pod template of a Deployment whose revision is
    unchanged but which this operator version renders differently, and lists it in
    ``stale_templates``: the controller paces such rendering changes across
    MicroServices and plans again with ``refresh=True`` when it is this one's turn.
    """
    namespace, name, uid, generation = _meta(ms)
    annotations = ms.get("metadata", {}).get("annotations") or {}
    if str(annotations.get(PAUSED_ANNOTATION, "")).lower() == "true":
        return plan_paused(ms, now)
    try:
        spec = MicroServiceSpec.model_validate(ms.get("spec") or {})
    except ValidationError as exc:
        return plan_invalid(ms, format_validation_error(exc), now)
    old = parse_status(ms.get("status"))
    state = old.failover_state or FailoverState()
    forger = timers_written_by_others(ms)
    if forger is not None:
        # Timers someone else wrote may only delay decisions, never hasten them:
        # start them afresh, and count the remediation budget as spent for a window.
        spent = [health.format_precise(now)] * spec.failover.max_remediations_per_window
        state = FailoverState(remediations=spent or None)
    names = _names(spec, name, ms.get("spec") or {}, _version(ms))
    records, aliases = _upgrade_history(
        history.read_history(list(observed.revisions), uid), names, name
    )
    r = _Reconcile(
        ms=ms,
        observed=observed,
        now=now,
        spec=spec,
        old=old,
        owner=render.Owner(name=name, namespace=namespace, uid=uid),
        generation=generation,
        records=records,
        state=state,
        result=Plan(observed=observed),
        aliases=aliases,
        refresh=refresh,
        revision=names[0],
    )
    if forger is not None:
        r.result.events.append(
            EventSpec(
                "Warning",
                "StatusIgnored",
                f"status.failoverState was written by {forger}, not the operator; "
                "its timers are ignored",
            )
        )
    _retry_request(r)
    rev = _revision_phase(r)
    track, standby_ready = _traffic_phase(r, rev.assessed)
    remediation = _remediation_phase(r, rev)
    _children_phase(r, rev, track)
    _status_phase(r, rev, track, standby_ready, remediation)
    return r.result


_NAMES: LRU[tuple[str, str], tuple[str, str]] = LRU(20_000)
"""(revision, 0.1's revision) of a spec, by (MicroService name, a hash of the spec's
canonical JSON): the same spec is named on every reconcile of an unchanged
MicroService."""


_NAMES_BY_OBJECT: LRU[tuple[str, str], tuple[tuple[Any, ...], tuple[str, str]]] = LRU(20_000)
"""The same for the version of each MicroService last named: (namespace, name) ->
((uid, resourceVersion, generation), names). A MicroService at one resourceVersion
never changes, so the reconciles its children's changes trigger name its spec
without hashing it; one entry per MicroService."""


def _version(ms: dict[str, Any]) -> tuple[tuple[str, str], tuple[Any, ...]] | None:
    """((namespace, name), (uid, resourceVersion, generation)) of a stored
    MicroService; None for one without a uid or resourceVersion (not from the API)."""
    meta = ms.get("metadata") or {}
    uid, rv = meta.get("uid"), meta.get("resourceVersion")
    if not uid or not rv:
        return None
    return (meta.get("namespace", ""), meta.get("name", "")), (uid, rv, meta.get("generation"))


def _spec_key(name: str, raw: Any) -> tuple[str, str]:
    """A small key that pins a spec exactly: a sha256 of its canonical JSON."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return name, hashlib.sha256(canonical.encode()).hexdigest()


def _names(
    spec: MicroServiceSpec,
    name: str,
    raw: Any,
    version: tuple[tuple[str, str], tuple[Any, ...]] | None = None,
) -> tuple[str, str]:
    """This version's and operator 0.1's revision of ``spec`` (parsed from ``raw``, of
    the MicroService at ``version``, if known: see :func:`_version`)."""
    if version is not None:
        known = _NAMES_BY_OBJECT.get(version[0])
        if known is not None and known[0] == version[1]:
            return known[1]
    key = _spec_key(name, raw)
    names = _NAMES.get(key)
    if names is None:
        names = (render.revision(spec), render.legacy_revision(spec, name))
        _NAMES.put(key, names)
    if version is not None:
        _NAMES_BY_OBJECT.put(version[0], (version[1], names))
    return names


def _upgrade_history(
    records: history.History, names: tuple[str, str], name: str
) -> tuple[history.History, dict[str, str]]:
    """Records and revisions as this version names them, and the aliases of the
    revisions operator 0.1 named by its rendered template (Deployments and pods it
    labelled keep those names until they are next rendered).

    A last known good is re-keyed by hashing its spec; a quarantine when its revision
    is 0.1's name of the spec as it is now. The records are rewritten under the new
    names by the normal history changes, once.
    """
    current, legacy = names  # the spec's (see _names)
    aliases = {legacy: current}
    good, bad = records.last_known_good, records.quarantine
    if good is not None:
        good_names = _NAMES.get(_spec_key(name, good.spec))
        if good_names is None:
            try:
                good_spec = MicroServiceSpec.model_validate(good.spec)
            except ValidationError:
                good_spec = None
            if good_spec is not None:
                good_names = _names(good_spec, name, good.spec)
        if good_names is not None:
            current, legacy = good_names
            aliases[legacy] = current
            if current != good.revision:
                good = good.model_copy(update={"revision": current})
    if bad is not None and bad.revision in aliases and aliases[bad.revision] != bad.revision:
        bad = bad.model_copy(update={"revision": aliases[bad.revision]})
    aliases = {old: new for old, new in aliases.items() if old != new}
    upgraded = dataclasses.replace(records, last_known_good=good, quarantine=bad)
    return upgraded, aliases


def _retry_request(r: _Reconcile) -> None:
    """``mso.dev/retry: <revision>``: lift that quarantine and give the revision a
    fresh progress deadline (after the dependency it needed was fixed, say)."""
    wanted = r.annotations.get(RETRY_ANNOTATION)
    if wanted is None:
        return
    r.result.handled_annotations.append((RETRY_ANNOTATION, wanted))
    bad = r.records.quarantine
    if bad is None or wanted.strip() not in (bad.revision, "", "true"):
        desired = r.revision
        if bad is None and r.state.attempt_since is None and wanted.strip() == desired:
            # Cut short after the quarantine was lifted, before status was written:
            # the attempt still began when the user asked (their last write).
            asked = min(spec_changed_at(r.ms) or r.now, r.now)
            r.state = r.state.model_copy(update={"attempt_since": health.format_precise(asked)})
        what = f"revision {bad.revision} is" if bad else "no revision is"
        # Dropping a user's request is confirmed like a destructive act: the cache
        # may not have the quarantine record yet.
        r.result.destructive.append(f"ignore {RETRY_ANNOTATION}={wanted}")
        r.result.events.append(
            EventSpec(
                "Warning",
                "RetryIgnored",
                f"{RETRY_ANNOTATION}={wanted!r} ignored: {what} quarantined",
            )
        )
        return
    r.records = dataclasses.replace(r.records, quarantine=None)
    # A fresh attempt: the failed attempt's pods (they may linger a moment, or even be
    # kept by the reused ReplicaSet) are no evidence against this one.
    now = health.format_precise(r.now)
    r.state = r.state.model_copy(update={"revision_since": now, "attempt_since": now})
    r.result.events.append(
        EventSpec(
            "Normal",
            "QuarantineLifted",
            f"Revision {bad.revision} ({bad.image}) is tried again on request "
            f"({RETRY_ANNOTATION}); it has {r.spec.failover.progress_deadline_seconds}s to "
            "become healthy",
        )
    )
    r.result.destructive.append(f"retry of quarantined revision {bad.revision}")


def _aliased(
    dep: health.DeploymentObservation | None,
    pods: list[health.PodObservation],
    aliases: dict[str, str],
) -> tuple[health.DeploymentObservation | None, list[health.PodObservation]]:
    """Observations with operator 0.1's revision names replaced by ours."""
    if not aliases:
        return dep, pods
    if dep is not None and dep.revision in aliases:
        dep = dataclasses.replace(dep, revision=aliases[dep.revision])
    pods = [
        dataclasses.replace(p, revision=aliases[p.revision]) if p.revision in aliases else p
        for p in pods
    ]
    return dep, pods


def _revision_phase(r: _Reconcile) -> _Revision:
    """Which revision should run: the spec's, or the last known good one; records to
    keep (ControllerRevisions) and the Events of the decision."""
    spec, result, records = r.spec, r.result, r.records
    desired_revision = r.revision
    target = failover.target_revision(
        desired_revision=desired_revision,
        last_known_good=records.last_known_good,
        quarantined=records.quarantine,
    )
    # The progress-deadline clock restarts when the revision we ask for changes. It
    # never starts before the spec was last written: a forged or restored status
    # cannot make a fresh release look overdue.
    r.state = failover.revision_clock(
        r.state, revision=desired_revision, previous_revision=r.old.desired_revision, now=r.now
    )
    revision_since = _parse_time(r.state.revision_since) or r.now
    written = spec_changed_at(r.ms)
    if written is not None and written > revision_since:
        revision_since = min(written, r.now)
        r.state = r.state.model_copy(
            update={"revision_since": health.format_precise(revision_since)}
        )
    dep_obs, pod_obs = _aliased(
        health.observe_deployment(r.observed.deployment),
        health.observe_pods(r.primary_pods),
        r.aliases,
    )
    fo = spec.failover
    attempt_since = _parse_time(r.state.attempt_since)
    assessed = health.assess(
        dep_obs,
        pod_obs,
        fo,
        r.now,
        revision=target,
        revision_since=revision_since,
        attempt_since=attempt_since if target == desired_revision else None,
    )
    checks: analysis.Verdict | None = None
    if (
        fo.analysis is not None
        and target == desired_revision
        and failover.lkg_differs(records.last_known_good, desired_revision)
    ):
        # A release still proving itself: its pods' checks decide with its health.
        checks = analysis.verdict(
            fo.analysis, r.observed.analysis, track=render.PRIMARY, revision=desired_revision
        )
        r.rollout_verdict = checks
    canary = _canary_phase(r, desired_revision, target, checks)
    decision = failover.decide_rollback(
        desired_revision=desired_revision,
        desired_image=spec.image,
        desired_spec=spec.dump(),
        generation=r.generation,
        health=canary[1] if canary is not None else assessed,
        last_known_good=records.last_known_good,
        quarantined=records.quarantine,
        failover=fo,
        now=r.now,
        analysis=checks,
    )
    held: failover.CanaryDecision | None = None
    good = records.last_known_good
    fine = decision.action in ("record_good", "apply_desired")
    if canary is not None and good is not None and fine:
        held = _canary_step(r, desired_revision, canary[0], canary[1], checks)
        if held is not None:
            # The stable pods keep running the last known good; the canary's own
            # Deployment runs the new revision at this step's size.
            decision = dataclasses.replace(
                decision,
                action="apply_desired",
                revision=good.revision,
                render_from=good,
                last_known_good=good,
                reason="Canary",
                message=f"Revision {desired_revision} ({spec.image}) is a canary: {held.message}.",
            )
        else:  # promoted just now: the primary rolls it out, judged as usual
            # Its progress deadline starts now, not when the spec was written: the
            # canary steps may well have taken longer than progressDeadlineSeconds.
            revision_since = r.now
            r.state = r.state.model_copy(
                update={"revision_since": health.format_precise(r.now), "attempt_since": None}
            )
            assessed = health.assess(
                dep_obs, pod_obs, fo, r.now, revision=target, revision_since=revision_since
            )
            decision = failover.decide_rollback(
                desired_revision=desired_revision,
                desired_image=spec.image,
                desired_spec=spec.dump(),
                generation=r.generation,
                health=assessed,
                last_known_good=good,
                quarantined=records.quarantine,
                failover=fo,
                now=r.now,
                analysis=checks,
            )
    elif canary is not None and good is not None and decision.action == "degraded_no_rollback":
        # A bad canary with rollback off: it stays at its step, never promoted, and
        # the stable pods keep the last known good.
        held = _canary_hold(r, canary[0], decision.message)
        decision = dataclasses.replace(decision, revision=good.revision, render_from=good)
    if decision.rolled_back:
        _end_canary(r)  # a failed canary is over (its Deployment goes in this reconcile)
    source_spec: MicroServiceSpec | None = None
    rolled_back = decision.rolled_back and decision.render_from is not None
    if (rolled_back or held is not None) and decision.render_from is not None:
        try:
            source_spec = MicroServiceSpec.model_validate(decision.render_from.spec)
        except ValidationError:  # a record we can no longer read: do not roll back to it
            rolled_back = False
            held = None
    prev_good = records.last_known_good
    if decision.action == "rollback" and rolled_back:
        result.events.append(EventSpec("Warning", "RolledBack", decision.message))
        result.rollbacks.append(decision.reason)
        result.destructive.append(f"rollback to {decision.revision}")
    elif decision.action == "record_good" and (
        prev_good is None or prev_good.revision != desired_revision
    ):
        result.events.append(EventSpec("Normal", "RevisionHealthy", decision.message))
    elif decision.action == "degraded_no_rollback" and not conditions.is_true(
        r.old.conditions, "Degraded"
    ):
        result.events.append(EventSpec("Warning", decision.reason, decision.message))
    if decision.quarantine_cleared and records.quarantine is not None:
        result.events.append(
            EventSpec(
                "Normal",
                "QuarantineCleared",
                f"Spec changed; revision {records.quarantine.revision} is no longer quarantined",
            )
        )
    keep_bad = decision.quarantine if rolled_back or decision.action != "rollback" else None
    result.history_applies, result.history_deletes = history.changes(
        r.owner,
        records,
        last_known_good=decision.last_known_good,
        quarantine=keep_bad,
        generation=r.generation,
    )
    if target != decision.revision:
        # Rolled back in this very reconcile: judge the revision that will now run.
        assessed = health.assess(
            dep_obs, pod_obs, fo, r.now, revision=decision.revision, revision_since=revision_since
        )
    return _Revision(
        desired=desired_revision,
        running=dep_obs.revision if dep_obs is not None else None,
        decision=decision,
        rolled_back=rolled_back,
        source_spec=source_spec,
        assessed=assessed,
        pods=pod_obs,
        revision_since=revision_since,
        canary=held,
        canary_health=canary[1] if canary is not None and held is not None else None,
    )


def _canary_spec(r: _Reconcile) -> Canary | None:
    return r.spec.strategy.canary if r.spec.strategy else None


def _end_canary(r: _Reconcile) -> None:
    """Forget a canary release's steps (no write when there were none)."""
    if r.state.canary_revision is not None:
        r.state = r.state.model_copy(
            update={"canary_revision": None, "canary_step": None, "canary_step_since": None}
        )


def _canary_phase(
    r: _Reconcile, desired: str, target: str, checks: analysis.Verdict | None
) -> tuple[int, health.Health] | None:
    """(step, health of the canary pods) while ``desired`` is released as a canary:
    spec.strategy.canary is set, a last known good of another revision exists, the
    revision is not quarantined and not yet promoted."""
    canary = _canary_spec(r)
    good = r.records.last_known_good
    state = r.state
    if canary is None or good is None or good.revision == desired or target != desired:
        _end_canary(r)  # over: proven, quarantined or withdrawn
        return None
    same = state.canary_revision == desired and state.canary_step is not None
    step = state.canary_step if same and state.canary_step is not None else 0
    if step >= len(canary.steps):
        return None  # promoted: the primary rolls it out
    since = (_parse_time(state.canary_step_since) if same else None) or r.now
    r.state = state.model_copy(
        update={
            "canary_revision": desired,
            "canary_step": step,
            "canary_step_since": health.format_precise(since),
        }
    )
    # Judged like a release, on its own pods, with a deadline per step.
    assessed = health.assess(
        health.observe_deployment(r.observed.canary),
        health.observe_pods(r.canary_pods),
        r.spec.failover,
        r.now,
        revision=desired,
        revision_since=since,
    )
    return step, assessed


def _canary_base(r: _Reconcile) -> int:
    """The primary's desired replicas, which canary percentages are of."""
    needed = render.desired_replicas(r.spec, _live_replicas(r.observed.deployment))
    if needed is None:  # autoscaled: a share of what the HPA runs now
        needed = _live_replicas(r.observed.deployment) or 1
    return needed


def _canary_hold(r: _Reconcile, step: int, message: str) -> failover.CanaryDecision:
    """The canary kept at its current step."""
    canary = _canary_spec(r)
    assert canary is not None
    since = _parse_time(r.state.canary_step_since) or r.now
    size = failover.canary_replicas(canary.steps[step], _canary_base(r))
    return failover.CanaryDecision(step, since, size, False, False, message, None)


def _canary_step(
    r: _Reconcile,
    desired: str,
    step: int,
    assessed: health.Health,
    checks: analysis.Verdict | None,
) -> failover.CanaryDecision | None:
    """Advance the canary; None once promoted (in this reconcile)."""
    canary = _canary_spec(r)
    assert canary is not None
    since = _parse_time(r.state.canary_step_since) or r.now
    decided = failover.decide_canary(
        canary=canary,
        step=step,
        since=since,
        health=assessed,
        analysis=checks,
        desired=_canary_base(r),
        now=r.now,
    )
    r.state = r.state.model_copy(
        update={
            "canary_step": decided.step,
            "canary_step_since": health.format_precise(decided.since),
        }
    )
    steps = len(canary.steps)
    if decided.promoted:
        r.result.events.append(
            EventSpec(
                "Normal",
                "CanaryPromoted",
                f"Revision {desired} passed all {steps} canary steps; rolling it out",
            )
        )
        return None
    if decided.advanced:
        r.result.events.append(
            EventSpec("Normal", "CanaryStep", f"Revision {desired}: {decided.message}")
        )
    return decided


def _traffic_phase(r: _Reconcile, assessed: health.Health) -> tuple[failover.TrackDecision, int]:
    """Which track takes traffic and how big the standby is. The track in effect is
    what the live Service selects; status only reports it."""
    fo, observed, result = r.spec.failover, r.observed, r.result
    standby_configured = fo.standby is not None
    needed = render.desired_replicas(r.spec, _live_replicas(observed.deployment))
    if needed is None:
        needed = assessed.desired if assessed.deployment_found else 1
    standby_pods = [p for p in observed.pods if track_of(p) == "standby"]
    standby_ready = sum(1 for p in health.observe_pods(standby_pods) if p.ready)
    current_track = live_track(observed.service)
    if current_track is None:
        current_track = r.old.active_track if observed.service is None else "primary"
    failback = r.annotations.get(FAILBACK_ANNOTATION)
    failing: str | None = None
    good = r.records.last_known_good
    if (
        fo.analysis is not None
        and standby_configured
        and good is not None
        and assessed.revision == good.revision
    ):
        # A proven primary with a standby to fail over to: its checks keep running.
        r.primary_verdict = analysis.verdict(
            fo.analysis, observed.analysis, track=render.PRIMARY, revision=good.revision
        )
        if r.primary_verdict.failing is not None:
            failing = r.primary_verdict.failing.message
    track = failover.decide_track(
        health=assessed,
        state=r.state,
        active_track=current_track,
        standby_configured=standby_configured,
        standby_ready=standby_ready,
        standby_replicas_needed=needed,
        failover=fo,
        now=r.now,
        failback_requested=failback is not None,
        analysis_failing=failing,
    )
    r.state = track.state
    if failback is not None:
        result.handled_annotations.append((FAILBACK_ANNOTATION, failback))
        if current_track != "standby":
            result.events.append(
                EventSpec("Normal", "FailbackIgnored", "Traffic is already on the primary")
            )
        elif not track.switched:
            # Refusing consumes the request: confirm the primary's state live first
            # (the cache may not have seen its pods become ready yet).
            result.destructive.append("refuse the failback request")
            result.events.append(
                EventSpec(
                    "Warning",
                    "FailbackRefused",
                    f"Failback requested ({FAILBACK_ANNOTATION}) but the primary is not "
                    f"healthy: {assessed.ready}/{assessed.desired} ready, below "
                    f"{fo.min_healthy_ratio:g}; traffic stays on the standby",
                )
            )
    if track.switched:
        to_standby = track.active_track == "standby"
        result.events.append(
            EventSpec(
                "Warning" if to_standby else "Normal",
                "FailedOver" if to_standby else "FailedBack",
                track.message,
            )
        )
        if to_standby:
            result.failovers.append(track.reason)
        result.destructive.append(f"traffic to the {track.active_track}")
    # While the standby carries traffic with autoscaling, the HPA sizes it.
    hpa_on_standby = r.spec.autoscaling is not None and track.active_track == "standby"
    r.standby_replicas = None if hpa_on_standby else track.standby_replicas
    live_standby = _live_replicas(observed.standby)
    if (
        standby_configured
        and live_standby is not None
        and r.standby_replicas is not None
        and r.standby_replicas < live_standby
    ):
        result.destructive.append(f"standby scale-down to {r.standby_replicas}")
    return track, standby_ready


def _live_replicas(deployment: dict[str, Any] | None) -> int | None:
    value = ((deployment or {}).get("spec") or {}).get("replicas")
    return value if isinstance(value, int) else None


def _remediation_phase(r: _Reconcile, rev: _Revision) -> failover.RemediationDecision:
    """Stuck pods to delete (never during a rollback or rollout)."""
    disruption_allowed: int | None = None
    if r.observed.pdb is not None:
        disruption_allowed = int((r.observed.pdb.get("status") or {}).get("disruptionsAllowed", 0))
    remediation = failover.decide_remediation(
        health=rev.assessed,
        pods=rev.pods,
        state=r.state,
        failover=r.spec.failover,
        disruption_allowed=disruption_allowed,
        now=r.now,
    )
    r.state = remediation.state
    uids = {p["metadata"]["name"]: p["metadata"].get("uid", "") for p in r.primary_pods}
    result = r.result
    for pod_name in remediation.pods_to_delete:
        result.pod_deletes.append((pod_name, uids.get(pod_name, "")))
    if remediation.pods_to_delete:
        result.remediations = len(remediation.pods_to_delete)
        result.events.append(EventSpec("Warning", "PodRemediated", remediation.message))
        result.destructive.append(f"delete pods {', '.join(remediation.pods_to_delete)}")
    return remediation


def _children_phase(r: _Reconcile, rev: _Revision, track: failover.TrackDecision) -> None:
    """Render the children and keep those that differ from the cluster."""
    result, uid, spec = r.result, r.owner.uid, r.spec
    draining = spec.failover.standby is None and track.active_track == "standby"
    children = render.build_children(
        r.owner,
        spec,
        active_track=track.active_track,
        source_spec=rev.source_spec,
        primary_replicas=render.desired_replicas(spec, _live_replicas(r.observed.deployment)),
        standby_replicas=r.standby_replicas if spec.failover.standby else None,
        draining_standby=draining,
        canary_replicas=rev.canary.replicas if rev.canary is not None else None,
    )
    for key in ("deployment", "standby"):
        manifest, live = children.get(key), r.observed.child(key)
        if manifest is None or live is None or not _stale_rendering(manifest, live, r.aliases):
            continue
        result.stale_templates.append(manifest["metadata"]["name"])
        if r.refresh:
            result.events.append(
                EventSpec(
                    "Normal",
                    "TemplateRefreshed",
                    f"Deployment {manifest['metadata']['name']}: this operator version "
                    f"renders revision {rev.decision.revision} differently; rolling the new "
                    "rendering out (paced across MicroServices)",
                )
            )
        else:
            children[key] = _keep_live_template(manifest, live)
    # The Service first: on failback traffic must leave the standby before the
    # standby is scaled down (on failover the standby was scaled up in an earlier
    # reconcile; the switch waits for its pods to be ready).
    order = sorted(children, key=lambda k: (k != "service", k != "deployment"))
    for key in order:
        manifest = children[key]
        live = r.observed.child(key)
        if manifest is None:
            if live is not None and controlled_by(live, uid):
                meta = live["metadata"]
                result.deletes.append((CHILD_KINDS[key], meta["name"], meta.get("uid", "")))
            continue
        hashed = with_hash(manifest)
        if needs_apply(hashed, live):
            if (
                key in ("deployment", "standby")
                and "replicas" not in hashed.get("spec", {})
                and owns_replicas(live)
                and live is not None
            ):
                result.handoffs.append(live)
            result.applies.append(hashed)
            if (
                key == "deployment"
                and live is None
                and r.spec.autoscaling is not None
                and "replicas" not in hashed.get("spec", {})
            ):
                result.seeds[hashed["metadata"]["name"]] = r.spec.autoscaling.min_replicas
    # A rollback decided earlier whose Deployment write failed (or was cut short by a
    # crash) is carried out now: report it when it really happens.
    decision = rev.decision
    rollback_write = any(
        m["kind"] == "Deployment"
        and m["metadata"]["name"] == r.name
        and rev.running != decision.revision
        for m in result.applies
    )
    if decision.action == "stay_rolled_back" and rev.rolled_back and rollback_write:
        result.events.append(EventSpec("Warning", "RolledBack", decision.message))
        result.rollbacks.append(decision.reason)
        result.destructive.append(f"rollback to {decision.revision}")


def _canary_status(r: _Reconcile, rev: _Revision) -> CanaryStatus | None:
    """status.canary while a canary release is held at a step."""
    canary = _canary_spec(r)
    held = rev.canary
    if held is None or held.replicas is None or canary is None:
        return None
    return CanaryStatus(
        revision=rev.desired,
        step=f"{held.step + 1}/{len(canary.steps)}",
        replicas=held.replicas,
        ready_replicas=rev.canary_health.ready if rev.canary_health is not None else 0,
        since=rfc3339(held.since),
        message=held.message,
    )


def _analysis_status(
    r: _Reconcile, rev: _Revision, status: MicroServiceStatus
) -> MicroServiceStatus:
    """What the analyzer should query next (``analysis_targets``), status.analysis and
    the Analysis condition: True while the checks pass, False when one fails, Unknown
    while they have no answer (inconclusive) or not enough of one yet."""
    spec_analysis = r.spec.failover.analysis
    if spec_analysis is None:
        if status.analysis is None and conditions.find(status.conditions, "Analysis") is None:
            return status
        kept = [c for c in status.conditions or [] if c.type != "Analysis"]
        return status.model_copy(update={"analysis": None, "conditions": kept})
    targets: list[tuple[str, str, str]] = []
    shown: analysis.Verdict | None = None
    if r.rollout_verdict is not None:
        shown = r.rollout_verdict
        if not rev.decision.rolled_back:
            targets.append(("release", render.PRIMARY, rev.desired))
    if r.primary_verdict is not None and r.records.last_known_good is not None:
        shown = shown or r.primary_verdict
        targets.append(("primary", render.PRIMARY, r.records.last_known_good.revision))
    r.result.analysis_spec = spec_analysis
    r.result.analysis_targets = tuple(targets)
    about = {(track, revision) for _, track, revision in targets}
    if r.rollout_verdict is not None:
        about.add((render.PRIMARY, rev.desired))  # also at the moment it is rolled back
    reports = [s.report() for s in r.observed.analysis if (s.track, s.revision) in about]
    if shown is None:
        value: bool | str = True
        reason = "Idle"
        message = "No revision under analysis: the checks run while a new revision proves "
        message += "itself, and on the primary while a standby is configured."
    elif shown.failed is not None or shown.failing is not None:
        value, reason, message = False, "Failed", shown.summary
    elif shown.inconclusive:
        value, reason, message = "Unknown", "Inconclusive", shown.summary
    elif shown.waiting or (shown is r.rollout_verdict and not shown.proven):
        value, reason, message = "Unknown", "Analyzing", shown.summary
    else:
        value, reason, message = True, "Passed", shown.summary
    cond = conditions.make(
        r.old.conditions,
        "Analysis",
        value if isinstance(value, bool) else "Unknown",
        reason,
        message,
        generation=r.generation,
        now=rfc3339(r.now),
    )
    return status.model_copy(
        update={
            "analysis": sorted(reports, key=lambda a: (a.track, a.revision, a.check)) or None,
            "conditions": conditions.merge(status.conditions, [cond]),
        }
    )


def _annotations(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata", {}).get("annotations") or {})


def _stale_rendering(
    manifest: dict[str, Any], live: dict[str, Any], aliases: dict[str, str]
) -> bool:
    """Whether ``live`` runs the revision ``manifest`` renders, from the same inputs,
    but as another operator version rendered it."""
    want = render.split_template_hash(_annotations(manifest).get(render.TEMPLATE_HASH_ANNOTATION))
    have = render.split_template_hash(_annotations(live).get(render.TEMPLATE_HASH_ANNOTATION))
    if want is None:
        return False
    if have is not None:
        return have[0] == want[0] and have[1] != want[1]
    # No fingerprint: written by operator 0.1. Stale if it runs the same revision.
    template = (live.get("spec") or {}).get("template") or {}
    running = _annotations(template).get(render.REVISION_ANNOTATION)
    rendered = _annotations(manifest["spec"]["template"]).get(render.REVISION_ANNOTATION)
    return running is not None and aliases.get(running, running) == rendered


def _keep_live_template(manifest: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the pod template we applied earlier, read back from ``live``
    (our fields, their current values): applying it changes no pod."""
    fields = (owned_fields(live).get("f:spec") or {}).get("f:template")
    template = (live.get("spec") or {}).get("template")
    if not fields or not isinstance(template, dict):
        return manifest  # we never applied a template there: nothing to keep
    out: dict[str, Any] = {**manifest, "spec": {**manifest["spec"]}}
    out["spec"]["template"] = extract(template, fields)
    meta = {**manifest["metadata"]}
    annotations = dict(meta.get("annotations") or {})
    have = _annotations(live).get(render.TEMPLATE_HASH_ANNOTATION)
    if have is None:
        annotations.pop(render.TEMPLATE_HASH_ANNOTATION, None)
    else:
        annotations[render.TEMPLATE_HASH_ANNOTATION] = have
    meta["annotations"] = annotations
    out["metadata"] = meta
    return out


def _status_phase(
    r: _Reconcile,
    rev: _Revision,
    track: failover.TrackDecision,
    standby_ready: int,
    remediation: failover.RemediationDecision,
) -> None:
    """Status, gauges and when to look again."""
    result, assessed, decision, state = r.result, rev.assessed, rev.decision, r.state
    standby_configured = r.spec.failover.standby is not None
    prev_good = r.records.last_known_good
    dep, running = r.observed.deployment, rev.running
    if dep is None:
        # A Deployment this plan creates is reported as the next reconcile will see
        # it, rolling out: "Pending" would be true for the milliseconds until the
        # apply and cost a status write of its own. If the apply fails, the error
        # replaces this status anyway.
        dep = next(
            (
                m
                for m in result.applies
                if m["kind"] == "Deployment" and m["metadata"]["name"] == r.name
            ),
            None,
        )
        if dep is not None:
            dep_obs, _ = _aliased(health.observe_deployment(dep), [], r.aliases)
            if dep_obs is not None:
                # As the API server will hold it: generation 1, not yet observed by the
                # deployment controller (so never "rolled out", not even at 0 replicas).
                dep_obs = dataclasses.replace(dep_obs, generation=1, observed_generation=0)
            running = dep_obs.revision if dep_obs is not None else None
            assessed = health.assess(
                dep_obs,
                rev.pods,
                r.spec.failover,
                r.now,
                revision=assessed.revision,
                revision_since=rev.revision_since,
                attempt_since=_parse_time(r.state.attempt_since),
            )
    status = build_status(
        spec=r.spec,
        old=r.old,
        proven_revision=prev_good.revision if prev_good else None,
        generation=r.generation,
        ts=rfc3339(r.now),
        assessed=assessed,
        dep=dep,
        standby_ready=standby_ready if standby_configured else None,
        desired_revision=rev.desired,
        running_revision=running,
        rolled_back=rev.rolled_back,
        decision=decision,
        track=track,
        active_track=track.active_track,
        name=r.name,
    )
    good, bad = decision.last_known_good, decision.quarantine
    status = status.model_copy(
        update={
            "last_known_good_revision": good.revision if good else None,
            "last_known_good": (
                RevisionRef(revision=good.revision, image=good.image) if good else None
            ),
            "quarantined_revision": bad.revision if bad else None,
            "quarantine": bad,
            "last_failover": (track.last_failover if track.switched else None)
            or r.old.last_failover,
            "failover_state": state
            if standby_configured or state.remediations
            else FailoverState(
                revision_since=state.revision_since,
                attempt_since=state.attempt_since,
                canary_revision=state.canary_revision,
                canary_step=state.canary_step,
                canary_step_since=state.canary_step_since,
            ),
            "canary": _canary_status(r, rev),
        }
    )
    status = _analysis_status(r, rev, status)
    if conditions.find(r.old.conditions, "Paused") is not None:
        resumed = conditions.make(
            status.conditions,
            "Paused",
            False,
            "Resumed",
            "",
            generation=r.generation,
            now=rfc3339(r.now),
        )
        if conditions.is_true(r.old.conditions, "Paused"):
            result.events.append(EventSpec("Normal", "Resumed", "Reconciling resumed"))
        status = status.model_copy(
            update={"conditions": conditions.merge(status.conditions, [resumed])}
        )
    _finish_status(result, r.ms.get("status"), status)
    result.gauges = Gauges(
        desired=assessed.desired,
        ready=assessed.ready,
        available=assessed.available,
        unavailable=max(0, assessed.desired - assessed.available),
        updated=assessed.updated,
        healthy_ratio=assessed.ratio,
        ready_flag=conditions.is_true(status.conditions, "Ready"),
        active_track=track.active_track,
        canary_step=rev.canary.step + 1 if rev.canary is not None else 0,
    )
    waits = [w for w in (track.next_check_after, remediation.next_check_after) if w is not None]
    if rev.canary is not None and rev.canary.next_check_after is not None:
        waits.append(max(0.5, rev.canary.next_check_after + 0.05))  # the pause ends
    ch = rev.canary_health
    if ch is not None:
        # The canary's own step deadline and image-error grace.
        for at in (ch.deadline_at if not ch.fully_healthy else None, ch.next_check_at):
            if at is not None and at > r.now:
                waits.append(max(0.5, (at - r.now).total_seconds() + 0.05))
    if (
        not assessed.fully_healthy
        and assessed.deadline_at is not None
        and assessed.deadline_at > r.now
    ):
        # Re-check at the rollout deadline even if no event arrives by then; once it
        # has passed, events (not a timer) drive further reconciles.
        waits.append(max(0.5, (assessed.deadline_at - r.now).total_seconds() + 0.05))
    if assessed.next_check_at is not None and assessed.next_check_at > r.now:
        # A start-up allowance or an image-error grace runs out then.
        waits.append(max(0.5, (assessed.next_check_at - r.now).total_seconds() + 0.05))
    result.requeue_after = min(waits) if waits else None
