"""The hashed lock files match pyproject.toml (regenerate them with `make lock`).

requirements-dev.lock (the venv), requirements.lock (the image's runtime wheels) and
requirements-build.lock (the image's build backend) are three views of one
`uv pip compile --universal --generate-hashes` resolution; see the Makefile.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from tests.unit.test_manifests import dockerfile_stages, dockerignored

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
LOCKS = (RUNTIME_LOCK, DEV_LOCK, BUILD_LOCK)
HINT = "run `make lock` and commit the lock files"


@dataclass(frozen=True)
class Locked:
    requirement: Requirement
    hashes: frozenset[str]

    @property
    def version(self) -> Version:
        (spec,) = self.requirement.specifier
        return Version(spec.version)


def parse_lock(path: Path) -> dict[str, Locked]:
    """{canonical name: entry} of a pip requirements file in hash-checking form."""
    # Comments are whole lines in uv's output; join the backslash continuations.
    text = "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    entries: dict[str, Locked] = {}
    for logical in text.replace("\\\n", " ").splitlines():
        if not logical.strip():
            continue
        req_text, *hash_parts = re.split(r"\s+--hash=", logical.strip())
        req = Requirement(req_text.strip())
        name = canonicalize_name(req.name)
        assert name not in entries, f"{path.name}: {req.name} locked twice"
        entries[name] = Locked(req, frozenset(h.strip() for h in hash_parts))
    return entries


def requires(specs: list[str]) -> list[Requirement]:
    return [Requirement(s) for s in specs]


def assert_satisfied(lock: Path, reqs: list[Requirement]) -> None:
    entries = parse_lock(lock)
    problems = []
    for req in reqs:
        entry = entries.get(canonicalize_name(req.name))
        if entry is None:
            problems.append(f"{req} is not in {lock.name}")
        elif not req.specifier.contains(entry.version, prereleases=True):
            problems.append(f"{req} but {lock.name} has {entry.version}")
    assert not problems, "\n".join([*problems, HINT])


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_line_is_pinned_and_hashed(lock: Path) -> None:
    entries = parse_lock(lock)
    assert entries, f"{lock.name} is empty"
    for name, entry in entries.items():
        specs = list(entry.requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{lock.name}: {name} not pinned"
        assert entry.hashes, f"{lock.name}: {name} has no --hash"
        assert all(h.startswith("sha256:") and len(h) == 71 for h in entry.hashes), name


def test_runtime_dependencies_are_locked() -> None:
    reqs = requires(PYPROJECT["project"]["dependencies"])
    assert_satisfied(RUNTIME_LOCK, reqs)
    assert_satisfied(DEV_LOCK, reqs)


def test_dev_extra_is_locked() -> None:
    assert_satisfied(DEV_LOCK, requires(PYPROJECT["project"]["optional-dependencies"]["dev"]))


def test_build_backend_and_pip_are_locked() -> None:
    reqs = requires([*PYPROJECT["build-system"]["requires"], "pip"])
    assert_satisfied(BUILD_LOCK, reqs)
    assert_satisfied(DEV_LOCK, reqs)


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_locks_agree_with_the_dev_lock(lock: Path) -> None:
    """The image runs exactly the versions (and files) the tests ran with."""
    dev = parse_lock(DEV_LOCK)
    for name, entry in parse_lock(lock).items():
        assert name in dev, f"{name} is in {lock.name} but not in {DEV_LOCK.name}; {HINT}"
        assert str(entry.requirement.specifier) == str(dev[name].requirement.specifier), name
        assert entry.hashes == dev[name].hashes, f"{name}: hashes differ; {HINT}"


def test_runtime_lock_holds_no_dev_or_build_tool() -> None:
    runtime = parse_lock(RUNTIME_LOCK)
    for tool in ("pytest", "mypy", "ruff", "uv", "setuptools", "wheel", "pip"):
        assert tool not in runtime, f"{tool} in {RUNTIME_LOCK.name}"


def test_locks_resolve_for_every_python_they_are_used_with() -> None:
    """Resolved universally from the oldest supported Python up (Makefile LOCK_PYTHON):
    this interpreter and the image's default base must be in that range."""
    supported = SpecifierSet(PYPROJECT["project"]["requires-python"])
    lock_python = re.search(r"^LOCK_PYTHON := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert lock_python, "LOCK_PYTHON missing from the Makefile"
    oldest = min(
        (Version(s.version) for s in supported if s.operator in (">=", "~=", "==")), default=None
    )
    assert oldest == Version(lock_python.group(1)), (
        f"requires-python {supported} but the locks are resolved from {lock_python.group(1)}"
    )
    image = re.search(
        r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), re.M
    )
    assert image, "Dockerfile's default PYTHON_IMAGE is not python:X.Y..."
    running = ".".join(map(str, sys.version_info[:3]))
    for version in (image.group(1), running):
        assert supported.contains(version), f"Python {version} is outside {supported}"


def test_image_builder_installs_exactly_the_locks() -> None:
    builder = dockerfile_stages()[1]
    runs = [line for line in builder if line.startswith("RUN ")]
    deps = next(line for line in runs if "requirements.lock" in line)
    assert "--require-hashes" in deps and "-r requirements-build.lock" in deps, deps
    project = next(line for line in runs if "pip wheel --no-deps" in line)
    assert "--no-build-isolation" in project, "the build backend comes from the lock"
    for lock in (RUNTIME_LOCK, BUILD_LOCK):
        assert not dockerignored(lock.name), f"{lock.name} is not in the build context"


def test_the_venv_was_installed_from_the_dev_lock() -> None:
    """`make venv` installs requirements-dev.lock; a stale venv says so here."""
    stale = []
    for name, entry in parse_lock(DEV_LOCK).items():
        marker = entry.requirement.marker
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            stale.append(f"{name} {entry.version} is not installed")
            continue
        if installed != entry.version:
            stale.append(f"{name} {installed} installed, {entry.version} locked")
    assert not stale, "\n".join([*stale, "run `make venv`"])
