"""Leader election over a coordination.k8s.io/v1 Lease, with client-go's semantics.

Two writers are worse than none: a failover operator that keeps writing after another
replica took over fights it over every Service selector. So, as client-go's
leaderelection package does:

- **Renew deadline < lease duration.** The leader counts itself leader only until
  ``renew_deadline`` after it *sent* its last successful renewal (never later than
  the API server stored it). A replica may take over only ``lease_duration`` after
  it *saw* that renewal, so the old leader has stopped writing before anyone can
  start, even with a hung or blackholed connection: every Lease request is bounded
  by the time left before the deadline, every other write by the time left (client
  and server-side timeout, see :meth:`validity`), and the client never retries on
  its own. A deleted Lease is waited out like an unrenewed one.
- **A lapse is final:** a leader that sees another holder steps down at once, and a
  renewal answered after the deadline does not resume leadership.
- **Expiry judged by the observer's own clock** (a monotonic one): a Lease is
  expired when its record (resourceVersion) has not changed for ``lease_duration``
  since this replica last saw it change. The holder's ``renewTime`` is never compared
  with the local clock, so clock skew cannot steal a healthy Lease.
- **Every failure is an ordinary failed round:** API errors and transport errors
  (refused, reset, timeout) alike; the loop never dies on one.
- **Losing leadership is final for the process:** ``on_stopped_leading`` is called,
  and the controller exits so that no in-flight reconcile can write; the Deployment
  restarts it as a follower with fresh caches.

The pure parts (what to write) live in :mod:`leader`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from . import leader
from .kube import LEASES, Kube, KubeError

log = logging.getLogger("microservice_operator")


_ABSENT = "<absent>"
"""Observed record of a Lease that was deleted."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Elector:
    """Acquires and renews one Lease; ``is_leader()`` is safe to call from any thread."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = leader.LEASE_DURATION_SECONDS,
        renew_deadline: float = leader.RENEW_DEADLINE_SECONDS,
        retry_period: float = leader.RETRY_PERIOD_SECONDS,
        on_started_leading: Callable[[], None] = lambda: None,
        on_stopped_leading: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock = clock
        self.wall = wall
        self._lock = threading.Lock()
        self._renewed_at: float | None = None  # when the last successful write was sent
        self._observed_rv: str | None = None
        self._observed_at: float = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    # ------------------------------------------------------------------ state
    def is_leader(self) -> bool:
        """Whether this replica may write now: it renewed within the renew deadline."""
        with self._lock:
            at = self._renewed_at
        return at is not None and self.clock() - at < self.renew_deadline

    def validity(self) -> float:
        """Seconds this replica may still write (0 when it may not): the time left
        before the renew deadline, used to bound every write's timeout."""
        with self._lock:
            at = self._renewed_at
        if at is None:
            return 0.0
        return max(0.0, self.renew_deadline - (self.clock() - at))

    def _remaining(self) -> float:
        """Seconds left before the renew deadline (or a full deadline when acquiring)."""
        with self._lock:
            at = self._renewed_at
        if at is None:
            return self.renew_deadline
        return self.renew_deadline - (self.clock() - at)

    # ------------------------------------------------------------------ one round
    def try_acquire_or_renew(self) -> bool:
        """One round: create, renew or take over the Lease, or see it held by another.

        True if this replica holds the Lease after the round. Raises KubeError on any
        API or transport failure.
        """
        sent = self.clock()
        was_leading = self._renewed_at is not None
        timeout = max(0.2, min(5.0, self._remaining()))
        lease = self.kube.get(LEASES, self.namespace, self.name, timeout=timeout)
        now = self.clock()
        if lease is None:
            if self._observed_rv not in (None, _ABSENT):
                # Deleted after we saw it: its holder may still be writing. Wait a
                # full lease duration, as for an unrenewed one.
                self._observed_rv, self._observed_at = _ABSENT, now
            if self._observed_rv == _ABSENT and now - self._observed_at < self.lease_duration:
                return False
            spec = leader.lease_spec("create", None, self.identity, self.wall())
            timeout = max(0.2, min(5.0, self._remaining()))
            written = self.kube.create_lease(self.namespace, self.name, spec, timeout=timeout)
            return self._won(written, sent, was_leading)
        rv = str(lease.get("metadata", {}).get("resourceVersion", ""))
        if rv != self._observed_rv:
            self._observed_rv, self._observed_at = rv, now
        state = leader.LeaseState.of(lease)
        if state.holder and state.holder != self.identity:
            if was_leading:
                self._step_down(f"the Lease names {state.holder}")
                return False
            duration = state.duration_seconds or self.lease_duration
            if now - self._observed_at < duration:
                return False  # held, and renewed recently by our own clock
        action: leader.Action = "renew" if state.holder == self.identity else "acquire"
        if was_leading and not self.is_leader():
            return False  # our leadership lapsed: never silently resume it
        spec = leader.lease_spec(action, state, self.identity, self.wall())
        timeout = max(0.2, min(5.0, self._remaining()))
        try:
            written = self.kube.update_lease(lease, spec, timeout=timeout)
        except KubeError as exc:
            if exc.conflict:
                return False  # another replica wrote first
            raise
        return self._won(written, sent, was_leading)

    def _step_down(self, why: str) -> None:
        log.warning("Stepped down: %s", why)
        with self._lock:
            self._renewed_at = None

    def _won(self, lease: dict[str, object], sent: float, was_leading: bool) -> bool:
        """Record a successful write of the Lease; False if it came too late: a renewal
        answered after the deadline passed does not resume leadership (writes were
        refused meanwhile, and a lapse is final)."""
        meta = lease.get("metadata")
        rv = str(meta.get("resourceVersion", "")) if isinstance(meta, dict) else ""
        self._observed_rv, self._observed_at = rv, self.clock()
        if was_leading and not self.is_leader():
            return False
        with self._lock:
            self._renewed_at = sent
        return True

    # ------------------------------------------------------------------ loop
    def start(self) -> None:
        """Run the election in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """Whether the election thread runs (or ended on purpose: stopped or lost)."""
        return self._thread is not None and (
            self._thread.is_alive() or self.lost or self._stop.is_set()
        )

    def run(self) -> None:
        """Acquire, then renew until stopped or until the renew deadline passes."""
        while not self._stop.is_set():
            if self._round():
                break
            self._stop.wait(self.retry_period * random.uniform(1.0, 1.2))
        else:
            return
        log.info("Became the leader (%s)", self.identity)
        self.on_started_leading()
        while not self._stop.wait(self.retry_period):
            self._round()
            if not self.is_leader():
                if self._stop.is_set():
                    return
                self.lost = True
                log.error(
                    "Lost the leader Lease %s/%s: not renewed within %.0fs, or taken over",
                    self.namespace,
                    self.name,
                    self.renew_deadline,
                )
                self.on_stopped_leading()
                return

    def _round(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except KubeError as exc:
            log.warning("Failed to renew the leader Lease: %s", exc)
            return False
        except Exception:  # a bug here must not leave a leader that never renews
            log.exception("Leader election round crashed")
            return False

    def stop(self) -> None:
        """Stop renewing; writes are refused from now on."""
        self._stop.set()

    def release(self) -> None:
        """Hand the Lease over at once (clean shutdown, after in-flight work ended)."""
        self._stop.set()
        with self._lock:
            held = self._renewed_at is not None
            self._renewed_at = None
        if not held:
            return
        try:
            lease = self.kube.get(LEASES, self.namespace, self.name, timeout=5.0)
            if lease is not None and leader.LeaseState.of(lease).holder == self.identity:
                spec = leader.released_spec(leader.LeaseState.of(lease))
                self.kube.update_lease(lease, spec, timeout=5.0)
                log.info("Released the leader Lease")
        except KubeError as exc:
            log.warning("Failed to release the leader Lease: %s", exc)
