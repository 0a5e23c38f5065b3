"""``kubectl mso`` (the kubectl-mso console script) against a real API server.

No operator is started here: the test writes a MicroService, its status and the
children the operator would own (Deployments of both tracks, the Service, the history
ControllerRevisions) directly, runs the installed script as a subprocess, and checks
what it prints and the annotations it leaves on the MicroService.

The suite's session operator may be running nonetheless (started by another test of
the session; it watches every namespace). So the MicroService of ``world`` is held
in deletion by a test finalizer, which every operator leaves alone, and is created
paused so that an operator which sees it before the deletion writes no child either.
Its status is written last, after its pods became ready, when no reconcile that began
before the deletion can still be writing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.fixtures import KubeCluster
from tests.integration.helpers import wait_for
from tests.integration.operator_fixtures import kubectl

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "mso.dev", "v1alpha1", "microservices"
GOOD_REV = "0a1b2c3d4e"
BAD_REV = "9f8e7d6c5b"
GOOD_IMAGE = "registry.example/shop:1.0"
HOLD = "mso.dev/test-cli-hold"
BAD_IMAGE = "registry.example/shop:2.0"


def script_dir() -> Path:
    """Where the console scripts of this environment are installed (.venv/bin)."""
    scripts = Path(sysconfig.get_path("scripts"))
    if (scripts / "kubectl-mso").exists():
        return scripts
    return Path(sys.executable).parent


SCRIPT = script_dir() / "kubectl-mso"
KUBECTL = script_dir() / "kubectl"


def run(
    kubeconfig: Path, *args: str, command: Path = SCRIPT, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [str(command), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class World:
    namespace: str
    name: str
    uid: str


def owner(world_name: str, uid: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MicroService",
            "name": world_name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def deployment(name: str, ms: str, uid: str, track: str, replicas: int) -> dict[str, Any]:
    selector = {"app.kubernetes.io/instance": ms, "mso.dev/track": track}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "labels": {**selector, "app.kubernetes.io/managed-by": "microservice-operator"},
            "ownerReferences": owner(ms, uid),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**selector, "app.kubernetes.io/name": ms},
                    "annotations": {"mso.dev/revision": GOOD_REV},
                },
                "spec": {"containers": [{"name": "app", "image": GOOD_IMAGE}]},
            },
        },
    }


def record(ms: str, uid: str, role: str, revision: str, data: dict[str, Any]) -> dict[str, Any]:
    short = "good" if role == "last-known-good" else "bad"
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": f"{ms}-{short}-{revision}",
            "labels": {
                "app.kubernetes.io/instance": ms,
                "app.kubernetes.io/name": ms,
                "app.kubernetes.io/managed-by": "microservice-operator",
                "mso.dev/history": role,
                "mso.dev/revision": revision,
            },
            "ownerReferences": owner(ms, uid),
        },
        "revision": 2,
        "data": data,
    }


def create_microservice(
    api: client.ApiClient, namespace: str, name: str, metadata: dict[str, Any] | None = None
) -> str:
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MicroService",
            "metadata": {"name": name, **(metadata or {})},
            "spec": {
                "image": BAD_IMAGE,
                "replicas": 2,
                "ports": [{"containerPort": 5000, "servicePort": 80}],
                "failover": {"standby": {"replicas": 1}},
            },
        },
    )
    uid: str = created["metadata"]["uid"]
    return uid


def failed_over_status(generation: int) -> dict[str, Any]:
    now = "2025-01-01T00:00:00Z"
    return {
        "status": {
            "observedGeneration": generation,
            "phase": "FailedOver",
            "ready": "2/2",
            "activeTrack": "standby",
            "desiredRevision": BAD_REV,
            "currentRevision": GOOD_REV,
            "lastKnownGoodRevision": GOOD_REV,
            "quarantinedRevision": BAD_REV,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "RolledBack",
                    "message": "serving the last known good revision",
                    "lastTransitionTime": now,
                },
                {
                    "type": "FailedOver",
                    "status": "True",
                    "reason": "PrimaryUnhealthy",
                    "message": "traffic on the standby",
                    "lastTransitionTime": now,
                },
            ],
        }
    }


def wait_pods_ready(api: client.ApiClient, world: World, count: int) -> None:
    core = client.CoreV1Api(api)

    def ready() -> bool:
        pods = core.list_namespaced_pod(
            world.namespace, label_selector=f"app.kubernetes.io/instance={world.name}"
        ).items
        statuses = [p.status.container_statuses for p in pods]
        return len(pods) == count and all(s and all(c.ready for c in s) for s in statuses)

    wait_for(ready, timeout=60, message=f"{count} ready pods of {world.name}")
    apps = client.AppsV1Api(api)

    def counted() -> bool:  # the deployment controller reports them a moment later
        deps = apps.list_namespaced_deployment(world.namespace).items
        return sum(d.status.ready_replicas or 0 for d in deps) == count

    wait_for(counted, timeout=60, message=f"{count} ready replicas counted by the Deployments")


def merge_patch(api: client.ApiClient, world: World, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        world.namespace,
        PLURAL,
        world.name,
        body,
        _content_type="application/merge-patch+json",
    )


@pytest.fixture
def world(
    local_cluster: KubeCluster, crd: Path, kube_api: client.ApiClient, namespace: str
) -> Iterator[World]:
    """A failed-over MicroService with a quarantined and a last known good revision,
    as the operator would leave it, and its three pods, which kwok marks ready. See
    the module docstring for why it is held in deletion."""
    name = "shop"
    custom = client.CustomObjectsApi(kube_api)
    uid = create_microservice(
        kube_api,
        namespace,
        name,
        {"annotations": {"mso.dev/paused": "true"}, "finalizers": [HOLD]},
    )
    world = World(namespace, name, uid)
    try:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background"
        )
        merge_patch(kube_api, world, {"metadata": {"annotations": {"mso.dev/paused": None}}})
        apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
        apps.create_namespaced_deployment(namespace, deployment(name, name, uid, "primary", 2))
        apps.create_namespaced_deployment(
            namespace, deployment(f"{name}-standby", name, uid, "standby", 1)
        )
        core.create_namespaced_service(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "ownerReferences": owner(name, uid)},
                "spec": {
                    "selector": {"app.kubernetes.io/instance": name, "mso.dev/track": "standby"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                },
            },
        )
        good = {"revision": GOOD_REV, "image": GOOD_IMAGE, "spec": {"image": GOOD_IMAGE}}
        bad = {
            "revision": BAD_REV,
            "image": BAD_IMAGE,
            "reason": "ProgressDeadlineExceeded",
            "message": "not healthy within 120s",
            "time": "2025-01-01T00:00:00Z",
            "generation": 1,
        }
        apps.create_namespaced_controller_revision(
            namespace, record(name, uid, "last-known-good", GOOD_REV, good)
        )
        apps.create_namespaced_controller_revision(
            namespace, record(name, uid, "quarantined", BAD_REV, bad)
        )
        wait_pods_ready(kube_api, world, 3)
        # The deletion bumped the generation; status reports the current one.
        generation = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)[
            "metadata"
        ]["generation"]
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            failed_over_status(generation),
            _content_type="application/merge-patch+json",
        )
        yield world
    finally:  # release the hold, or the namespace could never be deleted
        merge_patch(kube_api, world, {"metadata": {"finalizers": None}})


def annotations(api: client.ApiClient, world: World) -> dict[str, str]:
    ms = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, world.namespace, PLURAL, world.name
    )
    return dict(ms["metadata"].get("annotations") or {})


# --------------------------------------------------------------------------- tests


def test_script_is_installed() -> None:
    assert SCRIPT.exists(), f"{SCRIPT} missing: pip install -e '.[dev]'"
    result = subprocess.run(
        [str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert "usage: kubectl mso" in result.stdout


def test_get_shows_one_screen(kubeconfig: Path, world: World) -> None:
    out = ok(run(kubeconfig, "get", world.name, "-n", world.namespace))
    lines = out.splitlines()

    def line(start: str) -> str:
        found = [ln for ln in lines if ln.startswith(start)]
        assert len(found) == 1, (start, out)
        return found[0]

    assert line("MicroService").split() == [
        "MicroService",
        f"{world.namespace}/{world.name}",
        "(being",  # held in deletion: see the module docstring
        "deleted)",
    ]
    assert line("Phase").split() == ["Phase", "FailedOver"]
    assert line("Ready").split() == ["Ready", "2/2"]
    assert f"{BAD_IMAGE} (primary runs {GOOD_IMAGE})" in line("Image")
    assert line("Traffic").split()[1] == "standby"
    assert line("Paused").split() == ["Paused", "no"]
    assert line("Pending").split() == ["Pending", "none"]
    assert line("  desired").split() == ["desired", BAD_REV]
    assert line("  current (running)").split()[-1] == GOOD_REV
    assert line("  last known good").split()[-2:] == [GOOD_REV, GOOD_IMAGE]
    assert line("  quarantined").split()[1:4] == [
        BAD_REV,
        BAD_IMAGE,
        "ProgressDeadlineExceeded:",
    ]
    assert "not healthy within 120s" in line("  quarantined")
    primary = line("  primary ").split()
    assert primary[:3] == ["primary", world.name, "2/2"] and GOOD_REV in primary
    assert line("  standby ").split()[:3] == ["standby", f"{world.name}-standby", "1/1"]
    assert line("  standby ").endswith("<- traffic")
    assert line("HPA").split() == ["HPA", "none"]
    assert line("PDB").split() == ["PDB", "none"]
    assert line("  FailedOver ").split()[:3] == ["FailedOver", "True", "PrimaryUnhealthy"]
    pods = [ln.split() for ln in out.split("\nPods\n", 1)[1].splitlines()[1:] if ln.strip()]
    assert sorted(p[1] for p in pods) == ["primary", "primary", "standby"]
    assert all(p[2:6] == ["Running", "1/1", "0", "-"] for p in pods), pods
    assert all(p[-1] == GOOD_REV for p in pods), pods
    assert "Warnings" not in out

    # status is an alias; the namespace can come from the kubeconfig context.
    assert ok(run(kubeconfig, "status", world.name, "-n", world.namespace)).startswith(
        "MicroService"
    )


def test_namespace_defaults_to_the_context(kubeconfig: Path, world: World, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig.read_text())
    kubectl(config, "config", "set-context", "--current", f"--namespace={world.namespace}")
    out = ok(run(config, "get", world.name))
    assert f"{world.namespace}/{world.name}" in out.splitlines()[0]


def test_verbs_set_and_remove_annotations(
    kubeconfig: Path, kube_api: client.ApiClient, world: World
) -> None:
    ns, name = world.namespace, world.name

    out = ok(run(kubeconfig, "pause", name, "-n", ns))
    assert out == f"microservices.mso.dev/{name} paused (mso.dev/paused=true)\n"
    assert annotations(kube_api, world)["mso.dev/paused"] == "true"
    assert "Paused         yes (mso.dev/paused=true)" in ok(run(kubeconfig, "get", name, "-n", ns))

    out = ok(run(kubeconfig, "resume", name, "-n", ns))
    assert out == f"microservices.mso.dev/{name} resumed (mso.dev/paused removed)\n"
    assert "mso.dev/paused" not in annotations(kube_api, world)

    out = ok(run(kubeconfig, "failback", name, "-n", ns))
    assert out.startswith(f"microservices.mso.dev/{name} failback requested")
    assert out.count("\n") == 1
    assert annotations(kube_api, world)["mso.dev/failback"] == "now"

    out = ok(run(kubeconfig, "retry", name, "-n", ns))
    assert out == (
        f"microservices.mso.dev/{name} retry of revision {BAD_REV} requested "
        f"(mso.dev/retry={BAD_REV})\n"
    )
    assert annotations(kube_api, world)["mso.dev/retry"] == BAD_REV

    ok(run(kubeconfig, "retry", name, "-n", ns, "--revision", "0123456789"))
    got = annotations(kube_api, world)
    assert got["mso.dev/retry"] == "0123456789"
    assert got["mso.dev/failback"] == "now"  # merge patches leave the others alone

    screen = ok(run(kubeconfig, "get", name, "-n", ns))
    assert "mso.dev/retry=0123456789, mso.dev/failback=now" in screen


def test_retry_without_quarantine_fails(
    crd: Path, kubeconfig: Path, kube_api: client.ApiClient, namespace: str
) -> None:
    create_microservice(kube_api, namespace, "fresh")
    result = run(kubeconfig, "retry", "fresh", "-n", namespace)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "nothing is quarantined" in result.stderr
    assert result.stderr.count("\n") == 1
    ms = client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "fresh"
    )
    assert "mso.dev/retry" not in (ms["metadata"].get("annotations") or {})


def test_missing_microservice_exits_1(crd: Path, kubeconfig: Path, namespace: str) -> None:
    for verb in ("get", "pause", "retry"):
        result = run(kubeconfig, verb, "nope", "-n", namespace)
        assert result.returncode == 1, (verb, result)
        assert result.stdout == ""
        assert result.stderr == (
            f'error: MicroService "nope" not found in namespace "{namespace}"\n'
        ), verb


def test_watch_redraws_until_interrupted(kubeconfig: Path, world: World) -> None:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    proc = subprocess.Popen(
        [str(SCRIPT), "get", world.name, "-n", world.namespace, "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        screens = 0
        for text_line in proc.stdout:  # not a TTY: screens are separated by dashes
            if text_line.startswith("MicroService"):
                screens += 1
                if screens == 3:
                    break
        assert screens == 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_works_as_a_kubectl_plugin(kubeconfig: Path, world: World) -> None:
    path = os.pathsep.join([str(script_dir()), os.environ.get("PATH", "")])
    plugins = run(kubeconfig, "plugin", "list", command=KUBECTL, path=path)
    assert str(SCRIPT) in plugins.stdout, plugins
    out = ok(
        run(kubeconfig, "mso", "get", world.name, "-n", world.namespace, command=KUBECTL, path=path)
    )
    assert out.splitlines()[0].split()[:2] == ["MicroService", f"{world.namespace}/{world.name}"]
    assert "Phase          FailedOver" in out
