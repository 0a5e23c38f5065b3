"""SIGKILL the operator again and again while a fleet is created and then rolled out.

The failure this guards against: a restarted operator whose pod cache still held a
pod deleted while it was down judged finished rollouts as in progress, and rolled
healthy releases back at the progress deadline. Every assertion reads the cluster:
children counted by owner, images of the Deployments, Events and quarantine records.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from kubernetes import client

from tests.faults.cluster import (
    apply_all,
    children_report,
    decision_events,
    images,
    microservice,
    not_ready,
    quarantine_records,
)
from tests.faults.supervise import Fleet, Replica
from tests.integration.helpers import wait_for

FLEET = 200
KILLS_PER_PHASE = 10
DEADLINE = 180  # progress deadline: longer than a real rollout of the fleet here (up to
# 107 s seen under the full parallel suite), and short enough that a false rollback (a
# phantom pod in the cache) shows within the test
RESULTS = Path(__file__).resolve().parents[2] / ".localcluster" / "fault-results"


class Killer:
    """SIGKILLs the replica at random moments and starts it again at once."""

    def __init__(self, replica: Replica, seed: int) -> None:
        self.replica = replica
        self.random = random.Random(seed)
        self.kills = 0
        self.last_restart = time.monotonic()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self, kills: int) -> None:
        try:
            for _ in range(kills):
                # Sometimes in the middle of start-up (listing), mostly while working.
                if self.stop.wait(self.random.uniform(0.3, 4.0)):
                    return
                self.replica.kill()
                self.kills += 1
                self.replica.start(wait=False)
                self.last_restart = time.monotonic()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def start(self, kills: int) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(kills,), daemon=True)
        t.start()
        return t


def test_sigkills_during_fleet_create_and_rollout_make_no_false_decisions(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    op = fleet.add("killed", "--namespace", namespace)
    op.start()
    killer = Killer(op, seed=int(time.time()))
    names = [f"svc-{i:03d}" for i in range(FLEET)]
    failover = {"progressDeadlineSeconds": DEADLINE}
    figures: dict[str, float] = {}

    # Phase 1: create the fleet while the operator is killed.
    t0 = time.monotonic()
    thread = killer.start(KILLS_PER_PHASE)
    apply_all(kubeconfig, namespace, [microservice(n, "app:v1", **failover) for n in names])
    thread.join(timeout=120)
    assert not thread.is_alive(), "the killer is still killing"
    assert killer.error is None, killer.error
    op.wait_started()
    wait_for(
        lambda: not not_ready(kube_api, namespace),
        timeout=240,
        interval=2,
        message="all v1 MicroServices Ready",
    )
    figures["create_ready_after_last_kill_s"] = time.monotonic() - killer.last_restart
    figures["create_total_s"] = time.monotonic() - t0

    # Phase 2: roll every MicroService to v2 while the operator is killed.
    t1 = time.monotonic()
    thread = killer.start(KILLS_PER_PHASE)
    apply_all(kubeconfig, namespace, [microservice(n, "app:v2", **failover) for n in names])
    thread.join(timeout=120)
    assert not thread.is_alive(), "the killer is still killing"
    assert killer.error is None, killer.error
    op.wait_started()
    last_kill = killer.last_restart
    wait_for(
        lambda: (
            not not_ready(kube_api, namespace)
            and set(images(kube_api, namespace).values()) == {"app:v2"}
        ),
        timeout=240,
        interval=2,
        message="all MicroServices Ready on v2",
    )
    figures["rollout_ready_after_last_kill_s"] = time.monotonic() - last_kill
    figures["rollout_total_s"] = time.monotonic() - t1

    # Stay past the progress deadline of the last rollouts: a stale cache would
    # roll healthy releases back now.
    remaining = DEADLINE + 5 - (time.monotonic() - t1)
    if remaining > 0:
        time.sleep(remaining)  # observation window: nothing may happen in it

    assert killer.kills == 2 * KILLS_PER_PHASE
    assert decision_events(kube_api, namespace) == []
    assert quarantine_records(kube_api, namespace) == []
    problems = children_report(kube_api, namespace)
    assert problems == {"missing": [], "duplicate": [], "orphan": []}, problems
    assert set(images(kube_api, namespace).values()) == {"app:v2"}
    assert len(images(kube_api, namespace)) == FLEET
    assert not_ready(kube_api, namespace) == []

    RESULTS.mkdir(parents=True, exist_ok=True)
    figures.update(kills=killer.kills, microservices=FLEET, false_decisions=0)
    (RESULTS / "kills.json").write_text(json.dumps(figures, indent=2) + "\n")
