"""Fixtures of the fault-injection suite: supervised operator replicas. The control
plane, the CRD and the session operator are the shared ones (tests/conftest.py).

Every test here stops its process's session operator for its duration (so each write
seen in the test's namespace comes from the replicas under test) and starts it again
afterwards. Other test processes run at the same time in their own namespaces, so a
test that reads the audit log keeps only its namespace's events.
"""

from __future__ import annotations

from tests.faults.fixtures import fleet  # noqa: F401
