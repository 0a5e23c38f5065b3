"""Credentials from a kubeconfig or the pod's service account (connection.py)."""

from __future__ import annotations

import base64
import datetime
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from microservice_operator import connection
from microservice_operator.connection import ConfigError, Credentials
from microservice_operator.diff import parse_quantity


def write_kubeconfig(
    path: Path,
    *,
    user: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    context: str = "main",
    namespace: str | None = None,
) -> Path:
    ctx: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "contexts": [{"name": "main", "context": ctx}],
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://127.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_token_user_and_ca_data(tmp_path: Path) -> None:
    cfg = write_kubeconfig(
        tmp_path / "config",
        user={"token": "abc"},
        cluster={"server": "https://k:6443/", "certificate-authority-data": b64("-----BEGIN CA")},
        namespace="shop",
    )
    creds = connection.load({"KUBECONFIG": str(cfg)})
    assert creds.server == "https://k:6443"
    assert creds.ca_data == "-----BEGIN CA" and creds.ca_file is None
    assert creds.headers() == {"Authorization": "Bearer abc"}
    assert creds.default_namespace == "shop"


def test_relative_files_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "token").write_text("from-file\n")
    cfg = write_kubeconfig(
        tmp_path / "sub" / "config",
        user={"tokenFile": "token", "client-certificate": "c.crt", "client-key": "/abs/c.key"},
        cluster={"server": "https://k", "certificate-authority": "ca.crt"},
    )
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    assert creds.ca_file == str(tmp_path / "sub" / "ca.crt")
    assert creds.cert_file == str(tmp_path / "sub" / "c.crt")
    assert creds.key_file == "/abs/c.key"
    assert creds.headers() == {"Authorization": "Bearer from-file"}


def test_client_certificate_data_is_written_for_this_process_only(tmp_path: Path) -> None:
    cfg = write_kubeconfig(
        tmp_path / "config",
        user={"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")},
    )
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    assert creds.cert_file is not None and creds.key_file is not None
    assert Path(creds.cert_file).read_text() == "CERT"
    assert Path(creds.key_file).read_text() == "KEY"
    if sys.platform == "linux":  # in memory: nothing on disk outlives the process
        assert creds.key_file.startswith("/proc/self/fd/")
    else:
        assert stat.S_IMODE(os.stat(creds.key_file).st_mode) == 0o600
    assert creds.headers() == {}


def test_merged_kubeconfigs_first_value_wins(tmp_path: Path) -> None:
    first = write_kubeconfig(tmp_path / "a", user={"token": "first"})
    second = write_kubeconfig(tmp_path / "b", user={"token": "second"}, context="other")
    creds = connection.from_kubeconfig({"KUBECONFIG": f"{first}{os.pathsep}{second}"})
    assert creds.token == "first"


def test_basic_auth(tmp_path: Path) -> None:
    cfg = write_kubeconfig(tmp_path / "config", user={"username": "u", "password": "p"})
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    assert creds.headers() == {"Authorization": "Basic " + b64("u:p")}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("current-context"), "has no current-context"),
        (lambda d: d.update({"current-context": "nope"}), "context 'nope' not found"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server"),
        (lambda d: d["users"][0]["user"].update({"exec": {}}), "exec has no command"),
        (lambda d: d["users"][0]["user"].update({"client-key-data": "%%%"}), "base64"),
    ],
)
def test_bad_kubeconfigs_say_what_is_wrong(tmp_path: Path, mutate: Any, message: str) -> None:
    path = write_kubeconfig(tmp_path / "config", user={"token": "t"})
    doc = yaml.safe_load(path.read_text())
    mutate(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        connection.from_kubeconfig({"KUBECONFIG": str(path)})


def test_no_kubeconfig_and_no_cluster(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no kubeconfig at .*not running in a cluster"):
        connection.load({"HOME": str(tmp_path)}, service_account=tmp_path / "sa")


def test_in_cluster_token_is_read_again_every_minute(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("one")
    (sa / "ca.crt").write_text("CA")
    (sa / "namespace").write_text("ops\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = connection.load(env, service_account=sa)
    assert creds.server == "https://[fd00::1]:443"
    assert (creds.ca_file, creds.default_namespace) == (str(sa / "ca.crt"), "ops")
    now = [1000.0]
    creds.clock = lambda: now[0]
    creds.refresh(force=True)
    (sa / "token").write_text("two")  # rotated by the kubelet
    now[0] += 59
    assert creds.headers() == {"Authorization": "Bearer one"}
    now[0] += 2
    assert creds.headers() == {"Authorization": "Bearer two"}


def exec_plugin(tmp_path: Path, expires_in: float) -> Path:
    """A credential plugin that counts its runs and prints an ExecCredential."""
    script = tmp_path / "plugin.py"
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=expires_in)
    script.write_text(
        "import json, os, pathlib\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential' and os.environ['EXTRA'] == 'x'\n"
        "print(json.dumps({'apiVersion': info['apiVersion'], 'kind': 'ExecCredential',\n"
        f"  'status': {{'token': f'tok-{{n}}', 'expirationTimestamp': {when.isoformat()!r}}}}}))\n"
    )
    return script


def exec_kubeconfig(tmp_path: Path, script: Path) -> Path:
    """A kubeconfig whose user runs ``script`` as its exec credential plugin."""
    return write_kubeconfig(
        tmp_path / "config",
        user={
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": sys.executable,
                "args": [str(script)],
                "env": [{"name": "EXTRA", "value": "x"}],
            }
        },
    )


def test_exec_plugin_runs_again_when_its_credential_expires(tmp_path: Path) -> None:
    script = exec_plugin(tmp_path, expires_in=3600)
    cfg = exec_kubeconfig(tmp_path, script)
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    assert creds.headers() == {"Authorization": "Bearer tok-1"}  # run once, at loading
    now = [0.0]
    creds.clock = lambda: now[0]
    creds.refresh(force=True)  # as after a 401
    assert creds.headers() == {"Authorization": "Bearer tok-2"}
    assert creds.expiration is not None
    now[0] += 3000
    assert creds.headers() == {"Authorization": "Bearer tok-2"}  # still valid
    now[0] += 600  # within 10 s of the expiry
    assert creds.headers() == {"Authorization": "Bearer tok-3"}
    assert (tmp_path / "runs").read_text() == "3"


def test_a_failing_exec_plugin_names_itself(tmp_path: Path) -> None:
    cfg = write_kubeconfig(
        tmp_path / "config",
        user={"exec": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no')"]}},
    )
    with pytest.raises(ConfigError, match=r"exec plugin .* exited 1: no"):
        connection.from_kubeconfig({"KUBECONFIG": str(cfg)})


def test_credentials_without_auth_send_no_header() -> None:
    assert Credentials(server="https://k").headers() == {}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("0.5", "0.5"),
        ("1Gi", str(2**30)),
        ("1024Mi", str(2**30)),
        ("1e3", "1000"),
        ("1.5k", "1500"),
        ("10n", "0.00000001"),
        ("-1", "-1"),
        (".5", "0.5"),
        (2, "2"),
    ],
)
def test_quantities_by_value(text: object, value: str) -> None:
    assert parse_quantity(text) == parse_quantity(value)
    assert str(parse_quantity(text).normalize()) == str(parse_quantity(value).normalize())


@pytest.mark.parametrize("text", ["abc", "1ki", "", "1.2.3", "Mi", "1Ki2", True])
def test_not_quantities(text: object) -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_inline_token_wins_over_token_file_and_folded_base64_is_read(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file")
    folded = b64("-----BEGIN CA-----")
    cfg = write_kubeconfig(
        tmp_path / "config",
        user={"token": "inline", "tokenFile": "token"},
        cluster={
            "server": "https://k",
            "certificate-authority-data": folded[:8] + "\n" + folded[8:],
        },
    )
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    assert creds.headers() == {"Authorization": "Bearer inline"}
    assert creds.ca_data == "-----BEGIN CA-----"


def test_a_pod_without_the_service_port_uses_the_kubeconfig(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    cfg = write_kubeconfig(tmp_path / "config", user={"token": "kc"})
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBECONFIG": str(cfg)}
    assert connection.load(env, service_account=sa).token == "kc"


def test_exec_env_entries_need_a_name_and_value(tmp_path: Path) -> None:
    cfg = write_kubeconfig(
        tmp_path / "config",
        user={"exec": {"command": "x", "env": [{"name": "A"}]}},
    )
    with pytest.raises(ConfigError, match="exec env entries need a name and value"):
        connection.from_kubeconfig({"KUBECONFIG": str(cfg)})


def cert_plugin(tmp_path: Path, *, fail_after: int = 99) -> Path:
    """A plugin issuing a new client certificate per run (and failing after some)."""
    script = tmp_path / "certs.py"
    script.write_text(
        "import json, pathlib, sys\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = int(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text(str(n))\n"
        f"if n > {fail_after}: sys.exit('down')\n"
        "print(json.dumps({'kind': 'ExecCredential', 'status': {\n"
        "  'clientCertificateData': f'CERT{n}', 'clientKeyData': f'KEY{n}',\n"
        "  'expirationTimestamp': '2999-01-01T00:00:00Z'}}))\n"
    )
    return script


def test_each_exec_certificate_gets_its_own_files(tmp_path: Path) -> None:
    script = cert_plugin(tmp_path)
    cfg = write_kubeconfig(
        tmp_path / "config", user={"exec": {"command": sys.executable, "args": [str(script)]}}
    )
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    first = (creds.cert_file, creds.key_file)
    creds.refresh(force=True)
    assert (creds.cert_file, creds.key_file) != first  # the transport rebuilds its pool
    assert creds.cert_file is not None and Path(creds.cert_file).read_text() == "CERT2"
    assert first[0] is not None and Path(first[0]).read_text() == "CERT1"
    # The pair before the current one stays readable; older ones are let go.
    creds.refresh(force=True)
    assert Path(creds.cert_file).read_text() == "CERT3"
    if sys.platform == "linux":
        with pytest.raises(OSError):
            Path(first[0]).read_text()


def test_a_401_renews_once_and_a_failing_plugin_keeps_the_last_credential(tmp_path: Path) -> None:
    script = exec_plugin(tmp_path, expires_in=3600)
    cfg = exec_kubeconfig(tmp_path, script)
    creds = connection.from_kubeconfig({"KUBECONFIG": str(cfg)})
    assert creds.token == "tok-1"
    creds.refresh(force=True, used="tok-1")  # the first refused request renews
    creds.refresh(force=True, used="tok-1")  # the others were refused with the old one
    assert (creds.token, (tmp_path / "runs").read_text()) == ("tok-2", "2")
    script.write_text("import sys; sys.exit('metadata service down')")
    creds.refresh(force=True, used="tok-2")  # fails: the valid credential stays
    assert creds.headers() == {"Authorization": "Bearer tok-2"}
