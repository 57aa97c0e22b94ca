"""Enrollment requests that wait for an operator (profiles with manual approval).

Kept in SQLite inside the state directory, so ``certfleet ca approve`` in another process
approves a request the running server holds. A device re-sends the same request while it
waits, so a request is found again by its profile, the hash of its public key and the names
it asks for; what is issued on approval is the request stored here, the one the operator
approved.

    pending ──approve──► approved ──(the device asks again: certificate issued)──► issued
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.ca_sim.authority import CaPaths
from services.ca_sim.issuance import requested_names
from services.ca_sim.sqlite_store import SqliteStore
from shared.clock import utcnow
from shared.errors import NotFoundError

PENDING, APPROVED, ISSUED = "pending", "approved", "issued"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    key_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    csr_pem TEXT NOT NULL,
    cert_pem TEXT
);
CREATE INDEX IF NOT EXISTS requests_by_key ON requests (profile, key_id);
"""


def key_id(csr: x509.CertificateSigningRequest) -> str:
    """SHA-256 of the request's public key: stable across re-signed copies of one request."""
    spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


@dataclass(frozen=True, kw_only=True)
class EnrollmentRequest:
    id: str
    profile: str
    key_id: str
    subject: str
    status: str
    created_at: datetime
    updated_at: datetime
    csr_pem: str
    cert_pem: str | None = None

    def csr(self) -> x509.CertificateSigningRequest:
        """The request as it was submitted: what an approval lets through."""
        return x509.load_pem_x509_csr(self.csr_pem.encode())

    def certificate(self) -> x509.Certificate | None:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()) if self.cert_pem else None


class RequestStore(SqliteStore):
    """Enrollment requests a profile holds for approval, and what became of them."""

    SCHEMA = _SCHEMA

    @staticmethod
    def _row(row: sqlite3.Row) -> EnrollmentRequest:
        data = dict(row)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        data["updated_at"] = datetime.fromisoformat(data["updated_at"])
        return EnrollmentRequest(**data)

    def find(self, profile: str, csr: x509.CertificateSigningRequest) -> EnrollmentRequest | None:
        """The latest request of this profile for the request's key and names, if any: a copy
        of the request signed anew finds it, a request for other names under the same key does
        not (an approval is of the names the operator saw)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM requests WHERE profile = ? AND key_id = ? ORDER BY created_at DESC",
                (profile, key_id(csr)),
            ).fetchall()
        names = requested_names(csr)
        return next((held for held in map(self._row, rows) if requested_names(held.csr()) == names), None)

    def submit(self, profile: str, csr: x509.CertificateSigningRequest, *,
               now: datetime | None = None) -> EnrollmentRequest:
        now = now or utcnow()
        request = EnrollmentRequest(
            id=secrets.token_hex(6), profile=profile, key_id=key_id(csr),
            subject=csr.subject.rfc4514_string(),
            status=PENDING, created_at=now, updated_at=now,
            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
        )
        with self._connect() as db:
            db.execute(
                "INSERT INTO requests (id, profile, key_id, subject, status, created_at, updated_at, csr_pem)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (request.id, profile, request.key_id, request.subject, PENDING, now.isoformat(),
                 now.isoformat(), request.csr_pem),
            )
        return request

    def hold(self, profile: str, csr: x509.CertificateSigningRequest, *,
             reuse: Callable[[EnrollmentRequest], bool]) -> tuple[EnrollmentRequest, bool]:
        """The request held for this key and these names when ``reuse`` accepts it, else a new
        pending one; and whether it is new. Found and submitted in one transaction: a device
        that sends its request twice at once, to two server processes, gets one request."""
        with self.exclusive():
            held = self.find(profile, csr)
            if held is not None and reuse(held):
                return held, False
            return self.submit(profile, csr), True

    def get(self, request_id: str) -> EnrollmentRequest:
        with self._connect() as db:
            row = db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"no enrollment request {request_id!r}; `certfleet ca requests` lists the pending ones",
                code="request_not_found",
            )
        return self._row(row)

    def approve(self, request_id: str, *, now: datetime | None = None) -> EnrollmentRequest:
        """Let the request through; approving twice, or after issuing, changes nothing."""
        now = now or utcnow()
        with self._connect() as db:
            db.execute(
                "UPDATE requests SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
                (APPROVED, now.isoformat(), request_id, PENDING),
            )
        return self.get(request_id)

    def issue_approved(self, request_id: str, issue: Callable[[x509.CertificateSigningRequest], x509.Certificate],
                       *, now: datetime | None = None) -> tuple[EnrollmentRequest, bool]:
        """Issue an approved request with ``issue`` (given the request as submitted) and record
        its certificate; the request, and whether its certificate was issued now. One that is
        issued already keeps its certificate: the check and the issue are one transaction, so
        of two server processes asked at once, one issues and the other answers the same
        certificate."""
        now = now or utcnow()
        with self.exclusive() as db:
            held = self.get(request_id)
            if held.status != APPROVED:
                return held, False
            cert = issue(held.csr())
            db.execute(
                "UPDATE requests SET status = ?, cert_pem = ?, updated_at = ? WHERE id = ?",
                (ISSUED, cert.public_bytes(serialization.Encoding.PEM).decode(), now.isoformat(), request_id),
            )
            return self.get(request_id), True

    def list_requests(self, *, status: str | None = None) -> list[EnrollmentRequest]:
        with self._connect() as db:
            if status:
                rows = db.execute("SELECT * FROM requests WHERE status = ? ORDER BY created_at", (status,))
            else:
                rows = db.execute("SELECT * FROM requests ORDER BY created_at")
            return [self._row(r) for r in rows.fetchall()]


def _store(state_dir: Path | str) -> RequestStore:
    paths = CaPaths(Path(state_dir).resolve())
    if not paths.ca_dir.is_dir():
        raise NotFoundError(f"{paths.state_dir} holds no CA; start `certfleet ca serve --state-dir "
                            f"{paths.state_dir}` first", code="no_ca")
    return RequestStore(paths.requests_db)


def approve(state_dir: Path | str, request_id: str) -> EnrollmentRequest:
    """Approve a pending request of the CA in ``state_dir`` (the server need not be reachable:
    the device's next attempt gets its certificate)."""
    return _store(state_dir).approve(request_id)


def list_requests(state_dir: Path | str, *, status: str | None = PENDING) -> list[EnrollmentRequest]:
    return _store(state_dir).list_requests(status=status)
