"""The small SQLite files the CA simulator keeps its state in (what it issued and revoked,
held requests, SCEP transactions, challenge passwords), so that `certfleet ca approve` and
friends can act on a running CA from another process, and several server processes
(``ca serve --processes N``) share one CA.

Every file is in WAL mode, so a reader never waits for a writer in another process, with
``synchronous=NORMAL``: a commit does not wait for the disk (a power cut may lose the last
commits, never corrupt the file). A write that depends on what was read goes through
:meth:`SqliteStore.exclusive`: the write lock is taken before the read, so two processes cannot
both decide from the same state.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Seconds a statement waits for another process's write lock before it fails.
BUSY_TIMEOUT = 10
#: Run on each new connection (the journal mode is the file's, set once).
PRAGMAS = ("PRAGMA synchronous=NORMAL",)


class SqliteStore:
    """One SQLite file with the subclass's ``SCHEMA``: thread-safe within a process (one
    connection at a time, or one kept per thread with ``KEEP_OPEN``), safe across processes
    through SQLite's own locking. Rows come back as :class:`sqlite3.Row`; outside
    :meth:`exclusive` every statement commits on its own."""

    SCHEMA = ""
    #: Keep one connection per thread open instead of opening one per use: for a store read on
    #: every request, where opening SQLite would cost more than the query.
    KEEP_OPEN = False

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        #: Connections this process inherited from the one that forked it: never used, never
        #: closed here (closing would touch the parent's locks on the file).
        self._inherited: list[sqlite3.Connection] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(self.SCHEMA)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        db.row_factory = sqlite3.Row
        for pragma in PRAGMAS:
            db.execute(pragma)
        return db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        held = getattr(self._local, "held", None)
        if held is not None:  # inside exclusive(): join its transaction
            yield held
            return
        if self.KEEP_OPEN:
            yield self._kept()
            return
        with self._lock:
            db = self._open()
            try:
                yield db
            finally:
                db.close()

    def _kept(self) -> sqlite3.Connection:
        """This thread's open connection; a new one in a forked child (SQLite connections must
        not cross a fork)."""
        kept = getattr(self._local, "kept", None)
        if kept is not None and kept[0] != os.getpid():
            self._inherited.append(kept[1])
            kept = None
        if kept is None:
            kept = (os.getpid(), self._open())
            self._local.kept = kept
        return kept[1]

    def close(self) -> None:
        """Close this thread's kept connection (before a fork, so no child inherits it)."""
        kept = getattr(self._local, "kept", None)
        if kept is not None and kept[0] == os.getpid():
            kept[1].close()
        self._local.kept = None

    @contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, its lock taken at once (no read lock to upgrade, which could
        deadlock), that every call of this store in this thread joins until the block ends;
        committed at the end, rolled back on an exception. Nested, it joins the outer one."""
        held = getattr(self._local, "held", None)
        if held is not None:
            yield held
            return
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            self._local.held = db
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")
            finally:
                self._local.held = None
