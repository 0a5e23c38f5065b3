"""Status of a MicroService (pure): conditions, phase and replica counts.

Status is a report for users, tools (kstatus, GitOps) and alerts. Only the failover
timers are read back as an input, and never to render a pod: the records that shape
pods live in ControllerRevisions (:mod:`history`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from . import conditions, failover, health, render
from .api import Condition, MicroServiceSpec, MicroServiceStatus, Phase


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


def build_status(
    *,
    spec: MicroServiceSpec,
    old: MicroServiceStatus,
    proven_revision: str | None,
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
    # A scale-up (manual or HPA) of a proven revision is no rollout: it stays Ready
    # while enough pods are, even before the new ones are counted as updated.
    # The deployment controller may be seconds behind a scale (a new generation it has
    # not observed yet) when the control plane is loaded: the template is the same
    # revision and every pod runs it, so it is not a rollout either.
    settled = assessed.rolled_out or (
        (assessed.current or (assessed.runs_revision and assessed.pods > 0))
        and assessed.old_revision_pods == 0
    )
    proven = settled and proven_revision is not None and proven_revision == assessed.revision
    serving = assessed.fully_healthy or (proven and assessed.healthy)
    # A rolled-out release whose analysis checks have not yet passed is still in
    # progress (kstatus: Reconciling), though its pods serve (Ready).
    analyzing = decision.reason in ("Analyzing", "Canary")
    rolling = dep is None or (not assessed.rolled_out and not bad) or analyzing

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

    if analyzing:
        progressing = cond("Progressing", True, decision.reason, decision.message)
    elif rolling:
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
            (decision.reason if analyzing else "RollingOut") if reconciling else "Reconciled",
            (decision.message if analyzing else assessed.summary) if reconciling else "",
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
