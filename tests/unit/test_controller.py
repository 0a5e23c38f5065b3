"""The controller's safety valves: the write guard under leader election, and the
liveness verdict when a background part died."""

from __future__ import annotations

from typing import Any

import pytest

from microservice_operator.controller import Controller
from microservice_operator.execute import Executor
from microservice_operator.informer import Store
from microservice_operator.kube import DEPLOYMENTS, LEASES, KubeError
from microservice_operator.metrics import OperatorMetrics
from microservice_operator.settings import Settings


class Part:
    def __init__(self, alive: bool, name: str = "Pod") -> None:
        self._alive = alive
        self.name = name
        self.synced = type("E", (), {"is_set": lambda _self: True})()

    def alive(self) -> bool:
        return self._alive

    def is_leader(self) -> bool:
        return self._alive

    def validity(self) -> float:
        return 7.5 if self._alive else 0.0


def controller(**parts: Any) -> Controller:
    c = Controller(None, OperatorMetrics(), Settings(), exit_process=lambda _: None)  # type: ignore[arg-type]
    for k, v in parts.items():
        setattr(c, k, v)
    return c


def test_health_fails_when_an_informer_died() -> None:
    assert controller(informers=[Part(True)]).health()["synced"]
    with pytest.raises(RuntimeError, match="informer Pod"):
        controller(informers=[Part(True), Part(False)]).health()


def test_health_fails_when_the_elector_died() -> None:
    with pytest.raises(RuntimeError, match="leader election"):
        controller(informers=[], elector=Part(False)).health()


def test_writes_are_refused_once_leadership_lapsed() -> None:
    c = controller(elector=Part(True))
    assert c._guard("apply", DEPLOYMENTS) == 7.5  # the write's timeout: the Lease's validity
    c.elector = Part(False)  # type: ignore[assignment]
    with pytest.raises(KubeError) as err:
        c._guard("apply", DEPLOYMENTS)
    assert err.value.reason == "NotLeader"
    c._guard("update", LEASES)  # the elector's own writes always pass


def test_standalone_never_refuses() -> None:
    assert controller()._guard("delete", DEPLOYMENTS) is None


class OneObjectKube:
    """Answers GETs with one object (or none)."""

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj

    def get(self, *_: Any, **__: Any) -> dict[str, Any] | None:
        return self.obj


MS = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}


def owned_by(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": "web", "ownerReferences": [{"uid": uid, "controller": True}]}}


@pytest.mark.parametrize(
    ("live", "reason"),
    [(None, None), (owned_by("u1"), "StaleCache"), (owned_by("someone"), "ChildConflict")],
)
def test_a_child_the_plan_did_not_see_is_looked_up_before_it_is_applied(
    live: dict[str, Any] | None, reason: str | None
) -> None:
    """Our own child missing from the cache means the plan (e.g. the Service's track)
    may be wrong: plan again from a live read instead of applying it."""
    ex = Executor(OneObjectKube(live), Store(), OperatorMetrics())  # type: ignore[arg-type]
    if reason is None:
        ex.check_unseen(MS, "Service", "web", None)
        return
    with pytest.raises(KubeError) as err:
        ex.check_unseen(MS, "Service", "web", None)
    assert err.value.reason == reason
    ex.check_unseen(MS, "Service", "web", owned_by("u1"))  # seen: no lookup at all
