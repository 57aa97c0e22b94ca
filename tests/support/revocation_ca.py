"""A small CA made in the test that revokes certificates and answers for them: CRLs and OCSP
answers built with cryptography (good or tampered), and a loopback HTTP server (IPv4 or IPv6)
serving them and counting requests. Times come from the test's clock; P-256 keys throughout."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from tests.support.clock import START

#: One key for every end-entity certificate: key generation is not what these tests are about.
LEAF_KEY = ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


@dataclass
class TestCa:
    """A CA (root, or issued by ``parent``) that issues, revokes and answers for its certificates."""

    common_name: str = "Revocation Test CA"
    clock: Callable[[], datetime] = lambda: START
    parent: TestCa | None = None
    ca_flag: bool = True
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    #: serial -> (when, reason)
    revoked: dict[int, tuple[datetime, x509.ReasonFlags | None]] = field(default_factory=dict)
    issued: dict[int, x509.Certificate] = field(default_factory=dict)
    crl_lifetime: timedelta = timedelta(hours=1)
    #: None: OCSP answers without nextUpdate ("newer information is always available").
    ocsp_lifetime: timedelta | None = timedelta(minutes=10)
    #: Around when its certificates are valid (a day before to a year after; the CA's ten years).
    valid_from: datetime = START

    __test__ = False  # not a test class, whatever its name

    def __post_init__(self) -> None:
        name = _name(self.common_name)
        signer = self.parent.key if self.parent else self.key
        builder = (
            x509.CertificateBuilder().subject_name(name)
            .issuer_name(self.parent.cert.subject if self.parent else name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.valid_from - timedelta(days=1))
            .not_valid_after(self.valid_from + timedelta(days=3650))
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        )
        # Without the flag: basic constraints saying "not a CA" (a root with no such extension at
        # all passes as an old-style CA).
        builder = builder.add_extension(x509.BasicConstraints(ca=self.ca_flag, path_length=None), critical=True)
        self.cert = builder.sign(signer, hashes.SHA256())
        if self.parent:
            self.parent.issued[self.cert.serial_number] = self.cert

    # --- issuing ----------------------------------------------------------------------------

    def issue(self, common_name: str = "peer.example.com", *, crl_urls: Sequence[str] = (),
              ocsp_urls: Sequence[str] = (), ekus: Sequence[x509.ObjectIdentifier] | None = None,
              not_before: datetime | None = None, not_after: datetime | None = None,
              extensions: Sequence[x509.ExtensionType] = ()) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(LEAF_KEY.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or self.valid_from - timedelta(days=1))
            .not_valid_after(not_after or self.valid_from + timedelta(days=365))
        )
        if crl_urls:
            builder = builder.add_extension(x509.CRLDistributionPoints([
                x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(u)], relative_name=None,
                                       reasons=None, crl_issuer=None) for u in crl_urls]), critical=False)
        if ocsp_urls:
            builder = builder.add_extension(x509.AuthorityInformationAccess([
                x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u))
                for u in ocsp_urls]), critical=False)
        if ekus is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        self.issued[cert.serial_number] = cert
        return cert

    def ocsp_signer(self, *, ekus: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.OCSP_SIGNING,),
                    issuer_key: ec.EllipticCurvePrivateKey | None = None) -> tuple[x509.Certificate,
                                                                                  ec.EllipticCurvePrivateKey]:
        """A delegated OCSP responder certificate (issued by this CA unless ``issuer_key``)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(f"{self.common_name} OCSP")).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.valid_from - timedelta(days=1))
            .not_valid_after(self.valid_from + timedelta(days=365))
            .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
            .sign(issuer_key or self.key, hashes.SHA256())
        )
        return cert, key

    def revoke(self, cert: x509.Certificate, *, reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise,
               at: datetime | None = None) -> None:
        self.revoked[cert.serial_number] = (at or self.clock(), reason)

    # --- CRL ----------------------------------------------------------------------------------

    def crl(self, *, this_update: datetime | None = None, next_update: datetime | None = None,
            signer: ec.EllipticCurvePrivateKey | None = None, issuer_name: x509.Name | None = None,
            number: int = 1, extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
            encoding: serialization.Encoding = serialization.Encoding.DER) -> bytes:
        this_update = this_update or self.clock()
        builder = (
            x509.CertificateRevocationListBuilder().issuer_name(issuer_name or self.cert.subject)
            .last_update(this_update).next_update(next_update or this_update + self.crl_lifetime)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        for serial, (when, reason) in self.revoked.items():
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(signer or self.key, hashes.SHA256()).public_bytes(encoding)

    # --- OCSP ---------------------------------------------------------------------------------

    def ocsp(self, cert: x509.Certificate, *, nonce: bytes | None = None, this_update: datetime | None = None,
             next_update: datetime | None = None, responder: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
             | None = None, tampered: bool = False,
             status: ocsp.OCSPCertStatus | None = None, serial: int | None = None) -> bytes:
        """The responder's DER answer about ``cert`` (signed by the CA, or by ``responder``; a byte of
        the signature changed when ``tampered``)."""
        this_update = this_update or self.clock()
        if next_update is None and self.ocsp_lifetime is not None:
            next_update = this_update + self.ocsp_lifetime
        serial = cert.serial_number if serial is None else serial
        revoked = self.revoked.get(serial)
        if status is None:
            status = (ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
                      if serial in self.issued else ocsp.OCSPCertStatus.UNKNOWN)
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, self.cert, hashes.SHA1()).build()
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
            serial_number=serial, algorithm=hashes.SHA1(), cert_status=status,
            this_update=this_update, next_update=next_update,
            revocation_time=revoked[0] if status is ocsp.OCSPCertStatus.REVOKED and revoked else None,
            revocation_reason=revoked[1] if status is ocsp.OCSPCertStatus.REVOKED and revoked else None,
        )
        signing_cert, signing_key = responder or (self.cert, self.key)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signing_cert)
        if responder:
            builder = builder.certificates([signing_cert])
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        response = builder.sign(signing_key, hashes.SHA256())
        data = response.public_bytes(serialization.Encoding.DER)
        return _tamper(data, response.signature) if tampered else data

    def answer_ocsp(self, request_der: bytes) -> bytes:
        """What a responder answers to a DER request: about the serial asked, echoing its nonce."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(serialization.Encoding.DER)
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except x509.ExtensionNotFound:
            nonce = None
        cert = self.issued.get(request.serial_number)
        if cert is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
        return self.ocsp(cert, nonce=nonce)


def _tamper(data: bytes, signature: bytes) -> bytes:
    """``data`` with one byte inside ``signature`` changed (an ECDSA signature keeps its form)."""
    at = data.rindex(signature) + len(signature) - 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


# --- serving ----------------------------------------------------------------------------------------

@dataclass
class RevocationServer:
    """A plain HTTP server on loopback: GET paths answer ``crls[path]()``, POST paths
    ``responders[path](request)``; ``hits`` counts requests by path."""

    host: str
    port: int
    crls: dict[str, Callable[[], bytes]] = field(default_factory=dict)
    responders: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def serve_ca(self, ca: TestCa, *, crl_path: str = "/ca.crl", ocsp_path: str = "/ocsp") -> tuple[str, str]:
        """Serve the CA's current CRL and its OCSP responder; their URLs."""
        self.crls[crl_path] = ca.crl
        self.responders[ocsp_path] = ca.answer_ocsp
        return self.url(crl_path), self.url(ocsp_path)


@contextmanager
def revocation_server(host: str = "127.0.0.1") -> Iterator[RevocationServer]:
    state = RevocationServer(host=host, port=0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, body: bytes | None, media_type: str) -> None:
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            state.hits[self.path] += 1
            make = state.crls.get(self.path)
            self._answer(make() if make else None, "application/pkix-crl")

        def do_POST(self) -> None:  # noqa: N802
            state.hits[self.path] += 1
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            respond = state.responders.get(self.path)
            self._answer(respond(body) if respond else None, "application/ocsp-response")

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    server = Server((host, 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="revocation-server",
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
