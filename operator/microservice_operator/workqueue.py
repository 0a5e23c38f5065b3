"""A level-based work queue, as controller-runtime has.

One reconcile per MicroService at a time, duplicate triggers coalesced, delayed
re-checks for failover timers, and retries with backoff. kopf daemons would give a
loop per object but put a finalizer on every MicroService, which blocks deletion
while the operator is down; this queue needs none. The caches it works from are in
:mod:`informer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque

Key = tuple[str, str]
"""(namespace, name) of a MicroService."""


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


class Pacer:
    """At most ``per_minute`` grants in any 60 s (a sliding window), shared by all
    workers: a fleet-wide pace for changes that restart pods without anyone asking
    (a new operator version's rendering). 0 grants nothing."""

    WINDOW = 60.0

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._grants: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, now: float) -> bool:
        """One grant at monotonic time ``now``, if the pace allows it."""
        with self._lock:
            while self._grants and now - self._grants[0] >= self.WINDOW:
                self._grants.popleft()
            if len(self._grants) >= self.per_minute:
                return False
            self._grants.append(now)
            return True

    def wait(self, now: float) -> float | None:
        """Seconds until a grant may be possible; None if never (pace 0)."""
        if self.per_minute <= 0:
            return None
        with self._lock:
            if len(self._grants) < self.per_minute:
                return 0.0
            return max(0.0, self._grants[0] + self.WINDOW - now)
