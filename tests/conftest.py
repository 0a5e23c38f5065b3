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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        for mark, directory in MARKS.items():
            if path.is_relative_to(directory):
                item.add_marker(getattr(pytest.mark, mark))


# Cluster fixtures shared by tests/integration and tests/faults (see the module).
from tests.integration.fixtures import (  # noqa: E402, F401
    kube_api,
    kube_cluster,
    kubeconfig,
    local_cluster,
    namespace,
    pytest_collection_finish,
)
from tests.integration.operator_fixtures import crd, operator  # noqa: E402, F401
