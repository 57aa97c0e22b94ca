"""What the SCEP server remembers between messages, in SQLite inside the state directory
(``DIR/ca/scep.sqlite``), shared by every server on that directory:

- transactions: a transactionID (per profile label) is bound to the key it certifies and,
  once issued, to its certificate, so a client that re-sends or polls gets the same
  certificate back, never a second one. A renewal is its own transaction even when the key
  is reused (``renews`` names the certificate it replaces).
- sender nonces: each nonce belongs to one request. The same message re-sent is answered
  again; the nonce on any other request is a replay (badRequest).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca_sim.authority import CaPaths
from services.ca_sim.sqlite_store import SqliteStore
from shared.clock import utcnow

#: How long a nonce is remembered; a replay later than this is caught by its signingTime.
NONCE_MEMORY = timedelta(days=2)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    label TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    renews TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    request_id TEXT,
    cert_pem TEXT,
    serial TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (label, transaction_id, renews)
);
CREATE INDEX IF NOT EXISTS transactions_by_serial ON transactions (serial);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_by_age ON nonces (seen_at);
"""


def public_key_id(public_key) -> str:
    """SHA-256 of the SubjectPublicKeyInfo (the same identity pending.py uses)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True, kw_only=True)
class ScepTransaction:
    id: int
    label: str
    transaction_id: str
    #: Hex serial of the certificate a RenewalReq replaces; "" for a first enrollment.
    renews: str
    key_id: str
    signer_key_id: str
    subject: str
    #: The pending.py request waiting for approval (profiles with manual approval).
    request_id: str | None
    cert_pem: str | None
    serial: str | None
    created_at: str
    updated_at: str

    def certificate(self) -> x509.Certificate | None:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()) if self.cert_pem else None


class TransactionStore(SqliteStore):
    """SCEP transactions and sender nonces: a re-sent or polled request gets the same certificate back."""

    SCHEMA = _SCHEMA

    def find(self, label: str, transaction_id: str, *, renews: str | None = None) -> ScepTransaction | None:
        """The transaction; with ``renews`` None, the latest of either kind (what a poll means)."""
        query = "SELECT * FROM transactions WHERE label = ? AND transaction_id = ?"
        args: tuple[str, ...] = (label, transaction_id)
        if renews is not None:
            query, args = query + " AND renews = ?", (*args, renews)
        with self._connect() as db:
            row = db.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return ScepTransaction(**dict(row)) if row else None

    def create(self, *, label: str, transaction_id: str, renews: str, key_id: str, signer_key_id: str,
               subject: str, request_id: str | None = None, cert: x509.Certificate | None = None,
               now: datetime | None = None) -> ScepTransaction:
        """Record a new transaction; if another server recorded it first, that one is returned."""
        stamp = (now or utcnow()).isoformat()
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode() if cert else None
        serial = format(cert.serial_number, "x") if cert else None
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO transactions (label, transaction_id, renews, key_id, signer_key_id, subject,"
                " request_id, cert_pem, serial, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (label, transaction_id, renews, key_id, signer_key_id, subject, request_id, cert_pem, serial,
                 stamp, stamp),
            )
        found = self.find(label, transaction_id, renews=renews)
        assert found is not None
        return found

    def record_certificate(self, row_id: int, cert: x509.Certificate, *,
                           now: datetime | None = None) -> ScepTransaction:
        """Bind the issued certificate, unless one is bound already (then that one stays)."""
        with self._connect() as db:
            db.execute(
                "UPDATE transactions SET cert_pem = ?, serial = ?, updated_at = ? WHERE id = ? AND cert_pem IS NULL",
                (cert.public_bytes(serialization.Encoding.PEM).decode(), format(cert.serial_number, "x"),
                 (now or utcnow()).isoformat(), row_id),
            )
            row = db.execute("SELECT * FROM transactions WHERE id = ?", (row_id,)).fetchone()
        return ScepTransaction(**dict(row))

    def certificate_by_serial(self, serial: int) -> x509.Certificate | None:
        """A certificate issued over SCEP (GetCert)."""
        with self._connect() as db:
            row = db.execute("SELECT cert_pem FROM transactions WHERE serial = ? LIMIT 1",
                             (format(serial, "x"),)).fetchone()
        return x509.load_pem_x509_certificate(row["cert_pem"].encode()) if row else None

    def remember_nonce(self, nonce: bytes, fingerprint: str, *, now: datetime | None = None) -> bool:
        """False when ``nonce`` was already seen on a different request (a replay)."""
        now = now or utcnow()
        with self._connect() as db:
            db.execute("DELETE FROM nonces WHERE seen_at < ?", ((now - NONCE_MEMORY).isoformat(),))
            db.execute("INSERT OR IGNORE INTO nonces (nonce, fingerprint, seen_at) VALUES (?, ?, ?)",
                       (nonce.hex(), fingerprint, now.isoformat()))
            row = db.execute("SELECT fingerprint FROM nonces WHERE nonce = ?", (nonce.hex(),)).fetchone()
        return row["fingerprint"] == fingerprint


def transactions_db(paths: CaPaths) -> Path:
    return paths.ca_dir / "scep.sqlite"
