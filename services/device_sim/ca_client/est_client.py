"""The device's EST client (RFC 7030): the device talks to the CA itself, as a real one does.

One enrollment:

1. ``cacerts``: the CA chain, ordered issuing CA first (the CA certificate becomes available);
   the server is trusted as :mod:`.trust` says (trust anchors, fingerprint, or no check);
2. a new key pair made on the device and a request for the trustpoint's subject and names;
3. ``simpleenroll`` with HTTP basic auth (the enrollment object's username and password), or
   for a re-enrollment ``simplereenroll`` authenticated by the current certificate as TLS
   client certificate (when the CA issued it and the subject stays the same); should the CA
   refuse that certificate (401: it expired on the way, say), ``simpleenroll`` with the password;
4. while the CA answers 202 the device asks again as its Retry-After says, for a few seconds
   (:attr:`services.device_sim.tasks.CaClientSettings.wait_seconds`); then it reports the
   identity certificate pending and keeps the request: the simulator keeps polling in the
   background, and enrolling again asks about the same request instead of filing a new one;
5. checks on what the CA issued (:mod:`.issued`): the device's own public key, signed by the
   issuing CA, fit for IPsec (not the Microsoft template's "IKE intermediate" usage), no weak
   signature.

Private keys never leave the device: only the certificate request is sent.

The enrollment runs on the simulator's event loop; only an RSA key pair (20-100 ms to make)
is made in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.device_sim.ca_client import issued
from services.device_sim.ca_client import trust as ca_trust
from services.device_sim.ca_client.connection import configured_url
from services.device_sim.ca_client.est_transport import CaFailure, EstEndpoint, EstSession
from services.device_sim.keypairs import generate_device_key
from services.device_sim.tasks import (
    CaClientSettings,
    CurrentIdentity,
    Enrolled,
    EnrollmentTask,
    HeldByCa,
    HeldRequest,
    Outcome,
    Refused,
    Slot,
)
from shared.enrollment import EnrollmentParameters
from shared.enums import CertificateRole, KeyType
from shared.errors import CertfleetError, WeakCryptoError
from shared.pki import PrivateKey
from shared.protocols.csr import build_csr
from shared.protocols.est import decode_certs_only, encode_csr

ENROLL, REENROLL = "simpleenroll", "simplereenroll"


@dataclass(frozen=True, kw_only=True)
class EstOptions:
    """The EST settings of a trustpoint's configuration (the enrollment object's fields)."""

    enrollment_url: str
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line through a repr
    fingerprint: str = ""
    ignore_server_validation: bool = False

    @classmethod
    def of(cls, params: EnrollmentParameters) -> EstOptions:
        options: dict[str, Any] = params.options
        url = configured_url(options, trustpoint=params.name, protocol="EST", example="https://ca.example.com/")
        text = {k: options.get(k, "") for k in ("username", "password", "fingerprint")}
        if not all(isinstance(v, str) for v in text.values()):
            raise CaFailure("the EST username, password and fingerprint must be text",
                            code="invalid_est_configuration")
        ignore = options.get("ignore_server_validation", False)
        if not isinstance(ignore, bool):
            raise CaFailure("ignore_server_validation must be true or false",
                            code="invalid_est_configuration")
        fp = ca_trust.configured_fingerprint(text["fingerprint"], code="invalid_est_configuration")
        return cls(enrollment_url=url, username=text["username"], password=text["password"],
                   fingerprint=fp, ignore_server_validation=ignore)


async def enroll_est(task: EnrollmentTask) -> Outcome:
    try:
        options = EstOptions.of(task.params)
        endpoint = EstEndpoint.parse(options.enrollment_url)
    except CaFailure as exc:
        return Refused(code=exc.code, message=exc.message)
    enrollment = _EstEnrollment(task, options, endpoint)
    try:
        return await enrollment.run()
    except CaFailure as exc:
        return Refused(code=exc.code, message=exc.message, retryable=exc.retryable, retry_after=exc.retry_after,
                       ca_certificates=enrollment.ca_slots)
    except WeakCryptoError as exc:
        return Refused(code=exc.code, message=exc.message, ca_certificates=enrollment.ca_slots)


class _RenewalRefused(Exception):
    """The CA refused a re-enrollment's client certificate, and the device has a password."""


class _EstEnrollment:
    """One enrollment's conversation with the CA."""

    def __init__(self, task: EnrollmentTask, options: EstOptions, endpoint: EstEndpoint) -> None:
        self.task, self.options, self.endpoint = task, options, endpoint
        #: The CA chain once cacerts answered: installed even if the enrollment then fails.
        self.ca_slots: tuple[Slot, ...] = ()

    async def run(self) -> Outcome:
        # With a fingerprint, the first connection only fetches the CA certificates to pin.
        async with self._session(pinned=None, identity=None) as first:
            chain = await self._ca_chain(first)
            pinned = self._pin(chain)
            identity = self._renewal_identity(chain)
            if pinned is None and identity is None:
                return await self._enroll(first, chain, identity=None)
        async with self._session(pinned=pinned, identity=identity) as second:
            try:
                return await self._enroll(second, chain, identity=identity)
            except _RenewalRefused:
                pass
        # The CA would not take the current certificate (it may have expired between the device's
        # look at it and the CA's): enroll anew with the password, as a device without one does.
        async with self._session(pinned=pinned, identity=None) as third:
            return await self._enroll(third, chain, identity=None)

    # --- trusting the server -----------------------------------------------------------------

    def _session(self, *, pinned: x509.Certificate | None, identity: CurrentIdentity | None) -> EstSession:
        options, anchors = self.options, self.task.ca.trust_anchors_pem
        if options.ignore_server_validation:
            context = ca_trust.client_context(verify=False, identity=identity)
            trust = "nothing: the enrollment object ignores server certificate validation"
        elif pinned is not None:
            pem = pinned.public_bytes(serialization.Encoding.PEM).decode()
            context = ca_trust.client_context(verify=True, anchors_pem=pem, identity=identity)
            trust = (f"the CA certificate {pinned.subject.rfc4514_string()} pinned by the enrollment "
                     "object's fingerprint")
        elif options.fingerprint:
            context = ca_trust.client_context(verify=False)  # fetching /cacerts to pin: nothing secret sent
            trust = "nothing yet: fetching the CA certificates to compare with the fingerprint"
        else:
            context = ca_trust.client_context(verify=True, anchors_pem=anchors, identity=identity)
            trust = _anchors_described(self.task.ca)
        return EstSession(self.endpoint, context, timeout=self.task.ca.timeout_seconds, trust=trust)

    def _pin(self, chain: list[x509.Certificate]) -> x509.Certificate | None:
        if not self.options.fingerprint:
            return None
        pinned = ca_trust.pinned_certificate(chain, self.options.fingerprint)
        if pinned is None:
            served = "; ".join(f"{c.subject.rfc4514_string()} SHA-256 {ca_trust.fingerprint(c)}"
                               for c in chain)
            raise CaFailure(
                f"CA at {self.endpoint.url}: TLS verification failed: no CA certificate it serves has the "
                f"fingerprint {self.options.fingerprint} the enrollment object expects (it serves {served}); "
                "correct the enrollment object's fingerprint",
                code="ca_tls_verification_failed",
            )
        return pinned

    # --- the CA certificates ---------------------------------------------------------------------

    async def _ca_chain(self, session: EstSession) -> list[x509.Certificate]:
        answer = await session.get("cacerts")
        if answer.status != 200:
            raise session.http_failure(answer, "cacerts")
        try:
            chain = list(_ordered_ca_chain(answer.body))
        except (CertfleetError, ValueError) as exc:
            raise CaFailure(f"CA at {self.endpoint.url} answered cacerts with no usable CA chain: {exc}",
                            code="ca_bad_response") from None
        if not issued.validation_setting(self.task, "skip_ca_flag_check"):
            ca_trust.refuse_without_ca_flag(chain, url=self.endpoint.url)
        self.ca_slots = tuple((CertificateRole.CA, i, c) for i, c in enumerate(chain))
        return chain

    # --- enrolling -------------------------------------------------------------------------------

    def _renewal_identity(self, chain: list[x509.Certificate]) -> CurrentIdentity | None:
        """The current certificate to renew with (RFC 7030 4.2.2); else the device enrolls anew
        with its password."""
        return issued.renewal_identity(self.task, chain[0])

    async def _enroll(self, session: EstSession, chain: list[x509.Certificate],
                identity: CurrentIdentity | None) -> Outcome:
        task = self.task
        held = task.held if task.held is not None and task.held.params == task.params else None
        if held is not None:
            key, csr, first_asked = held.private_key, held.csr, held.first_asked_at
        else:
            key, csr = await _new_request(task)
            first_asked = task.now
        operation = REENROLL if identity is not None else ENROLL
        use_password = operation == ENROLL and bool(self.options.username)
        auth = (self.options.username, self.options.password) if use_password else None
        body = encode_csr(csr)
        deadline = time.monotonic() + task.ca.wait_seconds
        while True:
            answer = await session.post_csr(operation, body, auth=auth)
            if answer.status == 200:
                break
            if answer.status == 401 and identity is not None and self.options.username:
                raise _RenewalRefused
            if answer.status != 202:
                raise session.http_failure(answer, operation, renewing=identity is not None,
                                           sent_password=auth is not None)
            wait = answer.retry_after()
            if time.monotonic() + wait > deadline:
                request = HeldRequest(params=task.params, private_key=key, csr=csr,
                                      renewal=identity is not None, retry_after=wait,
                                      first_asked_at=first_asked)
                return HeldByCa(request=request, ca_certificates=self.ca_slots)
            await asyncio.sleep(wait)
        cert = self._issued(answer.body, key, chain, operation)
        return Enrolled(private_key=key, certificates=((CertificateRole.IDENTITY, 0, cert), *self.ca_slots))

    def _issued(self, body: bytes, key: PrivateKey, chain: list[x509.Certificate], operation: str
                ) -> x509.Certificate:
        """The certificate the CA issued for this device's key, checked as the device checks it."""
        url = self.endpoint.url
        try:
            certs = decode_certs_only(body)
        except CertfleetError as exc:
            raise CaFailure(f"CA at {url} answered {operation} with no certificate: {exc}",
                            code="ca_bad_response") from None
        return issued.accept_issued(certs, key, chain[0], url=url, weak_crypto=self.task.weak_crypto,
                                    ignore_ipsec_key_usage=issued.validation_setting(self.task,
                                                                                     "ignore_ipsec_key_usage"))


async def _new_request(task: EnrollmentTask) -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    """The device's new key pair and its certificate request: made in a worker thread for RSA,
    whose key generation would stall every other device on the loop."""
    if task.params.key_type is KeyType.RSA:
        return await asyncio.to_thread(_key_and_csr, task)
    return _key_and_csr(task)


def _key_and_csr(task: EnrollmentTask) -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    key = generate_device_key(task.params, weak_crypto=task.weak_crypto)
    return key, build_csr(key, task.params, task.device)


def _anchors_described(ca: CaClientSettings) -> str:
    """What the device checked the server against: its trust anchors and its CA bundle."""
    count = ca.trust_anchors_pem.count("-----BEGIN CERTIFICATE-----") - ca.bundle_certificates
    if not count and not ca.bundle_version:
        return ("the device's trust anchors, and it has none: add the CA's certificate as a trust anchor "
                "(device-sim --trust-anchor) or to certfleet's CA bundle, set the enrollment object's CA "
                "fingerprint, or ignore server certificate validation")
    parts = [f"{count} trust anchor{'s' if count != 1 else ''}"] if count else []
    if ca.bundle_version:
        held = ca.bundle_certificates
        parts.append(f"CA bundle version {ca.bundle_version} ({held} certificate{'s' if held != 1 else ''})")
    return "the device's " + " and ".join(parts)


@lru_cache(maxsize=64)
def _ordered_ca_chain(cacerts: bytes) -> tuple[x509.Certificate, ...]:
    """The CA chain of a cacerts answer, issuing CA first. A CA gives every device the same bytes:
    the simulated fleet parses each distinct answer once (certificates are immutable, so sharing
    them between devices is safe); a refused answer raises again every time."""
    return tuple(ca_trust.order_ca_chain(decode_certs_only(cacerts)))
