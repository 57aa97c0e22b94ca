"""What the device's CA clients share: the enrollment URL, the CA's answers, and the SCEP
client's kept-alive HTTP connection (:class:`CaConnection`): opened on the first request, reused
for the enrollment's next ones, opened once more when the CA had closed the kept-alive one
meanwhile, and every answer read whole (up to a limit). The EST client keeps its HTTPS
connection the same way on the event loop (:mod:`.https`)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from services.device_sim.ca_client.network import CaFailure
from shared.clock import utcnow
from shared.protocols.retry_after import parse_retry_after

#: Longest answer the device reads from a CA; a certificate chain is a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024
#: How long to wait when a CA holds a request without a Retry-After the device can read (RFC 7030
#: requires the CA to send one).
DEFAULT_RETRY_AFTER = 10.0
#: The device asks a holding CA again no sooner than this and no later than this.
RETRY_AFTER_RANGE = (1.0, 3600.0)


def configured_url(options: dict[str, Any], *, trustpoint: str, protocol: str, example: str) -> str:
    """The trustpoint's enrollment URL as configured; CaFailure when there is none."""
    url = options.get("enrollment_url")
    if not isinstance(url, str) or not url.strip():
        raise CaFailure(f"trustpoint {trustpoint} has no enrollment URL; set the {protocol} enrollment "
                        f"object's enrollment URL, e.g. {example}", code="invalid_enrollment_url")
    return url


@dataclass(frozen=True, kw_only=True)
class CaUrl:
    """An enrollment URL split for connecting; ``shown`` is how messages print it (no user:password@)."""

    shown: str
    host: str
    port: int
    path: str

    @classmethod
    def split(cls, url: str, *, scheme: str, default_port: int, example_host: str, why: str) -> CaUrl:
        """CaFailure with code invalid_enrollment_url unless ``url`` is a ``scheme`` URL with a host;
        ``why`` says why the protocol needs that scheme."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port or default_port
        except ValueError as exc:
            raise CaFailure(f"enrollment URL {url!r} is not a valid URL: {exc}; IPv6 addresses go in "
                            f"brackets, e.g. {scheme}://[2001:db8::5]/", code="invalid_enrollment_url") from None
        if parts.scheme != scheme or not parts.hostname:
            raise CaFailure(f"enrollment URL {url!r} is not an {scheme}:// URL with a host; {why}, "
                            f"e.g. {scheme}://{example_host}/", code="invalid_enrollment_url")
        host = parts.hostname
        shown_host = f"[{host}]" if ":" in host else host
        shown = f"{scheme}://{shown_host}{f':{parts.port}' if parts.port else ''}{parts.path or '/'}"
        return cls(shown=shown, host=host, port=port, path=parts.path)


@dataclass(frozen=True, kw_only=True)
class Answer:
    status: int
    reason: str
    #: Header names lower-case.
    headers: dict[str, str]
    body: bytes
    #: When the answer arrived: a Retry-After date counts from then.
    received_at: datetime

    def _asked(self) -> float | None:
        low, high = RETRY_AFTER_RANGE
        seconds = parse_retry_after(self.headers.get("retry-after"), now=self.received_at, cap=high)
        return None if seconds is None else max(seconds, low)

    def retry_after(self) -> float:
        """Seconds before asking a CA that holds the request again: its Retry-After (seconds or
        an HTTP date) within :data:`RETRY_AFTER_RANGE`, or :data:`DEFAULT_RETRY_AFTER` when it
        gives none the device can read."""
        asked = self._asked()
        return DEFAULT_RETRY_AFTER if asked is None else asked

    def asked_to_wait(self) -> float | None:
        """For a busy CA (503, 429) whose Retry-After the device can read, the seconds it asked
        for (within :data:`RETRY_AFTER_RANGE`); else None, and the controller's backoff decides."""
        return self._asked() if self.status in (429, 503) else None

    def detail(self) -> str:
        """The CA's own explanation: a problem+json ``detail``, or the start of a text body."""
        text = self.body[:2000].decode("utf-8", "replace")
        if "json" in self.headers.get("content-type", ""):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict):
                text = str(data.get("detail") or data.get("title") or text)
        text = " ".join(text.split())
        return text[:300] or "no explanation given"


def too_large(url: str, operation: str) -> CaFailure:
    """The failure of an answer longer than :data:`MAX_ANSWER_BYTES`."""
    return CaFailure(f"CA at {url} answered {operation} with more than {MAX_ANSWER_BYTES // 1024} KiB",
                     code="ca_bad_response")


class CaConnection:
    """The connection; ``open_connection`` makes a new one, ``failure`` names a network error
    (the protocol knows what the device was checking it against), ``clock`` stamps each answer
    with the time it arrived."""

    def __init__(self, open_connection: Callable[[], http.client.HTTPConnection], *, url: str,
                 failure: Callable[[BaseException], CaFailure], clock: Callable[[], datetime] = utcnow) -> None:
        self.open_connection, self.url, self.failure, self.clock = open_connection, url, failure, clock
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._used = None, False

    def request(self, method: str, target: str, *, operation: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        for attempt in (1, 2):
            reused = self._used
            try:
                if self._conn is None:
                    self._conn = self.open_connection()
                self._conn.request(method, target, body=body, headers=headers or {})
                response = self._conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES + 1)
                self._used = True
                if len(data) > MAX_ANSWER_BYTES or response.will_close:
                    self.close()
                if len(data) > MAX_ANSWER_BYTES:
                    raise too_large(self.url, operation)
                return Answer(status=response.status, reason=response.reason,
                              headers={k.lower(): v for k, v in response.getheaders()}, body=data,
                              received_at=self.clock())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server had closed the kept-alive connection: open a new one
                raise self.failure(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self.failure(exc) from None
        raise AssertionError("unreachable")
