"""Operator settings, from command-line flags with environment fallbacks.

Every flag has an ``MSO_*`` environment variable so the same image is configured
from a Deployment's env or from a shell, and ``--help`` documents both.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import __version__

FIELD_MANAGER = "microservice-operator"
HANDOFF_FIELD_MANAGER = "microservice-operator-handoff"
LABEL_PREFIX = "mso.dev"


@dataclass(frozen=True)
class Settings:
    """Resolved operator settings."""

    namespaces: tuple[str, ...] = ()
    namespace_selector: str = ""
    metrics_port: int = 8080
    health_port: int = 8081
    log_level: str = "INFO"
    log_format: str = "text"
    workers: int = 8
    leader_election: bool = False
    lease_name: str = "microservice-operator"
    lease_namespace: str = "mso-system"
    identity: str = ""
    template_refreshes_per_minute: int = 10
    prometheus_url: str = ""

    @property
    def clusterwide(self) -> bool:
        """Whether the watches are cluster-wide (no --namespace given; with a
        --namespace-selector they are, and the selector picks the namespaces)."""
        return not self.namespaces


_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"({_NAME})?"
_REQUIREMENT = re.compile(
    rf"\s*(!\s*{_KEY}|{_KEY}(\s*(==|!=|=)\s*{_VALUE}"
    rf"|\s+(in|notin)\s*\(\s*{_VALUE}(\s*,\s*{_VALUE})*\s*\))?)\s*"
)


def valid_label_selector(selector: str) -> bool:
    """Whether ``selector`` is a label selector as kubectl -l takes it (equality and
    set-based requirements, comma-separated), so a typo fails at start-up instead of
    as a 400 from every LIST."""
    parts = re.split(r",(?![^(]*\))", selector)
    return bool(selector.strip()) and all(_REQUIREMENT.fullmatch(p) for p in parts)


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{key} must be an integer, got {raw!r}") from exc


def parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser; environment variables provide the defaults."""
    env = os.environ if env is None else env
    namespaces = [n.strip() for n in env.get("MSO_NAMESPACES", "").split(",") if n.strip()]
    p = argparse.ArgumentParser(
        prog="microservice-operator",
        description="Keeps MicroService resources (mso.dev/v1alpha1) alive: Deployment, "
        "Service, HPA, PodDisruptionBudget and health-based failover.",
    )
    p.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        default=None,
        metavar="NS",
        help="Watch only this namespace (repeatable). Default: all namespaces. "
        f"Env: MSO_NAMESPACES (comma-separated). Current default: {namespaces or 'all'}",
    )
    p.add_argument(
        "--namespace-selector",
        default=env.get("MSO_NAMESPACE_SELECTOR", ""),
        metavar="SELECTOR",
        help="Watch only namespaces whose labels match this label selector (e.g. "
        "'team=payments' or 'mso.dev/shard in (a,b)'); namespaces are picked up and "
        "dropped as their labels change. Not with --namespace. Several operators "
        "with disjoint selectors can share a cluster. Env: MSO_NAMESPACE_SELECTOR. "
        "Default: all namespaces",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int(env, "MSO_METRICS_PORT", 8080),
        help="Port of the Prometheus /metrics endpoint; 0 disables it. Env: MSO_METRICS_PORT. "
        "Default: %(default)s",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=_env_int(env, "MSO_HEALTH_PORT", 8081),
        help="Port of the liveness endpoint /healthz; 0 disables it. Env: MSO_HEALTH_PORT. "
        "Default: %(default)s",
    )
    p.add_argument(
        "--log-level",
        default=env.get("MSO_LOG_LEVEL", "INFO").upper(),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="Log level. Env: MSO_LOG_LEVEL. Default: %(default)s",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env.get("MSO_LOG_FORMAT", "text").lower(),
        help="text, or json (one object per line) for log pipelines. Env: MSO_LOG_FORMAT. "
        "Default: %(default)s",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--workers",
        type=int,
        default=_env_int(env, "MSO_WORKERS", 8),
        help="MicroServices reconciled in parallel. Env: MSO_WORKERS. Default: %(default)s",
    )
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=env.get("MSO_LEADER_ELECTION", "").lower() in ("1", "true", "yes"),
        help="Run several replicas with one active: only the holder of a "
        "coordination.k8s.io Lease reconciles; the others keep their caches warm and "
        "take over within 15s. Env: MSO_LEADER_ELECTION. Default: %(default)s",
    )
    p.add_argument(
        "--leader-election-id",
        default=env.get("MSO_LEADER_ELECTION_ID") or "microservice-operator",
        help="Name of the Lease. Env: MSO_LEADER_ELECTION_ID. Default: %(default)s",
    )
    p.add_argument(
        "--leader-election-namespace",
        default=env.get("POD_NAMESPACE") or "mso-system",
        help="Namespace of the Lease. Env: POD_NAMESPACE. Default: %(default)s",
    )
    p.add_argument(
        "--template-refreshes-per-minute",
        type=int,
        default=_env_int(env, "MSO_TEMPLATE_REFRESHES_PER_MINUTE", 10),
        help="Pace of rendering changes after an operator upgrade: at most this many "
        "Deployments, across all MicroServices, get a pod template that a new operator "
        "version renders differently for an unchanged revision, per minute (each is a "
        "rolling restart). 0 waits for each MicroService's next release. Env: "
        "MSO_TEMPLATE_REFRESHES_PER_MINUTE. Default: %(default)s",
    )
    p.add_argument(
        "--prometheus-url",
        default=env.get("MSO_PROMETHEUS_URL", ""),
        help="Base URL of the Prometheus HTTP API the analysis checks of "
        "spec.failover.analysis query, e.g. http://prometheus.monitoring:9090. Without "
        "it every check is inconclusive (never a rollback). Env: MSO_PROMETHEUS_URL.",
    )
    p.set_defaults(env_namespaces=namespaces)
    return p


def parse(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags first, then ``MSO_*`` environment variables, then built-in defaults."""
    env = os.environ if env is None else env
    args = parser(env).parse_args(argv)
    namespaces = tuple(args.namespaces or args.env_namespaces)
    if namespaces and args.namespace_selector:
        raise SystemExit("--namespace and --namespace-selector exclude each other")
    if args.namespace_selector.strip() and not valid_label_selector(args.namespace_selector):
        raise SystemExit(
            f"--namespace-selector: {args.namespace_selector!r} is not a label selector "
            "(e.g. 'team=payments', 'tier!=batch', 'shard in (a,b)', '!legacy')"
        )
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if args.template_refreshes_per_minute < 0:
        raise SystemExit("--template-refreshes-per-minute must be 0 or more")
    prometheus_url = args.prometheus_url.strip().rstrip("/")
    if prometheus_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", prometheus_url):
        raise SystemExit(
            f"--prometheus-url: {args.prometheus_url!r} is not an http(s) URL "
            "(e.g. http://prometheus.monitoring:9090)"
        )
    identity = env.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return Settings(
        leader_election=args.leader_election,
        lease_name=args.leader_election_id,
        lease_namespace=args.leader_election_namespace,
        identity=identity,
        namespaces=namespaces,
        namespace_selector=args.namespace_selector.strip(),
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        log_level=args.log_level,
        log_format=args.log_format,
        workers=args.workers,
        template_refreshes_per_minute=args.template_refreshes_per_minute,
        prometheus_url=prometheus_url,
    )
