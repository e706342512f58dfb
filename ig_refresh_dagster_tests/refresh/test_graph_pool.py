"""The Graph credential pool with real parts: the refresh resources on valkey-server (budgets,
fetch memory) and litemongo (the budgets' journal), pytest-httpserver as Graph answering per
token (each credential reads through its own business account, and a request carrying another
credential's token is refused), and the health sidecar reading the same stores."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
import redis
from dagster import DagsterInstance
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.instagram.credentials import CredentialsInvalid
from ig_refresh_dagster.instagram.errors import BudgetExhausted
from ig_refresh_dagster.instagram.fetcher import FetchOutcome
from ig_refresh_dagster.instagram.graph import GraphClient, token_fingerprint
from ig_refresh_dagster.instagram.graph_pool import GraphLane, GraphPool
from ig_refresh_dagster.refresh.run.resources import InstagramResource
from ig_refresh_dagster.stores.budget import HourlyBudget, graph_budget_name
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster_tests.health.test_sidecar_metrics import get, scrape, value
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

# (token, business account id): three credentials, each reading through its own account.
CREDENTIALS = [(f"EAAGpool{n}secret0123456789abcdef", f"1784140000000010{n}") for n in range(3)]
TOKENS = [token for token, _ in CREDENTIALS]
FINGERPRINTS = [token_fingerprint(token) for token in TOKENS]
RAW = json.dumps([{"access_token": t, "business_account_id": b} for t, b in CREDENTIALS])
OWNER_ID = "17841400000000777"
_USERNAME = re.compile(r"business_discovery\.username\(([^)]+)\)")


class GraphStandIn:
    """Business Discovery per credential: ``ok``, ``revoked`` (code 190 for that token only) or
    ``busy`` (answers, with usage headers at 97 % and Meta's 10-minute estimate)."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.behaviour = dict.fromkeys(TOKENS, "ok")
        for token, business_id in CREDENTIALS:
            server.expect_request(f"/v21.0/{business_id}").respond_with_handler(
                lambda request, token=token, business_id=business_id: self._answer(
                    request, token, business_id
                )
            )
        server.expect_request("/api/v1/users/web_profile_info/").respond_with_handler(
            lambda request: Response(
                json.dumps(web_profile_body(request.args["username"])),
                content_type="application/json",
            )
        )

    def _answer(self, request: Request, token: str, business_id: str) -> Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            body = graph_error(100, message="this business account is not yours")
            return Response(json.dumps(body), status=400, content_type="application/json")
        behaviour = self.behaviour[token]
        if behaviour == "revoked":
            body = graph_error(190, 460, "Error validating access token: session invalidated")
            return Response(json.dumps(body), status=400, content_type="application/json")
        username = _USERNAME.search(request.args["fields"])
        assert username is not None
        headers = {}
        if behaviour == "busy":
            usage = {"type": "instagram", "call_count": 97, "estimated_time_to_regain_access": 10}
            headers["X-Business-Use-Case-Usage"] = json.dumps({business_id: [usage]})
        return Response(
            json.dumps(graph_body(username.group(1))),
            headers=headers,
            content_type="application/json",
        )

    def calls(self) -> Counter[str]:
        """Business Discovery requests by the fingerprint of the credential they went to."""
        by_path = {f"/v21.0/{b}": f for (_, b), f in zip(CREDENTIALS, FINGERPRINTS, strict=True)}
        return Counter(by_path[r.path] for r, _ in self.server.log if r.path in by_path)


def pool_resource(
    mongo_uri: str, redis_url: str, server: HTTPServer, **options: Any
) -> InstagramResource:
    options.setdefault("token", None)
    options.setdefault("graph_credentials", RAW)
    return job_resources(
        mongo_uri, redis_url, server.url_for("/v21.0"), server.url_for(""), **options
    )["instagram"]


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert not any(token in text for token in [*TOKENS, TOKEN]), text[:300]


def used_via(outcome: FetchOutcome) -> str | None:
    """The fingerprint of the credential a Graph answer came through (from the notes)."""
    for note in outcome.notes:
        if note.startswith("fetched via Graph business discovery (credential "):
            return note.rsplit(" ", 1)[1].rstrip(")")
    return None


def test_three_credentials_with_budget_two_make_six_graph_calls_and_the_seventh_is_scraped(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    graph = GraphStandIn(httpserver)
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver, hourly_budget=2)
    # A fetcher per refresh, as each run builds its own.
    outcomes = [instagram.fetcher().fetch(f"pool.user{n}") for n in range(7)]

    assert [o.profile.source for o in outcomes] == ["graph"] * 6 + ["scrape"]
    assert graph.calls() == dict.fromkeys(FINGERPRINTS, 2)
    assert Counter(used_via(o) for o in outcomes[:6]) == dict.fromkeys(FINGERPRINTS, 2)
    skipped = [n for n in outcomes[6].notes if "hourly budget exhausted for credential" in n]
    assert sorted(n.split("credential ")[1].split(",")[0] for n in skipped) == sorted(FINGERPRINTS)
    fetcher = instagram.fetcher()
    assert fetcher.graph_status() is None, "spent is not disabled"
    states = {s.fingerprint: s for s in fetcher.pool_status()}
    assert {f: (s.used, s.limit, s.usable) for f, s in states.items()} == dict.fromkeys(
        FINGERPRINTS, (2, 2, False)
    )
    budget_keys = {k.decode() for k in redis_client.scan_iter("ig-refresh:budget:*:log")}
    assert budget_keys == {
        f"ig-refresh:budget:{graph_budget_name(f)}:log" for f in FINGERPRINTS
    } | {"ig-refresh:budget:scrape:log"}


def test_a_revoked_credential_sidelines_only_itself_and_is_reported_by_fingerprint(
    mongo_uri: str,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    graph = GraphStandIn(httpserver)
    graph.behaviour[TOKENS[1]] = "revoked"
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver)
    # One fetcher for all: its rotation gives every credential the first try within 3 fetches.
    fetcher = instagram.fetcher()
    outcomes = [fetcher.fetch(f"pool.user{n}") for n in range(9)]

    assert [o.profile.source for o in outcomes] == ["graph"] * 9, "the next credential answered"
    calls = graph.calls()
    assert calls[FINGERPRINTS[1]] == 1, "asked once, then sidelined"
    assert calls[FINGERPRINTS[0]] + calls[FINGERPRINTS[2]] == 9
    assert {used_via(o) for o in outcomes} == {FINGERPRINTS[0], FINGERPRINTS[2]}
    fetcher = instagram.fetcher()  # what the next run sees
    assert fetcher.graph_status() is None, "two credentials still work"
    states = {s.fingerprint: s for s in fetcher.pool_status()}
    disabled = states[FINGERPRINTS[1]].disabled_reason
    assert disabled is not None and disabled.startswith("graph_auth_190")
    assert states[FINGERPRINTS[0]].disabled_reason is None
    assert states[FINGERPRINTS[2]].disabled_reason is None

    config = HealthConfig(
        host="127.0.0.1",
        port=0,
        redis_url=redis_url_for_test,
        instagram_graph_credentials=RAW,
        cache_seconds=0,
    )
    with HealthServer(config) as server:
        _, _, ready = get(server, "/ready")
        samples, metrics = scrape(server)
    check = json.loads(ready)["checks"]["instagram_graph"]
    assert check["ok"] is True
    assert check["detail"] == f"2 of 3 credential(s) enabled; disabled: {FINGERPRINTS[1]}"
    assert check["items"][FINGERPRINTS[1]].startswith("disabled until ")
    for fingerprint in (FINGERPRINTS[0], FINGERPRINTS[2]):
        assert check["items"][fingerprint].startswith("enabled; ")
    enabled = {
        f: value(samples, "ig_refresh_graph_credential_enabled", credential=f) for f in FINGERPRINTS
    }
    assert enabled == {FINGERPRINTS[0]: 1, FINGERPRINTS[1]: 0, FINGERPRINTS[2]: 1}
    assert value(samples, "ig_refresh_graph_enabled") == 1
    used = sum(
        value(samples, "ig_refresh_budget_used", budget=graph_budget_name(f)) for f in FINGERPRINTS
    )
    assert used == sum(calls.values()), "every call Graph received was charged, and no more"

    notes = "\n".join(n for o in outcomes for n in o.notes)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    memory = "\n".join(
        f"{k.decode()}={redis_client.get(k)!r}"
        for k in redis_client.scan_iter()
        if redis_client.type(k) == b"string"
    )
    assert_no_token(notes, logs, memory, ready.decode(), metrics)


def test_every_credential_revoked_is_named_and_the_refresh_scrapes(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    graph = GraphStandIn(httpserver)
    graph.behaviour = dict.fromkeys(TOKENS, "revoked")
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver)
    first = instagram.fetcher().fetch("pool.user0")
    second = instagram.fetcher().fetch("pool.user1")

    assert (first.profile.source, second.profile.source) == ("scrape", "scrape")
    assert graph.calls() == dict.fromkeys(FINGERPRINTS, 1), "each asked once, in one refresh"
    skipped = [n for n in second.notes if n.startswith("graph skipped: disabled for credential")]
    assert len(skipped) == 3
    status = instagram.fetcher().graph_status()
    assert status is not None
    assert [part.split(":")[0] for part in status.split("; ")] == [
        f"credential {f}" for f in FINGERPRINTS
    ]
    assert "graph_auth_190" in status
    assert_no_token(status, *first.notes, *second.notes)


def test_a_credential_paused_by_its_usage_headers_sidelines_only_itself(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    graph = GraphStandIn(httpserver)
    graph.behaviour[TOKENS[0]] = "busy"
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver)
    # One fetcher for all: its rotation gives every credential the first try within 3 fetches.
    fetcher = instagram.fetcher()
    outcomes = [fetcher.fetch(f"pool.user{n}") for n in range(6)]

    assert [o.profile.source for o in outcomes] == ["graph"] * 6
    calls = graph.calls()
    assert calls[FINGERPRINTS[0]] == 1, "answered once, then paused"
    assert calls[FINGERPRINTS[1]] + calls[FINGERPRINTS[2]] == 5
    assert min(calls[FINGERPRINTS[1]], calls[FINGERPRINTS[2]]) >= 2
    states = {s.fingerprint: s for s in fetcher.pool_status()}
    busy = states[FINGERPRINTS[0]]
    assert 0 < busy.paused_seconds <= 600
    assert busy.paused_reason == "graph usage 97% >= 90%"
    assert busy.disabled_reason is None and not busy.usable
    for fingerprint in FINGERPRINTS[1:]:
        assert states[fingerprint].paused_seconds == 0 and states[fingerprint].usable
    assert fetcher.graph_status() is None


def test_the_single_token_variables_alone_still_work(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    instagram = pool_resource(
        mongo_uri, redis_url_for_test, httpserver, token=TOKEN, graph_credentials=None
    )
    outcome = instagram.fetcher().fetch("natgeo")
    assert outcome.profile.source == "graph"
    assert used_via(outcome) == token_fingerprint(TOKEN)
    (state,) = instagram.fetcher().pool_status()
    assert (state.fingerprint, state.used, state.limit) == (token_fingerprint(TOKEN), 1, 200)


def test_the_first_credential_inherits_the_single_graph_budgets_window_on_upgrade(
    mongo_uri: str, mongo_db: Any, redis_url_for_test: str, redis_client: redis.Redis
) -> None:
    """Calls the old single ``graph`` budget journaled within the hour still count against the
    token that made them (now the first credential), and against no other."""
    old = HourlyBudget(redis_client, "graph", 200, journal=BudgetJournal(mongo_db))
    for _ in range(2):
        assert old.try_acquire() == 0
    old.block_for(120, "graph usage 95% >= 90%")
    instagram = job_resources(
        mongo_uri,
        redis_url_for_test,
        "http://127.0.0.1:9/v21.0",
        "http://127.0.0.1:9",
        graph_credentials=RAW,
        hourly_budget=2,
    )["instagram"]
    budgets = instagram.graph_budgets()
    assert list(budgets) == [token_fingerprint(TOKEN), *FINGERPRINTS], "the single pair first"
    first, *others = budgets.values()
    status = first.status()
    assert (status.used, status.blocked_reason) == (2, "graph usage 95% >= 90%")
    assert 0 < status.blocked_for_seconds <= 130
    assert [b.status().used for b in others] == [0, 0, 0], "the others inherit nothing"


def test_insights_calls_are_charged_to_a_credential_with_capacity(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(f"/v21.0/{OWNER_ID}/insights").respond_with_json({"data": []})
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver, hourly_budget=1)
    client = instagram.insights_client()
    yesterday = date.today() - timedelta(days=1)
    with pytest.raises(BudgetExhausted):
        for _ in range(4):
            client.fetch(OWNER_ID, "owner-token", [], yesterday)
    received = sum(1 for r, _ in httpserver.log if r.path.endswith("/insights"))
    states = instagram.fetcher().pool_status()
    assert [s.used for s in states] == [1, 1, 1]
    assert received == 3, "what Graph received is what the pool admitted: one per credential"


def test_background_capacity_counts_each_credential_not_disabled(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver)
    FetchMemory(redis_client).disable_graph(FINGERPRINTS[2], "graph_auth_190: revoked")
    capacity = instagram.background_capacity()
    assert [b.name for b in capacity.budgets] == [
        graph_budget_name(FINGERPRINTS[0]),
        graph_budget_name(FINGERPRINTS[1]),
        "scrape",
    ]
    assert capacity.per_hour == 100 + 100 + 30


def test_a_malformed_credentials_value_fails_the_fetch_naming_the_entry(
    mongo_uri: str, redis_url_for_test: str, redis_client: redis.Redis, httpserver: HTTPServer
) -> None:
    bad = json.dumps([{"access_token": TOKENS[0], "business_account_id": "1"}, {"x": TOKENS[1]}])
    instagram = pool_resource(mongo_uri, redis_url_for_test, httpserver, graph_credentials=bad)
    with pytest.raises(CredentialsInvalid) as info:
        instagram.fetcher()
    assert str(info.value) == (
        "INSTAGRAM_GRAPH_CREDENTIALS[1] has 1 field(s) besides access_token and business_account_id"
    )
    config = HealthConfig(
        host="127.0.0.1", port=0, redis_url=redis_url_for_test, instagram_graph_credentials=bad
    )
    with HealthServer(config) as server:
        _, _, ready = get(server, "/ready")
    check = json.loads(ready)["checks"]["instagram_graph"]
    assert (check["ok"], check["detail"]) == (False, f"unknown: {info.value}")
    assert_no_token(ready.decode())


def test_the_rotation_moves_the_first_credential_on_by_one_per_call(
    redis_client: redis.Redis,
) -> None:
    lanes = [
        GraphLane(
            GraphClient("http://127.0.0.1:9/v21.0", business_id, token),
            HourlyBudget(redis_client, graph_budget_name(token_fingerprint(token)), 1),
        )
        for token, business_id in CREDENTIALS
    ]
    pool = GraphPool(lanes, FetchMemory(redis_client), start=1)
    orders = [[lane.fingerprint for lane in pool.rotation()] for _ in range(4)]
    f0, f1, f2 = FINGERPRINTS
    assert orders == [[f1, f2, f0], [f2, f0, f1], [f0, f1, f2], [f1, f2, f0]]
    assert GraphPool([], FetchMemory(redis_client)).rotation() == []


def test_refresh_runs_spread_over_the_pool_and_the_fourth_is_scraped(
    mongo_uri: str,
    mongo_db: Any,
    redis_url_for_test: str,
    redis_client: redis.Redis,
    httpserver: HTTPServer,
    instance: DagsterInstance,
) -> None:
    """The refresh job itself (in process, the code location's own definitions): 3 credentials
    with a budget of 1 each give 3 Graph refreshes, one per credential, then scraping."""
    graph = GraphStandIn(httpserver)
    resources = job_resources(
        mongo_uri,
        redis_url_for_test,
        httpserver.url_for("/v21.0"),
        httpserver.url_for(""),
        token=None,
        graph_credentials=RAW,
        hourly_budget=1,
    )
    sources = []
    for n in range(4):
        account_id = seed_account(mongo_db, handle=f"pool.user{n}")
        result = run_refresh(account_id, resources, instance)
        assert result.success
        (log,) = mongo_db["DataRefreshLog"].find({"runId": result.run_id})
        sources.append(log["source"])
    assert sources == ["graph", "graph", "graph", "scrape"]
    assert graph.calls() == dict.fromkeys(FINGERPRINTS, 1)
