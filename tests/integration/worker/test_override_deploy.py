"""An override is what a device gets: a Global EST object names one CA, child domain A1 overrides it
with another CA and its own password, and a bulk enrollment from Global enrolls A1's device at A1's
CA and A's device at Global's, each with its own password; a re-enroll stays with A1's CA; an
override naming another CA without a password of its own fails before anything is sent.

Real parts, in this process: the controller's API (SQLite, in-process broker), two CA simulators
serving EST over HTTPS on loopback (each with its own root, user and password), the device
simulator trusting both, and the worker's job runner driving the devices."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlmodel import Session, select

from services.ca_sim.service import RunningCa
from services.ca_sim.service import start_in_thread as start_ca
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim
from services.device_sim.server import start_in_thread as start_sim
from services.worker.ca_gate import MemoryCaGate
from services.worker.context import WorkerContext
from services.worker.retry_policy import RetryPolicy
from services.worker.runner import run_job
from shared.device_client import HttpDeviceClient
from shared.models import Job
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.api import GLOBAL, SECRET_KEY, Api

GLOBAL_USER, GLOBAL_PASSWORD = "fw", "Global-Est-Secret-1"
BRANCH_USER, BRANCH_PASSWORD = "branch-fw", "Branch-Est-Secret-2"


@pytest.fixture(scope="module")
def global_ca(tmp_path_factory) -> Iterator[RunningCa]:
    running = start_ca(tmp_path_factory.mktemp("global-ca"), est_user=GLOBAL_USER, est_password=GLOBAL_PASSWORD)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def branch_ca(tmp_path_factory) -> Iterator[RunningCa]:
    running = start_ca(tmp_path_factory.mktemp("branch-ca"), est_user=BRANCH_USER, est_password=BRANCH_PASSWORD)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def sim(global_ca, branch_ca) -> Iterator[RunningSim]:
    anchors = (str(global_ca.tls_ca), str(branch_ca.tls_ca))
    with start_sim(SimConfig(devices=4, seed=11, trust_anchors=anchors, ca_wait_seconds=1.0)) as running:
        yield running


@pytest.fixture
def worker(api: Api) -> Iterator[WorkerContext]:
    settings = Settings(database_url=str(api.engine.url), secret_key=SECRET_KEY, device_timeout_seconds=10.0)
    ctx = WorkerContext(settings=settings, engine=api.engine, devices=HttpDeviceClient(timeout_seconds=10.0),
                        retry=RetryPolicy.from_settings(settings), secrets=SecretBox(SECRET_KEY),
                        rng=random.Random(5), ca_gate=MemoryCaGate())
    yield ctx
    ctx.close()


def run_queued(api: Api, ctx: WorkerContext) -> dict[str, Job]:
    """Run every queued job once, as a worker would; the jobs by trustpoint's device id."""
    with Session(api.engine) as session:
        queued = session.exec(select(Job).where(Job.state == "queued")).all()
    for job in queued:
        run_job(ctx, job.id)
    with Session(api.engine) as session:
        return {str(job.device_id): session.get(Job, job.id) for job in queued}


def issuing_ca_fingerprint(ca: RunningCa) -> str:
    cert = x509.load_pem_x509_certificate(ca.ca.paths.issuing_pem.read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def issued_by(api: Api, domain: str, device_id: str) -> str:
    """The fingerprint of the issuing CA certificate the trustpoint holds, as the API shows it."""
    view = api.ok("GET", f"/domains/{domain}/devices/{device_id}/trustpoints/vpn-est")
    assert (view["ca_status"], view["identity_status"]) == ("available", "available"), view
    return view["ca_certificates"][0]["fingerprint_sha256"]


def test_a_child_domains_override_enrolls_its_devices_at_its_own_ca_with_its_own_password(
        api, worker, sim, global_ca, branch_ca):
    a = api.domain("A")
    a1 = api.domain("A1", parent=a)
    obj = api.enrollment_object("vpn-est", enrollment_type="est", enrollment_url=f"{global_ca.est_url}/",
                                username=GLOBAL_USER, password=GLOBAL_PASSWORD, allow_overrides=True)["id"]
    api.ok("PUT", f"/domains/{a1}/enrollment-objects/{obj}/override",
           {"enrollment_url": f"{branch_ca.est_url}/", "username": BRANCH_USER, "password": BRANCH_PASSWORD},
           role="network_admin")
    # Registered by an admin with the credentials the devices hold: trusted and authenticated.
    devices = {label: api.device(serial, domain=domain, management_url=f"{sim.url}/api/devices/{serial}",
                                 endpoint_credential=sim.sim.credential(serial))["id"]
               for label, serial, domain in (("a1", "FTD-000001", a1), ("a", "FTD-000002", a),
                                             ("a1-unset", "FTD-000003", a1))}

    # One bulk enrollment from Global: each trustpoint deploys its own domain's values.
    api.ok("POST", f"/domains/{GLOBAL}/bulk-enrollments",
           {"enrollment_object_id": obj, "selection": {"device_ids": [devices["a1"], devices["a"]]}}, status=202)
    before = Counter(sim.sim.requests)
    jobs = run_queued(api, worker)
    # One device request per EST enrollment: its configuration travels with the enroll request, the
    # password sealed to the device's credential, and the device's answer proves it opened it.
    assert Counter(sim.sim.requests) - before == Counter(enroll=2)
    assert {job.state for job in jobs.values()} == {"succeeded"}, [j.error_message for j in jobs.values()]
    assert issued_by(api, a1, devices["a1"]) == issuing_ca_fingerprint(branch_ca)
    assert issued_by(api, a, devices["a"]) == issuing_ca_fingerprint(global_ca)
    steps = {step["step"]: step["detail"] for step in jobs[devices["a1"]].steps}
    assert steps["override"] == f"values of domain {a1}'s override: enrollment_url, username"
    assert "override" not in {step["step"] for step in jobs[devices["a"]].steps}

    # A re-enroll (as a renewal is) goes to the override's CA again.
    api.ok("POST", f"/domains/{a1}/devices/{devices['a1']}/trustpoints/vpn-est/re-enroll", status=202)
    assert run_queued(api, worker)[devices["a1"]].state == "succeeded"
    assert issued_by(api, a1, devices["a1"]) == issuing_ca_fingerprint(branch_ca)

    # The override's password removed: A1 names another CA, so Global's password does not go there.
    api.ok("PUT", f"/domains/{a1}/enrollment-objects/{obj}/override",
           {"enrollment_url": f"{branch_ca.est_url}/", "username": BRANCH_USER, "password": ""})
    api.add(devices["a1-unset"], obj, domain=a1)
    failed = run_queued(api, worker)[devices["a1-unset"]]
    assert (failed.state, failed.error_code) == ("failed", "enrollment_secret_missing")
    assert f"PUT /api/v1/domains/{a1}/enrollment-objects/{obj}/override" in failed.error_message
    assert GLOBAL_PASSWORD not in failed.error_message and [s["step"] for s in failed.steps] == [
        "requested", "claimed", "override", "failed"]
