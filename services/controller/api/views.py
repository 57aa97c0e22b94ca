"""Turning trustpoint and certificate rows into their public shapes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509

from services.controller.api.schemas.trustpoints import (
    CertificatePublic,
    CertificateSummary,
    TrustpointPublic,
    TrustpointSummary,
)
from shared.clock import utcnow
from shared.logging import get_logger
from shared.models import Certificate, Trustpoint
from shared.override_lookup import Applied
from shared.pki import describe
from shared.renewal import RENEWABLE

log = get_logger(__name__)

_TRUSTPOINT_FIELDS = tuple(
    name for name in TrustpointSummary.model_fields
    if name not in ("device_name", "identity_certificate", "ca_certificates", "renewal_warning")
)


def renewal_warning(trustpoint: Trustpoint, *, now: datetime) -> str | None:
    """What an operator must do about a due certificate certfleet does not renew itself."""
    due = trustpoint.renewal_due_at
    if due is None or due > now or trustpoint.enrollment_type in RENEWABLE:
        return None
    return (f"renewal_due: the identity certificate is due for renewal since {due:%Y-%m-%d %H:%M} UTC; "
            f"{trustpoint.enrollment_type} enrollment is renewed by an operator: re-enroll the trustpoint")


def _split(certificates: Iterable[Any]) -> tuple[Any | None, list[Any]]:
    identity, cas = None, []
    for cert in certificates:
        if cert.role == "identity":
            identity = identity or cert
        else:
            cas.append(cert)
    cas.sort(key=lambda c: c.chain_position)
    return identity, cas


def _summary(row: Any) -> CertificateSummary:
    return CertificateSummary.model_validate(row, from_attributes=True)


def trustpoint_summaries(rows: Sequence[Any], certificates: dict[Any, list[Any]], *, now: datetime
                         ) -> list[dict[str, Any]]:
    """The items of a trustpoint list as plain data, exactly as :class:`TrustpointSummary` shows
    them: its fields, in its order (a model built per trustpoint and per certificate, or the page
    validated again, cost a polled list a third of its CPU each; the rows come from the database,
    in the columns the model names). ``rows`` carry the summary's columns and ``device_name``;
    ``certificates`` are summary rows by trustpoint id."""
    if not rows:
        return []
    columns = _positions(rows[0], _ROW_FIELDS)
    certificate_columns: list[tuple[str, int]] = []
    items = []
    for row in rows:
        item: dict[str, Any] = {name: row[i] for name, i in columns}
        found = certificates.get(row.id, ())
        if found and not certificate_columns:
            certificate_columns = _positions(found[0], _CERTIFICATE_FIELDS)
        identity, cas = _split(found)
        item["identity_certificate"] = ({name: identity[i] for name, i in certificate_columns}
                                        if identity is not None else None)
        item["ca_certificates"] = [{name: c[i] for name, i in certificate_columns} for c in cas]
        item["renewal_warning"] = renewal_warning(row, now=now)
        items.append({name: item[name] for name in _SUMMARY_FIELDS})
    return items


#: The fields of a list item, in the model's order; those read straight from a list row.
_SUMMARY_FIELDS = tuple(TrustpointSummary.model_fields)
_ROW_FIELDS = tuple(name for name in _SUMMARY_FIELDS
                    if name not in ("identity_certificate", "ca_certificates", "renewal_warning"))
_CERTIFICATE_FIELDS = tuple(CertificateSummary.model_fields)


def _positions(row: Any, names: tuple[str, ...]) -> list[tuple[str, int]]:
    """Where each of ``names`` is in rows shaped like ``row``: read once a page, not once a row."""
    at = {name: i for i, name in enumerate(row._fields)}
    return [(name, at[name]) for name in names]


def certificate_public(cert: Certificate) -> CertificatePublic:
    summary = _summary(cert).model_dump()
    try:
        info = describe(x509.load_pem_x509_certificate(cert.pem.encode()))
    except ValueError:  # stored by a worker, so not expected; show what the row has
        log.warning("stored certificate does not parse", certificate_id=str(cert.id))
        return CertificatePublic(**summary, fingerprint_sha1="", key_usage=[], extended_key_usage=[],
                                 subject_alt_names=[], crl_urls=[], ocsp_urls=[], is_ca=cert.role == "ca",
                                 pem=cert.pem)
    parsed = {name: getattr(info, name) for name in CertificatePublic.model_fields if hasattr(info, name)}
    return CertificatePublic(**{**summary, **parsed}, pem=cert.pem)


def trustpoint_public(
    trustpoint: Trustpoint, *, device_name: str, certificates: Iterable[Certificate], now: datetime | None = None,
    applied: Applied | None = None,
) -> TrustpointPublic:
    """``applied``: the trustpoint's enrollment object as its domain gets it, to show an override."""
    identity, cas = _split(certificates)
    return TrustpointPublic(
        **{name: getattr(trustpoint, name) for name in _TRUSTPOINT_FIELDS},
        renewal_warning=renewal_warning(trustpoint, now=now or utcnow()),
        device_name=device_name,
        identity_certificate=certificate_public(identity) if identity else None,
        ca_certificates=[certificate_public(c) for c in cas],
        csr_pem=trustpoint.csr_pem,
        overridden_fields=applied.fields if applied is not None else [],
        override_domain_id=applied.override_domain_id if applied is not None else None,
    )
