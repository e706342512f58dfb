"""What a backfill did, account by account: the report behind ``ig-refresh backfill status`` /
``report`` and the summary ``backfill_summary_sensor`` records in Dagster.

Dagster knows a backfill's partitions and its runs (tagged ``dagster/backfill``); only
``DataRefreshLog`` knows what each run did (SKIPPED as fresh, DEFERRED until when, FAILED why,
followers before and after). A deferred run's refresh continues in the run that adopted it
(``retriedBy``), so an account's outcome is that of the last run of its chain.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from dagster import DagsterInstance, RunsFilter
from pydantic import BaseModel

from ig_refresh_dagster.refresh.launch.asset_backfill import backfill_partitions
from ig_refresh_dagster.refresh.launch.backfill import duration_text
from ig_refresh_dagster.refresh.run.job import instagram_profile
from ig_refresh_dagster.refresh.run.tags import HANDLE
from ig_refresh_dagster.stores.accounts import COLLECTION as ACCOUNTS
from ig_refresh_dagster.stores.accounts import as_utc, username_of
from ig_refresh_dagster.stores.budget_share import BackgroundCapacity
from ig_refresh_dagster.stores.refresh_log import DEFERRED, IN_PROGRESS, RefreshLogStore

BACKFILL_TAG = "dagster/backfill"
NOT_STARTED = "NOT_STARTED"
# The order the summary lists outcomes in; a status another version writes is listed after.
OUTCOMES = ("COMPLETED", "SKIPPED", DEFERRED, "FAILED", IN_PROGRESS, NOT_STARTED)
FINAL = {"COMPLETED", "SKIPPED", "FAILED"}
# A refresh deferred more often than this within one backfill is reported at its last hop seen.
MAX_CHAIN = 20
TABLE_ROWS = 50
BATCH = 1000


class AccountOutcome(BaseModel):
    """One account of the backfill: the row of the CSV/JSON export."""

    account_id: str
    handle: str | None
    outcome: str
    reason: str | None = None
    retry_at: datetime | None = None
    method: str | None = None
    followers_before: int | None = None
    followers_after: int | None = None
    refreshed_at: datetime | None = None
    run_id: str | None = None


class BackfillReport(BaseModel):
    backfill_id: str
    title: str | None
    dagster_status: str
    created_at: datetime
    accounts: list[AccountOutcome]

    @property
    def page(self) -> str:
        """The backfill's page, relative to the Dagster webserver."""
        return f"/runs/b/{self.backfill_id}"

    def counts(self) -> dict[str, int]:
        found = Counter(a.outcome for a in self.accounts)
        ordered = [o for o in OUTCOMES if o in found] + sorted(set(found) - set(OUTCOMES))
        return {o: found[o] for o in ordered}

    def waiting(self) -> int:
        """Accounts whose run has not started or not ended; DEFERRED ones wait for their
        ``retry_at`` instead."""
        return sum(a.outcome in (NOT_STARTED, IN_PROGRESS) for a in self.accounts)

    def rate_per_hour(self, now: datetime) -> float | None:
        """Accounts finished per hour since the backfill was created (None before the first)."""
        done = sum(a.outcome in FINAL for a in self.accounts)
        hours = (now - self.created_at).total_seconds() / 3600
        return done / hours if done and hours > 0 else None

    def status_lines(self, now: datetime, capacity: BackgroundCapacity | None) -> list[str]:
        lines = [
            f"backfill {self.backfill_id} ({self.title or 'untitled'}): Dagster status "
            f"{self.dagster_status}, created {self.created_at:%Y-%m-%d %H:%M} UTC, "
            f"{len(self.accounts)} accounts",
        ]
        for outcome, count in self.counts().items():
            lines.append(f"  {outcome:<12} {count:>6}{self._detail(outcome)}")
        rate = self.rate_per_hour(now)
        lines.append(f"rate so far: {f'{rate:.1f} accounts/h' if rate else 'none finished yet'}")
        if self.waiting() and capacity is not None:
            eta = duration_text(capacity.eta_seconds(self.waiting()))
            lines.append(
                f"ETA for the {self.waiting()} not started or running: {eta} at the backfill "
                "share of the hourly budgets"
            )
        lines.append(f"page: {self.page} (on the Dagster webserver)")
        return lines

    def _detail(self, outcome: str) -> str:
        """The reasons of SKIPPED/FAILED accounts, the next retry of DEFERRED ones."""
        rows = [a for a in self.accounts if a.outcome == outcome]
        if outcome == DEFERRED:
            retries = [a.retry_at for a in rows if a.retry_at]
            return f"  next retry {min(retries):%Y-%m-%d %H:%M} UTC" if retries else ""
        reasons = Counter(a.reason for a in rows if a.reason)
        return "".join(f"\n      {n}: {reason}" for reason, n in reasons.most_common(5))

    def markdown(self) -> str:
        """The outcome table Dagster shows: counts, then up to ``TABLE_ROWS`` accounts."""
        lines = ["| outcome | accounts |", "| --- | ---: |"]
        lines += [f"| {o} | {n} |" for o, n in self.counts().items()]
        lines += [
            "",
            "| account | outcome | reason | method | followers before → after |",
            "| --- | --- | --- | --- | --- |",
        ]
        for a in self.accounts[:TABLE_ROWS]:
            reason = (a.reason or "").replace("|", "\\|").replace("\n", " ")[:120]
            if a.retry_at:
                reason += f" (retry {a.retry_at:%Y-%m-%d %H:%M} UTC)"
            followers = f"{_count(a.followers_before)} → {_count(a.followers_after)}"
            label = f"@{a.handle}" if a.handle else a.account_id
            lines.append(f"| {label} | {a.outcome} | {reason} | {a.method or ''} | {followers} |")
        if len(self.accounts) > TABLE_ROWS:
            lines.append(f"\n{len(self.accounts) - TABLE_ROWS} more: `ig-refresh backfill report`")
        return "\n".join(lines)


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def _followers(entry: dict[str, Any], side: str) -> int | None:
    value = (entry.get("dataSnapshot") or {}).get(side, {}).get("followerCount")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def account_outcome(account_id: str, handle: str | None, entry: dict[str, Any]) -> AccountOutcome:
    status = entry.get("status", IN_PROGRESS)
    # Whatever reason a writer gave is shown as-is; a failure adds its error.
    said = [entry.get("reason"), entry.get("error") if status == "FAILED" else None]
    reason = "; ".join(str(s) for s in said if s) or None
    return AccountOutcome(
        account_id=account_id,
        handle=handle,
        outcome=status,
        reason=reason,
        retry_at=_time(entry.get("retryAt")) if status == DEFERRED else None,
        method=entry.get("source"),
        followers_before=_followers(entry, "before"),
        followers_after=_followers(entry, "after"),
        refreshed_at=_time(entry.get("completedAt")) if status == "COMPLETED" else None,
        run_id=entry.get("runId"),
    )


def final_entry(log: RefreshLogStore, entry: dict[str, Any]) -> dict[str, Any]:
    """A deferral continues in the run that adopted it: follow ``retriedBy`` to its end."""
    for _ in range(MAX_CHAIN):
        retry = entry.get("retriedBy")
        nxt = log.for_run(retry) if entry.get("status") == DEFERRED and retry else None
        if nxt is None:
            return entry
        entry = nxt
    return entry


def _batches(items: list[str]) -> list[list[str]]:
    """A backfill can target 100k accounts: look them up ``BATCH`` at a time."""
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def _handles(db: Any, ids: list[str]) -> dict[str, str | None]:
    handles = {}
    for batch in _batches(ids):
        docs = db[ACCOUNTS].find(
            {"_id": {"$in": [ObjectId(i) for i in batch]}}, {"handle": 1, "accountId": 1}
        )
        handles.update({str(d["_id"]): username_of(d) for d in docs})
    return handles


class BackfillNotFound(LookupError):
    pass


def latest_backfill_id(instance: DagsterInstance) -> str:
    latest = instance.get_backfills(limit=1)
    if not latest:
        raise BackfillNotFound("this Dagster instance has no backfill")
    return latest[0].backfill_id


def backfill_report(instance: DagsterInstance, db: Any, backfill_id: str) -> BackfillReport:
    """One row per account the backfill targets, from its runs' ``DataRefreshLog`` entries."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        raise BackfillNotFound(f"no backfill {backfill_id!r} in this Dagster instance")
    if not backfill.is_asset_backfill or instagram_profile.key not in (
        backfill.asset_selection or []
    ):
        raise BackfillNotFound(f"backfill {backfill_id} is not a backfill of instagram_profile")
    partitions = backfill_partitions(backfill, instagram_profile)
    latest: dict[str, Any] = {}
    for run in instance.get_runs(RunsFilter(tags={BACKFILL_TAG: backfill_id})):  # newest first
        latest.setdefault(run.tags.get("dagster/partition", ""), run)
    log = RefreshLogStore(db)
    entries = {}
    for batch in _batches([r.run_id for r in latest.values()]):
        entries.update(log.entries(batch))
    stored = _handles(db, [p for p in partitions if ObjectId.is_valid(p)])
    accounts = []
    for account_id in partitions:
        run = latest.get(account_id)
        handle = stored.get(account_id) or (run.tags.get(HANDLE) if run else None)
        if run is None:
            accounts.append(
                AccountOutcome(account_id=account_id, handle=handle, outcome=NOT_STARTED)
            )
            continue
        entry = entries.get(run.run_id, {"runId": run.run_id})
        accounts.append(account_outcome(account_id, handle, final_entry(log, entry)))
    return BackfillReport(
        backfill_id=backfill_id,
        title=backfill.title,
        dagster_status=backfill.status.value,
        created_at=datetime.fromtimestamp(backfill.backfill_timestamp, UTC),
        accounts=accounts,
    )
