"""Registering a fleet from a device-management inventory.

Pages through ``{inventory_url}/api/inventory?offset=&limit=`` (see
:class:`shared.device_api.Inventory`) and inserts the devices into a domain with batched
INSERTs, skipping serials already registered: fifty thousand devices take seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pydantic
from sqlalchemy import insert, select
from sqlmodel import Session

from services.controller.rules.checks import check_fqdn, check_http_url, check_ip_address
from services.controller.rules.scope import DomainScope
from shared.device_api import DeviceInfo, Inventory
from shared.errors import ExchangeError, ValidationError
from shared.logging import get_logger
from shared.models import Device

log = get_logger(__name__)

#: Devices asked for per inventory request; the server may answer with fewer.
PAGE_SIZE = 5000
#: Rows per INSERT batch.
BATCH = 1000


def _unreachable(url: str, why: str) -> ExchangeError:
    return ExchangeError(f"inventory at {url} unreachable: {why}", code="inventory_unreachable")


def _invalid(url: str, why: str) -> ExchangeError:
    return ExchangeError(f"inventory at {url} is not a device inventory: {why}", code="inventory_invalid")


def fetch_inventory(
    inventory_url: str, *, timeout: float = 30.0, page_size: int = PAGE_SIZE
) -> Iterator[list[DeviceInfo]]:
    """Yield the inventory page by page; errors name the URL and what went wrong."""
    base = check_http_url(inventory_url, field="inventory_url").rstrip("/")
    endpoint = f"{base}/api/inventory"
    offset = 0
    with httpx.Client(timeout=timeout) as client:
        while True:
            try:
                response = client.get(endpoint, params={"offset": offset, "limit": page_size})
            except httpx.HTTPError as exc:
                raise _unreachable(base, str(exc) or type(exc).__name__) from None
            if response.status_code != 200:
                raise _unreachable(base, f"GET {endpoint} answered HTTP {response.status_code}")
            try:
                page = Inventory.model_validate_json(response.content)
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


def _row(info: DeviceInfo, *, url: str, domain_id: uuid.UUID, now: datetime) -> dict:
    """A device row from an inventory entry, checked as strictly as a device created by hand."""
    try:
        if not 1 <= len(info.serial) <= 64 or not 1 <= len(info.name) <= 128 or len(info.model) > 64:
            raise ValidationError("serial, name or model is empty or too long")
        return {
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
        }
    except ValidationError as exc:
        raise _invalid(url, f"device {info.serial[:64]!r}: {exc.message}") from None


def import_inventory(
    session: Session, *, scope: DomainScope, inventory_url: str, now: datetime
) -> tuple[int, int]:
    """Insert the inventory's new devices into the scope's domain; return (imported, skipped).
    Nothing is committed here: the caller commits the whole import at once."""
    pages = fetch_inventory(inventory_url)
    if session.get_bind().dialect.name == "sqlite":
        # Fetch everything first: the write transaction (which blocks other writers on SQLite)
        # then lasts only as long as the inserts, not the HTTP paging.
        pages = iter([[info for page in pages for info in page]])
    # Elsewhere page by page: fifty thousand parsed entries never sit in memory at once.
    imported = skipped = 0
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
            rows.append(_row(info, url=inventory_url, domain_id=scope.domain_id, now=now))
        if rows:
            session.execute(insert(Device), rows)
            imported += len(rows)
    log.info("inventory imported", inventory_url=inventory_url, imported=imported, skipped=skipped,
             domain_id=str(scope.domain_id))
    return imported, skipped
