"""Every GET to Graph and instagram.com: a total deadline, a size cap, redirects never followed.

requests only has per-read timeouts, so a server that trickles a byte at a time (in the
headers or in the body) can hold a request as long as it likes, and ``response.content``
reads a body of any size into memory. Here a timer shuts the request's socket down when the
deadline passes, whatever phase the request is in, and the body is streamed and refused once
it passes ``max_bytes``, counted after decompression, so a gzip bomb stops at the cap too.

The timer needs the request's socket, which requests does not expose (and http.client drops
its own reference to it once a close-delimited answer starts). The adapter below gives urllib3
a connection class that hands its socket, when it connects or is reused, to the deadline of
the request running in this thread. It is the one place the fetch layer reaches below
requests' public API: ``HTTPAdapter.init_poolmanager``/``proxy_manager_for`` are documented for
subclassing, and ``PoolManager.pool_classes_by_scheme`` and ``HTTPConnectionPool.ConnectionCls``
are public attributes of urllib3.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.connection
import urllib3.poolmanager
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ig_refresh_dagster.instagram.errors import (
    InstagramError,
    ResponseTooLarge,
    TransientError,
)

CHUNK_BYTES = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Deadline:
    """A total time budget for one request, or for a chain of redirect hops. Use it as a
    context manager: on exit its timer is cancelled."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._token: Token[Deadline | None] | None = None
        self.expired = False

    def remaining(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)

    def __enter__(self) -> Deadline:
        self._token = _ACTIVE.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self._token is not None:
            _ACTIVE.reset(self._token)


_ACTIVE: ContextVar[Deadline | None] = ContextVar("instagram_request_deadline", default=None)


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        # The plain socket's shutdown, also for TLS: SSLSocket.shutdown would drop the TLS
        # object that the reading thread is inside of. A blocked read then returns at once.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline = _ACTIVE.get()
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _Watched:
    """Hands the socket to the running deadline: on connecting, and when a kept-alive
    connection is reused. (A TLS handshake is bounded by the per-read timeout alone.)"""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch(self.sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        # SOCKS managers bring their own pool classes; only plain HTTP proxies get ours.
        if manager.pool_classes_by_scheme == urllib3.poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _POOLS
        return manager


def new_session() -> requests.Session:
    """A session whose requests honour a ``Deadline``."""
    session = requests.Session()
    adapter = _DeadlineAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Label:
    """How a caller's failures read: ``what`` starts each message, ``prefix`` each reason
    (``{prefix}_timeout``, ``{prefix}_network``, ``{prefix}_too_large``), and ``redact``
    cleans any text that came from the network layer (it may quote the URL)."""

    what: str
    prefix: str
    redact: Callable[[str], str] = field(default=_same)


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer, read within the deadline and the size cap."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def location(self) -> str | None:
        """The redirect target as sent, or None when this is not a redirect."""
        if self.status not in _REDIRECT_STATUSES:
            return None
        return self.headers.get("Location") or None

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (nesting deep enough to exhaust
        Python's recursion limit included)."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


def host_of(url: str) -> str:
    """The host a URL names, for messages (never the path or query, which may carry data)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def _content_length(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("Content-Length", "")
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _timed_out(deadline: Deadline, label: Label) -> TransientError:
    return TransientError(
        f"{label.what} timed out: no complete answer within {deadline.seconds:g}s",
        reason=f"{label.prefix}_timeout",
    )


def _too_large(max_bytes: int, label: Label) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"{label.what} was answered with more than {max_bytes} bytes; refused unread",
        reason=f"{label.prefix}_too_large",
    )


def _failed(exc: Exception, deadline: Deadline, label: Label) -> TransientError:
    if deadline.expired or isinstance(exc, requests.Timeout):
        return _timed_out(deadline, label)
    detail = label.redact(str(exc))[:300]
    return TransientError(
        f"{label.what} failed: {type(exc).__name__}: {detail}", reason=f"{label.prefix}_network"
    )


def _read(
    session: requests.Session,
    url: str,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str],
    deadline: Deadline,
    max_bytes: int,
    label: Label,
) -> Answer | InstagramError:
    """The answer, or the error to raise: built outside any ``except`` block, so no requests
    exception (and whatever it quotes) is chained onto ours."""
    remaining = deadline.remaining()
    if remaining <= 0:
        return _timed_out(deadline, label)
    try:
        response = session.get(
            url,
            params=params,
            headers=dict(headers),
            timeout=(remaining, remaining),
            allow_redirects=False,
            stream=True,
        )
    except requests.RequestException as exc:
        return _failed(exc, deadline, label)
    try:
        declared = _content_length(response.headers)
        if declared is not None and declared > max_bytes:
            return _too_large(max_bytes, label)
        body = bytearray()
        for chunk in response.iter_content(CHUNK_BYTES):
            body += chunk
            if len(body) > max_bytes:
                return _too_large(max_bytes, label)
            if deadline.expired:
                return _timed_out(deadline, label)
    except (requests.RequestException, OSError) as exc:
        return _failed(exc, deadline, label)
    finally:
        response.close()
    if deadline.expired:
        # A body without a length ends when the socket does: the timer may have cut it short.
        return _timed_out(deadline, label)
    return Answer(status=response.status_code, headers=response.headers, body=bytes(body))


def bounded_get(
    session: requests.Session,
    url: str,
    *,
    headers: Mapping[str, str],
    deadline: Deadline,
    max_bytes: int,
    label: Label,
    params: Mapping[str, str] | None = None,
) -> Answer:
    """GET ``url`` without following redirects, within ``deadline`` (enter it first) and
    ``max_bytes``. Raises TransientError (``_timeout``, ``_network``) or ResponseTooLarge."""
    outcome = _read(session, url, params, headers, deadline, max_bytes, label)
    if isinstance(outcome, InstagramError):
        raise outcome
    return outcome
