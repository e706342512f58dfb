"""Kafka side, plain Python (no Dagster): events, the topic reader, tick planning, dead letters."""
