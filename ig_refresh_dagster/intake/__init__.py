"""Kafka side, plain Python (no Dagster): events and strict JSON, the cursor and its epochs, the
topic reader, tick planning, dead letters (headers, publisher, reading back) and their replay."""
