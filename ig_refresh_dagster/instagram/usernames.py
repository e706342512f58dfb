"""Username validation, run before any URL or Graph field expression is built.

A username goes verbatim into ``business_discovery.username(NAME)`` and into URL paths, so a
value outside Instagram's alphabet could change the meaning of the request. Instagram's rules
(its help centre and sign-up form; mirrored by e.g. Perl's Regexp::Pattern::Instagram): at most
30 characters; letters, digits, periods and underscores only; no period at the start or the end;
no two periods in a row. Usernames are case-insensitive, so they are lowercased here. A leading
``@`` is accepted because handles are often stored that way.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Any

from ig_refresh_dagster.instagram.errors import InvalidUsername, ProfileMismatch

if TYPE_CHECKING:
    from ig_refresh_dagster.instagram.usage import ApiUsage

MAX_LENGTH = 30
_ALLOWED = frozenset(string.ascii_lowercase + string.digits + "._")


def validate_username(raw: str) -> str:
    """Return the canonical (stripped, lowercased) username or raise InvalidUsername."""
    if not isinstance(raw, str):
        raise InvalidUsername(f"username must be a string, got {type(raw).__name__}")
    name = raw.strip()
    name = name.removeprefix("@").lower()
    shown = ascii(raw[:40])
    if not name:
        raise InvalidUsername(f"username {shown} is empty")
    if len(name) > MAX_LENGTH:
        raise InvalidUsername(f"username {shown} is longer than {MAX_LENGTH} characters")
    bad = sorted({ch for ch in name if ch not in _ALLOWED})
    if bad:
        raise InvalidUsername(
            f"username {shown} contains characters Instagram does not allow: {''.join(bad)!a}"
        )
    if name.startswith(".") or name.endswith("."):
        raise InvalidUsername(f"username {shown} starts or ends with a period")
    if ".." in name:
        raise InvalidUsername(f"username {shown} has two periods in a row")
    return name


def require_same_account(
    name: str, answered_for: Any, source: str, reason: str, usage: ApiUsage | None = None
) -> None:
    """Raise ProfileMismatch unless an answer for @``name`` (canonical) names ``name``
    (case-insensitively): an answer that names no username proves nothing."""
    if not isinstance(answered_for, str) or not answered_for:
        raise ProfileMismatch(
            f"{source} answered the request for @{name} without a username, so it cannot be "
            "proven to be about this account; nothing is written",
            reason=reason,
            usage=usage,
        )
    if answered_for.lower() != name:
        raise ProfileMismatch(
            f"{source} answered the request for @{name} with the profile of "
            f"{answered_for[:40]!a}; nothing is written",
            reason=reason,
            usage=usage,
        )
