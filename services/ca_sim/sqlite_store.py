"""The small SQLite files the CA simulator keeps its state in (held requests, SCEP
transactions, challenge passwords), so that `certfleet ca approve` and friends can act on a
running CA from another process."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteStore:
    """One SQLite file with the subclass's ``SCHEMA``: thread-safe within a process (one
    connection at a time), safe across processes through SQLite's own locking. Rows come back
    as :class:`sqlite3.Row`; every statement commits on its own."""

    SCHEMA = ""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(self.SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.row_factory = sqlite3.Row
            try:
                yield db
            finally:
                db.close()
