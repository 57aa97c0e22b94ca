"""``certfleet ca`` as an operator runs it: serve prints one ready line, stops on SIGTERM,
keeps its CA across restarts, never logs the EST password; requests/approve work from
another process; a refusal is one ``error: <code>: <message>`` line and exit 1 or 2. (Run as
``python -m services.ca_sim``, the same parser, main and error lines.)"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from shared.protocols import est as est_codec
from tests.support.ca_peers import p256_csr

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "Env-Only-Secret-7"
READY = re.compile(r"^ca ready: est=(https://127\.0\.0\.1:\d+) state=(\S+)$")


def error_line(done: subprocess.CompletedProcess) -> str:
    """The command's error: the last line on stderr, after any log lines."""
    return done.stderr.splitlines()[-1]


def ca_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.ca_sim", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


class Served:
    def __init__(self, state_dir: Path, *extra: str) -> None:
        env = {**os.environ, "CERTFLEET_CA_EST_PASSWORD": PASSWORD, "CERTFLEET_LOG_FORMAT": "json"}
        self.out = (state_dir.parent / "serve.out").open("w+")
        self.err = (state_dir.parent / "serve.err").open("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.ca_sim", "serve", "--state-dir", str(state_dir),
             "--est-port", "0", "--est-user", "operator", *extra],
            cwd=ROOT, env=env, stdout=self.out, stderr=self.err, text=True,
        )
        try:
            self._wait_ready()
        except BaseException:  # a server that did not come up is not left running
            self.proc.kill()
            self.proc.wait(10)
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.out.seek(0)
            lines = self.out.read().splitlines()
            if lines:
                self.lines = lines
                self.match = READY.match(lines[0])
                assert self.match, lines
                self.url = self.match[1]
                return
            time.sleep(0.05)
        raise AssertionError(f"ca serve did not get ready: {self.stderr()}")

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self.out.seek(0)
        self.lines = self.out.read().splitlines()
        return code


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


def client(state_dir: Path, url: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(state_dir / "tls-ca.pem"))
    return httpx.Client(base_url=url, verify=ctx, timeout=10)


def root_fingerprint(http: httpx.Client) -> set[str]:
    certs = est_codec.decode_certs_only(http.get("/.well-known/est/cacerts").content)
    return {hashlib.sha256(c.tbs_certificate_bytes).hexdigest() for c in certs}


def test_serve_restart_keeps_the_ca_and_never_logs_the_password(state_dir):
    served = Served(state_dir)
    try:
        assert served.match[2] == str(state_dir.resolve())
        assert "scep=" not in served.lines[0]
        with client(state_dir, served.url) as http:
            before = root_fingerprint(http)
            _, csr = p256_csr("fw-cli.example.net")
            body = est_codec.encode_csr(csr)
            headers = {"Content-Type": "application/pkcs10"}
            assert http.post("/.well-known/est/simpleenroll", content=body, headers=headers,
                             auth=("operator", "wrong")).status_code == 401
            assert http.post("/.well-known/est/simpleenroll", content=body, headers=headers,
                             auth=("operator", PASSWORD)).status_code == 200
    finally:
        assert served.stop() == 0
    assert len(served.lines) == 1, served.lines  # exactly one line on stdout
    log = served.stderr()
    assert "certificate issued" in log
    assert PASSWORD not in log
    tls_ca = (state_dir / "tls-ca.pem").read_bytes()

    again = Served(state_dir)
    try:
        with client(state_dir, again.url) as http:
            assert root_fingerprint(http) == before
    finally:
        again.stop()
    assert (state_dir / "tls-ca.pem").read_bytes() == tls_ca


def test_serve_refuses_a_key_type_that_contradicts_the_ca(state_dir):
    Served(state_dir).stop()  # an RSA CA, the default
    done = ca_cli("serve", "--state-dir", str(state_dir), "--est-port", "0", "--key-type", "ecdsa")
    assert done.returncode == 2, done.stderr
    assert error_line(done).startswith(f"error: configuration_error: {state_dir.resolve()} already holds a rsa CA; ")


def test_serve_with_a_validity_in_seconds_issues_certificates_that_last_that_long(state_dir):
    served = Served(state_dir, "--validity-seconds", "30")
    try:
        _, csr = p256_csr("fw-short.example.net")
        with client(state_dir, served.url) as http:
            before = datetime.now(UTC).replace(microsecond=0)
            answer = http.post("/.well-known/est/simpleenroll", content=est_codec.encode_csr(csr),
                               headers={"Content-Type": "application/pkcs10"}, auth=("operator", PASSWORD))
            after = datetime.now(UTC)
    finally:
        served.stop()
    assert answer.status_code == 200, answer.text
    (cert,) = est_codec.decode_certs_only(answer.content)
    # Certificate times are whole seconds: 30 s after the request was answered, started 3 s before.
    assert before + timedelta(seconds=30) <= cert.not_valid_after_utc <= after + timedelta(seconds=30)
    assert before - timedelta(seconds=3) <= cert.not_valid_before_utc <= after - timedelta(seconds=3)

    done = ca_cli("serve", "--state-dir", str(state_dir), "--est-port", "0", "--validity-seconds", "0")
    assert (done.returncode, error_line(done)) == (
        2, "error: bad_validity: --validity-seconds must be 1 to 315360000 (ten years), not 0")


def test_requests_and_approve_from_another_process(state_dir):
    served = Served(state_dir, "--default-profile", "ms2012-manual")
    try:
        assert ca_cli("requests", "--state-dir", str(state_dir)).stdout.strip() == "no pending requests"
        _, csr = p256_csr("fw-wait.example.net")
        with client(state_dir, served.url) as http:
            enroll = lambda: http.post(  # noqa: E731
                "/.well-known/est/simpleenroll", content=est_codec.encode_csr(csr),
                headers={"Content-Type": "application/pkcs10"}, auth=("operator", PASSWORD))
            assert enroll().status_code == 202
            listing = ca_cli("requests", "--state-dir", str(state_dir)).stdout
            assert "ms2012-manual" in listing and "CN=fw-wait.example.net" in listing
            request_id = listing.splitlines()[1].split()[0]
            done = ca_cli("approve", "--state-dir", str(state_dir), request_id)
            assert done.returncode == 0 and f"approved {request_id}" in done.stdout
            assert enroll().status_code == 200
        assert "already issued" in ca_cli("approve", "--state-dir", str(state_dir), request_id).stdout
    finally:
        served.stop()
    unknown = ca_cli("approve", "--state-dir", str(state_dir), "does-not-exist")
    assert unknown.returncode == 1
    assert error_line(unknown) == ("error: request_not_found: no enrollment request 'does-not-exist'; "
                                   "`certfleet ca requests` lists the pending ones")


def test_approve_without_a_ca_says_how_to_start_one(tmp_path):
    done = ca_cli("approve", "--state-dir", str(tmp_path / "empty"), "abc")
    assert done.returncode == 1
    assert error_line(done).startswith(f"error: no_ca: {tmp_path / 'empty'} holds no CA; start `certfleet ca serve")


def test_serve_on_a_port_in_use_says_it_cannot_listen_there(state_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = ca_cli("serve", "--state-dir", str(state_dir), "--key-type", "ecdsa", "--est-port", str(port))
    assert done.returncode == 1, done.stderr
    assert error_line(done) == f"error: cannot_listen: cannot listen on 127.0.0.1 port {port}: Address already in use"


def test_a_challenge_that_would_never_be_valid_is_refused(state_dir):
    done = ca_cli("challenge", "--state-dir", str(state_dir), "--ttl", "0")
    assert (done.returncode, done.stderr) == (2, "error: bad_ttl: --ttl must be at least 1 minute\n")
