"""Repository-wide pytest configuration: marks tests by their directory."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MARKS = {
    "integration": TESTS / "integration",
    "faults": TESTS / "faults",
    "e2e": TESTS / "e2e",
}
SERIAL = (TESTS / "faults" / "test_control_plane.py", TESTS / "e2e")
"""Tests that change the control plane itself (restart the API server or etcd) and so
run alone, never next to other test processes: marked ``serial`` (as is any module
that marks itself, e.g. one that replaces the CRD). The other fault tests break only
their own operators (kills, their own fault proxies, their own namespace's status
and admission policies) and run in parallel like the rest."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        for mark, directory in MARKS.items():
            if path.is_relative_to(directory):
                item.add_marker(getattr(pytest.mark, mark))
        if any(path.is_relative_to(d) for d in SERIAL):
            item.add_marker(pytest.mark.serial)


# Cluster fixtures shared by tests/integration and tests/faults (see the module).
from tests.integration.fixtures import (  # noqa: E402, F401
    WORKER_SELECTOR,
    kube_api,
    kube_cluster,
    kubeconfig,
    local_cluster,
    namespace,
    pytest_collection_finish,
    pytest_sessionfinish,
    pytest_sessionstart,
)
from tests.integration.operator_fixtures import crd, operator  # noqa: E402, F401
from tests.integration.operator_proc import OperatorProcess  # noqa: E402

# Every operator a test starts watches only this test process's namespaces, unless the
# test names its own scope: parallel test processes share one control plane.
OperatorProcess.default_scope = ("--namespace-selector", WORKER_SELECTOR)
