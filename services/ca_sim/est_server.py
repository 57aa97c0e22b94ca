"""The CA simulator's EST server (RFC 7030) as an aiohttp application.

aiohttp rather than an ASGI server: ``simplereenroll`` authenticates with the TLS client
certificate, and aiohttp hands the handler the connection's ``ssl_object`` (uvicorn passes
the peer certificate on only in some versions). It also answers HTTP/1.1 with Content-Length
and sends headers and body in one write, which strongSwan's ``pki`` needs.

Paths, for the default profile and for ``<label>`` (see :mod:`.profiles`)::

    GET  /.well-known/est[/<label>]/cacerts          issuing CA and root, certs-only PKCS#7
    GET  /.well-known/est[/<label>]/csrattrs         signature algorithms the CA expects
    POST /.well-known/est[/<label>]/simpleenroll     HTTP basic auth
    POST /.well-known/est[/<label>]/simplereenroll   TLS client certificate (or basic auth)

``/<label>/.well-known/est/<op>`` is accepted too: strongSwan's ``pki`` puts the URL's path in
front of ``/.well-known/est/``, so ``--url https://host:port/<label>`` reaches a profile. (pki 5.9.8
drops that path when it polls a pending request, so for manual approval with pki, make the
manual profile the default one: ``EstSettings.default_profile``, ``--default-profile``.)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import ssl
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import SignatureAlgorithmOID

from services.ca_sim import admin
from services.ca_sim.authority import CertificateAuthority
from services.ca_sim.issuance import renewal_name_change
from services.ca_sim.pending import APPROVED, ISSUED, PENDING, EnrollmentRequest, RequestStore
from services.ca_sim.problems import problem_middleware
from services.ca_sim.profiles import PROFILES, CertificateProfile, get_profile
from shared.clock import utcnow
from shared.errors import AuthError, NotFoundError
from shared.logging import get_logger
from shared.protocols.est import (
    CERTS_ONLY,
    CSRATTRS,
    MAX_BODY_BYTES,
    OPERATIONS,
    EstError,
    check_request_headers,
    decode_csr,
    encode_certs_only,
    encode_csr_attrs,
)

log = get_logger("ca.est")

EST_PATH = re.compile(
    r"^(?:/(?P<prefix>[^/]+))?/\.well-known/est(?:/(?P<label>[^/]+))?/(?P<op>[^/]+)/?$"
)
_METHODS = {"cacerts": "GET", "csrattrs": "GET", "simpleenroll": "POST", "simplereenroll": "POST"}
_SIGNATURE_OIDS = {
    "sha256": (SignatureAlgorithmOID.RSA_WITH_SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA256),
    "sha384": (SignatureAlgorithmOID.RSA_WITH_SHA384, SignatureAlgorithmOID.ECDSA_WITH_SHA384),
    "sha512": (SignatureAlgorithmOID.RSA_WITH_SHA512, SignatureAlgorithmOID.ECDSA_WITH_SHA512),
}


@dataclass(frozen=True, kw_only=True)
class EstSettings:
    #: Basic-auth credentials for enrollment; without a user, anyone may enroll (a lab CA).
    user: str | None = None
    password: str | None = None
    #: Seconds a client is told to wait before asking again about a pending request.
    retry_after: int = 2
    #: The profile that answers paths without a label.
    default_profile: str = "default"

    def __post_init__(self) -> None:
        if self.default_profile not in PROFILES:
            raise ValueError(f"no CA profile is labelled {self.default_profile!r}; known labels: "
                             f"{', '.join(sorted(PROFILES))}")
        if bool(self.user) != bool(self.password):
            raise ValueError("give both the EST user and the EST password, or neither")
        if self.retry_after < 1:
            raise ValueError("retry_after must be at least 1 second")

    def __repr__(self) -> str:  # the password never reaches a log line through a repr
        return f"EstSettings(user={self.user!r}, password={'***' if self.password else None}, " \
               f"retry_after={self.retry_after}, default_profile={self.default_profile!r})"


def server_ssl_context(ca: CertificateAuthority, cert_file, key_file) -> ssl.SSLContext:
    """TLS 1.2 and 1.3; a client certificate is asked for but optional, and verified against
    our CA when given (a foreign or expired one fails the handshake). No TLS 1.3 session
    tickets: EST clients (devices, ``pki``) open a connection per enrollment and never resume
    one, and each ticket costs an encryption and a write on every connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=str(ca.paths.chain))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.num_tickets = 0
    return ctx


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The client certificate the TLS handshake verified, if the client sent one."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
    return x509.load_der_x509_certificate(der) if der else None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class EstService:
    """Request handlers over one CA, its pending-request store and the EST settings."""

    def __init__(self, ca: CertificateAuthority, store: RequestStore, settings: EstSettings) -> None:
        self.ca = ca
        self.store = store
        self.settings = settings
        #: /cacerts answers every device before it enrolls; the chain never changes while serving.
        self._cacerts = encode_certs_only(ca.chain())

    # --- routing ------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        match = EST_PATH.match(request.path)
        if not match or (match["prefix"] and match["label"]) or match["op"] not in OPERATIONS:
            raise NotFoundError(
                f"{request.path} is not an EST endpoint; use /.well-known/est/[<label>/]"
                f"{{{','.join(OPERATIONS)}}}",
                code="not_found",
            )
        op = match["op"]
        if request.method != _METHODS[op] and not (request.method == "HEAD" and _METHODS[op] == "GET"):
            raise web.HTTPMethodNotAllowed(request.method, [_METHODS[op]])
        profile = get_profile(match["label"] or match["prefix"] or self.settings.default_profile)
        if op == "cacerts":
            return _pkcs7(self._cacerts)
        if op == "csrattrs":
            return web.Response(body=encode_csr_attrs(_SIGNATURE_OIDS[profile.signature_hash]),
                                headers={"Content-Type": CSRATTRS, "Content-Transfer-Encoding": "base64"})
        if op == "simpleenroll":
            self._check_password(request)
            csr = decode_csr(await _read_request(request))
            old = None
        else:
            old = self._renewal_certificate(request)
            csr = decode_csr(await _read_request(request))
            if old is not None:
                _check_same_identity(csr, old)
        return self._enroll(csr, profile, renewal=op == "simplereenroll", old=old)

    # --- authentication -----------------------------------------------------------------

    def _check_password(self, request: web.Request) -> None:
        if not self.settings.user:
            return
        given = basic_credentials(request.headers.get("Authorization"))
        if given is None:
            raise AuthError("this EST server needs HTTP basic authentication (the enrollment object's "
                            "username and password)", code="authentication_required")
        user, password = given
        if not (_same(user, self.settings.user) & _same(password, self.settings.password or "")):
            raise AuthError("the EST username or password is wrong; check the enrollment object's "
                            "username and password", code="bad_credentials")

    def _renewal_certificate(self, request: web.Request) -> x509.Certificate | None:
        """The certificate being renewed (from the TLS handshake), or None when basic auth
        stands in for it."""
        old = peer_certificate(request)
        if old is None:
            if self.settings.user and not request.headers.get("Authorization"):
                raise AuthError("re-enrollment needs the current certificate as TLS client certificate "
                                "(or HTTP basic authentication)", code="authentication_required")
            self._check_password(request)
            return None
        reason = self.ca.issued_by_us(old)
        if reason:
            raise AuthError(f"{reason}; re-enroll with a certificate this CA issued, or enroll anew",
                            code="bad_client_certificate")
        return old

    # --- enrollment ---------------------------------------------------------------------

    def _enroll(self, csr: x509.CertificateSigningRequest, profile: CertificateProfile, *,
                renewal: bool, old: x509.Certificate | None = None) -> web.Response:
        if not profile.manual_approval:
            return self._issue(csr, profile, renewal=renewal, old=old)
        held, new = self.store.hold(profile.label, csr,
                                    reuse=lambda found: found.status != ISSUED or _still_answers(found))
        if new:
            log.info("request pending", request_id=held.id, profile=profile.label, subject=held.subject)
        if held.status == PENDING:
            return self._pending(held)
        if held.status == APPROVED:
            # Issue the request the operator approved, once, whichever server process is asked.
            held, issued = self.store.issue_approved(held.id, lambda approved: self.ca.issue(approved, profile))
            if issued:
                self._issued(held.certificate(), profile, renewal=renewal, request_id=held.id, old=old,
                             same_key=old is not None and old.public_key() == csr.public_key())
        # ISSUED now, or before: the answer the client lost.
        return _pkcs7(encode_certs_only([held.certificate()]))

    def _issue(self, csr: x509.CertificateSigningRequest, profile: CertificateProfile, *, renewal: bool,
               old: x509.Certificate | None = None) -> web.Response:
        """``old``: the certificate a re-enrollment presented, which the new one supersedes."""
        cert = self.ca.issue(csr, profile)
        self._issued(cert, profile, renewal=renewal, old=old,
                     same_key=old is not None and old.public_key() == csr.public_key())
        return _pkcs7(encode_certs_only([cert]))

    def _issued(self, cert: x509.Certificate, profile: CertificateProfile, *, renewal: bool, same_key: bool,
                request_id: str | None = None, old: x509.Certificate | None = None) -> None:
        log.info("certificate issued", profile=profile.label, subject=cert.subject.rfc4514_string(),
                 serial=format(cert.serial_number, "x"), renewal=renewal, request_id=request_id)
        if old is not None and self.ca.supersede(old.serial_number, same_key=same_key, profile=profile):
            log.info("superseded certificate revoked", profile=profile.label, serial=format(old.serial_number, "x"))

    def _pending(self, held: EnrollmentRequest) -> web.Response:
        retry = str(self.settings.retry_after)
        text = (f"request {held.id} waits for approval: certfleet ca approve --state-dir "
                f"{self.ca.paths.state_dir} {held.id}\n")
        return web.Response(status=202, text=text, headers={"Retry-After": retry})


def _still_answers(held: EnrollmentRequest) -> bool:
    """An issued request answers a repeat of itself (a client that lost the response), as long
    as the certificate is still valid."""
    cert = held.certificate()
    return cert is not None and cert.not_valid_after_utc > utcnow()


def _check_same_identity(csr: x509.CertificateSigningRequest, old: x509.Certificate) -> None:
    """RFC 7030 4.2.2: a renewal keeps the subject and subjectAltName of the certificate."""
    change = renewal_name_change(csr, old)
    if change:
        raise EstError(change, code="subject_mismatch")


async def _read_request(request: web.Request) -> bytes:
    headers = request.headers
    check_request_headers(headers.get("Content-Type"), headers.get("Content-Transfer-Encoding"))
    too_large = EstError(f"the request body exceeds {MAX_BODY_BYTES // 1024} KiB; a certificate request "
                         "is a few KiB", code="body_too_large")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(16384):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _pkcs7(body: bytes) -> web.Response:
    return web.Response(body=body,
                        headers={"Content-Type": CERTS_ONLY, "Content-Transfer-Encoding": "base64"})


def build_app(ca: CertificateAuthority, store: RequestStore, settings: EstSettings, *,
              admin_token: str) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_BODY_BYTES + 1)
    service = EstService(ca, store, settings)
    admin.add_routes(app, store, admin_token)
    app.router.add_route("*", "/{tail:.*}", service.dispatch)
    return app
