"""Repository-wide pytest configuration: marks tests by their directory."""

from __future__ import annotations

import os
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


DURATIONS = "mso/durations"
"""pytest's cache key of each test's last seconds (setup + call + teardown)."""
UNKNOWN_SECONDS = {"integration": 30.0, "faults": 30.0}
"""The guess for a test not timed yet: a new cluster test is likely slow."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        for mark, directory in MARKS.items():
            if path.is_relative_to(directory):
                item.add_marker(getattr(pytest.mark, mark))
        if any(path.is_relative_to(d) for d in SERIAL):
            item.add_marker(pytest.mark.serial)
    # Longest first (the LPT rule): parallel test processes are handed tests in this
    # order, so a 3-minute test starts at the beginning, not as the last one, and the
    # short ones fill the end. Every xdist worker reads the same cache, so all collect
    # the same order. An xdist_group (one process, its tests in order: a Helm release
    # installed, upgraded, uninstalled) moves as one, by its total. Only when asked
    # (MSO_TEST_ORDER=longest-first, which `make test` sets); without timings (a fresh
    # clone), or outside xdist, the order stays as collected.
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    known: dict[str, float] = cache.get(DURATIONS, {}) if cache is not None else {}
    longest_first_asked = os.environ.get("MSO_TEST_ORDER") == "longest-first"
    if known and longest_first_asked and hasattr(config, "workerinput"):
        items[:] = longest_first(items, known)


def longest_first(items: list[pytest.Item], known: dict[str, float]) -> list[pytest.Item]:
    """``items`` by group (an xdist_group, else the test alone), the groups with the
    most known (or guessed) seconds first; a group keeps its own order."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        key = f"group:{mark.args[0] if mark.args else mark.kwargs.get('name')}" if mark else ""
        groups.setdefault(key or item.nodeid, []).append(item)

    def seconds(item: pytest.Item) -> float:
        nodeid = plain_nodeid(item.nodeid)
        if nodeid in known:
            return known[nodeid]
        marks = [s for m, s in UNKNOWN_SECONDS.items() if item.get_closest_marker(m)]
        return max(marks, default=0.0)

    ordered = sorted(groups.values(), key=lambda g: -sum(seconds(i) for i in g))
    return [item for group in ordered for item in group]


_TIMES = pytest.StashKey[dict[str, float]]()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Time each test (on the process that reports results: xdist's controller)."""
    times = _SESSION_CONFIG[0].stash.setdefault(_TIMES, {}) if _SESSION_CONFIG else None
    if times is not None:
        nodeid = plain_nodeid(report.nodeid)
        times[nodeid] = times.get(nodeid, 0.0) + report.duration


def plain_nodeid(nodeid: str) -> str:
    """A test's id without the "@<group>" xdist adds to a grouped test's."""
    head, at, group = nodeid.rpartition("@")
    return head if at and "]" not in group and "::" not in group else nodeid


_SESSION_CONFIG: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    # Only a parallel run's controller records timings: they order parallel runs, and
    # a concurrent serial session must not overwrite them.
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _SESSION_CONFIG.append(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config in _SESSION_CONFIG and getattr(config, "cache", None) is not None:
        times = config.stash.get(_TIMES, {})
        if times:
            merged = {**config.cache.get(DURATIONS, {}), **times}
            config.cache.set(DURATIONS, {k: round(v, 2) for k, v in merged.items()})
        _SESSION_CONFIG.remove(config)


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
