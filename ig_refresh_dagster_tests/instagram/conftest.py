"""Fixtures local to the Instagram tests (Redis comes from the suite's conftest)."""

from __future__ import annotations

import pytest

from ig_refresh_dagster.devstack.services import free_port


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on, for connection-refused paths."""
    return free_port()
