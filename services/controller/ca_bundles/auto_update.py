"""The daily automatic CA-bundle update: its time of day, chosen once per installation, and the
lines ``show cert-update`` prints.

The time is derived from when the installation's database was made (the Global domain's
creation time), so it stays the same across restarts and controllers, and installations differ:
they do not all ask the bundle source at the same minute.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime

from sqlmodel import Session

from shared.domains import GLOBAL_DOMAIN_ID
from shared.models import CaBundleState, Domain, Schedule

SCHEDULE = "ca-bundle-update"
DRIFT_SCHEDULE = "ca-bundle-drift"
_DAILY = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")


def installation_seed(session: Session) -> str:
    root = session.get(Domain, GLOBAL_DOMAIN_ID)
    return root.created_at.isoformat() if root is not None else ""


def daily_cron(seed: str) -> str:
    """``M H * * *`` at a minute of the day fixed by ``seed``."""
    minute_of_day = int.from_bytes(hashlib.sha256(f"ca-bundle-update:{seed}".encode()).digest()[:4], "big") % 1440
    return f"{minute_of_day % 60} {minute_of_day // 60} * * *"


def schedule_line(row: Schedule | None, *, default_cron: str) -> str:
    enabled = row.enabled if row is not None else True
    if not enabled:
        return "Autoupdate is disabled"
    cron = row.cron if row is not None and row.cron else default_cron
    daily = _DAILY.match(cron)
    if daily:
        return f"Autoupdate is enabled and set for every day at {int(daily[2]):02d}:{int(daily[1]):02d} UTC"
    return f"Autoupdate is enabled and set for cron {cron} UTC"


def last_modified_line(bundle: CaBundleState | None) -> str:
    if bundle is None or bundle.last_modified is None:
        return "CA bundle was never updated: run certfleet cert-update run-now"
    return f"CA bundle was last modified '{seed_date(bundle.last_modified)}'"


def seed_date(moment: datetime) -> str:
    """'Thu Sep 15 16:12:35 2022': the C library's asctime() form, in UTC."""
    return time.asctime(moment.astimezone(UTC).timetuple())
