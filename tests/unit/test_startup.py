"""Start-up diagnostics: what the operator says when it cannot list, and its flags."""

from __future__ import annotations

import json
import logging
import platform
import sys
import urllib.error
import urllib.request

import pytest

from microservice_operator import __main__ as entry
from microservice_operator import settings
from microservice_operator.informer import explain
from microservice_operator.kube import DEPLOYMENTS, MICROSERVICES, KubeError
from microservice_operator.metrics import OperatorMetrics


def test_a_missing_crd_names_it_and_the_command_that_installs_it() -> None:
    line = explain(KubeError(404, "NotFound", "the server could not find it"), MICROSERVICES, None)
    assert "microservices.mso.dev" in line
    assert "kubectl apply --server-side -f crds/microservices.mso.dev.yaml" in line


def test_forbidden_names_the_resource_the_scope_and_the_fix() -> None:
    msg = 'deployments.apps is forbidden: User "x" cannot list resource "deployments"'
    line = explain(KubeError(403, "Forbidden", msg), DEPLOYMENTS, "shop")
    assert line.startswith("Forbidden to list deployments.apps in namespace shop")
    assert 'cannot list resource "deployments"' in line
    assert "rbac-application.yaml" in line


def test_unreachable_api_server_keeps_only_the_cause() -> None:
    raw = (
        "MaxRetryError: HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries "
        'exceeded with url: /api/v1/pods (Caused by NewConnectionError("<conn>: Failed '
        'to establish a new connection: [Errno 111] Connection refused"))'
    )
    line = explain(KubeError(0, "Transport", raw), DEPLOYMENTS, None)
    assert (
        line
        == "Cannot reach the API server ([Errno 111] Connection refused); retrying every second."
    )


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        settings.parse(["--version"], env={})
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip().startswith("microservice-operator 0.")


def test_log_format_json_one_object_per_line() -> None:
    assert settings.parse([], env={"MSO_LOG_FORMAT": "json"}).log_format == "json"
    record = logging.LogRecord("microservice_operator", logging.ERROR, "f", 1, "a %s", ("b",), None)
    out = json.loads(entry.JsonFormatter().format(record))
    assert (out["level"], out["logger"], out["message"]) == (
        "ERROR",
        "microservice_operator",
        "a b",
    )
    assert out["time"].endswith("+00:00")


def test_readyz_says_why_until_ready() -> None:
    server = OperatorMetrics().serve(0, host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}/readyz"
    try:
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url, timeout=5)
        assert exc.value.code == 503
        assert exc.value.read().decode() == "not ready: starting\n"
        server.set_readiness(lambda: (False, "the CRD is missing"))
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url, timeout=5)
        assert "the CRD is missing" in exc.value.read().decode()
        server.set_readiness(lambda: (True, "leader"))
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert (resp.status, resp.read().decode()) == (200, "ok: leader\n")
        with urllib.request.urlopen(server.url, timeout=5) as resp:  # /metrics still served
            assert b"mso_" in resp.read()
    finally:
        server.stop()


def test_few_malloc_arenas_asks_glibc_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    assert entry.few_malloc_arenas() is glibc
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the operator's user knows better
    assert entry.few_malloc_arenas() is False
