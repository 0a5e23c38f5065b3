"""The coalescing work queue and the watch-fed store."""

import threading
import time
from collections.abc import Callable

from microservice_operator.informer import Store
from microservice_operator.workqueue import WorkQueue


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


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
    q = WorkQueue()
    q.add("k")
    q.add("k")
    assert len(q) == 1
    key = q.get(timeout=1)
    q.add("k")  # triggered while being processed
    assert len(q) == 0
    q.done(key)
    assert len(q) == 1  # re-queued after the run
    assert q.get(timeout=1) == "k"
    q.done("k")
    assert q.idle


def test_add_after_keeps_the_earliest_timer() -> None:
    q = WorkQueue()
    start = time.monotonic()
    q.add_after("k", 5.0)
    q.add_after("k", 0.05)  # earlier wins
    q.add_after("k", 10.0)  # later is ignored
    assert q.get(timeout=2) == "k"
    assert time.monotonic() - start < 2
    q.done("k")
    assert q.pending_timers() == 0


def test_timers_fire_in_order_and_an_earlier_one_wakes_the_timer_thread() -> None:
    q = WorkQueue()
    q.add_after("late", 0.4)
    wait_until(lambda: q._timer_wakes_at is not None)  # asleep until "late" is due
    q.add_after("early", 0.05)
    assert q.get(timeout=0.3) == "early"
    assert q.get(timeout=1) == "late"


def test_forget_cancels_timers() -> None:
    q = WorkQueue()
    q.add_after("k", 0.01)
    q.forget("k")
    assert q.get(timeout=0.2) is None


def test_shutdown_wakes_waiting_workers() -> None:
    q = WorkQueue()
    got: list[object] = []
    workers = [threading.Thread(target=lambda: got.append(q.get())) for _ in range(3)]
    for w in workers:
        w.start()
    wait_until(lambda: len(q._ready._waiters) == 3)  # type: ignore[attr-defined]
    q.shutdown()
    for w in workers:
        w.join(timeout=2)
    assert got == [None, None, None]
    q.add("k")  # ignored after shutdown
    assert len(q) == 0


def test_no_key_is_handed_out_after_shutdown() -> None:
    """A stopping operator finishes the reconciles in flight and starts no new one,
    whatever is still queued."""
    q = WorkQueue()
    q.add("a")
    q.add("b")
    assert q.get(timeout=1) == "a"
    q.shutdown()
    assert q.get(timeout=0.1) is None
    q.done("a")  # the run in flight ends normally


def test_one_key_is_never_processed_by_two_workers_at_once() -> None:
    q = WorkQueue()
    active: set[object] = set()
    overlaps: list[object] = []
    lock = threading.Lock()

    def work() -> None:
        while (key := q.get(timeout=0.5)) is not None:
            with lock:
                if key in active:
                    overlaps.append(key)
                active.add(key)
            time.sleep(0.001)
            with lock:
                active.discard(key)
            q.done(key)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for i in range(400):
        q.add(f"k{i % 5}")
        if i % 7 == 0:
            q.add_after(f"k{i % 3}", 0.001)
    for w in workers:
        w.join(timeout=5)
    assert not overlaps
    assert q.idle


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


def test_a_dead_timer_thread_is_reported() -> None:
    q = WorkQueue()
    assert q.timers_alive()  # not started yet: nothing to hand over
    q.add_after("k", 60)
    assert q.timers_alive()
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    q._timer_thread = dead  # as if an exception had ended it
    assert not q.timers_alive()
    q.shutdown()
    assert q.timers_alive()  # ended on purpose


def test_timers_on_a_grid_come_due_together() -> None:
    """Keys added 30 ms apart on a grid are handed over on one wake-up: the first one
    out, the other is queued already (without the grid, 30 ms later). A 1 s grid, so a
    loaded machine's late wake-ups cannot carry the second key into the next period."""
    q = WorkQueue()
    wait_until(lambda: time.monotonic() % 1.0 < 0.1)  # early in a grid period
    q.add_after("a", 0.1, grid=1.0)
    time.sleep(0.03)  # the second trigger, a moment later (not a wait for a condition)
    q.add_after("b", 0.1, grid=1.0)
    assert q.get(timeout=2) == "a"
    assert len(q) == 1
    assert q.get(timeout=0) == "b"
