"""Fixtures for tests against a real Kubernetes API server (integration and faults).

Registered once, in tests/conftest.py, so that a session running both suites shares
one control plane and one session operator (a fixture imported by two conftest files
would be two fixtures, and two operators would fight over every namespace).

The cluster is the one KUBECONFIG points at if it is set; otherwise the local
control plane (tools/localcluster) is started for the session, and stopped at
the end only if this session started it. MSO_KEEP_CLUSTER=1 leaves it running.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.integration.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
LOCALCLUSTER = REPO / "tools" / "localcluster" / "localcluster.py"
LOCAL_KUBECONFIG = (
    Path(os.environ.get("MSO_LOCALCLUSTER_DIR", REPO / ".localcluster")) / "kubeconfig"
).resolve()


WORKER = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}"
"""This test process: a pytest-xdist worker (gw0, gw1, ...) or the only one, with its
pid, so that test runs started side by side are apart too."""
WORKER_LABEL = "mso.dev/test-worker"
WORKER_SELECTOR = f"{WORKER_LABEL}={WORKER}"
"""Selects this process's namespaces. Every operator a test starts watches only these
(``--namespace-selector``), so test processes share one control plane without their
operators touching each other's MicroServices."""


@dataclass(frozen=True)
class KubeCluster:
    kubeconfig: Path
    local: bool  # the local control plane: kwok nodes, bad-release stages, usage metrics
    started_here: bool


def _run_localcluster(pytestconfig: pytest.Config, *args: str) -> int:
    """Runs localcluster.py with pytest's capture suspended so its progress (on stderr)
    shows live, e.g. during a cold build."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        return subprocess.run(
            [sys.executable, str(LOCALCLUSTER), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            check=False,
        ).returncode


def pytest_collection_finish(session: pytest.Session) -> None:
    """Builds the control plane's binaries before any test timer starts.

    A cold build takes far longer than the per-test timeout, and fixture setup
    counts against the first test's timeout; a warm build is a no-op.
    """
    if os.environ.get("KUBECONFIG") or session.config.option.collectonly:
        return
    here = Path(__file__).resolve().parent
    cluster_dirs = (here, here.parent / "faults")
    if not any(
        Path(str(item.path)).is_relative_to(d) for item in session.items for d in cluster_dirs
    ):
        return
    if _run_localcluster(session.config, "build") != 0:
        raise pytest.UsageError("building the local control plane failed (see output above)")


def _distributed(config: pytest.Config) -> bool:
    """The pytest-xdist controller of several worker processes (not a worker)."""
    workers = getattr(config.option, "numprocesses", None)
    return not hasattr(config, "workerinput") and workers not in (None, 0)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under pytest-xdist, the controller starts the local control plane once, before
    any worker runs; the workers find it running and leave it to the controller."""
    config = session.config
    if os.environ.get("KUBECONFIG") or not _distributed(config):
        return
    status = [sys.executable, str(LOCALCLUSTER), "status"]
    if subprocess.run(status, capture_output=True, check=False).returncode == 0:
        return
    if _run_localcluster(config, "up") != 0:
        _run_localcluster(config, "down")
        raise pytest.UsageError("the local control plane did not start (see output above)")
    config.stash[_STARTED_BY_CONTROLLER] = True


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the control plane the controller started (MSO_KEEP_CLUSTER=1 keeps it)."""
    config = session.config
    if (
        config.stash.get(_STARTED_BY_CONTROLLER, False)
        and os.environ.get("MSO_KEEP_CLUSTER") != "1"
    ):
        _run_localcluster(config, "down")


_STARTED_BY_CONTROLLER = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def kube_cluster(pytestconfig: pytest.Config) -> Iterator[KubeCluster]:
    env = os.environ.get("KUBECONFIG")
    if env:
        path = Path(env.split(os.pathsep)[0]).resolve()
        yield KubeCluster(path, local=path == LOCAL_KUBECONFIG, started_here=False)
        return
    was_running = (
        subprocess.run(
            [sys.executable, str(LOCALCLUSTER), "status"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if _run_localcluster(pytestconfig, "up") != 0:
        _run_localcluster(pytestconfig, "down")
        pytest.fail("the local control plane did not start (see output above)", pytrace=False)
    try:
        yield KubeCluster(LOCAL_KUBECONFIG, local=True, started_here=not was_running)
    finally:
        if not was_running and os.environ.get("MSO_KEEP_CLUSTER") != "1":
            _run_localcluster(pytestconfig, "down")


@pytest.fixture(scope="session")
def kubeconfig(kube_cluster: KubeCluster) -> Path:
    """Path of the kubeconfig for the cluster under test."""
    return kube_cluster.kubeconfig


@pytest.fixture
def local_cluster(kube_cluster: KubeCluster) -> KubeCluster:
    """Skips the test unless it runs against the local control plane (kwok stages)."""
    if not kube_cluster.local:
        pytest.skip("needs the local control plane's kwok nodes and stages")
    return kube_cluster


@pytest.fixture(scope="session")
def kube_api(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


@contextlib.contextmanager
def fresh_namespace(kube_api: client.ApiClient, name: str, labels: dict[str, str]) -> Iterator[str]:
    """Create a namespace, wait until pods can be created in it, delete it (with
    everything in it) afterwards."""
    core = client.CoreV1Api(kube_api)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )

    def default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    try:
        # Pods are rejected until the ServiceAccount controller made "default".
        wait_for(default_sa, timeout=30, interval=0.1, message=f"default SA in {name}")
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted (with everything in it) afterwards."""
    labels = {"app.kubernetes.io/managed-by": "pytest", WORKER_LABEL: WORKER}
    with fresh_namespace(kube_api, f"test-{uuid.uuid4().hex[:8]}", labels) as name:
        yield name
