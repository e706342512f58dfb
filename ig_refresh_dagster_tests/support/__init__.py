"""Helpers shared by the test packages: services, daemons, Kafka, PostgreSQL, deploy files."""
