"""One account's follower history as a small HTML page with a server-drawn SVG chart.

Dagster's Plots view joins every partition of the asset into one line, so the sidecar serves the
per-account series from ``InstagramProfileHistory``: no JavaScript, no external assets, so it
renders the same in a browser, a terminal or a screenshot.
"""

from __future__ import annotations

from datetime import date
from html import escape
from typing import Any

from bson import ObjectId
from pydantic import BaseModel

from ig_refresh_dagster.health.clients import KeptClient
from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.stores.history import HistoryPoint, ProfileHistoryStore
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE, open_client
from ig_refresh_dagster.stores.refresh_log import PLATFORM

WIDTH, HEIGHT, PAD = 720, 260, 48


class AccountRef(BaseModel):
    account_id: str
    handle: str | None


def find_account(db: Any, key: str, max_time_ms: int | None = None) -> AccountRef | None:
    """By ObjectId or by an Instagram account's handle (with or without ``@``, any case)."""
    key = key.strip().lstrip("@")
    accounts, only = db["Account"], {"handle": 1}
    if is_account_id(key.lower()):
        doc = accounts.find_one({"_id": ObjectId(key.lower())}, only, max_time_ms=max_time_ms)
    else:
        for handle in dict.fromkeys((key, key.lower())):
            where = {"handle": handle, "platform": PLATFORM}
            doc = accounts.find_one(where, only, max_time_ms=max_time_ms)
            if doc is not None:
                break
    if doc is None:
        return None
    return AccountRef(account_id=str(doc["_id"]), handle=doc.get("handle"))


def load_history(
    db: Any, key: str, days: int, today: date, max_time_ms: int | None = None
) -> tuple[AccountRef, list[HistoryPoint]] | None:
    """The account and its points; ``max_time_ms`` bounds each query on the server."""
    account = find_account(db, key, max_time_ms)
    if account is None:
        return None
    history = ProfileHistoryStore(db)
    return account, history.series(account.account_id, days, today, max_time_ms)


def _polyline(
    points: list[tuple[int, int]], low: int, high: int
) -> tuple[str, list[tuple[float, float, int, int]]]:
    span = max(1, high - low)
    step = (WIDTH - 2 * PAD) / max(1, len(points) - 1)
    placed = []
    for i, (ordinal, value) in enumerate(points):
        x = PAD + i * step
        y = HEIGHT - PAD - (value - low) / span * (HEIGHT - 2 * PAD)
        placed.append((x, y, ordinal, value))
    return " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in placed), placed


def render_chart(points: list[HistoryPoint]) -> str:
    known = [(p.day.toordinal(), p.followers) for p in points if p.followers is not None]
    if not known:
        return '<p class="empty">No follower counts recorded in this period.</p>'
    low, high = min(v for _, v in known), max(v for _, v in known)
    line, placed = _polyline(known, low, high)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>'
        f"{date.fromordinal(o).isoformat()}: {v:,} followers</title></circle>"
        for x, y, o, v in placed
    )
    first, last = date.fromordinal(known[0][0]), date.fromordinal(known[-1][0])
    return (
        f'<svg role="img" aria-label="followers per day" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<text x="{PAD - 6}" y="{PAD + 4}" text-anchor="end" font-size="11">{high:,}</text>'
        f'<text x="{PAD - 6}" y="{HEIGHT - PAD}" text-anchor="end" font-size="11">{low:,}</text>'
        f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="11">{first.isoformat()}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" text-anchor="end" '
        f'font-size="11">{last.isoformat()}</text>'
        f'<polyline fill="none" stroke="#4f43dd" stroke-width="2" points="{line}"/>{dots}</svg>'
    )


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}"
        f"circle{{fill:#4f43dd}}</style></head><body>{body}</body></html>"
    )


def message_page(message: str) -> bytes:
    """A page that only says ``message`` (no such account, store unavailable, bad query)."""
    return _document("follower history", f"<p>{escape(message)}</p>").encode()


def render_page(account: AccountRef, points: list[HistoryPoint], days: int) -> str:
    name = f"@{account.handle}" if account.handle else account.account_id
    rows = "".join(
        f"<tr><td>{p.day.isoformat()}</td><td>{_n(p.followers)}</td>"
        f"<td>{_n(p.following)}</td><td>{_n(p.media_count)}</td></tr>"
        for p in reversed(points)
    )
    return _document(
        f"{name} · follower history",
        f"<h1>{escape(name)}</h1>"
        f"<p>Account <code>{escape(account.account_id)}</code> · followers per UTC day, "
        f"last {days} days</p>"
        f"{render_chart(points)}"
        "<table><thead><tr><th>day</th><th>followers</th><th>following</th><th>media</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>",
    )


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


class HistoryReader:
    """The page's own client, never ``/ready``'s: a burst of page views cannot slow the probe,
    and a request that fails on its own (a query past its time limit) keeps the client; only
    a store that cannot be reached rebuilds it. Every query carries ``maxTimeMS``."""

    def __init__(self, uri: str, database: str, timeout: float) -> None:
        self.database, self.timeout = database, timeout
        self.max_time_ms = max(1, int(timeout * 1000))
        self.client: KeptClient[Any] = KeptClient(
            "history",
            lambda: open_client(uri, self.max_time_ms, self.max_time_ms),
            lambda client: client.close(),
            one_thread=True,
            discard_on=STORE_UNAVAILABLE,
        )

    def load(
        self, key: str, days: int, today: date
    ) -> tuple[AccountRef, list[HistoryPoint]] | None:
        return self.client.use(
            lambda c: load_history(c[self.database], key, days, today, self.max_time_ms),
            self.timeout,
        )

    def close(self) -> None:
        self.client.close()
