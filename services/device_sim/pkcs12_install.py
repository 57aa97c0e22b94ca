"""PKCS12 enrollment on the device: open the file the trustpoint configuration carries and
install its CA chain, identity certificate and key.

The file's encryption is read before anything is decrypted, so a weak cipher (3DES, RC2, …)
is refused as weak crypto, naming it, unless weak-crypto is enabled on the device. A wrong
passphrase fails both statuses with ``pkcs12_bad_passphrase``: the operator corrects the
passphrase on the enrollment object and re-enrolls; the stored file is used again.
"""

from __future__ import annotations

import base64
import binascii

from services.device_sim.tasks import Enrolled, EnrollmentTask, Outcome, Refused, Slot
from shared.enums import CertificateRole
from shared.errors import ValidationError
from shared.pkcs12 import check_size, inspect, open_pkcs12
from shared.weak_crypto import enforce, weak_certificate, weak_cipher


def enroll_pkcs12(task: EnrollmentTask) -> Outcome:
    try:
        return _install(task)
    except ValidationError as exc:  # weak crypto included: its message names the algorithm
        return Refused(code=exc.code, message=exc.message)


def _install(task: EnrollmentTask) -> Outcome:
    options = task.params.options
    encoded = options.get("pkcs12_base64")
    if not isinstance(encoded, str) or not encoded:
        return Refused(code="pkcs12_file_missing",
                       message="the trustpoint configuration carries no PKCS#12 file; upload the file to the "
                               "enrollment object and enroll again")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Refused(code="invalid_pkcs12", message="options.pkcs12_base64 is not base64")
    check_size(len(data))
    for protection in inspect(data):
        weak = weak_cipher(protection.cipher, f"{protection.algorithm} encrypting the {protection.part}")
        enforce(weak, weak_crypto_enabled=task.weak_crypto)
    passphrase = options.get("passphrase", "")
    opened = open_pkcs12(data, passphrase if isinstance(passphrase, str) else "")
    for cert in (opened.certificate, *opened.ca_chain):
        enforce(weak_certificate(cert), weak_crypto_enabled=task.weak_crypto)
    chain = opened.ca_chain
    if not chain:
        if opened.certificate.subject != opened.certificate.issuer:
            return Refused(
                code="pkcs12_no_ca_certificate",
                message="the PKCS#12 file holds no CA certificate for its identity certificate; export it "
                        "with the whole chain (openssl pkcs12 -export -certfile ca.pem …) and upload it "
                        "again",
            )
        chain = (opened.certificate,)  # self-signed: its own CA, as a self-signed trustpoint has it
    slots: tuple[Slot, ...] = (
        (CertificateRole.IDENTITY, 0, opened.certificate),
        *((CertificateRole.CA, position, cert) for position, cert in enumerate(chain)),
    )
    return Enrolled(private_key=opened.private_key, certificates=slots)
