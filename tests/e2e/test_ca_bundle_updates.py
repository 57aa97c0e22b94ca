"""CA-bundle updates end to end, on the multi-process stack (PostgreSQL, Redis; the controller, two
worker processes, the device simulator) with ``certfleet ca serve`` as the bundle source, new
versions made with ``certfleet ca bundle publish``, and ``certfleet`` as the operator runs it.

- every message of ``certfleet cert-update`` / ``show cert-update`` in its situation, with its exit
  status and ``--json``: up to date, out of date with every check passing, a server failing its
  check (refused, nothing replaced; forced), an IPv6-only installation whose second bundle server
  answers on IPv4 only, auto-update switched off and on, a pinned signing certificate the
  source's key does not match;
- a new bundle pushed to 400 devices as a batch whose progress the API shows while it runs, a
  worker killed mid-push, devices offline during the push getting the bundle from the drift pass
  once they are back.

One stack serves every test. The devices are registered by the push test only, so the CLI
tests' replacements push to nobody.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes

from services.cli.api_client import CertfleetClient
from services.controller.ca_bundles.auto_update import seed_date
from shared.domains import GLOBAL_DOMAIN_ID
from tests.support.batch_checks import QUICK_RECOVERY, kill_tree
from tests.support.pg import fresh_database, postgres_or_skip
from tests.support.procs import (
    ROOT,
    Proc,
    Stack,
    admin_token,
    answers_200,
    ca_ready_urls,
    free_port,
    wait_ready,
)
from tests.support.tls import Issued, TlsHandler, https_server, make_ca, make_leaf

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/1"
DEVICES = 400
SUCCEEDED = "Test succeeded, certs can safely be updated or are already up to date."
TEST_FAILED = "Test failed, not able to fully connect."
REPLACED = "Certs have been replaced or was already up to date."
REFUSED = "Certs failed some connection checks."
FORCED = "Certs failed some connection checks, but replace has been forced."
DAILY = re.compile(r"^Autoupdate is enabled and set for every day at (\d\d):(\d\d) UTC$")
LAST_MODIFIED = re.compile(r"^CA bundle was last modified '(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})'$")


class Partner(TlsHandler):
    """A partner's HTTPS server certfleet must keep reaching (CERTFLEET_CONNECTION_CHECKS)."""

    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()


@dataclass
class Bed:
    stack: Stack
    client: CertfleetClient
    engine: sa.Engine
    ca_dir: Path
    #: The copy of the source's bundle-signing certificate the controllers pin.
    pinned: Path
    partner_ca: Issued
    partner_ca_file: Path
    partner_port: int
    #: The IPv6-only installation's controller, and its IPv4-only second bundle server.
    v6_api_url: str
    v4_only_bundle_port: int
    procs: list[Proc]

    def certfleet(self, *args: str, api_url: str | None = None) -> subprocess.CompletedProcess:
        """``certfleet ARGS --api-url … --token …`` as a subprocess (the main controller's API by default)."""
        return certfleet(*args, "--api-url", api_url or self.stack.api_url, "--token", self.stack.token)

    def publish(self, *, add: tuple[Path, ...] = (), remove: tuple[str, ...] = ()) -> str:
        """``certfleet ca bundle publish``: the version it published."""
        args = ["ca", "bundle", "publish", "--state-dir", str(self.ca_dir)]
        args += [a for path in add for a in ("--add", str(path))]
        args += [a for fingerprint in remove for a in ("--remove", fingerprint)]
        done = certfleet(*args)
        assert done.returncode == 0, done.stderr
        return re.match(r"published CA bundle version (\d+):", done.stdout)[1]

    def installed(self) -> str:
        return self.client.cert_update_status()["version"]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in self.procs + self.stack.procs)


def certfleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True, timeout=60)


def new_ca_file(folder: Path, name: str) -> Path:
    path = folder / f"{name.lower().replace(' ', '-')}.pem"
    path.write_text(make_ca(name).pem)
    return path


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Bed]:
    postgres_or_skip()
    tmp = tmp_path_factory.mktemp("ca-bundles")
    queue = redis.Redis.from_url(REDIS_URL)
    queue.flushdb()
    partner_ca = make_ca("Partner Server CA")
    partner_ca_file = tmp / "partner-ca.pem"
    partner_ca_file.write_text(partner_ca.pem)
    ca_dir, quiet = tmp / "ca", {**os.environ, "CERTFLEET_LOG_LEVEL": "WARNING"}
    procs: list[Proc] = []
    with ExitStack() as cleanup:
        cleanup.callback(queue.close)
        cleanup.callback(queue.flushdb)
        partner = cleanup.enter_context(https_server(Partner, leaf=make_leaf(partner_ca)))
        database_url = cleanup.enter_context(fresh_database())
        cleanup.callback(lambda: [p.stop() for p in procs])  # before the database is dropped
        # The bundle source listens on [::1] only. Its version 1: the CA's root and issuing CA. A
        # second server of the same CA (same store, same signing key) listens on IPv4 only.
        v6_bundle_port, v4_bundle_port = free_port(), free_port()
        source = f"https://[::1]:{v6_bundle_port}/"
        for name, host, port in (("ca-v6", "::1", v6_bundle_port), ("ca-v4", "127.0.0.1", v4_bundle_port)):
            procs.append(Proc(name, ["ca", "serve", "--state-dir", str(ca_dir), "--host", host, "--est-port", "0",
                                     "--bundle-port", str(port), "--key-type", "ecdsa"], quiet, tmp))
        # Read at each update: copied here once the CA has made its signing certificate.
        pinned = tmp / "pinned-bundle-signer.pem"
        env = {**QUICK_RECOVERY, "CERTFLEET_RETRY_BACKOFF_MS": "100", "CERTFLEET_RETRY_BACKOFF_MAX_MS": "400",
               "CERTFLEET_CA_BUNDLE_URLS": source, "CERTFLEET_CA_BUNDLE_SIGNER": str(pinned),
               "CERTFLEET_CA_BUNDLE_TRUST": str(ca_dir / "tls-ca.pem"),
               "CERTFLEET_CONNECTION_CHECKS": f"https://127.0.0.1:{partner.server_address[1]}/",
               "CERTFLEET_CA_BUNDLE_DRIFT_SECONDS": "2"}
        stack = Stack(database_url=database_url, broker_url=REDIS_URL, log_dir=tmp, devices=DEVICES,
                      sim_args=["--latency-ms", "5"], extra_env=env)
        admin_token(stack.env)  # the schema, so that the second controller may start beside the stack
        # The IPv6-only installation (see test_an_ipv6_only_installation_…): another controller of
        # the same database whose bundle sources are both given by their IPv6 address.
        v6_port = free_port()
        v6 = Proc("controller-v6", ["controller", "--host", "127.0.0.1", "--port", str(v6_port), "--no-scheduler"],
                  {**stack.env, "CERTFLEET_CA_BUNDLE_URLS": f"{source},https://[::1]:{v4_bundle_port}/",
                   "CERTFLEET_CONNECTION_CHECKS": ""}, tmp)
        procs.append(v6)
        v6_api_url = f"http://127.0.0.1:{v6_port}"
        cleanup.enter_context(stack)
        cleanup.callback(lambda: [p.terminate() for p in procs])  # they stop while the stack does
        for ca in procs[:2]:
            ca_ready_urls(ca)
        shutil.copy(ca_dir / "bundle-signing.pem", pinned)
        wait_ready([(v6, lambda: answers_200(v6_api_url + "/healthz"))])
        client = cleanup.enter_context(CertfleetClient(stack.api_url, stack.token))
        # The daily update stays out of the tests' way (it would run at the installation's own minute).
        client.cert_update_auto(enabled=False)
        engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        cleanup.callback(engine.dispose)
        yield Bed(stack, client, engine, ca_dir, pinned, partner_ca, partner_ca_file, partner.server_address[1],
                  v6_api_url, v4_bundle_port, procs)


def result_of(done: subprocess.CompletedProcess) -> dict:
    assert done.stderr == "", done.stderr
    return json.loads(done.stdout)


def said(done: subprocess.CompletedProcess) -> tuple[int, str]:
    return done.returncode, done.stdout.strip()


def test_each_cert_update_message_in_its_situation(bed):
    # Out of date (a new version, the partner's CA in it) and every server reachable with it.
    latest = bed.publish(add=(bed.partner_ca_file,))
    before = bed.installed()
    assert said(bed.certfleet("cert-update", "test")) == (0, SUCCEEDED)
    tested = result_of(bed.certfleet("cert-update", "test", "--json"))
    assert (tested["outcome"], tested["latest_version"], tested["ok"]) == ("checks_passed", latest, True)
    assert bed.installed() == before  # a test replaces nothing
    assert said(bed.certfleet("cert-update", "run-now")) == (0, REPLACED)
    assert bed.installed() == latest

    # Up to date: the success messages, nothing checked, nothing replaced.
    tested = result_of(bed.certfleet("cert-update", "test", "--json"))
    assert (tested["message"], tested["outcome"]) == (SUCCEEDED, "up_to_date")
    ran = result_of(bed.certfleet("cert-update", "run-now", "--json"))
    assert (ran["message"], ran["outcome"], ran["local_version"]) == (REPLACED, "up_to_date", latest)

    # Out of date, and the partner's CA dropped: its server would fail with the new bundle.
    fingerprint = bed.partner_ca.cert.fingerprint(hashes.SHA256()).hex(":").upper()  # as an operator copies it
    without_partner = bed.publish(remove=(fingerprint,))
    assert said(bed.certfleet("cert-update", "test")) == (1, TEST_FAILED)
    failed = bed.certfleet("cert-update", "test", "--json")
    assert failed.returncode == 1
    servers = result_of(failed)["failed_servers"]
    assert [s["server"] for s in servers] == [f"127.0.0.1:{bed.partner_port}"]
    assert servers[0]["reason"].startswith("certificate not trusted by the new bundle"), servers
    assert said(bed.certfleet("cert-update", "run-now")) == (1, REFUSED)
    assert bed.installed() == latest  # nothing replaced
    refused = bed.certfleet("cert-update", "run-now", "--json")
    assert (refused.returncode, result_of(refused)["outcome"], bed.installed()) == (1, "failed_checks", latest)

    # Forced, both ways of saying it: replaced, and said so.
    assert said(bed.certfleet("cert-update", "run-now", "--force")) == (0, FORCED)
    assert bed.installed() == without_partner
    newer = bed.publish(add=(new_ca_file(bed.ca_dir.parent, "Branch Office CA"),))
    forced = bed.certfleet("cert-update", "run-now", "force", "--json")
    assert (forced.returncode, result_of(forced)["message"], result_of(forced)["outcome"]) == (0, FORCED, "forced")
    assert bed.installed() == newer
    audit = bed.client.http.get("/cert-update/audit", params={"limit": 1}).json()["items"][0]
    assert (audit["outcome"], audit["forced"], audit["old_version"], audit["new_version"]) == (
        "forced", True, without_partner, newer)


def test_an_ipv6_only_installation_forces_past_a_bundle_server_that_answers_on_ipv4_only(bed):
    """The IPv6-only installation's controller names both bundle servers by IPv6 address: the
    first listens on [::1], the second on 127.0.0.1 only. This machine has IPv4, so a controller
    truly without it cannot be had here; the test models the second server as an IPv6-only network
    sees it: at its IPv6 address nothing answers (connection refused), while over IPv4 it serves
    the same bundle. Its check fails for that reason alone: its certificate chains to the bundle."""
    latest = bed.publish(add=(bed.partner_ca_file,))
    before = bed.installed()
    tls = ssl.create_default_context(cafile=str(bed.ca_dir / "tls-ca.pem"))
    over_ipv4 = httpx.get(f"https://127.0.0.1:{bed.v4_only_bundle_port}/ca-bundle/latest", verify=tls)
    assert over_ipv4.status_code == 200  # alive, on IPv4

    assert said(bed.certfleet("cert-update", "test", api_url=bed.v6_api_url)) == (1, TEST_FAILED)
    failed = bed.certfleet("cert-update", "test", "--json", api_url=bed.v6_api_url)
    servers = result_of(failed)["failed_servers"]
    assert [s["server"] for s in servers] == [f"[::1]:{bed.v4_only_bundle_port}"]
    assert servers[0]["reason"].startswith("cannot connect"), servers
    assert said(bed.certfleet("cert-update", "run-now", api_url=bed.v6_api_url)) == (1, REFUSED)
    assert bed.installed() == before
    assert said(bed.certfleet("cert-update", "run-now", "--force", api_url=bed.v6_api_url)) == (0, FORCED)
    assert bed.installed() == latest
    # The bundle came from the server that answers over IPv6.
    assert bed.client.cert_update_status()["source_url"] == bed.stack.env["CERTFLEET_CA_BUNDLE_URLS"]


def test_auto_update_is_switched_off_and_on_and_shown(bed):
    bed.publish(add=(bed.partner_ca_file,))
    bed.client.cert_update_run_now(force=True)  # a bundle installed, whatever ran before
    try:
        assert said(bed.certfleet("cert-update", "auto-update", "disable")) == (0, "Autoupdate is disabled")
        code, shown = said(bed.certfleet("show", "cert-update"))
        assert code == 0 and shown.splitlines()[0] == "Autoupdate is disabled"

        code, enabled = said(bed.certfleet("cert-update", "auto-update", "enable"))
        assert code == 0 and DAILY.match(enabled), enabled
        code, shown = said(bed.certfleet("show", "cert-update"))
        schedule, modified = shown.splitlines()
        assert code == 0 and schedule == enabled  # the installation's own time, the same each time
        daily = next(s for s in bed.client.schedules() if s["name"] == "ca-bundle-update")
        hour, minute = DAILY.match(schedule).groups()
        assert (daily["timing"], daily["enabled"]) == (f"cron {int(minute)} {int(hour)} * * *", True)
        assert datetime.fromisoformat(daily["next_run_at"]).strftime("%H:%M") == f"{hour}:{minute}"
        status = result_of(bed.certfleet("show", "cert-update", "--json"))
        assert status["auto_update"] is True and status["schedule"] == schedule
        assert LAST_MODIFIED.match(modified)[1] == seed_date(datetime.fromisoformat(status["last_modified"]))
    finally:
        bed.client.cert_update_auto(enabled=False)


def test_a_bundle_signed_by_another_key_than_the_pinned_one_is_refused(bed):
    bed.publish(add=(bed.partner_ca_file,))
    before = bed.installed()
    genuine = bed.pinned.read_text()
    bed.pinned.write_text(make_ca("Bundle Signing").pem)  # pinned: a certificate of another key
    try:
        for command in (("cert-update", "test"), ("cert-update", "run-now", "--force")):
            done = bed.certfleet(*command)
            assert done.returncode == 1 and done.stdout == "", done
            assert done.stderr.startswith(
                "error: bundle_signature_invalid: the bundle from "
                f"{bed.stack.env['CERTFLEET_CA_BUNDLE_URLS']} was refused: "), done.stderr
    finally:
        bed.pinned.write_text(genuine)
    assert bed.installed() == before


def push_progress_until(bed: Bed, batch_id: str, done: int, timeout: float = 60) -> list[dict]:
    """The push's progress, read every 50 ms until ``done`` jobs ended (or it finished)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(bed.client.cert_update_push(batch_id))
        if seen[-1]["finished"] or seen[-1]["succeeded"] + seen[-1]["failed"] >= done:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"push not at {done} within {timeout} s: {seen[-1]}\n{bed.logs()}")


def devices_on(bed: Bed, version: str) -> int:
    answer = bed.client.http.get(f"/domains/{GLOBAL_DOMAIN_ID}/devices", params={"bundle_version": version,
                                                                                 "limit": 1})
    return answer.json()["total"]


def wait_until(check, what: str, bed: Bed, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n{bed.logs()}")
        time.sleep(0.2)


def test_a_new_bundle_reaches_every_device_despite_a_killed_worker_and_devices_offline(bed):
    offline = [f"FTD-{n:06d}" for n in (3, DEVICES // 4, DEVICES // 2 + 1, DEVICES * 3 // 4 - 8, DEVICES - 1)]
    with httpx.Client(base_url=bed.stack.sim_url, timeout=10) as sim:
        push_with_devices_offline(bed, sim, offline)


def push_with_devices_offline(bed: Bed, sim: httpx.Client, offline: list[str]) -> None:
    assert sim.put("/api/offline", json={"serials": offline}).status_code == 200
    # The drift pass waits until the push is under way: it would otherwise push to the new devices first.
    bed.client.update_schedule("ca-bundle-drift", enabled=False)
    assert bed.client.import_devices(bed.stack.sim_url)["imported"] == DEVICES
    version = bed.publish(add=(bed.partner_ca_file, new_ca_file(bed.ca_dir.parent, "Fleet Push CA")))
    ran = bed.client.cert_update_run_now(force=True)
    assert (ran["latest_version"], ran["devices"]) == (version, DEVICES)
    bed.client.update_schedule("ca-bundle-drift", enabled=True)

    # Live progress while it runs; a worker killed with SIGKILL a quarter of the way.
    seen = push_progress_until(bed, ran["batch_id"], done=DEVICES // 4)
    assert not seen[-1]["finished"], seen[-1]
    killed = kill_tree(bed.stack.worker_procs()[0].popen.pid, signal.SIGKILL)
    assert len(killed) >= 3  # certfleet worker, the dramatiq main process, its worker process
    seen += push_progress_until(bed, ran["batch_id"], done=DEVICES, timeout=90)
    final = seen[-1]
    assert (final["action"], final["version"], final["selected"], final["total"]) == (
        "bundle_update", version, DEVICES, DEVICES)
    assert (final["finished"], final["succeeded"], final["failed"]) == (True, DEVICES - len(offline), len(offline))
    assert [(f["error_code"], f["count"]) for f in final["failures"]] == [("device_unreachable", len(offline))]
    under_way = [p for p in seen if not p["finished"] and 0 < p["succeeded"] < DEVICES]
    assert under_way and under_way[0]["queued"] + under_way[0]["running"] > 0, seen
    assert any(p["eta_seconds"] for p in under_way), under_way

    # Back online: the drift pass pushes to them; every device then holds the new version.
    assert sim.put("/api/offline", json={"serials": []}).json() == {"offline": []}
    wait_until(lambda: devices_on(bed, version) == DEVICES, f"all {DEVICES} devices on version {version}", bed)
    assert devices_on(bed, "") == 0
    for serial in offline:
        assert sim.get(f"/api/devices/{serial}/ca-bundle").json()["version"] == version
    with bed.engine.connect() as conn:
        # Nothing left unfinished, nothing lost: each device that was online has one succeeded
        # push job of the batch; the offline ones got theirs from a drift batch.
        states = dict(conn.execute(sa.text("SELECT state, count(*) FROM job GROUP BY state")).all())
        by_drift = conn.execute(sa.text(
            "SELECT DISTINCT d.serial FROM job j JOIN device d ON d.id = j.device_id JOIN batch b ON b.id = j.batch_id "
            "WHERE j.state = 'succeeded' AND CAST(b.selection AS TEXT) LIKE '%drifted%'")).scalars().all()
        of_batch = conn.execute(sa.text(
            "SELECT count(DISTINCT device_id), count(*) FROM job WHERE batch_id = :b AND state = 'succeeded'"),
            {"b": ran["batch_id"]}).one()
    assert set(states) <= {"succeeded", "failed"}, states
    assert sorted(by_drift) == offline
    assert tuple(of_batch) == (DEVICES - len(offline), DEVICES - len(offline))
    # Whether the killed worker held a claimed job at that moment or only prefetched messages
    # depends on timing; either way the checks above show nothing was lost or pushed twice.
