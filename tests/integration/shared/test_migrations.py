"""Schema revisions on SQLite and PostgreSQL: the revisions build exactly the models' schema, an
upgrade keeps every row, services refuse a database that needs ``certfleet db upgrade``, and
the command itself, run as an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from sqlmodel import SQLModel, select

from services.controller.api.auth import hash_token, new_token
from shared import models, pki, schema
from shared.db import init_db, make_engine, session_scope
from shared.enrollment import EnrollmentParameters, SubjectFields
from shared.enums import EnrollmentType, JobKind, JobState, KeyType, Role
from shared.errors import ConfigurationError
from shared.secrets import SecretBox
from shared.settings import Settings
from tests.support.pg import fresh_database, postgres_or_skip

ROOT = Path(__file__).resolve().parents[3]
ON_BOTH = pytest.mark.parametrize(
    "empty_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
SECRET_KEY = "migration-test-key"


@pytest.fixture
def empty_url(request, tmp_path):
    """The URL of a database with nothing in it (SQLite by default)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'certfleet.db'}"
        return
    postgres_or_skip()
    with fresh_database() as url:
        yield url


@pytest.fixture
def engine(empty_url):
    engine = make_engine(Settings(database_url=empty_url))
    yield engine
    engine.dispose()


@pytest.fixture
def later_head(tmp_path, monkeypatch) -> str:
    """This version's revisions plus one more after the head, as a newer certfleet would ship:
    it indexes devices by model. Returns the new head."""
    location = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    newest = schema.revisions().head
    (location / "versions" / "9999_index_device_model.py").write_text(
        f'revision = "9999"\ndown_revision = "{newest}"\n\n'
        "from alembic import op\n\n\n"
        'def upgrade():\n    op.create_index("ix_device_model", "device", ["model"])\n\n\n'
        'def downgrade():\n    op.drop_index("ix_device_model", table_name="device")\n'
    )
    monkeypatch.setattr(schema, "MIGRATIONS", location)
    return "9999"


def build(engine, revision: str) -> None:
    """Run the revisions up to ``revision`` on the database, as Alembic does."""
    with engine.connect() as connection:
        command.upgrade(schema.alembic_config(connection), revision)
        connection.commit()


def unrecorded_first_revision(engine) -> None:
    """The first revision's tables without the record of the revision."""
    build(engine, first_revision())
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE {schema.VERSION_TABLE}"))


def first_revision() -> str:
    return schema.revisions().scripts.get_base()


def certfleet(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "CERTFLEET_DATABASE_URL": url, "CERTFLEET_BROKER_URL": "",
             "CERTFLEET_SECRET_KEY": SECRET_KEY},
    )


def recorded_revisions(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


# --- a fleet in every table ---------------------------------------------------------------------

@dataclass(frozen=True)
class Fleet:
    est_object_id: uuid.UUID
    est_password: str
    pkcs12_object_id: uuid.UUID
    pkcs12_file: bytes
    pkcs12_passphrase: str
    certificate_id: uuid.UUID
    certificate_pem: str
    token: str
    #: The export recorded before the audit log, which must become its entry.
    export: dict


def fill(engine) -> Fleet:
    """A small fleet as the services leave it: domains, devices, enrollment objects of each type
    with their secrets sealed, trustpoints, installed certificates, jobs, a batch, an export
    audit (the audit log's predecessor) and an API token."""
    box = SecretBox(SECRET_KEY)
    now = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)
    key = pki.generate_private_key(KeyType.ECDSA, 256)
    params = EnrollmentParameters(name="vpn-selfsigned", enrollment_type=EnrollmentType.SELF_SIGNED,
                                  key_type=KeyType.ECDSA, key_size=256,
                                  subject=SubjectFields(common_name="fw-paris-1", organization="Example"))
    cert = pki.self_signed_certificate(key, params, pki.DeviceIdentity(serial="FTD-000001"), now=now, serial=0x1F)
    info = pki.describe(cert)
    pkcs12_file = pkcs12.serialize_key_and_certificates(b"vpn", key, cert, None,
                                                        BestAvailableEncryption(b"p12-passphrase"))

    with session_scope(engine) as session:
        insert_rows(session, [models.Domain(id=models.GLOBAL_DOMAIN_ID, name=models.GLOBAL_DOMAIN_NAME)])
        emea = models.Domain(name="EMEA", parent_id=models.GLOBAL_DOMAIN_ID)
        paris = models.Domain(name="Paris", parent_id=emea.id)
        devices = [
            models.Device(domain_id=paris.id, name="fw-paris-1", model="FTD 3110", serial="FTD-000001",
                          ip_address="192.0.2.10", fqdn="fw-paris-1.example.net",
                          management_url="http://127.0.0.1:8400/api/devices/FTD-000001"),
            models.Device(domain_id=emea.id, name="fw-lyon-1", model="FTD 1150", serial="FTD-000002",
                          ip_address="2001:db8::2", management_url="http://127.0.0.1:8400/api/devices/FTD-000002",
                          weak_crypto=True),
        ]
        est = models.EnrollmentObject(
            domain_id=emea.id, name="vpn-est", description="EST at the corporate CA",
            enrollment_type="est", key_type="ecdsa", key_size=256, common_name="vpn", organization="Example",
            country="FR", include_fqdn=True, enrollment_url="https://ca.example.net:8443/.well-known/est",
            username="certfleet", fingerprint="ab" * 32, ca_concurrency_limit=8, ca_rate_limit=2.5,
            ocsp_url="http://ocsp.example.net", crl_urls=["http://[2001:db8::5]/ca.crl"],
            secret_blob=box.seal(b"est-password"),
        )
        scep = models.EnrollmentObject(
            domain_id=models.GLOBAL_DOMAIN_ID, name="vpn-scep", enrollment_type="scep", key_type="rsa",
            key_size=2048, enrollment_url="http://ca.example.net/scep", retry_period_minutes=2, retry_count=5,
            secret_blob=box.seal(b"scep-challenge"),
        )
        upload = models.EnrollmentObject(
            domain_id=models.GLOBAL_DOMAIN_ID, name="vpn-p12", enrollment_type="pkcs12", key_type="ecdsa",
            key_size=256, pkcs12_blob=box.seal(pkcs12_file), secret_blob=box.seal(b"p12-passphrase"),
            pkcs12_filename="fw-paris-1.p12",
        )
        manual = models.EnrollmentObject(
            domain_id=models.GLOBAL_DOMAIN_ID, name="vpn-manual", enrollment_type="manual", ca_only=True,
            ca_certificate_pem=pki.to_pem(cert),
        )
        selfsigned = models.EnrollmentObject(
            domain_id=models.GLOBAL_DOMAIN_ID, name="vpn-selfsigned", enrollment_type="self_signed",
            key_type="ecdsa", key_size=256, common_name="fw-paris-1", validity_days=90,
        )
        installed = models.Trustpoint(
            device_id=devices[0].id, domain_id=paris.id, enrollment_object_id=selfsigned.id, name="vpn-selfsigned",
            enrollment_type="self_signed", ca_status="available", identity_status="available",
            status_changed_at=now,
        )
        waiting = models.Trustpoint(
            device_id=devices[1].id, domain_id=emea.id, enrollment_object_id=manual.id, name="vpn-manual",
            enrollment_type="manual", ca_status="available", identity_status="pending",
            csr_pem="-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
        )
        failed = models.Trustpoint(
            device_id=devices[1].id, domain_id=emea.id, enrollment_object_id=est.id, name="vpn-est",
            enrollment_type="est", ca_status="failed", identity_status="failed", error_code="ca_unavailable",
            error_message="the CA at https://ca.example.net:8443 did not answer",
        )
        batch = models.Batch(domain_id=emea.id, enrollment_object_id=est.id, trustpoint_name="vpn-est",
                             selection={"name_pattern": "fw-*", "model": None}, selected=2, skipped=0,
                             requested_by="token ops (admin)")
        enroll = models.Job(
            kind=JobKind.ENROLL.value, trustpoint_id=installed.id, device_id=devices[0].id, domain_id=paris.id,
            trustpoint_name="vpn-selfsigned", state=JobState.SUCCEEDED.value, attempts=1,
            steps=[{"at": now.isoformat(), "step": "installed", "detail": "identity certificate"}],
            created_at=now, started_at=now, finished_at=now + timedelta(seconds=3),
        )
        retrying = models.Job(
            kind=JobKind.ENROLL.value, trustpoint_id=failed.id, device_id=devices[1].id, domain_id=emea.id,
            trustpoint_name="vpn-est", state=JobState.QUEUED.value, attempts=2, ca_waits=3, batch_id=batch.id,
            lease_expires_at=now + timedelta(minutes=1), next_attempt_at=now + timedelta(seconds=30),
            error_code="transient", error_message="timeout",
        )
        deleted = models.Job(kind=JobKind.DELETE.value, trustpoint_id=None, device_id=uuid.uuid4(),
                             domain_id=emea.id, trustpoint_name="old-vpn", state=JobState.FAILED.value)
        # Parents before children: the models declare no relationships to order the inserts by.
        for layer in ([emea], [paris], [*devices, est, scep, upload, manual, selfsigned], [installed, waiting, failed]):
            insert_rows(session, layer)
        certificate = models.Certificate(
            trustpoint_id=installed.id, job_id=enroll.id, role="identity", chain_position=0, pem=pki.to_pem(cert),
            subject=info.subject, issuer=info.issuer, serial_number=info.serial_number,
            not_before=info.not_before, not_after=info.not_after, key_algorithm=info.key_algorithm,
            key_size=info.key_size, signature_algorithm=info.signature_algorithm,
            fingerprint_sha256=info.fingerprint_sha256,
        )
        insert_rows(session, [certificate, batch, enroll, retrying, deleted])
        # The export audit of the revisions before the audit log (no model any more: a table clause).
        export_audit = sa.table("export_audit", *(sa.column(name, sa.Uuid()) for name in (
            "id", "domain_id", "device_id", "trustpoint_id")), *(sa.column(name, sa.String()) for name in (
                "device_name", "trustpoint_name", "format", "requested_by", "role", "outcome", "error_code")),
            sa.column("created_at", models.UTCDateTime()))
        export_id = uuid.uuid4()
        session.execute(sa.insert(export_audit).values(
            id=export_id, domain_id=paris.id, device_id=devices[0].id, device_name="fw-paris-1",
            trustpoint_id=installed.id, trustpoint_name="vpn-selfsigned", format="pkcs12",
            requested_by="token ops (admin)", role="admin", outcome="failed", error_code="device_unreachable",
            created_at=now))
        token, token_row = new_token(role=Role.ADMIN, name="ops", lifetime=timedelta(days=90), now=now)
        insert_rows(session, [token_row])
        session.commit()
    return Fleet(est_object_id=est.id, est_password="est-password", pkcs12_object_id=upload.id,
                 pkcs12_file=pkcs12_file, pkcs12_passphrase="p12-passphrase", certificate_id=certificate.id,
                 certificate_pem=pki.to_pem(cert), token=token,
                 export=dict(id=export_id, at=now, domain_id=paris.id, device_id=devices[0].id,
                             trustpoint_id=installed.id))


def insert_rows(session, rows) -> None:
    """Insert model instances with only the columns the database has: the fill runs on the first
    revision's tables, which lack the columns later revisions add."""
    present: dict[str, set[str]] = {}
    inspector = sa.inspect(session.connection())
    for row in rows:
        table = type(row).__table__
        if table.name not in present:
            present[table.name] = {column["name"] for column in inspector.get_columns(table.name)}
        columns = [c for c in table.columns if c.name in present[table.name]]
        # A bare table clause: the models' column types, none of their defaults for absent columns.
        clause = sa.table(table.name, *(sa.column(c.name, c.type) for c in columns))
        session.execute(sa.insert(clause).values({c.name: getattr(row, c.name) for c in columns}))


def every_row(engine, like: dict[str, list[dict]] | None = None) -> dict[str, list[dict]]:
    """Every row of every table, column by column, read through the models' column types.
    ``like``: an earlier reading; only its tables and columns are read (a later revision adds some)."""
    inspector = sa.inspect(engine)
    rows = {}
    with engine.connect() as connection:
        for table in SQLModel.metadata.sorted_tables:
            if not inspector.has_table(table.name) or (like is not None and table.name not in like):
                continue
            present = {column["name"] for column in inspector.get_columns(table.name)}
            if like is not None and like[table.name]:
                present &= set(like[table.name][0])
            columns = [column for column in table.columns if column.name in present]
            query = sa.select(*columns).order_by(*table.primary_key.columns)
            rows[table.name] = [dict(row._mapping) for row in connection.execute(query)]
    return rows


def assert_the_fleet_still_works(engine, fleet: Fleet) -> None:
    """What the operator relies on after an upgrade: secrets open, the token signs in, the
    certificate is the one the device has."""
    box = SecretBox(SECRET_KEY)
    with session_scope(engine) as session:
        est = session.get(models.EnrollmentObject, fleet.est_object_id)
        assert box.open(est.secret_blob).decode() == fleet.est_password
        upload = session.get(models.EnrollmentObject, fleet.pkcs12_object_id)
        assert box.open(upload.pkcs12_blob) == fleet.pkcs12_file
        assert box.open(upload.secret_blob).decode() == fleet.pkcs12_passphrase
        token = session.exec(select(models.ApiToken).where(models.ApiToken.token_hash == hash_token(fleet.token)))
        token = token.one()
        # A token from before tokens had domains reaches every domain, and still works for a while.
        assert (token.role, token.domain_id, token.revoked_at) == (Role.ADMIN.value, models.GLOBAL_DOMAIN_ID, None)
        assert token.expires_at > datetime.now(UTC) + timedelta(days=89)
        assert session.get(models.Certificate, fleet.certificate_id).pem == fleet.certificate_pem
        # The export audit is in the audit log, as the export route records an export now.
        export = session.get(models.AuditEntry, fleet.export["id"])
        assert (export.at, export.domain_id, export.device_id, export.target_id) == (
            fleet.export["at"], fleet.export["domain_id"], fleet.export["device_id"], fleet.export["device_id"])
        assert (export.channel, export.token_name, export.role, export.action, export.method) == (
            "api", "token ops", "admin", "export_certificate", "POST")
        assert export.path == "/api/v1/domains/{domain_id}/devices/{device_id}/trustpoints/{name}/export"
        assert export.targets == {"domain_id": str(fleet.export["domain_id"]),
                                  "device_id": str(fleet.export["device_id"]), "name": "vpn-selfsigned"}
        assert export.details == {"format": "pkcs12", "device_name": "fw-paris-1",
                                  "trustpoint_id": str(fleet.export["trustpoint_id"])}
        assert (export.status, export.outcome, export.error_code) == (502, "failed", "device_unreachable")
    assert not sa.inspect(engine).has_table("export_audit")


# --- the revisions and the models ---------------------------------------------------------------

def _types_differ(context, inspected_column, metadata_column, inspected_type, metadata_type) -> bool | None:
    """SQLite keeps a VARCHAR's declared length but never enforces it, so the revisions leave it
    alone there; every other type difference counts (None: Alembic's own comparison)."""
    strings = all(isinstance(getattr(t, "impl", t), sa.String) for t in (inspected_type, metadata_type))
    if context.dialect.name == "sqlite" and strings:
        return False
    return None


@ON_BOTH
def test_the_revisions_build_exactly_the_schema_of_the_models(engine):
    build(engine, "head")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": _types_differ})
        differences = compare_metadata(context, SQLModel.metadata)
        assert differences == [], (
            "shared/models.py and the newest revision in shared/migrations/versions differ: write a revision "
            f"for the model change. Differences: {differences}"
        )
        # The comparison notices a model change that has no revision.
        changed = sa.MetaData()
        for table in SQLModel.metadata.sorted_tables:
            table.to_metadata(changed)
        changed.tables["job"].append_column(sa.Column("priority", sa.Integer(), nullable=True))
        assert [d[0] for d in compare_metadata(context, changed)] == ["add_column"]


@ON_BOTH
def test_every_row_survives_an_upgrade_from_the_first_revision(engine, later_head):
    build(engine, first_revision())
    fleet = fill(engine)
    before = every_row(engine)
    assert all(before.values()), f"a table was left empty: {[name for name, rows in before.items() if not rows]}"

    upgrade = schema.upgrade_to_head(engine)

    assert (upgrade.before.revision, upgrade.after) == (first_revision(), later_head)
    assert recorded_revisions(engine) == [later_head]
    assert "ix_device_model" in {index["name"] for index in sa.inspect(engine).get_indexes("device")}
    assert every_row(engine, like=before) == before
    assert_the_fleet_still_works(engine, fleet)
    init_db(engine)  # a service starts on it


# --- start-up -----------------------------------------------------------------------------------

@ON_BOTH
def test_a_service_refuses_an_older_revision_and_names_the_command(engine, later_head):
    older = schema.revisions().scripts.get_revision(later_head).down_revision
    build(engine, older)

    with pytest.raises(ConfigurationError) as refused:
        init_db(engine)

    assert refused.value.code == "database_upgrade_required"
    assert f"is at schema revision {older}, older than this certfleet's {later_head}" in str(refused.value)
    assert "run `certfleet db upgrade`" in str(refused.value)
    # What the message says to do is enough.
    schema.upgrade_to_head(engine)
    init_db(engine)


@ON_BOTH
def test_processes_starting_together_on_an_empty_database_create_it_once(empty_url):
    engines = [make_engine(Settings(database_url=empty_url)) for _ in range(4)]
    start = threading.Barrier(len(engines))
    problems = []

    def start_service(engine) -> None:
        start.wait()
        try:
            init_db(engine)
        except Exception as exc:  # reported below with the others
            problems.append(exc)

    threads = [threading.Thread(target=start_service, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert problems == []
        assert recorded_revisions(engines[0]) == [schema.revisions().head]
        with session_scope(engines[0]) as session:
            assert len(session.exec(select(models.Domain)).all()) == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_a_database_a_newer_certfleet_upgraded_is_refused(engine, empty_url):
    init_db(engine)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeed'"))

    with pytest.raises(ConfigurationError) as refused:
        init_db(engine)
    assert refused.value.code == "database_revision_unknown"
    assert "at schema revision f00dfeed, which this certfleet does not know" in str(refused.value)

    done = certfleet("db", "upgrade", url=empty_url)
    assert done.returncode == 2
    assert "error: database_revision_unknown: " in done.stderr
    assert recorded_revisions(engine) == ["f00dfeed"]


# --- certfleet db upgrade -----------------------------------------------------------------------

@ON_BOTH
def test_db_upgrade_builds_an_empty_database_and_then_has_nothing_to_do(engine, empty_url):
    head = schema.revisions().head

    first = certfleet("db", "upgrade", url=empty_url)
    again = certfleet("db", "upgrade", url=empty_url)

    assert first.returncode == 0, first.stderr
    assert f"upgraded from an empty database to revision {head}" in first.stdout
    assert again.returncode == 0, again.stderr
    assert f"already at revision {head}, the newest: nothing to do" in again.stdout
    assert recorded_revisions(engine) == [head]
    assert set(SQLModel.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    init_db(engine)


@ON_BOTH
def test_a_database_from_before_revisions_keeps_every_row_once_recorded(engine):
    unrecorded_first_revision(engine)  # what certfleet made before it kept schema revisions
    fleet = fill(engine)
    before = every_row(engine)
    with pytest.raises(ConfigurationError) as refused:
        init_db(engine)
    assert refused.value.code == "database_upgrade_required"

    upgrade = schema.upgrade_to_head(engine)

    assert upgrade.describe() == f"upgraded from tables made before schema revisions to revision {upgrade.after}"
    assert recorded_revisions(engine) == [schema.revisions().head]
    assert every_row(engine, like=before) == before
    assert_the_fleet_still_works(engine, fleet)
    init_db(engine)


def test_the_controller_refuses_a_database_from_before_revisions_until_db_upgrade(engine, empty_url):
    unrecorded_first_revision(engine)
    fill(engine)

    controller = certfleet("controller", "--port", "0", url=empty_url)
    assert controller.returncode == 2, controller.stderr
    assert "error: database_upgrade_required: " in controller.stderr
    assert "made by a certfleet from before schema revisions: run `certfleet db upgrade`" in controller.stderr
    assert "Traceback" not in controller.stderr

    done = certfleet("db", "upgrade", url=empty_url)
    assert done.returncode == 0, done.stderr
    assert f"upgraded from tables made before schema revisions to revision {schema.revisions().head}" in done.stdout
    init_db(engine)


def test_db_upgrade_says_when_it_cannot_reach_the_database():
    done = certfleet("db", "upgrade", url="sqlite:////nonexistent-directory/certfleet.db")
    assert done.returncode == 2
    assert done.stderr.startswith("error: database_unreachable: cannot connect to the database at "
                                  "sqlite:////nonexistent-directory/certfleet.db: ")
    assert "Traceback" not in done.stderr
