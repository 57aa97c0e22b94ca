"""The issuing CA's CRL (RFC 5280 5): built from the ledger's revocations, signed by the issuing
CA, with thisUpdate, nextUpdate, a CRL number and the authority key identifier; each entry has
its revocation date and, unless unspecified, its reason code.

:class:`CrlPublisher` hands out the current CRL and issues a new one, with the next number,
when it is asked for and either a revocation happened since (in any process sharing the state
directory) or half of the current one's life is over, so a relying party never holds one past
its nextUpdate for want of a newer one. The newest CRL is kept in the ledger: every server on
the state directory answers the same one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from services.ca_sim.authority import CertificateAuthority, _locked
from services.ca_sim.ledger import Ledger, Revocation, StoredCrl
from shared.clock import utcnow
from shared.logging import get_logger
from shared.pki import PrivateKey

log = get_logger("ca.crl")

#: The one issuing CA's name in the CRL's path: ``/crl/issuing.crl``.
CRL_LABEL = "issuing"
DEFAULT_VALIDITY = timedelta(hours=1)
#: A CRL is reissued once this share of its life is over.
REISSUE_AT = 0.5
#: The lock, in DIR/ca/, that makes one server process at a time build a CRL.
CRL_LOCK = "crl.lock"


@dataclass(frozen=True)
class PublishedCrl:
    number: int
    this_update: datetime
    next_update: datetime
    der: bytes


def build_crl(*, issuer: x509.Certificate, issuer_key: PrivateKey, revocations: Iterable[Revocation], number: int,
              this_update: datetime, next_update: datetime) -> bytes:
    """The DER CRL. The builder is given all entries at once: adding them one by one copies
    the list each time, which for 100,000 entries takes minutes."""
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    extensions = [
        x509.Extension(x509.AuthorityKeyIdentifier.oid, False,
                       x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)),
        x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
    ]
    entries = []
    for revocation in revocations:
        entry = x509.RevokedCertificateBuilder().serial_number(revocation.serial).revocation_date(
            revocation.revoked_at)
        if revocation.reason_flag is not None:
            entry = entry.add_extension(x509.CRLReason(revocation.reason_flag), critical=False)
        entries.append(entry.build())
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject, last_update=this_update, next_update=next_update, extensions=extensions,
        revoked_certificates=entries,
    )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class CrlPublisher:
    """The current CRL of a CA, reissued when out of date. Thread-safe; one build at a time."""

    def __init__(self, ca: CertificateAuthority, *, validity: timedelta = DEFAULT_VALIDITY,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if validity < timedelta(seconds=1):
            raise ValueError(f"a CRL must be valid for at least a second, not {validity}")
        if ca.ledger is None:
            raise ValueError("the CA keeps no ledger of what it issued and revoked")
        self.ca = ca
        self.ledger: Ledger = ca.ledger
        self.validity = timedelta(seconds=round(validity.total_seconds()))  # what the DER can say
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: PublishedCrl | None = None

    def current(self, *, now: datetime | None = None) -> PublishedCrl:
        now = now or self.clock()
        with self._lock:
            stored = self.ledger.stored_crl()
            if stored is None or self._out_of_date(stored, now):
                return self._reissue(now)
            if self._cached is None or self._cached.number != stored.number:
                der = self.ledger.stored_crl_der(stored.number)
                if der is None:  # replaced by another process meanwhile
                    return self._reissue(now)
                self._cached = PublishedCrl(stored.number, stored.this_update, stored.next_update, der)
            return self._cached

    def _reissue(self, now: datetime) -> PublishedCrl:
        """A new CRL, built by one server process at a time: one that waited for another finds
        that one's CRL stored, and answers it (CRL numbers only grow, whoever is asked)."""
        with _locked(self.ca.paths, CRL_LOCK):
            stored = self.ledger.stored_crl()
            if stored is not None and not self._out_of_date(stored, now):
                der = self.ledger.stored_crl_der(stored.number)
                if der is not None:
                    self._cached = PublishedCrl(stored.number, stored.this_update, stored.next_update, der)
                    return self._cached
            return self._issue(now)

    def _out_of_date(self, stored: StoredCrl, now: datetime) -> bool:
        life = stored.next_update - stored.this_update
        return (stored.generation != self.ledger.generation() or life != self.validity
                or now >= stored.this_update + life * REISSUE_AT or now < stored.this_update)

    def _issue(self, now: datetime) -> PublishedCrl:
        generation, revocations = self.ledger.revocations_at()
        number = self.ledger.next_crl_number()
        this_update = now.replace(microsecond=0)  # what the DER keeps
        next_update = this_update + self.validity
        der = build_crl(issuer=self.ca.issuing, issuer_key=self.ca.issuing_key, revocations=revocations,
                        number=number, this_update=this_update, next_update=next_update)
        self.ledger.store_crl(StoredCrl(number=number, generation=generation, this_update=this_update,
                                        next_update=next_update), der)
        log.info("crl issued", number=number, entries=len(revocations), next_update=next_update.isoformat())
        self._cached = PublishedCrl(number, this_update, next_update, der)
        return self._cached
