"""A device proving it holds its endpoint credential.

Each device has a credential an admin gave certfleet (at registration, approval or an admin's
inventory import; stored sealed, never returned). certfleet seals a configuration's secrets to it
under a fresh random nonce (:mod:`shared.sealed_secrets`), and the device that opened them answers

    proof = hex(HMAC-SHA256(key=credential, msg=nonce || serial))

which the worker recomputes and compares in constant time. An endpoint that does not hold the
credential cannot answer, and a proof made for one device or one nonce is worth nothing for
another: a recorded answer cannot be replayed. Pure: both sides, the worker and the device
simulator, use these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

#: Bytes of randomness in a nonce.
NONCE_BYTES = 32


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def proof(credential: str, nonce: bytes, serial: str) -> str:
    """What the device holding ``credential`` answers to ``nonce``."""
    return hmac.new(credential.encode(), nonce + serial.encode(), hashlib.sha256).hexdigest()


def proof_matches(credential: str, nonce: bytes, serial: str, answer: str) -> bool:
    """Whether ``answer`` proves the credential; constant time in the answer's content."""
    expected = proof(credential, nonce, serial)
    return hmac.compare_digest(expected.encode(), answer.strip().lower().encode())
