"""Reconcile plans from plain dicts and a fixed clock: what the operator would do."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from microservice_operator import diff, plan, render
from microservice_operator import status as status_mod
from microservice_operator.api import MicroServiceSpec

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
UID = "uid-1"


def ms(
    spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {"name": "shop", "namespace": "ns", "uid": UID, "generation": generation},
        "spec": spec,
        "status": status or {},
    }


HELLO = {"image": "hello:1", "replicas": 3, "ports": [{"containerPort": 5000, "servicePort": 80}]}


def live_of(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    """What the API server would hold after applying ``manifest`` (plus defaults)."""
    obj = copy.deepcopy(manifest)
    obj["metadata"]["uid"] = f"uid-{manifest['metadata']['name']}"
    obj["metadata"]["resourceVersion"] = "10"
    obj["metadata"]["managedFields"] = [
        {
            "manager": "microservice-operator",
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}}} if "replicas" in obj.get("spec", {}) else {},
        }
    ]
    if manifest["kind"] == "Deployment":
        obj["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a server default
        obj["metadata"]["generation"] = 1
    obj["status"] = status
    return obj


def ready_deployment(manifest: dict[str, Any], n: int) -> dict[str, Any]:
    return live_of(
        manifest,
        observedGeneration=1,
        replicas=n,
        readyReplicas=n,
        availableReplicas=n,
        updatedReplicas=n,
        conditions=[{"type": "Available", "status": "True"}],
    )


def pod(
    name: str,
    revision: str,
    *,
    ready: bool = True,
    restarts: int = 0,
    track: str = "primary",
    waiting: str | None = None,
    since: datetime = NOW - timedelta(minutes=10),
) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": {"app.kubernetes.io/instance": "shop", "mso.dev/track": track},
            "annotations": {"mso.dev/revision": revision},
            "creationTimestamp": plan.rfc3339(since),
        },
        "spec": {"nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": plan.rfc3339(since),
                }
            ],
            "containerStatuses": [
                {"name": "app", "ready": ready, "restartCount": restarts, "state": state}
            ],
        },
    }


def converged(spec: dict[str, Any]) -> tuple[dict[str, Any], plan.Observed]:
    """A MicroService and the children it would have after a first, successful reconcile."""
    obj = ms(spec)
    first = plan.plan(obj, plan.Observed(), NOW)
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in first.applies}
    model = MicroServiceSpec.model_validate(spec)
    rev = render.revision(model)
    n = spec.get("replicas", 1)
    dep = ready_deployment(by_kind[("Deployment", "shop")], n)
    observed = plan.Observed(
        deployment=dep,
        service=live_of(by_kind[("Service", "shop")]) if ("Service", "shop") in by_kind else None,
        hpa=live_of(by_kind[("HorizontalPodAutoscaler", "shop")])
        if ("HorizontalPodAutoscaler", "shop") in by_kind
        else None,
        pdb=live_of(by_kind[("PodDisruptionBudget", "shop")], disruptionsAllowed=1)
        if ("PodDisruptionBudget", "shop") in by_kind
        else None,
        pods=tuple(pod(f"shop-{i}", rev) for i in range(n)),
    )
    second = plan.plan(obj, observed, NOW)
    obj["status"] = second.status
    return obj, with_history(observed, second)


def with_history(observed: plan.Observed, p: plan.Plan) -> plan.Observed:
    """``observed`` after the plan's ControllerRevision writes."""
    gone = {name for name, _ in p.history_deletes}
    kept = [r for r in observed.revisions if r["metadata"]["name"] not in gone]
    created = [live_of(m) for m in p.history_applies]
    return plan.Observed(**{**observed.__dict__, "revisions": (*kept, *created)})


def test_first_reconcile_applies_deployment_and_service_and_reports_progressing() -> None:
    """The Deployment the plan creates is reported as rolling out at once: one status
    write for the create, not a "Pending" one and then a "Progressing" one."""
    p = plan.plan(ms(HELLO), plan.Observed(), NOW)
    assert sorted(m["kind"] for m in p.applies) == ["Deployment", "Service"]
    assert all(diff.APPLIED_HASH in m["metadata"]["annotations"] for m in p.applies)
    assert p.status["phase"] == "Progressing"
    assert p.status["ready"] == "0/3"
    assert p.status_changed
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RollingOut")
    dep = next(m for m in p.applies if m["kind"] == "Deployment")
    observed = plan.Observed(deployment=live_of(dep))
    obj = ms(HELLO)
    obj["status"] = p.status
    again = plan.plan(obj, observed, NOW + timedelta(seconds=1))
    assert not again.status_changed  # seeing the new Deployment is no change


def test_converged_microservice_plans_no_writes_and_no_status_change() -> None:
    obj, observed = converged(HELLO)
    p = plan.plan(obj, observed, NOW + timedelta(seconds=30))
    assert p.writes == 0
    assert not p.status_changed
    assert p.status["phase"] == "Running"
    assert p.status["ready"] == "3/3"
    assert p.status["lastKnownGoodRevision"] == p.status["currentRevision"]
    assert not p.events


def test_drift_on_an_owned_field_is_reapplied() -> None:
    obj, observed = converged(HELLO)
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    dep["metadata"]["resourceVersion"] = "11"  # every change is a new version
    dep["metadata"]["generation"] = 2  # and a spec change a new generation
    p = plan.plan(obj, plan.Observed(**{**observed.__dict__, "deployment": dep}), NOW)
    assert [m["kind"] for m in p.applies] == ["Deployment"]


def test_fields_added_by_others_are_not_drift() -> None:
    obj, observed = converged(HELLO)
    svc = copy.deepcopy(observed.service)
    assert svc is not None
    svc["metadata"]["annotations"]["other-tool/x"] = "1"
    svc["spec"]["clusterIP"] = "10.96.0.10"
    p = plan.plan(obj, plan.Observed(**{**observed.__dict__, "service": svc}), NOW)
    assert p.writes == 0


def test_enabling_autoscaling_hands_replicas_over_and_removing_it_deletes_the_hpa() -> None:
    obj, observed = converged(HELLO)
    obj["spec"] = {**HELLO, "autoscaling": {"maxReplicas": 5}}
    p = plan.plan(obj, observed, NOW)
    dep = next(m for m in p.applies if m["kind"] == "Deployment")
    assert "replicas" not in dep["spec"]
    assert p.handoffs == [observed.deployment]
    assert any(m["kind"] == "HorizontalPodAutoscaler" for m in p.applies)

    hpa = live_of(
        render.build_hpa(
            render.Owner("shop", "ns", UID), MicroServiceSpec.model_validate(obj["spec"])
        )
        or {}
    )
    obj["spec"] = HELLO
    p = plan.plan(obj, plan.Observed(**{**observed.__dict__, "hpa": hpa}), NOW)
    assert p.deletes == [("HorizontalPodAutoscaler", "shop", "uid-shop")]


def test_a_new_autoscaled_deployment_starts_at_min_replicas_for_the_hpa() -> None:
    """Created without spec.replicas (the HPA's field), it would run 1 pod until the
    HPA's first sync: the plan seeds minReplicas through the hand-off manager."""
    spec = {**HELLO, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}
    p = plan.plan(ms(spec), plan.Observed(), NOW)
    dep = next(m for m in p.applies if m["kind"] == "Deployment")
    assert "replicas" not in dep["spec"]
    assert p.seeds == {dep["metadata"]["name"]: 2}
    assert plan.plan(ms(HELLO), plan.Observed(), NOW).seeds == {}  # no HPA: replicas owned
    obj, observed = converged(HELLO)
    obj["spec"] = spec
    assert plan.plan(obj, observed, NOW).seeds == {}  # an existing one is handed over instead


def test_children_of_someone_else_are_never_deleted() -> None:
    obj, observed = converged(HELLO)
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "shop", "namespace": "ns", "uid": "x", "ownerReferences": []},
    }
    p = plan.plan(obj, plan.Observed(**{**observed.__dict__, "hpa": hpa}), NOW)
    assert p.deletes == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"image": "x", "service": {"enabled": False}, "replica": 3},
            "spec.replica: unknown field",
        ),
        (
            {
                "image": "x",
                "service": {"enabled": False},
                "env": [{"name": "A", "value": "1", "valueFrom": {}}],
            },
            "env A: set value or valueFrom, not both",
        ),
        (
            {"image": "x", "ports": [{"containerPort": 0, "servicePort": 80}]},
            "spec.ports[0].containerPort",
        ),
    ],
)
def test_invalid_spec_is_reported_once_and_touches_nothing(
    spec: dict[str, Any], message: str
) -> None:
    p = plan.plan(ms(spec), plan.Observed(), NOW)
    assert p.invalid and p.writes == 0
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert message in ready["message"]
    assert [e.reason for e in p.events] == ["InvalidSpec"]
    again = plan.plan(ms(spec, status=p.status), plan.Observed(), NOW + timedelta(minutes=1))
    assert again.events == [] and not again.status_changed


def test_crash_looping_release_rolls_back_to_last_known_good_once() -> None:
    obj, observed = converged(HELLO)
    good_rev = obj["status"]["lastKnownGoodRevision"]
    obj["spec"] = {**HELLO, "image": "hello:crashloop"}
    obj["metadata"]["generation"] = 2
    p = plan.plan(obj, observed, NOW)
    new_dep = next(m for m in p.applies if m["kind"] == "Deployment")
    bad_rev = new_dep["spec"]["template"]["metadata"]["annotations"]["mso.dev/revision"]
    assert bad_rev != good_rev
    obj["status"] = p.status
    # The new ReplicaSet's first pod crash loops past the threshold.
    dep = live_of(
        new_dep,
        observedGeneration=1,
        replicas=4,
        readyReplicas=3,
        availableReplicas=3,
        updatedReplicas=1,
    )
    pods = (
        *observed.pods,
        pod("shop-new", bad_rev, ready=False, restarts=3, waiting="CrashLoopBackOff"),
    )
    later = NOW + timedelta(seconds=40)
    p = plan.plan(
        obj, plan.Observed(**{**observed.__dict__, "deployment": dep, "pods": pods}), later
    )
    rolled = next(m for m in p.applies if m["kind"] == "Deployment")
    assert rolled["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:1"
    assert p.status["quarantinedRevision"] == bad_rev
    assert [e.reason for e in p.events] == ["RolledBack"]
    assert p.rollbacks == ["CrashLoop"]
    rb = next(c for c in p.status["conditions"] if c["type"] == "RolledBack")
    assert rb["status"] == "True"
    # The quarantine is recorded in a ControllerRevision, written before the rollback.
    assert [m["kind"] for m in p.history_applies] == ["ControllerRevision"]
    assert p.history_applies[0]["data"]["revision"] == bad_rev
    assert p.destructive == [f"rollback to {good_rev}"]
    observed = with_history(observed, p)
    # Next reconcile, still rolled back: no new Event, no retry of the bad revision.
    obj["status"] = p.status
    back = live_of(
        rolled,
        observedGeneration=1,
        replicas=3,
        readyReplicas=3,
        availableReplicas=3,
        updatedReplicas=3,
    )
    p2 = plan.plan(
        obj,
        plan.Observed(**{**observed.__dict__, "deployment": back}),
        later + timedelta(seconds=10),
    )
    assert p2.events == [] and p2.rollbacks == []
    assert all(
        m["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:1"
        for m in p2.applies
        if m["kind"] == "Deployment"
    )
    assert p2.status["phase"] == "Degraded"
    assert p2.status["quarantinedRevision"] == bad_rev


def test_first_ever_bad_release_is_degraded_without_rollback() -> None:
    spec = {**HELLO, "image": "hello:crashloop"}
    obj = ms(spec)
    first = plan.plan(obj, plan.Observed(), NOW)
    obj["status"] = first.status
    dep_m = next(m for m in first.applies if m["kind"] == "Deployment")
    rev = dep_m["spec"]["template"]["metadata"]["annotations"]["mso.dev/revision"]
    dep = live_of(dep_m, observedGeneration=1, replicas=3, readyReplicas=0, updatedReplicas=3)
    pods = tuple(
        pod(f"p{i}", rev, ready=False, restarts=5, waiting="CrashLoopBackOff") for i in range(3)
    )
    p = plan.plan(obj, plan.Observed(deployment=dep, pods=pods), NOW + timedelta(seconds=30))
    assert p.rollbacks == []
    assert all(
        m["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:crashloop"
        for m in p.applies
        if m["kind"] == "Deployment"
    )
    degraded = next(c for c in p.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert p.status["phase"] == "Degraded"
    assert "quarantinedRevision" not in p.status


def test_quantities_compare_by_value_only_under_resources() -> None:
    assert diff.is_subset({"resources": {"cpu": "0.5"}}, {"resources": {"cpu": "500m"}})
    assert diff.is_subset(
        {"resources": {"limits": {"memory": 1000000}}}, {"resources": {"limits": {"memory": "1M"}}}
    )
    assert not diff.is_subset({"resources": {"cpu": "1"}}, {"resources": {"cpu": "2"}})
    assert not diff.is_subset({"annotations": {"a": "1k"}}, {"annotations": {"a": "1000"}})
    assert not diff.is_subset([1, 2], [1])
    assert not diff.is_subset({"a": True}, {"a": 1})


def test_zero_values_match_fields_the_server_omits() -> None:
    assert diff.is_subset({"env": [{"name": "A", "value": ""}]}, {"env": [{"name": "A"}]})
    assert diff.is_subset({"initialDelaySeconds": 0, "x": [], "y": {}}, {})
    assert not diff.is_subset({"replicas": 2}, {})


def test_api_errors_replace_status_and_keep_observed_generation() -> None:
    obj, observed = converged(HELLO)
    obj["metadata"]["generation"] = 2
    p = plan.plan(obj, observed, NOW)
    failed = plan.plan_error(obj, p, "ApplyFailed", "quantities must match", NOW)
    assert failed.status["observedGeneration"] == 1
    ready = next(c for c in failed.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "ApplyFailed",
        "quantities must match",
    )
    assert [e.reason for e in failed.events] == ["ApplyFailed"]


def test_merge_patch_nulls_removed_fields_recursively() -> None:
    old = {"a": 1, "q": {"x": 1, "y": 2}, "gone": {"k": 1}, "list": [1, 2]}
    new = {"a": 1, "q": {"x": 1}, "list": [1]}
    assert diff.merge_patch(old, new) == {"gone": None, "q": {"y": None}, "list": [1]}
    assert diff.merge_patch(new, new) == {}


def test_unreadable_status_fields_are_dropped_one_by_one() -> None:
    status = status_mod.parse_status(
        {
            "quarantinedRevision": "abc",
            "activeTrack": "sideways",  # not a track
            "futureField": {"from": "a newer operator"},
            "phase": "Running",
        }
    )
    assert status.quarantined_revision == "abc"
    assert status.phase == "Running"
    assert status.active_track is None


def test_forged_failover_timers_are_ignored_not_trusted() -> None:
    """Someone (not the operator) wrote status.failoverState with an ancient
    unhealthySince: a sick primary must still wait failoverAfterSeconds."""
    spec = {**HELLO, "failover": {"standby": {"replicas": 1}, "failoverAfterSeconds": 30}}
    obj, observed = converged(spec)
    obj["status"]["failoverState"] = {"unhealthySince": "2000-01-01T00:00:00Z"}
    obj["metadata"]["managedFields"] = [
        {
            "manager": "kubectl-patch",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {"f:status": {"f:failoverState": {"f:unhealthySince": {}}}},
        }
    ]
    assert observed.deployment is not None
    dep = copy.deepcopy(observed.deployment)
    dep["status"].update(readyReplicas=0, availableReplicas=0)
    unready = tuple(
        {**p, "status": {**p["status"], "conditions": [{"type": "Ready", "status": "False"}]}}
        for p in observed.pods
    )
    sick = plan.Observed(**{**observed.__dict__, "deployment": dep, "pods": unready})
    p = plan.plan(obj, sick, NOW)
    assert p.destructive == []  # no traffic switch on the forged timer
    assert "StatusIgnored" in [e.reason for e in p.events]
    assert p.status["failoverState"]["unhealthySince"] == "2026-11-28T12:00:00Z"  # afresh
    # The same timer written by the operator itself is trusted.
    obj["metadata"]["managedFields"][0]["manager"] = "microservice-operator"
    p = plan.plan(obj, sick, NOW)
    assert "StatusIgnored" not in [e.reason for e in p.events]
    assert p.status["failoverState"]["unhealthySince"] == "2000-01-01T00:00:00Z"


def test_a_child_version_is_compared_field_by_field_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An object at one version never changes: its drift verdict is kept, and a new
    version (an edit) is compared again."""
    obj, observed = converged(HELLO)
    diff._COMPARED.clear()  # converged() planned already
    calls: list[Any] = []
    real = diff.is_subset
    monkeypatch.setattr(diff, "is_subset", lambda d, *a, **k: calls.append(d) or real(d, *a, **k))

    def specs_compared() -> int:
        return sum(1 for d in calls if isinstance(d, dict) and "template" in d)

    assert plan.plan(obj, observed, NOW).writes == 0
    assert specs_compared() == 1
    calls.clear()
    assert plan.plan(obj, observed, NOW).writes == 0
    assert calls and specs_compared() == 0  # same versions: the metadata only
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    dep["metadata"]["resourceVersion"] = "11"
    dep["metadata"]["generation"] = 2  # the API server raises it with every spec change
    edited = plan.plan(obj, plan.Observed(**{**observed.__dict__, "deployment": dep}), NOW)
    assert [m["kind"] for m in edited.applies] == ["Deployment"]


def test_a_deployment_status_update_compares_its_metadata_not_its_spec(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Deployment's status updates (new resourceVersion, same generation) are most
    of its versions during a rollout: its spec verdict holds for the generation, but
    its metadata, which can change without a new generation, is compared again."""
    obj, observed = converged(HELLO)
    assert plan.plan(obj, observed, NOW).writes == 0
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    dep["metadata"]["resourceVersion"] = "12"
    dep["status"] = {**dep["status"], "readyReplicas": 2}
    calls: list[Any] = []
    real = diff.is_subset
    monkeypatch.setattr(diff, "is_subset", lambda d, *a, **k: calls.append(d) or real(d, *a, **k))
    status_only = plan.Observed(**{**observed.__dict__, "deployment": dep})
    assert [m["kind"] for m in plan.plan(obj, status_only, NOW).applies] == []
    assert not any(isinstance(d, dict) and "template" in d for d in calls)  # spec unread
    # A label of ours removed: a new version of the same generation, and drift.
    dep = copy.deepcopy(dep)
    dep["metadata"]["resourceVersion"] = "13"
    del dep["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    relabelled = plan.Observed(**{**observed.__dict__, "deployment": dep})
    assert [m["kind"] for m in plan.plan(obj, relabelled, NOW).applies] == ["Deployment"]


def test_a_service_is_compared_again_at_each_version() -> None:
    """Kinds whose generation does not follow their spec are compared per version."""
    obj, observed = converged(HELLO)
    assert plan.plan(obj, observed, NOW).writes == 0
    svc = copy.deepcopy(observed.service)
    assert svc is not None
    svc["spec"]["ports"][0]["port"] = 1234
    svc["metadata"]["resourceVersion"] = "14"
    edited = plan.Observed(**{**observed.__dict__, "service": svc})
    assert [m["kind"] for m in plan.plan(obj, edited, NOW).applies] == ["Service"]


def test_a_new_microservice_of_zero_replicas_is_not_ready_before_its_deployment_exists() -> None:
    p = plan.plan(ms({**HELLO, "replicas": 0}), plan.Observed(), NOW)
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (p.status["phase"], ready["status"]) == ("Progressing", "False")


def test_a_scale_the_deployment_controller_has_not_observed_yet_keeps_a_proven_release_ready() -> (
    None
):
    """Under a loaded control plane the deployment controller can be seconds behind a
    scale: generation 2 (replicas 6) not observed, its status still about generation 1.
    The template is the proven revision and every pod runs it: Ready stays True while
    the new pods start (here 4 created 5 s ago, within podStartupSeconds)."""
    spec = {**HELLO, "replicas": 2, "failover": {"podStartupSeconds": 60, "minHealthyRatio": 0.6}}
    obj, observed = converged(spec)
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    scaled = {**spec, "replicas": 6}
    obj = {**obj, "spec": scaled, "metadata": {**obj["metadata"], "generation": 2}}
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    dep["spec"]["replicas"] = 6
    dep["metadata"]["generation"] = 2  # observedGeneration stays 1
    rev = obj["status"]["currentRevision"]
    young = NOW - timedelta(seconds=5)
    pods = (
        *observed.pods,
        *(pod(f"new-{i}", rev, ready=False, since=young) for i in range(4)),
    )
    p = plan.plan(obj, plan.Observed(**{**observed.__dict__, "deployment": dep, "pods": pods}), NOW)
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available"), ready


def test_a_stored_microservice_is_named_once_per_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconciles of an unchanged MicroService (its children changed) take the revision
    from its version instead of hashing the spec again; a new version names afresh."""
    hashed: list[str] = []
    real = plan._spec_key

    def counting(name: str, raw: Any) -> tuple[str, str]:
        hashed.append(name)
        return real(name, raw)

    monkeypatch.setattr(plan, "_spec_key", counting)
    obj = ms(HELLO)
    obj["metadata"]["uid"] = "uid-named-once"
    obj["metadata"]["resourceVersion"] = "41"
    first = plan.plan(obj, plan.Observed(), NOW).status
    plan.plan(obj, plan.Observed(), NOW)
    assert len(hashed) == 1
    changed = ms({**HELLO, "image": "hello:2"}, generation=2)
    changed["metadata"].update(uid="uid-named-once", resourceVersion="42")
    second = plan.plan(changed, plan.Observed(), NOW).status
    assert len(hashed) == 2
    assert first["currentRevision"] != second["currentRevision"]
    assert second["currentRevision"] == render.revision(
        MicroServiceSpec.model_validate(changed["spec"])
    )
