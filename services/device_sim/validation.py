"""How a device validates a peer's certificate with a trustpoint's CA, as it does for a VPN
peer: the peer's chain must lead to one of the trustpoint's CA certificates, the trustpoint
must be allowed to validate peers of that use (``validation_usage``), the peer's key usage must
fit it, and the CA must not have revoked the certificate, asked as the trustpoint's revocation
settings say (CRL, OCSP, their order, ``valid_if_unreachable``).

The settings come with the trustpoint's configuration in ``options["validation"]``; a trustpoint
configured without them (a self-signed one) validates with :data:`DEFAULTS`. The answer is a
:class:`~shared.device_api.PeerValidation`: ``valid``, ``revoked``, ``unknown`` (no revocation
source could answer) or ``invalid`` (the chain, a date, a flag or a usage is wrong), with a
reason code and a detail saying what to change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.device_sim.ca_client.ipsec_eku import check_ipsec_eku
from shared.certificate_import import has_ca_flag
from shared.chains import signed_by
from shared.device_api import PeerValidation, PeerValidationRequest
from shared.errors import ValidationError
from shared.pki import load_certificates
from shared.revocation_fetch import RevocationChecker

USAGES = ("ipsec_client", "ssl_client", "ssl_server")
REVOCATION_ORDERS = ("crl_first", "ocsp_first")
#: What a trustpoint validates with when its configuration names no validation settings.
DEFAULTS: dict[str, Any] = {
    "revocation_crl": False, "crl_use_distribution_point": True, "crl_urls": [], "revocation_ocsp": False,
    "ocsp_url": "", "revocation_order": "crl_first", "valid_if_unreachable": False,
    "validation_usage": ["ipsec_client", "ssl_client"], "skip_ca_flag_check": False,
    "ignore_ipsec_key_usage": False,
}
_BOOLS = ("revocation_crl", "crl_use_distribution_point", "revocation_ocsp", "valid_if_unreachable",
          "skip_ca_flag_check", "ignore_ipsec_key_usage")
#: A peer request: a certificate and a few intermediates in PEM fit well within.
MAX_BODY_BYTES = 64 * 1024
#: CA certificates between a peer and the trustpoint's CA, at most.
MAX_INTERMEDIATES = 8
#: Which extended key usage each use needs when the peer's certificate restricts it.
_TLS_USAGE = {"ssl_client": ("clientAuth", ExtendedKeyUsageOID.CLIENT_AUTH),
              "ssl_server": ("serverAuth", ExtendedKeyUsageOID.SERVER_AUTH)}


def check_settings(value: object) -> dict[str, Any]:
    """``options["validation"]`` as a device takes it; ValidationError for a malformed one."""
    if not isinstance(value, dict):
        raise _config("options.validation must be an object of validation settings")
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        raise _config(f"unknown validation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    for key in _BOOLS:
        if key in value and not isinstance(value[key], bool):
            raise _config(f"options.validation.{key} must be true or false, not {value[key]!r}")
    urls = value.get("crl_urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _config("options.validation.crl_urls must be a list of URLs")
    if not isinstance(value.get("ocsp_url", "") or "", str):
        raise _config("options.validation.ocsp_url must be a URL")
    if value.get("revocation_order", "crl_first") not in REVOCATION_ORDERS:
        raise _config(f"options.validation.revocation_order must be one of {', '.join(REVOCATION_ORDERS)}")
    usage = value.get("validation_usage", DEFAULTS["validation_usage"])
    if not isinstance(usage, list) or not set(usage) <= set(USAGES):
        raise _config(f"options.validation.validation_usage must list some of {', '.join(USAGES)}")
    return {**DEFAULTS, **value}


def settings_of(options: Mapping[str, Any]) -> dict[str, Any]:
    """The validation settings of a trustpoint's configuration options."""
    value = options.get("validation")
    return {**DEFAULTS, **value} if isinstance(value, dict) else dict(DEFAULTS)


def _config(message: str) -> ValidationError:
    return ValidationError(message, code="invalid_configuration")


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def validate_peer(request: PeerValidationRequest, *, trustpoint: str, ca_pems: Sequence[str],
                  settings: Mapping[str, Any], checker: RevocationChecker, now: datetime) -> PeerValidation:
    """The verdict on the peer of ``request`` for the trustpoint named ``trustpoint``, whose CA
    certificates are ``ca_pems``. ValidationError (422) for a request without a readable
    certificate; everything about the certificate itself is in the verdict."""
    peer, intermediates = _peer_chain(request)
    anchors = [cert for pem in ca_pems for cert in load_certificates(pem)]
    try:
        _check_usage(request.usage, peer, trustpoint=trustpoint, settings=settings)
        path = _build_path(peer, intermediates, anchors, now=now, skip_ca_flag=bool(settings["skip_ca_flag_check"]))
    except _Invalid as exc:
        return PeerValidation(verdict="invalid", reason=exc.reason, detail=exc.detail)
    return _revocation_verdict(path, settings=settings, checker=checker)


def _peer_chain(request: PeerValidationRequest) -> tuple[x509.Certificate, list[x509.Certificate]]:
    certs = load_certificates(request.certificate_pem)
    if not certs:
        raise ValidationError("certificate_pem holds no certificate; send the peer's certificate in PEM",
                              code="invalid_certificate")
    chain = list(certs[1:])
    if request.chain_pem and request.chain_pem.strip():
        chain += load_certificates(request.chain_pem)
    if len(chain) > MAX_INTERMEDIATES:
        raise ValidationError(f"the peer's chain has {len(chain)} certificates; at most {MAX_INTERMEDIATES} are "
                              "read", code="chain_too_long")
    return certs[0], chain


# --- usage ------------------------------------------------------------------------------------

def _check_usage(usage: str | None, peer: x509.Certificate, *, trustpoint: str, settings: Mapping[str, Any]) -> None:
    if usage is None:
        return
    allowed = list(settings["validation_usage"])
    if usage not in allowed:
        raise _Invalid("usage_not_allowed", (
            f"trustpoint {trustpoint} may not validate {usage} peers: its enrollment object's validation usage "
            f"(validation_usage) allows {', '.join(allowed) or 'none'}; add {usage} to it"))
    if usage == "ipsec_client":
        problem = None if settings["ignore_ipsec_key_usage"] else check_ipsec_eku(peer)
        if problem:
            raise _Invalid("ipsec_eku_rejected", problem)
        return
    try:
        ekus = list(peer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return
    label, wanted = _TLS_USAGE[usage]
    if wanted not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
        raise _Invalid("key_usage_mismatch", (
            f"{_name(peer)} is not for {usage}: its extended key usage lacks {label} ({wanted.dotted_string})"))


# --- the chain --------------------------------------------------------------------------------

def _build_path(peer: x509.Certificate, intermediates: list[x509.Certificate], anchors: list[x509.Certificate],
                *, now: datetime, skip_ca_flag: bool) -> list[x509.Certificate]:
    """peer, the intermediates it needs, and the trustpoint CA certificate that ends the chain."""
    path = [peer]
    current = peer
    for _ in range(MAX_INTERMEDIATES + 1):
        _check_dates(current, now)
        anchor = next((a for a in anchors if signed_by(current, a)), None)
        if anchor is not None:
            _check_dates(anchor, now)
            if not skip_ca_flag and not has_ca_flag(anchor):
                raise _Invalid("ca_flag_missing", (
                    f"the trustpoint's CA certificate {_name(anchor)} has no CA flag in its basic constraints, so the "
                    "device does not trust what it signed; use a proper CA certificate, or set the enrollment "
                    "object's skip_ca_flag_check"))
            return [*path, anchor]
        issuer = next((c for c in intermediates if c not in path and signed_by(current, c)), None)
        if issuer is None:
            names = "; ".join(_name(a) for a in anchors)
            raise _Invalid("untrusted_chain", (
                f"{_name(current)} (issuer {current.issuer.rfc4514_string()}) does not chain to the trustpoint's CA "
                f"certificate ({names}); send the intermediate CA certificates in chain_pem, or validate with the "
                "trustpoint of the CA that issued it"))
        if not has_ca_flag(issuer):
            raise _Invalid("not_a_ca_certificate", (
                f"{_name(issuer)} in the peer's chain is not a CA certificate (no CA flag in its basic constraints)"))
        path.append(issuer)
        current = issuer
    raise _Invalid("untrusted_chain", f"the peer's chain is longer than {MAX_INTERMEDIATES} CA certificates")


def _check_dates(cert: x509.Certificate, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise _Invalid("certificate_not_yet_valid", (
            f"{_name(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"))
    if now > cert.not_valid_after_utc:
        raise _Invalid("certificate_expired", f"{_name(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(a certificate with an empty subject)"


# --- revocation -------------------------------------------------------------------------------

def _revocation_verdict(path: list[x509.Certificate], *, settings: Mapping[str, Any], checker: RevocationChecker
                        ) -> PeerValidation:
    """Every certificate of the chain below the trustpoint's CA, asked about with its issuer."""
    answers = [checker.check(cert, issuer, settings) for cert, issuer in zip(path, path[1:], strict=False)]
    chained = f"{_name(path[0])} chains to the trustpoint's CA certificate {_name(path[-1])}"
    for cert, answer in zip(path, answers, strict=False):
        if answer.status == "revoked":
            which = "" if cert is path[0] else f" (its intermediate CA {_name(cert)})"
            return PeerValidation(verdict="revoked", reason=answer.reason, revoked_at=answer.revoked_at,
                                  source=answer.source, detail=f"{answer.detail}{which}")
    for answer in answers:
        if answer.status == "unknown":
            return PeerValidation(verdict="unknown", reason=answer.reason, source=answer.source,
                                  detail=f"{chained}, but its revocation status is unknown: {answer.detail}")
    leaf = answers[0]
    assumed = next((a for a in answers if a.assumed_good), None)
    shown = assumed or leaf
    return PeerValidation(verdict="valid", reason=shown.reason, source=None if assumed else leaf.source,
                          detail=f"{chained}; {shown.detail}")
