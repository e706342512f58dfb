"""What a probe answer or a log line may carry: no credentials, and details kept to one line.

The secrets themselves are hidden by ``ig_refresh_dagster.redaction`` (every form and fragment
of each); this adds the URI credentials and credential-named parameters of any URI in the
text, whatever its source.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from ig_refresh_dagster import redaction

MAX_DETAIL_CHARS = 300
HIDDEN = redaction.HIDDEN
# Greedy up to the last "@" before the path, so a password containing "@" is hidden entirely.
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#]*@")
# ``name=value`` pairs (URI query strings, librdkafka-style settings echoed in errors) whose
# name says the value is a credential: ``?password=``, ``tlsCertificateKeyFilePassword=``,
# ``authMechanismProperties=AWS_SESSION_TOKEN:…``, ``sasl.password=``, ``sasl_jaas_config=``,
# ``token=``, ``access_token=``, ``X-Amz-Signature=``, ``apiKey=``, ``client_secret=``.
_CREDENTIAL_PARAM = re.compile(
    r"(?P<name>(?:^|(?<=[?&;\s,(\[{\"']))[\w.\-]*"
    r"(?:pass|pwd|secret|token|sasl|credential|signature|api[_\-]?key|access[_\-]?key"
    r"|authmechanismproperties)[\w.\-]*=)"
    r"(?P<value>[^&#;\s\"']+)",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """Hide ``user:password@`` and credential query parameters in every URI inside ``text``."""
    text = _URI_CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _CREDENTIAL_PARAM.sub(rf"\g<name>{HIDDEN}", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URI credentials and every known secret hidden (``secrets`` join those
    ``redaction`` knows, for the rest of the process)."""
    redaction.register(*secrets)
    return redact_uri(redaction.redact(text))


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """One short line with no credentials: what a probe response may carry."""
    cleaned = redact(" ".join(text.split()), secrets)
    if len(cleaned) > MAX_DETAIL_CHARS:
        cleaned = cleaned[: MAX_DETAIL_CHARS - 1] + "…"
    return cleaned


class RedactingFormatter(logging.Formatter):
    """Applies ``redact`` to the whole formatted record, message, arguments and traceback alike,
    whichever library logged it (librdkafka's log lines echo broker URIs, Dagster's echo
    storage URLs)."""

    def __init__(self, fmt: str, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        redaction.register(*secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
