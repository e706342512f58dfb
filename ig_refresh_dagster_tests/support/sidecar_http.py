"""One HTTP request to a health sidecar under test, answered whole."""

from __future__ import annotations

import http.client
from typing import Any

from ig_refresh_dagster.health.server import HealthServer


def request(server: HealthServer, path: str, method: str = "GET") -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()
