"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key stretched from
``CERTFLEET_SECRET_KEY``. Secrets are stored only as these tokens, never logged, never
put on a queue, never returned by the API."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ConfigurationError


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigurationError("CERTFLEET_SECRET_KEY must not be empty")
        self._fernet = Fernet(_fernet_key(secret_key))

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, token: bytes) -> bytes:
        plaintext = self.try_open(token)
        if plaintext is None:
            raise ConfigurationError(
                "a stored secret cannot be decrypted: CERTFLEET_SECRET_KEY differs from the key "
                "it was stored with"
            )
        return plaintext

    def try_open(self, token: bytes) -> bytes | None:
        """The plaintext, or None when ``token`` was not sealed with this box's key (or is damaged)."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            return None


@lru_cache(maxsize=4)
def _fernet_key(secret_key: str) -> bytes:
    """The Fernet key stretched from the server key; a process derives it once, not once per
    component that seals or opens secrets. A fixed salt is fine: the input is a server key, not
    a user password."""
    raw = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), b"certfleet-secrets-v1", 100_000)
    return base64.urlsafe_b64encode(raw)
