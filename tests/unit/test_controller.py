"""The controller's safety valves: the write guard under leader election, and the
liveness verdict when a background part died."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from tests.unit.test_plan import HELLO, NOW, converged

from microservice_operator import controller as controller_mod
from microservice_operator import plan as planning
from microservice_operator.controller import Controller, Memo
from microservice_operator.execute import Executor
from microservice_operator.informer import Store, trim_namespace
from microservice_operator.kube import ALREADY_EXISTS, DEPLOYMENTS, LEASES, KubeError
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
    """Holds one object (or none) and records the calls, with the API server's
    create-only apply semantics: an existing object is left alone."""

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.calls: list[str] = []

    def get(self, *_: Any, **__: Any) -> dict[str, Any] | None:
        self.calls.append("get")
        return self.obj

    def apply(self, manifest: dict[str, Any], *, create_only: bool = False) -> dict[str, Any]:
        self.calls.append("create" if create_only else "apply")
        if create_only and self.obj is not None:
            raise KubeError(409, ALREADY_EXISTS, "the object has been modified")
        self.obj = manifest
        return manifest


MS = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "ns"}}


def owned_by(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": "web", "ownerReferences": [{"uid": uid, "controller": True}]}}


@pytest.mark.parametrize(
    ("live", "reason"),
    [(None, None), (owned_by("u1"), "StaleCache"), (owned_by("someone"), "ChildConflict")],
)
def test_a_child_the_plan_did_not_see_is_only_created_never_adopted(
    live: dict[str, Any] | None, reason: str | None
) -> None:
    """A new child costs one create-only apply and no read. One that exists is left as
    it is: someone else's is a conflict, and our own missing from the cache means the
    plan (e.g. the Service's track) may be wrong: plan again from a live read."""
    kube = OneObjectKube(live)
    ex = Executor(kube, Store(), OperatorMetrics())  # type: ignore[arg-type]
    if reason is None:
        assert ex.apply_child(MS, SERVICE, None) == SERVICE
        assert kube.calls == ["create"]
        return
    with pytest.raises(KubeError) as err:
        ex.apply_child(MS, SERVICE, None)
    assert err.value.reason == reason
    assert kube.calls == ["create", "get"]
    assert kube.obj is live  # untouched
    kube.calls.clear()
    ex.apply_child(MS, SERVICE, owned_by("u1"))  # seen: applied, no lookup at all
    assert kube.calls == ["apply"]


# ----------------------------------------------------------------------------- memo


class NoWrites:
    """A Kube that fails every call: a converged MicroService must cost none."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected API call: {name}")


def versioned(obj: dict[str, Any] | None, rv: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = rv
    return out


@pytest.fixture
def memoised(monkeypatch: pytest.MonkeyPatch) -> tuple[Controller, dict[str, Any], list[int]]:
    """A controller holding a converged MicroService (with versions), and the count of
    plans it made. Returns the controller, the mutable observation and the count."""
    obj, observed = converged(HELLO)
    obj["metadata"]["resourceVersion"] = "5"
    state: dict[str, Any] = {
        "ms": obj,
        "observed": dataclasses.replace(
            observed,
            deployment=versioned(observed.deployment, "11"),
            service=versioned(observed.service, "12"),
            pods=tuple(versioned(p, f"2{i}") for i, p in enumerate(observed.pods)),
        ),
    }
    c = Controller(NoWrites(), OperatorMetrics(), Settings(), exit_process=lambda _: None)  # type: ignore[arg-type]
    c.executor.observed = lambda key: state["observed"]  # type: ignore[method-assign]
    c.store.put("MicroService", obj)
    plans: list[int] = []
    real_plan = planning.plan

    def counting(*args: Any, **kwargs: Any) -> planning.Plan:
        plans.append(1)
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(planning, "plan", counting)
    monkeypatch.setattr(controller_mod, "utcnow", lambda: NOW + timedelta(seconds=30))
    return c, state, plans


def test_an_unchanged_microservice_is_not_planned_again(
    memoised: tuple[Controller, dict[str, Any], list[int]],
) -> None:
    c, _, plans = memoised
    assert c.reconcile(("ns", "shop")) is None
    assert len(plans) == 1  # planned, found nothing to do
    c.reconcile(("ns", "shop"))
    c.reconcile(("ns", "shop"))
    assert len(plans) == 1
    assert c.metrics.reconciles_skipped._value.get() == 2


@pytest.mark.parametrize("change", ["pod", "deployment", "microservice", "new pod", "gone pod"])
def test_a_changed_child_or_microservice_is_planned_again(
    memoised: tuple[Controller, dict[str, Any], list[int]], change: str
) -> None:
    c, state, plans = memoised
    c.reconcile(("ns", "shop"))
    observed = state["observed"]
    if change == "pod":
        pods = (versioned(observed.pods[0], "99"), *observed.pods[1:])
        state["observed"] = dataclasses.replace(observed, pods=pods)
    elif change == "new pod":
        state["observed"] = dataclasses.replace(
            observed, pods=(*observed.pods, versioned(observed.pods[0], "98"))
        )
    elif change == "gone pod":
        state["observed"] = dataclasses.replace(observed, pods=observed.pods[1:])
    elif change == "deployment":
        state["observed"] = dataclasses.replace(
            observed, deployment=versioned(observed.deployment, "99")
        )
    else:  # a new generation (or annotation, or status) is a new resourceVersion
        state["ms"] = versioned(state["ms"], "6")
        c.store.put("MicroService", state["ms"])
    with contextlib.suppress(AssertionError):  # a changed input may call for a write
        c.reconcile(("ns", "shop"))
    assert len(plans) == 2


def test_a_memo_lasts_until_the_plans_first_timer() -> None:
    memo = Memo.after(("inputs",), 10.0, now=100.0)
    assert memo.still_holds(("inputs",), 109.9)
    assert memo.requeue_after(104.0) == 6.0
    assert not memo.still_holds(("inputs",), 110.0)  # the timer is due: plan again
    assert not memo.still_holds(("other",), 101.0)
    forever = Memo.after(("inputs",), None, now=100.0)
    assert forever.still_holds(("inputs",), 1e9) and forever.requeue_after(5.0) is None


def test_a_plan_that_writes_is_not_memoised(
    memoised: tuple[Controller, dict[str, Any], list[int]],
) -> None:
    c, state, plans = memoised
    drifted = copy.deepcopy(state["observed"].deployment)
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    drifted["metadata"]["resourceVersion"] = "12"
    drifted["metadata"]["generation"] = 2  # the API server's answer to a spec edit
    state["observed"] = dataclasses.replace(state["observed"], deployment=drifted)
    for _ in range(2):
        with pytest.raises(AssertionError, match="unexpected API call: apply"):
            c.reconcile(("ns", "shop"))
    assert len(plans) == 2
    assert ("ns", "shop") not in c._memo


# ----------------------------------------------------------------------------- selector


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "3"}}


def test_a_namespace_selector_picks_namespaces_from_the_namespace_cache() -> None:
    c = Controller(None, OperatorMetrics(), Settings(namespace_selector="team=a"))  # type: ignore[arg-type]
    assert not c.selected("shop")
    c.store.put("Namespace", trim_namespace(namespace("shop", team="a")))
    assert c.selected("shop") and not c.selected("other")
    everything = Controller(None, OperatorMetrics(), Settings())  # type: ignore[arg-type]
    assert everything.selected("any")


def test_a_namespace_is_cached_as_its_name_labels_and_version() -> None:
    big = namespace("shop", team="a")
    big["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    big["spec"] = {"finalizers": ["kubernetes"]}
    big["status"] = {"phase": "Active"}
    assert trim_namespace(big) == namespace("shop", team="a")


INSTANCE_WEB = {"app.kubernetes.io/instance": "web"}


def test_a_burst_of_child_events_is_one_reconcile() -> None:
    """Pod events of one MicroService within CHILD_EVENT_DELAY queue it once; a change
    of the MicroService itself is queued at once."""
    c = Controller(None, OperatorMetrics(), Settings())  # type: ignore[arg-type]
    c.store.put("MicroService", {"metadata": {"name": "web", "namespace": "ns"}})
    for _ in range(5):
        pod = {"metadata": {"name": "web-1", "namespace": "ns", "labels": INSTANCE_WEB}}
        c._changed("Pod", [pod])
    start = time.monotonic()
    assert len(c.queue) == 0
    while len(c.queue) == 0 and time.monotonic() - start < 5:
        time.sleep(0.01)
    assert time.monotonic() - start >= controller_mod.CHILD_EVENT_DELAY * 0.9  # it waited
    assert len(c.queue) == 1  # the burst is one reconcile
    c._changed("MicroService", [{"metadata": {"name": "other", "namespace": "ns"}}])
    assert len(c.queue) == 2
    c.queue.shutdown()


class EchoingKube:
    """patch_status as the API server and the watch race it: the watch delivers the
    new version (and, if asked, someone else's just before it) before the answer."""

    def __init__(self, store: Store, other_first: bool) -> None:
        self.store, self.other_first = store, other_first
        self.reported: list[bool] = []  # what the watch's store.put said: report it?

    def patch_status(self, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        def version(rv: int, st: dict[str, Any]) -> dict[str, Any]:
            meta = {"name": name, "namespace": ns, "uid": "u1", "resourceVersion": str(rv)}
            return {"kind": "MicroService", "metadata": meta, "status": st}

        if self.other_first:
            self.reported.append(self.store.put("MicroService", version(7, {"forged": True})))
        self.reported.append(self.store.put("MicroService", version(8, status)))
        return version(8, status)


@pytest.mark.parametrize("other_first", [False, True])
def test_our_own_status_write_is_not_news_but_a_change_made_meanwhile_is(
    other_first: bool,
) -> None:
    """The echo of our write would plan the MicroService again for nothing; a change
    someone else made while we wrote must still reach a reconcile."""
    store = Store()
    ms = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "resourceVersion": "5"}}
    store.put("MicroService", copy.deepcopy(ms))
    news: list[tuple[str, list[dict[str, Any]]]] = []
    kube = EchoingKube(store, other_first)
    ex = Executor(
        kube,  # type: ignore[arg-type]
        store,
        OperatorMetrics(),
        lambda kind, objs: news.append((kind, objs)),
    )
    p = planning.Plan(status={"phase": "Ready"}, status_changed=True)
    ex.write_status(ms, p)
    assert store.get("MicroService", "ns", "web")["status"] == {"phase": "Ready"}  # type: ignore[index]
    assert not any(kube.reported)  # held while the write was in flight
    assert [kind for kind, _ in news] == (["MicroService"] if other_first else [])


def test_a_dead_reconcile_worker_is_a_dead_part_unless_stopping() -> None:
    """A worker thread that ended (a BaseException escaped it) leaves keys unreconciled:
    the supervisor must see it and end the process; after stop() workers end on purpose."""
    c = Controller(None, OperatorMetrics(), Settings(), exit_process=lambda _: None)  # type: ignore[arg-type]
    worker = threading.Thread(target=lambda: None, name="reconcile-3")
    worker.start()
    worker.join()
    c._workers.append(worker)
    assert c.dead_parts() == ["reconcile-3"]
    c._stopping = True
    assert c.dead_parts() == []
