"""The health sidecar under hostile clients: idle and half-sent connections, connection floods,
malformed queries, and history pages that must not touch ``/ready``'s client. Real sockets on
loopback against the real server (in-process, or the ``ig-refresh health`` process when its
memory and threads are measured)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster.health.config import HealthConfig
from ig_refresh_dagster.health.server import HealthServer
from ig_refresh_dagster.stores.mongo import open_client
from ig_refresh_dagster_tests.health.test_health import start_sidecar

IDLE_CONNECTIONS = 2000


def get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) before ``within`` seconds pass."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"GET /heal")
    return sock


def proc_status(pid: int) -> dict[str, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"])}


@pytest.mark.parametrize("opening", [b"", b"GET /heal", b"GET /health HTTP/1.0\r\nHost: x\r\n"])
def test_an_idle_or_half_sent_request_is_closed_after_the_request_timeout(
    opening: bytes,
) -> None:
    cfg = HealthConfig(host="127.0.0.1", port=0, request_timeout_seconds=0.5)
    with HealthServer(cfg) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with sock:
            sock.sendall(opening)
            assert closed_by_server(sock, within=20)
        assert get(server.port, "/health")[0] == 200


def test_the_default_request_timeout_is_at_most_30_seconds() -> None:
    assert 0 < HealthConfig().request_timeout_seconds <= 30


@pytest.fixture
def sidecar_process(tmp_path: Path) -> Iterator[tuple[ServiceProcess, int]]:
    """``ig-refresh health`` with a request timeout long enough to hold idle sockets open."""
    port = free_port()
    sidecar = start_sidecar(tmp_path, port, "--request-timeout", "120")
    try:
        yield sidecar, port
    finally:
        sidecar.stop(timeout=30)


@pytest.mark.slow
def test_2000_idle_connections_leave_health_answering_with_bounded_threads_and_memory(
    sidecar_process: tuple[ServiceProcess, int],
) -> None:
    """The threaded server kept a thread per half-sent request (500 -> 502 threads, 3,000 ->
    +76 MiB). Here the process's thread count must not grow with the sockets, its memory must
    stay within a few KiB per socket, and /health must answer while all of them are open."""
    sidecar, port = sidecar_process
    pid = sidecar.pid
    assert get(port, "/health")[0] == 200
    before = proc_status(pid)
    sockets = [half_sent(port) for _ in range(IDLE_CONNECTIONS)]
    try:
        assert get(port, "/health")[0] == 200  # the accepts are queued before this one
        during = proc_status(pid)
        statuses = [get(port, "/health")[0] for _ in range(5)]
    finally:
        for sock in sockets:
            sock.close()
    assert statuses == [200] * 5
    assert sidecar.poll() is None
    assert during["threads"] - before["threads"] <= 2, (before, during)
    # 2,000 sockets in 64 MiB is 32 KiB each; the threaded server used ~26 KiB per socket more.
    assert during["rss_kib"] - before["rss_kib"] < 64 * 1024, (before, during)


def test_connections_beyond_the_limit_are_closed_on_arrival_and_the_server_recovers() -> None:
    cfg = HealthConfig(host="127.0.0.1", port=0, request_timeout_seconds=60, max_connections=20)
    with HealthServer(cfg) as server:
        held = [half_sent(server.port) for _ in range(20)]
        extra = [half_sent(server.port) for _ in range(5)]
        try:
            assert all(closed_by_server(sock, within=20) for sock in extra)
            assert server.connections.refused >= 5
            assert all(not closed_by_server(sock, within=0.2) for sock in held[:3])
        finally:
            for sock in held + extra:
                sock.close()
        deadline = time.monotonic() + 20
        while server.connections.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(server.port, "/health")[0] == 200


def test_it_starts_and_stops_under_a_caller_that_runs_an_event_loop() -> None:
    """Started from code that runs its own asyncio loop (Playwright's sync API does): the
    sidecar's loop lives in its own thread and never touches the caller's."""

    async def caller() -> int:
        with HealthServer(HealthConfig(host="127.0.0.1", port=0)) as server:
            return get(server.port, "/health")[0]

    assert asyncio.run(caller()) == 200


@pytest.mark.parametrize(
    "days", ["%C2%B2", "1" * 5000, "-3", "ten", "%EF%BC%91", "1e3", "0x10", "%00"]
)
def test_bad_days_are_a_400_page_never_a_dropped_connection_or_a_traceback(
    days: str, mongo_uri: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with HealthServer(HealthConfig(host="127.0.0.1", port=0, mongodb_uri=mongo_uri)) as server:
        status, body = get(server.port, f"/accounts/acme/history?days={days}")
    assert status == 400
    assert b"days must be a whole number of days (1 to 730)" in body
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


def test_a_malformed_request_line_is_a_400(capfd: pytest.CaptureFixture[str]) -> None:
    with HealthServer(HealthConfig(host="127.0.0.1", port=0)) as server:
        for line in (b"GARBAGE\r\n\r\n", b"GET http://x/ HTTP/1.1\r\n\r\n", b"\xff\xfe\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(line)
                assert sock.recv(1024).startswith(b"HTTP/1.0 400 "), line
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.0\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.0 400 ")
    assert "Traceback" not in capfd.readouterr().err


def test_history_pages_use_their_own_client_and_a_failing_page_keeps_it(
    mongo_uri: str, mongo_db: Any
) -> None:
    """An Account whose ``_id`` is not an ObjectId makes its page fail; before, that closed
    and reopened ``/ready``'s client on every request."""
    mongo_db["Account"].insert_one(
        {"_id": "not-an-object-id", "platform": "INSTAGRAM", "handle": "oddid"}
    )
    oid = ObjectId()
    mongo_db["Account"].insert_one({"_id": oid, "platform": "INSTAGRAM", "handle": "fine"})
    cfg = HealthConfig(host="127.0.0.1", port=0, mongodb_uri=mongo_uri)
    with HealthServer(cfg) as server:
        assert get(server.port, "/ready")[0] == 503  # Kafka and Redis are not configured
        ready_client = server.probe.mongo
        assert ready_client is not None
        opened_by_ready = ready_client.opened
        statuses = [get(server.port, path)[0] for path in ["/accounts/oddid/history"] * 3]
        statuses.append(get(server.port, "/accounts/fine/history")[0])
        assert statuses == [503, 503, 503, 200]
        assert server.history is not None and server.history.client.opened == 1
        assert ready_client.opened == opened_by_ready


def test_every_mongodb_client_has_socket_connect_and_selection_timeouts() -> None:
    client = open_client(f"mongodb://127.0.0.1:{free_port()}/", timeout_ms=1500)
    try:
        pool = client.options.pool_options
        assert pool.connect_timeout == 1.5
        assert pool.socket_timeout is not None and 0 < pool.socket_timeout <= 30
        assert client.options.server_selection_timeout == 1.5
    finally:
        client.close()
