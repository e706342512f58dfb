"""How a refresh fails: retried, deferred, or failed for good with exactly one log entry.

Transient failures (network, 5xx, store timeouts) are retried by the step's RetryPolicy with
exponential backoff and jitter; anything else fails at once with a readable reason naming the
stage. When the last attempt fails, the run's ``DataRefreshLog`` entry turns FAILED, and a
transient cause (an outage that outlasted the retries) asks Dagster for a run retry.
"""

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import redis
from dagster import (
    Backoff,
    DagsterExecutionInterruptedError,
    DagsterInstance,
    DagsterLogManager,
    DagsterRunStatus,
    Failure,
    Jitter,
    OpExecutionContext,
    RetryPolicy,
)

from ig_refresh_dagster.instagram.errors import InstagramError, TransientError
from ig_refresh_dagster.partitions import is_account_id
from ig_refresh_dagster.refresh.run.resources import MongoResource
from ig_refresh_dagster.stores.mongo import STORE_UNAVAILABLE
from ig_refresh_dagster.stores.redis_faults import StoreUnavailable

TRANSIENT_RETRIES = RetryPolicy(
    max_retries=4, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
TRANSIENT = (
    TransientError,
    StoreUnavailable,
    *STORE_UNAVAILABLE,
    redis.ConnectionError,
    redis.TimeoutError,
)
# Read by Dagster's run retries when the run fails: the instance retries crashed runs only
# (`retry_on_asset_or_op_failure: false` in dagster.yaml); this tag opts one run in.
RETRY_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


@contextlib.contextmanager
def classified(stage: str) -> Iterator[None]:
    """Transient errors propagate for the RetryPolicy, noted with the stage; everything else
    fails without retry, its description naming the stage (the step says where it broke)."""
    try:
        yield
    except Failure:
        raise
    except TRANSIENT as exc:
        exc.add_note(f"in stage: {stage}")
        raise
    except Exception as exc:
        reason = {"reason": exc.reason} if isinstance(exc, InstagramError) else {}
        raise Failure(
            description=f"{stage}: {exc}",
            metadata={"error_type": type(exc).__name__, **reason},
            allow_retries=False,
        ) from None


def is_last_attempt(context: OpExecutionContext, exc: BaseException) -> bool:
    """Whether Dagster will give up on the step after ``exc`` (mirrors its RetryPolicy rule)."""
    if isinstance(exc, Failure) and not exc.allow_retries:
        return True
    return context.retry_number >= TRANSIENT_RETRIES.max_retries


def _failure_reason(exc: BaseException) -> str | None:
    """The machine reason of a failure (``InstagramError.reason``, or a Failure's ``reason``
    metadata), stored on the FAILED entry so operators can count by it."""
    if isinstance(exc, InstagramError):
        return exc.reason
    entry = exc.metadata.get("reason") if isinstance(exc, Failure) else None
    value = getattr(entry, "value", None)
    return value if isinstance(value, str) else None


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, Failure):
        return exc.description or "failed"
    return f"{type(exc).__name__}: {exc}"


def termination_requested(context: OpExecutionContext) -> bool:
    """Whether someone asked this run to stop (Terminate in the UI, ``dagster run terminate``):
    the launcher marks the run CANCELING before it interrupts the worker."""
    run = context.instance.get_run_by_id(context.run_id)
    return run is not None and run.status in (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED)


def terminated() -> Failure:
    return Failure(
        description="terminated: the run was asked to stop before the refresh finished",
        metadata={"reason": "terminated"},
        allow_retries=False,
    )


@contextlib.contextmanager
def failure_recorded(context: OpExecutionContext, mongo: MongoResource) -> Iterator[None]:
    """On the step's last failed attempt: ask for a run retry when the cause is transient, then
    turn the entry FAILED. With MongoDB down the entry is left to the log reconciler
    (``run_status.py``); the retry request never depends on MongoDB.

    A terminated run stops: Dagster turns an interrupt inside a step that has a RetryPolicy into
    a retry, so a terminate request would only restart the refresh; it fails the step without
    retry instead (the run then ends CANCELED), and an attempt that starts after the request
    (the interrupt came between attempts) does not start the refresh at all."""
    try:
        if termination_requested(context):
            raise terminated()
        try:
            yield
        except DagsterExecutionInterruptedError:
            if not termination_requested(context):
                raise
            raise terminated() from None
    except Exception as exc:
        if is_last_attempt(context, exc):
            record_failure(
                context.instance, context.run_id, context.partition_key, mongo, exc, context.log
            )
        raise


def record_failure(
    instance: DagsterInstance,
    run_id: str,
    account_id: str,
    mongo: MongoResource,
    exc: BaseException,
    log: logging.Logger | DagsterLogManager,
) -> None:
    transient = isinstance(exc, TRANSIENT)
    if transient:
        instance.add_run_tags(run_id, {RETRY_STEP_FAILURE_TAG: "true"})
    if not is_account_id(account_id):
        return
    error = _failure_text(exc) + ("; run retry requested" if transient else "")
    try:
        mongo.refresh_log().fail(
            run_id, account_id, error, datetime.now(UTC), reason=_failure_reason(exc)
        )
    except STORE_UNAVAILABLE as store_error:
        log.warning(
            f"DataRefreshLog entry not written ({type(store_error).__name__}): the log "
            "reconciler closes it once MongoDB answers"
        )
