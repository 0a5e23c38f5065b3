"""Operator flags and their environment fallbacks."""

import pytest

from microservice_operator import settings


def test_defaults_watch_all_namespaces() -> None:
    s = settings.parse([], env={})
    assert s.clusterwide
    assert (s.metrics_port, s.health_port, s.log_level, s.standalone) == (8080, 8081, "INFO", True)


def test_flags_win_over_environment() -> None:
    env = {"MSO_NAMESPACES": "a, b", "MSO_METRICS_PORT": "9000", "MSO_HEALTH_PORT": "9001"}
    s = settings.parse(["--namespace", "c", "--metrics-port", "9100"], env=env)
    assert s.namespaces == ("c",)
    assert s.metrics_port == 9100
    assert s.health_port == 9001


def test_environment_namespaces_are_split() -> None:
    s = settings.parse([], env={"MSO_NAMESPACES": "shop, ,billing", "MSO_LOG_LEVEL": "debug"})
    assert s.namespaces == ("shop", "billing")
    assert not s.clusterwide
    assert s.log_level == "DEBUG"


def test_repeatable_namespace_flag_and_peering() -> None:
    s = settings.parse(["-n", "a", "-n", "b", "--peering", "mso"], env={})
    assert s.namespaces == ("a", "b")
    assert s.peering == "mso"
    assert not s.standalone


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SystemExit, match="MSO_METRICS_PORT"):
        settings.parse([], env={"MSO_METRICS_PORT": "eighty"})


def test_help_documents_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        settings.parse(["--help"], env={})
    out = capsys.readouterr().out
    for flag in ("--namespace", "--metrics-port", "--health-port", "MSO_NAMESPACES"):
        assert flag in out


def test_peers_get_distinct_priorities_unless_set() -> None:
    a = settings.parse(["--peering", "mso"], env={})
    b = settings.parse(["--peering", "mso"], env={})
    assert a.priority > 0 and b.priority > 0 and a.priority != b.priority
    assert settings.parse([], env={"MSO_PRIORITY": "7", "MSO_PEERING": "x"}).priority == 7
    assert settings.parse([], env={}).priority == 0
