"""structlog JSON logs. :class:`RedactSecrets` runs before the renderer, so a password,
challenge, passphrase, token or private key never reaches a log line."""

from __future__ import annotations

import logging
import re
import sys
from functools import lru_cache
from typing import Any

import structlog

#: Keys whose values are always secrets.
SECRET_KEYS = re.compile(
    r"pass(word|phrase)?|secret|challenge|token|authorization|private_key|pkcs12|api_key",
    re.IGNORECASE,
)
#: Secret-looking material inside free text.
SECRET_TEXT = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
     "[REDACTED PRIVATE KEY]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[REDACTED]"),
    (re.compile(r"(?i)(://[^:/@\s]*:)[^@\s]+@"), r"\1[REDACTED]@"),
]
REDACTED = "[REDACTED]"
#: What every pattern of SECRET_TEXT needs to match: text without it is left as it is after one
#: search instead of a substitution per pattern (most values of most lines).
SECRET_TEXT_HINT = re.compile(r"PRIVATE KEY|(?i:bearer)|://")


@lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    """Whether values under ``key`` are secrets (log lines use a few dozen keys over and over)."""
    return key != "event" and SECRET_KEYS.search(key) is not None


class RedactSecrets:
    """Replace secret values by key name, and secret material inside strings."""

    def __call__(self, _logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return {key: self._clean(key, value) for key, value in event_dict.items()}

    def _clean(self, key: str, value: Any) -> Any:
        if _secret_key(key):
            return REDACTED
        if isinstance(value, bytes):  # the renderer would show their repr, key material included
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            if SECRET_TEXT_HINT.search(value) is None:
                return value
            for pattern, replacement in SECRET_TEXT:
                value = pattern.sub(replacement, value)
            return value
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        return value


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured: a
    process that replaces its standard error (a test capturing output, a daemon redirecting it)
    keeps logging, and a replaced stream that was closed does not make every later log call fail."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


#: Whether a logger keeps the configuration of its first use (fast). The test suite turns it off,
#: since its tests configure logging over and over in one process.
CACHE_LOGGERS = True


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactSecrets(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=CACHE_LOGGERS,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
