"""Prometheus metrics of the operator and of every MicroService it manages.

Platform teams alert on these series, so they are a public interface: names carry the
``mso_`` prefix, labels are ``namespace``/``name`` of the MicroService plus small fixed
enums (never pod names, images or revisions), and every free-form reason is folded into
a bounded set so that a typo or a new code path cannot blow up the series count — the
controller OOMs that label cardinality causes elsewhere are exactly what users fear.

Everything lives in one :class:`~prometheus_client.CollectorRegistry` per
:class:`OperatorMetrics` (not the library's global default), so tests get a clean slate
and the exposition contains only what we document. Handlers use the module-level
:data:`METRICS`; the per-MicroService series are removed with :meth:`OperatorMetrics.forget`
when the MicroService is deleted.

Per-MicroService counters are created at zero when the MicroService is first observed:
``increase()`` cannot see a series that is born at 1, and the "rolled back" alert would
miss the first rollback otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from importlib import metadata
from socket import AF_INET6
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlparse

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    MetricsHandler,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "FAILOVER_REASONS",
    "KUBE_RESOURCES",
    "KUBE_VERBS",
    "METRICS",
    "RECONCILE_ERROR_REASONS",
    "REPLICA_STATES",
    "ROLLBACK_REASONS",
    "TRACKS",
    "MetricsServer",
    "OperatorMetrics",
    "error_reason",
    "render",
    "serve",
]

log = logging.getLogger(__name__)

# No `*_created` series next to every counter and histogram: in the text format they are
# extra gauges (one per MicroService and reason) that nothing here reads. The switch is
# process-wide in prometheus_client; the operator owns its process.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

OTHER: Final = "Other"

REPLICA_STATES: Final = ("desired", "ready", "available", "unavailable", "updated")
TRACKS: Final = ("primary", "standby")

FAILOVER_REASONS: Final = (
    "PrimaryUnhealthy",
    "AnalysisFailed",
    "PrimaryRecovered",
    "StandbyUnavailable",
    "StandbyRemoved",
    OTHER,
)
"""The ``reason`` of failover.TrackDecision when traffic switches: ``PrimaryUnhealthy``
moved it to the standby; ``PrimaryRecovered`` (failback), ``StandbyUnavailable`` and
``StandbyRemoved`` moved it back to the primary; ``AnalysisFailed`` moved it to the
standby because the primary failed its analysis checks."""

ROLLBACK_REASONS: Final = (
    "ProgressDeadlineExceeded",
    "CrashLoop",
    "ImagePullError",
    "ContainerConfigError",
    "AnalysisFailed",
    OTHER,
)
"""Why failover.decide_revision judged a revision bad and rolled it back."""

_ALIASES: Final = {"crashloopbackoff": "CrashLoop"}

ANALYSIS_OUTCOMES: Final = ("Passed", "Failed", "Inconclusive")
ANALYSIS_TARGETS: Final = ("release", "primary")

RECONCILE_ERROR_REASONS: Final = ("InvalidSpec", "ApiError", "Conflict", "Timeout", OTHER)

KUBE_VERBS: Final = (
    "get",
    "list",
    "watch",
    "create",
    "patch",
    "apply",
    "delete",
    "update",
    "other",
)
WATCH_EVENT_TYPES: Final = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")
_MAX_CACHED_CHILDREN: Final = 1000
"""Bound of each per-argument cache of labelled counter children (OperatorMetrics)."""
KUBE_RESOURCES: Final = (
    "microservices",
    "deployments",
    "services",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "pods",
    "events",
    "replicasets",
    "leases",
    "controllerrevisions",
    "namespaces",
    "customresourcedefinitions",
    "discovery",
    "other",
)
_KUBE_RESOURCE_BY_KIND: Final = {
    "microservice": "microservices",
    "deployment": "deployments",
    "service": "services",
    "horizontalpodautoscaler": "horizontalpodautoscalers",
    "poddisruptionbudget": "poddisruptionbudgets",
    "pod": "pods",
    "event": "events",
    "replicaset": "replicasets",
    "lease": "leases",
    "controllerrevision": "controllerrevisions",
    "namespace": "namespaces",
    "customresourcedefinition": "customresourcedefinitions",
}

RECONCILE_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Seconds. A reconcile is a handful of API round trips (tens of milliseconds); the tail
buckets catch a slow or throttled API server."""

Track = Literal["primary", "standby"]


def _bounded(value: str, allowed: Iterable[str], fallback: str, what: str) -> str:
    """Fold ``value`` onto one of ``allowed`` (case-insensitively) or ``fallback``."""
    lowered = value.lower()
    for candidate in allowed:
        if lowered == candidate.lower() or _ALIASES.get(lowered) == candidate:
            return candidate
    _warn_unknown(what, value)
    return fallback


_unknown_seen: set[tuple[str, str]] = set()
_unknown_lock = threading.Lock()


def _warn_unknown(what: str, value: str) -> None:
    """Log an unknown label value once, so a developer notices it was folded away."""
    key = (what, value[:100])
    with _unknown_lock:
        if key in _unknown_seen or len(_unknown_seen) >= 100:
            return
        _unknown_seen.add(key)
    log.warning("Folded unknown %s %r into the catch-all label value", what, value)


def _kube_code(code: int | str | None) -> str:
    """HTTP status as a string ("200", "404"); anything without one is "error"."""
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return str(code)
    if isinstance(code, str) and code.isdigit() and 100 <= int(code) <= 599:
        return str(int(code))
    return "error"


def _kube_resource(resource: str) -> str:
    """A plural from KUBE_RESOURCES; kinds ("Deployment") are accepted too."""
    lowered = resource.lower()
    if lowered in KUBE_RESOURCES:
        return lowered
    if lowered in _KUBE_RESOURCE_BY_KIND:
        return _KUBE_RESOURCE_BY_KIND[lowered]
    _warn_unknown("kube resource", resource)
    return "other"


def error_reason(exc: BaseException) -> str:
    """Classify an exception into one of RECONCILE_ERROR_REASONS.

    Duck-typed so this module needs neither the kubernetes client nor kopf: anything with
    an integer ``status`` (ApiException, kube.KubeError) is an API error, 409 a conflict,
    408/504 a timeout; pydantic's ValidationError is an invalid spec.
    """
    status = getattr(exc, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        if status == 409:
            return "Conflict"
        if status in (408, 504):
            return "Timeout"
        return "ApiError"
    if isinstance(exc, TimeoutError):
        return "Timeout"
    if type(exc).__name__ == "ValidationError":
        return "InvalidSpec"
    module = type(exc).__module__
    if module.startswith(("urllib3", "kubernetes", "aiohttp")):
        return "ApiError"
    if isinstance(exc, ConnectionError):
        return "ApiError"
    return OTHER


def _version() -> str:
    try:
        return metadata.version("microservice-operator")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
        return "unknown"


def _not_ready() -> tuple[bool, str]:
    return False, "starting"


BATCH: Final = 500
"""MicroServices per piece of a per-MicroService family: a scrape holds the samples of
this many at a time, not of every MicroService (see :func:`exposition`)."""


class _One:
    """A registry of one family, for the library's encoders."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Metric]:
        return (self._metric,)


def exposition(
    registry: CollectorRegistry, accept: str | None = None, names: Iterable[str] | None = None
) -> tuple[str, Iterator[bytes]]:
    """(content type, the exposition piece by piece) for a scrape with this ``Accept``
    header (``names``: only these series, the ``name[]`` query parameter).

    The library's ``generate_latest`` builds the whole text, then encodes it (and a
    handler gzips the bytes whole): at 10,000 MicroServices 17 MiB of text and the
    sample objects behind it, 63 MiB for the moment of a scrape. Here each family, and
    each :data:`BATCH` of MicroServices of a per-MicroService family, is encoded by the
    library's own encoder as it comes, so the text and escaping stay the library's; a
    piece continuing the family before it drops its ``# HELP``/``# TYPE`` lines, and
    OpenMetrics' ``# EOF`` comes once, at the end.
    """
    encoder, content_type = choose_encoder(accept or "")
    source = registry.restricted_registry(names) if names else registry
    openmetrics = content_type.startswith("application/openmetrics-text")

    def pieces() -> Iterator[bytes]:
        previous = None
        for metric in source.collect():
            text: bytes = encoder(_One(metric))
            if openmetrics:
                text = text.removesuffix(b"# EOF\n")
            if metric.name == previous:
                while text.startswith(b"#"):
                    text = text.partition(b"\n")[2]
            previous = metric.name
            yield text
        if openmetrics:
            yield b"# EOF\n"

    return content_type, pieces()


class _QuietMetricsHandler(MetricsHandler):
    """The library's handler without a log line per scrape, streaming the exposition
    (:func:`exposition`), plus ``/readyz``."""

    readiness: Callable[[], tuple[bool, str]] = staticmethod(_not_ready)
    protocol_version = "HTTP/1.1"  # for chunked responses; each one closes its connection

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.split("?")[0] != "/readyz":
            self._metrics()
            return
        ready, why = type(self).readiness()
        body = f"{'ok' if ready else 'not ready'}: {why}\n".encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _metrics(self) -> None:
        """The exposition as it is encoded, so without a Content-Length: chunked (HTTP/1.1
        clients), or ended by closing the connection (HTTP/1.0 ones). A failure half-way
        closes the connection before the last chunk, which the scraper sees as a
        failed scrape, not as a complete one with series missing."""
        names = parse_qs(urlparse(self.path).query).get("name[]")
        content_type, pieces = exposition(self.registry, self.headers.get("Accept"), names)  # type: ignore[arg-type]
        gzip = gzip_accepted(self.headers.get("Accept-Encoding") or "")
        chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()

        def write(data: bytes) -> None:
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

        packer = zlib.compressobj(6, zlib.DEFLATED, 31) if gzip else None  # 31: gzip framing
        for piece in pieces:
            write(packer.compress(piece) if packer else piece)
        if packer:
            write(packer.flush())
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scrape that failed half-way: one log line, not a traceback on stderr."""
        log.warning("Serving %s failed", client_address, exc_info=True)


class _ThreadingServer6(_ThreadingServer):
    address_family = AF_INET6


class MetricsServer:
    """A running ``/metrics`` endpoint; stop it with :meth:`stop` (or use ``with``)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str) -> None:
        handler = type(
            "_Handler",
            (_QuietMetricsHandler,),
            {"registry": registry},
        )
        self._handler = handler
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        self._server = server_class((host, port), handler)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long stop() waits at most
            name=f"metrics-http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The scrape URL, e.g. http://127.0.0.1:8080/metrics."""
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def set_readiness(self, check: Callable[[], tuple[bool, str]]) -> None:
        """What ``/readyz`` answers: (ready, why); 503 with the reason until ready."""
        self._handler.readiness = staticmethod(check)  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    close = stop

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cached_child(cache: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made by ``make()`` the first time (and kept while the cache has
    room: the raw arguments a key is made of are not bounded, the labels are)."""
    child = cache.get(key)
    if child is None:
        child = make()
        if len(cache) < _MAX_CACHED_CHILDREN:
            cache[key] = child
    return child


class OperatorMetrics:
    """All metrics of one operator process, in their own registry.

    Thread-safe: kopf runs sync handlers in a thread pool. ``observe`` and ``forget`` for
    the same MicroService are serialised so a deletion cannot interleave with an update
    half-way; the caller must still not ``observe`` after the final ``forget`` (do it
    from the deletion handler after the daemons/timers of that object have stopped).
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, runtime: bool = True) -> None:
        """``runtime`` adds the process/Python collectors (memory, CPU, GC) — what you
        look at first when an operator is OOM-killed."""
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self._lock = threading.RLock()
        if runtime:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            reg.register(GC_COLLECTOR)

        ms = ("namespace", "name")
        # The per-MicroService series: one compact record each, turned into samples
        # only when scraped (see MicroServiceSeries).
        self._series = MicroServiceSeries(self._lock)
        reg.register(self._series)
        self.reconcile_duration = Histogram(
            "mso_reconcile_duration_seconds",
            "Time one reconcile of a MicroService took.",
            buckets=RECONCILE_BUCKETS,
            registry=reg,
        )
        self.reconciles_skipped = Counter(
            "mso_reconciles_skipped",
            "Reconciles skipped because nothing they read changed since the last one found "
            "nothing to do, and none of its timers was due.",
            registry=reg,
        )
        self.reconcile_errors = Counter(
            "mso_reconcile_errors",
            "Reconciles that failed, by reason (InvalidSpec, ApiError, Conflict, Timeout, Other).",
            ["reason"],
            registry=reg,
        )
        self.kube_requests = Counter(
            "mso_kube_requests",
            "Requests the operator sent to the Kubernetes API server, by verb, resource and "
            'HTTP status code ("error" when there was no response).',
            ["verb", "resource", "code"],
            registry=reg,
        )
        self.watch_events = Counter(
            "mso_watch_events",
            "Watch events the operator's caches received, by resource and type (ADDED, "
            "MODIFIED, DELETED, BOOKMARK, ERROR): what the operator spends its time on "
            "between writes.",
            ["resource", "type"],
            registry=reg,
        )
        check = (*ms, "check", "target")
        self.analysis_results = Counter(
            "mso_analysis_results",
            "Results of the analysis checks (spec.failover.analysis), by check, target "
            "(release: a revision proving itself, canary included; primary: the proven "
            "primary) and outcome (Passed, Failed, Inconclusive: no data or no answer).",
            [*check, "outcome"],
            registry=reg,
        )
        self.analysis_outcome = Gauge(
            "mso_analysis_outcome",
            "1 for the latest outcome of each analysis check, 0 for the others.",
            [*check, "outcome"],
            registry=reg,
        )
        self.analysis_value = Gauge(
            "mso_analysis_value",
            "The latest value an analysis check's query returned (absent when it had none).",
            check,
            registry=reg,
        )
        self.build_info = Gauge(
            "mso_build_info",
            "Always 1; the version label says which operator build is running.",
            ["version"],
            registry=reg,
        )
        self.build_info.labels(version=_version()).set(1)
        self._per_microservice: tuple[tuple[Gauge | Counter, tuple[str, ...]], ...] = (
            self._analysis_metrics()
        )
        for reason in RECONCILE_ERROR_REASONS:
            self.reconcile_errors.labels(reason=reason)
        # The labelled children of the two counters bumped on every request and every
        # watch event, by their raw arguments: ``labels()`` validates and locks each
        # time, a measurable part of handling a watch event. Their labels are bounded,
        # so are these; neither counter's series are ever removed.
        self._request_children: dict[tuple[str, str, int | str | None], Any] = {}
        self._event_children: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------ per MicroService

    def observe(
        self,
        namespace: str,
        name: str,
        *,
        desired: int | None,
        ready: int | None,
        available: int | None,
        unavailable: int | None,
        updated: int | None,
        healthy_ratio: float,
        ready_flag: bool,
        active_track: str,
        canary_step: int = 0,
    ) -> None:
        """Record the latest observed state of a MicroService (None counts as 0, as the
        Deployment status omits zero fields)."""
        if active_track not in TRACKS:
            raise ValueError(f"active_track must be one of {TRACKS}, not {active_track!r}")
        gauges = (
            float(desired or 0),
            float(ready or 0),
            float(available or 0),
            float(unavailable or 0),
            float(updated or 0),
            float(healthy_ratio),
            1.0 if ready_flag else 0.0,
            float(TRACKS.index(active_track)),
            float(canary_step),
        )
        with self._lock:
            self._series.record(namespace, name).gauges = gauges

    def failover(self, namespace: str, name: str, reason: str) -> None:
        """Count a traffic switch; unknown reasons count as "Other"."""
        reason = _bounded(reason, FAILOVER_REASONS, OTHER, "failover reason")
        with self._lock:
            rec = self._series.record(namespace, name)
            rec.failovers = _increment(rec.failovers, FAILOVER_REASONS, reason)

    def rollback(self, namespace: str, name: str, reason: str) -> None:
        """Count a rollback to the last known good revision; unknown reasons count as "Other"."""
        reason = _bounded(reason, ROLLBACK_REASONS, OTHER, "rollback reason")
        with self._lock:
            rec = self._series.record(namespace, name)
            rec.rollbacks = _increment(rec.rollbacks, ROLLBACK_REASONS, reason)

    def remediation(self, namespace: str, name: str, count: int = 1) -> None:
        """Count pods deleted by remediation."""
        if count < 0:
            raise ValueError("count must not be negative")
        with self._lock:
            self._series.record(namespace, name).remediations += count

    def _analysis_metrics(self) -> tuple[tuple[Gauge | Counter, tuple[str, ...]], ...]:
        check = ("namespace", "name", "check", "target")
        return (
            (self.analysis_results, (*check, "outcome")),
            (self.analysis_outcome, (*check, "outcome")),
            (self.analysis_value, check),
        )

    def analysis_result(
        self, namespace: str, name: str, check: str, target: str, outcome: str, value: float | None
    ) -> None:
        """Record one result of an analysis check of a target (release or primary)."""
        if outcome not in ANALYSIS_OUTCOMES:
            raise ValueError(f"outcome must be one of {ANALYSIS_OUTCOMES}, not {outcome!r}")
        target = _bounded(target, ANALYSIS_TARGETS, OTHER, "analysis target")
        with self._lock:
            for o in ANALYSIS_OUTCOMES:
                self.analysis_results.labels(namespace, name, check, target, o)
                self.analysis_outcome.labels(namespace, name, check, target, o).set(
                    1 if o == outcome else 0
                )
            self.analysis_results.labels(namespace, name, check, target, outcome).inc()
            if value is None:
                with contextlib.suppress(KeyError):
                    self.analysis_value.remove(namespace, name, check, target)
            else:
                self.analysis_value.labels(namespace, name, check, target).set(value)

    def forget_analysis(self, namespace: str, name: str) -> None:
        """Remove the analysis series of a MicroService (its checks or targets changed)."""
        with self._lock:
            for metric, names in self._analysis_metrics():
                for labelvalues in _label_sets(metric, names):
                    if labelvalues[:2] == (namespace, name):
                        metric.remove(*labelvalues)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of a MicroService (it was deleted): dashboards and alerts
        must not show a ghost forever."""
        with self._lock:
            self._series.forget(namespace, name)
            for metric, names in self._per_microservice:
                # Label values are read back from the metric's own series, so nothing is
                # missed even if a child was created outside observe()/_ensure().
                for labelvalues in _label_sets(metric, names):
                    if labelvalues[:2] == (namespace, name):
                        metric.remove(*labelvalues)

    def tracked(self) -> frozenset[tuple[str, str]]:
        """(namespace, name) of every MicroService that has series."""
        with self._lock:
            found = set(self._series.keys())
            for metric, names in self._per_microservice:
                found.update((lv[0], lv[1]) for lv in _label_sets(metric, names))
            return frozenset(found)

    def retain(self, keep: Iterable[tuple[str, str]]) -> None:
        """Forget every MicroService not in ``keep`` — for a periodic sweep or a resync
        after start-up, in case a deletion was missed while the operator was away."""
        wanted = set(keep)
        for namespace, name in self.tracked() - wanted:
            self.forget(namespace, name)

    # ------------------------------------------------------------ operator

    @contextmanager
    def time_reconcile(self) -> Iterator[None]:
        """Observe the duration of the block in mso_reconcile_duration_seconds (also when
        it raises; errors are counted separately with reconcile_error)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.reconcile_duration.observe(time.perf_counter() - start)

    def reconcile_skipped(self) -> None:
        """Count a reconcile skipped as unchanged (controller.Memo)."""
        self.reconciles_skipped.inc()

    def reconcile_error(self, reason: str | BaseException) -> None:
        """Count a failed reconcile. Pass one of RECONCILE_ERROR_REASONS or the exception
        itself (classified with :func:`error_reason`)."""
        if isinstance(reason, BaseException):
            label = error_reason(reason)
        else:
            label = _bounded(reason, RECONCILE_ERROR_REASONS, OTHER, "reconcile error reason")
        self.reconcile_errors.labels(reason=label).inc()

    def kube_request(self, verb: str, resource: str, code: int | str | None) -> None:
        """Count one API request. Matches kube.RequestHook, so it can be the hook."""
        _cached_child(
            self._request_children,
            (verb, resource, code),
            lambda: self.kube_requests.labels(
                _bounded(verb, KUBE_VERBS, "other", "kube verb"),
                _kube_resource(resource),
                _kube_code(code),
            ),
        ).inc()

    def watch_event(self, resource: str, etype: str) -> None:
        """Count one watch event of ``resource`` (a plural or kind)."""
        _cached_child(
            self._event_children,
            (resource, etype),
            lambda: self.watch_events.labels(
                _kube_resource(resource),
                _bounded(etype, WATCH_EVENT_TYPES, "other", "watch event type"),
            ),
        ).inc()

    # ------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The text exposition, as a scrape would see it."""
        return b"".join(exposition(self.registry)[1])

    def serve(self, port: int, host: str = "0.0.0.0") -> MetricsServer:
        """Serve /metrics in a background thread; port 0 picks a free port (see .port)."""
        server = MetricsServer(self.registry, port, host)
        log.info("Started serving /metrics on %s:%d", host, server.port)
        return server


class _Record:
    """What the per-MicroService series say about one MicroService."""

    __slots__ = ("failovers", "gauges", "remediations", "rollbacks")

    def __init__(self) -> None:
        # desired, ready, available, unavailable, updated, healthy ratio, ready (0/1),
        # index of the active track in TRACKS, canary step; None until observed.
        self.gauges: tuple[float, ...] | None = None
        self.failovers: tuple[float, ...] | None = None  # by FAILOVER_REASONS; None: all 0
        self.rollbacks: tuple[float, ...] | None = None  # by ROLLBACK_REASONS; None: all 0
        self.remediations = 0.0


def _increment(
    counts: tuple[float, ...] | None, reasons: tuple[str, ...], reason: str
) -> tuple[float, ...]:
    """``counts`` (by ``reasons``; None: all zero) with one more for ``reason``."""
    out = list(counts) if counts is not None else [0.0] * len(reasons)
    out[reasons.index(reason)] += 1
    return tuple(out)


_PER_MICROSERVICE: Final[
    tuple[tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str, list[str]], ...]
] = (
    (
        GaugeMetricFamily,
        "mso_microservice_replicas",
        "Pods of the MicroService's primary track by state (desired, ready, available, "
        "unavailable, updated).",
        ["state"],
    ),
    (
        GaugeMetricFamily,
        "mso_microservice_healthy_ratio",
        "Ready pods over desired pods of the primary track (1 when fully healthy).",
        [],
    ),
    (
        GaugeMetricFamily,
        "mso_microservice_ready",
        "1 when the MicroService's Ready condition is True, else 0.",
        [],
    ),
    (
        GaugeMetricFamily,
        "mso_microservice_active_track",
        "1 for the track (primary or standby) the Service sends traffic to, 0 for the other.",
        ["track"],
    ),
    (
        CounterMetricFamily,
        "mso_failovers",
        "Traffic switches between the primary and the standby track, by reason.",
        ["reason"],
    ),
    (
        CounterMetricFamily,
        "mso_rollbacks",
        "Rollbacks of a bad revision to the last known good one, by reason.",
        ["reason"],
    ),
    (
        CounterMetricFamily,
        "mso_pod_remediations",
        "Stuck pods deleted so that they are replaced.",
        [],
    ),
    (
        GaugeMetricFamily,
        "mso_canary_step",
        "Step (1 = the first) of the canary release in progress (spec.strategy.canary); "
        "0 when none.",
        [],
    ),
)
"""(family type, name, help, labels after namespace and name) of each per-MicroService
metric, in exposition order."""


_Snapshot = tuple[
    tuple[str, str],
    tuple[float, ...] | None,
    tuple[float, ...] | None,
    tuple[float, ...] | None,
    float,
]
"""A record as read under the lock: key, gauges, failovers, rollbacks, remediations."""


class MicroServiceSeries(Collector):
    """The per-MicroService series, from one compact record per MicroService.

    The client library keeps one object per series (a value, a lock, its labels): 18
    or more per MicroService, 11 KiB each at 10,000 MicroServices, more than the
    caches of the objects themselves. kube-state-metrics' way instead: keep the
    numbers, build the samples when scraped. Counters exist at zero from the first
    record on (``increase()`` cannot see a series born at 1).
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._records: dict[tuple[str, str], _Record] = {}

    def record(self, namespace: str, name: str) -> _Record:
        """The record of a MicroService, created (counters at zero) if new; call with
        the lock held."""
        key = (namespace, name)
        rec = self._records.get(key)
        if rec is None:
            rec = self._records[key] = _Record()
        return rec

    def forget(self, namespace: str, name: str) -> None:
        self._records.pop((namespace, name), None)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._records)

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        """The families, each in pieces of :data:`BATCH` MicroServices: write them with
        :func:`exposition` (the library's ``generate_latest`` would repeat a family's
        HELP and TYPE lines for every piece past the first)."""
        with self._lock:
            records: list[_Snapshot] = [
                (k, r.gauges, r.failovers, r.rollbacks, r.remediations)
                for k, r in self._records.items()
            ]
        return self._families(records)

    @staticmethod
    def _families(records: list[_Snapshot]) -> Iterator[Metric]:
        """Each family in pieces of :data:`BATCH` MicroServices, each piece built when
        the exposition asks for it (:func:`exposition` writes the pieces of a family as
        one): a scrape holds the samples of one piece, not of every MicroService (at
        10,000 the eight families whole were over 100 MiB for a moment)."""
        for kind, name, text, extra in _PER_MICROSERVICE:
            start = 0
            while True:
                family = kind(name, text, labels=["namespace", "name", *extra])
                for record in records[start : start + BATCH]:
                    for labels, value in _samples(name, record):
                        family.add_metric(labels, value)
                yield family
                start += BATCH
                if start >= len(records):
                    break


def _samples(family: str, record: _Snapshot) -> Iterator[tuple[list[str], float]]:
    """(label values, value) of one MicroService's samples in one family."""
    (namespace, name), gauges, failed_over, rolled_back, remediated = record
    key = [namespace, name]
    if family == "mso_failovers":
        for i, reason in enumerate(FAILOVER_REASONS):
            yield [*key, reason], failed_over[i] if failed_over else 0.0
    elif family == "mso_rollbacks":
        for i, reason in enumerate(ROLLBACK_REASONS):
            yield [*key, reason], rolled_back[i] if rolled_back else 0.0
    elif family == "mso_pod_remediations":
        yield key, remediated
    elif gauges is None:
        return  # gauges exist once observed
    elif family == "mso_microservice_replicas":
        for state, value in zip(REPLICA_STATES, gauges[:5], strict=True):
            yield [*key, state], value
    elif family == "mso_microservice_healthy_ratio":
        yield key, gauges[5]
    elif family == "mso_microservice_ready":
        yield key, gauges[6]
    elif family == "mso_microservice_active_track":
        for i, track in enumerate(TRACKS):
            yield [*key, track], 1.0 if i == gauges[7] else 0.0
    elif family == "mso_canary_step":
        yield key, gauges[8]


def _label_sets(metric: Gauge | Counter, names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Label values (in the order of ``names``) of every child of a labelled metric, read
    from its own samples."""
    seen: dict[tuple[str, ...], None] = {}
    for family in metric.collect():
        for sample in family.samples:
            seen[tuple(sample.labels[n] for n in names)] = None
    return list(seen)


METRICS: Final = OperatorMetrics()
"""The operator's metrics; handlers and kube.py record into this instance."""


def render() -> bytes:
    """The exposition of :data:`METRICS`."""
    return METRICS.render()


def serve(port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve :data:`METRICS` on /metrics; the returned handle has stop()."""
    return METRICS.serve(port, host)
