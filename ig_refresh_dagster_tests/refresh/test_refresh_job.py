"""The refresh job end to end in process: litemongo, a real valkey-server, and pytest-httpserver
standing in for both Graph API and the public web."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from bson import ObjectId
from dagster import (
    DagsterEventType,
    DagsterInstance,
    build_op_context,
)
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.seed import DemoAccount, demo_accounts, seed_accounts
from ig_refresh_dagster.devstack.services import free_port
from ig_refresh_dagster.instagram.errors import BudgetUnavailable
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.refresh.run.stages import AccountRefresh
from ig_refresh_dagster.stores.accounts import AccountRecord
from ig_refresh_dagster.stores.cache import cache_key
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    TOKEN,
    graph_body,
    graph_error,
    job_resources,
    run_refresh,
    seed_account,
    web_profile_body,
)

GRAPH_PATH = f"/v21.0/{BUSINESS_ID}"
JSON_PATH = "/api/v1/users/web_profile_info/"


def scrape_only(resources: dict) -> dict:
    """The same services with no Graph token configured."""
    instagram = resources["instagram"]
    return job_resources(
        resources["mongo"].uri,
        resources["redis"].url,
        instagram.graph_api_url,
        instagram.web_url,
        token=None,
    )


def logs_for(db, run_id: str) -> list[dict]:
    return list(db["DataRefreshLog"].find({"runId": run_id}))


def step_events(instance: DagsterInstance, run_id: str, kind: DagsterEventType) -> list:
    return [
        e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event_type == kind
    ]


def test_graph_refresh_updates_account_cache_and_log(
    mongo_db, redis_client: redis.Redis, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="natgeo", accountId="ig-1", followerCount=1000)
    redis_client.set(cache_key("ig-1"), json.dumps({"account": {"followerCount": 1000}}), ex=900)
    httpserver.expect_request(GRAPH_PATH).respond_with_json(graph_body("natgeo", 1500))

    result = run_refresh(account_id, resources, instance)

    assert result.success
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert doc["followerCount"] == 1500
    assert doc["name"] == "Nat Geo"
    assert doc["instagramData"]["following"] == 140
    assert doc["instagramData"]["engagementRate"] == pytest.approx(160 / 1500)
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "COMPLETED"
    assert log["source"] == "graph"
    assert log["accountId"] == ObjectId(account_id)
    assert log["dataSnapshot"]["before"]["followerCount"] == 1000
    assert log["dataSnapshot"]["after"]["followerCount"] == 1500
    cached = json.loads(redis_client.get(cache_key("ig-1")))
    assert cached["account"]["followerCount"] == 1500
    assert 890 < redis_client.ttl(cache_key("ig-1")) <= 900
    (request, _), *_ = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in request.url
    (materialization,) = result.asset_materializations_for_node("instagram_profile")
    assert materialization.partition == account_id
    assert materialization.metadata["followers"].value == 1500
    assert materialization.metadata["source"].value == "graph"


def test_non_business_account_falls_back_to_scrape(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="janedoe", accountId="ig-2")
    httpserver.expect_request(GRAPH_PATH).respond_with_json(
        graph_error(100, 2207013, "Cannot find User"), status=400
    )
    httpserver.expect_request(JSON_PATH, query_string="username=janedoe").respond_with_json(
        web_profile_body("janedoe", 777)
    )

    result = run_refresh(account_id, resources, instance)

    assert result.success
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["source"] == "scrape"
    assert any("not a business" in note for note in log["notes"])
    assert mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["followerCount"] == 777


def materialized(result) -> dict[str, Any]:
    """The refresh's materialization metadata: every stage's result, as the UI shows it."""
    (materialization,) = result.asset_materializations_for_node("instagram_profile")
    return {key: entry.value for key, entry in materialization.metadata.items()}


def test_absent_cache_entry_is_not_created(
    mongo_db, redis_client: redis.Redis, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="natgeo", accountId="ig-3")
    httpserver.expect_request(GRAPH_PATH).respond_with_json(graph_body("natgeo"))
    result = run_refresh(account_id, resources, instance)
    assert result.success
    assert redis_client.exists(cache_key("ig-3")) == 0
    assert materialized(result)["cache"] == "absent"


def test_account_not_found_fails_once_with_log_and_no_retry(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    missing = str(ObjectId())
    result = run_refresh(missing, resources, instance)
    assert not result.success
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "FAILED"
    assert f"no Account with _id {missing}" in log["error"]
    assert log["completedAt"] is not None
    assert step_events(instance, result.run_id, DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert httpserver.log == []


def test_transient_error_is_retried_and_still_one_log(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="janedoe")
    resources = scrape_only(resources)
    httpserver.expect_ordered_request(JSON_PATH).respond_with_data("upstream down", status=503)
    httpserver.expect_ordered_request(JSON_PATH).respond_with_json(web_profile_body("janedoe"))

    result = run_refresh(account_id, resources, instance)

    assert result.success
    assert len(step_events(instance, result.run_id, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "COMPLETED"


def test_gone_account_is_recorded_and_not_retried(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="deleted.user", instagramData={"followers": 5})
    resources = scrape_only(resources)
    httpserver.expect_request(JSON_PATH).respond_with_data("", status=404)
    httpserver.expect_request("/deleted.user/").respond_with_data("Page not found", status=404)

    result = run_refresh(account_id, resources, instance)

    assert not result.success
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "FAILED"
    assert "gone" in log["error"].lower() or "404" in log["error"]
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert doc["instagramData"]["isGone"] is True
    assert doc["instagramData"]["followers"] == 5
    assert step_events(instance, result.run_id, DagsterEventType.STEP_UP_FOR_RETRY) == []


def _account(username: str = "natgeo") -> AccountRecord:
    return AccountRecord(id=str(ObjectId()), username=username, cache_id=None)


def test_unreachable_redis_refuses_graph_calls(httpserver: HTTPServer, resources) -> None:
    """Fail closed: with the limiter's Redis down, no request reaches Instagram at all."""
    down = job_resources(
        resources["mongo"].uri,
        f"redis://127.0.0.1:{free_port()}",
        httpserver.url_for("/v21.0"),
        httpserver.url_for(""),
    )
    with (
        build_op_context() as ctx,
        pytest.raises(BudgetUnavailable, match="refusing"),
    ):
        AccountRefresh(ctx, down["mongo"], down["redis"], down["instagram"]).fetch(_account())
    assert httpserver.log == []


def test_token_never_reaches_logs_events_or_refresh_log(
    mongo_db, httpserver: HTTPServer, resources, instance, caplog: pytest.LogCaptureFixture
) -> None:
    account_id = seed_account(mongo_db, handle="natgeo")
    httpserver.expect_request(GRAPH_PATH).respond_with_json(
        graph_error(190, 463, f"Error validating access token {TOKEN} has expired"), status=400
    )
    httpserver.expect_request(JSON_PATH).respond_with_data("", status=404)
    httpserver.expect_request("/natgeo/").respond_with_data("", status=404)
    caplog.set_level(logging.DEBUG)

    result = run_refresh(account_id, resources, instance)

    assert not result.success
    events = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
    assert "Graph" in events or "graph" in events
    assert TOKEN not in events
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(logs_for(mongo_db, result.run_id))
    assert TOKEN not in repr(list(mongo_db["Account"].find({})))


def test_invalid_token_disables_graph_loudly_then_scrapes(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    first = seed_account(mongo_db, handle="janedoe")
    second = seed_account(mongo_db, handle="janedoe")
    httpserver.expect_request(GRAPH_PATH).respond_with_json(
        graph_error(190, 467, "Invalid OAuth access token"), status=400
    )
    httpserver.expect_request(JSON_PATH).respond_with_json(web_profile_body("janedoe"))

    results = [run_refresh(account, resources, instance) for account in (first, second)]

    assert all(r.success for r in results)
    graph_calls = [req for req, _ in httpserver.log if req.path == GRAPH_PATH]
    assert len(graph_calls) == 1, "the second run must not spend budget on a dead token"
    for result in results:
        errors = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.level >= logging.ERROR and "Graph API is disabled" in e.user_message
        ]
        assert errors, "every run says loudly that Graph is disabled"
        (log,) = logs_for(mongo_db, result.run_id)
        assert log["source"] == "scrape"


@pytest.fixture
def standin_resources(mongo_uri: str, redis_url_for_test: str) -> Iterator[dict]:
    """The demo's HTTP stand-in, whose insights endpoints answer for any requested day."""
    with InstagramStandin(token=TOKEN) as standin:
        yield job_resources(mongo_uri, redis_url_for_test, standin.graph_url, standin.web_url)


def demo_account(username: str) -> DemoAccount:
    return next(a for a in demo_accounts() if a.username == username)


def test_owned_account_gets_one_insights_document_per_day(
    mongo_db, redis_client: redis.Redis, standin_resources, instance
) -> None:
    acme = demo_account("acme.studio")
    seed_accounts(mongo_db, redis_client, [acme])

    results = [run_refresh(acme.account_id, standin_resources, instance) for _ in range(2)]

    assert all(r.success for r in results)
    (doc,) = list(mongo_db["InstagramInsights"].find({}))
    assert doc["accountId"] == ObjectId(acme.account_id)
    assert doc["metrics"]["reach"] == 1830
    assert doc["unsupported"] == [], "the stand-in answers as the default Graph version does"
    assert doc["media"], "recent media from Business Discovery get their own insights"
    (log,) = logs_for(mongo_db, results[-1].run_id)
    assert log["insights"]["status"] == "stored"
    owner_token = acme.auth["accessToken"]
    for result in results:
        assert owner_token not in "\n".join(repr(e) for e in instance.all_logs(result.run_id))


def test_unauthorised_account_skips_insights_visibly(
    mongo_db, redis_client: redis.Redis, standin_resources, instance
) -> None:
    bluebird = demo_account("bluebird.bakery")
    seed_accounts(mongo_db, redis_client, [bluebird])
    result = run_refresh(bluebird.account_id, standin_resources, instance)
    assert result.success
    assert materialized(result)["insights"].startswith("skipped")
    assert mongo_db["InstagramInsights"].count_documents({}) == 0


def test_revoked_owner_token_reports_but_does_not_fail_the_refresh(
    mongo_db, redis_client: redis.Redis, standin_resources, instance
) -> None:
    acme = demo_account("acme.studio")
    seed_accounts(mongo_db, redis_client, [acme])
    mongo_db["Account"].update_one(
        {"_id": ObjectId(acme.account_id)}, {"$set": {"instagramAuth.accessToken": "revoked"}}
    )
    result = run_refresh(acme.account_id, standin_resources, instance)
    assert result.success
    assert materialized(result)["insights"].startswith("failed")
    assert mongo_db["InstagramInsights"].count_documents({}) == 0
    fetcher = standin_resources["instagram"].fetcher()
    assert fetcher.graph_status() is None, "an owner's dead token must not disable our Graph"


def test_partition_key_that_is_not_an_object_id_fails_clearly(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    """An analyst's hand-added partition key never reaches Mongo or Instagram."""
    result = run_refresh("NotAnObjectId", resources, instance)
    assert not result.success
    (failure,) = step_events(instance, result.run_id, DagsterEventType.STEP_FAILURE)
    assert "is not a lower-case 24-hex ObjectId" in failure.dagster_event.message + str(
        failure.dagster_event.event_specific_data
    )
    assert mongo_db["DataRefreshLog"].count_documents({}) == 0
    assert httpserver.log == []


def test_mongo_resource_ensures_unique_indexes(mongo_db, mongo_uri: str) -> None:
    """One log per run and one insights document per account-day hold in the store itself."""
    MongoResource(uri=mongo_uri).db()
    unique = {
        coll: [ix["key"] for ix in mongo_db[coll].index_information().values() if ix.get("unique")]
        for coll in ("DataRefreshLog", "InstagramInsights")
    }
    assert unique == {
        "DataRefreshLog": [[("runId", 1)]],
        "InstagramInsights": [[("accountId", 1), ("day", 1)]],
    }


# -- identity, walls and precision on the write path ---------------------------------------------


def _written(mongo_db, redis_client: redis.Redis, account_id: str, cache_id: str) -> tuple:
    """Everything a refresh could write for the account: the Account, its cache, its history."""
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    history = list(mongo_db["InstagramProfileHistory"].find({"accountId": ObjectId(account_id)}))
    return doc, redis_client.get(cache_key(cache_id)), history


def test_a_recycled_handle_writes_nothing_and_flags_the_account(
    mongo_db, redis_client: redis.Redis, httpserver: HTTPServer, resources, instance
) -> None:
    """The first refresh stores Instagram's ids; when the handle later answers as another user
    (renamed, then taken), nothing reaches the Account, its cache or its history."""
    account_id = seed_account(mongo_db, handle="natgeo", accountId="ig-r", followerCount=10)
    redis_client.set(cache_key("ig-r"), json.dumps({"account": {"followerCount": 10}}), ex=900)
    httpserver.expect_ordered_request(GRAPH_PATH).respond_with_json(graph_body("natgeo", 1500))
    stranger = graph_body("natgeo", 3)
    stranger["business_discovery"] |= {"id": "17841400000000777", "ig_id": 777}
    httpserver.expect_ordered_request(GRAPH_PATH).respond_with_json(stranger)

    first = run_refresh(account_id, resources, instance)
    assert first.success
    data = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})["instagramData"]
    assert (data["igGraphId"], data["igUserId"]) == ("17841400000000099", "12345")
    before = _written(mongo_db, redis_client, account_id, "ig-r")

    second = run_refresh(account_id, resources, instance)

    assert not second.success
    doc, cached, history = _written(mongo_db, redis_client, account_id, "ig-r")
    flag = doc["instagramData"].pop("handleRecycled")
    assert doc == before[0] and cached == before[1] and history == before[2]
    assert flag["seenIds"] == {"igGraphId": "17841400000000777", "igUserId": "777"}
    assert flag["knownIds"] == {"igGraphId": "17841400000000099", "igUserId": "12345"}
    (log,) = logs_for(mongo_db, second.run_id)
    assert log["status"] == "FAILED" and log["reason"] == "handle_recycled"
    assert "handle_recycled" in log["error"]
    assert step_events(instance, second.run_id, DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert second.asset_materializations_for_node("instagram_profile") == []


def test_a_page_for_another_account_writes_nothing(
    mongo_db, redis_client: redis.Redis, standin_resources, instance
) -> None:
    """The stand-in's imposter.page: title and description say (@someone.else), no og:url."""
    account_id = seed_account(mongo_db, handle="imposter.page", accountId="ig-i")
    before = _written(mongo_db, redis_client, account_id, "ig-i")
    result = run_refresh(account_id, standin_resources, instance)
    assert not result.success
    assert _written(mongo_db, redis_client, account_id, "ig-i") == before
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "FAILED" and log["reason"] == "scrape_profile_mismatch"
    assert "someone.else" in log["error"]


def test_only_the_page_answering_for_a_known_id_is_refused(
    mongo_db, redis_client: redis.Redis, httpserver: HTTPServer, resources, instance
) -> None:
    """The page carries no id, so it cannot prove the handle is still the same user."""
    account_id = seed_account(
        mongo_db, handle="ada.l", accountId="ig-a", instagramData={"igUserId": "999"}
    )
    httpserver.expect_request(JSON_PATH).respond_with_json({"require_login": True}, status=401)
    httpserver.expect_request("/ada.l/").respond_with_data(
        '<html><head><meta property="og:title" content="Ada (@ada.l) • Instagram">'
        '<meta property="og:description" content="5 Followers, 1 Following, 2 Posts - Ada '
        '(@ada.l)"></head></html>',
        content_type="text/html",
    )
    before = _written(mongo_db, redis_client, account_id, "ig-a")
    result = run_refresh(account_id, scrape_only(resources), instance)
    assert not result.success
    assert _written(mongo_db, redis_client, account_id, "ig-a") == before
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "FAILED" and log["reason"] == "identity_unproven"


def test_a_consent_page_is_deferred_not_a_refresh(
    mongo_db, redis_client: redis.Redis, standin_resources, instance
) -> None:
    """The stand-in's consent.wall: status 200, title "Instagram", no counts."""
    gone_at = datetime(2026, 1, 1)
    account_id = seed_account(
        mongo_db,
        handle="consent.wall",
        accountId="ig-c",
        instagramData={"isGone": True, "goneAt": gone_at},
    )
    before = _written(mongo_db, redis_client, account_id, "ig-c")
    result = run_refresh(account_id, standin_resources, instance)
    assert result.success, "a deferral is not a failure"
    assert _written(mongo_db, redis_client, account_id, "ig-c") == before
    (log,) = logs_for(mongo_db, result.run_id)
    assert log["status"] == "DEFERRED" and "consent" in log["reason"]


def test_a_rounded_page_count_keeps_the_exact_one_it_agrees_with(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(
        mongo_db,
        handle="ada.l",
        followerCount=12_487,
        instagramData={"followers": 12_487, "following": 40, "countsExact": {"followers": True}},
    )
    httpserver.expect_request(JSON_PATH).respond_with_json({"require_login": True}, status=401)
    page = (
        '<html><head><meta property="og:title" content="Ada (@ada.l) • Instagram">'
        '<meta property="og:description" content="{} Followers, 1.2K Following, 2 Posts - Ada '
        '(@ada.l)"></head></html>'
    )
    httpserver.expect_oneshot_request("/ada.l/").respond_with_data(
        page.format("12.5K"), content_type="text/html"
    )
    httpserver.expect_oneshot_request("/ada.l/").respond_with_data(
        page.format("12.7K"), content_type="text/html"
    )
    scraping = scrape_only(resources)

    assert run_refresh(account_id, scraping, instance).success
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert doc["followerCount"] == 12_487 and doc["instagramData"]["followers"] == 12_487
    assert doc["instagramData"]["following"] == 1_200, "40 is far outside 1.2K: replaced"
    assert doc["instagramData"]["countsExact"] == {
        "followers": True,
        "following": False,
        "mediaCount": True,
    }
    assert run_refresh(account_id, scraping, instance).success
    doc = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert doc["followerCount"] == 12_700, "12.7K disagrees with 12,487: replaced"
    assert doc["instagramData"]["countsExact"]["followers"] is False
