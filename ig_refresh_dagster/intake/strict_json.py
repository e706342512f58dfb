"""JSON for untrusted bytes: refuses what Python's ``json`` accepts too loosely or crashes on.

- Nesting is bounded *before* parsing: ``json.loads(b"[" * 1000)`` raises ``RecursionError``
  (not ``ValueError``), and where that happens depends on the caller's own stack depth.
- Duplicate keys are refused: ``{"accountId": A, "accountId": B}`` means A to one reader and B
  to another, so no choice we made would be the producer's.
- ``NaN``/``Infinity`` (not JSON), numbers that overflow a float, and integers longer than
  ``MAX_NUMBER_CHARS`` (Python raises ``ValueError`` past 4,300 digits, after spending the time)
  are refused with a reason instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100

# One token per string (closing quote optional, so an unterminated string is one token and the
# scan stays linear) or per bracket; everything else is skipped by ``finditer``.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)


class NotStrictJson(ValueError):
    """Valid to a lenient parser perhaps, but not an unambiguous, bounded JSON document."""


class DuplicateKey(NotStrictJson):
    pass


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for token in _TOKENS.finditer(text):
        char = text[token.start()]
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth = max(depth - 1, 0)
    return False


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(f"duplicate key {key!r}")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not a JSON number")


def _check_length(literal: str) -> None:
    if len(literal) > MAX_NUMBER_CHARS:
        raise NotStrictJson(f"number of {len(literal)} characters (limit {MAX_NUMBER_CHARS})")


def _int(literal: str) -> int:
    _check_length(literal)
    return int(literal)


def _float(literal: str) -> float:
    _check_length(literal)
    value = float(literal)
    if not math.isfinite(value):
        raise NotStrictJson(f"number {literal} is out of range")
    return value


def loads(text: str) -> Any:
    """The document, or ``NotStrictJson``/``ValueError`` (``json``'s own syntax errors)."""
    if _too_deep(text):
        raise NotStrictJson(f"nested deeper than {MAX_DEPTH} levels")
    return json.loads(
        text,
        object_pairs_hook=_object,
        parse_constant=_constant,
        parse_int=_int,
        parse_float=_float,
    )
