"""Fixtures of the fault-injection suite: supervised operator replicas. The control
plane, the CRD and the session operator are the shared ones (tests/conftest.py).

Every test here stops the session's operator for its duration (so each write seen in
the cluster comes from the replicas under test) and starts it again afterwards.
"""

from __future__ import annotations

from tests.faults.fixtures import fleet  # noqa: F401
