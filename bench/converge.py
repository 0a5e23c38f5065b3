"""Benchmark: N MicroServices to Ready, against the floor of a plain client.

Runs against the cluster in KUBECONFIG (the local control plane by default, see
``make bench``). Two phases in one run, on the same cluster:

1. floor: a plain concurrent client creates the same Deployments and Services the
   operator would render (no operator running) and waits until all are Available;
2. operator: the real operator (console script) runs, N MicroServices are created
   concurrently, and we wait until all report Ready=True.

Reported: wall time to all Ready, API requests per MicroService by verb (from the
operator's own ``mso_kube_requests_total``, which counts every request of the
process, kopf's included; status patches apart from other patches), operator peak
RSS and CPU seconds, and the ratio operator/floor. Extra kwok nodes are added for
the pods and removed after.

``--restart`` adds a third phase: with all N converged and quiet, the operator is
restarted; reported are the seconds until its caches are synced and every
MicroService was reconciled once, and the writes it made meanwhile and in the 30 s
after (a converged fleet must cost none).

    python -m bench.converge --count 200
    python -m bench.converge --count 10000 --no-floor --restart
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

from microservice_operator import render
from microservice_operator.api import MicroServiceSpec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.operator_proc import OperatorProcess  # noqa: E402

SPEC: dict[str, Any] = {
    "image": "bench:1",
    "replicas": 1,
    "ports": [{"containerPort": 8080, "servicePort": 80}],
    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
}


@dataclass
class Result:
    """One phase's figures."""

    name: str
    count: int
    seconds: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    rss_mb: float | None = None
    cpu_s: float | None = None
    writes: int | None = None  # restart phase: writes made
    peak_at_s: float | None = None  # seconds into the phase when RSS was highest
    rss_end_mb: float | None = None  # RSS at the end of the phase
    plans: float | None = None  # reconciles that planned (ran the plan)
    skipped: float | None = None  # reconciles skipped: nothing they read had changed
    events: float | None = None  # watch events received (bookmarks excluded)


class RssTrace:
    """The process's RSS every 0.2 s in a thread: when in a phase the peak came (the
    start-up LISTs, the create wave, a scrape) and what stays afterwards."""

    def __init__(self, op: OperatorProcess) -> None:
        self.op = op
        self.start = time.monotonic()
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            proc = self.op.proc
            if proc is None:
                continue
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            kib = float(line.split()[1])
                            self.samples.append((time.monotonic() - self.start, kib / 1024))
            except OSError:
                continue

    def finish(self, result: Result) -> None:
        """Stop sampling; put the peak's time and the last RSS into ``result``."""
        self._stop.set()
        self._thread.join()
        if self.samples:
            result.peak_at_s = max(self.samples, key=lambda s: s[1])[0]
            result.rss_end_mb = self.samples[-1][1]


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, every: float = 1.0
) -> None:
    """Poll every ``every`` seconds until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def add_nodes(api: client.ApiClient, count: int, prefix: str) -> list[str]:
    """kwok nodes with room for many small pods, so the benchmark is not capacity-bound."""
    core = client.CoreV1Api(api)
    names = []
    for i in range(count):
        name = f"{prefix}-{i}"
        core.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {"type": "kwok", "mso.dev/bench": "true"},
                },
                "status": {
                    "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
                    "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "1000"},
                },
            }
        )
        names.append(name)
    return names


def create_namespace(api: client.ApiClient, name: str) -> None:
    """A namespace, once its default ServiceAccount exists (pods need it)."""
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})

    def has_sa() -> bool:
        return any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        )

    wait_until(has_sa, 60, f"default ServiceAccount in {name}")


def delete_namespace(api: client.ApiClient, name: str) -> None:
    """Delete a namespace and wait until it is gone: the garbage collection of
    thousands of objects loads the control plane, and must not overlap the next phase."""
    core = client.CoreV1Api(api)
    core.delete_namespace(name)

    def gone() -> bool:
        return name not in {n.metadata.name for n in core.list_namespace().items}

    wait_until(gone, 1800, f"namespace {name} deleted", every=2.0)


def floor(api: client.ApiClient, count: int, workers: int) -> Result:
    """The same children created by a plain client, no operator."""
    ns = f"bench-floor-{uuid.uuid4().hex[:6]}"
    create_namespace(api, ns)
    spec = MicroServiceSpec.model_validate(SPEC)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    result = Result("floor (plain client)", count)
    want = spec.replicas or 1  # the same pods as the operator's: --replicas each

    def create(i: int) -> None:
        owner = render.Owner(name=f"svc-{i}", namespace=ns, uid="")
        dep = render.build_deployment(owner, spec, replicas=want)
        svc = render.build_service(owner, spec)
        for obj in (dep, svc):
            obj["metadata"].pop("ownerReferences", None)  # no owner exists in the floor
        apps.create_namespaced_deployment(ns, dep)
        core.create_namespaced_service(ns, svc)

    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, range(count)))
    result.requests["create"] = 2 * count

    def available() -> bool:
        result.requests["list"] += 1
        deps = apps.list_namespaced_deployment(ns).items
        # What the operator's Ready asks of a Deployment: rolled out, every replica
        # ready and available.
        return len(deps) == count and all(
            (d.status.updated_replicas or 0) == want
            and (d.status.ready_replicas or 0) == want
            and (d.status.available_replicas or 0) == want
            for d in deps
        )

    wait_until(available, 1800, f"{count} floor Deployments Available")
    result.seconds = time.monotonic() - start
    delete_namespace(api, ns)
    return result


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a process, from /proc."""
    rss_kb = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                rss_kb = float(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / ticks
    return rss_kb / 1024, cpu


ALL_VERBS = ("get", "list", "watch", "create", "patch", "apply", "delete", "update")
WRITES = ("create", "patch", "apply", "delete", "update")


def column(verb: str, resource: str) -> str:
    """The table column of a request: status patches apart from other patches."""
    return "status" if (verb, resource) == ("patch", "microservices") else verb


def scrape_total(op: OperatorProcess, name: str) -> float:
    return sum(v for (n, _), v in op.scrape().items() if n == name)


def count_reconciles(op: OperatorProcess, result: Result) -> None:
    """How often the operator planned, and skipped planning, so far (a fresh process:
    every phase starts one)."""
    result.plans = scrape_total(op, "mso_reconcile_duration_seconds_count")
    result.skipped = scrape_total(op, "mso_reconciles_skipped_total")
    result.events = sum(
        v
        for (n, labels), v in op.scrape().items()
        if n == "mso_watch_events_total" and ("type", "BOOKMARK") not in labels
    )


def with_operator(
    api: client.ApiClient, kubeconfig: str, count: int, workers: int, restart: Result | None
) -> Result:
    """N MicroServices through the real operator (and its restart, if asked)."""
    ns = f"bench-op-{uuid.uuid4().hex[:6]}"
    create_namespace(api, ns)
    result = Result("operator", count)
    op = OperatorProcess(kubeconfig, Path(tempfile.mkdtemp(prefix="mso-bench-")))
    op.start()
    try:
        assert op.proc is not None
        base = op.requests(verbs=ALL_VERBS)
        custom = client.CustomObjectsApi(api)
        trace = RssTrace(op)

        def create(i: int) -> None:
            custom.create_namespaced_custom_object(
                "mso.dev",
                "v1alpha1",
                ns,
                "microservices",
                {
                    "apiVersion": "mso.dev/v1alpha1",
                    "kind": "MicroService",
                    "metadata": {"name": f"svc-{i}"},
                    "spec": SPEC,
                },
            )

        start = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(create, range(count)))

        def all_ready() -> bool:
            items = custom.list_namespaced_custom_object(
                "mso.dev", "v1alpha1", ns, "microservices"
            )["items"]
            ready = 0
            for ms in items:
                for c in (ms.get("status") or {}).get("conditions") or []:
                    if c["type"] == "Ready" and c["status"] == "True":
                        ready += 1
            return ready == count

        # Listing all N each poll loads the API server too: poll less often at scale.
        wait_until(all_ready, 3600, f"{count} MicroServices Ready", every=max(1.0, count / 2000))
        result.seconds = time.monotonic() - start
        after = op.requests(verbs=ALL_VERBS)
        for (verb, res), value in after.items():
            result.requests[column(verb, res)] += int(value - base.get((verb, res), 0))
        result.rss_mb, result.cpu_s = proc_stats(op.proc.pid)
        count_reconciles(op, result)
        trace.finish(result)
        if restart is not None:
            restarted(op, count, restart)
        # Now, not only at the end: deleting thousands of objects takes minutes.
        print(table([result, *([restart] if restart else [])]), flush=True)
    finally:
        op.stop()
        delete_namespace(api, ns)
    return result


def restarted(op: OperatorProcess, count: int, result: Result) -> None:
    """Restart the operator over ``count`` converged MicroServices: seconds until
    synced and each reconciled once, the requests and the writes it made."""

    def quiet() -> bool:  # no write for 10 s: the fleet is converged
        before = sum(op.requests(verbs=WRITES).values())
        time.sleep(10)
        return sum(op.requests(verbs=WRITES).values()) == before

    wait_until(quiet, 600, "no writes for 10 s before the restart")
    op.stop()
    start = time.monotonic()
    trace = RssTrace(op)  # from the start: the LISTs of every kind are in the peak
    op.start(timeout=600)  # returns once the caches are synced ("Started ..." logged)

    def all_reconciled() -> bool:
        done = scrape_total(op, "mso_reconcile_duration_seconds_count")
        return done + scrape_total(op, "mso_reconciles_skipped_total") >= count

    wait_until(all_reconciled, 600, f"{count} MicroServices reconciled after the restart")
    result.seconds = time.monotonic() - start
    time.sleep(30)  # and nothing happens after it either
    for (verb, res), value in op.requests(verbs=ALL_VERBS).items():
        result.requests[column(verb, res)] += int(value)
    result.writes = int(sum(op.requests(verbs=WRITES).values()))
    assert op.proc is not None
    result.rss_mb, result.cpu_s = proc_stats(op.proc.pid)
    count_reconciles(op, result)
    trace.finish(result)


def table(results: list[Result]) -> str:
    """A markdown table of the results plus the operator/floor ratio."""
    verbs = sorted({v for r in results for v in r.requests})
    head = [
        "phase",
        "N",
        "seconds",
        *[f"{v}/N" for v in verbs],
        "writes",
        "plans/N",
        "skipped/N",
        "events/N",
        "peak RSS MiB",
        "peak at s",
        "RSS at end MiB",
        "CPU s",
        "CPU ms/N",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r.name, str(r.count), f"{r.seconds:.1f}"]
        row += [f"{r.requests.get(v, 0) / r.count:.2f}" for v in verbs]
        row += ["-" if r.writes is None else str(r.writes)]
        row += ["-" if r.plans is None else f"{r.plans / r.count:.2f}"]
        row += ["-" if r.skipped is None else f"{r.skipped / r.count:.2f}"]
        row += ["-" if r.events is None else f"{r.events / r.count:.1f}"]
        row += [f"{r.rss_mb:.0f}" if r.rss_mb else "-"]
        row += ["-" if r.peak_at_s is None else f"{r.peak_at_s:.0f}"]
        row += ["-" if r.rss_end_mb is None else f"{r.rss_end_mb:.0f}"]
        row += [f"{r.cpu_s:.1f}" if r.cpu_s else "-"]
        row += [f"{1000 * r.cpu_s / r.count:.1f}" if r.cpu_s else "-"]
        lines.append("| " + " | ".join(row) + " |")
    by_name = {r.name: r for r in results}
    floor_r, op_r = by_name.get("floor (plain client)"), by_name.get("operator")
    if floor_r is not None and op_r is not None and floor_r.seconds:
        lines.append(f"\nratio operator/floor (time): {op_r.seconds / floor_r.seconds:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both phases and print the table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=200, help="MicroServices to create (default 200)")
    p.add_argument("--workers", type=int, default=16, help="concurrent creating clients")
    p.add_argument("--replicas", type=int, default=1, help="pods per MicroService (default 1)")
    p.add_argument("--no-floor", action="store_true", help="skip the plain-client phase")
    p.add_argument(
        "--restart", action="store_true", help="then restart the operator over the converged fleet"
    )
    args = p.parse_args(argv)
    SPEC["replicas"] = args.replicas
    kubeconfig = os.environ.get("KUBECONFIG") or str(ROOT / ".localcluster" / "kubeconfig")
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    subprocess.run(
        [
            str(Path(sys.executable).with_name("kubectl")),
            f"--kubeconfig={kubeconfig}",
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(ROOT / "crds"),
        ],
        check=True,
        capture_output=True,
    )
    pods = args.count * args.replicas
    nodes = add_nodes(api, max(1, pods // 500 + 1), f"bench-{uuid.uuid4().hex[:4]}")
    try:
        results = [] if args.no_floor else [floor(api, args.count, args.workers)]
        restart = Result("operator restarted", args.count) if args.restart else None
        results.append(with_operator(api, kubeconfig, args.count, args.workers, restart))
        if restart is not None:
            results.append(restart)
    finally:
        for n in nodes:
            client.CoreV1Api(api).delete_node(n)
    print(f"\n{datetime.now(UTC):%Y-%m-%d} converge, N={args.count} x {args.replicas} pods\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
