"""kopf wiring: the process's lifecycle and its liveness probe. Deliberately thin.

kopf runs the event loop, signals, start-up and clean-up, and serves /healthz. The
watches are the controller's own informers (:mod:`informer`): kopf's relist cannot
tell a handler which objects vanished while a watch was down, and a failover operator
must not act on a pod that no longer exists. No kopf resource handler is registered,
so there are no finalizers and no kopf annotations: a MicroService can always be
deleted, even while the operator is down, and the operator's only writes are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

import kopf

from . import __version__, connection
from .controller import Controller
from .kube import Kube, Transport, counted_session
from .metrics import OperatorMetrics
from .settings import Settings

log = logging.getLogger("microservice_operator")


def configure(kopf_settings: kopf.OperatorSettings) -> None:
    """kopf settings, each chosen on purpose."""
    # kopf would otherwise post a Kubernetes Event for every handler log line.
    kopf_settings.posting.enabled = False
    # kopf reads the API discovery once at start-up; by default it gives up after
    # ~54 s of API errors. Retry forever instead: an API server outage must be ridden
    # out, not turned into an exit.
    kopf_settings.networking.error_backoffs = itertools.repeat(2.0)
    # No kopf peering: it would pause the standby's watches (stale caches on
    # takeover). Replicas coordinate through a Lease instead (elector.py).
    kopf_settings.peering.standalone = True
    # No kopf resource handlers, so kopf needs no CRD or Namespace watches: after its
    # one discovery at start-up it makes no requests at all.
    kopf_settings.scanning.disabled = True


@kopf.on.login()
async def login(
    memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any
) -> kopf.AiohttpSession | None:
    """kopf's own connection, from the same credentials as the operator's transport
    (:mod:`connection`), and counted: every request the process sends (kopf's few
    start-up discovery reads included) shows in ``mso_kube_requests_total``, so the
    benchmarks compare complete figures."""
    creds: connection.Credentials = memo.get("credentials") or connection.load()
    # kopf logs in again after a 401 or once the credential expired: renew it (an exec
    # plugin may run for seconds, so not on the event loop).
    await asyncio.get_running_loop().run_in_executor(None, lambda: creds.refresh(force=True))
    info = kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        ca_data=creds.ca_data,
        insecure=creds.insecure,
        certificate_path=creds.cert_file,
        private_key_path=creds.key_file,
        token=creds.token,
        username=creds.username,
        password=creds.password,
        default_namespace=creds.default_namespace,
        proxy_url=creds.proxy_url,
        expiration=creds.expiration,
        # Without a proxy-url, the environment's proxy (HTTPS_PROXY, NO_PROXY), like
        # the operator's own transport.
        trust_env=settings.networking.trust_env or not creds.proxy_url,
    )
    metrics: OperatorMetrics = memo["metrics"]
    return counted_session(
        info, metrics.kube_request, user_agent=f"microservice-operator/{__version__}"
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Build the controller and start it in the background: filling the caches may
    wait for a CRD, a permission or the API server, and meanwhile the process is
    alive (/healthz) but not ready (/readyz says why)."""
    ours: Settings = memo["settings"]
    configure(settings)
    metrics: OperatorMetrics = memo["metrics"]
    kube = Kube(
        Transport(memo.get("credentials") or connection.load()),
        on_request=metrics.kube_request,
        user_agent=f"microservice-operator/{__version__} ({ours.identity})",
    )
    controller = Controller(kube, metrics, ours)
    memo["controller"] = controller
    server = memo.get("server")
    if server is not None:
        server.set_readiness(controller.readiness)

    async def start() -> None:
        await controller.start()
        log.info(
            "Started microservice-operator %s watching %s",
            __version__,
            ", ".join(ours.namespaces)
            if ours.namespaces
            else f"namespaces matching {ours.namespace_selector!r}"
            if ours.namespace_selector
            else "all namespaces",
        )

    memo["starting"] = asyncio.create_task(start(), name="mso-start")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Let in-flight reconciles finish and hand the Lease over before exiting."""
    starting: asyncio.Task[None] | None = memo.get("starting")
    if starting is not None and not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()
    log.info("Stopped microservice-operator")


@kopf.on.probe(id="controller", errors=kopf.ErrorsMode.PERMANENT)
def probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """/healthz: fails when the start-up, an informer, the elector or a worker died.
    Waiting for the caches is alive, not dead: /readyz tells that apart."""
    controller: Controller | None = memo.get("controller")
    starting: asyncio.Task[None] | None = memo.get("starting")
    if controller is None or starting is None:
        return {"starting": True}
    if not starting.done():
        return {"starting": True, "waiting": controller.readiness()[1]}
    if starting.exception() is not None:
        raise RuntimeError(f"start-up failed: {starting.exception()!r}")
    return controller.health()
