"""The Dagster layer: resources, the refresh stages, the asset and job, and the sensors."""
