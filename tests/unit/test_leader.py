"""Leader election decisions over a Lease, with a fixed clock."""

from datetime import UTC, datetime, timedelta

import pytest

from microservice_operator import leader

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def lease(holder: str, renewed_ago: float, transitions: int = 3) -> leader.LeaseState:
    return leader.LeaseState.of(
        {
            "spec": {
                "holderIdentity": holder,
                "renewTime": leader.micro_time(NOW - timedelta(seconds=renewed_ago)),
                "leaseDurationSeconds": 15,
                "leaseTransitions": transitions,
            }
        }
    )


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (None, "create"),
        (lease("me", 3), "renew"),
        (lease("me", 60), "renew"),  # our own, even if late: renew it
        (lease("other", 3), "wait"),
        (lease("other", 15), "wait"),  # exactly at the duration: still held
        (lease("other", 15.5), "acquire"),
        (lease("", 0), "acquire"),  # released on shutdown
    ],
)
def test_decide(state: leader.LeaseState | None, action: str) -> None:
    assert leader.decide(state, "me", NOW) == action


def test_acquire_counts_a_transition_and_renew_does_not() -> None:
    old = lease("other", 30, transitions=3)
    acquired = leader.lease_spec("acquire", old, "me", NOW)
    assert acquired["holderIdentity"] == "me"
    assert acquired["leaseTransitions"] == 4
    assert acquired["acquireTime"] == acquired["renewTime"] == "2026-11-28T12:00:00.000000Z"
    renewed = leader.lease_spec("renew", lease("me", 3), "me", NOW)
    assert "leaseTransitions" not in renewed and "acquireTime" not in renewed


def test_release_hands_over_at_once() -> None:
    spec = leader.released_spec(lease("me", 1))
    released = leader.LeaseState.of({"spec": spec})
    assert released.holder == ""
    assert leader.decide(released, "other", NOW) == "acquire"
