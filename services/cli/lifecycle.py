"""``certfleet demo --lifecycle``: a fleet's certificates over time, in a few minutes.

The embedded stack runs with the CA simulator issuing certificates of a short life (``--lifetime``
seconds), the scheduler's passes made quick, and some devices' default keyrings expired. The
operator's part goes through the API as ``certfleet`` would do it: the fleet is enrolled over EST,
the CA publishes a new CA bundle which certfleet installs and pushes to every device, the health
check finds the expired keyrings (F0853), and ``regenerate-security-keyring default --all-expired``
clears them. Renewals need nobody: they start on their own when each certificate enters its
renewal window, spread out by each trustpoint's jitter.

What happens is read from the stack's database every half second and printed as it happens; a
summary table ends the run. Exit status 1 when a step did not finish in time or a device failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from services.cli.errors import CliError
from shared.domains import GLOBAL_DOMAIN_ID

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.engine import Engine

    from services.cli.api_client import CertfleetClient
    from shared.settings import Settings

GLOBAL = str(GLOBAL_DOMAIN_ID)
EST_USER = "lifecycle-enroller"
#: How often the fleet is looked at, and how often renewal progress may be reported.
POLL_SECONDS = 0.5
RENEWAL_REPORT_SECONDS = 5.0


@dataclass(frozen=True)
class Snapshot:
    """What the database says about the fleet at one moment."""

    devices: int = 0
    trustpoints: int = 0
    renewed: int = 0
    first_renewal: datetime | None = None
    last_renewal: datetime | None = None
    f0853_open: int = 0
    alerts_open: int = 0
    alerts_raised: int = 0
    alerts_cleared: int = 0
    devices_on_bundle: int = 0
    devices_checked: int = 0
    #: Trustpoints whose last renewal attempt failed, and one of their errors.
    renewals_failing: int = 0
    renewal_error: str | None = None


def observe(engine: Engine, *, bundle_version: str) -> Snapshot:
    from sqlalchemy import func
    from sqlmodel import Session, select

    from shared.alerts import open_states
    from shared.enums import AlertCode
    from shared.models import Alert, AlertEvent, Device, Trustpoint

    with Session(engine) as session:
        total, renewed, first, last = session.exec(select(
            func.count(Trustpoint.id), func.count(Trustpoint.last_renewal_at), func.min(Trustpoint.last_renewal_at),
            func.max(Trustpoint.last_renewal_at))).one()
        open_by_code = dict(session.exec(select(Alert.code, func.count()).where(Alert.state.in_(open_states()))
                                         .group_by(Alert.code)).all())
        by_type = dict(session.exec(select(AlertEvent.type, func.count()).group_by(AlertEvent.type)).all())
        on_bundle = session.exec(select(func.count()).select_from(Device)
                                 .where(Device.bundle_version == bundle_version)).one() if bundle_version else 0
        checked = session.exec(select(func.count()).select_from(Device)
                               .where(Device.health_checked_at.is_not(None))).one()
        devices = session.exec(select(func.count()).select_from(Device)).one()
        failing = session.exec(select(func.count()).select_from(Trustpoint)
                               .where(Trustpoint.renewal_failures > 0)).one()
        error = session.exec(select(Trustpoint.renewal_error_code, Trustpoint.renewal_error_message)
                             .where(Trustpoint.renewal_failures > 0).limit(1)).first()
    return Snapshot(devices=devices, trustpoints=total, renewed=renewed, first_renewal=first, last_renewal=last,
                    f0853_open=open_by_code.get(AlertCode.KEYRING_EXPIRED.value, 0),
                    alerts_open=sum(open_by_code.values()),
                    alerts_raised=by_type.get("io.certfleet.alert.raised", 0),
                    alerts_cleared=by_type.get("io.certfleet.alert.cleared", 0),
                    devices_on_bundle=on_bundle, devices_checked=checked, renewals_failing=failing,
                    renewal_error=f"{error[0]}: {error[1]}" if error else None)


def renewal_news(before: Snapshot, now: Snapshot, *, started: datetime) -> str | None:
    """A line about renewals when more trustpoints renewed since ``before``; None otherwise."""
    if now.renewed <= before.renewed or now.first_renewal is None or now.last_renewal is None:
        return None
    first = (now.first_renewal - started).total_seconds()
    latest = (now.last_renewal - started).total_seconds()
    return (f"renewals on their own: {now.renewed} of {now.trustpoints} trustpoints renewed "
            f"(first at +{first:.0f} s, latest at +{latest:.0f} s)")


@dataclass
class Step:
    name: str
    what: str = ""
    count: int = 0
    seconds: float = 0.0
    ok: bool = False


class Lifecycle:
    """The run: actions through the API, progress read from the database."""

    def __init__(self, client: CertfleetClient, engine: Engine, console: Console, *, timeout: float) -> None:
        self.client, self.engine, self.console, self.timeout = client, engine, console, timeout
        self.t0 = time.monotonic()
        self.started = datetime.now().astimezone()
        self.bundle_version = ""
        self.last = Snapshot()
        self.last_renewal_report = 0.0
        self.steps: list[Step] = []

    def say(self, text: str) -> None:
        self.console.print(f"[dim]+{time.monotonic() - self.t0:6.1f} s[/dim]  {text}")

    def poll(self) -> Snapshot:
        """Look at the fleet; report renewals as they come (at most every few seconds)."""
        now = observe(self.engine, bundle_version=self.bundle_version)
        if time.monotonic() - self.last_renewal_report >= RENEWAL_REPORT_SECONDS:
            news = renewal_news(self.last, now, started=self.started)
            if news:
                self.say(news)
                self.last_renewal_report = time.monotonic()
                self.last = now
        if now.renewed == self.last.renewed:
            self.last = now
        return now

    def until(self, step: Step, done: Callable[[Snapshot], bool], *, timeout: float | None = None) -> Snapshot:
        start = time.monotonic()
        deadline = start + (timeout or self.timeout)
        while True:
            snapshot = self.poll()
            if done(snapshot):
                step.ok, step.seconds = True, time.monotonic() - start
                return snapshot
            if time.monotonic() > deadline:
                step.seconds = time.monotonic() - start
                self.say(f"[red]{step.name}: not done after {step.seconds:.0f} s[/red]")
                return snapshot
            time.sleep(POLL_SECONDS)

    def step(self, name: str) -> Step:
        step = Step(name)
        self.steps.append(step)
        return step


def run_lifecycle(*, devices: int = 200, lifetime: int = 120, expired_keyrings: float = 0.05, threads: int = 8,
                  console: Console | None = None, settings: Settings | None = None) -> int:
    from rich.console import Console

    from services.cli.api_client import CertfleetClient
    from services.stack.embedded import EmbeddedStack
    from shared.logging import configure_logging
    from shared.settings import Settings

    if lifetime < 20:
        raise CliError("lifetime_too_short", "--lifetime must be at least 20 seconds: the fleet must enroll, "
                                             "and the renewal window begin, before the certificates end")
    console = console or Console()
    base = settings or Settings.from_env()
    configure_logging("WARNING" if base.log_level.upper() in ("DEBUG", "INFO") else base.log_level, "console")
    # Passes made quick for certificates that live minutes: renewals looked for every 2 s, alerts
    # every second, expiring meaning the last quarter of the life, health checked on request.
    quick = replace(base, renewal_interval_seconds=2, alert_conditions_seconds=1, health_check_seconds=3600,
                    ca_bundle_drift_seconds=3600, alert_expiring_days=lifetime * 0.25 / 86400,
                    renewal_retry_seconds=5.0, scheduler_tick_seconds=0.5)
    sim_options = {"expired_keyrings": expired_keyrings}
    with EmbeddedStack(quick, devices=devices, worker_threads=threads, sim_options=sim_options,
                       ca_options={"est_user": EST_USER, "est_password": _password(), "bundle_port": 0,
                                   "validity_seconds": lifetime}) as stack:
        console.print(f"embedded stack up: API {stack.api_url}, CA simulator {stack.ca.est_url} (certificates live "
                      f"{lifetime} s), {devices} simulated devices ({expired_keyrings:.0%} with an expired keyring)")
        with CertfleetClient(stack.api_url, stack.admin_token) as client:
            run = Lifecycle(client, stack.engine, console, timeout=max(60.0, lifetime * 1.5))
            _enroll(run, stack, devices)
            _ca_bundle(run, stack)
            _keyrings(run)
            _renewals(run, lifetime)
        console.print(summary_table(run.steps, run.last))
    failed = [s.name for s in run.steps if not s.ok]
    if failed:
        raise CliError("lifecycle_incomplete", f"these steps did not finish: {', '.join(failed)} (see above)")
    return 0


def _password() -> str:
    import secrets

    return secrets.token_urlsafe(18)


def _enroll(run: Lifecycle, stack, devices: int) -> None:
    step = run.step("enrollment")
    imported = run.client.import_devices(stack.sim.url)["imported"]
    obj = run.client.create_enrollment_object(
        name="lifecycle-est", enrollment_type="est", enrollment_url=stack.ca.est_url + "/", username=EST_USER,
        password=stack.ca_options["est_password"], key_type="ecdsa", key_size=256, organization="certfleet demo",
        include_fqdn=True)
    batch = run.client.start_bulk_enrollment(obj["id"], selection={"all": True}, domain_id=GLOBAL)
    run.say(f"imported {imported} devices; enrolling them all over EST (bulk enrollment {batch['id']})")

    def done(_: Snapshot) -> bool:
        progress = run.client.bulk_enrollment(batch["id"], domain_id=GLOBAL)
        step.count = progress["succeeded"]
        return progress["finished"]

    run.until(step, done)
    step.ok = step.ok and step.count == devices
    step.what = f"{step.count} of {devices} devices enrolled over EST"
    run.say(f"fleet enrolled: {step.what}; renewals will start on their own")


def _ca_bundle(run: Lifecycle, stack) -> None:
    from services.ca_sim.bundle_store import open_existing

    step = run.step("CA bundle")
    before = run.client.cert_update_status()
    published = open_existing(stack.ca.ca.paths.state_dir).publish()
    run.say(f"the CA published CA bundle version {published.version} (certfleet holds "
            f"{before.get('version') or 'none'}); certfleet update run now")
    result = run.client.cert_update_run_now()
    run.bundle_version = str(published.version)
    said = str(result.get("message") or result.get("outcome")).rstrip(".")
    run.say(f"certfleet: {said}; pushing it to every device")
    snapshot = run.until(step, lambda s: s.devices_on_bundle == s.devices > 0)
    step.count = snapshot.devices_on_bundle
    step.what = f"version {published.version} on {step.count} devices"
    run.say(f"CA bundle pushed: {step.what}")


def _keyrings(run: Lifecycle) -> None:
    from services.cli.api_client import ApiError

    raised = run.step("F0853 raised")
    asked = time.monotonic()
    run.client.run_schedule("device-health")
    run.say("health check of every device (schedule device-health run now)")
    snapshot = run.until(raised, lambda s: s.devices_checked >= s.devices and s.f0853_open > 0)
    # The alert pass may still be catching up with the last health answers: one more look.
    time.sleep(2 * POLL_SECONDS + 1)
    snapshot = run.poll()
    raised.count, raised.seconds = snapshot.f0853_open, time.monotonic() - asked
    raised.what = f"{raised.count} devices: default Keyring's certificate is invalid, reason: expired"
    run.say(f"F0853 on {raised.what}")

    cleared = run.step("F0853 cleared")
    try:
        batch = run.client.start_keyring_regeneration(all_expired=True, domain_id=GLOBAL)
    except ApiError as exc:
        run.say(f"[red]regenerate-security-keyring default --all-expired refused: {exc}[/red]")
        return
    run.say(f"system support regenerate-security-keyring default --all-expired: {batch.get('total', '?')} devices")
    run.until(cleared, lambda s: s.f0853_open == 0)
    cleared.count = raised.count
    cleared.what = f"{cleared.count} keyrings regenerated, every F0853 cleared"
    run.say(cleared.what)


def _renewals(run: Lifecycle, lifetime: int) -> None:
    step = run.step("renewal")
    snapshot = run.until(step, lambda s: s.trustpoints > 0 and s.renewed == s.trustpoints, timeout=lifetime * 1.5)
    step.count = snapshot.renewed
    if snapshot.first_renewal and snapshot.last_renewal:
        spread = (snapshot.last_renewal - snapshot.first_renewal).total_seconds()
        step.what = f"{snapshot.renewed} of {snapshot.trustpoints} renewed on their own, spread over {spread:.0f} s"
    else:
        step.what = f"{snapshot.renewed} of {snapshot.trustpoints} renewed"
    run.say(f"renewals: {step.what}")
    if not step.ok and snapshot.renewals_failing:
        # Said so the reader knows why, not only that: certfleet retries these with a backoff.
        run.say(f"[red]{snapshot.renewals_failing} renewal(s) failing, retried with a backoff; one said: "
                f"{snapshot.renewal_error}[/red]")


def summary_table(steps: list[Step], last: Snapshot):
    from rich.table import Table

    table = Table(title="certfleet demo --lifecycle")
    for column in ("step", "what happened", "took", "done"):
        table.add_column(column)
    for step in steps:
        table.add_row(step.name, step.what or "-", f"{step.seconds:.1f} s", "yes" if step.ok else "NO")
    table.add_row("alerts", f"{last.alerts_raised} raised, {last.alerts_cleared} cleared, {last.alerts_open} open",
                  "", "")
    return table
