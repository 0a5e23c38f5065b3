"""A synthetic service exporter on loopback: request counters whose error ratio and
latency the test sets, so a real Prometheus scraping it yields the SLO signals the
operator reads (error ratio, p99 latency) without running a real workload.

Each *target* is one series set, keyed by (namespace, name, track, revision), serving
``rps`` requests per second of which an ``error_ratio`` share answer 500, every one
taking exactly ``latency_seconds``. Traffic is continuous: counters advance by
rps x wall time elapsed whenever they are read (a scrape) or a target changes, with
the fraction carried over, so ``rate()`` over any window converges to the set values
instead of jumping with scrape timing. It runs as its own process, as a scraped
service would::

    with SloExporter() as exporter, Prometheus([exporter.address]) as prom:
        exporter.set("shop", "cart", "primary", "2", error_ratio=0.2, latency_seconds=0.3)
        ...

Control API (JSON): ``POST /targets`` creates or updates one target (fields other than
the key are optional and keep their previous value or default), ``DELETE /targets``
with the key removes it (its series disappear at the next scrape), ``GET /targets``
lists them. The server part uses the standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.integration.helpers import end_process, wait_for

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
KEY = ("namespace", "name", "track", "revision")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Histogram upper bounds (+Inf is implied): the prometheus_client defaults, which is
what a typical Python service exports."""
DEFAULT_RPS = 10.0
DEFAULT_ERROR_RATIO = 0.0
DEFAULT_LATENCY_SECONDS = 0.05

Key = tuple[str, str, str, str]


class SloExporterError(RuntimeError):
    """The exporter did not start, or refused a control request."""


# ---------------------------------------------------------------- server side


@dataclass
class Target:
    """One synthetic series set and its counters (integers, so expositions are exact)."""

    key: Key
    rps: float = DEFAULT_RPS
    error_ratio: float = DEFAULT_ERROR_RATIO
    latency_seconds: float = DEFAULT_LATENCY_SECONDS
    ok: int = 0
    errors: int = 0
    duration_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    last: float = field(default_factory=time.monotonic)
    # Fractions of a request (and of an error) not yet counted: without them a low rps
    # or error ratio would be rounded away at every advance.
    request_carry: float = 0.0
    error_carry: float = 0.0

    def advance(self, now: float) -> None:
        """Count the requests served since the last advance, at the current settings."""
        elapsed = max(0.0, now - self.last)
        self.last = now
        total = self.rps * elapsed + self.request_carry
        requests = math.floor(total)
        self.request_carry = total - requests
        failed = self.error_ratio * requests + self.error_carry
        errors = min(requests, math.floor(failed))
        self.error_carry = failed - errors
        self.errors += errors
        self.ok += requests - errors
        self.duration_sum += requests * self.latency_seconds
        for i, bound in enumerate(BUCKETS):
            if self.latency_seconds <= bound:
                self.buckets[i] += requests

    @property
    def count(self) -> int:
        return self.ok + self.errors

    def as_json(self) -> dict[str, Any]:
        return {
            **dict(zip(KEY, self.key, strict=True)),
            "rps": self.rps,
            "error_ratio": self.error_ratio,
            "latency_seconds": self.latency_seconds,
            "requests": {"200": self.ok, "500": self.errors},
        }


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Traffic:
    """All targets, behind one lock (the server answers requests in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[Key, Target] = {}

    def _advance_all(self) -> None:
        now = time.monotonic()
        for target in self._targets.values():
            target.advance(now)

    def upsert(self, key: Key, settings: dict[str, float]) -> dict[str, Any]:
        with self._lock:
            target = self._targets.get(key)
            if target is None:
                target = self._targets[key] = Target(key)
            else:
                # Time so far was served at the old settings.
                target.advance(time.monotonic())
            for name, value in settings.items():
                setattr(target, name, value)
            return target.as_json()

    def remove(self, key: Key) -> bool:
        with self._lock:
            return self._targets.pop(key, None) is not None

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            self._advance_all()
            return [t.as_json() for t in self._targets.values()]

    def exposition(self) -> bytes:
        """The Prometheus text format (0.0.4) of every target, advanced to now."""
        with self._lock:
            self._advance_all()
            targets = sorted(self._targets.values(), key=lambda t: t.key)
            lines = [
                "# HELP http_requests_total Requests served, by response code.",
                "# TYPE http_requests_total counter",
            ]
            for t in targets:
                base = list(zip(KEY, t.key, strict=True))
                for code, value in (("200", t.ok), ("500", t.errors)):
                    lines.append(f"http_requests_total{_labels([*base, ('code', code)])} {value}")
            lines += [
                "# HELP http_request_duration_seconds Time to serve a request.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            name = "http_request_duration_seconds"
            for t in targets:
                base = list(zip(KEY, t.key, strict=True))
                for bound, value in zip(BUCKETS, t.buckets, strict=True):
                    labels = _labels([*base, ("le", _number(bound))])
                    lines.append(f"{name}_bucket{labels} {value}")
                lines.append(f"{name}_bucket{_labels([*base, ('le', '+Inf')])} {t.count}")
                lines.append(f"{name}_sum{_labels(base)} {_number(t.duration_sum)}")
                lines.append(f"{name}_count{_labels(base)} {t.count}")
        return ("\n".join(lines) + "\n").encode()


def parse_target(body: Any, *, key_only: bool = False) -> tuple[Key, dict[str, float]]:
    """Validates a control request: the key, and the settings it changes (ValueError)."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    allowed = set(KEY) if key_only else {*KEY, "rps", "error_ratio", "latency_seconds"}
    unknown = set(body) - allowed
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = [k for k in KEY if body.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing {missing}")
    key: Key = (
        str(body["namespace"]),
        str(body["name"]),
        str(body["track"]),
        str(body["revision"]),
    )
    settings: dict[str, float] = {}
    for name in ("rps", "error_ratio", "latency_seconds"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, not {value!r}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, not {value!r}")
        if name == "error_ratio" and value > 1:
            raise ValueError(f"error_ratio must be within 0..1, not {value!r}")
        settings[name] = float(value)
    return key, settings


class Handler(BaseHTTPRequestHandler):
    server: ExporterServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Prometheus scrapes every second and would flood the log."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._send(200, self.server.traffic.exposition(), "text/plain; version=0.0.4")
        elif self.path == "/targets":
            self._json(200, self.server.traffic.listing())
        else:
            self._json(404, {"error": f"no {self.path}"})

    def _control(self, delete: bool) -> None:
        if self.path != "/targets":
            self._json(404, {"error": f"no {self.path}"})
            return
        try:
            key, settings = parse_target(self._body(), key_only=delete)
        except ValueError as exc:  # json.JSONDecodeError is one too
            self._json(400, {"error": str(exc)})
            return
        if not delete:
            self._json(200, self.server.traffic.upsert(key, settings))
        elif self.server.traffic.remove(key):
            self._json(200, {"removed": dict(zip(KEY, key, strict=True))})
        else:
            self._json(404, {"error": f"no target {dict(zip(KEY, key, strict=True))}"})

    def do_POST(self) -> None:
        self._control(delete=False)

    def do_DELETE(self) -> None:
        self._control(delete=True)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.traffic = Traffic()
        super().__init__((HOST, port), Handler)


def _exit_with_parent() -> None:
    """Exit once stdin closes: the test process holding the other end has died (e.g. a
    killed pytest worker), so no exporter outlives the run that started it."""
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", type=Path, help="written with the port once listening")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="exit when stdin is closed"
    )
    args = parser.parse_args(argv)
    server = ExporterServer(args.port)
    if args.port_file:
        # Written whole then renamed, so a reader never sees a partial port number.
        partial = args.port_file.with_name(args.port_file.name + ".partial")
        partial.write_text(f"{server.server_address[1]}\n")
        partial.replace(args.port_file)
    if args.exit_on_stdin_eof:
        threading.Thread(target=_exit_with_parent, daemon=True).start()
    server.serve_forever()


# ---------------------------------------------------------------- test side


class SloExporter:
    """The exporter as a child process of the test; use as a context manager."""

    def __init__(self) -> None:
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port, as a Prometheus scrape target."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    def log(self) -> str:
        try:
            return (self._dir / "exporter.log").read_text(errors="replace") if self._dir else ""
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> SloExporter:
        """Start the process and wait until it listens (it writes its port to a file)."""
        self._dir = Path(tempfile.mkdtemp(prefix="mso-slo-exporter-"))
        port_file = self._dir / "port"
        with (self._dir / "exporter.log").open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration.slo_exporter",
                    "--port",
                    "0",
                    "--port-file",
                    str(port_file),
                    "--exit-on-stdin-eof",
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

        def listening() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SloExporterError(
                    f"slo_exporter exited with {self._proc.returncode}:\n{self.log()}"
                )
            return port_file.exists()

        try:
            wait_for(listening, timeout=timeout, interval=0.05, message="slo_exporter port file")
            self.port = int(port_file.read_text())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate (kill if it does not exit) and remove the work directory; safe twice."""
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            end_process(self._proc, timeout=10)
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> SloExporter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(f"--- slo_exporter log ---\n{self.log()}")
        self.stop()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise SloExporterError(f"{method} {path} {body}: {exc.code} {detail}") from exc

    def set(
        self,
        namespace: str,
        name: str,
        track: str,
        revision: str,
        *,
        rps: float | None = None,
        error_ratio: float | None = None,
        latency_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Create or update a target; settings left None keep their value (or default).
        Returns the target as the exporter now has it."""
        body: dict[str, Any] = dict(zip(KEY, (namespace, name, track, revision), strict=True))
        for field_name, value in (
            ("rps", rps),
            ("error_ratio", error_ratio),
            ("latency_seconds", latency_seconds),
        ):
            if value is not None:
                body[field_name] = value
        result: dict[str, Any] = self._request("POST", "/targets", body)
        return result

    def remove(self, namespace: str, name: str, track: str, revision: str) -> None:
        """Delete a target (its series go stale at the next scrape); raises if unknown."""
        body = dict(zip(KEY, (namespace, name, track, revision), strict=True))
        self._request("DELETE", "/targets", body)

    def targets(self) -> list[dict[str, Any]]:
        """Every target with its settings and request counts so far."""
        result: list[dict[str, Any]] = self._request("GET", "/targets")
        return result


if __name__ == "__main__":
    main()
