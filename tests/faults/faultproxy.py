"""A TCP fault proxy on loopback, to put between an operator and kube-apiserver.

Fault tests need the network between one operator replica and the API server to
fail the ways real networks fail, while the API server itself stays healthy for
everyone else (the test, the other replica):

- ``refuse()``: the server is gone. New connections are reset at once and open
  ones are cut (RST), so clients get a connection error immediately.
- ``blackhole()``: a partition. Connections, open and new, stay open but no byte
  passes in either direction, so clients hang until their own timeouts fire; it
  is the fault that catches missing timeouts and renew deadlines. Bytes sent
  meanwhile are held (TCP would retransmit them) and flow once it ends.
- ``latency(seconds)``: every chunk is delayed by that much in each direction.
- ``passthrough()``: back to normal.

It is a byte-level TCP proxy, so TLS passes through untouched: point a kubeconfig
at it with :func:`kubeconfig_via` and certificate verification works as before.

The proxy is standard library only: an asyncio event loop in one background thread, driven
through thread-safe calls that return once the new mode is in force, so a test
can switch modes and assert immediately without sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import ipaddress
import json
import socket
import struct
import threading
import urllib.parse
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_EOF = b""  # queued marker: the source half-closed; forward a FIN
_CALL_TIMEOUT = 10.0  # seconds a control call may wait for the loop thread


class Mode(enum.Enum):
    PASSTHROUGH = "passthrough"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    LATENCY = "latency"


def _reset(transport: asyncio.Transport) -> None:
    """Closes a connection with an RST rather than a FIN, as a dead host or a
    firewall rejecting the flow would: the peer gets ECONNRESET, not EOF."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; hands every event to its _Pipe."""

    def __init__(self, pipe: _Pipe, is_client: bool) -> None:
        self.pipe = pipe
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None
        self.pause_reasons: set[str] = set()
        self.lost = False
        self.eof_sent = False  # a FIN was written to this side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pipe.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.pipe.enqueue(self, data)

    def eof_received(self) -> bool:
        self.pipe.enqueue(self, _EOF)
        return True  # keep the transport open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pipe.side_lost(self, exc)

    # Flow control: when this side cannot take more, stop reading from the other.
    def pause_writing(self) -> None:
        self.pipe.set_reading(self.pipe.other(self), "backpressure", paused=True)

    def resume_writing(self) -> None:
        self.pipe.set_reading(self.pipe.other(self), "backpressure", paused=False)

    def update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.pause_reasons and transport.is_reading():
            transport.pause_reading()
        elif not self.pause_reasons and not transport.is_reading():
            transport.resume_reading()


class _Pipe:
    """One proxied connection: the accepted client socket and its upstream socket.

    Bytes read from one side are queued with the time they may leave (now plus
    the latency) and written to the other side in order. Lives on the loop thread.
    """

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.client = _Side(self, is_client=True)
        self.upstream = _Side(self, is_client=False)
        # Keyed by destination side: (due loop time, chunk or _EOF).
        self.queues: dict[bool, collections.deque[tuple[float, bytes]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }
        self.timers: dict[bool, asyncio.TimerHandle | None] = {True: None, False: None}
        self.connect_task: asyncio.Task[None] | None = None
        self.closed = False

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def set_reading(self, side: _Side, reason: str, *, paused: bool) -> None:
        if paused:
            side.pause_reasons.add(reason)
        else:
            side.pause_reasons.discard(reason)
        side.update_reading()

    # ------------------------------------------------------------------ events

    def side_made(self, side: _Side) -> None:
        if self.closed:  # cut (refuse, stop) while connecting
            assert side.transport is not None
            side.transport.abort()
            return
        if side.is_client:
            if self.proxy.mode is Mode.REFUSE:
                self.closed = True
                assert side.transport is not None
                _reset(side.transport)
                return
            self.proxy.pipes.add(self)
            self.proxy.accepted += 1
        self.apply_mode()

    def enqueue(self, src: _Side, data: bytes) -> None:
        dst = self.other(src)
        self.queues[dst.is_client].append((self.loop.time() + self.proxy.delay, data))
        self.flush(dst)

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is not None:
            self.cut()  # a reset on one side is passed on as a reset
            return
        # A clean close: deliver what is queued for the other side, then close it.
        self.flush(self.other(side))

    # ------------------------------------------------------------------ forwarding

    def apply_mode(self) -> None:
        """Brings this connection in line with the proxy's current mode."""
        if self.closed:
            return
        mode = self.proxy.mode
        if mode is Mode.REFUSE:
            self.cut()
            return
        hold = mode is Mode.BLACKHOLE
        for side in (self.client, self.upstream):
            self.set_reading(side, "blackhole", paused=hold)
        if hold:
            return
        if self.upstream.transport is None and self.connect_task is None:
            # Connected only once bytes may flow: a blackholed connection never
            # reached the server, as a SYN lost in a partition would not.
            self.set_reading(self.client, "connecting", paused=True)
            self.connect_task = self.loop.create_task(self.connect())
        self.flush(self.client)
        self.flush(self.upstream)

    async def connect(self) -> None:
        try:
            await self.loop.create_connection(
                lambda: self.upstream, self.proxy.upstream_host, self.proxy.upstream_port
            )
        except OSError:
            # The server is down: the client sees a reset, as it would connecting to it.
            self.cut()
            return
        self.set_reading(self.client, "connecting", paused=False)

    def flush(self, dst: _Side) -> None:
        """Writes the chunks for dst that are due; schedules itself for the rest."""
        timer = self.timers[dst.is_client]
        if timer is not None:
            timer.cancel()
            self.timers[dst.is_client] = None
        if self.closed or self.proxy.mode is Mode.BLACKHOLE or dst.transport is None:
            return
        queue = self.queues[dst.is_client]
        now = self.loop.time()
        while queue and queue[0][0] <= now:
            _, chunk = queue.popleft()
            if dst.lost or dst.transport.is_closing():
                queue.clear()
                break
            if chunk is _EOF:
                if dst.transport.can_write_eof():
                    dst.transport.write_eof()
                dst.eof_sent = True
            else:
                dst.transport.write(chunk)
        if queue:
            self.timers[dst.is_client] = self.loop.call_at(queue[0][0], self.flush, dst)
            return
        src = self.other(dst)
        # Both directions finished (FIN each way), or the source closed: done.
        if (dst.eof_sent and src.eof_sent) or src.lost:
            self.close()

    # ------------------------------------------------------------------ teardown

    def _finish(self) -> None:
        self.closed = True
        self.proxy.pipes.discard(self)
        for timer in self.timers.values():
            if timer is not None:
                timer.cancel()
        if self.connect_task is not None and not self.connect_task.done():
            self.connect_task.cancel()

    def close(self) -> None:
        """Closes both sides after their write buffers drain (FIN)."""
        if self.closed:
            return
        self._finish()
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                side.transport.close()

    def cut(self) -> None:
        """Resets both sides at once, dropping whatever is queued."""
        if self.closed:
            return
        self._finish()
        for side in (self.client, self.upstream):
            if side.transport is not None and not side.lost:
                _reset(side.transport)


class FaultProxy:
    """A TCP proxy from 127.0.0.1:<port> to upstream whose behaviour tests switch
    at run time (see the module docstring). Each mode method returns once the
    mode is in force for every open and future connection.

    ``with FaultProxy(host, port) as proxy:`` starts and stops it.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0  # set by start()
        self.mode = Mode.PASSTHROUGH
        self.delay = 0.0  # seconds added to each chunk (Mode.LATENCY)
        self.accepted = 0  # connections accepted (and not refused) so far
        self.pipes: set[_Pipe] = set()  # owned by the loop thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        """Binds 127.0.0.1:0 (see .port) and serves from a background thread."""
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        ready: threading.Event = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready))
            except BaseException as exc:
                errors.append(exc)
                ready.set()
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{id(self):x}", daemon=True)
        self._thread.start()
        if not ready.wait(_CALL_TIMEOUT) or errors:
            self.stop()
            raise RuntimeError(f"FaultProxy did not start: {errors[:1]}")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._server = await loop.create_server(
            lambda: _Pipe(self).client, "127.0.0.1", 0, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopping.wait()
        self._server.close()
        for pipe in list(self.pipes):
            pipe.cut()
        await self._server.wait_closed()
        # Let the aborted transports and cancelled connects run their callbacks.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)

    def stop(self) -> None:
        """Closes the listener and every connection (reset), then joins the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(_CALL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("FaultProxy thread did not stop")
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ modes

    def passthrough(self) -> None:
        """Forwards everything at once; held bytes (blackhole) flow now."""
        self._set_mode(Mode.PASSTHROUGH, 0.0)

    def refuse(self) -> None:
        """Resets new connections at once and cuts the open ones (RST)."""
        self._set_mode(Mode.REFUSE, 0.0)

    def blackhole(self) -> None:
        """Keeps connections open but forwards nothing, so peers hang (no error)."""
        self._set_mode(Mode.BLACKHOLE, 0.0)

    def latency(self, seconds: float) -> None:
        """Delays every chunk by seconds in each direction (order is kept)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0, got {seconds}")
        self._set_mode(Mode.LATENCY, float(seconds))

    @property
    def open_connections(self) -> int:
        """Client connections currently proxied (not refused, not yet closed)."""
        return len(self.pipes)

    def _set_mode(self, mode: Mode, delay: float) -> None:
        async def apply() -> None:
            self.mode, self.delay = mode, delay
            for pipe in list(self.pipes):
                pipe.apply_mode()

        self._call(apply)

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = self._loop
        if self._thread is None or loop is None:
            raise RuntimeError("FaultProxy is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(fn(), loop).result(_CALL_TIMEOUT)


def kubeconfig_via(src_kubeconfig: Path, dst: Path, port: int) -> Path:
    """Writes a copy of src_kubeconfig whose current cluster is reached through
    https://127.0.0.1:port (a FaultProxy), and returns dst.

    Certificates stay as they are. If the original server was not 127.0.0.1
    (e.g. ``localhost``), ``tls-server-name`` keeps verification against that
    name; the local control plane's serving certificate has IP SAN 127.0.0.1, so
    there nothing else is needed.
    """
    text = src_kubeconfig.read_text()
    config: dict[str, Any]
    try:
        config = json.loads(text)  # localcluster writes JSON
    except ValueError:  # kubeconfigs written by other tools (kind, k3d) are YAML
        config = yaml.safe_load(text)
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    current = config.get("current-context")
    if current not in contexts:
        raise ValueError(f"{src_kubeconfig}: no current context")
    cluster_name = contexts[current]["cluster"]
    for entry in config.get("clusters") or []:
        if entry["name"] != cluster_name:
            continue
        cluster = entry["cluster"]
        host = urllib.parse.urlsplit(cluster["server"]).hostname or ""
        cluster["server"] = f"https://127.0.0.1:{port}"
        if not _is_loopback_ip(host) and "tls-server-name" not in cluster:
            cluster["tls-server-name"] = host
        break
    else:
        raise ValueError(f"{src_kubeconfig}: cluster {cluster_name!r} not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
    tmp.chmod(0o600)
    tmp.replace(dst)
    return dst


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address("127.0.0.1")
    except ValueError:
        return False
