"""Tests of the Dagster layer: the refresh run, its launch paths and housekeeping, in process."""
