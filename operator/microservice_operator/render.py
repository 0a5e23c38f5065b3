"""Render a MicroService spec into the manifests of its children (pure, no I/O).

Every child is written with server-side apply, which makes the rendered dict the
operator's *claim of ownership*: each field present here is owned by the field manager
``microservice-operator``, every field left out belongs to someone else (the API
server's defaults, an HPA, another tool's annotations). So the builders emit only the
fields we mean to enforce, never ``null`` or empty values, and always ``apiVersion``,
``kind`` and ``metadata`` (apply needs them). Being pure functions of the spec, they
are cheap to test with golden files and give the same output on every reconcile,
which is what keeps a steady state free of writes.

Naming: the primary Deployment and the Service share the MicroService's name; the warm
standby is ``<name>-standby``. Pods carry ``mso.dev/track`` so the Service can move
between tracks and each Deployment selects only its own pods.

Revisions: ``revision()`` hashes the user's intent, the normalised part of the spec that
shapes the pod (image, command, env, ports, resources, probes, pod template, security
context), not the operator's rendering of it, so a revision, its quarantine and the
last known good mean the same thing to every operator version. The hash is set as the
annotation ``mso.dev/revision`` on the template (an annotation, not a label: nothing
selects on it, and the Deployment controller's ``pod-template-hash`` already labels
the pods). Failover uses it to recognise a release that reached health, and rollback
renders the template again from the last known good spec (``source_spec``).

The rendering itself is fingerprinted separately (``mso.dev/template-hash`` on each
Deployment): when a new operator version renders the same revision differently, the
planner sees a *rendering change* of an unchanged revision and rolls it out at a
bounded pace across MicroServices instead of restarting every workload at once.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from microservice_operator import api
from microservice_operator.api import MicroServiceSpec, Probe, Standby, Track

Manifest = dict[str, Any]

ChildKey = Literal["deployment", "standby", "canary", "service", "hpa", "pdb", "standby-pdb"]

PRIMARY: Track = "primary"
STANDBY: Track = "standby"
MANAGED_BY = "microservice-operator"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TRACK_LABEL = f"{api.GROUP}/track"
REVISION_ANNOTATION = f"{api.GROUP}/revision"
REVISION_LABEL = REVISION_ANNOTATION
CANARY_LABEL = f"{api.GROUP}/canary"
"""On the pods of a canary release, which also carry track primary: the Service selects
them with the stable pods (traffic by replica share), the canary Deployment by this."""
TEMPLATE_HASH_ANNOTATION = f"{api.GROUP}/template-hash"
REVISION_SCHEME = "intent-v1"
"""Bumped only if the normalisation of the intent ever has to change (it must not)."""
CONTAINER_NAME = "app"
REVISION_HISTORY_LIMIT = 5
DEFAULT_CPU_TARGET = 80

CHILD_KINDS: dict[ChildKey, tuple[str, str]] = {
    "deployment": ("apps/v1", "Deployment"),
    "standby": ("apps/v1", "Deployment"),
    "service": ("v1", "Service"),
    "hpa": ("autoscaling/v2", "HorizontalPodAutoscaler"),
    "pdb": ("policy/v1", "PodDisruptionBudget"),
    "standby-pdb": ("policy/v1", "PodDisruptionBudget"),
    "canary": ("apps/v1", "Deployment"),
}
"""apiVersion and kind of each child key, so a caller can delete a child rendered as None."""

# Timings of the probes derived from the first port; explicit ones in spec.probes win.
_PROBE_DEFAULTS: dict[str, dict[str, int]] = {
    "readiness": {"periodSeconds": 5},
    "liveness": {"initialDelaySeconds": 10},
    "startup": {},
}


@dataclass(frozen=True)
class Owner:
    """The MicroService that owns the children: what ownerReferences and names need."""

    name: str
    namespace: str
    uid: str


def owner_reference(owner: Owner) -> Manifest:
    """A controller ownerReference, so the garbage collector deletes children with the
    MicroService (no finalizer needed) and watches can map a child back to its owner."""
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def common_labels(name: str) -> dict[str, str]:
    """Labels on every child: the recommended app.kubernetes.io set, so tools (and the
    operator's own watches) can find everything belonging to one MicroService."""
    return {
        NAME_LABEL: name,
        INSTANCE_LABEL: name,
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def selector_labels(name: str, track: Track) -> dict[str, str]:
    """The pod selector of one track. Minimal on purpose: Deployment selectors are
    immutable, so nothing that might ever change (image, version) belongs here."""
    return {INSTANCE_LABEL: name, TRACK_LABEL: track}


def selector_string(name: str, track: Track = PRIMARY) -> str:
    """``selector_labels`` as a label-selector string, for ``status.selector`` (the scale
    subresource and ``kubectl get pods -l``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name, track).items()))


def child_name(name: str, key: ChildKey) -> str:
    """Name of a child: the MicroService's own, except ``<name>-standby`` and
    ``<name>-canary``."""
    if key == "canary":
        return f"{name}-canary"
    return f"{name}-standby" if key in ("standby", "standby-pdb") else name


def _metadata(
    owner: Owner,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> Manifest:
    meta: Manifest = {"name": name, "namespace": owner.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = dict(annotations)
    meta["ownerReferences"] = [owner_reference(owner)]
    return meta


# --------------------------------------------------------------------------- pod template


def _probe(kind: str, probe: Probe | None, first_port: str | None) -> Manifest | None:
    """One container probe. Without configuration: a TCP check of the first port (none
    for startup, none without ports). Configured: exec wins over httpGet over tcpSocket;
    timings not given keep the defaults; ``enabled: false`` removes the probe."""
    if probe is None:
        if kind == "startup" or first_port is None:
            return None
        return {"tcpSocket": {"port": first_port}, **_PROBE_DEFAULTS[kind]}
    if not probe.enabled:
        return None
    port = probe.port if probe.port is not None else first_port
    handler: Manifest
    if probe.exec_command:
        handler = {"exec": {"command": list(probe.exec_command)}}
    elif port is None:
        return None  # nothing to connect to
    elif probe.http_get_path is not None:
        handler = {"httpGet": {"path": probe.http_get_path, "port": port}}
    else:
        handler = {"tcpSocket": {"port": port}}
    timings = dict(_PROBE_DEFAULTS[kind])
    for key, value in (
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
    ):
        if value is not None:
            timings[key] = value
    return {**handler, **timings}


def _container(spec: MicroServiceSpec) -> Manifest:
    c: Manifest = {"name": CONTAINER_NAME, "image": spec.image}
    if spec.image_pull_policy:
        c["imagePullPolicy"] = spec.image_pull_policy
    if spec.command:
        c["command"] = list(spec.command)
    if spec.args:
        c["args"] = list(spec.args)
    if spec.env:
        c["env"] = [e.dump() for e in spec.env]
    if spec.env_from:
        c["envFrom"] = copy.deepcopy(spec.env_from)
    if spec.ports:
        c["ports"] = [
            {"name": p.name, "containerPort": p.container_port, "protocol": p.protocol}
            for p in spec.ports
        ]
    if spec.resources:
        resources = spec.resources.dump()
        if any(resources.values()):
            c["resources"] = {k: v for k, v in resources.items() if v}
    first_port = spec.ports[0].name if spec.ports else None
    probes = spec.probes or api.Probes()
    for kind, probe in (
        ("readiness", probes.readiness),
        ("liveness", probes.liveness),
        ("startup", probes.startup),
    ):
        rendered = _probe(kind, probe, first_port)
        if rendered is not None:
            c[f"{kind}Probe"] = rendered
    sc = spec.security_context
    capabilities: Manifest = {}
    if sc.drop_capabilities:
        capabilities["drop"] = list(sc.drop_capabilities)
    if sc.add_capabilities:
        capabilities["add"] = list(sc.add_capabilities)
    c["securityContext"] = {
        "allowPrivilegeEscalation": sc.allow_privilege_escalation,
        "readOnlyRootFilesystem": sc.read_only_root_filesystem,
    }
    if capabilities:
        c["securityContext"]["capabilities"] = capabilities
    return c


def _pod_security_context(spec: MicroServiceSpec) -> Manifest:
    sc = spec.security_context
    out: Manifest = {"runAsNonRoot": sc.run_as_non_root}
    for key, value in (
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
        ("fsGroup", sc.fs_group),
    ):
        if value is not None:
            out[key] = value
    out["seccompProfile"] = {"type": sc.seccomp_profile}
    return out


def _template(
    spec: MicroServiceSpec,
    name: str,
    track: Track,
    placement: Standby | None,
    revision_hash: str | None,
) -> Manifest:
    pt = spec.pod_template or api.PodTemplate()
    labels = {**(pt.labels or {}), **common_labels(name), **selector_labels(name, track)}
    annotations = dict(pt.annotations or {})
    if revision_hash is not None:
        annotations[REVISION_ANNOTATION] = revision_hash
        # Also a label: Prometheus relabels pod labels into series, so analysis queries
        # can select one revision's pods ({{ revision }}). Never in a selector.
        labels[REVISION_LABEL] = revision_hash
    metadata: Manifest = {"labels": labels}
    if annotations:
        metadata["annotations"] = annotations

    node_selector = pt.node_selector
    tolerations = pt.tolerations
    affinity = pt.affinity
    spread = pt.topology_spread_constraints
    if placement is not None:  # standby overrides replace the pod template's, field by field
        node_selector = placement.node_selector or node_selector
        tolerations = placement.tolerations or tolerations
        affinity = placement.affinity or affinity
        spread = placement.topology_spread_constraints or spread

    pod: Manifest = {
        "containers": [_container(spec)],
        "securityContext": _pod_security_context(spec),
    }
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = copy.deepcopy(tolerations)
    if affinity:
        pod["affinity"] = copy.deepcopy(affinity)
    if spread:
        pod["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": selector_labels(name, track)}, **copy.deepcopy(c)}
            for c in spread
        ]
    if pt.service_account_name:
        pod["serviceAccountName"] = pt.service_account_name
    if pt.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in pt.image_pull_secrets]
    if pt.priority_class_name:
        pod["priorityClassName"] = pt.priority_class_name
    if pt.termination_grace_period_seconds is not None:
        pod["terminationGracePeriodSeconds"] = pt.termination_grace_period_seconds
    return {"metadata": metadata, "spec": pod}


_POD_FIELDS = (
    "image",
    "image_pull_policy",
    "command",
    "args",
    "env",
    "env_from",
    "resources",
    "probes",
    "pod_template",
    "security_context",
)


def intent(spec: MicroServiceSpec) -> dict[str, Any]:
    """The normalised part of the spec that shapes the pod: fields at their default
    and unset fields are left out (so setting a field to its default is no new
    release), and the Service-only parts of ports (servicePort, nodePort) too."""
    out: dict[str, Any] = spec.model_dump(
        include=set(_POD_FIELDS),
        by_alias=True,
        exclude_none=True,
        exclude_defaults=True,
        mode="json",
    )
    if spec.ports:
        out["ports"] = [
            p.model_dump(
                include={"name", "container_port", "protocol"},
                by_alias=True,
                mode="json",
            )
            for p in spec.ports
        ]
    return out


def revision(spec: MicroServiceSpec) -> str:
    """A short, stable hash of the user's intent for the pods (:func:`intent`).

    Replica counts, autoscaling, the Service, failover settings and the standby's
    placement do not change it, so only a real release starts a new revision; and
    because it hashes the spec rather than the rendered template, a new operator
    version that renders differently keeps every revision, quarantine and last known
    good as it was.
    """
    canonical = json.dumps(
        {"scheme": REVISION_SCHEME, "pod": intent(spec)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def legacy_revision(spec: MicroServiceSpec, name: str) -> str:
    """The revision operator 0.1 gave the same spec: a hash of its rendered primary
    template. Used once, on upgrade, to recognise Deployments, pods and records that
    0.1 wrote as the same revision (see ``plan`` and ``history``). It renders with
    today's code, which is 0.1's rendering; do not change it with the renderer."""
    template = _template(spec, name, PRIMARY, None, None)
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _short_hash(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def template_hash(
    spec: MicroServiceSpec, name: str, track: Track, placement: Standby | None, template: Manifest
) -> str:
    """``<inputs>-<output>``: a hash of what the user asked for this track's pods (the
    intent, the name, the track, the standby's placement) and a hash of the template
    this operator version renders from it. Same inputs with another output is a
    rendering change of this operator, not something the user did."""
    placed = placement.model_dump(mode="json", exclude_none=True) if placement else None
    inputs = _short_hash({"pod": intent(spec), "name": name, "track": track, "at": placed})
    return f"{inputs}-{_short_hash(template)}"


def split_template_hash(value: object) -> tuple[str, str] | None:
    """(inputs, output) of a ``mso.dev/template-hash`` value; None if it is not one."""
    if not isinstance(value, str) or value.count("-") != 1:
        return None
    inputs, output = value.split("-")
    return inputs, output


def pod_template(spec: MicroServiceSpec, name: str, track: Track = PRIMARY) -> Manifest:
    """The pod template of one track, annotated with the spec's revision.

    The standby runs the same revision as the primary, placed by
    ``spec.failover.standby`` where that sets nodeSelector, tolerations, affinity or
    topologySpreadConstraints.
    """
    placement = spec.failover.standby if track == STANDBY else None
    return _template(spec, name, track, placement, revision(spec))


# --------------------------------------------------------------------------- children


def desired_replicas(spec: MicroServiceSpec, live: int | None = None) -> int | None:
    """The replica count of the primary the operator owns: ``spec.replicas``; when
    unset the ``live`` count of the Deployment (so removing autoscaling keeps what the
    HPA reached), or 1 for a new one. None while an HPA owns it (the field is then
    left out of the applied Deployment: no tug of war)."""
    if spec.autoscaling is not None:
        return None
    if spec.replicas is not None:
        return spec.replicas
    return live if live is not None else 1


def build_deployment(
    owner: Owner,
    spec: MicroServiceSpec,
    *,
    track: Track = PRIMARY,
    replicas: int | None,
    source_spec: MicroServiceSpec | None = None,
    canary: bool = False,
) -> Manifest:
    """The Deployment of one track.

    ``replicas=None`` leaves ``spec.replicas`` out, giving up its ownership (HPA).
    ``source_spec`` renders the whole pod template from another spec, the last known
    good one after a rollback: the template is the unit a revision names, so it is
    restored as a whole. Deployment-level settings (strategy, progress deadline) and the
    standby's placement still come from ``spec``: they are not part of a revision and
    express how the user wants things rolled out and placed now.
    """
    template_spec = source_spec if source_spec is not None else spec
    placement = spec.failover.standby if track == STANDBY else None
    template = _template(template_spec, owner.name, track, placement, revision(template_spec))
    selector = selector_labels(owner.name, track)
    labels = {**common_labels(owner.name), TRACK_LABEL: track}
    if canary:
        # Track primary for the Service, and a label of its own for its Deployment
        # (whose selector is then a superset of the primary's: the Deployment
        # controller keeps each ReplicaSet's pods apart by ownerReference).
        template["metadata"]["labels"][CANARY_LABEL] = "true"
        selector = {**selector, CANARY_LABEL: "true"}
        labels[CANARY_LABEL] = "true"
    fingerprint = template_hash(template_spec, owner.name, track, placement, template)
    strategy = spec.strategy or api.Strategy()
    key: ChildKey = "canary" if canary else "standby" if track == STANDBY else "deployment"
    body: Manifest = {}
    if replicas is not None:
        body["replicas"] = replicas
    body |= {
        "selector": {"matchLabels": selector},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": strategy.max_surge,
                "maxUnavailable": strategy.max_unavailable,
            },
        },
        "progressDeadlineSeconds": spec.failover.progress_deadline_seconds,
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "template": template,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            owner, child_name(owner.name, key), labels, {TEMPLATE_HASH_ANNOTATION: fingerprint}
        ),
        "spec": body,
    }


def build_service(
    owner: Owner, spec: MicroServiceSpec, *, active_track: Track = PRIMARY
) -> Manifest | None:
    """The Service, selecting the pods of ``active_track`` (failover moves it by
    re-rendering with another track). None when disabled or nothing is exposed.

    Ports target the container port by name, so a containerPort change needs no Service
    change. Type ``None`` renders a headless ClusterIP Service.
    """
    svc = spec.service
    if not svc.enabled:
        return None
    ports: list[Manifest] = []
    for p in spec.ports or []:
        if p.service_port is None:
            continue
        port: Manifest = {
            "name": p.name,
            "port": p.service_port,
            "targetPort": p.name,
            "protocol": p.protocol,
        }
        if p.node_port is not None and svc.type in ("NodePort", "LoadBalancer"):
            port["nodePort"] = p.node_port
        ports.append(port)
    if not ports:
        return None
    body: Manifest = {"type": "ClusterIP" if svc.type == "None" else svc.type}
    if svc.type == "None":
        body["clusterIP"] = "None"
    body["selector"] = selector_labels(owner.name, active_track)
    body["ports"] = ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            owner,
            owner.name,
            {**(svc.labels or {}), **common_labels(owner.name)},
            svc.annotations,
        ),
        "spec": body,
    }


def build_hpa(owner: Owner, spec: MicroServiceSpec, track: Track = PRIMARY) -> Manifest | None:
    """An autoscaling/v2 HorizontalPodAutoscaler for the Deployment of ``track`` (the
    one that carries traffic), or None without ``spec.autoscaling``. CPU targets 80%
    when no target is given, because an HPA without metrics does nothing.

    Following the traffic means the standby is sized from the load while it carries
    it, and the idle primary's falling utilisation can no longer shrink anything."""
    a = spec.autoscaling
    if a is None:
        return None
    cpu = a.target_cpu_utilization_percentage
    memory = a.target_memory_utilization_percentage
    if cpu is None and memory is None:
        cpu = DEFAULT_CPU_TARGET
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
        for resource, target in (("cpu", cpu), ("memory", memory))
        if target is not None
    ]
    body: Manifest = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": child_name(owner.name, "standby" if track == STANDBY else "deployment"),
        },
        "minReplicas": a.min_replicas,
        "maxReplicas": a.max_replicas,
        "metrics": metrics,
    }
    if a.behavior:
        body["behavior"] = copy.deepcopy(a.behavior)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(owner, owner.name, common_labels(owner.name)),
        "spec": body,
    }


def build_pdb(
    owner: Owner, spec: MicroServiceSpec, track: Track = PRIMARY, *, carries_traffic: bool = True
) -> Manifest | None:
    """A policy/v1 PodDisruptionBudget over the pods of one track.

    The primary's exists only with ``spec.availability``. The standby's exists whenever
    a standby is configured: while it carries traffic it holds ``spec.availability``
    (``maxUnavailable: 1`` without one), so a node drain cannot evict all of it; while
    idle ``maxUnavailable: 1``, which keeps it warm without blocking maintenance.

    ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets a drain evict pods that are not
    Ready anyway: protecting broken pods would only block node maintenance.
    """
    av = spec.availability
    selector: Manifest = {"matchLabels": selector_labels(owner.name, track)}
    if track == PRIMARY:
        # A canary's pods carry track primary too (for the Service); an unready one
        # must not use up the budget of the stable pods (drains, remediation).
        selector["matchExpressions"] = [{"key": CANARY_LABEL, "operator": "DoesNotExist"}]
    body: Manifest = {"selector": selector}
    if track == STANDBY:
        if spec.failover.standby is None:
            return None
        if not carries_traffic or av is None:
            av = api.Availability(max_unavailable=1)
    if av is None:
        return None
    if av.min_available is not None:
        body["minAvailable"] = av.min_available
    elif av.max_unavailable is not None:
        body["maxUnavailable"] = av.max_unavailable
    else:
        return None
    body["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
    key: ChildKey = "standby-pdb" if track == STANDBY else "pdb"
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            owner,
            child_name(owner.name, key),
            {**common_labels(owner.name), TRACK_LABEL: track}
            if track == STANDBY
            else common_labels(owner.name),
        ),
        "spec": body,
    }


def build_children(
    owner: Owner,
    spec: MicroServiceSpec,
    *,
    active_track: Track = PRIMARY,
    source_spec: MicroServiceSpec | None = None,
    primary_replicas: int | None = None,
    standby_replicas: int | None = None,
    draining_standby: bool = False,
    canary_replicas: int | None = None,
) -> dict[ChildKey, Manifest | None]:
    """Every child the MicroService should have, keyed by a stable child key.

    None means "must not exist": the caller deletes it (see ``CHILD_KINDS`` and
    ``child_name``), which is how removing autoscaling removes the HPA.

    Replicas: the primary gets ``primary_replicas`` (the caller resolves an unset
    ``spec.replicas``; default ``spec.replicas`` or 1); the HPA's track gets none (the
    HPA owns them). The standby keeps ``failover.standby.replicas`` unless
    ``standby_replicas`` asks for more (the failover logic scales it up before moving
    traffic). Traffic never goes to a track that is not configured, except while
    ``draining_standby``: the standby was removed from the spec while it carried
    traffic, and the Service (and the HPA) stay on it until the primary is healthy;
    the standby's own objects are then left out of the result (not rendered, not
    deleted). ``canary_replicas`` (a canary release in progress) adds the canary
    Deployment, rendered from ``spec`` while the others render ``source_spec`` (the
    last known good); None removes it.
    """
    standby = spec.failover.standby
    if standby is None and not draining_standby:
        active_track = PRIMARY
    autoscaled = spec.autoscaling is not None
    if primary_replicas is None and not autoscaled:
        primary_replicas = spec.replicas if spec.replicas is not None else 1
    if autoscaled and active_track == PRIMARY:
        primary_replicas = None
    children: dict[ChildKey, Manifest | None] = {
        "deployment": build_deployment(
            owner, spec, track=PRIMARY, replicas=primary_replicas, source_spec=source_spec
        ),
        "standby": None
        if standby is None
        else build_deployment(
            owner,
            spec,
            track=STANDBY,
            replicas=None
            if autoscaled and active_track == STANDBY
            else (standby.replicas if standby_replicas is None else standby_replicas),
            source_spec=source_spec,
        ),
        "canary": None
        if canary_replicas is None
        else build_deployment(owner, spec, track=PRIMARY, replicas=canary_replicas, canary=True),
        "service": build_service(owner, spec, active_track=active_track),
        "hpa": build_hpa(owner, spec, active_track),
        "pdb": build_pdb(owner, spec),
        "standby-pdb": build_pdb(owner, spec, STANDBY, carries_traffic=active_track == STANDBY),
    }
    if draining_standby and standby is None:
        del children["standby"], children["standby-pdb"]
    return children
