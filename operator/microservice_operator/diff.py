"""Generic server-side-apply diffing (pure): does applying a manifest change anything?

Steady state must make no writes, so before every apply we compare what we would send
with what the cluster holds, the way the API server would see it: defaulted fields are
ignored, empty values match missing ones, quantities compare by value. A hash of the
last applied manifest, kept as an annotation on each child, catches fields we stopped
sending (which only an apply removes).
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .lru import LRU
from .settings import FIELD_MANAGER

APPLIED_HASH = "mso.dev/applied-hash"
"""Annotation on each child: hash of the manifest we last applied. When the rendered
manifest changes we apply (which also removes fields we stopped sending); when it has
not, we still compare field by field to catch drift from manual edits."""


def manifest_hash(manifest: dict[str, Any]) -> str:
    """Stable hash of a rendered manifest (without our hash annotation)."""
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest carrying its own hash as an annotation: a new top level and
    metadata, the rest shared with ``manifest`` (rendered manifests are never modified
    in place)."""
    meta = manifest["metadata"]
    annotations = {**(meta.get("annotations") or {}), APPLIED_HASH: manifest_hash(manifest)}
    return {**manifest, "metadata": {**meta, "annotations": annotations}}


_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<exponent>[eE][+-]?[0-9]+)|(?P<decimal>[numkMGTPE]?))"
)
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SI = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def parse_quantity(value: object) -> Decimal:
    """A resource quantity's exact value, by the API's grammar ("500m", "1.5Gi",
    "1e3", 2): ``<signed number><Ki|Mi|..|Ei, n|u|m||k|M|..|E, or e<exponent>>``.
    Raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float | Decimal):
        return Decimal(value)
    match = _QUANTITY.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:
        raise ValueError(f"not a quantity: {value!r}") from exc
    if match["binary"]:
        return number * Decimal(2 ** _BINARY_SI[match["binary"]])
    if match["exponent"]:
        return number.scaleb(int(match["exponent"][1:]))
    return number.scaleb(_DECIMAL_SI[match["decimal"] or ""])


def _quantity_equal(a: object, b: object) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except ValueError:
        return False


def _is_zero(value: Any) -> bool:
    return value is False or value == 0 or value in ("", [], {})


def is_subset(desired: Any, live: Any, *, quantities: bool = False) -> bool:
    """Whether every field of ``desired`` has the same value in ``live``.

    Fields the API server defaulted (or other managers added) are ignored; lists must
    match element by element. A zero value we send ("", 0, [], {}) matches a missing
    field, because the API server omits empty fields. Under ``resources``, quantities
    compare by value ("0.5" == "500m"), as the API server canonicalises them.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(
            is_subset(v, live[k], quantities=quantities or k == "resources")
            if k in live
            else _is_zero(v)
            for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(
            is_subset(d, lv, quantities=quantities) for d, lv in zip(desired, live, strict=True)
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if desired == live:
        return True
    if (
        quantities
        and isinstance(desired, str | int | float)
        and isinstance(live, str | int | float)
    ):
        return _quantity_equal(desired, live)
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return False


_COMPARED: LRU[tuple[str, str], tuple[str, str, bool]] = LRU(50_000)
"""needs_apply's verdict on all but the metadata of each live object's latest spec:
(uid, kind) -> (its spec version, our hash, verdict); one entry per object, replaced by
its next version. See :data:`SPEC_VERSIONED`."""

SPEC_VERSIONED = frozenset({"Deployment", "PodDisruptionBudget"})
"""Kinds whose ``metadata.generation`` the API server raises on every change of their
spec (the apps and policy strategies do; their controllers report it back as
``status.observedGeneration``). A Deployment gets a new resourceVersion with each of its
status updates, several per rollout, none of which touches what we apply: its spec is
compared once per generation, its metadata (where a version can change without a new
generation) every time. Other kinds are compared once per resourceVersion."""


def _spec_version(live: dict[str, Any]) -> str | None:
    meta = live.get("metadata") or {}
    if live.get("kind") in SPEC_VERSIONED and meta.get("generation"):
        return f"g{meta['generation']}"
    rv = meta.get("resourceVersion")
    return f"rv{rv}" if rv else None


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether applying ``desired`` (already hashed) would change the live object."""
    if live is None:
        return True
    ours = desired["metadata"].get("annotations", {}).get(APPLIED_HASH)
    meta = live.get("metadata") or {}
    theirs = (meta.get("annotations") or {}).get(APPLIED_HASH)
    if ours != theirs:
        return True
    if not is_subset(desired["metadata"], meta):
        return True
    uid, version = meta.get("uid"), _spec_version(live)
    key = (str(uid), str(live.get("kind")))
    if uid and version is not None:
        known = _COMPARED.get(key)
        if known is not None and known[:2] == (version, ours):
            return known[2]
    rest = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    verdict = not is_subset(rest, live)
    if uid and version is not None:
        _COMPARED.put(key, (version, str(ours), verdict))
    return verdict


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    Fields dropped from status (a cleared quarantine, say) must be sent as null, or a
    merge patch would leave them in place.
    """
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif value != before:
            patch[key] = value
    return patch


def owns_replicas(deployment: dict[str, Any] | None) -> bool:
    """Whether our field manager applied spec.replicas of this Deployment."""
    if deployment is None:
        return False
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply":
            spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            if "f:replicas" in spec:
                return True
    return False


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether ``obj`` has a controller ownerReference to the object with ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def owned_fields(obj: dict[str, Any], manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """The fieldsV1 set ``manager`` applied on ``obj`` (empty when it applied nothing)."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            fields: dict[str, Any] = entry.get("fieldsV1") or {}
            return fields
    return {}


def extract(value: Any, fields: dict[str, Any]) -> Any:
    """The part of ``value`` a fieldsV1 set names, as client-go's ``Extract<Kind>``
    builds an apply configuration from a live object: applying it again claims the
    same fields with the values they have now, so it changes nothing.

    fieldsV1 keys: ``f:<name>`` a map field, ``k:<json>`` the list item with those
    key fields, ``v:<json>`` a set item, ``i:<n>`` a list index, ``.`` the node
    itself. A node without children is owned whole.
    """
    children = {k: v for k, v in fields.items() if k != "."}
    if not children:
        return json.loads(json.dumps(value))
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in children.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = extract(value[key[2:]], sub or {})
        return out
    if isinstance(value, list):
        items: list[Any] = []
        for item_index, item in enumerate(value):
            for key, sub in children.items():
                if _names_item(key, item, item_index):
                    items.append(extract(item, sub or {}))
                    break
        return items
    return value


def _names_item(key: str, item: Any, index: int) -> bool:
    if key.startswith("k:") and isinstance(item, dict):
        wanted = json.loads(key[2:])
        return all(item.get(k) == v for k, v in wanted.items())
    if key.startswith("v:"):
        return bool(json.loads(key[2:]) == item)
    if key.startswith("i:"):
        return key[2:] == str(index)
    return False
