"""Owner insights: InsightsClient against a real local HTTP server answering with Graph's
bodies, the InstagramInsights store, and reading the owner's authorisation."""

from __future__ import annotations

import copy
import json
import logging
import traceback
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from bson import ObjectId
from pymongo.errors import DuplicateKeyError
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from ig_refresh_dagster import redaction
from ig_refresh_dagster.devstack.instagram_standin import response_from_spec
from ig_refresh_dagster.instagram import (
    GraphAuthError,
    GraphRateLimited,
    InstagramError,
    PermanentError,
    RecentMedia,
    TransientError,
)
from ig_refresh_dagster.instagram.insights import (
    AccountInsights,
    InsightsClient,
    MediaInsights,
)
from ig_refresh_dagster.instagram.metrics import (
    DEFAULT_GRAPH_MAJOR,
    account_series_metrics,
    account_total_metrics,
    media_metrics,
)
from ig_refresh_dagster.instagram.transport import GraphTransport
from ig_refresh_dagster.stores.insights import InsightsStore, OwnerAuth, owner_auth

from .helpers import FIXTURES, GRAPH_VERSION, load_case

USER_ID = "17841401111111111"
MEDIA = ["17900000000000001", "17900000000000002"]
# What Business Discovery reports of them: a feed image and a reel.
RECENT = [
    RecentMedia(id=MEDIA[0], media_type="IMAGE", media_product_type="FEED"),
    RecentMedia(id=MEDIA[1], media_type="VIDEO", media_product_type="REELS"),
]
ACCOUNT_SERIES_METRICS = account_series_metrics(DEFAULT_GRAPH_MAJOR)
ACCOUNT_TOTAL_METRICS = account_total_metrics(DEFAULT_GRAPH_MAJOR)
DAY = date(2026, 11, 27)
SINCE, UNTIL = "1795737600", "1795824000"  # 2026-11-27T00:00Z, 2026-11-28T00:00Z
OWNER_TOKEN = "owner-token-3b7d"
SECRET = "EAAOwnerLEAK0123456789abcdefSECRET"
ACCOUNT_PATH = f"/{GRAPH_VERSION}/{USER_ID}/insights"
ACCOUNT_ID = "665f1c2e9b1e8a0012345678"

EXPECTED_ACCOUNT = {
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
EXPECTED_MEDIA = [
    {
        "media_id": MEDIA[0],
        "metrics": {
            "reach": 15200,
            "likes": 1820,
            "comments": 64,
            "saved": 240,
            "shares": 95,
            "total_interactions": 2219,
            "views": 21400,
            "follows": 12,
            "profile_visits": 160,
        },
    },
    {
        "media_id": MEDIA[1],
        "metrics": {
            "reach": 30950,
            "likes": 2410,
            "comments": 120,
            "saved": 510,
            "shares": 388.0,
            "total_interactions": 3428,
            "views": 61870,
            "ig_reels_avg_watch_time": 7340,
            "ig_reels_video_view_total_time": 454125800,
        },
    },
]


def media_path(media_id: str) -> str:
    return f"/{GRAPH_VERSION}/{media_id}/insights"


def requested(request: Request) -> list[str]:
    return request.args.get("metric", "").split(",")


def graph_like(body: str, rejects: dict[str, str] | None = None) -> Callable[[Request], Response]:
    """Answer as Graph does from a fixture body: only the metrics the request asked for, and
    the error fixture ``rejects[m]`` while metric ``m`` is among them."""
    spec = load_case("insights", body)

    def handler(request: Request) -> Response:
        for metric, error in (rejects or {}).items():
            if metric in requested(request):
                return response_from_spec(load_case("insights", error), FIXTURES / "insights")
        answer = copy.deepcopy(spec)
        data = answer["json"]["data"]
        answer["json"]["data"] = [d for d in data if d["name"] in requested(request)]
        return response_from_spec(answer, FIXTURES / "insights")

    return handler


def serve_account(
    server: HTTPServer,
    rejects: dict[str, str] | None = None,
    series: str = "account_series",
    total: str = "account_total_value",
) -> None:
    series_handler, total_handler = graph_like(series, rejects), graph_like(total, rejects)

    def handler(request: Request) -> Response:
        if request.args.get("metric_type") == "total_value":
            return total_handler(request)
        return series_handler(request)

    server.expect_request(ACCOUNT_PATH, method="GET").respond_with_handler(handler)


def serve_media(
    server: HTTPServer,
    bodies: tuple[str, str] = ("media_values", "media_total_value"),
    rejects: dict[str, str] | None = None,
) -> None:
    for media_id, body in zip(MEDIA, bodies, strict=True):
        server.expect_request(media_path(media_id), method="GET").respond_with_handler(
            graph_like(body, rejects)
        )


def serve_error(server: HTTPServer, path: str, fixture: str) -> None:
    server.expect_request(path, method="GET").respond_with_response(
        response_from_spec(load_case("insights", fixture), FIXTURES / "insights")
    )


def client(
    server: HTTPServer, timeout: float = 5.0, version: str = GRAPH_VERSION
) -> InsightsClient:
    return InsightsClient(GraphTransport(server.url_for(f"/{version}"), timeout=timeout))


def queries(server: HTTPServer, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(r.query_string.decode()) for r, _ in server.log if r.path == path]


# -- fetching -------------------------------------------------------------------------------


def test_fetch_reads_series_and_total_value_shapes(httpserver: HTTPServer) -> None:
    serve_account(httpserver)
    serve_media(httpserver)
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, RECENT, DAY)
    assert insights.user_id == USER_ID
    assert insights.day == DAY
    # the series point for the 27th is the one Graph stamps with the end of that day
    assert insights.metrics == EXPECTED_ACCOUNT
    assert [m.model_dump() for m in insights.media] == EXPECTED_MEDIA
    assert isinstance(insights.media[1].metrics["shares"], float)
    assert isinstance(insights.metrics["reach"], int)
    assert insights.unsupported == []


def test_request_shape(httpserver: HTTPServer) -> None:
    serve_account(httpserver)
    serve_media(httpserver)
    client(httpserver).fetch(USER_ID, OWNER_TOKEN, RECENT, DAY)
    window = {"period": ["day"], "since": [SINCE], "until": [UNTIL]}
    assert queries(httpserver, ACCOUNT_PATH) == [
        {"metric": [",".join(ACCOUNT_SERIES_METRICS)], **window},
        {"metric": [",".join(ACCOUNT_TOTAL_METRICS)], **window, "metric_type": ["total_value"]},
    ]
    for media in RECENT:
        wanted = media_metrics(DEFAULT_GRAPH_MAJOR, media.media_type, media.media_product_type)
        assert queries(httpserver, media_path(media.id)) == [{"metric": [",".join(wanted)]}]
    for request, _ in httpserver.log:
        assert request.headers["Authorization"] == f"Bearer {OWNER_TOKEN}"
        assert OWNER_TOKEN not in request.url
        assert "access_token" not in request.args


def test_no_media_means_account_requests_only(httpserver: HTTPServer) -> None:
    serve_account(httpserver)
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [], DAY)
    assert insights.media == []
    assert len(httpserver.log) == 2


def test_an_older_graph_version_is_never_asked_for_views(httpserver: HTTPServer) -> None:
    """v21.0 predates `views`: asking would cost a refused call for the account and for every
    media."""
    account = f"/v21.0/{USER_ID}/insights"
    views_refused = {"views": "err_metric_named"}
    series = graph_like("account_series", views_refused)
    totals = graph_like("account_total_value", views_refused)
    httpserver.expect_request(account).respond_with_handler(
        lambda r: totals(r) if r.args.get("metric_type") == "total_value" else series(r)
    )
    for media_id, body in zip(MEDIA, ("media_values", "media_total_value"), strict=True):
        httpserver.expect_request(f"/v21.0/{media_id}/insights").respond_with_handler(
            graph_like(body, {"views": "err_media_views_product_type"})
        )
    insights = client(httpserver, version="v21.0").fetch(USER_ID, OWNER_TOKEN, RECENT, DAY)
    assert insights.unsupported == []
    assert "views" not in insights.metrics and insights.metrics["reach"] == 1830
    assert insights.media[1].metrics["ig_reels_avg_watch_time"] == 7340
    asked = [m for r, _ in httpserver.log for m in requested(r)]
    assert "views" not in asked
    assert len(httpserver.log) == 4


def test_each_media_is_asked_what_its_product_type_offers(httpserver: HTTPServer) -> None:
    """An album is not asked for `views`, a reel is asked for its watch time, and a media of
    unknown type only for what every type offers."""
    album = RecentMedia(
        id="17900000000000003", media_type="CAROUSEL_ALBUM", media_product_type="FEED"
    )
    unknown = "17900000000000004"
    serve_account(httpserver)
    serve_media(httpserver)
    for media_id in (album.id, unknown):
        httpserver.expect_request(media_path(media_id)).respond_with_handler(
            graph_like("media_values", {"views": "err_media_views_product_type"})
        )
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [*RECENT, album, unknown], DAY)
    assert insights.unsupported == []
    assert [m.model_dump() for m in insights.media[:2]] == EXPECTED_MEDIA
    assert queries(httpserver, media_path(album.id)) == [
        {"metric": ["reach,likes,comments,saved,shares,total_interactions,follows,profile_visits"]}
    ]
    assert queries(httpserver, media_path(unknown)) == [
        {"metric": ["reach,shares,total_interactions"]}
    ]
    assert insights.media[3].metrics == {"reach": 15200, "shares": 95, "total_interactions": 2219}


@pytest.mark.parametrize("secret", [None, "pw-views-metrics-42"])
def test_media_metric_refused_once_is_not_asked_again_of_that_kind(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    """Graph refuses `views` for this account's feed images: the first image costs one refused
    call, the next feed image is asked without it, a reel still with it. Also when a known
    secret shares 6 characters with "metric" or "views": redaction hides those in what is
    shown, never in what Graph's answer is read for."""
    monkeypatch.setattr(redaction, "_registered", {secret} if secret else set())
    images = [
        RecentMedia(id=media_id, media_type="IMAGE", media_product_type="FEED")
        for media_id in ("17900000000000005", "17900000000000006")
    ]
    serve_account(httpserver)
    for image in images:
        httpserver.expect_request(media_path(image.id)).respond_with_handler(
            graph_like("media_values", {"views": "err_media_views_product_type"})
        )
    httpserver.expect_request(media_path(MEDIA[1])).respond_with_handler(
        graph_like("media_total_value")
    )
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [*images, RECENT[1]], DAY)
    assert insights.unsupported == ["media:views"]
    first, second = (queries(httpserver, media_path(image.id)) for image in images)
    assert ["views" in q["metric"][0].split(",") for q in first] == [True, False]
    assert ["views" in q["metric"][0].split(",") for q in second] == [False]
    assert insights.media[0].metrics == insights.media[1].metrics
    assert insights.media[2].metrics["views"] == 61870


def test_empty_data_is_no_metrics_not_zero(httpserver: HTTPServer) -> None:
    """Graph answers an empty data list when it has nothing for the period."""
    httpserver.expect_request(ACCOUNT_PATH).respond_with_json({"data": []})
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [], DAY)
    assert insights.metrics == {}
    assert insights.unsupported == []


def test_values_that_are_not_counts_are_unknown(httpserver: HTTPServer) -> None:
    """Every metric asked is a non-negative count or duration: anything else is not stored."""
    bad: list[object] = [-5, 2**70, "\u00b2", True, float("1e300")]
    body = {
        "data": [
            {"name": name, "total_value": {"value": value}}
            for name, value in zip(ACCOUNT_TOTAL_METRICS, [*bad, 7], strict=False)
        ]
    }
    httpserver.expect_request(ACCOUNT_PATH).respond_with_json(body)
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [], DAY)
    assert insights.metrics == {ACCOUNT_TOTAL_METRICS[len(bad)]: 7}


@pytest.mark.parametrize("error", ["err_metric_index", "err_metric_named"])
def test_unsupported_account_metric_is_dropped_and_reported(
    httpserver: HTTPServer, error: str
) -> None:
    serve_account(httpserver, rejects={"views": error})
    serve_media(httpserver)
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, RECENT, DAY)
    assert insights.unsupported == ["views"]
    assert insights.metrics == {k: v for k, v in EXPECTED_ACCOUNT.items() if k != "views"}
    assert [m.model_dump() for m in insights.media] == EXPECTED_MEDIA
    totals = [q for q in queries(httpserver, ACCOUNT_PATH) if "metric_type" in q]
    without_views = ",".join(m for m in ACCOUNT_TOTAL_METRICS if m != "views")
    assert [q["metric"] for q in totals] == [
        [",".join(ACCOUNT_TOTAL_METRICS)],
        [without_views],
    ]


def test_unnamed_rejection_retries_metrics_one_at_a_time(httpserver: HTTPServer) -> None:
    serve_account(httpserver, rejects={"views": "err_metric_unnamed"})
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [], DAY)
    assert insights.unsupported == ["views"]
    assert insights.metrics == {k: v for k, v in EXPECTED_ACCOUNT.items() if k != "views"}
    totals = [q["metric"][0] for q in queries(httpserver, ACCOUNT_PATH) if "metric_type" in q]
    assert totals == [",".join(ACCOUNT_TOTAL_METRICS), *ACCOUNT_TOTAL_METRICS]


def test_unsupported_media_metric_is_reported_with_prefix(httpserver: HTTPServer) -> None:
    serve_account(httpserver)
    httpserver.expect_request(media_path(MEDIA[0])).respond_with_handler(
        graph_like("media_values", {"shares": "err_media_metric_named"})
    )
    httpserver.expect_request(media_path(MEDIA[1])).respond_with_handler(
        graph_like("media_total_value")
    )
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, RECENT, DAY)
    assert insights.unsupported == ["media:shares"]
    assert "shares" not in insights.media[0].metrics
    assert insights.media[0].metrics["reach"] == 15200
    assert insights.media[1].model_dump() == EXPECTED_MEDIA[1]


def test_every_metric_rejected_leaves_empty_metrics(httpserver: HTTPServer) -> None:
    serve_account(httpserver, rejects={m: "err_metric_unnamed" for m in EXPECTED_ACCOUNT})
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, [], DAY)
    assert insights.metrics == {}
    assert insights.unsupported == [*ACCOUNT_SERIES_METRICS, *ACCOUNT_TOTAL_METRICS]


def test_media_without_insights_gets_empty_metrics(httpserver: HTTPServer) -> None:
    """A story with too few viewers is refused with code 10: a gap for that media, not a
    permission problem with the owner's token."""
    serve_account(httpserver)
    serve_error(httpserver, media_path(MEDIA[0]), "err_10_not_enough_viewers")
    httpserver.expect_request(media_path(MEDIA[1])).respond_with_handler(
        graph_like("media_total_value")
    )
    insights = client(httpserver).fetch(USER_ID, OWNER_TOKEN, RECENT, DAY)
    assert insights.media[0] == MediaInsights(media_id=MEDIA[0], metrics={})
    assert insights.media[1].model_dump() == EXPECTED_MEDIA[1]
    assert insights.unsupported == []


@pytest.mark.parametrize(
    ("fixture", "where", "error", "reason"),
    [
        ("err_190_expired", "account", GraphAuthError, "graph_auth_190"),
        ("err_190_expired", "media", GraphAuthError, "graph_auth_190"),
        ("err_10_permission", "media", GraphAuthError, "graph_auth_10"),
        ("err_2_service", "account", TransientError, "graph_transient"),
        ("http_502_html_body", "account", TransientError, "graph_unreadable"),
        ("http_502_html_body", "media", TransientError, "graph_unreadable"),
        ("err_4_app_limit", "account", GraphRateLimited, "graph_rate_limited_4"),
        ("err_100_33_missing_object", "account", PermanentError, "graph_error"),
        ("err_100_param", "account", PermanentError, "graph_error"),
    ],
)
def test_other_errors_use_the_graph_taxonomy(
    httpserver: HTTPServer, fixture: str, where: str, error: type[InstagramError], reason: str
) -> None:
    if where == "account":
        serve_error(httpserver, ACCOUNT_PATH, fixture)
    else:
        serve_account(httpserver)
        serve_error(httpserver, media_path(MEDIA[0]), fixture)
    with pytest.raises(InstagramError) as info:
        client(httpserver).fetch(USER_ID, OWNER_TOKEN, MEDIA, DAY)
    assert type(info.value) is error
    assert info.value.reason == reason
    subject = f"IG user {USER_ID}" if where == "account" else f"media {MEDIA[0]}"
    assert subject in str(info.value)
    # the fetch stops at the first failure: no request for the second media
    assert all(r.path != media_path(MEDIA[1]) for r, _ in httpserver.log)


def test_connection_refused_is_transient(unused_port: int) -> None:
    insights = InsightsClient(
        GraphTransport(f"http://127.0.0.1:{unused_port}/{GRAPH_VERSION}", timeout=2.0)
    )
    with pytest.raises(TransientError) as info:
        insights.fetch(USER_ID, OWNER_TOKEN, [], DAY)
    assert info.value.reason == "graph_network"


@pytest.mark.parametrize(
    ("user_id", "media_ids"),
    [
        ("../me", []),
        ("1784?fields=x", []),
        ("me", []),
        (USER_ID, ["17900000000000001/comments"]),
        (USER_ID, ["AcmeP0"]),
    ],
)
def test_ids_that_would_change_the_path_make_no_request(
    httpserver: HTTPServer, user_id: str, media_ids: list[str]
) -> None:
    with pytest.raises(PermanentError) as info:
        client(httpserver).fetch(user_id, OWNER_TOKEN, media_ids, DAY)
    assert info.value.reason == "invalid_graph_id"
    assert httpserver.log == []


# -- the owner's token never leaks ---------------------------------------------------------


def _bearer(request: Request) -> str:
    return request.headers.get("Authorization", "").removeprefix("Bearer ")


def _echo_in_paging(request: Request) -> Response:
    """Graph's paging links quote the token back."""
    spec = load_case("insights", "account_series")
    if request.args.get("metric_type") == "total_value":
        spec = load_case("insights", "account_total_value")
    spec["json"]["paging"] = {
        "next": f"https://graph.facebook.com/{GRAPH_VERSION}/{USER_ID}/insights"
        f"?access_token={_bearer(request)}&metric=reach"
    }
    return response_from_spec(spec, FIXTURES / "insights")


def _echo_in_rejection(request: Request) -> Response:
    if "views" in requested(request):
        index = requested(request).index("views")
        body = {
            "error": {
                "message": f"(#100) metric[{index}] invalid for {_bearer(request)}",
                "code": 100,
            }
        }
        return Response(json.dumps(body), status=400, mimetype="application/json")
    return _echo_in_paging(request)


def _echo_in_auth_error(request: Request) -> Response:
    body = {
        "error": {
            "message": f"Malformed access token {_bearer(request)}",
            "code": 190,
            "fbtrace_id": f"trace-{_bearer(request)}",
        }
    }
    return Response(json.dumps(body), status=400, mimetype="application/json")


def _echo_in_html(request: Request) -> Response:
    return Response(f"<html>Authorization: Bearer {_bearer(request)}</html>", status=502)


LEAKS = {
    "paging_links": _echo_in_paging,
    "metric_rejection_quoting_token": _echo_in_rejection,
    "auth_error_quoting_token": _echo_in_auth_error,
    "html_error_quoting_token": _echo_in_html,
}


def _assert_clean(text: str) -> None:
    assert SECRET not in text
    assert SECRET[:16] not in text


@pytest.mark.parametrize("answer", LEAKS.values(), ids=LEAKS.keys())
def test_owner_token_never_leaks(
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
    answer: Callable[[Request], Response],
) -> None:
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request(ACCOUNT_PATH).respond_with_handler(answer)
    texts: list[str] = []
    try:
        result = client(httpserver).fetch(USER_ID, SECRET, [], DAY)
    except InstagramError as exc:
        logging.getLogger("leak-check").exception("insights failed", exc_info=exc)
        texts += [str(exc), repr(exc), exc.message, "".join(traceback.format_exception(exc))]
    else:
        texts += [repr(result), str(result), result.model_dump_json()]
    for record in caplog.records:
        texts += [record.getMessage(), str(record.args)]
        if record.exc_info:
            texts.append("".join(traceback.format_exception(*record.exc_info)))
    texts += [request.url for request, _ in httpserver.log]
    for text in texts:
        _assert_clean(text)
    assert all(_bearer(request) == SECRET for request, _ in httpserver.log)


def test_rejection_is_logged_without_the_token(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ig_refresh_dagster.instagram.insights")
    httpserver.expect_request(ACCOUNT_PATH).respond_with_handler(_echo_in_rejection)
    client(httpserver).fetch(USER_ID, SECRET, [], DAY)
    (record,) = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert "views" in record.getMessage() and "[token]" in record.getMessage()


def test_secret_str_token_is_accepted(httpserver: HTTPServer) -> None:
    serve_account(httpserver)
    auth = OwnerAuth(user_id=USER_ID, access_token=OWNER_TOKEN)
    client(httpserver).fetch(auth.user_id, auth.access_token, [], DAY)
    assert all(r.headers["Authorization"] == f"Bearer {OWNER_TOKEN}" for r, _ in httpserver.log)


# -- store ----------------------------------------------------------------------------------


def _insights(day: date = DAY, reach: int = 1830) -> AccountInsights:
    return AccountInsights(
        user_id=USER_ID,
        day=day,
        metrics={"reach": reach, "profile_views": 212},
        media=[MediaInsights(media_id=MEDIA[0], metrics={"likes": 1820, "shares": 95.5})],
        unsupported=["views", "media:saved"],
    )


def test_store_document_shape(mongo_db: Any) -> None:
    store = InsightsStore(mongo_db)
    store.ensure_indexes()
    now = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    store.save(ACCOUNT_ID, _insights(), now)
    doc = store.for_day(ACCOUNT_ID, DAY)
    assert doc is not None
    doc.pop("_id")
    assert doc.pop("fetchedAt").replace(tzinfo=UTC) == now
    assert doc == {
        "accountId": ObjectId(ACCOUNT_ID),
        "day": "2026-11-27",
        "userId": USER_ID,
        "metrics": {"reach": 1830, "profile_views": 212},
        "media": [{"mediaId": MEDIA[0], "metrics": {"likes": 1820, "shares": 95.5}}],
        "unsupported": ["views", "media:saved"],
    }


def test_store_rerun_on_the_same_day_replaces(mongo_db: Any) -> None:
    store = InsightsStore(mongo_db)
    store.ensure_indexes()
    first = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    second = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    store.save(ACCOUNT_ID, _insights(reach=1830), first)
    original_id = store.for_day(ACCOUNT_ID, DAY)["_id"]
    rerun = _insights(reach=1902).model_copy(update={"media": [], "unsupported": []})
    store.save(ACCOUNT_ID, rerun, second)
    docs = list(mongo_db["InstagramInsights"].find({}))
    assert len(docs) == 1
    (doc,) = docs
    assert doc["_id"] == original_id
    assert doc["metrics"] == {"reach": 1902, "profile_views": 212}
    assert doc["media"] == [] and doc["unsupported"] == []
    assert doc["fetchedAt"].replace(tzinfo=UTC) == second


def test_store_keeps_one_document_per_account_and_day(mongo_db: Any) -> None:
    store = InsightsStore(mongo_db)
    store.ensure_indexes()
    other_account = "665f1c2e9b1e8a0087654321"
    now = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    store.save(ACCOUNT_ID, _insights(DAY), now)
    store.save(ACCOUNT_ID, _insights(date(2026, 11, 26)), now)
    store.save(other_account, _insights(DAY), now)
    coll = mongo_db["InstagramInsights"]
    assert coll.count_documents({}) == 3
    assert coll.count_documents({"accountId": ObjectId(ACCOUNT_ID)}) == 2
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"accountId": ObjectId(ACCOUNT_ID), "day": "2026-11-27"})


# -- owner authorisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"instagramAuth": None},
        {"instagramAuth": "token"},
        {"instagramAuth": {}},
        {"instagramAuth": {"userId": USER_ID}},
        {"instagramAuth": {"accessToken": OWNER_TOKEN}},
        {"instagramAuth": {"userId": "  ", "accessToken": OWNER_TOKEN}},
        {"instagramAuth": {"userId": USER_ID, "accessToken": ""}},
        {"instagramAuth": {"userId": USER_ID, "accessToken": "   "}},
        {"instagramAuth": {"userId": USER_ID, "accessToken": None}},
        {"instagramAuth": {"userId": True, "accessToken": OWNER_TOKEN}},
    ],
)
def test_owner_auth_is_none_for_unauthorised_accounts(doc: dict[str, Any]) -> None:
    assert owner_auth({"handle": "acme.studio", **doc}) is None


def test_owner_auth_reads_the_authorisation() -> None:
    auth = owner_auth(
        {"handle": "acme.studio", "instagramAuth": {"userId": USER_ID, "accessToken": SECRET}}
    )
    assert auth is not None
    assert auth.user_id == USER_ID
    assert auth.access_token.get_secret_value() == SECRET
    numeric = owner_auth({"instagramAuth": {"userId": 17841401111111111, "accessToken": SECRET}})
    assert numeric is not None and numeric.user_id == USER_ID


def test_owner_auth_never_prints_the_token(caplog: pytest.LogCaptureFixture) -> None:
    auth = owner_auth({"instagramAuth": {"userId": USER_ID, "accessToken": SECRET}})
    assert auth is not None
    caplog.set_level(logging.DEBUG)
    logging.getLogger("leak-check").info("authorised: %s %r", auth, auth)
    for text in (
        repr(auth),
        str(auth),
        f"{auth}",
        str(auth.access_token),
        auth.model_dump_json(),
        str(auth.model_dump()),
        caplog.text,
    ):
        _assert_clean(text)
