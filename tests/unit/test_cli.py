"""Unit tests of ``kubectl mso`` (cli.py): the pure view, argument parsing and the
merge patches each verb sends. The API server is replaced by plain dicts and a fake
CustomObjectsApi; tests/integration/test_cli.py runs the real script."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from microservice_operator import cli

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
UID = "11111111-2222-3333-4444-555555555555"
GOOD_REV = "aaaaaaaaa1"
BAD_REV = "bbbbbbbbb2"


def ts(seconds_ago: int) -> str:
    return datetime.fromtimestamp(NOW.timestamp() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owner_refs(uid: str = UID) -> list[dict[str, Any]]:
    return [{"kind": "MicroService", "name": "shop", "uid": uid, "controller": True}]


def microservice(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mso.dev/v1alpha1",
        "kind": "MicroService",
        "metadata": {
            "name": "shop",
            "namespace": "prod",
            "uid": UID,
            "generation": 2,
            "annotations": {},
        },
        "spec": {"image": "shop:2.0", "replicas": 3},
        "status": {"observedGeneration": 2, **status},
    }


def deployment(
    name: str, track: str, revision: str, image: str, ready: int, replicas: int
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"mso.dev/track": track}},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"annotations": {"mso.dev/revision": revision}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "availableReplicas": ready,
        },
    }


def service(track: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop"},
        "spec": {
            "selector": {"app.kubernetes.io/instance": "shop", "mso.dev/track": track},
        },
    }


def pod(
    name: str,
    track: str,
    revision: str,
    *,
    ready: bool = True,
    restarts: int = 0,
    waiting: str | None = None,
    created: int = 600,
) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/instance": "shop", "mso.dev/track": track},
            "annotations": {"mso.dev/revision": revision},
            "creationTimestamp": ts(created),
        },
        "spec": {"containers": [{"name": "app"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "ready": ready, "restartCount": restarts, "state": state}
            ],
        },
    }


def good_record(uid: str = UID) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"shop-good-{GOOD_REV}",
            "labels": {"mso.dev/history": "last-known-good", "mso.dev/revision": GOOD_REV},
            "ownerReferences": owner_refs(uid),
            "resourceVersion": "10",
        },
        "revision": 1,
        "data": {"revision": GOOD_REV, "image": "shop:1.0", "spec": {"image": "shop:1.0"}},
    }


def bad_record(uid: str = UID) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"shop-bad-{BAD_REV}",
            "labels": {"mso.dev/history": "quarantined", "mso.dev/revision": BAD_REV},
            "ownerReferences": owner_refs(uid),
            "resourceVersion": "11",
        },
        "revision": 2,
        "data": {
            "revision": BAD_REV,
            "image": "shop:2.0",
            "reason": "CrashLooping",
            "message": "pod shop-x restarted 3 times\nin a row",
            "time": ts(300),
            "generation": 2,
        },
    }


def failed_over() -> cli.Snapshot:
    ms = microservice(
        phase="FailedOver",
        ready="1/3",
        activeTrack="standby",
        desiredRevision=BAD_REV,
        currentRevision=GOOD_REV,
        lastKnownGoodRevision=GOOD_REV,
        quarantinedRevision=BAD_REV,
        conditions=[
            {
                "type": "Ready",
                "status": "False",
                "reason": "PrimaryUnhealthy",
                "message": "1/3 ready;\n traffic on the standby",
                "lastTransitionTime": ts(90),
            },
            {
                "type": "FailedOver",
                "status": "True",
                "reason": "PrimaryUnhealthy",
                "message": "traffic moved to the standby",
                "lastTransitionTime": ts(90),
            },
        ],
    )
    ms["metadata"]["annotations"] = {
        "mso.dev/paused": "true",
        "mso.dev/failback": "now",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
    }
    return cli.Snapshot(
        ms=ms,
        primary=deployment("shop", "primary", GOOD_REV, "shop:1.0", ready=1, replicas=3),
        standby=deployment("shop-standby", "standby", GOOD_REV, "shop:1.0", ready=2, replicas=2),
        service=service("standby"),
        hpa={
            "metadata": {"name": "shop"},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "shop"},
                "minReplicas": 2,
                "maxReplicas": 10,
            },
            "status": {"currentReplicas": 3, "desiredReplicas": 4},
        },
        pdbs=[
            {
                "metadata": {"name": "shop"},
                "spec": {"minAvailable": 1},
                "status": {
                    "currentHealthy": 1,
                    "desiredHealthy": 1,
                    "expectedPods": 3,
                    "disruptionsAllowed": 0,
                },
            }
        ],
        pods=[
            pod("shop-standby-b", "standby", GOOD_REV),
            pod("shop-a", "primary", GOOD_REV),
            pod("shop-c", "primary", GOOD_REV, ready=False, restarts=7, waiting="CrashLoopBackOff"),
            pod("shop-standby-a", "standby", GOOD_REV, created=30),
        ],
        revisions=[good_record(), bad_record()],
    )


def line(text: str, start: str) -> str:
    """The one line of ``text`` that starts with ``start`` (section rows: two spaces)."""
    found = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


# --------------------------------------------------------------------------- view


def test_view_of_a_failed_over_microservice_with_quarantine() -> None:
    text = cli.render_view(failed_over(), NOW)

    assert line(text, "MicroService").split() == ["MicroService", "prod/shop"]
    assert line(text, "Phase").split() == ["Phase", "FailedOver"]
    assert line(text, "Ready").split() == ["Ready", "1/3"]
    assert "shop:2.0 (primary runs shop:1.0)" in line(text, "Image")
    assert "standby (Service shop selects mso.dev/track=standby)" in line(text, "Traffic")
    assert "yes (mso.dev/paused=true)" in line(text, "Paused")
    assert line(text, "Pending").split() == ["Pending", "mso.dev/failback=now"]

    assert line(text, "  desired").split() == ["desired", BAD_REV]
    assert line(text, "  current (running)").split()[-1] == GOOD_REV
    assert line(text, "  last known good").split()[-2:] == [GOOD_REV, "shop:1.0"]
    quarantined = line(text, "  quarantined")
    for part in (BAD_REV, "shop:2.0", "CrashLooping", "pod shop-x restarted 3 times in a row"):
        assert part in quarantined
    assert "(5m ago)" in quarantined

    primary = line(text, "  primary ")
    assert primary.split() == ["primary", "shop", "1/3", "3", "1", GOOD_REV, "shop:1.0"]
    standby = line(text, "  standby ")
    assert standby.split()[:3] == ["standby", "shop-standby", "2/2"]
    assert standby.endswith("<- traffic")

    hpa = line(text, "HPA")
    assert "shop -> Deployment/shop" in hpa
    assert "current 3, min 2, max 10 (desired 4)" in hpa
    assert "shop: minAvailable 1" in line(text, "PDB")
    assert "0 disruptions allowed" in line(text, "PDB")

    ready = line(text, "  Ready ").split()  # the condition row
    assert ready[:4] == ["Ready", "False", "PrimaryUnhealthy", "90s"]
    assert "1/3 ready; traffic on the standby" in line(text, "  Ready ")
    assert line(text, "  FailedOver ").split()[:3] == ["FailedOver", "True", "PrimaryUnhealthy"]

    pods = text.split("\nPods\n", 1)[1].splitlines()
    assert pods[0].split() == [
        "NAME",
        "TRACK",
        "PHASE",
        "READY",
        "RESTARTS",
        "WAITING",
        "AGE",
        "REVISION",
    ]
    names = [row.split()[0] for row in pods[1:] if row.strip()]
    assert names == ["shop-a", "shop-c", "shop-standby-a", "shop-standby-b"]
    assert line(text, "  shop-c").split() == [
        "shop-c",
        "primary",
        "Running",
        "0/1",
        "7",
        "CrashLoopBackOff",
        "10m",
        GOOD_REV,
    ]
    assert line(text, "  shop-standby-a").split()[-2:] == ["30s", GOOD_REV]
    assert "Warnings" not in text


def test_view_of_a_healthy_microservice() -> None:
    ms = microservice(
        phase="Running",
        ready="3/3",
        activeTrack="primary",
        desiredRevision=GOOD_REV,
        currentRevision=GOOD_REV,
        lastKnownGoodRevision=GOOD_REV,
        conditions=[
            {
                "type": "Ready",
                "status": "True",
                "reason": "Available",
                "message": "3/3 ready",
                "lastTransitionTime": ts(4000),
            }
        ],
    )
    ms["spec"]["image"] = "shop:1.0"
    snap = cli.Snapshot(
        ms=ms,
        primary=deployment("shop", "primary", GOOD_REV, "shop:1.0", ready=3, replicas=3),
        service=service("primary"),
        pods=[pod(f"shop-{i}", "primary", GOOD_REV, created=3 * 86400) for i in range(3)],
        revisions=[good_record()],
    )
    text = cli.render_view(snap, NOW)

    assert line(text, "Phase").split() == ["Phase", "Running"]
    assert line(text, "Image").split() == ["Image", "shop:1.0"]
    assert line(text, "Traffic").split()[1] == "primary"
    assert line(text, "Paused").split() == ["Paused", "no"]
    assert line(text, "Pending").split() == ["Pending", "none"]
    assert line(text, "  quarantined").split() == ["quarantined", "none"]
    assert line(text, "  last known good").split()[-2:] == [GOOD_REV, "shop:1.0"]
    assert line(text, "  primary ").endswith("<- traffic")
    assert line(text, "  standby ").split()[:2] == ["standby", "shop-standby"]
    assert "(none)" in line(text, "  standby ")
    assert line(text, "HPA").split() == ["HPA", "none"]
    assert line(text, "PDB").split() == ["PDB", "none"]
    assert line(text, "  Ready ").split()[:4] == ["Ready", "True", "Available", "66m"]
    assert line(text, "  shop-0").split()[-2:] == ["3d", GOOD_REV]


def test_view_without_service_and_without_status() -> None:
    ms = microservice()
    ms["status"] = {}
    ms["metadata"]["generation"] = 1
    text = cli.render_view(cli.Snapshot(ms=ms, warnings=["cannot read Pods: forbidden"]), NOW)

    assert line(text, "Traffic").split() == ["Traffic", "no", "Service"]
    assert line(text, "Phase").split() == ["Phase", "-"]
    assert line(text, "Ready").split() == ["Ready", "-"]
    assert line(text, "  desired").split() == ["desired", "-"]
    assert line(text, "  last known good").split() == ["last", "known", "good", "none"]
    assert "none reported yet" in text
    assert "(none)" in line(text, "  primary ")
    assert text.rstrip().endswith("cannot read Pods: forbidden")


def test_view_falls_back_to_status_and_ignores_records_of_another_owner() -> None:
    snap = failed_over()
    foreign = "99999999-0000-0000-0000-000000000000"
    snap = cli.Snapshot(
        ms=snap.ms,
        service=None,
        revisions=[good_record(foreign), bad_record(foreign)],
    )
    text = cli.render_view(snap, NOW)
    assert "no Service (status says standby)" in line(text, "Traffic")
    assert f"{GOOD_REV}  (status only, no record)" in line(text, "  last known good")
    assert f"{BAD_REV}  (status only, no record)" in line(text, "  quarantined")


def test_view_notes_a_service_status_disagreement_and_generation_lag() -> None:
    snap = failed_over()
    snap.ms["status"]["activeTrack"] = "primary"
    snap.ms["status"]["observedGeneration"] = 1
    text = cli.render_view(snap, NOW)
    assert "status says primary" in line(text, "Traffic")
    assert "(observed generation 1, spec is at 2)" in line(text, "Phase")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0s"), (119, "119s"), (125, "2m5s"), (600, "10m"), (3 * 3600, "3h"), (50 * 3600, "2d2h")],
)
def test_age(seconds: int, expected: str) -> None:
    assert cli.age(ts(seconds), NOW) == expected
    assert cli.age(None, NOW) == "-"


def test_quarantined_revision_prefers_the_record() -> None:
    snap = failed_over()
    snap.ms["status"]["quarantinedRevision"] = "from-status"
    assert cli.quarantined_revision(snap.ms, snap.revisions) == BAD_REV
    assert cli.quarantined_revision(snap.ms, []) == "from-status"
    assert cli.quarantined_revision(microservice(), []) is None


# --------------------------------------------------------------------------- arguments


def test_parse_get_with_watch() -> None:
    args = cli.parse_args(["get", "shop", "-n", "prod", "--watch", "--interval", "0.5"])
    assert (args.command, args.name, args.namespace, args.watch, args.interval) == (
        "get",
        "shop",
        "prod",
        True,
        0.5,
    )
    assert args.kubeconfig is None and args.context is None


def test_status_is_an_alias_of_get() -> None:
    args = cli.parse_args(["status", "shop"])
    assert (args.command, args.watch, args.interval, args.namespace) == ("get", False, 2.0, None)


def test_connection_flags_before_or_after_the_subcommand() -> None:
    before = cli.parse_args(["-n", "a", "--context", "c", "--kubeconfig", "k", "pause", "x"])
    assert (before.namespace, before.context, before.kubeconfig) == ("a", "c", "k")
    after = cli.parse_args(["pause", "x", "--namespace", "b"])
    assert (after.command, after.name, after.namespace) == ("pause", "x", "b")
    both = cli.parse_args(["-n", "a", "resume", "x", "-n", "b"])
    assert both.namespace == "b"


def test_parse_retry_and_verbs() -> None:
    assert cli.parse_args(["retry", "shop"]).revision is None
    assert cli.parse_args(["retry", "shop", "--revision", "abc"]).revision == "abc"
    for verb in ("pause", "resume", "failback"):
        args = cli.parse_args([verb, "shop"])
        assert (args.command, args.name) == (verb, "shop")


@pytest.mark.parametrize(
    "argv",
    [[], ["get"], ["get", "shop", "--interval", "0"], ["get", "shop", "--interval", "x"], ["nope"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert "usage: kubectl mso" in capsys.readouterr().err


# --------------------------------------------------------------------------- patches


def test_patch_bodies() -> None:
    assert cli.pause_patch() == {"metadata": {"annotations": {"mso.dev/paused": "true"}}}
    assert cli.resume_patch() == {"metadata": {"annotations": {"mso.dev/paused": None}}}
    assert cli.retry_patch("abc") == {"metadata": {"annotations": {"mso.dev/retry": "abc"}}}
    assert cli.failback_patch() == {"metadata": {"annotations": {"mso.dev/failback": "now"}}}


class FakeCustomObjects:
    """Records patch_namespaced_custom_object calls."""

    def __init__(self, status: int | None = None) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.status = status

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((args, kwargs))
        if self.status is not None:
            err = Exception("boom")
            err.status = self.status  # type: ignore[attr-defined]
            raise err
        return {}


def test_patch_is_a_merge_patch_of_the_microservice() -> None:
    fake = FakeCustomObjects()
    cli.patch_microservice(fake, "prod", "shop", cli.pause_patch())
    [(args, kwargs)] = fake.calls
    assert args == ("mso.dev", "v1alpha1", "prod", "microservices", "shop", cli.pause_patch())
    assert kwargs == {"_content_type": "application/merge-patch+json"}


def test_patch_of_a_missing_microservice_is_not_found() -> None:
    with pytest.raises(cli.NotFoundError, match='MicroService "shop" not found in namespace'):
        cli.patch_microservice(FakeCustomObjects(status=404), "prod", "shop", cli.pause_patch())


@pytest.mark.parametrize(
    ("argv", "patch", "said"),
    [
        (["pause", "shop"], cli.pause_patch(), "paused (mso.dev/paused=true)"),
        (["resume", "shop"], cli.resume_patch(), "resumed (mso.dev/paused removed)"),
        (["failback", "shop"], cli.failback_patch(), "failback requested"),
        (
            ["retry", "shop", "--revision", "abc"],
            cli.retry_patch("abc"),
            "retry of revision abc requested (mso.dev/retry=abc)",
        ),
    ],
)
def test_verbs_send_their_patch_and_say_so(
    argv: list[str], patch: dict[str, Any], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCustomObjects()
    monkeypatch.setattr("kubernetes.client.CustomObjectsApi", lambda _api: fake)
    out = io.StringIO()
    assert cli.cmd_verb(object(), "prod", cli.parse_args(argv), out) == 0
    [(args, kwargs)] = fake.calls
    assert args[2:] == ("prod", "microservices", "shop", patch)
    assert kwargs["_content_type"] == cli.MERGE_PATCH
    assert out.getvalue().startswith("microservices.mso.dev/shop ")
    assert said in out.getvalue()
    assert out.getvalue().count("\n") == 1


def test_retry_defaults_to_the_quarantined_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCustomObjects()
    monkeypatch.setattr("kubernetes.client.CustomObjectsApi", lambda _api: fake)
    monkeypatch.setattr(cli, "fetch", lambda *_: failed_over())
    out = io.StringIO()
    assert cli.cmd_verb(object(), "prod", cli.parse_args(["retry", "shop"]), out) == 0
    assert fake.calls[0][0][5] == cli.retry_patch(BAD_REV)
    assert f"mso.dev/retry={BAD_REV}" in out.getvalue()


def test_retry_without_quarantine_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCustomObjects()
    monkeypatch.setattr("kubernetes.client.CustomObjectsApi", lambda _api: fake)
    monkeypatch.setattr(cli, "fetch", lambda *_: cli.Snapshot(ms=microservice()))
    with pytest.raises(cli.CliError, match="nothing is quarantined"):
        cli.cmd_verb(object(), "prod", cli.parse_args(["retry", "shop"]), io.StringIO())
    assert fake.calls == []


# --------------------------------------------------------------------------- get/watch


def test_watch_redraws_until_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "fetch", lambda *_: failed_over())
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    out = io.StringIO()  # not a TTY: separators instead of clearing the screen
    args = cli.parse_args(["get", "shop", "--watch", "--interval", "0.25"])
    assert cli.cmd_get(object(), "prod", args, out, clock=lambda: NOW, sleep=sleep) == 0
    assert sleeps == [0.25, 0.25, 0.25]
    assert out.getvalue().count("\nPhase ") == 3
    assert out.getvalue().count("-" * 40) == 2
    assert cli.CLEAR_SCREEN not in out.getvalue()


def test_watch_clears_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "fetch", lambda *_: failed_over())

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def sleep(_seconds: float) -> None:
        raise KeyboardInterrupt

    out = Tty()
    args = cli.parse_args(["get", "shop", "-w"])
    assert cli.cmd_get(object(), "prod", args, out, clock=lambda: NOW, sleep=sleep) == 0
    assert out.getvalue().startswith(cli.CLEAR_SCREEN)


def test_main_reports_a_missing_microservice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Client:
        def close(self) -> None:
            pass

    def missing(*_: Any) -> cli.Snapshot:
        raise cli.NotFoundError("prod", "shop")

    monkeypatch.setattr(cli, "connect", lambda _args: (Client(), "prod"))
    monkeypatch.setattr(cli, "fetch", missing)
    assert cli.main(["get", "shop"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == 'error: MicroService "shop" not found in namespace "prod"\n'


def test_the_namespace_comes_from_the_context(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts:
- {name: with-ns, context: {cluster: c, user: u, namespace: team-a}}
- {name: without, context: {cluster: c, user: u}}
current-context: with-ns
"""
    )

    def namespace(*argv: str) -> str:
        args = cli.parse_args([*argv, "--kubeconfig", str(kubeconfig), "get", "x"])
        api_client, ns = cli.connect(args)
        api_client.close()
        return ns

    assert namespace() == "team-a"
    assert namespace("--context", "without") == "default"
    assert namespace("-n", "other") == "other"
    assert isinstance(cli.build_parser(), argparse.ArgumentParser)


def test_view_of_a_canary_release_and_its_analysis() -> None:
    ms = microservice(
        phase="Progressing",
        ready="3/3",
        activeTrack="primary",
        desiredRevision="bbbbbbbbbb",
        currentRevision=GOOD_REV,
        lastKnownGoodRevision=GOOD_REV,
        canary={
            "revision": "bbbbbbbbbb",
            "step": "1/3",
            "replicas": 1,
            "readyReplicas": 1,
            "since": ts(30),
            "message": "step 1/3, 1 canary pod: healthy; next step in 30s",
        },
        analysis=[
            {
                "check": "error-ratio",
                "track": "primary",
                "revision": "bbbbbbbbbb",
                "outcome": "Failed",
                "consecutiveFailures": 2,
                "since": ts(60),
                "message": "error-ratio = 0.3, above the threshold 0.01 (2/3 in a row)",
            }
        ],
    )
    canary_pod = pod("shop-canary-x", "primary", "bbbbbbbbbb")
    canary_pod["metadata"]["labels"]["mso.dev/canary"] = "true"
    snap = cli.Snapshot(
        ms=ms,
        primary=deployment("shop", "primary", GOOD_REV, "shop:1.0", ready=3, replicas=3),
        service=service("primary"),
        pods=[canary_pod],
        revisions=[good_record()],
    )
    text = cli.render_view(snap, NOW)
    assert line(text, "Canary step").startswith("Canary step 1/3: revision bbbbbbbbbb, 1/1 ready")
    row = line(text, "  error-ratio").split()
    assert row[:6] == ["error-ratio", "primary", "bbbbbbbbbb", "Failed", "2", "60s"]
    assert line(text, "  shop-canary-x").split()[1] == "canary"
