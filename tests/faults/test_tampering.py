"""Status wiped or forged, and a write failing after a rollback decision.

Status is a report: wiping it (a backup restore, a careless patch) must not send
traffic back to a sick primary or re-deploy a quarantined revision, and forging it
must not make any pod run another image. Decisions live where tenants cannot write
(ControllerRevisions) and are recorded before the writes that carry them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.faults.cluster import (
    apply_all,
    condition,
    decision_events,
    get_ms,
    images,
    microservice,
    pod_images,
    quarantine_records,
)
from tests.faults.supervise import Fleet
from tests.integration.helpers import holds_for, wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.test_failover import all_ready, pods, set_ready

FAILOVER: dict[str, Any] = {
    "progressDeadlineSeconds": 30,
    "unhealthyThreshold": 2,
    "minHealthyRatio": 0.6,
    "failoverAfterSeconds": 3,
    "failbackAfterSeconds": 10,
    "podUnhealthySeconds": 0,
}


def web(image: str, **extra: Any) -> dict[str, Any]:
    return microservice("web", image, replicas=3, **{**FAILOVER, **extra})


def patch_web_status(kubeconfig: Path, namespace: str, kind: str, patch: Any) -> None:
    """Patch the status subresource as a user allowed to would (kubectl)."""
    kubectl(
        kubeconfig,
        "patch",
        "-n",
        namespace,
        "microservices.mso.dev",
        "web",
        "--subresource=status",
        f"--type={kind}",
        "-p",
        json.dumps(patch),
    )


def wipe_status(kubeconfig: Path, namespace: str) -> None:
    patch_web_status(kubeconfig, namespace, "json", [{"op": "remove", "path": "/status"}])


def patch_status(kubeconfig: Path, namespace: str, status: dict[str, Any]) -> None:
    patch_web_status(kubeconfig, namespace, "merge", {"status": status})


def selector_track(api: client.ApiClient, namespace: str) -> str:
    svc = client.CoreV1Api(api).read_namespaced_service("web", namespace)
    return str(svc.spec.selector.get("mso.dev/track"))


def rolled_back(kubeconfig: Path, api: client.ApiClient, namespace: str) -> str:
    """A Ready v1, then a crash-looping v2 rolled back; returns the bad revision."""
    apply_all(kubeconfig, namespace, [web("hello:1")])
    wait_for(lambda: all_ready(api, namespace, "app.kubernetes.io/instance=web", 3), timeout=60)
    wait_for(
        lambda: get_ms(api, namespace, "web").get("status", {}).get("lastKnownGoodRevision"),
        timeout=60,
        message="v1 proven",
    )
    apply_all(kubeconfig, namespace, [web("hello:crashloop")])
    ms = wait_for(
        lambda: (
            (m := get_ms(api, namespace, "web")).get("status", {}).get("quarantinedRevision") and m
        ),
        timeout=90,
        message="v2 quarantined",
    )
    wait_for(lambda: images(api, namespace).get("web") == "hello:1", timeout=30)
    return str(ms["status"]["quarantinedRevision"])


def test_wiped_status_while_failed_over_keeps_traffic_on_the_standby(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    fleet.add("op", "--namespace", namespace).start()
    # Two warm standby pods: enough to take the traffic of three at once, so the switch
    # does not wait for new pods to start (slow under a loaded kwok).
    apply_all(kubeconfig, namespace, [web("hello:1", standby={"replicas": 2})])
    wait_for(
        lambda: all_ready(
            kube_api, namespace, "app.kubernetes.io/instance=web,mso.dev/track=standby", 2
        ),
        timeout=60,
        message="warm standby",
    )
    # A healthy primary made sick: kwok's unready stage acts on Ready pods only.
    wait_for(
        lambda: all_ready(
            kube_api, namespace, "app.kubernetes.io/instance=web,mso.dev/track=primary", 3
        ),
        timeout=60,
        message="a ready primary",
    )
    primary = [
        p.metadata.name
        for p in pods(kube_api, namespace, "app.kubernetes.io/instance=web,mso.dev/track=primary")
    ]
    set_ready(kube_api, namespace, primary[:2], False)
    wait_for(
        lambda: selector_track(kube_api, namespace) == "standby",
        timeout=60,
        message="traffic on the standby",
    )

    wipe_status(kubeconfig, namespace)

    def on_standby() -> None:
        assert selector_track(kube_api, namespace) == "standby"

    holds_for(15, on_standby)  # longer than failbackAfterSeconds
    ms = get_ms(kube_api, namespace, "web")
    assert ms["status"]["activeTrack"] == "standby"  # reported again, from the Service
    assert [e for e in decision_events(kube_api, namespace) if "FailedBack" in e] == []


def test_wiped_status_while_quarantined_does_not_redeploy_the_bad_revision(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    fleet.add("op", "--namespace", namespace).start()
    bad = rolled_back(kubeconfig, kube_api, namespace)
    generation = client.AppsV1Api(kube_api).read_namespaced_deployment("web", namespace)
    generation = generation.metadata.generation

    wipe_status(kubeconfig, namespace)

    def still_v1() -> None:
        dep = client.AppsV1Api(kube_api).read_namespaced_deployment("web", namespace)
        assert dep.spec.template.spec.containers[0].image == "hello:1"
        assert dep.metadata.generation == generation

    holds_for(10, still_v1)
    ms = wait_for(
        lambda: (
            (m := get_ms(kube_api, namespace, "web")).get("status", {}).get("quarantinedRevision")
            and m
        ),
        timeout=30,
        message="quarantine reported again",
    )
    assert ms["status"]["quarantinedRevision"] == bad
    assert len([e for e in decision_events(kube_api, namespace) if e.startswith("RolledBack")]) == 1


def test_forged_status_never_runs_the_forged_image(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    """Someone allowed to patch microservices/status claims the desired revision is
    quarantined and that the last known good runs another image (and ServiceAccount)."""
    fleet.add("op", "--namespace", namespace).start()
    apply_all(kubeconfig, namespace, [web("hello:1")])
    ms = wait_for(
        lambda: (
            (m := get_ms(kube_api, namespace, "web")).get("status", {}).get("lastKnownGoodRevision")
            and m
        ),
        timeout=60,
        message="v1 proven",
    )
    rev = ms["status"]["currentRevision"]
    forged = {
        "quarantinedRevision": rev,
        "quarantine": {
            "revision": rev,
            "image": "hello:1",
            "reason": "CrashLoop",
            "time": "2026-01-01T00:00:00Z",
            "generation": 1,
        },
        "lastKnownGoodRevision": "f0f0f0f0f0",
        "lastKnownGood": {
            "revision": "f0f0f0f0f0",
            "image": "evil:latest",
            "spec": {"image": "evil:latest", "podTemplate": {"serviceAccountName": "admin"}},
        },
        "failoverState": {"revisionSince": "2000-01-01T00:00:00Z"},
    }
    patch_status(kubeconfig, namespace, forged)
    # A spec change while the forgery stands: a new revision with a forged, ancient
    # revisionSince must not be judged overdue either.
    apply_all(kubeconfig, namespace, [web("hello:2")])

    def clean() -> None:
        assert "evil:latest" not in pod_images(kube_api, namespace)
        assert "evil:latest" not in images(kube_api, namespace).values()

    holds_for(15, clean)
    wait_for(lambda: images(kube_api, namespace).get("web") == "hello:2", timeout=30)
    assert decision_events(kube_api, namespace) == []
    assert quarantine_records(kube_api, namespace) == []


DENY_V1 = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [apps]
        apiVersions: [v1]
        operations: [UPDATE]
        resources: [deployments]
  validations:
    - expression: "object.spec.template.spec.containers[0].image != 'hello:1'"
      message: "test: writes that roll back to hello:1 are refused"
      reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"""


def test_a_failed_write_after_the_rollback_decision_keeps_the_quarantine(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    fleet: Fleet,
    local_cluster: object,
) -> None:
    """The rollback's own Deployment write is refused (an admission policy), several
    times. The quarantine must be in the cluster already, survive the failures, and
    the rollback must happen once the write goes through: no bad/good loop."""
    fleet.add("op", "--namespace", namespace).start()
    apply_all(kubeconfig, namespace, [web("hello:1")])
    wait_for(
        lambda: get_ms(kube_api, namespace, "web").get("status", {}).get("lastKnownGoodRevision"),
        timeout=60,
        message="v1 proven",
    )
    name = f"deny-rollback-{namespace}"
    policy = DENY_V1.format(name=name, namespace=namespace)
    kubectl(kubeconfig, "apply", "-f", "-", input=policy)
    apps = client.AppsV1Api(kube_api)

    def policy_in_force() -> bool:
        """A policy takes effect some time after it is created: a server-side dry run
        of an update that keeps hello:1 is refused once it does."""
        touch = {"metadata": {"annotations": {"tests.mso.dev/probe": "1"}}}
        try:
            apps.patch_namespaced_deployment("web", namespace, touch, dry_run="All")
        except client.ApiException as exc:
            return "writes that roll back to hello:1 are refused" in str(exc.body)
        return False

    try:
        wait_for(policy_in_force, timeout=30, interval=0.5, message="the policy in force")
        apply_all(kubeconfig, namespace, [web("hello:crashloop")])
        wait_for(
            lambda: quarantine_records(kube_api, namespace),
            timeout=90,
            message="quarantine recorded before the refused rollback",
        )
        ms = wait_for(
            lambda: (
                (m := get_ms(kube_api, namespace, "web"))
                and (c := condition(m, "Ready"))
                and c["reason"] == "ApiError"
                and m
            ),
            timeout=30,
            message="the refused write reported",
        )
        assert "refused" in condition(ms, "Ready")["message"]  # type: ignore[index]

        def refused() -> None:  # over a few more refused retries
            assert images(kube_api, namespace)["web"] == "hello:crashloop"

        holds_for(5, refused)
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            kubectl(kubeconfig, "delete", kind, name, "--ignore-not-found")
    wait_for(lambda: images(kube_api, namespace).get("web") == "hello:1", timeout=90)
    records = quarantine_records(kube_api, namespace)
    assert len(records) == 1

    def no_loop() -> None:
        assert images(kube_api, namespace)["web"] == "hello:1"

    holds_for(10, no_loop)
    ms = get_ms(kube_api, namespace, "web")
    assert condition(ms, "RolledBack")["status"] == "True"  # type: ignore[index]
    # One Event, when the rollback really happened (not when it was refused).
    rolled = [e for e in decision_events(kube_api, namespace) if e.startswith("RolledBack")]
    assert len(rolled) == 1, rolled
