"""kopf wiring: watches in, controller out. Deliberately thin.

Only watch-event handlers are registered: they need no finalizers and write nothing
to the objects (no kopf annotations), so a MicroService can always be deleted, even
while the operator is down, and the operator's only writes are its own.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf

from . import __version__
from .api import GROUP, PLURAL, VERSION
from .controller import CHILD_RESOURCES, MANAGED_SELECTOR, Controller
from .kube import Kube, load_api_client
from .metrics import OperatorMetrics
from .settings import FIELD_MANAGER, Settings

log = logging.getLogger("microservice_operator")
MANAGED = {"app.kubernetes.io/managed-by": FIELD_MANAGER}


def configure(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """kopf settings, each chosen on purpose."""
    # kopf would otherwise post a Kubernetes Event for every handler log line.
    kopf_settings.posting.enabled = False
    # Our own storage prefix, should a future handler need kopf's progress storage.
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Reconnect watches well before load balancers cut idle connections.
    kopf_settings.watching.server_timeout = 270
    kopf_settings.watching.client_timeout = 300
    kopf_settings.watching.connect_timeout = 30
    # Event handlers are async and cheap (a cache update and a queue add); the
    # controller has its own worker pool for reconciles.
    kopf_settings.batching.worker_limit = None
    kopf_settings.batching.batch_window = 0.1
    kopf_settings.execution.max_workers = 4
    # Filter child watches on the server: only our labelled objects are streamed
    # (not every Pod of the cluster), and an object that loses the label arrives as
    # a DELETED event instead of lingering in the cache.
    for res in CHILD_RESOURCES:
        kopf_settings.watching.label_selectors[res.group or "v1", res.plural] = MANAGED_SELECTOR
    # No kopf peering: it would pause the standby's watches (stale caches on
    # takeover). Replicas coordinate through a Lease instead (leader.py).
    kopf_settings.peering.standalone = True


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the controller, prime its caches, start workers and the metrics endpoint."""
    ours: Settings = memo["settings"]
    configure(settings, ours)
    metrics: OperatorMetrics = memo["metrics"]
    kube = Kube(load_api_client(), on_request=metrics.kube_request)
    controller = Controller(kube, metrics, ours)
    memo["controller"] = controller
    await controller.start()
    log.info(
        "Started microservice-operator %s watching %s",
        __version__,
        ", ".join(ours.namespaces) if ours.namespaces else "all namespaces",
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop workers before kopf closes its watches."""
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()
    log.info("Stopped microservice-operator")


@kopf.on.event(GROUP, VERSION, PLURAL)
async def microservice_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Queue the MicroService; deletions drop its metrics."""
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        controller.on_microservice(type, dict_of(body))


def _child_handler(kind: str) -> Any:
    # async on purpose: sync handlers run in kopf's thread pool, and the work queue
    # (asyncio) must only be touched from the event loop's thread.
    async def handler(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        controller: Controller | None = memo.get("controller")
        if controller is not None:
            controller.on_child(kind, type, dict_of(body))

    handler.__name__ = f"{kind.lower()}_event"
    handler.__doc__ = f"Queue the MicroService owning a changed {kind}."
    return handler


for _res in CHILD_RESOURCES:
    kopf.on.event(_res.group, _res.version, _res.plural, labels=MANAGED)(_child_handler(_res.kind))


def dict_of(body: kopf.Body) -> dict[str, Any]:
    """A plain, detached dict of a kopf body (kopf reuses and mutates its views)."""
    return copy.deepcopy(dict(body))
