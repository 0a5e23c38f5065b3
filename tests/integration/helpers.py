"""Small helpers for integration tests against a real API server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def end_process(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Terminate a child this test started, and kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.25,
    message: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Polls predicate until it returns a truthy value, and returns that value.

    Raises AssertionError naming `message`, the last value and the last ignored
    exception if the timeout passes first. Exceptions not listed in `ignore`
    propagate at once.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            last, last_exc = value, None
        except ignore as exc:
            last_exc = exc
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = f"; last error: {last_exc!r}" if last_exc is not None else ""
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {message}; "
                f"last value: {last!r}{detail}"
            )
        time.sleep(interval)


def holds_for(seconds: float, check: Callable[[], object], interval: float = 0.25) -> None:
    """Runs ``check`` (which asserts) again and again over an observation window: for
    what must *not* happen, where there is no condition to wait for."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check()
        time.sleep(interval)


def condition(obj: Any, ctype: str) -> Any:
    """The condition of type `ctype` from a kubernetes-client object's status, or None."""
    for cond in getattr(obj.status, "conditions", None) or []:
        if cond.type == ctype:
            return cond
    return None
