"""Request paths and error classification of the one API client module."""

import asyncio
import contextlib
import http.client
import io
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest
import urllib3
from aiohttp import web

from microservice_operator import kube as kube_module
from microservice_operator.connection import Credentials
from microservice_operator.kube import (
    DEPLOYMENTS,
    MICROSERVICES,
    PODS,
    TRANSPORT_ERRORS,
    Kube,
    KubeError,
    Transport,
    _pool_manager,
    counted_session,
    dechunk,
    decode,
    read_answer,
    readable,
    request_labels,
    share,
)


def test_paths() -> None:
    assert DEPLOYMENTS.path("ns", "web") == "/apis/apps/v1/namespaces/ns/deployments/web"
    assert PODS.path("ns") == "/api/v1/namespaces/ns/pods"
    assert PODS.path(None) == "/api/v1/pods"
    assert MICROSERVICES.api_version == "mso.dev/v1alpha1"


@pytest.mark.parametrize(
    ("status", "message", "invalid", "terminating"),
    [
        (422, "Deployment.apps is invalid", True, False),
        (500, "failed to convert new object: quantities must match", True, False),
        (500, "etcdserver: request timed out", False, False),
        (
            403,
            "unable to create new content in namespace x because it is being terminated",
            False,
            True,
        ),
        (404, 'namespaces "x" not found', False, True),
        (404, 'deployments.apps "x" not found', False, False),
        (409, "conflict", False, False),
    ],
)
def test_error_classification(status: int, message: str, invalid: bool, terminating: bool) -> None:
    err = KubeError(status, "Reason", message)
    assert (err.invalid, err.namespace_terminating) == (invalid, terminating)


@pytest.mark.parametrize(
    ("method", "url", "labels"),
    [
        ("GET", "https://k:6443/api", ("get", "discovery")),
        ("GET", "https://k:6443/api/v1", ("get", "discovery")),
        ("GET", "https://k:6443/apis/apiextensions.k8s.io/v1", ("get", "discovery")),
        (
            "GET",
            "https://k:6443/apis/apiextensions.k8s.io/v1/customresourcedefinitions?watch=true",
            ("watch", "customresourcedefinitions"),
        ),
        ("GET", "https://k:6443/api/v1/namespaces", ("list", "namespaces")),
        ("GET", "https://k:6443/api/v1/namespaces/ns", ("get", "namespaces")),
        ("GET", "https://k:6443/api/v1/namespaces/ns/pods?limit=5", ("list", "pods")),
        (
            "GET",
            "https://k:6443/apis/apps/v1/namespaces/ns/deployments/web",
            ("get", "deployments"),
        ),
        ("POST", "https://k:6443/api/v1/namespaces/ns/events", ("create", "events")),
        (
            "PATCH",
            "https://k:6443/apis/mso.dev/v1alpha1/namespaces/n/microservices/x/status",
            ("patch", "microservices"),
        ),
        ("DELETE", "https://k:6443/api/v1/namespaces/ns/pods/p", ("delete", "pods")),
        ("GET", "https://k:6443/version", ("get", "other")),
    ],
)
def test_request_labels_name_kopfs_requests(method: str, url: str, labels: tuple[str, str]) -> None:
    assert request_labels(method, url) == labels


def test_cached_objects_share_their_keys_and_short_values() -> None:
    """Cached objects arrive one watch event at a time; equal keys and recurring values
    are one string, not one per object."""
    raw = '{"metadata": {"name": "%s", "resourceVersion": "%s", "labels": {"app": "web"}}, '
    raw += '"status": {"conditions": [{"type": "Ready", "status": "True"}], "m": "%s"}}'
    long = "x" * 100
    a = share(decode(raw % ("a", "17", long)))
    b = share(decode((raw % ("b", "17", long)).encode()))
    assert a["metadata"] == {"name": "a", "resourceVersion": "17", "labels": {"app": "web"}}
    assert next(iter(a)) is next(iter(b))
    assert a["metadata"]["labels"]["app"] is b["metadata"]["labels"]["app"]
    ca, cb = a["status"]["conditions"][0], b["status"]["conditions"][0]
    assert ca["type"] is cb["type"] and ca["status"] is cb["status"]
    # Never the same twice (not worth a table entry), or long: kept as decoded.
    assert a["metadata"]["resourceVersion"] is not b["metadata"]["resourceVersion"]
    assert a["status"]["m"] is not b["status"]["m"]


def test_kopfs_session_reports_each_request() -> None:
    """The session kopf is given (handlers.login) counts its requests like ours."""
    seen: list[tuple[str, str, str]] = []

    async def run() -> None:
        async def discovery(_: web.Request) -> web.Response:
            return web.json_response({"versions": ["v1"]})

        app = web.Application()
        app.router.add_get("/api", discovery)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ctx = counted_session(
            kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"),
            lambda *labels: seen.append(labels),
            user_agent="test",
        )
        try:
            async with ctx.aiohttp_session.get(f"{ctx.server}/api") as resp:
                assert resp.status == 200
        finally:
            await ctx.aiohttp_session.close()
            await runner.cleanup()

    asyncio.run(run())
    assert seen == [("get", "discovery", "200")]


def test_the_environment_proxy_is_used_unless_the_server_bypasses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    via = _pool_manager("https://k8s.example:6443", None, {})
    assert isinstance(via, urllib3.ProxyManager)
    assert via.proxy is not None and via.proxy.host == "proxy.example"
    direct = _pool_manager("https://api.internal.example:6443", None, {})
    assert not isinstance(direct, urllib3.ProxyManager)
    named = _pool_manager("https://k8s.example:6443", "http://other.example:8080", {})
    assert isinstance(named, urllib3.ProxyManager) and named.proxy is not None
    assert named.proxy.host == "other.example"


def test_a_list_hands_each_object_over_as_its_page_arrives() -> None:
    """A cache trims listed objects page by page: never thousands of whole pods at once."""

    class Page:
        def __init__(self, body: dict[str, Any]) -> None:
            self.status, self.data = 200, json.dumps(body).encode()

        def release_conn(self) -> None:
            pass

    pages = [
        {"metadata": {"resourceVersion": "7", "continue": "c1"}, "items": [{"metadata": {}}]},
        {"metadata": {"resourceVersion": "7"}, "items": [{"metadata": {}}, {"metadata": {}}]},
    ]
    seen: list[int] = []

    class Pages(Transport):
        def request(self, *_: Any, **__: Any) -> Any:
            return Page(pages.pop(0))

    kube = Kube(Pages(Credentials(server="https://k")))

    def trim(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(len(pages))  # pages still to come when this object was handed over
        return {"kind": obj["kind"], "trimmed": True}

    items, rv = kube.list_with_version(PODS, "ns", each=trim)
    assert rv == 7
    assert items == [{"kind": "Pod", "trimmed": True}] * 3
    assert seen == [1, 0, 0]


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _reads(body: bytes, sizes: list[int]) -> Any:
    """read(n) as a socket gives it: pieces of the given sizes, then b"" (closed)."""
    pieces = []
    for size in sizes:
        pieces.append(body[:size])
        body = body[size:]
    pieces.append(body)
    return lambda _n: pieces.pop(0) if pieces else b""


def test_dechunk_joins_the_chunks_one_read_completed() -> None:
    body = _chunked(b'{"a":1}\n', b'{"b":2}\n', b'{"c":3}\n')
    first = body.index(b'{"c"')  # two chunks and part of the third in the first read
    assert list(dechunk(_reads(body, [first]))) == [b'{"a":1}\n{"b":2}\n', b'{"c":3}\n']
    # A byte at a time: every chunk still arrives whole.
    one = _reads(body, [1] * len(body))
    assert b"".join(dechunk(one)) == b'{"a":1}\n{"b":2}\n{"c":3}\n'
    # Chunk extensions are ignored.
    assert list(dechunk(_reads(b"3;x=y\r\nabc\r\n0\r\n\r\n", []))) == [b"abc"]


def test_dechunk_gives_a_chunk_many_reads_long_whole() -> None:
    """A LIST page comes as one chunk of hundreds of KiB, read a TLS record at a time."""
    data = bytes(range(256)) * 1024  # 256 KiB
    body = _chunked(data, b"tail")
    assert list(dechunk(_reads(body, [16384] * (len(body) // 16384)))) == [data + b"tail"]


def test_dechunk_reads_the_trailers_up_to_the_empty_line() -> None:
    """On a kept-alive connection the next answer starts right after the body: the
    empty line that ends it (after any trailers) is read with the body, even when it
    comes in a read of its own. Left unread, the next answer would start with it."""
    for body in (b"3\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"):
        read = _reads(body, [len(body) - 2])  # the final CRLF arrives later
        assert b"".join(dechunk(read)) == b"abc"
        assert read(1) == b""  # every piece was read


@pytest.mark.parametrize(
    "body",
    [
        _chunked(b"abc")[:-5],  # cut before the last chunk
        _chunked(b"abc")[:-2],  # cut before the end of the (empty) trailers
        _chunked(b"abcdef")[:6],  # cut inside a chunk
        b"zz\r\nabc\r\n",  # not a size
        b"3\r\nabcXY0\r\n\r\n",  # data longer than its size
    ],
)
def test_dechunk_refuses_a_cut_or_malformed_body(body: bytes) -> None:
    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(dechunk(_reads(body, [2, 3])))


@pytest.fixture
def tls_server(tmp_path: Any) -> Any:
    """A loopback HTTPS server answering every request with 200 and its count, keeping
    connections open; ``close_all()`` drops them server-side (a restarted API server)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[ssl.SSLSocket] = []
    served: list[int] = []

    def serve(conn: ssl.SSLSocket) -> None:
        # Only this thread closes the connection: closed from another thread while this
        # one is reading, its descriptor could be reused by the next accepted connection
        # and this thread's TLS state would read (and corrupt) that one's records.
        with contextlib.suppress(OSError), conn:
            while conn.recv(65536):
                served.append(1)
                body = str(len(served)).encode()
                if Server.answer is not None:
                    conn.sendall(Server.answer(body))
                    continue
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                conn.sendall(head + body)

    def accept() -> None:
        # The listener too is closed by its own thread (see serve).
        with contextlib.suppress(OSError), listener:
            while True:
                raw, _ = listener.accept()
                try:
                    conn = ctx.wrap_socket(raw, server_side=True)
                except OSError:  # a failed handshake ends that connection, not the server
                    raw.close()
                    continue
                conns.append(conn)
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    class Server:
        port = listener.getsockname()[1]
        ca = str(cert)
        accepted = conns
        # What to send for a request, given the body the default answer would have.
        answer: Callable[[bytes], bytes] | None = None

        @staticmethod
        def close_all() -> None:
            """Shut every connection down; its serving thread, woken by the EOF, closes it."""
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    yield Server
    Server.close_all()
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)  # wakes accept(), which then closes it


def _getter(tls_server: Any) -> tuple[Callable[[], bytes], Transport]:
    """GET /api from the server through one Transport (also returned): the answer's
    body."""
    transport = Transport(
        Credentials(server=f"https://127.0.0.1:{tls_server.port}", ca_file=tls_server.ca)
    )

    def get() -> bytes:
        resp = transport.request("GET", "/api", [], headers={}, body=None, timeout=5.0)
        try:
            return resp.data
        finally:
            resp.release_conn()

    return get, transport


def test_requests_reuse_a_connection_but_not_one_the_server_closed(tls_server: Any) -> None:
    get, transport = _getter(tls_server)

    assert [get(), get()] == [b"1", b"2"]
    assert len(tls_server.accepted) == 1  # kept alive
    tls_server.close_all()  # the API server restarts
    # Once the client side sees the close (readable: EOF), the idle connection is stale.
    assert transport._direct is not None
    idle = transport._direct._idle
    assert len(idle) == 1
    deadline = time.monotonic() + 5
    while not all(select.select([c.sock], [], [], 0)[0] for c in idle):
        assert time.monotonic() < deadline, "the server's close never reached the client"
        time.sleep(0.01)
    assert get() == b"3"  # on a new connection, not an error
    assert len(tls_server.accepted) == 2


def test_a_chunked_answer_keeps_the_connection_and_connection_close_does_not(
    tls_server: Any,
) -> None:
    """The API server sends larger answers chunked: read whole, the connection is
    reused. An answer that says ``Connection: close`` is the last on its connection."""
    get, _ = _getter(tls_server)

    tls_server.answer = lambda body: (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3\r\n{"a\r\n%x\r\n%s\r\n2\r\n"}\r\n0\r\n\r\n' % (len(body), body)
    )
    assert [get(), get()] == [b'{"a1"}', b'{"a2"}']
    assert len(tls_server.accepted) == 1
    tls_server.answer = lambda body: (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert get() == b"3"
    assert get() == b"4"
    assert len(tls_server.accepted) == 2  # the closing answer's connection was dropped


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", True)),
        (b"HTTP/1.1 201 Created\r\ncontent-length:  2 \r\n\r\n{}rest", (201, b"{}", True)),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
            (200, b"{}", False),
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", False)),
        (b"HTTP/1.1 200 OK\r\n\r\nto the end", (200, b"to the end", False)),
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"", True)),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
            (200, b"x", True),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2;ext=1\r\nab\r\n1\r\nc\r\n0\r\nTrailer: x\r\n\r\n",
            (200, b"abc", True),
        ),
    ],
)
def test_an_answer_is_read_by_its_framing(raw: bytes, expected: tuple[int, bytes, bool]) -> None:
    assert read_answer(io.BytesIO(raw), "GET") == expected


PROTOCOL = urllib3.exceptions.ProtocolError


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", http.client.RemoteDisconnected),
        (b"SSH-2.0-OpenSSH\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", PROTOCOL),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab", PROTOCOL),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", PROTOCOL),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", PROTOCOL),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n", PROTOCOL),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", http.client.HTTPException),
    ],
)
def test_a_broken_answer_is_a_transport_error(raw: bytes, error: type[Exception]) -> None:
    """Each is one of http.client's exceptions (or, inside a chunked body, dechunk's),
    which callers count as transport errors (the server may or may not have acted)."""
    assert issubclass(error, TRANSPORT_ERRORS)
    with pytest.raises(error):
        read_answer(io.BytesIO(raw), "GET")


def test_a_request_to_a_server_that_never_answers_fails_within_its_timeout() -> None:
    """A blackholed API server (it accepts, then says nothing) must not hang a worker or
    the elector: the request fails as a transport error once its one timeout is spent,
    connecting included."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never speaks
    try:
        creds = Credentials(server=f"https://127.0.0.1:{silent.getsockname()[1]}")
        kube = Kube(Transport(creds))
        started = time.monotonic()
        with pytest.raises(KubeError) as err:
            kube.get(PODS, "ns", "p", timeout=0.5)
        assert err.value.transport
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def _watch_server(send: Callable[[Callable[[bytes], None]], None]) -> tuple[socket.socket, Any]:
    """A loopback plain-HTTP server answering one watch with the chunks ``send`` writes
    (through the function it is given), then the last chunk."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                send(lambda data: conn.sendall(b"%x\r\n%s\r\n" % (len(data), data)))
                conn.sendall(b"0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _event(i: int, pad: int = 0) -> bytes:
    obj = {"metadata": {"name": f"p{i}", "resourceVersion": str(i + 2)}, "pad": "x" * pad}
    return json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n"


def _watch_reads(
    monkeypatch: pytest.MonkeyPatch, send: Callable[[Callable[[bytes], None]], None]
) -> tuple[list[str], list[int]]:
    """(names of the events a watch delivered, bytes of each read of the connection)."""
    reads: list[int] = []
    real = kube_module.dechunk

    def counting(read: Callable[[int], bytes]) -> Iterator[bytes]:
        def counted(n: int) -> bytes:
            data = read(n)
            reads.append(len(data))
            return data

        return real(counted)

    monkeypatch.setattr(kube_module, "dechunk", counting)
    listener, thread = _watch_server(send)
    try:
        kube = Kube(Transport(Credentials(server=f"http://127.0.0.1:{listener.getsockname()[1]}")))
        names = [
            e["object"]["metadata"]["name"]
            for e in kube.watch(PODS, "ns", resource_version="1", read_timeout=10)
        ]
    finally:
        listener.close()
        thread.join(10)
    return names, reads


def test_a_watch_reads_the_events_that_came_meanwhile_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events that arrive while the watch gathers are handled in one wake-up, not one
    each (see WATCH_GATHER_SECONDS)."""
    # 1 s against the ~0.1 s the five take to send: room for a loaded machine.
    monkeypatch.setattr(kube_module, "WATCH_GATHER_SECONDS", 1.0)

    def spaced(send: Callable[[bytes], None]) -> None:
        for i in range(5):
            send(_event(i))
            time.sleep(0.02)

    names, reads = _watch_reads(monkeypatch, spaced)
    assert names == [f"p{i}" for i in range(5)]
    assert len([n for n in reads if n]) == 1  # all five in one read (then the end)


def test_a_watch_flood_is_read_whole_without_falling_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gathering never caps a watch's throughput: each round drains what is there."""

    def flood(send: Callable[[bytes], None]) -> None:
        for i in range(400):
            send(_event(i, pad=2000))

    names, reads = _watch_reads(monkeypatch, flood)
    assert names == [f"p{i}" for i in range(400)]
    # ~800 KiB: one gathering each of 64 reads of the connection at most, a few rounds.
    assert sum(reads) > 800_000
    assert len(reads) < 10


def test_readable_works_past_descriptor_1023() -> None:
    """An idle connection's and a watch's readiness are asked of descriptors an
    operator with many watches numbers past 1023, where select() raises ValueError."""
    a, b = socket.socketpair()
    high = None
    try:
        fd = 1500
        while fd < 4096:
            try:
                os.fstat(fd)  # in use: try the next one
                fd += 1
            except OSError:
                break
        try:
            os.dup2(a.fileno(), fd)
        except OSError as exc:  # a descriptor limit below 1501
            pytest.skip(f"cannot open descriptor {fd}: {exc}")
        high = socket.socket(fileno=fd)
        assert not readable(high)
        b.sendall(b"x")
        assert readable(high)
        assert high.recv(1) == b"x"
        assert not readable(high)
        b.close()  # the peer's close: end of stream is readable too
        assert readable(high)
    finally:
        if high is not None:
            high.close()
        a.close()
        b.close()
