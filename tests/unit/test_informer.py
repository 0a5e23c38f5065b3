"""The informer cache: relist deletions, resourceVersion order, tombstones, and the
LIST-then-WATCH loop's recovery (resume from the last version; relist on 410).

The scripted client below stands in for the API server's list/watch protocol only;
tests/integration and tests/faults run the same code against a real API server.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from tests.unit.test_plan import HELLO, NOW, converged

from microservice_operator import health, plan
from microservice_operator.informer import (
    TRIMS,
    Informer,
    Store,
    owner_key,
    prepare,
    trim_microservice,
    trim_pod,
    trim_revision,
)
from microservice_operator.kube import PODS, KubeError

HELLO_AUTOSCALED = {**HELLO, "autoscaling": {"maxReplicas": 5}, "availability": {"minAvailable": 1}}


def obj(name: str, rv: int, *, uid: str | None = None, owner: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": {"app.kubernetes.io/instance": owner},
            "managedFields": [{"manager": "kubelet"}],
        }
    }


def names(objs: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def test_relist_drops_objects_deleted_while_no_watch_ran() -> None:
    s = Store()
    s.put("Pod", obj("old-v1", 3))
    s.put("Pod", obj("new-v2", 4))
    changed = s.replace("Pod", [obj("new-v2", 4)], list_rv=10)
    assert names(changed) == ["old-v1"]  # reported, so its MicroService is queued
    assert s.get("Pod", "ns", "old-v1") is None
    assert names(s.owned("Pod", ("ns", "shop"))) == ["new-v2"]


def test_relist_reports_changed_and_new_objects_only() -> None:
    s = Store()
    s.put("Pod", obj("a", 3))
    s.put("Pod", obj("b", 4))
    b = obj("b", 7)
    b["status"] = {"phase": "Running"}
    changed = s.replace("Pod", [obj("a", 3), b, obj("c", 8)], list_rv=10)
    assert names(changed) == ["b", "c"]


def test_a_new_version_that_changes_nothing_decisions_read_is_stored_but_not_reported() -> None:
    s = Store()
    s.put("Pod", obj("a", 3))
    same = obj("a", 5)
    same["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    assert not s.put("Pod", same)  # no reconcile for it
    assert s.get("Pod", "ns", "a")["metadata"]["resourceVersion"] == "5"  # type: ignore[index]


def test_relist_is_scoped_to_its_namespace() -> None:
    s = Store()
    other = obj("x", 2)
    other["metadata"]["namespace"] = "other"
    s.put("Pod", other)
    s.replace("Pod", [], list_rv=10, namespace="ns")
    assert s.get("Pod", "other", "x") is not None


def test_out_of_order_versions_never_replace_newer_ones() -> None:
    s = Store()
    assert s.put("Pod", obj("a", 7))
    assert not s.put("Pod", obj("a", 5))
    assert s.get("Pod", "ns", "a")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]


def test_a_late_echo_cannot_resurrect_a_deleted_object() -> None:
    """A write's response (rv 5) stored after the watch reported the deletion (rv 6)."""
    s = Store()
    s.put("Pod", obj("a", 4))
    s.delete("Pod", obj("a", 6))
    assert not s.put("Pod", obj("a", 5))
    assert s.get("Pod", "ns", "a") is None
    # A new object of the same name (re-created later) is accepted.
    assert s.put("Pod", obj("a", 9, uid="uid-a2"))


def test_a_late_delete_of_an_older_incarnation_keeps_the_successor() -> None:
    s = Store()
    s.put("Pod", obj("a", 9, uid="new"))
    s.delete("Pod", obj("a", 8, uid="old"))
    assert s.get("Pod", "ns", "a") is not None


class ScriptedKube:
    """list/watch answers from a script; each watch call pops the next stream."""

    def __init__(self, lists: list[tuple[list[dict[str, Any]], int]], streams: list[Any]) -> None:
        self.lists = lists
        self.streams = streams
        self.calls: list[tuple[str, str]] = []
        self.done = threading.Event()

    def list_with_version(
        self, *_: Any, each: Callable[[dict[str, Any]], dict[str, Any]] | None = None, **__: Any
    ) -> tuple[list[dict[str, Any]], int]:
        items, rv = self.lists.pop(0)
        self.calls.append(("list", str(rv)))
        objs = [dict(o) for o in items]
        return ([each(o) for o in objs] if each is not None else objs), rv

    def watch(self, *_: Any, resource_version: str, **__: Any) -> Iterator[dict[str, Any]]:
        self.calls.append(("watch", resource_version))
        if not self.streams:
            self.done.set()
            informer.stop()
            return iter(())
        stream = self.streams.pop(0)
        if isinstance(stream, KubeError):
            raise stream
        return iter(stream)


informer: Informer


recovered: list[bool] = []


def run(kube: ScriptedKube) -> tuple[Store, list[str]]:
    global informer  # noqa: PLW0603 - the scripted client stops the loop at the end
    store = Store()
    changed: list[str] = []
    recovered.clear()
    informer = Informer(
        kube,  # type: ignore[arg-type]
        PODS,
        store,
        lambda objs: changed.extend(o["metadata"]["name"] for o in objs),
        on_recovered=lambda: recovered.append(True),
        max_backoff=0.01,
    )
    informer.run()
    return store, changed


def test_watch_starts_at_the_list_version_and_resumes_from_the_last_event() -> None:
    kube = ScriptedKube(
        lists=[([obj("a", 5)], 10)],
        streams=[
            [
                {"type": "ADDED", "object": obj("b", 11)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            KubeError(0, "TransportError", "connection reset"),
            [{"type": "DELETED", "object": obj("a", 16)}],
        ],
    )
    store, changed = run(kube)
    assert kube.calls == [
        ("list", "10"),
        ("watch", "10"),
        ("watch", "15"),  # after the stream ended: from the bookmark
        ("watch", "15"),  # after a transport error: resume, no relist
        ("watch", "16"),
    ]
    assert store.keys("Pod") == [("ns", "b")]
    assert changed == ["a", "b", "a"]
    assert recovered == [True]  # once, when the watch delivered again after the error
    assert "managedFields" not in store.get("Pod", "ns", "b")["metadata"]  # type: ignore[index]


def test_gone_relists_and_drops_what_vanished_meanwhile() -> None:
    """The pod deleted while the watch was down (and its event compacted away) is
    dropped by the relist and its MicroService is told."""
    kube = ScriptedKube(
        lists=[([obj("old", 5), obj("new", 6)], 10), ([obj("new", 6)], 50)],
        streams=[
            [{"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "old"}}],
        ],
    )
    store, changed = run(kube)
    assert kube.calls == [("list", "10"), ("watch", "10"), ("list", "50"), ("watch", "50")]
    assert store.keys("Pod") == [("ns", "new")]
    assert changed == ["old", "new", "old"]  # first list, then the relist's drop
    assert informer.relists == 1


def test_list_failures_are_retried_until_synced() -> None:
    class FlakyList(ScriptedKube):
        failures = 2

        def list_with_version(self, *a: Any, **k: Any) -> tuple[list[dict[str, Any]], int]:
            if self.failures:
                self.failures -= 1
                raise KubeError(0, "TransportError", "connection refused")
            return super().list_with_version(*a, **k)

    kube = FlakyList(lists=[([obj("a", 5)], 10)], streams=[])
    store, _ = run(kube)
    assert informer.synced.is_set()
    assert recovered == [True]
    assert store.keys("Pod") == [("ns", "a")]


def test_a_late_write_answer_cannot_resurrect_an_object_deleted_before_a_relist() -> None:
    """DELETED at 100 while no watch ran, a relist at 120 (tombstones older than the list
    are dropped), then the late answer to our own write (rv 95) arrives."""
    s = Store()
    s.put("MicroService", obj("ms", 90))
    s.delete("MicroService", obj("ms", 100))
    s.replace("MicroService", [], list_rv=120)
    s.advance("MicroService", None, 120)
    assert not s.put_written("MicroService", obj("ms", 95))
    assert s.get("MicroService", "ns", "ms") is None
    # A write newer than anything the informer saw is a new object: stored.
    assert s.put_written("MicroService", obj("other", 130))
    # And an answer for an object the store holds is just a newer version.
    s.put_written("MicroService", obj("other", 131))
    assert s.get("MicroService", "ns", "other")["metadata"]["resourceVersion"] == "131"  # type: ignore[index]


def _full_pod() -> dict[str, Any]:
    """A pod as the API server sends it (abridged, but every part present)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-abc",
            "namespace": "shop",
            "uid": "u1",
            "resourceVersion": "42",
            "generateName": "web-",
            "labels": {"app.kubernetes.io/instance": "web", "mso.dev/track": "primary"},
            "annotations": {"mso.dev/revision": "r1", "other/tool": "x" * 500},
            "creationTimestamp": "2026-11-29T10:00:00Z",
            "deletionTimestamp": "2026-11-29T10:05:00Z",
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-1", "uid": "rs"}],
            "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}] * 5,
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "app", "image": "web:1", "env": [{"name": "A"}] * 50}],
            "volumes": [{"name": "token"}] * 3,
        },
        "status": {
            "phase": "Running",
            "startTime": "2026-11-29T10:00:01Z",
            "podIP": "10.0.0.1",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "lastTransitionTime": "2026-11-29T10:01:00Z",
                    "lastProbeTime": None,
                    "message": "containers with unready status: [app]",
                },
                {"type": "PodScheduled", "status": "True"},
            ],
            "initContainerStatuses": [
                {"name": "init", "ready": True, "restartCount": 0, "state": {"terminated": {}}}
            ],
            "containerStatuses": [
                {
                    "name": "app",
                    "ready": False,
                    "restartCount": 4,
                    "image": "web:1",
                    "imageID": "sha256:" + "0" * 64,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "m" * 300}},
                    "lastState": {"terminated": {"exitCode": 1}},
                }
            ],
        },
    }


def test_trimmed_pods_keep_every_field_decisions_read() -> None:
    full = _full_pod()
    trimmed = trim_pod(copy.deepcopy(full))
    assert health.observe_pod(trimmed) == health.observe_pod(full)
    assert owner_key(trimmed) == owner_key(full)
    assert trimmed["metadata"]["annotations"] == {"mso.dev/revision": "r1"}
    assert "managedFields" not in trimmed["metadata"]
    assert len(json.dumps(trimmed)) * 3 < len(json.dumps(full))
    # Trimming a trimmed pod changes nothing (the store may see one twice).
    assert trim_pod(copy.deepcopy(trimmed)) == trimmed


def _with_other_managers(obj: dict[str, Any], *, status_timers: bool = False) -> dict[str, Any]:
    """``obj`` as the API server holds it: other managers' entries next to ours."""
    out = copy.deepcopy(obj)
    entries = list(out["metadata"].get("managedFields") or [])
    entries += [
        {
            "manager": "kubectl",
            "operation": "Update",
            "time": "2026-11-28T11:59:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:image": {}, "f:ports": {}}, "f:metadata": {"f:labels": {}}},
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "time": "2026-11-28T11:59:30Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:replicas": {}, "f:conditions": {"k:x": {}}}},
        },
    ]
    if status_timers:
        entries.append(
            {
                "manager": "curl",
                "operation": "Update",
                "subresource": "status",
                "time": "2026-11-28T11:59:40Z",
                "fieldsV1": {"f:status": {"f:failoverState": {"f:revisionSince": {}}}},
            }
        )
    out["metadata"]["managedFields"] = entries
    return out


@pytest.mark.parametrize("case", ["converged", "autoscaled", "new image", "forged timers"])
def test_trimmed_objects_plan_exactly_as_full_ones(case: str) -> None:
    """Every kind is cached trimmed (managedFields cut to ours, or to who-wrote-when);
    a plan from trimmed objects equals the plan from the objects as served."""
    spec = HELLO_AUTOSCALED if case == "autoscaled" else HELLO
    obj, observed = converged(spec)
    if case == "new image":
        obj["spec"] = {**obj["spec"], "image": "hello:2"}
        obj["metadata"]["generation"] = 2
    full_ms = _with_other_managers(obj, status_timers=case == "forged timers")
    full = plan.Observed(
        **{
            **observed.__dict__,
            **{
                key: _with_other_managers(getattr(observed, key))
                for key in ("deployment", "service", "hpa", "pdb")
                if getattr(observed, key) is not None
            },
            "revisions": tuple(_with_other_managers(r) for r in observed.revisions),
        }
    )
    trimmed = plan.Observed(
        **{
            **full.__dict__,
            **{
                key: TRIMS[getattr(full, key)["kind"]](copy.deepcopy(getattr(full, key)))
                for key in ("deployment", "service", "hpa", "pdb")
                if getattr(full, key) is not None
            },
            "revisions": tuple(trim_revision(copy.deepcopy(r)) for r in full.revisions),
        }
    )
    small_ms = trim_microservice(copy.deepcopy(full_ms))
    assert "fieldsV1" not in str(small_ms["metadata"]["managedFields"][0])
    later = NOW + timedelta(seconds=40)
    a, b = plan.plan(full_ms, full, later), plan.plan(small_ms, trimmed, later)
    assert (a.applies, a.status, a.events, a.destructive, a.requeue_after, a.handoffs) == (
        b.applies,
        b.status,
        b.events,
        b.destructive,
        b.requeue_after,
        b.handoffs,
    )
    if case == "forged timers":
        assert any(e.reason == "StatusIgnored" for e in b.events)
    dep = trimmed.deployment
    assert dep is not None
    assert {e["manager"] for e in dep["metadata"]["managedFields"]} <= {"microservice-operator"}
    assert len(json.dumps(small_ms)) < len(json.dumps(full_ms))


def test_equal_field_sets_are_one_object_and_unchanged() -> None:
    """Every Deployment the operator renders has nearly the same managedFields field
    set: cached, the equal parts are one object; the parts naming an owner's uid are
    each object's own; the content is as served."""

    def deployment(uid: str) -> dict[str, Any]:
        fields = {
            "f:metadata": {"f:ownerReferences": {f'k:{{"uid":"{uid}"}}': {}}, "f:labels": {}},
            "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}},
        }
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": f"d-{uid}",
                "namespace": "ns",
                "resourceVersion": "5",
                "managedFields": [
                    {"manager": "microservice-operator", "operation": "Apply", "fieldsV1": fields}
                ],
            },
        }

    a, b = deployment("u1"), deployment("u2")
    served = copy.deepcopy(a)
    fa = prepare("Deployment", a)["metadata"]["managedFields"][0]["fieldsV1"]
    fb = prepare("Deployment", b)["metadata"]["managedFields"][0]["fieldsV1"]
    assert a == served
    assert fa["f:spec"] is fb["f:spec"]
    assert fa["f:metadata"] is not fb["f:metadata"]
    assert fa["f:metadata"]["f:labels"] is fb["f:metadata"]["f:labels"]
    assert list(fb["f:metadata"]["f:ownerReferences"]) == ['k:{"uid":"u2"}']


def test_a_new_version_takes_what_did_not_change_from_the_cached_one() -> None:
    """A pod's next version mostly repeats the last: the unchanged parts are the cached
    objects themselves (one copy, no walk), the changed ones are the new values."""

    def version(rv: int, ready: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "uid": "u1",
                "resourceVersion": str(rv),
                "labels": {"app.kubernetes.io/instance": "shop", "mso.dev/track": "primary"},
            },
            "spec": {"nodeName": "n1"},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": ready},
                ],
            },
        }

    store = Store()
    store.put("Pod", prepare("Pod", version(5, "False")))
    cached = store.get("Pod", "ns", "p")
    assert cached is not None
    new = prepare("Pod", version(6, "True"), store.previous("Pod", version(6, "True")))
    assert new == {**version(6, "True"), "spec": {"nodeName": "n1"}}
    assert new["metadata"]["labels"] is cached["metadata"]["labels"]
    assert new["spec"] is cached["spec"]
    assert new["status"]["conditions"][0] is cached["status"]["conditions"][0]
    assert new["status"]["conditions"][1]["status"] == "True"
    assert cached["status"]["conditions"][1]["status"] == "False"  # never modified
    # Another incarnation (a new uid) takes nothing from the old one.
    other = version(7, "True")
    other["metadata"]["uid"] = "u2"
    assert store.previous("Pod", other) is None


def test_free_form_parts_never_take_a_value_python_calls_equal() -> None:
    """1 == True in Python: a MicroService's free-form field changed from 1 to true is a
    change, so only its metadata comes from the cached version."""
    old = prepare(
        "MicroService",
        {
            "metadata": {"name": "shop", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
            "spec": {"failover": {"standby": {"affinity": {"x": 1}}}},
        },
    )
    new = prepare(
        "MicroService",
        {
            "metadata": {"name": "shop", "namespace": "ns", "uid": "u", "labels": {"a": "b"}},
            "spec": {"failover": {"standby": {"affinity": {"x": True}}}},
        },
        old,
    )
    assert new["spec"]["failover"]["standby"]["affinity"]["x"] is True
    assert new["metadata"]["labels"] is old["metadata"]["labels"]


def test_the_echo_of_our_own_write_is_no_news_but_anyone_elses_change_is() -> None:
    """While we write an object, the watch may deliver the write's echo before our
    request has its answer: that version is stored but reported by nobody. A version
    someone else made meanwhile is reported when the write is over."""
    store = Store()
    i = ("ns", "shop")
    assert store.put("MicroService", obj("shop", 5))

    # Our status write: its echo (rv 6) arrives first, then the answer.
    store.begin_write("MicroService", i)
    assert not store.put("MicroService", {**obj("shop", 6), "status": {"x": 1}})
    store.wrote("MicroService", {**obj("shop", 6), "status": {"x": 1}})
    assert store.end_write("MicroService", i) is None
    assert store.get("MicroService", *i) == {**obj("shop", 6), "status": {"x": 1}}

    # Someone else's change (rv 7) lands just before ours (rv 8), both echoed first.
    store.begin_write("MicroService", i)
    assert not store.put("MicroService", {**obj("shop", 7), "status": {"x": 2}})
    assert not store.put("MicroService", {**obj("shop", 8), "status": {"x": 3}})
    store.wrote("MicroService", {**obj("shop", 8), "status": {"x": 3}})
    news = store.end_write("MicroService", i)
    assert news is not None and news["metadata"]["resourceVersion"] == "8"

    # A write that fails: whatever the watch stored meanwhile is news.
    store.begin_write("MicroService", i)
    assert not store.put("MicroService", {**obj("shop", 9), "status": {"x": 4}})
    news = store.end_write("MicroService", i)
    assert news is not None and news["metadata"]["resourceVersion"] == "9"

    # No write in flight: reported at once, as always.
    assert store.put("MicroService", {**obj("shop", 10), "status": {"x": 5}})


def test_a_deployment_status_change_takes_its_field_sets_from_the_cached_version() -> None:
    """Our apply's managedFields entry is the same object in the next version (a status
    change), its field sets interned once, and the cached version stays as it was."""

    def version(rv: int, ready: int) -> dict[str, Any]:
        fields = {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}}
        return {
            "metadata": {
                "name": "d",
                "namespace": "ns",
                "uid": "u1",
                "resourceVersion": str(rv),
                "managedFields": [
                    {"manager": "microservice-operator", "operation": "Apply", "fieldsV1": fields},
                    {"manager": "kube-controller-manager", "operation": "Update"},
                ],
            },
            "spec": {"replicas": 3},
            "status": {"readyReplicas": ready},
        }

    cached = prepare("Deployment", version(5, 1))
    served = copy.deepcopy(cached)
    new = prepare("Deployment", version(6, 2), cached)
    assert new["metadata"]["managedFields"][0] is cached["metadata"]["managedFields"][0]
    assert new["spec"] is cached["spec"]
    assert new["status"] == {"readyReplicas": 2}
    assert cached == served
