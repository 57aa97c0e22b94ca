"""``cert-update`` through the API, in process: a bundle source and the servers to check are real
HTTPS servers on loopback with certificates made here; the bundle is signed by a pinned key.

Each of the product's messages in its situation, the bundle replaced only when it should be
(atomically, audited, pushed to every device), and every bad bundle refused with the old one
left in force."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import Session, select

from shared.events import BULK_QUEUE
from shared.models import Batch, CaBundleState, Device, Job
from shared.protocols import ca_bundle
from tests.integration.controller.api.test_api import metric
from tests.support.api import GLOBAL, Api, make_settings, problem, start_api
from tests.support.jobs import drain
from tests.support.tls import Issued, TlsHandler, https_server, make_ca, make_leaf, pem

SOURCE_CA = make_ca("Bundle Source CA")  # the source's TLS: trusted before any bundle (bootstrap file)
SERVER_CA = make_ca("Partner Server CA")  # a server that must stay reachable
OTHER_CA = make_ca("Unrelated CA")
SIGNER = make_ca("Bundle Signing")


class Source:
    """What the bundle source serves: a version signed by ``key`` (the pinned one by default)."""

    def __init__(self) -> None:
        self.version = 0
        self.body = b""

    def publish(self, *cas: Issued, key: ec.EllipticCurvePrivateKey = SIGNER.key, mangle=None) -> None:
        self.version += 1
        manifest = ca_bundle.manifest_bytes(version=self.version, published_at=datetime.now(UTC), pem=pem(*cas))
        if mangle is not None:
            manifest = mangle(manifest)
        self.body = ca_bundle.answer(manifest, ca_bundle.sign(manifest, key))


def serving(source: Source) -> type[TlsHandler]:
    class Handler(TlsHandler):
        def do_GET(self) -> None:
            body = source.body if self.path == "/ca-bundle/latest" else b"not found"
            self.send_response(200 if self.path == "/ca-bundle/latest" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class Silent(TlsHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def world(db_engine, stub_broker, tmp_path):
    source = Source()
    signer_file, trust_file = tmp_path / "bundle-signing.pem", tmp_path / "bootstrap.pem"
    signer_file.write_text(SIGNER.pem)
    trust_file.write_text(SOURCE_CA.pem)
    with https_server(serving(source), leaf=make_leaf(SOURCE_CA)) as source_server, \
            https_server(Silent, leaf=make_leaf(SERVER_CA)) as checked:
        settings = replace(
            make_settings(db_engine),
            ca_bundle_urls=f"https://127.0.0.1:{source_server.server_address[1]}/",
            ca_bundle_signer=str(signer_file), ca_bundle_trust=str(trust_file),
            connection_checks=f"https://127.0.0.1:{checked.server_address[1]}/")
        client, tokens = start_api(db_engine, stub_broker, settings)
        with client:
            yield source, Api(client=client, engine=db_engine, broker=stub_broker, tokens=tokens), checked


def installed(api: Api) -> CaBundleState | None:
    with Session(api.engine) as session:
        return session.get(CaBundleState, "certfleet")


def test_the_products_messages_each_in_its_situation(world):
    source, api, checked = world
    for serial in ("BND-1", "BND-2", "BND-3"):
        api.device(serial)

    def connection_checks() -> dict[str, float]:
        text = api.client.get("/metrics").text
        return {o: metric(text, "certfleet_ca_bundle_connection_checks_total", outcome=o) for o in ("passed", "failed")}

    checks_before = connection_checks()

    # Out of date (nothing installed) and every server reachable with the new bundle.
    source.publish(SOURCE_CA, SERVER_CA)
    tested = api.ok("POST", "/cert-update/test")
    assert (tested["message"], tested["ok"], tested["outcome"]) == (
        "Test succeeded, certs can safely be updated or are already up to date.", True, "checks_passed")
    assert installed(api) is None  # a test changes nothing
    ran = api.ok("POST", "/cert-update/run-now", {})
    assert (ran["message"], ran["outcome"], ran["latest_version"], ran["devices"]) == (
        "Certs have been replaced or was already up to date.", "updated", "1", 3)
    bundle = installed(api)
    assert (bundle.version, bundle.certificates) == ("1", 2)
    assert checked.handshakes >= 2  # the test's check and the update's check, each a real handshake
    # The push: a batch of one bundle job per device, on the bulk queue.
    with Session(api.engine) as session:
        jobs = session.exec(select(Job).where(Job.kind == "bundle_update")).all()
        batch = session.get(Batch, jobs[0].batch_id)
    assert len(jobs) == 3 and batch.action == "bundle_update" and str(batch.id) == ran["batch_id"]
    assert sorted(m.args[0] for m in drain(api.broker, BULK_QUEUE)) == sorted(str(j.id) for j in jobs)

    # Up to date: no connection check, the success message.
    handshakes = checked.handshakes
    assert api.ok("POST", "/cert-update/test")["message"] == (
        "Test succeeded, certs can safely be updated or are already up to date.")
    assert api.ok("POST", "/cert-update/run-now", {})["outcome"] == "up_to_date"
    assert checked.handshakes == handshakes

    # Out of date, and the checked server's CA left out of the new bundle: it would be unreachable.
    source.publish(SOURCE_CA, OTHER_CA)
    failed = api.ok("POST", "/cert-update/test")
    assert (failed["message"], failed["ok"]) == ("Test failed, not able to fully connect.", False)
    assert [f["server"] for f in failed["failed_servers"]] == [f"127.0.0.1:{checked.server_address[1]}"]
    assert "certificate not trusted by the new bundle" in failed["failed_servers"][0]["reason"]
    refused = api.ok("POST", "/cert-update/run-now", {})
    assert (refused["message"], refused["ok"]) == ("Certs failed some connection checks.", False)
    assert installed(api).version == "1"  # nothing replaced
    forced = api.ok("POST", "/cert-update/run-now", {"force": True})
    assert (forced["message"], forced["ok"], forced["outcome"]) == (
        "Certs failed some connection checks, but replace has been forced.", True, "forced")
    assert installed(api).version == "2"

    # Two servers checked per test or update (the source and the configured one), none when up to date;
    # the configured one failed the last three.
    checks_after = connection_checks()
    assert {o: checks_after[o] - checks_before[o] for o in checks_after} == {"passed": 7, "failed": 3}

    audit = api.ok("GET", "/cert-update/audit")["items"]
    assert [(a["action"], a["outcome"], a["forced"]) for a in reversed(audit)] == [
        ("test", "checks_passed", False), ("run-now", "updated", False), ("test", "up_to_date", False),
        ("run-now", "up_to_date", False), ("test", "checks_failed", False), ("run-now", "failed_checks", False),
        ("run-now", "forced", True)]
    assert audit[0]["requested_by"] == "test admin (admin)" and audit[0]["old_version"] == "1"
    assert audit[0]["failed_servers"][0]["server"].startswith("127.0.0.1:")


def test_auto_update_is_on_by_default_at_a_time_of_its_own_and_can_be_switched(world):
    _, api, _ = world
    shown = api.ok("GET", "/cert-update")
    assert shown["auto_update"] is True
    assert shown["schedule"].startswith("Autoupdate is enabled and set for every day at ")
    assert shown["schedule"].endswith(" UTC")
    assert shown["last_modified_message"] == "CA bundle was never updated: run certfleet cert-update run-now"
    assert api.ok("PUT", "/cert-update/auto-update", {"enabled": False})["schedule"] == "Autoupdate is disabled"
    again = api.ok("PUT", "/cert-update/auto-update", {"enabled": True})["schedule"]
    assert again == shown["schedule"]  # the same time of day: the installation's own
    assert api.ok("GET", "/cert-update")["schedule"] == again


def test_the_last_modified_time_is_shown_as_the_product_does(world):
    source, api, _ = world
    source.publish(SOURCE_CA, SERVER_CA)
    api.ok("POST", "/cert-update/run-now", {})
    with Session(api.engine) as session:
        row = session.get(CaBundleState, "certfleet")
        row.last_modified = datetime(2022, 9, 15, 16, 12, 35, tzinfo=UTC)
        session.add(row)
        session.commit()
    shown = api.ok("GET", "/cert-update")["last_modified_message"]
    assert shown == "CA bundle was last modified 'Thu Sep 15 16:12:35 2022'"


def _swap_sha(manifest: bytes) -> bytes:
    fields = json.loads(manifest)
    fields["sha256"] = "0" * 64
    return json.dumps(fields).encode()


@pytest.mark.parametrize(("publish", "code"), [
    (lambda s: s.publish(SOURCE_CA, key=OTHER_CA.key), "bundle_signature_invalid"),
    (lambda s: s.publish(SOURCE_CA, mangle=_swap_sha), "bundle_hash_mismatch"),
    (lambda s: s.publish(SOURCE_CA, make_leaf(SOURCE_CA)), "bundle_certificate_not_ca"),
    (lambda s: setattr(s, "body", b"<html>maintenance</html>"), "bundle_unreadable"),
])
def test_a_bad_bundle_is_refused_and_the_old_one_stays(world, publish, code):
    source, api, _ = world
    source.publish(SOURCE_CA, SERVER_CA)
    api.ok("POST", "/cert-update/run-now", {})
    publish(source)
    for action in ("/cert-update/test", "/cert-update/run-now"):
        refused = problem(api.post(action, {}), 502, code)
        assert "refused" in refused["detail"]
    assert installed(api).version == "1"
    assert api.ok("GET", "/cert-update/audit")["items"][0]["outcome"] == "invalid"


def test_a_tampered_answer_is_refused_even_over_trusted_tls(world):
    source, api, _ = world
    source.publish(SOURCE_CA, SERVER_CA)
    outer = json.loads(source.body)
    manifest = json.loads(ca_bundle.base64.b64decode(outer["manifest"]))
    manifest["pem"] = manifest["pem"] + OTHER_CA.pem  # one CA slipped in on the way
    outer["manifest"] = ca_bundle.base64.b64encode(json.dumps(manifest).encode()).decode()
    source.body = json.dumps(outer).encode()
    problem(api.post("/cert-update/run-now", {}), 502, "bundle_signature_invalid")
    assert installed(api) is None


def test_an_unreachable_source_and_a_missing_configuration_are_said_so(world, sqlite_engine, stub_broker):
    source, api, _ = world
    source.publish(SOURCE_CA)
    with Session(api.engine) as session:
        session.add(CaBundleState(name="certfleet", version="9", sha256="x", pem=SOURCE_CA.pem, certificates=1))
        session.commit()
    older = problem(api.post("/cert-update/run-now", {}), 502, "bundle_version_older")
    assert "older than the installed 9" in older["detail"]

    settings = replace(make_settings(sqlite_engine), ca_bundle_urls="https://127.0.0.1:9/")
    client, tokens = start_api(sqlite_engine, stub_broker, replace(settings, ca_bundle_signer=api_signer(world)))
    with client:
        other = Api(client=client, engine=sqlite_engine, broker=stub_broker, tokens=tokens)
        down = problem(other.post("/cert-update/test", {}), 502, "bundle_source_unreachable")
        assert "https://127.0.0.1:9/" in down["detail"]
    client, tokens = start_api(sqlite_engine, stub_broker, make_settings(sqlite_engine))
    with client:
        bare = Api(client=client, engine=sqlite_engine, broker=stub_broker, tokens=tokens)
        missing = problem(bare.post("/cert-update/test", {}), 409, "ca_bundle_source_missing")
        assert "CERTFLEET_CA_BUNDLE_URLS" in missing["detail"]


def api_signer(world) -> str:
    return world[1].client.app.state.settings.ca_bundle_signer


def test_only_an_admin_may_see_or_change_the_bundle(world):
    _, api, _ = world
    for role in ("network_admin", "read_only"):
        problem(api.get("/cert-update", role=role), 403, "forbidden")
        problem(api.post("/cert-update/run-now", {}, role=role), 403, "forbidden")
    problem(api.get("/cert-update", role=None), 401, "unauthorized")


def test_the_daily_run_uses_the_scheduler_and_its_clock(world):
    from services.controller.scheduling.scheduler import Scheduler
    from tests.support.clock import ManualClock

    source, api, _ = world
    source.publish(SOURCE_CA, SERVER_CA)
    settings = api.client.app.state.settings
    clock = ManualClock(datetime.now(UTC))
    scheduler = Scheduler(api.engine, api.broker, settings, clock=clock, holder="daily")
    scheduler.tick()
    assert installed(api) is None  # not its time yet
    update = next(s for s in api.ok("GET", "/schedules") if s["name"] == "ca-bundle-update")
    due = datetime.fromisoformat(update["next_run_at"])
    assert due - clock() <= timedelta(days=1)
    clock.advance((due - clock()).total_seconds() + 1)
    runs = {r.schedule: r for r in scheduler.tick()}
    assert runs["ca-bundle-update"].outcome == "succeeded" and installed(api).version == "1"
    assert api.ok("GET", "/cert-update/audit")["items"][0]["action"] == "schedule"


# PostgreSQL too: it refuses a GROUP BY whose expression is sent with a parameter of its own.
@pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)
def test_devices_on_an_old_bundle_are_found_and_counted(world):
    source, api, _ = world
    devices = [api.device(f"OLD-{i}") for i in range(3)]
    source.publish(SOURCE_CA, SERVER_CA)
    api.ok("POST", "/cert-update/run-now", {})
    with Session(api.engine) as session:  # one device confirmed the push
        row = session.get(Device, uuid.UUID(devices[0]["id"]))
        row.bundle_version = "1"
        session.add(row)
        session.commit()
    older = api.ok("GET", f"/domains/{GLOBAL}/devices?bundle_version=")["items"]
    assert sorted(d["serial"] for d in older) == ["OLD-1", "OLD-2"]
    current = api.ok("GET", f"/domains/{GLOBAL}/devices?bundle_version=1")["items"]
    assert [d["serial"] for d in current] == ["OLD-0"] and current[0]["bundle_version"] == "1"
    shown = api.ok("GET", "/cert-update")
    assert (shown["version"], shown["devices_current"], shown["devices_older"]) == ("1", 1, 2)
    text = api.client.get("/metrics").text
    assert 'certfleet_ca_bundle_version_info{sha256="' in text and 'version="1"' in text
    assert 'certfleet_devices_ca_bundle{version="current"} 1.0' in text
    assert 'certfleet_devices_ca_bundle{version="older"} 2.0' in text
    assert "certfleet_ca_bundle_last_modified_timestamp_seconds " in text


def test_a_push_shows_its_progress_to_an_admin(world):
    source, api, _ = world
    for serial in ("PUSH-1", "PUSH-2", "PUSH-3"):
        api.device(serial)
    source.publish(SOURCE_CA, SERVER_CA)
    batch_id = api.ok("POST", "/cert-update/run-now", {})["batch_id"]
    with Session(api.engine) as session:  # one device took the bundle, one failed for good
        done, failed, _ = session.exec(select(Job).where(Job.batch_id == uuid.UUID(batch_id)).order_by(Job.id)).all()
        done.state, failed.state = "succeeded", "failed"
        done.finished_at = failed.finished_at = datetime.now(UTC)
        failed.error_code, failed.error_message = "device_unreachable", "device PUSH-2 unreachable after 5 attempts"
        session.add_all([done, failed])
        session.commit()
    push = api.ok("GET", f"/cert-update/pushes/{batch_id}")
    assert (push["action"], push["version"], push["enrollment_object_id"], push["selected"]) == (
        "bundle_update", "1", None, 3)
    assert (push["queued"], push["succeeded"], push["failed"], push["finished"]) == (1, 1, 1, False)
    assert [(f["error_code"], f["count"]) for f in push["failures"]] == [("device_unreachable", 1)]

    problem(api.get(f"/cert-update/pushes/{uuid.uuid4()}"), 404, "push_not_found")
    problem(api.get("/cert-update/pushes/not-a-uuid"), 422, "validation_error")
    obj = api.ok("POST", f"/domains/{GLOBAL}/enrollment-objects", {"name": "vpn", "enrollment_type": "self_signed"},
                 status=201)
    enrollment = api.ok("POST", f"/domains/{GLOBAL}/bulk-enrollments",
                        {"enrollment_object_id": obj["id"], "selection": {"all": True}}, status=202)
    problem(api.get(f"/cert-update/pushes/{enrollment['id']}"), 404, "push_not_found")  # not a push
    for role in ("network_admin", "read_only"):
        problem(api.get(f"/cert-update/pushes/{batch_id}", role=role), 403, "forbidden")
