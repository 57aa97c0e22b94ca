"""Asking CAs about revocation: fetching CRLs and OCSP answers over plain HTTP, caching them,
and applying a trustpoint's revocation settings. The answers themselves are read by
:mod:`shared.protocols.revocation`.

One :class:`RevocationChecker` serves a whole process (a device simulator, a revocation scan)
and is thread-safe. It keeps:

- each CRL by URL until its nextUpdate, parsed and verified once per issuer, so ten thousand
  checks against one CA fetch its CRL once;
- each OCSP answer by (issuer key hash, serial) until its nextUpdate (an answer without one is
  not kept: the responder says newer information is always available);
- for a short while (``failure_hold_seconds``), that a server could not be reached or sent
  nothing usable, so a dead server costs one timeout, not one per check.

Settings (a trustpoint's ``options["validation"]``, as :func:`RevocationChecker.check` takes
them): ``revocation_crl``, ``crl_use_distribution_point``, ``crl_urls``, ``revocation_ocsp``,
``ocsp_url`` (overrides the certificate's AIA), ``revocation_order`` ("crl_first" or
"ocsp_first"; the other is asked when the first cannot answer) and ``valid_if_unreachable``.
URLs must be ``http://`` (IPv6 literals in brackets): revocation data is signed, and fetching it
over TLS would need revocation checking of its own.
"""

from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from shared.clock import utcnow
from shared.protocols import revocation as rev
from shared.protocols.revocation import CrlSnapshot, RevocationAnswer, UnusableData

MAX_CRL_BYTES = 10 * 1024 * 1024
MAX_OCSP_BYTES = 64 * 1024
DEFAULT_TIMEOUT_SECONDS = 3.0
DEFAULT_FAILURE_HOLD_SECONDS = 30.0
#: URLs tried per method and certificate: a certificate listing many should not stall a check.
MAX_URLS = 4
#: OCSP answers kept at most (the oldest go first): a scan of a large fleet keeps them all.
MAX_OCSP_ENTRIES = 200_000
_STRIPES = 64


class _FetchFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class _CrlEntry:
    crl: x509.CertificateRevocationList
    #: Checked against each issuer that asked (by issuer key hash): a snapshot, or why not.
    verified: dict[bytes, CrlSnapshot | UnusableData]


def crl_urls(cert: x509.Certificate, settings: Mapping[str, Any]) -> list[str]:
    """Where the CRL for ``cert`` is: its distribution points (unless the settings say not to
    use them), then the static URLs, each once."""
    urls: list[str] = []
    if settings.get("crl_use_distribution_point", True):
        try:
            points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except (x509.ExtensionNotFound, ValueError):
            points = x509.CRLDistributionPoints([])
        for point in points:
            urls += [n.value for n in point.full_name or () if isinstance(n, x509.UniformResourceIdentifier)]
    urls += [u for u in settings.get("crl_urls") or () if isinstance(u, str)]
    return list(dict.fromkeys(urls))


def ocsp_urls(cert: x509.Certificate, settings: Mapping[str, Any]) -> list[str]:
    """The OCSP responder to ask: the settings' URL when set, else the certificate's AIA ones."""
    override = settings.get("ocsp_url")
    if isinstance(override, str) and override:
        return [override]
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return list(dict.fromkeys(
        d.access_location.value for d in access
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ))


class RevocationChecker:
    """Revocation answers for certificates, with the caches a busy process needs.

    ``clock`` decides freshness (inject one in tests); ``transport`` replaces the network
    (httpx's); ``nonce`` makes the OCSP nonce (None: requests without one).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = utcnow,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
        max_crl_bytes: int = MAX_CRL_BYTES,
        max_ocsp_bytes: int = MAX_OCSP_BYTES,
        failure_hold_seconds: float = DEFAULT_FAILURE_HOLD_SECONDS,
        nonce: Callable[[], bytes] | None = lambda: os.urandom(16),
        max_ocsp_entries: int = MAX_OCSP_ENTRIES,
    ) -> None:
        self.clock = clock
        self.timeout_seconds = timeout_seconds
        self.max_crl_bytes, self.max_ocsp_bytes = max_crl_bytes, max_ocsp_bytes
        self.failure_hold = timedelta(seconds=failure_hold_seconds)
        self._nonce = nonce
        self._max_ocsp_entries = max_ocsp_entries
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds), transport=transport, follow_redirects=False,
            # Revocation servers are reached directly, never through a proxy the environment names.
            trust_env=False, limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )
        self._crls: dict[str, _CrlEntry] = {}
        self._ocsp: OrderedDict[tuple[bytes, int], RevocationAnswer] = OrderedDict()
        #: URL -> (until when, the answer to give meanwhile).
        self._failures: dict[str, tuple[datetime, RevocationAnswer]] = {}
        self._guard = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        #: Requests sent, by URL: what tests and benchmarks count.
        self.fetches: Counter[str] = Counter()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RevocationChecker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def forget(self) -> None:
        """Drop every cached CRL, OCSP answer and failure."""
        with self._guard:
            self._crls.clear()
            self._ocsp.clear()
            self._failures.clear()

    # --- the trustpoint's settings ----------------------------------------------------------

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, settings: Mapping[str, Any]
              ) -> RevocationAnswer:
        """Whether ``cert`` (issued by ``issuer``) is revoked, as the settings say to find out.

        Off (neither CRL nor OCSP): good with reason ``not_checked``. The first method that can
        answer (good or revoked) decides; when none can, the answer is unknown with each
        method's detail, or good with ``assumed_good`` when ``valid_if_unreachable`` is set.
        """
        methods = [m for m, on in (("crl", settings.get("revocation_crl")), ("ocsp", settings.get("revocation_ocsp")))
                   if on]
        if settings.get("revocation_order") == "ocsp_first":
            methods.reverse()
        if not methods:
            return RevocationAnswer(status="good", source=None, reason="not_checked",
                                    detail="revocation checking is off for this trustpoint")
        failed: list[RevocationAnswer] = []
        for method in methods:
            if method == "crl":
                answer = self.check_crl(cert, issuer, crl_urls(cert, settings))
            else:
                answer = self.check_ocsp(cert, issuer, ocsp_urls(cert, settings))
            if answer.status != "unknown":
                return answer
            failed.append(answer)
        first = failed[0]
        combined = replace(first, detail="; ".join(a.detail for a in failed))
        if settings.get("valid_if_unreachable"):
            return replace(combined, status="good", assumed_good=True,
                           detail=combined.detail + "; considered valid: the trustpoint's valid_if_unreachable "
                                                    "setting is on")
        return combined

    # --- CRL ----------------------------------------------------------------------------------

    def check_crl(self, cert: x509.Certificate, issuer: x509.Certificate, urls: Sequence[str]) -> RevocationAnswer:
        """The first answer from the CRLs at ``urls`` that is not unknown (else the first unknown)."""
        if not urls:
            return rev.unknown("crl", "no_crl_url", f"CRL checking is on but {_subject(cert)} has no CRL distribution "
                                                    "point and the trustpoint no static CRL URL")
        return _first_answer(self._crl_answer(cert, issuer, url) for url in urls[:MAX_URLS])

    def _crl_answer(self, cert: x509.Certificate, issuer: x509.Certificate, url: str) -> RevocationAnswer:
        if cert.issuer != issuer.subject:
            return rev.unknown("crl", "issuer_mismatch", f"{_subject(issuer)} did not issue {_subject(cert)}", url=url)
        key = rev.issuer_key_hash(issuer)
        with self._stripe(url):
            now = self.clock()
            held = self._held_failure(url, now)
            if held is not None:
                return held
            entry = self._crls.get(url)
            if entry is None or _crl_expired(entry.crl, now):
                try:
                    data = self._fetch(url, what="CRL", limit=self.max_crl_bytes)
                    entry = _CrlEntry(crl=rev.load_crl(data), verified={})
                except _FetchFailure as exc:
                    return self._hold(url, now, rev.unknown("crl", exc.reason, exc.detail, url=url))
                except UnusableData as exc:
                    return self._hold(url, now, rev.unknown("crl", exc.reason, f"{exc.detail} ({url})", url=url))
                next_update = entry.crl.next_update_utc
                if next_update is not None and now > next_update:
                    # The CA has not reissued it: asking again at once would bring the same one.
                    return self._hold(url, now, rev.unknown(
                        "crl", "crl_stale", f"the CRL expired at its nextUpdate {next_update:%Y-%m-%d %H:%M:%S} "
                                            f"UTC and the CA has not published a newer one ({url})", url=url))
                with self._guard:
                    self._crls[url] = entry
            snapshot = entry.verified.get(key)
            if snapshot is None:
                try:
                    snapshot = rev.read_crl(entry.crl, issuer=issuer, now=now)
                except UnusableData as exc:
                    snapshot = exc
                entry.verified[key] = snapshot
        if isinstance(snapshot, UnusableData):
            return rev.unknown("crl", snapshot.reason, f"{snapshot.detail} ({url})", url=url)
        return snapshot.answer_for(cert, now=now, url=url)

    # --- OCSP ---------------------------------------------------------------------------------

    def check_ocsp(self, cert: x509.Certificate, issuer: x509.Certificate, urls: Sequence[str]) -> RevocationAnswer:
        """The first answer from the responders at ``urls`` that is not unknown (else the first unknown)."""
        if not urls:
            return rev.unknown("ocsp", "no_ocsp_url", f"OCSP checking is on but {_subject(cert)} names no OCSP "
                                                      "responder (AIA) and the trustpoint no OCSP URL")
        if cert.issuer != issuer.subject:
            return rev.unknown("ocsp", "issuer_mismatch", f"{_subject(issuer)} did not issue {_subject(cert)}")
        key = (rev.issuer_key_hash(issuer), cert.serial_number)
        with self._stripe(key):
            now = self.clock()
            with self._guard:
                cached = self._ocsp.get(key)
            if cached is not None and cached.next_update is not None and now <= cached.next_update:
                return cached
            answer = _first_answer(self._ocsp_answer(cert, issuer, url, now) for url in urls[:MAX_URLS])
            if answer.status != "unknown" and answer.next_update is not None:
                with self._guard:
                    self._ocsp[key] = answer
                    self._ocsp.move_to_end(key)
                    while len(self._ocsp) > self._max_ocsp_entries:
                        self._ocsp.popitem(last=False)
        return answer

    def _ocsp_answer(self, cert: x509.Certificate, issuer: x509.Certificate, url: str, now: datetime
                     ) -> RevocationAnswer:
        held = self._held_failure(url, now)
        if held is not None:
            return held
        nonce = self._nonce() if self._nonce is not None else None
        body = rev.ocsp_request(cert, issuer, nonce=nonce)
        try:
            data = self._fetch(url, what="OCSP", limit=self.max_ocsp_bytes, body=body)
        except _FetchFailure as exc:
            return self._hold(url, now, rev.unknown("ocsp", exc.reason, exc.detail, url=url))
        return rev.check_ocsp(data, cert=cert, issuer=issuer, now=now, nonce=nonce, url=url)

    # --- fetching -------------------------------------------------------------------------------

    def _fetch(self, url: str, *, what: str, limit: int, body: bytes | None = None) -> bytes:
        """The body of a 200 answer to GET ``url`` (POST ``body`` as an OCSP request), at most
        ``limit`` bytes; _FetchFailure naming the server and the cause otherwise."""
        if not url.lower().startswith("http://"):
            raise _FetchFailure("url_not_http", f"{what} URL {url!r} is not http://; revocation data is fetched "
                                                "over plain HTTP (it is signed)")
        with self._guard:
            self.fetches[url] += 1
        headers = ({"content-type": "application/ocsp-request", "accept": "application/ocsp-response"}
                   if body is not None else {"accept": "application/pkix-crl, application/octet-stream"})
        try:
            with self._http.stream("POST" if body is not None else "GET", url, content=body,
                                   headers=headers) as response:
                if response.status_code != 200:
                    raise _FetchFailure("http_error", f"{what} server {url} answered {response.status_code} "
                                                      f"{response.reason_phrase}".rstrip())
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _too_large(what, url, limit)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(what, url, limit)
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise _FetchFailure("unreachable", f"{what} server {url} unreachable: no answer within "
                                               f"{self.timeout_seconds:g} s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise _FetchFailure("invalid_url", f"{what} URL {url!r} is not usable: {exc}") from None
        except httpx.TransportError as exc:
            raise _FetchFailure("unreachable", f"{what} server {url} unreachable: {_cause(exc)}") from None

    # --- cache plumbing -----------------------------------------------------------------------

    def _stripe(self, key: object) -> threading.Lock:
        # One fetch per URL or certificate at a time; the others wait and take its result.
        return self._stripes[hash(key) % _STRIPES]

    def _held_failure(self, url: str, now: datetime) -> RevocationAnswer | None:
        with self._guard:
            held = self._failures.get(url)
            if held is None:
                return None
            if now >= held[0]:
                del self._failures[url]
                return None
        return held[1]

    def _hold(self, url: str, now: datetime, answer: RevocationAnswer) -> RevocationAnswer:
        if self.failure_hold > timedelta(0):
            with self._guard:
                self._failures[url] = (now + self.failure_hold, answer)
        return answer


def _first_answer(answers: Iterable[RevocationAnswer]) -> RevocationAnswer:
    first: RevocationAnswer | None = None
    for answer in answers:
        if answer.status != "unknown":
            return answer
        first = first or answer
    assert first is not None
    return first


def _crl_expired(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    # A CRL without nextUpdate is asked for again each time: nothing says how long it holds.
    next_update = crl.next_update_utc
    return next_update is None or now > next_update


def _too_large(what: str, url: str, limit: int) -> _FetchFailure:
    size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
    return _FetchFailure("too_large", f"{what} server {url} sent more than {size}; not read")


def _cause(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "reset" in lowered or isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection reset"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "resolution" in lowered:
        return "host name does not resolve"
    if "unreachable" in lowered:
        return "no route to the host"
    return text


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"

