"""Operator flags and their environment fallbacks."""

import pytest

from microservice_operator import settings


def test_defaults_watch_all_namespaces() -> None:
    s = settings.parse([], env={})
    assert s.clusterwide
    assert (s.metrics_port, s.health_port, s.log_level, s.leader_election) == (
        8080,
        8081,
        "INFO",
        False,
    )


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


def test_repeatable_namespace_flag_and_leader_election() -> None:
    s = settings.parse(["-n", "a", "-n", "b", "--leader-election"], env={"POD_NAME": "op-1"})
    assert s.namespaces == ("a", "b")
    assert s.leader_election
    assert (s.lease_name, s.lease_namespace, s.identity) == (
        "microservice-operator",
        "mso-system",
        "op-1",
    )


def test_leader_election_from_the_environment() -> None:
    env = {"MSO_LEADER_ELECTION": "true", "POD_NAMESPACE": "ops", "MSO_LEADER_ELECTION_ID": "x"}
    s = settings.parse([], env=env)
    assert (s.leader_election, s.lease_namespace, s.lease_name) == (True, "ops", "x")
    assert s.identity  # hostname-pid without POD_NAME
    assert not settings.parse([], env={}).leader_election


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SystemExit, match="MSO_METRICS_PORT"):
        settings.parse([], env={"MSO_METRICS_PORT": "eighty"})


def test_help_documents_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        settings.parse(["--help"], env={})
    out = capsys.readouterr().out
    for flag in ("--namespace", "--metrics-port", "--health-port", "MSO_NAMESPACES"):
        assert flag in out


def test_namespace_selector_from_flag_or_environment() -> None:
    s = settings.parse([], env={"MSO_NAMESPACE_SELECTOR": "team=payments"})
    assert s.namespace_selector == "team=payments"
    assert s.clusterwide  # cluster-wide watches; the selector picks namespaces
    s = settings.parse(["--namespace-selector", "shard in (a,b)"], env={})
    assert s.namespace_selector == "shard in (a,b)"


def test_namespace_and_namespace_selector_exclude_each_other() -> None:
    with pytest.raises(SystemExit, match="exclude each other"):
        settings.parse(["-n", "a", "--namespace-selector", "team=x"], env={})


@pytest.mark.parametrize("selector", ["team payments", "a=b=c", "=x", "shard in a"])
def test_a_namespace_selector_that_is_no_label_selector_fails_at_start(selector: str) -> None:
    with pytest.raises(SystemExit, match="is not a label selector"):
        settings.parse(["--namespace-selector", selector], env={})


def test_prometheus_url_from_flag_or_environment_and_validated() -> None:
    assert settings.parse([], env={}).prometheus_url == ""
    s = settings.parse(["--prometheus-url", "http://prom.monitoring:9090/"], env={})
    assert s.prometheus_url == "http://prom.monitoring:9090"  # no trailing slash
    s = settings.parse([], env={"MSO_PROMETHEUS_URL": "https://thanos.example/prometheus"})
    assert s.prometheus_url == "https://thanos.example/prometheus"
    for bad in ("prom:9090", "ftp://prom", "http://prom:9090/?q=1", "http:// prom"):
        with pytest.raises(SystemExit, match="--prometheus-url"):
            settings.parse(["--prometheus-url", bad], env={})
