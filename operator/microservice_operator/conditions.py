"""metav1.Condition helpers.

Conditions are how users, ``kubectl wait`` and GitOps tools (kstatus) learn what
the operator thinks; ``lastTransitionTime`` must only move when a status flips or
alerts and dashboards would see phantom transitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .api import Condition, ConditionStatus

# The order conditions appear in status: most useful first.
ORDER = (
    "Ready",
    "Progressing",
    "Degraded",
    "Analysis",
    "FailedOver",
    "RolledBack",
    "Paused",
    "Reconciling",
    "Stalled",
)


def find(conditions: Iterable[Condition] | None, type_: str) -> Condition | None:
    """The condition of that type, if present."""
    for c in conditions or ():
        if c.type == type_:
            return c
    return None


def is_true(conditions: Iterable[Condition] | None, type_: str) -> bool:
    """Whether the condition is present with status True."""
    c = find(conditions, type_)
    return c is not None and c.status == "True"


def make(
    previous: Sequence[Condition] | None,
    type_: str,
    status: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> Condition:
    """A condition, keeping the previous lastTransitionTime unless the status flips."""
    value: ConditionStatus = ("True" if status else "False") if isinstance(status, bool) else status
    old = find(previous, type_)
    since = old.last_transition_time if old is not None and old.status == value else now
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )


def merge(previous: Sequence[Condition] | None, updates: Iterable[Condition]) -> list[Condition]:
    """Previous conditions with ``updates`` replacing those of the same type, in ORDER.

    Condition types this operator does not know (added by other tools) are kept.
    """
    by_type = {c.type: c for c in previous or ()}
    for c in updates:
        by_type[c.type] = c
    known = [by_type[t] for t in ORDER if t in by_type]
    others = [c for t, c in sorted(by_type.items()) if t not in ORDER]
    return known + others
