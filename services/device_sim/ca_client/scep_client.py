"""The device's SCEP client (RFC 8894): the device talks to the CA itself, as a real one does.

One enrollment:

1. GetCACaps: what the CA speaks. The device uses the strongest content cipher and digest
   the CA offers; a CA offering only DES/3DES or SHA-1/MD5 is refused (``weak_crypto``)
   unless weak-crypto is enabled on the device;
2. GetCACert: the CA certificate, or the CA's chain and its RA certificates (a
   certificates-only SignedData); the chain, checked against the enrollment object's
   fingerprint when it has one (issuing CA or root), is installed: the CA status becomes
   available even when the identity certificate then fails. Requests are encrypted to the RA
   (its encryption certificate) or else the issuing CA; answers must be signed by the RA or a
   CA of the chain;
3. a new key pair made on the device, and a request for the trustpoint's subject and names:
   PKCSReq with the challenge password, signed by a self-signed certificate of the device's
   RSA key, or of a transient RSA key when the trustpoint's key is not RSA (the CA encrypts
   its answer to the signer, and SCEP's key transport is RSA); for a re-enrollment RenewalReq,
   signed by the current certificate and key, when the CA offers Renewal and issued the current
   RSA certificate for the same subject;
4. PENDING: the device asks again with CertPoll every retry period (the enrollment object's
   minutes, :attr:`CaClientSettings.scep_minute_seconds` long) up to its retry count. After
   :attr:`CaClientSettings.wait_seconds` it reports the identity certificate pending and keeps
   the request: the simulator goes on polling in the background, and enrolling again asks
   about the same request instead of filing a new one;
5. checks on what the CA issued, as the EST client makes them (:mod:`.issued`).

Private keys never leave the device: the request carries the public key only.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from services.device_sim.ca_client import issued
from services.device_sim.ca_client import trust as ca_trust
from services.device_sim.ca_client.connection import configured_url
from services.device_sim.ca_client.network import CaFailure
from services.device_sim.ca_client.scep_transport import ScepEndpoint, ScepSession
from services.device_sim.keypairs import generate_device_key
from services.device_sim.tasks import Enrolled, EnrollmentTask, HeldByCa, HeldRequest, Outcome, Refused, Slot
from shared.enrollment import EnrollmentParameters
from shared.enums import CertificateRole
from shared.errors import WeakCryptoError
from shared.pki import generate_private_key, subject_name
from shared.protocols import scep
from shared.protocols.csr import build_csr
from shared.protocols.scep import CertRep, ContentCipher, FailInfo, PkiStatus, Requester
from shared.weak_crypto import WEAK_HASHES, enforce, weak_certificate, weak_cipher

#: The enrollment object's defaults and bounds (as the management center offers them).
RETRY_PERIOD_MINUTES, RETRY_PERIODS = 1, range(1, 61)
RETRY_COUNT, RETRY_COUNTS = 10, range(0, 101)
#: Content ciphers by the names the weak-crypto policy and the operator know them by.
_CIPHER_NAMES = {ContentCipher.DES: ("des", "DES-CBC"), ContentCipher.DES3: ("tripledes", "3DES-CBC")}
_DIGEST_NAMES = {"md5": "MD5", "sha1": "SHA-1"}
#: What each failInfo most likely means for the operator.
_FAIL_HINTS = {
    FailInfo.BAD_ALG: "the CA does not accept the algorithms it advertised; check the CA's configuration",
    FailInfo.BAD_MESSAGE_CHECK: "the CA could not verify the request; check that the enrollment URL leads to "
                                "the CA whose certificate the device fetched",
    FailInfo.BAD_TIME: "the device's clock and the CA's differ too much; set the device's clock",
    FailInfo.BAD_CERT_ID: "the CA no longer knows the request; enroll the trustpoint again",
}


@dataclass(frozen=True, kw_only=True)
class ScepOptions:
    """The SCEP settings of a trustpoint's configuration (the enrollment object's fields)."""

    enrollment_url: str
    challenge: str = field(default="", repr=False)  # never in a log line through a repr
    fingerprint: str = ""
    retry_period_minutes: int = RETRY_PERIOD_MINUTES
    retry_count: int = RETRY_COUNT

    @classmethod
    def of(cls, params: EnrollmentParameters) -> ScepOptions:
        options: dict[str, Any] = params.options
        url = configured_url(options, trustpoint=params.name, protocol="SCEP", example="http://ca.example.com/")
        challenge, fp = options.get("challenge", ""), options.get("fingerprint", "")
        if not isinstance(challenge, str) or not isinstance(fp, str):
            raise CaFailure("the SCEP challenge password and fingerprint must be text",
                            code="invalid_scep_configuration")
        fp = ca_trust.configured_fingerprint(fp, code="invalid_scep_configuration")
        period = options.get("retry_period_minutes", RETRY_PERIOD_MINUTES)
        count = options.get("retry_count", RETRY_COUNT)
        if not _int_in(period, RETRY_PERIODS) or not _int_in(count, RETRY_COUNTS):
            raise CaFailure(f"the retry period must be 1 to 60 minutes and the retry count 0 to 100, not "
                            f"{period!r} and {count!r}", code="invalid_scep_configuration")
        return cls(enrollment_url=url, challenge=challenge, fingerprint=fp, retry_period_minutes=period,
                   retry_count=count)


def _int_in(value: object, allowed: range) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


@dataclass(frozen=True, kw_only=True)
class ScepHeldRequest(HeldRequest):
    """A SCEP request the CA holds: what a CertPoll about it needs. The CA wants polls signed by
    the key that signed the request, so the signer (and a transient signer's key) is kept."""

    transaction_id: str
    signer_key: rsa.RSAPrivateKey = field(repr=False)
    signer_cert: x509.Certificate = field(repr=False)


def enroll_scep(task: EnrollmentTask) -> Outcome:
    try:
        options = ScepOptions.of(task.params)
        endpoint = ScepEndpoint.parse(options.enrollment_url)
    except CaFailure as exc:
        return Refused(code=exc.code, message=exc.message)
    enrollment = _ScepEnrollment(task, options, endpoint)
    try:
        with ScepSession(endpoint, timeout=task.ca.timeout_seconds) as session:
            return enrollment.run(session)
    except CaFailure as exc:
        return Refused(code=exc.code, message=exc.message, retryable=exc.retryable, retry_after=exc.retry_after,
                       ca_certificates=enrollment.ca_slots)
    except WeakCryptoError as exc:
        return Refused(code=exc.code, message=exc.message, ca_certificates=enrollment.ca_slots)


@dataclass(frozen=True)
class _CaIdentity:
    """What GetCACert told: the CA chain (issuing CA first) and who speaks SCEP for it."""

    chain: list[x509.Certificate]
    #: The certificate requests are encrypted to: the RA's encryption certificate, or the issuing CA.
    recipient: x509.Certificate
    #: Who may sign the CA's answers: the RA's signing certificates, then the CAs.
    signers: list[x509.Certificate]


class _ScepEnrollment:
    """One enrollment's conversation with the CA."""

    def __init__(self, task: EnrollmentTask, options: ScepOptions, endpoint: ScepEndpoint) -> None:
        self.task, self.options, self.endpoint = task, options, endpoint
        #: The CA chain once GetCACert answered and it passed the checks: installed even if the
        #: identity certificate then fails.
        self.ca_slots: tuple[Slot, ...] = ()
        self._started = time.monotonic()
        #: One retry period, in seconds.
        self.interval = options.retry_period_minutes * task.ca.scep_minute_seconds

    def run(self, session: ScepSession) -> Outcome:
        caps = session.get_ca_caps()
        ca = self._ca_identity(session.get_ca_cert())
        self.ca_slots = tuple((CertificateRole.CA, i, c) for i, c in enumerate(ca.chain))
        cipher, digest = self._algorithms(caps)
        post = "POSTPKIOperation" in caps
        task = self.task
        held = task.held if isinstance(task.held, ScepHeldRequest) else None
        if held is not None and held.params != task.params:
            held = None  # made for another configuration: this one files a new request
        if held is not None:
            requester = Requester(key=held.signer_key, cert=held.signer_cert, recipient=ca.recipient,
                                  cipher=cipher, digest=digest)
            rep = self._poll(session, requester, ca, held, post)
        else:
            held, requester, message, nonce = self._new_request(ca, caps, cipher, digest)
            rep = self._exchange(session, requester, ca, message, nonce, held, post)
        deadline = self._started + task.ca.wait_seconds
        while rep.status is PkiStatus.PENDING:
            # Poll again while the retry count allows and the worker is still waiting for an answer.
            if (self._now() + timedelta(seconds=self.interval) > self._poll_until(held)
                    or time.monotonic() + self.interval > deadline):
                return HeldByCa(request=held, ca_certificates=self.ca_slots)
            time.sleep(self.interval)
            rep = self._poll(session, requester, ca, held, post)
        if rep.status is PkiStatus.FAILURE:
            raise self._refusal(rep, held)
        cert = issued.accept_issued(rep.certs, held.private_key, ca.chain[0], url=self.endpoint.url,
                                    weak_crypto=task.weak_crypto,
                                    ignore_ipsec_key_usage=issued.validation_setting(task, "ignore_ipsec_key_usage"))
        return Enrolled(private_key=held.private_key,
                        certificates=((CertificateRole.IDENTITY, 0, cert), *self.ca_slots))

    def _now(self) -> datetime:
        """The device's clock: the task's time plus what this enrollment has spent."""
        return self.task.now + timedelta(seconds=time.monotonic() - self._started)

    @staticmethod
    def _poll_until(held: HeldRequest) -> datetime:
        assert held.poll_until is not None
        return held.poll_until

    # --- the CA certificate ---------------------------------------------------------------------

    def _ca_identity(self, certs: list[x509.Certificate]) -> _CaIdentity:
        """The CA chain and the RA certificates among what GetCACert served, in whatever order
        (a certificates-only SignedData is a SET). Trust comes from this answer alone: the
        fingerprint pins one CA of the chain, each link of the chain must verify, and an RA
        counts only when a CA of the chain issued it."""
        url = self.endpoint.url
        cas = [c for c in certs if _is_ca(c)]
        if not cas and issued.validation_setting(self.task, "skip_ca_flag_check"):
            # CA certificates made without the CA flag: those that issued another one served, or
            # are self-signed, or the one certificate served.
            cas = [c for c in certs if c.subject == c.issuer or len(certs) == 1
                   or any(o is not c and ca_trust.issued_by(o, c) for o in certs)]
        ras = [c for c in certs if c not in cas]
        try:
            chain = ca_trust.order_ca_chain(cas)
        except ValueError as exc:
            hint = ("; its certificates have no CA flag in their basic constraints: have the CA certificate issued "
                    "with it, or set the enrollment object's skip_ca_flag_check") if certs and not cas else ""
            raise CaFailure(f"CA at {url} answered GetCACert with no usable CA certificate: {exc}{hint}",
                            code="ca_bad_response") from None
        if self.options.fingerprint and ca_trust.pinned_certificate(chain, self.options.fingerprint) is None:
            fp = self.options.fingerprint
            served = "; ".join(f"{c.subject.rfc4514_string()} {ca_trust.fingerprint(c, length=len(fp))}"
                               for c in chain)
            raise CaFailure(
                f"CA at {url}: the CA certificate it serves does not match the enrollment object's "
                f"fingerprint {fp} (it serves {served}); correct the enrollment object's fingerprint, or "
                "check that the enrollment URL leads to the right CA",
                code="ca_fingerprint_mismatch",
            )
        for ra in ras:
            if not any(ca_trust.issued_by(ra, ca) for ca in chain):
                raise CaFailure(
                    f"CA at {url} answered GetCACert with an RA certificate ({ra.subject.rfc4514_string()}) that "
                    "none of its CA certificates issued; check the RA configuration of the CA",
                    code="ca_bad_response",
                )
        for cert in (*chain, *ras):
            enforce(weak_certificate(cert), weak_crypto_enabled=self.task.weak_crypto)
        # An RA may have one certificate for both jobs or one for each (told apart by key usage);
        # without an RA that may encrypt, the issuing CA does.
        encrypting = sorted((c for c in ras if _allows(c, "key_encipherment")),
                            key=lambda c: not isinstance(c.public_key(), rsa.RSAPublicKey))
        recipient = encrypting[0] if encrypting else chain[0]
        if not isinstance(recipient.public_key(), rsa.RSAPublicKey):
            raise CaFailure(
                f"CA at {url} speaks SCEP with a certificate that has no RSA key "
                f"({recipient.subject.rfc4514_string()}); SCEP encrypts requests with RSA, so the CA "
                "needs an RSA certificate or an RSA registration authority (RA)",
                code="ca_unsupported",
            )
        signers = [c for c in ras if _allows(c, "digital_signature")] + chain
        return _CaIdentity(chain=chain, recipient=recipient, signers=signers)

    # --- algorithms -----------------------------------------------------------------------------

    def _algorithms(self, caps: frozenset[str]) -> tuple[ContentCipher, str]:
        """The strongest cipher and digest the CA offers; weak ones only with weak-crypto enabled."""
        cipher, digest = scep.preferred_algorithms(caps)
        weak = []
        if cipher in _CIPHER_NAMES:
            weak.append(weak_cipher(*_CIPHER_NAMES[cipher]))
        if issubclass(scep.DIGESTS[digest], WEAK_HASHES):
            weak.append(_DIGEST_NAMES.get(digest, digest))
        names = [w for w in weak if w]
        if names:
            offered = ", ".join(sorted(caps)) or "nothing (no GetCACaps)"
            enforce(f"{' and '.join(names)} (the SCEP CA at {self.endpoint.url} offers nothing stronger; its "
                    f"GetCACaps lists {offered})", weak_crypto_enabled=self.task.weak_crypto)
        return cipher, digest

    # --- requests -------------------------------------------------------------------------------

    def _new_request(self, ca: _CaIdentity, caps: frozenset[str], cipher: ContentCipher, digest: str
                     ) -> tuple[ScepHeldRequest, Requester, bytes, bytes]:
        task, now = self.task, self._now()
        renewing = issued.renewal_identity(task, ca.chain[0]) if "Renewal" in caps else None
        if renewing is not None and not isinstance(renewing.private_key, rsa.RSAPrivateKey):
            renewing = None  # a RenewalReq is signed by the current key, and SCEP needs RSA for that
        key = generate_device_key(task.params, weak_crypto=task.weak_crypto)
        password = "" if renewing is not None else self.options.challenge
        csr = build_csr(key, task.params, task.device, challenge_password=password)
        if renewing is not None:
            signer_key, signer_cert = renewing.private_key, renewing.certificate
        else:
            signer_key = key if isinstance(key, rsa.RSAPrivateKey) else _transient_rsa_key()
            signer_cert = scep.self_signed_signer(signer_key, subject_name(task.params, task.device), now=now)
        assert isinstance(signer_key, rsa.RSAPrivateKey)
        held = ScepHeldRequest(
            params=task.params, private_key=key, csr=csr, renewal=renewing is not None,
            retry_after=self.interval, first_asked_at=now,
            # Half a period of slack: the last poll must not miss its turn by a few milliseconds.
            poll_until=now + timedelta(seconds=self.interval * (self.options.retry_count + 0.5)),
            transaction_id=scep.transaction_id_for(key.public_key()), signer_key=signer_key,
            signer_cert=signer_cert,
        )
        requester = Requester(key=signer_key, cert=signer_cert, recipient=ca.recipient, cipher=cipher,
                              digest=digest)
        build = scep.build_renewal_req if held.renewal else scep.build_pkcs_req
        nonce = scep.new_nonce()
        message = build(requester, csr, transaction_id=held.transaction_id, sender_nonce=nonce, now=now)
        return held, requester, message, nonce

    def _poll(self, session: ScepSession, requester: Requester, ca: _CaIdentity, held: ScepHeldRequest,
              post: bool) -> CertRep:
        nonce = scep.new_nonce()
        message = scep.build_cert_poll(requester, issuer=ca.chain[0].subject, subject=held.csr.subject,
                                       transaction_id=held.transaction_id, sender_nonce=nonce,
                                       now=self._now())
        return self._exchange(session, requester, ca, message, nonce, held, post)

    def _exchange(self, session: ScepSession, requester: Requester, ca: _CaIdentity, message: bytes,
                  nonce: bytes, held: ScepHeldRequest, post: bool) -> CertRep:
        """Send ``message``; the CA's CertRep, checked to answer it (transaction, nonce, signer)."""
        answer = session.pki_operation(message, post=post)
        try:
            return scep.parse_cert_rep(answer, requester, signers=ca.signers,
                                       transaction_id=held.transaction_id, sender_nonce=nonce)
        except scep.ScepDecodeError as exc:
            raise CaFailure(f"CA at {self.endpoint.url} sent an unusable SCEP answer: {exc.message}",
                            code="ca_bad_response") from None

    def _refusal(self, rep: CertRep, held: ScepHeldRequest) -> CaFailure:
        """A FAILURE CertRep as the operator should read it."""
        operation = "RenewalReq" if held.renewal else "PKCSReq"
        fail = rep.fail_info.rfc_name if rep.fail_info is not None else "no failInfo"
        said = f" (the CA says: {rep.fail_info_text})" if rep.fail_info_text else ""
        if rep.fail_info in (FailInfo.BAD_REQUEST, None):
            if "challenge password" in said:
                hint = "the CA names the cause"
            elif held.renewal:
                hint = "the CA did not accept the renewal; enroll the trustpoint anew"
            elif self.options.challenge:
                hint = ("check the enrollment object's challenge password (a one-time password from the "
                        "CA works only once)")
            else:
                hint = "the enrollment object has no challenge password: set the one the CA expects"
        else:
            hint = _FAIL_HINTS[rep.fail_info]
        return CaFailure(f"CA at {self.endpoint.url} refused the {operation}: {fail}{said}; {hint}",
                         code="ca_rejected")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return cert.issuer == cert.subject  # an old self-signed root without extensions


def _allows(cert: x509.Certificate, usage: str) -> bool:
    """Whether the certificate's key usage allows ``usage`` (no KeyUsage extension: any)."""
    try:
        return getattr(cert.extensions.get_extension_for_class(x509.KeyUsage).value, usage)
    except x509.ExtensionNotFound:
        return True


@functools.cache
def _transient_rsa_key() -> rsa.RSAPrivateKey:
    """RFC 8894 lets a requester whose key cannot do RSA key transport sign with a throw-away RSA
    key; the CA then encrypts its answer to that key. It never leaves the simulator either.

    One key serves every simulated device of the process: making an RSA-2048 key costs about as
    much CPU as the rest of a SCEP enrollment, and this key only receives the CA's answer (the
    transaction is named by the device's own key, the request signed anew per device)."""
    key = generate_private_key("rsa", 2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key
