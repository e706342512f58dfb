"""What a probe answer or a log line may carry: one short line, with no credentials."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_DETAIL_CHARS = 300
# Greedy up to the last "@" before the path, so a password containing "@" is hidden entirely.
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#]*@")


def redact_uri(text: str) -> str:
    """Hide ``user:password@`` in every URI inside ``text`` (details and errors echo URIs)."""
    return _URI_CREDENTIALS.sub(r"\g<scheme>***@", text)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """One short line with no credentials: what a probe response or a log line may carry."""
    cleaned = redact_uri(" ".join(text.split()))
    for secret in secrets:
        if secret:
            cleaned = cleaned.replace(secret, "***")
    if len(cleaned) > MAX_DETAIL_CHARS:
        cleaned = cleaned[: MAX_DETAIL_CHARS - 1] + "…"
    return cleaned
