"""Rows written straight into the tables, as the workers, the health checks and the scans leave
them, for the alert tests: devices with a keyring state, trustpoints in any status, installed
identity certificates ending when a test says (their PEM is a placeholder: alerts never read it)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete
from sqlmodel import Session, select

from shared.models import GLOBAL_DOMAIN_ID, Certificate, Device, Domain, EnrollmentObject, Trustpoint


def domain(engine, name: str, parent: uuid.UUID = GLOBAL_DOMAIN_ID) -> uuid.UUID:
    row = Domain(name=name, parent_id=parent)
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    return row.id


def device(engine, name: str, *, domain_id: uuid.UUID = GLOBAL_DOMAIN_ID, **fields) -> Device:
    row = Device(domain_id=domain_id, name=name, serial=f"SER-{uuid.uuid4().hex[:12]}",
                 management_url=f"http://127.0.0.1:9/api/devices/{name}", **fields)
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    return row


def update(engine, model, row_id: uuid.UUID, **fields) -> None:
    with Session(engine) as session:
        row = session.get(model, row_id)
        for key, value in fields.items():
            setattr(row, key, value)
        session.add(row)
        session.commit()


def trustpoint(engine, dev: Device, name: str = "vpn", *, method: str = "est", ca_status: str = "available",
               identity_status: str = "available", **fields) -> Trustpoint:
    with Session(engine, expire_on_commit=False) as session:
        obj = session.exec(select(EnrollmentObject).where(EnrollmentObject.domain_id == dev.domain_id,
                                                          EnrollmentObject.name == name)).first()
        if obj is None:
            obj = EnrollmentObject(domain_id=dev.domain_id, name=name, enrollment_type=method)
            session.add(obj)
            session.flush()
        row = Trustpoint(device_id=dev.id, domain_id=dev.domain_id, enrollment_object_id=obj.id, name=name,
                         enrollment_type=method, ca_status=ca_status, identity_status=identity_status, **fields)
        session.add(row)
        session.commit()
    return row


def identity(engine, tp: Trustpoint, *, not_after: datetime) -> Certificate:
    """Install an identity certificate ending at ``not_after`` (replacing the one there, as a
    renewal does)."""
    row = Certificate(trustpoint_id=tp.id, role="identity", chain_position=0, pem="(placeholder)",
                      subject=f"CN={tp.name}", issuer="CN=Test CA", serial_number=uuid.uuid4().hex[:16],
                      not_before=not_after.replace(year=not_after.year - 1), not_after=not_after,
                      key_algorithm="ECDSA", key_size=256, signature_algorithm="ecdsa-with-SHA256",
                      fingerprint_sha256=uuid.uuid4().hex * 2)
    with Session(engine, expire_on_commit=False) as session:
        session.execute(delete(Certificate).where(Certificate.trustpoint_id == tp.id,
                                                  Certificate.role == "identity"))
        session.add(row)
        session.commit()
    return row


def remove_trustpoint(engine, tp: Trustpoint) -> None:
    with Session(engine) as session:
        session.execute(delete(Certificate).where(Certificate.trustpoint_id == tp.id))
        session.execute(delete(Trustpoint).where(Trustpoint.id == tp.id))
        session.commit()
