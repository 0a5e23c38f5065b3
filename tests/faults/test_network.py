"""Network faults between two leader-elected replicas and the API server.

Each replica reaches the API server through its own TCP fault proxy on loopback, so
one replica's connection can be blackholed, refused or slowed while the other's is
fine. The proof is on the server side, in its audit log: a write (other than the
Lease's own) by a replica is only ever received while that replica was the last to
write the Lease successfully, i.e. at no moment do both write.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes import client

from tests.faults.audit import describe, event_time, is_success, read_audit
from tests.faults.cluster import apply_all, get_ms, is_ready, microservice
from tests.faults.faultproxy import FaultProxy, kubeconfig_via
from tests.faults.supervise import Fleet, Replica
from tests.integration.helpers import holds_for, wait_for

LEASE = "microservice-operator"
AGENTS = ("replica-a", "replica-b")
RESULTS = Path(__file__).resolve().parents[2] / ".localcluster" / "fault-results"


def upstream(kubeconfig: Path) -> tuple[str, int]:
    cfg = json.loads(kubeconfig.read_text())
    url = urlsplit(cfg["clusters"][0]["cluster"]["server"])
    return url.hostname or "127.0.0.1", url.port or 443


def holder(api: client.ApiClient, namespace: str) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    except client.ApiException:
        return ""
    return str(lease.spec.holder_identity or "")


def agent_of(event: dict[str, Any]) -> str | None:
    ua = event.get("userAgent", "")
    return next((a for a in AGENTS if a in ua), None)


def overlapping_writes(events: list[dict[str, Any]]) -> list[str]:
    """Writes by a replica received when the last successful Lease write was another's."""
    bad = []
    lease_holder: str | None = None
    for ev in sorted(events, key=event_time):
        agent = agent_of(ev)
        if agent is None or not is_success(ev):
            continue
        if (ev.get("objectRef") or {}).get("resource") == "leases":
            lease_holder = agent
        elif agent != lease_holder:
            bad.append(f"{describe(ev)} while {lease_holder} held the Lease")
    return bad


def ready_ms(kubeconfig: Path, api: client.ApiClient, namespace: str, name: str) -> float:
    """Apply a MicroService and return the seconds until it was Ready."""
    t = time.monotonic()
    apply_all(kubeconfig, namespace, [microservice(name, "app:v1")])
    wait_for(
        lambda: is_ready(get_ms(api, namespace, name)),
        timeout=90,
        interval=0.5,
        message=f"{name} Ready",
        ignore=(client.ApiException,),
    )
    return time.monotonic() - t


def test_two_replicas_never_write_at_once_under_blackhole_refusal_and_latency(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    tmp_path: Path,
    local_cluster: object,
) -> None:
    since = datetime.datetime.now(datetime.UTC)
    host, port = upstream(kubeconfig)
    proxies: dict[str, FaultProxy] = {}
    replicas: dict[str, Replica] = {}
    figures: dict[str, float] = {}
    try:
        for ident in AGENTS:
            proxies[ident] = FaultProxy(host, port).start()
            kc = kubeconfig_via(kubeconfig, tmp_path / f"{ident}.kubeconfig", proxies[ident].port)
            replicas[ident] = fleet.add(
                ident,
                "--namespace",
                namespace,
                "--leader-election",
                "--leader-election-namespace",
                namespace,
                kubeconfig=kc,
            )
        a, b = replicas["replica-a"], replicas["replica-b"]
        a.start()
        wait_for(lambda: holder(kube_api, namespace) == "replica-a", timeout=30, message="a leads")
        b.start()
        fleet.supervise()
        ready_ms(kubeconfig, kube_api, namespace, "one")

        def takeover(fault: Any, by: str, fault_name: str, new_ms: str) -> None:
            """Apply the fault to the leader's connection; ``by`` must take over and
            reconcile a new MicroService."""
            t = time.monotonic()
            fault()
            wait_for(
                lambda: holder(kube_api, namespace) == by,
                timeout=45,
                message=f"{by} took over after {fault_name}",
            )
            figures[f"{fault_name}_takeover_s"] = time.monotonic() - t
            figures[f"{fault_name}_new_ms_ready_s"] = ready_ms(
                kubeconfig, kube_api, namespace, new_ms
            )

        # 1. Blackhole the leader: it must stop writing before anyone can take over,
        #    and exit; the other takes over and reconciles.
        takeover(proxies["replica-a"].blackhole, "replica-b", "blackhole", "two")
        wait_for(lambda: 1 in a.exit_codes or a.runs > 1, timeout=30, message="a exited")
        # Heal a's network as a dropped (not delayed) partition: held bytes are lost.
        proxies["replica-a"].refuse()
        proxies["replica-a"].passthrough()
        wait_for(lambda: a.alive() and "Started" in a.log_text(), timeout=60, message="a back")

        # 2. Refuse the new leader's connections: same outcome, the other way round.
        takeover(proxies["replica-b"].refuse, "replica-a", "refused", "three")
        proxies["replica-b"].passthrough()

        # 3. Latency on the leader's connection (0.3 s each way per chunk): slower, but
        #    it keeps renewing within the deadline, so leadership does not flap.
        proxies["replica-a"].latency(0.3)
        transitions = (
            client.CoordinationV1Api(kube_api)
            .read_namespaced_lease(LEASE, namespace)
            .spec.lease_transitions
        )
        figures["latency_new_ms_ready_s"] = ready_ms(kubeconfig, kube_api, namespace, "four")

        def no_flap() -> None:
            lease = client.CoordinationV1Api(kube_api).read_namespaced_lease(LEASE, namespace)
            assert lease.spec.holder_identity == "replica-a"
            assert lease.spec.lease_transitions == transitions

        holds_for(12, no_flap, interval=1)  # longer than the renew deadline
        proxies["replica-a"].passthrough()
    finally:
        fleet.stop_all()
        for p in proxies.values():
            p.stop()

    events = read_audit(since=since)
    # This test's replicas only: other test processes run operators (and Leases) of
    # the same names at the same time, in their own namespaces.
    mine = [
        e
        for e in events
        if agent_of(e) is not None and (e.get("objectRef") or {}).get("namespace") == namespace
    ]
    assert any((e.get("objectRef") or {}).get("resource") != "leases" for e in mine)
    assert overlapping_writes(mine) == []
    writes = {
        ident: len(
            [
                e
                for e in mine
                if agent_of(e) == ident
                and is_success(e)
                and (e.get("objectRef") or {}).get("resource") != "leases"
            ]
        )
        for ident in AGENTS
    }
    assert all(writes.values()), writes  # both led at some point, and both wrote
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures.update({f"writes_{k}": v for k, v in writes.items()}, overlapping_writes=0)
    (RESULTS / "network.json").write_text(json.dumps(figures, indent=2) + "\n")


@pytest.mark.parametrize(
    ("events", "bad"),
    [
        ([("replica-a", "leases", 1), ("replica-a", "deployments", 2)], 0),
        (
            [
                ("replica-a", "leases", 1),
                ("replica-b", "leases", 2),
                ("replica-a", "deployments", 3),
            ],
            1,
        ),
        ([("replica-b", "deployments", 1)], 1),
    ],
)
def test_the_overlap_check_can_fail(events: list[tuple[str, str, int]], bad: int) -> None:
    def ev(agent: str, resource: str, second: int) -> dict[str, Any]:
        return {
            "verb": "update",
            "userAgent": f"microservice-operator/0 ({agent})",
            "objectRef": {"resource": resource},
            "responseStatus": {"code": 200},
            "requestReceivedTimestamp": f"2026-11-29T00:00:{second:02d}.000000Z",
        }

    assert len(overlapping_writes([ev(*e) for e in events])) == bad
