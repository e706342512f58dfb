"""Reads `deploy/Dockerfile` so tests run its own instructions instead of a copy of them.

No Docker engine runs here; what can run without one is the install the image does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT

DOCKERFILE = PROJECT_ROOT / "deploy" / "Dockerfile"


class Instruction(NamedTuple):
    keyword: str
    value: str


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(value.split())))
        pending = ""
    return found


def only(keyword: str, containing: str = "") -> Instruction:
    matches = [i for i in instructions() if i.keyword == keyword and containing in i.value]
    assert len(matches) == 1, f"expected one {keyword} with {containing!r}, found {matches}"
    return matches[0]


def exec_form(instruction: Instruction) -> list[str]:
    """A JSON-array CMD/ENTRYPOINT as its argv."""
    argv = json.loads(instruction.value)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), instruction
    return argv


def build_context(destination: Path) -> Path:
    """The image's WORKDIR as its COPY lines fill it, from the repository root (the build
    context); returns that directory inside ``destination``."""
    import shutil

    workdir = destination / only("WORKDIR").value.lstrip("/")
    workdir.mkdir(parents=True)
    for copy in (i for i in instructions() if i.keyword == "COPY"):
        source, target = copy.value.split()
        src, dst = PROJECT_ROOT / source, workdir / target
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst if not target.endswith("/") else dst / src.name)
    return workdir
