"""Carrying plans out, and reading what they are planned from.

The only place where a reconcile touches the API server (through :mod:`kube`): the
observation of a MicroService from the caches, the same observation read live from
the API server when a destructive plan must be confirmed, and the execution of a
plan in its safe order. Kept apart from the controller, which decides *when* to
reconcile and handles leadership, caches and workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from . import plan as planning
from .diff import controlled_by
from .informer import Store, trim_pod
from .kube import (
    ALREADY_EXISTS,
    BY_KIND,
    CONTROLLERREVISIONS,
    DEPLOYMENTS,
    HPAS,
    MICROSERVICES,
    PDBS,
    PODS,
    SERVICES,
    Kube,
    KubeError,
    Resource,
)
from .metrics import OperatorMetrics
from .settings import FIELD_MANAGER
from .workqueue import Key

log = logging.getLogger("microservice_operator")

MS_KIND = "MicroService"
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={FIELD_MANAGER}"
STALE = "StaleCache"
"""KubeError reason: the plan was made from a cache that missed a child; plan again."""


def utcnow() -> datetime:
    """The clock, in one place."""
    return datetime.now(UTC)


def _observation(
    ms: dict[str, Any],
    name: str,
    fetch: Callable[[Resource, str], dict[str, Any] | None],
    *,
    pods: list[dict[str, Any]],
    revisions: list[dict[str, Any]],
    live: bool,
) -> planning.Observed:
    """The children of ``ms`` as ``fetch`` (the caches or the API server) has them.

    A same-named child with another controller (e.g. a MicroService deleted and
    re-created while the GC catches up) counts as absent; the apply path checks it.
    """
    uid = ms.get("metadata", {}).get("uid", "")

    def mine(res: Resource, obj_name: str) -> dict[str, Any] | None:
        obj = fetch(res, obj_name)
        if obj is None or (uid and not controlled_by(obj, uid)):
            return None
        return obj

    return planning.Observed(
        deployment=mine(DEPLOYMENTS, name),
        standby=mine(DEPLOYMENTS, f"{name}-standby"),
        canary=mine(DEPLOYMENTS, f"{name}-canary"),
        service=mine(SERVICES, name),
        hpa=mine(HPAS, name),
        pdb=mine(PDBS, name),
        standby_pdb=mine(PDBS, f"{name}-standby"),
        pods=tuple(pods),
        revisions=tuple(revisions),
        live=live,
    )


class Executor:
    """Observes a MicroService (cached or live) and executes its plans."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        metrics: OperatorMetrics,
        on_change: Callable[[str, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.store = store
        self.metrics = metrics
        # Where changes the watch made to an object while we wrote it are reported
        # (the informers' callback): see Store.begin_write.
        self.on_change = on_change

    @contextlib.contextmanager
    def _writing(self, kind: str, namespace: str, name: str) -> Iterator[None]:
        """Around our writes of one object: the watch's echo of them is no news;
        anyone else's change meanwhile is reported when the writes are over."""
        i = (namespace, name)
        self.store.begin_write(kind, i)
        try:
            yield
        finally:
            news = self.store.end_write(kind, i)
            if news is not None and self.on_change is not None:
                self.on_change(kind, [news])

    def observed(self, key: Key) -> planning.Observed:
        """What the caches hold for a MicroService."""
        ns, name = key
        ms = self.store.get(MS_KIND, ns, name) or {}
        return _observation(
            ms,
            name,
            lambda res, obj_name: self.store.get(res.kind, ns, obj_name),
            pods=self.store.owned("Pod", key),
            revisions=self.store.owned("ControllerRevision", key),
            live=False,
        )

    def read_live(self, key: Key) -> tuple[dict[str, Any], planning.Observed] | None:
        """The MicroService and its children as the API server holds them now (None if
        the MicroService is gone): the evidence a destructive act is confirmed on."""
        ns, name = key
        ms = self.kube.get(MICROSERVICES, ns, name)
        if ms is None:
            return None

        def fetch(res: Resource, obj_name: str) -> dict[str, Any] | None:
            obj = self.kube.get(res, ns, obj_name)
            if obj is not None:
                obj.setdefault("apiVersion", res.api_version)
                obj.setdefault("kind", res.kind)
            return obj

        selector = f"{MANAGED_SELECTOR},app.kubernetes.io/instance={name}"
        pods = [trim_pod(p) for p in self.kube.list(PODS, ns, label_selector=selector)]
        revisions = self.kube.list(CONTROLLERREVISIONS, ns, label_selector=selector)
        return ms, _observation(ms, name, fetch, pods=pods, revisions=revisions, live=True)

    def execute(self, ms: dict[str, Any], p: planning.Plan) -> None:
        """Carry a plan out: history records first (the decision is in the cluster
        before the writes that act on it), then children, then status and Events."""
        ns = ms["metadata"]["namespace"]
        name = ms["metadata"]["name"]
        for record in p.history_applies:
            with self._writing("ControllerRevision", ns, record["metadata"]["name"]):
                self.store.wrote("ControllerRevision", self.kube.apply(record))
            log.info("Recorded ControllerRevision %s/%s", ns, record["metadata"]["name"])
        for deployment in p.handoffs:
            self.kube.handoff_replicas(deployment)
        for manifest in p.applies:
            kind = manifest["kind"]
            child = manifest["metadata"]["name"]
            seen = p.observed.find(kind, child) if p.observed is not None else None
            with self._writing(kind, ns, child):
                live = self.apply_child(ms, manifest, seen)
                seed = p.seeds.get(child) if kind == "Deployment" and seen is None else None
                if seed is not None:
                    # Created without spec.replicas (the HPA's field): start at
                    # minReplicas under the hand-off manager, which the HPA takes the
                    # field over from.
                    self.store.wrote(kind, live, keep=False)  # the next answer is newer
                    live = self.kube.handoff_replicas(live, replicas=seed)
                self.store.wrote(kind, live)
            log.info("%s %s %s/%s", "Created" if seen is None else "Updated", kind, ns, child)
        for kind, child, uid in p.deletes:
            if self.kube.delete(BY_KIND[kind], ns, child, uid=uid):
                log.info("Deleted %s %s/%s (no longer wanted)", kind, ns, child)
        for pod, uid in p.pod_deletes:
            if self.kube.delete(PODS, ns, pod, uid=uid):
                log.warning("Deleted stuck Pod %s/%s of MicroService %s", ns, pod, name)
                self.store.mark_deleting("Pod", ns, pod, planning.rfc3339(utcnow()))
        for old_record, uid in p.history_deletes:
            if self.kube.delete(CONTROLLERREVISIONS, ns, old_record, uid=uid):
                log.info("Deleted ControllerRevision %s/%s (superseded)", ns, old_record)
        self.write_status(ms, p)
        self.record(ms, p)
        # Last: a request annotation is removed only once what it asked for is done.
        for key, value in p.handled_annotations:
            with self._writing(MS_KIND, ns, name):
                patched = self.kube.remove_annotation(MICROSERVICES, ns, name, key, value)
                if patched is not None:
                    self.store.wrote(MS_KIND, patched)

    def apply_child(
        self, ms: dict[str, Any], manifest: dict[str, Any], seen: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Apply a child; one the plan did not see is only created, never adopted.

        A child the plan saw (ours, in the cache) is applied as usual. One it did not
        see is applied create-only, which costs no read beforehand: nearly always it
        does not exist and is created. If it does exist, it is left untouched and
        looked at: someone else's object of that name is refused (applying with force
        would silently adopt and rewrite it); our own means the plan was made from a
        cache that missed it, so it may be wrong (the Service's selector, the
        standby's size): StaleCache, and the controller plans again from a live read.
        """
        if seen is not None:
            return self.kube.apply(manifest)
        try:
            return self.kube.apply(manifest, create_only=True)
        except KubeError as exc:
            if exc.reason != ALREADY_EXISTS:
                raise
        meta = ms["metadata"]
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        existing = self.kube.get(BY_KIND[kind], meta["namespace"], child)
        if existing is not None and not controlled_by(existing, meta.get("uid", "")):
            raise KubeError(
                409,
                "ChildConflict",
                f"{kind} {meta['namespace']}/{child} already exists and is not owned by "
                "this MicroService; rename or delete it",
            )
        # Ours, or deleted in between: either way the plan's view was not the cluster's.
        raise KubeError(0, STALE, f"{kind} {meta['namespace']}/{child} exists but was not seen")

    def write_status(self, ms: dict[str, Any], p: planning.Plan) -> None:
        if not p.status_changed:
            return
        meta = ms["metadata"]
        patch = planning.merge_patch(ms.get("status") or {}, p.status)
        with self._writing(MS_KIND, meta["namespace"], meta["name"]):
            patched = self.kube.patch_status(meta["namespace"], meta["name"], patch)
            if patched is not None:
                self.store.wrote(MS_KIND, patched)

    def record(self, ms: dict[str, Any], p: planning.Plan) -> None:
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
                canary_step=g.canary_step,
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
