"""Tests of the Kafka side: parsing, planning, properties over arbitrary bytes, TLS/SASL."""
