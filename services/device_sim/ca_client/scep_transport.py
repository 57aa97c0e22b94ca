"""SCEP over plain HTTP from the device to a CA (RFC 8894 section 4): where the enrollment URL
leads, the three operations the device uses, and the one place that turns SCEP's HTTP answers
into a :class:`CaFailure` with the stable code :mod:`shared.protocols.ca_failures` gives it
(network causes are named by :mod:`.network`):

    GetCACaps      GET  <path>?operation=GetCACaps
    GetCACert      GET  <path>?operation=GetCACert
    PKIOperation   POST <path>?operation=PKIOperation with the DER message, when the CA lists
                   POSTPKIOperation; else GET with &message=<base64, URL-encoded>

An enrollment URL with no path uses the usual script, ``/cgi-bin/pkiclient.exe``, as IOS and
ASA devices do; any other path is used as given (NDES: ``/certsrv/mscep/mscep.dll``). SCEP
protects its messages itself (signed and encrypted), so it runs over HTTP, not HTTPS.
"""

from __future__ import annotations

import http.client
from base64 import b64encode
from dataclasses import dataclass
from urllib.parse import quote

from cryptography import x509

from services.device_sim.ca_client.connection import Answer, CaConnection, CaUrl
from services.device_sim.ca_client.network import CaFailure, network_failure
from shared.protocols.ca_failures import status_problem
from shared.protocols.scep import PKI_MESSAGE, ScepDecodeError, decode_ca_certs, parse_caps

DEFAULT_PATH = "/cgi-bin/pkiclient.exe"
#: GetCACaps answers that mean "this CA does not know the operation": it then offers nothing
#: beyond SCEP's defaults (DES, MD5), as RFC 8894 3.5.1 says a client must assume.
_NO_CAPS = {400, 404, 405, 501}


@dataclass(frozen=True)
class ScepEndpoint:
    """An enrollment URL, split into what a connection and a request need."""

    #: As messages show it: scheme, host, port and path, any user:password@ left out.
    url: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> ScepEndpoint:
        split = CaUrl.split(url, scheme="http", default_port=80, example_host="ca.example.com",
                            why="SCEP runs over plain HTTP (its messages are signed and encrypted)")
        path = split.path if split.path not in ("", "/") else DEFAULT_PATH
        return cls(url=split.shown, host=split.host, port=split.port, path=path)


class ScepSession:
    """One HTTP connection to the CA's SCEP service, kept alive across an enrollment's requests."""

    def __init__(self, endpoint: ScepEndpoint, *, timeout: float) -> None:
        self.endpoint, self.timeout = endpoint, timeout
        self.connection = CaConnection(
            lambda: http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout),
            url=endpoint.url, failure=self._network_failure,
        )

    def __enter__(self) -> ScepSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    # --- the operations -----------------------------------------------------------------------

    def get_ca_caps(self) -> frozenset[str]:
        answer = self._request("GET", "GetCACaps")
        if answer.status in _NO_CAPS:
            return frozenset()
        if answer.status != 200:
            raise self.http_failure(answer, "GetCACaps")
        return parse_caps(answer.body.decode("utf-8", "replace"))

    def get_ca_cert(self) -> list[x509.Certificate]:
        answer = self._request("GET", "GetCACert")
        if answer.status != 200:
            raise self.http_failure(answer, "GetCACert")
        try:
            return decode_ca_certs(answer.body, answer.headers.get("content-type"))
        except ScepDecodeError as exc:
            raise CaFailure(f"CA at {self.endpoint.url} answered GetCACert with no usable certificate: "
                            f"{exc.message}", code="ca_bad_response") from None

    def pki_operation(self, message: bytes, *, post: bool) -> bytes:
        """Send a pkiMessage; the CA's CertRep (DER)."""
        if post:
            answer = self._request("POST", "PKIOperation", body=message,
                                   headers={"Content-Type": PKI_MESSAGE})
        else:
            encoded = quote(b64encode(message).decode(), safe="")
            answer = self._request("GET", "PKIOperation", query=f"&message={encoded}")
        if answer.status != 200:
            raise self.http_failure(answer, "PKIOperation")
        return answer.body

    # --- HTTP -----------------------------------------------------------------------------------

    def _request(self, method: str, operation: str, *, query: str = "", body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> Answer:
        target = f"{self.endpoint.path}?operation={operation}{query}"
        return self.connection.request(method, target, operation=operation, body=body, headers=headers)

    def _network_failure(self, exc: BaseException) -> CaFailure:
        endpoint = self.endpoint
        return network_failure(exc, url=endpoint.url, host=endpoint.host, port=endpoint.port,
                               timeout=self.timeout, service="SCEP")

    def http_failure(self, answer: Answer, operation: str) -> CaFailure:
        """A CA's answer other than 200, as a failure: code and retryable from the one CA failure
        table, so SCEP and EST tell the device the same about the same HTTP status."""
        hint = ""
        if answer.status == 404:
            hint = (f"check the enrollment URL's path (the device asked {self.endpoint.path}; with no "
                    f"path it uses {DEFAULT_PATH})")
        elif answer.status == 401:
            hint = ("SCEP proves the device with the enrollment object's challenge password, not an HTTP "
                    "login; check that the enrollment URL leads to the CA's SCEP service")
        problem = status_problem(answer.status, url=self.endpoint.url, operation=operation, reason=answer.reason,
                                 detail=answer.detail(), hint=hint)
        return CaFailure.of(problem, retry_after=answer.asked_to_wait())
