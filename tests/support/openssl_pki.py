"""The operator's own PKI, played by the real ``openssl`` command: a CA that signs CSRs with
``openssl x509 -req``, and PKCS#12 files made by ``openssl pkcs12 -export`` (modern AES or
``-legacy`` 3DES/RC2 encryption)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509


def openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def new_key(directory: Path, name: str, *, kind: str = "ec") -> Path:
    """A private key file: P-256 ("ec"), RSA-2048 ("rsa") or RSA-1024 ("rsa1024")."""
    path = directory / f"{name}.key"
    if kind == "ec":
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
                cwd=directory)
    else:
        bits = "1024" if kind == "rsa1024" else "2048"
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", str(path),
                cwd=directory)
    return path


class OpensslCa:
    """A self-signed root CA in ``directory``, as an operator's CA would be."""

    def __init__(self, directory: Path, name: str = "Operator Root CA", *, key_kind: str = "ec") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = new_key(directory, "ca", kind=key_kind)
        self.cert = directory / "ca.pem"
        openssl("req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert), "-days", "30",
                "-subj", f"/O=Example Corp/CN={name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=directory)
        self._ext = directory / "leaf.ext"
        self._ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                             "extendedKeyUsage=serverAuth,clientAuth\n")
        self._serial = 0

    @property
    def pem(self) -> str:
        return self.cert.read_text()

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def sign_csr(self, csr_pem: str, *, name: str = "signed", digest: str = "sha256", days: int = 30) -> Path:
        """``openssl x509 -req``: the certificate for the CSR, as the operator's CA issues it."""
        self._serial += 1
        csr = self.dir / f"{name}.csr"
        csr.write_text(csr_pem)
        out = self.dir / f"{name}.pem"
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                "-set_serial", str(1000 + self._serial), "-days", str(days), f"-{digest}",
                "-extfile", str(self._ext), "-copy_extensions", "copy", "-out", str(out), cwd=self.dir)
        return out

    def issue(self, name: str, *, kind: str = "ec") -> tuple[Path, Path]:
        """A key and a certificate for it, signed by this CA: (key file, certificate file)."""
        key = new_key(self.dir, name, kind=kind)
        csr = self.dir / f"{name}.csr"
        openssl("req", "-new", "-key", str(key), "-subj", f"/O=Example Corp/CN={name}.example.com",
                "-out", str(csr), cwd=self.dir)
        return key, self.sign_csr(csr.read_text(), name=name)

    def pkcs12(self, name: str, passphrase: str, *, kind: str = "ec", legacy: bool = False,
               filename: str | None = None) -> Path:
        """``openssl pkcs12 -export`` of a new key, its certificate and this CA's certificate."""
        key, cert = self.issue(name, kind=kind)
        out = self.dir / (filename or f"{name}.p12")
        openssl("pkcs12", "-export", "-inkey", str(key), "-in", str(cert), "-certfile", str(self.cert),
                "-name", name, "-passout", f"pass:{passphrase}", "-out", str(out),
                *(["-legacy"] if legacy else []), cwd=self.dir)
        return out


def read_pkcs12(path: Path, passphrase: str) -> tuple[str, list[x509.Certificate]]:
    """``openssl pkcs12 -in``: the private key (PEM) and every certificate the file holds."""
    text = openssl("pkcs12", "-in", str(path), "-passin", f"pass:{passphrase}", "-nodes", cwd=path.parent)
    key = text[text.index("-----BEGIN PRIVATE KEY-----"):] if "-----BEGIN PRIVATE KEY-----" in text else ""
    return key, x509.load_pem_x509_certificates(text.encode())


def pkcs12_algorithms(path: Path, passphrase: str) -> str:
    """What ``openssl pkcs12 -info`` says about the file's encryption and MAC."""
    done = subprocess.run(["openssl", "pkcs12", "-in", str(path), "-passin", f"pass:{passphrase}", "-info",
                           "-noout"], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr
