"""What each imitated SCEP server advertises (GetCACaps) and accepts, by URL label.

Every certificate profile (see :mod:`.profiles`) speaks the modern dialect: AES and SHA-2,
as RFC 8894 asks. ``SHA-384`` is listed although SHA-256 is what clients pick, because
strongSwan 5.9.8 chooses SHA-256 + AES only when it sees it: its pki tests capability flags
by their index instead of their bit, so "AES" counts only when "SHA-384" is listed, and
"DES3" only when "AES" is. (So pki cannot speak 3DES to the legacy profile below, which
lists no AES; the project's own SCEP codec is that profile's test client.)

``legacy-des`` imitates an old CA (an IOS CA server of the 2000s, NDES before 2012): it
advertises DES3 and SHA-1 only, no AES, no SHA-2, and no POSTPKIOperation, so clients fall
back to GET. It accepts requests sealed with DES or 3DES and signed with SHA-1 (or MD5, the
default of clients that read no capabilities), refuses AES and SHA-2 with badAlg, and signs
its CertReps with the requester's digest. The certificates it issues are still SHA-256-signed:
cryptography refuses to sign certificates with SHA-1.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.ca_sim.profiles import DEFAULT, PROFILES, CertificateProfile
from shared.errors import NotFoundError
from shared.protocols.cms import ContentCipher

MODERN_CAPS = ("AES", "POSTPKIOperation", "Renewal", "SHA-256", "SHA-384", "SHA-512", "SCEPStandard")
LEGACY_CAPS = ("DES3", "SHA-1", "Renewal")
LEGACY_LABEL = "legacy-des"


@dataclass(frozen=True, kw_only=True)
class ScepDialect:
    label: str
    capabilities: tuple[str, ...]
    ciphers: frozenset[ContentCipher]
    digests: frozenset[str]
    #: How certificates are issued under this label (validity, EKU, manual approval).
    profile: CertificateProfile


def _modern(profile: CertificateProfile) -> ScepDialect:
    return ScepDialect(
        label=profile.label, capabilities=MODERN_CAPS, profile=profile,
        ciphers=frozenset({ContentCipher.AES128, ContentCipher.AES192, ContentCipher.AES256}),
        digests=frozenset({"sha256", "sha384", "sha512"}),
    )


DIALECTS: dict[str, ScepDialect] = {
    **{label: _modern(profile) for label, profile in PROFILES.items()},
    LEGACY_LABEL: ScepDialect(
        label=LEGACY_LABEL, capabilities=LEGACY_CAPS, profile=DEFAULT,
        ciphers=frozenset({ContentCipher.DES, ContentCipher.DES3}), digests=frozenset({"sha1", "md5"}),
    ),
}


def get_dialect(label: str) -> ScepDialect:
    try:
        return DIALECTS[label]
    except KeyError:
        raise NotFoundError(
            f"no SCEP profile is labelled {label!r}; known labels: {', '.join(sorted(DIALECTS))}",
            code="unknown_profile",
        ) from None
