"""Redis errors that a failover, a restart or a busy or full server produce are transient: the
cache and the budgets report them as such, and the refresh retries instead of failing for good.

Each state is provoked on a real valkey-server of the test's own where valkey can be put in it:
READONLY (a replica), OOM (maxmemory 1 byte under noeviction), BUSY (a Lua script past
busy-reply-threshold), MISCONF (a failed RDB save), CLUSTERDOWN (a cluster node serving no slot).
LOADING, TRYAGAIN and a connection reset come from ``resp_stub`` (a RESP server on loopback),
because a single server cannot be held in those states on demand.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis
from dagster import DagsterEventType, DagsterInstance, Failure
from pytest_httpserver import HTTPServer

from ig_refresh_dagster.devstack.services import free_port, redis_url
from ig_refresh_dagster.instagram.errors import BudgetUnavailable
from ig_refresh_dagster.refresh.launch.requests import launch_tags
from ig_refresh_dagster.refresh.run.failures import classified
from ig_refresh_dagster.refresh.run.tags import Source
from ig_refresh_dagster.stores.budget import HourlyBudget
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.cache import ProfileCache, cache_key
from ig_refresh_dagster.stores.clients import redis_client
from ig_refresh_dagster.stores.redis_faults import StoreUnavailable
from ig_refresh_dagster_tests.conftest import Valkeys
from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    job_resources,
    run_refresh,
    seed_account,
)
from ig_refresh_dagster_tests.support.resp_stub import RespStub

ENTRY = json.dumps({"account": {"name": "before"}})
DEADLINE_SECONDS = 20


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {DEADLINE_SECONDS}s")
        time.sleep(0.05)


def _answers(client: redis.Redis, code: str) -> bool:
    try:
        client.get("probe")
    except redis.RedisError as exc:
        return str(exc).startswith(code) or getattr(exc, "status_code", None) == code
    return False


@contextlib.contextmanager
def read_only(valkeys: Valkeys, _: Path) -> Iterator[str]:
    """A failover demoted the server: it is now a replica (of a primary that is gone)."""
    server = valkeys.start()
    client = redis.Redis(port=server.port)
    client.set(cache_key("1"), ENTRY)
    client.replicaof("127.0.0.1", free_port())
    yield redis_url(server)


@contextlib.contextmanager
def out_of_memory(valkeys: Valkeys, _: Path) -> Iterator[str]:
    server = valkeys.start()
    client = redis.Redis(port=server.port)
    client.set(cache_key("1"), ENTRY)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    yield redis_url(server)


@contextlib.contextmanager
def busy(valkeys: Valkeys, _: Path) -> Iterator[str]:
    """Another client's Lua script runs past busy-reply-threshold; SCRIPT KILL ends it."""
    server = valkeys.start("--busy-reply-threshold", "50")
    client = redis.Redis(port=server.port)
    client.set(cache_key("1"), ENTRY)
    looping = threading.Thread(
        target=_run_forever, args=(redis.Redis(port=server.port),), daemon=True
    )
    looping.start()
    _until(lambda: _answers(client, "BUSY"), "BUSY")
    try:
        yield redis_url(server)
    finally:
        _until(lambda: _killed(client), "SCRIPT KILL")
        looping.join(DEADLINE_SECONDS)


def _run_forever(client: redis.Redis) -> None:
    with contextlib.suppress(redis.RedisError):
        client.eval("while true do end", 0)


def _killed(client: redis.Redis) -> bool:
    try:
        client.script_kill()
    except redis.RedisError as exc:
        return "No scripts in execution" in str(exc)
    return False


@contextlib.contextmanager
def misconf(valkeys: Valkeys, _: Path) -> Iterator[str]:
    """A background save failed (its target is a directory) with save points configured."""
    server = valkeys.start("--save", "3600 1")
    client = redis.Redis(port=server.port)
    client.set(cache_key("1"), ENTRY)
    target = Path(client.config_get("dir")["dir"]) / client.config_get("dbfilename")["dbfilename"]
    target.mkdir()
    (target / "occupied").write_text("a directory cannot be renamed over")
    client.bgsave()
    _until(lambda: _set_refused(client), "MISCONF")
    try:
        yield redis_url(server)
    finally:
        client.config_set("save", "")  # else shutting down tries (and fails) to save again


def _set_refused(client: redis.Redis) -> bool:
    try:
        client.set("probe", 1)
    except redis.ResponseError as exc:
        return str(exc).startswith("MISCONF")
    return False


@contextlib.contextmanager
def cluster_down(valkeys: Valkeys, _: Path) -> Iterator[str]:
    """A cluster node that serves no hash slot. Its bus port is chosen, not port + 10000, which
    overflows for a free port above 55535 and makes valkey refuse to start."""
    server = valkeys.start(
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        str(free_port()),
    )
    yield redis_url(server)


def _stub(error: str | None) -> Callable[[Valkeys, Path], contextlib.AbstractContextManager]:
    @contextlib.contextmanager
    def stubbed(_: Valkeys, __: Path) -> Iterator[str]:
        with RespStub(error).running() as stub:
            yield stub.url

    return stubbed


STATES = {
    "READONLY": read_only,
    "OOM": out_of_memory,
    "BUSY": busy,
    "MISCONF": misconf,
    "CLUSTERDOWN": cluster_down,
    "LOADING": _stub("LOADING Redis is loading the dataset in memory"),
    "TRYAGAIN": _stub("TRYAGAIN Multiple keys request during rehashing of slot"),
    "connection reset": _stub(None),
}


@pytest.mark.parametrize("state", list(STATES))
def test_passing_redis_errors_are_transient_for_cache_budget_and_ops(
    state: str, valkeys: Valkeys, tmp_path: Path, mongo_db
) -> None:
    with STATES[state](valkeys, tmp_path) as url:
        client = redis_client(url)
        with pytest.raises(StoreUnavailable):
            ProfileCache(client).refresh("1", {"name": "after"})
        with (
            pytest.raises(StoreUnavailable),
            classified("refresh cache"),
        ):
            ProfileCache(client).refresh("1", {"name": "after"})
        budget = HourlyBudget(client, "graph", 5, journal=BudgetJournal(mongo_db))
        with pytest.raises(BudgetUnavailable, match="refusing graph calls"):
            budget.try_acquire()


def test_a_redis_error_about_the_request_stays_permanent(redis_client: redis.Redis) -> None:
    """WRONGTYPE will not pass by waiting: the step fails at once with the reason."""
    redis_client.hset(cache_key("2"), "account", "{}")
    with (
        pytest.raises(Failure, match="WRONGTYPE"),
        classified("refresh cache"),
    ):
        ProfileCache(redis_client).refresh("2", {"name": "x"})


class _RewrittenMidMerge(Mapping):
    """Account fields whose reading lets a second, real connection rewrite the cache entry:
    exactly between the merge's WATCHed read and its MULTI, on every attempt."""

    def __init__(self, writer: redis.Redis, key: str) -> None:
        self._writer, self._key, self.rewrites = writer, key, 0
        self._fields = {"name": "ours"}

    def __getitem__(self, name: str) -> str:
        return self._fields[name]

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def keys(self):
        self.rewrites += 1
        self._writer.set(self._key, json.dumps({"account": {"app": self.rewrites}}), keepttl=True)
        return self._fields.keys()


@pytest.mark.timeout(60)
def test_cache_merge_gives_up_on_an_entry_rewritten_under_every_merge(
    redis_client: redis.Redis, redis_url_for_test: str
) -> None:
    key = cache_key("3")
    redis_client.set(key, ENTRY, ex=600)
    fields = _RewrittenMidMerge(redis.Redis.from_url(redis_url_for_test), key)
    with pytest.raises(StoreUnavailable, match="changed under every one of 4 merges"):
        ProfileCache(redis_client, max_attempts=4).refresh("3", fields)
    assert fields.rewrites == 4
    assert json.loads(redis_client.get(key)) == {"account": {"app": 4}}, "the app's write stands"


@pytest.mark.slow
def test_refresh_retries_through_a_read_only_failover_window(
    valkeys: Valkeys,
    mongo_db,
    mongo_uri: str,
    redis_client: redis.Redis,
    redis_url_for_test: str,
    httpserver: HTTPServer,
    instance: DagsterInstance,
) -> None:
    """The cache's Redis answers READONLY (a failover demoted it) until the first refused write,
    then is promoted again; the budgets live in another Redis. The refresh is retried from the
    cache stage (Graph is not asked again) and the run succeeds, where a READONLY used to fail
    it for good. It is an event's run: the retried attempt is not skipped by the minimum
    interval for the refresh its own first attempt wrote."""
    cache_server = valkeys.start()
    cache = redis.Redis(port=cache_server.port)
    account_id = seed_account(mongo_db, handle="natgeo", accountId="ig-1")
    cache.set(cache_key("ig-1"), ENTRY, ex=900)
    cache.replicaof("127.0.0.1", free_port())
    httpserver.expect_request(f"/v21.0/{BUSINESS_ID}").respond_with_json(graph_body("natgeo"))
    resources = job_resources(
        mongo_uri,
        redis_url(cache_server),
        httpserver.url_for("/v21.0"),
        httpserver.url_for(""),
        budget_redis_url=redis_url_for_test,
    )

    def promote_after_first_refusal() -> None:
        _until(lambda: "errorstat_READONLY" in cache.info("errorstats"), "a READONLY reply")
        cache.replicaof("NO", "ONE")

    promoter = threading.Thread(target=promote_after_first_refusal, daemon=True)
    promoter.start()
    result = run_refresh(account_id, resources, instance, tags=launch_tags(Source.EVENT))
    promoter.join(DEADLINE_SECONDS)

    assert result.success
    assert mongo_db["DataRefreshLog"].find_one({"runId": result.run_id})["status"] == "COMPLETED"
    retries = [
        e.dagster_event
        for e in instance.all_logs(result.run_id)
        if e.dagster_event_type == DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert [r.step_key for r in retries] == ["instagram_profile"]
    assert "in stage: refresh cache" in str(retries[0].event_specific_data.error.to_string())
    graph_calls = [req for req, _ in httpserver.log if req.path == f"/v21.0/{BUSINESS_ID}"]
    assert len(graph_calls) == 1, "the retried attempt resumed after the fetch"
    assert json.loads(cache.get(cache_key("ig-1")))["account"]["followerCount"] == 1500
    assert redis_client.keys("ig-refresh:budget:graph:*"), "the budget lives in its own Redis"
    assert not cache.keys("ig-refresh:budget:*")
