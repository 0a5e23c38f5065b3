"""The audit log reader (tests/faults/audit.py) on hand-written files.

Pure and fast: no cluster. Fault tests draw their verdicts (who wrote, when)
from this reader, so it must not drop, repeat or misorder events when the API
server rotates its log or is killed mid-line.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.faults.audit import audit_files, describe, event_time, read_audit, writes_by_agent

T0 = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def event(n: int, verb: str = "patch", agent: str = "mso/replica-a", code: int = 200) -> str:
    when = T0 + datetime.timedelta(seconds=n)
    return json.dumps(
        {
            "kind": "Event",
            "auditID": f"id-{n}",
            "stage": "ResponseComplete",
            "verb": verb,
            "userAgent": agent,
            "objectRef": {"resource": "deployments", "namespace": "ns", "name": f"d{n}"},
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": when.isoformat().replace("+00:00", "Z"),
        }
    )


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["auditID"] for e in events]


def test_reads_rotated_backups_oldest_first_and_skips_a_cut_last_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    (tmp_path / "audit-2026-01-01T12-00-01.500.log").write_text(event(0) + "\n" + event(1) + "\n")
    (tmp_path / "audit-2026-01-01T12-00-03.000.log").write_text(event(2) + "\n")
    (tmp_path / "audit-other.log").write_text(event(99) + "\n")  # not a backup
    log.write_text(event(2) + "\n" + event(3) + "\n" + event(4)[:40])  # dup; being written
    assert [p.name for p in audit_files(log)] == [
        "audit-2026-01-01T12-00-01.500.log",
        "audit-2026-01-01T12-00-03.000.log",
        "audit.log",
    ]
    assert ids(read_audit(log)) == ["id-0", "id-1", "id-2", "id-3"]


def test_since_filters_by_request_time_and_skips_old_files(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    old = tmp_path / "audit-2026-01-01T12-00-01.000.log"
    old.write_text(event(0) + "\n")
    os.utime(old, (T0.timestamp(), T0.timestamp()))
    log.write_text(event(1) + "\n" + event(2) + "\n")
    since = T0 + datetime.timedelta(seconds=2)
    assert ids(read_audit(log, since)) == ["id-2"]
    naive_local = since.astimezone().replace(tzinfo=None)  # taken as local time
    assert ids(read_audit(log, naive_local)) == ["id-2"]
    assert event_time(read_audit(log, since)[0]) == since
    assert ids(read_audit(log)) == ["id-0", "id-1", "id-2"]


def test_a_garbled_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(event(0) + "\n" + event(1)[:30] + event(2) + "\n" + event(3) + "\n")
    with pytest.warns(UserWarning, match="1 unparsable"):
        assert ids(read_audit(log)) == ["id-0", "id-3"]


def test_missing_log_reads_empty(tmp_path: Path) -> None:
    assert read_audit(tmp_path / "audit.log") == []


def test_writes_by_agent_counts_successful_writes_of_that_agent() -> None:
    events = [
        json.loads(line)
        for line in (
            event(0, "patch", "mso/replica-a"),
            event(1, "update", "mso/replica-a", code=409),  # lost a conflict: no write
            event(2, "get", "mso/replica-a"),  # not a write (not logged, but be safe)
            event(3, "delete", "mso/replica-b"),
            event(4, "create", "mso/replica-a", code=201),
        )
    ]
    assert ids(writes_by_agent(events, "replica-a")) == ["id-0", "id-4"]
    assert ids(writes_by_agent(events, "replica-a", successful_only=False)) == [
        "id-0",
        "id-1",
        "id-4",
    ]
    assert ids(writes_by_agent(events, "replica-b")) == ["id-3"]
    assert describe(events[3]) == (
        "2026-01-01T12:00:03Z delete core deployments ns/d3 -> 200 by 'mso/replica-b'"
    )
