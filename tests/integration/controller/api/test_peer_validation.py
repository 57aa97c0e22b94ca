"""Validating a peer's certificate through the controller (``POST …/trustpoints/{name}/validate``)
and ``certfleet trustpoint validate``: the controller asks the device synchronously and passes
its verdict on. The device is the simulator on loopback; its CA-only manual trustpoint holds
a CA made in the test. Every role may validate (it changes nothing). And the enrollment
object's skip_ca_flag_check, as the controller applies it to an imported identity certificate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import update
from sqlmodel import Session

from services.cli.main import main
from services.device_sim.config import SimConfig
from services.device_sim.server import RunningSim, start_in_thread
from shared.http_thread import ServerThread
from shared.models import Job, Trustpoint
from tests.support.api import GLOBAL, finish_jobs, problem
from tests.support.clock import ManualClock
from tests.support.procs import free_port
from tests.support.revocation_ca import LEAF_KEY, TestCa, pem

SERIAL = "FTD-000001"


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def sim(clock) -> Iterator[RunningSim]:
    with start_in_thread(SimConfig(devices=3, seed=21), clock=clock) as running:
        yield running


@pytest.fixture(scope="module")
def ca(clock) -> TestCa:
    return TestCa("Partner CA", clock=clock)


@pytest.fixture
def world(api, sim, ca):
    """A device in Global with trustpoint "partners" (CA available in the database and on the device)."""
    device = api.device(SERIAL, management_url=f"{sim.url}/api/devices/{SERIAL}")
    obj = api.enrollment_object("partners", enrollment_type="manual", ca_only=True, ca_certificate_pem=pem(ca.cert),
                                validation_usage=["ipsec_client"])
    api.add(device["id"], obj["id"])
    finish_jobs(api.engine)
    # What the worker would have sent the device: the same object, as its trustpoint configuration.
    body = {"name": "partners", "enrollment_type": "manual", "key_type": "ecdsa", "key_size": 256,
            "options": {"ca_certificate_pem": pem(ca.cert), "ca_only": True,
                        "validation": {"validation_usage": ["ipsec_client"]}}}
    with httpx.Client(base_url=f"{sim.url}/api/devices/{SERIAL}") as http:
        assert http.put("/trustpoints/partners", json=body).status_code == 200
        assert http.post("/trustpoints/partners/enroll", json={}).json()["ca_status"] == "available"
    return device, f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/partners/validate"


def test_every_role_gets_the_device_s_verdict(api, world, ca):
    _, path = world
    peer = pem(ca.issue("peer.example.com"))
    for role in ("admin", "network_admin", "read_only"):
        answer = api.ok("POST", path, {"certificate_pem": peer}, role=role)
        assert (answer["verdict"], answer["source"], answer["reason"]) == ("valid", None, "not_checked")
    refused = api.ok("POST", path, {"certificate_pem": peer, "usage": "ssl_server"})
    assert (refused["verdict"], refused["reason"]) == ("invalid", "usage_not_allowed")
    stranger = pem(TestCa("Stranger CA").issue())
    assert api.ok("POST", path, {"certificate_pem": stranger})["reason"] == "untrusted_chain"
    problem(api.post(path, {"certificate_pem": peer}, role=None), 401, "unauthorized")


def test_bad_requests_and_an_unreachable_device_are_refused_with_a_code(api, world, ca, sim):
    device, path = world
    problem(api.post(path, {"certificate_pem": "not a certificate"}), 422, "invalid_certificate")
    problem(api.post(path, {"certificate_pem": pem(ca.issue()), "usage": "ftp"}), 422, "validation_error")
    problem(api.post(path, {"certificate_pem": "x" * (65 * 1024)}), 413, "body_too_large")
    problem(api.call("POST", path, content=pem(ca.issue()), headers={"Content-Type": "application/x-pem-file"}),
            415, "unsupported_media_type")
    problem(api.post(path.replace("partners", "nothing"), {"certificate_pem": pem(ca.issue())}), 404, "not_found")
    other = api.domain("Elsewhere")
    problem(api.post(path.replace(GLOBAL, other), {"certificate_pem": pem(ca.issue())}), 404, "not_found")
    gone = api.device("FTD-000009", management_url=f"http://127.0.0.1:{free_port()}/api/devices/FTD-000009")
    objects = api.ok("GET", f"/domains/{GLOBAL}/enrollment-objects")["items"]
    api.add(gone["id"], next(o["id"] for o in objects if o["name"] == "partners"))
    finish_jobs(api.engine)
    body = problem(api.post(path.replace(device["id"], gone["id"]), {"certificate_pem": pem(ca.issue())}), 502,
                   "device_unreachable")
    assert "device FTD-000009 unreachable" in body["detail"] and body["detail"].endswith("try again")


def test_the_cli_prints_the_verdict_and_exits_0_only_when_valid(api, world, ca, tmp_path, capsys):
    server = ServerThread(api.client.app).start()
    try:
        good, stranger = tmp_path / "peer.pem", tmp_path / "stranger.pem"
        good.write_text(pem(ca.issue("cli-peer.example.com")))
        stranger.write_text(pem(TestCa("Stranger CA").issue()))
        common = [f"--api-url={server.url}", f"--token={api.tokens['read_only']}"]
        assert main(["trustpoint", "validate", SERIAL, "partners", "--cert", str(good), *common]) == 0
        out = capsys.readouterr().out  # the controller's log lines too: it runs in this process
        assert "verdict: valid\n" in out and "detail:  CN=cli-peer.example.com chains to" in out
        assert main(["trustpoint", "validate", SERIAL, "partners", "--cert", str(good), "--usage", "ssl_client",
                     *common]) == 1
        assert "verdict: invalid\nreason:  usage_not_allowed\n" in capsys.readouterr().out
        assert main(["trustpoint", "validate", SERIAL, "partners", "--cert", str(stranger), *common]) == 1
        assert "reason:  untrusted_chain" in capsys.readouterr().out
        assert main(["trustpoint", "validate", SERIAL, "partners", "--cert", str(tmp_path / "none.pem"),
                     *common]) == 2
    finally:
        server.stop()


def test_importing_an_identity_certificate_whose_ca_lacks_the_ca_flag_needs_skip_ca_flag_check(api):
    flagless = TestCa("Flagless CA", ca_flag=False, valid_from=datetime.now(UTC))  # the controller's clock
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .sign(LEAF_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    paths = {}
    for skip in (False, True):
        device = api.device(f"FTD-00010{int(skip)}")
        obj = api.enrollment_object(f"manual-{skip}", enrollment_type="manual", skip_ca_flag_check=skip)
        tp = api.add(device["id"], obj["id"])["trustpoint"]
        with Session(api.engine) as session:  # what the worker records once the device made its CSR
            row = session.get(Trustpoint, uuid.UUID(tp["id"]))
            row.csr_pem, row.ca_status, row.identity_status = csr, "pending", "pending"
            session.add(row)
            session.execute(update(Job).values(state="succeeded"))
            session.commit()
        paths[skip] = f"/domains/{GLOBAL}/devices/{device['id']}/trustpoints/manual-{skip}/identity-certificate"
    body = {"certificate_pem": pem(flagless.issue("fw.example.com")), "ca_certificate_pem": pem(flagless.cert)}
    refused = problem(api.post(paths[False], body), 422, "not_a_ca_certificate")
    assert "skip_ca_flag_check" in refused["detail"]
    accepted = api.post(paths[True], body)
    assert accepted.status_code == 202, accepted.text
