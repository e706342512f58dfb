"""deploy/requirements.lock, the image's hashed lock of its full dependency tree, stays in step
with setup.py and is what the Dockerfile installs.

Regenerate after changing install_requires (from the repository root, the `test` extra has
pip-tools). Extras stay in the lock (`gql[requests]==…`): pip's --require-hashes mode wants a
pin for a requirement with extras too.

    pip-compile --generate-hashes --allow-unsafe --no-header \\
      --no-emit-index-url --no-emit-find-links --output-file deploy/requirements.lock setup.py

That the lock covers the whole tree (nothing left for pip to resolve) is proven by the
production install itself: test_production_install.py installs it with --require-hashes and
runs `pip check` on the result.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster_tests.support.dockerfile import only

LOCK = PROJECT_ROOT / "deploy" / "requirements.lock"
REGENERATE = "regenerate deploy/requirements.lock (command in test_image_lock.py's docstring)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+) \\$")


def setup_kwargs() -> dict[str, Any]:
    """setup.py's arguments, read by running it with setuptools.setup replaced by a recorder
    (nothing is built)."""
    recorded: dict[str, Any] = {}
    with mock.patch("setuptools.setup", lambda **kwargs: recorded.update(kwargs)):
        runpy.run_path(str(PROJECT_ROOT / "setup.py"))
    return recorded


def parse_lock(text: str) -> dict[str, tuple[str, list[str], set[str]]]:
    """name -> (version, hashes, what pulls it in); `setup.py` marks a direct requirement."""
    entries: dict[str, tuple[str, list[str], set[str]]] = {}
    current: str | None = None
    for line in text.splitlines():
        if pinned := PIN.match(line):
            current = canonicalize_name(pinned[1])
            entries[current] = (pinned[2], [], set())
        elif current and (hashed := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            entries[current][1].append(hashed[1])
        elif current and (via := re.match(r"\s+#\s+(?:via\s+)?(\S+)", line)):
            parent = via[1]
            if parent != "via":
                entries[current][2].add("setup.py" if "(setup.py)" in line else parent)
    return entries


def drift(lock_text: str, install_requires: list[str]) -> list[str]:
    """How the lock disagrees with install_requires: missing or different pins, direct
    requirements setup.py no longer has, entries without hashes, parents not in the lock."""
    entries = parse_lock(lock_text)
    problems = []
    wanted = {}
    for requirement in map(Requirement, install_requires):
        name = canonicalize_name(requirement.name)
        wanted[name] = requirement
        if name not in entries:
            problems.append(f"{name} is not in the lock")
        elif not requirement.specifier.contains(entries[name][0], prereleases=True):
            problems.append(f"{name}: lock has {entries[name][0]}, setup.py wants {requirement}")
    for name, (version, hashes, parents) in entries.items():
        if "setup.py" in parents and name not in wanted:
            problems.append(f"{name}=={version} is locked as direct but setup.py lacks it")
        if not hashes:
            problems.append(f"{name} has no hash")
        for parent in parents - {"setup.py"}:
            if canonicalize_name(parent) not in entries:
                problems.append(f"{name} is required by {parent}, which is not in the lock")
    return problems


def test_the_lock_pins_every_install_requires_pin_with_hashes() -> None:
    assert drift(LOCK.read_text(), setup_kwargs()["install_requires"]) == [], REGENERATE


@pytest.mark.parametrize(
    "change",
    [
        lambda reqs: [r.replace("redis==8.1.0", "redis==8.0.0") for r in reqs],
        lambda reqs: [*reqs, "tenacity==9.0.0"],
        lambda reqs: [r for r in reqs if not r.startswith("lxml")],
    ],
    ids=["a pin changed", "a requirement added", "a requirement removed"],
)
def test_drift_from_setup_py_is_caught(change: Any) -> None:
    requires = setup_kwargs()["install_requires"]
    assert "redis==8.1.0" in requires and any(r.startswith("lxml") for r in requires)
    assert drift(LOCK.read_text(), change(requires)) != []


def test_a_lock_entry_without_hashes_is_caught(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^(lxml==\S+) \\\n(\s+--hash=\S+( \\)?\n)+", r"\1 \\\n", LOCK.read_text())
    assert "lxml has no hash" in drift(text, setup_kwargs()["install_requires"])


def test_the_dockerfile_installs_the_lock_with_hashes_then_the_project_alone() -> None:
    copy = only("COPY", "requirements.lock")
    assert copy.value.split()[0] == "deploy/requirements.lock"
    install = only("RUN", "pip install").value
    assert re.fullmatch(
        r"pip install --no-cache-dir --require-hashes -r requirements\.lock"
        r" && pip install --no-cache-dir --no-deps \.",
        install,
    ), install
    ignore = (PROJECT_ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!deploy/requirements.lock" in ignore


def test_the_base_image_is_pinned_by_digest() -> None:
    base = only("FROM").value
    assert re.fullmatch(r"python:3\.11[.\d]*-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    assert "docker buildx imagetools inspect python:3.11-slim-bookworm" in dockerfile
