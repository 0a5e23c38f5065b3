"""Revision history kept in ControllerRevisions, where tenants cannot forge it (pure).

The last known good revision (and the spec to render it again) and the quarantine of
a bad revision are decisions that must survive a crash, a failed later write, a wiped
status and a forged one. Status is a report that anyone allowed to patch
``microservices/status`` can rewrite; a pod template rendered from it would let them
run any image under any ServiceAccount. So each record is a ``ControllerRevision``
(apps/v1) owned by the MicroService and labelled as ours: the default ``edit`` and
``admin`` roles may read but not write ControllerRevisions, their ``data`` is
immutable, and the garbage collector removes them with the MicroService.

One object per record, named ``<ms>-good-<revision>`` or ``<ms>-bad-<revision>``;
a new record of a role replaces the older ones of that role (create, then delete).
The quarantine record is written *before* the Deployment is rolled back, so the
decision is in the cluster before the writes that carry it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .api import QuarantineRecord, RevisionRecord
from .render import Owner, common_labels, owner_reference

ROLE_LABEL = "mso.dev/history"
REVISION_LABEL = "mso.dev/revision"
GOOD = "last-known-good"
BAD = "quarantined"
_SHORT = {GOOD: "good", BAD: "bad"}


def record_name(ms_name: str, role: str, revision: str) -> str:
    """The ControllerRevision name of a record."""
    return f"{ms_name}-{_SHORT[role]}-{revision}"


def build_record(
    owner: Owner, role: str, revision: str, generation: int, data: dict[str, Any]
) -> dict[str, Any]:
    """A ControllerRevision manifest holding one record."""
    labels = {**common_labels(owner.name), ROLE_LABEL: role, REVISION_LABEL: revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": record_name(owner.name, role, revision),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "revision": max(0, generation),
        "data": data,
    }


def build_good(owner: Owner, record: RevisionRecord, generation: int) -> dict[str, Any]:
    """The last-known-good record: enough to render the Deployment again."""
    data = {"revision": record.revision, "image": record.image, "spec": record.spec}
    return build_record(owner, GOOD, record.revision, generation, data)


def build_bad(owner: Owner, record: QuarantineRecord) -> dict[str, Any]:
    """The quarantine record of a revision judged bad."""
    return build_record(owner, BAD, record.revision, record.generation, record.dump())


@dataclass(frozen=True)
class History:
    """The records found for one MicroService, and the objects that hold them."""

    last_known_good: RevisionRecord | None = None
    quarantine: QuarantineRecord | None = None
    objects: tuple[dict[str, Any], ...] = ()

    def names(self, role: str) -> list[tuple[str, str]]:
        """(name, uid) of every record object of a role."""
        return [
            (o["metadata"]["name"], o["metadata"].get("uid", ""))
            for o in self.objects
            if (o["metadata"].get("labels") or {}).get(ROLE_LABEL) == role
        ]


def _order(obj: dict[str, Any]) -> tuple[int, int]:
    meta = obj.get("metadata", {})
    try:
        rv = int(meta.get("resourceVersion", "0"))
    except ValueError:
        rv = 0
    return int(obj.get("revision") or 0), rv


def read_history(objects: list[dict[str, Any]], uid: str) -> History:
    """The newest readable record of each role among ``objects`` controlled by ``uid``.

    Objects of another owner (a deleted and re-created MicroService of the same name)
    and records this version cannot read are ignored, never half-trusted.
    """
    mine = tuple(
        o
        for o in objects
        if any(
            r.get("uid") == uid and r.get("controller")
            for r in o.get("metadata", {}).get("ownerReferences") or []
        )
    )
    good: RevisionRecord | None = None
    bad: QuarantineRecord | None = None
    for obj in sorted(mine, key=_order):
        role = (obj["metadata"].get("labels") or {}).get(ROLE_LABEL)
        data = obj.get("data") or {}
        try:
            if role == GOOD:
                good = RevisionRecord.model_validate(data)
            elif role == BAD:
                bad = QuarantineRecord.model_validate(data)
        except ValidationError:
            continue
    return History(good, bad, mine)


def changes(
    owner: Owner,
    history: History,
    *,
    last_known_good: RevisionRecord | None,
    quarantine: QuarantineRecord | None,
    generation: int,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The record objects to create and the (name, uid) to delete so that the cluster
    holds exactly the given records."""
    creates: list[dict[str, Any]] = []
    deletes: list[tuple[str, str]] = []
    for role, record in ((GOOD, last_known_good), (BAD, quarantine)):
        keep = record_name(owner.name, role, record.revision) if record is not None else None
        present = history.names(role)
        if record is not None and keep not in {n for n, _ in present}:
            if role == GOOD:
                assert isinstance(record, RevisionRecord)
                creates.append(build_good(owner, record, generation))
            else:
                assert isinstance(record, QuarantineRecord)
                creates.append(build_bad(owner, record))
        deletes.extend((n, u) for n, u in present if n != keep)
    return creates, deletes
