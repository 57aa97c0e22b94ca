"""Run the CA simulator: load (or create) the CA, then serve EST over HTTPS (and SCEP over
plain HTTP, the CA bundle over HTTPS, and the CRL and OCSP responder over plain HTTP, when
given ports) on an event loop in a background thread. The CLI waits on it; tests and the demo
use :func:`start_in_thread`.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from ipaddress import ip_address
from pathlib import Path

from aiohttp import web

from services.ca_sim.admin import load_or_create_token
from services.ca_sim.authority import CertificateAuthority, ensure_tls_certificate, load_authority
from services.ca_sim.bundle_server import build_bundle_app
from services.ca_sim.bundle_store import open_store
from services.ca_sim.crl import DEFAULT_VALIDITY as CRL_VALIDITY
from services.ca_sim.crl import CrlPublisher
from services.ca_sim.est_server import EstSettings, build_app, server_ssl_context
from services.ca_sim.issuance import RevocationUrls
from services.ca_sim.ocsp import DEFAULT_VALIDITY as OCSP_VALIDITY
from services.ca_sim.ocsp import OcspResponder
from services.ca_sim.pending import RequestStore
from services.ca_sim.revocation_server import CRL_PATH, MAX_LINE_BYTES, OCSP_PATH, build_revocation_app
from services.ca_sim.scep_server import build_scep_app
from services.ca_sim.scep_service import ScepSettings, scep_service_for
from shared.enums import KeyType
from shared.logging import get_logger

log = get_logger("ca")

_UNSPECIFIED = ("", "0.0.0.0", "::")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _url(scheme: str, host: str, port: int) -> str:
    if host in _UNSPECIFIED:
        host = "127.0.0.1"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def url_host(host: str) -> str:
    """A host as it goes into a URL: an IPv6 literal in brackets (RFC 3986), a name or IPv4
    address as it is. Refuses what is neither, so no URL the CA writes into a certificate is
    ambiguous."""
    bare = host.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        address = ip_address(bare)
    except ValueError:
        if not _HOSTNAME.fullmatch(bare):
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
        return bare.lower()
    return f"[{address}]" if address.version == 6 else str(address)


def revocation_urls(hosts: list[str], port: int, public_host: str | None = None) -> RevocationUrls:
    """The CRL and OCSP URLs issued certificates carry: on ``public_host`` when given, else on
    the first host served (an unspecified address: loopback of its family)."""
    if public_host is None:
        first = hosts[0]
        public_host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(first, first)
    base = f"http://{url_host(public_host)}:{port}"
    return RevocationUrls(crl=base + CRL_PATH, ocsp=base + OCSP_PATH)


def _bind(host: str, port: int, *, v6only: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and v6only:  # "::" next to "0.0.0.0" on one port
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


def _bind_all(hosts: list[str], port: int) -> list[socket.socket]:
    """One socket per host, all on one port (0: a free one, found by the first host; should the
    others have it taken, try another)."""
    several = len(hosts) > 1
    for _ in range(10):
        socks = [_bind(hosts[0], port, v6only=several)]
        try:
            for host in hosts[1:]:
                socks.append(_bind(host, socks[0].getsockname()[1], v6only=several))
            return socks
        except OSError:
            for sock in socks:
                sock.close()
            if port:
                raise
    raise OSError(f"no port free on all of {', '.join(hosts)}")


@dataclass
class RunningCa:
    """A CA simulator serving in this process."""

    ca: CertificateAuthority
    est_url: str
    admin_token: str
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _runner: web.AppRunner = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    #: The EST URL on every address served (``est_url`` is the first).
    est_urls: list[str] = field(default_factory=list)
    #: SCEP (plain HTTP), when served: ``<scep_url>/scep`` or ``<scep_url>/cgi-bin/pkiclient.exe``.
    scep_url: str | None = None
    scep_urls: list[str] = field(default_factory=list)
    _scep_runner: web.AppRunner | None = field(default=None, repr=False)
    #: The CA-bundle source (HTTPS), when served: ``<bundle_url>/ca-bundle/latest``.
    bundle_url: str | None = None
    bundle_urls: list[str] = field(default_factory=list)
    _bundle_runner: web.AppRunner | None = field(default=None, repr=False)
    #: The CRL and OCSP responder (plain HTTP), when served: ``<http_url>/crl/issuing.crl``,
    #: ``<http_url>/ocsp``; ``revocation`` holds the URLs issued certificates carry.
    http_url: str | None = None
    http_urls: list[str] = field(default_factory=list)
    revocation: RevocationUrls | None = None
    crls: CrlPublisher | None = field(default=None, repr=False)
    ocsp: OcspResponder | None = field(default=None, repr=False)
    _http_runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.ca.paths.state_dir

    @property
    def tls_ca(self) -> Path:
        """Trust anchor for the HTTPS endpoints."""
        return self.ca.paths.tls_ca

    @property
    def chain(self) -> Path:
        return self.ca.paths.chain

    @property
    def bundle_signer(self) -> Path:
        """The bundle-signing certificate receivers pin."""
        return self.ca.paths.bundle_signing_pem

    @property
    def ocsp_signer(self) -> Path:
        """The OCSP responder's delegated signing certificate (``openssl ocsp -VAfile``)."""
        return self.ca.paths.ocsp_signer_pem

    def ready_line(self) -> str:
        urls = " ".join(f"est={url}" for url in self.est_urls or [self.est_url])
        urls += "".join(f" scep={url}" for url in self.scep_urls)
        urls += "".join(f" bundle={url}" for url in self.bundle_urls)
        urls += "".join(f" http={url}" for url in self.http_urls)
        return f"ca ready: {urls} state={self.state_dir}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        for runner in (self._runner, self._scep_runner, self._bundle_runner, self._http_runner):
            if runner is not None:
                await runner.cleanup()
        # Connections still open (keep-alive) end here, so the loop closes without orphans.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> RunningCa:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_in_thread(state_dir: Path | str, *, host: str | Sequence[str] = "127.0.0.1", est_port: int = 0,
                    est_user: str | None = None, est_password: str | None = None,
                    key_type: KeyType | str | None = None, retry_after: int = 2,
                    default_profile: str = "default", scep_port: int | None = None,
                    scep_challenge: str | None = None, scep_ra: bool = False,
                    bundle_port: int | None = None, validity_seconds: int | None = None,
                    http_port: int | None = None, public_host: str | None = None,
                    crl_validity: timedelta = CRL_VALIDITY, ocsp_validity: timedelta | None = OCSP_VALIDITY,
                    ocsp_delegated: bool = True) -> RunningCa:
    """Serve EST on ``host:est_port`` (0 picks a free port) from a background thread; ``host`` may
    list several addresses (e.g. 127.0.0.1 and ::1), served on one port.
    Several servers may share one state directory (and so one CA and request store).
    With ``scep_port`` (0: a free one) SCEP is served too, on plain HTTP; ``scep_challenge`` is
    its static challenge password, ``scep_ra`` makes an RA certificate speak for the CA. With
    ``bundle_port`` (0: a free one) the CA bundle is served too, over HTTPS like EST.
    ``validity_seconds`` makes every end-entity certificate issued over EST and SCEP last that
    long, whatever its profile says (the CA's own and its TLS and RA certificates keep theirs).
    With ``http_port`` (0: a free one) the CRL and the OCSP responder are served too, on plain
    HTTP, and issued end-entity certificates point at them (on ``public_host`` when given, else
    the first host); ``crl_validity`` is a CRL's life (thisUpdate to nextUpdate),
    ``ocsp_validity`` an OCSP answer's (None: no nextUpdate), ``ocsp_delegated`` False signs OCSP
    answers with the issuing CA itself instead of its delegated responder certificate."""
    hosts = [host] if isinstance(host, str) else list(dict.fromkeys(host)) or ["127.0.0.1"]
    settings = EstSettings(user=est_user, password=est_password, retry_after=retry_after,
                           default_profile=default_profile)
    ca = load_authority(state_dir, key_type=key_type)
    if validity_seconds is not None:
        if validity_seconds < 1:
            raise ValueError(f"the validity of issued certificates must be at least 1 second, not {validity_seconds}")
        ca = replace(ca, validity=timedelta(seconds=validity_seconds))
    if public_host is not None:
        url_host(public_host)  # refused before anything is bound
    http_socks = _bind_all(hosts, http_port) if http_port is not None else []
    revocation = None
    if http_socks:
        revocation = revocation_urls(hosts, http_socks[0].getsockname()[1], public_host)
        ca = replace(ca, revocation_urls=revocation)
    try:
        return _start(ca, hosts, settings, est_port=est_port, scep_port=scep_port, scep_challenge=scep_challenge,
                      scep_ra=scep_ra, bundle_port=bundle_port, validity_seconds=validity_seconds,
                      http_socks=http_socks, revocation=revocation, crl_validity=crl_validity,
                      ocsp_validity=ocsp_validity, ocsp_delegated=ocsp_delegated, est_user=est_user)
    except BaseException:
        for sock in http_socks:
            sock.close()
        raise


def _start(ca: CertificateAuthority, hosts: list[str], settings: EstSettings, *, est_port: int,
           scep_port: int | None, scep_challenge: str | None, scep_ra: bool, bundle_port: int | None,
           validity_seconds: int | None, http_socks: list[socket.socket], revocation: RevocationUrls | None,
           crl_validity: timedelta, ocsp_validity: timedelta | None, ocsp_delegated: bool,
           est_user: str | None) -> RunningCa:
    extra = tuple(h for h in hosts if h not in _UNSPECIFIED)
    cert_file, key_file = ensure_tls_certificate(ca, extra_names=extra)
    ssl_context = server_ssl_context(ca, cert_file, key_file)
    token = load_or_create_token(ca.paths.admin_token)
    store = RequestStore(ca.paths.requests_db)
    app = build_app(ca, store, settings, admin_token=token)
    crls = CrlPublisher(ca, validity=crl_validity)
    responder = OcspResponder(ca, delegated=ocsp_delegated, validity=ocsp_validity) if http_socks else None
    http_app = build_revocation_app(crls, responder) if responder is not None else None
    scep_app = None
    if scep_port is not None:
        scep_settings = ScepSettings(challenge=scep_challenge, ra=scep_ra)
        scep_app = build_scep_app(scep_service_for(ca, scep_settings, requests=store, crls=crls))
    bundle_app = build_bundle_app(open_store(ca)) if bundle_port is not None else None

    socks = _bind_all(hosts, est_port)
    scep_socks: list[socket.socket] = []
    bundle_socks: list[socket.socket] = []
    try:
        if scep_port is not None:
            scep_socks = _bind_all(hosts, scep_port)
        if bundle_port is not None:
            bundle_socks = _bind_all(hosts, bundle_port)
    except OSError:
        for sock in socks + scep_socks:
            sock.close()
        raise
    loop = asyncio.new_event_loop()

    def runner_for(served: web.Application, **options) -> web.AppRunner:
        return web.AppRunner(served, access_log=None, handle_signals=False, shutdown_timeout=2, **options)

    runner = runner_for(app)
    scep_runner = runner_for(scep_app) if scep_app is not None else None
    bundle_runner = runner_for(bundle_app) if bundle_app is not None else None
    # An OCSP GET carries the request in its path: a long request line.
    http_runner = runner_for(http_app, max_line_size=MAX_LINE_BYTES + 1024) if http_app is not None else None
    sites = ((runner, socks, ssl_context), (scep_runner, scep_socks, None), (bundle_runner, bundle_socks, ssl_context),
             (http_runner, http_socks, None))

    async def start() -> None:
        for site_runner, site_socks, site_ssl in sites:
            if site_runner is None:
                continue
            await site_runner.setup()
            for sock in site_socks:
                await web.SockSite(site_runner, sock, ssl_context=site_ssl).start()

    try:
        loop.run_until_complete(start())
    except BaseException:
        for sock in socks + scep_socks + bundle_socks:  # the HTTP ones: by the caller
            sock.close()
        loop.close()
        raise

    def serve() -> None:
        loop.run_forever()
        loop.close()

    port = socks[0].getsockname()[1]
    thread = threading.Thread(target=serve, name=f"ca-est-{port}", daemon=True)
    thread.start()
    urls = [_url("https", h, port) for h in hosts]
    scep_urls = [_url("http", h, scep_socks[0].getsockname()[1]) for h in hosts] if scep_socks else []
    bundle_urls = [_url("https", h, bundle_socks[0].getsockname()[1]) for h in hosts] if bundle_socks else []
    http_urls = [_url("http", h, http_socks[0].getsockname()[1]) for h in hosts] if http_socks else []
    running = RunningCa(ca=ca, est_url=urls[0], admin_token=token, est_urls=urls,
                        _loop=loop, _runner=runner, _thread=thread,
                        scep_url=scep_urls[0] if scep_urls else None, scep_urls=scep_urls, _scep_runner=scep_runner,
                        bundle_url=bundle_urls[0] if bundle_urls else None, bundle_urls=bundle_urls,
                        _bundle_runner=bundle_runner, http_url=http_urls[0] if http_urls else None,
                        http_urls=http_urls, revocation=revocation, crls=crls, ocsp=responder,
                        _http_runner=http_runner)
    log.info("ca started", est_url=running.est_url, scep_url=running.scep_url, bundle_url=running.bundle_url,
             http_url=running.http_url, crl_url=revocation.crl if revocation else None,
             ocsp_url=revocation.ocsp if revocation else None, state_dir=str(running.state_dir),
             key_type=ca.key_type.value, basic_auth=bool(est_user), scep_challenge=bool(scep_challenge),
             validity_seconds=validity_seconds)
    return running
