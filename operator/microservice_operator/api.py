"""The MicroService API (mso.dev/v1alpha1): the one source of truth.

The CRD schema in ``crds/`` is generated from these models (see ``crd.py``) and the
handlers validate every object with them, so what ``kubectl explain`` documents,
what the API server admits and what the operator accepts can never drift apart.
Field descriptions are user documentation: ``kubectl explain ms.spec.failover``
prints them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

GROUP = "mso.dev"
VERSION = "v1alpha1"
KIND = "MicroService"
PLURAL = "microservices"
SINGULAR = "microservice"
SHORT_NAMES = ["ms"]
CATEGORIES = ["all"]
API_VERSION = f"{GROUP}/{VERSION}"

IntOrString = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
    ),
]
"""Kubernetes IntOrString: ``3`` or ``"25%"``."""

FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes object passed through verbatim (affinity, a toleration, ...).

The API server validates these when the child is applied; an error there surfaces
in the ``Ready`` condition with the server's message.
"""

StringMap = Annotated[
    dict[str, str],
    WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
]


class Model(BaseModel):
    """Base for every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The object as it appears in Kubernetes: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry; the API server returns ``message`` as is."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


@dataclass(frozen=True)
class Check:
    """A rule on one field, enforced twice with the same message: as the CEL ``rule`` in
    the CRD (``kubectl apply`` fails, naming the field) and by ``ok`` in the models (an
    object that bypassed admission gets ``Ready=False InvalidSpec``). Use in
    ``Annotated[T, Check(...)]``; ``ok`` must mean exactly what ``rule`` means."""

    rule: str
    message: str
    ok: Callable[[Any], bool]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler.resolve_ref_schema(handler(schema))
        out.setdefault("x-kubernetes-validations", []).append(cel(self.rule, self.message))
        return out

    def _validate(self, value: Any) -> Any:
        if not self.ok(value):
            raise ValueError(self.message)
        return value


def _matches(pattern: str) -> Callable[[Any], bool]:
    """Python's side of CEL ``x.matches(pattern)`` for an anchored ``^...$`` pattern. The
    patterns here use only syntax that RE2 (CEL, OpenAPI ``pattern``) and Python's ``re``
    read alike: explicit ASCII classes, no ``\\w``/``\\d``/``\\s`` (Unicode-aware in Python)."""
    compiled = re.compile(pattern)
    return lambda value: compiled.fullmatch(value) is not None


def cel_matches(subject: str, pattern: str) -> str:
    """CEL ``subject.matches('pattern')``, the pattern quoted as a CEL string literal."""
    quoted = pattern.replace("\\", "\\\\").replace("'", "\\'")
    return f"{subject}.matches('{quoted}')"


# --------------------------------------------------------------------------- formats

MAX_REPLICAS = 10_000
"""Sanity bound on every replica count: a typo (an extra zero or six) must not become a
Deployment of a billion pods. Not a capacity policy; a tighter, per-namespace bound
belongs in a ValidatingAdmissionPolicy (manifests/samples/policy/)."""

_REPLICAS_BOUND = (
    f"At most {MAX_REPLICAS}: a sanity bound against typos, not a capacity policy "
    "(a cluster can enforce a lower one with a ValidatingAdmissionPolicy)."
)

# The Docker reference grammar (github.com/distribution/reference), RE2 and Python alike:
# [host[:port]/]path[:tag][@algorithm:hex]. The path is lowercase; the host may carry
# a port or be an [IPv6] literal.
_DOMAIN_PART = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])"
_DOMAIN = f"(?:{_DOMAIN_PART}(?:[.]{_DOMAIN_PART})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?"
_PATH_PART = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}"
_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = f"^(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?$"
"""An image reference a kubelet can pull: no spaces, a name before any tag or digest."""

DNS_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""RFC 1123 subdomain: names of ServiceAccounts, Secrets, PriorityClasses."""

PORT_NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""IANA_SVC_NAME (plus the 15-character limit on the field)."""

ENV_NAME_PATTERN = "^[ -<>-~]+$"
"""Environment variable names as Kubernetes accepts them: printable ASCII except '='."""

HTTP_PATH_PATTERN = "^/[!-~]*$"
"""An absolute URL path: printable ASCII, no spaces."""

PERCENT_PATTERN = "^(100|[1-9]?[0-9])%$"

# Label keys ([prefix/]name) and values, as Kubernetes validates them on the children.
LABEL_KEY_PATTERN = (
    "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
MAX_LABELS = 64

RESERVED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
)
RESERVED_LABEL_PREFIX = f"{GROUP}/"
"""Labels the operator sets on its children (and selects pods by): a user value would be
overwritten, or worse, move pods out of their track's selector."""


def _reserved_label(key: str) -> bool:
    return key in RESERVED_LABELS or key.startswith(RESERVED_LABEL_PREFIX)


_RESERVED_LIST = ", ".join(f"'{k}'" for k in RESERVED_LABELS)
NoReservedLabels = Check(
    f"self.all(k, !(k in [{_RESERVED_LIST}]) && !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
    f"must not set the operator's own labels ({', '.join(RESERVED_LABELS)} and "
    f"anything under {RESERVED_LABEL_PREFIX})",
    lambda labels: not any(_reserved_label(k) for k in labels),
)
_label_key = _matches(LABEL_KEY_PATTERN)
LabelKeys = Check(
    f"self.all(k, {cel_matches('k', LABEL_KEY_PATTERN)})",
    "label keys must be [prefix/]name: a DNS subdomain prefix, and a name of at most 63 "
    "letters, digits, '-', '_' or '.' starting and ending with a letter or digit",
    lambda labels: all(_label_key(k) for k in labels),
)

Image = Annotated[
    str,
    Check(
        cel_matches("self", IMAGE_PATTERN),
        "must be an image reference [registry[:port]/]name[:tag][@sha256:digest], e.g. "
        "ghcr.io/acme/hello:1.2.3: no spaces, a lowercase name before any tag or digest",
        _matches(IMAGE_PATTERN),
    ),
]

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]

Labels = Annotated[
    dict[str, LabelValue],
    Field(max_length=MAX_LABELS),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_LABELS,
            "additionalProperties": {
                "type": "string",
                "maxLength": 63,
                "pattern": LABEL_VALUE_PATTERN,
            },
        }
    ),
    LabelKeys,
    NoReservedLabels,
]
"""Extra labels for a child: valid label syntax, none of the operator's own."""

DnsSubdomain = Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
"""A Kubernetes object name (RFC 1123 subdomain)."""

_percent = _matches(PERCENT_PATTERN)
CountOrPercent = Annotated[
    IntOrString,
    Check(
        f"type(self) == int ? self >= 0 : {cel_matches('self', PERCENT_PATTERN)}",
        'must be a count (0 or more) or a percentage from "0%" to "100%"',
        lambda v: v >= 0 if isinstance(v, int) else _percent(v),
    ),
]
"""An IntOrString of pods: a count, or a percentage of the desired replicas."""


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


# --------------------------------------------------------------------------- spec


class Port(Model):
    """A port the container listens on, and optionally exposes through the Service."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.nodePort) || has(self.servicePort)",
                    "nodePort needs servicePort on the same port (a port without "
                    "servicePort is not exposed)",
                    ".nodePort",
                ),
            ]
        }
    )

    name: str = Field(
        "http",
        description="Port name (IANA_SVC_NAME: at most 15 lowercase letters, digits and "
        "dashes). Probes and the Service refer to it.",
        max_length=15,
        pattern=PORT_NAME_PATTERN,
    )
    container_port: int = Field(
        ..., ge=1, le=65535, description="Port the container listens on, e.g. 5000."
    )
    service_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port the Service exposes for this container port, e.g. 80. Ports "
        "without a servicePort are not exposed. Required on at least one port when "
        "spec.service is enabled.",
    )
    node_port: int | None = Field(
        None,
        ge=30000,
        le=32767,
        description="Fixed node port for Service type NodePort/LoadBalancer (refused with "
        "ClusterIP/None, which have no node ports); needs servicePort. Allocated by "
        "Kubernetes when unset.",
    )
    protocol: Literal["TCP", "UDP", "SCTP"] = Field("TCP", description="Transport protocol.")

    @model_validator(mode="after")
    def _node_port_needs_service_port(self) -> Port:
        if self.node_port is not None and self.service_port is None:
            raise ValueError(
                "nodePort needs servicePort on the same port (a port without "
                "servicePort is not exposed)"
            )
        return self


class EnvVar(Model):
    """An environment variable, as in a Kubernetes container."""

    name: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        pattern=ENV_NAME_PATTERN,
        description="Variable name: printable ASCII characters except '='.",
    )
    value: str | None = Field(None, description="Literal value.")
    value_from: FreeForm | None = Field(
        None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef, "
        "resourceFieldRef), as in a Kubernetes EnvVar.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: set value or valueFrom, not both")
        return self


_http_path = _matches(HTTP_PATH_PATTERN)
HttpPath = Annotated[
    str,
    Check(
        cel_matches("self", HTTP_PATH_PATTERN),
        "must be an absolute URL path: start with / and contain no spaces (percent-encode "
        "them), e.g. /healthz",
        _http_path,
    ),
]

_port_name = _matches(PORT_NAME_PATTERN)
ProbePort = Annotated[
    IntOrString,
    Check(
        "type(self) == int ? self >= 1 && self <= 65535 : "
        + cel_matches("self", PORT_NAME_PATTERN),
        "must be a port number (1-65535) or a port name of spec.ports",
        lambda v: 1 <= v <= 65535 if isinstance(v, int) else _port_name(v),
    ),
]


class Resources(Model):
    """Compute resources of the container; quantities as in Kubernetes ("100m", "128Mi")."""

    requests: dict[str, IntOrString] | None = Field(
        None, description="Minimum resources the scheduler reserves, e.g. cpu: 100m."
    )
    limits: dict[str, IntOrString] | None = Field(
        None, description="Maximum resources the container may use, e.g. memory: 256Mi."
    )


class Probe(Model):
    """A health probe. With none of httpGet, tcpSocket or exec set, a TCP check of the
    first port is used."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.httpGetPath) || !has(self.execCommand)",
                    "set httpGetPath or execCommand, not both",
                ),
            ]
        }
    )

    enabled: bool = Field(True, description="Set false to run without this probe.")
    http_get_path: HttpPath | None = Field(
        None,
        alias="httpGetPath",
        max_length=2048,
        description="Probe with an HTTP GET of this path (e.g. /healthz) on `port`.",
    )
    exec_command: list[str] | None = Field(
        None,
        alias="execCommand",
        min_length=1,
        description="Probe by running this command in the container.",
    )
    port: ProbePort | None = Field(
        None,
        description="Port number, or the name of one of spec.ports, to probe; defaults to "
        "the first port.",
    )
    initial_delay_seconds: int | None = Field(
        None, ge=0, description="Seconds after start before the first probe."
    )
    period_seconds: int | None = Field(None, ge=1, description="Seconds between probes.")
    timeout_seconds: int | None = Field(None, ge=1, description="Seconds before a probe times out.")
    failure_threshold: int | None = Field(
        None, ge=1, description="Consecutive failures before the probe is considered failed."
    )
    success_threshold: int | None = Field(
        None, ge=1, description="Consecutive successes before the probe is considered passed."
    )

    @model_validator(mode="after")
    def _one_handler(self) -> Probe:
        if self.http_get_path is not None and self.exec_command is not None:
            raise ValueError("set httpGetPath or execCommand, not both")
        return self


class Probes(Model):
    """Readiness, liveness and startup probes. Defaults derive from the first port: a TCP
    readiness check and a TCP liveness check (after 10s). With no ports, no default probes."""

    readiness: Probe | None = Field(None, description="Readiness probe: gates traffic.")
    liveness: Probe | None = Field(None, description="Liveness probe: restarts the container.")
    startup: Probe | None = Field(
        None, description="Startup probe: holds the others until the app has started."
    )


class ServiceSpec(Model):
    """The Service in front of the pods."""

    enabled: bool = Field(True, description="Create a Service. Set false for workers.")
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "None"] = Field(
        "ClusterIP",
        description="Service type. `None` makes a headless ClusterIP Service (clusterIP: None).",
    )
    annotations: StringMap | None = Field(
        None, description="Annotations on the Service (e.g. for a cloud load balancer)."
    )
    labels: Labels | None = Field(
        None,
        description=f"Extra labels on the Service (at most {MAX_LABELS}); the operator's "
        f"own ({', '.join(RESERVED_LABELS)}, {RESERVED_LABEL_PREFIX}*) are refused.",
    )


class Autoscaling(Model):
    """A HorizontalPodAutoscaler (autoscaling/v2). While set, the HPA owns the replica
    count and spec.replicas is ignored. It scales the track that carries traffic: the
    primary, or the standby while failed over. Removing it keeps the replica count the
    HPA reached unless spec.replicas is set."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
                ),
            ]
        }
    )

    min_replicas: int = Field(
        1,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Fewest replicas the HPA scales down to. {_REPLICAS_BOUND}",
    )
    max_replicas: int = Field(
        ...,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Most replicas the HPA scales up to. {_REPLICAS_BOUND}",
    )
    target_cpu_utilization_percentage: int | None = Field(
        None,
        alias="targetCPUUtilizationPercentage",
        ge=1,
        description="Average CPU utilization (percent of requests) to hold. Defaults to "
        "80 when no target is set. Needs resources.requests.cpu.",
    )
    target_memory_utilization_percentage: int | None = Field(
        None,
        ge=1,
        description="Average memory utilization (percent of requests) to hold. Needs "
        "resources.requests.memory.",
    )
    behavior: FreeForm | None = Field(
        None,
        description="Scale-up/scale-down behavior, as in HorizontalPodAutoscaler spec.behavior.",
    )


class Availability(Model):
    """A PodDisruptionBudget: how many pods voluntary disruptions (node drains) must
    leave. Set exactly one of minAvailable or maxUnavailable."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.minAvailable) != has(self.maxUnavailable)",
                    "availability: set exactly one of minAvailable or maxUnavailable",
                ),
            ]
        }
    )

    min_available: CountOrPercent | None = Field(
        None, description='Pods that must stay available, e.g. 2 or "50%" (0% to 100%).'
    )
    max_unavailable: CountOrPercent | None = Field(
        None, description='Pods that may be unavailable at once, e.g. 1 or "25%" (0% to 100%).'
    )


class CanaryStep(Model):
    """One step of a canary: how many pods of the new revision run next to the stable
    ones, and for how long their checks must keep passing before the next step."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.replicas) != has(self.percent)",
                    "strategy.canary.steps[]: set exactly one of replicas or percent",
                )
            ]
        }
    )

    replicas: int | None = Field(
        None, ge=1, le=MAX_REPLICAS, description="Canary pods in this step, e.g. 1."
    )
    percent: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Canary pods in this step as a percentage of the primary's desired "
        "replicas, rounded up (at least 1). The stable pods keep their full count, so the "
        "canary's share of the traffic is roughly canary / (stable + canary).",
    )
    pause_seconds: int = Field(
        60,
        ge=0,
        le=86_400,
        description="Seconds the step lasts, from its start; it moves on only once all its "
        "canary pods are ready and its checks pass. After the last step the revision is "
        "promoted.",
    )

    @model_validator(mode="after")
    def _one_size(self) -> CanaryStep:
        if (self.replicas is None) == (self.percent is None):
            raise ValueError("strategy.canary.steps[]: set exactly one of replicas or percent")
        return self


class Canary(Model):
    """Canary releases without a mesh: a new revision first runs as a few extra pods
    behind the same Service (traffic by replica share), advances step by step while
    its pods are healthy and its analysis checks pass, and is promoted (rolled out on
    the primary) after the last step; a failure removes the canary and quarantines the
    revision. The first release of a MicroService (no last known good yet) rolls out
    directly."""

    steps: list[CanaryStep] = Field(
        ..., min_length=1, max_length=20, description="The steps, in order."
    )


class Strategy(Model):
    """Rolling update parameters of the Deployment. maxSurge and maxUnavailable may not
    both be 0."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.maxSurge) || !has(self.maxUnavailable) || "
                    "!(string(self.maxSurge) in ['0', '0%'] && "
                    "string(self.maxUnavailable) in ['0', '0%'])",
                    "strategy.maxSurge and strategy.maxUnavailable must not both be 0 "
                    "(a rollout could never replace a pod)",
                ),
            ]
        }
    )

    max_surge: CountOrPercent = Field(
        "25%",
        description='Extra pods allowed above the desired count during a rollout, e.g. 1 or "25%".',
    )
    max_unavailable: CountOrPercent = Field(
        "25%", description='Pods allowed to be unavailable during a rollout, e.g. 0 or "25%".'
    )
    canary: Canary | None = Field(
        None,
        description="Release new revisions as a canary first (see Canary); none when unset. "
        "The rolling update parameters above apply to the promotion.",
    )

    @model_validator(mode="after")
    def _can_progress(self) -> Strategy:
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            raise ValueError(
                "strategy.maxSurge and strategy.maxUnavailable must not both be 0 "
                "(a rollout could never replace a pod)"
            )
        return self


class PodTemplate(Model):
    """Pod-level settings copied onto the pod template."""

    labels: Labels | None = Field(
        None,
        description=f"Extra pod labels (at most {MAX_LABELS}). The operator's own "
        f"({', '.join(RESERVED_LABELS)}, {RESERVED_LABEL_PREFIX}*) are refused: they "
        "select the pods of each track.",
    )
    annotations: StringMap | None = Field(None, description="Extra pod annotations.")
    node_selector: StringMap | None = Field(None, description="Node labels the pods require.")
    tolerations: list[FreeForm] | None = Field(None, description="Pod tolerations.")
    affinity: FreeForm | None = Field(None, description="Pod affinity/anti-affinity.")
    topology_spread_constraints: list[FreeForm] | None = Field(
        None,
        description="Topology spread constraints. Their labelSelector defaults to the "
        "pods of this track when left out.",
    )
    service_account_name: DnsSubdomain | None = Field(
        None, description="ServiceAccount the pods run as (an object name)."
    )
    image_pull_secrets: list[DnsSubdomain] | None = Field(
        None, description="Names of Secrets used to pull the image."
    )
    priority_class_name: DnsSubdomain | None = Field(
        None, description="PriorityClass of the pods (an object name)."
    )
    termination_grace_period_seconds: int | None = Field(
        None, ge=0, description="Seconds a pod gets to shut down."
    )


class SecurityContext(Model):
    """Secure container defaults; each can be relaxed when an image needs it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.runAsUser) || self.runAsUser != 0 || "
                    "(has(self.runAsNonRoot) && !self.runAsNonRoot)",
                    "securityContext.runAsUser 0 (root) contradicts runAsNonRoot: the "
                    "container would never start; set runAsNonRoot: false to run as root",
                    ".runAsUser",
                ),
            ]
        }
    )

    run_as_non_root: bool = Field(True, description="Refuse to start as UID 0.")
    run_as_user: int | None = Field(None, ge=0, description="UID to run as.")
    run_as_group: int | None = Field(None, ge=0, description="GID to run as.")
    fs_group: int | None = Field(None, ge=0, description="Group owning mounted volumes.")
    allow_privilege_escalation: bool = Field(
        False, description="Allow setuid binaries to gain privileges."
    )
    read_only_root_filesystem: bool = Field(
        False, description="Mount the root filesystem read-only."
    )
    drop_capabilities: list[str] = Field(
        default_factory=lambda: ["ALL"], description="Linux capabilities to drop."
    )
    add_capabilities: list[str] | None = Field(None, description="Linux capabilities to add.")
    seccomp_profile: Literal["RuntimeDefault", "Unconfined"] = Field(
        "RuntimeDefault", description="Seccomp profile type."
    )

    @model_validator(mode="after")
    def _root_needs_consent(self) -> SecurityContext:
        if self.run_as_user == 0 and self.run_as_non_root:
            raise ValueError(
                "securityContext.runAsUser 0 (root) contradicts runAsNonRoot: the "
                "container would never start; set runAsNonRoot: false to run as root"
            )
        return self


class Standby(Model):
    """A warm standby Deployment (<name>-standby) on the same pod template; the Service
    moves to it when the primary is unhealthy. It has its own PodDisruptionBudget
    (<name>-standby): spec.availability while it carries traffic (maxUnavailable 1
    without one), maxUnavailable 1 while idle. While it carries traffic the
    HorizontalPodAutoscaler (spec.autoscaling) scales the standby instead of the idle
    primary."""

    replicas: int = Field(
        1,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Replicas the standby keeps warm. {_REPLICAS_BOUND}",
    )
    node_selector: StringMap | None = Field(
        None, description="Standby placement override, e.g. another zone."
    )
    tolerations: list[FreeForm] | None = Field(None, description="Standby tolerations override.")
    affinity: FreeForm | None = Field(None, description="Standby affinity override.")
    topology_spread_constraints: list[FreeForm] | None = Field(
        None, description="Standby topology spread override."
    )


PLACEHOLDERS = ("namespace", "name", "track", "revision", "interval")
QUERY_PATTERN = "^([^{]|[{][^{]|[{][{] *(" + "|".join(PLACEHOLDERS) + ") *[}][}])*[{]?$"
"""A PromQL template whose every ``{{`` opens one of the placeholders."""

Query = Annotated[
    str,
    Field(min_length=1, max_length=4096),
    Check(
        cel_matches("self", QUERY_PATTERN),
        "must be PromQL whose placeholders are {{ namespace }}, {{ name }}, {{ track }}, "
        "{{ revision }} or {{ interval }}",
        _matches(QUERY_PATTERN),
    ),
]

CHECK_NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class AnalysisCheck(Model):
    """One service-level check: a PromQL query, run every intervalSeconds, whose single
    value is compared with a threshold."""

    name: str = Field(
        ...,
        max_length=63,
        pattern=CHECK_NAME_PATTERN,
        description="Name of the check (lowercase letters, digits and '-'), shown in "
        "Events, conditions and the mso_analysis_* metrics.",
    )
    query: Query = Field(
        ...,
        description="PromQL that yields one number, e.g. the error ratio of this "
        "revision's pods. Placeholders, replaced before each query: {{ namespace }}, "
        "{{ name }} (the MicroService's), {{ revision }} (the pods' mso.dev/revision "
        "label: select by it, canary pods carry the same track as the stable ones), "
        "{{ track }} (primary) and {{ interval }} (intervalSeconds as a PromQL duration, "
        "e.g. 30s). An empty result or NaN (no traffic) is inconclusive, not a failure; "
        "so is more than one series: aggregate with sum() or max().",
    )
    threshold: float = Field(..., description="The value the result is compared with.")
    fail_when: Literal["Above", "Below"] = Field(
        "Above",
        description="Above: the check fails when the value is above the threshold (error "
        "ratios, latencies). Below: when it is below (success rates, throughput).",
    )
    interval_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="Seconds between queries. Keep it at least twice the Prometheus scrape "
        "interval (rate() needs two samples); the first query runs one interval after the "
        "revision is first seen.",
    )
    failure_limit: int = Field(
        3,
        ge=1,
        le=100,
        description="Failures in a row after which a new revision is judged bad and "
        "rolled back (never before); a pass ends the run, a result without data neither "
        "counts nor ends it. A proven primary counts as sick from its first failure until "
        "a pass, and fails over after failoverAfterSeconds of that.",
    )
    success_limit: int = Field(
        1,
        ge=1,
        le=100,
        description="Consecutive passes a new revision needs, with all its pods ready, "
        "before it is proven (the last known good).",
    )


class Analysis(Model):
    """Health from what users feel: Prometheus checks that gate a new revision (rolled
    back after failureLimit failures) and make a sick primary fail over. The Prometheus
    address is the operator's --prometheus-url."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.checks.all(c, self.checks.exists_one(d, d.name == c.name))",
                    "failover.analysis.checks[].name must be unique",
                    ".checks",
                )
            ]
        }
    )

    checks: list[AnalysisCheck] = Field(
        ...,
        min_length=1,
        max_length=10,
        description="The checks; each must pass for a new revision to be proven.",
    )
    inconclusive_is_failure: bool = Field(
        False,
        description="Count an inconclusive result (Prometheus unreachable, a query error, "
        "no data) as a failure. Off by default: missing data never rolls back a release "
        "or moves traffic; it only delays proving a new revision, and the Analysis "
        "condition says why. On, a primary that gets no traffic (e.g. after a failover) "
        "has no data and cannot fail back on its own: use mso.dev/failback (judged on its "
        "pods).",
    )

    @model_validator(mode="after")
    def _unique(self) -> Analysis:
        if _duplicates([(c.name,) for c in self.checks]):
            raise ValueError("failover.analysis.checks[].name must be unique")
        return self


class Failover(Model):
    """Health-based failover: rollback of bad releases, warm standby, pod remediation."""

    rollback: bool = Field(
        True,
        description="Roll a release that does not become healthy back to the last known "
        "good revision.",
    )
    progress_deadline_seconds: int = Field(
        300,
        ge=10,
        description="Seconds a new revision has to become fully healthy before it is "
        "rolled back. Also the Deployment's progressDeadlineSeconds.",
    )
    unhealthy_threshold: int = Field(
        3,
        ge=1,
        description="Container restarts (crash loops) of a new revision's pod after which "
        "the revision is judged bad before its deadline.",
    )
    min_healthy_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Ready/desired ratio of the primary below which it counts as unhealthy.",
    )
    failover_after_seconds: int = Field(
        30,
        ge=0,
        description="Seconds the primary must stay unhealthy before traffic moves to the standby.",
    )
    failback_after_seconds: int = Field(
        120, ge=0, description="Seconds the primary must stay healthy before traffic moves back."
    )
    pod_unhealthy_seconds: int = Field(
        300,
        ge=0,
        description="Seconds a pod may stay NotReady before it is deleted and replaced. "
        "0 disables remediation.",
    )
    max_remediations_per_window: int = Field(
        1,
        ge=0,
        description="Most pods deleted per remediationWindowSeconds; 0 disables remediation.",
    )
    remediation_window_seconds: int = Field(
        300, ge=1, description="Window over which maxRemediationsPerWindow applies."
    )
    pod_startup_seconds: int = Field(
        0,
        ge=0,
        description="Seconds a pod has, from its creation, to become Ready before it counts "
        "against the ready ratio (minHealthyRatio), and pods a scale-up has not created yet "
        "do not count either: a scale-up, manual or by the HPA, of an app that starts "
        "slowly is then not an outage. Set it to the app's worst start-up time. 0 (the "
        "default) judges every pod at once. A pod that turns NotReady within this time of "
        "its creation is not counted either, so keep it no longer than needed.",
    )
    image_error_grace_seconds: int = Field(
        20,
        ge=0,
        description="Seconds a pod of a new revision may wait on an image or configuration "
        "error (ErrImagePull, ImagePullBackOff, InvalidImageName, "
        "CreateContainerConfigError, CreateContainerError) before the revision is rolled "
        "back, well before progressDeadlineSeconds: such a release never starts.",
    )
    remediate_single_replica: bool = Field(
        True,
        description="Also replace the pod of a single-replica service when it is stuck "
        "NotReady for podUnhealthySeconds (it serves nothing meanwhile; the budget "
        "maxRemediationsPerWindow still applies). With two or more replicas, stuck pods "
        "are replaced only while at least half are ready (more looks like a dependency "
        "outage). Set false when a restart costs more than waiting, e.g. a long warm-up.",
    )
    standby: Standby | None = Field(
        None,
        description="Warm standby; none when unset. Removing it while it carries traffic "
        "keeps traffic (and the standby) until the primary is healthy again.",
    )
    analysis: Analysis | None = Field(
        None,
        description="Service-level checks against Prometheus (error ratio, latency): a new "
        "revision must pass them to be proven and is rolled back when one fails "
        "failureLimit times in a row; a primary failing them for failoverAfterSeconds "
        "fails over to the standby. None when unset.",
    )


PROBE_KINDS = ("readiness", "liveness", "startup")
_DUPLICATE_SERVICE_PORT = "spec.ports[].servicePort must be unique per protocol"
_DUPLICATE_NODE_PORT = "spec.ports[].nodePort must be unique per protocol"
_NODE_PORT_NEEDS_TYPE = (
    "spec.ports[].nodePort needs spec.service.type NodePort or LoadBalancer "
    "(a ClusterIP or headless Service has no node ports)"
)


def _unknown_probe_port(kind: str) -> str:
    return f"spec.probes.{kind}.port must be a port number or the name of one of spec.ports"


def _probe_without_port(kind: str) -> str:
    return (
        f"spec.probes.{kind} has nothing to probe: set its port, its execCommand or "
        "spec.ports (or enabled: false)"
    )


def _duplicates(values: list[tuple[Any, ...]]) -> bool:
    return len(values) != len(set(values))


class MicroServiceSpec(Model):
    """Desired state of a MicroService."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.service) || !self.service.enabled || "
                    "(has(self.ports) && self.ports.exists(p, has(p.servicePort)))",
                    "a port with servicePort is required when spec.service is enabled "
                    "(set spec.ports[].servicePort, or spec.service.enabled: false)",
                    ".ports",
                ),
                cel(
                    "!has(self.ports) || "
                    "self.ports.all(p, self.ports.exists_one(q, q.name == p.name))",
                    "spec.ports[].name must be unique",
                    ".ports",
                ),
                cel(
                    "!has(self.ports) || self.ports.all(p, !has(p.servicePort) || "
                    "self.ports.exists_one(q, has(q.servicePort) && "
                    "q.servicePort == p.servicePort && q.protocol == p.protocol))",
                    _DUPLICATE_SERVICE_PORT,
                    ".ports",
                ),
                cel(
                    "!has(self.ports) || self.ports.all(p, !has(p.nodePort) || "
                    "self.ports.exists_one(q, has(q.nodePort) && "
                    "q.nodePort == p.nodePort && q.protocol == p.protocol))",
                    _DUPLICATE_NODE_PORT,
                    ".ports",
                ),
                cel(
                    "!has(self.ports) || !has(self.service) || !self.service.enabled || "
                    "self.service.type in ['NodePort', 'LoadBalancer'] || "
                    "self.ports.all(p, !has(p.nodePort))",
                    _NODE_PORT_NEEDS_TYPE,
                    ".ports",
                ),
                *(
                    rule
                    for kind in PROBE_KINDS
                    for rule in (
                        cel(
                            f"!has(self.probes) || !has(self.probes.{kind}) || "
                            f"!has(self.probes.{kind}.port) || "
                            f"type(self.probes.{kind}.port) == int || (has(self.ports) && "
                            f"self.ports.exists(p, p.name == self.probes.{kind}.port))",
                            _unknown_probe_port(kind),
                            f".probes.{kind}.port",
                        ),
                        cel(
                            f"!has(self.probes) || !has(self.probes.{kind}) || "
                            f"!self.probes.{kind}.enabled || "
                            f"has(self.probes.{kind}.execCommand) || "
                            f"has(self.probes.{kind}.port) || "
                            "(has(self.ports) && size(self.ports) > 0)",
                            _probe_without_port(kind),
                            f".probes.{kind}",
                        ),
                    )
                ),
            ]
        }
    )

    image: Image = Field(
        ...,
        min_length=1,
        max_length=1024,
        description="Container image, e.g. ghcr.io/acme/hello:1.2.3: "
        "[registry[:port]/]name[:tag][@sha256:digest].",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy; Kubernetes' default when unset."
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=MAX_REPLICAS,
        description="Desired pods. Ignored while spec.autoscaling is set (the HPA owns it). "
        "`kubectl scale ms/NAME` sets it. When unset, the Deployment keeps the count it "
        "has (1 for a new one): turning autoscaling off keeps the replicas the HPA had "
        f"reached instead of resetting them. {_REPLICAS_BOUND}",
    )
    command: list[str] | None = Field(None, description="Entrypoint override.")
    args: list[str] | None = Field(None, description="Arguments to the entrypoint.")
    env: list[EnvVar] | None = Field(None, description="Environment variables.")
    env_from: list[FreeForm] | None = Field(
        None, description="Sources of environment variables (configMapRef, secretRef)."
    )
    ports: list[Port] | None = Field(
        None,
        max_length=64,
        description="Ports the container listens on (at most 64).",
    )
    resources: Resources | None = Field(None, description="Container compute resources.")
    probes: Probes | None = Field(None, description="Health probes; defaulted from the first port.")
    service: ServiceSpec = Field(
        default_factory=ServiceSpec, description="The Service in front of the pods."
    )
    autoscaling: Autoscaling | None = Field(
        None, description="Horizontal pod autoscaling; none when unset."
    )
    availability: Availability | None = Field(
        None, description="PodDisruptionBudget; none when unset."
    )
    strategy: Strategy | None = Field(None, description="Rolling update strategy.")
    pod_template: PodTemplate | None = Field(None, description="Pod-level settings.")
    security_context: SecurityContext = Field(
        default_factory=SecurityContext,
        description="Container security settings; secure by default.",
    )
    failover: Failover = Field(
        default_factory=Failover, description="Health-based failover settings."
    )

    @model_validator(mode="after")
    def _cross_field(self) -> MicroServiceSpec:
        # The same rules as the CEL validations, for objects that bypass the API
        # server's admission (older CRD versions, tests, --validate=false).
        names = [p.name for p in self.ports or []]
        if len(names) != len(set(names)):
            raise ValueError("spec.ports[].name must be unique")
        if self.service.enabled and not any(p.service_port for p in self.ports or []):
            raise ValueError(
                "a port with servicePort is required when spec.service is enabled "
                "(set spec.ports[].servicePort, or spec.service.enabled: false)"
            )
        ports = self.ports or []
        if _duplicates([(p.service_port, p.protocol) for p in ports if p.service_port]):
            raise ValueError(_DUPLICATE_SERVICE_PORT)
        if _duplicates([(p.node_port, p.protocol) for p in ports if p.node_port]):
            raise ValueError(_DUPLICATE_NODE_PORT)
        if (
            self.service.enabled
            and self.service.type not in ("NodePort", "LoadBalancer")
            and any(p.node_port is not None for p in ports)
        ):
            raise ValueError(_NODE_PORT_NEEDS_TYPE)
        probes = self.probes or Probes()
        for kind in PROBE_KINDS:
            probe: Probe | None = getattr(probes, kind)
            if probe is None:
                continue
            if isinstance(probe.port, str) and probe.port not in names:
                raise ValueError(_unknown_probe_port(kind))
            if probe.enabled and not probe.exec_command and probe.port is None and not ports:
                raise ValueError(_probe_without_port(kind))
        a = self.autoscaling
        if a is not None and a.min_replicas > a.max_replicas:
            raise ValueError(
                "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
            )
        av = self.availability
        if av is not None and (av.min_available is None) == (av.max_unavailable is None):
            raise ValueError("availability: set exactly one of minAvailable or maxUnavailable")
        return self


# --------------------------------------------------------------------------- status

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A metav1.Condition."""

    type: str = Field(..., description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    reason: str = Field(..., description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable details.")
    observed_generation: int | None = Field(
        None, description="spec generation the condition was computed from."
    )
    last_transition_time: str = Field(..., description="When status last changed (RFC 3339).")


class RevisionRecord(Model):
    """A pod-template revision and what is needed to render it again."""

    revision: str = Field(
        ...,
        description="Revision: a hash of the spec fields that shape the pod "
        "(see status.desiredRevision).",
    )
    image: str = Field(..., description="Image of that revision.")
    spec: FreeForm = Field(
        ...,
        description="The MicroService spec of that revision, as applied; used to render "
        "the Deployment again on rollback.",
    )


class RevisionRef(Model):
    """A revision as status reports it (the record itself is a ControllerRevision)."""

    revision: str = Field(
        ...,
        description="Revision: a hash of the spec fields that shape the pod "
        "(see status.desiredRevision).",
    )
    image: str = Field(..., description="Image of that revision.")


class QuarantineRecord(Model):
    """A revision judged bad; not applied again until the spec changes."""

    revision: str = Field(
        ...,
        description="Revision: a hash of the spec fields that shape the pod "
        "(see status.desiredRevision).",
    )
    image: str = Field(..., description="Image of that revision.")
    reason: str = Field(..., description="Why it was judged bad (e.g. ProgressDeadlineExceeded).")
    message: str = Field("", description="Details.")
    time: str = Field(..., description="When it was quarantined (RFC 3339).")
    generation: int = Field(..., description="spec generation that produced it.")


class FailoverEvent(Model):
    """The last traffic switch between tracks."""

    time: str = Field(..., description="When traffic moved (RFC 3339).")
    from_track: str = Field(..., description="Track traffic moved from.")
    to_track: str = Field(..., description="Track traffic moved to.")
    reason: str = Field(..., description="Why.")


class FailoverState(Model):
    """Timers and budgets the failover decisions need; kept in status so they survive an
    operator restart."""

    revision_since: str | None = Field(
        None, description="When the current revision was first applied (RFC 3339)."
    )
    attempt_since: str | None = Field(
        None,
        description="When a retried revision's new attempt began (mso.dev/retry): its "
        "pods created earlier belong to the failed attempt and are not judged again.",
    )
    unhealthy_since: str | None = Field(
        None, description="Since when the primary has been below minHealthyRatio."
    )
    healthy_since: str | None = Field(
        None, description="Since when the primary has been at or above minHealthyRatio."
    )
    remediations: list[str] | None = Field(
        None, description="Times of recent pod remediations (RFC 3339), for the budget."
    )
    canary_revision: str | None = Field(
        None, description="Revision the canary steps below are about."
    )
    canary_step: int | None = Field(
        None,
        description="Index of the canary's current step (0 = the first); the number of "
        "steps once promoted.",
    )
    canary_step_since: str | None = Field(
        None, description="When the current canary step began (RFC 3339)."
    )


class CanaryStatus(Model):
    """Where a canary release stands (report only; the state is in failoverState)."""

    revision: str = Field(..., description="Revision released as a canary.")
    step: str = Field(..., description='Current step of all, e.g. "2/3".')
    replicas: int = Field(..., description="Canary pods wanted in this step.")
    ready_replicas: int = Field(0, description="Canary pods ready.")
    since: str = Field(..., description="When this step began (RFC 3339).")
    message: str = Field("", description="What the canary waits for.")


class AnalysisResult(Model):
    """The latest result of one check against one revision."""

    check: str = Field(..., description="Name of the check (spec.failover.analysis.checks).")
    track: str = Field(..., description="Track whose pods were queried: primary or standby.")
    revision: str = Field(..., description="Revision whose pods were queried.")
    outcome: Literal["Passed", "Failed", "Inconclusive"] = Field(
        ..., description="Passed, Failed, or Inconclusive (no data, or no answer)."
    )
    consecutive_failures: int = Field(0, description="Failures in a row (up to failureLimit).")
    since: str = Field(..., description="Since when the check has had this outcome (RFC 3339).")
    message: str = Field("", description="The value and threshold, or why it is inconclusive.")


Phase = Literal["Pending", "Progressing", "Running", "Degraded", "FailedOver", "Invalid"]
Track = Literal["primary", "standby"]


class MicroServiceStatus(Model):
    """Observed state of a MicroService."""

    observed_generation: int | None = Field(
        None, description="spec generation last reconciled successfully."
    )
    replicas: int | None = Field(None, description="Pods of the primary track.")
    ready_replicas: int | None = Field(None, description="Ready pods of the primary track.")
    available_replicas: int | None = Field(None, description="Available pods of the primary.")
    updated_replicas: int | None = Field(None, description="Pods on the current template.")
    standby_ready_replicas: int | None = Field(None, description="Ready pods of the standby.")
    selector: str | None = Field(
        None, description="Label selector of the pods (for the scale subresource and HPA)."
    )
    phase: Phase | None = Field(None, description="One-word summary for `kubectl get`.")
    ready: str | None = Field(None, description='"ready/desired", for `kubectl get`.')
    active_track: Track | None = Field(
        None, description="Track the Service sends traffic to: primary or standby."
    )
    current_revision: str | None = Field(
        None,
        description="Revision the primary Deployment runs (its pod template's mso.dev/revision).",
    )
    desired_revision: str | None = Field(
        None,
        description="Revision the spec asks for (differs after a rollback): a hash of the "
        "normalised spec fields that shape the pod (image, command, args, env, container "
        "ports, resources, probes, podTemplate, securityContext), independent of the "
        "operator's version.",
    )
    last_known_good_revision: str | None = Field(
        None, description="Last revision that reached full health."
    )
    last_known_good: RevisionRef | None = Field(
        None,
        description="The last known good revision (report only: the record the operator "
        "renders from is the ControllerRevision <name>-good-<revision>).",
    )
    quarantined_revision: str | None = Field(
        None, description="Revision rolled back and not retried until the spec changes."
    )
    quarantine: QuarantineRecord | None = Field(
        None,
        description="Details of the quarantine (report only: the record is the "
        "ControllerRevision <name>-bad-<revision>).",
    )
    last_failover: FailoverEvent | None = Field(None, description="The last traffic switch.")
    failover_state: FailoverState | None = Field(
        None, description="Internal timers of the failover logic."
    )
    canary: CanaryStatus | None = Field(
        None, description="The canary release in progress (spec.strategy.canary); none when none."
    )
    analysis: list[AnalysisResult] | None = Field(
        None,
        description="The checks of spec.failover.analysis: latest outcome per check for "
        "the revision being judged (kept by the running operator; a restarted one starts "
        "counting afresh, which can only delay a rollback).",
    )
    conditions: list[Condition] | None = Field(
        None,
        description="Ready, Progressing, Degraded, FailedOver, RolledBack, Reconciling, "
        "Stalled, Analysis.",
    )


class MicroService(Model):
    """A microservice kept alive: Deployment, Service, HPA, PodDisruptionBudget and
    health-based failover, from one resource."""

    model_config = ConfigDict(extra="ignore")  # apiVersion/kind/metadata handled by kopf

    spec: MicroServiceSpec
    status: MicroServiceStatus | None = None
