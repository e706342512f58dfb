"""Long-lived clients for the readiness checks.

A probe that opened a fresh Kafka admin client, Mongo client or Redis connection every time
would turn a flood of probes (a misconfigured load balancer, a dashboard on auto-refresh) into
a flood of connections, TLS handshakes and SASL logins at the very services it watches. Each
dependency therefore gets one client, opened on first use and reused by every probe; after a
failure it is closed and rebuilt on the next use, so a client left in a bad state (a broker
that moved, a half-open socket) never sticks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R")


class Busy(RuntimeError):
    """The previous check of this dependency is still running (it hung past its deadline)."""


class KeptClient(Generic[C]):
    """One client, used by one check at a time, rebuilt after any failure."""

    def __init__(
        self,
        name: str,
        open_: Callable[[], C],
        close: Callable[[C], None],
        one_thread: bool = False,
        discard_on: tuple[type[BaseException], ...] = (BaseException,),
    ) -> None:
        """``one_thread``: open, use and close the client on one worker thread of its own, for
        clients bound to the thread that made them (the embedded litemongo store's SQLite
        connections are; every probe, scrape and page runs on a thread of its own).
        ``discard_on``: the failures that rebuild the client (by default any); a client that
        serves requests from outside keeps going through a failure of one request's own."""
        self.name = name
        self._open = open_
        self._close = close
        self._lock = threading.Lock()
        self._client: C | None = None
        self._discard_on = discard_on
        self._worker = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kept-{name}")
            if one_thread
            else None
        )
        self.opened = 0  # how many clients this has built (exposed for tests and /ready)

    def use(self, action: Callable[[C], R], timeout: float) -> R:
        """``action(client)``; raises Busy if the previous use has not finished in ``timeout``."""
        if not self._lock.acquire(timeout=timeout):
            raise Busy(f"previous {self.name} check still running")
        try:
            return self._on_worker(lambda: self._use(action))
        finally:
            self._lock.release()

    def _on_worker(self, call: Callable[[], R]) -> R:
        return call() if self._worker is None else self._worker.submit(call).result()

    def _use(self, action: Callable[[C], R]) -> R:
        if self._client is None:
            self._client = self._open()
            self.opened += 1
        try:
            return action(self._client)
        except self._discard_on:
            self._discard()
            raise

    def close(self, timeout: float = 5.0) -> None:
        """Release the client; a use stuck past ``timeout`` must not block shutdown, so skip."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("%s client still in use at shutdown; not closing it", self.name)
            return
        try:
            self._on_worker(self._discard)
            if self._worker is not None:
                self._worker.shutdown(wait=False)
        finally:
            self._lock.release()

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                self._close(client)
            except Exception as exc:  # closing a broken client may itself fail; it is gone anyway
                log.debug("closing the %s client failed: %s", self.name, exc)
