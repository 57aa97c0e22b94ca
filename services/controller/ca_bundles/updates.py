"""``cert-update test`` and ``cert-update run-now``: compare certfleet's CA bundle with the latest,
check connections with the candidate, replace it, and push it to the devices.

The messages are the product's own, word for word. Every test and update is audited (who or
which schedule, the versions, forced or not, the servers that failed) and counted in
``certfleet_ca_bundle_updates_total{outcome}``; each server's connection check in
``certfleet_ca_bundle_connection_checks_total{outcome}``.

The replacement is one transaction: the bundle row, the audit row, and the push batch with its
jobs; the jobs are published after the commit. A bundle that fails any check is never installed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import dramatiq
from sqlmodel import Session

from services.controller.ca_bundles import checks, source
from services.controller.ca_bundles.push import publish_push, push_to_devices
from shared.errors import ConfigurationError, ConflictError, ExchangeError
from shared.metrics import CA_BUNDLE_CONNECTION_CHECKS, CA_BUNDLE_UPDATES
from shared.models import CaBundleState, CaBundleUpdate
from shared.protocols.ca_bundle import BundleError
from shared.settings import Settings

TEST_SUCCEEDED = "Test succeeded, certs can safely be updated or are already up to date."
TEST_FAILED = "Test failed, not able to fully connect."
REPLACED = "Certs have been replaced or was already up to date."
FAILED_CHECKS = "Certs failed some connection checks."
FORCED = "Certs failed some connection checks, but replace has been forced."

BUNDLE_NAME = "certfleet"


class BundleRefused(ExchangeError):
    """The bundle source could not be reached or its bundle failed a check: nothing changes."""

    status = 502


@dataclass
class UpdateResult:
    action: str
    #: test: up_to_date, checks_passed, checks_failed; run-now: up_to_date, updated, failed_checks, forced
    outcome: str
    message: str
    #: Whether the command succeeded (exit status 0).
    ok: bool
    local_version: str
    latest_version: str
    failed_servers: list[dict[str, str]] = field(default_factory=list)
    batch_id: str | None = None
    devices: int = 0


def installed(session: Session) -> CaBundleState | None:
    return session.get(CaBundleState, BUNDLE_NAME)


Fetcher = Callable[..., source.Fetched]
Checker = Callable[..., list[checks.Failure]]


def _latest(session: Session, settings: Settings, *, now: datetime, action: str, requested_by: str,
            fetch: Fetcher) -> tuple[CaBundleState | None, source.Fetched]:
    current = installed(session)
    try:
        fetched = fetch(settings, installed_pem=current.pem if current else "", now=now)
        local = int(current.version) if current and current.version else 0
        if fetched.bundle.version < local:
            raise BundleError("bundle_version_older",
                              f"the bundle source {fetched.source_url} serves version {fetched.bundle.version}, older "
                              f"than the installed {local}: refused (a source must never go back)")
    except (BundleError, ConfigurationError) as exc:
        outcome = "unreachable" if exc.code == "bundle_source_unreachable" else "invalid"
        session.rollback()
        session.add(CaBundleUpdate(action=action, requested_by=requested_by, outcome=outcome,
                                   old_version=current.version if current else "", detail=str(exc)[:2048],
                                   created_at=now))
        session.commit()
        CA_BUNDLE_UPDATES.labels(outcome=outcome).inc()
        if isinstance(exc, ConfigurationError):  # the installation must be set up first
            raise ConflictError(exc.message, code=exc.code) from None
        raise BundleRefused(exc.message, code=exc.code) from None
    return current, fetched


def _check_connections(session: Session, settings: Settings, fetched: source.Fetched,
                       check: Checker) -> list[checks.Failure]:
    servers = checks.servers_to_check(session, settings)
    failures = check(servers, bundle_pem=fetched.bundle.pem)
    CA_BUNDLE_CONNECTION_CHECKS.labels(outcome="failed").inc(len(failures))
    CA_BUNDLE_CONNECTION_CHECKS.labels(outcome="passed").inc(max(0, len(servers) - len(failures)))
    return failures


def _up_to_date(current: CaBundleState | None, fetched: source.Fetched) -> bool:
    return current is not None and current.version == fetched.bundle.label and current.sha256 == fetched.bundle.sha256


def test_update(
    session: Session, settings: Settings, *, now: datetime, requested_by: str,
    fetch: Fetcher = source.fetch_latest, check: Checker = checks.check_servers,
) -> UpdateResult:
    """Compare with the latest bundle; when out of date, check connections with it. Changes nothing."""
    current, fetched = _latest(session, settings, now=now, action="test", requested_by=requested_by, fetch=fetch)
    local = current.version if current else ""
    if _up_to_date(current, fetched):
        result = UpdateResult("test", "up_to_date", TEST_SUCCEEDED, True, local, fetched.bundle.label)
    else:
        failures = _check_connections(session, settings, fetched, check)
        result = UpdateResult("test", "checks_failed" if failures else "checks_passed",
                              TEST_FAILED if failures else TEST_SUCCEEDED, not failures, local,
                              fetched.bundle.label, [f.as_dict() for f in failures])
    _audit(session, result, requested_by=requested_by, now=now)
    session.commit()
    return result


def run_update(
    session: Session, broker: dramatiq.Broker, settings: Settings, *, now: datetime, force: bool,
    requested_by: str, action: str = "run-now",
    fetch: Fetcher = source.fetch_latest, check: Checker = checks.check_servers,
) -> UpdateResult:
    """Replace the bundle with the latest when every connection check passes (or ``force``), and
    push it to every device."""
    current, fetched = _latest(session, settings, now=now, action=action, requested_by=requested_by, fetch=fetch)
    local = current.version if current else ""
    if _up_to_date(current, fetched):
        result = UpdateResult(action, "up_to_date", REPLACED, True, local, fetched.bundle.label)
        _audit(session, result, requested_by=requested_by, now=now)
        session.commit()
        return result
    failures = [f.as_dict() for f in _check_connections(session, settings, fetched, check)]
    if failures and not force:
        result = UpdateResult(action, "failed_checks", FAILED_CHECKS, False, local, fetched.bundle.label, failures)
        _audit(session, result, requested_by=requested_by, now=now)
        session.commit()
        return result
    bundle = fetched.bundle
    row = current or CaBundleState(name=BUNDLE_NAME)
    row.version, row.sha256, row.pem, row.certificates = bundle.label, bundle.sha256, bundle.pem, len(
        bundle.certificates)
    row.source_url, row.published_at, row.last_modified = fetched.source_url, bundle.published_at, now
    session.add(row)
    batch, job_ids = push_to_devices(session, settings=settings, version=bundle.label, now=now,
                                     requested_by=requested_by)
    result = UpdateResult(action, "forced" if failures else "updated", FORCED if failures else REPLACED, True,
                          local, bundle.label, failures, batch_id=str(batch.id) if batch else None,
                          devices=len(job_ids))
    _audit(session, result, requested_by=requested_by, now=now, forced=bool(failures))
    session.commit()
    publish_push(broker, job_ids, now=now)
    return result


def _audit(session: Session, result: UpdateResult, *, requested_by: str, now: datetime, forced: bool = False) -> None:
    session.add(CaBundleUpdate(
        action=result.action, requested_by=requested_by, outcome=result.outcome, forced=forced,
        old_version=result.local_version, new_version=result.latest_version, failed_servers=result.failed_servers,
        detail=result.message, batch_id=uuid.UUID(result.batch_id) if result.batch_id else None, created_at=now,
    ))
    CA_BUNDLE_UPDATES.labels(outcome=result.outcome).inc()
