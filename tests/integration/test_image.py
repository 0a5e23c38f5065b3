"""The operator's container image, built and run without a Docker engine.

tools/image.sh builds the repository's Dockerfile with rootful podman on a stand-in
Python base made from Debian packages (installing podman, buildah, runc and
mmdebstrap with apt-get when missing). The image then runs as it would in the
restricted pod: read-only root, numeric non-root user, no capabilities, no privilege
escalation, a read-only kubeconfig. It watches only the test's namespace, reconciles
the hello sample to Ready, and serves /metrics and /healthz on loopback.

The session operator watches all namespaces: it is stopped for this test, so the
image's operator is the only one acting on the namespace, and started again after.

Skips only where rootful podman cannot run: not root, or podman missing with no
apt-get to install it (a failure instead with MSO_REQUIRE_IMAGE=1, as in CI). The
build log's tail is shown when the build fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import kubectl
from tests.integration.operator_proc import OperatorProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SH = ROOT / "tools" / "image.sh"
HELLO_SAMPLE = ROOT / "manifests" / "samples" / "hello.yaml"
# What every container needs on this kind of host (see tools/image.sh).
PODMAN_RUN = (
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "host",
)
BUILD_TIMEOUT = 1500  # cold: apt-get, a Debian base, PyPI downloads


def podman_unavailable() -> str | None:
    """Why the image cannot be built and run here, or None."""
    if os.geteuid() != 0:
        return "tools/image.sh builds and runs with rootful podman: needs root"
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        return "podman is not installed and there is no apt-get to install it"
    return None


@pytest.fixture(scope="session")
def operator_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image reference, built by tools/image.sh (cached layers make a rebuild quick)."""
    reason = podman_unavailable()
    if reason and os.environ.get("MSO_REQUIRE_IMAGE") == "1":
        pytest.fail(f"MSO_REQUIRE_IMAGE=1 but {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("image") / "image-build.log"
    started = time.monotonic()
    res = subprocess.run(
        [str(IMAGE_SH)],
        env=dict(os.environ, MSO_IMAGE_LOG=str(log)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) if log.exists() else ""
        pytest.fail(
            f"tools/image.sh failed ({res.returncode}) after {time.monotonic() - started:.0f}s:\n"
            f"{res.stderr}\n--- last lines of {log} ---\n{tail}",
            pytrace=False,
        )
    print(res.stderr, end="")  # size and build time, shown with -rP or on failure
    return res.stdout.strip().splitlines()[-1]


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    res = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res.stdout


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


@pytest.fixture
def readable_kubeconfig(kubeconfig: Path, tmp_path: Path) -> Path:
    """The cluster's kubeconfig, self-contained and readable by the image's user 65532
    (the original is root's, mode 0600), as a Secret volume would be in a pod."""
    flat = kubectl(kubeconfig, "config", "view", "--raw", "--flatten", "--minify")
    path = tmp_path / "kubeconfig"
    path.write_text(flat)
    path.chmod(0o644)
    return path


@pytest.fixture
def session_operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """No second operator: the session one watches every namespace, this one's too."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@pytest.mark.timeout(BUILD_TIMEOUT + 600)
def test_image_runs_the_hello_sample_on_the_local_control_plane(
    operator_image: str,
    readable_kubeconfig: Path,
    kubeconfig: Path,
    kube_api: client.ApiClient,
    namespace: str,
    session_operator_stopped: None,
) -> None:
    container = f"mso-image-{namespace}"
    metrics_port, health_port = free_port(), free_port()
    podman("rm", "-f", "--ignore", container)
    podman(
        "run",
        "--detach",
        "--name",
        container,
        *PODMAN_RUN,
        "--read-only",
        "--user",
        "65532:65532",
        "--cap-drop=ALL",
        "--security-opt",
        "no-new-privileges",
        "--volume",
        f"{readable_kubeconfig}:/etc/mso/kubeconfig:ro",
        "--env",
        "KUBECONFIG=/etc/mso/kubeconfig",
        "--env",
        f"MSO_NAMESPACES={namespace}",
        operator_image,
        "--metrics-port",
        str(metrics_port),
        "--health-port",
        str(health_port),
    )

    def logs() -> str:
        return podman("logs", "--tail", "60", container, check=False)

    try:
        # Up: /healthz answers while the container keeps running.
        def alive_and_answering() -> bool:
            state = json.loads(podman("inspect", container))[0]["State"]
            assert state["Running"], f"container exited {state['ExitCode']}:\n{logs()}"
            return get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200

        wait_for(
            alive_and_answering,
            timeout=90,
            interval=0.5,
            message="/healthz of the container",
            ignore=(OSError,),
        )

        # It runs as the image says, with nothing to spare.
        config = json.loads(podman("inspect", container))[0]
        assert config["Config"]["User"] == "65532:65532"
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        assert podman("exec", container, "id", "-u").strip() == "65532"
        assert "pip" not in podman("exec", container, "ls", "/usr/local/bin").split()

        kubectl(kubeconfig, "apply", "-n", namespace, "-f", str(HELLO_SAMPLE))
        kubectl(
            kubeconfig,
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            "ms/hello",
            "--timeout=180s",
        )
        ms = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
            "mso.dev", "v1alpha1", namespace, "microservices", "hello"
        )
        assert ms["status"]["readyReplicas"] == ms["spec"]["replicas"] == 3
        apps = client.AppsV1Api(kube_api)
        assert apps.read_namespaced_deployment("hello", namespace).status.ready_replicas == 3

        status, body = get(f"http://127.0.0.1:{health_port}/healthz")
        assert status == 200, body
        status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        key = ("mso_microservice_ready", (("name", "hello"), ("namespace", namespace)))
        assert samples.get(key) == 1.0, sorted(k for k in samples if k[0].startswith("mso_"))
    except BaseException:
        print(f"--- podman logs {container} ---\n{logs()}")
        raise
    finally:
        podman("rm", "-f", "--ignore", "--time", "10", container, check=False)
