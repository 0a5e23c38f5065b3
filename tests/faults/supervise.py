"""Operator replicas for fault tests: started, SIGKILLed and restarted like pods.

A restart gets a fresh log file, so "Started" in a log always means this run
started; a supervisor thread restarts replicas that exit (as the kubelet restarts a
container whose process ended), which is how the operator recovers from a lost
Lease or a dead background task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from tests.integration.operator_proc import OPERATOR, free_port

STARTED = "Started microservice-operator"


class Replica:
    """One operator process identity (POD_NAME), possibly restarted many times."""

    def __init__(self, kubeconfig: Path, log_dir: Path, identity: str, *args: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.identity = identity
        self.args = args
        self.runs = 0
        self.exit_codes: list[int] = []
        self.kills = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.log_path = log_dir / f"{identity}-0.log"
        self.lock = threading.RLock()

    def start(self, wait: bool = True, timeout: float = 60) -> None:
        """Start a new run; with ``wait``, until it logged that it started."""
        with self.lock:
            self.runs += 1
            self.log_path = self.log_dir / f"{self.identity}-{self.runs}.log"
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child
            env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), POD_NAME=self.identity)
            self.proc = subprocess.Popen(
                [
                    str(OPERATOR),
                    "--metrics-port",
                    str(free_port()),
                    "--health-port",
                    str(free_port()),
                    *self.args,
                ],
                env=env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_started(timeout)

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if STARTED in self.log_text():
                return
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"{self.identity} exited:\n{self.log_tail()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.identity} did not start in {timeout}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no Lease release, in-flight requests cut."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
                self.kills += 1
            self._reap()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            self._reap()

    def _reap(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            self.exit_codes.append(self.proc.returncode)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart_if_exited(self) -> bool:
        """Start a new run if the process ended by itself; True if it did."""
        with self.lock:
            if self.proc is None or self.proc.poll() is None:
                return False
            self._reap()
            self.start(wait=False)
            return True

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in sorted(self.log_dir.glob(f"{self.identity}-*.log"))
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class Fleet:
    """The replicas of one test, with a supervisor that restarts exited ones."""

    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.replicas: list[Replica] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, identity: str, *args: str, kubeconfig: Path | None = None) -> Replica:
        r = Replica(kubeconfig or self.kubeconfig, self.log_dir, identity, *args)
        self.replicas.append(r)
        return r

    def supervise(self, interval: float = 0.5) -> None:
        """Restart replicas that exit by themselves, until stop_all()."""

        def loop() -> None:
            while not self._stop.wait(interval):
                for r in self.replicas:
                    if r.restart_if_exited():
                        self.restarts += 1

        self._thread = threading.Thread(target=loop, name="fleet-supervisor", daemon=True)
        self._thread.start()

    def stop_all(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for r in self.replicas:
            r.stop()
