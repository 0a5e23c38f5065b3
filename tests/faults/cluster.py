"""Cluster-side evidence for fault tests: every assertion reads the API server."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.integration.operator_fixtures import kubectl
from tests.integration.test_reconcile import cond as condition  # re-exported
from tests.integration.test_reconcile import get_ms  # noqa: F401 - re-exported

GROUP, VERSION, PLURAL = "mso.dev", "v1alpha1", "microservices"
MANAGED = "app.kubernetes.io/managed-by=microservice-operator"
BAD_DECISIONS = ("RolledBack", "FailedOver", "PodRemediated")


def microservice(name: str, image: str, replicas: int = 1, **failover: Any) -> dict[str, Any]:
    """A MicroService of the hello shape."""
    spec: dict[str, Any] = {
        "image": image,
        "replicas": replicas,
        "ports": [{"containerPort": 5000, "servicePort": 80}],
    }
    if failover:
        spec["failover"] = failover
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MicroService",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply_all(kubeconfig: Path, namespace: str, docs: list[dict[str, Any]]) -> None:
    """One kubectl apply for many objects (server-side, as a GitOps tool would)."""
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )


def list_ms(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    return items


def is_ready(ms: dict[str, Any]) -> bool:
    c = condition(ms, "Ready")
    status = ms.get("status") or {}
    return (
        c is not None
        and c["status"] == "True"
        and status.get("observedGeneration") == ms["metadata"]["generation"]
    )


def not_ready(api: client.ApiClient, namespace: str) -> list[str]:
    """Names of MicroServices not Ready at their current generation."""
    return [m["metadata"]["name"] for m in list_ms(api, namespace) if not is_ready(m)]


def decision_events(api: client.ApiClient, namespace: str) -> list[str]:
    """Events of destructive decisions in the namespace: 'reason name: message'."""
    out = []
    for ev in client.CoreV1Api(api).list_namespaced_event(namespace).items:
        if ev.reason in BAD_DECISIONS:
            out.append(f"{ev.reason} {ev.involved_object.name}: {ev.message}")
    return out


def quarantine_records(api: client.ApiClient, namespace: str) -> list[str]:
    items = (
        client.AppsV1Api(api)
        .list_namespaced_controller_revision(
            namespace, label_selector=f"{MANAGED},mso.dev/history=quarantined"
        )
        .items
    )
    return [r.metadata.name for r in items]


def children_report(api: client.ApiClient, namespace: str) -> dict[str, list[str]]:
    """Problems with the children of every MicroService: missing, duplicated (more
    than one object of a kind per MicroService) or orphaned (owner gone)."""
    uids = {m["metadata"]["uid"]: m["metadata"]["name"] for m in list_ms(api, namespace)}
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    kinds = {
        "Deployment": apps.list_namespaced_deployment(namespace, label_selector=MANAGED).items,
        "Service": core.list_namespaced_service(namespace, label_selector=MANAGED).items,
    }
    problems: dict[str, list[str]] = {"missing": [], "duplicate": [], "orphan": []}
    for kind, objs in kinds.items():
        per_owner: dict[str, int] = {}
        for o in objs:
            owners = [r.uid for r in o.metadata.owner_references or [] if r.controller]
            if not owners or owners[0] not in uids:
                problems["orphan"].append(f"{kind} {o.metadata.name}")
                continue
            per_owner[owners[0]] = per_owner.get(owners[0], 0) + 1
        for uid, name in uids.items():
            n = per_owner.get(uid, 0)
            if n == 0:
                problems["missing"].append(f"{kind} of {name}")
            elif n > 1:
                problems["duplicate"].append(f"{kind} of {name} x{n}")
    return problems


def images(api: client.ApiClient, namespace: str) -> dict[str, str]:
    """Deployment name -> container image, of the operator's Deployments."""
    return {
        d.metadata.name: d.spec.template.spec.containers[0].image
        for d in client.AppsV1Api(api)
        .list_namespaced_deployment(namespace, label_selector=MANAGED)
        .items
    }


def pod_images(api: client.ApiClient, namespace: str) -> set[str]:
    return {
        c.image
        for p in client.CoreV1Api(api).list_namespaced_pod(namespace).items
        for c in p.spec.containers
    }


def convergence_report(api: client.ApiClient, namespace: str, image: str) -> str:
    """What keeps a namespace's MicroServices from being Ready on ``image``, read off the
    API server: each laggard's conditions, its Deployment's status and its pods. Printed
    when a convergence wait times out, to tell the operator's share from the cluster's."""
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    deployments = {
        d.metadata.name: d
        for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    }
    lines = []
    for ms in list_ms(api, namespace):
        name = ms["metadata"]["name"]
        d = deployments.get(name)
        image_ok = d is not None and d.spec.template.spec.containers[0].image == image
        if is_ready(ms) and image_ok:
            continue
        status = ms.get("status") or {}
        lines.append(
            f"{name}: generation {ms['metadata'].get('generation')}, "
            f"observedGeneration {status.get('observedGeneration')}"
        )
        for c in status.get("conditions") or []:
            lines.append(f"  {c['type']}={c['status']} {c.get('reason')}: {c.get('message')}")
        if d is None:
            lines.append("  no Deployment")
            continue
        s = d.status
        lines.append(
            f"  Deployment {d.spec.template.spec.containers[0].image} generation "
            f"{d.metadata.generation}/{s.observed_generation}: replicas {s.replicas}, "
            f"updated {s.updated_replicas}, ready {s.ready_replicas}, "
            f"available {s.available_replicas}"
        )
        for p in pods:
            if not (p.metadata.name.startswith(f"{name}-") and p.metadata.labels):
                continue
            ready = next((c for c in p.status.conditions or [] if c.type == "Ready"), None)
            lines.append(
                f"  pod {p.metadata.name} {p.spec.containers[0].image} {p.status.phase} "
                f"Ready={ready.status if ready else None} "
                f"since={ready.last_transition_time if ready else None} "
                f"node={p.spec.node_name} deleting={p.metadata.deletion_timestamp}"
            )
    return "\n".join(lines) or "(all Ready)"


RESYNC_ANNOTATION = "tests.mso.dev/kubelet-resync"


def resync_stuck_pods(api: client.ApiClient, namespace: str, image: str, stale_after: float) -> int:
    """Play the part of a kubelet's periodic status sync for kwok; returns how many pods
    it touched.

    A kubelet re-reports every pod's status every sync period (~10 s), so a status
    update lost while the API server or etcd was down is simply sent again. kwok (the
    local kubelets) has no such loop: a failed stage patch is retried with a doubling
    backoff (1 s up to 32 minutes) when kwok calls the error retryable (refused, 503,
    504, 429) and dropped otherwise (kwok v0.8.0, pkg/kwok/controllers/utils.go). Seen
    here: a Ready patch that failed as etcd went down was sent again 3 minutes later.
    Any update to the pod makes kwok replay its stage at once (a new resourceVersion
    replaces the queued retry), so touching an annotation of a pod that has stayed not
    Ready on ``image`` for ``stale_after`` seconds gives it what a kubelet would. The
    operator ignores the annotation; it only sees the pod become Ready, as it would on a
    real node."""
    core = client.CoreV1Api(api)
    now = datetime.datetime.now(datetime.UTC)
    touched = 0
    for p in core.list_namespaced_pod(namespace).items:
        if p.metadata.deletion_timestamp or not p.spec.node_name:
            continue
        if p.spec.containers[0].image != image:
            continue
        ready = next((c for c in p.status.conditions or [] if c.type == "Ready"), None)
        if ready is not None and ready.status == "True":
            continue
        since = ready.last_transition_time if ready and ready.last_transition_time else None
        since = since or p.metadata.creation_timestamp
        if (now - since).total_seconds() < stale_after:
            continue
        body = {"metadata": {"annotations": {RESYNC_ANNOTATION: now.isoformat()}}}
        core.patch_namespaced_pod(p.metadata.name, namespace, body)
        touched += 1
    return touched
