"""Where the API server is and how to authenticate to it: the in-cluster service
account, or a kubeconfig (the one ``kubectl`` uses).

The operator's own lean transport (:mod:`kube`) and kopf's session are both built
from one :class:`Credentials`. The official client library is not loaded in the
operator process: importing it loads ~800 model classes (14 MiB and 0.3 s of start-up
per process) of which the operator used only the kubeconfig loader. What it did is
done here, the way client-go does it:

- in a pod: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the service account's CA and
  token; the token file is read again at most every minute (projected tokens rotate);
- else the kubeconfig files of ``KUBECONFIG`` (merged, the first value wins) or
  ``~/.kube/config``: the current context's cluster (server, CA file or data,
  ``insecure-skip-tls-verify``, ``proxy-url``, ``tls-server-name``) and user (client
  certificate and key, file or data; ``token``, ``tokenFile``; basic auth; an
  ``exec`` credential plugin, run again when its credential expires). Relative paths
  are relative to the kubeconfig file that names them.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0
"""A token file is read again at most this often (client-go's cached token source)."""
EXEC_EARLY_SECONDS = 10.0
"""An exec credential is renewed this long before it expires."""
EXEC_TIMEOUT_SECONDS = 60.0
EXEC_RETRY_SECONDS = 10.0
"""A failed exec plugin run is tried again after this long, not on every request."""


class ConfigError(Exception):
    """No usable configuration: the message says what is missing or wrong."""


@dataclass
class ExecPlugin:
    """A kubeconfig ``user.exec`` credential plugin (client.authentication.k8s.io)."""

    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    base_dir: Path

    def run(self) -> dict[str, Any]:
        """The ExecCredential status the plugin prints (token or client certificate,
        optional expirationTimestamp)."""
        command = self.command
        if os.sep in command and not os.path.isabs(command):
            command = str(self.base_dir / command)  # relative to the kubeconfig
        elif os.sep not in command:
            command = shutil.which(command) or command
        info = {
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            done = subprocess.run(
                [command, *self.args],
                env=env,
                capture_output=True,
                timeout=EXEC_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"kubeconfig exec plugin {self.command!r} failed: {exc}") from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()[-500:]
            raise ConfigError(
                f"kubeconfig exec plugin {self.command!r} exited {done.returncode}: {err}"
            )
        try:
            status = json.loads(done.stdout)["status"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"kubeconfig exec plugin {self.command!r} printed no ExecCredential status"
            ) from exc
        if not isinstance(status, dict):
            raise ConfigError(f"kubeconfig exec plugin {self.command!r}: status is not an object")
        return status


@dataclass
class Credentials:
    """One API server and one identity; thread-safe."""

    server: str
    ca_file: str | None = None
    ca_data: str | None = None  # PEM
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    exec_plugin: ExecPlugin | None = None
    proxy_url: str | None = None
    default_namespace: str | None = None
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _file_read_at: float | None = field(default=None, repr=False)
    _exec_due: float | None = field(default=None, repr=False)  # monotonic; None: run now
    _expires_at: float | None = field(default=None, repr=False)  # monotonic, really
    _expiration: datetime.datetime | None = field(default=None, repr=False)  # wall clock
    _cert_dir: str | None = field(default=None, repr=False)
    _memory_files: dict[str, int] = field(default_factory=dict, repr=False)
    _issued: int = field(default=0, repr=False)

    def refresh(self, *, force: bool = False, used: str | None = None) -> None:
        """Re-read a token file (at most every minute) and re-run an exec plugin whose
        credential expires soon, or at once with ``force`` (after a 401) unless the
        credential ``used`` by the refused request was already replaced.

        One thread runs the plugin; the others go on with the current credential
        meanwhile (they wait only when there is none yet). A plugin that fails is
        tried again after EXEC_RETRY_SECONDS, and its last credential is used until
        it really expires.
        """
        if force and used is not None and used != self.token:
            return  # another request already renewed it
        now = self.clock()
        if self.token_file and (
            force or self._file_read_at is None or now - self._file_read_at >= TOKEN_REREAD_SECONDS
        ):
            try:
                self.token = Path(self.token_file).read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"cannot read token file {self.token_file}: {exc}") from exc
            self._file_read_at = now
        plugin = self.exec_plugin
        if plugin is None or not (force or self._exec_due is None or now >= self._exec_due):
            return
        have = self.token is not None or self.cert_file is not None
        if not self._lock.acquire(blocking=not have):
            return  # another thread runs the plugin; the current credential still works
        try:
            if not force and self._exec_due is not None and self.clock() < self._exec_due:
                return  # renewed while we waited
            try:
                status = plugin.run()
            except ConfigError:
                self._exec_due = self.clock() + EXEC_RETRY_SECONDS
                if have and (self._expires_at is None or self.clock() < self._expires_at):
                    return  # keep the last credential while it is valid
                raise
            self._apply_exec(status, self.clock())
        finally:
            self._lock.release()

    def _apply_exec(self, status: dict[str, Any], now: float) -> None:
        if status.get("clientCertificateData") and status.get("clientKeyData"):
            # New files for every credential issued: the transport rebuilds its TLS
            # connections when the path changes, and a reader never sees half a pair.
            self._issued += 1
            cert = self._private_file(f"exec-{self._issued}.crt", status["clientCertificateData"])
            key = self._private_file(f"exec-{self._issued}.key", status["clientKeyData"])
            self.cert_file, self.key_file = cert, key
            # The pair before stays readable (a TLS context may be loading it right
            # now); older ones are closed, or a plugin renewing hourly would pile up.
            for old in (f"exec-{self._issued - 2}.crt", f"exec-{self._issued - 2}.key"):
                fd = self._memory_files.pop(old, None)
                if fd is not None:
                    os.close(fd)
        self.token = status.get("token") or None
        self._expires_at = self._expiration = None
        self._exec_due = float("inf")  # an expiration-less credential is kept until a 401
        stamp = status.get("expirationTimestamp")
        if stamp:
            try:
                when = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError as exc:
                raise ConfigError(f"exec plugin: bad expirationTimestamp {stamp!r}") from exc
            left = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
            self._expiration = when
            self._expires_at = now + max(0.0, left)
            self._exec_due = now + max(0.0, left - EXEC_EARLY_SECONDS)

    def _private_file(self, name: str, pem: str) -> str:
        """A PEM only this process reads (ssl loads chains from files), whole or not at
        all. On Linux an anonymous memory file read through ``/proc/self/fd``: nothing
        on disk, and gone with the process however it ends (files in /tmp outlived every
        SIGKILLed operator, private keys included). Elsewhere a 0600 file in a private
        directory, removed at a normal exit."""
        if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
            fd = os.memfd_create(f"mso-{name}", os.MFD_CLOEXEC)
            data = memoryview(pem.encode())
            while data:
                data = data[os.write(fd, data) :]
            self._memory_files[name] = fd
            return f"/proc/self/fd/{fd}"
        if self._cert_dir is None:
            self._cert_dir = tempfile.mkdtemp(prefix="mso-credentials-")
            atexit.register(shutil.rmtree, self._cert_dir, True)
        path = os.path.join(self._cert_dir, name)
        fd, tmp = tempfile.mkstemp(dir=self._cert_dir)  # 0600
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        os.replace(tmp, path)
        return path

    def headers(self) -> dict[str, str]:
        """The Authorization header (fresh: token files and exec credentials renewed)."""
        self.refresh()
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    @property
    def expiration(self) -> datetime.datetime | None:
        """When an exec credential expires (kopf logs in again then)."""
        return self._expiration

    def ssl_context(self) -> ssl.SSLContext:
        """TLS as configured: the cluster CA (or the system's), client certificate."""
        self.refresh()
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


# ----------------------------------------------------------------------------- loading
def load(
    env: Mapping[str, str] | None = None, service_account: Path = SERVICE_ACCOUNT
) -> Credentials:
    """In-cluster credentials when running in a pod, else the kubeconfig's."""
    env = os.environ if env is None else env
    in_pod = env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT")
    if in_pod and (service_account / "token").exists():
        return in_cluster(env, service_account)
    return from_kubeconfig(env)


def in_cluster(env: Mapping[str, str], service_account: Path = SERVICE_ACCOUNT) -> Credentials:
    """The pod's service account, as client-go's rest.InClusterConfig."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    if ":" in host:
        host = f"[{host}]"  # IPv6
    ns_file = service_account / "namespace"
    ca = service_account / "ca.crt"
    creds = Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.exists() else None,
        token_file=str(service_account / "token"),
        default_namespace=ns_file.read_text().strip() if ns_file.exists() else None,
    )
    creds.refresh()
    return creds


def kubeconfig_paths(env: Mapping[str, str]) -> list[Path]:
    """KUBECONFIG's files (os.pathsep-separated), else ~/.kube/config."""
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return [Path(p).expanduser() for p in listed]
    return [Path(env.get("HOME", "~")).expanduser() / ".kube" / "config"]


def from_kubeconfig(env: Mapping[str, str]) -> Credentials:
    """The current context of the kubeconfig files, merged as kubectl merges them."""
    paths = [p for p in kubeconfig_paths(env) if p.exists()]
    if not paths:
        names = ", ".join(str(p) for p in kubeconfig_paths(env))
        raise ConfigError(f"no kubeconfig at {names}, and not running in a cluster")
    current: str | None = None
    sections: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {
        "clusters": {},
        "contexts": {},
        "users": {},
    }
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping")
        current = current or doc.get("current-context")
        for section, entries in sections.items():
            singular = section[:-1]
            for item in doc.get(section) or []:
                if isinstance(item, dict) and "name" in item:
                    entries.setdefault(item["name"], (item.get(singular) or {}, path.parent))
    if not current:
        raise ConfigError(f"kubeconfig {paths[0]} has no current-context")
    if current not in sections["contexts"]:
        raise ConfigError(f"kubeconfig: context {current!r} not found")
    context, _ = sections["contexts"][current]
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if cluster_name not in sections["clusters"]:
        raise ConfigError(f"kubeconfig: cluster {cluster_name!r} of context {current!r} not found")
    cluster, cluster_dir = sections["clusters"][cluster_name]
    user, user_dir = sections["users"].get(str(user_name), ({}, paths[0].parent))
    if not cluster.get("server"):
        raise ConfigError(f"kubeconfig: cluster {cluster_name!r} has no server")

    def file(value: Any, base: Path) -> str | None:
        return str(base / str(value)) if value else None  # absolute paths stay absolute

    creds = Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=file(cluster.get("certificate-authority"), cluster_dir),
        ca_data=_pem(cluster.get("certificate-authority-data"), "certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        proxy_url=cluster.get("proxy-url"),
        token=user.get("token"),
        # An inline token wins over a tokenFile, as in client-go.
        token_file=None if user.get("token") else file(user.get("tokenFile"), user_dir),
        username=user.get("username"),
        password=user.get("password"),
        default_namespace=context.get("namespace"),
    )
    if creds.ca_data is not None:
        creds.ca_file = None
    cert = _pem(user.get("client-certificate-data"), "client-certificate-data")
    key = _pem(user.get("client-key-data"), "client-key-data")
    creds.cert_file = creds._private_file("client.crt", cert) if cert else None
    creds.key_file = creds._private_file("client.key", key) if key else None
    creds.cert_file = creds.cert_file or file(user.get("client-certificate"), user_dir)
    creds.key_file = creds.key_file or file(user.get("client-key"), user_dir)
    plugin = user.get("exec")
    if isinstance(plugin, dict):
        if not plugin.get("command"):
            raise ConfigError(f"kubeconfig: user {user_name!r}: exec has no command")
        creds.exec_plugin = ExecPlugin(
            command=str(plugin["command"]),
            args=[str(a) for a in plugin.get("args") or []],
            env=_exec_env(plugin.get("env"), user_name),
            api_version=str(plugin.get("apiVersion") or "client.authentication.k8s.io/v1"),
            base_dir=user_dir,
        )
    elif user.get("auth-provider"):
        token = ((user["auth-provider"] or {}).get("config") or {}).get("access-token")
        if not token:
            raise ConfigError(
                f"kubeconfig: user {user_name!r} uses an auth-provider, which is not "
                "supported; use an exec credential plugin"
            )
        creds.token = token
    creds.refresh()
    return creds


def _exec_env(entries: Any, user: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in entries or []:
        if not isinstance(e, dict) or "name" not in e or "value" not in e:
            raise ConfigError(f"kubeconfig: user {user!r}: exec env entries need a name and value")
        out[str(e["name"])] = str(e["value"])
    return out


def _pem(data: Any, what: str) -> str | None:
    if not data:
        return None
    try:
        # Folded YAML may break the base64 over lines; Go's decoder skips the breaks.
        return base64.b64decode("".join(str(data).split()), validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"kubeconfig: {what} is not base64-encoded PEM") from exc
