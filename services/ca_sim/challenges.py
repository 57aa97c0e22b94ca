"""One-time SCEP challenge passwords, as a Microsoft NDES hands them out: an operator asks for
one (``certfleet ca challenge --state-dir DIR``), gives it to the device, and the first
enrollment that carries it uses it up. It expires unused after an hour.

Kept in SQLite inside the state directory (``DIR/ca/challenges.sqlite``), so any process may
issue them and every server on that directory accepts them. Only SHA-256 hashes are stored:
the password itself is printed once and never written down by the CA.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from services.ca_sim.authority import CaPaths
from services.ca_sim.sqlite_store import SqliteStore
from shared.clock import utcnow
from shared.errors import NotFoundError

DEFAULT_TTL = timedelta(minutes=60)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS challenges (
    hash TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    used_by TEXT
);
"""


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


class ChallengeStore(SqliteStore):
    """One-time SCEP challenge passwords, kept as hashes."""

    SCHEMA = _SCHEMA

    def issue(self, *, ttl: timedelta = DEFAULT_TTL, now: datetime | None = None) -> str:
        """A new password, valid once within ``ttl``."""
        if ttl <= timedelta(0):
            raise ValueError("a challenge password must live longer than zero seconds")
        now = now or utcnow()
        password = secrets.token_hex(16)
        with self._connect() as db:
            db.execute("INSERT INTO challenges (hash, created_at, expires_at) VALUES (?, ?, ?)",
                       (_hash(password), now.isoformat(), (now + ttl).isoformat()))
            db.execute("DELETE FROM challenges WHERE expires_at < ?", ((now - timedelta(days=7)).isoformat(),))
        return password

    def is_valid(self, password: str, *, now: datetime | None = None) -> bool:
        """Issued, unused and unexpired (nothing is used up by asking)."""
        now = now or utcnow()
        with self._connect() as db:
            row = db.execute("SELECT 1 FROM challenges WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
                             (_hash(password), now.isoformat())).fetchone()
        return row is not None

    def consume(self, password: str, *, used_by: str, now: datetime | None = None) -> bool:
        """Use the password up; False when it was not valid (or another request won the race)."""
        now = now or utcnow()
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE challenges SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL AND expires_at > ?",
                (now.isoformat(), used_by, _hash(password), now.isoformat()),
            )
            return cursor.rowcount == 1


def challenge_db(paths: CaPaths) -> Path:
    return paths.ca_dir / "challenges.sqlite"


def issue_challenge(state_dir: Path | str, *, ttl: timedelta = DEFAULT_TTL) -> str:
    """A one-time challenge password for the CA in ``state_dir`` (the server need not run)."""
    paths = CaPaths(Path(state_dir).resolve())
    if not paths.ca_dir.is_dir():
        raise NotFoundError(f"{paths.state_dir} holds no CA; start `certfleet ca serve --state-dir "
                            f"{paths.state_dir}` first", code="no_ca")
    return ChallengeStore(challenge_db(paths)).issue(ttl=ttl)
