"""The tables on both databases certfleet runs on: SQLite in a file and PostgreSQL in a
database made for this module and dropped afterwards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from shared import models
from shared.db import init_db, make_engine, session_scope
from shared.settings import Settings
from tests.support.pg import database_exists, fresh_database, postgres_or_skip


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path_factory):
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("models") / "certfleet.db"
        engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
        init_db(engine)
        yield engine
        engine.dispose()
        return
    postgres_or_skip()
    with fresh_database() as url:
        engine = make_engine(Settings(database_url=url))
        init_db(engine)
        yield engine
        engine.dispose()
    assert not database_exists(url.rpartition("/")[2]), "the test database was not dropped"


def add(engine, *rows):
    with session_scope(engine) as session:
        for row in rows:
            session.add(row)
        session.commit()
    return rows[0] if len(rows) == 1 else rows


def refused(engine, row) -> None:
    with session_scope(engine) as session, pytest.raises(IntegrityError):
        session.add(row)
        session.commit()


def device(domain_id=models.GLOBAL_DOMAIN_ID) -> models.Device:
    serial = f"FTD-{uuid.uuid4().hex[:8]}"
    return models.Device(domain_id=domain_id, name=serial, serial=serial,
                         management_url=f"http://127.0.0.1:8400/api/devices/{serial}")


def enrollment_object(name: str | None = None, domain_id=models.GLOBAL_DOMAIN_ID) -> models.EnrollmentObject:
    return models.EnrollmentObject(domain_id=domain_id, name=name or f"eo-{uuid.uuid4().hex[:8]}",
                                   enrollment_type="self_signed", key_type="ecdsa", key_size=256)


def trustpoint(dev: models.Device, eo: models.EnrollmentObject, name: str | None = None) -> models.Trustpoint:
    return models.Trustpoint(device_id=dev.id, domain_id=dev.domain_id, enrollment_object_id=eo.id,
                             name=name or eo.name, enrollment_type=eo.enrollment_type)


def certificate(tp: models.Trustpoint, role: str = "identity", position: int = 0) -> models.Certificate:
    now = datetime.now(UTC)
    return models.Certificate(
        trustpoint_id=tp.id, role=role, chain_position=position, pem="-----BEGIN CERTIFICATE-----",
        subject="CN=fw1", issuer="CN=fw1", serial_number="1f", not_before=now,
        not_after=now + timedelta(days=365), key_algorithm="ECDSA", key_size=256,
        signature_algorithm="ecdsa-with-SHA256", fingerprint_sha256="00" * 32,
    )


def test_init_db_creates_the_global_domain_once(engine):
    init_db(engine)
    init_db(engine)
    with session_scope(engine) as session:
        roots = session.exec(select(models.Domain).where(models.Domain.parent_id.is_(None))).all()
        globals_ = [d for d in roots if d.name == models.GLOBAL_DOMAIN_NAME]
        assert [d.id for d in globals_] == [models.GLOBAL_DOMAIN_ID]
        assert session.get(models.Domain, models.GLOBAL_DOMAIN_ID).name == "Global"


def test_domain_tree(engine):
    name = f"emea-{uuid.uuid4().hex[:6]}"
    emea = add(engine, models.Domain(name=name, parent_id=models.GLOBAL_DOMAIN_ID))
    paris = add(engine, models.Domain(name="paris", parent_id=emea.id))
    with session_scope(engine) as session:
        children = session.exec(select(models.Domain).where(models.Domain.parent_id == emea.id)).all()
        assert [d.name for d in children] == ["paris"]
        assert session.get(models.Domain, paris.id).parent_id == emea.id
    # Siblings need distinct names; the same name under another parent is fine.
    refused(engine, models.Domain(name="paris", parent_id=emea.id))
    add(engine, models.Domain(name="paris", parent_id=models.GLOBAL_DOMAIN_ID))
    # A child of a domain that does not exist is refused.
    refused(engine, models.Domain(name="orphan", parent_id=uuid.uuid4()))


def test_trustpoint_name_is_unique_per_device(engine):
    eo = add(engine, enrollment_object())
    dev1, dev2 = add(engine, device(), device())
    add(engine, trustpoint(dev1, eo))
    add(engine, trustpoint(dev2, eo))  # the same name on another device is fine
    refused(engine, trustpoint(dev1, eo))


def test_certificate_slot_is_unique_per_trustpoint_role_and_position(engine):
    eo = add(engine, enrollment_object())
    dev = add(engine, device())
    tp = add(engine, trustpoint(dev, eo))
    add(engine, certificate(tp, "identity", 0), certificate(tp, "ca", 0), certificate(tp, "ca", 1))
    refused(engine, certificate(tp, "identity", 0))
    refused(engine, certificate(tp, "ca", 1))


def test_enrollment_object_name_is_unique_per_domain(engine):
    branch = models.Domain(name=f"branch-{uuid.uuid4().hex[:6]}", parent_id=models.GLOBAL_DOMAIN_ID)
    add(engine, branch)
    name = f"est-{uuid.uuid4().hex[:6]}"
    add(engine, enrollment_object(name))
    add(engine, enrollment_object(name, domain_id=branch.id))
    refused(engine, enrollment_object(name))


def test_timestamps_come_back_timezone_aware_utc(engine):
    paris_time = datetime(2031, 6, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    eo = add(engine, enrollment_object())
    dev = add(engine, device())
    tp = trustpoint(dev, eo)
    tp.status_changed_at = paris_time
    add(engine, tp)
    with session_scope(engine) as session:
        stored = session.get(models.Trustpoint, tp.id)
        session.refresh(stored)
        for value in (stored.created_at, stored.updated_at, stored.status_changed_at):
            assert value.utcoffset() == timedelta(0)
        assert stored.status_changed_at == paris_time
        assert stored.status_changed_at.hour == 12  # the same instant, expressed in UTC
        assert abs(stored.created_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_timestamps_compare_as_instants_in_queries(engine):
    # A job whose lease expired must be found however the "now" it is compared with is expressed.
    job = models.Job(kind="enroll", device_id=uuid.uuid4(), domain_id=models.GLOBAL_DOMAIN_ID,
                     trustpoint_name="tp", lease_expires_at=datetime(2031, 1, 1, 10, 0, tzinfo=UTC))
    add(engine, job)
    one_minute_later_in_new_york = datetime(2031, 1, 1, 5, 1, tzinfo=timezone(timedelta(hours=-5)))
    with session_scope(engine) as session:
        expired = session.exec(
            select(models.Job.id).where(models.Job.lease_expires_at < one_minute_later_in_new_york)
        ).all()
    assert job.id in expired


def test_json_columns_round_trip(engine):
    eo = enrollment_object()
    eo.crl_urls = ["http://[2001:db8::5]/ca.crl", "http://crl.example.net/ca.crl"]
    add(engine, eo)
    with session_scope(engine) as session:
        assert session.get(models.EnrollmentObject, eo.id).crl_urls == eo.crl_urls
