"""The device's key pairs: generated on the device, never sent anywhere."""

from __future__ import annotations

from shared.enrollment import EnrollmentParameters
from shared.enums import KeyType
from shared.pki import PrivateKey, generate_private_key
from shared.weak_crypto import MIN_RSA_BITS, enforce, weak_rsa_size

__all__ = ["MIN_RSA_BITS", "generate_device_key"]


def generate_device_key(params: EnrollmentParameters, *, weak_crypto: bool) -> PrivateKey:
    """The device's new key pair, refusing a weak one unless weak-crypto is enabled."""
    if params.key_type is KeyType.RSA:
        enforce(weak_rsa_size(params.key_size), weak_crypto_enabled=weak_crypto)
    return generate_private_key(params.key_type, params.key_size)
