"""The reconciler against a real API server: the product's core promise.

One MicroService applied with kubectl becomes a Deployment, Service, HPA and PDB,
and stays that way: drift is reverted, deleted children come back, the HPA owns the
replica count when autoscaling is on, bad input is reported instead of retried, and
a converged MicroService costs no writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.fixtures import WORKER_SELECTOR
from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import REPO, kubectl
from tests.integration.operator_proc import OperatorProcess

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "mso.dev", "v1alpha1", "microservices"


# ----------------------------------------------------------------------------- helpers


def apply_ms(kubeconfig: Path, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def sample(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "manifests" / "samples" / name).read_text())
    return doc


def get_ms(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def cond(ms: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (ms.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return None


def wait_condition(
    api: client.ApiClient,
    namespace: str,
    name: str,
    ctype: str,
    *,
    status: str | None = None,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Wait until the MicroService has a ``ctype`` condition with that status and/or
    reason; returns the MicroService as read then."""

    def matches() -> dict[str, Any] | None:
        ms = get_ms(api, namespace, name)
        c = cond(ms, ctype)
        ok = c is not None and status in (None, c["status"]) and reason in (None, c["reason"])
        return ms if ok else None

    wanted = ", ".join(f"{k}={v}" for k, v in (("status", status), ("reason", reason)) if v)
    return wait_for(matches, timeout=timeout, message=f"{namespace}/{name} {ctype} {wanted}")


def wait_ready(
    api: client.ApiClient, namespace: str, name: str, timeout: float = 90
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        ms = get_ms(api, namespace, name)
        c = cond(ms, "Ready")
        gen_ok = (ms.get("status") or {}).get("observedGeneration") == ms["metadata"]["generation"]
        return ms if c and c["status"] == "True" and gen_ok else None

    return wait_for(ready, timeout=timeout, message=f"MicroService {namespace}/{name} Ready")


def wait_settled(api: client.ApiClient, namespace: str, name: str) -> None:
    """Wait until the MicroService's resourceVersion holds still over two reads."""
    seen: list[str] = []

    def still() -> bool:
        seen.append(get_ms(api, namespace, name)["metadata"]["resourceVersion"])
        return len(seen) > 1 and seen[-1] == seen[-2]

    wait_for(still, timeout=60, interval=2, message=f"{namespace}/{name} settled")


def wait_quiet(api: client.ApiClient, namespace: str) -> None:
    """Wait until this test process's other namespaces are gone, so their teardown
    (MicroServices in terminating namespaces) adds no requests to a quiet-period
    measurement. Other processes' namespaces are not this operator's."""

    def others_gone() -> bool:
        items = (
            client.CoreV1Api(api)
            .list_namespace(label_selector=f"app.kubernetes.io/managed-by=pytest,{WORKER_SELECTOR}")
            .items
        )
        return all(ns.metadata.name == namespace for ns in items)

    wait_for(others_gone, timeout=180, interval=1, message="other test namespaces deleted")


def deployment(api: client.ApiClient, namespace: str, name: str) -> client.V1Deployment | None:
    try:
        return client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def exists(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


# ----------------------------------------------------------------------------- tests


def test_hello_sample_becomes_ready(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    apply_ms(kubeconfig, namespace, sample("hello.yaml"))
    ms = wait_ready(kube_api, namespace, "hello")
    dep = deployment(kube_api, namespace, "hello")
    assert dep is not None
    assert (dep.spec.replicas, dep.status.ready_replicas) == (3, 3)
    assert ms["status"]["ready"] == "3/3"
    assert ms["status"]["phase"] == "Running"
    svc = client.CoreV1Api(kube_api).read_namespaced_service("hello", namespace)
    assert svc.spec.type == "LoadBalancer"
    assert [(p.port, p.target_port, p.protocol) for p in svc.spec.ports] == [(80, "http", "TCP")]
    container = dep.spec.template.spec.containers[0]
    assert [(p.name, p.container_port) for p in container.ports] == [("http", 5000)]
    assert svc.spec.selector == {
        "app.kubernetes.io/instance": "hello",
        "mso.dev/track": "primary",
    }
    refs = dep.metadata.owner_references
    assert refs[0].kind == "MicroService" and refs[0].controller
    out = kubectl(kubeconfig, "get", "ms", "-n", namespace)
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "READY", "IMAGE", "PHASE"]
    assert row.split()[:4] == ["hello", "3/3", "hello-flask:1.0", "Running"]


def test_scale_and_image_update_roll_out(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    apply_ms(kubeconfig, namespace, sample("hello.yaml"))
    wait_ready(kube_api, namespace, "hello")
    kubectl(kubeconfig, "scale", "ms/hello", "--replicas=5", "-n", namespace)
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "hello")) and d.status.ready_replicas == 5,
        timeout=60,
        message="deployment scaled to 5",
    )
    ms = wait_for(
        lambda: (m := wait_ready(kube_api, namespace, "hello"))["status"]["ready"] == "5/5" and m,
        timeout=30,
        message="status shows 5/5",
    )
    old_rev = ms["status"]["currentRevision"]

    kubectl(
        kubeconfig,
        "patch",
        "ms/hello",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"image": "hello-flask:1.1"}}),
    )

    def rolled() -> bool:
        d = deployment(kube_api, namespace, "hello")
        return bool(
            d
            and d.spec.template.spec.containers[0].image == "hello-flask:1.1"
            and d.status.updated_replicas == 5
            and d.status.ready_replicas == 5
            and (d.status.replicas or 0) == 5
        )

    wait_for(rolled, timeout=90, message="rollout of hello-flask:1.1")
    ms = wait_ready(kube_api, namespace, "hello")
    assert ms["status"]["currentRevision"] != old_rev
    assert ms["status"]["lastKnownGoodRevision"] == ms["status"]["currentRevision"]


def test_autoscaling_hands_replicas_to_the_hpa(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    local_cluster: Any,
) -> None:
    ms = sample("hello.yaml")
    ms["spec"]["replicas"] = 2
    ms["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "64Mi"}}
    apply_ms(kubeconfig, namespace, ms)
    wait_ready(kube_api, namespace, "hello")
    ms["spec"]["autoscaling"] = {
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetCPUUtilizationPercentage": 50,
    }
    apply_ms(kubeconfig, namespace, ms)
    hpa_api = client.AutoscalingV2Api(kube_api)
    hpa = wait_for(
        lambda: (
            exists(hpa_api.read_namespaced_horizontal_pod_autoscaler, "hello", namespace)
            and hpa_api.read_namespaced_horizontal_pod_autoscaler("hello", namespace)
        ),
        timeout=30,
        message="HPA created",
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 6)
    assert hpa.spec.scale_target_ref.name == "hello"

    dep = deployment(kube_api, namespace, "hello")
    assert dep is not None
    assert dep.spec.replicas == 2  # not reset to 1 while ownership moved to the HPA
    owners = [
        m.manager
        for m in dep.metadata.managed_fields
        if "f:replicas" in (m.fields_v1 or {}).get("f:spec", {})
    ]
    assert "microservice-operator" not in owners, owners

    # Raise the pods' CPU usage (kwok serves it to metrics-server): the HPA scales up.
    core = client.CoreV1Api(kube_api)
    for pod in core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/instance=hello"
    ).items:
        core.patch_namespaced_pod(
            pod.metadata.name,
            namespace,
            {"metadata": {"annotations": {"kwok.x-k8s.io/usage-cpu": "400m"}}},
        )
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "hello")) and d.spec.replicas > 2,
        timeout=180,
        interval=1,
        message="HPA scaled the Deployment up",
    )
    # The operator leaves the HPA's replica count alone.
    before = deployment(kube_api, namespace, "hello").spec.replicas  # type: ignore[union-attr]
    kubectl(
        kubeconfig,
        "patch",
        "ms/hello",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"podTemplate": {"annotations": {"team": "web"}}}}),
    )
    wait_for(
        lambda: (
            (d := deployment(kube_api, namespace, "hello"))
            and (d.spec.template.metadata.annotations or {}).get("team") == "web"
        ),
        timeout=30,
        message="template change applied",
    )
    assert deployment(kube_api, namespace, "hello").spec.replicas >= before  # type: ignore[union-attr]

    # Turning autoscaling off takes replicas back and deletes the HPA.
    del ms["spec"]["autoscaling"]
    ms["spec"]["replicas"] = 3
    ms["spec"]["podTemplate"] = {"annotations": {"team": "web"}}
    apply_ms(kubeconfig, namespace, ms)
    wait_for(
        lambda: not exists(hpa_api.read_namespaced_horizontal_pod_autoscaler, "hello", namespace),
        timeout=30,
        message="HPA deleted",
    )
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "hello")) and d.spec.replicas == 3,
        timeout=30,
        message="replicas back to 3",
    )


def test_drift_is_reverted_and_deleted_children_recreated(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    apply_ms(kubeconfig, namespace, sample("hello-autoscaled.yaml"))
    name = sample("hello-autoscaled.yaml")["metadata"]["name"]
    wait_ready(kube_api, namespace, name)
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    hpa_api, pdb_api = client.AutoscalingV2Api(kube_api), client.PolicyV1Api(kube_api)
    image = apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers[0].image

    # Drift on a field we own is reverted; a field we do not own is left alone.
    apps.patch_namespaced_deployment(
        name,
        namespace,
        {
            "metadata": {"annotations": {"other-tool/note": "keep me"}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "evil:1"}]}}},
        },
    )
    wait_for(
        lambda: (
            apps.read_namespaced_deployment(name, namespace).spec.template.spec.containers[0].image
            == image
        ),
        timeout=30,
        message="deployment image drift reverted",
    )
    assert (
        apps.read_namespaced_deployment(name, namespace).metadata.annotations["other-tool/note"]
        == "keep me"
    )

    svc = core.read_namespaced_service(name, namespace)
    core.patch_namespaced_service(name, namespace, {"spec": {"type": "ClusterIP"}})
    wait_for(
        lambda: core.read_namespaced_service(name, namespace).spec.type == svc.spec.type,
        timeout=30,
        message="service type drift reverted",
    )
    max_replicas = hpa_api.read_namespaced_horizontal_pod_autoscaler(
        name, namespace
    ).spec.max_replicas
    hpa_api.patch_namespaced_horizontal_pod_autoscaler(
        name, namespace, {"spec": {"maxReplicas": 99}}
    )
    wait_for(
        lambda: (
            hpa_api.read_namespaced_horizontal_pod_autoscaler(name, namespace).spec.max_replicas
            == max_replicas
        ),
        timeout=30,
        message="hpa drift reverted",
    )
    min_available = pdb_api.read_namespaced_pod_disruption_budget(
        name, namespace
    ).spec.min_available
    pdb_api.patch_namespaced_pod_disruption_budget(name, namespace, {"spec": {"minAvailable": 0}})
    wait_for(
        lambda: (
            pdb_api.read_namespaced_pod_disruption_budget(name, namespace).spec.min_available
            == min_available
        ),
        timeout=30,
        message="pdb drift reverted",
    )

    # Deleted children come back.
    for read, delete in (
        (core.read_namespaced_service, core.delete_namespaced_service),
        (
            hpa_api.read_namespaced_horizontal_pod_autoscaler,
            hpa_api.delete_namespaced_horizontal_pod_autoscaler,
        ),
        (
            pdb_api.read_namespaced_pod_disruption_budget,
            pdb_api.delete_namespaced_pod_disruption_budget,
        ),
        (apps.read_namespaced_deployment, apps.delete_namespaced_deployment),
    ):
        uid = read(name, namespace).metadata.uid
        delete(name, namespace)
        wait_for(
            lambda read=read, uid=uid: (
                exists(read, name, namespace) and read(name, namespace).metadata.uid != uid
            ),
            timeout=30,
            message=f"{read.__name__} recreated",
        )
    wait_ready(kube_api, namespace, name)


def test_removing_autoscaling_and_availability_deletes_hpa_and_pdb(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ms = sample("hello-autoscaled.yaml")
    name = ms["metadata"]["name"]
    apply_ms(kubeconfig, namespace, ms)
    wait_ready(kube_api, namespace, name)
    del ms["spec"]["autoscaling"]
    del ms["spec"]["availability"]
    apply_ms(kubeconfig, namespace, ms)
    hpa_api, pdb_api = client.AutoscalingV2Api(kube_api), client.PolicyV1Api(kube_api)
    wait_for(
        lambda: (
            not exists(hpa_api.read_namespaced_horizontal_pod_autoscaler, name, namespace)
            and not exists(pdb_api.read_namespaced_pod_disruption_budget, name, namespace)
        ),
        timeout=30,
        message="HPA and PDB deleted",
    )
    wait_ready(kube_api, namespace, name)


def test_deleting_the_microservice_removes_children(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    ms = sample("hello-autoscaled.yaml")
    name = ms["metadata"]["name"]
    apply_ms(kubeconfig, namespace, ms)
    wait_ready(kube_api, namespace, name)
    kubectl(kubeconfig, "delete", "ms", name, "-n", namespace, "--wait=true", "--timeout=30s")
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    hpa_api, pdb_api = client.AutoscalingV2Api(kube_api), client.PolicyV1Api(kube_api)
    wait_for(
        lambda: (
            not any(
                exists(read, name, namespace)
                for read in (
                    apps.read_namespaced_deployment,
                    core.read_namespaced_service,
                    hpa_api.read_namespaced_horizontal_pod_autoscaler,
                    pdb_api.read_namespaced_pod_disruption_budget,
                )
            )
            and not core.list_namespaced_pod(namespace).items
        ),
        timeout=60,
        message="children garbage-collected",
    )


def test_schema_and_cel_violations_are_rejected_naming_the_field(
    kubeconfig: Path, namespace: str, crd: Path
) -> None:
    cases = [
        ({"image": "x", "replicas": -1, "service": {"enabled": False}}, "spec.replicas"),
        (
            {
                "image": "x",
                "ports": [{"containerPort": 5000, "servicePort": 80}],
                "autoscaling": {"minReplicas": 5, "maxReplicas": 2},
            },
            "minReplicas must be less than or equal to",
        ),
        ({"image": "x", "ports": [{"containerPort": 5000}]}, "servicePort is required"),
        (
            {
                "image": "x",
                "service": {"enabled": False},
                "availability": {"minAvailable": 1, "maxUnavailable": 1},
            },
            "exactly one of minAvailable or maxUnavailable",
        ),
        ({"image": "x", "service": {"enabled": False}, "replica": 3}, "replica"),
    ]
    for spec, expected in cases:
        doc = {
            "apiVersion": "mso.dev/v1alpha1",
            "kind": "MicroService",
            "metadata": {"name": "bad"},
            "spec": spec,
        }
        out = kubectl(
            kubeconfig, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=False
        )
        assert expected in out, (spec, out)
        assert "created" not in out


def test_invalid_spec_beyond_the_schema_is_reported_not_retried(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    doc = {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {"name": "bad"},
        "spec": {
            "image": "x:1",
            "service": {"enabled": False},
            "env": [
                {
                    "name": "A",
                    "value": "1",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                }
            ],
        },
    }
    apply_ms(kubeconfig, namespace, doc)

    ms = wait_condition(kube_api, namespace, "bad", "Ready", reason="InvalidSpec", timeout=30)
    c = cond(ms, "Ready")
    assert c is not None
    assert c["status"] == "False"
    assert "env A: set value or valueFrom, not both" in c["message"]
    assert deployment(kube_api, namespace, "bad") is None

    def events() -> list[Any]:
        return list(
            client.CoreV1Api(kube_api)
            .list_namespaced_event(
                namespace, field_selector="involvedObject.name=bad,reason=InvalidSpec"
            )
            .items
        )

    # The Event is recorded just after the status that the wait above saw.
    wait_for(events, timeout=10, message="the InvalidSpec Event")
    wait_quiet(kube_api, namespace)
    before = operator.requests()
    rv = get_ms(kube_api, namespace, "bad")["metadata"]["resourceVersion"]
    time.sleep(3)  # an observation window: nothing may happen in it
    assert get_ms(kube_api, namespace, "bad")["metadata"]["resourceVersion"] == rv
    assert operator.requests() == before
    recorded = events()
    assert len(recorded) == 1 and recorded[0].type == "Warning"  # once, not per retry


def test_api_error_on_a_child_surfaces_in_a_condition(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    doc = sample("hello.yaml")
    doc["spec"]["resources"] = {"requests": {"cpu": "lots"}}
    apply_ms(kubeconfig, namespace, doc)

    ms = wait_condition(kube_api, namespace, "hello", "Ready", reason="ApplyFailed", timeout=30)
    c = cond(ms, "Ready")
    assert c is not None and c["status"] == "False"
    assert "quantities must match the regular expression" in c["message"]
    doc["spec"]["resources"] = {"requests": {"cpu": "100m"}}
    apply_ms(kubeconfig, namespace, doc)
    wait_ready(kube_api, namespace, "hello")


def test_a_same_named_object_of_someone_else_is_left_alone(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """Children are created without a read first (a create-only apply); a Service the
    user already has under the child's name is neither adopted nor changed, the
    MicroService says why it is stuck, and goes on once the name is free."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="hello", labels={"owner": "someone"}),
            spec=client.V1ServiceSpec(
                selector={"app": "theirs"}, ports=[client.V1ServicePort(port=9999)]
            ),
        ),
    )
    theirs = core.read_namespaced_service("hello", namespace).metadata.resource_version
    apply_ms(kubeconfig, namespace, sample("hello.yaml"))
    ms = wait_condition(kube_api, namespace, "hello", "Ready", reason="ChildConflict", timeout=30)
    c = cond(ms, "Ready")
    assert c is not None and "already exists and is not owned" in c["message"], c
    svc = core.read_namespaced_service("hello", namespace)
    assert svc.metadata.resource_version == theirs
    assert not svc.metadata.owner_references
    assert "microservice-operator" not in {m.manager for m in svc.metadata.managed_fields}
    core.delete_namespaced_service("hello", namespace)
    ms = wait_ready(kube_api, namespace, "hello")
    svc = core.read_namespaced_service("hello", namespace)
    assert [r.uid for r in svc.metadata.owner_references] == [ms["metadata"]["uid"]]
    # Created by an apply: our fields are owned as Apply, so later applies can drop them.
    ours = [m for m in svc.metadata.managed_fields if m.manager == "microservice-operator"]
    assert [m.operation for m in ours] == ["Apply"], ours


def test_converged_microservices_cost_no_writes(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    apply_ms(kubeconfig, namespace, sample("hello-autoscaled.yaml"))
    name = sample("hello-autoscaled.yaml")["metadata"]["name"]
    wait_ready(kube_api, namespace, name)
    # Let trailing watch events (pod status, HPA status) settle, then observe.
    wait_settled(kube_api, namespace, name)
    wait_quiet(kube_api, namespace)
    before = operator.requests()
    time.sleep(5)  # an observation window: no write may happen in it
    after = operator.requests()
    assert after == before, {k: after.get(k, 0) - before.get(k, 0) for k in after}


def test_restart_converges_without_duplicates(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    apply_ms(kubeconfig, namespace, sample("hello.yaml"))
    operator.stop()
    try:
        # Changes made while the operator is down are picked up after it restarts.
        kubectl(kubeconfig, "scale", "ms/hello", "--replicas=4", "-n", namespace)
    finally:
        operator.start()
    wait_for(
        lambda: (d := deployment(kube_api, namespace, "hello")) and d.status.ready_replicas == 4,
        timeout=90,
        message="4 ready replicas after restart",
    )
    wait_ready(kube_api, namespace, "hello")
    apps = client.AppsV1Api(kube_api)
    names = [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items]
    assert names == ["hello"]
    services = client.CoreV1Api(kube_api).list_namespaced_service(namespace).items
    assert [s.metadata.name for s in services] == ["hello"]
    # A restart of a converged operator writes nothing.
    wait_settled(kube_api, namespace, "hello")
    wait_quiet(kube_api, namespace)
    before_restart = get_ms(kube_api, namespace, "hello")["metadata"]["resourceVersion"]
    operator.restart()  # returns once the new process is healthy and has started
    time.sleep(3)  # observation window
    writes = operator.requests()
    assert not any(v for (verb, res), v in writes.items() if res != "events"), writes
    assert get_ms(kube_api, namespace, "hello")["metadata"]["resourceVersion"] == before_restart


def test_every_request_of_the_process_is_counted(operator: OperatorProcess) -> None:
    """kopf's own requests (its API discovery at start-up) are counted with ours, and
    kopf watches nothing: the operator's informers are the only watches."""
    samples = operator.scrape()
    requests = {
        (dict(labels)["verb"], dict(labels)["resource"]): value
        for (name, labels), value in samples.items()
        if name == "mso_kube_requests_total"
    }
    assert requests.get(("get", "discovery"), 0) >= 1, requests
    assert not any(res == "customresourcedefinitions" for _, res in requests), requests
    assert requests.get(("list", "microservices"), 0) >= 1, requests
