"""Which Redis errors pass by themselves, so a refresh retries instead of failing for good.

A failover, a restart or a busy or full server answers with an error for a while and then
recovers. redis-py raises some of these as their own classes (``ReadOnlyError``,
``BusyLoadingError``, ``OutOfMemoryError``, ``TryAgainError``, ``ClusterDownError``) and the
rest as a plain ``ResponseError`` whose message starts with the server's error code (``BUSY``,
``MISCONF``, ``NOREPLICAS``), so the decision is made on the code, whichever class carries it.
"""

from __future__ import annotations

import redis
import redis.exceptions

# The server's error codes that describe its state, not the request.
TRANSIENT_CODES = frozenset(
    {
        "READONLY",  # a replica (a failover demoted the server we write to)
        "LOADING",  # a restarted server still loading its data set
        "BUSY",  # a script or function running past busy-reply-threshold
        "OOM",  # maxmemory reached under noeviction
        "MISCONF",  # a failed RDB save with stop-writes-on-bgsave-error
        "TRYAGAIN",  # a cluster slot being resharded
        "CLUSTERDOWN",  # a cluster without quorum or with unserved slots
        "MASTERDOWN",  # a replica that lost its primary (replica-serve-stale-data no)
        "NOREPLICAS",  # min-replicas-to-write not met
    }
)
# Bad credentials or permissions do not pass by waiting, although redis-py raises them as
# ConnectionError subclasses.
_PERMANENT = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)


class StoreUnavailable(Exception):
    """A store refused or dropped a request for a reason that passes (failover, restart, a busy
    or full server, contention): the step is retried, never failed for good."""


# redis-py prefixes an error inside a pipeline or transaction with this.
_PIPELINE_MARK = " of pipeline caused error: "


def error_code(exc: redis.RedisError) -> str:
    """The server's error code: redis-py strips it from the message of the errors it maps to a
    class and keeps it in ``status_code``; other errors still start with it (after the
    pipeline annotation, for an error inside a transaction)."""
    code = getattr(exc, "status_code", None)
    if code:
        return str(code)
    text = str(exc).rpartition(_PIPELINE_MARK)[2]
    return text.split(" ", 1)[0]


def is_transient(exc: BaseException) -> bool:
    """True for connection resets, timeouts, and the server states in ``TRANSIENT_CODES``."""
    if not isinstance(exc, redis.RedisError) or isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    return error_code(exc) in TRANSIENT_CODES


def describe(exc: redis.RedisError) -> str:
    """A short reason for logs and retries; never the URL (it may carry a password)."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"
