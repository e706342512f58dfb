"""Tests of the health sidecar: probes, /metrics and the history page over real HTTP."""
