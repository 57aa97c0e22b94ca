"""Registering a fleet from a device-management inventory.

Pages through ``{inventory_url}/api/inventory?offset=&limit=`` (see
:class:`shared.device_api.Inventory`), within limits on pages, bytes and time
(:class:`InventoryLimits`), and inserts the devices into a domain in batches (a COPY each on
PostgreSQL), skipping serials already registered: fifty thousand devices take seconds.

An admin's import (:class:`ImportTrust`) vouches for the devices at their management URLs and
stores the endpoint credentials the inventory carries, sealed; another role's import stores
neither: its devices are trusted only where the allow-list of management endpoints matches them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
import pydantic
from sqlalchemy import select
from sqlmodel import Session

from services.controller.api.auth import Principal
from services.controller.api.schemas.devices import ImportResult
from services.controller.crud.device_trust import approval
from services.controller.rules.checks import check_fqdn, check_http_url, check_ip_address
from services.controller.rules.scope import DomainScope
from shared.db import insert_rows
from shared.device_api import DeviceInfo, Inventory
from shared.errors import ExchangeError, ValidationError
from shared.logging import get_logger
from shared.models import Device
from shared.secrets import SecretBox
from shared.settings import Settings

log = get_logger(__name__)

#: Devices asked for per inventory request; the server may answer with fewer.
PAGE_SIZE = 5000
#: Rows per INSERT batch.
BATCH = 1000


@dataclass(frozen=True)
class InventoryLimits:
    """How much of an inventory one import reads at most: a server that never stops paging, answers
    without end or drips its answer byte by byte is refused, not followed."""

    #: Requests (pages) per import.
    max_pages: int = 1000
    #: Bytes of page bodies per import, all pages together (fifty thousand devices take about 15 MB).
    max_bytes: int = 64 << 20
    #: Seconds the whole paging may take.
    deadline_seconds: float = 300.0
    #: Seconds one request may wait for the server's next bytes.
    timeout_seconds: float = 30.0


def limits_from(settings: Settings) -> InventoryLimits:
    return InventoryLimits(max_pages=settings.inventory_max_pages, max_bytes=settings.inventory_max_bytes,
                           deadline_seconds=settings.inventory_deadline_seconds)


@dataclass(frozen=True)
class ImportTrust:
    """An admin's import: the admin vouches for every device imported, and ``box`` seals their credentials."""

    principal: Principal
    box: SecretBox


def _unreachable(url: str, why: str) -> ExchangeError:
    return ExchangeError(f"inventory at {url} unreachable: {why}", code="inventory_unreachable")


def _invalid(url: str, why: str) -> ExchangeError:
    return ExchangeError(f"inventory at {url} is not a device inventory: {why}", code="inventory_invalid")


def inventory_base(inventory_url: str) -> str:
    """The inventory's base URL, checked before any request: http(s), a host, no user:password@, and
    nothing after the path (the import adds its own path and query)."""
    base = check_http_url(inventory_url, field="inventory_url")
    parts = urlsplit(base)
    if parts.query or parts.fragment or base.endswith(("?", "#")):
        raise ValidationError(
            f"inventory_url {base!r} has a query or fragment: send the device-management API's base URL only, "
            f"e.g. {urlunsplit((parts.scheme, parts.netloc, parts.path, '', ''))!r}; the import asks for "
            "/api/inventory?offset=&limit= itself", code="invalid_url")
    return base.rstrip("/")


class _Budget:
    """What is left of an import's limits, spent as pages and bytes arrive."""

    def __init__(self, base: str, limits: InventoryLimits, clock: Callable[[], float]) -> None:
        self.base, self.limits, self.clock = base, limits, clock
        self.pages, self.bytes = 0, 0
        self.deadline = clock() + limits.deadline_seconds

    def timed_out(self) -> ExchangeError:
        return ExchangeError(
            f"inventory at {self.base} took longer than {self.limits.deadline_seconds:g} s to page through "
            f"({self.pages} pages, {self.bytes} bytes read): the server is too slow; nothing was imported",
            code="inventory_timeout")

    def remaining_seconds(self) -> float:
        left = self.deadline - self.clock()
        if left <= 0:
            raise self.timed_out()
        return left

    def page(self) -> None:
        if self.pages >= self.limits.max_pages:
            raise ExchangeError(
                f"inventory at {self.base} has more than {self.limits.max_pages} pages: the server does not stop "
                "paging (its total, or an empty page, should end it); nothing was imported",
                code="inventory_too_many_pages")
        self.pages += 1

    def check(self, size: int) -> None:
        """Refuse ``size`` more bytes if they would pass the byte limit."""
        if self.bytes + size > self.limits.max_bytes:
            raise ExchangeError(
                f"inventory at {self.base} is larger than {self.limits.max_bytes} bytes "
                f"({self.limits.max_bytes >> 20} MiB), the most one import reads; nothing was imported",
                code="inventory_too_large")

    def spend(self, size: int) -> None:
        self.check(size)
        self.bytes += size


def _read_page(client: httpx.Client, endpoint: str, params: dict, budget: _Budget) -> bytes:
    """One page's body, read as it streams so the limits hold mid-answer."""
    budget.page()
    left = budget.remaining_seconds()
    timeout = min(budget.limits.timeout_seconds, left)
    try:
        with client.stream("GET", endpoint, params=params, timeout=timeout) as response:
            if response.status_code != 200:
                raise _unreachable(budget.base, f"GET {endpoint} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit():
                budget.check(int(declared))  # a body said to be too large is not read at all
            chunks = []
            for chunk in response.iter_bytes():
                budget.spend(len(chunk))
                budget.remaining_seconds()  # a server dripping bytes keeps each read short, not the whole
                chunks.append(chunk)
    except httpx.TimeoutException:
        if timeout < budget.limits.timeout_seconds:  # the deadline, not the server's silence, cut it short
            raise budget.timed_out() from None
        raise
    return b"".join(chunks)


def fetch_inventory(
    inventory_url: str, *, limits: InventoryLimits = InventoryLimits(), page_size: int = PAGE_SIZE,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[list[DeviceInfo]]:
    """Yield the inventory page by page within ``limits``; errors name the URL and what went wrong."""
    base = inventory_base(inventory_url)
    endpoint = f"{base}/api/inventory"
    budget = _Budget(base, limits, clock)
    offset = 0
    with httpx.Client(timeout=limits.timeout_seconds) as client:
        while True:
            try:
                body = _read_page(client, endpoint, {"offset": offset, "limit": page_size}, budget)
            except httpx.HTTPError as exc:
                raise _unreachable(base, str(exc) or type(exc).__name__) from None
            try:
                page = Inventory.model_validate_json(body)
            except pydantic.ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "body"
                raise _invalid(base, f"{where}: {first.get('msg', 'invalid')}") from None
            if not page.items:
                return
            yield page.items
            offset += len(page.items)
            if offset >= page.total:
                return


def _row(info: DeviceInfo, *, url: str, domain_id: uuid.UUID, now: datetime, trust: ImportTrust | None) -> dict:
    """A device row from an inventory entry, checked as strictly as a device created by hand; under an
    admin's ``trust``, approved at its management URL with its credential sealed."""
    try:
        if not 1 <= len(info.serial) <= 64 or not 1 <= len(info.name) <= 128 or len(info.model) > 64:
            raise ValidationError("serial, name or model is empty or too long")
        row = {
            "id": uuid.uuid4(),
            "domain_id": domain_id,
            "name": info.name,
            "model": info.model,
            "serial": info.serial,
            "ip_address": check_ip_address(info.ip_address),
            "fqdn": check_fqdn(info.fqdn),
            "management_url": check_http_url(info.management_url, field="management_url"),
            "weak_crypto": info.weak_crypto,
            "created_at": now,
            "endpoint_credential_blob": None,
        }
        if trust is None:
            return row  # another role's import: no approval, and the credentials it lists are not kept
        row.update(approval(trust.principal, row["management_url"], now))
        credential = info.endpoint_credential.get_secret_value() if info.endpoint_credential is not None else ""
        if credential:
            if not 32 <= len(credential) <= 256:
                raise ValidationError("its endpoint credential must be 32 to 256 characters (secrets are sealed "
                                      "to it: use a random one)")
            row["endpoint_credential_blob"] = trust.box.seal(credential.encode())
        return row
    except ValidationError as exc:
        raise _invalid(url, f"device {info.serial[:64]!r}: {exc.message}") from None


def import_inventory(
    session: Session, *, scope: DomainScope, inventory_url: str, now: datetime,
    limits: InventoryLimits = InventoryLimits(), trust: ImportTrust | None = None,
) -> ImportResult:
    """Insert the inventory's new devices into the scope's domain (vouched for, with their credentials,
    under ``trust``); say how many were imported, skipped, approved and given credentials. Nothing is
    committed here: the caller commits the whole import at once."""
    pages = fetch_inventory(inventory_url, limits=limits)
    if session.get_bind().dialect.name == "sqlite":
        # Fetch everything first: the write transaction (which blocks other writers on SQLite)
        # then lasts only as long as the inserts, not the HTTP paging.
        pages = iter([[info for page in pages for info in page]])
    # Elsewhere page by page: fifty thousand parsed entries never sit in memory at once.
    imported = skipped = credentials = 0
    seen: set[str] = set()
    for batch in (page[start:start + BATCH] for page in pages for start in range(0, len(page), BATCH)):
        serials = [d.serial for d in batch]
        known = set(session.execute(select(Device.serial).where(Device.serial.in_(serials))).scalars())
        rows = []
        for info in batch:
            if info.serial in known or info.serial in seen:
                skipped += 1
                continue
            seen.add(info.serial)
            rows.append(_row(info, url=inventory_url, domain_id=scope.domain_id, now=now, trust=trust))
        if rows:
            insert_rows(session, Device.__table__, rows)
            imported += len(rows)
            credentials += sum(row["endpoint_credential_blob"] is not None for row in rows)
    approved = imported if trust is not None else 0
    log.info("inventory imported", inventory_url=inventory_url, imported=imported, skipped=skipped,
             approved=approved, credentials=credentials, domain_id=str(scope.domain_id))
    return ImportResult(imported=imported, skipped=skipped, approved=approved, credentials=credentials)
