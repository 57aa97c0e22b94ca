"""Revoked certificates found and replaced, end to end in one process: the embedded stack (API,
workers, 200 simulated devices) enrolls over EST against the CA simulator, which serves its CRL
and OCSP over HTTP; 20 certificates are revoked at the CA; the revocation scan marks exactly
those trustpoints revoked, fetching the CA's CRL once; a bulk re-enroll of the revoked ones
leaves 200 valid certificates."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlmodel import Session

from services.ca_sim.revocations import revoke
from services.cli.api_client import CertfleetClient
from services.controller.revocation.scan import run_revocation_scan
from services.stack.embedded import EmbeddedStack
from shared.clock import utcnow
from shared.revocation_fetch import RevocationChecker
from shared.settings import Settings

pytestmark = pytest.mark.e2e

DEVICES, REVOKED = 200, 20
EST_USER, EST_PASSWORD = "ftd-enroller", "Revocation-Scan-42"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ca = {"est_user": EST_USER, "est_password": EST_PASSWORD, "http_port": 0, "key_type": "ecdsa"}
    with EmbeddedStack(Settings(log_level="WARNING"), devices=DEVICES, worker_threads=8,
                       state_dir=tmp_path_factory.mktemp("revocation"), ca_options=ca) as s:
        s.client = CertfleetClient(s.api_url, s.admin_token)
        s.client.import_devices(s.sim.url)
        yield s
        s.client.close()


def wait(fetch, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = fetch()
        if state["finished"]:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def scan(stack) -> tuple:
    with Session(stack.engine) as session, RevocationChecker() as checker:
        return run_revocation_scan(session, now=utcnow(), checker=checker), checker


def test_revoked_certificates_are_found_and_replaced_in_one_command(stack):
    client = stack.client
    obj = client.create_enrollment_object(
        name="vpn-est", enrollment_type="est", enrollment_url=stack.ca.est_url + "/", username=EST_USER,
        password=EST_PASSWORD, key_type="ecdsa", key_size=256, revocation_crl=True)
    batch = client.start_bulk_enrollment(obj["id"], selection={"all": True})
    enrolled = wait(lambda: client.bulk_enrollment(batch["id"]))
    assert (enrolled["succeeded"], enrolled["failed"]) == (DEVICES, 0), enrolled["failures"]
    trustpoints = client.trustpoints(identity_status="available")
    assert len(trustpoints) == DEVICES
    # Issued certificates name the CA's CRL.
    first = client.trustpoint(trustpoints[0]["device_id"], "vpn-est")["identity_certificate"]
    assert first["crl_urls"] and first["crl_urls"][0].startswith(stack.ca.http_url)

    chosen = trustpoints[::DEVICES // REVOKED][:REVOKED]
    for tp in chosen:
        revoke(stack.state_dir / "ca", serial=int(tp["identity_certificate"]["serial_number"], 16),
               reason="keyCompromise")

    result, checker = scan(stack)
    assert (result.checked, len(result.newly_revoked), result.revoked) == (DEVICES, REVOKED, REVOKED)
    assert sum(checker.fetches.values()) == 1  # one CRL for the whole fleet, not one per device
    revoked = client.trustpoints(identity_status="revoked")
    assert sorted(t["id"] for t in revoked) == sorted(t["id"] for t in chosen)
    shown = client.trustpoint(chosen[0]["device_id"], "vpn-est")
    assert shown["error_code"] == "identity_revoked" and "keyCompromise" in shown["error_message"]
    assert shown["revocation_reason"] == "keyCompromise" and shown["revoked_at"]
    assert f"certfleet_certificates_revoked {REVOKED:.1f}" in httpx.get(stack.api_url + "/metrics").text

    # certfleet re-enroll --object vpn-est --all --status revoked
    action = client.start_bulk_action("re_enroll", obj["id"], selection={"all": True},
                                      filters={"identity_status": "revoked"})
    assert action["total"] == REVOKED
    done = wait(lambda: client.bulk_action(action["id"]))
    assert (done["succeeded"], done["failed"]) == (REVOKED, 0), done["failures"]

    again, _ = scan(stack)
    assert (again.checked, again.revoked) == (DEVICES, 0)
    assert len(client.trustpoints(identity_status="available")) == DEVICES
    renewed = client.trustpoint(chosen[0]["device_id"], "vpn-est")
    assert renewed["identity_certificate"]["serial_number"] != chosen[0]["identity_certificate"]["serial_number"]
    assert (renewed["revoked_at"], renewed["revocation_reason"]) == (None, None)
