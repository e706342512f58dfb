"""Store clients reused for the life of the process: one per URI, closed at exit.

A MongoDB or Redis client holds a connection pool and background monitors; opening one per
resource instance or per run would open (and, on an error path, leak) connections for every
step. Both pymongo and redis-py clients are thread-safe. litemongo's are not (its SQLite
connections belong to the thread that opened them), so the embedded store gets one client per
URI and thread.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable, Hashable
from typing import Any
from urllib.parse import urlparse

import redis

from ig_refresh_dagster import redaction
from ig_refresh_dagster.stores.mongo import LITEMONGO_SCHEME, open_client

REDIS_TIMEOUT_SECONDS = 3


class ProcessClients:
    """Opens each client on first use and closes all of them when the process exits."""

    def __init__(self) -> None:
        self._clients: dict[Hashable, Any] = {}
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def get(self, key: Hashable, open_one: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._clients:
                self._clients[key] = open_one()
            return self._clients[key]

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):  # closing at exit: nothing left to tell
                client.close()


_MONGO = ProcessClients()
_REDIS = ProcessClients()


def mongo_client(uri: str) -> Any:
    thread = threading.get_ident() if urlparse(uri).scheme == LITEMONGO_SCHEME else None
    return _MONGO.get((uri, thread), lambda: open_client(uri))


def redis_from_url(url: str, **options: Any) -> redis.Redis:
    """``redis.Redis.from_url``, except that a URL it cannot read raises a ValueError that
    quotes no part of it: redis-py quotes the piece it choked on, which for a password holding
    ``/`` or ``#`` is the password's first part."""
    redaction.register(url)
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        reason = redaction.redact(str(exc))
        raise ValueError(
            f"the Redis URL cannot be read ({reason}); percent-encode its password"
        ) from None


def redis_client(url: str) -> redis.Redis:
    return _REDIS.get(
        url,
        lambda: redis_from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            health_check_interval=30,
        ),
    )
