"""End to end, as an operator runs it: the controller, two worker processes and the device
simulator as separate processes on loopback, real Redis and PostgreSQL. 50 devices are
enrolled through the API and every certificate is checked."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from services.cli.api_client import CertfleetClient
from tests.support.pg import fresh_database
from tests.support.procs import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/13"
DEVICES = 50


@pytest.fixture
def stack(tmp_path):
    redis.Redis.from_url(REDIS_URL).flushdb()
    with fresh_database() as database_url:
        with Stack(database_url=database_url, broker_url=REDIS_URL, log_dir=tmp_path, devices=DEVICES) as s:
            yield s
    redis.Redis.from_url(REDIS_URL).flushdb()


def wait_until_settled(client: CertfleetClient, total: int, timeout: float = 180) -> Counter:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = Counter(t["identity_status"] for t in client.trustpoints())
        if counts["available"] + counts["failed"] >= total:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"enrollment did not settle within {timeout} s: {counts}")


def verify_self_signed(cert: x509.Certificate) -> None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        from cryptography.hazmat.primitives.asymmetric import padding

        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))


def test_a_fleet_enrolls_through_the_multiprocess_stack(stack):
    with CertfleetClient(stack.api_url, stack.token) as client:
        assert client.import_devices(stack.sim_url)["imported"] == DEVICES
        ecdsa_object = client.create_enrollment_object(
            name="vpn-ecdsa", enrollment_type="self_signed", key_type="ecdsa", key_size=256,
            common_name="", organization="Example Corp", organizational_unit="NetOps", country="US",
            include_fqdn=True,
        )
        rsa_object = client.create_enrollment_object(
            name="vpn-rsa", enrollment_type="self_signed", key_type="rsa", key_size=2048,
            common_name="vpn.example.com", organization="Example Corp", country="DE",
        )
        devices = client.devices()
        assert len(devices) == DEVICES
        expected = {}
        for i, device in enumerate(devices):
            obj = rsa_object if i % 10 == 0 else ecdsa_object
            answer = client.add_trustpoint(device["id"], obj["id"])
            assert answer["job"]["state"] in ("queued", "running", "succeeded")
            expected[device["id"]] = (obj, device)

        counts = wait_until_settled(client, DEVICES)
        assert counts == Counter(available=DEVICES), counts

        seen_fingerprints = set()
        for device_id, (obj, device) in expected.items():
            tp = client.trustpoint(device_id, obj["name"])
            assert (tp["ca_status"], tp["identity_status"]) == ("available", "available")
            cert = x509.load_pem_x509_certificate(tp["identity_certificate"]["pem"].encode())
            verify_self_signed(cert)
            key = cert.public_key()
            if obj["key_type"] == "rsa":
                assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
                assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "vpn.example.com"
                assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
            else:
                assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size == 256
                san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert san.get_values_for_type(x509.DNSName) == [device["fqdn"]]
                assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "NetOps"
            assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example Corp"
            assert tp["identity_certificate"]["fingerprint_sha256"] not in seen_fingerprints
            seen_fingerprints.add(tp["identity_certificate"]["fingerprint_sha256"])

    # One identity certificate per trustpoint, none issued twice, straight from the database.
    import sqlalchemy as sa

    engine = sa.create_engine(stack.env["CERTFLEET_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        per_trustpoint = conn.execute(sa.text(
            "SELECT trustpoint_id, count(*) FROM certificate WHERE role = 'identity' GROUP BY trustpoint_id"
        )).all()
        jobs = conn.execute(sa.text("SELECT state, count(*) FROM job GROUP BY state")).all()
    engine.dispose()
    assert len(per_trustpoint) == DEVICES and {n for _, n in per_trustpoint} == {1}
    assert dict(jobs) == {"succeeded": DEVICES}
