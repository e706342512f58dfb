"""The Instagram stand-in used by the demo: its fixtures drive the real clients to every
outcome the demo promises, and it runs as a process that stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import redis
import requests

from ig_refresh_dagster.devstack.instagram_standin import DEFAULT_FIXTURES, InstagramStandin
from ig_refresh_dagster.instagram import (
    AccountGone,
    GraphAuthError,
    GraphClient,
    PermanentError,
    ProfileFetcher,
    ProfileScraper,
    ScrapeBlocked,
)
from ig_refresh_dagster.instagram.insights import InsightsClient
from ig_refresh_dagster.instagram.metrics import DEFAULT_GRAPH_MAJOR
from ig_refresh_dagster.instagram.scrape import IG_APP_ID
from ig_refresh_dagster.instagram.transport import GraphTransport
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.fetch_memory import FetchMemory

from .helpers import pool_of

BUSINESS_ID = "17841400000000001"
ACCOUNTS: list[dict[str, Any]] = json.loads(
    (DEFAULT_FIXTURES / "accounts.json").read_text(encoding="utf-8")
)


@pytest.fixture
def standin() -> Iterator[InstagramStandin]:
    with InstagramStandin(token="demo-token") as server:
        yield server


def test_demo_fixtures_cover_every_outcome() -> None:
    expected = [a["expected"] for a in ACCOUNTS]
    assert len(ACCOUNTS) >= 6
    assert expected.count("graph") >= 2
    assert {"scrape_json", "scrape_html", "blocked", "gone"} <= set(expected)


@pytest.mark.parametrize("account", ACCOUNTS, ids=[a["username"] for a in ACCOUNTS])
def test_demo_account_outcome(
    standin: InstagramStandin, redis_client: redis.Redis, account: dict[str, Any]
) -> None:
    memory = FetchMemory(redis_client)
    fetcher = ProfileFetcher(
        pool_of(
            GraphClient(standin.graph_url, BUSINESS_ID, "demo-token"),
            HourlyBudget(redis_client, "graph", 100),
            memory,
        ),
        ProfileScraper(standin.web_url),
        HourlyBudget(redis_client, "scrape", 100),
        memory,
    )
    expected = account["expected"]
    if expected == "blocked":
        with pytest.raises(ScrapeBlocked):
            fetcher.fetch(account["username"])
        return
    if expected == "gone":
        with pytest.raises(AccountGone):
            fetcher.fetch(account["username"])
        return
    profile = fetcher.fetch(account["username"]).profile
    method = {
        "graph": "business_discovery",
        "scrape_json": "web_profile_json",
        "scrape_html": "profile_html",
    }[expected]
    assert profile.method == method
    fields = profile.to_account_fields()
    # the demo shows a change against the seeded values
    assert fields["followerCount"] != account["before"]["followerCount"]
    assert fields["name"]


def test_wrong_token_is_an_auth_error(standin: InstagramStandin) -> None:
    with pytest.raises(GraphAuthError):
        GraphClient(standin.graph_url, BUSINESS_ID, "wrong-token").fetch("acme.studio")


def test_token_in_url_is_refused(standin: InstagramStandin) -> None:
    response = requests.get(
        f"{standin.graph_url}/{BUSINESS_ID}",
        params={
            "fields": "business_discovery.username(acme.studio){id}",
            "access_token": "demo-token",
        },
        headers={"Authorization": "Bearer demo-token"},
        timeout=5,
    )
    assert response.status_code == 400
    assert "header" in response.json()["error"]["message"]


def test_media_limit_is_applied(standin: InstagramStandin) -> None:
    client = GraphClient(standin.graph_url, BUSINESS_ID, "demo-token", media_limit=1)
    assert len(client.fetch("acme.studio").profile.recent_media) == 1


def test_owner_insights_endpoints(standin: InstagramStandin) -> None:
    """The demo's insights answer as the default Graph version does: every metric the client
    asks of an image, a reel and an album is offered, so nothing is unsupported."""
    (acme,) = [a for a in ACCOUNTS if "auth" in a]
    assert acme["username"] == "acme.studio"
    user_id, token = acme["auth"]["userId"], acme["auth"]["accessToken"]
    media = GraphClient(standin.graph_url, BUSINESS_ID, "demo-token").fetch("acme.studio")
    client = InsightsClient(GraphTransport(standin.graph_url))
    insights = client.fetch(user_id, token, media.profile.recent_media, date(2026, 11, 27))
    assert insights.metrics == {
        "reach": 1830,
        "follower_count": 37,
        "accounts_engaged": 640,
        "total_interactions": 1175,
        "likes": 902,
        "comments": 41,
        "shares": 118,
        "saves": 114,
        "profile_links_taps": 31,
        "views": 9120,
    }
    assert insights.unsupported == []
    image, reel, album = insights.media
    assert image.metrics["views"] == 21400 and image.metrics["profile_visits"] == 160
    assert reel.metrics["ig_reels_avg_watch_time"] == 7340 and reel.metrics["shares"] == 388
    assert "views" not in album.metrics and album.metrics["reach"] == 9800
    assert ("insights", user_id) in standin.requests
    # our Business Discovery token is not the owner's
    with pytest.raises(GraphAuthError):
        client.fetch(user_id, "demo-token", [], date(2026, 11, 27))
    with pytest.raises(GraphAuthError):
        client.fetch(user_id, token.upper(), ["17900000000000100"], date(2026, 11, 27))
    with pytest.raises(PermanentError):
        client.fetch(user_id, token, ["NoSuchMedia"], date(2026, 11, 27))


def test_insights_token_in_url_is_refused(standin: InstagramStandin) -> None:
    (acme,) = [a for a in ACCOUNTS if "auth" in a]
    token = acme["auth"]["accessToken"]
    response = requests.get(
        f"{standin.graph_url}/{acme['auth']['userId']}/insights",
        params={"metric": "reach", "period": "day", "access_token": token},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 400
    assert "header" in response.json()["error"]["message"]


def test_json_endpoint_wants_the_app_id(standin: InstagramStandin) -> None:
    url = f"{standin.web_url}/api/v1/users/web_profile_info/"
    without = requests.get(url, params={"username": "sam.outdoors"}, timeout=5)
    assert without.status_code == 400
    with_id = requests.get(
        url, params={"username": "sam.outdoors"}, headers={"x-ig-app-id": IG_APP_ID}, timeout=5
    )
    assert with_id.json()["data"]["user"]["username"] == "sam.outdoors"


def test_runs_as_a_process_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ig_refresh_dagster.devstack.instagram_standin",
            "--port",
            "0",
            "--token",
            "proc-token",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert urls["graph_url"].endswith(f"/v{DEFAULT_GRAPH_MAJOR}.0")
        profile = GraphClient(urls["graph_url"], BUSINESS_ID, "proc-token").fetch("acme.studio")
        assert profile.profile.name == "Acme Studio"
        page = requests.get(f"{urls['web_url']}/lena.fotografie/", timeout=5)
        assert page.status_code == 200 and "og:description" in page.text
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
