"""The install manifests against a real API server: what users run must work.

`kubectl apply -k manifests/` has to succeed on a bare cluster, the samples must be
admitted by the installed CRD, the operator pod must pass the `restricted` Pod
Security admission of its namespace, and the ServiceAccount must hold exactly the
permissions the operator needs. The RBAC is proven, not guessed: the real operator
runs with the ServiceAccount's own token (the API server's RBAC authorizer is the
judge) through create, autoscaling and a bad release, without a single 403.

Teardown removes the install but keeps the CRD: deleting it would delete every
MicroService in the cluster, including other tests'.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import wait_established
from tests.integration.operator_proc import OperatorProcess

# One test process runs this whole module (installs into the one mso-system namespace).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("test_manifests")]

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
SAMPLES = sorted((MANIFESTS / "samples").glob("*.yaml"))
KUBECTL = str(Path(sys.executable).with_name("kubectl"))
NAMESPACE = "mso-system"
SA_NAME = "microservice-operator"
SA = f"system:serviceaccount:{NAMESPACE}:{SA_NAME}"
MS_CRD = "microservices.mso.dev"


def kubectl(
    kubeconfig: Path | str, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """kubectl (the dev-extras one) against the cluster under test."""
    proc = subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
        )
    return proc


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def uninstall(kubeconfig: Path, docs: list[dict[str, Any]]) -> None:
    """Delete what an install created, except CRDs (they take every CR with them)."""
    cluster_scoped = [
        f"{d['kind'].lower()}.rbac.authorization.k8s.io/{d['metadata']['name']}"
        for d in docs
        if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}
    ]
    kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", *cluster_scoped)
    # CRDs that only this install uses go (none today); the MicroService CRD stays.
    own_crds = [
        f"crd/{d['metadata']['name']}"
        for d in docs
        if d["kind"] == "CustomResourceDefinition" and d["metadata"]["name"] != MS_CRD
    ]
    if own_crds:
        kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", *own_crds)
    for doc in docs:
        if doc["kind"] == "RoleBinding":
            meta = doc["metadata"]
            kubectl(
                kubeconfig,
                "delete",
                "--ignore-not-found",
                "-n",
                meta["namespace"],
                f"rolebinding.rbac.authorization.k8s.io/{meta['name']}",
            )
    # Wait for the namespace to be gone so that the next install is not refused
    # with "namespace is being terminated".
    kubectl(kubeconfig, "delete", "--ignore-not-found", "--timeout=120s", "namespace", NAMESPACE)


@pytest.fixture(scope="class")
def install(request: pytest.FixtureRequest, kubeconfig: Path) -> Iterator[str]:
    """`kubectl apply -k <the class's kustomization>`; its stderr (warnings) is yielded."""
    path: Path = request.cls.KUSTOMIZATION
    existing = kubectl(kubeconfig, "get", "namespace", NAMESPACE, check=False)
    if existing.returncode == 0:
        pytest.skip(f"namespace {NAMESPACE} already exists: not touching an existing install")
    docs = render(path)
    crds = [f"crd/{d['metadata']['name']}" for d in docs if d["kind"] == "CustomResourceDefinition"]
    try:
        # Overlays that ship a CRD together with an object of it say "apply twice":
        # kubectl cannot map the object before its CRD is served.
        for _ in range(request.cls.APPLIES):
            applied = kubectl(kubeconfig, "apply", "-k", str(path), check=False)
            wait_established(kubeconfig, *crds)
        assert applied.returncode == 0, applied.stderr
        yield applied.stderr
    finally:
        uninstall(kubeconfig, docs)


def can_i(kubeconfig: Path, verb: str, resource: str, *where: str) -> bool:
    """`kubectl auth can-i` as the operator's ServiceAccount (exit 0 yes, 1 no)."""
    proc = kubectl(kubeconfig, "auth", "can-i", verb, resource, f"--as={SA}", *where, check=False)
    answer = proc.stdout.strip()
    assert proc.returncode in (0, 1) and answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def pod_from_template(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": template["metadata"]["labels"],
        },
        "spec": template["spec"],
    }


def service_account_kubeconfig(kubeconfig: Path, directory: Path) -> Path:
    """A kubeconfig for the same API server that authenticates as the operator's
    ServiceAccount with a bound token (TokenRequest), so the API server's RBAC
    authorizer judges every request the operator makes."""
    token = kubectl(
        kubeconfig, "create", "token", SA_NAME, "-n", NAMESPACE, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(
        kubectl(kubeconfig, "config", "view", "--raw", "--minify", "--flatten").stdout
    )
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "under-test", "cluster": cluster}],
        "users": [{"name": SA_NAME, "user": {"token": token}}],
        "contexts": [{"name": SA_NAME, "context": {"cluster": "under-test", "user": SA_NAME}}],
        "current-context": SA_NAME,
    }
    path = directory / "service-account.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def ms_condition(kubeconfig: Path, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
    ms = json.loads(kubectl(kubeconfig, "get", "ms", name, "-n", namespace, "-o", "json").stdout)
    for cond in (ms.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return None


# Every request the operator makes, by (verb, resource): what the manifests must allow.
CAN = [
    ("list", "microservices.mso.dev"),
    ("watch", "microservices.mso.dev"),
    ("get", "microservices.mso.dev"),
    ("patch", "microservices.mso.dev", "--subresource=status"),
    # Only to remove a handled request annotation (mso.dev/retry, mso.dev/failback).
    ("patch", "microservices.mso.dev"),
    *[
        (verb, resource)
        for resource in (
            "deployments.apps",
            "services",
            "horizontalpodautoscalers.autoscaling",
            "poddisruptionbudgets.policy",
            "controllerrevisions.apps",
        )
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    ],
    ("list", "pods"),
    ("watch", "pods"),
    ("delete", "pods"),
    ("create", "events"),
]
# What it must never be able to do, in any namespace.
CANNOT = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("get", "configmaps"),
    ("list", "configmaps"),
    ("create", "configmaps"),
    ("create", "pods"),
    ("patch", "pods"),
    ("create", "pods", "--subresource=exec"),
    ("get", "pods", "--subresource=log"),
    ("delete", "microservices.mso.dev"),
    ("create", "microservices.mso.dev"),
    ("update", "microservices.mso.dev"),
    ("update", "deployments.apps"),
    ("update", "controllerrevisions.apps"),
    ("deletecollection", "deployments.apps"),
    ("create", "serviceaccounts", "--subresource=token"),
    ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("patch", "events"),
    ("impersonate", "serviceaccounts"),
]
CANNOT_CLUSTER = [
    ("delete", "namespaces"),
    ("create", "namespaces"),
    ("list", "namespaces"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("patch", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "nodes"),
    ("patch", "nodes"),
    ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io"),
]


def case_id(case: tuple[str, ...]) -> str:
    return " ".join(case)


class TestBaseInstall:
    """`kubectl apply -k manifests/`, the documented install."""

    KUSTOMIZATION = MANIFESTS
    APPLIES = 1

    def test_applies_cleanly_on_a_bare_cluster(self, install: str) -> None:
        assert "PodSecurity" not in install, install

    def test_second_apply_changes_nothing(self, install: str, kubeconfig: Path) -> None:
        out = kubectl(kubeconfig, "apply", "-k", str(MANIFESTS)).stdout.splitlines()
        changed = [
            line
            for line in out
            if not line.endswith("unchanged") and "customresourcedefinition" not in line
        ]
        assert not changed, out

    def test_operator_pod_passes_restricted_pod_security(
        self, install: str, kubeconfig: Path
    ) -> None:
        docs = render(MANIFESTS)
        pod = pod_from_template(docs, "pod-security-probe")
        kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", input=json.dumps(pod))
        # The control: the same pod made privileged-capable is refused, so the
        # namespace really enforces `restricted` and the check above means something.
        weak = pod_from_template(docs, "pod-security-control")
        weak["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
        refused = kubectl(
            kubeconfig, "create", "--dry-run=server", "-f", "-", input=json.dumps(weak), check=False
        )
        assert refused.returncode != 0 and "PodSecurity" in refused.stderr, refused.stderr

    def test_operator_deployment_becomes_available(
        self, install: str, kubeconfig: Path, local_cluster: object
    ) -> None:
        # kwok plays the kubelet, so the image need not exist: this proves the
        # ReplicaSet controller's pod is admitted and scheduled.
        kubectl(
            kubeconfig,
            "rollout",
            "status",
            "deployment/microservice-operator",
            "-n",
            NAMESPACE,
            "--timeout=120s",
        )

    def test_every_sample_passes_server_side_dry_run(
        self, install: str, kubeconfig: Path, namespace: str
    ) -> None:
        assert SAMPLES, "manifests/samples/ has no samples"
        for sample in SAMPLES:
            docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
            where = [] if any(d["metadata"].get("namespace") for d in docs) else ["-n", namespace]
            kubectl(kubeconfig, "apply", "--dry-run=server", *where, "-f", str(sample))

    @pytest.mark.parametrize("case", CAN, ids=case_id)
    def test_service_account_can(
        self, install: str, kubeconfig: Path, namespace: str, case: tuple[str, ...]
    ) -> None:
        verb, resource, *extra = case
        assert can_i(kubeconfig, verb, resource, *extra, "-n", namespace)
        assert can_i(kubeconfig, verb, resource, *extra, "--all-namespaces")

    @pytest.mark.parametrize("case", CANNOT, ids=case_id)
    def test_service_account_cannot(
        self, install: str, kubeconfig: Path, namespace: str, case: tuple[str, ...]
    ) -> None:
        verb, resource, *extra = case
        for ns in (namespace, NAMESPACE, "kube-system"):
            assert not can_i(kubeconfig, verb, resource, *extra, "-n", ns), ns

    @pytest.mark.parametrize("case", CANNOT_CLUSTER, ids=case_id)
    def test_service_account_cannot_touch_the_cluster(
        self, install: str, kubeconfig: Path, case: tuple[str, ...]
    ) -> None:
        verb, resource, *extra = case
        assert not can_i(kubeconfig, verb, resource, *extra)

    def test_operator_runs_on_its_service_account_alone(
        self,
        install: str,
        kubeconfig: Path,
        namespace: str,
        operator: OperatorProcess,
        tmp_path: Path,
    ) -> None:
        """The real operator, authenticated as the ServiceAccount, does its whole job.

        The session's operator (admin credentials) is stopped meanwhile, so every
        write that happens is this one's and was allowed by the manifests' RBAC.
        """
        sa_kubeconfig = service_account_kubeconfig(kubeconfig, tmp_path)
        operator.stop()
        try:
            # Scoped to the test's namespace: the base install may not list namespaces,
            # which the test suite's default --namespace-selector would need.
            sa_operator = OperatorProcess(str(sa_kubeconfig), tmp_path, "--namespace", namespace)
            sa_operator.start()
            try:
                self._scenario(kubeconfig, namespace, sa_operator)
            finally:
                sa_operator.stop()
        finally:
            operator.start()

    @staticmethod
    def _scenario(kubeconfig: Path, namespace: str, op: OperatorProcess) -> None:
        samples = MANIFESTS / "samples"
        for name in ("hello.yaml", "hello-autoscaled.yaml"):
            kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(samples / name))
        for name in ("hello", "hello-autoscaled"):
            kubectl(
                kubeconfig,
                "wait",
                "--for=condition=Ready",
                f"ms/{name}",
                "-n",
                namespace,
                "--timeout=120s",
            )
        kubectl(kubeconfig, "get", "hpa/hello-autoscaled", "pdb/hello-autoscaled", "-n", namespace)

        # A bad release: its pods crash loop, so it is rolled back to the last good one.
        patch = {"spec": {"image": "hello-flask:crashloop", "failover": {"unhealthyThreshold": 1}}}
        kubectl(
            kubeconfig,
            "patch",
            "ms",
            "hello",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps(patch),
        )
        wait_for(
            lambda: (
                (ms_condition(kubeconfig, namespace, "hello", "RolledBack") or {}).get("status")
                == "True"
            ),
            timeout=180,
            interval=1,
            message="hello RolledBack=True",
        )

        requests = op.scrape()
        by_code: dict[str, float] = {}
        writes: dict[tuple[str, str], float] = {}
        for (name, labels), value in requests.items():
            if name != "mso_kube_requests_total":
                continue
            d = dict(labels)
            by_code[d["code"]] = by_code.get(d["code"], 0) + value
            if d["verb"] in ("apply", "patch", "create", "delete"):
                key = (d["verb"], d["resource"])
                writes[key] = writes.get(key, 0) + value
        assert not by_code.get("403"), (by_code, op.log_tail())
        for resource in ("deployments", "services", "horizontalpodautoscalers"):
            assert writes.get(("apply", resource)), (resource, writes)
        log = op.log_text()
        # 403 as a word: the test's random namespace name may contain the digits.
        for marker in (r"\b403\b", "Forbidden", "forbidden"):
            assert not re.search(marker, log), op.log_tail()


class TestNamespacedInstall:
    """manifests/overlays/namespaced: nothing outside the watched namespaces."""

    KUSTOMIZATION = MANIFESTS / "overlays" / "namespaced"
    APPLIES = 1

    def test_applies_cleanly(self, install: str) -> None:
        assert "PodSecurity" not in install, install

    def test_permissions_stop_at_the_watched_namespace(
        self, install: str, kubeconfig: Path, namespace: str
    ) -> None:
        docs = render(self.KUSTOMIZATION)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
        watched = env["MSO_NAMESPACES"].split(",")
        for ns in watched:
            assert can_i(kubeconfig, "patch", "deployments.apps", "-n", ns)
            assert can_i(kubeconfig, "list", "microservices.mso.dev", "-n", ns)
            assert can_i(kubeconfig, "create", "events", "-n", ns)
            assert not can_i(kubeconfig, "get", "secrets", "-n", ns)
        assert namespace not in watched
        for verb, resource in (
            ("patch", "deployments.apps"),
            ("list", "microservices.mso.dev"),
            ("delete", "pods"),
            ("create", "events"),
        ):
            assert not can_i(kubeconfig, verb, resource, "-n", namespace), (verb, resource)
            assert not can_i(kubeconfig, verb, resource, "--all-namespaces"), (verb, resource)
        # Read-only, cluster-wide: what the previous version's kopf read (kept).
        assert can_i(kubeconfig, "watch", "namespaces")
        assert can_i(kubeconfig, "watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert not can_i(kubeconfig, "delete", "namespaces")


class TestHighAvailabilityInstall:
    """manifests/overlays/ha: two replicas, only the holder of one Lease reconciles."""

    KUSTOMIZATION = MANIFESTS / "overlays" / "ha"
    APPLIES = 1
    LEASE = "microservice-operator"

    def test_applies_cleanly_in_one_go(self, install: str) -> None:
        assert "PodSecurity" not in install, install

    def test_lease_access_is_limited_to_its_own_lease(
        self, install: str, kubeconfig: Path, namespace: str
    ) -> None:
        leases = "leases.coordination.k8s.io"
        here = ("-n", NAMESPACE)
        # The first replica creates the Lease (create cannot be limited by name).
        assert can_i(kubeconfig, "create", leases, *here)
        for verb in ("get", "update"):
            assert can_i(kubeconfig, verb, f"{leases}/{self.LEASE}", *here), verb
            assert not can_i(kubeconfig, verb, f"{leases}/someone-else", *here), verb
        for verb in ("list", "watch", "patch", "delete", "deletecollection"):
            assert not can_i(kubeconfig, verb, leases, *here), verb
        assert not can_i(kubeconfig, "delete", f"{leases}/{self.LEASE}", *here)
        assert not can_i(kubeconfig, "patch", f"{leases}/{self.LEASE}", *here)
        # Not in any other namespace, nor cluster-wide (kube-system holds the
        # control plane's own leases).
        for ns in (namespace, "kube-system", "kube-node-lease"):
            for verb in ("create", "get", "update"):
                assert not can_i(kubeconfig, verb, leases, "-n", ns), (verb, ns)
                assert not can_i(kubeconfig, verb, f"{leases}/{self.LEASE}", "-n", ns), (verb, ns)
        assert not can_i(kubeconfig, "create", leases, "--all-namespaces")
        assert not can_i(kubeconfig, "get", f"{leases}/{self.LEASE}", "--all-namespaces")

    def test_two_replicas_become_available(
        self, install: str, kubeconfig: Path, local_cluster: object
    ) -> None:
        kubectl(
            kubeconfig,
            "rollout",
            "status",
            "deployment/microservice-operator",
            "-n",
            NAMESPACE,
            "--timeout=120s",
        )
        ready = kubectl(
            kubeconfig,
            "get",
            "deployment/microservice-operator",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ).stdout
        assert ready == "2"
