"""Start-up that explains itself: the operator started before its CRD exists, or
without the permissions it needs, says what is wrong and what to do, stays alive
but not ready, and goes on within seconds once it is fixed."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import REPO, kubectl, wait_established
from tests.integration.operator_proc import OperatorProcess
from tests.integration.test_reconcile import apply_ms, sample, wait_ready

# Deletes and re-creates the CRD: every other test process would lose its MicroServices.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

CRD = REPO / "crds" / "microservices.mso.dev.yaml"
CRD_NAME = "microservices.mso.dev"


def http(url: str) -> tuple[int, str]:
    """(status, body) of a GET on loopback; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


def readyz(proc: OperatorProcess) -> tuple[int, str]:
    return http(f"http://127.0.0.1:{proc.metrics_port}/readyz")


def healthz(proc: OperatorProcess) -> tuple[int, str]:
    return http(f"http://127.0.0.1:{proc.health_port}/healthz")


def crd_exists(api: client.ApiClient) -> bool:
    ext = client.ApiextensionsV1Api(api)
    return any(c.metadata.name == CRD_NAME for c in ext.list_custom_resource_definition().items)


def install_crd(kubeconfig: Path) -> None:
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    wait_established(kubeconfig, f"crd/{CRD_NAME}")


def test_started_before_the_crd_it_says_so_and_starts_once_it_exists(
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    operator.stop()  # the session operator would reconcile this namespace too
    own = OperatorProcess(str(kubeconfig), tmp_path, "--namespace", namespace)
    try:
        kubectl(kubeconfig, "delete", "crd", CRD_NAME, "--wait=true", "--timeout=120s")
        wait_for(lambda: not crd_exists(kube_api), timeout=60, message="the CRD gone")
        own.start(synced=False)
        wait_for(
            lambda: (
                "The MicroService CRD (microservices.mso.dev) is not installed" in own.log_text()
            ),
            timeout=20,
            message="the missing-CRD message",
        )
        text = own.log_text()
        assert "kubectl apply --server-side -f crds/microservices.mso.dev.yaml" in text
        assert text.count("is not installed") == 1, "said once, not once per retry"
        assert "Traceback" not in text
        status, body = readyz(own)
        assert status == 503 and "CRD" in body, (status, body)
        assert healthz(own)[0] == 200  # alive: a restart would not install the CRD

        install_crd(kubeconfig)
        installed = time.monotonic()
        wait_for(lambda: readyz(own)[0] == 200, timeout=30, message="/readyz ready")
        ready_after = time.monotonic() - installed
        apply_ms(kubeconfig, namespace, sample("hello.yaml"))
        wait_ready(kube_api, namespace, "hello", timeout=60)
        # "Within seconds": the LIST is retried every second until it works.
        assert ready_after < 10, ready_after
    finally:
        own.stop()
        if not crd_exists(kube_api):
            install_crd(kubeconfig)
        operator.start()


def _token_kubeconfig(kubeconfig: Path, namespace: str, account: str, out: Path) -> Path:
    """A kubeconfig for ServiceAccount ``account`` (no RBAC granted)."""
    token = kubectl(kubeconfig, "create", "token", account, "-n", namespace).strip()
    cfg = yaml.safe_load(kubeconfig.read_text())
    cluster = cfg["clusters"][0]
    cfg["users"] = [{"name": account, "user": {"token": token}}]
    cfg["contexts"] = [{"name": account, "context": {"cluster": cluster["name"], "user": account}}]
    cfg["current-context"] = account
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_missing_permissions_are_named(
    kubeconfig: Path, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    kubectl(kubeconfig, "create", "serviceaccount", "nobody", "-n", namespace)
    try:
        cfg = _token_kubeconfig(kubeconfig, namespace, "nobody", tmp_path / "kubeconfig")
    except (AssertionError, subprocess.CalledProcessError) as exc:  # no TokenRequest API
        pytest.skip(f"cannot mint a ServiceAccount token here: {exc}")
    own = OperatorProcess(str(cfg), tmp_path, "--namespace", namespace)
    own.start(synced=False)
    try:
        wait_for(
            lambda: "Forbidden to list" in own.log_text(), timeout=20, message="a Forbidden line"
        )
        text = own.log_text()
        # Verb, resource and who, from the API server; and the fix.
        assert 'cannot list resource "microservices"' in text, text[-2000:]
        assert "rbac-application.yaml" in text
        status, body = readyz(own)
        assert status == 503 and "Forbidden" in body
        assert healthz(own)[0] == 200
    finally:
        own.stop()
