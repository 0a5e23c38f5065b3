"""Entry point: ``microservice-operator`` or ``python -m microservice_operator``."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

import kopf

from . import settings as settings_mod
from .metrics import OperatorMetrics


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, start the metrics endpoint and run kopf until interrupted."""
    settings = settings_mod.parse(argv)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kopf's own per-object chatter stays at WARNING unless we debug.
    if settings.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    from . import handlers  # noqa: F401, PLC0415  (registers the kopf handlers on import)

    metrics = OperatorMetrics()
    server = metrics.serve(settings.metrics_port) if settings.metrics_port else None
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    memo = kopf.Memo(settings=settings, metrics=metrics)
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
