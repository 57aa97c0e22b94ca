"""Revocation benchmark: the CA simulator's OCSP responder and CRL, with a ledger of N revoked
certificates (100,000 by default) in a throwaway state directory.

- ``ocsp_responder``: answers per second for a few seconds, in process (the responder alone:
  parse, ledger lookup, sign) and over loopback HTTP (POSTs to ``--http-port`` from several
  client threads with keep-alive), asking about good, revoked and unknown serials with a nonce,
  as openssl does;
- ``crl``: the size in bytes of the issuing CA's CRL listing the N entries, the time to build
  and sign it, and the time to fetch it from the server once built.

Prints one JSON line per figure. No targets yet. Not part of ``make test`` (a smoke test runs
it with a few entries for a fraction of a second).

    .venv/bin/python bench/revocation.py
    .venv/bin/python bench/revocation.py --revoked 100000 --seconds 3 --key-type rsa
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

from bench.stopping import stoppable  # noqa: E402
from services.ca_sim import issuance  # noqa: E402
from services.ca_sim.crl import CrlPublisher  # noqa: E402
from services.ca_sim.profiles import DEFAULT  # noqa: E402
from services.ca_sim.service import start_in_thread  # noqa: E402
from shared.logging import configure_logging  # noqa: E402

REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified")
#: Serials of the bulk-loaded revocations start here, clear of the random ones the CA issues.
FIRST_SERIAL = 1 << 120


def _csr(name: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def _requests(running, count: int) -> list[bytes]:
    """OCSP requests (with a nonce each) about good, revoked and never-issued certificates, in turn."""
    ca = running.ca
    certs = [ca.issue(_csr(f"fw-bench-{n}.example.net"), DEFAULT) for n in range(count)]
    for cert in certs[1::3]:
        ca.ledger.revoke(cert.serial_number, reason="keyCompromise")
    for n in range(2, count, 3):  # signed by the CA, never recorded: "unknown"
        certs[n] = issuance.issue_from_request(_csr(f"fw-unknown-{n}.example.net"), DEFAULT, issuer=ca.issuing,
                                               issuer_key=ca.issuing_key, now=datetime.now(UTC))
    return [ocsp.OCSPRequestBuilder().add_certificate(cert, ca.issuing, hashes.SHA1())
            .add_extension(x509.OCSPNonce(os.urandom(16)), critical=False).build()
            .public_bytes(serialization.Encoding.DER) for cert in certs]


def _load_revocations(ledger, revoked: int) -> float:
    started = time.perf_counter()
    when = datetime.now(UTC).replace(microsecond=0)
    serials = range(FIRST_SERIAL, FIRST_SERIAL + revoked)
    ledger.record_serials(serials, subject="CN=bench", kind="end-entity", not_after=when + timedelta(days=365))
    ledger.revoke_many((serial, REASONS[n % len(REASONS)], when - timedelta(seconds=n))
                       for n, serial in enumerate(serials))
    return time.perf_counter() - started


def ocsp_in_process(running, requests: list[bytes], seconds: float) -> dict:
    responder = running.ocsp
    answered, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for der in requests:
            assert responder.answer(der).response_status == "successful"
        answered += len(requests)
    return {"transport": "in_process", "clients": 1, "answers": answered, "seconds": round(elapsed, 3),
            "answers_per_second": round(answered / elapsed)}


def ocsp_over_http(running, requests: list[bytes], seconds: float, clients: int) -> dict:
    counts = [0] * clients
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    url = urlsplit(running.revocation.ocsp)
    headers = {"Content-Type": "application/ocsp-request"}

    def client(slot: int) -> None:
        # http.client rather than httpx: the clients share this process (and its GIL) with the
        # server, so the lighter the client, the more of the figure is the server's.
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        try:
            while time.perf_counter() < deadline:
                for der in requests:
                    connection.request("POST", url.path, body=der, headers=headers)
                    answer = connection.getresponse()
                    body = answer.read()
                    if answer.status != 200 or body[:1] != b"\x30":
                        failures.append(f"HTTP {answer.status}")
                        return
                    counts[slot] += 1
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"the OCSP responder failed a request: {failures[0]}")
    answered = sum(counts)
    return {"transport": "http", "clients": clients, "answers": answered, "seconds": round(elapsed, 3),
            "answers_per_second": round(answered / elapsed)}


def crl_figures(running, revoked: int) -> dict:
    started = time.perf_counter()
    crl = CrlPublisher(running.ca, validity=timedelta(hours=1)).current()
    built = time.perf_counter() - started
    started = time.perf_counter()
    fetched = httpx.get(running.revocation.crl, timeout=60)
    fetch = time.perf_counter() - started
    assert fetched.status_code == 200 and fetched.content == crl.der
    listed = len(x509.load_der_x509_crl(crl.der))
    return {"benchmark": "crl", "revoked_entries": listed, "bytes": len(crl.der),
            "generation_seconds": round(built, 3), "http_fetch_seconds": round(fetch, 3),
            "bytes_per_entry": round(len(crl.der) / max(listed, 1), 1)} | ({} if listed >= revoked else
                                                                         {"error": "entries missing"})


def run(state_dir: Path, *, revoked: int = 100_000, seconds: float = 3.0, clients: int = 2,
        key_type: str = "ecdsa", requests: int = 30) -> list[dict]:
    """The benchmark's figures, one dict per JSON line."""
    with start_in_thread(state_dir, key_type=key_type, http_port=0) as running:
        load_seconds = _load_revocations(running.ca.ledger, revoked)
        prepared = _requests(running, requests)
        crl = crl_figures(running, revoked) | {"key_type": key_type, "load_seconds": round(load_seconds, 3)}
        common = {"benchmark": "ocsp_responder", "key_type": key_type, "revoked_entries": revoked,
                  "signer": "delegated"}
        in_process = common | ocsp_in_process(running, prepared, seconds)
        over_http = common | ocsp_over_http(running, prepared, seconds, clients)
    return [in_process, over_http, crl]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revoked", type=int, default=100_000, help="revoked entries in the ledger and CRL")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each OCSP measurement runs")
    parser.add_argument("--clients", type=int, default=2, help="HTTP client threads asking the responder")
    parser.add_argument("--key-type", choices=["ecdsa", "rsa"], default="ecdsa", help="the CA's key: P-256 or RSA-2048")
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # stdout is for the figures; the CA's log lines would go to stderr
    with tempfile.TemporaryDirectory(prefix="certfleet-revocation-bench-") as tmp:
        for figure in run(Path(tmp) / "ca", revoked=args.revoked, seconds=args.seconds, clients=args.clients,
                          key_type=args.key_type):
            print(json.dumps(figure), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(stoppable(main))
