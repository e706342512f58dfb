"""Whether a Redis may evict keys. The fleet's budget counters must never be evicted: an evicted
counter reads as "nothing spent", and the fleet overspends Instagram's budget without noticing.

Read with ``CONFIG GET maxmemory-policy``, which managed services (and a ``rename-command`` or
an ACL) may refuse: then the policy is unknown, which is reported, never fatal.
"""

from __future__ import annotations

from typing import Any

import redis

NOEVICTION = "noeviction"


def maxmemory_policy(client: redis.Redis) -> str | None:
    """The server's ``maxmemory-policy``, or None where the server refuses to say."""
    try:
        answer: dict[Any, Any] = client.config_get("maxmemory-policy")
    except redis.ResponseError:  # unknown or renamed command, NOPERM
        return None
    for key, value in answer.items():
        if _text(key) == "maxmemory-policy":
            return _text(value)
    return None


def policy_verdict(policy: str | None) -> tuple[bool | None, str]:
    """(True: safe, False: may evict budgets, None: unknown) and the sentence that says so."""
    if policy is None:
        return None, (
            "maxmemory-policy unknown (the server refuses CONFIG GET): make sure it is "
            "noeviction, or budget counters can be evicted"
        )
    if policy != NOEVICTION:
        return False, (
            f"maxmemory-policy is {policy}, not noeviction: budget counters can be evicted and "
            "the fleet would overspend Instagram's budget unnoticed"
        )
    return True, "maxmemory-policy noeviction"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
