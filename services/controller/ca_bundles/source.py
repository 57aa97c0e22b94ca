"""Fetching the latest CA bundle from the bundle sources, and checking it.

The sources' TLS is verified with the installed bundle plus the bootstrap trust file (before any
bundle is installed, only the latter, or the system's CAs when neither exists). What the bundle
may be trusted for is decided by its signature, not by TLS: the manifest must verify with the
pinned bundle-signing certificate (see :mod:`shared.protocols.ca_bundle`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from cryptography import x509

from shared.errors import ConfigurationError
from shared.protocols.ca_bundle import MAX_ANSWER_BYTES, BundleError, CaBundle, read_answer
from shared.settings import Settings

LATEST_PATH = "ca-bundle/latest"
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Fetched:
    bundle: CaBundle
    source_url: str


def source_urls(settings: Settings) -> list[str]:
    urls = [url.strip() for url in settings.ca_bundle_urls.split(",") if url.strip()]
    if not urls:
        raise ConfigurationError("no CA bundle source is configured: set CERTFLEET_CA_BUNDLE_URLS to the "
                                 "https:// URL of one or more bundle sources", code="ca_bundle_source_missing")
    return urls


def load_signer(settings: Settings) -> x509.Certificate:
    if not settings.ca_bundle_signer:
        raise ConfigurationError("no bundle-signing certificate is pinned: set CERTFLEET_CA_BUNDLE_SIGNER to the "
                                 "PEM file of the certificate whose key signs the CA bundles",
                                 code="ca_bundle_signer_missing")
    try:
        return x509.load_pem_x509_certificate(Path(settings.ca_bundle_signer).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"CERTFLEET_CA_BUNDLE_SIGNER={settings.ca_bundle_signer!r} is not a readable PEM "
                                 f"certificate: {exc}", code="ca_bundle_signer_unreadable") from None


def source_tls(settings: Settings, installed_pem: str) -> ssl.SSLContext:
    """The TLS trust for reaching the bundle sources."""
    extra = ""
    if settings.ca_bundle_trust:
        try:
            extra = Path(settings.ca_bundle_trust).read_text()
        except OSError as exc:
            raise ConfigurationError(f"CERTFLEET_CA_BUNDLE_TRUST={settings.ca_bundle_trust!r} cannot be read: "
                                     f"{exc}", code="ca_bundle_trust_unreadable") from None
    trusted = installed_pem + extra
    if not trusted.strip():
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=trusted)


def fetch_latest(settings: Settings, *, installed_pem: str, now: datetime) -> Fetched:
    """The newest bundle of the first source that answers with a valid one. BundleError
    (``bundle_source_unreachable`` when none answers, else the check that failed)."""
    urls = source_urls(settings)
    signer = load_signer(settings)
    context = source_tls(settings, installed_pem)
    problems: list[str] = []
    last_error: BundleError | None = None
    for url in urls:
        target = url.rstrip("/") + "/" + LATEST_PATH
        try:
            body = _get(target, context)
        except httpx.HTTPError as exc:
            problems.append(f"{url}: {_reason(exc)}")
            continue
        try:
            return Fetched(bundle=read_answer(body, signer=signer, now=now), source_url=url)
        except BundleError as exc:
            last_error = BundleError(exc.code, f"the bundle from {url} was refused: {exc.message}")
            problems.append(f"{url}: {exc.message}")
    if last_error is not None:
        raise last_error
    raise BundleError("bundle_source_unreachable", "no CA bundle source answered: " + "; ".join(problems))


def _get(url: str, context: ssl.SSLContext) -> bytes:
    with httpx.Client(verify=context, timeout=TIMEOUT_SECONDS, follow_redirects=False) as client, \
            client.stream("GET", url) as response:
        if response.status_code != 200:
            raise httpx.HTTPStatusError(f"answered HTTP {response.status_code}", request=response.request,
                                        response=response)
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:  # bounded before it is parsed
                raise httpx.DecodingError(f"answered more than {MAX_ANSWER_BYTES} bytes")
        return bytes(body)


def _reason(exc: httpx.HTTPError) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(cause, ssl.SSLError):
        text = f"TLS: {cause.reason or cause}"
    return text
