"""How the CA simulator answers SCEP messages: the decisions between a decoded request and
the CertRep, with no HTTP in sight (that is :mod:`.scep_server`).

- PKCSReq needs a challenge password: the static one, or a one-time one (used up only when
  the request is accepted, so a bad request does not burn it). RenewalReq is signed by a
  valid certificate this CA issued, and needs no password; it keeps that certificate's
  subject and subjectAltNames (the certificate vouches for those names only), or is refused.
- A profile with manual approval holds the request (PENDING) until ``certfleet ca approve``;
  CertPoll (GetCertInitial) then gets the certificate.
- One transactionID, one certificate: a repeat or a poll gets the certificate already issued.
- Replays: a senderNonce belongs to one request; on another request it is refused
  (badRequest). A signingTime further than ``max_clock_skew`` from the CA's clock: badTime.
- GetCert answers certificates issued over SCEP; GetCRL answers the issuing CA's current CRL
  (the one ``--http-port`` serves, see :mod:`.crl`).
- A RenewalReq for a new key, under a profile that revokes superseded certificates, revokes
  the certificate it renews once the new one is issued.

Every refusal is a FAILURE CertRep with the failInfo and a failInfoText saying what to do.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from services.ca_sim.authority import CertificateAuthority
from services.ca_sim.challenges import ChallengeStore, challenge_db
from services.ca_sim.crl import CrlPublisher
from services.ca_sim.issuance import renewal_name_change
from services.ca_sim.pending import APPROVED, ISSUED, PENDING, RequestStore
from services.ca_sim.scep_dialects import DIALECTS, ScepDialect, get_dialect
from services.ca_sim.scep_identity import ScepIdentity, load_identity
from services.ca_sim.scep_transactions import ScepTransaction, TransactionStore, public_key_id, transactions_db
from shared.clock import utcnow
from shared.errors import ValidationError
from shared.logging import get_logger
from shared.protocols.scep import (
    FailInfo,
    MessageType,
    PkiRequest,
    PkiStatus,
    ScepDecodeError,
    build_cert_rep,
    encode_ca_certs,
    format_caps,
    parse_pki_message,
)

log = get_logger("ca.scep")


@dataclass(frozen=True, kw_only=True)
class ScepSettings:
    #: The static challenge password; one-time passwords are accepted besides it.
    challenge: str | None = None
    #: The profile that answers paths without a label.
    default_profile: str = "default"
    #: Speak SCEP through an RA certificate rather than the issuing CA.
    ra: bool = False
    max_clock_skew: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.default_profile not in DIALECTS:
            raise ValueError(f"no SCEP profile is labelled {self.default_profile!r}; known labels: "
                             f"{', '.join(sorted(DIALECTS))}")
        if self.challenge is not None and not self.challenge:
            raise ValueError("the SCEP challenge password must not be empty")

    def __repr__(self) -> str:  # the challenge never reaches a log line through a repr
        return (f"ScepSettings(challenge={'***' if self.challenge else None}, "
                f"default_profile={self.default_profile!r}, ra={self.ra})")


def _refuse(reason: str, fail_info: FailInfo = FailInfo.BAD_REQUEST) -> ScepDecodeError:
    return ScepDecodeError(reason, fail_info=fail_info)


class ScepService:
    def __init__(self, ca: CertificateAuthority, identity: ScepIdentity, settings: ScepSettings, *,
                 requests: RequestStore, transactions: TransactionStore, challenges: ChallengeStore,
                 crls: CrlPublisher | None = None, clock: Callable[[], datetime] = utcnow) -> None:
        self.ca = ca
        self.identity = identity
        self.settings = settings
        self.requests = requests
        self.transactions = transactions
        self.challenges = challenges
        self.crls = crls or CrlPublisher(ca)
        self.clock = clock

    def dialect(self, label: str | None) -> ScepDialect:
        return get_dialect(label or self.settings.default_profile)

    # --- GetCACaps, GetCACert -------------------------------------------------------------

    def capabilities(self, dialect: ScepDialect) -> str:
        return format_caps(dialect.capabilities)

    def ca_certificates(self) -> tuple[bytes, str]:
        return encode_ca_certs(self.identity.ca_certs)

    # --- PKIOperation ---------------------------------------------------------------------

    def pki_operation(self, der: bytes, dialect: ScepDialect) -> bytes:
        """The CertRep for a request. Raises :class:`ScepDecodeError` only when the message is
        too broken to answer with a CertRep (no transactionID or senderNonce to echo)."""
        now = self.clock()
        responder = self.identity.responder
        try:
            request = parse_pki_message(der, responder.key, responder.cert)
        except ScepDecodeError as exc:
            if exc.transaction_id is None or exc.sender_nonce is None:
                raise
            log.info("scep request refused", profile=dialect.label, transaction_id=exc.transaction_id,
                     fail_info=exc.fail_info.rfc_name, reason=exc.message)
            digest = exc.digest if exc.digest in dialect.digests else "sha256"
            return self._failure(exc.transaction_id, exc.sender_nonce, digest, exc, now)
        reply_digest = request.digest if request.digest in dialect.digests else "sha256"
        try:
            status, certs, crl = self._answer(request, dialect, now)
        except ScepDecodeError as exc:
            log.info("scep request refused", profile=dialect.label, transaction_id=request.transaction_id,
                     message_type=request.message_type.name, fail_info=exc.fail_info.rfc_name, reason=exc.message)
            return self._failure(request.transaction_id, request.sender_nonce, reply_digest, exc, now)
        log.info("scep request answered", profile=dialect.label, transaction_id=request.transaction_id,
                 message_type=request.message_type.name, status=status.name)
        return build_cert_rep(
            responder, transaction_id=request.transaction_id, recipient_nonce=request.sender_nonce,
            status=status, now=now, digest=reply_digest, certs=certs, crl=crl,
            recipient=request.signer_cert if status is PkiStatus.SUCCESS else None,
            cipher=request.cipher if status is PkiStatus.SUCCESS else None,
        )

    def _failure(self, transaction_id: str, nonce: bytes, digest: str, exc: ScepDecodeError, now: datetime) -> bytes:
        return build_cert_rep(self.identity.responder, transaction_id=transaction_id, recipient_nonce=nonce,
                              status=PkiStatus.FAILURE, fail_info=exc.fail_info, fail_info_text=exc.message,
                              digest=digest, now=now)

    def _answer(self, request: PkiRequest, dialect: ScepDialect, now: datetime
                ) -> tuple[PkiStatus, list[x509.Certificate], x509.CertificateRevocationList | None]:
        if not self.transactions.remember_nonce(request.sender_nonce, request.fingerprint(), now=now):
            raise _refuse("this senderNonce was already used on another request (a replay?); send a fresh nonce "
                          "with every message")
        if request.cipher not in dialect.ciphers:
            raise _refuse(f"content encryption {request.cipher.value} is not accepted by the {dialect.label} CA; "
                          f"its GetCACaps lists {', '.join(dialect.capabilities)}", FailInfo.BAD_ALG)
        if request.digest not in dialect.digests:
            raise _refuse(f"digest {request.digest} is not accepted by the {dialect.label} CA; its GetCACaps lists "
                          f"{', '.join(dialect.capabilities)}", FailInfo.BAD_ALG)
        if request.signing_time and abs(now - request.signing_time) > self.settings.max_clock_skew:
            raise _refuse(f"the message was signed at {request.signing_time.isoformat()}, too far from the CA's "
                          f"time {now.isoformat(timespec='seconds')}; set the device's clock", FailInfo.BAD_TIME)
        kind = request.message_type
        if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            return self._certificate(self._enroll(request, dialect, now), now)
        if kind is MessageType.CERT_POLL:
            return self._certificate(self._poll(request, dialect), now)
        issuer, serial = request.issuer_and_serial  # type: ignore[misc]
        if issuer != self.ca.issuing.subject:
            raise _refuse(f"this CA is {self.ca.issuing.subject.rfc4514_string()}, not "
                          f"{issuer.rfc4514_string()}", FailInfo.BAD_CERT_ID)
        if kind is MessageType.GET_CRL:
            return PkiStatus.SUCCESS, [], x509.load_der_x509_crl(self.crls.current(now=now).der)
        cert = self.transactions.certificate_by_serial(serial)
        if cert is None:
            raise _refuse(f"no certificate with serial {serial:x} was issued over SCEP", FailInfo.BAD_CERT_ID)
        return PkiStatus.SUCCESS, [cert], None

    # --- enrollment -----------------------------------------------------------------------

    def _enroll(self, request: PkiRequest, dialect: ScepDialect, now: datetime) -> ScepTransaction:
        csr = request.csr
        assert csr is not None
        renews = ""
        if request.message_type is MessageType.RENEWAL_REQ:
            old = request.signer_cert
            reason = self.ca.issued_by_us(old, now=now)
            if reason:
                raise _refuse(f"{reason}; sign a RenewalReq with a valid certificate this CA issued, or enroll "
                              "anew with PKCSReq and a challenge password")
            change = renewal_name_change(csr, old)
            if change:
                raise _refuse(change)
            renews = format(old.serial_number, "x")
        # One decision per transaction across server processes: a device that re-sends its
        # request while the first copy is still being answered (by this process or another)
        # waits here, then gets the same transaction, not a second certificate.
        with self.transactions.exclusive():
            held, new = self._transaction(request, dialect, renews, now)
        if new and not held.request_id:
            self._supersede(held, now)
        return held

    def _transaction(self, request: PkiRequest, dialect: ScepDialect, renews: str, now: datetime
                     ) -> tuple[ScepTransaction, bool]:
        """The transaction of an enrollment request, opened now if it is new (and whether it is)."""
        csr = request.csr
        assert csr is not None
        key_id = public_key_id(csr.public_key())
        held = self.transactions.find(dialect.label, request.transaction_id, renews=renews)
        if held is not None:
            if held.key_id != key_id:
                raise _refuse(f"transactionID {request.transaction_id} belongs to another key; use a new "
                              "transactionID for a new key")
            return held, False  # a repeat: the same answer as before
        password = request.challenge_password
        one_time = False
        if request.message_type is MessageType.PKCS_REQ:
            one_time = self._check_challenge(password, now)
        # Issue before anything is recorded, so a request the CA cannot sign burns no password.
        # (Under manual approval this is a dry run: the certificate is signed again on approval.)
        try:
            cert = self.ca.issue(csr, dialect.profile, now=now, record=not dialect.profile.manual_approval)
        except ValidationError as exc:
            raise _refuse(exc.message) from None
        if one_time and not self.challenges.consume(password or "", used_by=request.transaction_id, now=now):
            raise _refuse("the one-time challenge password was used up meanwhile; ask for a new one")
        request_id = None
        if dialect.profile.manual_approval:
            request_id = self.requests.submit(dialect.profile.label, csr, now=now).id
            log.info("scep request pending", request_id=request_id, profile=dialect.label,
                     subject=csr.subject.rfc4514_string())
        else:
            log.info("certificate issued", profile=dialect.label, subject=cert.subject.rfc4514_string(),
                     serial=format(cert.serial_number, "x"), renewal=bool(renews))
        held = self.transactions.create(
            label=dialect.label, transaction_id=request.transaction_id, renews=renews, key_id=key_id,
            signer_key_id=public_key_id(request.signer_cert.public_key()), subject=csr.subject.rfc4514_string(),
            request_id=request_id, cert=None if request_id else cert, now=now,
        )
        return held, True

    def _supersede(self, held: ScepTransaction, now: datetime) -> None:
        """A renewal's certificate is out: revoke the one it renews, if the profile says so and
        the key changed (a RenewalReq is signed with the old certificate's key)."""
        if held.renews and self.ca.supersede(int(held.renews, 16), same_key=held.key_id == held.signer_key_id,
                                             profile=get_dialect(held.label).profile, now=now):
            log.info("superseded certificate revoked", profile=held.label, serial=held.renews)

    def _check_challenge(self, password: str | None, now: datetime) -> bool:
        """Accept the static or a one-time password; True when it is a one-time one."""
        if not password:
            raise _refuse("the request carries no challenge password; put the enrollment object's challenge "
                          "password (or one from `certfleet ca challenge`) into the certificate request")
        static = self.settings.challenge
        if static and hmac.compare_digest(password.encode(), static.encode()):
            return False
        if self.challenges.is_valid(password, now=now):
            return True
        raise _refuse("the challenge password is wrong, expired or already used; check the enrollment object's "
                      "challenge password, or ask for a new one-time password")

    def _poll(self, request: PkiRequest, dialect: ScepDialect) -> ScepTransaction:
        held = self.transactions.find(dialect.label, request.transaction_id)
        if held is None:
            raise _refuse(f"no request with transactionID {request.transaction_id} is known to the {dialect.label} "
                          "CA; send the PKCSReq again", FailInfo.BAD_CERT_ID)
        _, subject = request.issuer_and_subject  # type: ignore[misc]
        if subject.rfc4514_string() != held.subject:
            raise _refuse(f"transaction {request.transaction_id} is for {held.subject!r}, not "
                          f"{subject.rfc4514_string()!r}", FailInfo.BAD_CERT_ID)
        if public_key_id(request.signer_cert.public_key()) not in (held.key_id, held.signer_key_id):
            raise _refuse("a poll must be signed with the key of the request it asks about")
        return held

    def _certificate(self, held: ScepTransaction, now: datetime
                     ) -> tuple[PkiStatus, list[x509.Certificate], x509.CertificateRevocationList | None]:
        """What a transaction has to show: its certificate, or PENDING, issuing once approved."""
        cert = held.certificate()
        if cert is None and held.request_id:
            waiting = self.requests.get(held.request_id)
            if waiting.status == PENDING:
                return PkiStatus.PENDING, [], None
            if waiting.status == ISSUED and waiting.certificate() is not None:
                cert = waiting.certificate()
            elif waiting.status == APPROVED:
                # Once, whichever server process is polled first.
                profile = get_dialect(held.label).profile
                waiting, issued = self.requests.issue_approved(
                    waiting.id, lambda approved: self.ca.issue(approved, profile, now=now), now=now)
                cert = waiting.certificate()
                if issued and cert is not None:
                    log.info("certificate issued", profile=held.label, subject=cert.subject.rfc4514_string(),
                             serial=format(cert.serial_number, "x"), request_id=waiting.id)
            if cert is not None:
                cert = self.transactions.record_certificate(held.id, cert, now=now).certificate()
                self._supersede(held, now)
        if cert is None:
            raise _refuse(f"transaction {held.transaction_id} has no certificate", FailInfo.BAD_CERT_ID)
        return PkiStatus.SUCCESS, [cert], None


def scep_service_for(ca: CertificateAuthority, settings: ScepSettings, *, requests: RequestStore,
                     crls: CrlPublisher | None = None) -> ScepService:
    """The SCEP service of a CA, with its stores in the CA's state directory."""
    return ScepService(
        ca, load_identity(ca, ra=settings.ra), settings, requests=requests,
        transactions=TransactionStore(transactions_db(ca.paths)), challenges=ChallengeStore(challenge_db(ca.paths)),
        crls=crls,
    )
