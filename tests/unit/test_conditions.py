"""metav1.Condition helpers: transition times move only on flips."""

from microservice_operator import conditions
from microservice_operator.api import Condition

T0 = "2026-11-28T00:00:00Z"
T1 = "2026-11-28T00:05:00Z"


def test_new_condition_gets_now() -> None:
    c = conditions.make(None, "Ready", True, "Available", "3/3", generation=2, now=T0)
    assert (c.status, c.reason, c.last_transition_time, c.observed_generation) == (
        "True",
        "Available",
        T0,
        2,
    )


def test_same_status_keeps_transition_time_but_updates_reason() -> None:
    old = [conditions.make(None, "Ready", True, "Available", "3/3", generation=1, now=T0)]
    c = conditions.make(old, "Ready", True, "ServingFromStandby", "x", generation=2, now=T1)
    assert c.last_transition_time == T0
    assert c.reason == "ServingFromStandby"
    assert c.observed_generation == 2


def test_flip_moves_transition_time() -> None:
    old = [conditions.make(None, "Ready", True, "Available", "", generation=1, now=T0)]
    c = conditions.make(old, "Ready", False, "NotReady", "", generation=1, now=T1)
    assert c.last_transition_time == T1


def test_merge_orders_known_types_and_keeps_foreign_ones() -> None:
    foreign = Condition(type="Zeta", status="True", reason="X", last_transition_time=T0)
    prev = [
        foreign,
        conditions.make(None, "Stalled", False, "AsExpected", "", generation=1, now=T0),
    ]
    ready = conditions.make(prev, "Ready", True, "Available", "", generation=1, now=T1)
    merged = conditions.merge(prev, [ready])
    assert [c.type for c in merged] == ["Ready", "Stalled", "Zeta"]
    assert conditions.is_true(merged, "Ready")
    assert not conditions.is_true(merged, "Stalled")
    assert conditions.find(merged, "Missing") is None
