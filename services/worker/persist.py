"""Writing what a device reports into the trustpoint and certificate rows, and the CA bundle
version a device holds into its row.

Statuses change only through :func:`shared.states.transition`. Nothing here commits: the
runner commits these changes in the same transaction as the job's fenced finish, so a
duplicate delivery can never leave two certificates or a half-written trustpoint.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, event, select, update
from sqlmodel import Session

from services.worker.exchanges import DeviceReport, ReportedCertificate
from shared.db import insert_rows
from shared.enums import CertificateRole
from shared.models import Certificate, Device, Trustpoint
from shared.states import Status, can_move, transition

#: The certificate table, written with plain statements (see :func:`replace_certificates`).
CERTIFICATE = Certificate.__table__


@dataclass(frozen=True, slots=True)
class InstalledIdentity:
    """What the renewal plan needs of the identity certificate a job's write left on a trustpoint."""

    #: The job that installed it (this job's id: a new certificate).
    job_id: uuid.UUID | None
    serial_number: str
    not_before: datetime
    not_after: datetime


#: The trustpoint table: locked, read and written back as plain rows (see :class:`LockedTrustpoint`).
TRUSTPOINT = Trustpoint.__table__
_COLUMNS = frozenset(column.name for column in TRUSTPOINT.columns)


class LockedTrustpoint:
    """A trustpoint row read for update, as a plain object whose attributes are its columns.

    A job's outcome is recorded on it by setting attributes, as on the model; the columns that
    changed are written back when the transaction commits, with one UPDATE per set of changed
    columns for all the trustpoints the transaction locked (the ORM's unit of work, which it
    replaces here, cost a batch more CPU per job than its statements). A rollback drops the
    changes; a trustpoint removed (:func:`remove_trustpoint`) writes nothing.
    """

    def __init__(self, row: Any) -> None:
        values = dict(row._mapping)
        self.__dict__.update(values)
        self.__dict__["_as_read"] = values
        self.__dict__["_removed"] = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _COLUMNS:
            raise AttributeError(f"a trustpoint has no column {name!r}")
        self.__dict__[name] = value

    def changes(self) -> dict[str, Any]:
        """The columns set to another value than the one read."""
        if self._removed:
            return {}
        return {name: self.__dict__[name] for name, was in self._as_read.items() if self.__dict__[name] != was}

    def __repr__(self) -> str:
        return f"LockedTrustpoint(id={self.id}, name={self.name!r})"


def lock_trustpoint(session: Session, trustpoint_id: uuid.UUID | None) -> LockedTrustpoint | None:
    """The trustpoint, fresh from the database and locked until commit (PostgreSQL; SQLite
    serialises writers anyway), so two jobs on one trustpoint cannot interleave their writes."""
    if trustpoint_id is None:
        return None
    return lock_trustpoints(session, [trustpoint_id]).get(trustpoint_id)


def lock_trustpoints(session: Session, trustpoint_ids: list[uuid.UUID]) -> dict[uuid.UUID, LockedTrustpoint]:
    """As :func:`lock_trustpoint` for several trustpoints in one statement, locked in id order (the
    order every batch takes them in); a trustpoint deleted meanwhile is missing from the answer."""
    if not trustpoint_ids:
        return {}
    rows = session.connection().execute(
        select(TRUSTPOINT).where(TRUSTPOINT.c.id.in_(sorted(set(trustpoint_ids))))
        .order_by(TRUSTPOINT.c.id).with_for_update()
    ).all()
    locked = {row.id: LockedTrustpoint(row) for row in rows}
    _written_at_commit(session).extend(locked.values())
    return locked


_LOCKED = "certfleet.locked_trustpoints"


def _written_at_commit(session: Session) -> list[LockedTrustpoint]:
    """The trustpoints this session's transaction locked, whose changes its commit writes."""
    locked = session.info.get(_LOCKED)
    if locked is None:
        locked = session.info[_LOCKED] = []
        event.listen(session, "before_commit", _write_locked)
        event.listen(session, "after_rollback", _forget_locked)
    return locked


def _write_locked(session: Session) -> None:
    locked, session.info[_LOCKED] = session.info[_LOCKED], []
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for trustpoint in locked:
        changes = trustpoint.changes()
        if changes:
            by_columns.setdefault(tuple(sorted(changes)), []).append({"b_id": trustpoint.id, **changes})
    for columns, values in by_columns.items():
        statement = update(TRUSTPOINT).where(TRUSTPOINT.c.id == bindparam("b_id"))
        session.connection().execute(statement.values({name: bindparam(name) for name in columns}), values)


def _forget_locked(session: Session) -> None:
    session.info[_LOCKED] = []


def apply_report(
    session: Session, trustpoint: LockedTrustpoint, report: DeviceReport, *, job_id: uuid.UUID, now: datetime
) -> InstalledIdentity | None:
    """Make the trustpoint show what the device has: its statuses, certificates and CSR. Returns the
    identity certificate as it now stands (None: the device has none)."""
    identity = replace_certificates(session, trustpoint, report.certificates, job_id=job_id, now=now)
    code = message = None
    if report.failed:
        code = report.error_code or "enrollment_failed"
        message = report.error_message or (
            f"the device reports trustpoint {trustpoint.name} failed without a reason"
        )
    move_statuses(trustpoint, now=now, ca=report.ca, identity=report.identity,
                  error_code=code, error_message=message)
    trustpoint.csr_pem = report.csr_pem
    trustpoint.updated_at = now
    return identity


def clear_imported(trustpoint: LockedTrustpoint) -> None:
    """The imported identity certificate is on the device now: nothing waits any more."""
    trustpoint.pending_identity_pem = None
    trustpoint.pending_ca_pem = None


def mark_failed(trustpoint: LockedTrustpoint, *, now: datetime, code: str, message: str) -> None:
    """A permanent failure the device did not describe itself (refused request, gave up).

    The identity certificate fails; so does the CA certificate while it was still on its
    way. A CA certificate already installed stays available. A CA-only trustpoint (no
    identity certificate) fails on its CA certificate.
    """
    ca, identity = Status(trustpoint.ca_status), Status(trustpoint.identity_status)
    identity_target = None if identity is Status.NOT_APPLICABLE else Status.FAILED
    still_coming = ca in (Status.IN_PROGRESS, Status.PENDING)
    ca_target = Status.FAILED if still_coming or identity_target is None else None
    move_statuses(trustpoint, now=now, ca=ca_target, identity=identity_target,
                  error_code=code, error_message=message)
    trustpoint.updated_at = now


def mark_missing(session: Session, trustpoint: LockedTrustpoint, *, serial: str, now: datetime) -> None:
    """The device no longer has the trustpoint: its certificates are gone with it, the CA's too."""
    replace_certificates(session, trustpoint, (), job_id=None, now=now)

    def gone(status: str) -> Status | None:
        return None if status == Status.NOT_APPLICABLE else Status.FAILED

    move_statuses(
        trustpoint, now=now, ca=gone(trustpoint.ca_status), identity=gone(trustpoint.identity_status),
        error_code="trustpoint_missing",
        error_message=f"trustpoint {trustpoint.name} is no longer on device {serial}; re-enroll it to "
                      "install it again",
    )
    trustpoint.csr_pem = None
    trustpoint.updated_at = now


def record_bundle_version(session: Session, device_id: uuid.UUID, version: str) -> None:
    """The device confirmed it holds certfleet's CA bundle ``version`` (gone devices: nothing to do)."""
    session.execute(update(Device).where(Device.id == device_id).values(bundle_version=version))  # type: ignore[arg-type]


def remove_trustpoint(session: Session, trustpoint: LockedTrustpoint) -> None:
    """Delete the trustpoint and its certificates (certificates first: they reference it)."""
    session.execute(delete(CERTIFICATE).where(CERTIFICATE.c.trustpoint_id == trustpoint.id))
    session.execute(delete(TRUSTPOINT).where(TRUSTPOINT.c.id == trustpoint.id))
    trustpoint.__dict__["_removed"] = True


def replace_certificates(
    session: Session,
    trustpoint: LockedTrustpoint,
    reported: tuple[ReportedCertificate, ...] | list[ReportedCertificate],
    *,
    job_id: uuid.UUID | None,
    now: datetime,
) -> InstalledIdentity | None:
    """Make the trustpoint's certificate rows match the reported ones; the identity certificate as
    it stands afterwards (kept or new), so that what follows need not read it back.

    A certificate already stored in the same slot (role, chain position) with the same
    fingerprint keeps its row; every other row goes, and the new certificates are added. Written
    at once, or, when the transaction has a :class:`CertificateBook` for the trustpoint, with the
    book's other writes.
    """
    book = session.info.get(CertificateBook.KEY)
    if isinstance(book, CertificateBook) and book.covers(trustpoint.id):
        return book.replace(trustpoint.id, reported, job_id=job_id, now=now)
    single = CertificateBook(session, [trustpoint.id])
    identity = single.replace(trustpoint.id, reported, job_id=job_id, now=now)
    single.write(session)
    return identity


class CertificateBook:
    """The certificate rows of several trustpoints, read with one statement; the rows to delete and
    to add are collected and written with one statement each (:meth:`write`). Plain rows, not ORM
    objects: nothing later in the transaction needs them as objects.

    A transaction that records many jobs opens a book for their trustpoints (:meth:`open_for`):
    :func:`replace_certificates` then writes through it, and the transaction calls :meth:`write`
    before it commits.
    """

    KEY = "certfleet.certificate_book"

    def __init__(self, session: Session, trustpoint_ids: list[uuid.UUID]) -> None:
        self._existing: dict[uuid.UUID, list[Any]] = {tp: [] for tp in trustpoint_ids}
        if trustpoint_ids:
            rows = session.execute(
                select(CERTIFICATE.c.id, CERTIFICATE.c.trustpoint_id, CERTIFICATE.c.role, CERTIFICATE.c.chain_position,
                       CERTIFICATE.c.fingerprint_sha256, CERTIFICATE.c.job_id, CERTIFICATE.c.serial_number,
                       CERTIFICATE.c.not_before, CERTIFICATE.c.not_after)
                .where(CERTIFICATE.c.trustpoint_id.in_(trustpoint_ids))
            ).all()
            for row in rows:
                self._existing[row.trustpoint_id].append(row)
        self._drop: list[uuid.UUID] = []
        self._add: list[dict[str, Any]] = []

    @classmethod
    def open_for(cls, session: Session, trustpoint_ids: list[uuid.UUID]) -> CertificateBook:
        book = cls(session, trustpoint_ids)
        session.info[cls.KEY] = book
        return book

    def covers(self, trustpoint_id: uuid.UUID) -> bool:
        return trustpoint_id in self._existing

    def replace(
        self, trustpoint_id: uuid.UUID, reported: tuple[ReportedCertificate, ...] | list[ReportedCertificate], *,
        job_id: uuid.UUID | None, now: datetime,
    ) -> InstalledIdentity | None:
        wanted = {(c.role.value, c.chain_position): c for c in reported}
        identities: dict[tuple[str, int], InstalledIdentity] = {}
        kept = []
        for row in self._existing[trustpoint_id]:
            new = wanted.get((row.role, row.chain_position))
            if new is not None and new.info.fingerprint_sha256 == row.fingerprint_sha256:
                identities[(row.role, row.chain_position)] = InstalledIdentity(
                    job_id=row.job_id, serial_number=row.serial_number, not_before=row.not_before,
                    not_after=row.not_after)
                kept.append(row)
            else:
                self._drop.append(row.id)
        self._existing[trustpoint_id] = kept
        added = [_certificate_row(trustpoint_id, cert, job_id=job_id, now=now)
                 for slot, cert in wanted.items() if slot not in identities]
        self._add += added
        for row in added:
            identities[(row["role"], row["chain_position"])] = InstalledIdentity(
                job_id=job_id, serial_number=row["serial_number"], not_before=row["not_before"],
                not_after=row["not_after"])
        return identities.get((CertificateRole.IDENTITY.value, 0))

    def write(self, session: Session) -> None:
        """Deletes first: the unique slot key must be free for the inserts."""
        if self._drop:
            session.execute(delete(Certificate).where(Certificate.id.in_(self._drop)))  # type: ignore[attr-defined]
        if self._add:
            insert_rows(session, CERTIFICATE, self._add)
        self._drop, self._add = [], []
        if session.info.get(self.KEY) is self:
            del session.info[self.KEY]


def move_statuses(
    trustpoint: LockedTrustpoint,
    *,
    now: datetime,
    ca: Status | None = None,
    identity: Status | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """Move the statuses to the targets through the state machine.

    Where the table has no direct edge (a not-applicable status becoming available), the
    status passes through in-progress, which is what happened on the device.
    """
    via = {}
    if ca is not None and not can_move(trustpoint.ca_status, ca):
        via["ca"] = Status.IN_PROGRESS
    if identity is not None and not can_move(trustpoint.identity_status, identity):
        via["identity"] = Status.IN_PROGRESS
    if via:
        transition(trustpoint, now=now, **via)
    transition(
        trustpoint, now=now, ca=ca, identity=identity, error_code=error_code, error_message=error_message
    )


def _certificate_row(
    trustpoint_id: uuid.UUID, cert: ReportedCertificate, *, job_id: uuid.UUID | None, now: datetime
) -> dict[str, Any]:
    info = cert.info
    return {
        "id": uuid.uuid4(),
        "trustpoint_id": trustpoint_id,
        "job_id": job_id,
        "role": cert.role.value,
        "chain_position": cert.chain_position,
        "pem": cert.pem,
        "subject": info.subject[:1024],
        "issuer": info.issuer[:1024],
        "serial_number": info.serial_number[:64],
        "not_before": info.not_before,
        "not_after": info.not_after,
        "key_algorithm": info.key_algorithm,
        "key_size": info.key_size,
        "signature_algorithm": info.signature_algorithm[:64],
        "fingerprint_sha256": info.fingerprint_sha256,
        "created_at": now,
    }
