"""The dev stack's child processes: a start that cannot succeed fails at once and says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from ig_refresh_dagster.devstack.services import start_valkey


def test_a_child_that_exits_fails_its_start_at_once_with_its_own_reason(tmp_path: Path) -> None:
    """Cluster mode on a port above 55535 has no room for its bus port (port + 10000): valkey
    exits. The start reports the exit and valkey's reason, not a listen timeout."""
    with pytest.raises(RuntimeError) as failed:
        start_valkey(
            60001,
            tmp_path / "valkey.log",
            ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            cwd=tmp_path,
        )
    assert "exited with code" in str(failed.value)
    assert "port number too high" in str(failed.value)
