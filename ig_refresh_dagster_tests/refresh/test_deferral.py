"""Waiting for Instagram never holds a run slot and never drops the refresh.

A refresh that must wait (both budgets exhausted, a scrape block) ends its run at once as
DEFERRED, and ``deferred_refresh_sensor`` requests it again once ``retryAt`` has passed and the
budgets have room. Real parts throughout: the refresh job in process on litemongo and
valkey-server, the HTTP Instagram stand-in serving fixture files from a temporary copy (so a
test can lift a block by rewriting one), and the sensor from the code location's own defs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import sqlalchemy
from bson import ObjectId
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorResult,
    build_sensor_context,
    instance_for_test,
)

from ig_refresh_dagster.devstack.instagram_standin import DEFAULT_FIXTURES, InstagramStandin
from ig_refresh_dagster.devstack.seed import (
    DemoAccount,
    DemoEvent,
    demo_accounts,
    publish,
    seed_accounts,
)
from ig_refresh_dagster.devstack.stack import EMBEDDED_BROKER_FETCH_WAIT_MS
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.refresh.launch.deferral_sensor import RETRY_OF_TAG
from ig_refresh_dagster.refresh.launch.requests import BACKFILL_TAG, launch_tags
from ig_refresh_dagster.refresh.run.resources import InstagramResource
from ig_refresh_dagster.refresh.run.stages import DEFERRAL_LIMIT, MAX_DEFERRAL_WAIT, OUTCOME_TAG
from ig_refresh_dagster.refresh.run.tags import BACKGROUND_PRIORITY, PRIORITY, SOURCE, Source
from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
from ig_refresh_dagster.stores.budget_share import background_budget_of
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore, as_utc
from ig_refresh_dagster_tests.conftest import Topics
from ig_refresh_dagster_tests.support.daemon_helpers import dagster_home, start_daemon
from ig_refresh_dagster_tests.support.kafka_helpers import refresh_event
from ig_refresh_dagster_tests.support.refresh_helpers import (
    TOKEN,
    job_resources,
    real_defs,
    run_refresh,
)

GRAPH = graph_budget_name(token_fingerprint(TOKEN))  # the one credential's budget
TERMINAL = (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def fixtures_dir(tmp_path: Path) -> Path:
    """A copy of the demo fixtures a test may rewrite (the stand-in reads them per request)."""
    target = tmp_path / "fixtures"
    shutil.copytree(DEFAULT_FIXTURES, target)
    return target


@pytest.fixture
def standin(fixtures_dir: Path) -> Iterator[InstagramStandin]:
    with InstagramStandin(token=TOKEN, fixtures_dir=fixtures_dir) as server:
        yield server


@pytest.fixture
def accounts(mongo_db, redis_client: redis.Redis) -> dict[str, DemoAccount]:
    """busy.bee: scrape-only and answered "Please wait"; acme.studio: Graph-capable."""
    chosen = {a.username: a for a in demo_accounts()}
    seed_accounts(mongo_db, redis_client, list(chosen.values()))
    return chosen


def resources_for(standin: InstagramStandin, mongo_uri: str, redis_url: str, **kw) -> dict:
    return job_resources(mongo_uri, redis_url, standin.graph_url, standin.web_url, **kw)


@pytest.fixture
def resources(standin: InstagramStandin, mongo_uri: str, redis_url_for_test: str) -> dict:
    return resources_for(standin, mongo_uri, redis_url_for_test)


def entry(db, run_id: str) -> dict:
    found = db["DataRefreshLog"].find_one({"runId": run_id})
    assert found is not None, f"no DataRefreshLog for run {run_id}"
    return found


def lift_block(fixtures_dir: Path, username: str) -> None:
    """Instagram answers again: the JSON endpoint serves a profile instead of "Please wait"."""
    spec = json.loads((fixtures_dir / "sam.outdoors" / "web_profile_info.json").read_text())
    spec["json"]["data"]["user"]["username"] = username  # an answer for another account is refused
    (fixtures_dir / username / "web_profile_info.json").write_text(json.dumps(spec))


def make_due(db, run_id: str) -> None:
    """Moves ``retryAt`` into the past instead of sleeping until it."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    db["DataRefreshLog"].update_one({"runId": run_id}, {"$set": {"retryAt": past}})


def tick(resources: dict, instance: DagsterInstance) -> SensorResult:
    """One evaluation of the code location's sensor, then what the daemon does with the
    result's partitions."""
    defs = real_defs(resources)
    sensor = defs.resolve_sensor_def("deferred_refresh_sensor")
    with build_sensor_context(
        instance=instance, definitions=defs, sensor_name=sensor.name, resources=resources
    ) as ctx:
        result = sensor(ctx)
    assert isinstance(result, SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return result


def launch(request: RunRequest, resources: dict, instance: DagsterInstance):
    """The requested run, executed in process with the request's tags."""
    return run_refresh(request.partition_key, resources, instance, tags=dict(request.tags))


def step_keys(instance: DagsterInstance, run_id: str, kind: DagsterEventType) -> set[str]:
    return {e.step_key for e in instance.all_logs(run_id, of_type=kind)}


def test_exhausted_budgets_defer_the_refresh_and_end_the_run_at_once(
    mongo_db, mongo_uri, redis_url_for_test, redis_client, standin, accounts, instance
) -> None:
    acme = accounts["acme.studio"]
    for name in (GRAPH, "scrape"):
        HourlyBudget(redis_client, name, 1).try_acquire()
    resources = resources_for(
        standin, mongo_uri, redis_url_for_test, hourly_budget=1, scrape_hourly_budget=1
    )
    before = datetime.now(UTC)

    result = run_refresh(acme.account_id, resources, instance)

    assert result.success, "a deferral is not a failed refresh"
    log = entry(mongo_db, result.run_id)
    assert log["status"] == "DEFERRED"
    assert "neither Graph nor scraping may be called" in log["reason"]
    assert before < as_utc(log["retryAt"]) <= before + MAX_DEFERRAL_WAIT + timedelta(minutes=1)
    assert instance.get_run_by_id(result.run_id).tags[OUTCOME_TAG] == "deferred"
    assert result.asset_materializations_for_node("instagram_profile") == []
    assert step_keys(instance, result.run_id, DagsterEventType.STEP_SUCCESS) == {
        "instagram_profile"
    }
    assert not result.get_asset_check_evaluations(), "nothing refreshed, nothing checked"
    assert not instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level >= 30]
    assert any("refresh DEFERRED until" in w for w in warnings)
    account = mongo_db["Account"].find_one({"_id": ObjectId(acme.account_id)})
    assert account["followerCount"] == acme.before["followerCount"]
    assert "lastDataRefresh" not in account
    assert standin.requests == [], "nothing was called: no budget"


def test_retry_after_beyond_the_cap_defers_for_at_most_the_cap(
    mongo_db, fixtures_dir, standin, resources, accounts, instance
) -> None:
    """A Retry-After of a day (a proxy's, or Instagram's) is capped."""
    spec = {"status": 429, "headers": {"Retry-After": "86400"}, "text": "slow down"}
    (fixtures_dir / "busy.bee" / "web_profile_info.json").write_text(json.dumps(spec))
    before = datetime.now(UTC)

    result = run_refresh(accounts["busy.bee"].account_id, resources, instance)

    log = entry(mongo_db, result.run_id)
    assert log["status"] == "DEFERRED"
    assert "429" in log["reason"]
    retry_at = as_utc(log["retryAt"])
    assert before + MAX_DEFERRAL_WAIT <= retry_at < before + timedelta(days=1)
    assert retry_at <= datetime.now(UTC) + MAX_DEFERRAL_WAIT


def test_graph_accounts_keep_flowing_while_scrape_blocked_ones_wait(
    mongo_db, standin, resources, accounts, instance
) -> None:
    """Scraping is blocked ("Please wait"): in the same period a Graph-capable account still
    refreshes while the scrape-only one is deferred, and only the deferred one is retried."""
    busy, acme = accounts["busy.bee"], accounts["acme.studio"]

    deferred = run_refresh(busy.account_id, resources, instance)
    refreshed = run_refresh(acme.account_id, resources, instance)

    assert deferred.success and refreshed.success
    assert entry(mongo_db, deferred.run_id)["status"] == "DEFERRED"
    assert "Please wait" in entry(mongo_db, deferred.run_id)["reason"]
    done = entry(mongo_db, refreshed.run_id)
    assert (done["status"], done["source"]) == ("COMPLETED", "graph")
    assert refreshed.asset_materializations_for_node("instagram_profile")
    assert ("web_profile_info", "busy.bee") in standin.requests

    make_due(mongo_db, deferred.run_id)
    (request,) = tick(resources, instance).run_requests
    assert request.partition_key == busy.account_id
    assert request.run_key == f"deferred:{deferred.run_id}"
    assert request.tags[RETRY_OF_TAG] == deferred.run_id


def test_deferred_refresh_is_retried_once_and_the_new_entry_links_to_it(
    mongo_db, fixtures_dir, standin, resources, accounts, instance
) -> None:
    busy = accounts["busy.bee"]
    first = run_refresh(busy.account_id, resources, instance)
    assert entry(mongo_db, first.run_id)["status"] == "DEFERRED"
    assert tick(resources, instance).run_requests == [], "not before retryAt"

    make_due(mongo_db, first.run_id)
    lift_block(fixtures_dir, "busy.bee")
    (request,) = tick(resources, instance).run_requests
    retry = launch(request, resources, instance)

    assert retry.success
    new, old = entry(mongo_db, retry.run_id), entry(mongo_db, first.run_id)
    assert new["status"] == "COMPLETED"
    assert new["retryOf"] == [first.run_id]
    assert old["retriedBy"] == retry.run_id
    assert retry.asset_materializations_for_node("instagram_profile")
    assert OUTCOME_TAG not in instance.get_run_by_id(retry.run_id).tags
    assert tick(resources, instance).run_requests == [], "requested exactly once"


def test_a_retry_run_dagster_already_has_is_never_requested_again(
    mongo_db, standin, resources, accounts, instance
) -> None:
    """A tick evaluated again (or a retry that died before it adopted its deferral) finds the
    existing run by its tag, records it, and requests nothing."""
    first = run_refresh(accounts["busy.bee"].account_id, resources, instance)
    make_due(mongo_db, first.run_id)
    (request,) = tick(resources, instance).run_requests
    job = real_defs(resources).resolve_job_def("instagram_refresh_job")
    queued = instance.create_run_for_job(
        job_def=job, tags={**request.tags, "dagster/partition": request.partition_key}
    )

    assert tick(resources, instance).run_requests == []
    assert entry(mongo_db, first.run_id)["retriedBy"] == queued.run_id


def test_a_refresh_deferred_again_is_picked_up_again_with_its_chain_start(
    mongo_db, standin, resources, accounts, instance
) -> None:
    first = run_refresh(accounts["busy.bee"].account_id, resources, instance)
    make_due(mongo_db, first.run_id)
    (request,) = tick(resources, instance).run_requests

    second = launch(request, resources, instance)

    again = entry(mongo_db, second.run_id)
    assert again["status"] == "DEFERRED"
    assert again["retryOf"] == [first.run_id]
    assert again["deferredSince"] == entry(mongo_db, first.run_id)["deferredSince"]
    make_due(mongo_db, second.run_id)
    (request,) = tick(resources, instance).run_requests
    assert request.tags[RETRY_OF_TAG] == second.run_id


def test_a_refresh_deferred_longer_than_the_limit_gives_up_as_failed(
    mongo_db, standin, resources, accounts, instance
) -> None:
    busy = accounts["busy.bee"]
    old = datetime.now(UTC) - DEFERRAL_LIMIT - timedelta(hours=1)
    RefreshLogStore(mongo_db).defer(
        "run-deferred-long-ago", busy.account_id, "fetch profile: blocked", old, old, old, []
    )

    result = run_refresh(busy.account_id, resources, instance)

    assert not result.success
    log = entry(mongo_db, result.run_id)
    assert log["status"] == "FAILED"
    assert log["error"].startswith("gave up: deferred since")
    assert "Please wait" in log["error"]
    assert log["retryOf"] == ["run-deferred-long-ago"]
    assert tick(resources, instance).run_requests == [], "a given-up refresh is not retried"


def test_the_next_event_for_an_account_adopts_its_open_deferral(
    mongo_db, fixtures_dir, standin, resources, accounts, instance
) -> None:
    """A fresh event's run covers an earlier deferral of the same account, so the sensor does
    not refresh it a second time."""
    busy = accounts["busy.bee"]
    first = run_refresh(busy.account_id, resources, instance)
    lift_block(fixtures_dir, "busy.bee")

    fresh = run_refresh(busy.account_id, resources, instance)

    assert entry(mongo_db, fresh.run_id)["status"] == "COMPLETED"
    assert entry(mongo_db, first.run_id)["retriedBy"] == fresh.run_id
    make_due(mongo_db, first.run_id)
    assert tick(resources, instance).run_requests == []


def _defer(store: RefreshLogStore, run_id: str, account_id: str) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    store.defer(run_id, account_id, "fetch profile: waiting", past, past, past, [])


def submit(request: RunRequest, resources: dict, instance: DagsterInstance) -> str:
    """What the daemon does with a run request: the run exists, waiting in the queue."""
    job = real_defs(resources).resolve_job_def("instagram_refresh_job")
    tags = {**request.tags, "dagster/partition": request.partition_key}
    return instance.create_run_for_job(job_def=job, tags=tags).run_id


@pytest.fixture
def small_budgets(standin, mongo_uri, redis_url_for_test) -> dict:
    return resources_for(
        standin, mongo_uri, redis_url_for_test, hourly_budget=2, scrape_hourly_budget=2
    )


def test_sensor_requests_no_more_than_the_budgets_can_admit(
    mongo_db, redis_client, small_budgets, instance
) -> None:
    """Free Graph calls plus free scrapes, minus retry runs still waiting in the queue."""
    store = RefreshLogStore(mongo_db)
    for n in range(5):
        _defer(store, f"deferred-{n}", str(ObjectId()))
    HourlyBudget(redis_client, GRAPH, 2).try_acquire()

    first = tick(small_budgets, instance)
    for request in first.run_requests:
        submit(request, small_budgets, instance)
    second = tick(small_budgets, instance)

    assert [r.run_key for r in first.run_requests] == [
        "deferred:deferred-0",
        "deferred:deferred-1",
        "deferred:deferred-2",
    ], "graph 1 free + scrape 2 free, longest-waiting first"
    assert second.run_requests == []
    assert "3 retry run(s) not started yet" in second.skip_reason.skip_message


def test_sensor_requests_nothing_while_the_budgets_are_full_or_paused(
    mongo_db, redis_client, small_budgets, instance
) -> None:
    _defer(RefreshLogStore(mongo_db), "deferred-0", str(ObjectId()))
    for _ in range(2):
        HourlyBudget(redis_client, GRAPH, 2).try_acquire()
    HourlyBudget(redis_client, "scrape", 2).block_for(600, "Instagram said wait")

    result = tick(small_budgets, instance)

    assert result.run_requests == []
    assert "1 deferred refresh(es) due" in result.skip_reason.skip_message
    assert f"{GRAPH} 2/2 used" in result.skip_reason.skip_message
    assert "scrape paused" in result.skip_reason.skip_message


def test_sensor_requests_one_run_per_account_per_tick(
    mongo_db, resources, standin, instance
) -> None:
    store = RefreshLogStore(mongo_db)
    account = str(ObjectId())
    for n in range(3):
        _defer(store, f"same-account-{n}", account)
    (request,) = tick(resources, instance).run_requests
    assert request.partition_key == account


def _wait_for(what: str, check, deadline: float):
    """Polls ``check`` until it returns something truthy; fails naming ``what`` at the deadline."""
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def _ended_runs(instance: DagsterInstance, account_id: str) -> list:
    records = instance.get_run_records(
        RunsFilter(tags={"dagster/partition": account_id}), ascending=True
    )
    return [r for r in records if r.dagster_run.status in TERMINAL]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_daemon_retries_a_deferred_refresh_on_its_own_once_the_block_lifts(
    tmp_path: Path,
    topics: Topics,
    fixtures_dir: Path,
    mongo_db,
    mongo_uri: str,
    redis_url_for_test: str,
    redis_client: redis.Redis,
) -> None:
    """The real daemon, no operator: busy.bee is scrape-blocked (429, Retry-After 1 s), so its
    run ends DEFERRED while acme.studio refreshes through Graph; once Instagram answers again
    deferred_refresh_sensor starts a new run that completes and links to the deferred one."""
    spec = {"status": 429, "headers": {"Retry-After": "1"}, "text": "Please wait"}
    (fixtures_dir / "busy.bee" / "web_profile_info.json").write_text(json.dumps(spec))
    by_name = {a.username: a for a in demo_accounts()}
    busy, acme = by_name["busy.bee"], by_name["acme.studio"]
    seed_accounts(mongo_db, redis_client, [busy, acme])
    publish(
        topics.bootstrap,
        topics.refresh,
        [
            DemoEvent(label=a.username, value=refresh_event(a.account_id), account_id=a.account_id)
            for a in (busy, acme)
        ],
    )
    home = dagster_home(tmp_path)

    with InstagramStandin(token=TOKEN, fixtures_dir=fixtures_dir) as standin:
        daemon = start_daemon(
            home,
            topics,
            redis_url_for_test,
            mongo_uri,
            standin,
            tmp_path / "daemon.log",
            KAFKA_FETCH_WAIT_MAX_MS=EMBEDDED_BROKER_FETCH_WAIT_MS,
        )
        instance = DagsterInstance.from_config(str(home))
        try:
            deadline = time.monotonic() + 240
            (deferred,) = _wait_for(
                "busy.bee's first run to end",
                lambda: _ended_runs(instance, busy.account_id),
                deadline,
            )
            lift_block(fixtures_dir, "busy.bee")
            _, retried = _wait_for(
                "the deferred refresh to be run again",
                lambda: (runs := _ended_runs(instance, busy.account_id))[1:] and runs,
                deadline,
            )
            (acme_run,) = _wait_for(
                "acme.studio's run", lambda: _ended_runs(instance, acme.account_id), deadline
            )
        finally:
            daemon.stop()
            instance.dispose()

    first, second = deferred.dagster_run, retried.dagster_run
    assert first.status == second.status == acme_run.dagster_run.status == DagsterRunStatus.SUCCESS
    assert first.tags[OUTCOME_TAG] == "deferred"
    assert second.tags[RETRY_OF_TAG] == first.run_id
    assert second.tags["dagster/sensor_name"] == "deferred_refresh_sensor"
    old, new = entry(mongo_db, first.run_id), entry(mongo_db, second.run_id)
    assert (old["status"], old["retriedBy"]) == ("DEFERRED", second.run_id)
    assert (new["status"], new["retryOf"]) == ("COMPLETED", [first.run_id])
    assert entry(mongo_db, acme_run.dagster_run.run_id)["status"] == "COMPLETED"
    materialized = DagsterEventType.ASSET_MATERIALIZATION
    assert not instance_logs(home, first.run_id, materialized)
    assert instance_logs(home, second.run_id, materialized)
    assert not instance_logs(home, first.run_id, DagsterEventType.STEP_UP_FOR_RETRY)
    account = mongo_db["Account"].find_one({"_id": ObjectId(busy.account_id)})
    assert account["followerCount"] != busy.before["followerCount"]
    # Measured, not asserted: how long the deferred run held a run slot.
    held = deferred.end_time - deferred.start_time
    print(
        f"\ndeferred run start → end: {held:.2f}s; retry run: "
        f"{retried.end_time - retried.start_time:.2f}s; "
        f"deferred end → retry start: {retried.start_time - deferred.end_time:.1f}s"
    )


def instance_logs(home: Path, run_id: str, kind: DagsterEventType) -> list:
    instance = DagsterInstance.from_config(str(home))
    try:
        return list(instance.all_logs(run_id, of_type=kind))
    finally:
        instance.dispose()


def test_deferred_refresh_sensor_is_in_the_code_location_and_running_by_default() -> None:
    """No operator has to switch it on: a deferral is retried on a fresh install."""
    from ig_refresh_dagster import defs

    with instance_for_test():
        sensor = defs.resolve_sensor_def("deferred_refresh_sensor")
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.job_name == "instagram_refresh_job"


def fill_background_shares(instagram: InstagramResource, client: redis.Redis) -> None:
    """Background traffic has used its whole share of every budget this hour."""
    for shared in [*instagram.usable_graph_budgets(), instagram.scrape_budget()]:
        own = background_budget_of(shared, instagram.backfill_budget_percent)
        while own.try_acquire() == 0:
            pass


def test_a_deferred_backfill_refresh_is_retried_within_the_backfill_share(
    mongo_db, fixtures_dir, standin, resources, accounts, instance, redis_client
) -> None:
    """Its retry is still background work: behind event runs, and refused once the share is
    spent, even with the shared budget free."""
    busy = accounts["busy.bee"]
    backfill_run = {**launch_tags(Source.BACKFILL), BACKFILL_TAG: "bf-1"}
    first = run_refresh(busy.account_id, resources, instance, tags=backfill_run)
    assert entry(mongo_db, first.run_id)["status"] == "DEFERRED"
    make_due(mongo_db, first.run_id)
    lift_block(fixtures_dir, "busy.bee")

    (request,) = tick(resources, instance).run_requests
    assert (request.tags[SOURCE], request.tags[PRIORITY]) == ("backfill", BACKGROUND_PRIORITY)
    assert BACKFILL_TAG not in request.tags, "the retry is not a run of the backfill itself"
    instagram = resources["instagram"]
    fill_background_shares(instagram, redis_client)
    scrape_used, asked = instagram.scrape_budget().status().used, len(standin.requests)
    retry = launch(request, resources, instance)

    assert entry(mongo_db, retry.run_id)["status"] == "DEFERRED"
    assert instagram.scrape_budget().status().used == scrape_used
    assert len(standin.requests) == asked


def test_a_deferred_freshness_refresh_cannot_refresh_an_account_twice(
    mongo_db, fixtures_dir, standin, resources, accounts, instance
) -> None:
    """The retry was requested, then an event's run refreshed the account first (adopting the
    deferral): the retry is a freshness run, not an operator's, so the minimum interval
    applies and it ends SKIPPED instead of refreshing again."""
    busy = accounts["busy.bee"]
    first = run_refresh(
        busy.account_id, resources, instance, tags=launch_tags(Source.FRESHNESS, "busy.bee")
    )
    assert entry(mongo_db, first.run_id)["status"] == "DEFERRED"
    make_due(mongo_db, first.run_id)
    lift_block(fixtures_dir, "busy.bee")
    (request,) = tick(resources, instance).run_requests
    assert (request.tags[SOURCE], request.tags[PRIORITY]) == ("freshness", BACKGROUND_PRIORITY)

    event = run_refresh(busy.account_id, resources, instance, tags=launch_tags(Source.EVENT))
    assert entry(mongo_db, event.run_id)["status"] == "COMPLETED"
    assert entry(mongo_db, first.run_id)["retriedBy"] == event.run_id
    fetched = len(standin.requests)
    retry = launch(request, resources, instance)

    assert entry(mongo_db, retry.run_id)["status"] == "SKIPPED"
    assert len(standin.requests) == fetched, "Instagram was asked once"
    assert tick(resources, instance).run_requests == []


def test_a_deferred_operator_launch_is_retried_as_one(
    mongo_db, standin, resources, accounts, instance
) -> None:
    """Materialize in the UI sets no source: its retry has none either (refreshes whatever the
    minimum interval); a deferral whose run was pruned is retried as an event's."""
    first = run_refresh(accounts["busy.bee"].account_id, resources, instance)
    make_due(mongo_db, first.run_id)
    (request,) = tick(resources, instance).run_requests
    assert SOURCE not in request.tags and PRIORITY not in request.tags
    instance.delete_run(first.run_id)
    (again,) = tick(resources, instance).run_requests
    assert again.tags[SOURCE] == "event" and PRIORITY not in again.tags


def test_an_error_tagging_the_deferred_run_does_not_undo_the_deferral(
    mongo_db, standin, resources, accounts, instance, monkeypatch
) -> None:
    """The run-tag write fails just after the deferral was stored. Dagster's run storage cannot
    be made to fail one write on demand, so ``add_run_tags`` raises what a locked SQLite
    storage raises, for that one tag only (a stand-in: no real part can fail this way)."""
    real_add_run_tags = DagsterInstance.add_run_tags

    def add_run_tags(self, run_id: str, new_tags: dict) -> None:
        if OUTCOME_TAG in new_tags:
            raise sqlalchemy.exc.OperationalError("UPDATE runs", {}, Exception("locked"))
        real_add_run_tags(self, run_id, new_tags)

    monkeypatch.setattr(DagsterInstance, "add_run_tags", add_run_tags)
    first = run_refresh(accounts["busy.bee"].account_id, resources, instance)

    assert first.success
    log = entry(mongo_db, first.run_id)
    assert log["status"] == "DEFERRED" and "error" not in log
    make_due(mongo_db, first.run_id)
    (request,) = tick(resources, instance).run_requests
    assert request.tags[RETRY_OF_TAG] == first.run_id


def test_a_step_retry_after_the_run_ended_never_reopens_its_entry(mongo_db) -> None:
    store, account = RefreshLogStore(mongo_db), str(ObjectId())
    now = datetime.now(UTC)
    store.start("run-deferred", account, now)
    store.defer("run-deferred", account, "fetch profile: wait", now, now, now, [])

    assert store.start("run-deferred", account, now) == "DEFERRED", "the retried attempt"
    store.fail("run-deferred", account, "write refresh log: boom", now)
    log = entry(mongo_db, "run-deferred")
    assert log["status"] == "DEFERRED" and "error" not in log
    store.fail("run-early", account, "load account: boom", now)
    assert entry(mongo_db, "run-early")["status"] == "FAILED", "no entry yet: written FAILED"
    assert store.start("run-early", account, now) == "FAILED"
    assert entry(mongo_db, "run-early")["status"] == "FAILED"


def test_a_retry_whose_deferral_another_run_adopted_first_is_skipped(
    mongo_db, fixtures_dir, standin, resources, accounts, instance
) -> None:
    """An operator's Materialize was deferred; its retry was requested; the account's next
    event refreshed it first. The retry (an operator launch, so no minimum interval) ends
    SKIPPED instead of refreshing the account a second time."""
    busy = accounts["busy.bee"]
    first = run_refresh(busy.account_id, resources, instance)
    make_due(mongo_db, first.run_id)
    lift_block(fixtures_dir, "busy.bee")
    (request,) = tick(resources, instance).run_requests
    event = run_refresh(busy.account_id, resources, instance, tags=launch_tags(Source.EVENT))
    assert entry(mongo_db, first.run_id)["retriedBy"] == event.run_id
    asked = len(standin.requests)

    retry = launch(request, resources, instance)

    log = entry(mongo_db, retry.run_id)
    assert log["status"] == "SKIPPED"
    assert log["reason"] == f"the deferral of run {first.run_id} was retried by {event.run_id}"
    assert len(standin.requests) == asked
