"""Manual enrollment's last step: an operator imports the identity certificate their CA issued
for the trustpoint's CSR. It is checked here, synchronously (so a wrong file is refused at
once, with its reason), stored on the trustpoint, and installed on the device by a job."""

from __future__ import annotations

import uuid
from datetime import datetime

from cryptography import x509
from sqlalchemy import update
from sqlmodel import Session

from services.controller.crud.trustpoints import certificates_of, ensure_deployable, get_trustpoint
from services.controller.queueing.jobs import ensure_no_unfinished_job, new_job
from services.controller.rules.scope import DomainScope
from shared.certificate_import import check_identity_import, parse_upload
from shared.enums import CertificateRole, EnrollmentType, JobKind
from shared.errors import ConflictError, NotFoundError
from shared.models import Device, EnrollmentObject, Job, Trustpoint
from shared.pki import load_certificates, to_pem
from shared.settings import Settings
from shared.states import Status


def csr_of(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, name: str
) -> tuple[Trustpoint, str]:
    trustpoint, device = get_trustpoint(session, scope=scope, device_id=device_id, name=name)
    if not trustpoint.csr_pem:
        raise NotFoundError(
            f"trustpoint {name} of device {device.name} has no certificate request: only a manual trustpoint "
            f"waiting for its identity certificate has one (identity status: {trustpoint.identity_status})",
            code="no_csr",
        )
    return trustpoint, trustpoint.csr_pem


def import_identity(
    session: Session, *, scope: DomainScope, device_id: uuid.UUID, name: str, certificate: bytes,
    ca_certificate: bytes | None, settings: Settings, now: datetime, requested_by: str = "",
) -> tuple[Trustpoint, Device, Job]:
    """Check the certificate against the trustpoint's CSR and CA, keep it on the trustpoint and
    add the job that installs it (the caller commits, then publishes)."""
    trustpoint, device = get_trustpoint(session, scope=scope, device_id=device_id, name=name)
    # Take the row's write lock first, as every action does: one job at a time per trustpoint.
    session.execute(
        update(Trustpoint).where(Trustpoint.id == trustpoint.id).values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(trustpoint)
    ensure_no_unfinished_job(session, trustpoint_id=trustpoint.id,
                             what=f"trustpoint {trustpoint.name} of device {device.name}")
    ensure_deployable(session, trustpoint, device, what="importing an identity certificate into")
    waiting = (trustpoint.enrollment_type == EnrollmentType.MANUAL
               and trustpoint.identity_status == Status.PENDING)
    if not waiting or not trustpoint.csr_pem:
        raise ConflictError(
            f"trustpoint {name} of device {device.name} is not waiting for an identity certificate (CA "
            f"{trustpoint.ca_status}, identity {trustpoint.identity_status}); only a manual trustpoint whose "
            "identity certificate is pending takes one: re-enroll it for a new CSR",
            code="not_pending",
        )
    identity, supplied_ca = parse_upload(certificate, ca_certificate)
    installed_ca = [load_certificates(c.pem)[0] for c in certificates_of(session, trustpoint.id)
                    if c.role == CertificateRole.CA.value]
    accepted = check_identity_import(
        identity,
        request_public_key=x509.load_pem_x509_csr(trustpoint.csr_pem.encode()).public_key(),
        installed_ca=installed_ca, supplied_ca=supplied_ca, weak_crypto=device.weak_crypto, now=now,
        skip_ca_flag_check=_skips_ca_flag_check(session, trustpoint),
    )
    trustpoint.pending_identity_pem = to_pem(accepted.certificate)
    trustpoint.pending_ca_pem = "".join(to_pem(c) for c in accepted.ca_chain) or None
    session.add(trustpoint)
    job = new_job(session, kind=JobKind.INSTALL_IDENTITY, trustpoint=trustpoint, settings=settings, now=now,
                  requested_by=requested_by)
    return trustpoint, device, job


def _skips_ca_flag_check(session: Session, trustpoint: Trustpoint) -> bool:
    """The enrollment object's "skip check for CA flag", which the device applies as well."""
    obj = session.get(EnrollmentObject, trustpoint.enrollment_object_id)
    return bool(obj is not None and obj.skip_ca_flag_check)
