"""Leader election over a coordination.k8s.io/v1 Lease: the pure parts.

With several operator replicas (the HA overlay) every replica keeps its watches and
caches warm, and only the Lease holder reconciles, as controller-runtime does. kopf's
peering is not used: it pauses the watches of the standby replica, so a replica that
resumes would act on a stale cache. This module reads a Lease and says what to write;
:mod:`elector` runs the rounds and keeps time (its own monotonic clock, never the
holder's ``renewTime``); ``kube.py`` writes with optimistic concurrency
(resourceVersion), so two replicas can never both win one round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from .health import parse_time

LEASE_DURATION_SECONDS = 15
"""How long a Lease holds without renewal, by the observer's clock; a standby takes
over after this."""
RENEW_DEADLINE_SECONDS = 10.0
"""The leader stops writing (and exits) when it could not renew for this long."""
RETRY_PERIOD_SECONDS = 2.0
"""How often the holder renews and a standby checks."""

Action = Literal["create", "renew", "acquire"]


def micro_time(now: datetime) -> str:
    """metav1.MicroTime, as Leases store renewTime/acquireTime."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseState:
    """The parts of a Lease the decision needs."""

    holder: str
    renew_time: datetime | None
    duration_seconds: int
    transitions: int
    acquire_time: str | None = None  # as stored: written back unchanged on renewal

    @staticmethod
    def of(lease: dict[str, Any]) -> LeaseState:
        """Read a Lease object (as returned by the API)."""
        spec = lease.get("spec") or {}
        return LeaseState(
            holder=str(spec.get("holderIdentity") or ""),
            renew_time=parse_time(spec.get("renewTime")),
            duration_seconds=int(spec.get("leaseDurationSeconds") or LEASE_DURATION_SECONDS),
            transitions=int(spec.get("leaseTransitions") or 0),
            acquire_time=spec.get("acquireTime"),
        )


def lease_spec(
    action: Action, lease: LeaseState | None, identity: str, now: datetime
) -> dict[str, Any]:
    """The whole Lease spec to write for ``action`` ("create", "renew" or "acquire").

    The write replaces the spec, so a renewal carries acquireTime and leaseTransitions
    over unchanged (they say when and how often leadership changed hands).
    """
    ts = micro_time(now)
    spec: dict[str, Any] = {
        "holderIdentity": identity,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": ts,
    }
    if action in ("create", "acquire"):
        spec["acquireTime"] = ts
        spec["leaseTransitions"] = (lease.transitions + 1) if lease else 0
    elif lease is not None:
        spec["leaseTransitions"] = lease.transitions
        if lease.acquire_time:
            spec["acquireTime"] = lease.acquire_time
    return spec


def released_spec(lease: LeaseState) -> dict[str, Any]:
    """The Lease spec that hands leadership over at once (on a clean shutdown)."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "leaseTransitions": lease.transitions,
    }
