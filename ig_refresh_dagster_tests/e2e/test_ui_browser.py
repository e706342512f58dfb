"""The Dagster UI as an operator and an analyst use it, in a real browser.

Playwright drives Debian's Chromium (installed by `scripts/bootstrap`; Playwright downloads no
browser here) against `dagster-webserver` and `dagster-daemon` on the embedded stack seeded with
the demo accounts. It finds handles in the runs list, on a partition and on a backfill, and
launches a backfill by query from the launchpad (which scaffolds only the query), watches it
complete and its outcome table appear on the asset's Events. It also renders the
health sidecar's follower-history page.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, MetadataValue, RunsFilter

from ig_refresh_dagster.devstack.demo import prepare, start_dagster
from ig_refresh_dagster.devstack.seed import demo_accounts
from ig_refresh_dagster.devstack.services import free_port
from ig_refresh_dagster.devstack.stack import EmbeddedStack, embedded_stack
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.server import HealthServer

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
SHOTS = Path("/tmp/ig-refresh-ui-shots")


def skip_welcome_dialog(page, base: str) -> None:
    """A first visit opens a "Join the Dagster community" dialog a moment after the page loads;
    while it is open the launchpad's buttons are disabled. Skipping it is remembered."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{base}/runs")
    # No dialog (another Dagster version or browser profile) is fine too.
    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Skip").click(timeout=30_000)


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
        # The backfill refreshes an account the demo events refreshed minutes earlier.
        stack.env["INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS"] = "0"
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
        SHOTS.mkdir(exist_ok=True)
        skip_welcome_dialog(tab, ui[0])
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
    page.goto(f"{base}/locations/ig-refresh/jobs/backfill_by_query/playground")
    page.locator(".CodeMirror").first.wait_for()
    page.screenshot(path=str(SHOTS / "launchpad.png"))
    scaffold = page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.getValue()")
    assert "handles: []" in scaffold and "dry_run: false" in scaffold
    assert "resources:" not in scaffold, "budgets, URLs and timeouts stay in the environment"
    # The launchpad scaffolds the query; the analyst fills in the handles.
    page.evaluate(
        """handle => {
            const editor = document.querySelector('.CodeMirror').CodeMirror;
            editor.setValue(editor.getValue().replace('handles: []', `handles: [${handle}]`));
        }""",
        BACKFILL_ACCOUNT,
    )
    page.get_by_text("No errors").first.wait_for()
    page.screenshot(path=str(SHOTS / "before-launch.png"))
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url("**/runs/**")
    page.screenshot(path=str(SHOTS / "launched.png"))
    run_id = page.url.split("/runs/")[1].split("?")[0]
    run = wait_until(
        lambda: (r := instance.get_run_by_id(run_id)) and r.is_finished and r,
        "the backfill_by_query run to finish",
    )
    errors = [
        e.dagster_event.step_failure_data.error.to_string()
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    assert run.status == DagsterRunStatus.SUCCESS, errors
    backfills = instance.get_backfills()
    assert backfills, "the run created a backfill"
    backfill_id = backfills[0].backfill_id
    page.goto(f"{base}/runs/b/{backfill_id}?tab=runs")
    page.get_by_text(BACKFILL_ACCOUNT).first.wait_for(timeout=180_000)
    wait_until(
        lambda: instance.get_backfill(backfill_id).status.value == "COMPLETED_SUCCESS",
        "the backfill to complete",
    )
    page.reload()
    page.get_by_text(BACKFILL_ACCOUNT).first.wait_for()
    page.screenshot(path=str(SHOTS / "backfill.png"))
    page.get_by_text("Succeeded").first.wait_for(timeout=10_000)
    # backfill_summary_sensor puts the outcome table on the asset's page.
    wait_until(
        lambda: any(
            r.asset_observation.metadata.get("backfill_id") == MetadataValue.text(backfill_id)
            for r in instance.fetch_observations(AssetKey("instagram_profile"), limit=10).records
        ),
        "the backfill's summary",
    )
    page.goto(f"{base}/assets/instagram_profile?view=events")
    page.get_by_text(f"backfill {backfill_id}").first.wait_for()
    page.screenshot(path=str(SHOTS / "backfill-summary.png"))


def test_history_page_draws_the_accounts_followers(ui, instance, page) -> None:
    """The sidecar's per-account chart, as a browser renders it."""
    _, stack = ui
    wait_until(lambda: succeeded(instance, "acme.studio"), "acme.studio's refresh")
    config = HealthConfig(
        host="127.0.0.1",
        port=0,
        mongodb_uri=stack.env["MONGODB_URI"],
        mongodb_database=stack.setting("MONGODB_DATABASE"),
    )
    with HealthServer(config) as sidecar:
        page.goto(f"http://127.0.0.1:{sidecar.port}/accounts/@acme.studio/history?days=30")
        page.get_by_role("heading", name="@acme.studio").wait_for()
        page.screenshot(path=str(SHOTS / "history.png"))
        assert page.locator("svg circle").count() >= 1
        assert page.locator("svg polyline").count() == 1
