"""A level-based work queue, as client-go's workqueue has.

One reconcile per MicroService at a time, duplicate triggers coalesced, delayed
re-checks for failover timers, and retries with backoff. kopf daemons would give a
loop per object but put a finalizer on every MicroService, which blocks deletion
while the operator is down; this queue needs none. The caches it works from are in
:mod:`informer`.

Thread-safe, and worked by threads: informers add keys from their own threads and
worker threads take them, with no event loop in between. Each hand-over between
threads is a wake-up, and informer to event loop to worker and back made three per
reconcile (measured: the event loop's CPU halved without them, see bench/README.md).
A busy worker takes the next key without sleeping; timers are kept by one thread
that wakes for the earliest and hands over every key then due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Key = tuple[str, str]
"""(namespace, name) of a MicroService."""


class WorkQueue:
    """Coalescing queue: a key is queued at most once and processed by one worker at a time.

    A key added while it is being processed is queued again when that run finishes,
    so no trigger is lost and no two reconciles of one object overlap.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # workers wait here for keys
        self._timed = threading.Condition(self._lock)  # the timer thread waits here
        self._queue: deque[Any] = deque()
        self._queued: set[Any] = set()
        self._active: set[Any] = set()
        self._dirty: set[Any] = set()
        self._due: dict[Any, float] = {}  # key -> when its pending timer fires
        self._heap: list[tuple[float, int, Any]] = []  # (when, seq, key); stale entries skipped
        self._seq = 0
        self._timer_thread: threading.Thread | None = None
        self._timer_wakes_at: float | None = None  # None: sleeping without a deadline
        self._shutdown = False

    def add(self, key: Any) -> None:
        """Queue ``key`` now (no-op if already queued)."""
        with self._lock:
            self._add(key)

    def _add(self, key: Any) -> None:
        if self._shutdown or key in self._queued:
            return
        if key in self._active:
            self._dirty.add(key)
            return
        self._queued.add(key)
        self._queue.append(key)
        self._ready.notify()

    def add_after(self, key: Any, delay: float, *, grid: float = 0.0) -> None:
        """Queue ``key`` after ``delay`` seconds; an earlier pending timer wins.

        ``grid``: then at the next multiple of ``grid`` seconds of the queue's clock,
        so that keys added within the same ``grid`` seconds come due together and are
        handed over on one wake-up, their work done back to back."""
        with self._lock:
            if self._shutdown:
                return
            when = self._clock() + max(0.0, delay)
            if grid > 0:
                when = math.ceil(when / grid) * grid
            due = self._due.get(key)
            if due is not None and due <= when:
                return
            self._due[key] = when
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, key))
            if self._timer_thread is None:
                self._timer_thread = threading.Thread(
                    target=self._run_timers, name="workqueue-timers", daemon=True
                )
                self._timer_thread.start()
            elif self._timer_wakes_at is None or when < self._timer_wakes_at:
                # Only a timer earlier than the one it sleeps for needs the thread
                # now; a later one waits its turn in the heap.
                self._timed.notify()

    def _run_timers(self) -> None:
        with self._lock:
            while not self._shutdown:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    when, _, key = heapq.heappop(self._heap)
                    if self._due.get(key) == when:
                        del self._due[key]
                        self._add(key)
                wait = self._heap[0][0] - now if self._heap else None
                self._timer_wakes_at = None if wait is None else now + wait
                self._timed.wait(wait)

    def get(self, timeout: float | None = None) -> Any | None:
        """The next key to process, waiting for one (at most ``timeout`` seconds); the
        caller must call :meth:`done` afterwards. None on timeout, and once shut down
        even with keys still queued: a stopping operator starts no new reconcile."""
        with self._lock:
            deadline = None if timeout is None else self._clock() + timeout
            while not self._queue or self._shutdown:
                if self._shutdown:
                    return None
                left = None if deadline is None else deadline - self._clock()
                if left is not None and left <= 0:
                    return None
                self._ready.wait(left)
            key = self._queue.popleft()
            self._queued.discard(key)
            self._active.add(key)
            return key

    def done(self, key: Any) -> None:
        """Mark processing of ``key`` finished, re-queueing it if it was triggered meanwhile."""
        with self._lock:
            self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add(key)

    def forget(self, key: Any) -> None:
        """Drop the pending timer of ``key`` (its object is gone)."""
        with self._lock:
            self._due.pop(key, None)  # its heap entry is skipped when it comes up

    def shutdown(self) -> None:
        """Stop accepting work, drop timers and wake every waiting worker (their
        :meth:`get` returns None)."""
        with self._lock:
            self._shutdown = True
            self._due.clear()
            self._heap.clear()
            self._ready.notify_all()
            self._timed.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def pending_timers(self) -> int:
        """Keys waiting for their timer."""
        with self._lock:
            return len(self._due)

    def timers_alive(self) -> bool:
        """Whether delayed keys are still handed over (the timer thread, once started,
        runs until shutdown)."""
        thread = self._timer_thread
        return thread is None or thread.is_alive() or self._shutdown

    @property
    def idle(self) -> bool:
        """Nothing queued or in progress (timers may be pending)."""
        with self._lock:
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
