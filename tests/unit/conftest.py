"""Unit tests start from empty result caches: a verdict cached by one test (keyed by a
uid and resourceVersion its fixtures reuse) must not answer for another."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from microservice_operator import diff, plan


@pytest.fixture(autouse=True)
def _empty_caches() -> Iterator[None]:
    diff._COMPARED.clear()
    plan._NAMES.clear()
    yield
