"""Real peers for the CA simulator's tests: strongSwan's ``pki``, ``openssl`` and pkilint's
``lint_pkix_cert``. A missing tool skips its test, except under ``CI=true``, where it fails
(``make test`` installs them: Debian's strongswan-pki and libstrongswan-extra-plugins, PyPI's
pkilint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def tool(name: str, install_hint: str) -> str:
    """The path of a command-line tool, or skip (fail under CI) with how to install it."""
    venv_bin = Path(sys.executable).parent / name
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed ({install_hint})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; under CI=true it must run")
    pytest.skip(message)


def pki() -> str:
    return tool("pki", "apt-get install strongswan-pki libstrongswan-extra-plugins")


def lint_pkix_cert() -> str:
    return tool("lint_pkix_cert", "pip install pkilint")


def run(args: list[str], *, input: bytes | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout.decode(errors='replace')}"
            f"\n{done.stderr.decode(errors='replace')}"
        )
    return done


def lint(cert_file: Path) -> str:
    """pkilint's findings at WARNING and above ('' when clean); its exit code counts them."""
    done = run([lint_pkix_cert(), "lint", "-s", "WARNING", str(cert_file)], check=False)
    findings = done.stdout.decode().strip()
    assert done.returncode == 0 or findings, done.stderr.decode()
    return findings


def openssl_verify(cert_file: Path, *, root: Path, untrusted: Path) -> None:
    run(["openssl", "verify", "-CAfile", str(root), "-untrusted", str(untrusted), str(cert_file)])


def p256_csr(common_name: str, *, sans: list[str] = (), key=None,
             subject: x509.Name | None = None) -> tuple[object, x509.CertificateSigningRequest]:
    """A key (P-256 unless given) and a request signed with it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = subject if subject is not None else x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfleet tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    return key, builder.sign(key, hashes.SHA256())


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def write_pem(path: Path, *items) -> Path:
    data = b""
    for item in items:
        if isinstance(item, x509.Certificate | x509.CertificateSigningRequest):
            data += item.public_bytes(serialization.Encoding.PEM)
        else:
            data += item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    path.write_bytes(data)
    return path
