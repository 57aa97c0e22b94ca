"""``certfleet trustpoint …`` and ``certfleet device weak-crypto`` as an operator runs them: the
real command in a subprocess, against an embedded stack (API, worker, device simulator) on
loopback, with ``openssl`` as the operator's CA."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from services.cli.api_client import CertfleetClient
from services.stack.embedded import EmbeddedStack
from shared.settings import Settings
from tests.support.openssl_pki import OpensslCa, read_pkcs12
from tests.support.procs import ROOT


@dataclass
class Cli:
    stack: EmbeddedStack
    client: CertfleetClient
    devices: list[dict]
    ca: OpensslCa
    dir: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if k != "CERTFLEET_EXPORT_PASSPHRASE"}
        environment.update(CERTFLEET_API_URL=self.stack.api_url, CERTFLEET_TOKEN=self.stack.admin_token)
        environment.update(env or {})
        return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=environment,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)

    def ok(self, *args: str, **kw) -> str:
        done = self.run(*args, **kw)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def fails(self, code: str, *args: str, status: int = 1, **kw) -> str:
        """The command's error line (``error: <code>: <message>``, alone on stderr); ``status``:
        1 when the operation was refused or failed, 2 when the command line must change."""
        done = self.run(*args, **kw)
        assert done.returncode == status, done.stdout + done.stderr
        assert done.stderr.startswith(f"error: {code}: ") and done.stderr.count("\n") == 1, done.stderr
        return done.stderr


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> Iterator[Cli]:
    directory = tmp_path_factory.mktemp("operator-cli")
    stack = EmbeddedStack(Settings(log_level="WARNING"), devices=3, worker_threads=4,
                          state_dir=directory / "state").start()
    client = CertfleetClient(stack.api_url, stack.admin_token)
    client.import_devices(stack.sim.url)
    devices = sorted(client.devices(), key=lambda d: d["serial"])
    yield Cli(stack, client, devices, OpensslCa(directory / "ca"), directory)
    client.close()
    stack.stop()


def test_manual_enrollment_csr_import_show_and_export(cli):
    device = cli.devices[0]
    obj = cli.client.create_enrollment_object(name="cli-vpn", enrollment_type="manual", key_type="ecdsa",
                                              key_size=256, ca_certificate_pem=cli.ca.pem, include_fqdn=True)
    job = cli.client.add_trustpoint(device["id"], obj["id"])["job"]
    assert cli.client.wait_for_job(job["id"])["state"] == "succeeded"

    csr = cli.dir / "cli-vpn.csr"
    out = cli.ok("trustpoint", "csr", device["name"], "cli-vpn", "-o", str(csr))  # the device by name
    assert "get it signed by your CA" in out
    assert cli.ok("trustpoint", "csr", device["id"], "cli-vpn") == csr.read_text()  # by id, to stdout
    signed = cli.ca.sign_csr(csr.read_text(), name="cli-vpn")
    out = cli.ok("trustpoint", "import", device["serial"], "cli-vpn", "--cert", str(signed), "--wait")
    assert "CA certificate available, identity certificate available" in out

    shown = cli.ok("trustpoint", "show", device["name"], "cli-vpn")
    identity = x509.load_pem_x509_certificate(signed.read_bytes())
    tp = cli.client.trustpoint(device["id"], "cli-vpn")
    for expected in ("available", tp["identity_certificate"]["subject"], "Operator Root CA",
                     tp["identity_certificate"]["fingerprint_sha256"],
                     tp["identity_certificate"]["fingerprint_sha1"],
                     "serverAuth", f"DNS:{device['fqdn']}", "chain:", "root CA"):
        assert expected in shown, expected

    passphrase_file = cli.dir / "passphrase"
    passphrase_file.write_text("Cli-Export-Pass\n")
    p12 = cli.dir / "cli-vpn.p12"
    cli.ok("trustpoint", "export", device["name"], "cli-vpn", "--format", "pkcs12", "--passphrase-file",
           str(passphrase_file), "-o", str(p12))
    key, certificates = read_pkcs12(p12, "Cli-Export-Pass")
    assert "PRIVATE KEY" in key and set(certificates) == {identity, cli.ca.certificate}
    assert p12.stat().st_mode & 0o077 == 0

    from_env = cli.dir / "from-env.p12"
    cli.ok("trustpoint", "export", device["name"], "cli-vpn", "--format", "pkcs12", "-o", str(from_env),
           env={"CERTFLEET_EXPORT_PASSPHRASE": "Env-Pass"})
    assert read_pkcs12(from_env, "Env-Pass")[0]
    pem = cli.dir / "cli-vpn.pem"
    cli.ok("trustpoint", "export", device["name"], "cli-vpn", "--format", "pem", "-o", str(pem))
    assert x509.load_pem_x509_certificates(pem.read_bytes()) == [identity]

    cli.fails("passphrase_required", "trustpoint", "export", device["name"], "cli-vpn", "--format", "pkcs12",
              "-o", str(cli.dir / "none.p12"), status=2)
    assert not (cli.dir / "none.p12").exists()
    audit = cli.client.audit(action="export_certificate", device_id=device["id"], outcome="ok")
    assert [a["details"]["format"] for a in audit] == ["pem", "pkcs12", "pkcs12"]


def test_re_enroll_refresh_delete_and_errors(cli):
    device = cli.devices[1]
    obj = cli.client.create_enrollment_object(name="cli-self", enrollment_type="self_signed",
                                              key_type="ecdsa", key_size=256)
    assert cli.client.wait_for_job(cli.client.add_trustpoint(device["id"], obj["id"])["job"]["id"])[
        "state"] == "succeeded"
    assert "identity certificate available" in cli.ok("trustpoint", "re-enroll", device["name"], "cli-self",
                                                      "--wait")
    assert "succeeded" in cli.ok("trustpoint", "refresh", device["name"], "cli-self", "--wait")
    cli.fails("no_csr", "trustpoint", "csr", device["name"], "cli-self")
    assert "deleted" in cli.ok("trustpoint", "delete", device["name"], "cli-self", "--wait")
    cli.fails("not_found", "trustpoint", "show", device["name"], "cli-self")
    err = cli.fails("unknown_device", "trustpoint", "show", "no-such-device", "cli-self")
    assert "no device with the id, name or serial 'no-such-device'" in err
    cli.fails("unauthorized", "trustpoint", "show", device["name"], "x",
              env={"CERTFLEET_TOKEN": "not-a-token"})


def test_weak_crypto_needs_confirmation(cli):
    device = cli.devices[2]
    err = cli.fails("confirmation_required", "device", "weak-crypto", device["name"], "--enable", status=2)
    assert "--yes" in err
    assert cli.client.device(device["id"])["weak_crypto"] is False
    assert "enabled" in cli.ok("device", "weak-crypto", device["name"], "--enable", "--yes")
    assert cli.client.device(device["id"])["weak_crypto"] is True
    assert "disabled" in cli.ok("device", "weak-crypto", device["serial"], "--disable")
    assert cli.client.device(device["id"])["weak_crypto"] is False


def test_a_name_two_devices_share_is_refused_with_their_ids(cli):
    twins = [cli.client._call("POST", "/domains/e276abec-e0f2-11e3-8169-6d9ed49b625f/devices", json={
        "name": "twin", "serial": f"TWIN-{i}", "management_url": f"http://127.0.0.1:9/api/devices/TWIN-{i}",
    }) for i in (1, 2)]
    err = cli.fails("ambiguous_device", "trustpoint", "show", "twin", "vpn")
    assert all(t["id"] in err for t in twins) and "give the device id instead" in err
    # Its serial or id picks one (and the domain may be named): the trustpoint is then what is missing.
    cli.fails("not_found", "trustpoint", "show", "TWIN-1", "vpn")
    assert "weak-crypto disabled on twin" in cli.ok("device", "weak-crypto", twins[1]["id"], "--disable",
                                                    "--domain", "Global")


def test_a_bad_api_url_is_a_configuration_error(cli):
    err = cli.fails("bad_api_url", "trustpoint", "show", cli.devices[0]["name"], "vpn", status=2,
                    env={"CERTFLEET_API_URL": "127.0.0.1:8000"})
    assert "'127.0.0.1:8000' is not an http:// or https:// URL" in err
