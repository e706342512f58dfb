"""The Dagster layer: resources, the refresh ops, the asset and job, and the sensors."""
