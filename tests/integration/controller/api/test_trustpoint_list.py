"""The trustpoint list a dashboard polls: serialised without the page's model, yet exactly the
answer the model documents. The certificates it shows: each trustpoint's own, identity first and the CA
chain in order, on SQLite and PostgreSQL; and on PostgreSQL an index lookup per trustpoint
even before the planner has statistics (as right after a bulk enrollment, or with autovacuum
off), so a dashboard polling the list does not slow down with every certificate issued."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlmodel import Session

from services.controller.api.schemas.common import Page
from services.controller.api.schemas.trustpoints import TrustpointSummary
from services.controller.crud import trustpoints as crud
from services.controller.crud.trustpoints import certificate_summaries, certificate_summaries_query, list_trustpoints
from services.controller.rules.scope import DomainScope
from shared.models import GLOBAL_DOMAIN_ID, Certificate, Device, EnrollmentObject, Trustpoint
from tests.support.api import GLOBAL, finish_jobs, install_certificate

ROOT = DomainScope(domain_id=GLOBAL_DOMAIN_ID, subtree=frozenset([GLOBAL_DOMAIN_ID]), ancestors=(GLOBAL_DOMAIN_ID,))
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
#: (role, chain position) of each trustpoint's certificates, stored out of order on purpose.
SLOTS = [("ca", 1), ("identity", 0), ("ca", 0)]


def fleet(session: Session, count: int) -> list[uuid.UUID]:
    """``count`` devices, each with a trustpoint holding an identity certificate and a two-CA chain."""
    obj = EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name="vpn", enrollment_type="self_signed",
                           key_type="ecdsa", key_size=256)
    session.add(obj)
    session.flush()
    devices = [dict(id=uuid.uuid4(), domain_id=GLOBAL_DOMAIN_ID, name=f"ftd-{i:05d}", model="FTD 3110",
                    serial=f"SN{i:05d}", ip_address="192.0.2.1", fqdn=f"ftd-{i:05d}.example",
                    management_url="http://192.0.2.1", created_at=NOW, updated_at=NOW) for i in range(count)]
    trustpoints = [dict(id=uuid.uuid4(), device_id=d["id"], domain_id=GLOBAL_DOMAIN_ID, enrollment_object_id=obj.id,
                        name="vpn", enrollment_type="self_signed", created_at=NOW, updated_at=NOW)
                   for d in devices]
    certificates = [
        dict(id=uuid.uuid4(), trustpoint_id=tp["id"], role=role, chain_position=position, pem="-",
             subject=f"CN={role}-{position} of {tp['id']}", issuer="CN=issuer", serial_number="01",
             not_before=NOW, not_after=NOW + timedelta(days=365), key_algorithm="EC", key_size=256,
             signature_algorithm="ecdsa-with-SHA256", fingerprint_sha256=uuid.uuid4().hex * 2, created_at=NOW)
        for tp in trustpoints for role, position in SLOTS
    ]
    session.execute(insert(Device), devices)
    session.execute(insert(Trustpoint), trustpoints)
    session.execute(insert(Certificate), certificates)
    session.commit()
    return [tp["id"] for tp in trustpoints]


@pytest.mark.parametrize("db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_each_trustpoint_lists_its_own_certificates_in_chain_order(db_engine):
    with Session(db_engine) as session:
        ids = fleet(session, 30)
        rows, total = list_trustpoints(session, scope=ROOT, offset=0, limit=10)
        page = [row.id for row in rows]
        found = certificate_summaries(session, page)

    assert total == 30 and len(page) == 10 and set(page) <= set(ids)
    assert set(found) == set(page)
    for trustpoint_id in page:
        certificates = found[trustpoint_id]
        assert [(c.role, c.chain_position) for c in certificates] == [("ca", 0), ("ca", 1), ("identity", 0)]
        assert all(c.subject.endswith(f"of {trustpoint_id}") for c in certificates)
    assert certificate_summaries(session, []) == {}


@pytest.mark.postgres
def test_certificate_lookup_uses_the_index_without_statistics(pg_engine):
    with Session(pg_engine) as session:
        ids = fleet(session, 3000)
        # Straight after the inserts: no ANALYZE has run, so the planner has no statistics.
        compiled = certificate_summaries_query("postgresql").compile(dialect=pg_engine.dialect)
        raw = session.connection().connection.dbapi_connection.cursor()
        raw.execute("EXPLAIN " + compiled.string, {**compiled.params, "page": sorted(ids)[:100]})
        plan = "\n".join(row[0] for row in raw.fetchall())

    assert "Seq Scan on certificate" not in plan, plan
    assert "ix_certificate_trustpoint_id" in plan or "certificate_trustpoint_id_role_chain_position_key" in plan, plan


def remove_trustpoints(session: Session, count: int) -> None:
    ids = [row.id for row in list_trustpoints(session, scope=ROOT, offset=0, limit=count)[0]]
    session.execute(Certificate.__table__.delete().where(Certificate.trustpoint_id.in_(ids)))
    session.execute(Trustpoint.__table__.delete().where(Trustpoint.id.in_(ids)))


def test_a_large_total_is_remembered_for_a_moment_and_a_small_one_is_always_exact(sqlite_engine, monkeypatch):
    with Session(sqlite_engine) as session:
        fleet(session, 30)
        monkeypatch.setattr(crud, "CACHE_TOTALS_FROM", 1_000)  # 30 is small: counted every time
        assert list_trustpoints(session, scope=ROOT, offset=0, limit=5)[1] == 30
        remove_trustpoints(session, 2)
        assert list_trustpoints(session, scope=ROOT, offset=0, limit=5)[1] == 28

        monkeypatch.setattr(crud, "CACHE_TOTALS_FROM", 20)  # now 28 counts as large: remembered
        assert list_trustpoints(session, scope=ROOT, offset=0, limit=5)[1] == 28
        remove_trustpoints(session, 3)
        assert list_trustpoints(session, scope=ROOT, offset=0, limit=5)[1] == 28  # within the second
        monkeypatch.setattr(crud._TOTALS, "seconds", 0.0)  # the moment has passed
        assert list_trustpoints(session, scope=ROOT, offset=0, limit=5)[1] == 25


@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)
def test_the_list_is_byte_for_byte_what_its_model_serialises(api):
    enrolled = api.enrollment_object("vpn")
    manual = api.enrollment_object("vpn-manual", enrollment_type="manual")
    devices = [api.device(f"LIST-{i}") for i in range(3)]
    full = api.add(devices[0]["id"], enrolled["id"])["trustpoint"]
    api.add(devices[1]["id"], enrolled["id"])  # no certificate yet: in progress
    due = api.add(devices[2]["id"], manual["id"])["trustpoint"]
    finish_jobs(api.engine)
    install_certificate(api.engine, full["id"], expires_in_days=30)
    install_certificate(api.engine, full["id"], expires_in_days=900, role="ca", position=1)
    install_certificate(api.engine, full["id"], expires_in_days=400, role="ca", position=0)
    with Session(api.engine) as session:
        row = session.get(Trustpoint, uuid.UUID(due["id"]))
        # A time with no fraction of a second, an error text beyond ASCII, a warning to show.
        row.renewal_due_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        row.error_message, row.revoked_at = "CA a répondu «non»\u2028\"quoted\"", datetime.now(UTC) - timedelta(days=1)
        session.add(row)
        session.commit()

    answer = api.get(f"/domains/{GLOBAL}/trustpoints", params={"limit": 10})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    page = Page[TrustpointSummary].model_validate_json(answer.content)
    # Every field the model has, in its order and formats, and nothing else.
    assert page.model_dump_json().encode() == answer.content
    assert page.total == 3 and len(page.items) == 3
    shown = {item.id: item for item in page.items}
    chain = shown[uuid.UUID(full["id"])]
    assert chain.identity_certificate is not None
    assert [c.chain_position for c in chain.ca_certificates] == [0, 1]  # issuing CA first
    warned = shown[uuid.UUID(due["id"])]
    assert warned.renewal_warning.startswith("renewal_due:") and warned.error_message.startswith("CA a répondu")
    device_page = api.get(f"/domains/{GLOBAL}/devices/{devices[0]['id']}/trustpoints")
    assert Page[TrustpointSummary].model_validate_json(device_page.content).model_dump_json().encode() == \
        device_page.content
