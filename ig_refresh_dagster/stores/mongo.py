"""One way to open the document store, whatever stands behind ``MONGODB_URI``.

``mongodb://`` / ``mongodb+srv://`` open real MongoDB through pymongo; ``litemongo:///DIR`` opens
the embedded single-writer-per-document store (pymongo API over SQLite files in DIR) that the dev
stack and the tests use, because no MongoDB server can be installed here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymongo
import pymongo.errors

log = logging.getLogger(__name__)

LITEMONGO_SCHEME = "litemongo"
# A store that cannot be reached right now: MongoDB's network errors (server selection, reset
# connections, timeouts), and for the embedded store a locked or unreadable SQLite file. Callers
# retry these; everything else is a permanent error.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    pymongo.errors.ConnectionFailure,
    sqlite3.OperationalError,
)
_indexed: set[Hashable] = set()
_indexed_lock = threading.Lock()


# No operation waits on a socket longer than this (the largest is a backfill's account query).
SOCKET_TIMEOUT_MS = 30_000


def open_client(uri: str, timeout_ms: int = 5000, socket_timeout_ms: int | None = None) -> Any:
    """A pymongo-compatible client; raises ValueError naming what is wrong with ``uri``.

    Every MongoDB client has a bound on server selection, connecting and each socket read
    (``socket_timeout_ms``, default ``SOCKET_TIMEOUT_MS``): a server that stops answering
    fails the operation instead of holding its thread forever."""
    scheme = urlparse(uri).scheme
    if scheme in ("mongodb", "mongodb+srv"):
        return pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=socket_timeout_ms or SOCKET_TIMEOUT_MS,
            tz_aware=True,
        )
    if scheme == LITEMONGO_SCHEME:
        path = Path(urlparse(uri).path)
        if not path.is_absolute() or urlparse(uri).netloc:
            raise ValueError("litemongo URI must be litemongo:///ABSOLUTE/DIR (three slashes)")
        try:
            import litemongo  # the dev extra's embedded store; production never imports it
        except ImportError:
            raise ValueError(
                "MONGODB_URI names the embedded litemongo store, which is installed only with "
                "the dev extra (pip install '.[dev]'); point MONGODB_URI at MongoDB instead"
            ) from None
        try:
            path.mkdir(parents=True, exist_ok=True)
            return litemongo.connect(f"{LITEMONGO_SCHEME}://{path}")
        except (OSError, ValueError) as exc:
            # The store's folder is gone, blocked or unreadable: unreachable, like a MongoDB
            # server that does not answer, so a caller retries instead of failing for good.
            raise pymongo.errors.ConnectionFailure(
                f"embedded store {path} is unreachable: {exc}"
            ) from None
    raise ValueError(
        f"MONGODB_URI scheme {scheme!r} is not supported: use mongodb://, mongodb+srv:// "
        "or litemongo:///ABSOLUTE/DIR"
    )


def litemongo_uri(directory: Path) -> str:
    return f"{LITEMONGO_SCHEME}://{directory.resolve()}"


def ensure_indexes_once(key: Hashable, creators: Iterable[Callable[[], object]]) -> None:
    """Run each index creator once per process and ``key`` (a URI and database). A failure
    (an index that conflicts with existing documents or indexes, a user without the
    ``createIndex`` privilege, a store that is down) is logged once and never raised: a
    refresh works without its indexes, and a store that is down fails the step's next
    operation anyway, as a retried transient error."""
    with _indexed_lock:
        if key in _indexed:
            return
        _indexed.add(key)
    for create in creators:
        try:
            create()
        except pymongo.errors.PyMongoError as exc:
            log.warning(
                "could not create an index (%s); refreshes continue without it: %s",
                getattr(create, "__qualname__", create),
                str(exc)[:300],
            )
