"""The fleet fixture (imported by conftest.py next to the shared cluster fixtures)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.supervise import Fleet
from tests.integration.operator_proc import OperatorProcess


@pytest.fixture
def fleet(
    kubeconfig: Path, crd: Path, operator: OperatorProcess, tmp_path: Path
) -> Iterator[Fleet]:
    """Operator replicas started by the test, restarted when they exit (as a kubelet
    would), all stopped at the end; the session operator is paused meanwhile. Each
    replica's last log lines are printed at the end: pytest shows them when the test
    failed (the logs themselves go with the test's temporary directory)."""
    operator.stop()
    fleet = Fleet(kubeconfig, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()
        for log in sorted(tmp_path.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print(f"--- {log.name} (last {len(tail)} lines)", *tail, sep="\n")
        operator.start()
