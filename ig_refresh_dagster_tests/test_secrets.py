"""Secrets: stripped and checked where they are read, and hidden by value, in every form and
every fragment, from every output channel: the sidecar's stdout/stderr, /ready, /metrics and
history page, Dagster's event log of a failing run, DataRefreshLog, and exceptions.

Real parts throughout: valkey, litemongo, a loopback HTTP server as Graph, a closed port as an
unreachable Kafka and MongoDB, and the ``ig-refresh health`` process."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dagster import DagsterInstance
from pytest_httpserver import HTTPServer

from ig_refresh_dagster import redaction, settings
from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster.health.redact import RedactingFormatter, scrub
from ig_refresh_dagster.health.server import LOG_FORMAT, log_uncaught_exceptions
from ig_refresh_dagster.instagram.credentials import CredentialsInvalid, credential_pool
from ig_refresh_dagster.intake.connection import KafkaConnection
from ig_refresh_dagster.stores.clients import redis_from_url
from ig_refresh_dagster_tests.health.test_health import start_sidecar
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)

GRAPH_PATH = f"/v21.0/{BUSINESS_ID}"
JSON_PATH = "/api/v1/users/web_profile_info/"
# Hostile secrets: every URL delimiter inside, and no 6-character run that ordinary output has.
SECRETS = {
    "REDIS_URL": "Rq7xKa/p#2@zV%mW:9",
    "INSTAGRAM_BUDGET_REDIS_URL": "Bg4#tY/u@8%Qe:Lc3",
    "MONGODB_URI": "Mn5@oJ/r#6%Hw:Zs1",
    "DAGSTER_PG_PASSWORD": "Pg2%vN#k/9@Xd:Fh8",
    "KAFKA_SASL_PASSWORD": "Ks3:aW/q#7@Mz%Tn6",
    "INSTAGRAM_ACCESS_TOKEN": "EAAtok3n/Gx#Vb@7%Rp:Yw2",
    "INSTAGRAM_GRAPH_CREDENTIALS": "EAAlist9/Hc#Nd@4%Uk:Qe5",
}


def fragments(secret: str) -> set[str]:
    """Every 6-character run of the secret as is and URL-encoded."""
    forms = {secret, quote(secret, safe=""), quote(secret)}
    return {f[i : i + 6] for f in forms for i in range(len(f) - 5)}


def leaks(text: str) -> list[str]:
    return sorted({f for s in SECRETS.values() for f in fragments(s) if f in text})


def hostile_env(redis_port: int) -> dict[str, str]:
    """Every secret setting at once; each URL carries its password raw (unescaped), as someone
    pasting it would write it, except the budget Redis's (escaped: it reaches the server)."""
    closed = free_port()
    return {
        "REDIS_URL": f"redis://:{SECRETS['REDIS_URL']}@127.0.0.1:{redis_port}/0",
        "INSTAGRAM_BUDGET_REDIS_URL": (
            f"redis://:{quote(SECRETS['INSTAGRAM_BUDGET_REDIS_URL'], safe='')}"
            f"@127.0.0.1:{redis_port}/0\n"
        ),
        "MONGODB_URI": f"mongodb://app:{SECRETS['MONGODB_URI']}@127.0.0.1:{closed}/",
        "DAGSTER_PG_PASSWORD": SECRETS["DAGSTER_PG_PASSWORD"],
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "app",
        "KAFKA_SASL_PASSWORD": SECRETS["KAFKA_SASL_PASSWORD"] + "\n",
        "INSTAGRAM_ACCESS_TOKEN": SECRETS["INSTAGRAM_ACCESS_TOKEN"] + "\n",
        "INSTAGRAM_BUSINESS_ACCOUNT_ID": BUSINESS_ID,
        "INSTAGRAM_GRAPH_CREDENTIALS": json.dumps(
            [{"access_token": SECRETS["INSTAGRAM_GRAPH_CREDENTIALS"], "business_account_id": "7"}]
        ),
    }


# --- reading: stripped, checked ----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, s in settings.SETTINGS.items() if s.secret])
def test_every_secret_setting_is_stripped_of_surrounding_whitespace(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, "  value-from-a-file\n")
    assert settings.value(name) == "value-from-a-file"


BAD = ["tok\nen", "tok\ten", "tok\x1ben", "tok\x7fen", "tokén", "tok\u200ben"]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("name", ["INSTAGRAM_ACCESS_TOKEN", "KAFKA_SASL_PASSWORD", "REDIS_URL"])
def test_a_control_or_non_ascii_character_is_a_configuration_error_naming_the_variable(
    name: str, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, bad)
    with pytest.raises(settings.SecretInvalid) as raised:
        settings.value(name)
    assert name in str(raised.value)
    assert "tok" not in str(raised.value) and bad not in repr(raised.value)


def test_credential_pool_strips_tokens_and_names_the_variable_of_a_bad_one() -> None:
    listed = json.dumps([{"access_token": " EAAlisted\n", "business_account_id": "8"}])
    pool = credential_pool("EAAsingle\n", " 7 ", listed)
    assert [c.access_token.get_secret_value() for c in pool] == ["EAAsingle", "EAAlisted"]
    assert pool[0].business_account_id == "7"
    for single, raw_list, variable in [
        ("EAAsingl\u00e9", None, "INSTAGRAM_ACCESS_TOKEN"),
        ("EAA\x00x", None, "INSTAGRAM_ACCESS_TOKEN"),
        (
            None,
            json.dumps([{"access_token": "EAA\u2028x", "business_account_id": "8"}]),
            "INSTAGRAM_GRAPH_CREDENTIALS[0]",
        ),
    ]:
        with pytest.raises(CredentialsInvalid) as raised:
            credential_pool(single, "7", raw_list)
        assert variable in str(raised.value) and "EAA" not in str(raised.value)


def test_the_kafka_password_is_stripped_and_checked_wherever_a_connection_is_built() -> None:
    def connection(password: str) -> KafkaConnection:
        return KafkaConnection(
            bootstrap_servers="b:9092", security_protocol="SASL_SSL", sasl_password=password
        )

    assert connection(" pw-from-file\n").client_config()["sasl.password"] == "pw-from-file"
    for bad in BAD:
        with pytest.raises(ValueError) as raised:
            connection(bad)
        assert "KAFKA_SASL_PASSWORD" in str(raised.value) and "tok" not in str(raised.value)


def test_a_file_mounted_token_with_a_trailing_newline_is_used_for_graph(
    mongo_db: Any,
    mongo_uri: str,
    redis_url_for_test: str,
    redis_client: Any,
    httpserver: HTTPServer,
    instance: DagsterInstance,
) -> None:
    """Before, requests refused the header ``Bearer <token>\\n`` and the run scraped instead,
    with the token in the fetch notes."""
    token = "EAAfile-mounted-token-7731"
    resources = job_resources(
        mongo_uri,
        redis_url_for_test,
        httpserver.url_for("/v21.0"),
        httpserver.url_for(""),
        token=token + "\n",
    )
    account_id = seed_account(mongo_db, handle="natgeo")
    httpserver.expect_request(GRAPH_PATH).respond_with_json(graph_body("natgeo", 1500))
    result = run_refresh(account_id, resources, instance)
    assert result.success
    (request, _), *_ = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {token}"
    (log,) = list(mongo_db["DataRefreshLog"].find({"runId": result.run_id}))
    assert log["source"] == "graph"


# --- redaction ---------------------------------------------------------------------------------


def test_every_form_and_fragment_of_a_secret_is_hidden() -> None:
    secret = "Rq7/xK#p@2%zV:mW9"
    hide = redaction.Redactor([secret])
    for text in [
        f"auth {secret} failed",
        f"Port could not be cast to integer value as '{secret.split('/')[0]}xK'",
        f"redis://:{quote(secret, safe='')}@host",
        f"password {secret[3:12]} rejected",
        repr(secret),
    ]:
        assert not leaks(hide(text)), (text, hide(text))
    assert hide("nothing secret here: host:6379/0") == "nothing secret here: host:6379/0"
    assert redaction.Redactor(["pw", "abcd"])("pw: abcd") == "pw: ***"  # too short to hide


def test_a_redis_url_the_parser_chokes_on_raises_without_its_password() -> None:
    url = f"redis://:{SECRETS['REDIS_URL']}@127.0.0.1:6379/0"
    with pytest.raises(ValueError) as raised:
        redis_from_url(url)
    text = "".join(traceback.format_exception(raised.value))
    assert "percent-encode its password" in text and not leaks(text), text


# --- the sweep ---------------------------------------------------------------------------------


def fetch(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return f"{response.status} {response.getheaders()} {response.read().decode('latin-1')}"
    finally:
        conn.close()


@pytest.mark.slow
def test_no_fragment_of_any_secret_reaches_any_sidecar_channel(
    redis_server: ServiceProcess, tmp_path: Path
) -> None:
    port = free_port()
    log_path = tmp_path / "health.log"
    sidecar = start_sidecar(tmp_path, port, env=hostile_env(redis_server.port))
    try:
        answers = [
            fetch(port, path)
            for path in [
                "/health",
                "/ready",
                "/metrics",
                "/accounts/acme/history",
                "/accounts/acme/history?days=%C2%B2",
                f"/accounts/{quote(SECRETS['REDIS_URL'], safe='')}/history",
                "/ready",
            ]
        ]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"\x00garbage\r\n\r\n")
            answers.append(sock.recv(65536).decode("latin-1"))
    finally:
        exit_code = sidecar.stop(timeout=30)
    output = log_path.read_text(errors="replace")
    assert exit_code == 0, output
    ready = json.loads(answers[1].split(" ", 1)[1].split("] ", 1)[1])
    assert ready["checks"]["redis"]["ok"] is False
    assert "percent-encode its password" in ready["checks"]["redis"]["detail"]
    channels = {"answers": "\n".join(answers), "stdout+stderr": output}
    assert {name: leaks(text) for name, text in channels.items()} == {name: [] for name in channels}


def test_no_fragment_of_any_secret_reaches_a_failing_runs_channels(
    mongo_db: Any,
    mongo_uri: str,
    redis_server: ServiceProcess,
    httpserver: HTTPServer,
    instance: DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two failing runs: one whose Redis URL the parser chokes on, one whose Graph answer
    quotes the token back (whole, URL-encoded and cut), with every secret set in the
    environment as the run worker would have it."""
    for name, value in hostile_env(redis_server.port).items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    graph, web = httpserver.url_for("/v21.0"), httpserver.url_for("")
    token = SECRETS["INSTAGRAM_ACCESS_TOKEN"]
    httpserver.expect_request(GRAPH_PATH).respond_with_json(
        {
            "error": {
                "code": 190,
                "message": f"bad {token} / {quote(token)} / {token[4:14]}",
                "fbtrace_id": token,
            }
        },
        status=400,
    )
    httpserver.expect_request(JSON_PATH).respond_with_data(token, status=404)
    httpserver.expect_request("/natgeo/").respond_with_data(token, status=404)
    plain_redis = f"redis://127.0.0.1:{redis_server.port}/0"
    runs = [
        job_resources(mongo_uri, os.environ["REDIS_URL"], graph, web, token=token + "\n"),
        job_resources(mongo_uri, plain_redis, graph, web, token=token + "\n"),
    ]
    failed = []
    for resources in runs:
        account_id = seed_account(mongo_db, handle="natgeo")
        result = run_refresh(account_id, resources, instance)
        assert not result.success
        failed.append(result)
    events = "\n".join(
        f"{e!r} {e.dagster_event and e.dagster_event.event_specific_data!r}"
        for r in failed
        for e in instance.all_logs(r.run_id)
    )
    errors = "\n".join(
        "".join(traceback.format_exception(type(e), e, e.__traceback__))
        for r in failed
        for e in [r.failure_data.error if hasattr(r, "failure_data") else None]
        if isinstance(e, BaseException)
    )
    captured = capfd.readouterr()
    channels = {
        "event log": events,
        "DataRefreshLog": repr(list(mongo_db["DataRefreshLog"].find({}))),
        "Account": repr(list(mongo_db["Account"].find({}))),
        "python logs": caplog.text,
        "stdout+stderr": captured.out + captured.err,
        "exceptions": errors,
    }
    assert "Redis URL cannot be read" in events
    assert {name: leaks(text) for name, text in channels.items()} == {name: [] for name in channels}


def test_scrub_and_the_health_log_use_the_same_redaction() -> None:
    secret = "Zx8/qw#Er@5%Ty:Ui0"
    redaction.register(secret)
    assert not leaks_of(secret, scrub(f"error near '{secret[:9]}' and {quote(secret)}"))


def leaks_of(secret: str, text: str) -> list[str]:
    return [f for f in fragments(secret) if f in text]


def test_an_uncaught_traceback_in_the_sidecar_goes_through_the_redacting_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python prints an uncaught exception's traceback straight to stderr, past any
    formatter; the sidecar routes it through its log instead."""
    secret = "Ux6/tr#Ac@3%eB:kQ7"
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, [secret]))
    logger = logging.getLogger("ig_refresh_dagster.health.server")
    logger.addHandler(handler)
    try:
        log_uncaught_exceptions()

        def fail() -> None:
            raise ValueError(f"cannot use '{secret[:8]}'")

        thread = threading.Thread(target=fail, name="doomed")
        thread.start()
        thread.join()
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "uncaught exception in thread doomed" in text and "Traceback" in text
    assert not leaks_of(secret, text), text
