"""Reconcile planning: (MicroService, observed children, now) -> what to do.

This is the pure heart of a reconcile. It parses the spec, runs the health and
failover decisions, renders the children and compares them with what the cluster
holds, and returns a :class:`Plan`: the writes needed (none in steady state), the
new status, Events and metric updates. The controller only executes plans, so every
behaviour here is unit-testable with plain dicts and a fixed clock.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from . import conditions, failover, health, render
from .api import (
    Condition,
    FailoverState,
    MicroServiceSpec,
    MicroServiceStatus,
    Phase,
)
from .settings import FIELD_MANAGER

APPLIED_HASH = "mso.dev/applied-hash"
"""Annotation on each child: hash of the manifest we last applied. When the rendered
manifest changes we apply (which also removes fields we stopped sending); when it has
not, we still compare field by field to catch drift from manual edits."""

TRACK_LABEL = "mso.dev/track"

CHILD_KINDS = {
    "deployment": "Deployment",
    "standby": "Deployment",
    "service": "Service",
    "hpa": "HorizontalPodAutoscaler",
    "pdb": "PodDisruptionBudget",
}


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for one MicroService (from the watch caches)."""

    deployment: dict[str, Any] | None = None
    standby: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    hpa: dict[str, Any] | None = None
    pdb: dict[str, Any] | None = None
    pods: tuple[dict[str, Any], ...] = ()

    def child(self, key: str) -> dict[str, Any] | None:
        """The live child stored under a render key."""
        value: dict[str, Any] | None = getattr(self, key)
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


@dataclass
class Plan:
    """Everything one reconcile should do, in order: handoff, applies, deletes, status."""

    applies: list[dict[str, Any]] = field(default_factory=list)
    handoff: dict[str, Any] | None = None
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

    @property
    def writes(self) -> int:
        """Number of writes to children this plan makes."""
        return (
            len(self.applies)
            + len(self.deletes)
            + len(self.pod_deletes)
            + (1 if self.handoff else 0)
        )


# ----------------------------------------------------------------------------- helpers


def rfc3339(now: datetime) -> str:
    """Kubernetes' time format (second precision, Z)."""
    return failover.format_time(now)


def manifest_hash(manifest: dict[str, Any]) -> str:
    """Stable hash of a rendered manifest (without our hash annotation)."""
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest carrying its own hash as an annotation."""
    out: dict[str, Any] = json.loads(json.dumps(manifest))
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[APPLIED_HASH] = manifest_hash(manifest)
    return out


def _quantity_equal(a: object, b: object) -> bool:
    try:
        return bool(parse_quantity(a) == parse_quantity(b))  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        return False


def _is_zero(value: Any) -> bool:
    return value is False or value == 0 or value in ("", [], {})


def is_subset(desired: Any, live: Any, *, quantities: bool = False) -> bool:
    """Whether every field of ``desired`` has the same value in ``live``.

    Fields the API server defaulted (or other managers added) are ignored; lists must
    match element by element. A zero value we send ("", 0, [], {}) matches a missing
    field, because the API server omits empty fields. Under ``resources``, quantities
    compare by value ("0.5" == "500m"), as the API server canonicalises them.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(
            is_subset(v, live[k], quantities=quantities or k == "resources")
            if k in live
            else _is_zero(v)
            for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(
            is_subset(d, lv, quantities=quantities) for d, lv in zip(desired, live, strict=True)
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if desired == live:
        return True
    if (
        quantities
        and isinstance(desired, str | int | float)
        and isinstance(live, str | int | float)
    ):
        return _quantity_equal(desired, live)
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return False


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether applying ``desired`` (already hashed) would change the live object."""
    if live is None:
        return True
    ours = desired["metadata"].get("annotations", {}).get(APPLIED_HASH)
    theirs = (live.get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH)
    if ours != theirs:
        return True
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(body, live)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    Fields dropped from status (a cleared quarantine, say) must be sent as null, or a
    merge patch would leave them in place.
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch


def owns_replicas(deployment: dict[str, Any] | None) -> bool:
    """Whether our field manager applied spec.replicas of this Deployment."""
    if deployment is None:
        return False
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            if "f:replicas" in spec:
                return True
    return False


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether ``obj`` has a controller ownerReference to the object with ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field as users write it (spec.ports[0].name)."""
    lines = []
    for err in exc.errors():
        path = "spec"
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(msg if not err["loc"] else f"{path}: {msg}")
    return "; ".join(lines)


def parse_status(raw: dict[str, Any] | None) -> MicroServiceStatus:
    """The stored status, dropping only the fields we cannot read (written by another
    version, or edited by hand): losing a readable quarantine or last-known-good record
    because of an unrelated field would re-apply a known-bad release."""
    data = dict(raw or {})
    for _ in range(len(data) + 1):
        try:
            return MicroServiceStatus.model_validate(data)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
            if not bad & data.keys():
                break
            for key in bad:
                data.pop(str(key), None)
    return MicroServiceStatus()


def track_of(obj: dict[str, Any]) -> str:
    """The track (primary/standby) a pod belongs to, from its label."""
    return str((obj.get("metadata", {}).get("labels") or {}).get(TRACK_LABEL, "primary"))


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


def plan_error(ms: dict[str, Any], plan: Plan, reason: str, message: str, now: datetime) -> Plan:
    """The status to write after a write failed: the stored status with Ready=False and
    the server's message.

    Built from the stored status, not from the failed plan: its decisions (a
    quarantine, a traffic switch, remediation stamps) did not all happen, so they are
    not recorded; the next successful reconcile decides again and then emits their
    Events and counters. observedGeneration stays, so tools waiting on it keep waiting.
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


def plan(ms: dict[str, Any], observed: Observed, now: datetime) -> Plan:
    """Decide one reconcile of ``ms`` given what the cluster holds, at time ``now``."""
    namespace, name, uid, generation = _meta(ms)
    try:
        spec = MicroServiceSpec.model_validate(ms.get("spec") or {})
    except ValidationError as exc:
        return plan_invalid(ms, format_validation_error(exc), now)

    old = parse_status(ms.get("status"))
    ts = rfc3339(now)
    owner = render.Owner(name=name, namespace=namespace, uid=uid)
    fo = spec.failover
    result = Plan()
    state = old.failover_state or FailoverState()

    # --- which revision should run: the spec's, or the last known good one.
    desired_revision = render.revision(spec, name)
    target = failover.target_revision(
        desired_revision=desired_revision,
        last_known_good=old.last_known_good,
        quarantined=old.quarantine,
    )
    # The progress-deadline clock restarts when the revision we ask for changes.
    state = failover.revision_clock(
        state, revision=desired_revision, previous_revision=old.desired_revision, now=now
    )
    revision_since = _parse_time(state.revision_since) or now

    primary_pods = [p for p in observed.pods if track_of(p) == "primary"]
    standby_pods = [p for p in observed.pods if track_of(p) == "standby"]
    dep_obs = health.observe_deployment(observed.deployment)
    pod_obs = health.observe_pods(primary_pods)
    running_revision = dep_obs.revision if dep_obs is not None else None
    assessed = health.assess(
        dep_obs, pod_obs, fo, now, revision=target, revision_since=revision_since
    )

    decision = failover.decide_rollback(
        desired_revision=desired_revision,
        desired_image=spec.image,
        desired_spec=spec.dump(),
        generation=generation,
        health=assessed,
        last_known_good=old.last_known_good,
        quarantined=old.quarantine,
        failover=fo,
        now=now,
    )
    last_known_good = decision.last_known_good
    quarantine = decision.quarantine
    source_spec: MicroServiceSpec | None = None
    rolled_back = decision.rolled_back and decision.render_from is not None
    if rolled_back and decision.render_from is not None:
        try:
            source_spec = MicroServiceSpec.model_validate(decision.render_from.spec)
        except ValidationError:  # a record we can no longer read: do not roll back to it
            rolled_back = False
    if decision.action == "rollback" and rolled_back:
        result.events.append(EventSpec("Warning", "RolledBack", decision.message))
        result.rollbacks.append(decision.reason)
    elif decision.action == "record_good" and (
        old.last_known_good is None or old.last_known_good.revision != desired_revision
    ):
        result.events.append(EventSpec("Normal", "RevisionHealthy", decision.message))
    elif decision.action == "degraded_no_rollback" and not conditions.is_true(
        old.conditions, "Degraded"
    ):
        result.events.append(EventSpec("Warning", decision.reason, decision.message))
    if decision.quarantine_cleared and old.quarantine is not None:
        result.events.append(
            EventSpec(
                "Normal",
                "QuarantineCleared",
                f"Spec changed; revision {old.quarantine.revision} is no longer quarantined",
            )
        )
    if target != decision.revision:
        # Rolled back in this very reconcile: judge the revision that will now run.
        assessed = health.assess(
            dep_obs, pod_obs, fo, now, revision=decision.revision, revision_since=revision_since
        )

    # --- which track takes traffic, and how big the standby is.
    standby_configured = fo.standby is not None
    needed = render.desired_replicas(spec)
    if needed is None:
        needed = dep_obs.desired if dep_obs is not None else 1
    standby_ready = sum(1 for p in health.observe_pods(standby_pods) if p.ready)
    track = failover.decide_track(
        health=assessed,
        state=state,
        active_track=old.active_track,
        standby_configured=standby_configured,
        standby_ready=standby_ready,
        standby_replicas_needed=needed,
        failover=fo,
        now=now,
    )
    state = track.state
    active_track = track.active_track
    last_failover = old.last_failover
    if track.switched:
        last_failover = track.last_failover or last_failover
        kind = "Warning" if active_track == "standby" else "Normal"
        result.events.append(
            EventSpec(
                kind, "FailedOver" if active_track == "standby" else "FailedBack", track.message
            )
        )
        if active_track == "standby":
            result.failovers.append(track.reason)

    # --- remediation of stuck pods (never during a rollback or rollout).
    disruption_allowed: int | None = None
    if observed.pdb is not None:
        disruption_allowed = int((observed.pdb.get("status") or {}).get("disruptionsAllowed", 0))
    remediation = failover.decide_remediation(
        health=assessed,
        pods=pod_obs,
        state=state,
        failover=fo,
        disruption_allowed=disruption_allowed,
        now=now,
    )
    state = remediation.state
    uids = {p["metadata"]["name"]: p["metadata"].get("uid", "") for p in primary_pods}
    for pod_name in remediation.pods_to_delete:
        result.pod_deletes.append((pod_name, uids.get(pod_name, "")))
    if remediation.pods_to_delete:
        result.remediations = len(remediation.pods_to_delete)
        result.events.append(EventSpec("Warning", "PodRemediated", remediation.message))

    # --- render children and compare with the cluster.
    children = render.build_children(
        owner,
        spec,
        active_track=active_track,
        source_spec=source_spec,
        standby_replicas=track.standby_replicas if standby_configured else None,
    )
    # The Service first: on failback traffic must leave the standby before the
    # standby is scaled down (on failover the standby was scaled up in an earlier
    # reconcile; the switch waits for its pods to be ready).
    order = sorted(children, key=lambda k: (k != "service", k != "deployment"))
    for key in order:
        manifest = children[key]
        live = observed.child(key)
        if manifest is None:
            if live is not None and controlled_by(live, uid):
                meta = live["metadata"]
                result.deletes.append((CHILD_KINDS[key], meta["name"], meta.get("uid", "")))
            continue
        hashed = with_hash(manifest)
        if needs_apply(hashed, live):
            if (
                key == "deployment"
                and "replicas" not in hashed.get("spec", {})
                and owns_replicas(live)
                and live is not None
            ):
                result.handoff = live
            result.applies.append(hashed)

    # --- status.
    status = _status(
        spec=spec,
        old=old,
        generation=generation,
        ts=ts,
        assessed=assessed,
        dep=observed.deployment,
        standby_ready=standby_ready if standby_configured else None,
        desired_revision=desired_revision,
        running_revision=running_revision,
        rolled_back=rolled_back,
        decision=decision,
        track=track,
        active_track=active_track,
        name=name,
    )
    status = status.model_copy(
        update={
            "last_known_good_revision": last_known_good.revision if last_known_good else None,
            "last_known_good": last_known_good,
            "quarantined_revision": quarantine.revision if quarantine else None,
            "quarantine": quarantine,
            "last_failover": last_failover,
            "failover_state": state
            if standby_configured or state.remediations
            else FailoverState(revision_since=state.revision_since),
        }
    )
    _finish_status(result, ms.get("status"), status)
    result.gauges = Gauges(
        desired=assessed.desired,
        ready=assessed.ready,
        available=assessed.available,
        unavailable=max(0, assessed.desired - assessed.available),
        updated=assessed.updated,
        healthy_ratio=assessed.ratio,
        ready_flag=conditions.is_true(status.conditions, "Ready"),
        active_track=active_track,
    )
    waits = [w for w in (track.next_check_after, remediation.next_check_after) if w is not None]
    if (
        not assessed.fully_healthy
        and assessed.deadline_at is not None
        and assessed.deadline_at > now
    ):
        # Re-check at the rollout deadline even if no event arrives by then; once it
        # has passed, events (not a timer) drive further reconciles.
        waits.append(max(0.5, (assessed.deadline_at - now).total_seconds() + 0.05))
    result.requeue_after = min(waits) if waits else None
    return result


def _status(
    *,
    spec: MicroServiceSpec,
    old: MicroServiceStatus,
    generation: int,
    ts: str,
    assessed: health.Health,
    dep: dict[str, Any] | None,
    standby_ready: int | None,
    desired_revision: str,
    running_revision: str | None,
    rolled_back: bool,
    decision: failover.RollbackDecision,
    track: failover.TrackDecision,
    active_track: str,
    name: str,
) -> MicroServiceStatus:
    """Status and conditions from the assessment; conditions keep their transition times."""
    prev = old.conditions
    dep_status = (dep or {}).get("status") or {}
    desired = assessed.desired
    on_standby = active_track == "standby"
    bad = decision.action in ("rollback", "stay_rolled_back", "degraded_no_rollback")
    # A revision that already proved itself (it is the last known good) stays Ready
    # while enough of its pods are (an HPA scale-up, a pod restart or a node drain is
    # not an outage); a new revision is Ready only once fully rolled out and healthy.
    proven = (
        assessed.rolled_out
        and old.last_known_good is not None
        and old.last_known_good.revision == assessed.revision
    )
    serving = assessed.fully_healthy or (proven and assessed.healthy)
    rolling = dep is None or (not assessed.rolled_out and not bad)

    def cond(type_: str, status: bool, reason: str, message: str) -> Condition:
        return conditions.make(prev, type_, status, reason, message, generation=generation, now=ts)

    if dep is None:
        ready = cond("Ready", False, "Pending", "Deployment not created yet")
    elif on_standby:
        ok = (standby_ready or 0) > 0
        ready = cond(
            "Ready",
            ok,
            "ServingFromStandby" if ok else "StandbyNotReady",
            f"Primary unhealthy ({assessed.summary}); traffic on the standby",
        )
    elif serving:
        ready = cond("Ready", True, "Available", assessed.summary)
    elif bad and not rolled_back:
        ready = cond("Ready", False, decision.reason, decision.message)
    else:
        ready = cond("Ready", False, "RollingOut" if rolling else "NotReady", assessed.summary)

    if rolling:
        progressing = cond("Progressing", True, "RollingOut", f"Rolling out: {assessed.summary}")
    elif bad and not rolled_back:
        progressing = cond("Progressing", False, decision.reason, decision.message)
    else:
        progressing = cond("Progressing", False, "RolloutComplete", assessed.summary)

    if rolled_back:
        degraded = cond("Degraded", True, "RolledBack", decision.message)
    elif bad:
        degraded = cond("Degraded", True, decision.reason, decision.message)
    elif on_standby:
        degraded = cond("Degraded", True, "PrimaryUnhealthy", assessed.summary)
    elif dep is not None and not rolling and not assessed.healthy:
        degraded = cond("Degraded", True, "ReplicasUnavailable", assessed.summary)
    else:
        degraded = cond("Degraded", False, "AsExpected", "")

    conds = [ready, progressing, degraded]
    if rolled_back:
        conds.append(cond("RolledBack", True, decision.reason, decision.message))
    elif conditions.find(prev, "RolledBack") is not None:
        conds.append(cond("RolledBack", False, "SpecChanged", "Running the desired revision"))
    if spec.failover.standby is not None or conditions.find(prev, "FailedOver") is not None:
        if on_standby:
            conds.append(
                cond("FailedOver", True, track.reason or "PrimaryUnhealthy", track.message)
            )
        else:
            conds.append(cond("FailedOver", False, "PrimaryHealthy", "Traffic on the primary"))
    stalled = bad and not rolled_back
    reconciling = rolling and not stalled
    conds.append(
        cond(
            "Reconciling",
            reconciling,
            "RollingOut" if reconciling else "Reconciled",
            assessed.summary if reconciling else "",
        )
    )
    conds.append(
        cond(
            "Stalled",
            stalled,
            decision.reason if stalled else "AsExpected",
            decision.message if stalled else "",
        )
    )

    if on_standby:
        phase: Phase = "FailedOver"
    elif dep is None:
        phase = "Pending"
    elif rolling:
        phase = "Progressing"
    elif serving and not rolled_back and degraded.status == "False":
        phase = "Running"
    else:
        phase = "Degraded"

    return old.model_copy(
        update={
            "observed_generation": generation,
            "replicas": int(dep_status.get("replicas", 0)),
            "ready_replicas": int(dep_status.get("readyReplicas", 0)),
            "available_replicas": int(dep_status.get("availableReplicas", 0)),
            "updated_replicas": int(dep_status.get("updatedReplicas", 0)),
            "standby_ready_replicas": standby_ready,
            "selector": render.selector_string(name, "primary"),
            "phase": phase,
            "ready": f"{assessed.ready}/{desired}",
            "active_track": active_track,
            "current_revision": running_revision,
            "desired_revision": desired_revision,
            "conditions": conditions.merge(prev, conds),
        }
    )
