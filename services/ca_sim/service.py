"""Run the CA simulator: load (or create) the CA, then serve EST over HTTPS (and SCEP over
plain HTTP, and the CA bundle over HTTPS, when given ports) on an event loop in a background
thread. The CLI waits on it; tests and the demo use :func:`start_in_thread`.

The CRL/OCSP HTTP endpoint is not served yet.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from services.ca_sim.admin import load_or_create_token
from services.ca_sim.authority import CertificateAuthority, ensure_tls_certificate, load_authority
from services.ca_sim.bundle_server import build_bundle_app
from services.ca_sim.bundle_store import open_store
from services.ca_sim.est_server import EstSettings, build_app, server_ssl_context
from services.ca_sim.pending import RequestStore
from services.ca_sim.scep_server import build_scep_app
from services.ca_sim.scep_service import ScepSettings, scep_service_for
from shared.enums import KeyType
from shared.logging import get_logger

log = get_logger("ca")

_UNSPECIFIED = ("", "0.0.0.0", "::")


def _url(scheme: str, host: str, port: int) -> str:
    if host in _UNSPECIFIED:
        host = "127.0.0.1"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


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

    def ready_line(self) -> str:
        urls = " ".join(f"est={url}" for url in self.est_urls or [self.est_url])
        urls += "".join(f" scep={url}" for url in self.scep_urls)
        urls += "".join(f" bundle={url}" for url in self.bundle_urls)
        return f"ca ready: {urls} state={self.state_dir}"

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        for runner in (self._runner, self._scep_runner, self._bundle_runner):
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
                    bundle_port: int | None = None, validity_seconds: int | None = None) -> RunningCa:
    """Serve EST on ``host:est_port`` (0 picks a free port) from a background thread; ``host`` may
    list several addresses (e.g. 127.0.0.1 and ::1), served on one port.
    Several servers may share one state directory (and so one CA and request store).
    With ``scep_port`` (0: a free one) SCEP is served too, on plain HTTP; ``scep_challenge`` is
    its static challenge password, ``scep_ra`` makes an RA certificate speak for the CA. With
    ``bundle_port`` (0: a free one) the CA bundle is served too, over HTTPS like EST.
    ``validity_seconds`` makes every end-entity certificate issued over EST and SCEP last that
    long, whatever its profile says (the CA's own and its TLS and RA certificates keep theirs)."""
    hosts = [host] if isinstance(host, str) else list(dict.fromkeys(host)) or ["127.0.0.1"]
    settings = EstSettings(user=est_user, password=est_password, retry_after=retry_after,
                           default_profile=default_profile)
    ca = load_authority(state_dir, key_type=key_type)
    if validity_seconds is not None:
        if validity_seconds < 1:
            raise ValueError(f"the validity of issued certificates must be at least 1 second, not {validity_seconds}")
        ca = replace(ca, validity=timedelta(seconds=validity_seconds))
    extra = tuple(h for h in hosts if h not in _UNSPECIFIED)
    cert_file, key_file = ensure_tls_certificate(ca, extra_names=extra)
    ssl_context = server_ssl_context(ca, cert_file, key_file)
    token = load_or_create_token(ca.paths.admin_token)
    store = RequestStore(ca.paths.requests_db)
    app = build_app(ca, store, settings, admin_token=token)
    scep_app = None
    if scep_port is not None:
        scep_settings = ScepSettings(challenge=scep_challenge, ra=scep_ra)
        scep_app = build_scep_app(scep_service_for(ca, scep_settings, requests=store))
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

    def runner_for(served: web.Application) -> web.AppRunner:
        return web.AppRunner(served, access_log=None, handle_signals=False, shutdown_timeout=2)

    runner = runner_for(app)
    scep_runner = runner_for(scep_app) if scep_app is not None else None
    bundle_runner = runner_for(bundle_app) if bundle_app is not None else None
    sites = ((runner, socks, ssl_context), (scep_runner, scep_socks, None), (bundle_runner, bundle_socks, ssl_context))

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
        for sock in socks + scep_socks + bundle_socks:
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
    running = RunningCa(ca=ca, est_url=urls[0], admin_token=token, est_urls=urls,
                        _loop=loop, _runner=runner, _thread=thread,
                        scep_url=scep_urls[0] if scep_urls else None, scep_urls=scep_urls, _scep_runner=scep_runner,
                        bundle_url=bundle_urls[0] if bundle_urls else None, bundle_urls=bundle_urls,
                        _bundle_runner=bundle_runner)
    log.info("ca started", est_url=running.est_url, scep_url=running.scep_url, bundle_url=running.bundle_url,
             state_dir=str(running.state_dir), key_type=ca.key_type.value, basic_auth=bool(est_user),
             scep_challenge=bool(scep_challenge), validity_seconds=validity_seconds)
    return running
