"""The error hierarchy. Every error has a stable machine ``code`` and a message a person
can act on; the controller maps them to problem+json, the workers to job and trustpoint
failures.

    CertfleetError
    ├── ConfigurationError      bad settings
    ├── ValidationError         a client's bad input (422)
    │   └── WeakCryptoError     weak algorithm refused until weak-crypto is enabled
    ├── NotFoundError           (404)
    ├── ConflictError           (409)
    ├── AuthError               (401 / 403)
    ├── InvalidTransition       a trustpoint status change the table forbids
    └── ExchangeError           something went wrong talking to a device or a CA
        ├── TransientError      worth retrying: timeout, refused, 5xx
        └── PermanentError      retrying cannot help: the person must change something
"""

from __future__ import annotations


class CertfleetError(Exception):
    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigurationError(CertfleetError):
    code = "configuration_error"


class ValidationError(CertfleetError):
    code = "validation_error"
    status = 422


class WeakCryptoError(ValidationError):
    code = "weak_crypto"

    def __init__(self, algorithm: str) -> None:
        super().__init__(
            f"weak crypto: {algorithm}; enable weak-crypto on the device to accept it"
        )
        self.algorithm = algorithm


class NotFoundError(CertfleetError):
    code = "not_found"
    status = 404


class ConflictError(CertfleetError):
    code = "conflict"
    status = 409


class AuthError(CertfleetError):
    code = "unauthorized"
    status = 401


class ForbiddenError(AuthError):
    code = "forbidden"
    status = 403


class InvalidTransition(CertfleetError):
    code = "invalid_transition"
    status = 409


class ExchangeError(CertfleetError):
    code = "exchange_failed"
    status = 502


class TransientError(ExchangeError):
    """Retrying later may succeed (timeouts, refused connections, 5xx answers)."""

    code = "transient"

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class PermanentError(ExchangeError):
    """Retrying cannot help until a person changes something."""

    code = "permanent"
