"""A real Prometheus server on loopback, for tests that check what a scrape really sees.

Prometheus (Debian's ``prometheus`` package; ``tools/prometheus.sh`` installs it) runs
with a temporary config and storage directory, listens on 127.0.0.1 only, scrapes the
given targets every second with the job name and ``honor_labels`` the shipped
ServiceMonitor uses, and can load the shipped alerting rules. Tests ask it questions
through the HTTP API::

    with Prometheus([f"127.0.0.1:{port}"], rule_files=[RULES]) as prom:
        prom.wait_for_targets()
        prom.wait_for_value('mso_microservice_replicas{name="cart",state="ready"}', 3)

Binaries are found through $PROMETHEUS / $PROMTOOL or PATH; when missing the test is
skipped, or fails under MSO_REQUIRE_PROMETHEUS=1 (CI installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import yaml

from tests.integration.helpers import end_process, wait_for

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "prometheus" / "rules.yaml"
JOB = "microservice-operator"  # what the ServiceMonitor's jobLabel yields

Sample = dict[str, Any]
"""One element of a vector result: {"metric": {labels}, "value": [time, "value"]}."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, or the HTTP API answered with an error."""


def binary(name: str, env: str) -> str:
    """Path of prometheus/promtool; skips the test (fails in CI) when not installed."""
    path = os.environ.get(env) or shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed: run tools/prometheus.sh (Debian package prometheus)"
    if os.environ.get("MSO_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def check_metrics(exposition: bytes) -> str:
    """Run `promtool check metrics` on an exposition; returns its complaints ("" = clean)."""
    result = subprocess.run(
        [binary("promtool", "PROMTOOL"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    problems = (result.stdout + result.stderr).decode().strip()
    if result.returncode != 0 and not problems:
        problems = f"promtool exited with {result.returncode}"
    return problems


def scrape(url: str, timeout: float = 10.0) -> bytes:
    """GET a /metrics endpoint the way Prometheus does (text format)."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def labels_of(sample: Sample) -> dict[str, str]:
    labels: dict[str, str] = sample["metric"]
    return labels


def value_of(sample: Sample) -> float:
    return float(sample["value"][1])


class Prometheus:
    """One Prometheus process; use as a context manager (or start()/stop())."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        job: str = JOB,
        metrics_path: str = "/metrics",
        target_labels: Mapping[str, str] | None = None,
        rule_files: Sequence[Path] = (),
        interval: str = "1s",
        workdir: Path | None = None,
    ) -> None:
        """``targets`` are host:port; ``target_labels`` are added to every scraped series
        the way Kubernetes service discovery adds ``namespace``/``pod`` (honor_labels
        keeps the exporter's own label when both have one)."""
        self.scrape_targets = list(targets)
        self.job = job
        self.metrics_path = metrics_path
        self.target_labels = dict(target_labels or {})
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.interval = interval
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mso-prometheus-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        """The prometheus.yml this instance runs with."""
        static: dict[str, Any] = {"targets": self.scrape_targets}
        if self.target_labels:
            static["labels"] = self.target_labels
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "honor_labels": True,
                    "metrics_path": self.metrics_path,
                    "scrape_timeout": self.interval,
                    "static_configs": [static],
                }
            ],
        }

    def start(self, timeout: float = 60.0, *, port: int | None = None) -> Prometheus:
        """Start and wait until /-/ready answers; retries if the port was taken.

        ``port`` listens there instead of on a free port: with ``stop(keep_workdir=True)``
        first, the same server comes back at the same URL with the samples it had, as
        Prometheus does when its pod restarts (see ``restart``)."""
        exe = binary("prometheus", "PROMETHEUS")
        self.workdir.mkdir(parents=True, exist_ok=True)  # gone after a plain stop()
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        last_error = ""
        for _attempt in range(3):
            self.port = port or _free_port()
            self._log = self.log_path.open("ab")
            self._proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
            try:
                self._wait_ready(timeout)
                return self
            except PrometheusError as exc:
                last_error = str(exc)
                self._terminate()
                if "address already in use" not in last_error:
                    break
        self.stop()
        raise PrometheusError(last_error)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _terminate(self) -> None:
        if self._proc is not None:
            end_process(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Stop the process and remove the temporary directory; safe to call twice.

        ``keep_workdir`` keeps the config and TSDB for a later ``start(port=self.port)``
        (a test of what happens while Prometheus is down); the final ``stop()``, e.g. the
        context manager's, removes them."""
        self._terminate()
        if self._own_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, timeout: float = 60.0) -> Prometheus:
        """Stop (if running) and start again on the same port with the same data."""
        port = self.port or None
        self.stop(keep_workdir=True)
        return self.start(timeout, port=port)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            # Keep what explains the failure in the test report.
            print(f"--- prometheus log ({self.log_path}) ---\n{self.log_tail()}")
        self.stop()

    # ------------------------------------------------------------ HTTP API

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its ``data``; raises PrometheusError on errors."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """Instant query; a vector result as a list of samples (a scalar as one sample)."""
        data = self.api("query", query=promql)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[Sample] = data["result"]
        return result

    def values(self, promql: str, *by: str) -> dict[tuple[str, ...], float]:
        """Instant query as {(label values of ``by``...): value}."""
        return {
            tuple(labels_of(s).get(label, "") for label in by): value_of(s)
            for s in self.query(promql)
        }

    def wait_for_query(
        self,
        promql: str,
        predicate: Callable[[list[Sample]], bool],
        timeout: float = 30.0,
        message: str | None = None,
    ) -> list[Sample]:
        """Poll an instant query until predicate(result) holds; returns the result."""
        last: list[list[Sample]] = [[]]

        def check() -> bool:
            last[0] = self.query(promql)
            return predicate(last[0])

        wait_for(check, timeout=timeout, interval=0.25, message=message or promql)
        return last[0]

    def wait_for_value(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        """Wait until the query returns exactly one sample equal to ``expected``."""
        self.wait_for_query(
            promql,
            lambda r: len(r) == 1 and value_of(r[0]) == expected,
            timeout,
            f"{promql} == {expected}",
        )

    def wait_for_absent(self, promql: str, timeout: float = 30.0) -> None:
        """Wait until the query returns nothing (series deleted: stale after one scrape)."""
        self.wait_for_query(promql, lambda r: r == [], timeout, f"{promql} to be empty")

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def wait_for_targets(self, timeout: float = 30.0) -> None:
        """Wait until every target was scraped successfully at least once."""

        def all_up() -> bool:
            targets = self.targets()
            return len(targets) == len(self.scrape_targets) and all(
                t["health"] == "up" for t in targets
            )

        wait_for(all_up, timeout=timeout, message=f"targets {self.scrape_targets} up")

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with their labels and state."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups
