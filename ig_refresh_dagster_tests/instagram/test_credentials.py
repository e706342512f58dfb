"""Reading ``INSTAGRAM_GRAPH_CREDENTIALS``: the pool's order, duplicates, and every malformed
value failing with an error that names the variable and the entry and never a token."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ig_refresh_dagster.instagram.credentials import (
    CredentialsInvalid,
    credential_pool,
    parse_credentials,
)
from ig_refresh_dagster.instagram.graph import token_fingerprint

VARIABLE = "INSTAGRAM_GRAPH_CREDENTIALS"
TOKENS = [f"EAAGpool{n}secret0123456789abcdef" for n in range(3)]


def entry(token: str, business_id: Any = "1784") -> dict[str, Any]:
    return {"access_token": token, "business_account_id": business_id}


def test_a_list_is_read_in_order_with_numeric_business_ids_as_text() -> None:
    raw = json.dumps([entry(TOKENS[0], "17841"), entry(TOKENS[1], 17842)])
    pool = parse_credentials(raw)
    assert [c.access_token.get_secret_value() for c in pool] == TOKENS[:2]
    assert [c.business_account_id for c in pool] == ["17841", "17842"]
    assert [c.fingerprint for c in pool] == [token_fingerprint(t) for t in TOKENS[:2]]


@pytest.mark.parametrize("raw", [None, "", "  ", "[]"])
def test_unset_blank_or_empty_means_no_credential(raw: str | None) -> None:
    assert parse_credentials(raw) == []


def test_the_single_token_pair_comes_first_and_a_repeated_token_counts_once() -> None:
    raw = json.dumps([entry(TOKENS[1]), entry(TOKENS[0], "other"), entry(TOKENS[1], "again")])
    pool = credential_pool(TOKENS[0], "17840", raw)
    assert [c.fingerprint for c in pool] == [token_fingerprint(t) for t in TOKENS[:2]]
    assert pool[0].business_account_id == "17840", "the first entry for a token wins"
    assert pool[1].business_account_id == "1784"


def test_the_single_token_alone_is_one_credential_and_needs_its_business_id() -> None:
    assert [c.fingerprint for c in credential_pool(TOKENS[0], "1784", None)] == [
        token_fingerprint(TOKENS[0])
    ]
    assert credential_pool(TOKENS[0], None, None) == []


def test_a_credential_never_shows_its_token() -> None:
    (credential,) = parse_credentials(json.dumps([entry(TOKENS[0])]))
    assert TOKENS[0] not in repr(credential) + str(credential)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('[{"access_token": "' + TOKENS[0] + '", ', f"{VARIABLE} is not valid JSON (line 1,"),
        ("'" + TOKENS[0] + "'", f"{VARIABLE} is not valid JSON (line 1, column 1)"),
        (json.dumps(entry(TOKENS[0])), f"{VARIABLE} must be a JSON list of objects"),
        (json.dumps([entry(TOKENS[0]), TOKENS[1]]), f"{VARIABLE}[1] must be an object"),
        (json.dumps([entry(TOKENS[0]), entry("")]), f"{VARIABLE}[1]: access_token must be a"),
        (json.dumps([entry("   ")]), f"{VARIABLE}[0]: access_token must be a non-empty"),
        (json.dumps([{"access_token": TOKENS[0]}]), f"{VARIABLE}[0]: business_account_id"),
        (json.dumps([entry(TOKENS[0], None)]), f"{VARIABLE}[0]: business_account_id"),
        (json.dumps([entry(TOKENS[0], True)]), f"{VARIABLE}[0]: business_account_id"),
        (json.dumps([{**entry(TOKENS[0]), TOKENS[1]: 1}]), f"{VARIABLE}[0] has 1 field(s)"),
        (json.dumps([entry(123)]), f"{VARIABLE}[0]: access_token must be a non-empty"),
        ("[" * 100_000, f"{VARIABLE} is "),
    ],
    ids=[
        "cut_off",
        "not_json",
        "object_not_list",
        "string_entry",
        "empty_token",
        "blank_token",
        "missing_business_id",
        "null_business_id",
        "boolean_business_id",
        "token_as_a_key",
        "number_token",
        "nested_too_deep",
    ],
)
def test_malformed_values_name_the_variable_and_entry_never_a_token(raw: str, message: str) -> None:
    with pytest.raises(CredentialsInvalid) as info:
        parse_credentials(raw)
    text = str(info.value)
    assert text.startswith(message), text
    assert not any(token in text for token in TOKENS)
    # No chained exception (a JSONDecodeError carries the whole document) reaches a traceback.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


_token = st.from_regex(r"EAA[A-Za-z0-9]{20,40}", fullmatch=True)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | _token,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["access_token", "business_account_id"]) | st.text(max_size=6) | _token,
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@given(value=_json)
def test_any_json_is_read_or_refused_without_echoing_a_token(value: Any) -> None:
    raw = json.dumps(value)
    try:
        pool = parse_credentials(raw)
    except CredentialsInvalid as exc:
        tokens = {t for t in _strings(value) if t.startswith("EAA")}
        assert not any(token in str(exc) for token in tokens), str(exc)
        assert str(exc).startswith(VARIABLE)
    else:
        assert isinstance(value, list) and len(pool) == len(value)


@given(raw=st.text(max_size=200))
def test_any_text_is_read_or_refused_with_credentials_invalid(raw: str) -> None:
    try:
        parse_credentials(raw)
    except CredentialsInvalid as exc:
        assert str(exc).startswith(VARIABLE)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    return []
