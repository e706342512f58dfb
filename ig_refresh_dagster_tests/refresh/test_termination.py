"""Terminating a refresh run stops it, in process with real stores and an HTTP server as
Instagram. Dagster turns an interrupt inside a step that has a RetryPolicy into a retry, so
without the refresh's own check a Terminate only restarted the fetch. The launcher's side (it
marks the run CANCELING, then interrupts the worker) is reproduced here by the server's handler;
on the real daemon it is in faults/test_warm_launcher_faults.py."""

from __future__ import annotations

import json
import os
import signal
import time

from bson import ObjectId
from dagster import DagsterRunStatus
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ig_refresh_dagster_tests.support.refresh_helpers import (
    BUSINESS_ID,
    graph_body,
    run_refresh,
    seed_account,
)

GRAPH_PATH = f"/v21.0/{BUSINESS_ID}"


def cancel_current_run(instance) -> None:
    (run,) = instance.get_runs(limit=1)
    instance.report_run_canceling(run)


def test_a_refresh_interrupted_by_terminate_stops_without_a_retry(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    account_id = seed_account(mongo_db, handle="natgeo", followerCount=1000)
    calls: list[Request] = []

    def terminate_while_waiting(request: Request) -> Response:
        calls.append(request)
        cancel_current_run(instance)
        os.kill(os.getpid(), signal.SIGINT)  # what the launcher sends the worker
        time.sleep(1)  # the worker is interrupted while it waits for this answer
        return Response(json.dumps(graph_body("natgeo")), content_type="application/json")

    httpserver.expect_request(GRAPH_PATH).respond_with_handler(terminate_while_waiting)
    result = run_refresh(account_id, resources, instance)

    assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.CANCELED
    assert len(calls) == 1, "the terminated refresh was not fetched again"
    (entry,) = mongo_db["DataRefreshLog"].find({"runId": result.run_id})
    assert (entry["status"], entry["reason"]) == ("FAILED", "terminated")
    account = mongo_db["Account"].find_one({"_id": ObjectId(account_id)})
    assert account["followerCount"] == 1000 and account.get("lastDataRefresh") is None


def test_an_attempt_starting_after_terminate_does_not_refresh(
    mongo_db, httpserver: HTTPServer, resources, instance
) -> None:
    """The interrupt came between attempts (the step was waiting to retry): the next attempt
    sees the request and stops before fetching."""
    account_id = seed_account(mongo_db, handle="natgeo", followerCount=1000)
    calls: list[Request] = []

    def fail_then_get_terminated(request: Request) -> Response:
        calls.append(request)
        cancel_current_run(instance)
        return Response("upstream down", status=503)

    httpserver.expect_request(GRAPH_PATH).respond_with_handler(fail_then_get_terminated)
    result = run_refresh(account_id, resources, instance)

    assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.CANCELED
    assert len(calls) == 1
    (entry,) = mongo_db["DataRefreshLog"].find({"runId": result.run_id})
    assert (entry["status"], entry["reason"]) == ("FAILED", "terminated")
