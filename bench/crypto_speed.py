"""How fast this machine does the two operations an EST enrollment's cost rests on: the CA's
RSA-2048 signature (its TLS handshake and the certificate it issues each make one) and the
device's P-256 key generation. Printed next to every enrollment figure, so figures taken on
different machines, or on one machine under different load, can be told apart."""

from __future__ import annotations

import statistics
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa


def _median_ms(operation, samples: int) -> float:
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        operation()
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings) * 1000, 3)


def crypto_timings(samples: int = 1000) -> dict[str, float]:
    """Median milliseconds of one RSA-2048 PKCS#1 v1.5 SHA-256 signature and of one P-256 key
    generation, each over ``samples`` runs (under a second on a 2-core machine)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = b"to be signed: a TBSCertificate is a few hundred bytes" * 8
    return {
        "rsa2048_pkcs1v15_sha256_sign_ms": _median_ms(
            lambda: key.sign(message, padding.PKCS1v15(), hashes.SHA256()), samples),
        "p256_keygen_ms": _median_ms(lambda: ec.generate_private_key(ec.SECP256R1()), samples),
    }
