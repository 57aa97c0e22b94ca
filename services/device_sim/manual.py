"""Manual enrollment on the device: the operator is the go-between with the CA.

Enrolling installs the CA certificate the enrollment object carries (if any), then, unless
the trustpoint is CA-only, makes a key pair and a certificate request (CSR) and waits with
the identity certificate ``pending``. The operator gets the CSR signed and imports the
certificate (:func:`import_identity`); the device checks it against its key and CA, with
the same rules as the management center (:mod:`shared.certificate_import`), and installs it.

Without a CA certificate in the enrollment object the CA status is ``pending`` too, until
the CA certificate comes with the imported identity certificate.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.device_sim.fleet import Device, InstalledCert, Trustpoint
from services.device_sim.keypairs import generate_device_key
from services.device_sim.tasks import CsrPending, Enrolled, EnrollmentTask, HeldRequest, Outcome, Refused, Slot
from services.device_sim.validation import settings_of
from shared.certificate_import import check_identity_import, has_ca_flag, parse_upload
from shared.device_api import IdentityCertificateImport
from shared.enums import CertificateRole, EnrollmentType
from shared.errors import ConflictError, ValidationError
from shared.pki import load_certificates, to_pem
from shared.protocols.csr import build_csr
from shared.states import Status, transition
from shared.weak_crypto import enforce, weak_certificate


def enroll_manual(task: EnrollmentTask) -> Outcome:
    options = task.params.options
    try:
        ca_chain = _ca_chain(options.get("ca_certificate_pem"), weak_crypto=task.weak_crypto,
                             skip_ca_flag_check=settings_of(options)["skip_ca_flag_check"])
    except ValidationError as exc:
        return Refused(code=exc.code, message=exc.message)
    slots: tuple[Slot, ...] = tuple((CertificateRole.CA, i, cert) for i, cert in enumerate(ca_chain))
    if options.get("ca_only"):
        if not slots:
            return Refused(code="ca_certificate_required",
                           message="a CA-only manual trustpoint needs the CA certificate in its enrollment "
                                   "object")
        # Nothing of its own to certify: no key pair, the identity certificate does not apply.
        return Enrolled(private_key=None, certificates=slots, identity_status=Status.NOT_APPLICABLE)
    held = task.held
    if held is not None and not task.re_enroll and held.params == task.params:
        # The same enrollment again (a redelivered job): keep the CSR the operator may already
        # have sent to the CA.
        key, csr = held.private_key, held.csr
    else:
        key = generate_device_key(task.params, weak_crypto=task.weak_crypto)
        csr = build_csr(key, task.params, task.device)
    request = HeldRequest(params=task.params, private_key=key, csr=csr, renewal=False, retry_after=0.0,
                          first_asked_at=task.now)
    return CsrPending(request=request, ca_certificates=slots)


def _ca_chain(pem: object, *, weak_crypto: bool, skip_ca_flag_check: bool) -> list[x509.Certificate]:
    if not pem:
        return []
    if not isinstance(pem, str):
        raise ValidationError("options.ca_certificate_pem must be PEM text", code="invalid_configuration")
    chain = load_certificates(pem)
    for cert in chain:
        enforce(weak_certificate(cert), weak_crypto_enabled=weak_crypto)
        if not skip_ca_flag_check and not has_ca_flag(cert):
            raise ValidationError(
                f"the enrollment object's CA certificate {cert.subject.rfc4514_string()} has no CA flag in its basic "
                "constraints; the device does not install it as a CA. Use the CA's real certificate, or set the "
                "enrollment object's skip_ca_flag_check",
                code="not_a_ca_certificate",
            )
    return chain


def csr_pem(trustpoint: Trustpoint) -> str | None:
    """The request a manual trustpoint waits with, for the operator to get signed."""
    held = trustpoint.held
    if (held is None or trustpoint.params.enrollment_type is not EnrollmentType.MANUAL
            or trustpoint.identity_status != Status.PENDING.value):
        return None
    return held.csr.public_bytes(serialization.Encoding.PEM).decode()


def install_pending(trustpoint: Trustpoint, outcome: CsrPending, *, now: datetime) -> None:
    """Keep the key pair and CSR; install the CA certificate when the object gave one.

    A re-enrollment keeps the installed identity certificate until its successor is imported,
    and, when the object names no CA certificate, the CA certificate imported last time.
    """
    trustpoint.held = outcome.request
    identity = [c for c in trustpoint.certificates if c.role != CertificateRole.CA.value]
    cas = [InstalledCert(role=CertificateRole.CA.value, chain_position=pos, pem=to_pem(cert))
           for _, pos, cert in outcome.ca_certificates]
    if not cas:
        cas = [c for c in trustpoint.certificates if c.role == CertificateRole.CA.value]
    trustpoint.certificates = identity + cas
    transition(trustpoint, now=now, ca=Status.AVAILABLE if cas else Status.PENDING, identity=Status.PENDING)
    trustpoint.retryable = False


def import_identity(device: Device, trustpoint: Trustpoint, body: IdentityCertificateImport, *,
                    now: datetime) -> None:
    """Install the identity certificate the operator imported for the trustpoint's CSR."""
    identity, supplied = parse_upload(body.certificate_pem, body.ca_certificate_pem)
    if _installed_identity(trustpoint) == identity:
        return  # already installed: a redelivered install job
    held = trustpoint.held
    if (trustpoint.params.enrollment_type is not EnrollmentType.MANUAL or held is None
            or trustpoint.identity_status != Status.PENDING.value):
        raise ConflictError(
            f"trustpoint {trustpoint.name} on device {device.serial} is not waiting for an identity "
            f"certificate (CA {trustpoint.ca_status}, identity {trustpoint.identity_status}); re-enroll it "
            "for a new CSR",
            code="not_pending",
        )
    installed_ca = sorted((c for c in trustpoint.certificates if c.role == CertificateRole.CA.value),
                          key=lambda c: c.chain_position)
    accepted = check_identity_import(
        identity, request_public_key=held.private_key.public_key(),
        installed_ca=[load_certificates(c.pem)[0] for c in installed_ca], supplied_ca=supplied,
        weak_crypto=device.weak_crypto, now=now,
        skip_ca_flag_check=settings_of(trustpoint.params.options)["skip_ca_flag_check"],
    )
    cas = installed_ca or [InstalledCert(role=CertificateRole.CA.value, chain_position=pos, pem=to_pem(cert))
                           for pos, cert in enumerate(accepted.ca_chain)]
    trustpoint.private_key = held.private_key
    trustpoint.certificates = [
        InstalledCert(role=CertificateRole.IDENTITY.value, chain_position=0, pem=to_pem(identity)), *cas,
    ]
    trustpoint.issued_for = trustpoint.params
    trustpoint.held = None
    transition(trustpoint, now=now, ca=Status.AVAILABLE, identity=Status.AVAILABLE)
    trustpoint.retryable = False


def _installed_identity(trustpoint: Trustpoint) -> x509.Certificate | None:
    if trustpoint.identity_status != Status.AVAILABLE.value:
        return None
    pem = next((c.pem for c in trustpoint.certificates
                if c.role == CertificateRole.IDENTITY.value and c.chain_position == 0), None)
    return load_certificates(pem)[0] if pem else None
