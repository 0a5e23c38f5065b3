"""Plans for standby cover, replica hand-back, upgrades and the operations verbs."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_plan import HELLO, NOW, UID, converged, live_of, ms, pod, ready_deployment

from microservice_operator import diff, history, plan, render
from microservice_operator.api import MicroServiceSpec
from microservice_operator.workqueue import Pacer

OWNER = render.Owner("shop", "ns", UID)
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


def fields_of(value: Any) -> dict[str, Any]:
    """The fieldsV1 set a server-side apply of ``value`` records (enough for tests)."""
    if isinstance(value, dict):
        return {f"f:{k}": fields_of(v) for k, v in value.items()}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(i, dict) and "name" in i for i in value)
    ):
        return {
            "k:" + json.dumps({"name": i["name"]}, separators=(",", ":")): {
                ".": {},
                **fields_of(i),
            }
            for i in value
        }
    return {}


def applied(manifest: dict[str, Any], **status: Any) -> dict[str, Any]:
    """``manifest`` as the API server holds it after our apply, with full managedFields."""
    obj = live_of(manifest, **status)
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "status")}
    obj["metadata"]["managedFields"] = [
        {"manager": "microservice-operator", "operation": "Apply", "fieldsV1": fields_of(body)}
    ]
    return obj


def with_(observed: plan.Observed, **changes: Any) -> plan.Observed:
    return plan.Observed(**{**observed.__dict__, **changes})


def annotated(obj: dict[str, Any], **annotations: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["annotations"] = {**out["metadata"].get("annotations", {}), **annotations}
    return out


# --------------------------------------------------------------------------- fieldsV1


def test_extract_takes_only_owned_fields_and_list_items_by_key() -> None:
    live = {
        "metadata": {"labels": {"a": "1", "theirs": "2"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "x:1", "terminationMessagePath": "/dev/t"},
                {"name": "sidecar", "image": "mesh:1"},
            ],
            "dnsPolicy": "ClusterFirst",
        },
    }
    fields = {
        "f:metadata": {"f:labels": {"f:a": {}}},
        "f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}, "f:name": {}, "f:image": {}}}},
    }
    assert diff.extract(live, fields) == {
        "metadata": {"labels": {"a": "1"}},
        "spec": {"containers": [{"name": "app", "image": "x:1"}]},
    }


def test_extract_set_items_and_whole_leaves() -> None:
    live = {"finalizers": ["a", "b"], "args": ["--x", "--y"]}
    fields = {"f:finalizers": {'v:"b"': {}}, "f:args": {}}
    assert diff.extract(live, fields) == {"finalizers": ["b"], "args": ["--x", "--y"]}


# --------------------------------------------------------------------------- revisions


def test_revision_is_the_intent_not_the_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = MicroServiceSpec.model_validate(HELLO)
    before = render.build_deployment(OWNER, spec, replicas=3)
    rev = render.revision(spec)
    # A new operator version renders the same spec differently.
    monkeypatch.setitem(render._PROBE_DEFAULTS, "readiness", {"periodSeconds": 7})
    after = render.build_deployment(OWNER, spec, replicas=3)
    assert render.revision(spec) == rev
    old_in, old_out = render.split_template_hash(
        before["metadata"]["annotations"][render.TEMPLATE_HASH_ANNOTATION]
    ) or ("", "")
    new_in, new_out = render.split_template_hash(
        after["metadata"]["annotations"][render.TEMPLATE_HASH_ANNOTATION]
    ) or ("", "")
    assert (old_in, old_in != "") == (new_in, True)
    assert old_out != new_out


def test_a_field_set_to_its_default_is_the_same_revision() -> None:
    explicit = {**HELLO, "securityContext": {"runAsNonRoot": True}, "imagePullPolicy": None}
    assert render.revision(MicroServiceSpec.model_validate(explicit)) == render.revision(
        MicroServiceSpec.model_validate(HELLO)
    )


@pytest.mark.parametrize(
    ("sample", "revision_01"),
    [("hello", "f37f84ce32"), ("hello-failover", "806fdca2b6"), ("hello-autoscaled", "62bf1d37f5")],
)
def test_legacy_revision_is_what_operator_01_called_the_samples(
    sample: str, revision_01: str
) -> None:
    doc = yaml.safe_load((SAMPLES / f"{sample}.yaml").read_text())
    spec = MicroServiceSpec.model_validate(doc["spec"])
    assert render.legacy_revision(spec, doc["metadata"]["name"]) == revision_01


def _stale(obj: dict[str, Any], observed: plan.Observed) -> plan.Observed:
    """``observed`` as an older operator version left it: same revision, the readiness
    probe rendered with another period (and so another template fingerprint)."""
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    probe = dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["periodSeconds"] = 9
    inputs, _ = render.split_template_hash(
        dep["metadata"]["annotations"][render.TEMPLATE_HASH_ANNOTATION]
    ) or ("", "")
    dep["metadata"]["annotations"][render.TEMPLATE_HASH_ANNOTATION] = f"{inputs}-0000000000"
    manifest = {k: v for k, v in dep.items() if k not in ("status",)}
    live = applied(manifest, **dep["status"])
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    live["metadata"]["resourceVersion"] = "11"  # every change is a new version
    return with_(observed, deployment=live)


def test_a_rendering_change_waits_for_its_turn_and_then_rolls_out() -> None:
    obj, observed = converged(HELLO)
    stale = _stale(obj, observed)
    held = plan.plan(obj, stale, NOW + timedelta(seconds=5), refresh=False)
    assert held.stale_templates == ["shop"]
    for m in held.applies:  # at most a metadata-only apply: the pods are left alone
        assert m["spec"]["template"] == diff.extract(
            stale.deployment["spec"]["template"],  # type: ignore[index]
            diff.owned_fields(stale.deployment)["f:spec"]["f:template"],  # type: ignore[arg-type]
        )
    assert not held.events
    turn = plan.plan(obj, stale, NOW + timedelta(seconds=5), refresh=True)
    dep = next(m for m in turn.applies if m["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] == 5
    assert [e.reason for e in turn.events] == ["TemplateRefreshed"]
    assert turn.status["phase"] == "Running"


def test_a_real_release_is_not_paced() -> None:
    obj, observed = converged(HELLO)
    obj["spec"] = {**HELLO, "image": "hello:2"}
    p = plan.plan(obj, _stale(obj, observed), NOW, refresh=False)
    assert p.stale_templates == []
    dep = next(m for m in p.applies if m["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:2"


def _as_operator_01(observed: plan.Observed, spec: MicroServiceSpec) -> plan.Observed:
    """The Deployment, pods and records as operator 0.1 named them."""
    legacy = render.legacy_revision(spec, "shop")
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    dep["metadata"]["annotations"].pop(render.TEMPLATE_HASH_ANNOTATION)
    dep["spec"]["template"]["metadata"]["annotations"][render.REVISION_ANNOTATION] = legacy
    live = applied({k: v for k, v in dep.items() if k != "status"}, **dep["status"])
    pods = tuple(pod(p["metadata"]["name"], legacy) for p in observed.pods)
    revisions = []
    for record in observed.revisions:
        old = copy.deepcopy(record)
        old["data"]["revision"] = legacy
        old["metadata"]["name"] = f"shop-good-{legacy}"
        revisions.append(old)
    return with_(observed, deployment=live, pods=pods, revisions=tuple(revisions))


def test_upgrade_from_01_keeps_pods_and_health_and_rekeys_records() -> None:
    obj, observed = converged(HELLO)
    spec = MicroServiceSpec.model_validate(HELLO)
    old = _as_operator_01(observed, spec)
    p = plan.plan(obj, old, NOW + timedelta(seconds=5), refresh=False)
    assert p.stale_templates == ["shop"]
    for m in p.applies:
        assert m["kind"] != "Deployment" or m["spec"]["template"]["metadata"]["annotations"][
            render.REVISION_ANNOTATION
        ] == render.legacy_revision(spec, "shop")
    assert p.status["phase"] == "Running"
    assert not p.destructive
    assert [m["metadata"]["name"] for m in p.history_applies] == [
        f"shop-good-{render.revision(spec)}"
    ]
    assert p.history_deletes[0][0] == f"shop-good-{render.legacy_revision(spec, 'shop')}"


def test_a_quarantine_of_operator_01_stays_in_force() -> None:
    spec = MicroServiceSpec.model_validate({**HELLO, "image": "hello:2"})
    legacy = render.legacy_revision(spec, "shop")
    bad = live_of(
        history.build_record(
            OWNER,
            "quarantined",
            legacy,
            2,
            {
                "revision": legacy,
                "image": "hello:2",
                "reason": "CrashLoop",
                "message": "m",
                "time": plan.rfc3339(NOW),
                "generation": 2,
            },
        )
    )
    obj, observed = converged(HELLO)
    obj["spec"] = {**HELLO, "image": "hello:2"}
    obj["metadata"]["generation"] = 2
    observed = with_(observed, revisions=(*observed.revisions, bad))
    p = plan.plan(obj, observed, NOW + timedelta(seconds=5))
    assert p.status["quarantinedRevision"] == render.revision(spec)
    assert all(
        m["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:1"
        for m in p.applies
        if m["kind"] == "Deployment"
    )


# --------------------------------------------------------------------------- replicas


def test_turning_autoscaling_off_keeps_the_count_the_hpa_reached() -> None:
    spec = {k: v for k, v in HELLO.items() if k != "replicas"}
    obj, observed = converged({**spec, "autoscaling": {"minReplicas": 8, "maxReplicas": 10}})
    dep = copy.deepcopy(observed.deployment)
    assert dep is not None
    dep["spec"]["replicas"] = 8  # the HPA's doing
    dep["metadata"]["managedFields"] = []
    obj["spec"] = spec
    p = plan.plan(obj, with_(observed, deployment=dep), NOW)
    applied_dep = next(m for m in p.applies if m["kind"] == "Deployment")
    assert applied_dep["spec"]["replicas"] == 8
    obj["spec"] = {**spec, "replicas": 2}  # unless the spec says otherwise
    p = plan.plan(obj, with_(observed, deployment=dep), NOW)
    assert next(m for m in p.applies if m["kind"] == "Deployment")["spec"]["replicas"] == 2


def test_a_new_microservice_without_replicas_gets_one() -> None:
    spec = {k: v for k, v in HELLO.items() if k != "replicas"}
    p = plan.plan(ms(spec), plan.Observed(), NOW)
    assert next(m for m in p.applies if m["kind"] == "Deployment")["spec"]["replicas"] == 1


# --------------------------------------------------------------------------- standby cover

FAILOVER = {
    **HELLO,
    "failover": {"standby": {"replicas": 1}, "failoverAfterSeconds": 0},
    "availability": {"minAvailable": 2},
}


def _failed_over(spec: dict[str, Any]) -> tuple[dict[str, Any], plan.Observed]:
    """A MicroService whose traffic is on its standby (3 ready standby pods, 0 of 3
    primary pods ready)."""
    obj, observed = converged(spec)
    model = MicroServiceSpec.model_validate(spec)
    standby = render.build_deployment(OWNER, model, track="standby", replicas=3)
    service = render.build_service(OWNER, model, active_track="standby")
    rev = render.revision(model)
    primary = copy.deepcopy(observed.deployment)
    assert primary is not None and service is not None
    primary["status"] |= {"readyReplicas": 0, "availableReplicas": 0}
    observed = with_(
        observed,
        deployment=primary,
        service=live_of(service),
        standby=ready_deployment(standby, 3),
        pods=(
            *(pod(f"shop-{i}", rev, ready=False) for i in range(3)),
            *(pod(f"shop-standby-{i}", rev, track="standby") for i in range(3)),
        ),
    )
    obj["status"] = {**obj["status"], "activeTrack": "standby"}
    return obj, observed


def _primary_healthy(observed: plan.Observed, spec: dict[str, Any]) -> plan.Observed:
    rev = render.revision(MicroServiceSpec.model_validate(spec))
    primary = copy.deepcopy(observed.deployment)
    assert primary is not None
    primary["status"] |= {"readyReplicas": 3, "availableReplicas": 3}
    return with_(
        observed,
        deployment=primary,
        pods=(
            *(pod(f"shop-{i}", rev) for i in range(3)),
            *(pod(f"shop-standby-{i}", rev, track="standby") for i in range(3)),
        ),
    )


def test_the_standby_has_its_own_budget_that_protects_it_while_it_serves() -> None:
    obj, observed = _failed_over(FAILOVER)
    p = plan.plan(obj, observed, NOW)
    pdbs = {m["metadata"]["name"]: m for m in p.applies if m["kind"] == "PodDisruptionBudget"}
    standby = pdbs["shop-standby"]["spec"]
    assert standby["minAvailable"] == 2
    assert standby["selector"]["matchLabels"]["mso.dev/track"] == "standby"
    idle = render.build_pdb(
        OWNER, MicroServiceSpec.model_validate(FAILOVER), "standby", carries_traffic=False
    )
    assert idle is not None and idle["spec"]["maxUnavailable"] == 1


def test_the_autoscaler_follows_traffic_to_the_standby() -> None:
    spec = {**FAILOVER, "autoscaling": {"minReplicas": 3, "maxReplicas": 9}}
    obj, observed = _failed_over(spec)
    p = plan.plan(obj, observed, NOW)
    hpa = next(m for m in p.applies if m["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shop-standby"
    standby = next(
        m
        for m in p.applies
        if m["metadata"]["name"] == "shop-standby" and m["kind"] == "Deployment"
    )
    assert "replicas" not in standby["spec"]
    assert p.handoffs == [observed.standby]  # a co-owner keeps the count until the HPA writes
    # The idle primary's HPA history can no longer shrink the standby.
    assert not any(d.startswith("standby scale-down") for d in p.destructive)


def test_removing_the_standby_keeps_traffic_on_it_until_the_primary_is_healthy() -> None:
    obj, observed = _failed_over(FAILOVER)
    obj["spec"] = {**FAILOVER, "failover": {"failoverAfterSeconds": 0}}
    p = plan.plan(obj, observed, NOW)
    assert p.deletes == []
    assert not [m for m in p.applies if m["metadata"]["name"] == "shop-standby"]
    svc = next((m for m in p.applies if m["kind"] == "Service"), None)
    assert svc is None or svc["spec"]["selector"]["mso.dev/track"] == "standby"
    failed_over = next(c for c in p.status["conditions"] if c["type"] == "FailedOver")
    assert (failed_over["status"], failed_over["reason"]) == ("True", "StandbyRemoved")
    # Once the primary is healthy: traffic back, then the standby goes.
    p = plan.plan(obj, _primary_healthy(observed, FAILOVER), NOW)
    svc = next(m for m in p.applies if m["kind"] == "Service")
    assert svc["spec"]["selector"]["mso.dev/track"] == "primary"
    assert ("Deployment", "shop-standby", "uid-shop-standby") in p.deletes


# --------------------------------------------------------------------------- verbs


def test_paused_touches_nothing_and_says_so() -> None:
    obj, observed = converged(HELLO)
    obj = annotated(obj, **{plan.PAUSED_ANNOTATION: "true"})
    obj["spec"] = {**HELLO, "image": "hello:2"}
    p = plan.plan(obj, observed, NOW)
    assert p.writes == 0
    paused = next(c for c in p.status["conditions"] if c["type"] == "Paused")
    assert paused["status"] == "True"
    assert [e.reason for e in p.events] == ["Paused"]
    obj["status"] = p.status
    obj["metadata"]["annotations"].pop(plan.PAUSED_ANNOTATION)
    resumed = plan.plan(obj, observed, NOW)
    assert any(m["kind"] == "Deployment" for m in resumed.applies)
    assert "Resumed" in [e.reason for e in resumed.events]
    cond = next(c for c in resumed.status["conditions"] if c["type"] == "Paused")
    assert cond["status"] == "False"


def _quarantined() -> tuple[dict[str, Any], plan.Observed, str]:
    """hello:2 rolled back to hello:1 (its quarantine recorded)."""
    obj, observed = converged(HELLO)
    bad_spec = MicroServiceSpec.model_validate({**HELLO, "image": "hello:2"})
    bad_rev = render.revision(bad_spec)
    record = live_of(
        history.build_record(
            OWNER,
            "quarantined",
            bad_rev,
            2,
            {
                "revision": bad_rev,
                "image": "hello:2",
                "reason": "CrashLoop",
                "message": "m",
                "time": plan.rfc3339(NOW),
                "generation": 2,
            },
        )
    )
    obj["spec"] = {**HELLO, "image": "hello:2"}
    obj["metadata"]["generation"] = 2
    return obj, with_(observed, revisions=(*observed.revisions, record)), bad_rev


def test_retry_lifts_the_quarantine_and_restarts_the_clock() -> None:
    obj, observed, bad_rev = _quarantined()
    assert plan.plan(obj, observed, NOW).status["quarantinedRevision"] == bad_rev
    asked = annotated(obj, **{plan.RETRY_ANNOTATION: bad_rev})
    p = plan.plan(asked, observed, NOW + timedelta(minutes=30))
    assert p.handled_annotations == [(plan.RETRY_ANNOTATION, bad_rev)]
    assert [n for n, _ in p.history_deletes] == [f"shop-bad-{bad_rev}"]
    dep = next(m for m in p.applies if m["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:2"
    assert "QuarantineLifted" in [e.reason for e in p.events]
    assert p.destructive  # confirmed against the live cluster first
    since = p.status["failoverState"]["revisionSince"]
    assert since.startswith(plan.rfc3339(NOW + timedelta(minutes=30))[:19])


def test_retry_of_a_revision_that_is_not_quarantined_is_refused() -> None:
    obj, observed = converged(HELLO)
    p = plan.plan(annotated(obj, **{plan.RETRY_ANNOTATION: "abc"}), observed, NOW)
    assert [e.reason for e in p.events] == ["RetryIgnored"]
    assert p.handled_annotations == [(plan.RETRY_ANNOTATION, "abc")]
    assert not p.history_deletes
    assert p.destructive  # dropping the request is confirmed live (the cache may lag)


def test_failback_now_when_the_primary_is_healthy() -> None:
    obj, observed = _failed_over(FAILOVER)
    healthy = _primary_healthy(observed, FAILOVER)
    stay = plan.plan(obj, healthy, NOW)
    assert "FailedBack" not in [e.reason for e in stay.events]  # waits failbackAfterSeconds
    asked = annotated(obj, **{plan.FAILBACK_ANNOTATION: "now"})
    p = plan.plan(asked, healthy, NOW)
    assert "FailedBack" in [e.reason for e in p.events]
    assert p.handled_annotations == [(plan.FAILBACK_ANNOTATION, "now")]
    refused = plan.plan(asked, observed, NOW)  # primary pods not ready
    assert "FailbackRefused" in [e.reason for e in refused.events]
    assert refused.destructive == ["refuse the failback request"]  # confirmed live first


# --------------------------------------------------------------------------- pacing


def test_pacer_grants_at_most_n_per_minute() -> None:
    pacer = Pacer(2)
    assert [pacer.take(t) for t in (0.0, 1.0, 2.0)] == [True, True, False]
    assert pacer.wait(2.0) == pytest.approx(58.0)
    assert pacer.take(60.5)
    assert Pacer(0).wait(0.0) is None
    assert not Pacer(0).take(0.0)


def test_a_retry_cut_short_after_lifting_the_quarantine_still_gets_a_fresh_deadline() -> None:
    """Killed after the quarantine record was deleted but before status was written:
    the stored revisionSince is an hour old, yet the retry is not judged overdue, because
    the clock never starts before the user's last write to the MicroService (here the
    annotation that asked for the retry)."""
    obj, observed, bad_rev = _quarantined()
    first = plan.plan(obj, observed, NOW)
    obj["status"] = first.status
    obj["status"]["failoverState"]["revisionSince"] = plan.rfc3339(NOW - timedelta(hours=1))
    asked_at = NOW + timedelta(minutes=30)
    obj = annotated(obj, **{plan.RETRY_ANNOTATION: bad_rev})
    obj["metadata"]["managedFields"] = [
        {"manager": "kubectl-annotate", "operation": "Update", "time": plan.rfc3339(asked_at)}
    ]
    lifted = with_(
        observed,
        revisions=tuple(
            r for r in observed.revisions if not r["metadata"]["name"].startswith("shop-bad-")
        ),
    )
    p = plan.plan(obj, lifted, asked_at + timedelta(seconds=5))
    assert "RolledBack" not in [e.reason for e in p.events]
    assert p.handled_annotations == [(plan.RETRY_ANNOTATION, bad_rev)]
    dep = next(m for m in p.applies if m["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "hello:2"


def test_a_retry_is_not_judged_by_the_failed_attempts_pods() -> None:
    """Retried right after the rollback: the failed attempt's crash-looping pods are
    still there (not yet terminating, or kept by the reused ReplicaSet). They must not
    roll the retry back at once; a pod of the new attempt that crash-loops does."""
    obj, observed, bad_rev = _quarantined()
    rolled_back = plan.plan(obj, observed, NOW)
    obj["status"] = rolled_back.status
    old_pods = tuple(
        pod(f"shop-old-{i}", bad_rev, ready=False, restarts=5, waiting="CrashLoopBackOff",
            since=NOW - timedelta(seconds=30))
        for i in range(3)
    )  # fmt: skip
    crashing = with_(observed, pods=old_pods)
    asked_at = NOW + timedelta(seconds=5)
    retry = plan.plan(annotated(obj, **{plan.RETRY_ANNOTATION: bad_rev}), crashing, asked_at)
    reasons = [e.reason for e in retry.events]
    assert "QuarantineLifted" in reasons and "RolledBack" not in reasons
    lifted = with_(
        crashing,
        revisions=tuple(
            r for r in crashing.revisions if not r["metadata"]["name"].startswith("shop-bad-")
        ),
    )
    obj["status"] = retry.status
    later = plan.plan(obj, lifted, asked_at + timedelta(seconds=3))
    assert "RolledBack" not in [e.reason for e in later.events]
    fresh = pod("shop-new", bad_rev, ready=False, restarts=5, waiting="CrashLoopBackOff",
                since=asked_at + timedelta(seconds=2))  # fmt: skip
    again = plan.plan(obj, with_(lifted, pods=(*old_pods, fresh)), asked_at + timedelta(seconds=4))
    assert "RolledBack" in [e.reason for e in again.events]


def test_a_retry_cut_short_is_still_not_judged_by_the_failed_attempts_pods() -> None:
    """Killed after the quarantine record was deleted but before status (with
    attemptSince) was written: the next reconcile finds no quarantine, yet the attempt
    began when the user asked, so the failed attempt's pods still do not count."""
    obj, observed, bad_rev = _quarantined()
    obj["status"] = plan.plan(obj, observed, NOW).status
    asked_at = NOW + timedelta(seconds=5)
    obj = annotated(obj, **{plan.RETRY_ANNOTATION: bad_rev})
    obj["metadata"]["managedFields"] = [
        {"manager": "kubectl-annotate", "operation": "Update", "time": plan.rfc3339(asked_at)}
    ]
    old_pods = tuple(
        pod(f"shop-old-{i}", bad_rev, ready=False, restarts=5, waiting="CrashLoopBackOff",
            since=NOW - timedelta(seconds=30))
        for i in range(3)
    )  # fmt: skip
    lifted = with_(
        observed,
        pods=old_pods,
        revisions=tuple(
            r for r in observed.revisions if not r["metadata"]["name"].startswith("shop-bad-")
        ),
    )
    p = plan.plan(obj, lifted, asked_at + timedelta(seconds=2))
    assert "RolledBack" not in [e.reason for e in p.events]
    assert p.status["failoverState"]["attemptSince"].startswith(plan.rfc3339(asked_at)[:19])
