"""``certfleet secrets rotate``: every stored secret (enrollment objects' passwords, challenges and
PKCS#12 files, webhook secrets, devices' endpoint credentials) re-encrypted under the new key in one go,
on SQLite and PostgreSQL; a wrong old key refused before anything is written; a second run with the
same keys harmless."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import LargeBinary
from sqlmodel import Session, SQLModel, select

from services.cli.main import main
from shared.errors import ConfigurationError
from shared.models import GLOBAL_DOMAIN_ID, Device, EnrollmentObject, Webhook
from shared.secret_rotation import SEALED_COLUMNS
from shared.secrets import SecretBox
from shared.settings import DEVELOPMENT_SECRET_KEY

OLD, NEW = "the-old-installation-key", "the-new-installation-key"
BOTH = pytest.mark.parametrize("db_engine", ["sqlite", "postgres"], indirect=True)

#: What each row stores, by name: (column, plaintext).
STORED = {
    "vpn-est": {"secret_blob": b"est-Pa55word"},
    "vpn-scep": {"secret_blob": b"scep-challenge"},
    "vpn-p12": {"secret_blob": b"p12-passphrase", "pkcs12_blob": b"\x30\x82 a PKCS#12 file"},
    "alerts-hook": {"secret_blob": b"webhook-signing-secret"},
    "fw-edge-1": {"endpoint_credential_blob": b"device-endpoint-credential"},
}


def fill(engine, key: str = OLD) -> None:
    box = SecretBox(key)
    with Session(engine) as session:
        for name, enrollment_type in (("vpn-est", "est"), ("vpn-scep", "scep"), ("vpn-p12", "pkcs12")):
            sealed = {column: box.seal(plain) for column, plain in STORED[name].items()}
            session.add(EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name=name, enrollment_type=enrollment_type,
                                         key_type="ecdsa", key_size=256, **sealed))
        session.add(EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name="no-secret", enrollment_type="self_signed",
                                     key_type="ecdsa", key_size=256))
        session.add(Webhook(domain_id=GLOBAL_DOMAIN_ID, name="alerts-hook", url="https://hooks.example.net/x",
                            secret_blob=box.seal(STORED["alerts-hook"]["secret_blob"])))
        session.add(Device(domain_id=GLOBAL_DOMAIN_ID, name="fw-edge-1", serial="FTD-000001",
                           management_url="https://fw-edge-1.example.net/api/devices/FTD-000001",
                           endpoint_credential_blob=box.seal(STORED["fw-edge-1"]["endpoint_credential_blob"])))
        session.add(Device(domain_id=GLOBAL_DOMAIN_ID, name="fw-edge-2", serial="FTD-000002",
                           management_url="https://fw-edge-2.example.net/api/devices/FTD-000002"))
        session.commit()


def stored(engine) -> dict[str, dict[str, bytes]]:
    """Every row's sealed columns as stored, by name."""
    with Session(engine) as session:
        rows = [*session.exec(select(EnrollmentObject)), *session.exec(select(Webhook)), *session.exec(select(Device))]
        return {row.name: {c: getattr(row, c) for c in ("secret_blob", "pkcs12_blob", "endpoint_credential_blob")
                           if getattr(row, c, None) is not None} for row in rows}


def opened(engine, key: str) -> dict[str, dict[str, bytes]]:
    box = SecretBox(key)
    return {name: {c: box.open(token) for c, token in columns.items()}
            for name, columns in stored(engine).items() if columns}


@pytest.fixture
def env(db_engine, monkeypatch, tmp_path):
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", db_engine.url.render_as_string(hide_password=False))
    monkeypatch.delenv("CERTFLEET_SECRET_KEY", raising=False)
    monkeypatch.delenv("CERTFLEET_NEW_SECRET_KEY", raising=False)
    (tmp_path / "old.key").write_text(OLD + "\n")
    (tmp_path / "new.key").write_text(NEW + "\n")
    return tmp_path


@BOTH
def test_rotation_re_encrypts_every_stored_secret_and_a_second_run_changes_nothing(db_engine, env, capsys):
    fill(db_engine)
    files = ["--old-key-file", str(env / "old.key"), "--new-key-file", str(env / "new.key")]
    assert main(["secrets", "rotate", *files]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 stored secrets re-encrypted with the new key (device 1, enrollment_object 4, webhook 1)\n")
    assert opened(db_engine, NEW) == STORED
    with pytest.raises(ConfigurationError, match="CERTFLEET_SECRET_KEY differs"):
        SecretBox(OLD).open(stored(db_engine)["vpn-est"]["secret_blob"])
    for plain in (p for columns in STORED.values() for p in columns.values()):
        assert plain.decode(errors="replace") not in out

    before = stored(db_engine)
    assert main(["secrets", "rotate", *files]) == 0
    assert capsys.readouterr().out.startswith(
        "0 stored secrets re-encrypted with the new key; 6 already under the new key, left as they were\n")
    assert stored(db_engine) == before  # not even re-sealed


@BOTH
def test_a_wrong_old_key_is_refused_naming_the_row_and_nothing_is_written(db_engine, env, capsys, monkeypatch):
    fill(db_engine)
    with Session(db_engine) as session:  # one secret stored under yet another key
        webhook = session.exec(select(Webhook)).one()
        webhook.secret_blob = SecretBox("some-third-key").seal(b"webhook-signing-secret")
        session.add(webhook)
        session.commit()
        webhook_id = webhook.id
    before = stored(db_engine)
    monkeypatch.setenv("CERTFLEET_SECRET_KEY", OLD)  # the old key by default
    monkeypatch.setenv("CERTFLEET_NEW_SECRET_KEY", NEW)
    assert main(["secrets", "rotate"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: secret_key_mismatch: the secret_blob of webhook {webhook_id} ('alerts-hook') opens with "
                   "neither the old nor the new key: the old key given is not the one it was stored with. Nothing "
                   "was changed.\n")
    assert stored(db_engine) == before  # the enrollment objects before it were not rotated either


def test_rows_already_under_the_new_key_are_left_and_the_rest_rotated(sqlite_engine, monkeypatch, capsys):
    # As after a service on the new key stored a secret while others were still under the old one.
    fill(sqlite_engine, key=DEVELOPMENT_SECRET_KEY)
    with Session(sqlite_engine) as session:
        obj = session.exec(select(EnrollmentObject).where(EnrollmentObject.name == "vpn-scep")).one()
        obj.secret_blob = SecretBox(NEW).seal(b"scep-challenge")
        session.add(obj)
        session.commit()
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", str(sqlite_engine.url))
    monkeypatch.setattr("sys.stdin", io.StringIO(NEW + "\n"))
    assert main(["secrets", "rotate", "--from-development-key", "--new-key-file", "-"]) == 0
    assert capsys.readouterr().out.startswith(
        "5 stored secrets re-encrypted with the new key (device 1, enrollment_object 3, webhook 1); 1 already under "
        "the new key, left as they were\n")
    assert opened(sqlite_engine, NEW) == STORED


@pytest.mark.parametrize(("argv", "environment", "says"), [
    ([], {}, "error: old_key_missing: which key are the secrets stored with? Give --old-key-file FILE, "),
    (["--old-key", OLD], {}, "error: new_key_missing: no new key: give --new-key-file FILE or set "
                             "CERTFLEET_NEW_SECRET_KEY; make one with export CERTFLEET_NEW_SECRET_KEY=$(python -c "),
    (["--old-key", OLD, "--new-key", OLD], {}, "error: same_secret_key: the new key is the old one"),
    ([], {"CERTFLEET_SECRET_KEY": OLD, "CERTFLEET_NEW_SECRET_KEY": DEVELOPMENT_SECRET_KEY},
     "error: development_secret_key: the new key is the public development key"),
    (["--old-key", OLD, "--new-key", ""], {}, "error: empty_secret_key: the key given holds an empty key"),
])
def test_missing_or_unusable_keys_are_usage_errors(monkeypatch, capsys, tmp_path, argv, environment, says):
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", f"sqlite:///{tmp_path / 'never-made.db'}")
    for name in ("CERTFLEET_SECRET_KEY", "CERTFLEET_NEW_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["secrets", "rotate", *argv]) == 2
    assert capsys.readouterr().err.startswith(says)
    assert not (tmp_path / "never-made.db").exists()


def test_a_key_file_that_cannot_be_read_is_named(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CERTFLEET_NEW_SECRET_KEY", NEW)
    assert main(["secrets", "rotate", "--old-key-file", str(tmp_path / "missing.key")]) == 1
    assert capsys.readouterr().err == f"error: os_error: {tmp_path / 'missing.key'}: No such file or directory\n"


def test_every_binary_column_is_one_the_rotation_knows():
    # Secrets are stored sealed in binary columns: one added without the rotation knowing would
    # become unreadable after the next rotation.
    binary = {(table.name, column.name) for table in SQLModel.metadata.tables.values()
              for column in table.columns if isinstance(column.type, LargeBinary)}
    assert binary == {(model.__tablename__, column) for model, _, columns in SEALED_COLUMNS for column in columns}
