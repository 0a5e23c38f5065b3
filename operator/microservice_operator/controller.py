"""The controller: watch caches in, plans out, plans executed.

kopf's watch handlers feed :class:`Controller` with every MicroService and every
child we label; each change queues the owning MicroService. Workers take keys from
the queue, build a :class:`plan.Plan` from the caches (no API reads) and execute it
through :mod:`kube` (writes only when something differs). Blocking client calls run
in a bounded thread pool so the event loop keeps serving watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from . import leader
from . import plan as planning
from .kube import (
    BY_KIND,
    DEPLOYMENTS,
    HPAS,
    LEASES,
    MICROSERVICES,
    PDBS,
    PODS,
    SERVICES,
    Kube,
    KubeError,
)
from .metrics import OperatorMetrics
from .settings import FIELD_MANAGER, Settings
from .workqueue import Key, Store, WorkQueue, cancel_all

log = logging.getLogger("microservice_operator")

MS_KIND = "MicroService"
CHILD_RESOURCES = (DEPLOYMENTS, SERVICES, HPAS, PDBS, PODS)
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={FIELD_MANAGER}"
MAX_BACKOFF = 300.0


def utcnow() -> datetime:
    """The clock, in one place."""
    return datetime.now(UTC)


class Controller:
    """Reconciles MicroServices from cached state with a pool of workers."""

    def __init__(self, kube: Kube, metrics: OperatorMetrics, settings: Settings) -> None:
        self.kube = kube
        self.metrics = metrics
        self.settings = settings
        self.store = Store()
        self.queue = WorkQueue()
        self.executor = ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="reconcile"
        )
        self._failures: dict[Key, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Set while this replica may reconcile: always when standalone, while it
        # holds the Lease with leader election. Lease calls get their own thread so
        # busy reconciles never delay a renewal.
        self._leading = asyncio.Event()
        self._lease: dict[str, Any] | None = None
        self._lease_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Fill the caches with a LIST of each kind, then start the workers.

        Priming first means a restarted operator sees existing children and makes
        no writes for MicroServices that are already converged.
        """
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._prime)
        for ns, name in self.store.keys(MS_KIND):
            self.queue.add((ns, name))
        for i in range(self.settings.workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"mso-worker-{i}"))
        self._tasks.append(asyncio.create_task(self._resync(), name="mso-resync"))
        if self.settings.leader_election:
            self._tasks.append(asyncio.create_task(self._elect(), name="mso-leader"))
        else:
            self._leading.set()
        log.info(
            "Started %d workers with %d MicroServices cached",
            self.settings.workers,
            self.store.count(MS_KIND),
        )

    def _prime(self) -> None:
        for ns in self.kube.iter_namespaces(self.settings.namespaces):
            for ms in self.kube.list(MICROSERVICES, ns):
                self.store.put(MS_KIND, ms)
            for res in CHILD_RESOURCES:
                for obj in self.kube.list(res, ns, label_selector=MANAGED_SELECTOR):
                    self.store.put(res.kind, obj)

    async def stop(self) -> None:
        """Stop workers and timers, and hand the Lease over; in-flight API calls finish
        in their threads."""
        self.queue.shutdown()
        await cancel_all(self._tasks)
        self._tasks.clear()
        if self.settings.leader_election and self._leading.is_set() and self._lease:
            self._leading.clear()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(KeyError, KubeError):
                await loop.run_in_executor(self._lease_executor, self._release)
                log.info("Released the leader Lease")
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._lease_executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ leadership
    async def _elect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                leading = await loop.run_in_executor(self._lease_executor, self._try_lead)
            except KubeError as exc:
                log.warning("Failed to renew the leader Lease: %s", exc)
                leading = False
            if leading and not self._leading.is_set():
                log.info("Became the leader (%s); reconciling", self.settings.identity)
                self._leading.set()
                for ns, name in self.store.keys(MS_KIND):
                    self.queue.add((ns, name))
            elif not leading and self._leading.is_set():
                # Stop at once: another replica may take over once the Lease expires.
                log.warning("Lost the leader Lease; pausing reconciles")
                self._leading.clear()
            await asyncio.sleep(leader.RENEW_INTERVAL_SECONDS)

    def _try_lead(self) -> bool:
        """One round of the election: create, renew or take over the Lease, or wait."""
        s = self.settings
        lease = self.kube.get(LEASES, s.lease_namespace, s.lease_name)
        state = leader.LeaseState.of(lease) if lease is not None else None
        now = utcnow()
        action = leader.decide(state, s.identity, now)
        if action == "wait":
            return False
        spec = leader.lease_spec(action, state, s.identity, now)
        try:
            if lease is None:
                self._lease = self.kube.create_lease(s.lease_namespace, s.lease_name, spec)
            else:
                self._lease = self.kube.update_lease(lease, spec)
        except KubeError as exc:
            if exc.conflict:
                return False  # another replica wrote first: it leads this round
            raise
        return True

    def _release(self) -> None:
        lease = self.kube.get(LEASES, self.settings.lease_namespace, self.settings.lease_name)
        if lease is not None and leader.LeaseState.of(lease).holder == self.settings.identity:
            self.kube.update_lease(lease, leader.released_spec(leader.LeaseState.of(lease)))

    async def _resync(self) -> None:
        # A slow safety net: now and then, LIST every kind to drop objects whose
        # deletion a restarted watch never reported, and re-check everything.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            try:
                await loop.run_in_executor(self.executor, self._relist)
            except KubeError as exc:
                log.warning("Failed to resync caches: %s", exc)
            for ns, name in self.store.keys(MS_KIND):
                self.queue.add((ns, name))

    def _relist(self) -> None:
        for ns in self.kube.iter_namespaces(self.settings.namespaces):
            kinds = [(MICROSERVICES, None), *((r, MANAGED_SELECTOR) for r in CHILD_RESOURCES)]
            for res, selector in kinds:
                objs, rv = self.kube.list_with_version(res, ns, label_selector=selector)
                dropped = self.store.replace(res.kind, objs, rv, namespace=ns)
                if dropped:
                    log.info("Dropped %d stale %s objects from the cache", dropped, res.kind)

    # ------------------------------------------------------------------ events
    def on_microservice(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A MicroService watch event."""
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event_type == "DELETED":
            self.store.delete(MS_KIND, body)
            self.queue.forget(key)
            self._failures.pop(key, None)
            self.metrics.forget(*key)
            log.info("Forgot MicroService %s/%s (deleted)", *key)
            return
        if self.store.put(MS_KIND, body):
            self.queue.add(key)

    def on_child(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        """A watch event of a child (Deployment, Service, HPA, PDB or Pod)."""
        if event_type == "DELETED":
            self.store.delete(kind, body)
        elif not self.store.put(kind, body):
            return
        owner = Store.owner_key(body)
        if owner is not None and self.store.get(MS_KIND, *owner) is not None:
            self.queue.add(owner)

    # ------------------------------------------------------------------ workers
    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._leading.wait()
            key = await self.queue.get()
            if not self._leading.is_set():  # lost the Lease while waiting for work
                self.queue.done(key)
                self.queue.add(key)
                continue
            try:
                delay = await loop.run_in_executor(self.executor, self.reconcile, key)
            except Exception:  # a bug must not kill the worker; back off and retry
                log.exception("Reconcile of %s/%s crashed", *key)
                self.metrics.reconcile_error("Other")
                delay = self._backoff(key)
            finally:
                self.queue.done(key)
            if delay is not None:
                self.queue.add_after(key, delay)

    def _backoff(self, key: Key) -> float:
        n = self._failures.get(key, 0) + 1
        self._failures[key] = n
        return float(min(MAX_BACKOFF, 2 ** min(n, 9)))

    def reconcile(self, key: Key) -> float | None:
        """One reconcile of one MicroService; returns seconds until it should run again."""
        ms = self.store.get(MS_KIND, *key)
        if ms is None or ms.get("metadata", {}).get("deletionTimestamp"):
            return None
        with self.metrics.time_reconcile():
            delay = self._reconcile(ms, key)
        if self.store.get(MS_KIND, *key) is None:
            # Deleted while we reconciled: drop the series this run may have re-created.
            self.metrics.forget(*key)
            return None
        return delay

    def observed(self, key: Key) -> planning.Observed:
        """What the caches hold for a MicroService."""
        ns, name = key
        ms = self.store.get(MS_KIND, ns, name) or {}
        uid = ms.get("metadata", {}).get("uid", "")

        def mine(kind: str, obj_name: str) -> dict[str, Any] | None:
            obj = self.store.get(kind, ns, obj_name)
            if obj is not None and uid and not planning.controlled_by(obj, uid):
                # Same name, another owner (e.g. a MicroService deleted and re-created
                # while the GC catches up): treat as absent; the create path checks.
                return None
            return obj

        pods = tuple(self.store.owned("Pod", key))
        return planning.Observed(
            deployment=mine("Deployment", name),
            standby=mine("Deployment", f"{name}-standby"),
            service=mine("Service", name),
            hpa=mine("HorizontalPodAutoscaler", name),
            pdb=mine("PodDisruptionBudget", name),
            pods=pods,
        )

    def _reconcile(self, ms: dict[str, Any], key: Key) -> float | None:
        ns, name = key
        now = utcnow()
        p = planning.plan(ms, self.observed(key), now)
        try:
            self._execute(ms, p)
        except KubeError as exc:
            if exc.namespace_terminating:
                log.info("Skipped MicroService %s/%s: its namespace is being deleted", ns, name)
                return None
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
                self._write_status(ms, failed)
                self._record(ms, failed)
            except KubeError as status_exc:
                log.warning("Failed to record the error of %s/%s: %s", ns, name, status_exc)
            if exc.invalid:
                return None  # the same input fails the same way; a spec change retries
            return self._backoff(key)
        self._failures.pop(key, None)
        if p.invalid and p.events:  # counted once per new problem, not per pod event
            self.metrics.reconcile_error("InvalidSpec")
        return p.requeue_after

    def _execute(self, ms: dict[str, Any], p: planning.Plan) -> None:
        ns = ms["metadata"]["namespace"]
        name = ms["metadata"]["name"]
        if p.handoff is not None:
            self.kube.handoff_replicas(p.handoff)
        for manifest in p.applies:
            kind = manifest["kind"]
            child = manifest["metadata"]["name"]
            cached = self.store.get(kind, ns, child)
            self._refuse_foreign(ms, kind, child, cached)
            live = self.kube.apply(manifest)
            self.store.put(kind, live)
            log.info("%s %s %s/%s", "Created" if cached is None else "Updated", kind, ns, child)
        for kind, child, uid in p.deletes:
            if self.kube.delete(BY_KIND[kind], ns, child, uid=uid):
                log.info("Deleted %s %s/%s (no longer wanted)", kind, ns, child)
        for pod, uid in p.pod_deletes:
            if self.kube.delete(PODS, ns, pod, uid=uid):
                log.warning("Deleted stuck Pod %s/%s of MicroService %s", ns, pod, name)
                self._mark_deleting(ns, pod)
        self._write_status(ms, p)
        self._record(ms, p)

    def _mark_deleting(self, ns: str, pod: str) -> None:
        """Show a pod we just deleted as terminating in the cache, so a reconcile that
        runs before its watch event does not pick it again."""
        cached = self.store.get("Pod", ns, pod)
        if cached is not None:
            copy = {**cached, "metadata": {**cached["metadata"]}}
            copy["metadata"]["deletionTimestamp"] = planning.rfc3339(utcnow())
            with contextlib.suppress(KeyError):
                self.store.delete("Pod", cached)
            self.store.put("Pod", copy)

    def _refuse_foreign(
        self, ms: dict[str, Any], kind: str, child: str, cached: dict[str, Any] | None
    ) -> None:
        """Refuse to take over an object of the child's name that this MicroService
        does not control: applying with force would silently adopt and rewrite it.

        Our caches only hold labelled objects, so before the first apply of a child
        (nothing cached) we look for a same-named object the user or another tool owns.
        """
        meta = ms["metadata"]
        existing = cached
        if existing is None:
            existing = self.kube.get(BY_KIND[kind], meta["namespace"], child)
        if existing is not None and not planning.controlled_by(existing, meta.get("uid", "")):
            raise KubeError(
                409,
                "ChildConflict",
                f"{kind} {meta['namespace']}/{child} already exists and is not owned by "
                "this MicroService; rename or delete it",
            )

    def _write_status(self, ms: dict[str, Any], p: planning.Plan) -> None:
        if not p.status_changed:
            return
        meta = ms["metadata"]
        patch = planning.merge_patch(ms.get("status") or {}, p.status)
        patched = self.kube.patch_status(meta["namespace"], meta["name"], patch)
        if patched is not None:
            self.store.put(MS_KIND, patched)

    def _record(self, ms: dict[str, Any], p: planning.Plan) -> None:
        meta = ms["metadata"]
        ns, name = meta["namespace"], meta["name"]
        g = p.gauges
        if g is not None:
            self.metrics.observe(
                ns,
                name,
                desired=g.desired,
                ready=g.ready,
                available=g.available,
                unavailable=g.unavailable,
                updated=g.updated,
                healthy_ratio=g.healthy_ratio,
                ready_flag=g.ready_flag,
                active_track=g.active_track,
            )
        # After observe(): the first observe creates the counters at 0, so the very
        # first rollback is an increase that alerts can see.
        for reason in p.rollbacks:
            self.metrics.rollback(ns, name, reason)
        for reason in p.failovers:
            self.metrics.failover(ns, name, reason)
        if p.remediations:
            self.metrics.remediation(ns, name, p.remediations)
        for ev in p.events:
            log.log(
                logging.WARNING if ev.type == "Warning" else logging.INFO,
                "%s MicroService %s/%s: %s",
                ev.reason,
                ns,
                name,
                ev.message,
            )
            self.kube.create_event(event_for(ms, ev))


def event_for(ms: dict[str, Any], ev: planning.EventSpec) -> dict[str, Any]:
    """A core/v1 Event about ``ms``, as ``kubectl describe ms`` shows it."""
    meta = ms["metadata"]
    ts = planning.rfc3339(utcnow())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta['name']}.",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": MICROSERVICES.api_version,
            "kind": MS_KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": ev.type,
        "reason": ev.reason,
        "message": ev.message[:1024],
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
    }
