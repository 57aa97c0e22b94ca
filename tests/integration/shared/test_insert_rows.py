"""Many rows at once (shared.db.insert_rows): a COPY on PostgreSQL, an INSERT elsewhere, storing
exactly what SQLAlchemy's own INSERT stores, in the session's transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from shared import models
from shared.db import insert_rows, session_scope

JOB = models.Job.__table__


#: Every test on SQLite and on PostgreSQL (conftest's db_engine).
pytestmark = pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)


def job_rows(count: int, *, steps) -> list[dict]:
    # Another zone than UTC: stored as the same instant, read back in UTC.
    lease = datetime(2026, 12, 5, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    return [dict(id=uuid.uuid4(), kind="enroll", device_id=uuid.uuid4(), domain_id=models.GLOBAL_DOMAIN_ID,
                 trustpoint_name=f"vpn-{i}", lease_expires_at=lease, steps=steps) for i in range(count)]


def stored(engine, ids) -> list[tuple]:
    columns = [c for c in JOB.columns if c.key not in ("id", "device_id", "trustpoint_name", "created_at")]
    with engine.connect() as connection:
        rows = connection.execute(select(JOB.c.id, *columns).where(JOB.c.id.in_(ids))).all()
    return sorted(tuple(row[1:]) for row in rows)


@pytest.mark.parametrize("steps", [[{"at": "2026-12-05T07:30:15+00:00", "step": "requested", "detail": "é ∀ \"q\""}],
                                   [], None])
def test_the_rows_are_stored_as_an_insert_stores_them(db_engine, steps):
    copied, inserted = job_rows(3, steps=steps), job_rows(3, steps=steps)
    with session_scope(db_engine) as session:
        insert_rows(session, JOB, copied)
        session.execute(insert(JOB), inserted)
        session.commit()
    ours, theirs = stored(db_engine, [r["id"] for r in copied]), stored(db_engine, [r["id"] for r in inserted])
    assert len(ours) == 3 and ours == theirs
    with db_engine.connect() as connection:
        row = connection.execute(select(JOB).where(JOB.c.id == copied[0]["id"])).one()
    # The columns' defaults filled in, the time an instant in UTC, the steps as given.
    assert (row.state, row.attempts, row.ca_waits, row.reason) == ("queued", 0, 0, "operator")
    assert row.lease_expires_at == datetime(2026, 12, 5, 7, 30, 15, 123456, tzinfo=UTC)
    assert row.steps == steps
    assert row.created_at.tzinfo is not None


def test_rows_written_in_a_transaction_rolled_back_are_not_there(db_engine):
    rows = job_rows(5, steps=[])
    with session_scope(db_engine) as session:
        insert_rows(session, JOB, rows)
        session.rollback()
    assert stored(db_engine, [r["id"] for r in rows]) == []


def test_a_duplicate_key_is_an_integrity_error_and_writes_nothing(db_engine):
    first = job_rows(2, steps=[])
    with session_scope(db_engine) as session:
        insert_rows(session, JOB, first)
        session.commit()
    again = [*job_rows(3, steps=[]), {**first[0], "trustpoint_name": "another"}]
    with session_scope(db_engine) as session, pytest.raises(IntegrityError):
        insert_rows(session, JOB, again)
    assert stored(db_engine, [r["id"] for r in again[:3]]) == []
    with session_scope(db_engine) as session:  # the connection went back to the pool usable
        insert_rows(session, JOB, job_rows(1, steps=[]))
        session.commit()


def test_rows_may_reference_a_row_added_to_the_session_and_not_yet_flushed(db_engine):
    with session_scope(db_engine) as session:
        obj = models.EnrollmentObject(domain_id=models.GLOBAL_DOMAIN_ID, name=f"eo-{uuid.uuid4().hex[:8]}",
                                      enrollment_type="self_signed", key_type="ecdsa", key_size=256)
        batch = models.Batch(domain_id=models.GLOBAL_DOMAIN_ID, enrollment_object_id=obj.id,
                             trustpoint_name="vpn", selection={}, selected=1)
        session.add(obj)
        session.flush()
        session.add(batch)
        rows = [{**job_rows(1, steps=[])[0], "batch_id": batch.id}]
        insert_rows(session, JOB, rows)
        session.commit()
    with db_engine.connect() as connection:
        assert connection.execute(select(JOB.c.batch_id).where(JOB.c.id == rows[0]["id"])).scalar() == batch.id


def test_a_key_that_is_no_column_is_refused(db_engine):
    with session_scope(db_engine) as session, pytest.raises(ValueError, match="no column"):
        insert_rows(session, JOB, [{**job_rows(1, steps=[])[0], "colour": "blue"}])


def test_bytes_booleans_and_text_with_copys_special_characters_arrive_unchanged(db_engine):
    # COPY's text format has its own escapes (tab, newline, backslash, \N for NULL): values that
    # contain them must still arrive as they were.
    blob = bytes(range(256)) + b"\\N\t\n"
    rows = [dict(id=uuid.uuid4(), domain_id=models.GLOBAL_DOMAIN_ID, name=f"fw-{i}", serial=f"SER-{uuid.uuid4().hex}",
                 management_url="http://192.0.2.1/api", model="a\tb\\N\nc", keyring_valid=i == 0,
                 endpoint_credential_blob=blob if i == 0 else None) for i in range(2)]
    with session_scope(db_engine) as session:
        insert_rows(session, models.Device.__table__, rows)
        session.commit()
    device = models.Device.__table__
    with db_engine.connect() as connection:
        stored = {r.name: r for r in connection.execute(select(device).where(device.c.id.in_([r["id"] for r in rows])))}
    assert stored["fw-0"].endpoint_credential_blob == blob and stored["fw-1"].endpoint_credential_blob is None
    assert stored["fw-0"].model == "a\tb\\N\nc" and stored["fw-0"].keyring_valid is True
    assert stored["fw-1"].keyring_valid is False and stored["fw-1"].health_error is None
