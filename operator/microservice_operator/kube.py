"""The only module that talks to the Kubernetes API server.

Every request goes through :meth:`Kube._call` so it is counted by verb, resource and
response code (``mso_kube_requests_total``): that is how the benchmarks and the
"no writes in steady state" test see what the operator really does. Writes are
server-side apply with our field manager, so we own exactly the fields we send.
"""

from __future__ import annotations

import builtins
import http.client
import io
import json
import logging
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import kopf
import pydantic_core
import urllib3

from .connection import ConfigError, Credentials
from .settings import FIELD_MANAGER, HANDOFF_FIELD_MANAGER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """apiVersion as written in manifests."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """REST path of the collection or of one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
        return base


MICROSERVICES = Resource("mso.dev", "v1alpha1", "microservices", "MicroService")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", "ControllerRevision")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)

BY_KIND = {
    r.kind: r
    for r in (
        MICROSERVICES,
        DEPLOYMENTS,
        SERVICES,
        HPAS,
        PDBS,
        PODS,
        EVENTS,
        LEASES,
        CONTROLLERREVISIONS,
        NAMESPACES,
    )
}

RequestHook = Callable[[str, str, str], None]
"""Called as hook(verb, resource plural, code) after every request."""

WriteGuard = Callable[[str, "Resource"], float | None]
"""Called as guard(verb, resource) before every write; raises to refuse it (a replica
that is not, or no longer, the leader must not write), else returns the seconds the
write may take at most (None: no limit), so no write is still in flight when another
replica may have taken over."""

ALREADY_EXISTS = "AlreadyExists"
"""KubeError reason of a ``create_only`` apply whose object already exists."""
UNMATCHABLE_RESOURCE_VERSION = "1"
"""A resourceVersion precondition no stored object meets: etcd's revision starts at 1
and every write raises it, so the first stored object already has 2 or more."""

WRITE_VERBS = frozenset({"apply", "patch", "create", "update", "delete"})
REQUEST_TIMEOUT = 30.0
LIST_PAGE = 100
"""Objects per LIST page. Small on purpose: a page is decoded whole before its objects
are trimmed, and the informers of every kind list at once at start-up; with pages of
500, the decoded pages left the allocator fragmented (a restart over 2,000
MicroServices peaked at 137-147 MiB, with pages of 100 at 125). The extra requests
(one per 100 objects, at start-up and on relist) cost the API server little."""
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,  # MaxRetryError, ProtocolError, timeouts, SSL errors
    http.client.HTTPException,  # a connection closed before or inside an answer
    OSError,  # refused, reset, unreachable, timed out
)


_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_labels(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request by its method and URL, for requests this module
    does not send itself (kopf's): ``GET /apis/apps/v1/namespaces/ns/deployments``
    is ("list", "deployments"); a ``?watch=`` query is a watch; the API discovery
    paths (``/api``, ``/apis/group/version``) are ("get", "discovery")."""
    parsed = urllib.parse.urlsplit(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return ("get" if method.upper() == "GET" else "other"), "other"
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]  # a namespaced resource
    if not rest:
        return ("get" if method.upper() == "GET" else "other"), "discovery"
    resource, named = rest[0], len(rest) > 1
    verb = _METHOD_VERBS.get(method.upper(), "other")
    if method.upper() == "GET":
        query = urllib.parse.parse_qs(parsed.query)
        if query.get("watch", [""])[0] in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if named else "list"
    return verb, resource


def counted_session(
    info: kopf.ConnectionInfo, on_request: RequestHook, *, user_agent: str
) -> kopf.AiohttpSession:
    """kopf's connection built as kopf builds it from ``info``, but with every request
    reported to ``on_request`` (verb, resource, code) like this module's own: kopf's
    few requests (its start-up API discovery) are counted too."""
    trace = aiohttp.TraceConfig()

    async def ended(
        _: aiohttp.ClientSession, __: object, params: aiohttp.TraceRequestEndParams
    ) -> None:
        on_request(*request_labels(params.method, str(params.url)), str(params.response.status))

    async def failed(
        _: aiohttp.ClientSession, __: object, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        on_request(*request_labels(params.method, str(params.url)), "error")

    trace.on_request_end.append(ended)
    trace.on_request_exception.append(failed)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers={**info.as_http_headers(), "User-Agent": user_agent},
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=[trace],
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
    )


_STRINGS: dict[str, str] = {}
_MAX_STRINGS = 200_000
_UNIQUE_VALUES = frozenset({"resourceVersion", "uid", "podIP", "hostIP"})
"""Keys whose values no two objects share: not worth a table entry."""


def share(obj: Any, key: str = "", like: Any = None) -> Any:
    """``obj`` with its keys and short string values replaced by one shared copy each
    (in place for dicts and lists; returns it).

    The caches hold thousands of objects decoded one watch event at a time, and
    ``json`` shares nothing between documents: every pod had its own "metadata",
    "Ready", "True", its MicroService's name in five labels, its node's name... Applied
    to objects after they are trimmed, so the walk is short. The table is bounded (a
    string past the bound is kept as decoded); values no two objects share
    (resourceVersion, uid, IPs) and long ones (hashes, messages) never enter it.

    ``like`` is the previous version of the same object, already shared: every part of
    ``obj`` equal to the same part there *is* that part afterwards, unwalked. A new
    version of a pod or a Deployment mostly repeats the last one (a status field moved),
    so the walk is then only over what changed, and the unchanged parts stay one copy.
    Equality is Python's (``1 == True``), so callers pass ``like`` only where the API's
    types are fixed per field (see :func:`informer.prepare`).
    """
    table = _STRINGS
    full = len(table) >= _MAX_STRINGS
    if isinstance(obj, dict):
        prev = like if isinstance(like, dict) else None
        items = list(obj.items())
        obj.clear()
        for k, v in items:
            value = v
            if isinstance(v, str):
                if len(v) <= 64 and k not in _UNIQUE_VALUES:
                    value = table.get(v, v) if full else table.setdefault(v, v)
            elif isinstance(v, dict | list):
                value = _shared_part(v, k, prev.get(k) if prev is not None else None)
            name = k
            if len(k) <= 64 and not k.startswith(("k:", "v:")):
                name = table.get(k, k) if full else table.setdefault(k, k)
            obj[name] = value
    elif isinstance(obj, list):
        prev_list = like if isinstance(like, list) and len(like) == len(obj) else None
        for i, v in enumerate(obj):
            if isinstance(v, str):
                if len(v) <= 64 and key not in _UNIQUE_VALUES:
                    obj[i] = table.get(v, v) if full else table.setdefault(v, v)
            elif isinstance(v, dict | list):
                obj[i] = _shared_part(v, key, prev_list[i] if prev_list is not None else None)
    return obj


def _shared_part(part: Any, key: str, old: Any) -> Any:
    """A dict or list inside an object being shared: the previous version's equal part
    as it is, else ``part`` shared (against that previous part, if any)."""
    if old is not None and type(old) is type(part) and old == part:
        return old
    return share(part, key, old)


def decode(raw: bytes | str) -> Any:
    """JSON as the API server sent it (the caches keep it trimmed, then shared:
    :func:`share`).

    pydantic-core's parser (a dependency already): about twice as fast as ``json``'s on
    the API's objects, and every watch event and answer goes through here. Its bounded
    cache of keys makes equal keys one string across documents; values are left to
    :func:`share`, which knows which are worth sharing. Invalid JSON raises ValueError,
    as ``json.loads`` does."""
    return pydantic_core.from_json(raw, cache_strings="keys")


def encode(body: Any) -> bytes:
    """A request body as compact JSON (UTF-8, as the API server reads it): pydantic-core's
    encoder, several times faster than ``json.dumps``. Hashes that must stay stable
    across versions (revisions, applied-hash annotations) keep ``json.dumps``."""
    return pydantic_core.to_json(body)


class KubeError(Exception):
    """An API request failed; ``message`` is the API server's own explanation."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        """The object (or its collection) does not exist."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """Optimistic-concurrency or apply conflict."""
        return self.status == 409

    @property
    def invalid(self) -> bool:
        """The server rejected the object as invalid; retrying the same input won't help.

        Server-side apply reports some invalid values (e.g. a malformed resource
        quantity) as a 500 "failed to convert" rather than a 422.
        """
        if self.status in (400, 422):
            return True
        return self.status == 500 and "convert" in self.message

    @property
    def transport(self) -> bool:
        """No HTTP answer at all (refused, reset, timed out): the API server may or may
        not have acted on the request."""
        return self.status == 0

    @property
    def gone(self) -> bool:
        """410: the resourceVersion asked for is too old; relist."""
        return self.status == 410

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted (or is gone); its objects will be gone shortly."""
        if self.status == 403 and "being terminated" in self.message:
            return True
        return self.status == 404 and self.message.startswith("namespaces ")


def _error_from(status: int, raw: bytes | None) -> KubeError:
    """A KubeError carrying the API server's Status message, if it sent one."""
    message = reason = f"HTTP {status}"
    try:
        body = json.loads(raw or b"{}")
        message = str(body.get("message", message))
        reason = str(body.get("reason", reason))
    except (ValueError, TypeError, AttributeError):
        pass
    return KubeError(status, reason, message)


def _pool_manager(server: str, proxy_url: str | None, kw: dict[str, Any]) -> urllib3.PoolManager:
    """A pool to ``server``: through the kubeconfig's proxy-url, else through the
    environment's proxy for it (HTTPS_PROXY, NO_PROXY, as the client library did)."""
    if not proxy_url:
        url = urllib.parse.urlsplit(server)
        if not urllib.request.proxy_bypass(url.hostname or ""):
            proxy_url = urllib.request.getproxies().get(url.scheme or "https")
    if not proxy_url:
        return urllib3.PoolManager(**kw)
    if proxy_url.startswith("socks"):
        try:
            from urllib3.contrib.socks import SOCKSProxyManager  # noqa: PLC0415
        except ImportError as exc:  # PySocks is not installed
            raise ConfigError(f"proxy {proxy_url}: SOCKS proxies need PySocks") from exc
        return SOCKSProxyManager(proxy_url, **kw)
    return urllib3.ProxyManager(proxy_url, **kw)


class _Answer:
    """An answer read whole over a :class:`_Direct` connection; what callers use of
    urllib3's response (``status``, ``data``, ``release_conn``)."""

    def __init__(self, status: int, data: bytes, conn: _Conn, keep: bool, pool: _Direct) -> None:
        self.status = status
        self.data = data
        self._conn, self._keep, self._pool = conn, keep, pool

    def release_conn(self) -> None:
        """Give the connection back for the next request if the server keeps it open;
        else close it."""
        if self._keep:
            self._pool.put(self._conn)
        else:
            self._conn.close()


class _Conn:
    """One keep-alive HTTPS connection of a :class:`_Direct` pool: the TLS socket and
    a buffered reader over it that lives as long as it does."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


_MAX_LINE = 65536
_MAX_HEADERS = 100
_UNSAFE_IN_REQUEST = re.compile(r"[\x00-\x20\x7f]")
"""Characters no request target may hold and no header value may hold but spaces and
tabs (they would end the line: request splitting)."""


def _line(reader: io.BufferedIOBase) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong("answer line")
    return line


def read_answer(reader: io.BufferedIOBase, method: str) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection stays open) of one HTTP/1.1 answer.

    What http.client's response does, without its header parsing through the email
    package, which was a third of a request's CPU: only Content-Length,
    Transfer-Encoding and Connection matter here. Informational (1xx) answers are
    skipped. A connection closed early raises http.client's exceptions, or in a chunked
    body :func:`dechunk`'s (all transport errors to the caller)."""
    while True:
        line = _line(reader)
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise http.client.BadStatusLine(repr(line[:80]))
        status = int(parts[1])
        length: int | None = None
        chunked = False
        close = parts[0] == b"HTTP/1.0"
        for _ in range(_MAX_HEADERS + 1):
            header = _line(reader)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                if not value.strip().isdigit():
                    raise http.client.HTTPException(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = close or b"close" in value.lower()
        else:
            raise http.client.HTTPException(f"more than {_MAX_HEADERS} headers")
        if not 100 <= status < 200:
            break
    if status in (204, 304) or method == "HEAD":
        return status, b"", not close
    if chunked:
        return status, b"".join(dechunk(reader.read1)), not close
    if length is None:  # the body ends with the connection
        return status, reader.read(), False
    body = reader.read(length)
    if len(body) < length:
        raise http.client.IncompleteRead(body, length - len(body))
    return status, body, not close


def readable(source: Any) -> bool:
    """Whether a read of ``source`` (a socket or file with a descriptor) returns at once:
    data, end of stream or an error is there. poll(), not select(): select() refuses
    descriptors past 1023, which an operator watching hundreds of namespaces (an open
    watch per namespace and kind) reaches."""
    poller = select.poll()
    poller.register(source, select.POLLIN)
    return bool(poller.poll(0))


class _Direct:
    """Keep-alive HTTPS connections to the API server on plain sockets.

    A request through urllib3 costs about twice the CPU of the same request through
    http.client (URL parsing, pool lookups, retry and timeout objects, response
    wrappers), and http.client spends a third of its own on parsing headers through
    the email package: with six requests per MicroService created, that was a fifth
    of the operator's CPU. The request is written in one piece and the answer read
    whole (:func:`read_answer`). Used for answers read whole (not watches) when there
    is no proxy and no TLS server name override; everything else keeps urllib3.
    """

    def __init__(self, server: str, ctx: ssl.SSLContext, maxsize: int) -> None:
        url = urllib.parse.urlsplit(server)
        self.host = url.hostname or ""
        self.port = url.port or 443
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == 443 else f"{host}:{self.port}"
        self.prefix = url.path.rstrip("/")
        self.ctx = ctx
        self.maxsize = maxsize
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def _take(self) -> _Conn | None:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return None
            # An idle connection the server closed (or sent anything on) is not reused:
            # it would fail the request sent on it, as urllib3 also checks.
            if not readable(conn.sock):
                return conn
            conn.close()

    def _connect(self, timeout: float) -> _Conn:
        raw = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _Conn(self.ctx.wrap_socket(raw, server_hostname=self.host))
        except BaseException:
            raw.close()
            raise

    def put(self, conn: _Conn) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _head(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> bytes:
        if _UNSAFE_IN_REQUEST.search(target):
            raise http.client.InvalidURL(f"control characters or spaces in {target[:80]!r}")
        lines = [f"{method} {self.prefix}{target} HTTP/1.1", f"Host: {self.host_header}"]
        for name, value in headers.items():
            if _UNSAFE_IN_REQUEST.search(name) or _UNSAFE_IN_REQUEST.search(value.replace(" ", "")):
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float | tuple[float, float],
    ) -> _Answer:
        """Send one request and read its answer. ``timeout``: (connect, read) seconds,
        or one number for both together, as urllib3 takes it (a write may not outlast
        what its guard allowed, connecting included)."""
        started = time.monotonic()
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        message = self._head(method, target, body, headers) + (body or b"")
        conn = self._take() or self._connect(connect)
        try:
            if not isinstance(timeout, tuple):
                read = timeout - (time.monotonic() - started)
                if read <= 0:
                    raise TimeoutError(f"no time left to send the request ({timeout:.1f}s)")
            conn.sock.settimeout(read)
            conn.sock.sendall(message)
            status, data, keep = read_answer(conn.reader, method)
            return _Answer(status, data, conn, keep, self)
        except BaseException:
            conn.close()
            raise


class Transport:
    """HTTP(S) to the API server: a urllib3 connection pool with the credentials'
    TLS settings and a fresh Authorization header on every request.

    No retries inside: every failure reaches the caller at once as a KubeError, and
    the caller decides (informers and workers back off, the elector must see a
    failure within its renew deadline, and a write must not be re-sent after the
    time its guard allowed). A 401 renews the credentials (a rotated token file, an
    expired exec credential) for the next attempt.
    """

    def __init__(self, credentials: Credentials, *, maxsize: int = 32) -> None:
        self.credentials = credentials
        self.server = credentials.server
        self.user_agent = "microservice-operator"
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._cert: str | None = None
        self._pool: urllib3.PoolManager | None = None
        self._direct: _Direct | None = None

    def pool(self) -> urllib3.PoolManager:
        """The connection pool, rebuilt when an exec plugin issued a new client
        certificate."""
        with self._lock:
            creds = self.credentials
            if self._pool is None or self._cert != creds.cert_file:
                kw: dict[str, Any] = {
                    "num_pools": 4,
                    # Enough connections for the reconcile workers, the watches and
                    # the elector.
                    "maxsize": self._maxsize,
                    "retries": False,
                    "ssl_context": creds.ssl_context(),
                }
                if creds.insecure:
                    kw.update(cert_reqs="CERT_NONE", assert_hostname=False)
                if creds.tls_server_name:
                    kw["server_hostname"] = creds.tls_server_name
                old, old_direct = self._pool, self._direct
                self._pool = _pool_manager(creds.server, creds.proxy_url, kw)
                self._direct = None
                plain = not isinstance(self._pool, urllib3.ProxyManager)
                if plain and creds.server.startswith("https://") and not creds.tls_server_name:
                    self._direct = _Direct(creds.server, kw["ssl_context"], self._maxsize)
                self._cert = creds.cert_file
                if old is not None:
                    old.clear()
                if old_direct is not None:
                    old_direct.clear()
            return self._pool

    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]],
        *,
        headers: dict[str, str],
        body: bytes | None,
        timeout: float | tuple[float, float],
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse | _Answer:
        """Send one request. Through the direct connections the answer comes read
        whole; through urllib3 its body is not read yet (the caller reads it, or
        streams it for a watch: ``stream``)."""
        target = path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        auth = self.credentials.headers()
        pool = self.pool()  # also rebuilds the direct pool when the certificate changed
        direct = None if stream else self._direct
        resp: urllib3.BaseHTTPResponse | _Answer
        if direct is not None:
            sent = {**headers, **auth, "User-Agent": self.user_agent}
            resp = direct.request(method, target, body, sent, timeout)
        else:
            to = (
                urllib3.Timeout(connect=timeout[0], read=timeout[1])
                if isinstance(timeout, tuple)
                else urllib3.Timeout(total=timeout)
            )
            resp = pool.request(
                method,
                self.server + target,
                body=body,
                headers={**headers, **auth, "User-Agent": self.user_agent},
                timeout=to,
                preload_content=False,
                redirect=False,
            )
        if resp.status == 401:
            try:
                used = auth.get("Authorization", "").removeprefix("Bearer ") or None
                self.credentials.refresh(force=True, used=used)
            except Exception as exc:  # the 401 is what the caller sees
                log.warning("Could not renew the API credentials after a 401: %s", exc)
        return resp


READ_SIZE = 16384
"""Bytes a watch reads at most at once: a TLS record's worth."""
WATCH_GATHER_SECONDS = 0.25
"""How long a watch lets events gather before reading them, all at once.

Handling a watch event costs several times more CPU after the thread slept than right
after another one: in between, the control plane on the same cores has the caches.
At 1,000 MicroServices coming up, events arrive ~60 a second, one per wake-up when
each is read as it comes. Reading every 0.25 s whatever has arrived handles them a few
at a time (at 300 MicroServices the watches' CPU fell to a third); the delay is small
next to the second a child's change waits before its MicroService is planned
(controller.CHILD_EVENT_DELAY). A watch never falls behind for it: each round drains
what is there (:data:`DRAIN_READS`)."""
DRAIN_READS = 64
"""Reads at most per gathering (1 MiB): a flood is handled in pieces."""


def _body(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """A streamed response's body, in pieces as they arrive.

    A watch is a chunked response whose events mostly arrive one at a time: urllib3
    reads each chunk with several buffered reads (the size line, the data, its end),
    which at thousands of events a second is most of a watch's cost. When the
    response is a plain chunked one, its chunks are parsed here from everything that
    arrived by the time of the read (all events that arrived together at once: see
    :data:`WATCH_GATHER_SECONDS`); else urllib3 decodes it."""
    fp = getattr(getattr(resp, "_fp", None), "fp", None)
    plain = (
        not resp.headers.get("Content-Encoding")
        and resp.headers.get("Transfer-Encoding", "").lower() == "chunked"
    )
    if fp is None or not plain or not hasattr(fp, "readinto1"):
        yield from resp.stream(65536, decode_content=True)
        return
    # One buffer per watch, read into: a fresh 64 KiB bytes per read, shrunk to the
    # few KiB that came, left holes in the heap between long-lived cache objects.
    view = memoryview(bytearray(READ_SIZE))

    gather = WATCH_GATHER_SECONDS

    def read(_size: int) -> bytes:
        if gather > 0:
            time.sleep(gather)
        n = fp.readinto1(view)  # waits for the next event (or the read timeout)
        pieces = [bytes(view[:n])]
        # Then whatever else is there already, without waiting: a record the TLS
        # layer holds decrypted is read on the next round, after the next gathering.
        for _ in range(DRAIN_READS - 1):
            if not n or not readable(fp):
                break
            n = fp.readinto1(view)
            pieces.append(bytes(view[:n]))
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    yield from dechunk(read)


def dechunk(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """The data of an HTTP/1.1 chunked body from ``read(n)`` (up to n bytes as they
    come, b"" when the connection ends), as it arrives: each piece joins every chunk
    that one read completed. Reads the body to its end, trailers included (a watch's,
    or an answer's on a kept-alive connection, whose next answer must not start with
    them: see :func:`read_answer`). Raises ProtocolError on a malformed body and on
    one that ends before its last (empty) chunk and trailers."""
    buf = b""
    while True:
        pieces: list[bytes] = []
        pos = 0  # where the next chunk's size line starts
        want = 1  # bytes to read before parsing again
        while (end := buf.find(b"\r\n", pos)) >= 0:
            try:
                size = int(buf[pos:end].split(b";", 1)[0], 16)  # extensions ignored
            except ValueError:
                line = buf[pos:end][:40]
                raise urllib3.exceptions.ProtocolError(f"bad chunk size {line!r}") from None
            if size == 0:
                # The last chunk, then trailer lines (ignored) up to an empty one: all
                # of it read, so a kept-alive connection's next answer starts clean.
                if buf.find(b"\r\n\r\n", end) < 0:
                    break  # the end of the trailers is still on its way
                if pieces:
                    yield b"".join(pieces)
                return
            stop = end + 2 + size
            if len(buf) < stop + 2:
                want = stop + 2 - len(buf)  # the rest of this chunk is on its way
                break
            if buf[stop : stop + 2] != b"\r\n":
                raise urllib3.exceptions.ProtocolError("chunk data not followed by CRLF")
            pieces.append(buf[end + 2 : stop])
            pos = stop + 2
        if pieces:
            yield b"".join(pieces)
        # Read on until the chunk in progress is complete, and join once: a LIST page
        # comes as one chunk of hundreds of KiB, a TLS record (16 KiB) per read.
        parts = [buf[pos:]]
        while want > 0:
            more = read(READ_SIZE)
            if not more:
                raise urllib3.exceptions.ProtocolError("response ended before its last chunk")
            parts.append(more)
            want -= len(more)
        buf = b"".join(parts)


class Kube:
    """Typed-enough access to the few API calls the operator makes."""

    def __init__(
        self,
        transport: Transport,
        on_request: RequestHook | None = None,
        *,
        user_agent: str | None = None,
        write_guard: WriteGuard | None = None,
    ) -> None:
        self.transport = transport
        self._on_request = on_request
        self.write_guard = write_guard
        if user_agent:
            # Names the replica in the API server's audit log and request metrics.
            self.transport.user_agent = user_agent

    def _count(self, verb: str, resource: Resource, code: str) -> None:
        if self._on_request is not None:
            self._on_request(verb, resource.plural, code)

    # ----------------------------------------------------------------- plumbing
    def _call(
        self,
        verb: str,
        resource: Resource,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        timeout: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        if verb in WRITE_VERBS and self.write_guard is not None:
            allowed = self.write_guard(verb, resource)
            if allowed is not None:
                # The API server gives up on the request too (?timeout=), so neither
                # side keeps it alive past what the guard allowed.
                timeout = max(0.1, min(timeout, allowed))
                query = [*(query or []), ("timeout", f"{max(1, int(timeout))}s")]
        resp = self._send(verb, resource, method, path, body, query, content_type, timeout)
        code = str(resp.status)
        try:
            raw = resp.data
        except TRANSPORT_ERRORS as exc:
            self._count(verb, resource, "error")
            raise KubeError(0, "TransportError", f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.release_conn()
        self._count(verb, resource, code)
        if resp.status >= 400:
            raise _error_from(resp.status, raw)
        parsed: dict[str, Any] = decode(raw) if raw else {}
        return parsed

    def _send(
        self,
        verb: str,
        resource: Resource,
        method: str,
        path: str,
        body: Any,
        query: list[tuple[str, Any]] | None,
        content_type: str,
        timeout: float | tuple[float, float],
        *,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse | _Answer:
        """Send one request; transport failures become KubeError(0, "TransportError")
        so that every caller (the elector, informers, workers) handles them like API
        errors instead of dying on urllib3's exceptions. ``stream``: the answer is
        read as it comes (a watch), through urllib3."""
        data = None if body is None else encode(body)
        try:
            return self.transport.request(
                method,
                path,
                query or [],
                headers={"Content-Type": content_type, "Accept": "application/json"},
                body=data,
                timeout=timeout,
                stream=stream,
            )
        except TRANSPORT_ERRORS as exc:
            self._count(verb, resource, "error")
            raise KubeError(0, "TransportError", f"{type(exc).__name__}: {exc}") from exc
        except ConfigError as exc:  # a token file or exec plugin failed: retried like I/O
            self._count(verb, resource, "error")
            raise KubeError(0, "CredentialsError", str(exc)) from exc

    # ----------------------------------------------------------------- reads
    def get(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        timeout: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call(
                "get", resource, "GET", resource.path(namespace, name), timeout=timeout
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """All objects of a kind (in a namespace, or cluster-wide), paginated."""
        return self.list_with_version(resource, namespace, label_selector=label_selector)[0]

    def list_with_version(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        each: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """All objects and the resourceVersion the list was read at; ``each`` is applied
        to every object as its page arrives (a cache trims them there, so a LIST of
        thousands of pods never holds them whole all at once)."""
        items: builtins.list[dict[str, Any]] = []
        list_rv = 0
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("limit", LIST_PAGE)]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = self._call("list", resource, "GET", resource.path(namespace), query=query)
            kind = resource.kind
            for item in page.pop("items", None) or []:
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", kind)
                items.append(each(item) if each is not None else item)
            meta = page.get("metadata", {})
            if not list_rv:
                try:
                    list_rv = int(meta.get("resourceVersion", "0"))
                except ValueError:
                    list_rv = 0
            token = meta.get("continue")
            if not token:
                return items, list_rv

    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        read_timeout: float = 90.0,
    ) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) from ``resource_version`` on, in the order
        the API server sends them (resourceVersion order), bookmarks included.

        The server ends the stream after ``timeout_seconds``; a stream silent for
        ``read_timeout`` (no event, no bookmark: a dead or blackholed connection) fails
        with a transport KubeError, so the caller re-watches instead of hanging.
        """
        query: list[tuple[str, Any]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", timeout_seconds),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        path = resource.path(namespace)
        resp = cast(
            urllib3.BaseHTTPResponse,
            self._send(
                "watch",
                resource,
                "GET",
                path,
                None,
                query,
                "application/json",
                (10.0, read_timeout),
                stream=True,
            ),
        )
        if resp.status >= 400:
            try:
                raw = resp.data
            except TRANSPORT_ERRORS:
                raw = b""
            finally:
                resp.release_conn()
            self._count("watch", resource, str(resp.status))
            raise _error_from(resp.status, raw)
        self._count("watch", resource, str(resp.status))
        rest = b""
        try:
            for data in _body(resp):
                # One split per read: a read holds many events when they come fast.
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.strip():
                        yield decode(line)
        except TRANSPORT_ERRORS as exc:
            raise KubeError(0, "TransportError", f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.close()

    def iter_namespaces(self, namespaces: tuple[str, ...]) -> Iterator[str | None]:
        """None (cluster-wide) when no namespaces are given, else each namespace."""
        if not namespaces:
            yield None
        else:
            yield from namespaces

    # ----------------------------------------------------------------- writes
    def apply(
        self,
        manifest: dict[str, Any],
        *,
        manager: str = FIELD_MANAGER,
        create_only: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply: we become the owner of exactly the fields in ``manifest``.

        ``force`` takes fields over from other managers, as a controller must: the
        MicroService is the source of truth for everything we render.

        ``create_only`` makes the apply create the object or do nothing: it carries a
        resourceVersion precondition no stored object can meet (etcd revisions of
        stored objects start at 2), so an object of that name that already exists,
        whoever owns it, is left untouched and the call raises
        :data:`ALREADY_EXISTS`. A create made this way is still an *Apply* in
        managedFields (a POST would record an Update, whose fields later applies
        could never drop), and it costs no GET beforehand.
        """
        resource = BY_KIND[manifest["kind"]]
        meta = manifest["metadata"]
        if create_only:
            meta = {**meta, "resourceVersion": UNMATCHABLE_RESOURCE_VERSION}
            manifest = {**manifest, "metadata": meta}
            try:
                return self._apply(resource, manifest, manager)
            except KubeError as exc:
                if exc.conflict:
                    raise KubeError(409, ALREADY_EXISTS, exc.message) from exc
                raise
        return self._apply(resource, manifest, manager)

    def _apply(self, resource: Resource, manifest: dict[str, Any], manager: str) -> dict[str, Any]:
        meta = manifest["metadata"]
        return self._call(
            "apply",
            resource,
            "PATCH",
            resource.path(meta.get("namespace"), meta["name"]),
            body=manifest,
            query=[("fieldManager", manager), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def handoff_replicas(
        self, deployment: dict[str, Any], *, replicas: int | None = None
    ) -> dict[str, Any]:
        """Hand ``spec.replicas`` of a Deployment to the HPA without resetting it.

        When an apply stops sending a field its manager solely owned, the API server
        removes the field, and a Deployment would fall back to 1 replica before the
        HPA reacts. Applying the current value (or ``replicas``) under a second manager
        first keeps a co-owner until the HPA writes the field (the documented
        ownership transfer). Returns the Deployment as written.
        """
        meta = deployment["metadata"]
        if replicas is None:
            replicas = deployment.get("spec", {}).get("replicas", 1)
        return self.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                "spec": {"replicas": replicas},
            },
            manager=HANDOFF_FIELD_MANAGER,
        )

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the MicroService status subresource; None if it is gone."""
        try:
            return self._call(
                "patch",
                MICROSERVICES,
                "PATCH",
                MICROSERVICES.path(namespace, name) + "/status",
                body={"status": status},
                # Named, so that status fields someone else wrote can be told apart.
                query=[("fieldManager", FIELD_MANAGER)],
                content_type="application/merge-patch+json",
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def remove_annotation(
        self, resource: Resource, namespace: str, name: str, key: str, value: str
    ) -> dict[str, Any] | None:
        """Remove annotation ``key`` if it still has ``value`` (a JSON patch whose test
        fails leaves a newer request alone); None if the object or value is gone."""
        pointer = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        try:
            return self._call(
                "patch",
                resource,
                "PATCH",
                resource.path(namespace, name),
                body=[
                    {"op": "test", "path": pointer, "value": value},
                    {"op": "remove", "path": pointer},
                ],
                query=[("fieldManager", FIELD_MANAGER)],
                content_type="application/json-patch+json",
            )
        except KubeError as exc:
            if exc.not_found or exc.invalid:
                return None
            raise

    def delete(
        self, resource: Resource, namespace: str, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete an object (only that exact one when ``uid`` is given); False if absent."""
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("delete", resource, "DELETE", resource.path(namespace, name), body=body)
            return True
        except KubeError as exc:
            if exc.not_found or (exc.conflict and uid):
                return False
            raise

    def create_event(self, event: dict[str, Any]) -> None:
        """Record a core/v1 Event; failures are logged, never fatal (events are best effort)."""
        try:
            self._call(
                "create",
                EVENTS,
                "POST",
                EVENTS.path(event["metadata"]["namespace"]),
                body=event,
            )
        except KubeError as exc:
            log.warning("Failed to record Event %s: %s", event.get("reason"), exc)

    def create_lease(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        *,
        timeout: float = REQUEST_TIMEOUT,
    ) -> dict[str, Any]:
        """Create the leader-election Lease; a 409 means another replica was first."""
        body = {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        return self._call(
            "create", LEASES, "POST", LEASES.path(namespace), body=body, timeout=timeout
        )

    def update_lease(
        self, lease: dict[str, Any], spec: dict[str, Any], *, timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """Replace the Lease spec, only if nobody changed it since we read it
        (resourceVersion precondition: a 409 means another replica won)."""
        meta = lease["metadata"]
        body = {
            "apiVersion": LEASES.api_version,
            "kind": "Lease",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": spec,
        }
        return self._call(
            "update",
            LEASES,
            "PUT",
            LEASES.path(meta["namespace"], meta["name"]),
            body=body,
            timeout=timeout,
        )
