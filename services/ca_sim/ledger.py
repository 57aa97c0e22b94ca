"""What the issuing CA has signed and what it has revoked: ``DIR/ca/ledger.sqlite``.

Every certificate the issuing CA signs is recorded (serial, subject, kind), so the OCSP
responder can tell a serial it never issued (``unknown``) from a good one, and
``certfleet ca revoke`` can refuse such a serial. Revocations are rows beside them; each one
moves a generation counter, which tells a running server, in this process or another, that
its CRL is out of date. The newest CRL is kept here too, so every server sharing the state
directory answers the same one, and CRL numbers only grow.

WAL with ``synchronous=NORMAL`` (see :mod:`.sqlite_store`): a revocation or an issuance commits
without waiting for the disk, and OCSP lookups read while another process writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from services.ca_sim.sqlite_store import SqliteStore
from shared.clock import utcnow
from shared.errors import ConfigurationError, ConflictError, NotFoundError

#: Reasons an operator may give (RFC 5280 5.3.1), by their RFC names.
REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
           "cessationOfOperation", "certificateHold")
#: The one reason a revocation may be changed from: a hold made permanent.
HOLD = "certificateHold"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    profile TEXT,
    not_after TEXT NOT NULL,
    issued_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    serial TEXT PRIMARY KEY REFERENCES certificates (serial),
    reason TEXT NOT NULL,
    revoked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('revocations', 0), ('crl_number', 0);
CREATE TABLE IF NOT EXISTS crl (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    number INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    this_update TEXT NOT NULL,
    next_update TEXT NOT NULL,
    der BLOB NOT NULL
);
"""


def serial_hex(serial: int) -> str:
    """A serial as the CA logs and lists it: lowercase hex, no leading zeros."""
    return format(serial, "x")


def parse_serial(text: str) -> int:
    """A serial as an operator types it: hex, with or without ``0x`` and colons (openssl's
    ``x509 -serial`` and ``-text`` forms)."""
    cleaned = text.strip().lower().removeprefix("serial=").removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        value = -1
    if value < 0 or not cleaned:
        raise ConfigurationError(f"serial {text!r} is not a hexadecimal number; give it as `certfleet ca "
                                 "revocations` or `openssl x509 -serial` prints it", code="bad_serial")
    return value


@dataclass(frozen=True, kw_only=True)
class Revocation:
    serial: int
    subject: str
    reason: str
    revoked_at: datetime

    @property
    def reason_flag(self) -> x509.ReasonFlags | None:
        """The reason as CRLs and OCSP carry it; None for ``unspecified``, which RFC 5280
        says to leave out rather than state."""
        return None if self.reason == "unspecified" else x509.ReasonFlags(self.reason)

    def as_dict(self) -> dict[str, object]:
        return {"serial": serial_hex(self.serial), "subject": self.subject, "reason": self.reason,
                "revoked_at": self.revoked_at.isoformat()}


@dataclass(frozen=True, kw_only=True)
class CertificateState:
    """What the ledger knows of one issued serial."""

    serial: int
    subject: str
    revocation: Revocation | None = None


@dataclass(frozen=True, kw_only=True)
class StoredCrl:
    number: int
    generation: int
    this_update: datetime
    next_update: datetime


class Ledger(SqliteStore):
    """Unlike the other stores, one connection per thread, kept open: an OCSP answer looks a
    serial up, and opening SQLite (with its pragmas) each time would cost more than the rest of
    the answer. In autocommit mode every statement still sees what other processes committed."""

    SCHEMA = _SCHEMA
    KEEP_OPEN = True

    # --- issuance -------------------------------------------------------------------------

    def record(self, cert: x509.Certificate, *, kind: str, profile: str | None = None,
               now: datetime | None = None) -> bool:
        """Remember a certificate the issuing CA signed; False when its serial was recorded
        already (recording a certificate twice changes nothing)."""
        return self.record_many([(cert, kind, profile)], now=now) == 1

    def record_many(self, certs: Iterable[tuple[x509.Certificate, str, str | None]], *,
                    now: datetime | None = None) -> int:
        """Record several certificates; how many serials were new."""
        stamp = (now or utcnow()).isoformat()
        rows = [(serial_hex(c.serial_number), c.subject.rfc4514_string(), kind, profile,
                 c.not_valid_after_utc.isoformat(), stamp) for c, kind, profile in certs]
        with self._connect() as db:
            return db.executemany("INSERT OR IGNORE INTO certificates (serial, subject, kind, profile, not_after,"
                                  " issued_at) VALUES (?, ?, ?, ?, ?, ?)", rows).rowcount

    def record_serials(self, serials: Iterable[int], *, subject: str, kind: str, not_after: datetime,
                       now: datetime | None = None) -> None:
        """Record many issued serials at once, without their certificates: for loading large
        lists (benchmarks)."""
        stamp = (now or utcnow()).isoformat()
        rows = [(serial_hex(serial), subject, kind, not_after.isoformat(), stamp) for serial in serials]
        with self.exclusive() as db:
            db.executemany("INSERT OR IGNORE INTO certificates (serial, subject, kind, not_after, issued_at)"
                           " VALUES (?, ?, ?, ?, ?)", rows)

    def lookup(self, serial: int) -> CertificateState | None:
        """The serial's state, or None when this CA never issued it."""
        with self._connect() as db:
            row = db.execute(
                "SELECT c.serial, c.subject, r.reason, r.revoked_at FROM certificates c"
                " LEFT JOIN revocations r ON r.serial = c.serial WHERE c.serial = ?", (serial_hex(serial),),
            ).fetchone()
        if row is None:
            return None
        revocation = _revocation(row) if row["reason"] else None
        return CertificateState(serial=serial, subject=row["subject"], revocation=revocation)

    # --- revocation -----------------------------------------------------------------------

    def revoke(self, serial: int, *, reason: str = "unspecified", now: datetime | None = None,
               cert: x509.Certificate | None = None) -> tuple[Revocation, bool]:
        """Revoke an issued serial; the revocation, and whether anything changed. ``cert``, a
        certificate the caller checked this CA signed, is recorded first if it is missing (one
        issued before the ledger was kept). Revoking again for the same reason changes nothing;
        for another reason it is refused, except to make a hold permanent."""
        if reason not in REASONS:
            raise ConfigurationError(f"revocation reason {reason!r} is not one of {', '.join(REASONS)}",
                                     code="bad_reason")
        if cert is not None:
            self.record(cert, kind="end-entity", now=now)
        stamp = (now or utcnow()).replace(microsecond=0).isoformat()  # what a CRL or OCSP answer can say
        key = serial_hex(serial)
        with self.exclusive() as db:
            row = db.execute(
                "SELECT c.serial, c.subject, r.reason, r.revoked_at FROM certificates c"
                " LEFT JOIN revocations r ON r.serial = c.serial WHERE c.serial = ?", (key,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"this CA never issued a certificate with serial {key}; `certfleet ca "
                                    "revocations` lists the revoked ones", code="unknown_serial")
            if row["reason"] == reason:
                return _revocation(row), False
            if row["reason"] and row["reason"] != HOLD:
                raise ConflictError(f"serial {key} was already revoked at {row['revoked_at']} "
                                    f"({row['reason']}); only a certificateHold may be changed",
                                    code="already_revoked")
            if row["reason"]:  # a hold made permanent keeps the time it was first revoked
                db.execute("UPDATE revocations SET reason = ? WHERE serial = ?", (reason, key))
            else:
                db.execute("INSERT INTO revocations (serial, reason, revoked_at) VALUES (?, ?, ?)",
                           (key, reason, stamp))
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'revocations'")
        revocation = Revocation(serial=serial, subject=row["subject"], reason=reason,
                                revoked_at=datetime.fromisoformat(row["revoked_at"] or stamp))
        return revocation, True

    def revoke_many(self, entries: Iterable[tuple[int, str, datetime]]) -> None:
        """Revoke issued serials in one transaction, (serial, reason, time) each; for loading
        large lists (benchmarks). Serials already revoked keep their revocation."""
        rows = [(serial_hex(serial), reason, when.isoformat()) for serial, reason, when in entries]
        with self.exclusive() as db:
            db.executemany("INSERT OR IGNORE INTO revocations (serial, reason, revoked_at)"
                           " SELECT serial, ?, ? FROM certificates WHERE serial = ?",
                           [(reason, when, serial) for serial, reason, when in rows])
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'revocations'")

    def revocations(self) -> list[Revocation]:
        """Every revocation, oldest first."""
        return self.revocations_at()[1]

    def revocations_at(self) -> tuple[int, list[Revocation]]:
        """The generation and the revocations it counts, read together."""
        with self._connect() as db:
            db.execute("BEGIN")  # one snapshot for both
            try:
                generation = _generation(db)
                rows = db.execute(
                    "SELECT r.serial, c.subject, r.reason, r.revoked_at FROM revocations r"
                    " JOIN certificates c ON c.serial = r.serial ORDER BY r.revoked_at, r.serial"
                ).fetchall()
            finally:
                db.execute("COMMIT")
        return generation, [_revocation(row) for row in rows]

    def generation(self) -> int:
        """Moves with every revocation: a CRL made at another generation is out of date."""
        with self._connect() as db:
            return _generation(db)

    # --- the CRL --------------------------------------------------------------------------

    def next_crl_number(self) -> int:
        with self._connect() as db:
            return db.execute(
                "UPDATE counters SET value = value + 1 WHERE name = 'crl_number' RETURNING value"
            ).fetchone()[0]

    def stored_crl(self) -> StoredCrl | None:
        with self._connect() as db:
            row = db.execute("SELECT number, generation, this_update, next_update FROM crl WHERE id = 1").fetchone()
        if row is None:
            return None
        return StoredCrl(number=row["number"], generation=row["generation"],
                         this_update=datetime.fromisoformat(row["this_update"]),
                         next_update=datetime.fromisoformat(row["next_update"]))

    def stored_crl_der(self, number: int) -> bytes | None:
        with self._connect() as db:
            row = db.execute("SELECT der FROM crl WHERE id = 1 AND number = ?", (number,)).fetchone()
        return bytes(row["der"]) if row else None

    def store_crl(self, crl: StoredCrl, der: bytes) -> None:
        """Keep a CRL as the newest, unless one with a higher number got there first."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO crl (id, number, generation, this_update, next_update, der) VALUES (1, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET number = excluded.number, generation = excluded.generation,"
                " this_update = excluded.this_update, next_update = excluded.next_update, der = excluded.der"
                " WHERE excluded.number > crl.number",
                (crl.number, crl.generation, crl.this_update.isoformat(), crl.next_update.isoformat(), der),
            )


def _generation(db: sqlite3.Connection) -> int:
    return db.execute("SELECT value FROM counters WHERE name = 'revocations'").fetchone()[0]


def _revocation(row: sqlite3.Row) -> Revocation:
    return Revocation(serial=int(row["serial"], 16), subject=row["subject"], reason=row["reason"],
                      revoked_at=datetime.fromisoformat(row["revoked_at"]))
