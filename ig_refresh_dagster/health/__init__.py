"""The health sidecar on port 3053: liveness, readiness checks and the HTTP server."""
