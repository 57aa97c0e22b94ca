"""Certificate profiles: how each imitated CA server fills in what it issues.

A profile is what an EST label (``/.well-known/est/<label>/``) selects. The table imitates
the CA servers threat-defense devices meet in the field (a Microsoft 2012 CA, the local CA of an
ASA, the CA server of an IOS router), including their quirks: the Microsoft IPsec template's
EKU that threat-defense devices refuse, the duplicated template that fixes it, manual
approval, and a CA that revokes what a re-enrollment with a new key replaces. (No SHA-1
profile: cryptography refuses to sign with SHA-1.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from shared.errors import NotFoundError

#: "IP security IKE intermediate": what the Microsoft 2012 IPsec (Offline request) template issues.
IPSEC_IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")
#: "IP security end system": what a duplicated template set up for threat-defense devices issues.
IPSEC_END_SYSTEM = ObjectIdentifier("1.3.6.1.5.5.7.3.5")

#: RFC 7030 labels are one path segment; keep them to characters that need no escaping.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}
#: Key usages a profile may grant; "key_encipherment" only ever goes to RSA keys.
KEY_USAGES = frozenset({"digital_signature", "content_commitment", "key_encipherment", "key_agreement"})


@dataclass(frozen=True, kw_only=True)
class CertificateProfile:
    """An immutable issuing policy, validated on construction."""

    label: str
    description: str
    signature_hash: str = "sha256"
    validity_days: int = 365
    key_usage: frozenset[str] = frozenset({"digital_signature", "key_encipherment"})
    extended_key_usage: tuple[ObjectIdentifier, ...] = (
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    #: Requests wait (EST answers 202) until an operator approves them.
    manual_approval: bool = False
    #: A re-enrollment with a new key (EST simplereenroll with the old certificate, SCEP
    #: RenewalReq) revokes the certificate it replaces, reason superseded.
    revoke_superseded: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not LABEL.fullmatch(self.label):
            raise ValueError(f"profile label {self.label!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if self.signature_hash not in SIGNATURE_HASHES:
            raise ValueError(
                f"profile {self.label}: signature hash must be one of {sorted(SIGNATURE_HASHES)}"
            )
        if not isinstance(self.validity_days, int) or not 1 <= self.validity_days <= 3650:
            raise ValueError(f"profile {self.label}: validity must be 1 to 3650 days")
        usages = frozenset(self.key_usage)
        if not usages or not usages <= KEY_USAGES:
            raise ValueError(
                f"profile {self.label}: key usage must be a non-empty subset of {sorted(KEY_USAGES)}"
            )
        object.__setattr__(self, "key_usage", usages)
        ekus = tuple(self.extended_key_usage)
        if not all(isinstance(oid, ObjectIdentifier) for oid in ekus):
            raise TypeError(f"profile {self.label}: extended key usages must be ObjectIdentifier values")
        if len(set(ekus)) != len(ekus):
            raise ValueError(f"profile {self.label}: an extended key usage is listed twice")
        object.__setattr__(self, "extended_key_usage", ekus)

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return SIGNATURE_HASHES[self.signature_hash]()


DEFAULT = CertificateProfile(
    label="default",
    description="standard EST CA: SHA-256, one year, TLS server and client authentication",
)

PROFILES: dict[str, CertificateProfile] = {
    p.label: p
    for p in (
        DEFAULT,
        CertificateProfile(
            label="ms2012-ipsec",
            description="Microsoft 2012 CA, default IPsec (Offline request) template: issues "
            "'IP security IKE intermediate', which threat-defense devices refuse",
            validity_days=730,
            extended_key_usage=(IPSEC_IKE_INTERMEDIATE,),
        ),
        CertificateProfile(
            label="ms2012-endsystem",
            description="Microsoft 2012 CA, IPsec template duplicated to issue 'IP security end system' "
            "instead, which threat-defense devices accept",
            validity_days=730,
            extended_key_usage=(IPSEC_END_SYSTEM,),
        ),
        CertificateProfile(
            label="ms2012-manual",
            description="Microsoft 2012 CA whose template needs CA certificate manager approval",
            validity_days=730,
            manual_approval=True,
        ),
        CertificateProfile(
            label="asa",
            description="local CA of a Cisco ASA: SHA-256, one year, client authentication",
            extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        ),
        CertificateProfile(
            label="ios",
            description="CA server of a Cisco IOS router: SHA-256, one year, no extended key usage",
            extended_key_usage=(),
        ),
        CertificateProfile(
            label="revoke-superseded",
            description="standard EST CA set to revoke the certificate a re-enrollment with a new key "
            "replaces (reason superseded), as CAs with a 'revoke on renewal' policy do",
            revoke_superseded=True,
        ),
    )
}


def get_profile(label: str | None) -> CertificateProfile:
    """The profile for an EST label; no label means the default profile."""
    if not label:
        return DEFAULT
    try:
        return PROFILES[label]
    except KeyError:
        raise NotFoundError(
            f"no CA profile is labelled {label!r}; known labels: {', '.join(sorted(PROFILES))}",
            code="unknown_profile",
        ) from None

