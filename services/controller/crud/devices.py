"""Devices of a domain subtree: register, view, change, move and remove them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from services.controller.alerts import moves
from services.controller.api.schemas.devices import DeviceCreate, DeviceUpdate
from services.controller.crud.domains import ensure_not_being_deleted
from services.controller.queueing.jobs import ensure_no_unfinished_job
from services.controller.rules.checks import check_fqdn, check_http_url, check_ip_address
from services.controller.rules.scope import DomainScope
from shared.alerts import open_states
from shared.clock import utcnow
from shared.errors import ConflictError, NotFoundError
from shared.models import Alert, Certificate, Device, Trustpoint

#: Shown until the operator confirms: weak-crypto is a security trade-off made on purpose.
WEAK_CRYPTO_WARNING = (
    "Enabling weak-crypto lets this device use weak ciphers in certificates, which reduces "
    "security. Confirm to enable it: send {\"weak_crypto\": true, \"confirm\": true}."
)


def get_device(session: Session, *, scope: DomainScope, device_id: uuid.UUID) -> Device:
    """The device, if this domain can see it; 404 alike for unknown and out-of-scope ids."""
    device = session.get(Device, device_id)
    if device is None or not scope.sees(device.domain_id):
        raise NotFoundError(f"device {device_id} not found in this domain")
    return device


def list_devices(
    session: Session, *, scope: DomainScope, offset: int, limit: int, serial: str | None = None,
    name: str | None = None, bundle_version: str | None = None,
) -> tuple[list[Device], int]:
    conditions = [] if scope.is_root else [Device.domain_id.in_(scope.subtree)]
    if bundle_version is not None:
        conditions.append(Device.bundle_version == bundle_version)
    if serial:
        conditions.append(Device.serial == serial)
    if name:
        conditions.append(Device.name == name)
    total = session.exec(select(func.count()).select_from(Device).where(*conditions)).one()
    rows = session.exec(
        select(Device).where(*conditions).order_by(Device.name, Device.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total


def _duplicate_serial(serial: str) -> ConflictError:
    return ConflictError(f"a device with serial {serial!r} is already registered", code="duplicate_serial")


def create_device(session: Session, *, scope: DomainScope, data: DeviceCreate) -> Device:
    serial = data.serial.strip()
    if session.exec(select(Device.id).where(Device.serial == serial)).first() is not None:
        raise _duplicate_serial(serial)
    device = Device(
        domain_id=scope.domain_id,
        name=data.name.strip(),
        model=data.model.strip(),
        serial=serial,
        ip_address=check_ip_address(data.ip_address),
        fqdn=check_fqdn(data.fqdn),
        management_url=check_http_url(data.management_url, field="management_url"),
    )
    session.add(device)
    try:
        session.flush()
    except IntegrityError:  # registered by a concurrent request since the check
        session.rollback()
        raise _duplicate_serial(serial) from None
    return device


def update_device(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, data: DeviceUpdate, now: datetime | None = None
) -> Device:
    device = get_device(session, scope=scope, device_id=device_id)
    if data.weak_crypto and not device.weak_crypto and not data.confirm:
        raise ConflictError(WEAK_CRYPTO_WARNING, code="weak_crypto_confirmation_required")
    if data.name is not None:
        device.name = data.name.strip()
    if data.model is not None:
        device.model = data.model.strip()
    if data.weak_crypto is not None:
        device.weak_crypto = data.weak_crypto
    if data.domain_id is not None and data.domain_id != device.domain_id:
        if not scope.sees(data.domain_id):
            raise NotFoundError(f"domain {data.domain_id} not found in this domain's subtree")
        move_device(session, device, data.domain_id, now=now or utcnow())
    session.add(device)
    return device


def move_device(session: Session, device: Device, domain_id: uuid.UUID, *, now: datetime) -> None:
    """Move the device to another domain (not committed). Its trustpoints and certificates go with
    it, as do its open alerts; each trustpoint whose enrollment object the new domain may not use
    raises an alert saying what to do (and the move back clears it). Refused out of or into a
    domain being deleted."""
    ensure_not_being_deleted(session, device.domain_id, what=f"moving device {device.name} out of it")
    ensure_not_being_deleted(session, domain_id, what=f"moving device {device.name} into it")
    device.domain_id = domain_id
    session.add(device)
    session.execute(update(Trustpoint).where(Trustpoint.device_id == device.id).values(domain_id=domain_id))
    session.execute(update(Alert).where(Alert.device_id == device.id, Alert.state.in_(open_states()))
                    .values(domain_id=domain_id).execution_options(synchronize_session=False))
    session.flush()
    moves.sync_device(session, device, now=now)


def delete_device(session: Session, *, scope: DomainScope, device_id: uuid.UUID) -> None:
    """Forget the device with its trustpoints and certificates (not what is on the device).
    Refused while a job on it is unfinished: the worker would find its rows gone."""
    device = get_device(session, scope=scope, device_id=device_id)
    ensure_no_unfinished_job(session, device_id=device.id, what=f"device {device.name}")
    trustpoint_ids = select(Trustpoint.id).where(Trustpoint.device_id == device.id)
    session.execute(delete(Certificate).where(Certificate.trustpoint_id.in_(trustpoint_ids)))
    session.execute(delete(Trustpoint).where(Trustpoint.device_id == device.id))
    session.execute(delete(Device).where(Device.id == device.id))
