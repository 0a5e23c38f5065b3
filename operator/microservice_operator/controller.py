"""The controller: informers in, plans out, plans executed, under one leader.

Informers (:mod:`informer`) keep a cache of every MicroService and of every child we
label; each change queues the owning MicroService, from the informer's thread.
Worker threads take keys from the queue (:mod:`workqueue`), build a
:class:`plan.Plan` from the caches (no API reads) and hand it to :mod:`execute`
(writes only when something differs). The event loop is kopf's: it starts and stops
the controller and runs the analysis checks, and no reconcile passes through it.

Never act on stale state: a plan that would do something destructive (roll back,
move traffic, shrink the standby, delete pods) is planned again from objects read
from the API server just now, and only what the fresh plan still wants is done. With
leader election every write is refused unless the Lease was renewed within the renew
deadline, and a replica that loses the Lease exits. A background thread that dies
also ends the process, so the Deployment restarts it instead of leaving a half-alive
operator that reports healthy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import plan as planning
from .analyzer import Analyzer
from .elector import Elector
from .execute import MANAGED_SELECTOR, MS_KIND, STALE, Executor, utcnow
from .informer import Informer, Store, ident, owner_key
from .kube import (
    CONTROLLERREVISIONS,
    DEPLOYMENTS,
    HPAS,
    LEASES,
    MICROSERVICES,
    NAMESPACES,
    PDBS,
    PODS,
    SERVICES,
    Kube,
    KubeError,
    Resource,
)
from .memory import release_free_memory
from .metrics import OperatorMetrics
from .settings import Settings
from .workqueue import Key, Pacer, WorkQueue, cancel_all

log = logging.getLogger("microservice_operator")

CHILD_RESOURCES = (DEPLOYMENTS, SERVICES, HPAS, PDBS, PODS, CONTROLLERREVISIONS)
MAX_BACKOFF = 300.0
MAX_TRANSIENT_BACKOFF = 16.0
"""Retries of API outages (no answer, 429, 5xx) stay frequent: the API coming back must
be noticed in seconds, not after a backoff that grew during the outage."""
SUPERVISE_SECONDS = 2.0
TRIM_EVERY = 5
"""Supervisor rounds between two :func:`release_free_memory` calls (10 s)."""
CHILD_EVENT_DELAY = 1.0
"""Seconds a child's change waits before its MicroService is reconciled; changes of
its other children meanwhile join the same reconcile."""
CHILD_EVENT_GRID = 0.25
"""Reconciles for child changes start on this grid of the monotonic clock (up to this
much after CHILD_EVENT_DELAY): the MicroServices whose children changed within the
same quarter second are reconciled together, back to back, rather than each on its
own wake-up (see kube.WATCH_GATHER_SECONDS for why that costs less CPU)."""


def _exit_now(code: int) -> None:
    """End the process at once: no in-flight reconcile may write after this."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def fingerprint(ms: dict[str, Any], observed: planning.Observed) -> tuple[Any, ...]:
    """What a plan is made from, by version: the MicroService's resourceVersion (its
    spec, annotations and status) and each child's kind, name and resourceVersion.
    The cache stores a new version of an object only when it has one."""

    def version(obj: dict[str, Any]) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return (
            str(obj.get("kind", "")),
            str(meta.get("name", "")),
            str(meta.get("resourceVersion", "")),
        )

    children = (
        observed.deployment,
        observed.standby,
        observed.canary,
        observed.service,
        observed.hpa,
        observed.pdb,
        observed.standby_pdb,
    )
    return (
        version(ms),
        tuple(version(c) if c is not None else None for c in children),
        tuple(sorted(version(p) for p in observed.pods)),
        tuple(sorted(version(r) for r in observed.revisions)),
        tuple(sorted(s.view() for s in observed.analysis)),
    )


@dataclass(frozen=True)
class Memo:
    """The inputs of a reconcile that found nothing to do, and until when that holds
    (its earliest timer, monotonic; None: no timer)."""

    inputs: tuple[Any, ...]
    until: float | None

    @classmethod
    def after(cls, inputs: tuple[Any, ...], requeue_after: float | None, now: float) -> Memo:
        return cls(inputs, None if requeue_after is None else now + requeue_after)

    def still_holds(self, inputs: tuple[Any, ...], now: float) -> bool:
        return inputs == self.inputs and (self.until is None or now < self.until)

    def requeue_after(self, now: float) -> float | None:
        """The timer the memoised plan asked for, from ``now``."""
        return None if self.until is None else max(0.0, self.until - now)


class Controller:
    """Reconciles MicroServices from cached state with a pool of workers."""

    def __init__(
        self,
        kube: Kube,
        metrics: OperatorMetrics,
        settings: Settings,
        *,
        exit_process: Callable[[int], None] = _exit_now,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.settings = settings
        self.store = Store()
        self.queue = WorkQueue()
        self.executor = Executor(kube, self.store, metrics, self._changed)
        self.pacer = Pacer(settings.template_refreshes_per_minute)
        self.informers: list[Informer] = []
        self.elector: Elector | None = None
        self._exit = exit_process
        self._failures: dict[Key, int] = {}
        self._memo: dict[Key, Memo] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[threading.Thread] = []
        # Set while this replica may reconcile: always when standalone, once it
        # holds the Lease with leader election (it exits when it loses it).
        self._leading = threading.Event()
        self._stopping = False
        self.analyzer = Analyzer(settings.prometheus_url, metrics, self._analysis_changed)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start one informer per kind, wait until each has listed, then the workers
        and, with leader election, the elector.

        Waiting for the caches first means a restarted operator sees existing children
        and makes no writes for MicroServices that are already converged.
        """
        for ns in self.kube.iter_namespaces(self.settings.namespaces):
            self._add_informer(MICROSERVICES, ns, None)
            for res in CHILD_RESOURCES:
                self._add_informer(res, ns, MANAGED_SELECTOR)
        if self.settings.namespace_selector:
            # The selected namespaces, kept current: a label added or removed picks a
            # namespace up or drops it without a restart.
            self._add_informer(NAMESPACES, None, self.settings.namespace_selector)
        for inf in self.informers:
            inf.start()
        waited = 0.0
        while not all(inf.synced.is_set() for inf in self.informers):
            await asyncio.sleep(0.05)
            waited += 0.05
            if waited >= 10 and int(waited * 20) % 600 == 0:
                pending = [i.name for i in self.informers if not i.synced.is_set()]
                problems = sorted({i.problem for i in self.informers if i.problem})
                log.warning(
                    "Waiting for caches to sync: %s%s",
                    ", ".join(pending),
                    f" ({'; '.join(problems)})" if problems else "",
                )
        for ns, name in self.store.keys(MS_KIND):
            self.queue.add((ns, name))
        for i in range(self.settings.workers):
            worker = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._tasks.append(asyncio.create_task(self._supervise(), name="mso-supervisor"))
        self._tasks.append(asyncio.create_task(self.analyzer.run(), name="mso-analyzer"))
        if self.settings.leader_election:
            self._start_elector()
        else:
            self._leading.set()
        log.info(
            "Started %d workers with %d MicroServices cached",
            self.settings.workers,
            self.store.count(MS_KIND),
        )

    def _add_informer(self, res: Resource, ns: str | None, selector: str | None) -> None:
        self.informers.append(
            Informer(
                self.kube,
                res,
                self.store,
                functools.partial(self._changed, res.kind),
                namespace=ns,
                label_selector=selector,
                on_recovered=self._recovered if res is MICROSERVICES else None,
                on_event=functools.partial(self.metrics.watch_event, res.plural),
            )
        )

    def _recovered(self) -> None:
        """The MicroService watch works again after failing (an API outage): check every
        MicroService once, as reconciles that failed meanwhile may have nothing else
        to trigger them."""
        for ns, name in self.store.keys(MS_KIND):
            self._failures.pop((ns, name), None)
            self.queue.add((ns, name))

    def _start_elector(self) -> None:
        s = self.settings
        self.elector = Elector(
            self.kube,
            s.lease_namespace,
            s.lease_name,
            s.identity,
            on_started_leading=self._became_leader,
            on_stopped_leading=self._lost_leadership,
        )
        self.kube.write_guard = self._guard
        self.elector.start()

    async def stop(self) -> None:
        """Stop taking work, let in-flight reconciles finish, then hand the Lease over
        (never before: the next leader must not overlap our last writes)."""
        self._stopping = True
        self.queue.shutdown()  # a waiting worker's get() returns None: it ends
        self._leading.set()  # a follower's workers wake to see _stopping
        await cancel_all(self._tasks)
        self._tasks.clear()
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            await loop.run_in_executor(None, worker.join)
        if self.elector is not None:
            await loop.run_in_executor(None, self.elector.release)
        for inf in self.informers:
            inf.stop()

    # ------------------------------------------------------------------ leadership
    def _guard(self, verb: str, resource: Resource) -> float | None:
        """Refuse every write but the Lease's unless we hold a fresh Lease; allow it only
        as long as the Lease stays ours (the write's timeout)."""
        if resource is LEASES or self.elector is None:
            return None
        left = self.elector.validity()
        if left <= 0.1:
            raise KubeError(0, "NotLeader", f"refused to {verb} {resource.plural}: not the leader")
        return left

    def _became_leader(self) -> None:
        log.info("Reconciling as the leader (%s)", self.settings.identity)
        self._leading.set()
        for ns, name in self.store.keys(MS_KIND):
            self.queue.add((ns, name))

    def _lost_leadership(self) -> None:
        # Called from the elector thread; in-flight reconciles are already refused
        # by the write guard. Exiting is the only way to be sure none writes later.
        log.critical("Lost leadership; exiting so that a fresh follower replaces this one")
        self._exit(1)

    async def _supervise(self) -> None:
        """End the process when a background thread or task died: a replica that
        still answers /healthz but no longer watches or renews is worse than none."""
        rounds = 0
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            dead = self.dead_parts()
            if dead:
                log.critical("Stopped working: %s died; exiting", ", ".join(dead))
                self._exit(1)
                return
            rounds += 1
            if rounds % TRIM_EVERY == 0:
                release_free_memory()

    def dead_parts(self) -> list[str]:
        """Names of the background parts that are no longer running."""
        dead = [f"informer {i.name}" for i in self.informers if not i.alive()]
        if self.elector is not None and not self.elector.alive():
            dead.append("leader election")
        dead += [t.get_name() for t in self._tasks if t.done()]
        if not self._stopping:
            dead += [w.name for w in self._workers if not w.is_alive()]
            if not self.queue.timers_alive():
                dead.append("work queue timers")
        return dead

    def readiness(self) -> tuple[bool, str]:
        """For the readiness probe (/readyz): ready once every cache has listed; else
        why not (the CRD missing, a permission, the API server out of reach)."""
        if not self.informers:
            return False, "starting"
        problems = sorted({i.problem for i in self.informers if i.problem})
        pending = [i.name for i in self.informers if not i.synced.is_set()]
        if pending:
            why = "; ".join(problems) if problems else f"listing {', '.join(pending)}"
            return False, why
        return True, "leader" if self.elector is None or self.elector.is_leader() else "standby"

    def health(self) -> dict[str, Any]:
        """For the liveness probe: raises if any part died."""
        dead = self.dead_parts()
        if dead:
            raise RuntimeError(f"dead: {', '.join(dead)}")
        return {
            "leader": self.elector.is_leader() if self.elector else True,
            "synced": all(i.synced.is_set() for i in self.informers),
            "microservices": self.store.count(MS_KIND),
        }

    # ------------------------------------------------------------------ events
    def _changed(self, kind: str, objs: list[dict[str, Any]]) -> None:
        """Informer callback (informer thread): queue the owners of changed objects."""
        if kind == NAMESPACES.kind:
            self._namespaces_changed({o["metadata"]["name"] for o in objs})
            return
        if kind == MS_KIND:
            self._enqueue(MS_KIND, {ident(o) for o in objs})
        else:
            self._enqueue("child", {k for k in (owner_key(o) for o in objs) if k is not None})

    def _namespaces_changed(self, names: set[str]) -> None:
        """Namespaces came into or went out of --namespace-selector: look at their
        MicroServices (the worker forgets those no longer selected)."""
        for key in self.store.keys(MS_KIND):
            if key[0] in names:
                self.queue.add(key)

    def selected(self, namespace: str) -> bool:
        """Whether this operator looks after MicroServices in ``namespace``."""
        if not self.settings.namespace_selector:
            return True
        return self.store.get(NAMESPACES.kind, "", namespace) is not None

    def _enqueue(self, kind: str, keys: set[Key]) -> None:
        for key in keys:
            if not self.selected(key[0]):
                # Another operator's namespace (--namespace-selector). One that was
                # ours until now is queued by _namespaces_changed, to be forgotten.
                continue
            if kind == MS_KIND:
                self.queue.add(key)
            elif self.store.get(MS_KIND, *key) is not None:
                # Children change in bursts (a rollout moves every pod through several
                # states within a second): wait a moment, so one reconcile sees the
                # burst instead of one reconcile per pod event.
                self.queue.add_after(key, CHILD_EVENT_DELAY, grid=CHILD_EVENT_GRID)

    def _forget(self, key: Key, why: str = "deleted") -> None:
        """The MicroService is gone (or its namespace no longer selected): drop its
        timers, backoff and metrics."""
        self.queue.forget(key)
        self._failures.pop(key, None)
        self._memo.pop(key, None)
        self.analyzer.forget(key)
        if key in self.metrics.tracked():
            self.metrics.forget(*key)
            log.info("Forgot MicroService %s/%s (%s)", *key, why)

    def _analysis_changed(self, key: Key) -> None:
        """An analysis check said something new (on the loop): plan again."""
        if self.store.get(MS_KIND, *key) is not None:
            self.queue.add(key)

    # ------------------------------------------------------------------ workers
    def _work(self) -> None:
        """One worker thread: reconcile keys from the queue until it shuts down."""
        while True:
            self._leading.wait()
            if self._stopping:
                return
            key = self.queue.get()
            if key is None:  # shut down
                return
            delay: float | None = None
            try:
                if self.store.get(MS_KIND, *key) is None:
                    self._forget(key)
                    continue
                if not self.selected(key[0]):
                    self._forget(key, "namespace not selected")
                    continue
                delay = self.reconcile(key)
            except Exception:  # a bug must not kill the worker; back off and retry
                log.exception("Reconcile of %s/%s crashed", *key)
                self.metrics.reconcile_error("Other")
                delay = self._backoff(key)
            finally:
                self.queue.done(key)
            if delay is not None:
                self.queue.add_after(key, delay)

    def _backoff(self, key: Key, *, transient: bool = False) -> float:
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        cap = MAX_TRANSIENT_BACKOFF if transient else MAX_BACKOFF
        return float(min(cap, 2 ** min(n, 9)))

    def reconcile(self, key: Key) -> float | None:
        """One reconcile of one MicroService; returns seconds until it should run again."""
        ms = self.store.get(MS_KIND, *key)
        if ms is None or ms.get("metadata", {}).get("deletionTimestamp"):
            return None
        observed = self._with_analysis(key, self.executor.observed(key))
        inputs = fingerprint(ms, observed)
        memo = self._memo.get(key)
        if memo is not None and memo.still_holds(inputs, time.monotonic()):
            # Nothing the plan reads changed since it last found nothing to do, and
            # none of its timers is due: planning again would find nothing again.
            self.metrics.reconcile_skipped()
            return memo.requeue_after(time.monotonic())
        self._memo.pop(key, None)
        with self.metrics.time_reconcile():
            delay = self._reconcile(ms, key, observed, inputs)
        if self.store.get(MS_KIND, *key) is None:
            # Deleted while we reconciled: drop the series this run may have re-created.
            self.metrics.forget(*key)
            return None
        return delay

    def _with_analysis(self, key: Key, observed: planning.Observed) -> planning.Observed:
        checks = self.analyzer.snapshot(key)
        return dataclasses.replace(observed, analysis=checks) if checks else observed

    def _confirm(
        self, ms: dict[str, Any], p: planning.Plan, key: Key, *, refresh: bool
    ) -> tuple[dict[str, Any], planning.Plan] | None:
        """Plan again from the live cluster; returns what to execute (None: MS gone)."""
        started = time.monotonic()
        live = self.executor.read_live(key)
        if live is None:
            return None
        ms_live, observed = live
        observed = self._with_analysis(key, observed)
        fresh = planning.plan(ms_live, observed, utcnow(), refresh=refresh)
        dropped = [d for d in p.destructive if d not in fresh.destructive]
        if dropped:
            log.warning(
                "Did not %s for MicroService %s/%s: the live cluster no longer calls for it "
                "(the cache was behind)",
                "; ".join(dropped),
                *key,
            )
        elif fresh.destructive:
            log.info(
                "Confirmed against the live cluster in %.0f ms: %s for MicroService %s/%s",
                (time.monotonic() - started) * 1000,
                "; ".join(fresh.destructive),
                *key,
            )
        return ms_live, fresh

    def _reconcile(
        self,
        ms: dict[str, Any],
        key: Key,
        observed: planning.Observed,
        inputs: tuple[Any, ...],
    ) -> float | None:
        ns, name = key
        now = utcnow()
        p = planning.plan(ms, observed, now, refresh=False)
        refresh = False
        if p.stale_templates and self.pacer.take(time.monotonic()):
            # This one's turn for the new rendering (see Settings.template_refreshes...).
            refresh = True
            p = planning.plan(ms, observed, now, refresh=True)
            log.info(
                "Rolling out this operator version's rendering of %s in %s",
                ", ".join(p.stale_templates),
                ns,
            )
        try:
            if p.destructive:
                confirmed = self._confirm(ms, p, key, refresh=refresh)
                if confirmed is None:
                    return None
                ms, p = confirmed
            try:
                self.executor.execute(ms, p)
            except KubeError as exc:
                if exc.reason != STALE or (p.observed is not None and p.observed.live):
                    raise
                # The cache missed a child that exists: plan again from a live read.
                log.info("Planning %s/%s again from the live cluster: %s", ns, name, exc.message)
                confirmed = self._confirm(ms, p, key, refresh=refresh)
                if confirmed is None:
                    return None
                ms, p = confirmed
                self.executor.execute(ms, p)
        except KubeError as exc:
            if exc.namespace_terminating:
                log.info("Skipped MicroService %s/%s: its namespace is being deleted", ns, name)
                return None
            if exc.reason in ("NotLeader", STALE):
                return 1.0  # the Lease lapsed (the process exits if it is lost) or raced

            if exc.invalid:
                reason = "ApplyFailed"
            elif exc.reason == "ChildConflict":
                reason = "ChildConflict"
            else:
                reason = "ApiError"
            self.metrics.reconcile_error("Conflict" if exc.conflict else "ApiError")
            log.warning("Failed to reconcile MicroService %s/%s: %s", ns, name, exc)
            failed = planning.plan_error(ms, p, reason, exc.message, now)
            try:
                self.executor.write_status(ms, failed)
                self.executor.record(ms, failed)
            except KubeError as status_exc:
                log.warning("Failed to record the error of %s/%s: %s", ns, name, status_exc)
            if exc.invalid:
                return None  # the same input fails the same way; a spec change retries
            transient = exc.transport or exc.status == 429 or exc.status >= 500
            return self._backoff(key, transient=transient)
        self._failures.pop(key, None)
        self.analyzer.want(key, p.analysis_spec, p.analysis_targets)
        if p.is_noop and not p.stale_templates and not (p.observed and p.observed.live):
            self._memo[key] = Memo.after(inputs, p.requeue_after, time.monotonic())
        if p.invalid and p.events:  # counted once per new problem, not per pod event
            self.metrics.reconcile_error("InvalidSpec")
        if p.stale_templates and not refresh:
            turn = self.pacer.wait(time.monotonic())
            if turn is not None:
                # Look again when the pace allows another rendering change.
                again = max(1.0, turn + 0.5)
                return again if p.requeue_after is None else min(p.requeue_after, again)
        return p.requeue_after
