"""Entry point: ``microservice-operator`` or ``python -m microservice_operator``."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from . import settings as settings_mod
from .memory import few_malloc_arenas


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines: time, level, logger, message (and
    the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, start the metrics endpoint and run kopf until interrupted."""
    few_malloc_arenas()
    settings = settings_mod.parse(argv)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    # kopf's own per-object chatter stays at WARNING unless we debug.
    if settings.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
        # kopf's API discovery retries say, once per retry, what the informers say
        # once and /readyz keeps saying; a probe hit is no news either.
        logging.getLogger("kopf._core.reactor.observation").setLevel(logging.CRITICAL)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # kopf loads the official client library whenever it is installed (for its
    # helpers that take the library's objects, which the operator does not use): 14 MiB
    # and 0.3 s per process for nothing. The operator's requests go through kube.py.
    if "kubernetes" not in sys.modules:
        sys.modules["kubernetes"] = None  # type: ignore[assignment]
    import kopf  # noqa: PLC0415

    # handlers registers the kopf handlers on import.
    from . import connection, handlers  # noqa: F401, PLC0415
    from .metrics import OperatorMetrics  # noqa: PLC0415

    try:
        credentials = connection.load()
    except connection.ConfigError as exc:
        logging.getLogger("microservice_operator").critical(
            "No Kubernetes configuration (%s): set KUBECONFIG, or run in a cluster with a "
            "ServiceAccount",
            exc,
        )
        return 2
    metrics = OperatorMetrics()
    server = metrics.serve(settings.metrics_port) if settings.metrics_port else None
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    memo = kopf.Memo(settings=settings, metrics=metrics, server=server, credentials=credentials)
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=settings.clusterwide,
                namespaces=list(settings.namespaces),
                # Replicas coordinate through a Lease (leader.py), not kopf peering.
                standalone=True,
                liveness_endpoint=liveness,
                memo=memo,
            )
        )
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
