"""The device's key pairs: generated on the device, never sent anywhere."""

from __future__ import annotations

from shared.enrollment import EnrollmentParameters
from shared.enums import KeyType
from shared.errors import WeakCryptoError
from shared.pki import PrivateKey, generate_private_key

#: RSA keys shorter than this need weak-crypto enabled on the device.
MIN_RSA_BITS = 2048


def generate_device_key(params: EnrollmentParameters, *, weak_crypto: bool) -> PrivateKey:
    """The device's new key pair, refusing a weak one unless weak-crypto is enabled."""
    if params.key_type is KeyType.RSA and params.key_size < MIN_RSA_BITS and not weak_crypto:
        raise WeakCryptoError(f"RSA-{params.key_size}")
    return generate_private_key(params.key_type, params.key_size)
