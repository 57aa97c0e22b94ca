"""Certificates renew themselves, end to end: ``certfleet ca serve --validity-seconds`` issuing
certificates of 60 seconds, two controllers that both run the scheduler, two worker processes
and the device simulator, each its own process (PostgreSQL, Redis).

120 devices, half over EST and half over SCEP (P-256 keys), enrolled by two bulk enrollments,
renew with no operator action. Mid-renewal the controller leading the scheduler is killed with
SIGKILL; the other takes the lease over within one lease and goes on. In the end every
trustpoint holds a new certificate for a new key, installed before the first one expired by
exactly one renewal job, and the renewals were published across the jitter window, not at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from cryptography import x509

from services.cli.api_client import CertfleetClient
from tests.support.batch_checks import World, fault_world, poll
from tests.support.ca_peers import spki
from tests.support.procs import Proc, ca_ready_urls
from tests.support.token_checks import assert_revocation_holds_on_every_controller

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/2"
DEVICES = 120
USER, PASSWORD, CHALLENGE = "ftd-renewer", "Renew-Est-Secret-19", "Renew-Scep-Challenge-23"
#: Seconds every issued certificate lasts; the CA starts it a tenth of that before issuance. Long
#: enough that the last trustpoint due still has some 20 s to renew on a machine busy with
#: other tests: what is checked is that renewal runs before expiry, not how fast a loaded
#: machine turns the fleet's exchanges round.
VALIDITY = 60
LIFETIME = timedelta(seconds=VALIDITY * 1.1)
#: The renewal window is the last half of the lifetime; renewal times spread over 40 % of it.
FRACTION, SPREAD = 0.5, 0.4
WINDOW = LIFETIME * FRACTION
JITTER = WINDOW * SPREAD
LEASE, TICK = 3.0, 0.5
#: Certificate times are whole seconds, job times are not.
GRACE = timedelta(seconds=1)
SCHEDULER_ENV = {
    "CERTFLEET_RENEWAL_INTERVAL_SECONDS": "1",
    "CERTFLEET_RENEWAL_SPREAD": str(SPREAD),
    "CERTFLEET_SCHEDULER_LEASE_SECONDS": str(LEASE),
    "CERTFLEET_SCHEDULER_TICK_SECONDS": str(TICK),
}


@pytest.fixture
def ca(tmp_path):
    env = {**os.environ, "CERTFLEET_CA_EST_PASSWORD": PASSWORD, "CERTFLEET_CA_SCEP_CHALLENGE": CHALLENGE,
           "CERTFLEET_LOG_LEVEL": "WARNING"}
    proc = Proc("ca", ["ca", "serve", "--state-dir", str(tmp_path / "ca"), "--est-port", "0", "--scep-port", "0",
                       "--est-user", USER, "--validity-seconds", str(VALIDITY)], env, tmp_path)
    try:
        yield ca_ready_urls(proc)
    finally:
        proc.stop()


@dataclass(frozen=True)
class Issued:
    """A trustpoint's identity certificate as the database holds it."""

    serial: str
    public_key: bytes
    not_before: datetime
    not_after: datetime
    job_id: str
    #: The trustpoint's renewal time when the certificate was read.
    due_at: datetime | None


def window(cert: Issued) -> timedelta:
    """The certificate's renewal window: the last part of its life."""
    return (cert.not_after - cert.not_before) * FRACTION


_IDENTITIES = ("SELECT c.trustpoint_id, c.serial_number, c.pem, c.not_before, c.not_after, c.job_id, "
               "t.renewal_due_at FROM certificate c JOIN trustpoint t ON t.id = c.trustpoint_id "
               "JOIN job j ON j.id = c.job_id WHERE c.role = 'identity'")


def _issued(rows) -> dict[str, Issued]:
    return {str(tp): Issued(serial, spki(x509.load_pem_x509_certificate(pem.encode()).public_key()), nb, na,
                            str(job), due)
            for tp, serial, pem, nb, na, job, due in rows}


def identities(world: World) -> dict[str, Issued]:
    """Each trustpoint's identity certificate now."""
    with world.engine.connect() as conn:
        return _issued(conn.execute(sa.text(_IDENTITIES)).all())


def enrolled(world: World) -> dict[str, Issued]:
    """The identity certificates enrollment installed that no renewal has replaced yet."""
    with world.engine.connect() as conn:
        return _issued(conn.execute(sa.text(_IDENTITIES + " AND j.reason <> 'renewal'")).all())


def renewal_jobs(world: World) -> list[sa.Row]:
    with world.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT id, trustpoint_id, state, error_code, created_at, finished_at FROM job "
            "WHERE reason = 'renewal' ORDER BY created_at")).all()


def renewed_once(world: World) -> int:
    """Trustpoints a renewal job has renewed."""
    with world.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT count(DISTINCT trustpoint_id) FROM job WHERE reason = 'renewal' AND state = 'succeeded'"
        )).scalar_one()


def scheduler_lease(world: World) -> tuple[str, int]:
    with world.engine.connect() as conn:
        return conn.execute(sa.text("SELECT holder, token FROM leader_lease WHERE name = 'scheduler'")).one()


def pid_of(holder: str) -> int:
    """A lease holder is ``hostname:pid:nonce``."""
    return int(holder.split(":")[1])


def wait_for_renewals(world: World, count: int, *, jobs: bool = False) -> None:
    """Until ``count`` trustpoints are renewed, or with ``jobs`` until ``count`` renewal jobs exist.
    Generous: a certificate comes due some 40 s after it was issued, at the latest."""
    deadline = time.monotonic() + 3 * VALIDITY
    while (len(renewal_jobs(world)) if jobs else renewed_once(world)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} renewals in {3 * VALIDITY} s\n{world.logs()}"
        time.sleep(0.1)


def enroll_fleet(world: World, urls: dict[str, list[str]]) -> dict[str, Issued]:
    """Half the fleet over EST, half over SCEP, each with one bulk enrollment, at once. Returns the
    certificates enrollment installed, read while it runs: the first renewals may come due before
    the last devices have enrolled, and a renewal replaces its trustpoint's certificate."""
    client = world.client
    devices = sorted(client.devices(), key=lambda d: d["name"])
    common = dict(key_type="ecdsa", key_size=256, organization="Example Corp", renew_before_fraction=FRACTION)
    est = client.create_enrollment_object(name="vpn-est", enrollment_type="est", enrollment_url=urls["est"][0],
                                          username=USER, password=PASSWORD, **common)
    scep = client.create_enrollment_object(name="vpn-scep", enrollment_type="scep",
                                           enrollment_url=urls["scep"][0], challenge_password=CHALLENGE, **common)
    assert est["auto_renew"] and scep["auto_renew"]
    half = DEVICES // 2
    batches = [client.start_bulk_enrollment(obj["id"], selection={"device_ids": [d["id"] for d in chosen]})
               for obj, chosen in ((est, devices[:half]), (scep, devices[half:]))]
    installed: dict[str, Issued] = {}
    deadline = time.monotonic() + 90
    while True:
        for tp, cert in enrolled(world).items():
            installed.setdefault(tp, cert)
        progress = [poll(world, batch) for batch in batches]
        if all(p is not None and p["finished"] for p in progress):
            break
        assert time.monotonic() < deadline, f"enrollment not done in 90 s: {progress}\n{world.logs()}"
        time.sleep(0.3)
    for p in progress:
        assert (p["succeeded"], p["failed"]) == (half, 0), p["failures"]
    for tp, cert in enrolled(world).items():
        installed.setdefault(tp, cert)
    assert len(installed) == DEVICES
    return installed


def test_a_fleet_renews_itself_once_each_while_the_scheduler_leader_is_killed(tmp_path, ca):
    sim_args = ["--trust-anchor", str(tmp_path / "ca" / "tls-ca.pem"), "--ca-wait-seconds", "1"]
    with fault_world(tmp_path, devices=DEVICES, sim_args=sim_args, env=SCHEDULER_ENV, controllers=2,
                     redis_url=REDIS_URL) as world:
        # Replicas share one token table: a revocation through one holds at once on the other.
        assert_revocation_holds_on_every_controller(world.stack.api_urls, world.stack.token)
        first = enroll_fleet(world, ca)
        # Each trustpoint got its renewal time in its certificate's jitter window, spread over it.
        assert all(was.due_at is not None for was in first.values())
        offsets = [was.due_at - (was.not_after - window(was)) for was in first.values()]
        assert all(timedelta(0) <= offset <= window(was) * SPREAD for offset, was in zip(offsets, first.values(),
                                                                                           strict=True)), offsets
        assert max(offsets) - min(offsets) >= JITTER * 0.8, (min(offsets), max(offsets))

        # Mid-renewal, the leader dies without a word.
        wait_for_renewals(world, DEVICES // 4, jobs=True)
        holder, token = scheduler_lease(world)
        leader = next(p for p in world.stack.controller_procs() if p.popen.pid == pid_of(holder))
        (survivor,) = [p for p in world.stack.controller_procs() if p is not leader]
        leader.kill(signal.SIGKILL)
        killed = time.monotonic()
        published_before = len(renewal_jobs(world))
        while scheduler_lease(world)[0] == holder:
            assert time.monotonic() - killed < 3 * LEASE, f"no takeover within {3 * LEASE:g} s\n{world.logs()}"
            time.sleep(0.05)
        took_over, took_over_at = time.monotonic() - killed, datetime.now(UTC)
        new_holder, new_token = scheduler_lease(world)
        assert pid_of(new_holder) == survivor.popen.pid and new_token > token
        # Within one lease and the survivor's next tick, give or take a busy machine's second.
        assert took_over <= LEASE + TICK + 1.5, took_over

        wait_for_renewals(world, DEVICES)
        # The API first: a trustpoint it shows busy has its next renewal among the jobs read after.
        survivor_url = world.stack.api_urls[world.stack.controller_procs().index(survivor)]
        with CertfleetClient(survivor_url, world.stack.token) as client:
            seen = client.trustpoints()
            schedules = {s["name"]: s for s in client.schedules()}
            jobs = renewal_jobs(world)
            sample = [client.job(str(job.id)) for job in jobs[:: len(jobs) // 3]]
        now = identities(world)
        with world.engine.connect() as conn:
            failed = conn.execute(sa.text("SELECT count(*) FROM job WHERE state = 'failed'")).scalar_one()

    # Nothing failed, and every trustpoint's certificate was renewed by exactly one job: a later
    # renewal job, if the test ran that long, is for the certificate the first one installed,
    # which comes due no sooner than the start of its own renewal window.
    assert failed == 0
    per_trustpoint: dict[str, list[sa.Row]] = defaultdict(list)
    for job in jobs:
        per_trustpoint[str(job.trustpoint_id)].append(job)
    assert set(per_trustpoint) == set(first)
    firsts = []
    for tp, was in first.items():
        mine = per_trustpoint[tp]
        for earlier, later in zip(mine, mine[1:], strict=False):
            # The certificate ``earlier`` installed was issued after it was created, and is due
            # for renewal no sooner than its window's start.
            assert later.created_at - earlier.created_at >= timedelta(seconds=VALIDITY) - window(was) - GRACE, mine
        job = mine[0]
        firsts.append((job, was))
        # Published once due; a new certificate for a new key installed before the first one expired.
        assert job.state == "succeeded" and was.not_after - window(was) <= job.created_at, (job, was)
        assert job.finished_at < was.not_after, (job, was)
        assert now[tp].serial != was.serial and now[tp].public_key != was.public_key, tp
        assert now[tp].job_id in {str(j.id) for j in mine}, (now[tp], mine)

    # The renewals were published across the jitter window as it fell due, not in one go.
    created = sorted(job.created_at for job, _ in firsts)
    assert created[-1] - created[0] >= JITTER / 2, (created[0], created[-1])
    per_second = Counter(t.replace(microsecond=0) for t in created)
    assert len(per_second) >= 5 and max(per_second.values()) <= DEVICES // 2, per_second
    # A pass a second, plus the failover's pause.
    late = [(job, was) for job, was in firsts
            if job.created_at > was.not_after - window(was) + window(was) * SPREAD + timedelta(seconds=LEASE + 3)]
    assert not late, late

    # The leader's death lost nothing: the survivor went on publishing renewals.
    assert published_before < DEVICES
    assert any(job.created_at > took_over_at for job, _ in firsts)

    # What an operator sees through the API of the surviving controller.
    assert len(seen) == DEVICES
    for t in seen:
        assert t["last_renewal_at"] is not None and t["renewal_failures"] == 0, t
        assert t["identity_certificate"]["serial_number"] != first[t["id"]].serial, t
        if len(per_trustpoint[t["id"]]) == 1:  # not on its second round yet: due again in the new window
            new = t["identity_certificate"]
            not_before, not_after = (datetime.fromisoformat(new[k]) for k in ("not_before", "not_after"))
            start = not_after - (not_after - not_before) * FRACTION
            assert t["identity_status"] == "available", t
            assert start <= datetime.fromisoformat(t["renewal_due_at"]) <= start + JITTER + GRACE, t
    assert all(job["reason"] == "renewal" for job in sample), sample
    assert schedules["renewal"]["last_outcome"] == "succeeded", schedules
