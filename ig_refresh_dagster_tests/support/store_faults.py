"""The embedded store made unreachable, for clients that already have it open and for new ones.

Its folder is moved away with a file in its place (a new client cannot open it, nor silently
create an empty store there; root ignores chmod, so modes would not do), and every collection
file is write-locked: a client that already has the files open (the process-wide clients keep
them open) still reads, but every write fails with "database is locked", as a write to an
unreachable MongoDB fails.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def _write_lock(path: Path, timeout: float = 20.0) -> sqlite3.Connection:
    """An open exclusive transaction on one SQLite file (retried while a writer finishes)."""
    lock = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    return lock


@contextlib.contextmanager
def embedded_store_unreachable(store_dir: Path) -> Iterator[None]:
    away = store_dir.with_name(store_dir.name + ".unreachable")
    os.rename(store_dir, away)
    store_dir.write_text("")
    locks: list[sqlite3.Connection] = []
    try:
        for database in sorted(p for p in away.iterdir() if p.is_dir()):
            for path in sorted(database.iterdir()):
                if not path.name.endswith(("-wal", "-shm", "-journal")):
                    locks.append(_write_lock(path))
        yield
    finally:
        for lock in locks:
            lock.rollback()
            lock.close()
        store_dir.unlink()
        os.rename(away, store_dir)
