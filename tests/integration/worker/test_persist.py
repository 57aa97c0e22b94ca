"""What a device reports becomes the trustpoint's rows: one certificate per slot, statuses
only through the state machine, and a malformed report refused before it is written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from services.worker import persist
from services.worker.exchanges import read_report
from shared.db import init_db, make_engine, session_scope
from shared.device_api import InstalledCertificate, TrustpointState
from shared.enrollment import EnrollmentParameters
from shared.errors import PermanentError
from shared.models import GLOBAL_DOMAIN_ID, Certificate, Device, EnrollmentObject, Trustpoint
from shared.pki import DeviceIdentity, generate_private_key, self_signed_certificate, to_pem
from shared.settings import Settings
from shared.states import Status

NOW = datetime(2030, 1, 1, tzinfo=UTC)
PARAMS = EnrollmentParameters(name="vpn", enrollment_type="self_signed", key_type="ecdsa", key_size=256)


def self_signed_pem(serial: int = 1) -> str:
    key = generate_private_key("ecdsa", 256)
    cert = self_signed_certificate(key, PARAMS, DeviceIdentity(serial="FTD-1"), now=NOW, serial=serial)
    return to_pem(cert)


def state(*, ca="in_progress", identity="available", pems=(), **extra) -> TrustpointState:
    certs = [InstalledCertificate(role="identity", chain_position=0, pem=p) for p in pems]
    return TrustpointState(name="vpn", enrollment_type="self_signed", ca_status=ca, identity_status=identity,
                           certificates=certs, **extra)


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(Settings(database_url=f"sqlite:///{tmp_path / 'persist.db'}"))
    init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def trustpoint_id(engine):
    with session_scope(engine) as session:
        device = Device(domain_id=GLOBAL_DOMAIN_ID, name="ftd-1", serial="FTD-1", management_url="http://x")
        obj = EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name="vpn", enrollment_type="self_signed")
        session.add_all([device, obj])
        session.flush()
        tp = Trustpoint(device_id=device.id, domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=obj.id,
                        name="vpn", enrollment_type="self_signed")
        session.add(tp)
        session.commit()
        return tp.id


def apply(engine, trustpoint_id, report) -> None:
    with session_scope(engine) as session:
        tp = persist.lock_trustpoint(session, trustpoint_id)
        persist.apply_report(session, tp, report, job_id=uuid.uuid4(), now=NOW)
        session.commit()


def rows(engine, trustpoint_id):
    with session_scope(engine) as session:
        tp = session.get(Trustpoint, trustpoint_id)
        certs = session.exec(select(Certificate).where(Certificate.trustpoint_id == trustpoint_id)).all()
        return tp, list(certs)


def test_self_signed_report_installs_one_certificate_and_both_statuses_available(engine, trustpoint_id):
    pem = self_signed_pem()
    apply(engine, trustpoint_id, read_report(state(pems=[pem]), serial="FTD-1"))
    tp, certs = rows(engine, trustpoint_id)
    # The device is its own CA: the CA status shows available with the identity (the seed's rule).
    assert (tp.ca_status, tp.identity_status) == ("available", "available")
    assert tp.status_changed_at is not None and tp.error_code is None
    assert len(certs) == 1
    assert certs[0].pem == pem and certs[0].key_algorithm == "ECDSA" and certs[0].key_size == 256


def test_same_certificate_keeps_its_row_a_new_one_replaces_it(engine, trustpoint_id):
    first = self_signed_pem(1)
    apply(engine, trustpoint_id, read_report(state(pems=[first]), serial="FTD-1"))
    (_, [row]) = rows(engine, trustpoint_id)
    apply(engine, trustpoint_id, read_report(state(pems=[first]), serial="FTD-1"))
    assert rows(engine, trustpoint_id)[1][0].id == row.id
    second = self_signed_pem(2)
    apply(engine, trustpoint_id, read_report(state(pems=[second]), serial="FTD-1"))
    _, certs = rows(engine, trustpoint_id)
    assert [c.pem for c in certs] == [second]


def test_missing_trustpoint_fails_both_statuses_and_drops_certificates(engine, trustpoint_id):
    apply(engine, trustpoint_id, read_report(state(pems=[self_signed_pem()]), serial="FTD-1"))
    with session_scope(engine) as session:
        tp = persist.lock_trustpoint(session, trustpoint_id)
        persist.mark_missing(session, tp, serial="FTD-1", now=NOW)
        session.commit()
    tp, certs = rows(engine, trustpoint_id)
    assert (tp.ca_status, tp.identity_status, tp.error_code) == ("failed", "failed", "trustpoint_missing")
    assert "re-enroll" in tp.error_message and "FTD-1" in tp.error_message
    assert certs == []


@pytest.mark.parametrize("ca, expected_ca", [("in_progress", "failed"), ("available", "available")])
def test_a_failure_keeps_an_installed_ca_certificate(ca, expected_ca):
    tp = Trustpoint(device_id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=uuid.uuid4(),
                    name="vpn", enrollment_type="est", ca_status=ca)
    persist.mark_failed(tp, now=NOW, code="weak_crypto", message="weak crypto: RSA-1024")
    assert (tp.ca_status, tp.identity_status, tp.error_code) == (expected_ca, "failed", "weak_crypto")


def test_statuses_without_a_direct_edge_pass_through_in_progress():
    tp = Trustpoint(device_id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=uuid.uuid4(),
                    name="vpn", enrollment_type="manual", ca_status="available",
                    identity_status="not_applicable")
    persist.move_statuses(tp, now=NOW, identity=Status.AVAILABLE)
    assert tp.identity_status == "available"


def test_device_failure_report_carries_its_code():
    report = read_report(state(identity="failed", error_code="weak_crypto", error_message="weak crypto"),
                         serial="FTD-1")
    assert report.failed and report.error_code == "weak_crypto"


@pytest.mark.parametrize("bad, code", [
    (state(pems=["not a certificate"]), "invalid_certificate"),
    (state(identity="done"), "device_bad_response"),
])
def test_malformed_reports_are_refused_with_a_code(bad, code):
    with pytest.raises(PermanentError) as caught:
        read_report(bad, serial="FTD-1")
    assert caught.value.code == code and "FTD-1" in str(caught.value)


def test_two_certificates_in_one_slot_are_refused():
    pem = self_signed_pem()
    with pytest.raises(PermanentError, match="two identity certificates"):
        read_report(state(pems=[pem, pem]), serial="FTD-1")


def test_locked_trustpoints_write_what_changed_at_commit_and_nothing_on_rollback(engine, trustpoint_id):
    with session_scope(engine) as session:
        other = Trustpoint(device_id=session.get(Trustpoint, trustpoint_id).device_id, domain_id=GLOBAL_DOMAIN_ID,
                           enrollment_object_id=session.get(Trustpoint, trustpoint_id).enrollment_object_id,
                           name="vpn-2", enrollment_type="self_signed")
        session.add(other)
        session.commit()
        other_id = other.id
    with session_scope(engine) as session:
        locked = persist.lock_trustpoints(session, [other_id, trustpoint_id, uuid.uuid4()])
        assert set(locked) == {trustpoint_id, other_id}  # one that does not exist is left out
        persist.mark_failed(locked[trustpoint_id], now=NOW, code="device_error", message="the device said no")
        locked[other_id].csr_pem = "a CSR"  # another set of columns: a statement of its own
        with pytest.raises(AttributeError, match="no column 'csr'"):
            locked[other_id].csr = "a typo is an error, not a lost write"
        session.rollback()
        session.commit()  # the next transaction of the session has nothing of the rolled-back one to write
    assert rows(engine, trustpoint_id)[0].identity_status == "in_progress"
    with session_scope(engine) as session:
        locked = persist.lock_trustpoints(session, [trustpoint_id, other_id])
        persist.mark_failed(locked[trustpoint_id], now=NOW, code="device_error", message="the device said no")
        locked[other_id].csr_pem = "a CSR"
        session.commit()
    failed, other_row = rows(engine, trustpoint_id)[0], rows(engine, other_id)[0]
    assert (failed.identity_status, failed.error_code, failed.updated_at) == ("failed", "device_error", NOW)
    assert (other_row.csr_pem, other_row.identity_status, other_row.error_code) == ("a CSR", "in_progress", None)


def test_a_removed_trustpoint_is_gone_and_writes_nothing_after(engine, trustpoint_id):
    apply(engine, trustpoint_id, read_report(state(pems=[self_signed_pem()]), serial="FTD-1"))
    with session_scope(engine) as session:
        locked = persist.lock_trustpoint(session, trustpoint_id)
        persist.remove_trustpoint(session, locked)
        locked.updated_at = NOW  # after the delete: must not bring the row back or fail the commit
        session.commit()
    assert rows(engine, trustpoint_id) == (None, [])
