"""The services refuse to start with the development secret key (CERTFLEET_SECRET_KEY unset)
unless told ``--insecure-dev-key``: exit 2 and a line that says how to make a key. They refuse
before they touch the database or the broker, so these run in this process."""

from __future__ import annotations

import pytest

from services.cli.main import build_parser, main
from services.worker.cli import INSECURE_DEV_KEY_ENV, worker_environment
from shared.settings import MAKE_A_KEY, Settings


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("CERTFLEET_SECRET_KEY", raising=False)
    monkeypatch.setenv("CERTFLEET_DATABASE_URL", f"sqlite:///{tmp_path / 'never-made.db'}")
    monkeypatch.delenv("CERTFLEET_BROKER_URL", raising=False)
    return tmp_path


@pytest.mark.parametrize(("argv", "service"), [
    (["controller", "--port", "0"], "controller"),
    (["controller", "--reconciler-only"], "reconciler"),
    (["scheduler"], "scheduler"),
    (["worker"], "worker"),
])
def test_a_service_without_a_secret_key_refuses_to_start(no_key, capsys, argv, service):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: development_secret_key: CERTFLEET_SECRET_KEY is not set, so the {service} ")
    assert MAKE_A_KEY in err
    assert not (no_key / "never-made.db").exists()  # refused before anything was made


def test_insecure_dev_key_lets_the_worker_past_the_key(no_key, capsys):
    # Past the key, it stops at the next thing it lacks: the broker.
    assert main(["worker", "--insecure-dev-key"]) == 2
    assert capsys.readouterr().err.startswith("error: broker_url_missing: ")


def test_the_worker_processes_learn_whether_the_development_key_was_allowed():
    base = {INSECURE_DEV_KEY_ENV: "1", "PATH": "/usr/bin"}  # not inherited from whoever started the command
    assert INSECURE_DEV_KEY_ENV not in worker_environment(Settings(), "/tmp/m", base)
    assert worker_environment(Settings(), "/tmp/m", {}, insecure_dev_key=True)[INSECURE_DEV_KEY_ENV] == "1"


@pytest.mark.parametrize("argv", [["controller"], ["controller", "--reconciler-only"], ["scheduler"], ["worker"]])
def test_every_service_takes_insecure_dev_key(argv):
    assert build_parser().parse_args([*argv, "--insecure-dev-key"]).insecure_dev_key
    assert not build_parser().parse_args(argv).insecure_dev_key
