"""Thin Dagster resources: each builds one store client from its configuration.

The stores themselves (``stores/``, ``instagram/``) are plain Python; these classes exist so the
Dagster UI shows where each one points and so tests can swap the configuration.
"""

from typing import Any, ClassVar

import redis
from dagster import ConfigurableResource, InitResourceContext, get_dagster_logger
from pydantic import Field, PrivateAttr

from ig_refresh_dagster import redaction, settings
from ig_refresh_dagster.instagram.credentials import (
    CREDENTIALS_VARIABLE,
    GraphCredential,
    credential_pool,
)
from ig_refresh_dagster.instagram.fetcher import ProfileFetcher
from ig_refresh_dagster.instagram.graph import GraphClient
from ig_refresh_dagster.instagram.graph_pool import Budget, GraphLane, GraphPool, charge_first
from ig_refresh_dagster.instagram.insights import InsightsClient
from ig_refresh_dagster.instagram.scrape import ProfileScraper
from ig_refresh_dagster.instagram.transport import GraphTransport
from ig_refresh_dagster.intake.connection import CONNECTION_SETTINGS, KafkaConnection
from ig_refresh_dagster.intake.cursor import StartFrom
from ig_refresh_dagster.intake.dead_letters import DeadLetterPublisher
from ig_refresh_dagster.intake.events import DEFAULT_MAX_MESSAGE_BYTES
from ig_refresh_dagster.intake.topic_reader import PollLimits, TopicReader
from ig_refresh_dagster.refresh.run.tags import is_background
from ig_refresh_dagster.stores.accounts import AccountStore
from ig_refresh_dagster.stores.budget import (
    BUDGET_LIMIT_SETTINGS,
    GRAPH_BUDGET,
    SCRAPE_BUDGET,
    HourlyBudget,
    graph_budget_name,
)
from ig_refresh_dagster.stores.budget_journal import BudgetJournal
from ig_refresh_dagster.stores.budget_share import BackgroundBudget, BackgroundCapacity, measure
from ig_refresh_dagster.stores.cache import ProfileCache
from ig_refresh_dagster.stores.clients import mongo_client, redis_client
from ig_refresh_dagster.stores.eviction import maxmemory_policy, policy_verdict
from ig_refresh_dagster.stores.fetch_memory import FetchMemory
from ig_refresh_dagster.stores.history import ProfileHistoryStore
from ig_refresh_dagster.stores.insights import InsightsStore
from ig_refresh_dagster.stores.mongo import ensure_indexes_once
from ig_refresh_dagster.stores.refresh_log import RefreshLogStore

GROUP_ID = "instagram-refresh-group"


def setting_field(name: str) -> Any:
    """A resource field whose default is the settings table's, described by its variable.

    Secrets reach it as ``EnvVar`` (the UI shows the variable's name). It is deliberately not a
    Dagster secret field: the launchpad scaffolds such a field as a masked literal
    ``'********'``, and a run launched with that scaffold would use the mask as the value.
    """
    return Field(default=settings.default(name), description=name)


class NotConfigured(RuntimeError):
    pass


def _require(value: str | None, variable: str) -> str:
    """The value, stripped and checked when it is a secret (a control or non-ASCII character
    raises SecretInvalid naming ``variable``), and hidden from every message from now on."""
    if settings.SETTINGS[variable].secret:
        value = settings.clean_secret(variable, value)
        redaction.register(value)
    if not value:
        raise NotConfigured(
            f"{variable} is not set and no embedded stack provided it: start the stack with "
            f"`make run` / `make demo`, or set {variable}"
        )
    return value


class MongoResource(ConfigurableResource):
    """MongoDB (pymongo) or the embedded litemongo store: ``Account``, ``DataRefreshLog``,
    ``InstagramInsights`` and the budgets' journal."""

    uri: str | None = setting_field("MONGODB_URI")
    database: str = setting_field("MONGODB_DATABASE")

    def db(self) -> Any:
        """Opened on first use, inside a step, so a store that is down is a retried step error
        rather than a resource-init failure. The client is the process's one for this URI
        (never closed per run); indexes are ensured once per process, and failing to create
        one is logged, never a failed refresh."""
        uri = _require(self.uri, "MONGODB_URI")
        db = mongo_client(uri)[self.database]
        ensure_indexes_once(
            (uri, self.database),
            [
                AccountStore(db).ensure_indexes,
                RefreshLogStore(db).ensure_indexes,
                InsightsStore(db).ensure_indexes,
                ProfileHistoryStore(db).ensure_indexes,
                BudgetJournal(db).ensure_indexes,
            ],
        )
        return db

    def accounts(self) -> AccountStore:
        return AccountStore(self.db())

    def refresh_log(self) -> RefreshLogStore:
        return RefreshLogStore(self.db())

    def insights(self) -> InsightsStore:
        return InsightsStore(self.db())

    def history(self) -> ProfileHistoryStore:
        return ProfileHistoryStore(self.db())

    def budget_journal(self) -> BudgetJournal:
        return BudgetJournal(self.db())


class RedisResource(ConfigurableResource):
    """Redis: the app's profile cache and what the fetcher remembers."""

    VARIABLE: ClassVar[str] = "REDIS_URL"
    url: str | None = setting_field("REDIS_URL")

    def client(self) -> redis.Redis:
        """The process's one client for this URL (never closed per run)."""
        return redis_client(_require(self.url, self.VARIABLE))

    def cache(self) -> ProfileCache:
        return ProfileCache(self.client())


class BudgetRedisResource(RedisResource):
    """The Redis that holds the fleet-wide budgets: ``REDIS_URL`` unless
    ``INSTAGRAM_BUDGET_REDIS_URL`` names another one. It must run with ``maxmemory-policy
    noeviction``; after a restart or failover the budgets rebuild themselves from the journal."""

    VARIABLE: ClassVar[str] = "INSTAGRAM_BUDGET_REDIS_URL"
    url: str | None = setting_field("INSTAGRAM_BUDGET_REDIS_URL")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Warns in the run's log when the budgets could be evicted; never fails the run (a
        managed Redis may refuse to say, and an unreachable one fails where it is used)."""
        if not self.url:
            return
        try:
            safe, verdict = policy_verdict(maxmemory_policy(self.client()))
        except redis.RedisError as exc:
            safe, verdict = None, f"maxmemory-policy not read: {type(exc).__name__}"
        if safe is not True:
            (context.log or get_dagster_logger()).warning(f"budget Redis: {verdict}")


class KafkaResource(ConfigurableResource):
    """The refresh topic, its dead-letter topic, and how much one sensor tick may read.

    The connection fields are ``KafkaConnection``'s, from the same settings; the password is
    passed as ``EnvVar("KAFKA_SASL_PASSWORD")``, so the UI shows that name and never the value.
    """

    bootstrap_servers: str | None = setting_field("KAFKA_BOOTSTRAP_SERVERS")
    security_protocol: str | None = setting_field("KAFKA_SECURITY_PROTOCOL")
    sasl_mechanism: str | None = setting_field("KAFKA_SASL_MECHANISM")
    sasl_username: str | None = setting_field("KAFKA_SASL_USERNAME")
    sasl_password: str | None = setting_field("KAFKA_SASL_PASSWORD")
    ssl_ca_location: str | None = setting_field("KAFKA_SSL_CA_LOCATION")
    topic: str = setting_field("INSTAGRAM_REFRESH_TOPIC")
    dlq_topic: str = setting_field("INSTAGRAM_REFRESH_DLQ_TOPIC")
    start_from: str = setting_field("INSTAGRAM_REFRESH_START_FROM")
    group_id: str = GROUP_ID
    fetch_wait_max_ms: int | None = setting_field("KAFKA_FETCH_WAIT_MAX_MS")
    max_messages_per_tick: int = 500
    max_poll_seconds: float = 10.0
    # An idle tick waits this long for its first event (a long poll, within max_poll_seconds),
    # so an event published meanwhile is requested at once, not at a later tick: Dagster's
    # sensor loop starts a tick at most every 5 s.
    wait_for_events_seconds: float = 10.0
    # Quiet time that ends a tick once events flowed; every event waits at least this long.
    idle_poll_seconds: float = 0.2
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def connection(self) -> KafkaConnection:
        _require(self.bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
        return KafkaConnection(**{field: getattr(self, field) for field in CONNECTION_SETTINGS})

    def reader(self) -> TopicReader:
        """Checks ``start_from`` on every tick, so a bad value fails loudly at once, not only
        when a cursor is next lost."""
        return TopicReader(
            self.connection(),
            self.topic,
            self.group_id,
            fetch_wait_max_ms=self.fetch_wait_max_ms,
            start_from=StartFrom.parse(self.start_from),
        )

    def dead_letters(self) -> DeadLetterPublisher:
        return DeadLetterPublisher(self.connection(), self.dlq_topic)

    def limits(self) -> PollLimits:
        return PollLimits(
            max_messages=self.max_messages_per_tick,
            max_seconds=self.max_poll_seconds,
            idle_seconds=self.idle_poll_seconds,
            first_message_seconds=self.wait_for_events_seconds,
        )


class InstagramResource(ConfigurableResource):
    """Graph API Business Discovery first, through a pool of credentials, public-page scraping
    second, all budgeted in Redis (``budget_redis``) with the budgets' journal in MongoDB.

    The credentials are the single-token pair (``access_token``, ``business_account_id``) and
    the JSON list ``graph_credentials``; each has its own budget of ``hourly_budget`` calls."""

    redis: RedisResource
    budget_redis: BudgetRedisResource
    mongo: MongoResource
    graph_api_url: str = setting_field("INSTAGRAM_GRAPH_API_URL")
    web_url: str = setting_field("INSTAGRAM_WEB_URL")
    access_token: str | None = setting_field("INSTAGRAM_ACCESS_TOKEN")
    business_account_id: str | None = setting_field("INSTAGRAM_BUSINESS_ACCOUNT_ID")
    graph_credentials: str | None = setting_field(CREDENTIALS_VARIABLE)
    hourly_budget: int = setting_field(BUDGET_LIMIT_SETTINGS[GRAPH_BUDGET])
    scrape_hourly_budget: int = setting_field(BUDGET_LIMIT_SETTINGS[SCRAPE_BUDGET])
    backfill_budget_percent: int = setting_field("INSTAGRAM_BACKFILL_BUDGET_PERCENT")
    freshness_days: int = setting_field("INSTAGRAM_FRESHNESS_DAYS")
    min_refresh_interval_hours: int = setting_field("INSTAGRAM_MIN_REFRESH_INTERVAL_HOURS")
    media_limit: int = 12
    usage_threshold_percent: float = 90.0
    not_business_ttl_hours: int = 7 * 24
    # A token error disables Graph for this token until it changes or this many hours pass.
    graph_disabled_ttl_hours: float = 24.0
    timeout_seconds: float = 10.0
    _background: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """A backfill or freshness run may use only its share of each budget."""
        run = context.dagster_run
        self._background = run is not None and is_background(run.tags)

    def _charged(self, budget: HourlyBudget) -> Budget:
        if self._background:
            return BackgroundBudget(budget, self.backfill_budget_percent)
        return budget

    def credentials(self) -> list[GraphCredential]:
        """The pool, single-token pair first, each token once; a malformed list raises
        CredentialsInvalid naming the variable and the entry, never a value."""
        return credential_pool(self.access_token, self.business_account_id, self.graph_credentials)

    def graph_budgets(self) -> dict[str, HourlyBudget]:
        """Each credential's own budget, by fingerprint."""
        return {c.fingerprint: self._graph_budget(i, c) for i, c in enumerate(self.credentials())}

    def _graph_budget(self, index: int, credential: GraphCredential) -> HourlyBudget:
        """The first credential's budget also counts the calls that the single ``graph`` budget
        of earlier versions journaled, so an upgrade does not give the token that was spending
        a second, empty hour."""
        return self._budget(
            graph_budget_name(credential.fingerprint),
            self.hourly_budget,
            inherits=GRAPH_BUDGET if index == 0 else None,
        )

    def usable_graph_budgets(self) -> list[HourlyBudget]:
        """The budgets of credentials not known to be dead."""
        memory = self._memory()
        return [
            budget
            for fingerprint, budget in self.graph_budgets().items()
            if memory.graph_disabled_reason(fingerprint) is None
        ]

    def background_capacity(self) -> BackgroundCapacity:
        """What the usable budgets leave to background refreshes right now: each credential
        not known to be dead, and scraping."""
        budgets = [*self.usable_graph_budgets(), self.scrape_budget()]
        return measure(budgets, self.backfill_budget_percent)

    def _budget(self, name: str, limit: int, inherits: str | None = None) -> HourlyBudget:
        return HourlyBudget(
            self.budget_redis.client(),
            name,
            limit,
            journal=self.mongo.budget_journal(),
            inherits=inherits,
        )

    def scrape_budget(self) -> HourlyBudget:
        return self._budget(SCRAPE_BUDGET, self.scrape_hourly_budget)

    def _memory(self) -> FetchMemory:
        return FetchMemory(
            self.redis.client(),
            graph_disabled_ttl_seconds=int(self.graph_disabled_ttl_hours * 3600),
        )

    def _pool(self, memory: FetchMemory) -> GraphPool:
        lanes = [
            GraphLane(
                GraphClient(
                    self.graph_api_url,
                    credential.business_account_id,
                    credential.access_token.get_secret_value(),
                    media_limit=self.media_limit,
                    timeout=self.timeout_seconds,
                ),
                self._charged(self._graph_budget(index, credential)),
            )
            for index, credential in enumerate(self.credentials())
        ]
        return GraphPool(lanes, memory)

    def insights_client(self) -> InsightsClient:
        """Owner-token insights. Each Graph call is charged to a credential of the pool that
        has capacity (to the one ``graph`` budget when no credential is configured), so the
        hourly ceiling holds for all Graph traffic."""
        pool = self._pool(self._memory())
        if pool:
            charge = pool.charge
        else:
            unpooled = self._charged(self._budget(GRAPH_BUDGET, self.hourly_budget))

            def charge(subject: str) -> None:
                charge_first([unpooled], subject)

        transport = GraphTransport(
            self.graph_api_url, timeout=self.timeout_seconds, before_call=charge
        )
        return InsightsClient(transport)

    def fetcher(self) -> ProfileFetcher:
        memory = self._memory()
        return ProfileFetcher(
            self._pool(memory),
            ProfileScraper(self.web_url, timeout=self.timeout_seconds),
            self._charged(self.scrape_budget()),
            memory,
            usage_threshold_percent=self.usage_threshold_percent,
            not_business_ttl_seconds=self.not_business_ttl_hours * 3600,
        )
