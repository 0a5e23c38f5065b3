"""The coalescing work queue and the watch-fed store."""

import asyncio

from microservice_operator.informer import Store
from microservice_operator.workqueue import WorkQueue


def _obj(name: str, rv: str, instance: str | None = "shop") -> dict[str, object]:
    labels = {"app.kubernetes.io/instance": instance} if instance else {}
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "labels": labels}}


def test_store_keeps_newest_and_indexes_by_owner() -> None:
    s = Store()
    assert s.put("Pod", _obj("a", "5"))
    assert not s.put("Pod", _obj("a", "4"))  # older version from a late event
    assert s.get("Pod", "ns", "a")["metadata"]["resourceVersion"] == "5"  # type: ignore[index]
    s.put("Pod", _obj("b", "6"))
    s.put("Pod", _obj("c", "7", instance="other"))
    assert [p["metadata"]["name"] for p in s.owned("Pod", ("ns", "shop"))] == ["a", "b"]
    s.delete("Pod", _obj("a", "8"))
    assert [p["metadata"]["name"] for p in s.owned("Pod", ("ns", "shop"))] == ["b"]
    assert s.count("Pod") == 2


def test_queue_coalesces_and_requeues_when_dirty() -> None:
    async def scenario() -> list[object]:
        q = WorkQueue()
        q.add("k")
        q.add("k")
        assert len(q) == 1
        key = await q.get()
        q.add("k")  # triggered while being processed
        assert len(q) == 0
        q.done(key)
        assert len(q) == 1  # re-queued after the run
        seen = [await q.get()]
        q.done("k")
        assert q.idle
        return seen

    assert asyncio.run(scenario()) == ["k"]


def test_add_after_keeps_the_earliest_timer() -> None:
    async def scenario() -> float:
        q = WorkQueue()
        loop = asyncio.get_running_loop()
        start = loop.time()
        q.add_after("k", 5.0)
        q.add_after("k", 0.05)  # earlier wins
        q.add_after("k", 10.0)  # later is ignored
        await asyncio.wait_for(q.get(), timeout=2)
        return loop.time() - start

    assert asyncio.run(scenario()) < 2


def test_forget_cancels_timers() -> None:
    async def scenario() -> bool:
        q = WorkQueue()
        q.add_after("k", 0.01)
        q.forget("k")
        try:
            await asyncio.wait_for(q.get(), timeout=0.2)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(scenario())


def test_replace_drops_phantoms_but_keeps_newer_objects() -> None:
    s = Store()
    s.put("Pod", _obj("gone", "3"))
    s.put("Pod", _obj("kept", "4"))
    s.put("Pod", _obj("newer", "9"))  # changed after the LIST below was read
    dropped = s.replace("Pod", [_obj("kept", "4")], list_rv=5)
    assert [o["metadata"]["name"] for o in dropped] == ["gone"]
    assert s.keys("Pod") == [("ns", "kept"), ("ns", "newer")]


def test_late_delete_does_not_evict_a_recreated_object() -> None:
    s = Store()
    new = _obj("a", "7")
    new["metadata"]["uid"] = "second"  # type: ignore[index]
    s.put("Pod", new)
    old = _obj("a", "5")
    old["metadata"]["uid"] = "first"  # type: ignore[index]
    s.delete("Pod", old)
    assert s.get("Pod", "ns", "a") is new


def test_echo_of_a_stored_write_is_not_news() -> None:
    s = Store()
    assert s.put("Pod", _obj("a", "5"))
    assert not s.put("Pod", _obj("a", "5"))
