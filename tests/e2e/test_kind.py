"""End to end on kind: the real image, installed the documented way, runs a service.

This is the README's kind quickstart as a test: build the operator image and the
hello app image, `kind load` both, `kubectl apply -k manifests/`, apply the hello
sample and wait until the MicroService is Ready. It needs a Docker engine and the
`kind` CLI, and skips with the reason when either is missing.

It uses the kind cluster named by MSO_KIND_CLUSTER if that exists, else creates
`mso-e2e` (kubeconfig in a temporary file; your ~/.kube/config is not touched) and
deletes it afterwards unless MSO_KEEP_CLUSTER=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
OPERATOR_IMAGE = f"microservice-operator:{VERSION}"
HELLO_SAMPLE = ROOT / "manifests" / "samples" / "hello.yaml"
KUBECTL = str(Path(sys.executable).with_name("kubectl"))


def run(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def docker_unavailable() -> str | None:
    """Why this suite cannot run here, or None."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "no Docker engine: `docker info` timed out"
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine: `docker info` failed ({reason})"
    if shutil.which("kind") is None:
        return "`kind` is not installed (https://kind.sigs.k8s.io)"
    return None


@pytest.fixture(scope="module")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(cluster name, kubeconfig path) of a kind cluster."""
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    name = os.environ.get("MSO_KIND_CLUSTER", "mso-e2e")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    existing = run("kind", "get", "clusters").stdout.split()
    created = name not in existing
    if created:
        run(
            "kind",
            "create",
            "cluster",
            "--name",
            name,
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            "180s",
        )
    else:
        kubeconfig.write_text(run("kind", "get", "kubeconfig", "--name", name).stdout)
    try:
        yield name, kubeconfig
    finally:
        if created and os.environ.get("MSO_KEEP_CLUSTER") != "1":
            run("kind", "delete", "cluster", "--name", name, check=False)


def kubectl(kubeconfig: Path, *args: str) -> str:
    return run(KUBECTL, f"--kubeconfig={kubeconfig}", *args).stdout


def test_hello_sample_becomes_ready_on_kind(kind_cluster: tuple[str, Path]) -> None:
    name, kubeconfig = kind_cluster
    hello_image = yaml.safe_load(HELLO_SAMPLE.read_text())["spec"]["image"]

    # The README's kind quickstart, step by step.
    run("docker", "build", "-t", OPERATOR_IMAGE, str(ROOT))
    run("docker", "build", "-t", hello_image, str(ROOT / "examples" / "hello"))
    for image in (OPERATOR_IMAGE, hello_image):
        run("kind", "load", "docker-image", image, "--name", name)
    kubectl(kubeconfig, "apply", "-k", str(ROOT / "manifests"))
    kubectl(
        kubeconfig,
        "-n",
        "mso-system",
        "rollout",
        "status",
        "deployment/microservice-operator",
        "--timeout=180s",
    )
    kubectl(kubeconfig, "apply", "-n", "default", "-f", str(HELLO_SAMPLE))
    try:
        kubectl(
            kubeconfig,
            "-n",
            "default",
            "wait",
            "--for=condition=Ready",
            "ms/hello",
            "--timeout=300s",
        )
        ms = json.loads(kubectl(kubeconfig, "-n", "default", "get", "ms", "hello", "-o", "json"))
        assert ms["status"]["readyReplicas"] == ms["spec"]["replicas"]
        svc = json.loads(kubectl(kubeconfig, "-n", "default", "get", "svc", "hello", "-o", "json"))
        assert svc["spec"]["type"] == "LoadBalancer"
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] in (
            [(80, 5000)],
            [(80, "http")],
        ), svc["spec"]["ports"]
        # The operator's own pod really runs as the image's non-root user.
        pod = json.loads(
            kubectl(
                kubeconfig,
                "-n",
                "mso-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=microservice-operator",
                "-o",
                "json",
            )
        )["items"][0]
        assert pod["status"]["containerStatuses"][0]["ready"] is True
    finally:
        # Uninstall as the README says: MicroServices first (the operator is still
        # there, and ownerReferences let the garbage collector remove the children),
        # then the operator with its CRD.
        kubectl(
            kubeconfig, "delete", "-n", "default", "-f", str(HELLO_SAMPLE), "--ignore-not-found"
        )
        kubectl(kubeconfig, "delete", "-k", str(ROOT / "manifests"), "--ignore-not-found")
