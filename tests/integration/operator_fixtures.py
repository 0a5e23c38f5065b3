"""Fixtures that install the CRD and run the real operator (imported by conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import wait_for
from tests.integration.operator_proc import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
KUBECTL = str(Path(sys.executable).with_name("kubectl"))


def kubectl(
    kubeconfig: Path | str, *args: str, input: str | None = None, check: bool = True
) -> str:
    """Run the dev-extras kubectl against the cluster under test; stdout on success."""
    res = subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res.stdout if res.returncode == 0 else res.stderr


ESTABLISHED = '{.status.conditions[?(@.type=="Established")].status}'


def wait_established(kubeconfig: Path | str, *crds: str, timeout: float = 60) -> None:
    """Wait until each CRD (``crd/NAME``) is Established. Not ``kubectl wait
    --for=condition=Established``: right after a create it may read the CRD before the
    API server gave it any condition, and kubectl 1.37 then fails at once ("accessor
    error: <nil>") instead of waiting."""

    def established(ref: str) -> bool:
        out = kubectl(kubeconfig, "get", ref, "-o", f"jsonpath={ESTABLISHED}", check=False)
        return out == "True"

    for ref in crds:
        wait_for(lambda r=ref: established(r), timeout=timeout, message=f"{ref} Established")


@pytest.fixture(scope="session")
def crd(kubeconfig: Path) -> Path:
    """The MicroService CRD, applied from crds/ and Established."""
    path = REPO / "crds" / "microservices.mso.dev.yaml"
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    wait_established(kubeconfig, "crd/microservices.mso.dev")
    return path


@pytest.fixture(scope="session")
def operator(
    kubeconfig: Path, crd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator (console script) running against the cluster for the whole session."""
    proc = OperatorProcess(str(kubeconfig), tmp_path_factory.mktemp("operator"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
