"""Short, printable ASCII renderings of untrusted text, for logs and Kafka headers.

A message's bytes end up in tick logs and ``dlq-detail`` headers; escaping them here means no
terminal control sequence, NUL or megabyte-long line ever reaches an operator or a log store.
"""

from __future__ import annotations

DETAIL_LIMIT = 200


def _escape(char: str) -> str:
    if " " <= char <= "~" and char != "\\":
        return char
    if "\udc80" <= char <= "\udcff":  # an undecodable byte, kept by "surrogateescape"
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode()


def printable(text: str, limit: int = DETAIL_LIMIT) -> str:
    """At most ``limit`` characters of printable ASCII; escapes (``\\xNN``, ``\\uNNNN``) stand
    in for everything else, and ``...`` marks a cut (never inside an escape)."""
    pieces = [_escape(char) for char in text[: limit + 1]]
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept, used = [], 0
    for piece in pieces:
        if used + len(piece) > limit - 3:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + "..."


def printable_bytes(raw: bytes, limit: int = DETAIL_LIMIT) -> str:
    """The same for bytes: UTF-8 where it decodes, ``\\xNN`` where it does not."""
    return printable(raw[: limit + 1].decode("utf-8", "surrogateescape"), limit)
