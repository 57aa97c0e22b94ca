"""The schedules certfleet runs, and what each run does.

A run publishes events (job ids on the queues); it never does device work itself. Each
definition is one entry here: a name, its timing (from the settings) and its run function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import dramatiq
from sqlmodel import Session

from services.controller.scheduling.renewal_pass import run_renewal_pass
from services.controller.scheduling.timing import Timing
from shared.settings import Settings

#: How often the audit log is pruned: hourly, so each pass deletes about an hour's entries.
AUDIT_RETENTION_SECONDS = 3600


@dataclass(frozen=True)
class RunContext:
    session: Session
    broker: dramatiq.Broker
    settings: Settings
    now: datetime
    #: Called in every transaction the run commits: raises when the leader lost its lease.
    fence: Callable[[Session], None]


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    timing: Timing
    #: Does the run; returns what it did, in a line (shown as the run's detail).
    run: Callable[[RunContext], str]
    description: str = ""


def _renewal(ctx: RunContext) -> str:
    return run_renewal_pass(ctx.session, ctx.broker, now=ctx.now, settings=ctx.settings, fence=ctx.fence).describe()


def _ca_bundle_update(ctx: RunContext) -> str:
    from services.controller.ca_bundles.updates import run_update

    result = run_update(ctx.session, ctx.broker, ctx.settings, now=ctx.now, force=False, action="schedule",
                        requested_by="schedule ca-bundle-update")
    if not result.ok:
        raise RuntimeError(f"{result.message} " + "; ".join(f"{f['server']}: {f['reason']}"
                                                             for f in result.failed_servers))
    return f"{result.message} (version {result.latest_version}, {result.outcome})"


def _ca_bundle_drift(ctx: RunContext) -> str:
    from services.controller.ca_bundles.push import push_drifted

    return push_drifted(ctx.session, ctx.broker, settings=ctx.settings, now=ctx.now, fence=ctx.fence)


def _revocation_scan(ctx: RunContext) -> str:
    from services.controller.revocation.scan import run_revocation_scan

    return run_revocation_scan(ctx.session, now=ctx.now, fence=ctx.fence).describe()


def _alert_conditions(ctx: RunContext) -> str:
    from services.controller.alerts.conditions import gate_circuits, run_alert_conditions

    with gate_circuits(ctx.settings) as circuits:
        return run_alert_conditions(ctx.session, now=ctx.now, settings=ctx.settings, circuits=circuits,
                                    fence=ctx.fence)


def _device_health(ctx: RunContext) -> str:
    from services.controller.scheduling.health_pass import run_health_pass

    return run_health_pass(ctx.session, ctx.broker, settings=ctx.settings).describe()


def _domain_deletions(ctx: RunContext) -> str:
    from services.controller.domains.deletion import run_pass

    return run_pass(ctx.session, now=ctx.now, fence=ctx.fence)


def _audit_retention(ctx: RunContext) -> str:
    from datetime import timedelta

    from services.controller.audit.store import prune

    days = ctx.settings.audit_retention_days
    pruned = prune(ctx.session, before=ctx.now - timedelta(days=days), fence=ctx.fence)
    return f"{pruned} audit entries older than {days} days pruned"


def default_schedules(settings: Settings, *, bundle_cron: str = "0 3 * * *") -> list[ScheduleSpec]:
    """``bundle_cron``: the daily CA-bundle update's time, chosen once per installation (see
    :mod:`services.controller.ca_bundles.auto_update`)."""
    return [
        ScheduleSpec("renewal", Timing(interval_seconds=settings.renewal_interval_seconds), _renewal,
                     "re-enroll trustpoints whose certificate is due for renewal"),
        ScheduleSpec("ca-bundle-update", Timing(cron=bundle_cron), _ca_bundle_update,
                     "replace certfleet's CA bundle with the latest when every connection check passes"),
        ScheduleSpec("ca-bundle-drift", Timing(interval_seconds=settings.ca_bundle_drift_seconds), _ca_bundle_drift,
                     "push the current CA bundle to devices that do not hold it"),
        ScheduleSpec("revocation-scan", Timing(interval_seconds=settings.revocation_scan_seconds), _revocation_scan,
                     "ask the CAs whether installed identity certificates are revoked, and mark those that are"),
        ScheduleSpec("alert-conditions", Timing(interval_seconds=settings.alert_conditions_seconds),
                     _alert_conditions, "raise, update and clear alerts from what certfleet knows"),
        ScheduleSpec("device-health", Timing(interval_seconds=settings.health_check_seconds), _device_health,
                     "read every device's default keyring (the workers, a batch of devices per message)"),
        ScheduleSpec("domain-deletions", Timing(interval_seconds=settings.domain_deletion_seconds), _domain_deletions,
                     "complete the domain deletions whose devices' trustpoints are all removed"),
        ScheduleSpec("audit-retention", Timing(interval_seconds=AUDIT_RETENTION_SECONDS), _audit_retention,
                     "delete audit entries older than CERTFLEET_AUDIT_RETENTION_DAYS"),
    ]


def installation_schedules(session: Session, settings: Settings) -> list[ScheduleSpec]:
    """The schedules with this installation's own daily CA-bundle time."""
    from services.controller.ca_bundles.auto_update import daily_cron, installation_seed

    return default_schedules(settings, bundle_cron=daily_cron(installation_seed(session)))
