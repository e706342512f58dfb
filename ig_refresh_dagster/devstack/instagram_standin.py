"""A local HTTP stand-in for Instagram: the Graph API's Business Discovery and owner insights,
the web app's JSON profile endpoint and public profile pages, served from fixture files.

Nothing outside loopback is reachable here, so the demo and the tests point the real clients
(``GraphClient``, ``ProfileScraper``) at this server. It checks what Instagram would: the Graph
token must arrive as a Bearer header (a token in the URL is refused outright, so a regression
that leaks it into URLs fails loudly), and the JSON endpoint wants the web app's id header.

Fixtures: ``<fixtures_dir>/<username>/{graph,web_profile_info,profile}.json``, each a response
spec ``{"status": 200, "headers": {...}, "json": ... | "html": "file.html" | "text": "..."}``
(``html`` names a file beside the spec). A missing spec answers as Instagram does for an
account that endpoint cannot show: Graph 400 code 100/2207013, JSON and page 404.

Hostile fixtures, for the write path's identity and wall tests, outside the demo's
``accounts.json``: ``imposter.page`` serves a page whose title and description are another
account's (``(@someone.else)``, no ``og:url``), ``consent.wall`` a 200 cookie-consent page with
the generic title "Instagram" and no counts.

Insights (``/{version}/{id}/insights``) are served for accounts whose ``accounts.json`` entry
has ``"auth": {"userId", "accessToken"}``: the id is that user id, or a media id listed in the
account's ``media_insights.json`` (``{media_id: {metric: value}}``), and the Bearer token must be
that owner's token. ``account_insights.json`` holds ``{"series": {metric: value},
"total_value": {metric: value}, "rejects": [metric]}``: series metrics answer as ``values``
(one point per day between ``since`` and ``until``), ``metric_type=total_value`` ones as
``total_value``, and ``rejects`` (optional) are refused as Graph refuses metrics its version does
not offer (error 100 ``metric[i] must be one of the following values``). A media metric missing
from ``media_insights.json`` is refused as Graph refuses one the media's product type does not
offer (error 100 ``does not support the M metric for this media product type``). The Graph
version defaults to the one the pipeline defaults to.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from ig_refresh_dagster.instagram.errors import InvalidUsername
from ig_refresh_dagster.instagram.metrics import DEFAULT_GRAPH_MAJOR
from ig_refresh_dagster.instagram.scrape import IG_APP_ID
from ig_refresh_dagster.instagram.usernames import validate_username

DEFAULT_FIXTURES = Path(__file__).with_name("fixtures")
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Login \u2022 Instagram</title>"
    '<meta property="og:url" content="https://www.instagram.com/accounts/login/">'
    '</head><body><form><input name="username"><input name="password" type="password">'
    "</form></body></html>"
)


def response_from_spec(spec: dict[str, Any], base_dir: Path) -> Response:
    """Build the HTTP response a fixture spec describes."""
    headers = dict(spec.get("headers") or {})
    status = int(spec.get("status", 200))
    if "json" in spec:
        body: str | bytes = json.dumps(spec["json"])
        mimetype = "application/json"
    elif "html" in spec:
        body = (base_dir / spec["html"]).read_bytes()
        mimetype = "text/html"
    else:
        body = spec.get("text", "")
        mimetype = "text/plain"
    content_type = headers.pop("Content-Type", None)
    response = Response(body, status=status, headers=headers, mimetype=mimetype)
    if content_type:
        response.headers["Content-Type"] = content_type
    return response


def graph_error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "StandinTrace",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def _metric_rejected(index: int, valid: list[str]) -> dict[str, Any]:
    """How Graph refuses an account metric it does not offer: by its index in the request."""
    return graph_error(
        100, f"(#100) metric[{index}] must be one of the following values: {', '.join(valid)}"
    )


def _media_metric_rejected(metric: str) -> dict[str, Any]:
    """How Graph refuses a media metric the media's product type does not offer: by name."""
    return graph_error(
        100,
        f"(#100) The Media Insights API does not support the {metric} metric for this media "
        "product type.",
    )


def _day_ends(since: int, until: int) -> list[str]:
    """``end_time`` of each day between ``since`` and ``until``, stamped as Graph does: the end
    of the day at 07:00 UTC."""
    day = datetime.fromtimestamp(since, UTC).date()
    ends = []
    while datetime.combine(day, time.min, tzinfo=UTC).timestamp() < until:
        ends.append(f"{day + timedelta(days=1)}T07:00:00+0000")
        day += timedelta(days=1)
    return ends


def discovery_username(fields: str) -> str | None:
    """NAME from ``business_discovery.username(NAME){...}``."""
    marker = "business_discovery.username("
    start = fields.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = fields.find(")", start)
    return fields[start:end] if end > start else None


def _media_limit(fields: str) -> int | None:
    marker = "media.limit("
    start = fields.find(marker)
    if start < 0:
        return None
    end = fields.find(")", start)
    digits = fields[start + len(marker) : end]
    return int(digits) if digits.isdigit() else None


class InstagramStandin:
    """Serves the fixtures on ``host:port`` (port 0 picks a free one) from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "demo-token",
        fixtures_dir: Path | str | None = None,
        graph_version: str = f"v{DEFAULT_GRAPH_MAJOR}.0",
    ) -> None:
        self.host = host
        self.token = token
        self.graph_version = graph_version
        self.fixtures_dir = Path(fixtures_dir) if fixtures_dir else DEFAULT_FIXTURES
        self._requested_port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return int(self._server.port)

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def graph_url(self) -> str:
        return f"{self.web_url}/{self.graph_version}"

    def start(self) -> InstagramStandin:
        self._server = make_server(self.host, self._requested_port, self._app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="instagram-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> InstagramStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ---------------------------------------------------------------------

    def _record(self, endpoint: str, username: str | None) -> None:
        with self._lock:
            self.requests.append((endpoint, username))

    def _spec(self, username: str, endpoint: str) -> tuple[dict[str, Any], Path] | None:
        try:
            account_dir = self.fixtures_dir / validate_username(username)
        except InvalidUsername:
            return None
        path = account_dir / f"{endpoint}.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8")), account_dir

    @Request.application
    def _app(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if request.method != "GET":
            return Response("method not allowed", status=405)
        if parts[:2] == ["accounts", "login"]:
            self._record("login", None)
            return Response(LOGIN_PAGE, mimetype="text/html")
        if parts[:4] == ["api", "v1", "users", "web_profile_info"]:
            return self._web_profile_info(request)
        if len(parts) == 2 and parts[0] == self.graph_version:
            return self._graph(request)
        if len(parts) == 3 and parts[0] == self.graph_version and parts[2] == "insights":
            return self._insights(request, parts[1])
        if len(parts) == 1:
            return self._profile_page(parts[0])
        return Response("not found", status=404)

    def _graph(self, request: Request) -> Response:
        fields = request.args.get("fields", "")
        username = discovery_username(fields)
        self._record("graph", username)
        if "access_token" in request.args:
            return self._json(
                400, graph_error(100, "stand-in refuses access tokens in the URL; use a header")
            )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._json(
                400, graph_error(190, "Invalid OAuth access token - Cannot parse access token")
            )
        if not username:
            return self._json(400, graph_error(100, "(#100) Missing business_discovery field"))
        found = self._spec(username.lower(), "graph")
        if found is None:
            return self._json(
                400,
                graph_error(
                    110,
                    "(#110) Invalid user id: Cannot find User "
                    f"{username}; Business Discovery sees business and creator accounts only",
                    2207013,
                ),
            )
        spec, base_dir = found
        limit = _media_limit(fields)
        media = spec.get("json", {}).get("business_discovery", {}).get("media")
        if limit is not None and isinstance(media, dict) and isinstance(media.get("data"), list):
            spec = json.loads(json.dumps(spec))
            spec["json"]["business_discovery"]["media"]["data"] = media["data"][:limit]
        return response_from_spec(spec, base_dir)

    def _owners(self) -> dict[str, tuple[str, str]]:
        """IG user id -> (username, owner token), from the ``auth`` entries of accounts.json."""
        path = self.fixtures_dir / "accounts.json"
        entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        owners = {}
        for entry in entries:
            auth = entry.get("auth") if isinstance(entry, dict) else None
            if isinstance(auth, dict) and auth.get("userId") and auth.get("accessToken"):
                owners[str(auth["userId"])] = (str(entry["username"]), str(auth["accessToken"]))
        return owners

    def _fixture(self, username: str, name: str) -> dict[str, Any]:
        path = self.fixtures_dir / username / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _insights(self, request: Request, object_id: str) -> Response:
        self._record("insights", object_id)
        if "access_token" in request.args:
            return self._json(
                400, graph_error(100, "stand-in refuses access tokens in the URL; use a header")
            )
        owners = self._owners()
        owner = owners.get(object_id) or next(
            (o for o in owners.values() if object_id in self._fixture(o[0], "media_insights")),
            None,
        )
        if owner is None:
            return self._json(
                400,
                graph_error(
                    100,
                    f"Unsupported get request. Object with ID '{object_id}' does not exist, "
                    "cannot be loaded due to missing permissions, or does not support this "
                    "operation",
                    33,
                ),
            )
        username, token = owner
        if request.headers.get("Authorization") != f"Bearer {token}":
            return self._json(
                400, graph_error(190, "Invalid OAuth access token - Cannot parse access token")
            )
        metrics = [m for m in request.args.get("metric", "").split(",") if m]
        if not metrics:
            return self._json(400, graph_error(100, "(#100) The parameter metric is required"))
        if object_id in owners:
            return self._account_insights(request, object_id, metrics, username)
        return self._media_insights(object_id, metrics, self._fixture(username, "media_insights"))

    def _account_insights(
        self, request: Request, user_id: str, metrics: list[str], username: str
    ) -> Response:
        spec = self._fixture(username, "account_insights")
        rejects = set(spec.get("rejects") or [])
        series: dict[str, Any] = spec.get("series") or {}
        totals: dict[str, Any] = spec.get("total_value") or {}
        total = request.args.get("metric_type") == "total_value"
        offered = totals if total else series
        for index, metric in enumerate(metrics):
            if not total and metric in totals and metric not in series:
                return self._json(
                    400,
                    graph_error(
                        100,
                        f"(#100) The following metrics ({metric}) should be specified with "
                        "parameter metric_type=total_value",
                    ),
                )
            if metric in rejects or metric not in offered:
                return self._json(
                    400, _metric_rejected(index, [m for m in offered if m not in rejects])
                )
        try:
            until = int(request.args.get("until", ""))
            since = int(request.args.get("since", ""))
        except ValueError:
            today = datetime.combine(datetime.now(UTC).date(), time.min, tzinfo=UTC)
            since, until = int((today - timedelta(days=1)).timestamp()), int(today.timestamp())
        data = []
        for metric in metrics:
            entry: dict[str, Any] = {
                "name": metric,
                "period": "day",
                "title": metric.replace("_", " ").capitalize(),
                "id": f"{user_id}/insights/{metric}/day",
            }
            if total:
                entry["total_value"] = {"value": totals[metric]}
            else:
                entry["values"] = [
                    {"value": series[metric], "end_time": end} for end in _day_ends(since, until)
                ]
            data.append(entry)
        return self._json(200, {"data": data})

    def _media_insights(self, media_id: str, metrics: list[str], spec: dict[str, Any]) -> Response:
        offered: dict[str, Any] = spec.get(media_id) or {}
        for metric in metrics:
            if metric not in offered:
                return self._json(400, _media_metric_rejected(metric))
        data = [
            {
                "name": metric,
                "period": "lifetime",
                "values": [{"value": offered[metric]}],
                "title": metric.replace("_", " ").capitalize(),
                "id": f"{media_id}/insights/{metric}/lifetime",
            }
            for metric in metrics
        ]
        return self._json(200, {"data": data})

    def _web_profile_info(self, request: Request) -> Response:
        username = request.args.get("username", "").lower()
        self._record("web_profile_info", username)
        if request.headers.get("x-ig-app-id") != IG_APP_ID:
            return self._json(400, {"message": "useragent mismatch", "status": "fail"})
        found = self._spec(username, "web_profile_info")
        if found is None:
            return self._json(404, {"data": {"user": None}, "status": "ok"})
        return response_from_spec(*found)

    def _profile_page(self, username: str) -> Response:
        self._record("profile", username.lower())
        found = self._spec(username.lower(), "profile")
        if found is None:
            return Response(
                "<!DOCTYPE html><html><head><title>Page not found \u2022 Instagram</title></head>"
                "<body>Sorry, this page isn't available.</body></html>",
                status=404,
                mimetype="text/html",
            )
        return response_from_spec(*found)

    @staticmethod
    def _json(status: int, body: dict[str, Any]) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="demo-token")
    parser.add_argument("--fixtures-dir", default=None)
    parser.add_argument("--graph-version", default=f"v{DEFAULT_GRAPH_MAJOR}.0")
    args = parser.parse_args(argv)
    standin = InstagramStandin(
        args.host, args.port, args.token, args.fixtures_dir, args.graph_version
    ).start()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(
        json.dumps(
            {"graph_url": standin.graph_url, "web_url": standin.web_url, "port": standin.port}
        ),
        flush=True,
    )
    while not stopping.wait(0.5):
        pass
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
