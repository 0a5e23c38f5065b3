"""A level-based work queue and an object store fed by watch events.

kopf gives us watches; what it does not give is a controller-runtime style queue:
one reconcile per MicroService at a time, duplicate triggers coalesced, delayed
re-checks for failover timers, and retries with backoff. kopf daemons would give a
loop per object but put a finalizer on every MicroService, which blocks deletion
while the operator is down; this queue needs none.

The store keeps the last seen version of every object we watch, so a reconcile reads
children from memory instead of the API server (no reads in steady state).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

Key = tuple[str, str]
"""(namespace, name) of a MicroService."""

INSTANCE_LABEL = "app.kubernetes.io/instance"


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:  # resourceVersion is opaque; etcd makes it an integer
        return 0


class Store:
    """Thread-safe latest-version cache of watched objects, indexed by owner key.

    Watch events arrive on the event loop while reconciles run in worker threads,
    hence the lock. Objects are never mutated in place: readers get the dicts as
    stored and must not modify them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._by_owner: dict[str, dict[Key, set[tuple[str, str]]]] = {}

    @staticmethod
    def _ident(obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata", {})
        return meta.get("namespace", ""), meta["name"]

    @staticmethod
    def owner_key(obj: dict[str, Any]) -> Key | None:
        """The MicroService an object belongs to, from its instance label."""
        meta = obj.get("metadata", {})
        inst = (meta.get("labels") or {}).get(INSTANCE_LABEL)
        return (meta.get("namespace", ""), inst) if inst else None

    def put(self, kind: str, obj: dict[str, Any]) -> bool:
        """Store ``obj`` unless a newer version is already stored; True if stored."""
        ident = self._ident(obj)
        with self._lock:
            objs = self._objects.setdefault(kind, {})
            old = objs.get(ident)
            if old is not None and _rv(old) >= _rv(obj) > 0:
                return False  # older, or the echo of a write we already stored
            objs[ident] = obj
            owner = self.owner_key(obj)
            if owner is not None:
                self._by_owner.setdefault(kind, {}).setdefault(owner, set()).add(ident)
            return True

    def delete(self, kind: str, obj: dict[str, Any]) -> None:
        """Forget an object (it was deleted), unless a re-created one of the same name
        (another uid) is stored already: a late DELETED must not evict its successor."""
        ident = self._ident(obj)
        with self._lock:
            stored = self._objects.get(kind, {}).get(ident)
            uid = obj.get("metadata", {}).get("uid")
            if stored is not None and uid and stored.get("metadata", {}).get("uid") != uid:
                return
            old = self._objects.get(kind, {}).pop(ident, None)
            owner = self.owner_key(old or obj)
            if owner is not None:
                idents = self._by_owner.get(kind, {}).get(owner)
                if idents is not None:
                    idents.discard(ident)
                    if not idents:
                        del self._by_owner[kind][owner]

    def replace(
        self, kind: str, objs: list[dict[str, Any]], list_rv: int, namespace: str | None = None
    ) -> int:
        """Make the store hold exactly a fresh LIST of a kind; returns objects dropped.

        Watches that restart relist without sending DELETED for what vanished in the
        meantime; this drops such phantoms. Objects newer than the LIST (changed by a
        watch event since) are kept; with ``namespace``, only that namespace is replaced.
        """
        fresh = {self._ident(o) for o in objs}
        for obj in objs:
            self.put(kind, obj)
        dropped = 0
        with self._lock:
            stale = [
                o
                for i, o in self._objects.get(kind, {}).items()
                if i not in fresh and _rv(o) <= list_rv and namespace in (None, i[0])
            ]
        for obj in stale:
            self.delete(kind, obj)
            dropped += 1
        return dropped

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        with self._lock:
            return self._objects.get(kind, {}).get((namespace, name))

    def owned(self, kind: str, owner: Key) -> list[dict[str, Any]]:
        """Stored objects of a kind labelled as belonging to ``owner``."""
        with self._lock:
            idents = self._by_owner.get(kind, {}).get(owner, set())
            objs = self._objects.get(kind, {})
            return [objs[i] for i in sorted(idents) if i in objs]

    def keys(self, kind: str) -> list[tuple[str, str]]:
        """Identities of every stored object of a kind."""
        with self._lock:
            return sorted(self._objects.get(kind, {}))

    def count(self, kind: str) -> int:
        """Number of stored objects of a kind."""
        with self._lock:
            return len(self._objects.get(kind, {}))


class WorkQueue:
    """Coalescing queue: a key is queued at most once and processed by one worker at a time.

    A key added while it is being processed is queued again when that run finishes,
    so no trigger is lost and no two reconciles of one object overlap.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._shutdown = False

    def add(self, key: Key) -> None:
        """Queue ``key`` now (no-op if already queued)."""
        if self._shutdown:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds; an earlier pending timer wins."""
        if self._shutdown:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, delay)
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.add(key)

        self._timers[key] = loop.call_at(when, fire)

    async def get(self) -> Key:
        """The next key to process; the caller must call :meth:`done` afterwards."""
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: Key) -> None:
        """Mark processing of ``key`` finished, re-queueing it if it was triggered meanwhile."""
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def forget(self, key: Key) -> None:
        """Drop pending timers of ``key`` (its object is gone)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def shutdown(self) -> None:
        """Stop accepting work and cancel timers."""
        self._shutdown = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        return self._queue.qsize()

    @property
    def idle(self) -> bool:
        """Nothing queued or in progress (timers may be pending)."""
        return not self._queued and not self._active


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait for them to finish."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
