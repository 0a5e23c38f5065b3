"""The fault proxy (tests/faults/faultproxy.py) against an echo server on loopback.

The fault suite trusts the proxy to fail exactly as told (a refused connection
must be an error, a blackhole a hang, latency a delay), so each mode is checked
here with real sockets. Waits poll for a condition; nothing sleeps a fixed time
except the recv timeouts that prove a hang.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.faults.faultproxy import FaultProxy, kubeconfig_via

TIMEOUT = 2.0  # a socket operation that should succeed never takes this long
HANG = 0.3  # how long "no reply" must last to count as a hang


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the proxy cuts with a reset
            while data := self.request.recv(65536):
                self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte back; counts the connections it accepted."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.connections = 0

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        self.connections += 1
        super().process_request(request, client_address)


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    # serve_forever polls for shutdown(); a short interval keeps teardown fast.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.01,), name="echo-server", daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(TIMEOUT)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    host, port = echo.server_address[:2]
    with FaultProxy(str(host), int(port)) as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    return sock


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def test_passthrough_forwards_both_ways_and_half_close(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert roundtrip(sock, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB: flow control across both sides
        sender = threading.Thread(target=sock.sendall, args=(big,))
        sender.start()
        received = b""
        while len(received) < len(big):
            received += sock.recv(65536)
        sender.join(TIMEOUT)
        assert received == big
        sock.shutdown(socket.SHUT_WR)  # the echo server sees EOF and closes: so do we
        assert sock.recv(10) == b""
    wait_until(lambda: proxy.open_connections == 0, "the connection to be closed")


def test_refuse_cuts_open_connections_and_resets_new_ones(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with connect(proxy) as open_sock:
        assert roundtrip(open_sock, b"before") == b"before"
        proxy.refuse()
        with pytest.raises(ConnectionError):
            roundtrip(open_sock, b"after")
    with pytest.raises(ConnectionError), connect(proxy) as new_sock:
        # The reset may come before connect() returns, or at the first recv.
        roundtrip(new_sock, b"refused")
    assert echo.connections == 1, "a refused connection never reaches the server"
    proxy.passthrough()
    with connect(proxy) as sock:
        assert roundtrip(sock, b"back") == b"back"


def test_blackhole_hangs_without_error_and_delivers_held_bytes_after(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    with connect(proxy) as open_sock, connect(proxy) as idle_sock:
        assert roundtrip(open_sock, b"before") == b"before"
        wait_until(lambda: proxy.open_connections == 2, "both connections accepted")
        proxy.blackhole()
        open_sock.sendall(b"held")
        open_sock.settimeout(HANG)
        with pytest.raises(TimeoutError):
            open_sock.recv(10)
        with connect(proxy) as new_sock:  # a new connection is accepted, then hangs too
            new_sock.settimeout(HANG)
            new_sock.sendall(b"new")
            with pytest.raises(TimeoutError):
                new_sock.recv(10)
            assert echo.connections == 2, "a blackholed connection never reaches the server"
            proxy.passthrough()
            new_sock.settimeout(TIMEOUT)
            assert new_sock.recv(10) == b"new"
        open_sock.settimeout(TIMEOUT)
        assert open_sock.recv(10) == b"held"
        assert roundtrip(idle_sock, b"idle") == b"idle"


def test_latency_delays_each_direction_and_keeps_order(proxy: FaultProxy) -> None:
    delay = 0.15
    with connect(proxy) as sock:
        assert roundtrip(sock, b"warm") == b"warm"
        proxy.latency(delay)
        start = time.monotonic()
        assert roundtrip(sock, b"slow") == b"slow"
        elapsed = time.monotonic() - start
        assert elapsed >= 2 * delay, f"round trip {elapsed:.3f}s, expected >= {2 * delay}s"
        for part in (b"a", b"b", b"c"):
            sock.sendall(part)
        received = b""
        while len(received) < 3:
            received += sock.recv(10)
        assert received == b"abc"
        proxy.passthrough()
        start = time.monotonic()
        assert roundtrip(sock, b"fast") == b"fast"
        assert time.monotonic() - start < delay


def test_upstream_down_resets_the_client() -> None:
    with socket.socket() as placeholder:  # a port with nothing listening
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    with FaultProxy("127.0.0.1", port) as proxy:
        with pytest.raises(ConnectionError), connect(proxy) as sock:
            roundtrip(sock, b"anyone?")
        wait_until(lambda: proxy.open_connections == 0, "the connection to be dropped")


def test_stop_closes_everything_and_leaves_no_thread(echo: EchoServer) -> None:
    host, port = echo.server_address[:2]
    proxy = FaultProxy(str(host), int(port)).start()
    socks = [connect(proxy) for _ in range(3)]
    try:
        assert roundtrip(socks[0], b"x") == b"x"
        proxy.latency(5)  # queued data must not keep anything alive
        socks[1].sendall(b"queued")
        wait_until(lambda: proxy.open_connections == 3, "three connections accepted")
        proxy.blackhole()
        proxy.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("faultproxy")]
        for sock in socks:
            with pytest.raises((ConnectionError, AssertionError)):
                assert sock.recv(10) != b""  # reset (or at least closed)
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        proxy.stop()  # idempotent
    finally:
        for sock in socks:
            sock.close()


def kubeconfig(server: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "https://10.0.0.1:6443"}},
            {"name": "c", "cluster": {"server": server, "certificate-authority-data": "Q0E="}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }


def test_kubeconfig_via_points_the_current_cluster_at_the_proxy(tmp_path: Path) -> None:
    src = tmp_path / "kubeconfig"
    src.write_text(json.dumps(kubeconfig("https://127.0.0.1:16443")))
    dst = kubeconfig_via(src, tmp_path / "via" / "kubeconfig", 40000)
    config = json.loads(dst.read_text())
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    assert clusters["c"] == {
        "server": "https://127.0.0.1:40000",
        "certificate-authority-data": "Q0E=",
    }
    assert clusters["other"]["server"] == "https://10.0.0.1:6443"
    assert config["users"] == kubeconfig("")["users"]
    assert dst.stat().st_mode & 0o077 == 0


def test_kubeconfig_via_keeps_the_server_name_for_tls(tmp_path: Path) -> None:
    src = tmp_path / "kubeconfig"
    src.write_text(yaml.safe_dump(kubeconfig("https://localhost:6443")))  # kind writes YAML
    config = json.loads(kubeconfig_via(src, tmp_path / "dst", 40001).read_text())
    cluster = config["clusters"][1]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:40001"
    assert cluster["tls-server-name"] == "localhost"
