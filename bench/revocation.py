"""Revocation benchmark: the CA simulator's OCSP responder and CRL, with a ledger of N revoked
certificates (100,000 by default) in a throwaway state directory.

- ``ocsp_responder``: answers per second for a few seconds, in process (the responder alone:
  parse, ledger lookup, sign) and over loopback HTTP (POSTs to ``--http-port`` from several
  client threads with keep-alive), asking about good, revoked and unknown serials with a nonce,
  as openssl does;
- ``crl``: the size in bytes of the issuing CA's CRL listing the N entries, the time to build
  and sign it, and the time to fetch it from the server once built;
- ``revocation_scan``: the controller's scheduled revocation scan (``run_revocation_scan``)
  over M installed identity certificates (50,000 by default) in a throwaway PostgreSQL
  database: M EST trustpoints whose object checks by CRL, each holding a real P-256
  certificate of another CA simulator (served in process on loopback) that names the CA's CRL
  distribution point, with the issuing and root CA certificates beside it; 1% of them revoked
  at the CA. The scan fetches the real CRL from the running CA, once: a second fetch fails
  the run (exit status 1), as does a revoked certificate missed or one marked wrongly.

Prints one JSON line per figure. No targets yet. Not part of ``make test`` (a smoke test runs
it with a few entries for a fraction of a second). The scan needs a local PostgreSQL (a
database is created and dropped, as the tests do); ``--scan-certificates 0`` leaves it out.

    .venv/bin/python bench/revocation.py
    .venv/bin/python bench/revocation.py --revoked 100000 --seconds 3 --key-type rsa
    .venv/bin/python bench/revocation.py --scan-certificates 200000
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from sqlmodel import Session, create_engine  # noqa: E402

from bench.renewal import BackendCpu, copy_rows, random_uuid  # noqa: E402
from bench.stopping import stoppable  # noqa: E402
from services.ca_sim import issuance  # noqa: E402
from services.ca_sim.crl import CrlPublisher  # noqa: E402
from services.ca_sim.profiles import DEFAULT  # noqa: E402
from services.ca_sim.revocations import revoke  # noqa: E402
from services.ca_sim.service import start_in_thread  # noqa: E402
from services.controller.revocation.scan import run_revocation_scan  # noqa: E402
from shared.db import init_db  # noqa: E402
from shared.enums import EnrollmentType  # noqa: E402
from shared.logging import configure_logging  # noqa: E402
from shared.models import GLOBAL_DOMAIN_ID, EnrollmentObject  # noqa: E402
from shared.revocation_fetch import RevocationChecker  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.pg import fresh_database  # noqa: E402

REASONS = ("keyCompromise", "superseded", "cessationOfOperation", "affiliationChanged", "unspecified")
#: Serials of the bulk-loaded revocations start here, clear of the random ones the CA issues.
FIRST_SERIAL = 1 << 120
#: Installed identity certificates the revocation scan checks, and the share revoked at the CA.
SCAN_CERTIFICATES = 50_000
SCAN_REVOKED_SHARE = 0.01


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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


# --- the revocation scan ------------------------------------------------------------------


def fleet_certificates(ca, count: int, *, now: datetime) -> list[x509.Certificate]:
    """``count`` identity certificates as the CA issues them under its default profile (with its
    CRL distribution point and OCSP address), signed with its issuing key directly: no CSR each,
    and one P-256 key pair for all of them, since a key per device would cost more than the
    signatures (50,000 in about 3 s) and the scan never looks at the device's key."""
    device_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    issuer_key = ca.issuing_key
    common = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                       encipher_only=False, decipher_only=False), True),
        (x509.SubjectKeyIdentifier.from_public_key(device_key), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.issuing.public_key()), False),
        (x509.ExtendedKeyUsage(list(DEFAULT.extended_key_usage)), False),
        *((extension, False) for extension in ca.revocation_urls.extensions()),
    ]
    certs = []
    for n in range(count):
        name = f"fw-{n:06d}.bench.example.net"
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca.issuing.subject).public_key(device_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=365))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False))
        for extension, critical in common:
            builder = builder.add_extension(extension, critical=critical)
        certs.append(builder.sign(issuer_key, hashes.SHA256()))
    return certs


def load_fleet(database_url: str, obj: EnrollmentObject, certs: list[x509.Certificate],
               chain: list[x509.Certificate], *, now: datetime, seed: int = 13) -> dict:
    """COPY, per certificate, a device with an available EST trustpoint of ``obj`` holding it
    (role "identity") and ``chain`` (role "ca": the issuing CA at chain_position 0, the root at
    1), then VACUUM ANALYZE; the trustpoint id of each certificate's serial returned."""
    rng = random.Random(seed)
    stamp = now.isoformat()

    def certificate_row(role: str, position: int, cert: x509.Certificate) -> tuple:
        """The columns after (id, trustpoint_id), as the controller stores an installed certificate."""
        der = cert.public_bytes(serialization.Encoding.DER)
        return (role, position, cert.public_bytes(serialization.Encoding.PEM).decode(), cert.subject.rfc4514_string(),
                cert.issuer.rfc4514_string(), format(cert.serial_number, "x"), cert.not_valid_before_utc.isoformat(),
                cert.not_valid_after_utc.isoformat(), "ECDSA", 256, "ecdsa-with-SHA256",
                hashlib.sha256(der).hexdigest(), stamp)

    chain_rows = [certificate_row("ca", position, cert) for position, cert in enumerate(chain)]
    devices, trustpoints, rows, by_serial = [], [], [], {}
    for n, cert in enumerate(certs):
        device_id, tp_id = random_uuid(rng), random_uuid(rng)
        by_serial[cert.serial_number] = tp_id
        name = f"bench-{n:06d}"
        devices.append((device_id, GLOBAL_DOMAIN_ID, name, "FTD-3110", f"SN{n:09d}", "", "",
                        f"http://127.0.0.1:9/api/devices/{name}", "f", "", stamp))
        trustpoints.append((tp_id, device_id, GLOBAL_DOMAIN_ID, obj.id, obj.name, EnrollmentType.EST.value,
                            "available", "available", stamp, stamp, stamp, 0))
        for row in [certificate_row("identity", 0, cert), *chain_rows]:
            rows.append((random_uuid(rng), tp_id, *row))
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")  # consistent by construction
            copy_rows(conn, "device", "id, domain_id, name, model, serial, ip_address, fqdn, management_url, "
                      "weak_crypto, bundle_version, created_at", devices)
            copy_rows(conn, "trustpoint", "id, device_id, domain_id, enrollment_object_id, name, enrollment_type, "
                      "ca_status, identity_status, created_at, updated_at, status_changed_at, renewal_failures",
                      trustpoints)
            copy_rows(conn, "certificate", "id, trustpoint_id, role, chain_position, pem, subject, issuer, "
                      "serial_number, not_before, not_after, key_algorithm, key_size, signature_algorithm, "
                      "fingerprint_sha256, created_at", rows)
        conn.execute("VACUUM ANALYZE")
    return by_serial


def scan_figures(state_dir: Path, *, certificates: int = SCAN_CERTIFICATES,
                 revoked_share: float = SCAN_REVOKED_SHARE) -> dict:
    """Time ``run_revocation_scan`` over ``certificates`` installed certificates, a share of
    them revoked at the CA; the figure carries ``error`` when the scan got anything wrong or
    fetched the CRL more than once."""
    with fresh_database() as database_url, start_in_thread(state_dir, key_type="ecdsa", http_port=0) as running:
        ca, now = running.ca, datetime.now(UTC)
        started = time.perf_counter()
        certs = fleet_certificates(ca, certificates, now=now)
        generation = time.perf_counter() - started
        progress(f"{certificates} certificates signed in {generation:.1f} s")
        ca.ledger.record_many([(cert, "end-entity", DEFAULT.label) for cert in certs], now=now)
        revoked_certs = certs[::max(1, round(1 / revoked_share))] if revoked_share > 0 else []
        for n, cert in enumerate(revoked_certs):  # as `certfleet ca revoke --serial` does
            revoke(state_dir, serial=cert.serial_number, reason=REASONS[n % len(REASONS)], now=now)

        settings = Settings(database_url=database_url)
        engine = create_engine(settings.sqlalchemy_url, pool_size=1, max_overflow=0)
        try:
            init_db(engine)
            with Session(engine, expire_on_commit=False) as session:
                obj = EnrollmentObject(domain_id=GLOBAL_DOMAIN_ID, name="bench-est-crl", enrollment_type="est",
                                       key_type="ecdsa", key_size=256, revocation_crl=True)
                session.add(obj)
                session.commit()
            started = time.perf_counter()
            by_serial = load_fleet(database_url, obj, certs, ca.chain(), now=now)
            load = time.perf_counter() - started
            progress(f"{certificates} trustpoints loaded in {load:.1f} s; scanning")
            with Session(engine, expire_on_commit=False) as session, RevocationChecker(clock=lambda: now) as checker:
                cpu = BackendCpu(session)
                db_before, process_before, thread_before = cpu.seconds(), time.process_time(), time.thread_time()
                started = time.perf_counter()
                result = run_revocation_scan(session, now=now, checker=checker)
                elapsed = time.perf_counter() - started
                thread_cpu, process_cpu = time.thread_time() - thread_before, time.process_time() - process_before
                db_cpu = cpu.seconds() - db_before if db_before is not None else None
            crl_bytes = len(running.crls.current().der)
            with psycopg.connect(database_url) as conn:
                marked = {str(row[0]) for row in conn.execute(
                    "SELECT id FROM trustpoint WHERE identity_status = 'revoked' AND error_code = 'identity_revoked'")}
        finally:
            engine.dispose()
    fetches = sum(checker.fetches.values())
    expected = {by_serial[cert.serial_number] for cert in revoked_certs}
    errors = []
    if fetches != 1:
        errors.append(f"{fetches} CRL or OCSP requests sent, not one CRL fetch for the whole scan: "
                      f"{dict(checker.fetches.most_common(3))}")
    if result.checked != certificates or result.unknown:
        errors.append(f"{result.checked} certificates checked ({result.unknown} unknown), not {certificates}")
    if marked != expected or result.revoked != len(expected):
        errors.append(f"{len(marked)} trustpoints marked revoked ({result.revoked} found), "
                      f"{len(marked & expected)} of the {len(expected)} revoked at the CA")
    return {
        "benchmark": "revocation_scan", "certificates_scanned": result.checked, "revoked_at_ca": len(expected),
        "revoked_found": result.revoked, "newly_marked_revoked": len(result.newly_revoked),
        "unknown": result.unknown, "scan_seconds": round(elapsed, 3),
        "certificates_per_second": round(result.checked / elapsed) if elapsed else None,
        "crl_fetches": fetches, "crl_bytes": crl_bytes,
        "scan_thread_cpu_seconds": round(thread_cpu, 2),
        # The CA simulator serves from a thread of this process: its CRL build is in this figure.
        "process_cpu_seconds": round(process_cpu, 2),
        "db_backend_cpu_seconds": round(db_cpu, 2) if db_cpu is not None else None,
        "certificate_generation_seconds": round(generation, 1), "load_seconds": round(load, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    } | ({"error": "; ".join(errors)} if errors else {})


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
    parser.add_argument("--scan-certificates", type=int, default=SCAN_CERTIFICATES,
                        help="installed identity certificates the revocation scan checks (0: no scan)")
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # stdout is for the figures; the CA's log lines would go to stderr
    with tempfile.TemporaryDirectory(prefix="certfleet-revocation-bench-") as tmp:
        for figure in run(Path(tmp) / "ca", revoked=args.revoked, seconds=args.seconds, clients=args.clients,
                          key_type=args.key_type):
            print(json.dumps(figure), flush=True)
        if args.scan_certificates > 0:
            scan = scan_figures(Path(tmp) / "scan-ca", certificates=args.scan_certificates)
            print(json.dumps(scan), flush=True)
            if "error" in scan:
                return 1  # `make bench` fails: the scan missed or fetched too much
    return 0


if __name__ == "__main__":
    sys.exit(stoppable(main))
