"""The one redaction every output goes through: sidecar answers and logs, tracebacks, fetch
notes, ``DataRefreshLog``, Dagster logs.

Secrets are hidden by value, and not only whole: a library that fails to parse a URL quotes
the part it choked on (redis-py's ``Port could not be cast to integer value as '<first part of
the password>'``), and an error may carry a secret URL-encoded or repr-escaped. So every run of
``FRAGMENT`` or more characters taken from any form of a secret is hidden wherever it occurs.
The secrets are the secret settings' values (for a URL, its password), ``DAGSTER_PG_PASSWORD``,
and whatever a component ``register``s (a resource configured with a literal value).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus, unquote

from ig_refresh_dagster import settings

HIDDEN = "***"
# Every run of this many characters of a secret is hidden; a shorter secret only whole, and one
# shorter than SHORTEST not at all (hiding every "pw" in every message would hide the message).
FRAGMENT = 6
SHORTEST = 4
# Secrets the pipeline does not read itself but its deployment does (Dagster's Postgres).
OTHER_SECRET_VARIABLES = ("DAGSTER_PG_PASSWORD",)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://(?P<rest>.*)$", re.DOTALL)


def url_password(url: str) -> str | None:
    """The password in ``scheme://user:password@host``, found without a URL parser: a password
    holding ``/``, ``#`` or ``@`` is where parsers go wrong. Everything between the first ``:``
    of the user part and the last ``@`` counts (a superset when a path holds ``@``)."""
    match = _URL.match(url.strip())
    if match is None or "@" not in match["rest"]:
        return None
    userinfo = match["rest"].rpartition("@")[0]
    _, colon, password = userinfo.partition(":")
    return password if colon and password else None


def setting_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the environment's settings hold: tokens, passwords, URL passwords, the
    credential list's tokens."""
    environ = os.environ if environ is None else environ
    values = [environ.get(name) for name, s in settings.SETTINGS.items() if s.secret]
    values += [environ.get(name) for name in OTHER_SECRET_VARIABLES]
    return [atom for value in values if value for atom in secret_atoms(value)]


def secret_atoms(value: str) -> list[str]:
    """What of one secret setting's value must be hidden: a URL's password, a credential list's
    tokens (the list whole when it cannot be read), else the value."""
    value = value.strip()
    if _URL.match(value):
        password = url_password(value)
        return [password] if password else []
    if value.startswith("["):
        try:
            entries = json.loads(value)
        except ValueError:
            return [value]
        if isinstance(entries, list):
            tokens = [e.get("access_token") for e in entries if isinstance(e, dict)]
            return [t.strip() for t in tokens if isinstance(t, str) and t.strip()]
    return [value]


def _forms(secret: str) -> set[str]:
    """The ways a secret shows up in text: as is, URL-encoded or -decoded, escaped."""
    escaped = {repr(secret)[1:-1], json.dumps(secret)[1:-1], secret.encode("unicode_escape")}
    forms = {secret, unquote(secret), quote(secret, safe=""), quote_plus(secret), quote(secret)}
    return {f.decode() if isinstance(f, bytes) else f for f in forms | escaped} - {""}


class Redactor:
    """Hides every form and every ``FRAGMENT``-long piece of the given secrets."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in _forms(secret)}
        forms = {form for form in forms if len(form) >= SHORTEST}
        self._whole = sorted((f for f in forms if len(f) < FRAGMENT), key=len, reverse=True)
        self._pieces = {
            form[i : i + FRAGMENT]
            for form in forms
            if len(form) >= FRAGMENT
            for i in range(len(form) - FRAGMENT + 1)
        }

    def __call__(self, text: str) -> str:
        for short in self._whole:
            text = text.replace(short, HIDDEN)
        if not self._pieces or len(text) < FRAGMENT:
            return text
        hidden = bytearray(len(text))
        for i in range(len(text) - FRAGMENT + 1):
            if text[i : i + FRAGMENT] in self._pieces:
                hidden[i : i + FRAGMENT] = b"\1" * FRAGMENT
        out, i = [], 0
        while i < len(text):
            if hidden[i]:
                while i < len(text) and hidden[i]:
                    i += 1
                out.append(HIDDEN)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


_registered: set[str] = set()
_lock = threading.Lock()
_cache: tuple[frozenset[str], Redactor] | None = None


def register(*secrets: str | None) -> None:
    """Secrets from outside the environment (a resource configured with a literal value)."""
    with _lock:
        _registered.update(atom for s in secrets if s for atom in secret_atoms(s))


def redact(text: str) -> str:
    """``text`` with every known secret hidden (the environment's, then the registered)."""
    global _cache
    known = frozenset(setting_secrets()) | frozenset(_registered)
    cached = _cache
    if cached is None or cached[0] != known:
        cached = _cache = (known, Redactor(known))
    return cached[1](text)
