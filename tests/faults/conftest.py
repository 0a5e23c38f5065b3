"""Fixtures of the fault-injection suite: the same real control plane as the
integration tests (their fixtures are shared), and supervised operator replicas.

Every test here stops the session's operator for its duration (so each write seen in
the cluster comes from the replicas under test) and starts it again afterwards.
"""

from __future__ import annotations

from tests.faults.fixtures import fleet  # noqa: F401
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with integration
    kube_api,
    kube_cluster,
    kubeconfig,
    local_cluster,
    namespace,
    pytest_collection_finish,
)
from tests.integration.operator_fixtures import crd, operator  # noqa: F401
