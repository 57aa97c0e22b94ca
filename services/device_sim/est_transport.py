"""EST over HTTPS from the device to a CA: where the enrollment URL leads, and the one place
that turns EST's network and HTTP answers into a :class:`CaFailure` with a stable code, a
message that names the cause, and whether trying again later may help (network causes are
named by :mod:`.ca_network`, shared with the SCEP client):

    name not resolved        ca_name_unresolved           (retryable for a temporary DNS failure)
    no route to the host     ca_no_route                  retryable
    connection refused       ca_connection_refused        retryable
    no answer in time        ca_timeout                   retryable
    connection dropped       ca_connection_lost           retryable
    server not trusted       ca_tls_verification_failed
    other TLS failure        ca_tls_failed
    401                      ca_auth_failed
    any other status         ca_http_error                (5xx and 429 retryable)
    unreadable answer        ca_bad_response

Plain ``http.client`` over ``ssl``: the socket errors arrive as they are, so each cause is
told apart without digging through wrapped exceptions.
"""

from __future__ import annotations

import http.client
import json
import ssl
from base64 import b64encode
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from shared.clock import utcnow

from .ca.est_codec import PKCS10
from .ca_network import CaFailure, network_failure

__all__ = ["Answer", "CaFailure", "EstEndpoint", "EstSession"]

#: Longest answer the device reads from a CA; a certificate chain is a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024
#: How long to wait when a CA holds a request without saying for how long (RFC 7030 requires it to).
DEFAULT_RETRY_AFTER = 10.0
#: The device asks a holding CA again no sooner than this and no later than this.
RETRY_AFTER_RANGE = (1.0, 3600.0)
WELL_KNOWN = "/.well-known/est"


@dataclass(frozen=True)
class EstEndpoint:
    """An enrollment URL, split into what a connection and a request need."""

    #: As messages show it: scheme, host, port and path, any user:password@ left out.
    url: str
    host: str
    port: int
    #: The path the operation names follow: ``/.well-known/est``, ``/.well-known/est/<label>``,
    #: or ``/<path>/.well-known/est`` (as strongSwan's ``pki`` reads ``https://host/<label>``).
    base_path: str

    @classmethod
    def parse(cls, url: str) -> EstEndpoint:
        try:
            parts = urlsplit(url.strip())
            port = parts.port or 443
        except ValueError as exc:
            raise CaFailure(f"enrollment URL {url!r} is not a valid URL: {exc}; IPv6 addresses go in "
                            "brackets, e.g. https://[2001:db8::5]:8443/",
                            code="invalid_enrollment_url") from None
        if parts.scheme != "https" or not parts.hostname:
            raise CaFailure(f"enrollment URL {url!r} is not an https:// URL with a host; EST runs over "
                            "HTTPS only", code="invalid_enrollment_url")
        host = parts.hostname
        shown_host = f"[{host}]" if ":" in host else host
        shown = f"https://{shown_host}{f':{parts.port}' if parts.port else ''}{parts.path or '/'}"
        path = parts.path.rstrip("/")
        base = path if WELL_KNOWN in path else path + WELL_KNOWN
        return cls(url=shown, host=host, port=port, base_path=base)

    def path(self, operation: str) -> str:
        return f"{self.base_path}/{operation}"


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def retry_after(self) -> float:
        """Seconds the CA asks the device to wait (Retry-After: seconds or an HTTP date)."""
        raw = self.headers.get("retry-after", "").strip()
        seconds = DEFAULT_RETRY_AFTER
        if raw.isdigit():
            seconds = float(raw)
        elif raw:
            try:
                seconds = (parsedate_to_datetime(raw) - utcnow()).total_seconds()
            except (TypeError, ValueError):
                pass
        low, high = RETRY_AFTER_RANGE
        return min(max(seconds, low), high)

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


class EstSession:
    """One HTTPS connection to the CA's EST server, kept alive across an enrollment's requests.

    ``trust`` says what the server was checked against, for the message when that fails.
    """

    def __init__(self, endpoint: EstEndpoint, context: ssl.SSLContext, *, timeout: float, trust: str) -> None:
        self.endpoint, self.context, self.timeout, self.trust = endpoint, context, timeout, trust
        self._conn: http.client.HTTPSConnection | None = None
        self._used = False

    def __enter__(self) -> EstSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._used = None, False

    def get(self, operation: str) -> Answer:
        return self._request("GET", operation, None, {})

    def post_csr(self, operation: str, csr_base64: bytes, *, auth: tuple[str, str] | None) -> Answer:
        headers = {"Content-Type": PKCS10, "Content-Transfer-Encoding": "base64"}
        if auth is not None:
            headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        return self._request("POST", operation, csr_base64, headers)

    def _request(self, method: str, operation: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        for attempt in (1, 2):
            reused = self._used
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPSConnection(
                        self.endpoint.host, self.endpoint.port, context=self.context, timeout=self.timeout
                    )
                self._conn.request(method, self.endpoint.path(operation), body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read(MAX_ANSWER_BYTES + 1)
                self._used = True
                if len(data) > MAX_ANSWER_BYTES or response.will_close:
                    self.close()
                if len(data) > MAX_ANSWER_BYTES:
                    raise CaFailure(f"CA at {self.endpoint.url} answered {operation} with more than "
                                    f"{MAX_ANSWER_BYTES // 1024} KiB", code="ca_bad_response")
                return Answer(status=response.status, reason=response.reason,
                              headers={k.lower(): v for k, v in response.getheaders()}, body=data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue  # the server had closed the kept-alive connection: open a new one
                raise self._network_failure(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._network_failure(exc) from None
        raise AssertionError("unreachable")

    # --- turning failures into messages ------------------------------------------------------

    def _network_failure(self, exc: BaseException) -> CaFailure:
        endpoint = self.endpoint
        return network_failure(exc, url=endpoint.url, host=endpoint.host, port=endpoint.port,
                               timeout=self.timeout, service="EST", trust=self.trust)

    def http_failure(self, answer: Answer, operation: str, *, renewing: bool = False,
                     sent_password: bool = False) -> CaFailure:
        """A CA's answer other than 200 or 202, as a failure."""
        url, status = self.endpoint.url, answer.status
        said = f"{status} {answer.reason}".strip()
        if status == 401:
            if renewing:
                hint = "the CA did not accept the device's current certificate; enroll the trustpoint anew"
            elif sent_password:
                hint = "check the username and password of the enrollment object"
            else:
                hint = "the CA wants a username and password: set them in the enrollment object"
            return CaFailure(
                f"CA at {url} refused {operation}: {said}; {hint} (the CA says: {answer.detail()})",
                code="ca_auth_failed",
            )
        return CaFailure(f"CA at {url} answered {operation} with {said}: {answer.detail()}",
                         code="ca_http_error", retryable=status >= 500 or status == 429)
