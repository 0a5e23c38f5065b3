"""Run the real operator (the console script) as a child process for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).with_name("microservice-operator")
WRITE_VERBS = ("apply", "patch", "create", "update", "delete")


def free_port() -> int:
    """A free loopback port (bound and released; good enough for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """The operator running against ``kubeconfig``, with its own metrics/health ports."""

    default_scope: tuple[str, ...] = ()
    """Arguments added when ``extra_args`` name no namespace scope: the test suite sets
    its process's ``--namespace-selector`` (tests/conftest.py); the benchmarks watch
    the whole cluster."""

    def __init__(self, kubeconfig: str, log_dir: Path, *extra_args: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / "operator.log"
        if not {"--namespace", "-n", "--namespace-selector"} & set(extra_args):
            extra_args = (*extra_args, *self.default_scope)
        self.extra_args = extra_args
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.env_overrides: dict[str, str] = {}

    @property
    def metrics_url(self) -> str:
        """The /metrics URL on loopback."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60, synced: bool = True) -> None:
        """Start and wait until the liveness endpoint answers and, with ``synced``, until
        this process has filled its caches and started its workers (it logs "Started
        microservice-operator"): a test that restarts the operator and then watches for
        what it does (or does not do) must not be looking at a process still listing.
        ``synced=False`` for an operator that cannot get there (no CRD, no rights)."""
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, **self.env_overrides)
        try:
            offset = self.log_path.stat().st_size  # the log is appended to on a restart
        except FileNotFoundError:
            offset = 0
        wanted = "Started microservice-operator" if synced else "Started"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(
            [
                str(OPERATOR),
                "--metrics-port",
                str(self.metrics_port),
                "--health-port",
                str(self.health_port),
                *self.extra_args,
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200 and wanted.encode() in self._log_bytes()[offset:]:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"operator not healthy within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing finished on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stop()

    def restart(self) -> None:
        """Stop and start again (new process, same ports)."""
        self.stop()
        self.start()

    def _log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def log_text(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The end of the log, for assertion messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Current samples: {(name, sorted labels): value}."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def requests(self, verbs: tuple[str, ...] = WRITE_VERBS) -> dict[tuple[str, str], float]:
        """API requests the operator made so far, by (verb, resource), for these verbs."""
        totals: dict[tuple[str, str], float] = {}
        for (name, labels), value in self.scrape().items():
            if name != "mso_kube_requests_total":
                continue
            d = dict(labels)
            if d.get("verb") in verbs:
                k = (d["verb"], d.get("resource", ""))
                totals[k] = totals.get(k, 0) + value
        return totals
