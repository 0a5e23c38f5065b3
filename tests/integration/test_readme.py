"""The README's local quickstart, run as written, so it cannot rot.

`make run` starts (here: finds) the local control plane, installs the CRD and runs the
operator in the foreground; the console commands of the quickstart section then run
unchanged through bash, with kubectl's namespace pointed at the test's namespace by a
copied kubeconfig (so nothing lands in `default`). Watches (`-w`) become waits.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.fixtures import WORKER_SELECTOR
from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import KUBECTL, REPO
from tests.integration.operator_proc import OperatorProcess, free_port
from tests.integration.test_reconcile import get_ms, wait_condition, wait_ready

pytestmark = pytest.mark.integration


def quickstart_commands() -> list[str]:
    """The `$ ` lines of the README's local quickstart section, comments stripped."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart on the local control plane", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        if line.startswith("$ "):
            commands.append(re.sub(r"\s+#.*$", "", line[2:]).strip())
    return commands


def test_readme_has_a_quickstart() -> None:
    cmds = quickstart_commands()
    assert cmds[0] == "make run"
    assert any("samples/hello.yaml" in c for c in cmds)
    assert any("crashloop" in c for c in cmds)


@pytest.fixture
def make_run(
    kube_cluster: Any, operator: OperatorProcess, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`make run` in the foreground, with the session operator paused meanwhile."""
    if not kube_cluster.local or "MSO_LOCALCLUSTER_DIR" in os.environ:
        pytest.skip("`make run` drives the repository's own local control plane")
    health = free_port()
    env = dict(
        os.environ,
        MSO_METRICS_PORT=str(free_port()),
        MSO_HEALTH_PORT=str(health),
        # `make run` watches every namespace; here only this test process's, like
        # every operator a test starts (parallel test processes share the cluster).
        MSO_NAMESPACE_SELECTOR=WORKER_SELECTOR,
    )
    env.pop("KUBECONFIG", None)
    operator.stop()
    log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "make-run.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2):
                return True
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=120, interval=0.5, message="make run: operator healthy")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        operator.start()


def test_local_quickstart_as_written(
    make_run: subprocess.Popen[bytes],
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    kc = tmp_path / "kubeconfig"
    shutil.copy(kubeconfig, kc)
    subprocess.run(
        [
            KUBECTL,
            f"--kubeconfig={kc}",
            "config",
            "set-context",
            "--current",
            f"--namespace={namespace}",
        ],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ, KUBECONFIG=str(kc))
    for line in quickstart_commands():
        if line.startswith(("make run", "eval ")):
            continue  # make run is the fixture; eval sets KUBECONFIG, set above
        watch = line.endswith(" -w")
        cmd = line.removesuffix(" -w")
        res = subprocess.run(
            ["bash", "-c", cmd],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, (cmd, res.stderr)
        if "apply -f manifests/samples/hello.yaml" in cmd:
            wait_ready(kube_api, namespace, "hello")
        if "crashloop" in cmd:
            wait_condition(kube_api, namespace, "hello", "RolledBack", status="True", timeout=150)
        if watch and "get ms hello" in cmd:
            ms = get_ms(kube_api, namespace, "hello")
            assert ms["status"]["phase"] == "Degraded"
    events = (
        client.CoreV1Api(kube_api)
        .list_namespaced_event(
            namespace, field_selector="involvedObject.name=hello,reason=RolledBack"
        )
        .items
    )
    assert events
