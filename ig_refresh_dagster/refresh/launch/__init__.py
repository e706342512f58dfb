"""Every way a refresh starts: the event sensor, deferral retries, freshness and backfills."""
