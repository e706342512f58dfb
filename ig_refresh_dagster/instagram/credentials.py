"""The Graph credentials the fleet may use: the single-token variables first, then a JSON list.

A credential is an access token and the business account it reads Business Discovery through.
``INSTAGRAM_GRAPH_CREDENTIALS`` holds ``[{"access_token": "...", "business_account_id": "..."}]``;
the single-token variables keep working and, when set, are the first credential. A token named
twice (same fingerprint) is one credential, since Meta counts and revokes per token.

Every error names the variable and the entry's position and never quotes a value: whatever is in
that variable may be a token, including a key or a fragment a JSON parser would echo back.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from ig_refresh_dagster import redaction
from ig_refresh_dagster.instagram.graph import token_fingerprint
from ig_refresh_dagster.settings import SecretInvalid, clean_secret

CREDENTIALS_VARIABLE = "INSTAGRAM_GRAPH_CREDENTIALS"
SINGLE_TOKEN_VARIABLE = "INSTAGRAM_ACCESS_TOKEN"
_FIELDS = ("access_token", "business_account_id")


class CredentialsInvalid(ValueError):
    """The credentials variable cannot be read; the message never contains its value."""


class GraphCredential(BaseModel):
    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    business_account_id: str

    @property
    def fingerprint(self) -> str:
        return token_fingerprint(self.access_token.get_secret_value())


def _text_field(entry: dict[str, Any], field: str, where: str) -> str:
    value = entry.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and field == "business_account_id":
        value = str(value)  # ids are digits; a JSON number is what someone would write
    if not isinstance(value, str) or not value.strip():
        raise CredentialsInvalid(f"{where}: {field} must be a non-empty string")
    try:
        return clean_secret(f"{where}: {field}", value) or ""
    except SecretInvalid as exc:
        raise CredentialsInvalid(str(exc)) from None


def parse_credentials(
    raw: str | None, variable: str = CREDENTIALS_VARIABLE
) -> list[GraphCredential]:
    """The credentials in ``raw`` (a JSON list), in order; unset or blank means none."""
    if raw is None or not raw.strip():
        return []
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CredentialsInvalid(
            f"{variable} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except RecursionError:
        raise CredentialsInvalid(f"{variable} is nested too deeply to be read") from None
    if not isinstance(data, list):
        raise CredentialsInvalid(
            f"{variable} must be a JSON list of objects with {' and '.join(_FIELDS)}, "
            f"not a JSON {_json_type(data)}"
        )
    credentials = []
    for index, entry in enumerate(data):
        where = f"{variable}[{index}]"
        if not isinstance(entry, dict):
            raise CredentialsInvalid(f"{where} must be an object, not a JSON {_json_type(entry)}")
        extra = len(set(entry) - set(_FIELDS))
        if extra:
            # The unknown keys are not named: a misplaced token could be one of them.
            raise CredentialsInvalid(
                f"{where} has {extra} field(s) besides {' and '.join(_FIELDS)}"
            )
        credentials.append(
            GraphCredential(
                access_token=SecretStr(_text_field(entry, "access_token", where)),
                business_account_id=_text_field(entry, "business_account_id", where),
            )
        )
    return credentials


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def credential_pool(
    access_token: str | None, business_account_id: str | None, raw_list: str | None
) -> list[GraphCredential]:
    """The single-token credential (when both its variables are set), then the list's, each
    token once (the first entry for it wins). Each token is stripped and checked (a control or
    non-ASCII character raises CredentialsInvalid naming the variable) and known to
    ``redaction`` from then on."""
    candidates = []
    try:
        access_token = clean_secret(SINGLE_TOKEN_VARIABLE, access_token)
    except SecretInvalid as exc:
        raise CredentialsInvalid(str(exc)) from None
    business_account_id = business_account_id.strip() if business_account_id else None
    if access_token and business_account_id:
        candidates.append(
            GraphCredential(
                access_token=SecretStr(access_token), business_account_id=business_account_id
            )
        )
    candidates += parse_credentials(raw_list)
    redaction.register(*(c.access_token.get_secret_value() for c in candidates))
    pool: dict[str, GraphCredential] = {}
    for credential in candidates:
        pool.setdefault(credential.fingerprint, credential)
    return list(pool.values())
