"""Real peers for the CA simulator's tests: strongSwan's ``pki``, ``openssl`` and pkilint's
linters (``lint_pkix_cert`` and others, run in the test process). A missing tool skips its test,
except under ``CI=true``, where it fails (``make test`` installs them: Debian's strongswan-pki and
libstrongswan-extra-plugins, PyPI's pkilint)."""

from __future__ import annotations

import importlib
import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
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


def run(args: list[str], *, input: bytes | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout.decode(errors='replace')}"
            f"\n{done.stderr.decode(errors='replace')}"
        )
    return done


def pkilint(linter: str, *args: str) -> str:
    """pkilint's findings at WARNING and above ('' when clean), from its command ``linter`` (e.g.
    ``lint_pkix_cert``) run in this process: its command-line entry point, without the interpreter
    start and the imports of a subprocess (some 0.3 s of CPU per certificate). Its exit code counts
    the findings."""
    tool(linter, "pip install pkilint")  # skipped (failed under CI) when pkilint is missing
    entry = importlib.import_module(f"pkilint.bin.{linter}").main
    printed = io.StringIO()
    with redirect_stdout(printed):
        code = entry(["lint", "-s", "WARNING", *args])
    findings = printed.getvalue().strip()
    assert code == 0 or findings, f"{linter} exited {code}"
    return findings


def lint(cert_file: Path) -> str:
    """pkilint's RFC 5280 findings for a certificate at WARNING and above ('' when clean)."""
    return pkilint("lint_pkix_cert", str(cert_file))


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
