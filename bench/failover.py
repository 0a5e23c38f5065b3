"""Benchmark: how fast failover acts once a problem is detectable.

Against the cluster in KUBECONFIG (the local control plane by default), with the real
operator running, repeated ``--runs`` times:

- crash loop: time from the first pod of a bad release crossing
  ``unhealthyThreshold`` restarts (the moment it is detectable in the API) to the
  Deployment's template being back on the last known good image;
- deadline: an ``unready`` release with ``progressDeadlineSeconds``; time from the
  deadline passing to the rollback applied;
- standby: time from the primary's ready ratio falling below ``minHealthyRatio`` to
  the Service selecting the standby, against ``failoverAfterSeconds``;
- image error: a release whose image cannot be pulled (kwok's ``:pullerror``); time
  from the first pod of it waiting on the error to the rollback applied, against
  ``imageErrorGraceSeconds`` (the progress deadline stays at 300 s).

The cluster is polled every 50 ms, so figures carry that resolution.

    python -m bench.failover --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.operator_proc import OperatorProcess  # noqa: E402

from bench.converge import create_namespace  # noqa: E402

POLL = 0.05
THRESHOLD = 2
DEADLINE = 10
FAILOVER_AFTER = 5
IMAGE_GRACE = 10
SCENARIOS = ("crashloop", "deadline", "standby", "imageerror")


def until(predicate: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll every POLL seconds; returns the monotonic time the predicate first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(POLL)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def ms(name: str, image: str, **failover: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "replicas": 3,
            "service": {"enabled": True},
            "ports": [{"containerPort": 8080, "servicePort": 80}],
            "failover": failover,
        },
    }


class Bench:
    """Helpers bound to one API client and namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    def apply(self, doc: dict[str, Any]) -> None:
        name = doc["metadata"]["name"]
        try:
            cur = self.custom.get_namespaced_custom_object(
                "mso.dev", "v1alpha1", self.ns, "microservices", name
            )
            cur["spec"] = doc["spec"]
            self.custom.replace_namespaced_custom_object(
                "mso.dev", "v1alpha1", self.ns, "microservices", name, cur
            )
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise
            self.custom.create_namespaced_custom_object(
                "mso.dev", "v1alpha1", self.ns, "microservices", doc
            )

    def ready(self, name: str) -> bool:
        obj = self.custom.get_namespaced_custom_object(
            "mso.dev", "v1alpha1", self.ns, "microservices", name
        )
        st = obj.get("status") or {}
        return st.get("observedGeneration") == obj["metadata"]["generation"] and any(
            c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []
        )

    def image(self, name: str) -> str:
        d = self.apps.read_namespaced_deployment(name, self.ns)
        return str(d.spec.template.spec.containers[0].image)

    def pods(self, name: str, track: str = "primary") -> list[Any]:
        sel = f"app.kubernetes.io/instance={name},mso.dev/track={track}"
        return list(self.core.list_namespaced_pod(self.ns, label_selector=sel).items)


def crashloop_run(b: Bench, i: int) -> float:
    name = f"crash-{i}"
    b.apply(ms(name, "bench:1", unhealthyThreshold=THRESHOLD, progressDeadlineSeconds=600))
    until(lambda: b.ready(name), 120, f"{name} Ready")
    b.apply(ms(name, "bench:crashloop", unhealthyThreshold=THRESHOLD, progressDeadlineSeconds=600))

    def detectable() -> bool:
        for p in b.pods(name):
            for cs in p.status.container_statuses or []:
                if cs.image.endswith(":crashloop") and cs.restart_count >= THRESHOLD:
                    return True
        return False

    t_detect = until(detectable, 120, f"{name} crash loop detectable")
    t_back = until(lambda: b.image(name) == "bench:1", 120, f"{name} rolled back")
    return max(0.0, t_back - t_detect)


def deadline_run(b: Bench, i: int) -> float:
    name = f"deadline-{i}"
    b.apply(ms(name, "bench:1", progressDeadlineSeconds=DEADLINE))
    until(lambda: b.ready(name), 120, f"{name} Ready")
    t_update = time.monotonic()
    b.apply(ms(name, "bench:unready", progressDeadlineSeconds=DEADLINE))
    until(lambda: b.image(name) == "bench:unready", 60, f"{name} rolling out the bad release")
    t_back = until(lambda: b.image(name) == "bench:1", 120, f"{name} rolled back")
    return t_back - (t_update + DEADLINE)


def standby_run(b: Bench, i: int) -> float:
    name = f"standby-{i}"
    fo = {
        "minHealthyRatio": 0.6,
        "failoverAfterSeconds": FAILOVER_AFTER,
        "failbackAfterSeconds": 600,
        "podUnhealthySeconds": 0,
        "standby": {"replicas": 3},
    }
    b.apply(ms(name, "bench:1", **fo))
    until(lambda: b.ready(name), 120, f"{name} Ready")
    until(
        lambda: (
            sum(
                1
                for p in b.pods(name, "standby")
                if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            )
            == 3
        ),
        120,
        f"{name} standby Ready",
    )
    for p in b.pods(name)[:2]:
        b.core.patch_namespaced_pod(
            p.metadata.name, b.ns, {"metadata": {"annotations": {"mso.dev/test-ready": "false"}}}
        )

    def below() -> bool:
        ready = sum(
            1
            for p in b.pods(name)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )
        return ready / 3 < 0.6

    t_below = until(below, 60, f"{name} primary below threshold")
    t_switch = until(
        lambda: (
            b.core.read_namespaced_service(name, b.ns).spec.selector.get("mso.dev/track")
            == "standby"
        ),
        120,
        f"{name} switched",
    )
    return t_switch - t_below


def imageerror_run(b: Bench, i: int) -> float:
    name = f"pull-{i}"
    b.apply(ms(name, "bench:1", imageErrorGraceSeconds=IMAGE_GRACE, progressDeadlineSeconds=300))
    until(lambda: b.ready(name), 120, f"{name} Ready")
    b.apply(
        ms(name, "bench:pullerror", imageErrorGraceSeconds=IMAGE_GRACE, progressDeadlineSeconds=300)
    )

    def waiting() -> bool:
        for p in b.pods(name):
            for cs in p.status.container_statuses or []:
                reason = cs.state.waiting.reason if cs.state and cs.state.waiting else None
                if cs.image.endswith(":pullerror") and reason:
                    return True
        return False

    t_error = until(waiting, 60, f"{name} waiting on the image error")
    t_back = until(lambda: b.image(name) == "bench:1", 120, f"{name} rolled back")
    return t_back - t_error


def summary(label: str, values: list[float], reference: str) -> str:
    return (
        f"| {label} | {len(values)} | {statistics.median(values):.2f} | {max(values):.2f} "
        f"| {reference} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run each scenario --runs times and print median/max."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--only", choices=SCENARIOS, action="append", help="Run only these.")
    args = p.parse_args(argv)
    kubeconfig = os.environ.get("KUBECONFIG") or str(ROOT / ".localcluster" / "kubeconfig")
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    ns = f"bench-failover-{uuid.uuid4().hex[:6]}"
    create_namespace(api, ns)
    op = OperatorProcess(kubeconfig, Path(tempfile.mkdtemp(prefix="mso-bench-")), "--namespace", ns)
    op.start()
    b = Bench(api, ns)
    wanted = set(args.only or SCENARIOS)
    runs = range(args.runs)
    try:
        crash = [crashloop_run(b, i) for i in runs] if "crashloop" in wanted else []
        dead = [deadline_run(b, i) for i in runs] if "deadline" in wanted else []
        switch = [standby_run(b, i) for i in runs] if "standby" in wanted else []
        pull = [imageerror_run(b, i) for i in runs] if "imageerror" in wanted else []
    finally:
        op.stop()
        client.CoreV1Api(api).delete_namespace(ns)
    print(f"\n{datetime.now(UTC):%Y-%m-%d} failover, {args.runs} runs, poll {POLL * 1000:.0f} ms\n")
    print("| measurement | runs | median s | max s | configured |")
    print("|---|---|---|---|---|")
    rows = [
        ("crash loop detectable -> rollback applied", crash, f"unhealthyThreshold={THRESHOLD}"),
        ("deadline passed -> rollback applied", dead, f"progressDeadlineSeconds={DEADLINE}"),
        (
            "primary below threshold -> Service on standby",
            switch,
            f"failoverAfterSeconds={FAILOVER_AFTER}",
        ),
        (
            "image error seen -> rollback applied",
            pull,
            f"imageErrorGraceSeconds={IMAGE_GRACE}",
        ),
    ]
    for label, values, reference in rows:
        if values:
            print(summary(label, values, reference))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
