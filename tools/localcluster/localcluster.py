#!/usr/bin/env python3
"""Run a real Kubernetes control plane on loopback, with kwok playing the nodes.

    python tools/localcluster/localcluster.py up      # build once (cached), start, wait ready
    python tools/localcluster/localcluster.py down    # stop everything we started
    python tools/localcluster/localcluster.py status  # which components run
    python tools/localcluster/localcluster.py env     # export KUBECONFIG=...
    python tools/localcluster/localcluster.py build   # only build the binaries (cached)
    python tools/localcluster/localcluster.py kill etcd   # SIGKILL one component (fault tests)
    python tools/localcluster/localcluster.py pid kube-apiserver  # print a component's PID

Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok
(fake nodes and kubelets, driven by the Stages in ./stages) and metrics-server
(registered as the v1beta1.metrics.k8s.io APIService). The binaries come from
build.sh's cache outside the clone; all runtime state (certificates,
kubeconfigs, etcd data, logs, PID files) lives in the clone's git-ignored
.localcluster/ directory. Everything listens on 127.0.0.1 only.

Standard library only, so it runs before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE_DIR = Path(os.environ.get("MSO_LOCALCLUSTER_DIR", REPO / ".localcluster")).resolve()
PKI = STATE_DIR / "pki"
KUBECONFIGS = STATE_DIR / "kubeconfigs"
LOGS = STATE_DIR / "logs"
RUN = STATE_DIR / "run"
ETCD_DATA = STATE_DIR / "etcd"
ADMIN_KUBECONFIG = STATE_DIR / "kubeconfig"
AUDIT_POLICY = STATE_DIR / "audit-policy.yaml"
AUDIT_LOG = LOGS / "audit.log"
STAGES = HERE / "stages"

HOST = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"  # allocated from, never contacted
ZONES = ("zone-a", "zone-b", "zone-c")
FIELD_MANAGER = "localcluster"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

# name -> (environment variable, default). Uncommon ports to avoid clashes.
PORT_DEFAULTS: dict[str, tuple[str, int]] = {
    "etcd": ("MSO_ETCD_PORT", 16379),
    "etcd-peer": ("MSO_ETCD_PEER_PORT", 16380),
    "kube-apiserver": ("MSO_APISERVER_PORT", 16443),
    "kube-controller-manager": ("MSO_CONTROLLER_MANAGER_PORT", 16257),
    "kube-scheduler": ("MSO_SCHEDULER_PORT", 16259),
    "kwok": ("MSO_KWOK_PORT", 16250),
    "metrics-server": ("MSO_METRICS_SERVER_PORT", 16451),
}

# Start order.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "metrics-server",
)
# Stop order and SIGTERM grace: the API server's clients together, then the API
# server (stateless, so a short grace before SIGKILL), then etcd.
STOP_GROUPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (COMPONENTS[2:], 10.0),
    (("kube-apiserver",), 5.0),
    (("etcd",), 10.0),
)


class ClusterError(Exception):
    """A failure the user should see as a clear message, not a traceback."""


def log(msg: str) -> None:
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ClusterError(f"{name}={raw!r} is not an integer") from exc


def ports() -> dict[str, int]:
    result = {name: env_int(var, default) for name, (var, default) in PORT_DEFAULTS.items()}
    bad = [f"{PORT_DEFAULTS[n][0]}={port}" for n, port in result.items() if not 0 < port < 65536]
    if bad:
        raise ClusterError(f"invalid port: {', '.join(bad)}")
    if len(set(result.values())) != len(result):
        raise ClusterError(f"two components share a port: {result}")
    return result


def node_count() -> int:
    return env_int("MSO_LOCALCLUSTER_NODES", 3)


def ready_timeout() -> float:
    return float(env_int("MSO_LOCALCLUSTER_TIMEOUT", 180))


# --------------------------------------------------------------------------- binaries


def read_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for raw in (HERE / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip().strip('"')
    return versions


def binary_names() -> dict[str, str]:
    """Component -> file name of its binary in build.sh's cache (NAME-VERSION)."""
    v = read_versions()
    version = {
        "etcd": v["ETCD_VERSION"],
        "kube-apiserver": v["KUBE_VERSION"],
        "kube-controller-manager": v["KUBE_VERSION"],
        "kube-scheduler": v["KUBE_VERSION"],
        "kwok": v["KWOK_VERSION"],
        "metrics-server": v["METRICS_SERVER_VERSION"],
    }
    return {name: f"{name}-{version[name]}" for name in COMPONENTS}


def binaries() -> dict[str, Path]:
    """Builds (if needed, cached by version) and returns component -> binary."""
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(HERE / "build.sh")],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"build.sh failed with exit code {proc.returncode} (see output above)")
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    result = {name: bin_dir / file for name, file in binary_names().items()}
    missing = [str(p) for p in result.values() if not os.access(p, os.X_OK)]
    if missing:
        raise ClusterError(f"build.sh did not produce: {', '.join(missing)}")
    log(f"binaries ready in {bin_dir} ({time.monotonic() - start:.1f}s)")
    return result


# --------------------------------------------------------------------------- PKI


def openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("openssl is required to create the cluster certificates")
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed:\n{proc.stderr}")


EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def make_ca(name: str, cn: str) -> None:
    key, crt = PKI / f"{name}.key", PKI / f"{name}.crt"
    if key.exists() and crt.exists():
        return
    openssl(
        "req", "-x509", "-new", "-nodes", *EC_KEY,
        "-keyout", str(key), "-out", str(crt), "-days", "3650", "-subj", f"/CN={cn}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip


def make_cert(
    name: str,
    ca: str,
    cn: str,
    orgs: Sequence[str] = (),
    *,
    server: bool = False,
    client: bool = False,
    sans: Sequence[str] = (),
) -> None:
    key, crt = PKI / f"{name}.key", PKI / f"{name}.crt"
    if key.exists() and crt.exists():
        return
    usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    if sans:
        ext.append(f"subjectAltName={','.join(sans)}")
    subj = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
    with tempfile.TemporaryDirectory() as tmp:
        csr, extfile = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        extfile.write_text("\n".join(ext) + "\n")
        openssl("req", "-new", "-nodes", *EC_KEY, "-keyout", str(key), "-out", str(csr),
                "-subj", subj)  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(PKI / f"{ca}.crt"),
            "-CAkey", str(PKI / f"{ca}.key"), "-set_serial", str(int.from_bytes(os.urandom(8))),
            "-days", "3650", "-extfile", str(extfile), "-out", str(crt),
        )  # fmt: skip


def ensure_pki() -> None:
    PKI.mkdir(parents=True, exist_ok=True)
    make_ca("ca", "localcluster-ca")
    make_ca("front-proxy-ca", "localcluster-front-proxy-ca")
    if not (PKI / "sa.key").exists():
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", str(PKI / "sa.key"))  # fmt: skip
        openssl("pkey", "-in", str(PKI / "sa.key"), "-pubout", "-out", str(PKI / "sa.pub"))
    apiserver_sans = [
        f"IP:{HOST}",
        "IP:10.96.0.1",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    make_cert("apiserver", "ca", "kube-apiserver", server=True, sans=apiserver_sans)
    # Serving certificate shared by the other components on 127.0.0.1.
    # The aggregator checks metrics-server's certificate for the Service's DNS name.
    serving_sans = [f"IP:{HOST}", "DNS:localhost", "DNS:metrics-server.kube-system.svc"]
    make_cert("serving", "ca", "localcluster-serving", server=True, sans=serving_sans)
    make_cert("admin", "ca", "kubernetes-admin", ["system:masters"], client=True)
    make_cert("apiserver-kubelet-client", "ca", "kube-apiserver-kubelet-client",
              ["system:masters"], client=True)  # fmt: skip
    make_cert("controller-manager", "ca", "system:kube-controller-manager", client=True)
    make_cert("scheduler", "ca", "system:kube-scheduler", client=True)
    # kwok plays every kubelet (patches pods, nodes and leases of many nodes).
    make_cert("kwok", "ca", "kwok-controller", ["system:masters"], client=True)
    make_cert("metrics-server", "ca", "system:metrics-server", client=True)
    make_cert("front-proxy-client", "front-proxy-ca", "front-proxy-client", client=True)


def b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, user: str, port: int) -> None:
    """Writes a self-contained kubeconfig (certificates embedded) for PKI/<user>.*."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "localcluster",
                "cluster": {
                    "server": f"https://{HOST}:{port}",
                    "certificate-authority-data": b64file(PKI / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": f"localcluster-{user}",
                "user": {
                    "client-certificate-data": b64file(PKI / f"{user}.crt"),
                    "client-key-data": b64file(PKI / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "localcluster",
                "context": {"cluster": "localcluster", "user": f"localcluster-{user}"},
            }
        ],
        "current-context": "localcluster",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
    tmp.chmod(0o600)
    tmp.replace(path)


# --------------------------------------------------------------------------- HTTP


def tls_context(client_cert: str | None = "admin") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(str(PKI / f"{client_cert}.crt"), str(PKI / f"{client_cert}.key"))
    return ctx


class Api:
    """A tiny Kubernetes REST client (admin identity) for bootstrap and readiness."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ctx = tls_context()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
        extra_headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection(HOST, self.port, context=self.ctx, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json", **(extra_headers or {})}
            if data is not None:
                headers["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, parsed

    def get(self, path: str) -> Any:
        status, obj = self.request("GET", path)
        if status != 200:
            raise ClusterError(f"GET {path}: HTTP {status}: {obj}")
        return obj

    def apply(self, path: str, obj: dict[str, Any]) -> None:
        """Server-side apply (creates or updates) the object at path."""
        query = urllib.parse.urlencode({"fieldManager": FIELD_MANAGER, "force": "true"})
        status, resp = self.request(
            "PATCH", f"{path}?{query}", obj, content_type="application/apply-patch+yaml"
        )
        if status not in (200, 201):
            raise ClusterError(f"apply {path}: HTTP {status}: {resp}")


def http_ok(port: int, path: str, *, scheme: str = "https", timeout: float = 2.0) -> bool:
    try:
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(HOST, port, context=tls_context(), timeout=timeout)
        else:
            conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            conn.request("GET", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


# Local addresses in /proc/net/tcp{,6} (hex, host byte order per 32-bit word) whose
# listener would stop a component from binding 127.0.0.1: itself and the wildcards.
_CLASHING_LISTEN_ADDRS = {
    "0100007F",  # 127.0.0.1
    "00000000",  # 0.0.0.0
    "00000000000000000000000000000000",  # ::
    "0000000000000000FFFF00000100007F",  # ::ffff:127.0.0.1
}
_TCP_LISTEN = "0A"


def listening_sockets(port: int) -> list[int]:
    """Inodes of the TCP sockets LISTENing on port at 127.0.0.1 or a wildcard address.

    Only a listener blocks a new listener: the sockets a SIGKILLed server leaves
    behind (TIME_WAIT, FIN_WAIT2, CLOSE_WAIT with a client that still holds its
    end) do not, because every component binds with SO_REUSEADDR (Go's default).
    Counting them made `up` fail for a minute after a crash.
    """
    inodes: list[int] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and addr.upper() in _CLASHING_LISTEN_ADDRS:
                inodes.append(int(fields[9]))
    return inodes


def port_in_use(port: int) -> bool:
    return bool(listening_sockets(port))


def socket_owners(inodes: Sequence[int]) -> list[str]:
    """'pid N (comm)' of the processes (of this user: others' fds are unreadable)
    holding these sockets, to say who blocks a port."""
    wanted = {f"socket:[{i}]" for i in inodes}
    owners: list[str] = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        stat = proc_stat(int(proc_dir.name))
                        comm = stat[0] if stat else "?"
                        owners.append(f"pid {proc_dir.name} ({comm})")
                        break
    return owners


def busy_ports(wanted: dict[str, int]) -> list[str]:
    """'name=port (who holds it)' for each port that has a listener."""
    busy = []
    for name, port in wanted.items():
        inodes = listening_sockets(port)
        if inodes:
            owners = socket_owners(inodes)
            held_by = f" (held by {', '.join(owners)})" if owners else ""
            busy.append(f"{name}={port}{held_by}")
    return busy


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A component we started, as recorded in run/<name>.json."""

    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat, guards against PID reuse
    port: int

    @property
    def record(self) -> Path:
        return RUN / f"{self.name}.json"

    def save(self) -> None:
        RUN.mkdir(parents=True, exist_ok=True)
        data = {"pid": self.pid, "start_ticks": self.start_ticks, "port": self.port}
        self.record.write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, name: str) -> Proc | None:
        try:
            data = json.loads((RUN / f"{name}.json").read_text())
            return cls(name, int(data["pid"]), int(data["start_ticks"]), int(data["port"]))
        except (OSError, ValueError, KeyError):
            return None

    def alive(self) -> bool:
        stat = proc_stat(self.pid)
        if stat is None or stat[2] != self.start_ticks:
            return False
        if stat[1] not in "ZX":
            return True
        # A thread group leader that exits before its other threads shows Z while
        # they still run and hold the process's sockets: gone only once all are.
        tasks = Path(f"/proc/{self.pid}/task")
        with contextlib.suppress(OSError):
            for task in tasks.iterdir():
                task_stat = parse_stat(task / "stat")
                if task_stat is not None and task_stat[1] not in "ZX":
                    return True
        return False

    def argv(self) -> list[str]:
        """The command line the process runs with ([] if gone)."""
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return []
        return raw.decode(errors="replace").split("\0")[:-1]

    def is_component(self) -> bool:
        """Alive, and really this component's binary (not a reused PID)."""
        argv = self.argv()
        return self.alive() and bool(argv) and Path(argv[0]).name.startswith(f"{self.name}-")


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, start time in clock ticks) of a process, or None if gone."""
    return parse_stat(Path(f"/proc/{pid}/stat"))


def parse_stat(path: Path) -> tuple[str, str, int] | None:
    try:
        raw = path.read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[19])


def log_path(name: str) -> Path:
    return LOGS / f"{name}.log"


def log_tail(name: str, lines: int = 40) -> str:
    try:
        text = log_path(name).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def spawn(name: str, argv: list[str], port: int) -> tuple[Proc, subprocess.Popen[bytes]]:
    LOGS.mkdir(parents=True, exist_ok=True)
    logfile = log_path(name)
    if logfile.exists():
        logfile.replace(logfile.with_suffix(".log.1"))
    with logfile.open("wb") as out:
        out.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=STATE_DIR,
            start_new_session=True,  # own process group; survives our exit, no terminal signals
        )
    stat = proc_stat(popen.pid)
    proc = Proc(name, popen.pid, stat[2] if stat else 0, port)
    proc.save()
    return proc, popen


def stop_all() -> None:
    for group, timeout in STOP_GROUPS:
        stop(group, timeout)


def stop(names: Sequence[str], timeout: float = 15.0) -> None:
    """SIGTERM the recorded processes, SIGKILL after timeout, wait until gone."""
    procs = [p for p in (Proc.load(n) for n in names) if p is not None]
    running = [p for p in procs if p.alive()]
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = [p for p in running if p.alive()]
    for p in running:
        log(f"{p.name} (pid {p.pid}) still running {timeout:.0f}s after SIGTERM, sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = [p for p in running if p.alive()]
    if running:
        raise ClusterError(f"could not stop: {', '.join(f'{p.name}={p.pid}' for p in running)}")
    for p in procs:
        p.record.unlink(missing_ok=True)


# --------------------------------------------------------------------------- components


def command(name: str, binary: Path, p: dict[str, int]) -> list[str]:
    pki = str(PKI)
    kc = str(KUBECONFIGS)
    if name == "etcd":
        peer = f"http://{HOST}:{p['etcd-peer']}"
        client = f"http://{HOST}:{p['etcd']}"
        return [
            str(binary),
            "--name=localcluster",
            f"--data-dir={ETCD_DATA}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=localcluster={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # a throwaway test cluster: speed over durability
            "--snapshot-count=10000",
            "--log-level=warn",
        ]
    if name == "kube-apiserver":
        return [
            str(binary),
            f"--etcd-servers=http://{HOST}:{p['etcd']}",
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            # The 'kubernetes' Service endpoints may not point at loopback; nothing
            # here talks to Service IPs anyway.
            "--endpoint-reconciler-type=none",
            f"--secure-port={p['kube-apiserver']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki}/apiserver.crt",
            f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki}/sa.pub",
            f"--service-account-signing-key-file={pki}/sa.key",
            f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
            # Aggregation layer (metrics-server): front-proxy client identity.
            f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
            f"--proxy-client-key-file={pki}/front-proxy-client.key",
            # Route aggregated APIs through the Service (an ExternalName to
            # 127.0.0.1): EndpointSlices may not hold loopback addresses, so
            # --enable-aggregator-routing cannot reach a loopback metrics-server.
            "--enable-aggregator-routing=false",
            "--profiling=false",
            # Audit log of every write (see AUDIT_POLICY_TEXT): fault tests prove from
            # the server side who wrote what and when. Blocking mode writes each event
            # before the response, so nothing sits in a buffer when the server dies.
            f"--audit-policy-file={AUDIT_POLICY}",
            f"--audit-log-path={AUDIT_LOG}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=50",  # MB, then rotated to audit-<time>.log
            "--audit-log-maxbackup=4",
        ]
    if name == "kube-controller-manager":
        return [
            str(binary),
            f"--kubeconfig={kc}/controller-manager.kubeconfig",
            f"--authentication-kubeconfig={kc}/controller-manager.kubeconfig",
            f"--authorization-kubeconfig={kc}/controller-manager.kubeconfig",
            f"--bind-address={HOST}",
            f"--secure-port={p['kube-controller-manager']}",
            f"--tls-cert-file={pki}/serving.crt",
            f"--tls-private-key-file={pki}/serving.key",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--root-ca-file={pki}/ca.crt",
            f"--service-account-private-key-file={pki}/sa.key",
            f"--cluster-signing-cert-file={pki}/ca.crt",
            f"--cluster-signing-key-file={pki}/ca.key",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--cluster-name=localcluster",
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--profiling=false",
        ]
    if name == "kube-scheduler":
        return [
            str(binary),
            f"--kubeconfig={kc}/scheduler.kubeconfig",
            f"--authentication-kubeconfig={kc}/scheduler.kubeconfig",
            f"--authorization-kubeconfig={kc}/scheduler.kubeconfig",
            f"--bind-address={HOST}",
            f"--secure-port={p['kube-scheduler']}",
            f"--tls-cert-file={pki}/serving.crt",
            f"--tls-private-key-file={pki}/serving.key",
            "--leader-elect=false",
            "--profiling=false",
        ]
    if name == "kwok":
        return [
            str(binary),
            f"--kubeconfig={kc}/kwok.kubeconfig",
            f"--config={STAGES}/node.yaml",
            f"--config={STAGES}/pod.yaml",
            f"--config={STAGES}/metrics.yaml",
            f"--config={STAGES}/pod-test-health.yaml",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            # Every fake node is reachable (kubelet port, resource metrics) here.
            f"--node-ip={HOST}",
            f"--node-port={p['kwok']}",
            f"--server-address={HOST}:{p['kwok']}",
            f"--tls-cert-file={pki}/serving.crt",
            f"--tls-private-key-file={pki}/serving.key",
            "--node-lease-duration-seconds=40",
        ]
    if name == "metrics-server":
        return [
            str(binary),
            f"--kubeconfig={kc}/metrics-server.kubeconfig",
            f"--authentication-kubeconfig={kc}/metrics-server.kubeconfig",
            f"--authorization-kubeconfig={kc}/metrics-server.kubeconfig",
            f"--bind-address={HOST}",
            f"--secure-port={p['metrics-server']}",
            f"--tls-cert-file={pki}/serving.crt",
            f"--tls-private-key-file={pki}/serving.key",
            "--kubelet-insecure-tls",
            "--kubelet-use-node-status-port",
            "--kubelet-preferred-address-types=InternalIP",
            "--metric-resolution=10s",
            "--kubelet-request-timeout=5s",
            "--profiling=false",
        ]
    raise ValueError(name)


# Metadata (who, what, when, response code; no bodies) for writes only, one
# event per request (no RequestReceived stage); reads, watches and every other
# verb are not logged, which keeps the log small enough to read in tests.
AUDIT_POLICY_TEXT = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""


def write_audit_policy() -> bool:
    """Writes the audit policy file; True if it changed (a running API server
    reads it only at start, so it must be restarted)."""
    with contextlib.suppress(OSError):
        if AUDIT_POLICY.read_text() == AUDIT_POLICY_TEXT:
            return False
    AUDIT_POLICY.parent.mkdir(parents=True, exist_ok=True)
    tmp = AUDIT_POLICY.with_suffix(".tmp")
    tmp.write_text(AUDIT_POLICY_TEXT)
    tmp.replace(AUDIT_POLICY)
    return True


def health_check(name: str, port: int) -> Callable[[], bool]:
    if name == "etcd":
        return lambda: http_ok(port, "/health", scheme="http")
    if name == "kube-apiserver":
        return lambda: http_ok(port, "/readyz")
    # metrics-server's /readyz waits for a first scrape; the APIService check covers it.
    return lambda: http_ok(port, "/healthz")


def bootstrap_objects(p: dict[str, int]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(API path, object) pairs applied once the API server is up."""
    for i in range(node_count()):
        name = f"kwok-node-{i}"
        zone = ZONES[i % len(ZONES)]
        yield (
            f"/api/v1/nodes/{name}",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        KWOK_NODE_ANNOTATION: "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                        # kwok serves each node's kubelet resource metrics here.
                        "metrics.k8s.io/resource-metrics-path": (
                            f"/metrics/nodes/{name}/metrics/resource"
                        ),
                    },
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/arch": "amd64",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/hostname": name,
                        "topology.kubernetes.io/region": "local",
                        "topology.kubernetes.io/zone": zone,
                    },
                },
                "spec": {"podCIDR": f"10.244.{i}.0/24", "podCIDRs": [f"10.244.{i}.0/24"]},
            },
        )
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    user = {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "User",
        "name": "system:metrics-server",
    }
    yield (
        f"{rbac}/clusterroles/system:aggregated-metrics-reader",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    "rbac.authorization.k8s.io/aggregate-to-view": "true",
                    "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                    "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                },
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
    )
    yield (
        f"{rbac}/clusterroles/system:metrics-server",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:metrics-server"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
    )
    for binding, role in (
        ("system:metrics-server", "system:metrics-server"),
        ("metrics-server:system:auth-delegator", "system:auth-delegator"),
    ):
        yield (
            f"{rbac}/clusterrolebindings/{binding}",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": binding},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [user],
            },
        )
    yield (
        f"{rbac}/namespaces/kube-system/rolebindings/metrics-server-auth-reader",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "metrics-server-auth-reader", "namespace": "kube-system"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            "subjects": [user],
        },
    )
    yield (
        "/api/v1/namespaces/kube-system/services/metrics-server",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            # The aggregator resolves an ExternalName Service to externalName:port.
            "spec": {"type": "ExternalName", "externalName": HOST},
        },
    )
    yield (
        "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io",
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "service": {
                    "name": "metrics-server",
                    "namespace": "kube-system",
                    "port": p["metrics-server"],
                },
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "insecureSkipTLSVerify": False,
                "caBundle": b64file(PKI / "ca.crt"),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    )


# --------------------------------------------------------------------------- readiness


def release_node_leases(api: Api) -> None:
    """Deletes the fake nodes' Leases left by a previous kwok run.

    kwok takes a random identity on each start and only plays the pods of nodes
    whose Lease it holds, so it would wait for the old Leases to expire (~40 s).
    """
    for i in range(node_count()):
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/kwok-node-{i}"
        status, resp = api.request("DELETE", path)
        if status not in (200, 202, 404):
            raise ClusterError(f"DELETE {path}: HTTP {status}: {resp}")


def condition(obj: dict[str, Any], ctype: str) -> str | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return str(cond.get("status"))
    return None


def nodes_ready(api: Api) -> bool:
    nodes = api.get("/api/v1/nodes?labelSelector=type%3Dkwok").get("items", [])
    if len(nodes) < node_count():
        return False
    for node in nodes:
        if condition(node, "Ready") != "True":
            return False
        taints = node.get("spec", {}).get("taints") or []
        if any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints):
            return False
        # kwok plays a node's pods only while it holds (renews) the node's Lease.
        name = node["metadata"]["name"]
        status, lease = api.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        )
        if status != 200 or not lease_fresh(lease):
            return False
    return True


def lease_fresh(lease: dict[str, Any], max_age: float = 40.0) -> bool:
    renewed = lease.get("spec", {}).get("renewTime")
    if not renewed:
        return False
    when = datetime.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
    age = datetime.datetime.now(datetime.UTC) - when
    return age.total_seconds() < max_age


def apiservice_available(api: Api) -> bool:
    obj = api.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io")
    return condition(obj, "Available") == "True"


def metrics_server_authorized(api: Api) -> bool:
    """metrics-server may read the request-header CA ConfigMap it needs at start
    (it exits if not: on a fresh etcd its RoleBinding is applied only now)."""
    status, _ = api.request(
        "GET",
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
        extra_headers={"Impersonate-User": "system:metrics-server"},
    )
    return status == 200


def default_service_account(api: Api) -> bool:
    status, _ = api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    return status == 200


class Waiter:
    """Polls checks while watching the components for early death: those started
    now (their exit code is known) and those `up` left running."""

    def __init__(
        self,
        popens: dict[str, subprocess.Popen[bytes]],
        kept: dict[str, Proc],
        timeout: float,
    ) -> None:
        self.popens = popens
        self.kept = kept
        self.deadline = time.monotonic() + timeout
        self.t0 = time.monotonic()

    def check_processes(self) -> None:
        for name, popen in self.popens.items():
            code = popen.poll()
            if code is not None:
                raise ClusterError(
                    f"{name} exited with code {code} during startup; "
                    f"last lines of {log_path(name)}:\n{log_tail(name)}"
                )
        for name, proc in self.kept.items():
            if not proc.alive():
                raise ClusterError(
                    f"{name} (pid {proc.pid}, already running) exited during startup; "
                    f"last lines of {log_path(name)}:\n{log_tail(name)}"
                )

    def until(self, what: str, check: Callable[[], bool], interval: float = 0.1) -> None:
        last_error = ""
        while True:
            self.check_processes()
            try:
                if check():
                    log(f"{what} ({time.monotonic() - self.t0:.1f}s)")
                    return
            except (OSError, http.client.HTTPException, ClusterError) as exc:
                last_error = f": {exc}"
            if time.monotonic() > self.deadline:
                raise ClusterError(f"timed out waiting for {what}{last_error}")
            time.sleep(interval)


# --------------------------------------------------------------------------- commands


def running() -> dict[str, Proc]:
    procs = {n: Proc.load(n) for n in COMPONENTS}
    return {n: p for n, p in procs.items() if p is not None and p.alive()}


def drifted(procs: dict[str, Proc], p: dict[str, int]) -> list[str]:
    """Running components whose command line differs from the one `up` would use
    now (flags changed in this script, a version bumped in versions.env)."""
    names = binary_names()
    result = []
    for name, proc in procs.items():
        want = command(name, Path(names[name]), p)
        have = proc.argv()
        if not have or Path(have[0]).name != want[0] or have[1:] != want[1:]:
            result.append(name)
    return result


def cmd_up(_: argparse.Namespace) -> int:
    """Starts the components that are not running and waits until all are healthy.

    Components that still run are kept (their clients reconnect), so after a
    test SIGKILLs etcd or kube-apiserver, `up` restarts just that one in seconds.
    """
    t0 = time.monotonic()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    p = ports()
    procs = running()
    moved = [f"{n} runs on port {pr.port}" for n, pr in procs.items() if pr.port != p[n]]
    if moved:
        raise ClusterError(
            f"{', '.join(moved)}, but the environment now says otherwise; run 'down' first "
            "(the other components' kubeconfigs name the old ports)"
        )
    restart = drifted(procs, p)
    if write_audit_policy() and "kube-apiserver" in procs and "kube-apiserver" not in restart:
        restart.append("kube-apiserver")  # reads the policy only at start
    if restart:
        log(f"{', '.join(restart)} run with other flags than this script uses; restarting")
        for group, grace in STOP_GROUPS:
            stop([n for n in group if n in restart], grace)
        procs = running()
    missing = [n for n in COMPONENTS if n not in procs]
    if (
        not missing
        and ADMIN_KUBECONFIG.exists()
        and all(health_check(n, pr.port)() for n, pr in procs.items())
    ):
        log(f"already up ({time.monotonic() - t0:.1f}s); export KUBECONFIG={ADMIN_KUBECONFIG}")
        return 0
    if procs and missing:
        log(f"starting {', '.join(missing)}; keeping {', '.join(procs)}")
    bins = binaries() if missing else {}
    wanted = {n: p[n] for n in missing}
    if "etcd" in missing:
        wanted["etcd-peer"] = p["etcd-peer"]
    busy = busy_ports(wanted)
    if busy:
        raise ClusterError(
            f"ports in use by another process: {', '.join(busy)}; free them or override "
            + ", ".join(f"{var}" for var, _ in PORT_DEFAULTS.values())
        )
    t_setup = time.monotonic()
    ensure_pki()
    for user, file in (
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
        ("kwok", "kwok"),
        ("metrics-server", "metrics-server"),
    ):
        write_kubeconfig(KUBECONFIGS / f"{file}.kubeconfig", user, p["kube-apiserver"])
    log(f"certificates and kubeconfigs ready ({time.monotonic() - t_setup:.1f}s)")

    popens: dict[str, subprocess.Popen[bytes]] = {}
    try:
        waiter = Waiter(popens, procs, ready_timeout())

        def start(name: str) -> None:
            if name in missing:
                _, popens[name] = spawn(name, command(name, bins[name], p), p[name])

        start("etcd")
        waiter.until("etcd ready", health_check("etcd", p["etcd"]), interval=0.05)
        start("kube-apiserver")
        waiter.until(
            "kube-apiserver ready", health_check("kube-apiserver", p["kube-apiserver"]), 0.1
        )
        api = Api(p["kube-apiserver"])
        if "kwok" in missing:
            release_node_leases(api)
        for name in COMPONENTS[2:]:
            if name != "metrics-server":
                start(name)
        pending = list(bootstrap_objects(p))

        def apply_all() -> bool:
            while pending:
                path, obj = pending[0]
                api.apply(path, obj)  # kube-system may not exist yet: retried
                pending.pop(0)
            return True

        waiter.until("nodes, RBAC and metrics APIService applied", apply_all, interval=0.2)
        if "metrics-server" in missing:
            waiter.until("metrics-server RBAC", lambda: metrics_server_authorized(api), 0.1)
            start("metrics-server")
        for name in COMPONENTS[2:]:
            waiter.until(f"{name} healthy", health_check(name, p[name]))
        waiter.until(f"{node_count()} nodes Ready", lambda: nodes_ready(api), interval=0.2)
        waiter.until("default ServiceAccount", lambda: default_service_account(api), 0.2)
        waiter.until("metrics APIService Available", lambda: apiservice_available(api), 0.2)
        write_kubeconfig(ADMIN_KUBECONFIG, "admin", p["kube-apiserver"])
    except BaseException:
        log("startup failed; stopping every component")
        stop_all()
        raise
    log(f"up in {time.monotonic() - t0:.1f}s; export KUBECONFIG={ADMIN_KUBECONFIG}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    procs = running()
    names = list(procs)
    stop_all()
    # The ports these processes listened on must be free again.
    deadline = time.monotonic() + 10
    busy = [f"{n}={p.port}" for n, p in procs.items() if port_in_use(p.port)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.1)
        busy = [f"{n}={p.port}" for n, p in procs.items() if port_in_use(p.port)]
    if names:
        log(f"stopped {', '.join(names)} ({time.monotonic() - t0:.1f}s)")
    else:
        log("nothing was running")
    if args.purge and STATE_DIR.exists():
        for child in STATE_DIR.iterdir():  # keep the lock file we hold
            if child.name != "lock":
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        log(f"removed the contents of {STATE_DIR}")
    if busy:
        raise ClusterError(f"ports still in use after stopping: {', '.join(busy)}")
    return 0


def cmd_build(_: argparse.Namespace) -> int:
    bins = binaries()
    print(next(iter(bins.values())).parent)
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    procs = running()
    for name in COMPONENTS:
        proc = procs.get(name)
        if proc is None:
            print(f"{name:24} stopped")
            continue
        ok = health_check(name, proc.port)()
        state = "healthy" if ok else "unhealthy"
        print(f"{name:24} running  pid={proc.pid:<8} port={proc.port:<6} {state}  {log_path(name)}")
    if len(procs) == len(COMPONENTS):
        print(f"export KUBECONFIG={ADMIN_KUBECONFIG}")
        return 0
    return 1 if procs else 3


def cmd_env(_: argparse.Namespace) -> int:
    if not ADMIN_KUBECONFIG.exists():
        log("the cluster has never been started; run 'up' first")
    print(f"export KUBECONFIG={ADMIN_KUBECONFIG}")
    print(f"export MSO_AUDIT_LOG={AUDIT_LOG}")
    return 0


def running_component(name: str) -> Proc:
    """The recorded process of name, checked to be alive and really that binary."""
    proc = Proc.load(name)
    if proc is None or not proc.alive():
        raise ClusterError(f"{name} is not running")
    if not proc.is_component():
        argv = proc.argv()
        raise ClusterError(f"pid {proc.pid} recorded for {name} runs {argv[:1]}, not {name}")
    return proc


def cmd_kill(args: argparse.Namespace) -> int:
    """SIGKILLs components (a crash, for fault tests) and waits until they are gone.

    The run records stay, exactly as after a real crash; `up` starts just these
    components again.
    """
    procs = [running_component(name) for name in dict.fromkeys(args.names)]
    t0 = time.monotonic()
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    alive = procs
    while alive:
        if time.monotonic() > deadline:
            raise ClusterError(f"still running after SIGKILL: {[p.name for p in alive]}")
        time.sleep(0.01)
        alive = [p for p in alive if p.alive()]
    names = ", ".join(f"{p.name} (pid {p.pid})" for p in procs)
    log(f"killed {names} in {time.monotonic() - t0:.2f}s")
    return 0


def cmd_pid(args: argparse.Namespace) -> int:
    print(running_component(args.name).pid)
    return 0


@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    """Serialises up/down of one state directory (e.g. two test sessions at once)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another localcluster command on this directory")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build if needed and start (idempotent)").set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop every component we started")
    down.add_argument("--purge", action="store_true", help=f"also delete {STATE_DIR}")
    down.set_defaults(func=cmd_down)
    sub.add_parser("build", help="only build the binaries (cached)").set_defaults(func=cmd_build)
    sub.add_parser("status", help="show which components run").set_defaults(func=cmd_status)
    sub.add_parser("env", help="print the KUBECONFIG and MSO_AUDIT_LOG exports").set_defaults(
        func=cmd_env
    )
    kill = sub.add_parser("kill", help="SIGKILL components (fault tests); 'up' restarts them")
    kill.add_argument("names", nargs="+", choices=COMPONENTS, metavar="NAME")
    kill.set_defaults(func=cmd_kill)
    pid = sub.add_parser("pid", help="print a running component's PID (exit 1 if not running)")
    pid.add_argument("name", choices=COMPONENTS, metavar="NAME")
    pid.set_defaults(func=cmd_pid)
    args = parser.parse_args(argv)
    try:
        if args.command in ("up", "down", "kill"):
            with state_lock():
                return int(args.func(args))
        return int(args.func(args))
    except ClusterError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
