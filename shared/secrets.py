"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) under a key stretched from
``CERTFLEET_SECRET_KEY``. Secrets are stored only as these tokens, never logged, never
put on a queue, never returned by the API."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from shared.errors import ConfigurationError


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigurationError("CERTFLEET_SECRET_KEY must not be empty")
        # A fixed salt is fine here: the input is a server key, not a user password.
        raw = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), b"certfleet-secrets-v1", 100_000)
        self._fernet = Fernet(base64.urlsafe_b64encode(raw))

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise ConfigurationError(
                "a stored secret cannot be decrypted: CERTFLEET_SECRET_KEY differs from the key "
                "it was stored with"
            ) from exc
