"""The Dagster UI as an operator and an analyst use it, in a real browser.

Playwright drives Debian's Chromium (installed by `scripts/bootstrap`; Playwright downloads no
browser here) against `dagster-webserver` and `dagster-daemon` on the embedded stack seeded with
the demo accounts. It finds handles in the runs list, on a partition and on a backfill, and
launches a backfill by query from the launchpad and watches it complete.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from ig_refresh_dagster.devstack.demo import prepare, start_dagster
from ig_refresh_dagster.devstack.seed import demo_accounts
from ig_refresh_dagster.devstack.services import free_port
from ig_refresh_dagster.devstack.stack import EmbeddedStack, embedded_stack

CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed"),
]
# The machine's network is closed: without these Chromium keeps dialling Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BACKFILL_ACCOUNT = "bluebird.bakery"


def wait_until(predicate, what: str, seconds: float = 180.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, EmbeddedStack]]:
    data = tmp_path_factory.mktemp("ui")
    with embedded_stack(data, data / "dagster_home") as stack:
        prepare(stack)
        port = free_port()
        start_dagster(stack, webserver_port=port)
        yield f"http://127.0.0.1:{port}", stack


@pytest.fixture(scope="module")
def instance(ui: tuple[str, EmbeddedStack]) -> Iterator[DagsterInstance]:
    inst = DagsterInstance.from_config(str(ui[1].dagster_home))
    yield inst
    inst.dispose()


@pytest.fixture(scope="module")
def page(ui: tuple[str, EmbeddedStack]):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1600, "height": 1000})
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def account_id(username: str) -> str:
    return next(a.account_id for a in demo_accounts() if a.username == username)


def succeeded(instance: DagsterInstance, username: str) -> bool:
    runs = instance.get_runs(
        RunsFilter(
            job_name="instagram_refresh_job", tags={"dagster/partition": account_id(username)}
        )
    )
    return any(r.status == DagsterRunStatus.SUCCESS for r in runs)


def test_runs_list_shows_handles(ui, instance, page) -> None:
    base, _ = ui
    wait_until(lambda: succeeded(instance, "acme.studio"), "acme.studio's refresh")
    page.goto(f"{base}/runs")
    page.get_by_text("acme.studio").first.wait_for()
    assert page.get_by_text("acme.studio").count() >= 1


def test_a_partition_shows_its_handle(ui, instance, page) -> None:
    base, _ = ui
    wait_until(lambda: succeeded(instance, "acme.studio"), "acme.studio's refresh")
    page.goto(
        f"{base}/assets/instagram_profile?view=partitions&partition={account_id('acme.studio')}"
    )
    page.get_by_text("acme.studio").first.wait_for()


def test_backfill_by_query_launched_from_the_launchpad_completes(ui, instance, page) -> None:
    base, _ = ui
    config = {
        "ops": {
            "launch_account_backfill": {"config": {"handles": [BACKFILL_ACCOUNT], "dry_run": False}}
        }
    }
    page.goto(f"{base}/locations/ig_refresh_dagster/jobs/backfill_by_query/playground")
    editor = page.locator(".CodeMirror, .cm-editor").first
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    # One line of JSON (YAML's subset): typed keys would be auto-closed and auto-indented.
    page.keyboard.insert_text(json.dumps(config))
    page.get_by_role("button", name="Launch Run").click()
    backfills = wait_until(
        lambda: instance.get_backfills(), "the backfill the launched job creates", seconds=120
    )
    backfill_id = backfills[0].backfill_id
    page.goto(f"{base}/runs/b/{backfill_id}?tab=runs")
    page.get_by_text(BACKFILL_ACCOUNT).first.wait_for(timeout=180_000)
    wait_until(
        lambda: instance.get_backfill(backfill_id).status.value == "COMPLETED_SUCCESS",
        "the backfill to complete",
    )
    page.reload()
    page.get_by_text("Completed", exact=False).first.wait_for()
