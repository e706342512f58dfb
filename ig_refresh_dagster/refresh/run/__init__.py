"""One refresh: its resources, stages, failure handling, the asset and job, and its checks."""
