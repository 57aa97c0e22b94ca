"""Renewal benchmark: a fleet enrolled in one batch comes due for renewal within one day, and the
scheduler's renewal pass runs every tick of that day against PostgreSQL.

The database is filled directly (COPY), not through enrollments: N trustpoints of EST, SCEP and
self-signed enrollment objects (automatic renewal on, a renewal window of two days before the
end of a one-year certificate) whose certificates were issued within 15 minutes of each other,
each with its identity certificate row (a placeholder PEM) and its renewal time computed by
``shared.renewal.renewal_due_at`` with the key and spread the worker uses. With the default
spread (CERTFLEET_RENEWAL_SPREAD=0.5) the fleet's renewal times fall across one day. Beside
them, as many trustpoints that the pass must not renew: certificates issued later (due in
months), manual and PKCS#12 trustpoints and trustpoints of an object with automatic renewal
off (their renewal times in the same day), and trustpoints with no renewal time.

Every tick of that day (the renewal interval, 60 s by default, on an injected clock; none is
skipped) calls the real ``run_renewal_pass`` with the scheduler's lease fence, publishing on
the in-process broker. Between ticks, outside the measurement and on another connection, the
"workers" finish the tick's jobs and give the renewed trustpoints their next renewal time, as
a successful renewal does, and the two tables changed get the VACUUM and ANALYZE autovacuum
would give them at its default thresholds (``--no-vacuum``: none, as on a server whose
autovacuum is off or behind; then the statistics stay those of the morning).

Prints JSON lines: one per fleet size (pass time per tick, renewals started per minute against
what the jitter promises, the database backend's CPU per pass read from /proc/<backend
pid>/stat), the plan of the pass's candidate query (EXPLAIN ANALYZE), a scaling line comparing
the sizes, and the targets.

    make bench                                                     # 10,000 and 100,000
    .venv/bin/python bench/renewal.py --trustpoints 100000

Not part of ``make test``. Needs a local PostgreSQL (a throwaway database is created and
dropped, as the tests do).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlmodel import Session, create_engine  # noqa: E402

from bench.stopping import stoppable  # noqa: E402
from services.controller.scheduling import lease  # noqa: E402
from services.controller.scheduling.renewal_pass import run_renewal_pass  # noqa: E402
from shared.broker import make_broker  # noqa: E402
from shared.db import init_db  # noqa: E402
from shared.enums import EnrollmentType as ET  # noqa: E402
from shared.events import BULK_QUEUE  # noqa: E402
from shared.models import GLOBAL_DOMAIN_ID, EnrollmentObject  # noqa: E402
from shared.renewal import RenewalPolicy, renewal_due_at  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.pg import fresh_database  # noqa: E402

#: When the fleet was enrolled, in one batch lasting BATCH.
ISSUED = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
BATCH = timedelta(minutes=15)
VALIDITY = timedelta(days=365)
#: The renewal window of the benchmark's enrollment objects, in days before a certificate ends.
WINDOW_DAYS = 2
RENEWABLE_TYPES = (ET.EST, ET.SCEP, ET.SELF_SIGNED)
#: Idle time simulated before the first renewal time and after the last (at least two ticks).
MARGIN = timedelta(minutes=30)
#: The pass's time per tick at 100,000 trustpoints (the issue's target).
TARGET_PASS_SECONDS = 1.0
#: Below this many trustpoints the table is a few hundred pages, and a scan can be the right plan.
INDEX_MATTERS_FROM = 10_000
PLACEHOLDER_PEM = "-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n"


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- filling the database -------------------------------------------------------------------


@dataclass
class Fleet:
    due: int
    not_due: dict[str, int]
    #: Renewal times of the trustpoints the pass must renew (the fleet's day).
    first_due: datetime
    last_due: datetime
    policy: RenewalPolicy
    load_seconds: float = 0.0


def make_objects(session: Session) -> dict[str, EnrollmentObject]:
    objects = {}
    for name, kind, auto in [("est", ET.EST, True), ("scep", ET.SCEP, True), ("self_signed", ET.SELF_SIGNED, True),
                             ("manual", ET.MANUAL, True), ("pkcs12", ET.PKCS12, True),
                             ("est_auto_renew_off", ET.EST, False)]:
        objects[name] = EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name=f"bench-{name}", enrollment_type=kind,
                                         auto_renew=auto, renew_before_days=WINDOW_DAYS, key_type="ecdsa",
                                         key_size=256)
        session.add(objects[name])
    session.commit()
    return objects


def fill(database_url: str, objects: dict[str, EnrollmentObject], *, due: int, not_due_share: float,
         settings: Settings, seed: int) -> Fleet:
    """COPY the devices, trustpoints and identity certificates, then VACUUM ANALYZE (a database
    in service has its statistics)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    policy = RenewalPolicy(days=WINDOW_DAYS)
    others = round(due * not_due_share)
    # What the pass must leave alone: most certificates issued later, the rest in the same batch
    # but of methods certfleet does not renew, or of an object with automatic renewal off, or
    # without a renewal time (a renewal job out, a CA-only trustpoint).
    later = round(others * 0.7)
    not_renewable = auto_off = round(others * 0.1)
    unplanned = others - later - not_renewable - auto_off
    cohorts = ([("due", objects[RENEWABLE_TYPES[i % 3].value], i / due) for i in range(due)]
               + [("later", objects[RENEWABLE_TYPES[i % 3].value], 30 + 300 * i / max(later, 1)) for i in range(later)]
               + [("not_renewable", objects["manual" if i % 2 else "pkcs12"], i / max(not_renewable, 1))
                  for i in range(not_renewable)]
               + [("auto_renew_off", objects["est_auto_renew_off"], i / max(auto_off, 1)) for i in range(auto_off)]
               + [("unplanned", objects[RENEWABLE_TYPES[i % 3].value], None) for i in range(unplanned)])
    rng.shuffle(cohorts)
    devices, trustpoints, certificates = [], [], []
    first_due = last_due = None
    for n, (cohort, obj, offset) in enumerate(cohorts):
        device_id, tp_id, cert_id = (random_uuid(rng) for _ in range(3))
        serial = f"{rng.getrandbits(64):016x}"
        # offset: share of the enrollment batch (due, same-day cohorts), or days after it (later).
        if cohort == "later":
            not_before = ISSUED + timedelta(days=offset)
        else:
            not_before = ISSUED + BATCH * (offset or 0)
        not_after = not_before + VALIDITY
        due_at = None if cohort == "unplanned" else renewal_due_at(
            not_before=not_before, not_after=not_after, policy=policy, key=f"{tp_id}:{serial}",
            spread=settings.renewal_spread)
        if cohort == "due":
            first_due = due_at if first_due is None else min(first_due, due_at)
            last_due = due_at if last_due is None else max(last_due, due_at)
        name, issued = f"bench-{n:07d}", not_before.isoformat()
        devices.append((device_id, GLOBAL_DOMAIN_ID, name, "FTD-3110", f"SN{n:09d}", "", "",
                        f"http://127.0.0.1:9/api/devices/{name}", "f", "", issued))
        trustpoints.append((tp_id, device_id, GLOBAL_DOMAIN_ID, obj.id, obj.name, ET(obj.enrollment_type).value,
                            "available", "available", issued, issued, issued,
                            None if due_at is None else due_at.isoformat(), 0))
        certificates.append((cert_id, tp_id, "identity", 0, PLACEHOLDER_PEM, f"CN={name}", "CN=bench CA", serial,
                             issued, not_after.isoformat(), "EC", 256, "ecdsa-with-SHA256",
                             f"{rng.getrandbits(256):064x}", issued))
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            # The rows are consistent by construction: foreign-key triggers off while loading.
            conn.execute("SET LOCAL session_replication_role = replica")
            copy_rows(conn, "device", "id, domain_id, name, model, serial, ip_address, fqdn, management_url, "
                      "weak_crypto, bundle_version, created_at", devices)
            copy_rows(conn, "trustpoint", "id, device_id, domain_id, enrollment_object_id, name, enrollment_type, "
                      "ca_status, identity_status, created_at, updated_at, status_changed_at, renewal_due_at, "
                      "renewal_failures", trustpoints)
            copy_rows(conn, "certificate", "id, trustpoint_id, role, chain_position, pem, subject, issuer, "
                      "serial_number, not_before, not_after, key_algorithm, key_size, signature_algorithm, "
                      "fingerprint_sha256, created_at", certificates)
        conn.execute("VACUUM ANALYZE")
    return Fleet(due=due, not_due={"later": later, "not_renewable_same_day": not_renewable,
                                   "auto_renew_off_same_day": auto_off, "no_renewal_time": unplanned},
                 first_due=first_due, last_due=last_due, policy=policy, load_seconds=time.perf_counter() - started)


def random_uuid(rng: random.Random) -> str:
    digits = f"{rng.getrandbits(128):032x}"
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"


def copy_rows(conn: psycopg.Connection, table: str, columns: str, rows: list[tuple]) -> None:
    """COPY in text format, written in large chunks (psycopg's write_row costs more than the server)."""
    def text(value) -> str:
        return "\\N" if value is None else str(value).replace("\n", "\\n")
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for start in range(0, len(rows), 10_000):
            copy.write("".join("\t".join(map(text, row)) + "\n" for row in rows[start:start + 10_000]))


# --- measuring ------------------------------------------------------------------------------


class BackendCpu:
    """CPU the scheduler session's PostgreSQL backend spent: utime + stime from /proc/<pid>/stat,
    readable when the server runs on this machine (pg_stat_statements would only give execution
    time, and needs the server started with it preloaded)."""

    def __init__(self, session: Session) -> None:
        self.pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
        preloaded = session.connection().exec_driver_sql("SHOW shared_preload_libraries").scalar()
        session.commit()
        self.pg_stat_statements = "pg_stat_statements" in preloaded
        self.source = (f"/proc/{{backend pid}}/stat of the scheduler session's backend, utime+stime in ticks of "
                       f"{1000 // os.sysconf('SC_CLK_TCK')} ms" if self.seconds() is not None else None)

    def seconds(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the server runs elsewhere
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CandidateQuery:
    """The SELECT the pass sends to find due trustpoints, as sent (caught at the cursor), to be
    explained at another tick's time."""

    def __init__(self, engine) -> None:
        self.statement: str | None = None
        self.parameters: dict | None = None
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.statement is None and statement.lstrip().startswith("SELECT trustpoint.id"):
            self.statement, self.parameters = statement, dict(parameters)

    def explain(self, database_url: str, *, now: datetime) -> list[str]:
        parameters = {k: (now if isinstance(v, datetime) else v) for k, v in self.parameters.items()}
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + self.statement, parameters).fetchall()
            conn.rollback()
        return [row[0] for row in rows]


def plan_summary(plan: list[str], *, at: datetime) -> dict:
    """What a plan shows at a glance: whether it reads the renewal index or scans the table, the
    rows it read through the index, the pages it touched and its execution time."""
    # EXPLAIN gives rows per loop (per process, when parallel).
    index_rows = [int(rows) * int(loops) for line in plan if "ix_trustpoint_renewal" in line
                  for rows, loops in re.findall(r"actual time=\S+ rows=(\d+) loops=(\d+)", line)]
    buffers = next((line for line in plan if "Buffers:" in line), "")
    return {
        "at": at.isoformat(),
        "reads_ix_trustpoint_renewal": bool(index_rows),
        "seq_scan_on_trustpoint": any("Seq Scan on trustpoint" in line for line in plan),
        # Rows an index scan returned; a bitmap scan counts every entry it read, dead ones too.
        "index_rows": sum(index_rows),
        "pages_touched": sum(int(n) for n in re.findall(r"=(\d+)", buffers)),
        "execution_ms": float(re.search(r"Execution Time: ([\d.]+)", plan[-1]).group(1)),
    }


class Autovacuum:
    """What autovacuum does for the two tables the day changes, at its default thresholds: VACUUM
    a table once the rows it changed pass a fifth of it, ANALYZE once they pass a tenth; looked at
    once a tick, as autovacuum looks once a minute. The day is squeezed into minutes (and a test
    server may run with autovacuum off), so left alone the tables would end the day with every
    row a renewal changed still dead in them and their statistics from the morning."""

    def __init__(self, database_url: str, rows: dict[str, int], *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.server_autovacuum = self.conn.execute("SHOW autovacuum").fetchone()[0]
        self.rows = dict(rows)
        self.dead = dict.fromkeys(rows, 0)
        self.changed = dict.fromkeys(rows, 0)
        self.runs = {table: {"vacuums": 0, "analyzes": 0} for table in rows}

    def record(self, table: str, *, updated: int = 0, inserted: int = 0) -> None:
        self.rows[table] += inserted
        self.dead[table] += updated
        self.changed[table] += updated + inserted

    def tick(self) -> None:
        if not self.enabled:
            return
        for table in self.rows:
            if self.dead[table] > 50 + 0.2 * self.rows[table]:
                self.conn.execute(f"VACUUM ANALYZE {table}")
                self.runs[table]["vacuums"] += 1
                self.runs[table]["analyzes"] += 1
                self.dead[table] = self.changed[table] = 0
            elif self.changed[table] > 50 + 0.1 * self.rows[table]:
                self.conn.execute(f"ANALYZE {table}")
                self.runs[table]["analyzes"] += 1
                self.changed[table] = 0

    def close(self) -> None:
        self.conn.close()


def finish_jobs(conn: psycopg.Connection, *, now: datetime, policy: RenewalPolicy, spread: float,
                rng: random.Random) -> int:
    """What the workers do with the tick's jobs: each renewal succeeds, its trustpoint gets its
    next renewal time from its new certificate (the certificate rows are not rewritten: the pass
    does not read them)."""
    renewed = [row[0] for row in conn.execute(
        "UPDATE job SET state = 'succeeded', started_at = %s, finished_at = %s "
        "WHERE state = 'queued' AND reason = 'renewal' RETURNING trustpoint_id", (now, now))]
    if renewed:
        due = [renewal_due_at(not_before=now, not_after=now + VALIDITY, policy=policy,
                              key=f"{tp}:{rng.getrandbits(64):016x}", spread=spread) for tp in renewed]
        conn.execute("UPDATE trustpoint SET renewal_due_at = v.due, last_renewal_at = %s "
                     "FROM unnest(%s::uuid[], %s::timestamptz[]) AS v(id, due) WHERE trustpoint.id = v.id",
                     (now, renewed, due))
    conn.commit()
    return len(renewed)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]


def poisson_expected_max(mean: float, bins: int) -> int:
    """The per-minute count that ``bins`` minutes of independent random arrivals at ``mean`` per
    minute exceed with even odds: what a perfectly random jitter gives as its busiest minute."""
    if mean <= 0:
        return 0
    k, term, below = 0, math.exp(-mean), 0.0
    while True:
        below += term
        if bins * (1 - below) < 0.5:
            return k
        k += 1
        term *= mean / k


@dataclass
class Day:
    pass_seconds: list[float] = field(default_factory=list)
    idle_before: list[float] = field(default_factory=list)
    idle_after: list[float] = field(default_factory=list)
    per_minute: Counter = field(default_factory=Counter)
    db_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    published: int = 0
    #: The candidate query's plan at a few moments: its summary, and the whole plan at midday.
    plans: dict[str, dict] = field(default_factory=dict)
    midday_plan: list[str] = field(default_factory=list)
    db_source: str | None = None
    pg_stat_statements: bool = False
    server_autovacuum: str = ""
    #: VACUUMs and ANALYZEs run during the day, per table, as autovacuum would.
    vacuum_runs: dict[str, dict] = field(default_factory=dict)


def run(due: int, *, not_due_share: float, tick_seconds: int | None, seed: int,
        vacuum: bool = True) -> tuple[dict, dict]:
    with fresh_database() as database_url:
        settings = Settings.from_env({**os.environ, "CERTFLEET_DATABASE_URL": database_url,
                                      "CERTFLEET_BROKER_URL": ""})
        tick = timedelta(seconds=tick_seconds or settings.renewal_interval_seconds)
        # One connection, so its backend is the one whose CPU is read; pre-ping as the controller's pool does.
        engine = create_engine(settings.sqlalchemy_url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        try:
            init_db(engine)
            with Session(engine, expire_on_commit=False) as session:
                objects = make_objects(session)
            fleet = fill(database_url, objects, due=due, not_due_share=not_due_share, settings=settings, seed=seed)
            progress(f"{due} due + {sum(fleet.not_due.values())} other trustpoints loaded in "
                     f"{fleet.load_seconds:.1f} s; renewal times from {fleet.first_due:%Y-%m-%d %H:%M} to "
                     f"{fleet.last_due:%Y-%m-%d %H:%M}")
            day = simulate(engine, database_url, settings, fleet, tick=tick, seed=seed, vacuum=vacuum)
            with psycopg.connect(database_url) as conn:
                jobs, renewed = conn.execute(
                    "SELECT count(*), count(DISTINCT trustpoint_id) FROM job WHERE reason = 'renewal'").fetchone()
        finally:
            engine.dispose()
    return summarize(fleet, day, settings=settings, tick=tick, jobs=jobs, renewed=renewed, vacuum=vacuum), {
        "benchmark": "renewal_candidate_query_plan", "trustpoints_due_in_the_day": due, **day.plans,
        "plan_at_midday": day.midday_plan}


def simulate(engine, database_url: str, settings: Settings, fleet: Fleet, *, tick: timedelta, seed: int,
             vacuum: bool) -> Day:
    broker = make_broker(Settings(broker_url=""))
    candidate = CandidateQuery(engine)
    rng = random.Random(seed + 1)
    day = Day()
    margin = max(MARGIN, 2 * tick)
    start, end = fleet.first_due - margin, fleet.last_due + margin
    midday = fleet.first_due + (fleet.last_due - fleet.first_due) / 2

    def explain(moment: str, at: datetime) -> None:
        plan = candidate.explain(database_url, now=at)
        day.plans[moment] = plan_summary(plan, at=at)
        if moment == "midday":
            day.midday_plan = plan

    autovacuum = Autovacuum(database_url, {"trustpoint": fleet.due + sum(fleet.not_due.values()), "job": 0},
                            enabled=vacuum)
    with Session(engine, expire_on_commit=False) as session, psycopg.connect(database_url) as workers:
        held = lease.acquire(session, name=lease.SCHEDULER, holder="renewal-bench", now=start,
                             lease_seconds=settings.scheduler_lease_seconds)
        cpu = BackendCpu(session)
        now, reported = start, start
        while now <= end:
            if candidate.statement is not None and "before_the_day" not in day.plans:
                explain("before_the_day", now)  # the first pass showed the query; still nothing due
            if candidate.statement is not None and "midday" not in day.plans and now >= midday:
                explain("midday", now)
            at = now
            cpu_before, client_before = cpu.seconds(), time.process_time()
            t0 = time.perf_counter()
            result = run_renewal_pass(
                session, broker, now=at, settings=settings,
                fence=lambda s, at=at: lease.fence(s, held, now=at, lease_seconds=settings.scheduler_lease_seconds))
            seconds = time.perf_counter() - t0
            client = time.process_time() - client_before
            if cpu_before is not None:
                day.db_cpu.append(cpu.seconds() - cpu_before)
            day.client_cpu.append(client)
            day.pass_seconds.append(seconds)
            day.published += result.published
            day.per_minute[at.replace(second=0, microsecond=0)] += result.published
            if at < fleet.first_due:
                day.idle_before.append(seconds)
            elif at > fleet.last_due + tick:
                day.idle_after.append(seconds)
            finished = finish_jobs(workers, now=at, policy=fleet.policy, spread=settings.renewal_spread, rng=rng)
            # Each renewal: its trustpoint claimed then given its next time, its job inserted then finished.
            autovacuum.record("trustpoint", updated=result.published + finished)
            autovacuum.record("job", inserted=result.published, updated=finished)
            autovacuum.tick()
            if now - reported >= timedelta(hours=3):
                progress(f"  {now:%H:%M}: {day.published} renewals published")
                reported = now
            now += tick
        explain("after_the_day", end)
        queued = broker.queues[BULK_QUEUE].qsize() if BULK_QUEUE in broker.queues else 0
        assert queued == day.published, f"{day.published} published but {queued} messages on the queue"
        assert session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar() == cpu.pid, \
            "the scheduler session changed backends: its CPU figures would be wrong"
        session.rollback()
    broker.flush_all()
    broker.close()
    autovacuum.close()
    day.server_autovacuum, day.vacuum_runs = autovacuum.server_autovacuum, autovacuum.runs
    day.db_source, day.pg_stat_statements = cpu.source, cpu.pg_stat_statements
    return day


def ms(seconds: list[float], how) -> float | None:
    return round(how(seconds) * 1000, 2) if seconds else None


def summarize(fleet: Fleet, day: Day, *, settings: Settings, tick: timedelta, jobs: int, renewed: int,
              vacuum: bool) -> dict:
    spread_minutes = fleet.policy.window(VALIDITY).total_seconds() * settings.renewal_spread / 60
    promised = fleet.due / max(spread_minutes, tick.total_seconds() / 60)
    busiest = max(day.per_minute.values())
    return {
        "benchmark": "renewal_pass",
        "trustpoints_due_in_the_day": fleet.due,
        "trustpoints_not_to_renew": fleet.not_due,
        "trustpoints_total": fleet.due + sum(fleet.not_due.values()),
        "load_seconds": round(fleet.load_seconds, 1),
        "renewal_window_days": WINDOW_DAYS,
        "renewal_spread": settings.renewal_spread,
        "tick_seconds": tick.total_seconds(),
        "ticks": len(day.pass_seconds),
        "ticks_sampled": "all",
        "renewals_published": day.published,
        "renewal_jobs": jobs,
        "trustpoints_renewed": renewed,
        "pass_ms_p50": ms(day.pass_seconds, statistics.median),
        "pass_ms_p99": ms(day.pass_seconds, lambda v: percentile(v, 0.99)),
        "pass_ms_max": ms(day.pass_seconds, max),
        "pass_ms_mean": ms(day.pass_seconds, statistics.fmean),
        "pass_ms_per_renewal": round(sum(day.pass_seconds) * 1000 / max(day.published, 1), 3),
        # Passes with nothing to publish, before the day (median and fastest) and after it, when
        # they also read what they skip: due trustpoints whose object's automatic renewal is off.
        "idle_pass_ms_before": ms(day.idle_before, statistics.median),
        "idle_pass_ms_before_min": ms(day.idle_before, min),
        "idle_pass_ms_after": ms(day.idle_after, statistics.median),
        "idle_pass_ms_after_min": ms(day.idle_after, min),
        "max_renewals_started_per_minute": busiest,
        "promised_per_minute": round(promised, 1),
        "max_to_promised_ratio": round(busiest / promised, 2) if promised else None,
        "max_per_minute_expected_from_random_jitter": poisson_expected_max(promised, max(1, round(spread_minutes))),
        "db_cpu_source": day.db_source,
        "pg_stat_statements_loaded": day.pg_stat_statements,
        "db_cpu_ms_per_pass_mean": ms(day.db_cpu, statistics.fmean),
        "db_cpu_ms_per_pass_max": ms(day.db_cpu, max),
        "db_cpu_seconds_total": round(sum(day.db_cpu), 2) if day.db_cpu else None,
        "client_cpu_ms_per_pass_mean": ms(day.client_cpu, statistics.fmean),
        "server_autovacuum": day.server_autovacuum,
        # None: --no-vacuum, the tables left as the day leaves them.
        "vacuum_runs_as_autovacuum_would": day.vacuum_runs if vacuum else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def targets(results: list[dict], plans: list[dict], scaling: dict | None) -> dict:
    """What `make bench` holds the runs to: at 100,000 every tick's pass under a second; at every
    size each due trustpoint renewed exactly once; from 10,000 the candidate query reading the
    renewal index at every moment, never scanning the table; across sizes an idle pass that does not grow with the table
    (a scan grows tenfold; the bound leaves room for a busy machine's noise)."""
    checks = {}
    for run, plan in zip(results, plans, strict=True):
        n = run["trustpoints_due_in_the_day"]
        if n >= 100_000:
            checks[f"pass_max_under_1_s_at_{n}"] = (run["pass_ms_max"], run["pass_ms_max"] < TARGET_PASS_SECONDS * 1000)
        exact = run["renewal_jobs"] == run["trustpoints_renewed"] == n == run["renewals_published"]
        checks[f"each_due_trustpoint_renewed_once_at_{n}"] = (run["trustpoints_renewed"], exact)
        if n >= INDEX_MATTERS_FROM:
            moments = {k: v for k, v in plan.items() if isinstance(v, dict)}
            scans = sorted(k for k, v in moments.items()
                           if v["seq_scan_on_trustpoint"] or not v["reads_ix_trustpoint_renewal"])
            checks[f"candidate_query_reads_the_index_at_{n}"] = (scans or "every moment", not scans)
    if scaling is not None:
        ratio = scaling["idle_pass_min_ratio"]
        checks["idle_pass_ratio_at_most_2"] = (ratio, ratio is not None and ratio <= 2)
    return {"all_met": all(met for _, met in checks.values()),
            "checks": {name: {"figure": figure, "met": met} for name, (figure, met) in checks.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trustpoints", type=int, action="append",
                        help="trustpoints due in the day (repeat for several sizes; default 10,000 and 100,000)")
    parser.add_argument("--not-due-share", type=float, default=1.0,
                        help="trustpoints the pass must leave alone, as a share of those due (default 1.0)")
    parser.add_argument("--tick-seconds", type=int, help="default: CERTFLEET_RENEWAL_INTERVAL_SECONDS (60)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-vacuum", action="store_true",
                        help="no VACUUM or ANALYZE during the day: a server whose autovacuum is off or behind")
    args = parser.parse_args(argv)
    results, plans = [], []
    for n in args.trustpoints or [10_000, 100_000]:
        result, plan = run(n, not_due_share=args.not_due_share, tick_seconds=args.tick_seconds, seed=args.seed,
                           vacuum=not args.no_vacuum)
        results.append(result)
        plans.append(plan)
        print(json.dumps(result), flush=True)
        print(json.dumps(plan), flush=True)
    scaling = None
    if len(results) > 1:
        (small, large), (small_plan, large_plan) = (results[0], results[-1]), (plans[0], plans[-1])
        before = small["idle_pass_ms_before_min"], large["idle_pass_ms_before_min"]
        scaling = {
            "benchmark": "renewal_scaling",
            "from_trustpoints": small["trustpoints_total"], "to_trustpoints": large["trustpoints_total"],
            "idle_pass_min_ratio": round(before[1] / before[0], 2) if all(before) else None,
            "candidate_query_pages_before_the_day": [p["before_the_day"]["pages_touched"]
                                                     for p in (small_plan, large_plan)],
            "pass_ms_per_renewal_ratio": round(large["pass_ms_per_renewal"] / small["pass_ms_per_renewal"], 2),
        }
        print(json.dumps(scaling), flush=True)
    verdict = targets(results, plans, scaling)
    print(json.dumps({"benchmark": "renewal_targets", **verdict}), flush=True)
    return 0 if verdict["all_met"] else 1  # `make bench` fails on a missed target


if __name__ == "__main__":
    sys.exit(stoppable(main))
