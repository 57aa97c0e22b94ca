"""The CA simulator as a CA-bundle source: ``GET /ca-bundle/latest`` over HTTPS on IPv4 and on
IPv6 alone answers a bundle the pinned ``bundle-signing.pem`` verifies; ``certfleet ca bundle
publish`` in another process changes what the next request gets; the bundle commands refuse bad
input with one error line. One CA per module, served in this process."""

from __future__ import annotations

import argparse
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from services.ca_sim.authority import load_authority
from services.ca_sim.bundle_store import fingerprint, open_existing, open_store
from services.ca_sim.cli import add_arguments, main
from services.ca_sim.service import start_in_thread
from shared.clock import utcnow
from shared.failures import run
from shared.protocols.ca_bundle import CaBundle, read_answer
from tests.support.tls import make_ca, make_leaf

ROOT = Path(__file__).resolve().parents[3]
LATEST = "/ca-bundle/latest"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    with start_in_thread(tmp_path_factory.mktemp("ca-bundle"), host="127.0.0.1", bundle_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def signer(ca) -> x509.Certificate:
    return x509.load_pem_x509_certificate((ca.state_dir / "bundle-signing.pem").read_bytes())


def fetch(url: str, tls_ca: Path, path: str = LATEST) -> httpx.Response:
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(tls_ca)), timeout=10) as http:
        return http.get(path)


def latest(ca, signer: x509.Certificate, url: str | None = None) -> CaBundle:
    response = fetch(url or ca.bundle_url, ca.tls_ca)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return read_answer(response.content, signer=signer, now=utcnow())


def subjects(bundle: CaBundle) -> list[str]:
    return [c.subject.rfc4514_string() for c in bundle.certificates]


def ca_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.ca_sim", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def ca_command(capsys, *args: str) -> tuple[int, str, str]:
    """``certfleet ca ARGS`` in this process (the same parser, main and error lines): exit status,
    stdout, and the error line."""
    parser = argparse.ArgumentParser(prog="certfleet ca")
    add_arguments(parser)
    status = run(main, parser.parse_args(list(args)))
    out, err = capsys.readouterr()
    return status, out, (err.splitlines() or [""])[-1]


def test_the_source_serves_version_1_with_the_ca_certificates_signed_by_a_pinned_signer(ca, signer):
    assert ca.bundle_url.startswith("https://127.0.0.1:") and ca.bundle_url != ca.est_url
    assert f" bundle={ca.bundle_url} " in ca.ready_line()
    assert ca.bundle_signer == ca.state_dir / "bundle-signing.pem"
    bundle = latest(ca, signer)
    assert bundle.version >= 1
    first = open_existing(ca.state_dir).answer_of(1)  # as it was when published, whatever came later
    assert read_answer(first, signer=signer, now=utcnow()).certificates == (ca.ca.root, ca.ca.issuing)
    # The signer: issued by the CA's root, good for signatures only.
    signer.verify_directly_issued_by(ca.ca.root)
    assert signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert signer.public_key().curve.name == "secp256r1"
    assert stat.S_IMODE(ca.ca.paths.bundle_signing_key.stat().st_mode) == 0o600


def test_a_restart_keeps_the_signer_and_the_versions(ca, signer):
    before = latest(ca, signer).version
    with start_in_thread(ca.state_dir, bundle_port=0) as again:
        assert again.bundle_signer.read_bytes() == ca.bundle_signer.read_bytes()
        assert latest(again, signer).version == before


def test_ipv6_only_serves_the_bundle_on_the_ipv6_loopback(ca, signer):
    with start_in_thread(ca.state_dir, host="::1", bundle_port=0) as v6:
        assert v6.bundle_url.startswith("https://[::1]:") and v6.bundle_urls == [v6.bundle_url]
        assert latest(v6, signer, v6.bundle_url).sha256 == latest(ca, signer).sha256


def test_unknown_paths_and_methods_are_refused(ca):
    response = fetch(ca.bundle_url, ca.tls_ca, "/.well-known/est/cacerts")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.tls_ca)), timeout=10) as http:
        assert http.post(ca.bundle_url + LATEST).status_code == 405


def test_publish_while_serving_changes_the_next_answer(ca, signer, tmp_path, capsys):
    before = latest(ca, signer)
    extra = make_ca("Partner Root")
    (tmp_path / "partner.pem").write_text(extra.pem)

    # Another process publishes; the server reads the store at each request.
    added = ca_cli("bundle", "publish", "--state-dir", str(ca.state_dir), "--add", str(tmp_path / "partner.pem"))
    assert added.returncode == 0, added.stderr
    count = len(before.certificates) + 1
    assert added.stdout == f"published CA bundle version {before.version + 1}: {count} certificates\n"
    now = latest(ca, signer)
    assert now.version == before.version + 1 and "CN=Partner Root" in subjects(now)

    colons = ":".join(fingerprint(extra.cert)[i:i + 2] for i in range(0, 64, 2)).upper()
    status, out, error = ca_command(capsys, "bundle", "publish", "--state-dir", str(ca.state_dir), "--remove", colons)
    assert status == 0, error
    assert out == f"published CA bundle version {before.version + 2}: {count - 1} certificates\n"
    after = latest(ca, signer)
    assert after.version == before.version + 2 and subjects(after) == subjects(before)


def test_show_prints_the_newest_version(ca, signer, capsys):
    bundle = latest(ca, signer)
    status, out, _ = ca_command(capsys, "bundle", "show", "--state-dir", str(ca.state_dir))
    assert status == 0
    lines = out.splitlines()
    assert lines[:3] == [f"version {bundle.version}",
                         f"published {bundle.published_at.isoformat(timespec='seconds')}",
                         f"sha256 {bundle.sha256}"]
    for cert in bundle.certificates:
        assert f"  {fingerprint(cert)}  {cert.subject.rfc4514_string()}" in lines


def test_concurrent_publications_get_distinct_versions(ca, signer):
    store = open_existing(ca.state_dir)
    start = latest(ca, signer).version
    extras = [make_ca(f"Concurrent {i}") for i in range(4)]
    versions: list[int] = []
    threads = [threading.Thread(target=lambda e=e: versions.append(store.publish(add=[("test", e.cert)]).version))
               for e in extras]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(versions) == list(range(start + 1, start + 5))
    newest = latest(ca, signer)
    assert newest.version == start + 4
    assert {f"CN=Concurrent {i}" for i in range(4)} <= set(subjects(newest))


@pytest.mark.parametrize(("args", "status", "code", "names"), [
    (["--remove", "ab" * 32], 1, "unknown_fingerprint", "ab" * 32),
    (["--remove", "AB:CD"], 2, "bad_fingerprint", "AB:CD"),
    (["--add", "{leaf}"], 1, "not_a_ca_certificate", "CN=leaf.example"),
    (["--add", "{garbage}"], 1, "unreadable_certificate", "garbage.pem"),
    (["--add", "{missing}"], 1, "os_error", "missing.pem"),
    ([], 2, "nothing_to_publish", "--add"),
], ids=["unknown-fingerprint", "bad-fingerprint", "not-a-ca", "garbage", "missing-file", "nothing"])
def test_publish_refuses_bad_input_and_keeps_the_bundle(ca, signer, tmp_path, capsys, args, status, code, names):
    leaf = make_leaf(make_ca("Some CA"), hosts=("leaf.example",))
    (tmp_path / "leaf.pem").write_text(leaf.pem)
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    files = {"leaf": tmp_path / "leaf.pem", "garbage": tmp_path / "garbage.pem", "missing": tmp_path / "missing.pem"}
    before = latest(ca, signer).version
    given = [arg.format(**files) for arg in args]
    got, out, error = ca_command(capsys, "bundle", "publish", "--state-dir", str(ca.state_dir), *given)
    assert (got, out) == (status, "")
    assert error.startswith(f"error: {code}: ") and names in error
    assert latest(ca, signer).version == before


def test_the_bundle_commands_need_a_ca(tmp_path, capsys):
    for command in (["show"], ["publish", "--remove", "ab" * 32]):
        status, _, error = ca_command(capsys, "bundle", *command, "--state-dir", str(tmp_path / "none"))
        assert status == 1 and error.startswith("error: no_ca: ")
    assert not (tmp_path / "none").exists()


def test_version_1_holds_a_tls_trust_anchor_of_another_ca(tmp_path):
    ca = load_authority(tmp_path / "other-tls", key_type="ecdsa")
    other = make_ca("Separate TLS Root")
    ca.paths.tls_ca.write_text(other.pem)
    store = open_store(ca)
    assert store.latest().certificates == (ca.root, ca.issuing, other.cert)
