"""Benchmark: time from an SLO breach visible in Prometheus to the rollback.

Against the cluster in KUBECONFIG (the local control plane by default), with the real
operator started with ``--prometheus-url``, a synthetic exporter
(tests/integration/slo_exporter.py) and a real Prometheus scraping it every second
(tests/integration/prometheus.py). For each configuration (``intervalSeconds`` x
``failureLimit`` of the error-ratio check of tests/integration/test_analysis.py) and
each of ``--runs`` runs, in a fresh namespace:

1. hello:1 with the check, its exporter target serving without errors, until proven
   (``status.lastKnownGoodRevision`` is its revision);
2. hello:2; once its Deployment rolled out and the operator made its first query of
   it (no data yet: inconclusive), after a random fraction of an interval (so the breach
   falls at a random phase of the query schedule), its exporter target fails 40 % of
   the requests;
3. t_breach: the first moment Prometheus itself answers the check's query (the operator's
   PromQL, placeholders filled by ``render_query``) with a value the check fails on;
4. t_rollback: the first moment the Deployment's container image is hello:1 again.

Reported: t_rollback - t_breach against the floor (failureLimit - 1) x interval (the
first failing query comes anywhere within one interval after the breach, then
failureLimit - 1 more intervals) and the ceiling failureLimit x interval. The operator
reaches Prometheus through a recording pass-through proxy on loopback, so each run is
also split into: the first failing query after the breach, the span of the
failureLimit failing queries in a row, and the reconcile overhead (the last of them to
the rollback seen in the API).

Prometheus and the API are polled every 50 ms, so figures carry that resolution.

    python -m bench.analysis --runs 5
    python -m bench.analysis --runs 3 --config 2x3 --config 1x5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, config

from microservice_operator.analysis import Measurement, judge, measure, render_query
from microservice_operator.api import AnalysisCheck

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.operator_proc import OperatorProcess  # noqa: E402
from tests.integration.prometheus import Prometheus  # noqa: E402
from tests.integration.slo_exporter import SloExporter  # noqa: E402
from tests.integration.test_analysis import (  # noqa: E402
    ERROR_RATIO,
    desired_revision,
    proven,
    web,
)
from tests.integration.test_reconcile import get_ms  # noqa: E402

from bench.converge import create_namespace  # noqa: E402
from bench.failover import POLL, Bench, until  # noqa: E402

NAME = "web"
BAD_RATIO = 0.4
DEFAULT_CONFIGS = ("2x3", "5x2")


@dataclass(frozen=True)
class Config:
    """One check configuration: seconds between queries, failures in a row to roll back."""

    interval: int
    limit: int

    @classmethod
    def parse(cls, text: str) -> Config:
        interval, _, limit = text.partition("x")
        try:
            return cls(int(interval), int(limit))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected INTERVALxLIMIT, e.g. 2x3: {text!r}"
            ) from None

    @property
    def label(self) -> str:
        return f"{self.interval} s x {self.limit}"

    @property
    def floor(self) -> float:
        return float((self.limit - 1) * self.interval)

    @property
    def ceiling(self) -> float:
        return float(self.limit * self.interval)

    def check(self) -> dict[str, Any]:
        return {**ERROR_RATIO, "intervalSeconds": self.interval, "failureLimit": self.limit}


@dataclass(frozen=True)
class Run:
    """One run's figures, seconds (monotonic differences)."""

    total: float  # breach visible in Prometheus -> Deployment back on hello:1
    detect: float  # breach -> the operator's first failing query of the series
    span: float  # first -> failureLimit-th failing query
    overhead: float  # failureLimit-th failing query -> rollback seen in the API
    queries: int  # the operator's queries of v2's check, up to the rollback


# ---------------------------------------------------------------- recording proxy


@dataclass(frozen=True)
class Query:
    """One query the operator made: when its answer came back, what, and the answer."""

    at: float  # monotonic
    promql: str
    measurement: Measurement


class _RecorderServer(ThreadingHTTPServer):
    daemon_threads = True
    recorder: QueryRecorder


class _Handler(BaseHTTPRequestHandler):
    server: _RecorderServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        rec = self.server.recorder
        try:
            with urllib.request.urlopen(rec.upstream + self.path, timeout=10) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            status, body = exc.code, exc.read()
        except OSError as exc:
            self.send_error(502, str(exc))
            return
        rec.record(self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QueryRecorder:
    """A pass-through HTTP proxy to Prometheus that records every instant query."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._server = _RecorderServer(("127.0.0.1", 0), _Handler)
        self._server.recorder = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()
        self._queries: list[Query] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, path: str, body: bytes) -> None:
        at = time.monotonic()
        parsed = urllib.parse.urlsplit(path)
        if parsed.path != "/api/v1/query":
            return
        promql = urllib.parse.parse_qs(parsed.query).get("query", [""])[0]
        try:
            m = measure(json.loads(body))
        except ValueError:
            m = Measurement(None, "not JSON")
        with self._lock:
            self._queries.append(Query(at, promql, m))

    def queries(self, promql: str) -> list[Query]:
        with self._lock:
            return [q for q in self._queries if q.promql == promql]


# ---------------------------------------------------------------- one run


def manifest(image: str, check: dict[str, Any]) -> dict[str, Any]:
    """test_analysis's ``web`` with only the error-ratio check, as configured."""
    doc = web(image)
    doc["spec"]["failover"]["analysis"] = {"checks": [check]}
    return doc


def rolled_out(b: Bench, image: str, replicas: int) -> bool:
    d: Any = b.apps.read_namespaced_deployment(NAME, b.ns)
    return (
        d.spec.template.spec.containers[0].image == image
        and (d.status.observed_generation or 0) >= d.metadata.generation
        and (d.status.updated_replicas or 0) == replicas
    )


def one_run(
    api: client.ApiClient,
    ns: str,
    cfg: Config,
    exporter: SloExporter,
    prom: Prometheus,
    recorder: QueryRecorder,
) -> Run:
    b = Bench(api, ns)
    check = cfg.check()
    model = AnalysisCheck.model_validate(check)
    b.apply(manifest("hello:1", check))
    v1 = desired_revision(api, ns, "hello:1")
    exporter.set(ns, NAME, "primary", v1, rps=20, error_ratio=0.0, latency_seconds=0.02)
    proven(api, ns, v1, timeout=120)

    doc = manifest("hello:2", check)
    b.apply(doc)
    v2 = desired_revision(api, ns, "hello:2")
    until(lambda: rolled_out(b, "hello:2", doc["spec"]["replicas"]), 60, f"{ns} v2 rolled out")
    promql = render_query(model, namespace=ns, name=NAME, track="primary", revision=v2)
    # Breach at a random phase of the operator's query schedule: after its first query of
    # v2 (no data yet: inconclusive), a uniform fraction of an interval later.
    until(lambda: recorder.queries(promql), cfg.interval + 30, f"{ns} first query of v2")
    time.sleep(random.uniform(0, cfg.interval))
    exporter.set(ns, NAME, "primary", v2, rps=20, error_ratio=BAD_RATIO, latency_seconds=0.02)

    def breached() -> bool:
        samples = prom.query(promql)
        value = float(samples[0]["value"][1]) if len(samples) == 1 else None
        return judge(model, Measurement(value))[0] == "Failed"

    t_breach = until(breached, 60, f"{ns} breach visible in Prometheus")
    t_back = until(lambda: b.image(NAME) == "hello:1", cfg.ceiling + 60, f"{ns} rolled back")

    def quarantined() -> bool:
        q = (get_ms(api, ns, NAME).get("status") or {}).get("quarantine") or {}
        return (q.get("revision"), q.get("reason")) == (v2, "AnalysisFailed")

    # The status patch follows the Deployment's in the same reconcile.
    until(quarantined, 10, f"{ns} v2 quarantined for AnalysisFailed")

    seen = [q for q in recorder.queries(promql) if q.at <= t_back]
    # The operator's rule: a pass ends a run of failures, a result without data
    # (inconclusive) neither counts nor ends it.
    streak: list[Query] = []
    for q in seen:
        outcome = judge(model, q.measurement)[0]
        if outcome == "Failed":
            streak = [*streak, q]
        elif outcome == "Passed":
            streak = []
    if len(streak) < cfg.limit:
        raise SystemExit(
            f"{ns}: rolled back after {len(streak)} failing queries in a row, "
            f"fewer than failureLimit={cfg.limit}: {seen!r}"
        )
    first, last = streak[0], streak[cfg.limit - 1]
    return Run(
        total=t_back - t_breach,
        detect=first.at - t_breach,
        span=last.at - first.at,
        overhead=t_back - last.at,
        queries=len(seen),
    )


# ---------------------------------------------------------------- report


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def summary(cfg: Config, runs: list[Run]) -> str:
    totals = [r.total for r in runs]
    per_interval = spread([r.span / (cfg.limit - 1) for r in runs]) if cfg.limit > 1 else "-"
    return (
        f"| {cfg.label} | {len(runs)} | {cfg.floor:.0f} | {cfg.ceiling:.0f} "
        f"| {statistics.median(totals):.2f} | {min(totals):.2f} | {max(totals):.2f} "
        f"| {spread([r.detect for r in runs])} | {per_interval} "
        f"| {spread([r.overhead for r in runs])} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run each configuration --runs times and print a markdown table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--config",
        type=Config.parse,
        action="append",
        help=f"INTERVALxLIMIT, repeatable (default: {' '.join(DEFAULT_CONFIGS)})",
    )
    args = p.parse_args(argv)
    configs: list[Config] = args.config or [Config.parse(c) for c in DEFAULT_CONFIGS]
    kubeconfig = os.environ.get("KUBECONFIG") or str(ROOT / ".localcluster" / "kubeconfig")
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    core = client.CoreV1Api(api)
    uid = uuid.uuid4().hex[:6]
    created: list[str] = []
    results: dict[Config, list[Run]] = {}
    with ExitStack() as stack:

        def cleanup() -> None:
            for ns in created:
                try:
                    core.delete_namespace(ns)
                except client.exceptions.ApiException as exc:
                    if exc.status != 404:
                        raise

        stack.callback(cleanup)
        exporter = stack.enter_context(SloExporter())
        prom = stack.enter_context(Prometheus([exporter.address], interval="1s"))
        prom.wait_for_targets()
        recorder = QueryRecorder(prom.url)
        recorder.start()
        stack.callback(recorder.stop)
        for c, cfg in enumerate(configs):
            namespaces = [f"bench-analysis-{uid}-{c}-{i}" for i in range(args.runs)]
            for ns in namespaces:
                create_namespace(api, ns)
                created.append(ns)
            scope = [a for ns in namespaces for a in ("--namespace", ns)]
            log_dir = Path(tempfile.mkdtemp(prefix="mso-bench-analysis-"))
            op = OperatorProcess(kubeconfig, log_dir, *scope, "--prometheus-url", recorder.url)
            op.start()
            try:
                for i, ns in enumerate(namespaces):
                    run = one_run(api, ns, cfg, exporter, prom, recorder)
                    results.setdefault(cfg, []).append(run)
                    print(
                        f"{cfg.label} run {i + 1}: {run.total:.2f} s (first failing query "
                        f"{run.detect:+.2f} s after the breach, {cfg.limit} in a row over "
                        f"{run.span:.2f} s, overhead {run.overhead:.2f} s, "
                        f"{run.queries} queries)",
                        flush=True,
                    )
            finally:
                op.stop()
    print(f"\n{datetime.now(UTC):%Y-%m-%d} analysis, {args.runs} runs, poll {POLL * 1000:.0f} ms\n")
    print(
        "| interval x failureLimit | runs | floor s | ceiling s | median s | min s | max s "
        "| first failing query after breach s | interval as run s | overhead s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cfg, runs in results.items():
        print(summary(cfg, runs))
    below = [
        (cfg.label, r.total) for cfg, runs in results.items() for r in runs if r.total < cfg.floor
    ]
    if below:
        print(f"\nBELOW THE FLOOR (a rollback before failureLimit intervals): {below}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
