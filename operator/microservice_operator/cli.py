"""``kubectl mso``: a kubectl plugin to look at and steer MicroServices.

Installed with the package as the console script ``kubectl-mso``; kubectl runs any
``kubectl-<name>`` executable on its PATH as ``kubectl <name>``, so with the script on
PATH, ``kubectl mso get hello`` works like any kubectl command. It talks to the API
server through the official ``kubernetes`` client with the usual kubeconfig
(``KUBECONFIG``, ``--kubeconfig``, ``--context``); ``-n/--namespace`` defaults to the
context's namespace, else ``default``.

Subcommands::

    kubectl mso get NAME [--watch] [--interval S]   (alias: status)
    kubectl mso retry NAME [--revision REV]
    kubectl mso pause NAME
    kubectl mso resume NAME
    kubectl mso failback NAME

``get`` shows one screen: phase, ready count, image, the track the live Service sends
traffic to, the revisions (desired, running, last known good and quarantined, read
from the ``<name>-good-<rev>`` and ``<name>-bad-<rev>`` ControllerRevisions the
operator trusts), both tracks' Deployments, HPA and PodDisruptionBudgets, the paused
state and pending requests, the conditions and the pods. ``--watch`` redraws it
every ``--interval`` seconds until Ctrl-C.

The other verbs only ask; the operator acts. Each sets or removes one annotation on
the MicroService with a JSON merge patch of its metadata:

``mso.dev/paused: "true"`` (``pause``; ``resume`` removes it)
    The operator leaves the MicroService and its children alone while it is set.
``mso.dev/retry: "<revision>"`` (``retry``)
    Lift the quarantine of that revision (by default the quarantined one) so it is
    rolled out again; the operator removes the annotation once it has acted.
``mso.dev/failback: "now"`` (``failback``)
    Move traffic back to the primary now, if it is healthy, instead of waiting for
    ``failover.failbackAfterSeconds``; the operator removes the annotation.

Exit status: 0 on success (and on Ctrl-C in ``--watch``), 1 with a one-line error on
stderr when the MicroService does not exist, nothing is quarantined for ``retry``, or
the API server refuses a request; 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import api, history
from .health import parse_time
from .plan import FAILBACK_ANNOTATION, PAUSED_ANNOTATION, RETRY_ANNOTATION
from .render import CANARY_LABEL, INSTANCE_LABEL, REVISION_ANNOTATION, TRACK_LABEL, child_name

Obj = dict[str, Any]

PAUSED_VALUE = "true"
FAILBACK_VALUE = "now"
MERGE_PATCH = "application/merge-patch+json"
RESOURCE = f"{api.PLURAL}.{api.GROUP}"  # as kubectl names it: microservices.mso.dev
PROG = "kubectl mso"
DEFAULT_INTERVAL = 2.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CliError(Exception):
    """An error reported as one line on stderr, exit status 1."""


class NotFoundError(CliError):
    """The MicroService does not exist."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(f'MicroService "{name}" not found in namespace "{namespace}"')


# --------------------------------------------------------------------------- patches


def annotation_patch(annotations: Mapping[str, str | None]) -> Obj:
    """A JSON merge patch (RFC 7386) of metadata.annotations; None removes a key."""
    return {"metadata": {"annotations": dict(annotations)}}


def pause_patch() -> Obj:
    """``kubectl mso pause``: set ``mso.dev/paused: "true"``."""
    return annotation_patch({PAUSED_ANNOTATION: PAUSED_VALUE})


def resume_patch() -> Obj:
    """``kubectl mso resume``: remove ``mso.dev/paused`` (null in a merge patch)."""
    return annotation_patch({PAUSED_ANNOTATION: None})


def retry_patch(revision: str) -> Obj:
    """``kubectl mso retry``: set ``mso.dev/retry`` to the revision to lift."""
    return annotation_patch({RETRY_ANNOTATION: revision})


def failback_patch() -> Obj:
    """``kubectl mso failback``: set ``mso.dev/failback: "now"``."""
    return annotation_patch({FAILBACK_ANNOTATION: FAILBACK_VALUE})


def patch_microservice(custom: Any, namespace: str, name: str, body: Obj) -> Obj:
    """Merge-patch the MicroService through ``CustomObjectsApi``.

    The content type is given explicitly: which patch type a dict body gets by
    default has changed between client versions (json-patch, merge-patch), and a
    merge patch is what ``null`` meaning "remove" relies on.
    """
    try:
        result: Obj = custom.patch_namespaced_custom_object(
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
        )
    except Exception as exc:
        if _status(exc) == 404:
            raise NotFoundError(namespace, name) from exc
        raise
    return result


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True)
class Snapshot:
    """Everything ``get`` shows, as plain API JSON (camelCase dicts)."""

    ms: Obj
    primary: Obj | None = None
    standby: Obj | None = None
    service: Obj | None = None
    hpa: Obj | None = None
    pdbs: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    revisions: list[Obj] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _api_message(exc: BaseException) -> str:
    """The API server's message from an ApiException (its Status body), else str()."""
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if isinstance(message, str) and message:
            return message
    reason = getattr(exc, "reason", None)
    status = _status(exc)
    if status is not None:
        return f"{status} {reason or ''}".strip()
    return str(exc) or type(exc).__name__


def _json(response: Any) -> Obj:
    """The body of a ``_preload_content=False`` response: the API's own JSON."""
    data: Obj = json.loads(response.data)
    return data


def fetch(api_client: Any, namespace: str, name: str) -> Snapshot:
    """Read the MicroService and what belongs to it (the only I/O of ``get``).

    Raises NotFoundError when the MicroService does not exist. Children that do not exist
    are None or empty; a read the user may not do (403) becomes a warning, so a
    restricted user still sees the rest.
    """
    from kubernetes import client  # noqa: PLC0415  (imported on use: fast --help)

    custom = client.CustomObjectsApi(api_client)
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    autoscaling = client.AutoscalingV2Api(api_client)
    policy = client.PolicyV1Api(api_client)
    try:
        ms = _json(
            custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, _preload_content=False
            )
        )
    except Exception as exc:
        if _status(exc) == 404:
            raise NotFoundError(namespace, name) from exc
        raise
    warnings: list[str] = []

    def read(what: str, call: Callable[[], Any]) -> Obj | None:
        try:
            return _json(call())
        except Exception as exc:
            status = _status(exc)
            if status == 404:
                return None
            if status is None:
                raise
            warnings.append(f"cannot read {what}: {_api_message(exc)}")
            return None

    def items(what: str, call: Callable[[], Any]) -> list[Obj]:
        found = read(what, call)
        return list((found or {}).get("items") or [])

    instance = f"{INSTANCE_LABEL}={name}"
    primary = read(
        f"Deployment {name}",
        lambda: apps.read_namespaced_deployment(name, namespace, _preload_content=False),
    )
    standby_name = child_name(name, "standby")
    standby = read(
        f"Deployment {standby_name}",
        lambda: apps.read_namespaced_deployment(standby_name, namespace, _preload_content=False),
    )
    service = read(
        f"Service {name}",
        lambda: core.read_namespaced_service(name, namespace, _preload_content=False),
    )
    hpa = read(
        f"HorizontalPodAutoscaler {name}",
        lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler(
            name, namespace, _preload_content=False
        ),
    )
    pdbs = [
        p
        for p in items(
            "PodDisruptionBudgets",
            lambda: policy.list_namespaced_pod_disruption_budget(namespace, _preload_content=False),
        )
        if _pdb_belongs(p, name)
    ]
    pods = items(
        "Pods",
        lambda: core.list_namespaced_pod(
            namespace, label_selector=instance, _preload_content=False
        ),
    )
    revisions = items(
        "ControllerRevisions",
        lambda: apps.list_namespaced_controller_revision(
            namespace, label_selector=f"{instance},{history.ROLE_LABEL}", _preload_content=False
        ),
    )
    return Snapshot(ms, primary, standby, service, hpa, pdbs, pods, revisions, warnings)


def _pdb_belongs(pdb: Obj, name: str) -> bool:
    """A PDB of this MicroService: the operator's (same name) or any other whose
    selector or labels name this instance."""
    meta = pdb.get("metadata") or {}
    selector = ((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    labels = meta.get("labels") or {}
    return bool(
        meta.get("name") == name
        or selector.get(INSTANCE_LABEL) == name
        or labels.get(INSTANCE_LABEL) == name
    )


# --------------------------------------------------------------------------- view


def age(value: object, now: datetime) -> str:
    """kubectl-style age of an RFC 3339 timestamp: 42s, 5m10s, 3h, 2d4h; '-' if unknown."""
    when = parse_time(value)
    if when is None:
        return "-"
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 10:
        return f"{minutes}m{seconds}s" if seconds else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours and days < 8 else f"{days}d"


def _one_line(text: object) -> str:
    return re.sub(r"\s+", " ", str(text or "")).strip()


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows padded into columns like kubectl's tables (the last column unpadded)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    out = []
    for row in rows:
        cells = [c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)]
        out.append((indent + "   ".join(cells)).rstrip())
    return out


def _annotations(obj: Obj | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def _template_revision(deployment: Obj | None) -> str | None:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    revision = ((template.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    return revision if isinstance(revision, str) else None


def _template_image(deployment: Obj | None) -> str | None:
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    image = containers[0].get("image") if containers else None
    return image if isinstance(image, str) else None


def _records(snap: Snapshot) -> history.History:
    """The records the operator trusts: controlled by this MicroService, readable."""
    uid = (snap.ms.get("metadata") or {}).get("uid", "")
    return history.read_history(snap.revisions, uid)


def quarantined_revision(ms: Obj, revisions: list[Obj]) -> str | None:
    """The revision ``retry`` lifts by default: the ``-bad-`` record's, else
    ``status.quarantinedRevision``."""
    uid = (ms.get("metadata") or {}).get("uid", "")
    record = history.read_history(revisions, uid).quarantine
    if record is not None:
        return record.revision
    value = (ms.get("status") or {}).get("quarantinedRevision")
    return value if isinstance(value, str) and value else None


def _traffic(snap: Snapshot) -> tuple[str | None, str]:
    """(track, description) of where the live Service sends traffic."""
    status_track = (snap.ms.get("status") or {}).get("activeTrack")
    if snap.service is None:
        note = f" (status says {status_track})" if status_track else ""
        return None, f"no Service{note}"
    selector = (snap.service.get("spec") or {}).get("selector") or {}
    track = selector.get(TRACK_LABEL)
    name = (snap.service.get("metadata") or {}).get("name", "")
    if not track:
        return None, f"Service {name} selects no track ({TRACK_LABEL} not in its selector)"
    text = f"{track} (Service {name} selects {TRACK_LABEL}={track})"
    if status_track and status_track != track:
        text += f"; status says {status_track}"
    return track, text


def _deployment_row(track: str, deployment: Obj, active: str | None) -> list[str]:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = spec.get("replicas")
    ready = status.get("readyReplicas") or 0
    return [
        track,
        (deployment.get("metadata") or {}).get("name", ""),
        f"{ready}/{desired if desired is not None else '?'}",
        str(status.get("updatedReplicas") or 0),
        str(status.get("availableReplicas") or 0),
        _template_revision(deployment) or "-",
        _template_image(deployment) or "-",
        "<- traffic" if track == active else "",
    ]


def _pod_row(pod: Obj, now: datetime) -> list[str]:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    waiting = next(
        (
            (c.get("state") or {}).get("waiting", {}).get("reason")
            for c in statuses
            if (c.get("state") or {}).get("waiting")
        ),
        None,
    )
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase") or "-"
    return [
        meta.get("name", ""),
        "canary"
        if (meta.get("labels") or {}).get(CANARY_LABEL) == "true"
        else (meta.get("labels") or {}).get(TRACK_LABEL, "-"),
        phase,
        f"{ready}/{len(containers)}",
        str(restarts),
        waiting or "-",
        age(meta.get("creationTimestamp"), now),
        _annotations(pod).get(REVISION_ANNOTATION, "-"),
    ]


def _hpa_line(hpa: Obj) -> str:
    spec = hpa.get("spec") or {}
    status = hpa.get("status") or {}
    target = spec.get("scaleTargetRef") or {}
    current = status.get("currentReplicas")
    desired = status.get("desiredReplicas")
    text = (
        f"{(hpa.get('metadata') or {}).get('name', '')} -> "
        f"{target.get('kind', 'Deployment')}/{target.get('name', '?')}: "
        f"current {current if current is not None else '-'}, "
        f"min {spec.get('minReplicas', 1)}, max {spec.get('maxReplicas', '?')}"
    )
    if desired is not None and desired != current:
        text += f" (desired {desired})"
    return text


def _pdb_line(pdb: Obj) -> str:
    spec = pdb.get("spec") or {}
    status = pdb.get("status") or {}
    if "minAvailable" in spec:
        budget = f"minAvailable {spec['minAvailable']}"
    elif "maxUnavailable" in spec:
        budget = f"maxUnavailable {spec['maxUnavailable']}"
    else:
        budget = "no budget"
    text = f"{(pdb.get('metadata') or {}).get('name', '')}: {budget}"
    if status:
        text += (
            f", {status.get('currentHealthy', 0)}/{status.get('expectedPods', 0)} healthy"
            f" (needs {status.get('desiredHealthy', 0)}),"
            f" {status.get('disruptionsAllowed', 0)} disruptions allowed"
        )
    return text


def render_view(snap: Snapshot, now: datetime) -> str:
    """The ``get`` screen of one MicroService (pure: plain API dicts and a clock)."""
    ms = snap.ms
    meta = ms.get("metadata") or {}
    spec = ms.get("spec") or {}
    status = ms.get("status") or {}
    annotations = _annotations(ms)
    records = _records(snap)
    active, traffic = _traffic(snap)

    image = str(spec.get("image") or "-")
    running_image = _template_image(snap.primary)
    if running_image and running_image != image:
        image += f" (primary runs {running_image})"
    paused = annotations.get(PAUSED_ANNOTATION) == PAUSED_VALUE
    pending = [
        f"{key}={annotations[key]}"
        for key in (RETRY_ANNOTATION, FAILBACK_ANNOTATION)
        if key in annotations
    ]
    observed = status.get("observedGeneration")
    generation = meta.get("generation")
    phase = str(status.get("phase") or "-")
    if observed is not None and generation is not None and observed != generation:
        phase += f" (observed generation {observed}, spec is at {generation})"

    deleting = " (being deleted)" if meta.get("deletionTimestamp") else ""
    lines = _table(
        [
            ["MicroService", f"{meta.get('namespace', '')}/{meta.get('name', '')}{deleting}"],
            ["Phase", phase],
            ["Ready", str(status.get("ready") or "-")],
            ["Image", image],
            ["Traffic", traffic],
            ["Paused", f"yes ({PAUSED_ANNOTATION}={PAUSED_VALUE})" if paused else "no"],
            ["Pending", ", ".join(pending) if pending else "none"],
        ],
        indent="",
    )

    # Revisions: what the spec asks for, what runs, and the history records.
    desired = status.get("desiredRevision")
    current = status.get("currentRevision")
    running = _template_revision(snap.primary)
    current_text = str(current or running or "-")
    if current and running and running != current:
        current_text += f" (primary Deployment template: {running})"
    good = records.last_known_good
    if good is not None:
        good_text = f"{good.revision}  {good.image}"
    elif status.get("lastKnownGoodRevision"):
        good_text = f"{status['lastKnownGoodRevision']}  (status only, no record)"
    else:
        good_text = "none"
    bad = records.quarantine
    if bad is not None:
        bad_text = f"{bad.revision}  {bad.image}  {bad.reason}"
        if bad.message:
            bad_text += f": {_one_line(bad.message)}"
        bad_text += f"  ({age(bad.time, now)} ago)"
    elif status.get("quarantinedRevision"):
        bad_text = f"{status['quarantinedRevision']}  (status only, no record)"
    else:
        bad_text = "none"
    lines += ["", "Revisions"]
    lines += _table(
        [
            ["desired", str(desired or "-")],
            ["current (running)", current_text],
            ["last known good", good_text],
            ["quarantined", bad_text],
        ]
    )

    # Tracks.
    lines += ["", "Tracks"]
    rows = [["TRACK", "DEPLOYMENT", "READY", "UP-TO-DATE", "AVAILABLE", "REVISION", "IMAGE", ""]]
    for track, deployment in (("primary", snap.primary), ("standby", snap.standby)):
        if deployment is not None:
            rows.append(_deployment_row(track, deployment, active))
        else:
            name = child_name(
                str(meta.get("name", "")), "standby" if track == "standby" else "deployment"
            )
            rows.append([track, f"{name} (none)", "-", "-", "-", "-", "-", ""])
    lines += _table(rows)

    # Scaling and disruption budgets.
    lines += ["", f"HPA    {_hpa_line(snap.hpa) if snap.hpa is not None else 'none'}"]
    if snap.pdbs:
        for pdb in sorted(snap.pdbs, key=lambda p: (p.get("metadata") or {}).get("name", "")):
            lines.append(f"PDB    {_pdb_line(pdb)}")
    else:
        lines.append("PDB    none")

    # A canary release in progress, and the analysis checks.
    canary = status.get("canary")
    if isinstance(canary, dict):
        lines += [
            "",
            f"Canary step {canary.get('step', '?')}: revision {canary.get('revision', '?')}, "
            f"{canary.get('readyReplicas', 0)}/{canary.get('replicas', '?')} ready, "
            f"since {age(canary.get('since'), now)}: {_one_line(canary.get('message'))}",
        ]
    checks = status.get("analysis") or []
    if checks:
        lines += ["", "Analysis"]
        rows = [["CHECK", "TRACK", "REVISION", "OUTCOME", "FAILURES", "SINCE", "MESSAGE"]]
        rows += [
            [
                str(a.get("check", "")),
                str(a.get("track", "")),
                str(a.get("revision", "")),
                str(a.get("outcome", "")),
                str(a.get("consecutiveFailures", 0)),
                age(a.get("since"), now),
                _one_line(a.get("message")),
            ]
            for a in checks
            if isinstance(a, dict)
        ]
        lines += _table(rows)

    # Conditions.
    lines += ["", "Conditions"]
    conditions = status.get("conditions") or []
    if conditions:
        rows = [["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]]
        rows += [
            [
                str(c.get("type", "")),
                str(c.get("status", "")),
                str(c.get("reason", "")),
                age(c.get("lastTransitionTime"), now),
                _one_line(c.get("message")),
            ]
            for c in conditions
        ]
        lines += _table(rows)
    else:
        lines.append("  none reported yet")

    # Pods.
    lines += ["", "Pods"]
    if snap.pods:
        order = {"primary": 0, "standby": 1}
        pods = sorted(
            snap.pods,
            key=lambda p: (
                order.get(((p.get("metadata") or {}).get("labels") or {}).get(TRACK_LABEL, ""), 2),
                (p.get("metadata") or {}).get("name", ""),
            ),
        )
        rows = [["NAME", "TRACK", "PHASE", "READY", "RESTARTS", "WAITING", "AGE", "REVISION"]]
        rows += [_pod_row(p, now) for p in pods]
        lines += _table(rows)
    else:
        lines.append("  none")

    if snap.warnings:
        lines += ["", "Warnings"]
        lines += [f"  {w}" for w in snap.warnings]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- arguments


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _connection_flags(suppress: bool) -> argparse.ArgumentParser:
    """-n/--kubeconfig/--context, accepted before and after the subcommand.

    On the subcommands their default is SUPPRESS, so a subcommand that does not
    repeat a flag keeps the value given before it.
    """
    parent = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    parent.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace of the MicroService (default: the context's, else 'default')",
    )
    parent.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: $KUBECONFIG)"
    )
    parent.add_argument("--context", default=default, help="kubeconfig context to use")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``kubectl mso``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at and steer MicroServices (mso.dev/v1alpha1).",
        parents=[_connection_flags(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    flags = _connection_flags(suppress=True)

    text = "show one MicroService on one screen"
    get = sub.add_parser("get", aliases=["status"], parents=[flags], help=text, description=text)
    get.add_argument("name", metavar="NAME")
    get.add_argument("-w", "--watch", action="store_true", help="redraw until interrupted (Ctrl-C)")
    get.add_argument(
        "--interval",
        type=_positive_float,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between redraws with --watch (default {DEFAULT_INTERVAL:g})",
    )
    get.set_defaults(command="get")

    retry = sub.add_parser(
        "retry",
        parents=[flags],
        help=f"lift the quarantine of a revision ({RETRY_ANNOTATION})",
        description=f"Ask the operator to lift the quarantine of a revision by setting "
        f"the annotation {RETRY_ANNOTATION}; it removes the annotation once done.",
    )
    retry.add_argument("name", metavar="NAME")
    retry.add_argument(
        "--revision", metavar="REV", help="revision to retry (default: the quarantined one)"
    )
    for command, text in (
        ("pause", f'stop reconciling ({PAUSED_ANNOTATION}: "{PAUSED_VALUE}")'),
        ("resume", f"reconcile again (removes {PAUSED_ANNOTATION})"),
        (
            "failback",
            f"move traffic back to a healthy primary now "
            f'({FAILBACK_ANNOTATION}: "{FAILBACK_VALUE}")',
        ),
    ):
        verb = sub.add_parser(command, parents=[flags], help=text, description=text)
        verb.add_argument("name", metavar="NAME")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed arguments; connection flags always present (None when not given)."""
    args = build_parser().parse_args(argv)
    for key in ("namespace", "kubeconfig", "context"):
        if not hasattr(args, key):
            setattr(args, key, None)
    return args


# --------------------------------------------------------------------------- main


def _context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    from kubernetes import config  # noqa: PLC0415

    contexts, current = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=kubeconfig
    )
    chosen = current
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise CliError(f'context "{context}" not found in the kubeconfig')
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return namespace if isinstance(namespace, str) and namespace else None


def connect(args: argparse.Namespace) -> tuple[Any, str]:
    """An ApiClient and the namespace to use, from the kubeconfig (in a pod without
    one, the in-cluster ServiceAccount)."""
    from kubernetes import client, config  # noqa: PLC0415

    try:
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, context=args.context
        )
        namespace = args.namespace or _context_namespace(args.kubeconfig, args.context)
    except config.ConfigException as exc:
        if args.kubeconfig or args.context:
            raise CliError(f"invalid kubeconfig: {exc}") from exc
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            raise CliError(f"no usable kubeconfig: {exc}") from exc
        api_client = client.ApiClient()
        namespace = args.namespace
        if namespace is None and SERVICEACCOUNT_NAMESPACE.exists():
            namespace = SERVICEACCOUNT_NAMESPACE.read_text().strip()
    return api_client, namespace or "default"


def _show(text: str, out: TextIO, *, watch: bool, first: bool) -> None:
    if watch:
        if out.isatty():
            text = CLEAR_SCREEN + text
        elif not first:
            text = "-" * 40 + "\n" + text
    out.write(text)
    out.flush()


def cmd_get(
    api_client: Any,
    namespace: str,
    args: argparse.Namespace,
    out: TextIO,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """``get``/``status``: one screen, or redrawn every interval with --watch (until
    Ctrl-C, which exits 0)."""
    try:
        snap = fetch(api_client, namespace, args.name)
        _show(render_view(snap, clock()), out, watch=args.watch, first=True)
        while args.watch:
            sleep(args.interval)
            try:
                text = render_view(fetch(api_client, namespace, args.name), clock())
            except NotFoundError as exc:  # deleted meanwhile: say so, keep watching
                text = f"{exc} (at {clock():%H:%M:%S})\n"
            except Exception as exc:  # a blip of the API server must not end the watch
                if _status(exc) is None and not isinstance(exc, OSError):
                    raise
                text = f"error: {_api_message(exc)} (at {clock():%H:%M:%S})\n"
            _show(text, out, watch=True, first=False)
    except KeyboardInterrupt:
        if not args.watch:
            raise
        out.write("\n")
    return 0


def cmd_verb(api_client: Any, namespace: str, args: argparse.Namespace, out: TextIO) -> int:
    """pause, resume, failback, retry: one merge patch, one line of output."""
    from kubernetes import client  # noqa: PLC0415

    custom = client.CustomObjectsApi(api_client)
    ref = f"{RESOURCE}/{args.name}"
    if args.command == "retry":
        revision = args.revision
        if revision is None:
            snap = fetch(api_client, namespace, args.name)
            revision = quarantined_revision(snap.ms, snap.revisions)
            if revision is None:
                raise CliError(
                    f"{ref} in namespace {namespace}: nothing is quarantined, nothing to retry"
                )
        patch_microservice(custom, namespace, args.name, retry_patch(revision))
        out.write(f"{ref} retry of revision {revision} requested ({RETRY_ANNOTATION}={revision})\n")
    elif args.command == "pause":
        patch_microservice(custom, namespace, args.name, pause_patch())
        out.write(f"{ref} paused ({PAUSED_ANNOTATION}={PAUSED_VALUE})\n")
    elif args.command == "resume":
        patch_microservice(custom, namespace, args.name, resume_patch())
        out.write(f"{ref} resumed ({PAUSED_ANNOTATION} removed)\n")
    elif args.command == "failback":
        patch_microservice(custom, namespace, args.name, failback_patch())
        out.write(
            f"{ref} failback requested ({FAILBACK_ANNOTATION}={FAILBACK_VALUE}): traffic moves "
            "to the primary if it is healthy\n"
        )
    else:  # pragma: no cover - argparse only allows the commands above
        raise CliError(f"unknown command {args.command}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-mso`` console script."""
    args = parse_args(argv)
    if getattr(args, "watch", False):
        # Ctrl-C ends a watch even when the shell started us with SIGINT ignored
        # (`kubectl mso get web --watch &` in a script, then kill -INT).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        api_client, namespace = connect(args)
        try:
            if args.command == "get":
                return cmd_get(api_client, namespace, args, sys.stdout)
            return cmd_verb(api_client, namespace, args, sys.stdout)
        finally:
            api_client.close()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if _status(exc) is None and not isinstance(exc, OSError):
            raise
        print(f"error: {_api_message(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
