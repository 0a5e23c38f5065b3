"""The Helm chart against a real API server: install, upgrade, uninstall.

`helm install` of charts/microservice-operator into a fresh namespace (Pod Security
`restricted` enforced) must create the release's objects and an operator Deployment
that becomes Available (kwok plays the kubelet: the image need not exist, the pod is
admitted, scheduled and reported Ready); `helm upgrade` to two replicas must turn
on leader election, and to watched namespaces must swap the ClusterRoleBinding for
a RoleBinding; `helm uninstall` must remove every object of the release.

The MicroService CRD is shared with every other test (the session `crd` fixture
applies it server-side), so the release runs with crds.install=false and the test
proves that the CRD outlives the uninstall. The release name is unique per run, so
its cluster-scoped RBAC (<release>-microservice-operator-*) never collides with
the kustomize install of test_manifests.py (microservice-operator-*).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helmtool import build_helm
from tests.integration.fixtures import KubeCluster
from tests.integration.helpers import wait_for

# One test process runs this whole module (one release through install, upgrades
# and uninstall, in order).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("test_helm")]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "microservice-operator"
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
MS_CRD = "microservices.mso.dev"
PSA_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass
class Release:
    """One Helm release of the chart, and how to reach the cluster."""

    name: str
    namespace: str
    watched: str  # a namespace to watch after the second upgrade
    kubeconfig: Path
    binary: str
    home: Path
    install_output: str = ""
    manifests: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def fullname(self) -> str:
        return f"{self.name}-microservice-operator"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        proc = subprocess.run(
            [self.binary, *args, "--namespace", self.namespace],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            env=env,
        )
        if check:
            assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    def manifest(self) -> list[dict[str, Any]]:
        """The objects of the release's current revision (`helm get manifest`)."""
        out = self.helm("get", "manifest", self.name).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [KUBECTL, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)} failed:\n{proc.stderr}"
        return proc

    def exists(self, doc: dict[str, Any]) -> bool:
        proc = self.kubectl("get", *object_ref(doc), "-o", "name", "--ignore-not-found")
        return bool(proc.stdout.strip())

    def can_i(self, verb: str, resource: str, *where: str) -> bool:
        proc = self.kubectl(
            "auth", "can-i", verb, resource, f"--as={self.service_account}", *where, check=False
        )
        answer = proc.stdout.strip()
        assert proc.returncode in (0, 1) and answer in ("yes", "no"), proc.stderr
        return answer == "yes"

    def deployment(self, kube_api: client.ApiClient) -> client.V1Deployment:
        apps = client.AppsV1Api(kube_api)
        return apps.read_namespaced_deployment(self.fullname, self.namespace)


def object_ref(doc: dict[str, Any]) -> list[str]:
    """kubectl arguments naming one object: `kind.group/name [-n namespace]`."""
    group = doc["apiVersion"].rpartition("/")[0]
    kind = doc["kind"].lower() + (f".{group}" if group else "")
    ref = [f"{kind}/{doc['metadata']['name']}"]
    if doc["metadata"].get("namespace"):
        ref += ["-n", doc["metadata"]["namespace"]]
    return ref


def env_of(deployment: client.V1Deployment) -> dict[str, Any]:
    (container,) = deployment.spec.template.spec.containers
    return {e.name: e.value if e.value is not None else e.value_from for e in container.env}


def create_namespace(core: client.CoreV1Api, name: str, labels: dict[str, str]) -> None:
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name, labels={"app.kubernetes.io/managed-by": "pytest", **labels}
            )
        )
    )


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def wait_available(release: Release, kube_api: client.ApiClient, replicas: int) -> None:
    """The Deployment is Available with `replicas` ready pods of its current revision."""

    def available() -> bool:
        d = release.deployment(kube_api)
        conditions = {c.type: c.status for c in d.status.conditions or []}
        return (
            d.status.observed_generation == d.metadata.generation
            and conditions.get("Available") == "True"
            and (d.status.updated_replicas or 0) == replicas
            and (d.status.ready_replicas or 0) == replicas
            and (d.status.replicas or 0) == replicas
        )

    wait_for(available, timeout=120, interval=0.5, message=f"{release.fullname} available")
    selector = ",".join(
        f"{k}={v}" for k, v in release.deployment(kube_api).spec.selector.match_labels.items()
    )
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        release.namespace, label_selector=selector
    )
    ready = [
        p
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    assert len(ready) == replicas, [p.metadata.name for p in pods.items]


@pytest.fixture(scope="class")
def release(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    crd: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    """`helm install` into a fresh namespace; uninstalled and cleaned up afterwards."""
    binary = build_helm()
    core = client.CoreV1Api(kube_api)
    suffix = uuid.uuid4().hex[:6]
    rel = Release(
        name=f"mso-helm-{suffix}",
        namespace=f"mso-helm-{suffix}",
        watched=f"mso-helm-{suffix}-watched",
        kubeconfig=kubeconfig,
        binary=binary,
        home=tmp_path_factory.mktemp("helm"),
    )
    create_namespace(core, rel.namespace, PSA_RESTRICTED)
    create_namespace(core, rel.watched, {})
    try:
        rel.install_output = rel.helm(
            "install", rel.name, str(CHART), "--set", "crds.install=false"
        ).stdout
        rel.manifests.append(rel.manifest())
        yield rel
    finally:
        rel.helm("uninstall", rel.name, "--wait", "--timeout=120s", check=False)
        # Whatever a failed uninstall left behind outside the namespaces.
        selector = f"app.kubernetes.io/instance={rel.name}"
        rel.kubectl(
            "delete",
            "clusterrolebindings.rbac.authorization.k8s.io,clusterroles.rbac.authorization.k8s.io",
            "-l",
            selector,
            "--ignore-not-found",
            check=False,
        )
        delete_namespace(core, rel.watched)
        delete_namespace(core, rel.namespace)


class TestHelmRelease:
    """One release through its life: install, two upgrades, uninstall (in this order)."""

    def test_install_creates_the_release_objects(self, release: Release) -> None:
        (installed,) = release.manifests
        kinds = sorted((d["kind"], d["metadata"]["name"]) for d in installed)
        full = release.fullname
        assert kinds == sorted(
            [
                ("ClusterRole", f"{full}-application"),
                ("ClusterRole", f"{full}-framework"),
                ("ClusterRoleBinding", f"{full}-application"),
                ("ClusterRoleBinding", f"{full}-framework"),
                ("Deployment", full),
                ("Service", f"{full}-metrics"),
                ("ServiceAccount", full),
            ]
        )
        for doc in installed:
            assert release.exists(doc), object_ref(doc)
            if doc["metadata"].get("namespace"):
                assert doc["metadata"]["namespace"] == release.namespace
        assert "STATUS: deployed" in release.install_output
        assert f"rollout status deployment/{full}" in release.install_output

    def test_crd_stays_managed_by_the_crd_fixture(self, release: Release, crd: Path) -> None:
        """crds.install=false: Helm neither adopted nor changed the shared CRD."""
        out = release.kubectl("get", "crd", MS_CRD, "-o", "json").stdout
        metadata = json.loads(out)["metadata"]
        assert "meta.helm.sh/release-name" not in (metadata.get("annotations") or {})
        assert (metadata.get("labels") or {}).get("app.kubernetes.io/instance") != release.name

    def test_operator_becomes_available(
        self, release: Release, kube_api: client.ApiClient, local_cluster: KubeCluster
    ) -> None:
        # kwok plays the kubelet: this proves the pod passes `restricted` admission,
        # is scheduled and reported Ready (the probes are kwok's, not the operator's).
        wait_available(release, kube_api, replicas=1)

    def test_service_account_holds_the_operator_rbac(
        self, release: Release, namespace: str
    ) -> None:
        assert release.can_i("patch", "deployments.apps", "-n", namespace)
        assert release.can_i("list", "microservices.mso.dev", "--all-namespaces")
        assert release.can_i("watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert not release.can_i("get", "secrets", "-n", namespace)
        assert not release.can_i("delete", "microservices.mso.dev", "-n", namespace)
        assert not release.can_i("create", "leases.coordination.k8s.io", "-n", release.namespace)

    def test_upgrade_to_two_replicas_turns_on_leader_election(
        self, release: Release, kube_api: client.ApiClient, kube_cluster: KubeCluster
    ) -> None:
        release.helm("upgrade", release.name, str(CHART), "--reuse-values", "--set", "replicas=2")
        release.manifests.append(release.manifest())
        deployment = release.deployment(kube_api)
        assert deployment.spec.replicas == 2
        assert deployment.spec.strategy.type == "RollingUpdate"
        env = env_of(deployment)
        assert env["MSO_LEADER_ELECTION"] == "true"
        assert env["MSO_LEADER_ELECTION_ID"] == release.fullname
        assert env["POD_NAMESPACE"].field_ref.field_path == "metadata.namespace"
        assert env["POD_NAME"].field_ref.field_path == "metadata.name"
        added = {(d["kind"], d["metadata"]["name"]) for d in release.manifests[-1]} - {
            (d["kind"], d["metadata"]["name"]) for d in release.manifests[0]
        }
        assert added == {
            ("Role", f"{release.fullname}-leader-election"),
            ("RoleBinding", f"{release.fullname}-leader-election"),
            ("PodDisruptionBudget", release.fullname),
        }
        for doc in release.manifests[-1]:
            assert release.exists(doc), object_ref(doc)
        lease = f"leases.coordination.k8s.io/{release.fullname}"
        assert release.can_i("create", "leases.coordination.k8s.io", "-n", release.namespace)
        assert release.can_i("update", lease, "-n", release.namespace)
        assert not release.can_i("update", "leases.coordination.k8s.io/other", "-n", "default")
        history = json.loads(release.helm("history", release.name, "-o", "json").stdout)
        assert [h["revision"] for h in history] == [1, 2]
        if kube_cluster.local:
            wait_available(release, kube_api, replicas=2)

    def test_upgrade_to_watched_namespaces_binds_per_namespace(
        self, release: Release, kube_api: client.ApiClient, namespace: str
    ) -> None:
        release.helm(
            "upgrade",
            release.name,
            str(CHART),
            "--reuse-values",
            "--set",
            f"watchNamespaces={{{release.watched}}}",
        )
        release.manifests.append(release.manifest())
        env = env_of(release.deployment(kube_api))
        assert env["MSO_NAMESPACES"] == release.watched
        full = release.fullname
        # Helm deletes what the new revision no longer has: the ClusterRoleBinding.
        gone: dict[str, Any] = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{full}-application"},
        }
        assert not release.exists(gone)
        for doc in release.manifests[-1]:
            assert release.exists(doc), object_ref(doc)
        bindings = {
            (d["metadata"]["namespace"], d["metadata"]["name"])
            for d in release.manifests[-1]
            if d["kind"] == "RoleBinding"
        }
        assert bindings == {
            (release.watched, f"{full}-application"),
            (release.namespace, f"{full}-leader-election"),
        }
        assert release.can_i("patch", "deployments.apps", "-n", release.watched)
        assert not release.can_i("patch", "deployments.apps", "-n", namespace)
        assert not release.can_i("list", "microservices.mso.dev", "--all-namespaces")
        assert release.can_i("watch", "namespaces")

    def test_uninstall_removes_the_release_objects(self, release: Release, crd: Path) -> None:
        every = [doc for manifest in release.manifests for doc in manifest]
        assert every
        release.helm("uninstall", release.name, "--wait", "--timeout=120s")

        def leftovers() -> list[list[str]]:
            return [object_ref(d) for d in every if release.exists(d)]

        wait_for(lambda: not leftovers(), timeout=60, interval=0.5, message="no objects left")
        assert not leftovers()
        listed = release.helm("list", "--all", "-q").stdout.split()
        assert release.name not in listed
        # The shared CRD is not the release's: still there, still Established.
        release.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{MS_CRD}")
