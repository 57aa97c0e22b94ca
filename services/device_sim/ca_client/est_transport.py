"""EST over HTTPS from the device to a CA: where the enrollment URL leads, one kept-alive
connection per enrollment, and the CA's unexpected answers as a :class:`CaFailure` with the
stable code :mod:`shared.protocols.ca_failures` gives it (network causes are told apart by
:mod:`.network`, shared with the SCEP client) and a hint that fits EST.

HTTP/1.1 (:mod:`.https`) over :mod:`.tls` (pyOpenSSL, for a cheaper handshake), on the event
loop: the socket and TLS errors arrive as the ``ssl`` module's, so each cause is told apart
without digging through wrapped exceptions.
"""

from __future__ import annotations

from base64 import b64encode
from dataclasses import dataclass

from OpenSSL import SSL

from services.device_sim.ca_client.connection import Answer, CaUrl
from services.device_sim.ca_client.https import CaHttpsConnection
from services.device_sim.ca_client.network import CaFailure, network_failure
from shared.protocols.ca_failures import status_problem
from shared.protocols.est import PKCS10

__all__ = ["Answer", "CaFailure", "EstEndpoint", "EstSession"]

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
        split = CaUrl.split(url, scheme="https", default_port=443, example_host="ca.example.com",
                            why="EST runs over HTTPS only")
        path = split.path.rstrip("/")
        base = path if WELL_KNOWN in path else path + WELL_KNOWN
        return cls(url=split.shown, host=split.host, port=split.port, base_path=base)

    def path(self, operation: str) -> str:
        return f"{self.base_path}/{operation}"


class EstSession:
    """One HTTPS connection to the CA's EST server, kept alive across an enrollment's requests
    (``async with``, on the event loop).

    ``trust`` says what the server was checked against, for the message when that fails.
    """

    def __init__(self, endpoint: EstEndpoint, context: SSL.Context, *, timeout: float, trust: str) -> None:
        self.endpoint, self.context, self.timeout, self.trust = endpoint, context, timeout, trust
        self.connection = CaHttpsConnection(endpoint.host, endpoint.port, context=context, timeout=timeout,
                                            url=endpoint.url, failure=self._network_failure)

    async def __aenter__(self) -> EstSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    async def get(self, operation: str) -> Answer:
        return await self._request("GET", operation, None, {})

    async def post_csr(self, operation: str, csr_base64: bytes, *, auth: tuple[str, str] | None) -> Answer:
        headers = {"Content-Type": PKCS10, "Content-Transfer-Encoding": "base64"}
        if auth is not None:
            headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        return await self._request("POST", operation, csr_base64, headers)

    async def _request(self, method: str, operation: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        return await self.connection.request(method, self.endpoint.path(operation), operation=operation,
                                             body=body, headers=headers)

    # --- turning failures into messages ------------------------------------------------------

    def _network_failure(self, exc: BaseException) -> CaFailure:
        endpoint = self.endpoint
        return network_failure(exc, url=endpoint.url, host=endpoint.host, port=endpoint.port,
                               timeout=self.timeout, service="EST", trust=self.trust)

    def http_failure(self, answer: Answer, operation: str, *, renewing: bool = False,
                     sent_password: bool = False) -> CaFailure:
        """A CA's answer other than 200 or 202, as a failure."""
        hint = ""
        if answer.status == 401:
            if renewing:
                hint = "the CA did not accept the device's current certificate; enroll the trustpoint anew"
            elif sent_password:
                hint = "check the username and password of the enrollment object"
            else:
                hint = "the CA wants a username and password: set them in the enrollment object"
        problem = status_problem(answer.status, url=self.endpoint.url, operation=operation, reason=answer.reason,
                                 detail=answer.detail(), hint=hint)
        return CaFailure.of(problem, retry_after=answer.asked_to_wait())
