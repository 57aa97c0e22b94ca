"""Revoking what the CA issued, from any process: ``certfleet ca revoke`` and ``certfleet ca
revocations``. The revocation goes into the ledger in the state directory, where a running
server's OCSP responder reads it on its next request and its CRL publisher notices it on the
next CRL request (see :mod:`.ledger`, :mod:`.crl`). No CA key is needed to revoke.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from services.ca_sim.authority import CaPaths
from services.ca_sim.ledger import Ledger, Revocation
from shared.errors import NotFoundError, ValidationError


def _paths(state_dir: Path | str) -> CaPaths:
    paths = CaPaths(Path(state_dir).resolve())
    if not paths.issuing_pem.is_file():
        raise NotFoundError(f"{paths.state_dir} holds no CA; start `certfleet ca serve --state-dir "
                            f"{paths.state_dir}` first", code="no_ca")
    return paths


def read_certificate(path: Path | str) -> x509.Certificate:
    """The one certificate in a PEM or DER file (the first, if the PEM holds a chain)."""
    data = Path(path).read_bytes()
    try:
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValidationError(f"{path} holds no X.509 certificate (PEM or DER)", code="not_a_certificate") from None


def revoke(state_dir: Path | str, *, serial: int | None = None, cert: x509.Certificate | None = None,
           reason: str = "unspecified", now: datetime | None = None) -> tuple[Revocation, bool]:
    """Revoke a certificate of the CA in ``state_dir``, by serial or by the certificate itself
    (which must be signed by the issuing CA); the revocation, and whether it is new. A serial
    the CA never issued is refused (``unknown_serial``)."""
    paths = _paths(state_dir)
    ledger = Ledger(paths.ledger_db)
    if cert is None:
        if serial is None:
            raise ValueError("give the serial or the certificate to revoke")
        return ledger.revoke(serial, reason=reason, now=now)
    issuing = x509.load_pem_x509_certificate(paths.issuing_pem.read_bytes())
    try:
        cert.verify_directly_issued_by(issuing)
    except (InvalidSignature, ValueError, TypeError):
        raise ValidationError(f"the certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) was "
                              f"not issued by this CA ({issuing.subject.rfc4514_string()})",
                              code="not_issued_by_ca") from None
    return ledger.revoke(cert.serial_number, reason=reason, now=now, cert=cert)


def list_revocations(state_dir: Path | str) -> list[Revocation]:
    """Every revocation of the CA in ``state_dir``, oldest first."""
    return Ledger(_paths(state_dir).ledger_db).revocations()
