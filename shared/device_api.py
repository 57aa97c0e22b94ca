"""The device-management API: the contract between the workers and a device.

The device simulator serves it; :mod:`shared.device_client` speaks it (for the workers, and
for the controller's synchronous export). An adapter for real devices implements the same
client interface. All paths are relative to a device's management URL,
``{base}/api/devices/{serial}``:

    GET    .                                   DeviceInfo
    PUT    ./weak-crypto                       {"enabled": bool} -> DeviceInfo
    GET    ./trustpoints                       [TrustpointState]
    PUT    ./trustpoints/{name}                EnrollmentParameters.to_wire() -> TrustpointState
    POST   ./trustpoints/{name}/enroll         EnrollRequest -> TrustpointState
    GET    ./trustpoints/{name}                TrustpointState (certificates included)
    POST   ./trustpoints/{name}/identity-certificate
                                               IdentityCertificateImport -> TrustpointState
    POST   ./trustpoints/{name}/export         ExportRequest -> ExportedFile
    POST   ./trustpoints/{name}/validate       PeerValidationRequest -> PeerValidation
    DELETE ./trustpoints/{name}                204 (also when already gone)
    GET    ./keyring/default                   KeyringState
    POST   ./keyring/default/regenerate        KeyringState
    GET    ./ca-bundle                         DeviceCaBundle
    PUT    ./ca-bundle                         CaBundleUpload -> DeviceCaBundle

A secret (an EST password, a SCEP challenge, a PKCS#12 file and its passphrase) reaches a device
only sealed to its endpoint credential: a trustpoint configuration (``PUT`` of the trustpoint, or
an enroll request's ``configuration``) carries the secret options under ``sealed``, {"nonce",
"ciphertext"} in base64 (:mod:`shared.sealed_secrets`). The device opens them with its credential
and answers with ``TrustpointState.proof``, HMAC-SHA256(credential, nonce || serial) in hex
(:mod:`shared.device_auth`), which certfleet checks. A device that cannot open them applies nothing
and answers 401 ``sealed_configuration_unreadable``; sealed options over 64 KiB: 413.

A device trusts, for HTTPS CA servers (EST), its own trust anchors plus the CA bundle certfleet
pushed to it (``ca-bundle``): a version label and a set of PEM certificates, replaced whole by
each PUT. Its ``sha256`` is the hex SHA-256 of the PEM text's UTF-8 bytes exactly as sent, the
digest certfleet's bundle carries. A body over 4 MiB is refused (413), unreadable PEM too (422).

A manual trustpoint waiting for its identity certificate shows identity ``pending`` and its
certificate request in ``TrustpointState.csr_pem``; the operator's signed certificate comes
back through ``identity-certificate``, which the device checks against its key (and CA)
before installing it. Private keys never leave a device, except inside the
passphrase-encrypted PKCS#12 file ``export`` makes (AES-256-CBC, PBKDF2, HMAC-SHA-256).
A PKCS#12 enrollment carries the file and its passphrase in the trustpoint configuration's
options (``pkcs12_base64``, ``passphrase``), like an EST password: to the device only.

The fleet's inventory is at ``{base}/api/inventory?offset=&limit=`` -> Inventory; each entry may
carry the device's endpoint credential, which certfleet stores when an admin imports it.
Errors come as ``{"code": ..., "message": ...}`` with a 4xx or 5xx status; a 5xx (or no
answer) is worth retrying, a 4xx is not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, field_serializer


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DeviceInfo(_Wire):
    serial: str
    name: str
    model: str
    ip_address: str
    fqdn: str
    management_url: str
    weak_crypto: bool = False
    #: The version of the CA bundle the device holds ("" for none).
    ca_bundle_version: str = ""
    #: The credential the device holds, which its secrets are sealed to (inventory only; a secret:
    #: hidden from repr, written out only in JSON).
    endpoint_credential: SecretStr | None = None

    @field_serializer("endpoint_credential", when_used="json-unless-none")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


class Inventory(_Wire):
    items: list[DeviceInfo]
    total: int


class InstalledCertificate(_Wire):
    role: Literal["identity", "ca"]
    chain_position: int = 0
    pem: str


class TrustpointState(_Wire):
    name: str
    enrollment_type: str
    ca_status: str
    identity_status: str
    error_code: str | None = None
    error_message: str | None = None
    #: True when the failure may clear by itself (the CA was busy or unreachable).
    retryable: bool = False
    #: Seconds the CA asked to wait before trying again (its 503/429 Retry-After), if it said.
    retry_after: float | None = None
    certificates: list[InstalledCertificate] = []
    csr_pem: str | None = None
    #: In the answer to a configuration with sealed secret options only: the device's proof that it
    #: opened them, HMAC-SHA256(credential, nonce || serial) in hex, for the nonce they were sealed under.
    proof: str | None = None


class EnrollRequest(_Wire):
    #: "enroll" for a new key pair and certificate; "re_enroll" renews with a new key pair.
    mode: Literal["enroll", "re_enroll"] = "enroll"
    #: The trustpoint configuration to apply first, as a PUT of the trustpoint takes it
    #: (``EnrollmentParameters.to_wire()``, secret options sealed): configure and enroll in one
    #: request. Absent: the trustpoint as configured before.
    configuration: dict[str, Any] | None = None


class IdentityCertificateImport(_Wire):
    """An identity certificate for a trustpoint whose request (CSR) an operator got signed."""

    certificate_pem: str
    #: The CA certificate(s) that issued it, when the trustpoint has none yet (issuing CA first).
    ca_certificate_pem: str | None = None


class ExportRequest(_Wire):
    #: "pkcs12": key, identity certificate and CA chain, encrypted; "pem": the identity certificate.
    format: Literal["pkcs12", "pem"]
    #: Required for pkcs12. A secret: never logged, never stored.
    passphrase: str | None = None


class ExportedFile(_Wire):
    format: Literal["pkcs12", "pem"]
    #: The file's bytes, base64.
    content_base64: str


class PeerValidationRequest(_Wire):
    """A peer's certificate for the device to validate with a trustpoint's CA."""

    certificate_pem: str
    #: Intermediate CA certificates the peer sent with it (PEM), if any.
    chain_pem: str | None = None
    #: What the peer would be validated for; None: any use the trustpoint allows.
    usage: Literal["ipsec_client", "ssl_client", "ssl_server"] | None = None


class PeerValidation(_Wire):
    """The device's verdict on a peer certificate.

    ``valid``; ``revoked`` (``reason`` the CRL reason, ``revoked_at``); ``unknown`` (no
    revocation source could answer; ``reason`` says why); ``invalid`` (chain, dates, CA flag,
    usage: ``reason`` says which). ``source`` is what answered about revocation, "crl" or
    "ocsp" (None when nothing did).
    """

    verdict: Literal["valid", "revoked", "unknown", "invalid"]
    reason: str | None = None
    revoked_at: datetime | None = None
    source: Literal["crl", "ocsp"] | None = None
    detail: str = ""


class KeyringState(_Wire):
    """The device's default keyring: whether its certificate is valid now (``reason`` says why
    not, e.g. "expired"), and the certificate's validity. A device that does not say its
    validity leaves the two dates out."""

    name: str = "default"
    valid: bool
    reason: str | None = None
    certificate_pem: str
    not_valid_before: datetime | None = None
    not_valid_after: datetime | None = None


class CaBundleUpload(_Wire):
    """certfleet's CA bundle for a device: its version label and its CA certificates in PEM."""

    version: str
    pem: str


class DeviceCaBundle(_Wire):
    """The CA bundle a device holds: version "" and no certificates before the first push."""

    version: str = ""
    certificates: int = 0
    sha256: str = ""


class ErrorBody(_Wire):
    code: str
    message: str
