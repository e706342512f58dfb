"""The docs: a README a newcomer reads in ten minutes, the rest in docs/ as a site that builds
with ``mkdocs build --strict`` (a broken link or anchor fails), and no section of the old
one-page README lost in the move."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
README = PROJECT_ROOT / "README.md"
# Where each section of the 1,569-line README went when it was split (the checklist of the move).
MOVED = {
    "Two commands": "README.md",
    "Data we write": "README.md",
    "Configuration": "docs/configuration.md",
    "How it works": "docs/how-it-works.md",
    "The sensor: `instagram_refresh_sensor`": "docs/how-it-works.md",
    "The other sensors": "docs/how-it-works.md",
    "The refresh job: `instagram_refresh_job` → asset `instagram_profile`": "docs/how-it-works.md",
    "Failures, retries and deferral": "docs/how-it-works.md",
    "Background refreshes: freshness and backfills": "docs/how-it-works.md",
    "The fleet-wide budget": "docs/how-it-works.md",
    "How far one credential goes": "docs/how-it-works.md",
    "Several Graph credentials": "docs/how-it-works.md",
    "The fetch layer": "docs/how-it-works.md",
    "Health sidecar: `ig-refresh health`": "docs/how-it-works.md",
    "Guarantees": "docs/guarantees.md",
    "Intake": "docs/guarantees.md",
    "Waiting and insights": "docs/guarantees.md",
    "Recovery": "docs/guarantees.md",
    "What is not promised": "docs/guarantees.md",
    "Operating it": "docs/operating.md",
    "Metrics and history": "docs/metrics-and-history.md",
    "Follower history page": "docs/metrics-and-history.md",
    "Production": "docs/production.md",
    "Managed Kafka (TLS and SASL)": "docs/production.md",
    "Bounded storage and retention": "docs/production.md",
    "Scale": "docs/scale.md",
    "How far one machine and one credential go": "docs/scale.md",
    "Past 100k accounts: a capped set of active partitions": "docs/scale.md",
    "One account's runs and history at 300k accounts": "docs/scale.md",
    "Growing to a million accounts": "docs/scale.md",
    "The embedded stack, and what holds only on real MongoDB": "docs/embedded-stack.md",
    "Tests": "docs/tests.md",
    "Benchmarks": "docs/benchmarks.md",
    "Layout": "docs/layout.md",
}


def headings(path: Path) -> list[str]:
    found, fence = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (match := re.match(r"^#{1,4} (.*)$", line)):
            found.append(match.group(1))
    return found


@pytest.mark.parametrize(("section", "where"), sorted(MOVED.items()))
def test_every_section_of_the_old_readme_has_a_home(section: str, where: str) -> None:
    assert any(h.startswith(section) for h in headings(PROJECT_ROOT / where)), (section, where)


def test_the_readme_is_read_in_ten_minutes() -> None:
    assert len(README.read_text().splitlines()) <= 250


def test_every_page_is_in_the_site_navigation() -> None:
    nav = yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {page.name for page in DOCS.glob("*.md")}


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """As `make lint` builds it: a broken link or anchor is an error."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-d", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").exists()
