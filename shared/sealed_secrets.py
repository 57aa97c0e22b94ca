"""A trustpoint configuration's secret options, sealed to the device's endpoint credential.

An EST password, a SCEP challenge, a PKCS#12 file and its passphrase travel to a device only
sealed: the configuration sent holds its other options in clear and, under ``sealed``, the secret
options encrypted for the one device, in the same request that applies them:

    nonce           32 fresh random bytes per request
    key || iv       HKDF-SHA256(credential, salt=nonce, info="certfleet sealed configuration" || serial), 44 bytes
    ciphertext      AES-256-GCM(key, iv, JSON of the secret options, associated data)
    associated data the serial, the trustpoint's name and the rest of the configuration (canonical JSON)

Only an endpoint holding the credential can open it; one sealed for another device or another
trustpoint, or sent with any other field changed (say, the CA's URL), does not open. The device
that opened it answers with :func:`shared.device_auth.proof` for the same nonce, so certfleet also
knows the answer came from the device. Each key seals one message, so a fixed derivation of the IV
is safe. Both sides, the worker and the device simulator, use these functions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.device_auth import NONCE_BYTES, new_nonce
from shared.enrollment import EnrollmentParameters
from shared.errors import AuthError, CertfleetError, ValidationError

#: The configuration options that hold secrets (see services.worker.parameters).
SECRET_OPTIONS = frozenset({"password", "challenge", "pkcs12_base64", "passphrase"})
#: The configuration field holding the sealed secret options: {"nonce": base64, "ciphertext": base64}.
SEALED_FIELD = "sealed"
#: The largest ciphertext accepted: a 24 KiB PKCS#12 file in base64 and its passphrase fit with room.
MAX_SEALED_BYTES = 64 * 1024
UNREADABLE = "sealed_configuration_unreadable"

_INFO = b"certfleet sealed configuration"
_KEY_BYTES, _IV_BYTES = 32, 12
#: Base64 text of MAX_SEALED_BYTES bytes; a longer text is refused before it is decoded.
_MAX_SEALED_TEXT = 4 * -(-MAX_SEALED_BYTES // 3)


class SealedTooLarge(CertfleetError):
    status = 413


@dataclass(frozen=True)
class SealedConfiguration:
    """A trustpoint configuration ready to send, its secret options sealed (nothing secret in it),
    and the nonce they were sealed under: the device's proof must be for this nonce."""

    name: str
    wire: dict[str, Any] = field(repr=False)
    nonce: bytes = field(repr=False)

    def to_wire(self) -> dict[str, Any]:
        return self.wire


def carries_secret(params: EnrollmentParameters) -> bool:
    return not SECRET_OPTIONS.isdisjoint(params.options)


# --- the cipher ------------------------------------------------------------------------------------

def _cipher(credential: str, nonce: bytes, serial: str) -> tuple[AESGCM, bytes]:
    """The AES-256-GCM key and IV for one message to device ``serial``."""
    derived = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES + _IV_BYTES, salt=nonce,
                   info=_INFO + serial.encode()).derive(credential.encode())
    return AESGCM(derived[:_KEY_BYTES]), derived[_KEY_BYTES:]


def _bound_to(serial: str, trustpoint: str, rest: Mapping[str, Any]) -> bytes:
    """The associated data: what the sealed options are valid with, byte for byte on both sides."""
    return json.dumps({"serial": serial, "trustpoint": trustpoint, "configuration": rest},
                      sort_keys=True, separators=(",", ":")).encode()


def seal(credential: str, nonce: bytes, *, serial: str, trustpoint: str, rest: Mapping[str, Any],
         secrets: Mapping[str, Any]) -> bytes:
    """The ciphertext of ``secrets`` for device ``serial``'s trustpoint, bound to ``rest``."""
    aead, iv = _cipher(credential, nonce, serial)
    return aead.encrypt(iv, json.dumps(dict(secrets)).encode(), _bound_to(serial, trustpoint, rest))


def open_sealed(credential: str, nonce: bytes, ciphertext: bytes, *, serial: str, trustpoint: str,
                rest: Mapping[str, Any]) -> bytes | None:
    """The plaintext :func:`seal` sealed, or None when it does not open with this credential for
    this serial, trustpoint and rest of the configuration (or was changed on the way)."""
    aead, iv = _cipher(credential, nonce, serial)
    try:
        return aead.decrypt(iv, ciphertext, _bound_to(serial, trustpoint, rest))
    except InvalidTag:
        return None


# --- configurations --------------------------------------------------------------------------------

def seal_configuration(params: EnrollmentParameters, *, credential: str, serial: str) -> SealedConfiguration:
    """``params`` as sent to device ``serial``: its secret options sealed to ``credential`` under a
    fresh nonce."""
    wire = params.to_wire()
    options = wire["options"]
    secrets = {key: value for key, value in options.items() if key in SECRET_OPTIONS}
    rest = {**wire, "options": {key: value for key, value in options.items() if key not in SECRET_OPTIONS}}
    nonce = new_nonce()
    ciphertext = seal(credential, nonce, serial=serial, trustpoint=params.name, rest=rest, secrets=secrets)
    if len(ciphertext) > MAX_SEALED_BYTES:
        raise ValidationError(
            f"the secret options of trustpoint {params.name} are {len(ciphertext)} bytes sealed; at most "
            f"{MAX_SEALED_BYTES} go to a device: use a smaller PKCS#12 file", code="sealed_configuration_too_large")
    sealed = {"nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
    return SealedConfiguration(name=params.name, wire={**rest, SEALED_FIELD: sealed}, nonce=nonce)


def open_configuration(configuration: Any, *, credential: str, serial: str,
                       trustpoint: str) -> tuple[Any, bytes | None]:
    """The configuration a device received, its sealed options opened back into its options, and
    the nonce they were sealed under; one without ``sealed`` comes back as it is, with None.

    Raises AuthError ``sealed_configuration_unreadable`` (401) when the credential does not open
    it, SealedTooLarge (413) for a ciphertext over MAX_SEALED_BYTES, ValidationError (422) for a
    ``sealed`` that is not {nonce, ciphertext} in base64, or options that are not an object.
    """
    if not isinstance(configuration, dict) or SEALED_FIELD not in configuration:
        return configuration, None
    rest = {key: value for key, value in configuration.items() if key != SEALED_FIELD}
    nonce, ciphertext = _read_sealed(configuration[SEALED_FIELD])
    options = rest.get("options", {})
    if not isinstance(options, dict):
        raise _invalid("the configuration's options must be a JSON object")
    plaintext = open_sealed(credential, nonce, ciphertext, serial=serial, trustpoint=trustpoint, rest=rest)
    if plaintext is None:
        raise AuthError(
            f"device {serial} could not open the sealed secret options of trustpoint {trustpoint} with its "
            "endpoint credential: they were sealed to another credential, for another device or trustpoint, or "
            "changed on the way; nothing was applied. Give certfleet the credential this device holds",
            code=UNREADABLE)
    try:
        secrets = json.loads(plaintext)
    except ValueError:
        secrets = None
    if not isinstance(secrets, dict) or not set(secrets) <= SECRET_OPTIONS:
        raise _invalid(f"the sealed options must be a JSON object of {', '.join(sorted(SECRET_OPTIONS))}")
    if not set(secrets).isdisjoint(options):
        raise _invalid("a secret option is given both sealed and in clear; send it sealed only")
    return {**rest, "options": {**options, **secrets}}, nonce


def _read_sealed(sealed: Any) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of a ``sealed`` field, its size checked before anything is decoded."""
    hint = f'"{SEALED_FIELD}" must be {{"nonce": "<base64>", "ciphertext": "<base64>"}}'
    if not isinstance(sealed, dict) or not all(isinstance(sealed.get(k), str) for k in ("nonce", "ciphertext")):
        raise _invalid(hint)
    too_large = SealedTooLarge(f"sealed secret options are at most {MAX_SEALED_BYTES // 1024} KiB; these are "
                               "larger", code="payload_too_large")
    if len(sealed["ciphertext"]) > _MAX_SEALED_TEXT:
        raise too_large
    try:
        nonce = base64.b64decode(sealed["nonce"], validate=True)
        ciphertext = base64.b64decode(sealed["ciphertext"], validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(hint) from None
    if len(ciphertext) > MAX_SEALED_BYTES:
        raise too_large
    if len(nonce) != NONCE_BYTES:
        raise _invalid(f"the sealed options' nonce must be {NONCE_BYTES} bytes")
    return nonce, ciphertext


def _invalid(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_sealed_configuration")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
