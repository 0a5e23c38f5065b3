"""Runs the analysis checks against Prometheus (the I/O side of :mod:`analysis`).

Each reconcile tells the analyzer what to query for its MicroService
(``Plan.analysis_targets``: the revision proving itself, the proven primary when a
standby is configured) with :meth:`Analyzer.want`. The analyzer queries each check of
each target every ``intervalSeconds``, the first time one interval after the target
first appeared (a new revision has no data before that), keeps the counters
(:func:`analysis.advance`) and queues a reconcile of the MicroService when what a
decision or the report reads changed. Reconciles read the counters with
:meth:`Analyzer.snapshot`, as an input of the pure plan like the watch caches.

Queries run on the event loop with one shared HTTP session, at most ``concurrency`` at
a time; a slow or dead Prometheus costs a bounded number of sockets and makes the
checks inconclusive (and counted in ``mso_analysis_results_total``), never a rollback.
The counters live in this process only (see :mod:`analysis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from . import analysis
from .api import Analysis, AnalysisCheck
from .metrics import OperatorMetrics
from .workqueue import Key

log = logging.getLogger("microservice_operator")

TICK = 0.2
"""Seconds between looks for due checks."""


@dataclass
class _Target:
    """One check of one track and revision of one MicroService, and when it is due."""

    check: AnalysisCheck
    role: str  # "release" (a revision proving itself) or "primary" (the proven one)
    track: str
    revision: str
    due: float  # monotonic
    state: analysis.CheckState | None = None
    running: bool = False


@dataclass
class _Service:
    analysis: Analysis
    targets: dict[tuple[str, str, str], _Target] = field(default_factory=dict)


class Analyzer:
    """Queries the analysis checks of every MicroService that has some to run."""

    def __init__(
        self,
        url: str,
        metrics: OperatorMetrics,
        on_change: Callable[[Key], None],
        *,
        timeout: float = 10.0,
        concurrency: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.metrics = metrics
        self.on_change = on_change
        self.timeout = timeout
        self.concurrency = concurrency
        self.clock = clock
        self._lock = threading.Lock()
        self._services: dict[Key, _Service] = {}
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ reconcile side

    def want(
        self, key: Key, spec: Analysis | None, targets: tuple[tuple[str, str, str], ...]
    ) -> None:
        """What ``key``'s latest plan wants queried (called from reconcile threads)."""
        now = self.clock()
        with self._lock:
            if spec is None or not targets:
                if self._services.pop(key, None) is not None:
                    self.metrics.forget_analysis(*key)
                return
            svc = self._services.get(key)
            if svc is None or svc.analysis != spec:
                old = svc
                svc = _Service(spec)
                if old is not None:
                    self.metrics.forget_analysis(*key)
                self._services[key] = svc
            wanted: dict[tuple[str, str, str], _Target] = {}
            for role, track, revision in targets:
                for check in spec.checks:
                    k = (check.name, track, revision)
                    wanted[k] = svc.targets.get(k) or _Target(
                        check, role, track, revision, due=now + check.interval_seconds
                    )
            if wanted.keys() != svc.targets.keys():
                self.metrics.forget_analysis(*key)  # series of dropped targets go
            svc.targets = wanted

    def snapshot(self, key: Key) -> tuple[analysis.CheckState, ...]:
        """The latest state of every check of ``key`` (for the plan)."""
        with self._lock:
            svc = self._services.get(key)
            if svc is None:
                return ()
            return tuple(t.state for t in svc.targets.values() if t.state is not None)

    def forget(self, key: Key) -> None:
        """The MicroService is gone: stop its queries."""
        with self._lock:
            if self._services.pop(key, None) is not None:
                self.metrics.forget_analysis(*key)

    def active(self) -> int:
        """Number of checks being run (for tests and logs)."""
        with self._lock:
            return sum(len(s.targets) for s in self._services.values())

    # ------------------------------------------------------------ loop side

    async def run(self) -> None:
        """Run due checks until cancelled."""
        self._slots = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                while True:
                    for key, target in self._due():
                        task = asyncio.create_task(self._run_one(key, target))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    await asyncio.sleep(TICK)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                for task in list(self._tasks):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                self._session = None

    def _due(self) -> list[tuple[Key, _Target]]:
        now = self.clock()
        out: list[tuple[Key, _Target]] = []
        with self._lock:
            for key, svc in self._services.items():
                for target in svc.targets.values():
                    if not target.running and target.due <= now:
                        target.running = True
                        out.append((key, target))
        return out

    async def _run_one(self, key: Key, target: _Target) -> None:
        ns, name = key
        query = analysis.render_query(
            target.check, namespace=ns, name=name, track=target.track, revision=target.revision
        )
        try:
            async with self._slots:
                measurement = await self.query(query)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one check kill the loop
            log.exception("Analysis check %s of %s/%s crashed", target.check.name, ns, name)
            measurement = analysis.Measurement(None, f"internal error: {exc!r}")
        changed = False
        with self._lock:
            svc = self._services.get(key)
            current = (
                svc.targets.get((target.check.name, target.track, target.revision)) if svc else None
            )
            target.running = False
            if current is not target or svc is None:
                return  # no longer wanted (new spec, new revision, or deleted)
            state = analysis.advance(
                target.state,
                target.check,
                svc.analysis,
                track=target.track,
                revision=target.revision,
                measurement=measurement,
                now=datetime.now(UTC),
            )
            changed = target.state is None or target.state.view() != state.view()
            target.state = state
            target.due = self.clock() + target.check.interval_seconds
            # Under the lock: a want() dropping this target cannot run in between and
            # leave a series behind.
            self.metrics.analysis_result(
                ns, name, target.check.name, target.role, state.outcome, state.value
            )
        if changed and state.outcome == "Inconclusive":
            log.info(
                "Analysis check %s of %s/%s (%s, revision %s) inconclusive: %s",
                target.check.name,
                ns,
                name,
                target.track,
                target.revision,
                state.message,
            )
        if changed:
            self.on_change(key)

    async def query(self, promql: str) -> analysis.Measurement:
        """One instant query; every failure is a Measurement with a problem."""
        if not self.url:
            return analysis.Measurement(
                None, "no Prometheus address: start the operator with --prometheus-url"
            )
        session = self._session
        if session is None:
            return analysis.Measurement(None, "analyzer not running")
        try:
            async with session.get(f"{self.url}/api/v1/query", params={"query": promql}) as resp:
                try:
                    body: Any = await resp.json(content_type=None)
                except ValueError:
                    text = (await resp.text())[:200]
                    return analysis.Measurement(
                        None, f"Prometheus answered HTTP {resp.status}: {text!r}"
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            return analysis.Measurement(None, f"Prometheus unreachable at {self.url}: {reason}")
        return analysis.measure(body)
