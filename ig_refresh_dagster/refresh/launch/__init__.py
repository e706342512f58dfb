"""Every way a refresh starts: the event sensor, deferral retries, freshness and backfills,
each taking its tags, priority and partition bookkeeping from one function (requests.py)."""
