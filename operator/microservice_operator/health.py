"""Observed Deployment and Pod state -> a health verdict (pure).

Failover decisions must be reproducible in a unit test, so this module only turns
raw API objects (camelCase dicts, as kopf and the API server hand them over) into
frozen observations and then into a :class:`Health` verdict for one revision. It
reads no clock (``now`` is passed in), talks to no API server and keeps no state.
RFC 3339 time formatting and parsing also live here, in one place, because
observations, status timers and conditions must agree on the format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .api import Failover

REVISION_ANNOTATION = "mso.dev/revision"
"""Annotation the operator writes on the Deployment and its pod template."""

CRASH_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Container waiting reasons that mean a pod cannot run its release."""

IMAGE_ERROR_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
"""Waiting reasons of a release that cannot start at all (a typo'd tag, a missing
Secret): no restarts ever happen, so they are judged by how long they last."""


# --------------------------------------------------------------------------- time


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with second precision ("2026-11-28T02:33:30Z"), as Kubernetes
    writes metav1.Time, so status fields compare and sort as strings."""
    if value.tzinfo is None:
        raise ValueError("format_time needs a timezone-aware datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, for the failover timers in status.

    Second precision would truncate "unhealthy since" by up to a second and let
    failover act up to a second before failoverAfterSeconds has really passed.
    """
    if value.tzinfo is None:
        raise ValueError("format_precise needs a timezone-aware datetime")
    value = value.astimezone(UTC)
    if value.microsecond < 1000:  # whole seconds read the same as metav1.Time
        return format_time(value)
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object) -> datetime | None:
    """A timezone-aware UTC datetime from an RFC 3339 string, or None.

    Unset or unparsable values (a hand-edited status) read as "unknown" instead of
    crashing the reconcile loop over and over.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --------------------------------------------------------------------------- observe


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _condition(conditions: object, type_: str) -> Mapping[str, Any] | None:
    for c in _list(conditions):
        if _map(c).get("type") == type_:
            return _map(c)
    return None


def _status_of(condition: Mapping[str, Any] | None) -> bool | None:
    if condition is None:
        return None
    return {"True": True, "False": False}.get(str(condition.get("status")))


@dataclass(frozen=True)
class DeploymentObservation:
    """What the primary (or standby) Deployment reports about its rollout."""

    name: str
    generation: int
    observed_generation: int
    desired: int
    replicas: int
    ready: int
    available: int
    updated: int
    unavailable: int
    revision: str | None
    available_condition: bool | None
    progressing_condition: bool | None
    progress_deadline_exceeded: bool
    progressing_message: str

    @property
    def generation_observed(self) -> bool:
        """Whether the status describes the current spec (not an older one)."""
        return self.observed_generation >= self.generation


def observe_deployment(obj: Mapping[str, Any] | None) -> DeploymentObservation | None:
    """Parse a Deployment; None when it does not exist (yet).

    Status counters the API server leaves out when zero read as 0; a missing
    ``spec.replicas`` reads as Kubernetes' default of 1.
    """
    if obj is None:
        return None
    meta = _map(obj.get("metadata"))
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    template_annotations = _map(_map(_map(spec.get("template")).get("metadata")).get("annotations"))
    revision = template_annotations.get(REVISION_ANNOTATION) or _map(meta.get("annotations")).get(
        REVISION_ANNOTATION
    )
    progressing = _condition(status.get("conditions"), "Progressing")
    return DeploymentObservation(
        name=str(meta.get("name", "")),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        desired=_int(spec.get("replicas"), 1),
        replicas=_int(status.get("replicas")),
        ready=_int(status.get("readyReplicas")),
        available=_int(status.get("availableReplicas")),
        updated=_int(status.get("updatedReplicas")),
        unavailable=_int(status.get("unavailableReplicas")),
        revision=str(revision) if revision else None,
        available_condition=_status_of(_condition(status.get("conditions"), "Available")),
        progressing_condition=_status_of(progressing),
        progress_deadline_exceeded=progressing is not None
        and _status_of(progressing) is False
        and progressing.get("reason") == "ProgressDeadlineExceeded",
        progressing_message=str((progressing or {}).get("message") or ""),
    )


@dataclass(frozen=True)
class PodObservation:
    """One pod, reduced to what health and remediation need."""

    name: str
    revision: str | None
    phase: str
    ready: bool
    not_ready_since: datetime | None
    deleting: bool
    scheduled: bool
    restarts: int
    waiting_reason: str | None
    created: datetime | None

    @property
    def active(self) -> bool:
        """Counted by its ReplicaSet: neither terminating nor finished (e.g. evicted)."""
        return not self.deleting and self.phase not in ("Succeeded", "Failed")


def _waiting_reason(statuses: list[Any]) -> str | None:
    reasons = [
        str(reason)
        for s in statuses
        if (reason := _map(_map(_map(s).get("state")).get("waiting")).get("reason"))
    ]
    bad = [r for r in reasons if r in CRASH_REASONS]
    if bad:
        return bad[0]
    return reasons[0] if reasons else None


def observe_pod(obj: Mapping[str, Any]) -> PodObservation:
    """Parse one pod. Init containers count too: a crash-looping init container
    keeps the pod from ever serving just like a crash-looping app container."""
    meta = _map(obj.get("metadata"))
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    conditions = status.get("conditions")
    ready_condition = _condition(conditions, "Ready")
    ready = _status_of(ready_condition) is True
    created = parse_time(meta.get("creationTimestamp"))
    not_ready_since = None
    if not ready:
        not_ready_since = (
            parse_time((ready_condition or {}).get("lastTransitionTime"))
            or created
            or parse_time(status.get("startTime"))
        )
    statuses = _list(status.get("initContainerStatuses")) + _list(status.get("containerStatuses"))
    restarts = max((_int(_map(s).get("restartCount")) for s in statuses), default=0)
    revision = _map(meta.get("annotations")).get(REVISION_ANNOTATION)
    return PodObservation(
        name=str(meta.get("name", "")),
        revision=str(revision) if revision else None,
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        not_ready_since=not_ready_since,
        deleting=meta.get("deletionTimestamp") is not None,
        scheduled=bool(spec.get("nodeName"))
        or _status_of(_condition(conditions, "PodScheduled")) is True,
        restarts=restarts,
        waiting_reason=_waiting_reason(statuses),
        created=created,
    )


def observe_pods(objs: Sequence[Mapping[str, Any]]) -> list[PodObservation]:
    """Parse the pods of one track, sorted by name for stable decisions."""
    return sorted((observe_pod(o) for o in objs), key=lambda p: p.name)


# --------------------------------------------------------------------------- assess


@dataclass(frozen=True)
class StuckPod:
    """A pod NotReady for at least ``podUnhealthySeconds``."""

    name: str
    since: datetime
    revision: str | None


@dataclass(frozen=True)
class Health:
    """The health of one track for one revision, at one instant."""

    revision: str
    deployment_found: bool
    desired: int
    ready: int
    available: int
    updated: int
    unavailable: int
    ratio: float
    healthy: bool
    rolled_out: bool
    fully_healthy: bool
    pods: int
    unhealthy: int
    old_revision_pods: int
    crashlooping: tuple[str, ...]
    over_restart_threshold: tuple[str, ...]
    stuck: tuple[StuckPod, ...]
    deadline_at: datetime | None
    deadline_exceeded: bool
    summary: str
    replicas: int = 0  # pods the Deployment counts (old ReplicaSets included)
    starting: int = 0  # NotReady pods still within podStartupSeconds (or not created)
    current: bool = False  # the Deployment runs this revision at its current generation
    # The Deployment's template is this revision, whether or not the deployment
    # controller has observed its latest generation (e.g. a scale it is still behind on).
    runs_revision: bool = False
    image_errors: tuple[tuple[str, str], ...] = ()  # (pod, waiting reason) past the grace
    next_check_at: datetime | None = None  # when a pod's allowance or grace runs out


def assess(
    deployment: DeploymentObservation | None,
    pods: list[PodObservation],
    failover: Failover,
    now: datetime,
    *,
    revision: str,
    revision_since: datetime | None,
    attempt_since: datetime | None = None,
) -> Health:
    """Judge the rollout of ``revision`` (the revision the Deployment should run).

    - ``ratio`` is ready/desired over all ready pods of the track, whatever their
      revision: the Service sends traffic to all of them. 1.0 when desired is 0.
    - ``rolled_out``: the Deployment runs ``revision`` at its current generation,
      every replica is updated and no pod of another revision is left (terminating
      pods excluded, as ``kubectl rollout status`` does).
    - ``fully_healthy``: rolled out and every replica ready and available.
    - ``crashlooping``: pods of ``revision`` waiting in a crash/pull/config error or
      with restarts >= unhealthyThreshold; ``over_restart_threshold`` only the latter,
      the evidence the rollback decision acts on before the deadline.
    - ``stuck``: active pods NotReady for >= podUnhealthySeconds (0 disables), longest
      stuck first.
    - ``attempt_since``: a retried revision's new attempt began then; its pods created
      earlier (a second of slack for creationTimestamp's precision) are an earlier
      attempt's and are no evidence against this one.
    - ``deadline_exceeded``: not fully healthy and either ``revision_since`` +
      progressDeadlineSeconds <= now, or the Deployment itself reports
      ProgressDeadlineExceeded for this revision at its current generation.
    """
    active = [p for p in pods if p.active]
    if deployment is not None:
        desired, ready = deployment.desired, deployment.ready
        available, updated = deployment.available, deployment.updated
        unavailable = deployment.unavailable
    else:
        desired, ready, available, updated = 0, sum(p.ready for p in active), 0, 0
        unavailable = 0
    # Judge the ready ratio on the pods that had their chance: a pod still within its
    # start-up allowance (or not even created yet, right after a scale-up) does not
    # count against it, so a scale-up of a slow-starting app is not an outage.
    allowance = timedelta(seconds=failover.pod_startup_seconds)
    young = [
        p for p in active if not p.ready and p.created is not None and now - p.created < allowance
    ]
    missing = max(0, desired - len(active)) if deployment is not None and allowance else 0
    starting = len(young) + missing
    judged = desired - starting
    # Ready pods by the freshest evidence: the pods themselves. The deployment
    # controller counts a change of theirs seconds later, under load for longer than
    # failoverAfterSeconds, both ways: a pod that just turned Ready was neither
    # starting nor ready by its count (a healthy primary failed over), and pods that
    # turned NotReady stayed ready by it (a sick primary did not fail over). Only when
    # the cache holds fewer pods than the Deployment has (a pod not seen yet) does its
    # count still stand, as a floor.
    pods_ready = sum(p.ready for p in active)
    seen_all = deployment is None or len(active) >= deployment.replicas
    ready_now = pods_ready if seen_all else max(ready, pods_ready)
    ratio = 1.0 if desired <= 0 or judged <= 0 else min(ready_now / judged, 1.0)
    checks = [p.created + allowance for p in young if p.created is not None]
    old = [p for p in active if p.revision != revision]
    runs_revision = deployment is not None and deployment.revision == revision
    current = runs_revision and deployment is not None and deployment.generation_observed
    rolled_out = (
        current
        and deployment is not None
        and updated == desired
        and deployment.replicas == desired
        and not old
    )
    fully_healthy = rolled_out and ready == desired and available == desired
    threshold = failover.unhealthy_threshold
    mine = [p for p in active if p.revision == revision]
    if attempt_since is not None:
        earliest = attempt_since - timedelta(seconds=1)
        mine = [p for p in mine if p.created is None or p.created >= earliest]
    over = tuple(p.name for p in mine if p.restarts >= threshold)
    grace = timedelta(seconds=failover.image_error_grace_seconds)
    image_errors = []
    for p in mine:
        if p.waiting_reason in IMAGE_ERROR_REASONS and p.created is not None:
            if now - p.created >= grace:
                image_errors.append((p.name, str(p.waiting_reason)))
            else:
                checks.append(p.created + grace)
    crashlooping = tuple(
        p.name for p in mine if p.waiting_reason in CRASH_REASONS or p.restarts >= threshold
    )
    stuck: tuple[StuckPod, ...] = ()
    if failover.pod_unhealthy_seconds > 0:
        limit = timedelta(seconds=failover.pod_unhealthy_seconds)
        stuck = tuple(
            sorted(
                (
                    StuckPod(p.name, p.not_ready_since, p.revision)
                    for p in active
                    if not p.ready
                    and p.not_ready_since is not None
                    and now - p.not_ready_since >= limit
                ),
                key=lambda s: (s.since, s.name),
            )
        )
    deadline_at = None
    if revision_since is not None:
        deadline_at = revision_since + timedelta(seconds=failover.progress_deadline_seconds)
    deployment_says = current and deployment is not None and deployment.progress_deadline_exceeded
    deadline_exceeded = not fully_healthy and (
        (deadline_at is not None and deadline_at <= now) or deployment_says
    )
    unhealthy = sum(not p.ready for p in active)
    health = Health(
        revision=revision,
        deployment_found=deployment is not None,
        desired=desired,
        ready=ready,
        available=available,
        updated=updated,
        unavailable=unavailable,
        ratio=ratio,
        healthy=ratio >= failover.min_healthy_ratio,
        rolled_out=rolled_out,
        fully_healthy=fully_healthy,
        pods=len(active),
        unhealthy=unhealthy,
        old_revision_pods=len(old),
        crashlooping=crashlooping,
        over_restart_threshold=over,
        stuck=stuck,
        deadline_at=deadline_at,
        deadline_exceeded=deadline_exceeded,
        summary="",
        replicas=deployment.replicas if deployment is not None else len(active),
        starting=starting,
        current=bool(current),
        runs_revision=runs_revision,
        image_errors=tuple(image_errors),
        next_check_at=min(checks, default=None),
    )
    return replace(health, summary=_summary(health, active))


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def _summary(health: Health, active: list[PodObservation]) -> str:
    if not health.deployment_found:
        return "Deployment not found"
    parts = [f"{health.ready}/{health.desired} ready"]
    if health.starting and health.ready < health.desired:
        parts.append(f"{_pods(health.starting)} starting")
    reasons = Counter(p.waiting_reason for p in active if p.waiting_reason in CRASH_REASONS)
    parts += [f"{_pods(n)} {r}" for r, n in sorted(reasons.items(), key=lambda kv: str(kv[0]))]
    if health.stuck:
        parts.append(f"{_pods(len(health.stuck))} stuck NotReady")
    if not health.rolled_out:
        detail = f"{health.updated}/{health.desired} updated"
        if health.old_revision_pods:
            detail += f", {_pods(health.old_revision_pods)} of another revision left"
        if health.replicas > health.desired:
            detail += f", {health.replicas} replicas"
        parts.append(f"rollout in progress ({detail})")
    if health.deadline_exceeded:
        parts.append("progress deadline exceeded")
    return "; ".join(parts)
