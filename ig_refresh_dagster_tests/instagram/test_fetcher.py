"""ProfileFetcher end to end: real Redis (budgets and memory), a real local HTTP server for
Graph and instagram.com, and the fixture corpus for what they answer. One behaviour test per
error class, through the fetcher."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from redis.backoff import NoBackoff
from redis.retry import Retry

from ig_refresh_dagster.instagram import (
    AccountGone,
    BudgetExhausted,
    BudgetUnavailable,
    GraphClient,
    InvalidUsername,
    PermanentError,
    ProfileFetcher,
    ScrapeBlocked,
    TransientError,
)
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.fetch_memory import FetchMemory

from .helpers import (
    GRAPH_PATH,
    case_params,
    graph_client,
    load_case,
    pool_of,
    requested_kinds,
    scraper,
    serve,
    serve_scrape,
)

SCRAPE_OK = load_case("scrape", "json_ok_full")  # @sam.outdoors via the JSON endpoint


def scrape_ok_for(username: str) -> dict[str, Any]:
    """SCRAPE_OK answering for ``username`` (a body naming another account is refused)."""
    case = copy.deepcopy(SCRAPE_OK)
    case["username"] = username
    case["json_response"]["json"]["data"]["user"]["username"] = username
    return case


class Rig:
    """A fetcher wired to real budgets and memory in Redis and to the local HTTP server."""

    def __init__(
        self,
        server: HTTPServer,
        client: redis.Redis,
        *,
        graph_limit: int = 100,
        scrape_limit: int = 100,
        graph: GraphClient | str | None = "default",
        graph_redis: redis.Redis | None = None,
        scrape_redis: redis.Redis | None = None,
        **options: Any,
    ) -> None:
        self.server = server
        self.graph_budget = HourlyBudget(graph_redis or client, "graph", graph_limit)
        self.scrape_budget = HourlyBudget(scrape_redis or client, "scrape", scrape_limit)
        self.memory = FetchMemory(client)
        self.graph = graph_client(server) if graph == "default" else graph
        self.fetcher = ProfileFetcher(
            pool_of(self.graph, self.graph_budget, self.memory),  # type: ignore[arg-type]
            scraper(server),
            self.scrape_budget,
            self.memory,
            **options,
        )

    def graph_answers(self, case: str) -> None:
        serve(self.server, GRAPH_PATH, load_case("graph", case)["response"], "graph")

    def scrape_answers(self, case: dict[str, Any] | str) -> None:
        serve_scrape(self.server, load_case("scrape", case) if isinstance(case, str) else case)

    def kinds(self) -> list[str]:
        return requested_kinds(self.server)


def dead_redis(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


# -- success paths -------------------------------------------------------------------------------


def test_graph_success_uses_only_graph(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("ok_full")
    outcome = rig.fetcher.fetch("@Acme.Studio")
    assert outcome.profile.method == "business_discovery"
    assert outcome.notes == [
        f"fetched via Graph business discovery (credential {rig.graph.token_fingerprint})"
    ]
    assert rig.kinds() == ["graph"]
    assert rig.graph_budget.status().used == 1
    assert rig.scrape_budget.status().used == 0


def test_without_graph_client_scrapes(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    rig = Rig(httpserver, redis_client, graph=None)
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.profile.method == "web_profile_json"
    assert outcome.notes[0] == "graph skipped: not configured"
    assert rig.fetcher.graph_status() is None
    assert rig.graph_budget.status().used == 0


# -- GraphAccountUnavailable: fall back, remember ------------------------------------------------


def test_not_business_falls_back_and_is_remembered(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, not_business_ttl_seconds=600)
    rig.graph_answers("err_100_2207013_not_business")
    rig.scrape_answers(SCRAPE_OK)
    first = rig.fetcher.fetch("sam.outdoors")
    assert first.profile.followers_count == 2318
    assert "not a business/creator account" in first.notes[0]
    assert rig.memory.is_not_business("sam.outdoors")
    second = rig.fetcher.fetch("sam.outdoors")
    assert "remembered as not a business" in second.notes[0]
    assert rig.kinds() == ["graph", "json", "json"]
    assert rig.graph_budget.status().used == 1


# -- GraphAuthError: disable Graph for this token ------------------------------------------------


def test_auth_error_disables_graph_until_token_changes(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("err_190_expired")
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.profile.method == "web_profile_json"
    assert any(n.startswith("graph disabled for credential") for n in outcome.notes)
    status = rig.fetcher.graph_status()
    assert status is not None
    assert status.startswith(f"credential {rig.graph.token_fingerprint}: graph_auth_190")
    again = rig.fetcher.fetch("sam.outdoors")
    assert again.notes[0].startswith("graph skipped: disabled for credential")
    assert "(graph_auth_190" in again.notes[0]
    assert rig.kinds() == ["graph", "json", "json"]

    fresh = ProfileFetcher(
        pool_of(graph_client(httpserver, token="a-new-token"), rig.graph_budget, rig.memory),
        scraper(httpserver),
        rig.scrape_budget,
        rig.memory,
    )
    assert fresh.graph_status() is None
    fresh.fetch("sam.outdoors")
    assert rig.kinds()[-2:] == ["graph", "json"]


@pytest.mark.parametrize(
    "case", ["err_10_permission", "err_200_permission", "err_230_permission", "err_102_session"]
)
def test_permission_errors_disable_graph(
    httpserver: HTTPServer, redis_client: redis.Redis, case: str
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers(case)
    rig.scrape_answers(SCRAPE_OK)
    rig.fetcher.fetch("sam.outdoors")
    assert rig.fetcher.graph_status() is not None


# -- GraphRateLimited and usage headers: block the Graph budget ----------------------------------


def test_rate_limited_blocks_graph_budget_and_scrapes(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("err_80002_buc_with_estimate")
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.profile.method == "web_profile_json"
    status = rig.graph_budget.status()
    assert 0 < status.blocked_for_seconds <= 1800
    assert status.blocked_reason is not None
    # the next fetch does not touch Graph while blocked
    again = rig.fetcher.fetch("sam.outdoors")
    assert again.notes[0].startswith("graph skipped: hourly budget exhausted")
    assert rig.kinds() == ["graph", "json", "json"]


def test_high_usage_on_success_blocks_graph(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, usage_threshold_percent=90)
    rig.graph_answers("ok_high_buc_usage")
    outcome = rig.fetcher.fetch("acme.studio")
    assert outcome.profile.method == "business_discovery"
    assert any(n.startswith("graph usage 97% >= 90%") for n in outcome.notes)
    status = rig.graph_budget.status()
    assert 0 < status.blocked_for_seconds <= 720
    assert status.blocked_reason == "graph usage 97% >= 90%"


def test_high_usage_without_estimate_uses_default_pause(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, high_usage_block_seconds=300)
    rig.graph_answers("ok_high_app_usage")
    rig.fetcher.fetch("acme.studio")
    assert 0 < rig.graph_budget.status().blocked_for_seconds <= 300


def test_usage_below_threshold_does_not_block(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("ok_full")
    rig.fetcher.fetch("acme.studio")
    assert rig.graph_budget.status().blocked_for_seconds == 0


# -- TransientError from Graph (retry class) -----------------------------------------------------


def test_graph_transient_falls_back_to_scrape(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("err_2_service")
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.profile.method == "web_profile_json"
    assert any(n.startswith("graph failed, will retry later") for n in outcome.notes)


def test_graph_transient_reraised_when_scrape_budget_is_exhausted(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, scrape_limit=0)
    rig.graph_answers("err_2_service")
    with pytest.raises(TransientError) as info:
        rig.fetcher.fetch("sam.outdoors")
    assert info.value.reason == "graph_transient"
    assert any(n.startswith("scrape skipped") for n in info.value.notes)
    assert rig.kinds() == ["graph"]


# -- PermanentError from Graph (no-retry class for Graph, but scraping may still work) -----------


def test_graph_permanent_error_falls_back_to_scrape(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("err_100_invalid_parameter")
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.profile.method == "web_profile_json"
    assert any(n.startswith("graph failed: ") for n in outcome.notes)
    assert rig.fetcher.graph_status() is None


# -- budgets ------------------------------------------------------------------------------------


def test_graph_budget_exhausted_scrapes(httpserver: HTTPServer, redis_client: redis.Redis) -> None:
    rig = Rig(httpserver, redis_client, graph_limit=0)
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.notes[0].startswith("graph skipped: hourly budget exhausted")
    assert rig.kinds() == ["json"]


def test_both_budgets_exhausted_raises_budget_exhausted(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph_limit=1, scrape_limit=0)
    rig.graph_budget.try_acquire()
    rig.graph_budget.block_for(120, "test")
    with pytest.raises(BudgetExhausted) as info:
        rig.fetcher.fetch("sam.outdoors")
    # the shorter of the two waits: Graph's 120 s block, not scraping's hour
    assert 0 < info.value.retry_after <= 120
    assert httpserver.log == []


def test_rate_limited_graph_and_exhausted_scrape_wait_for_the_sooner(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, scrape_limit=0)
    rig.graph_answers("err_80002_buc_with_estimate")
    with pytest.raises(BudgetExhausted) as info:
        rig.fetcher.fetch("sam.outdoors")
    assert info.value.retry_after == 1800.0


def test_disabled_graph_and_exhausted_scrape(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, scrape_limit=0)
    assert rig.graph is not None
    rig.memory.disable_graph(rig.graph.token_fingerprint, "graph_auth_190: expired")
    with pytest.raises(BudgetExhausted) as info:
        rig.fetcher.fetch("sam.outdoors")
    assert 0 < info.value.retry_after <= 3600
    assert httpserver.log == []


def test_graph_budget_store_down_refuses_graph_but_scrapes(
    httpserver: HTTPServer, redis_client: redis.Redis, unused_port: int
) -> None:
    rig = Rig(httpserver, redis_client, graph_redis=dead_redis(unused_port))
    rig.graph_answers("ok_full")
    rig.scrape_answers(SCRAPE_OK)
    outcome = rig.fetcher.fetch("sam.outdoors")
    assert outcome.profile.method == "web_profile_json"
    assert outcome.notes[0].startswith("graph refused: budget store unreachable")
    assert rig.kinds() == ["json"]


def test_both_budget_stores_down_raise_budget_unavailable(
    httpserver: HTTPServer, redis_client: redis.Redis, unused_port: int
) -> None:
    dead = dead_redis(unused_port)
    rig = Rig(httpserver, redis_client, graph_redis=dead, scrape_redis=dead)
    with pytest.raises(BudgetUnavailable) as info:
        rig.fetcher.fetch("sam.outdoors")
    assert isinstance(info.value, TransientError)
    assert httpserver.log == []


# -- scrape errors propagate ---------------------------------------------------------------------


def test_scrape_blocked_propagates_as_retry_class(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph=None)
    rig.scrape_answers("json_please_wait_401")
    with pytest.raises(ScrapeBlocked) as info:
        rig.fetcher.fetch("sam.outdoors")
    assert isinstance(info.value, TransientError)
    assert info.value.retry_after == 900.0
    assert rig.scrape_budget.status().blocked_for_seconds == 0


def test_scrape_rate_block_can_pause_all_scraping(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph=None, pause_scraping_on_rate_block=True)
    rig.scrape_answers("json_429_retry_after")
    with pytest.raises(ScrapeBlocked):
        rig.fetcher.fetch("sam.outdoors")
    assert 0 < rig.scrape_budget.status().blocked_for_seconds <= 120
    with pytest.raises(BudgetExhausted):
        rig.fetcher.fetch("sam.outdoors")
    assert rig.kinds() == ["json"]


def test_login_wall_does_not_pause_scraping(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph=None, pause_scraping_on_rate_block=True)
    rig.scrape_answers("html_challenge_redirect")
    with pytest.raises(ScrapeBlocked):
        rig.fetcher.fetch("ada.l")
    assert rig.scrape_budget.status().blocked_for_seconds == 0


def test_account_gone_propagates_as_no_retry_class(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    rig.graph_answers("err_110_2207013_unknown_user")
    rig.scrape_answers("json_404_then_html_404")
    with pytest.raises(AccountGone) as info:
        rig.fetcher.fetch("ada.l")
    assert isinstance(info.value, PermanentError)
    assert not isinstance(info.value, TransientError)
    assert info.value.notes[-1].startswith("scrape failed: Instagram has no public profile")


def test_scrape_server_error_propagates_as_transient(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph=None)
    rig.scrape_answers("json_500")
    with pytest.raises(TransientError) as info:
        rig.fetcher.fetch("sam.outdoors")
    assert info.value.reason == "scrape_server_error"


def test_invalid_username_is_rejected_before_any_call(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client)
    with pytest.raises(InvalidUsername):
        rig.fetcher.fetch("not a/username")
    assert httpserver.log == []
    assert rig.graph_budget.status().used == 0
    assert rig.scrape_budget.status().used == 0


@pytest.mark.parametrize("case", case_params("graph"))
def test_every_graph_answer_ends_in_a_profile_or_a_taxonomy_error(
    httpserver: HTTPServer, redis_client: redis.Redis, case: dict[str, Any]
) -> None:
    """Whatever Graph says, the fetcher either returns a profile or raises one of ours, and a
    failed Graph call always gets a scrape attempt."""
    rig = Rig(httpserver, redis_client)
    serve(httpserver, GRAPH_PATH, case["response"], "graph")
    rig.scrape_answers(scrape_ok_for("acme.studio"))
    outcome = rig.fetcher.fetch("acme.studio")
    if "error" in case["expect"]:
        assert outcome.profile.source == "scrape"
        assert rig.kinds() == ["graph", "json"]
    else:
        assert outcome.profile.source == "graph"


def _json_walled_page_redirected(rig: Rig) -> None:
    """The JSON endpoint answers 401, the page redirects once within Instagram, then answers:
    three requests to Instagram for one profile."""
    page = load_case("scrape", "html_en_exact")
    rig.scrape_answers(
        {
            **page,
            "json_response": {"status": 401, "json": {"message": "", "status": "fail"}},
            "html_response": {"status": 302, "headers": {"Location": "/ada.l/?hl=en"}, "text": ""},
            "extra_routes": {"/ada.l/?hl=en": page["html_response"]},
        }
    )


def test_every_request_to_instagram_is_charged_to_the_scrape_budget(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph=None)
    _json_walled_page_redirected(rig)
    outcome = rig.fetcher.fetch("ada.l")
    assert outcome.profile.method != "web_profile_json"
    assert len(httpserver.log) == 3
    assert rig.scrape_budget.status().used == 3


def test_a_budget_spent_mid_fetch_stops_before_the_next_request(
    httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    rig = Rig(httpserver, redis_client, graph=None, scrape_limit=2)
    _json_walled_page_redirected(rig)
    with pytest.raises(BudgetExhausted) as info:
        rig.fetcher.fetch("ada.l")
    assert "before request 3 for @ada.l" in info.value.message
    assert len(httpserver.log) == 2
    assert rig.scrape_budget.status().used == 2
