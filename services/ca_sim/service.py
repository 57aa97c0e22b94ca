"""Run the CA simulator: load (or create) the CA, then serve EST over HTTPS (and SCEP over
plain HTTP, the CA bundle over HTTPS, and the CRL and OCSP responder over plain HTTP, when
given ports) on an event loop. :func:`start_in_thread` does it in a background thread of this
process (the CLI waits on it; tests and the demo use it); :func:`prepare` and
:func:`serve_on_loop` are its two halves, which :mod:`.processes` runs in the parent and in
each forked server process.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
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


def _bind(host: str, port: int, *, v6only: bool = False, reuse_port: bool = False,
          joining: bool = False) -> socket.socket:
    """A socket bound to ``host:port`` (0: a free port). ``reuse_port`` binds with SO_REUSEPORT,
    so that the other server processes can bind theirs on the same port (``joining`` for them)."""
    if reuse_port and not joining:
        # SO_REUSEPORT would let this socket share a port another reuse-port server of this user
        # listens on, silently splitting its connections: a plain socket must get the port first.
        with _socket(host, v6only=v6only) as probe:
            probe.bind((host or "0.0.0.0", port))
            port = probe.getsockname()[1]
    sock = _socket(host, v6only=v6only, reuse_port=reuse_port)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


def _socket(host: str, *, v6only: bool, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # one socket per server process on one port: the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and v6only:  # "::" next to "0.0.0.0" on one port
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def _bind_all(hosts: list[str], port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """One socket per host, all on one port (0: a free one, found by the first host; should the
    others have it taken, try another)."""
    several = len(hosts) > 1
    for _ in range(10):
        socks = [_bind(hosts[0], port, v6only=several, reuse_port=reuse_port)]
        try:
            for host in hosts[1:]:
                socks.append(_bind(host, socks[0].getsockname()[1], v6only=several, reuse_port=reuse_port))
            return socks
        except OSError:
            for sock in socks:
                sock.close()
            if port:
                raise
    raise OSError(f"no port free on all of {', '.join(hosts)}")


@dataclass
class Listeners:
    """The listening sockets of one server process, one per host for each thing served."""

    hosts: list[str]
    est: list[socket.socket]
    scep: list[socket.socket] = field(default_factory=list)
    bundle: list[socket.socket] = field(default_factory=list)
    http: list[socket.socket] = field(default_factory=list)
    #: Bound with SO_REUSEPORT, so that other server processes can bind their own on the same ports.
    reuse_port: bool = False

    def sockets(self) -> list[socket.socket]:
        return [*self.est, *self.scep, *self.bundle, *self.http]

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()

    def again(self) -> Listeners:
        """Another set on the same hosts and ports, for another server process (SO_REUSEPORT)."""
        assert self.reuse_port
        made: list[list[socket.socket]] = []
        try:
            for socks in (self.est, self.scep, self.bundle, self.http):
                made.append([_bind(h, s.getsockname()[1], v6only=len(self.hosts) > 1, reuse_port=True, joining=True)
                             for h, s in zip(self.hosts, socks, strict=True)] if socks else [])
        except OSError:
            for sock in (s for group in made for s in group):
                sock.close()
            raise
        return Listeners(self.hosts, *made, reuse_port=True)

    def urls(self, socks: list[socket.socket], scheme: str) -> list[str]:
        return [_url(scheme, h, socks[0].getsockname()[1]) for h in self.hosts] if socks else []


def ready_line(listeners: Listeners, state_dir: Path, *, processes: int = 1) -> str:
    """``ca ready: est=URL … [scep=URL …] [bundle=URL …] [http=URL …] state=DIR``, what scripts and
    tests wait for; `` processes=N`` after it when several processes serve."""
    urls = " ".join(f"est={url}" for url in listeners.urls(listeners.est, "https"))
    urls += "".join(f" scep={url}" for url in listeners.urls(listeners.scep, "http"))
    urls += "".join(f" bundle={url}" for url in listeners.urls(listeners.bundle, "https"))
    urls += "".join(f" http={url}" for url in listeners.urls(listeners.http, "http"))
    line = f"ca ready: {urls} state={state_dir}"
    return line + (f" processes={processes}" if processes > 1 else "")


@dataclass
class CaApps:
    """What a server process serves, built once: the CA, its TLS context and an aiohttp
    application for each thing served (None when it is not)."""

    ca: CertificateAuthority
    admin_token: str
    ssl_context: ssl.SSLContext
    est: web.Application
    scep: web.Application | None
    bundle: web.Application | None
    http: web.Application | None
    crls: CrlPublisher
    ocsp: OcspResponder | None
    revocation: RevocationUrls | None
    settings: EstSettings
    #: For the start-up log line.
    scep_challenge: bool = False
    validity_seconds: int | None = None

    def applications(self) -> list[web.Application]:
        return [app for app in (self.est, self.scep, self.bundle, self.http) if app is not None]


async def serve_on_loop(apps: CaApps, listeners: Listeners) -> list[web.AppRunner]:
    """Start serving ``apps`` on ``listeners`` in the running event loop; the runners, to clean up."""

    def runner_for(served: web.Application, **options) -> web.AppRunner:
        return web.AppRunner(served, access_log=None, handle_signals=False, shutdown_timeout=2, **options)

    sites = [(apps.est, listeners.est, apps.ssl_context, {}), (apps.scep, listeners.scep, None, {}),
             (apps.bundle, listeners.bundle, apps.ssl_context, {}),
             # An OCSP GET carries the request in its path: a long request line.
             (apps.http, listeners.http, None, {"max_line_size": MAX_LINE_BYTES + 1024})]
    runners = []
    for served, socks, ssl_context, options in sites:
        if served is None:
            continue
        runner = runner_for(served, **options)
        await runner.setup()
        runners.append(runner)
        for sock in socks:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runners


async def stop_serving(runners: list[web.AppRunner]) -> None:
    for runner in runners:
        await runner.cleanup()
    # Connections still open (keep-alive) end here, so the loop closes without orphans.
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class RunningCa:
    """A CA simulator serving in this process."""

    ca: CertificateAuthority
    est_url: str
    admin_token: str
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _runners: list[web.AppRunner] = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _listeners: Listeners = field(repr=False)
    #: The EST URL on every address served (``est_url`` is the first).
    est_urls: list[str] = field(default_factory=list)
    #: SCEP (plain HTTP), when served: ``<scep_url>/scep`` or ``<scep_url>/cgi-bin/pkiclient.exe``.
    scep_url: str | None = None
    scep_urls: list[str] = field(default_factory=list)
    #: The CA-bundle source (HTTPS), when served: ``<bundle_url>/ca-bundle/latest``.
    bundle_url: str | None = None
    bundle_urls: list[str] = field(default_factory=list)
    #: The CRL and OCSP responder (plain HTTP), when served: ``<http_url>/crl/issuing.crl``,
    #: ``<http_url>/ocsp``; ``revocation`` holds the URLs issued certificates carry.
    http_url: str | None = None
    http_urls: list[str] = field(default_factory=list)
    revocation: RevocationUrls | None = None
    crls: CrlPublisher | None = field(default=None, repr=False)
    ocsp: OcspResponder | None = field(default=None, repr=False)

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
        return ready_line(self._listeners, self.state_dir)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(stop_serving(self._runners), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningCa:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop the CA serves on: uvloop's where it is installed (with uvicorn's standard extras).
    A CA with a few enrollments in flight wakes for nearly every packet, and uvloop's wake-up
    and TLS cost less: 1.62-1.66 -> 1.42-1.48 ms of the CA's CPU per EST enrollment four at a
    time, 1.36 -> 1.30-1.39 ms sixty-four at a time."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def start_in_thread(state_dir: Path | str, **options) -> RunningCa:
    """Serve the CA from a background thread of this process; ``options`` as :func:`prepare`
    takes them. Several servers may share one state directory (and so one CA and its stores)."""
    apps, listeners = prepare(state_dir, **options)
    loop = new_event_loop()
    try:
        runners = loop.run_until_complete(serve_on_loop(apps, listeners))
    except BaseException:
        listeners.close()
        loop.close()
        raise

    def serve() -> None:
        loop.run_forever()
        loop.close()

    urls = listeners.urls(listeners.est, "https")
    thread = threading.Thread(target=serve, name=f"ca-est-{urls[0].rsplit(':', 1)[1]}", daemon=True)
    thread.start()
    scep_urls = listeners.urls(listeners.scep, "http")
    bundle_urls = listeners.urls(listeners.bundle, "https")
    http_urls = listeners.urls(listeners.http, "http")
    running = RunningCa(ca=apps.ca, est_url=urls[0], admin_token=apps.admin_token, est_urls=urls,
                        _loop=loop, _runners=runners, _thread=thread, _listeners=listeners,
                        scep_url=scep_urls[0] if scep_urls else None, scep_urls=scep_urls,
                        bundle_url=bundle_urls[0] if bundle_urls else None, bundle_urls=bundle_urls,
                        http_url=http_urls[0] if http_urls else None, http_urls=http_urls,
                        revocation=apps.revocation, crls=apps.crls, ocsp=apps.ocsp)
    log_started(apps, listeners)
    return running


def log_started(apps: CaApps, listeners: Listeners, **extra: object) -> None:
    revocation, settings = apps.revocation, apps.settings
    log.info("ca started", est_url=listeners.urls(listeners.est, "https")[0],
             scep_url=next(iter(listeners.urls(listeners.scep, "http")), None),
             bundle_url=next(iter(listeners.urls(listeners.bundle, "https")), None),
             http_url=next(iter(listeners.urls(listeners.http, "http")), None),
             crl_url=revocation.crl if revocation else None, ocsp_url=revocation.ocsp if revocation else None,
             state_dir=str(apps.ca.paths.state_dir), key_type=apps.ca.key_type.value, basic_auth=bool(settings.user),
             scep_challenge=apps.scep_challenge, validity_seconds=apps.validity_seconds, **extra)


def prepare(state_dir: Path | str, *, host: str | Sequence[str] = "127.0.0.1", est_port: int = 0,
            est_user: str | None = None, est_password: str | None = None,
            key_type: KeyType | str | None = None, retry_after: int = 2,
            default_profile: str = "default", scep_port: int | None = None,
            scep_challenge: str | None = None, scep_ra: bool = False,
            bundle_port: int | None = None, validity_seconds: int | None = None,
            http_port: int | None = None, public_host: str | None = None,
            crl_validity: timedelta = CRL_VALIDITY, ocsp_validity: timedelta | None = OCSP_VALIDITY,
            ocsp_delegated: bool = True, reuse_port: bool = False) -> tuple[CaApps, Listeners]:
    """Load (or create) the CA in ``state_dir``, build what it serves and bind its listening
    sockets: EST on ``host:est_port`` (0 picks a free port); ``host`` may list several addresses
    (e.g. 127.0.0.1 and ::1), served on one port.
    With ``scep_port`` (0: a free one) SCEP is served too, on plain HTTP; ``scep_challenge`` is
    its static challenge password, ``scep_ra`` makes an RA certificate speak for the CA. With
    ``bundle_port`` (0: a free one) the CA bundle is served too, over HTTPS like EST.
    ``validity_seconds`` makes every end-entity certificate issued over EST and SCEP last that
    long, whatever its profile says (the CA's own and its TLS and RA certificates keep theirs).
    With ``http_port`` (0: a free one) the CRL and the OCSP responder are served too, on plain
    HTTP, and issued end-entity certificates point at them (on ``public_host`` when given, else
    the first host); ``crl_validity`` is a CRL's life (thisUpdate to nextUpdate),
    ``ocsp_validity`` an OCSP answer's (None: no nextUpdate), ``ocsp_delegated`` False signs OCSP
    answers with the issuing CA itself instead of its delegated responder certificate.
    ``reuse_port`` binds with SO_REUSEPORT, so that :meth:`Listeners.again` can bind the same
    ports for more server processes."""
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
    # The revocation port first: issued certificates carry its URLs.
    http_socks = _bind_all(hosts, http_port, reuse_port=reuse_port) if http_port is not None else []
    listeners = Listeners(hosts, [], http=http_socks, reuse_port=reuse_port)
    try:
        revocation = None
        if http_socks:
            revocation = revocation_urls(hosts, http_socks[0].getsockname()[1], public_host)
            ca = replace(ca, revocation_urls=revocation)
        apps = _build(ca, hosts, settings, scep=scep_port is not None, scep_challenge=scep_challenge,
                      scep_ra=scep_ra, bundle=bundle_port is not None, revocation=revocation,
                      crl_validity=crl_validity, ocsp_validity=ocsp_validity, ocsp_delegated=ocsp_delegated,
                      validity_seconds=validity_seconds)
        listeners.est = _bind_all(hosts, est_port, reuse_port=reuse_port)
        if scep_port is not None:
            listeners.scep = _bind_all(hosts, scep_port, reuse_port=reuse_port)
        if bundle_port is not None:
            listeners.bundle = _bind_all(hosts, bundle_port, reuse_port=reuse_port)
    except BaseException:
        listeners.close()
        raise
    return apps, listeners


def _build(ca: CertificateAuthority, hosts: list[str], settings: EstSettings, *, scep: bool,
           scep_challenge: str | None, scep_ra: bool, bundle: bool, revocation: RevocationUrls | None,
           crl_validity: timedelta, ocsp_validity: timedelta | None, ocsp_delegated: bool,
           validity_seconds: int | None) -> CaApps:
    extra = tuple(h for h in hosts if h not in _UNSPECIFIED)
    cert_file, key_file = ensure_tls_certificate(ca, extra_names=extra)
    ssl_context = server_ssl_context(ca, cert_file, key_file)
    token = load_or_create_token(ca.paths.admin_token)
    store = RequestStore(ca.paths.requests_db)
    crls = CrlPublisher(ca, validity=crl_validity)
    responder = OcspResponder(ca, delegated=ocsp_delegated, validity=ocsp_validity) if revocation else None
    scep_app = None
    if scep:
        scep_settings = ScepSettings(challenge=scep_challenge, ra=scep_ra)
        scep_app = build_scep_app(scep_service_for(ca, scep_settings, requests=store, crls=crls))
    return CaApps(
        ca=ca, admin_token=token, ssl_context=ssl_context, settings=settings,
        est=build_app(ca, store, settings, admin_token=token), scep=scep_app,
        bundle=build_bundle_app(open_store(ca)) if bundle else None,
        http=build_revocation_app(crls, responder) if responder is not None else None,
        crls=crls, ocsp=responder, revocation=revocation, scep_challenge=bool(scep_challenge),
        validity_seconds=validity_seconds,
    )
