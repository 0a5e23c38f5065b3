"""Leader election: the Lease specs written, and the elector's timing rules under a fake
clock (renew deadline, expiry by the observer's clock, skew, transport errors).

The Lease store below stands in for the API server's optimistic concurrency only; the
real API server is exercised by tests/integration/test_leader_election.py and the
fault suite.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from microservice_operator import leader
from microservice_operator.elector import Elector
from microservice_operator.kube import KubeError

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def lease_state(holder: str, transitions: int = 3) -> leader.LeaseState:
    return leader.LeaseState.of(
        {
            "spec": {
                "holderIdentity": holder,
                "renewTime": leader.micro_time(NOW),
                "leaseDurationSeconds": 15,
                "leaseTransitions": transitions,
            }
        }
    )


def test_acquire_counts_a_transition_and_renew_does_not() -> None:
    acquired = leader.lease_spec("acquire", lease_state("other"), "me", NOW)
    assert acquired["holderIdentity"] == "me"
    assert acquired["leaseTransitions"] == 4
    assert acquired["acquireTime"] == acquired["renewTime"] == "2026-11-28T12:00:00.000000Z"
    held = leader.LeaseState.of(
        {"spec": {"holderIdentity": "me", "leaseTransitions": 3, "acquireTime": "T0"}}
    )
    renewed = leader.lease_spec("renew", held, "me", NOW)
    # The write replaces the spec: a renewal keeps the record of the last handover.
    assert renewed["leaseTransitions"] == 3 and renewed["acquireTime"] == "T0"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class LeaseServer:
    """One Lease with resourceVersion preconditions, and injectable failures."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.fail: KubeError | None = None
        self.hang = 0.0  # seconds each request "takes" (advances the clock)
        self.timeouts: list[float] = []
        self.late = 0.0  # seconds an update's answer arrives after its timeout allowed

    def _maybe_fail(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        if self.hang:
            self.clock.t += min(self.hang, timeout)
            if self.hang > timeout:
                raise KubeError(0, "TransportError", "ReadTimeoutError")
        if self.fail is not None:
            raise self.fail

    def get(self, _res: Any, _ns: str, _name: str, *, timeout: float = 30) -> Any:
        self._maybe_fail(timeout)
        return copy.deepcopy(self.lease)

    def create_lease(self, ns: str, name: str, spec: dict[str, Any], *, timeout: float = 30) -> Any:
        self._maybe_fail(timeout)
        if self.lease is not None:
            raise KubeError(409, "AlreadyExists", "exists")
        self.rv += 1
        self.lease = {"metadata": {"resourceVersion": str(self.rv)}, "spec": spec}
        return copy.deepcopy(self.lease)

    def update_lease(
        self, lease: dict[str, Any], spec: dict[str, Any], *, timeout: float = 30
    ) -> Any:
        self._maybe_fail(timeout)
        assert self.lease is not None
        if lease["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "modified")
        self.rv += 1
        self.lease = {"metadata": {"resourceVersion": str(self.rv)}, "spec": spec}
        self.clock.t += self.late
        return copy.deepcopy(self.lease)


def elector(server: LeaseServer, identity: str, **kw: Any) -> Elector:
    return Elector(
        server,  # type: ignore[arg-type]
        "ns",
        "lease",
        identity,
        clock=server.clock,
        wall=lambda: NOW,
        **kw,
    )


@pytest.fixture
def server() -> LeaseServer:
    return LeaseServer(Clock())


def test_first_replica_creates_and_leads(server: LeaseServer) -> None:
    a = elector(server, "a")
    assert a.try_acquire_or_renew()
    assert a.is_leader()
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "a"


def test_follower_waits_a_full_lease_duration_by_its_own_clock(server: LeaseServer) -> None:
    a, b = elector(server, "a"), elector(server, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # first sight of the record starts b's clock
    server.clock.t += 14.9
    assert not b.try_acquire_or_renew()
    server.clock.t += 0.2
    assert b.try_acquire_or_renew()  # unchanged for 15.1s as b saw it: expired
    assert server.lease is not None and server.lease["spec"]["holderIdentity"] == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1


def test_renewals_keep_the_follower_out(server: LeaseServer) -> None:
    a, b = elector(server, "a"), elector(server, "b")
    assert a.try_acquire_or_renew()
    for _ in range(20):  # 40 s of renewals every 2 s
        assert not b.try_acquire_or_renew()
        server.clock.t += 2
        assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()


def test_clock_skew_cannot_steal_a_renewed_lease(server: LeaseServer) -> None:
    """The holder's renewTime says 1 hour ago (its clock is behind); b must still wait,
    because the record keeps changing."""
    a = Elector(
        server,  # type: ignore[arg-type]
        "ns",
        "lease",
        "a",
        clock=server.clock,
        wall=lambda: NOW - timedelta(hours=1),
    )
    b = elector(server, "b")
    assert a.try_acquire_or_renew()
    for _ in range(10):
        assert not b.try_acquire_or_renew()
        server.clock.t += 5
        assert a.try_acquire_or_renew()


def test_leadership_lapses_at_the_renew_deadline_before_anyone_can_take_over(
    server: LeaseServer,
) -> None:
    a, b = elector(server, "a"), elector(server, "b")
    assert a.try_acquire_or_renew()
    sent = server.clock.t
    assert not b.try_acquire_or_renew()  # b sees the record at the same moment
    server.fail = KubeError(0, "TransportError", "MaxRetryError: connection refused")
    server.clock.t = sent + 9.9
    assert a.is_leader()
    server.clock.t = sent + 10.0
    assert not a.is_leader()  # a stops writing at 10 s ...
    server.fail = None
    server.clock.t = sent + 14.9
    assert not b.try_acquire_or_renew()  # ... b can start only after 15 s
    server.clock.t = sent + 15.1
    assert b.try_acquire_or_renew()


def test_a_hung_renewal_is_bounded_by_the_deadline(server: LeaseServer) -> None:
    a = elector(server, "a")
    assert a.try_acquire_or_renew()
    server.clock.t += 8  # 2 s left before the deadline
    server.hang = 60  # every request blackholed
    with pytest.raises(KubeError):
        a.try_acquire_or_renew()
    assert server.timeouts[-1] <= 2.0 + 1e-9
    assert not a.is_leader()


def test_transport_errors_do_not_end_the_loop(server: LeaseServer) -> None:
    """The loop treats a refused connection as a failed round and keeps trying; it
    reports lost leadership once, at the deadline."""
    lost: list[bool] = []
    a = elector(server, "a", on_stopped_leading=lambda: lost.append(True))
    server.fail = KubeError(0, "TransportError", "MaxRetryError")
    assert not a._round()
    server.fail = None
    assert a._round() and a.is_leader()
    assert not lost


def test_a_lapsed_leader_never_silently_resumes(server: LeaseServer) -> None:
    a = elector(server, "a")
    assert a.try_acquire_or_renew()
    server.clock.t += 11
    assert not a.try_acquire_or_renew()  # the Lease still names a, but a lapsed
    assert not a.is_leader()


def test_release_hands_over_at_once(server: LeaseServer) -> None:
    a, b = elector(server, "a"), elector(server, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader()
    assert b.try_acquire_or_renew()  # an empty holder is free at once


def test_timings_must_be_ordered(server: LeaseServer) -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        elector(server, "a", renew_deadline=20.0)


def test_a_leader_that_sees_another_holder_steps_down_at_once(server: LeaseServer) -> None:
    a = elector(server, "a")
    assert a.try_acquire_or_renew()
    assert server.lease is not None
    server.lease["spec"]["holderIdentity"] = "b"  # e.g. an operator edited it
    server.lease["metadata"]["resourceVersion"] = "99"
    assert not a.try_acquire_or_renew()
    assert not a.is_leader() and a.validity() == 0


def test_a_deleted_lease_is_waited_out_like_an_unrenewed_one(server: LeaseServer) -> None:
    a, b = elector(server, "a"), elector(server, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    server.lease = None  # deleted: a may still be writing for up to its deadline
    assert not b.try_acquire_or_renew()
    server.clock.t += 14.9
    assert not b.try_acquire_or_renew()
    server.clock.t += 0.2
    assert b.try_acquire_or_renew()


def test_a_renewal_answered_after_the_deadline_does_not_resume(server: LeaseServer) -> None:
    a = elector(server, "a")
    assert a.try_acquire_or_renew()
    server.clock.t += 9.0
    server.late = 1.5  # the renewal is stored, but its answer arrives past the deadline
    assert not a.try_acquire_or_renew()
    assert not a.is_leader()
    server.late = 0.0
    assert not a.try_acquire_or_renew()  # and it never resumes


def test_validity_bounds_writes_by_the_time_left(server: LeaseServer) -> None:
    a = elector(server, "a")
    assert a.validity() == 0
    assert a.try_acquire_or_renew()
    server.clock.t += 7.5
    assert a.validity() == pytest.approx(2.5)
