"""The local control plane's API server audit log, read from tests.

kube-apiserver (tools/localcluster) logs every write (create, update, patch,
delete, deletecollection) at level Metadata: one JSON event per request, with
the verb, the object, the response code, the client's ``userAgent`` and
``requestReceivedTimestamp``; reads are not logged. Fault tests use it to prove
from the server's side which operator replica wrote what and when (e.g. that two
replicas never wrote at the same time) instead of trusting the operator's logs.

The log is written in blocking mode: once a client has its response, the event
is in the file. It rotates at 50 MB into ``audit-<UTC time>.log`` backups (four
kept), and a reader may see the line being written cut short; :func:`read_audit`
handles both.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
_ROTATED = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}$")  # lumberjack's suffix


def state_dir() -> Path:
    """The local control plane's runtime directory (as localcluster.py finds it)."""
    return Path(os.environ.get("MSO_LOCALCLUSTER_DIR", REPO / ".localcluster")).resolve()


def audit_log_path() -> Path:
    """Where kube-apiserver of the local control plane writes its audit log."""
    return state_dir() / "logs" / "audit.log"


def event_time(event: dict[str, Any]) -> datetime.datetime:
    """When the API server received the request (timezone-aware, UTC)."""
    return datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])


def audit_files(path: Path) -> list[Path]:
    """The rotated backups of path, oldest first, then path itself (if it exists)."""
    backups = sorted(
        p
        for p in path.parent.glob(f"{path.stem}-*{path.suffix}")
        if _ROTATED.search(p.name.removesuffix(path.suffix))
    )
    return [*backups, path] if path.exists() else backups


def _events_in(file: Path, since: datetime.datetime | None) -> tuple[list[dict[str, Any]], int]:
    """Parsed events of one file (and how many complete lines were not JSON)."""
    if since is not None:
        try:  # a file last written before `since` holds only older events
            mtime = datetime.datetime.fromtimestamp(file.stat().st_mtime, datetime.UTC)
        except FileNotFoundError:
            return [], 0  # rotated away meanwhile; the caller re-lists
        if mtime < since - datetime.timedelta(seconds=1):
            return [], 0
    try:
        text = file.read_text(errors="replace")
    except FileNotFoundError:
        return [], 0
    lines = text.split("\n")
    lines.pop()  # "" after the last newline, or a line still being written
    events, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            bad += 1  # e.g. a line cut short by a SIGKILLed server, then appended to
            continue
        if since is None or event_time(event) >= since:
            events.append(event)
    return events, bad


def read_audit(
    path: Path | None = None, since: datetime.datetime | None = None
) -> list[dict[str, Any]]:
    """Audit events of path (default :func:`audit_log_path`) and its rotated
    backups, in the order the server logged them (request completion order).

    since: only events whose ``requestReceivedTimestamp`` is at or after it (a
    naive datetime is taken as local time). Events are deduplicated by
    (auditID, stage), so a rotation racing the read neither loses nor repeats one.
    """
    path = audit_log_path() if path is None else path
    since_utc = None if since is None else since.astimezone(datetime.UTC)
    for _ in range(5):
        files = audit_files(path)
        events: list[dict[str, Any]] = []
        bad = 0
        for file in files:
            found, unparsable = _events_in(file, since_utc)
            events.extend(found)
            bad += unparsable
        if audit_files(path)[:-1] == files[:-1]:  # no rotation while reading
            break
    if bad:
        warnings.warn(f"{bad} unparsable line(s) in {path}*", stacklevel=2)
    seen: set[tuple[str, str]] = set()
    unique = []
    for event in events:
        key = (event.get("auditID", ""), event.get("stage", ""))
        if key not in seen:
            seen.add(key)
            unique.append(event)
    return unique


def is_success(event: dict[str, Any]) -> bool:
    """The request succeeded (2xx), i.e. a write really changed the cluster."""
    code = (event.get("responseStatus") or {}).get("code", 0)
    return 200 <= int(code) < 300


def writes_by_agent(
    events: Iterable[dict[str, Any]], agent_substring: str, *, successful_only: bool = True
) -> list[dict[str, Any]]:
    """The write requests whose User-Agent contains agent_substring (e.g. a replica's
    name), by default only those that succeeded (a 409 or 403 changed nothing)."""
    return [
        e
        for e in events
        if e.get("verb") in WRITE_VERBS
        and agent_substring in e.get("userAgent", "")
        and (not successful_only or is_success(e))
    ]


def describe(event: dict[str, Any]) -> str:
    """One line for assertion messages: time, verb, object, code, user agent."""
    ref = event.get("objectRef") or {}
    group = ref.get("apiGroup") or "core"
    resource = ref.get("resource", "?")
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    name = "/".join(x for x in (ref.get("namespace"), ref.get("name")) if x)
    code = (event.get("responseStatus") or {}).get("code", "?")
    return (
        f"{event.get('requestReceivedTimestamp')} {event.get('verb')} {group} {resource} "
        f"{name} -> {code} by {event.get('userAgent')!r}"
    )
