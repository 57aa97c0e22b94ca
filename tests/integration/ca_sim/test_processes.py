"""``certfleet ca serve --processes 2`` as an operator runs it: one ready line once both server
processes serve, EST enrollments from many concurrent clients (httpx and strongSwan's ``pki``)
spread over both with distinct serials, a revocation made through one process answered by the
other's CRL and OCSP responder, manual approval across processes (one request, one
certificate), a SCEP request sent to both at once (one transaction), and stopping: the parent
stops every child, a child's end stops the CA with a message, the parent's end stops the
children."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from services.ca_sim.processes import PROCESS_HEADER
from shared.protocols import est as est_codec
from shared.protocols import scep
from shared.protocols.scep import FailInfo, PkiStatus
from tests.support.ca_peers import p256_csr, pki, run, write_pem
from tests.support.procs import ROOT, Proc, ca_ready_urls, session_members
from tests.support.scep_peers import csr_for, now, rsa_key
from tests.support.waiting import wait_until

USER, PASSWORD = "est-admin", "Spread-Over-Two-9"
EST = "/.well-known/est"
CSR_HEADERS = {"Content-Type": "application/pkcs10"}


def serve(state_dir: Path, log_dir: Path, name: str, *extra: str) -> Proc:
    env = {**os.environ, "CERTFLEET_CA_EST_PASSWORD": PASSWORD}
    return Proc(name, ["ca", "serve", "--state-dir", str(state_dir), "--est-port", "0", "--est-user", USER,
                       "--scep-port", "0", "--http-port", "0", "--processes", "2", *extra], env, log_dir)


class Served:
    """A running ``ca serve --processes 2`` and what its ready line says."""

    def __init__(self, proc: Proc, state_dir: Path) -> None:
        self.proc = proc
        self.urls = ca_ready_urls(proc)
        self.line = proc.wait_for_line(r"ca ready: .*").group(0)
        self.est_url, self.scep_url, self.http_url = self.urls["est"][0], self.urls["scep"][0], self.urls["http"][0]
        self.state_dir = state_dir
        self.tls = ssl.create_default_context(cafile=str(state_dir / "tls-ca.pem"))
        self.issuing = x509.load_pem_x509_certificate((state_dir / "ca" / "issuing.pem").read_bytes())

    def children(self) -> list[int]:
        return [pid for pid in self.proc.session() if pid != self.proc.popen.pid]

    def on_process(self, index: int, call: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        """``call`` on a new connection each time until server process ``index`` answers (the
        kernel hashes each connection to one of them)."""
        for _ in range(100):
            with httpx.Client(base_url=self.est_url, verify=self.tls, timeout=20) as client:
                answer = call(client)
            if answer.headers[PROCESS_HEADER] == str(index):
                return answer
        raise AssertionError(f"process {index} answered none of 100 connections")


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("ca-processes")
    state_dir = log_dir / "state"
    proc = serve(state_dir, log_dir, "ca")
    try:
        yield Served(proc, state_dir)
    finally:
        proc.stop()


def certfleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def enroll(client: httpx.Client, csr: x509.CertificateSigningRequest, label: str = "") -> httpx.Response:
    path = f"{EST}/{label}/simpleenroll" if label else f"{EST}/simpleenroll"
    return client.post(path, content=est_codec.encode_csr(csr), headers=CSR_HEADERS, auth=(USER, PASSWORD))


def certificate(answer: httpx.Response) -> x509.Certificate:
    assert answer.status_code == 200, answer.text
    (cert,) = est_codec.decode_certs_only(answer.content)
    return cert


def test_the_ready_line_is_printed_once_and_read_as_before(ca):
    assert re.fullmatch(r"ca ready: est=https://127\.0\.0\.1:\d+ scep=http://127\.0\.0\.1:\d+ "
                        r"http=http://127\.0\.0\.1:\d+ state=\S+ processes=2", ca.line)
    # What tests/support/procs.py and bench/fleet.py read from it.
    assert re.search(r"ca ready: est=(\S+)", ca.line).group(1) == ca.est_url
    assert ca.urls == {"est": [ca.est_url], "scep": [ca.scep_url], "http": [ca.http_url]}
    assert ca.proc.output().count("ca ready:") == 1
    assert len(ca.children()) == 2


def test_concurrent_enrollments_are_spread_over_both_processes_with_distinct_serials(ca, tmp_path):
    requests = [p256_csr(f"fw-{i:03d}.example.net", sans=[f"fw-{i:03d}.example.net"])[1] for i in range(120)]

    def one(csr: x509.CertificateSigningRequest) -> tuple[str, x509.Certificate]:
        with httpx.Client(base_url=ca.est_url, verify=ca.tls, timeout=30) as client:  # a connection each
            answer = enroll(client, csr)
        return answer.headers[PROCESS_HEADER], certificate(answer)

    def with_pki(i: int) -> x509.Certificate:
        key = tmp_path / f"pki-{i}.key"
        key.write_bytes(run([pki(), "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"]).stdout)
        csr = run([pki(), "--req", "--in", str(key), "--type", "ecdsa", "--dn", f"O=certfleet, CN=pki-{i}.example.net",
                   "--outform", "pem"]).stdout
        (tmp_path / f"pki-{i}.csr").write_bytes(csr)
        done = run([pki(), "--est", "--url", ca.est_url, "--cacert", str(ca.state_dir / "tls-ca.pem"),
                    "--cacert", str(ca.state_dir / "ca" / "issuing.pem"), "--in", str(tmp_path / f"pki-{i}.csr"),
                    "--userpass", f"{USER}:{PASSWORD}", "--outform", "pem"])
        return x509.load_pem_x509_certificate(done.stdout)

    with ThreadPoolExecutor(max_workers=16) as pool:
        from_pki = [pool.submit(with_pki, i) for i in range(4)]
        answered = list(pool.map(one, requests))
        issued = [cert for _, cert in answered] + [f.result() for f in from_pki]

    assert {process for process, _ in answered} == {"1", "2"}
    assert len({cert.serial_number for cert in issued}) == len(issued) == 124
    for cert, csr in zip(issued, requests, strict=False):
        assert cert.subject == csr.subject
    for cert in issued:
        cert.verify_directly_issued_by(ca.issuing)


def ocsp_status(ca: Served, cert: x509.Certificate, process: int) -> ocsp.OCSPResponse:
    der = ocsp.OCSPRequestBuilder().add_certificate(cert, ca.issuing, hashes.SHA1()).build().public_bytes(
        serialization.Encoding.DER)
    answer = ca.on_process(process, lambda client: client.post(
        f"{ca.http_url}/ocsp", content=der, headers={"Content-Type": "application/ocsp-request"}))
    return ocsp.load_der_ocsp_response(answer.content)


def crl_from(ca: Served, process: int) -> x509.CertificateRevocationList:
    answer = ca.on_process(process, lambda client: client.get(f"{ca.http_url}/crl/issuing.crl"))
    assert answer.status_code == 200
    return x509.load_der_x509_crl(answer.content)


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_a_revocation_made_through_one_process_is_answered_by_the_other(ca, tmp_path):
    key, csr = p256_csr("fw-revoked.example.net", sans=["fw-revoked.example.net"])
    with httpx.Client(base_url=ca.est_url, verify=ca.tls, timeout=20) as client:
        old = certificate(enroll(client, csr, "revoke-superseded"))
    before = {process: crl_from(ca, process) for process in (1, 2)}  # each holds a current CRL
    assert all(ocsp_status(ca, old, process).certificate_status is ocsp.OCSPCertStatus.GOOD for process in (1, 2))

    # Re-enrolling with a new key under this profile revokes the old certificate (superseded),
    # in whichever process answers.
    tls = ssl.create_default_context(cafile=str(ca.state_dir / "tls-ca.pem"))
    tls.load_cert_chain(write_pem(tmp_path / "old.pem", old), write_pem(tmp_path / "old.key", key))
    _, renewal = p256_csr("fw-revoked.example.net", sans=["fw-revoked.example.net"])
    with httpx.Client(base_url=ca.est_url, verify=tls, timeout=20) as client:
        answer = client.post(f"{EST}/revoke-superseded/simplereenroll", content=est_codec.encode_csr(renewal),
                             headers=CSR_HEADERS)
    certificate(answer)
    other = 3 - int(answer.headers[PROCESS_HEADER])

    status = ocsp_status(ca, old, other)
    assert status.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert status.revocation_reason is x509.ReasonFlags.superseded
    crls = {process: crl_from(ca, process) for process in (other, 3 - other)}
    for crl in crls.values():
        assert crl.get_revoked_certificate_by_serial_number(old.serial_number) is not None
        assert crl_number(crl) > max(map(crl_number, before.values()))
        assert crl.is_signature_valid(ca.issuing.public_key())
    assert crl_number(crls[1]) == crl_number(crls[2])  # both answer the one CRL stored


def test_manual_approval_holds_one_request_and_issues_one_certificate_across_processes(ca):
    key, csr = p256_csr("fw-manual.example.net", sans=["fw-manual.example.net"])
    label = "ms2012-manual"
    first = ca.on_process(1, lambda client: enroll(client, csr, label))
    again = ca.on_process(2, lambda client: enroll(client, csr, label))
    assert first.status_code == again.status_code == 202
    request_id = re.search(r"request (\w+) waits", first.text).group(1)
    assert request_id in again.text  # the other process found the same request

    def fresh() -> httpx.Response:
        with httpx.Client(base_url=ca.est_url, verify=ca.tls, timeout=20) as client:
            return enroll(client, csr, label)

    # A device asking from many connections at once still has one request waiting.
    _, other_csr = p256_csr("fw-manual-2.example.net", key=key)
    waiting = burst(lambda: fresh_for(ca, other_csr, label))
    assert {answer.status_code for answer in waiting} == {202}
    assert len({re.search(r"request (\w+) waits", answer.text).group(1) for answer in waiting}) == 1

    assert approve(ca, request_id) == f"approved {request_id}"
    issued = burst(fresh)
    serials = {certificate(answer).serial_number for answer in issued}
    assert len(serials) == 1  # one certificate, whichever process issued it
    assert {answer.headers[PROCESS_HEADER] for answer in issued} <= {"1", "2"}
    for process in (1, 2):
        assert certificate(ca.on_process(process, lambda client: enroll(client, csr, label))).serial_number in serials


def test_a_scep_request_sent_to_both_processes_at_once_is_one_transaction(ca):
    """A device that re-sends its PKCSReq while the first copy is still being answered, the
    copies landing in different processes: one certificate, the one-time challenge used once."""
    password = certfleet("ca", "challenge", "--state-dir", str(ca.state_dir)).stdout.strip()
    key = rsa_key()
    signer = scep.self_signed_signer(key, x509.Name.from_rfc4514_string("CN=device"), now=now())
    requester = scep.Requester(key=key, cert=signer, recipient=ca.issuing)
    csr = csr_for(key, "fw-scep-twice.example.net", challenge=password)
    message = scep.build_pkcs_req(requester, csr, sender_nonce=scep.new_nonce(), now=now(),
                                  transaction_id=scep.transaction_id_for(key.public_key()))

    def post() -> httpx.Response:
        return httpx.post(f"{ca.scep_url}/scep?operation=PKIOperation", content=message,
                          headers={"Content-Type": scep.PKI_MESSAGE}, timeout=30)

    answers = burst(post)
    replies = [scep.parse_cert_rep(answer.content, requester) for answer in answers]
    assert {reply.status for reply in replies} == {PkiStatus.SUCCESS}, [r.fail_info_text for r in replies]
    assert len({reply.certs for reply in replies}) == 1
    for process in (1, 2):  # and each process answers a repeat with that certificate
        again = ca.on_process(process, lambda client: client.post(
            f"{ca.scep_url}/scep?operation=PKIOperation", content=message,
            headers={"Content-Type": scep.PKI_MESSAGE}))
        assert scep.parse_cert_rep(again.content, requester).certs == replies[0].certs
    other = rsa_key()
    other_signer = scep.self_signed_signer(other, x509.Name.from_rfc4514_string("CN=other"), now=now())
    other_requester = scep.Requester(key=other, cert=other_signer, recipient=ca.issuing)
    refused = scep.parse_cert_rep(post_message(ca, scep.build_pkcs_req(
        other_requester, csr_for(other, "fw-scep-other.example.net", challenge=password),
        sender_nonce=scep.new_nonce(), now=now(), transaction_id=scep.transaction_id_for(other.public_key()))),
        other_requester)
    assert refused.status is PkiStatus.FAILURE and refused.fail_info is FailInfo.BAD_REQUEST


def post_message(ca: Served, message: bytes) -> bytes:
    answer = httpx.post(f"{ca.scep_url}/scep?operation=PKIOperation", content=message,
                        headers={"Content-Type": scep.PKI_MESSAGE}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.content


def burst(call: Callable[[], httpx.Response], times: int = 12) -> list[httpx.Response]:
    """``call`` from ``times`` threads released together, each on a connection of its own."""
    start = threading.Barrier(times)

    def one(_: int) -> httpx.Response:
        start.wait()
        return call()
    with ThreadPoolExecutor(max_workers=times) as pool:
        return list(pool.map(one, range(times)))


def fresh_for(ca: Served, csr: x509.CertificateSigningRequest, label: str) -> httpx.Response:
    with httpx.Client(base_url=ca.est_url, verify=ca.tls, timeout=20) as client:
        return enroll(client, csr, label)


def approve(ca: Served, request_id: str) -> str:
    """Through the admin endpoint, on either process."""
    token = (ca.state_dir / "admin-token").read_text().strip()
    with httpx.Client(base_url=ca.est_url, verify=ca.tls, timeout=20) as client:
        answer = client.post(f"/admin/requests/{request_id}/approve", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return f"{answer.json()['status']} {request_id}"


# --- starting and stopping ----------------------------------------------------------------------

def test_sigterm_to_the_parent_stops_every_child(ca, tmp_path):
    proc = serve(ca.state_dir, tmp_path, "stopped")
    served = Served(proc, ca.state_dir)
    children = served.children()
    assert len(children) == 2
    os.kill(proc.popen.pid, signal.SIGTERM)  # the parent alone, as a process manager does
    assert proc.popen.wait(timeout=30) == 0
    assert not [pid for pid in children if pid in session_members(proc.popen.pid)]
    proc.stop()


def test_a_child_that_dies_stops_the_ca_with_a_message(ca, tmp_path):
    proc = serve(ca.state_dir, tmp_path, "child-killed")
    served = Served(proc, ca.state_dir)
    victim, survivor = sorted(served.children())
    os.kill(victim, signal.SIGKILL)
    assert proc.popen.wait(timeout=30) == 1
    last = proc.output().strip().splitlines()[-1]
    assert re.fullmatch(rf"error: ca_process_exited: CA server process \d \(pid {victim}\) was killed by SIGKILL "
                        r"while serving; the others were stopped", last), last
    wait_until(lambda: survivor not in session_members(proc.popen.pid), timeout=30, what="the other child's end")
    proc.stop()


def test_the_children_end_with_the_parent(ca, tmp_path):
    proc = serve(ca.state_dir, tmp_path, "parent-killed")
    served = Served(proc, ca.state_dir)
    children = served.children()
    os.kill(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)
    wait_until(lambda: not set(children) & set(session_members(proc.popen.pid)), timeout=30,
               what="the children's end")
    proc.stop()


def test_a_port_another_ca_serves_is_refused_not_shared(ca, tmp_path):
    port = ca.est_url.rsplit(":", 1)[1]
    done = certfleet("ca", "serve", "--state-dir", str(ca.state_dir), "--est-port", port, "--processes", "2")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (f"error: cannot_listen: cannot listen on 127.0.0.1 port {port}: "
                                            "Address already in use")


def test_processes_out_of_range_are_refused(ca):
    done = certfleet("ca", "serve", "--state-dir", str(ca.state_dir), "--processes", "0")
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        2, "error: bad_processes: --processes must be 1 to 64, not 0")
