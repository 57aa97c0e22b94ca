"""The alert store on a real database (SQLite, and PostgreSQL where marked): one alert per
condition however often it is seen, last_seen refreshed without a duplicate, an ``updated`` event
only when severity or description change, clearing, a new alert when a condition comes back,
acknowledging once, and every change's CloudEvent in the outbox in order."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from services.controller.alerts import store
from shared.alerts import SOURCE, AlertCondition, alert_data
from shared.enums import AlertCode, Severity
from shared.errors import ConflictError, NotFoundError
from shared.models import GLOBAL_DOMAIN_ID, Alert, AlertEvent
from tests.support.clock import START

ON_BOTH = pytest.mark.parametrize(
    "db_engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
CODES = (AlertCode.KEYRING_EXPIRED,)
DEVICE = uuid.uuid4()


def keyring(severity: Severity | None = None, description: str = "default Keyring's certificate is invalid, "
            "reason: expired", device_id: uuid.UUID = DEVICE) -> AlertCondition:
    return AlertCondition(code=AlertCode.KEYRING_EXPIRED, description=description, domain_id=GLOBAL_DOMAIN_ID,
                          device_id=device_id, device_name="fw-1", severity=severity)


def sync(engine, *conditions, at=START, codes=CODES) -> store.SyncResult:
    with Session(engine) as session:
        result = store.sync(session, conditions, codes=codes, now=at)
        session.commit()
    return result


def alerts(engine) -> list[Alert]:
    with Session(engine) as session:
        return list(session.exec(select(Alert).order_by(Alert.first_seen)).all())


def events(engine) -> list[AlertEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AlertEvent).order_by(AlertEvent.seq)).all())


@ON_BOTH
def test_a_condition_seen_again_keeps_its_one_alert_and_refreshes_last_seen(db_engine):
    assert sync(db_engine, keyring()).raised == 1
    later = START + timedelta(minutes=5)
    again = sync(db_engine, keyring(), at=later)
    assert (again.raised, again.updated, again.still_active) == (0, 0, 1)
    [alert] = alerts(db_engine)
    assert (alert.state, alert.severity, alert.first_seen, alert.last_seen) == ("active", "major", START, later)
    assert [e.type for e in events(db_engine)] == ["io.certfleet.alert.raised"]


@ON_BOTH
def test_a_change_of_severity_or_description_is_an_update(db_engine):
    sync(db_engine, keyring())
    assert sync(db_engine, keyring(Severity.CRITICAL), at=START + timedelta(minutes=1)).updated == 1
    assert sync(db_engine, keyring(Severity.CRITICAL, "reason: not yet valid"),
                at=START + timedelta(minutes=2)).updated == 1
    [alert] = alerts(db_engine)
    assert (alert.severity, alert.description) == ("critical", "reason: not yet valid")
    updates = [e for e in events(db_engine) if e.type.endswith(".updated")]
    assert [(e.severity, e.cloudevent["data"]["description"]) for e in updates] == [
        ("critical", "default Keyring's certificate is invalid, reason: expired"),
        ("critical", "reason: not yet valid")]


@ON_BOTH
def test_a_condition_that_ends_clears_its_alert_and_one_that_comes_back_is_a_new_alert(db_engine):
    sync(db_engine, keyring())
    cleared_at = START + timedelta(minutes=1)
    assert sync(db_engine, at=cleared_at).cleared == 1
    [alert] = alerts(db_engine)
    assert (alert.state, alert.cleared_at, alert.condition_key) == ("cleared", cleared_at, None)
    assert sync(db_engine, at=cleared_at + timedelta(minutes=1)).cleared == 0  # nothing open: nothing to clear

    assert sync(db_engine, keyring(), at=START + timedelta(minutes=3)).raised == 1
    old, new = alerts(db_engine)
    assert (old.id, old.state) == (alert.id, "cleared") and new.id != old.id and new.state == "active"
    assert [e.type.rsplit(".", 1)[1] for e in events(db_engine)] == ["raised", "cleared", "raised"]


@ON_BOTH
def test_syncing_some_codes_leaves_the_others_alerts_alone(db_engine):
    bundle = AlertCondition(code=AlertCode.CA_BUNDLE_UPDATE_FAILED, description="failed", domain_id=GLOBAL_DOMAIN_ID,
                            resource="certfleet CA bundle")
    sync(db_engine, bundle, codes=(AlertCode.CA_BUNDLE_UPDATE_FAILED,))
    sync(db_engine, keyring(), keyring(device_id=uuid.uuid4()))
    assert sync(db_engine).cleared == 2  # the keyrings only
    assert {(a.code, a.state) for a in alerts(db_engine)} == {("CF-BUNDLE-FAILED", "active"), ("F0853", "cleared")}
    with pytest.raises(ValueError, match="outside the codes"):
        sync(db_engine, bundle)


@ON_BOTH
def test_acknowledging_once_and_an_acknowledged_alert_stays_acknowledged_until_it_clears(db_engine):
    sync(db_engine, keyring())
    [alert] = alerts(db_engine)
    acked_at = START + timedelta(minutes=1)
    with Session(db_engine) as session:
        found = store.get_alert(session, alert.id, sees=lambda domain: True)
        assert store.acknowledge(session, found, by="ops (admin)", now=acked_at) is True
        session.commit()
        assert store.acknowledge(session, found, by="someone else (admin)", now=acked_at + timedelta(1)) is False
        session.commit()
    sync(db_engine, keyring(), at=START + timedelta(minutes=2))
    [alert] = alerts(db_engine)
    assert (alert.state, alert.acknowledged_by, alert.acknowledged_at) == ("acknowledged", "ops (admin)", acked_at)

    sync(db_engine, at=START + timedelta(minutes=3))
    with Session(db_engine) as session:
        cleared = session.get(Alert, alert.id)
        with pytest.raises(ConflictError) as refused:
            store.acknowledge(session, cleared, by="ops (admin)", now=START + timedelta(minutes=4))
        assert refused.value.code == "alert_cleared" and refused.value.status == 409
        with pytest.raises(NotFoundError) as hidden:
            store.get_alert(session, alert.id, sees=lambda domain: False)
        assert hidden.value.code == "alert_not_found"
    assert [e.type.rsplit(".", 1)[1] for e in events(db_engine)] == ["raised", "acknowledged", "cleared"]


@ON_BOTH
def test_every_change_is_a_cloudevent_in_the_outbox_in_order(db_engine):
    sync(db_engine, keyring())
    sync(db_engine, keyring(Severity.CRITICAL), at=START + timedelta(minutes=1))
    with Session(db_engine) as session:
        store.acknowledge(session, session.exec(select(Alert)).one(), by="ops (admin)",
                          now=START + timedelta(minutes=2))
        session.commit()
    sync(db_engine, at=START + timedelta(minutes=3))
    written = events(db_engine)
    [alert] = alerts(db_engine)
    assert [e.seq for e in written] == sorted(e.seq for e in written) and len({e.seq for e in written}) == 4
    states = []
    for minute, (event, change) in enumerate(zip(written, ("raised", "updated", "acknowledged", "cleared"),
                                                 strict=True)):
        ce = event.cloudevent
        assert (ce["specversion"], ce["source"], ce["type"], ce["subject"], ce["datacontenttype"]) == (
            "1.0", SOURCE, f"io.certfleet.alert.{change}", str(alert.id), "application/json")
        assert ce["id"] == str(event.id) and (event.alert_id, event.domain_id) == (alert.id, GLOBAL_DOMAIN_ID)
        assert ce["time"] == (START + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
        assert event.type == ce["type"] and event.relayed_at is None
        states.append((ce["data"]["state"], ce["data"]["severity"]))
    assert states == [("active", "major"), ("active", "critical"), ("acknowledged", "critical"),
                      ("cleared", "critical")]
    assert written[-1].cloudevent["data"] == alert_data(alert)
    assert len({e.id for e in written}) == 4
