"""Watch caches that are correct by construction: one LIST+WATCH per kind.

A reconcile reads children from memory, so a cache that keeps a deleted pod makes
the operator judge a finished rollout as still in progress, and roll a healthy
release back at its deadline. Hence client-go's reflector semantics, written once:

- each :class:`Informer` LISTs its kind and WATCHes from exactly the list's
  resourceVersion, in one thread, so nothing can happen between the two unseen
  (no separate priming LIST racing another watch);
- events are applied in the order the stream delivers them (resourceVersion order),
  and the :class:`Store` never lets an older version replace a newer one, nor a
  write's echo resurrect an object whose deletion it has seen (tombstones);
- a broken watch resumes from the last resourceVersion it saw (the API server
  replays what it missed, deletions included); when that version is too old
  (410 Gone), the informer relists, and :meth:`Store.replace` drops every object the
  fresh LIST no longer has and reports the MicroServices they belonged to.

kopf's watches are not used for this: they relist without telling the handler where
the listing ends, so deletions missed during a reconnect can never be detected.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .health import REVISION_ANNOTATION
from .kube import Kube, KubeError, Resource, share
from .settings import FIELD_MANAGER

log = logging.getLogger("microservice_operator")

Key = tuple[str, str]
"""(namespace, name) of a MicroService."""
Ident = tuple[str, str]
"""(namespace, name) of a cached object."""

INSTANCE_LABEL = "app.kubernetes.io/instance"
TOMBSTONE_SECONDS = 600.0
"""How long a deletion is remembered to refuse late echoes of older versions."""


def resource_version(obj: dict[str, Any]) -> int:
    """An object's resourceVersion as an integer (etcd's revision; 0 if unknown)."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:  # resourceVersion is opaque; etcd makes it an integer
        return 0


def ident(obj: dict[str, Any]) -> Ident:
    """The cache identity of an object."""
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta["name"]


def owner_key(obj: dict[str, Any]) -> Key | None:
    """The MicroService a child belongs to, from its instance label."""
    meta = obj.get("metadata", {})
    inst = (meta.get("labels") or {}).get(INSTANCE_LABEL)
    return (meta.get("namespace", ""), inst) if inst else None


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without the metadata that changes with every write."""
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    return {**obj, "metadata": meta}


@dataclass
class _Writes:
    """Our writes in flight to one object: how many, the resourceVersions they produced,
    and the versions the watch stored meanwhile without reporting them."""

    count: int = 0
    ours: set[int] = field(default_factory=set)
    held: list[int] = field(default_factory=list)


class Store:
    """Thread-safe latest-version cache of watched objects, indexed by owner key.

    Informer threads write, reconcile threads read, hence the lock. Objects are
    never mutated in place: readers get the dicts as stored and must not modify them.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._objects: dict[str, dict[Ident, dict[str, Any]]] = {}
        self._by_owner: dict[str, dict[Key, set[Ident]]] = {}
        # kind -> ident -> (resourceVersion of the deletion, when it was seen)
        self._tombstones: dict[str, dict[Ident, tuple[int, float]]] = {}
        # (kind, namespace or None for all) -> the newest resourceVersion the informer
        # has seen: every object at or below it that exists is in the store.
        self._watermarks: dict[tuple[str, str | None], int] = {}
        # Our writes in flight, by (kind, ident of the object written).
        self._writes: dict[tuple[str, Ident], _Writes] = {}

    # ------------------------------------------------------------------ writes
    def put(self, kind: str, obj: dict[str, Any], *, watched: bool = True) -> bool:
        """Store ``obj`` unless the same or a newer version, or its deletion, is already
        known. True if what decisions read changed: a new version that differs only in
        resourceVersion or managedFields (for pods, only in fields trimmed away) is
        stored but triggers no reconcile.

        A ``watched`` version (from the watch or a LIST) of an object we are writing
        right now is stored but reported by :meth:`end_write` instead, and only if it is
        not the result of our own write."""
        i = ident(obj)
        rv = resource_version(obj)
        with self._lock:
            tomb = self._tombstones.get(kind, {}).get(i)
            if tomb is not None:
                if 0 < rv <= tomb[0]:
                    return False  # a version older than its deletion
                del self._tombstones[kind][i]
            objs = self._objects.setdefault(kind, {})
            old = objs.get(i)
            if old is not None and resource_version(old) >= rv > 0:
                return False  # older, or the echo of a version already stored
            if old is not None:
                self._unindex(kind, i, old)
            objs[i] = obj
            owner = owner_key(obj)
            if owner is not None:
                self._by_owner.setdefault(kind, {}).setdefault(owner, set()).add(i)
            changed = old is None or _content(old) != _content(obj)
            writes = self._writes.get((kind, i)) if changed and watched else None
            if writes is not None:
                writes.held.append(rv)
                return False
            return changed

    def begin_write(self, kind: str, i: Ident) -> None:
        """We are about to write this object: hold the watch's news of it until
        :meth:`end_write`.

        The watch often delivers the echo of our own write before our request has
        its answer back; reported, that echo planned the MicroService once more for
        nothing (at scale, one plan in seven). What the API server made of our write is
        what the plan asked for; anyone else's change meanwhile is still reported."""
        with self._lock:
            self._writes.setdefault((kind, i), _Writes()).count += 1

    def wrote(self, kind: str, obj: dict[str, Any], *, keep: bool = True) -> bool:
        """Remember the version of the answer to one of our writes begun with
        :meth:`begin_write` as ours, and store it (see :meth:`put_written`) unless not
        ``keep``: a newer answer of ours follows."""
        with self._lock:
            writes = self._writes.get((kind, ident(obj)))
            if writes is not None:
                writes.ours.add(resource_version(obj))
        return self.put_written(kind, obj) if keep else False

    def end_write(self, kind: str, i: Ident) -> dict[str, Any] | None:
        """The write begun with :meth:`begin_write` is over (done or failed). Returns the
        stored object if the watch stored a version meanwhile that no write of ours
        produced: someone else's change, which the caller must report; else None."""
        with self._lock:
            writes = self._writes.get((kind, i))
            if writes is None:
                return None
            writes.count -= 1
            if writes.count > 0:
                return None
            del self._writes[(kind, i)]
            if any(rv not in writes.ours for rv in writes.held):
                return self._objects.get(kind, {}).get(i)
            return None

    def advance(self, kind: str, namespace: str | None, rv: int) -> None:
        """The informer of ``kind`` (in ``namespace``, or all) has seen everything up to
        ``rv``."""
        with self._lock:
            key = (kind, namespace)
            if rv > self._watermarks.get(key, 0):
                self._watermarks[key] = rv

    def put_written(self, kind: str, obj: dict[str, Any]) -> bool:
        """Store the API server's answer to one of our writes, unless the informer has
        already seen past it: then an object missing from the store was deleted in
        between (and its deletion may even predate a relist), so a late answer must not
        bring it back."""
        obj = prepare(kind, obj, self.previous(kind, obj))
        i = ident(obj)
        rv = resource_version(obj)
        with self._lock:
            known = i in self._objects.get(kind, {})
            seen = max(self._watermarks.get((kind, i[0]), 0), self._watermarks.get((kind, None), 0))
        if not known and 0 < rv <= seen:
            return False
        return self.put(kind, obj, watched=False)

    def delete(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Forget a deleted object and remember its deletion; returns what was stored.

        A late DELETED of an older incarnation (another uid) must not evict a re-created
        successor of the same name.
        """
        i = ident(obj)
        rv = resource_version(obj)
        now = self._clock()
        with self._lock:
            stored = self._objects.get(kind, {}).get(i)
            uid = obj.get("metadata", {}).get("uid")
            if stored is not None and uid and stored.get("metadata", {}).get("uid") != uid:
                return None
            tombs = self._tombstones.setdefault(kind, {})
            tombs[i] = (max(rv, resource_version(stored) if stored else 0), now)
            self._prune_tombstones(tombs, now)
            if stored is None:
                return None
            del self._objects[kind][i]
            self._unindex(kind, i, stored)
            return stored

    def replace(
        self, kind: str, objs: list[dict[str, Any]], list_rv: int, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Make the store hold exactly a fresh LIST of a kind (within ``namespace``, or
        all namespaces), read at ``list_rv``; returns the objects that changed: new,
        newer, or dropped because the LIST no longer has them.

        Objects newer than the LIST (stored from a write after the LIST was read) are
        kept: the watch that starts at ``list_rv`` will report what becomes of them.
        """
        fresh = {ident(o) for o in objs}
        changed = [o for o in objs if self.put(kind, o)]
        with self._lock:
            stale = [
                o
                for i, o in self._objects.get(kind, {}).items()
                if i not in fresh and resource_version(o) <= list_rv and namespace in (None, i[0])
            ]
            # The LIST is authoritative up to list_rv: older tombstones are moot.
            tombs = self._tombstones.get(kind, {})
            for i in [i for i, (rv, _) in tombs.items() if rv <= list_rv]:
                if namespace in (None, i[0]):
                    del tombs[i]
        for obj in stale:
            gone = dict(obj, metadata={**obj["metadata"], "resourceVersion": str(list_rv)})
            if self.delete(kind, gone) is not None:
                changed.append(obj)
        return changed

    def mark_deleting(self, kind: str, namespace: str, name: str, timestamp: str) -> None:
        """Show an object we just deleted as terminating until its watch event arrives,
        so a reconcile that runs first does not pick it again."""
        with self._lock:
            obj = self._objects.get(kind, {}).get((namespace, name))
            if obj is not None:
                meta = {**obj["metadata"], "deletionTimestamp": timestamp}
                self._objects[kind][(namespace, name)] = {**obj, "metadata": meta}

    def _unindex(self, kind: str, i: Ident, obj: dict[str, Any]) -> None:
        owner = owner_key(obj)
        if owner is None:
            return
        idents = self._by_owner.get(kind, {}).get(owner)
        if idents is not None:
            idents.discard(i)
            if not idents:
                del self._by_owner[kind][owner]

    @staticmethod
    def _prune_tombstones(tombs: dict[Ident, tuple[int, float]], now: float) -> None:
        # Insertion order is age order; drop from the front while expired.
        for i in list(tombs):
            if now - tombs[i][1] < TOMBSTONE_SECONDS:
                break
            del tombs[i]

    # ------------------------------------------------------------------ reads
    def previous(self, kind: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The stored version of the same object as ``obj`` (same name and uid): what
        :func:`prepare` takes unchanged parts from."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or "name" not in meta:
            return None
        with self._lock:
            stored = self._objects.get(kind, {}).get((meta.get("namespace", ""), meta["name"]))
        if stored is None or stored.get("metadata", {}).get("uid") != meta.get("uid"):
            return None
        return stored

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

    def keys(self, kind: str) -> list[Ident]:
        """Identities of every stored object of a kind."""
        with self._lock:
            return sorted(self._objects.get(kind, {}))

    def count(self, kind: str) -> int:
        """Number of stored objects of a kind."""
        with self._lock:
            return len(self._objects.get(kind, {}))


_POD_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "labels",
    "creationTimestamp",
    "deletionTimestamp",
    "ownerReferences",
)
_CONTAINER_STATUS = ("restartCount",)
_POD_CONDITIONS = ("Ready", "PodScheduled")
"""The conditions decisions read: readiness (and since when), and scheduling."""


def _trim_condition(c: Any) -> Any:
    if not isinstance(c, dict):
        return c
    return {k: c[k] for k in ("type", "status", "lastTransitionTime") if k in c}


def _trim_container_status(cs: Any) -> Any:
    if not isinstance(cs, dict):
        return cs
    out = {k: cs[k] for k in _CONTAINER_STATUS if k in cs}
    state = cs.get("state") or {}
    waiting = state.get("waiting") if isinstance(state, dict) else None
    if isinstance(waiting, dict):
        out["state"] = {"waiting": {k: waiting[k] for k in ("reason",) if k in waiting}}
    elif isinstance(state, dict) and state:
        out["state"] = {next(iter(state)): {}}
    return out


def trim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """Keep only what decisions read from a pod (in place; returns it): identity,
    labels, owner, the revision annotation, times, the node it runs on, phase, the
    Ready and PodScheduled conditions and per container the restarts and waiting
    reason. A pod as the API server sends it is mostly managedFields, the spec and
    container details, none of which a decision reads; at thousands of pods the cache
    is the process's memory."""
    meta = pod.get("metadata")
    if isinstance(meta, dict):
        kept = {k: meta[k] for k in _POD_META if k in meta}
        revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION)
        if revision is not None:
            kept["annotations"] = {REVISION_ANNOTATION: revision}
        pod["metadata"] = kept
    spec = pod.get("spec")
    if isinstance(spec, dict):
        pod["spec"] = {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {}
    status = pod.get("status")
    if isinstance(status, dict):
        out: dict[str, Any] = {k: status[k] for k in ("phase", "startTime") if k in status}
        if isinstance(status.get("conditions"), list):
            out["conditions"] = [
                _trim_condition(c)
                for c in status["conditions"]
                if not isinstance(c, dict) or c.get("type") in _POD_CONDITIONS
            ]
        for key in ("initContainerStatuses", "containerStatuses"):
            if isinstance(status.get(key), list):
                out[key] = [_trim_container_status(c) for c in status[key]]
        pod["status"] = out
    return pod


def trim_namespace(namespace: dict[str, Any]) -> dict[str, Any]:
    """Keep only a namespace's name, labels and version (in place; returns it): all
    --namespace-selector needs to know is whether it is selected."""
    meta = namespace.get("metadata") or {}
    namespace.clear()
    namespace["metadata"] = {k: meta[k] for k in ("name", "labels", "resourceVersion") if k in meta}
    return namespace


def trim_child(obj: dict[str, Any]) -> dict[str, Any]:
    """A child we apply, without other managers' managedFields (in place; returns it):
    decisions read only what *our* apply owns (the replicas hand-off, the template
    kept during a paced rendering change), and the controllers' status entries are
    most of the rest."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("managedFields"), list):
        meta["managedFields"] = [
            e
            for e in meta["managedFields"]
            if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
        ]
    return obj


def trim_microservice(ms: dict[str, Any]) -> dict[str, Any]:
    """A MicroService with managedFields cut to what decisions read (in place; returns
    it): who wrote when (a new revision's clock starts at the last spec write) and
    whether someone else wrote the failover timers in status; not the field sets."""
    meta = ms.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("managedFields"), list):
        return ms
    kept = []
    for e in meta["managedFields"]:
        entry = {k: e[k] for k in ("manager", "operation", "time", "subresource") if k in e}
        status = ((e.get("fieldsV1") or {}).get("f:status")) or {}
        if "f:failoverState" in status:
            entry["fieldsV1"] = {"f:status": {"f:failoverState": {}}}
        kept.append(entry)
    meta["managedFields"] = kept
    return ms


def trim_revision(record: dict[str, Any]) -> dict[str, Any]:
    """A history record without managedFields (in place; returns it): nothing reads them."""
    meta = record.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return record


TRIMS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "Pod": trim_pod,
    "Namespace": trim_namespace,
    "MicroService": trim_microservice,
    "Deployment": trim_child,
    "Service": trim_child,
    "HorizontalPodAutoscaler": trim_child,
    "PodDisruptionBudget": trim_child,
    "ControllerRevision": trim_revision,
}
"""Every kind is cached trimmed to what decisions read: at thousands of MicroServices
the caches are the process's memory."""


FREE_FORM_KINDS = frozenset({"MicroService", "ControllerRevision"})
"""Kinds with parts of free-form JSON (a MicroService's preserve-unknown-fields parts,
a history record's data), where a value may change type (1 to true) while Python calls
the two equal: only their metadata is taken over from the previous version."""


def prepare(
    kind: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An object as the cache keeps it: trimmed, its strings shared, and the field sets
    of its managedFields shared with every other object's equal ones (in place).

    ``previous`` is the version the cache holds now: what did not change is taken
    from it as it is (see :func:`share`), so a new version costs a walk over what
    changed only."""
    trim = TRIMS.get(kind)
    like: dict[str, Any] | None = previous
    if previous is not None and kind in FREE_FORM_KINDS:
        like = {"metadata": previous.get("metadata")}
    shared: dict[str, Any] = share(trim(obj) if trim is not None else obj, like=like)
    meta = shared.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("managedFields"), list):
        before = ((previous or {}).get("metadata") or {}).get("managedFields")
        # Entries taken over from the cached version have their field sets shared
        # already, and are the cached version's own: never written to again.
        taken = {id(e) for e in before} if isinstance(before, list) else set()
        for entry in meta["managedFields"]:
            if id(entry) in taken:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("fieldsV1"), dict):
                entry["fieldsV1"] = intern_fields(entry["fieldsV1"])[1]
    return shared


_FIELD_SETS: dict[tuple[Any, ...], dict[str, Any]] = {}
_MAX_FIELD_SETS = 20_000
_UNIQUE = object()
"""The key of a field set no other object has (it names an owner's uid)."""


def intern_fields(tree: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(key, tree): ``tree`` (a managedFields fieldsV1 set) or an equal one already
    cached, bottom up, so equal subtrees are one object.

    A Deployment's field set is half its cached size, and all Deployments the operator
    renders have nearly the same one: only the ownerReference's ``k:{"uid":...}``
    differs, so the subtrees around it are kept as they are, and the rest (the whole
    ``f:spec``) is shared. Shared trees are never modified: cached objects are not, and
    :func:`share` runs before this."""
    items: list[tuple[str, Any]] = []
    unique = False
    for k, v in tree.items():
        if k.startswith('k:{"uid"'):
            unique = True
        if isinstance(v, dict):
            child_key, child = intern_fields(v)
            if child is not v:
                tree[k] = child
            unique = unique or child_key is _UNIQUE
            items.append((k, child_key))
        elif v is None or isinstance(v, str | int | float | bool):
            items.append((k, v))
        else:
            unique = True  # not a field set (no lists in fieldsV1): keep it as it is
    if unique:
        return _UNIQUE, tree
    key = tuple(items)
    if len(_FIELD_SETS) >= _MAX_FIELD_SETS:
        return key, _FIELD_SETS.get(key, tree)
    return key, _FIELD_SETS.setdefault(key, tree)


class Informer:
    """LIST then WATCH one kind into the store, forever, in its own thread.

    ``on_change`` is called (from this thread) with every object whose cached state
    changed, including objects dropped on relist, so the caller can queue their
    MicroServices. ``synced`` is set after the first successful LIST;
    ``on_recovered`` is called when the LIST or WATCH works again after failing;
    ``on_event`` with the type of every watch event received (for the metrics).
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        store: Store,
        on_change: Callable[[list[dict[str, Any]]], None],
        *,
        on_recovered: Callable[[], None] | None = None,
        on_event: Callable[[str], None] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        watch_timeout_seconds: int = 300,
        read_timeout: float = 90.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.kind = resource.kind
        self.store = store
        self.on_change = on_change
        self.on_recovered = on_recovered
        self.on_event = on_event
        self.failing = False
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout_seconds = watch_timeout_seconds
        self.read_timeout = read_timeout
        self.max_backoff = max_backoff
        self.synced = threading.Event()
        self.problem: str | None = None  # why it cannot list, for logs and /readyz
        self.resource_version = ""
        self.relists = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """For logs: the kind and, if any, the namespace."""
        return f"{self.kind}" + (f" in {self.namespace}" if self.namespace else "")

    def start(self) -> None:
        """Run in a daemon thread (a blocked watch read cannot be interrupted)."""
        self._thread = threading.Thread(
            target=self.run, name=f"informer-{self.kind.lower()}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end at its next event or timeout."""
        self._stop.set()

    def alive(self) -> bool:
        """Whether the informer thread still runs (a dead one is a bug: exit)."""
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """LIST, then WATCH from the list's version; resume or relist on failure."""
        backoff = 0.0
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self._list()
                started = time.monotonic()
                self._watch()
                backoff = 0.0
                if time.monotonic() - started < 1.0:
                    # A watch the server ends at once, again and again, must not
                    # become a busy loop of requests.
                    self._stop.wait(1.0)
            except KubeError as exc:
                if exc.gone:
                    log.info("Relisting %s: watch version too old", self.name)
                    self.resource_version = ""
                    continue
                # Short and capped: the API server coming back must be noticed
                # within seconds, and a retry every few seconds costs nothing. Before
                # the first LIST worked, every second: a start-up waiting for a CRD or
                # a permission must go on as soon as it is there.
                self.failing = True
                cap = self.max_backoff if self.synced.is_set() else 1.0
                backoff = min(cap, max(0.5, backoff * 2))
                problem = explain(exc, self.resource, self.namespace)
                if self.synced.is_set():
                    log.warning(
                        "Failed to watch %s (retrying in %.1fs): %s", self.name, backoff, exc
                    )
                elif problem != self.problem and problem not in _SAID:
                    _SAID.add(problem)  # said once per process, not per kind or retry
                    log.error("%s", problem)
                else:
                    log.debug("Still cannot list %s: %s", self.name, exc)
                self.problem = problem
                self._stop.wait(backoff * random.uniform(0.8, 1.2))

    def _list(self) -> None:
        kind, store = self.kind, self.store
        objs, list_rv = self.kube.list_with_version(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            each=lambda o: prepare(kind, o, store.previous(kind, o)),
        )
        changed = self.store.replace(self.kind, objs, list_rv, namespace=self.namespace)
        if self.synced.is_set():
            self.relists += 1
        self.resource_version = str(list_rv)
        self.store.advance(self.kind, self.namespace, list_rv)
        self.synced.set()
        if changed:
            self.on_change(changed)
        self._mark_working()

    def _mark_working(self) -> None:
        if self.problem is not None:
            log.info("%s: resolved, listing works now", self.name)
            self.problem = None
        if self.failing:
            self.failing = False
            log.info("Watching %s again", self.name)
            if self.on_recovered is not None:
                self.on_recovered()

    def _watch(self) -> None:
        events = self.kube.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            timeout_seconds=int(self.watch_timeout_seconds * random.uniform(0.8, 1.0)),
            read_timeout=self.read_timeout,
        )
        for event in events:
            self._mark_working()
            if self._stop.is_set():
                return
            etype = event.get("type")
            if self.on_event is not None:
                self.on_event(str(etype))
            obj = event.get("object") or {}
            if etype == "ERROR":
                code = int(obj.get("code") or 0)
                raise KubeError(code, str(obj.get("reason", "Error")), str(obj.get("message")))
            rv = obj.get("metadata", {}).get("resourceVersion")
            if etype == "BOOKMARK":
                if rv:
                    self.resource_version = str(rv)
                    self._advance(rv)
                continue
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.kind)
            prepare(self.kind, obj, self.store.previous(self.kind, obj))
            if etype == "DELETED":
                stored = self.store.delete(self.kind, obj)
                changed = [stored or obj]
            elif self.store.put(self.kind, obj):
                changed = [obj]
            else:
                changed = []
            if rv:
                self.resource_version = str(rv)
                self._advance(rv)
            if changed:
                self.on_change(changed)

    def _advance(self, rv: object) -> None:
        with contextlib.suppress(ValueError):
            self.store.advance(self.kind, self.namespace, int(str(rv)))


_SAID: set[str] = set()


def explain(exc: KubeError, resource: Resource, namespace: str | None) -> str:
    """One line a newcomer can act on, for a LIST that fails at start-up."""
    where = f"in namespace {namespace}" if namespace else "in all namespaces"
    full = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    if exc.not_found and resource.kind == "MicroService":
        return (
            f"The MicroService CRD ({full}) is not installed. Install it with "
            "`kubectl apply --server-side -f crds/microservices.mso.dev.yaml` (or "
            "`kubectl apply -k manifests/`); the operator starts as soon as it exists."
        )
    if exc.status == 403:
        return (
            f"Forbidden to list {full} {where}: {exc.message}. Grant the operator's "
            "ServiceAccount the ClusterRole of manifests/base/rbac-application.yaml "
            "(verb list, watch on this resource)."
        )
    if exc.status == 401:
        return f"The API server refused the operator's credentials (401): {exc.message}"
    if exc.transport:
        cause = exc.message
        for marker in ("[Errno", "timed out", "Name or service not known"):
            if marker in cause:
                cause = cause[cause.index(marker) :].split('"')[0].rstrip(")")
                break
        return f"Cannot reach the API server ({cause}); retrying every second."
    return f"Cannot list {full} {where}: {exc}"
