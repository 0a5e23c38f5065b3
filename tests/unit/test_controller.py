"""The controller's safety valves: the write guard under leader election, and the
liveness verdict when a background part died."""

from __future__ import annotations

from typing import Any

import pytest

from microservice_operator.controller import Controller
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
    c._guard("apply", DEPLOYMENTS)
    c.elector = Part(False)  # type: ignore[assignment]
    with pytest.raises(KubeError) as err:
        c._guard("apply", DEPLOYMENTS)
    assert err.value.reason == "NotLeader"
    c._guard("update", LEASES)  # the elector's own writes always pass


def test_standalone_never_refuses() -> None:
    controller()._guard("delete", DEPLOYMENTS)
