"""Connection checks: with a candidate CA bundle, the servers certfleet must keep reaching each
complete a verified TLS handshake (the certificate chains to the bundle and names the host).

The servers: the bundle sources, the HTTPS CA endpoints of EST enrollment objects that do not
ignore server validation, and the configured list (CERTFLEET_CONNECTION_CHECKS). Each failure is
reported with the server and the reason.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlmodel import Session, select

from shared.enums import EnrollmentType
from shared.models import EnrollmentObject, EnrollmentOverride
from shared.settings import Settings

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, order=True)
class Server:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Failure:
    server: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"server": self.server, "reason": self.reason}


def server_of(target: str) -> Server | None:
    """``https://host[:port]/…`` or ``host:port`` (``[v6]:port``) as a server; None if neither."""
    target = target.strip()
    if not target:
        return None
    parts = urlsplit(target if "://" in target else f"https://{target}")
    if parts.scheme != "https" or not parts.hostname:
        return None
    try:
        port = parts.port or 443
    except ValueError:
        return None
    return Server(parts.hostname, port)


def servers_to_check(session: Session, settings: Settings) -> list[Server]:
    targets: list[str] = [url for url in settings.ca_bundle_urls.split(",")]
    targets += session.exec(
        select(EnrollmentObject.enrollment_url).where(
            EnrollmentObject.enrollment_type == EnrollmentType.EST.value,
            EnrollmentObject.ignore_server_validation.is_(False))
    ).all()
    # Overrides naming another EST server: checked too (an override's CA is always validated).
    overridden = session.exec(
        select(EnrollmentOverride.values)
        .join(EnrollmentObject, EnrollmentObject.id == EnrollmentOverride.enrollment_object_id)
        .where(EnrollmentObject.enrollment_type == EnrollmentType.EST.value)
    ).all()
    targets += [values.get("enrollment_url", "") for values in overridden]
    targets += settings.connection_checks.split(",")
    return sorted({server for server in map(server_of, targets) if server is not None})


def check_servers(servers: Iterable[Server], *, bundle_pem: str) -> list[Failure]:
    """The servers whose TLS handshake fails with ``bundle_pem`` as the only trust, and why."""
    servers = list(servers)
    if not servers:
        return []
    context = ssl.create_default_context(cadata=bundle_pem)
    with ThreadPoolExecutor(max_workers=min(16, len(servers))) as pool:
        results = list(pool.map(lambda server: _handshake(server, context), servers))
    return [failure for failure in results if failure is not None]


def _handshake(server: Server, context: ssl.SSLContext) -> Failure | None:
    try:
        with socket.create_connection((server.host, server.port), timeout=TIMEOUT_SECONDS) as raw, \
                context.wrap_socket(raw, server_hostname=server.host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return Failure(str(server), f"certificate not trusted by the new bundle: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Failure(str(server), f"TLS handshake failed: {exc.reason or exc}")
    except TimeoutError:
        return Failure(str(server), f"no answer within {TIMEOUT_SECONDS:g} s")
    except OSError as exc:
        return Failure(str(server), f"cannot connect: {exc.strerror or exc}")
